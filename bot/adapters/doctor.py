"""``sera doctor``: check what a deployment needs and say how to fix what is missing."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sera.audio import ffmpeg_binary
from sera.config import Config, load
from sera.errors import SeraError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _ffmpeg() -> Check:
    try:
        path = ffmpeg_binary()
        version = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=10).stdout.split("\n")[0]
        return Check("ffmpeg", True, version)
    except (SeraError, OSError, subprocess.SubprocessError) as exc:
        return Check("ffmpeg", False, str(exc), "apt-get install ffmpeg")


def _sandbox(config: Config) -> Check:
    """Whether ffmpeg can be confined here (it is tried for real), and what follows where it cannot."""
    from sera.audio import sandbox_refusal
    from sera.sandbox import landlock_abi

    reason = sandbox_refusal()
    if reason is None:
        return Check("decoder sandbox", True, f"Landlock ABI {landlock_abi()} and seccomp: ffmpeg reads only its input and "
                                              "the system's libraries, writes nothing, opens no socket")  # fmt: skip
    opted_out = not config.audio.confine_decoder
    detail = f"{reason}; " + ("ffmpeg runs unconfined (audio.confine_decoder: false)" if opted_out else "nothing will be decoded")
    return Check("decoder sandbox", False, detail,
                 "run on Linux 5.13 or later with landlock in its lsm= boot option (x86_64 or aarch64); or, knowing that "
                 "ffmpeg can then read whatever sera's user can, set audio.confine_decoder: false")  # fmt: skip


def _opus() -> Check:
    try:
        listing = subprocess.run([ffmpeg_binary(), "-hide_banner", "-decoders"], capture_output=True, text=True, timeout=10).stdout
    except (SeraError, OSError, subprocess.SubprocessError) as exc:
        return Check("Opus decoder", False, str(exc), "apt-get install ffmpeg")
    found = " opus " in listing or "libopus" in listing
    return Check("Opus decoder", found, "ffmpeg decodes Opus voice notes" if found else "ffmpeg lacks Opus",
                 "" if found else "install an ffmpeg built with libopus (Debian's is)")  # fmt: skip


def _models(config: Config) -> list[Check]:
    """Every enabled analyzer, set up through the registry as ``sera run`` sets it up (an emotion
    analyzer's model is whatever file its options name, of whatever kind its metadata says), and the
    speech detector."""
    from sera.audio import SAMPLE_RATE
    from sera.plugin import EmotionAnalyzer
    from sera.registry import PluginSet
    from sera.speech import VAD_MODEL, SpeechDetector

    checks = []
    plugins = PluginSet(config, SAMPLE_RATE, reporters=())
    try:
        for info in plugins.infos:
            if not info.enabled or info.kind != "analyzer":
                continue
            if info.active and isinstance(info.plugin, EmotionAnalyzer):
                model = info.plugin.model
                checks.append(Check(f"{info.name} model", True, f"{model.path}: {len(model.info.labels)} labels, "
                                                               f"{model.kind} features, temperature {model.info.temperature:.2f}"))  # fmt: skip
            elif info.missing:  # enabled, but its extra is not installed (the transcript plugin without [transcripts])
                checks.append(Check(f"{info.name} analyzer", False, info.status, "install what the line names, or disable it in the config"))
            elif not info.active:
                checks.append(Check(f"{info.name} analyzer", False, info.status, "fix what the line says (a model file: `sera train`, or restore models/)"))
    finally:
        plugins.close()
    vad = config.models_dir / VAD_MODEL
    try:
        SpeechDetector(vad)
        checks.append(Check("speech detector", True, str(vad)))
    except Exception as exc:  # onnxruntime's own error types
        checks.append(Check("speech detector", False, f"{vad}: {exc}", f"restore models/{VAD_MODEL} from git"))
    return checks


def _token(config: Config) -> Check:
    """Where ``sera run`` would find the token: the environment variable, or systemd's credential."""
    from sera.adapters.discord.app import find_token

    name = config.discord.token_env
    value, where = find_token(config)
    if value:
        return Check("Discord token", True, f"found in {where}")
    return Check("Discord token", False, f"neither ${name} nor a systemd credential {name} is set",
                 f"export {name}=<the bot token from the Developer Portal>, or LoadCredential={name}:FILE in the unit")  # fmt: skip


def _database(config: Config) -> list[Check]:
    """The database: reachable and writable, its schema (looked at, never changed: ``sera db upgrade`` and
    ``sera run`` migrate), and any ``/forget`` whose plugins have not deleted their share yet. A SQLite
    file that does not exist yet is not created: its folder is checked instead."""
    from sera.adapters.discord.store import COMPONENT, MIGRATIONS, PENDING_FORGETS_SCHEMA, pending_forgets
    from sera.database import connect

    path = config.database_path()
    if isinstance(path, Path) and not path.exists():
        folder = next(p for p in (path.parent, *path.parents) if p.exists())
        try:  # a probe, removed at once: the folders the database needs can be made there
            os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".sera-doctor-"))
        except OSError as exc:
            return [Check("database", False, f"{path} cannot be created: {folder}: {exc.strerror}",
                          "point discord.database at a folder sera's user can write")]  # fmt: skip
        return [Check("database", True, f"{path} does not exist yet; sera run creates it ({folder} is writable)")]
    try:
        db = connect(path)
        try:
            schema = db.version(COMPONENT)
            pending = pending_forgets(db) if schema >= PENDING_FORGETS_SCHEMA else {}
        finally:
            db.close()
        if isinstance(path, Path):
            probe = tempfile.NamedTemporaryFile(dir=path.parent, prefix=".sera-doctor-")
            probe.close()
    except (SeraError, OSError) as exc:
        return [Check("database", False, str(exc), "point discord.database at a writable path or a reachable postgresql:// URL")]
    latest = MIGRATIONS[-1].version
    state = "up to date" if schema >= latest else f"sera run (or sera db upgrade) brings it to {latest}"
    where = f"PostgreSQL {db}: reachable" if isinstance(path, str) else f"{path} is writable (WAL)"
    checks = [Check("database", True, f"{where}; schema {schema} of {latest}, {state}")]
    if pending:
        plugins = sorted({plugin for waiting in pending.values() for plugin in waiting})
        checks.append(Check("pending deletions", False, f"{len(pending)} users' /forget still waits on {', '.join(plugins)}",
                            "enable those plugins and fix what stops their setup: each start asks them again"))  # fmt: skip
    return checks


