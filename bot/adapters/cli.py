"""The ``sera`` command: the command-line adapter over the core.

Expected failures (bad audio, bad config, missing model) print one line on stderr and exit with
status 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from sera import __version__
from sera.config import Config, load
from sera.errors import SeraError

if TYPE_CHECKING:
    from sera.baseline import Baseline
    from sera.pipeline import Pipeline

log = logging.getLogger("sera")

TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EXIT_OK = 0
EXIT_PLUGIN_FAILED = 1  # the command ran, but a plugin failed (its results are missing; a notice says which)
EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras and getattr(args, "handler", None) is cmd_analyze and not any(extra.startswith("-") for extra in extras):
        args.files += extras  # `sera analyze a.ogg --json b.ogg`: options may come between the files
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if args.log_format == "json" else logging.Formatter(TEXT_LOG_FORMAT))
    # The command owns the process's logging (also when main() runs twice in one process). Other
    # libraries stay at WARNING: -v and -vv are about sera, not numba's compiler or aiohttp's internals.
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    log.setLevel(logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.NOTSET)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return args.handler(args)
    except SeraError as error:
        print(f"sera: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `sera analyze ... | head -1`: the reader has all it wanted
        quiet_stdout()
        return EXIT_OK


def quiet_stdout() -> None:
    """The reader of stdout left: what is still written (the exit's flush too) goes nowhere, quietly."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


LOG_CONTEXT = ("guild", "event")


class JsonFormatter(logging.Formatter):
    """One JSON object per log line, for log collectors (journald, Loki, CloudWatch) to parse."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in LOG_CONTEXT:  # set by the bot through ``extra=`` where a line concerns one server or event
            if getattr(record, key, None) is not None:
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sera", description="Hear emotion in speech.")
    parser.add_argument("--version", action="version", version=f"sera {__version__}")
    parser.add_argument("-c", "--config", help="YAML config file (default: $SERA_CONFIG, else built-in defaults)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="operator log on stderr: text, or one JSON object per line"
    )
    commands = parser.add_subparsers(metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    analyze = command("analyze", cmd_analyze, "analyse audio files and print the emotion heard in them")
    analyze.add_argument("files", nargs="+", metavar="FILE", help="any audio ffmpeg reads")
    output = analyze.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object per file")
    output.add_argument("--reporter", default="text", help="render with this reporter plugin: text (default), json, chart...")
    analyze.add_argument("-o", "--output", metavar="PATH", help="write each rendering there instead: a file, or a folder (one file per input)")
    analyze.add_argument("--baseline", nargs="+", metavar="FILE",
                         help="recordings of the same speaker's ordinary voice: FILEs are judged against them (put FILEs first, or end with --)")

    plugins = command("plugins", cmd_plugins, "list the plugins found, whether each is enabled, and why one failed")
    plugins.add_argument("--check", action="store_true", help="also set each enabled plugin up (load its model) and say whether it works")
    new = plugins.add_subparsers(metavar="[new NAME]", title="to start a plugin of your own (optional)").add_parser(
        "new", help="write a plugin package to start from", description="write a plugin package to start from"
    )
    new.add_argument("name", metavar="NAME", help="the plugin's name (its key under plugins: in the config)")
    new.add_argument("--dir", default=".", help="where the package folder goes (default: here)")
    new.set_defaults(handler=cmd_new_plugin)
    check = command("config", cmd_config, "check a config file and print the configuration it gives, defaults filled in")
    check.add_argument("file", nargs="?", metavar="FILE", help="the YAML file (default: -c, else $SERA_CONFIG)")

    evaluate = command("evaluate", cmd_evaluate, "measure the model on labelled audio (a corpus or a CSV manifest)")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", help="a corpus name, with --data (e.g. ravdess)")
    source.add_argument("--manifest", help="a CSV with columns path,label[,speaker]; paths relative to it")
    evaluate.add_argument("--data", help="the corpus folder, with --corpus")
    evaluate.add_argument("--speakers", help="only these speakers, comma-separated (e.g. 19,20,21)")
    evaluate.add_argument("--opus", metavar="BITRATE", help="re-encode each clip as an Opus voice note first (e.g. 24k)")
    evaluate.add_argument("--only-present-labels", action="store_true", help="restrict the argmax to labels in the data")
    evaluate.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    evaluate.add_argument("--analyzer", metavar="NAME", help="the emotion analyzer measured: emotion_whisper (default) or emotion_cnn, enabled or not")
    evaluate.add_argument("--baseline", type=int, metavar="K",
                          help="judge each clip against a personal baseline of K other clips of its speaker (never itself)")
    evaluate.add_argument("--seed", type=int, default=0, help="which other clips --baseline draws (default 0)")

    listen = command("listen", cmd_listen, "a live session on this machine: the microphone, or a file or stream played in real time")
    listen.add_argument("input", nargs="?", metavar="INPUT", help="a file or stream URL ffmpeg reads (default: the microphone)")
    listen.add_argument("--name", help="who is speaking, as the summary and notes name them (default: your user name)")
    listen.add_argument("--speed", type=float, default=1.0, help="play a file this many times faster than real time (default 1)")
    listen.add_argument("-o", "--output", metavar="DIR", help="write the session's chart, meeting notes (Markdown) and summary (JSON) there")

    run = command("run", cmd_run, "start the Discord bot (token from $DISCORD_TOKEN or discord.token_env)")
    run.add_argument("--shard-count", type=int, metavar="N", help="shards across every process (discord.shard_count)")
    run.add_argument("--shard-ids", metavar="IDS", help="this process's shards, comma-separated: 0,1 (discord.shard_ids)")
    sync = command("sync", cmd_sync, "show what a sync would change in Discord's slash commands, then sync them")
    sync.add_argument("--guild", type=int, metavar="ID", help="one server only, at once (default: discord.dev_guild, else global)")
    sync.add_argument("--dry-run", action="store_true", help="only show what would be created, changed or deleted")
    db = command("db", cmd_db, "the database's schema: which migrations it has (status), and applying the rest (upgrade)")
    db.add_argument("action", choices=("status", "upgrade"), help="status: what is applied and pending; upgrade: apply the rest")
    command("status", cmd_status, "how the running bot is doing (from the status file it rewrites every 30 s)")
    command("doctor", cmd_doctor, "check ffmpeg, Opus, models, config, token and database, with fixes")

    from sera.training.cli import add_arguments  # stdlib only at import: no torch, librosa or onnxruntime

    add_arguments(command("train", cmd_train, "train an emotion model (--model whisper, the default, or cnn), export it to ONNX "
                                              "and write its model card ([train] extra)"))  # fmt: skip
    return parser


def config_of(args: argparse.Namespace) -> Config:
    return load(args.config)


def cmd_analyze(args: argparse.Namespace) -> int:
    from sera.audio import SAMPLE_RATE
    from sera.pipeline import Pipeline
    from sera.registry import PluginSet, check_options

    config = config_of(args)
    check_options(config)
    name = "json" if args.json else args.reporter
    output = Output(args.output, args.files)
    pipeline = Pipeline(config, PluginSet(config, SAMPLE_RATE, reporters={name}))
    try:
        reporter = pipeline.plugins.reporter(name)
        status = EXIT_OK
        for failed in pipeline.plugins.failures():
            if failed.kind != "reporter":  # a reporter this command does not use is no concern of its user
                print(f"sera: plugin {failed.name} is not loaded: {failed.error}", file=sys.stderr)
                status = EXIT_PLUGIN_FAILED
        baseline = personal_baseline(pipeline, args.baseline) if args.baseline else None
        return _analyze_each(args, pipeline, reporter.name, output, baseline, status)
    finally:
        pipeline.close()


def _analyze_each(args: argparse.Namespace, pipeline: Pipeline, reporter: str, output: Output, baseline: Baseline | None, status: int) -> int:
    """Each file in turn; the exit status is the worst seen, also when the reader of stdout stops early
    (the files not reached are not analysed, and what failed before still decides the exit)."""
    try:
        for path in args.files:
            try:
                report = pipeline.analyze(path, baseline=baseline, transcribe=True)  # your own files: enabling the plugin is your consent
            except SeraError as error:
                log.info("could not analyse %s: %s", path, error)
                print(f"sera: {path}: {error}", file=sys.stderr)
                if args.json:
                    print(json.dumps({"source": path, "error": str(error)}))
                status = EXIT_BAD_INPUT
                continue
            try:
                output.emit(pipeline.plugins.render(reporter, report), path)
            except SeraError as error:
                print(f"sera: {path}: {error}", file=sys.stderr)
                status = EXIT_BAD_INPUT
                continue
            if not report.speech_detected:
                print(f"sera: {path}: no speech detected", file=sys.stderr)
                status = EXIT_BAD_INPUT
            for notice in report.notices:  # also in the output itself; here for scripts reading stderr and the exit
                print(f"sera: {path}: {notice}", file=sys.stderr)
                status = max(status, EXIT_PLUGIN_FAILED)
    except BrokenPipeError:
        quiet_stdout()
    return status


class Output:
    """Where ``sera analyze`` writes each file's rendering: stdout, or ``--output`` (a file, or a folder
    that gets one file per input). Images never go to a terminal."""

    def __init__(self, path: str | None, inputs: list[str]) -> None:
        from pathlib import Path

        self.path = Path(path) if path else None
        self.folder = self.path is not None and (self.path.is_dir() or path.endswith(os.sep))
        if self.path is not None and not self.folder and len(inputs) > 1:
            raise SeraError(f"--output {path}: {len(inputs)} files give {len(inputs)} outputs: name a folder (it may end with /)")
        if self.folder:  # one file per input, named for it: two inputs of one name would overwrite each other
            seen: dict[str, str] = {}
            for source in inputs:
                if (first := seen.setdefault(Path(source).stem, source)) != source:
                    raise SeraError(f"--output {path}: {first} and {source} would both be written as {Path(source).stem}.*: "
                                    "rename one, or analyse them with separate --output folders")  # fmt: skip

    def emit(self, rendered: object, source: str) -> None:
        from pathlib import Path

        if rendered is None:
            return
        data = rendered if isinstance(rendered, bytes) else (rendered if isinstance(rendered, str) else json.dumps(rendered, ensure_ascii=False))
        if self.path is None:
            if isinstance(data, bytes):
                if sys.stdout.isatty():
                    raise SeraError("that reporter draws a PNG image, which a terminal cannot show: add --output FILE.png (or a folder)")
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            else:
                print(data, flush=True)
            return
        target = self.path
        if self.folder:
            target.mkdir(parents=True, exist_ok=True)
            target = target / (Path(source).stem + (".png" if isinstance(data, bytes) else ".txt"))
        try:
            target.write_bytes(data) if isinstance(data, bytes) else target.write_text(data + "\n")
        except OSError as error:
            raise SeraError(f"cannot write {target}: {error.strerror}") from None
        print(f"sera: wrote {target}", file=sys.stderr)


def personal_baseline(pipeline: Pipeline, paths: list[str]) -> Baseline:
    """``--baseline FILE...``: a baseline from what the emotion analyzer hears in these files."""
    from sera.baseline import Baseline

    info = pipeline.baseline_info
    if info is None:
        raise SeraError("--baseline: no enabled emotion analyzer uses a personal baseline (emotion_whisper does)")
    observations = []
    for path in paths:
        try:
            observations += pipeline.analyze(path).observations()
        except SeraError as error:
            raise SeraError(f"--baseline {path}: {error}") from None
    if not observations:
        raise SeraError("--baseline: no speech heard in those files")
    baseline = Baseline.of(observations)
    unused = ("; the model in use uses no baseline (plugins.emotion_whisper.baseline_from sets a size)" if not info.min_clips else
              f"; the model needs {info.min_clips}, so it is not used" if baseline.count < info.min_clips else "")  # fmt: skip
    print(f"sera: a baseline of {baseline.count} clips from {len(paths)} files{unused}", file=sys.stderr)
    return baseline


def cmd_config(args: argparse.Namespace) -> int:
    import dataclasses

    import yaml

    from sera.audio import SAMPLE_RATE
    from sera.database import redact
    from sera.registry import PluginSet, check_options

    config = load(args.file or args.config)
    check_options(config)
    effective = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    del effective["source"]
    database = config.database_path()  # the one it will use: the user's data folder where the config names none
    effective["discord"]["database"] = redact(database) if isinstance(database, str) else str(database)
    plugins = PluginSet(config, SAMPLE_RATE, set_up=False)
    effective["plugins"] = {
        info.name: {"enabled": info.enabled, **json.loads(json.dumps(dataclasses.asdict(info.options), default=str))}
        if info.options is not None else {"enabled": info.enabled, **config.plugin_section(info.name)}
        for info in plugins.infos
    }  # every installed plugin, its options' defaults filled in (a disabled one's code is never imported: its section as given)
    print(f"# {config.source}: valid. Every key, defaults filled in, plugin options checked.")
    print(yaml.safe_dump(effective, sort_keys=False), end="")
    for failed in plugins.failures():  # as `sera analyze` says it, with the same exit status
        print(f"sera: plugin {failed.name} is not loaded: {failed.error}", file=sys.stderr)
    return EXIT_PLUGIN_FAILED if plugins.failures() else EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    from sera.audio import SAMPLE_RATE
    from sera.plugin import SERA_PLUGIN_API
    from sera.registry import PluginSet

    plugins = PluginSet(config_of(args), SAMPLE_RATE, set_up=args.check)
    try:
        rows = [("NAME", "KIND", "ORIGIN", "ENABLED", "STATUS")]
        rows += [(i.name, i.kind, i.origin, "yes" if i.enabled else "no", i.status) for i in plugins.infos]
        widths = [max(len(row[col]) for row in rows) for col in range(4)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
        if not args.check:
            print("\nready: imported, plugin API and options checked; `sera plugins --check` also sets each one up")
        print(f"\nsera {__version__}, plugin API {SERA_PLUGIN_API[0]}.{SERA_PLUGIN_API[1]}")
        return EXIT_PLUGIN_FAILED if plugins.failures() else EXIT_OK
    finally:
        plugins.close()


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sera.adapters.plugin_template import create

    folder = create(args.name, Path(args.dir))
    print(f"wrote {folder}/ (read its README.md); try it:\n  pip install -e {folder}\n"
          f"  SERA_CONFIG={folder}/sera.yaml sera analyze NOTE.ogg")  # fmt: skip
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sera.audio import SAMPLE_RATE
    from sera.config import EMOTION_ANALYZERS
    from sera.evaluate import evaluate, format_text, from_corpus, from_manifest
    from sera.pipeline import Pipeline
    from sera.registry import PluginSet

    if args.corpus and not args.data:
        raise SeraError("--corpus needs --data, the corpus folder")
    items = from_corpus(args.corpus, Path(args.data)) if args.corpus else from_manifest(Path(args.manifest))
    if args.speakers:
        wanted = {s.strip() for s in args.speakers.split(",")}
        items = [i for i in items if i.speaker in wanted]
        if not items:
            raise SeraError(f"no clips of speakers {sorted(wanted)}")
    if args.baseline is not None and args.baseline < 1:
        raise SeraError("--baseline K needs K of 1 or more: the other clips of each speaker a baseline is built from")
    config = config_of(args)
    name = args.analyzer or next((n for n in EMOTION_ANALYZERS if config.plugin_section(n).get("enabled", True) is True), EMOTION_ANALYZERS[0])
    config = replace(config, plugins={**config.plugins, name: {**config.plugin_section(name), "enabled": True}})
    pipeline = Pipeline(config, PluginSet(config, SAMPLE_RATE, only={name}))
    try:
        result = evaluate(pipeline, items, args.only_present_labels, args.opus, name, args.baseline or 0, args.seed, args.corpus)
    finally:
        pipeline.close()
    if result.heard_in_training and args.json:  # the text output opens with this warning itself
        print(f"sera: warning: {name} was trained on speakers {', '.join(result.heard_in_training)} of {args.corpus}; "
              "these figures are not on voices it never heard (its model card has the cross-validated ones)", file=sys.stderr)
    print(json.dumps(result.to_dict()) if args.json else format_text(result))
    return EXIT_OK


def user_name() -> str:
    """Who is at this machine, as a session names its speaker; "me" where the system cannot say (a
    container's user without a name)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "me"


def cmd_listen(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sera.adapters.listen import listen
    from sera.audio import SAMPLE_RATE
    from sera.pipeline import Pipeline
    from sera.registry import PluginSet, check_options

    if not 0 < args.speed <= 100:
        raise SeraError(f"--speed must be more than 0 and at most 100, not {args.speed:g}")
    config = config_of(args)
    check_options(config)
    pipeline = Pipeline(config, PluginSet(config, SAMPLE_RATE, reporters={"text", "chart"}))
    try:
        status = EXIT_OK
        for failed in pipeline.plugins.failures():
            print(f"sera: plugin {failed.name} is not loaded: {failed.error}", file=sys.stderr)
            status = EXIT_PLUGIN_FAILED
        summary = listen(config, pipeline, args.input, args.name or user_name(), args.speed, Path(args.output) if args.output else None)
        print(pipeline.plugins.render_summary("text", summary))
        return status
    finally:
        pipeline.close()


def cmd_train(args: argparse.Namespace) -> int:
    from sera.training.cli import main as train_main  # says how to get the [train] extra when torch is missing

    return train_main(args, config_of(args))


def cmd_run(args: argparse.Namespace) -> int:
    from sera.adapters.discord.app import run

    from sera.registry import check_options

    if not args.verbose:
        log.setLevel(logging.INFO)  # the operator's log: one line per start, failure, stop
    config = config_of(args)
    check_options(config)
    if args.shard_count is not None or args.shard_ids is not None:
        try:
            ids = [int(i) for i in args.shard_ids.split(",")] if args.shard_ids else list(config.discord.shard_ids)
        except ValueError:
            raise SeraError(f"--shard-ids must be numbers separated by commas, like 0,1: not {args.shard_ids!r}") from None
        count = config.discord.shard_count if args.shard_count is None else args.shard_count
        config = replace(config, discord=replace(config.discord, shard_count=count, shard_ids=ids))
    return run(config)


def cmd_sync(args: argparse.Namespace) -> int:
    from sera.adapters.discord.sync import run

    print(run(config_of(args), args.guild, args.dry_run))
    return EXIT_OK


def cmd_db(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sera import baseline_store, sessions
    from sera.adapters.discord import store
    from sera.database import connect

    target = config_of(args).database_path()
    components = ((sessions.COMPONENT, sessions.MIGRATIONS), (store.COMPONENT, store.MIGRATIONS),
                  (baseline_store.COMPONENT, baseline_store.MIGRATIONS))  # fmt: skip
    if args.action == "status" and isinstance(target, Path) and not target.exists():  # looking creates nothing
        print(f"database: {target} does not exist yet (sera creates it when it first opens it)")
        for component, migrations in components:
            print(f"{component}: schema 0 of {migrations[-1].version}; pending: " + ", ".join(f"{m.version} ({m.name})" for m in migrations))
        return EXIT_OK
    db = connect(target)
    try:
        print(f"database: {db} ({db.engine})")
        for component, migrations in components:
            if args.action == "upgrade":
                for migration in db.migrate(component, migrations):
                    print(f"  {component}: applied {migration.version} ({migration.name})")
            current = db.version(component)
            pending = [f"{m.version} ({m.name})" for m in migrations if m.version > current]
            print(f"{component}: schema {current} of {migrations[-1].version}" + (f"; pending: {', '.join(pending)}" if pending else ", up to date"))
        return EXIT_OK
    finally:
        db.close()


def cmd_status(args: argparse.Namespace) -> int:
    from sera.adapters.discord.health import read_status, status_files

    folder = config_of(args).status_folder()
    paths = status_files(folder)
    if not paths:
        raise SeraError(f"no status file in {folder}: is `sera run` running with this config?")
    all_fresh = True
    for path in paths:
        try:
            status, fresh = read_status(path)
        except ValueError as exc:
            raise SeraError(f"cannot read the status at {path} ({str(exc)[:200] or exc.__class__.__name__})") from None
        except (OSError, KeyError) as exc:
            raise SeraError(f"cannot read the status at {path} ({exc.__class__.__name__})") from None
        if len(paths) > 1:
            print(f"{path.name}:")
        print_status(status, fresh)
        all_fresh &= fresh
    return EXIT_OK if all_fresh else EXIT_BAD_INPUT


def print_status(status: dict, fresh: bool) -> None:
    import time

    age = time.time() - status["updated_at"]
    notes = status.get("notes", {})
    queue = status.get("queue", {})
    print(f"{'running' if fresh else 'NOT RESPONDING'}: pid {status['pid']}, up {(time.time() - status['started_at']) / 3600:.1f} h, "
          f"status {age:.0f} s old")  # fmt: skip
    print(f"guilds {status['guilds']}, gateway latency {status['latency_ms']} ms, sessions {status['sessions']}")
    print(f"voice notes: {notes.get('answered', 0)} answered, {notes.get('not answered', 0)} not; "
          f"queue {queue.get('busy', 0)}/{queue.get('size', 0)}")  # fmt: skip
    failed = {kind: n for kind, n in status.get("notes_failed", {}).items() if n}
    if failed:
        print("not answered, by why: " + ", ".join(f"{kind} {n}" for kind, n in failed.items()))
    lag = status.get("loop_lag_ms", {})
    print(f"event-loop lag: {lag.get('last', 0)} ms now, worst {lag.get('worst', 0)} ms since start")
    if status.get("plugins_stopped"):
        print(f"plugins stopped: {', '.join(status['plugins_stopped'])}")


def cmd_doctor(args: argparse.Namespace) -> int:
    from sera.adapters.doctor import report, run_checks

    checks = run_checks(args.config)
    print(report(checks))
    return EXIT_OK if all(c.ok for c in checks) else EXIT_BAD_INPUT
