"""The YAML configuration: a tree of frozen dataclasses, checked strictly when it is read.

Every section is a dataclass whose fields are the allowed keys with their defaults; ``build`` turns a
parsed YAML mapping into one, and any unknown key, wrong type or unreadable file becomes a
``ConfigError`` that names the file and the dotted key, never a traceback. Plugins reuse ``build`` for
their own ``Options``.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import platformdirs
import yaml

from sera.audio import Limits
from sera.bounds import BOUNDS, bounded
from sera.database import POSTGRES_SCHEMES
from sera.errors import ConfigError
from sera.files import NotRegular, open_regular

T = TypeVar("T")

DEFAULT_MODELS_DIR = Path(str(importlib.resources.files("sera.models")))  # models/ in a checkout, sera/models in a wheel
CONFIG_ENV = "SERA_CONFIG"
MAX_NODES = 10_000  # values in a config file, aliases expanded: the example has about 80
MAX_CONFIG_BYTES = 1_000_000  # the example is under 10 kB
DECODING = Limits()  # the decoder's defaults


@dataclass(frozen=True)
class AudioOptions:
    """Limits applied to every input before any work is spent on it."""

    # The defaults are ``sera.audio.Limits``'s, declared once there (the pipeline's own defaults); the
    # ranges are the config's.
    max_file_mb: float = bounded(DECODING.max_bytes / 1_000_000, above=0, max=2000)
    max_duration_seconds: float = bounded(DECODING.max_seconds, above=0, max=24 * 3600)
    decode_timeout_seconds: float = bounded(DECODING.timeout_seconds, above=0, max=3600)
    decode_cpu_seconds: float = bounded(DECODING.cpu_seconds, min=1, max=3600)  # ffmpeg's CPU time per file
    # ffmpeg's address space: its libraries alone take 266 MB of it, so below 320 MB no note decodes at all;
    # 10-minute ogg, m4a and mp3 notes decode within 320 MB.
    decode_memory_mb: int = bounded(DECODING.max_memory_bytes >> 20, min=320, max=65536)
    # ffmpeg runs in a sandbox (Landlock + seccomp); where it cannot be set up nothing is decoded. false
    # decodes there anyway, with ffmpeg able to read whatever sera's user can: an operator's knowing choice.
    confine_decoder: bool = True

    def limits(self) -> Limits:
        return Limits(
            max_bytes=int(self.max_file_mb * 1_000_000),
            max_seconds=self.max_duration_seconds,
            timeout_seconds=self.decode_timeout_seconds,
            max_memory_bytes=self.decode_memory_mb << 20,
            cpu_seconds=self.decode_cpu_seconds,
            confined=self.confine_decoder,
        )


@dataclass(frozen=True)
class SpeechOptions:
    """How speech is cut into segments (the ``speech:`` section of the config)."""

    threshold: float = bounded(0.5, min=0, max=1)  # a chunk above this starts speech
    min_speech_seconds: float = bounded(0.25, min=0, max=10)  # shorter bursts are clicks, not speech
    min_silence_seconds: float = bounded(0.3, min=0, max=10)  # shorter pauses do not split an utterance
    pad_seconds: float = bounded(0.1, min=0, max=2)  # kept either side so onsets and endings are not clipped
    max_segment_seconds: float = bounded(6.0, min=1, max=600)  # longer utterances are split into equal parts for the timeline


@dataclass(frozen=True)
class DiscordOptions:
    """The Discord adapter's settings; the token itself only ever comes from the environment."""

    token_env: str = "DISCORD_TOKEN"
    database: str = ""  # empty: sera.db in the user's data folder (database_path)
    queue_size: int = bounded(16, min=1, max=10_000)  # analyses waiting or running at once; more are told to retry
    user_rate_per_minute: int = bounded(6, min=1, max=600)
    user_in_flight: int = bounded(2, min=1, max=100)  # one user's notes queued or running at once; more are told to wait
    chart: bool = False  # attach a PNG chart in DMs (needs matplotlib); servers choose with /sera style
    # The reporters a voice note's reply is made of, in order: a dict they give is an embed, text is text,
    # a PNG is attached where charts are on (``chart`` above; /sera style in a server).
    reply_reporters: list[str] = field(default_factory=lambda: ["embed", "chart"])
    message_content: bool = False  # privileged intent: analyse notes in enabled channels without being asked
    sync_commands: bool = True  # send the slash commands to Discord on start
    dev_guild: int = bounded(0, min=0, max=2**63 - 1)  # a server id: sync there only, at once (development); 0: globally
    metrics_port: int = bounded(0, min=0, max=65535)  # Prometheus metrics on http://127.0.0.1:PORT/metrics; 0: off
    catch_up_hours: float = bounded(24.0, min=0, max=14 * 24)  # answer notes posted up to this long before a (re)start; 0: off
    catch_up_max: int = bounded(50, min=0, max=1000)  # notes answered per channel by one catch-up
    retention_days: float = bounded(0.0, min=0, max=36_500)  # delete analyses and utterances older than this, daily; 0: keep until /forget
    shard_count: int = bounded(0, min=0, max=100_000)  # shards across every process; 0: as Discord recommends, all here
    shard_ids: list[int] = field(default_factory=list)  # this process's shards, with shard_count; empty: all of them


