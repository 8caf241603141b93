"""Finding, configuring, loading and calling plugins, each in isolation.

Built-in plugins and third-party ones are found the same way, through the ``sera.plugins`` entry-point
group (sera's own ``pyproject.toml`` registers the built-ins). Built-ins are enabled unless the config
says ``enabled: false``; third-party plugins only when the config enables them, and a plugin that is not
enabled is never imported (its module code never runs). Whether a plugin is built in is decided by the
distribution that provides it, not by its module path; a third-party entry point that takes a name
already used by another plugin is refused with the reason, never allowed to replace it.

A plugin that fails to import, to configure or to set up is recorded with its reason and left out.
Every call into a plugin (setup, analyze, render, the session and forget hooks, teardown) goes
through its ``Guard``: a thread of its own, a timeout, and a count of calls that never came back, so a
plugin that hangs costs only itself.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import threading
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, TypeVar

from packaging.requirements import InvalidRequirement, Requirement

from sera import DISTRIBUTION, __version__
from sera.config import DEFAULT_PLUGINS, Config, build
from sera.errors import ConfigError, SeraError
from sera.plugin import Analyzer, Plugin, PluginContext, Report, Reporter, SessionSummary, api_mismatch

log = logging.getLogger(__name__)

GROUP = "sera.plugins"
SETUP_TIMEOUT_SECONDS = 120.0  # setup loads models and warms them up: slower than one call, still bounded
NOT_INSTALLED = "not installed"  # a plugin named in the config that no installed package provides
_TOLD_MISSING: set[tuple[str, str]] = set()  # (plugin, config file) whose absence the log has told
T = TypeVar("T")


class PluginFailure(Exception):
    """A plugin misbehaved (raised, hung, returned garbage); the message is safe to show to the user."""


class Guard:
    """Runs one plugin's calls so that a misbehaving plugin costs only itself.

    Each call runs on a daemon thread of its own (a hung call never holds a thread another plugin
    needs, and never keeps the process from exiting) and is waited for ``timeout`` seconds. At most
    ``concurrency`` calls of the plugin may be running at once: while that many are hung, further calls
    fail at once instead of piling up (each would hold a note's audio). After ``max_timeouts`` timeouts
    the plugin is stopped for the life of the process.
    """

    def __init__(self, name: str, timeout: float, max_timeouts: int, concurrency: int) -> None:
        self.name = name
        self.timeout = timeout
        self.max_timeouts = max_timeouts
        self.concurrency = concurrency
        self.running = 0
        self.timeouts = 0
        self._lock = threading.Lock()

    @property
    def stopped(self) -> str | None:
        """Why the plugin is no longer called, or None."""
        if self.timeouts >= self.max_timeouts:
            return f"stopped after {self.timeouts} calls that took longer than {self.timeout:g} s"
        return None

    def call(self, what: str, function: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """``function(*args)`` on the plugin's own thread; ``PluginFailure`` if it raised or overran
        ``timeout`` (default: the plugin timeout)."""
        timeout = self.timeout if timeout is None else timeout
        with self._lock:
            if self.stopped:
                raise PluginFailure("it was stopped after too many timeouts")
            if self.running >= self.concurrency:
                raise PluginFailure("it is still busy with earlier calls that did not return")
            self.running += 1
        done = threading.Event()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["value"] = function(*args)
            except BaseException as exc:  # handed to the caller, who reports it under the plugin's name
                outcome["error"] = exc
            finally:
                with self._lock:
                    self.running -= 1
                done.set()

        threading.Thread(target=work, name=f"sera-plugin-{self.name}", daemon=True).start()
        if not done.wait(timeout):
            with self._lock:
                self.timeouts += 1
                stopped = self.stopped
            log.error("plugin %s: %s timed out after %.1f s", self.name, what, timeout)
            if stopped:
                log.error("plugin %s is %s; it will not be called again until sera restarts", self.name, stopped)
            raise PluginFailure("it took too long")
        if "error" in outcome:
            error = outcome["error"]
            if isinstance(error, PluginFailure):
                log.error("plugin %s: %s returned garbage: %s", self.name, what, error)
                raise error
            if isinstance(error, SeraError):  # an expected failure with its own words (a model file refused): no traceback
                log.error("plugin %s: %s failed: %s", self.name, what, error)
            else:
                log.error("plugin %s: %s raised", self.name, what, exc_info=error)
            raise PluginFailure("it raised an error") from error
        return outcome["value"]


@dataclass
class PluginInfo:
    """What ``sera plugins`` shows about one plugin."""

    name: str
    origin: str  # "built-in" or the distribution that provides it
    kind: str = "?"  # "analyzer", "reporter", or "?" when it was not imported
    enabled: bool = False
    error: str | None = None
    plugin: Plugin | None = None
    guard: Guard | None = None
    ready: bool = False  # imported, API and options checked, not set up (``PluginSet(set_up=False)``)
    missing: str | None = None  # an optional dependency is not installed: what it needs and how to install it
    bad_config: bool = False  # its section of the config is wrong (an unknown option, a value out of range)
    options: Any = None  # its options as built from the config, defaults filled in

    @property
    def status(self) -> str:
        if self.missing:
            return f"not installed: {self.missing}"
        if self.error:
            return f"failed: {self.error}"
        if self.guard is not None and self.guard.stopped:
            return self.guard.stopped
        if self.plugin:
            return "loaded"
        return "ready" if self.ready else "disabled"

    @property
    def active(self) -> bool:
        return self.plugin is not None and self.guard is not None and not self.guard.stopped


class PluginSet:
    """The loaded plugins of one configuration, in discovery order."""

    def __init__(
        self, config: Config, sample_rate: int, only: Collection[str] | None = None, set_up: bool = True,
        reporters: Collection[str] | None = None,
    ) -> None:  # fmt: skip
        """Load every enabled plugin, or with ``only`` just those named (``sera evaluate`` needs one).
        Without ``set_up``, plugins are imported and their options checked but not set up (no model is
        loaded): what ``sera plugins`` lists in a blink. With ``reporters``, only the reporters named are
        set up (``sera analyze`` uses one; the others, matplotlib's among them, cost nothing)."""
        self._reporters = reporters
        context = PluginContext(models_dir=config.models_dir, sample_rate=sample_rate)
        every = list(entry_points(group=GROUP))
        found: dict[str, list[EntryPoint]] = {}
        for ep in every:
            if only is None or ep.name in only:
                found.setdefault(ep.name, []).append(ep)
        self.infos: list[PluginInfo] = []
        builtins = {ep.value.replace(" ", "") for ep in every if _is_builtin(ep)}  # the built-ins' classes, "module:Class"
        # Built-ins that are off by default come after the others: with both emotion analyzers on, the
        # reply headlines the default one's answer (``Report.emotion`` takes the first).
        for name, eps in sorted(found.items(), key=lambda item: item[0] in DEFAULT_PLUGINS):
            chosen, refused = _resolve_clash(eps)
            if chosen is not None and not _is_builtin(chosen) and chosen.value.replace(" ", "") in builtins:
                why = f"it names a built-in plugin's class ({chosen.value}): enable the built-in itself (a second copy would load its model twice)"
                log.error("plugin %s from %s refused: %s", chosen.name, _distribution(chosen), why)
                refused, chosen = [*refused, PluginInfo(chosen.name, _distribution(chosen), error=why)], None
            self.infos += refused
            if chosen is not None:
                self.infos.append(self._load(chosen, config, context, set_up))
        for name in sorted(config.plugins.keys() - found.keys() if only is None else set(only) - found.keys()):
            if (name, config.source) not in _TOLD_MISSING:  # once per process, however many plugin sets a command makes
                _TOLD_MISSING.add((name, config.source))
                log.warning("plugin %r is configured in %s but not installed", name, config.source)
            self.infos.append(PluginInfo(name, "config", enabled=True, error=NOT_INSTALLED))

    @property
    def loaded(self) -> list[Plugin]:
        return [i.plugin for i in self.infos if i.active]

    @property
    def analyzers(self) -> list[Analyzer]:
        return [p for p in self.loaded if isinstance(p, Analyzer)]

    def call(self, plugin: Plugin, what: str, function: Callable[..., T], *args: Any) -> T:
        """Any call into ``plugin``, through its guard."""
        return self._guard(plugin).call(what, function, *args)

    def reporter(self, name: str) -> Reporter:
        for info in self.infos:
            if info.name == name and info.active and isinstance(info.plugin, Reporter):
                return info.plugin
        info = next((i for i in self.infos if i.name == name), None)
        if info is None or info.kind == "analyzer":
            known = ", ".join(i.name for i in self.infos if i.kind == "reporter") or "none"
            raise SeraError(f"no reporter called {name!r}; the reporters here: {known}")
        raise SeraError(f"reporter {name!r} is not available ({info.status})")

    def render(self, name: str, report: Report) -> Any:
        """Reporter ``name``'s output for ``report``; ``SeraError`` (a short reason) if it is missing or fails."""
        return self._rendered(name, "render", report)

    def render_summary(self, name: str, summary: SessionSummary) -> Any:
        """Reporter ``name``'s rendering of a session summary; ``SeraError`` (a short reason) if it is
        missing or fails."""
        return self._rendered(name, "render_session", summary)

    def _rendered(self, name: str, method: str, what: Report | SessionSummary) -> Any:
        reporter = self.reporter(name)
        try:
            return self.call(reporter, method, getattr(reporter, method), what)
        except PluginFailure as failure:
            raise SeraError(f"the {name} reporter failed ({failure})") from None

    def notify(self, hook: str, *args: object) -> None:
        """Call a session hook (``session_started``/``session_ended``) on every plugin; failures are logged."""
        for plugin in self.loaded:
            try:
                self.call(plugin, hook, getattr(plugin, hook), *args)
            except PluginFailure:
                pass  # the guard logged it under the plugin's name

    def render_session(self, summary: SessionSummary) -> dict[str, Any]:
        """Every reporter's rendering of a session summary; one that fails is logged and left out."""
        out = {}
        for reporter in (p for p in self.loaded if isinstance(p, Reporter)):
            try:
                rendered = self.call(reporter, "render_session", reporter.render_session, summary)
            except PluginFailure:
                continue
            if rendered is not None:
                out[reporter.name] = rendered
        return out

    def forget_user(self, user_id: str, only: Collection[str] | None = None) -> tuple[dict[str, int], list[str]]:
        """Every plugin's ``forget_user`` (or those named in ``only``): ({plugin name: items it deleted}
        for those that kept something, [plugins that could not: failed to set up, raised, hung, or were
        stopped]). One that is off or not installed keeps nothing to reach, and is not named; but one named
        in ``only`` (asked again for an earlier ``/forget``) stays failed until its ``forget_user`` has
        returned, also while it is off, broken or gone: its data is still there."""
        deleted, failed = {}, []
        infos = {info.name: info for info in self.infos}
        for name in infos if only is None else only:
            info = infos.get(name)
            if only is None and (not info.enabled or info.missing or info.error == NOT_INSTALLED):
                continue
            if info is None or not info.active:
                failed.append(name)
                continue
            try:
                count = self.call(info.plugin, "forget_user", info.plugin.forget_user, user_id)
            except PluginFailure:
                failed.append(name)
                continue
            if count:
                deleted[name] = int(count)
        return deleted, failed

    def failures(self) -> list[PluginInfo]:
        """Enabled plugins that failed (to import, configure or set up) or were stopped; one whose optional
        dependency is not installed is not a failure: ``sera plugins`` lists it with how to install it."""
        return [i for i in self.infos if i.enabled and not i.missing and (i.error or (i.guard and i.guard.stopped))]

    def close(self) -> None:
        """Tear every plugin down, each within the plugin timeout, whatever it does."""
        for info in self.infos:
            if info.plugin is not None and info.guard is not None:
                try:
                    info.guard.call("teardown", info.plugin.teardown)
                except PluginFailure:
                    pass
                info.plugin = None

    def _guard(self, plugin: Plugin) -> Guard:
        for info in self.infos:
            if info.plugin is plugin and info.guard is not None:
                return info.guard
        raise SeraError(f"plugin {plugin.name!r} is not loaded")

    def _load(self, ep: EntryPoint, config: Config, context: PluginContext, set_up: bool) -> PluginInfo:
        builtin = _is_builtin(ep)
        origin = "built-in" if builtin else _distribution(ep)
        raw = config.plugin_section(ep.name)
        enabled = raw.pop("enabled", builtin)
        info = PluginInfo(ep.name, origin, enabled=enabled is True)
        if not isinstance(enabled, bool):
            info.error, info.bad_config = f"{config.source}: 'plugins.{ep.name}.enabled' must be true or false, not {enabled!r}", True
            log.error("plugin %s not loaded: %s", ep.name, info.error)
            return info
        if not enabled:
            if builtin:  # sera's own code: its kind and its options' defaults are shown (``sera plugins``, ``sera config``)
                cls = ep.load()
                info.kind = "analyzer" if issubclass(cls, Analyzer) else "reporter"
                info.options = build(cls.Options, raw, config.source, prefix=f"plugins.{ep.name}.")
            return info  # a disabled third-party plugin is never imported: its code does not run
        if not builtin and (needs := incompatible(ep)):
            info.error = f"{origin} needs {needs}; this is {DISTRIBUTION} {__version__}"
            log.error("plugin %s not loaded: %s", ep.name, info.error)
            return info
        if not builtin and (mismatch := api_mismatch(declared_api(ep))):
            info.error = mismatch  # read from its source: the plugin's code never ran
            log.error("plugin %s not loaded: %s", ep.name, info.error)
            return info
        guard = Guard(ep.name, config.plugin_timeout_seconds, config.plugin_max_timeouts, config.workers * 2)
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, (Analyzer, Reporter))):
                raise TypeError(f"{ep.value} is not an Analyzer or Reporter subclass")
            if mismatch := api_mismatch(cls.api):
                raise SeraError(mismatch)
            info.kind = "analyzer" if issubclass(cls, Analyzer) else "reporter"
            absent = [module for module in cls.requires if importlib.util.find_spec(module) is None]
            if absent:
                dist = ep.dist.name if ep.dist else "its package"
                info.missing = f"needs {', '.join(absent)} (pip install '{dist}[{cls.extra}]')" if cls.extra else f"needs {', '.join(absent)}"
                log.info("plugin %s not available: %s", ep.name, info.missing)
                return info
            if cls.name and cls.name != ep.name:
                log.warning("plugin %s: its class says name %r; a plugin's name is its entry point's", ep.name, cls.name)
            cls.name = ep.name  # never what the class says: a third party cannot take over a built-in's answers
            options = build(cls.Options, raw, config.source, prefix=f"plugins.{ep.name}.")
            info.options = options
            if not set_up or (self._reporters is not None and issubclass(cls, Reporter) and ep.name not in self._reporters):
                info.ready = True
                return info
            plugin = cls(options, context)
            guard.call("setup", plugin.setup, timeout=max(SETUP_TIMEOUT_SECONDS, config.plugin_timeout_seconds))
            info.plugin, info.guard = plugin, guard
            log.debug("plugin %s set up (%s)", ep.name, origin)
        except ConfigError as exc:  # every command refuses such a config at once (``check_options``), in one line
            info.error, info.bad_config = str(exc), True
            log.info("plugin %s not loaded: %s", ep.name, exc)
        except SeraError as exc:
            info.error = str(exc)
            log.error("plugin %s not loaded: %s", ep.name, exc)
        except PluginFailure as failure:
            cause = failure.__cause__
            info.error = f"{type(cause).__name__}: {cause}" if cause else f"setup: {failure}"
            if isinstance(cause, SeraError):
                info.error = str(cause)
        except Exception as exc:
            info.error = f"{type(exc).__name__}: {exc}"
            log.exception("plugin %s failed to load", ep.name)
        return info