VOICE_EXTRA_FIX = "pip install 'sera-voice[voice]' (discord.py[voice] and discord-ext-voice-recv)"


def _voice(config: Config) -> Check:
    """Only where listening is enabled: libopus (to decode received voice) and davey (DAVE decryption)."""
    if not config.live.enabled:
        return Check("voice channels", True, "off (live.enabled: false)")
    from sera.adapters.discord.app import missing_voice_module

    missing = missing_voice_module()
    if missing:
        return Check("voice channels", False, f"missing {missing}", VOICE_EXTRA_FIX)
    import davey
    import discord.opus

    if not discord.opus.is_loaded() and not discord.opus._load_default():
        return Check("voice channels", False, "libopus not found", "apt-get install libopus0")
    return Check("voice channels", True, f"experimental; libopus loaded, davey {davey.__version__} (DAVE protocol {davey.DAVE_PROTOCOL_VERSION})")


def run_checks(config_path: str | None) -> list[Check]:
    from sera.registry import check_options

    try:
        config = load(config_path)
        check_options(config)
    except SeraError as exc:
        return [Check("config", False, str(exc), "fix the key named above; see config.example.yaml")]
    checks: list[Check] = [Check("config", True, config.source), _ffmpeg(), _opus()]
    steps: list[Callable[[Config], Check | list[Check]]] = [_sandbox, _models, _token, _database, _voice]
    for step in steps:
        result = step(config)
        checks.extend(result if isinstance(result, list) else [result])
    return checks


def report(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        lines.append(f"{'✔' if check.ok else '✘'} {check.name}: {check.detail}")
        if not check.ok and check.fix:
            lines.append(f"    fix: {check.fix}")
    failed = sum(not c.ok for c in checks)
    lines.append("all good" if not failed else f"{failed} problem{'s' if failed > 1 else ''} to fix")
    return "\n".join(lines)