@dataclass(frozen=True)
class LiveOptions:
    """The ``live:`` section of the config: listening in voice channels (experimental)."""

    enabled: bool = False  # off unless the operator turns it on for this deployment
    max_sessions: int = bounded(4, min=1, max=1000)  # sessions running at once across all servers; /listen start refuses more
    workers: int = bounded(1, min=1, max=64)  # threads of their own for live analysis, so voice notes never queue behind sessions
    max_session_minutes: float = bounded(120.0, above=0, max=24 * 60)
    max_utterance_seconds: float = bounded(8.0, min=1, max=60)  # a speaker who never pauses is still analysed in pieces
    speaker_buffer_seconds: float = bounded(20.0, min=1, max=600)  # queued audio per speaker before the oldest is shed
    tick_seconds: float = bounded(0.5, above=0, max=10)  # how often queued audio is processed
    feedback_seconds: float = bounded(30.0, min=5, max=3600)  # live mood message edited at most this often (when a server turns it on)


# Built-ins that are off unless the config turns them on: the seed paper's CNN stays one line away
# (``plugins: {emotion_cnn: {enabled: true}}``) since the Whisper-encoder analyzer became the default.
DEFAULT_PLUGINS: dict[str, dict[str, Any]] = {"emotion_cnn": {"enabled": False}, "transcript": {"enabled": False}}
EMOTION_ANALYZERS = ("emotion_whisper", "emotion_cnn")  # the built-in emotion analyzers, the default first


@dataclass(frozen=True)
class Config:
    """The whole configuration; see ``config.example.yaml`` for every key, commented."""

    models_dir: Path = DEFAULT_MODELS_DIR
    workers: int = bounded(2, min=1, max=64)  # threads that decode and run models, off the asyncio loop
    worker_processes: bool = False  # the bot's workers as processes (each loads the models): scales with cores, costs memory
    plugin_timeout_seconds: float = bounded(20.0, above=0, max=3600)
    plugin_max_timeouts: int = bounded(3, min=1, max=1000)  # a plugin that overran this many times is not called again until restart
    audio: AudioOptions = field(default_factory=AudioOptions)
    speech: SpeechOptions = field(default_factory=SpeechOptions)
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    discord: DiscordOptions = field(default_factory=DiscordOptions)
    live: LiveOptions = field(default_factory=LiveOptions)
    source: str = "built-in defaults"  # where it was read from, for messages

    def plugin_section(self, name: str) -> dict[str, Any]:
        """``plugins.<name>`` as configured, over the built-in defaults for it."""
        return {**DEFAULT_PLUGINS.get(name, {}), **self.plugins.get(name, {})}

    def database_path(self) -> Path | str:
        """What ``sera.database.connect`` opens: a ``postgresql://`` URL as it is; else the SQLite file
        ``discord.database`` (relative to the config file), or ``sera.db`` in the user's data folder
        (``~/.local/share/sera`` on Linux, ``$XDG_DATA_HOME/sera`` where set): never the directory the
        command happened to be started in."""
        if self.discord.database.startswith(POSTGRES_SCHEMES):
            return self.discord.database
        if self.discord.database:
            return self.path(self.discord.database)
        return platformdirs.user_data_path("sera") / "sera.db"

    def status_folder(self) -> Path:
        """Where running bots keep their status files for ``sera status``: beside a configured SQLite file,
        else in the user's state folder (``~/.local/state/sera``)."""
        database = self.database_path()
        if self.discord.database and isinstance(database, Path):
            return database.parent
        return platformdirs.user_state_path("sera")

    def status_path(self) -> Path:
        """This process's status file: one per process, named for the shards it runs where it runs some
        of them (``status-shards-0-1.json``), so processes of one bot never overwrite each other's."""
        shards = "-".join(map(str, self.discord.shard_ids))
        return self.status_folder() / (f"status-shards-{shards}.json" if shards else "status.json")

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
        data = parse_yaml(read_config(path), str(path))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:  # PyYAML's parser recurses once per level of nesting
        raise ConfigError(f"{path}: nested too deeply to be a config file") from None
    if data is None:
        data = {}
    config = build(Config, data, str(path), exclude={"source"})
    config = dataclasses.replace(config, source=str(path))
    return dataclasses.replace(config, models_dir=config.path(config.models_dir))