def declared_api(ep: EntryPoint) -> tuple[int, int] | None:
    """The plugin API version a plugin class states (``api = (1, 0)`` in its body), read from the
    installed source without importing it, so that a plugin written for another API is refused before
    any of its code runs. A literal, or a module-level name bound to one (``api = PLUGIN_API``), is
    read; anything else (``tuple([2, 0])``) comes back as its source text, which ``api_mismatch``
    refuses: working it out would mean running the plugin's code. None
    where the source cannot be read that way (an editable install, a compiled module) or the class
    states none (inherited): then it is checked after import."""
    module, _, attr = ep.value.partition(":")
    wanted = module.strip().replace(".", "/")
    files = (ep.dist.files or []) if ep.dist else []
    source = next((f for f in files if f.as_posix() in (f"{wanted}.py", f"{wanted}/__init__.py")), None)
    if source is None:
        return None
    try:
        tree = ast.parse(Path(ep.dist.locate_file(source)).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    constants = {name: value for name, value in _assignments(tree.body) if value is not None}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == attr.strip():
            for name, value in _assignments(node.body):
                if name == "api" and value is not None:
                    value = constants.get(value.id, value) if isinstance(value, ast.Name) else value
                    try:
                        return ast.literal_eval(value)
                    except ValueError:
                        return ast.unparse(value)
    return None


def _assignments(body: list[ast.stmt]) -> Iterator[tuple[str, ast.expr | None]]:
    """``NAME = value`` and ``NAME: type = value`` statements of a module or class body."""
    for item in body:
        targets = item.targets if isinstance(item, ast.Assign) else [item.target] if isinstance(item, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name):
                yield target.id, item.value


def check_options(config: Config) -> None:
    """Every enabled plugin's section of the config, checked as the config itself is (one ``ConfigError``
    naming the file, the option and its range): ``sera config``, ``sera doctor``, ``sera analyze`` and
    ``sera run`` all refuse a wrong option before doing anything, instead of running without the plugin.
    Imports the enabled plugins (their code is small; models load only in ``setup``)."""
    plugins = PluginSet(config, 0, set_up=False)
    wrong = [i.error for i in plugins.infos if i.bad_config and i.error]
    if wrong:
        raise ConfigError(wrong[0])


def incompatible(ep: EntryPoint) -> str | None:
    """The plugin distribution's requirement on sera when this sera does not meet it (``Requires-Dist:
    sera-voice>=0.2``), so a plugin built for another plugin API is refused by name rather than failing
    at some later call; None when it states none or this version meets it."""
    for line in (ep.dist.requires or []) if ep.dist else []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if _normalise(requirement.name) == _normalise(DISTRIBUTION) and not requirement.marker:
            if not requirement.specifier.contains(__version__, prereleases=True):
                return f"{DISTRIBUTION}{requirement.specifier}"
    return None


def _is_builtin(ep: EntryPoint) -> bool:
    """sera-voice's own entry point: its distribution says sera-voice and its module is one of this sera's
    own (``sera.*``, found where this sera really is). A ``sera_voice-*.dist-info`` planted elsewhere on
    the path, naming a module of its own, makes no built-in: its entry point is a third party's."""
    if ep.dist is None or _normalise(ep.dist.name) != _normalise(DISTRIBUTION):
        return False
    module = ep.value.partition(":")[0].strip()
    return module.startswith("sera.") and importlib.util.find_spec(module) is not None


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _resolve_clash(eps: list[EntryPoint]) -> tuple[EntryPoint | None, list[PluginInfo]]:
    """One entry point per name: the built-in one if there is one, else the only one; the rest refused."""
    if len(eps) == 1:
        return eps[0], []
    builtin = next((ep for ep in eps if _is_builtin(ep)), None)
    refused = []
    for ep in eps:
        if ep is builtin:
            continue
        if builtin is not None:
            why = f"name clash: {ep.name!r} is a built-in plugin's name; choose another name in {_distribution(ep)}"
        else:
            others = ", ".join(_distribution(o) for o in eps if o is not ep)
            why = f"name clash: {ep.name!r} is also registered by {others}; neither is loaded"
        log.error("plugin %s from %s refused: %s", ep.name, _distribution(ep), why)
        refused.append(PluginInfo(ep.name, _distribution(ep), error=why))
    return builtin, refused


def _distribution(ep: EntryPoint) -> str:
    dist = ep.dist
    return f"{dist.name} {dist.version}" if dist else "unknown package"
