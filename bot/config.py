"""The YAML configuration: a tree of frozen dataclasses, checked strictly when it is read.

Every section is a dataclass whose fields are the allowed keys with their defaults; ``build`` turns a
parsed YAML mapping into one, and any unknown key, wrong type or unreadable file becomes a
``ConfigError`` that names the file and the dotted key, never a traceback. Plugins reuse ``build`` for
their own ``Options``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from bot.audio import Limits
from bot.errors import ConfigError
from bot.speech import SpeechOptions

T = TypeVar("T")

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_MODELS_DIR = PROJECT_DIR / "models"
CONFIG_ENV = "SERA_CONFIG"


@dataclass(frozen=True)
class AudioOptions:
    """Limits applied to every input before any work is spent on it."""

    max_file_mb: float = 25.0
    max_duration_seconds: float = 600.0
    decode_timeout_seconds: float = 30.0
    decode_memory_mb: int = 1024

    def limits(self) -> Limits:
        return Limits(
            max_bytes=int(self.max_file_mb * 1_000_000),
            max_seconds=self.max_duration_seconds,
            timeout_seconds=self.decode_timeout_seconds,
            max_memory_bytes=self.decode_memory_mb << 20,
        )


@dataclass(frozen=True)
class DiscordOptions:
    """The Discord adapter's settings; the token itself only ever comes from the environment."""

    token_env: str = "DISCORD_TOKEN"
    database: str = "sera.db"
    queue_size: int = 16  # analyses waiting or running at once; more are told to retry
    user_rate_per_minute: int = 6
    user_in_flight: int = 2  # one user's notes queued or running at once; more are told to wait
    chart: bool = False  # attach a PNG chart in DMs (needs matplotlib); servers choose with /sera style
    message_content: bool = False  # privileged intent: analyse notes in enabled channels without being asked


@dataclass(frozen=True)
class LiveOptions:
    """The ``live:`` section of the config: listening in voice channels (experimental)."""

    enabled: bool = False  # off unless the operator turns it on for this deployment
    max_sessions: int = 4  # sessions running at once across all servers; /listen start refuses more
    workers: int = 1  # threads of their own for live analysis, so voice notes never queue behind sessions
    max_session_minutes: float = 120.0
    max_utterance_seconds: float = 8.0  # a speaker who never pauses is still analysed in pieces
    speaker_buffer_seconds: float = 20.0  # queued audio per speaker before the oldest is shed
    tick_seconds: float = 0.5  # how often queued audio is processed
    feedback_seconds: float = 30.0  # live mood message edited at most this often (when a server turns it on)


@dataclass(frozen=True)
class Config:
    """The whole configuration; see ``config.example.yaml`` for every key, commented."""

    models_dir: Path = DEFAULT_MODELS_DIR
    workers: int = 2  # threads that decode and run models, off the asyncio loop
    plugin_timeout_seconds: float = 20.0
    plugin_max_timeouts: int = 3  # a plugin that overran this many times is not called again until restart
    audio: AudioOptions = field(default_factory=AudioOptions)
    speech: SpeechOptions = field(default_factory=SpeechOptions)
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    discord: DiscordOptions = field(default_factory=DiscordOptions)
    live: LiveOptions = field(default_factory=LiveOptions)
    source: str = "built-in defaults"  # where it was read from, for messages

    def path(self, value: str | Path) -> Path:
        """A path from the config, relative to the config file's folder."""
        path = Path(value).expanduser()
        if path.is_absolute() or self.source == "built-in defaults":
            return path
        return Path(self.source).parent / path


def load(path: str | Path | None = None) -> Config:
    """Read the config file (``path``, else ``$SERA_CONFIG``, else built-in defaults)."""
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        return Config()
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    config = build(Config, data, str(path), exclude={"source"})
    config = dataclasses.replace(config, source=str(path))
    return dataclasses.replace(config, models_dir=config.path(config.models_dir))


def build(cls: type[T], data: Any, file: str, prefix: str = "", exclude: set[str] = frozenset()) -> T:
    """A ``cls`` dataclass from a parsed mapping, with errors naming ``file`` and the dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: {prefix.rstrip('.') or 'the top level'} must be a mapping of keys")
    hints = typing.get_type_hints(cls)
    allowed = {f.name for f in dataclasses.fields(cls)} - exclude
    values = {}
    for key, value in data.items():
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(f"{file}: unknown key '{prefix}{key}' (allowed here: {known})")
        values[key] = _convert(value, hints[key], file, f"{prefix}{key}")
    return cls(**values)


def _convert(value: Any, hint: Any, file: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, file, f"{key}.")
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        return _convert(value, next(o for o in options if o is not type(None)), file, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: '{key}' must be a mapping")
        _, inner = typing.get_args(hint)
        return {str(k): _convert(v, inner, file, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{file}: '{key}' must be a list")
        (inner,) = typing.get_args(hint)
        return [_convert(v, inner, file, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is Any:
        return value
    if hint is Path:
        return Path(_convert(value, str, file, key))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{file}: '{key}' must be {_describe(hint)}, not {value!r}")
    return value


def _describe(hint: type) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text"}.get(hint, hint.__name__)