def read_config(path: Path) -> str:
    """The text of a config file: a regular file (a FIFO would hang, ``/dev/zero`` never end) of at most
    ``MAX_CONFIG_BYTES``, checked on the open file itself, so nothing swapped in between is read."""
    try:
        with open_regular(path) as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except NotRegular:
        raise ConfigError(f"{path} is not a regular file: a config file is a YAML file") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES // 1_000_000} MB: that is no config file")
    return data.decode("utf-8")


def parse_yaml(text: str, file: str) -> Any:
    """``yaml.safe_load``, parsing once: the node tree is checked (duplicate keys, aliases that expand
    without bound or refer to themselves), then constructed."""
    loader = yaml.SafeLoader(text)
    loader.name = file  # YAML's own messages name the file, not "<unicode string>"
    try:
        node = loader.get_single_node()
        check_nodes(node, file)
        return loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def check_nodes(node: yaml.Node | None, file: str) -> None:
    """Refuse what YAML accepts but a config must not hold, before anything is built from it.

    - Two equal keys: YAML keeps the last without a word; a config that says ``workers`` twice is a
      mistake to point at, not to guess about.
    - Aliases that expand past ``MAX_NODES`` (a "billion laughs" file of a few lines would make every
      later step, down to printing it, take hours) or that contain themselves (endless nesting).
    """
    budget = [MAX_NODES]

    def walk(node: yaml.Node | None, prefix: str, inside: tuple[int, ...]) -> None:
        if node is None:
            return
        budget[0] -= 1
        if budget[0] < 0:
            raise ConfigError(f"{file}: more than {MAX_NODES} values once its aliases (*name) are expanded; is it a config file?")
        if id(node) in inside:
            raise ConfigError(f"{file}: '{prefix.rstrip('.') or 'the top level'}' contains itself through an alias (line {node.start_mark.line + 1})")
        inside = (*inside, id(node))
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else str(key.tag)
                if name in seen:
                    raise ConfigError(f"{file}: duplicate key '{prefix}{name}' (line {key.start_mark.line + 1})")
                seen.add(name)
                walk(value, f"{prefix}{name}.", inside)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{prefix.rstrip('.')}[{i}].", inside)

    walk(node, "", ())


def build(cls: type[T], data: Any, file: str, prefix: str = "", exclude: set[str] = frozenset()) -> T:
    """A ``cls`` dataclass from a parsed mapping, with errors naming ``file`` and the dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: {prefix.rstrip('.') or 'the top level'} must be a mapping of keys")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in exclude}
    values = {}
    for key, value in data.items():
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise ConfigError(f"{file}: unknown key '{prefix}{key}' (allowed here: {known})")
        values[key] = _convert(value, hints[key], file, f"{prefix}{key}")
        bounds = fields[key].metadata.get(BOUNDS)
        problem = bounds and values[key] is not None and bounds.problem(values[key])
        if problem:
            raise ConfigError(f"{file}: '{prefix}{key}' must be {problem}, not {value!r}")
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
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{file}: '{key}' must be one of {', '.join(map(str, choices))}, not {value!r}")
        return value
    if hint is Path:
        return Path(_convert(value, str, file, key))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"{file}: '{key}' must be a finite number, not {str(value)[:20]}...") from None
    if isinstance(value, float) and not math.isfinite(value):  # .nan passes every comparison; .inf overflows
        raise ConfigError(f"{file}: '{key}' must be a finite number, not {value!r}")
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{file}: '{key}' must be {_describe(hint)}, not {value!r}")
    return value


def _describe(hint: type) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text"}.get(hint, hint.__name__)
