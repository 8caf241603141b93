"""Finding, configuring and loading plugins, each in isolation.

Built-in plugins and third-party ones are found the same way, through the ``sera.plugins`` entry-point
group (sera's own ``pyproject.toml`` registers the built-ins). Built-ins are enabled unless the config
says ``enabled: false``; third-party plugins only when the config enables them. A plugin that fails to
import, to configure or to set up is recorded with its reason and left out; the others load as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from importlib.metadata import EntryPoint, entry_points

from bot.config import Config, build
from bot.errors import SeraError
from bot.plugin import Analyzer, Plugin, PluginContext, Reporter, SessionSummary

log = logging.getLogger(__name__)

GROUP = "sera.plugins"
BUILTIN_PACKAGE = "plugins."


@dataclass
class PluginInfo:
    """What ``sera plugins`` shows about one plugin."""

    name: str
    origin: str  # "built-in" or the distribution that provides it
    kind: str = "?"  # "analyzer", "reporter" or "?" when it could not be imported
    enabled: bool = False
    error: str | None = None
    plugin: Plugin | None = None

    @property
    def status(self) -> str:
        if self.error:
            return f"failed: {self.error}"
        return "loaded" if self.plugin else "disabled"


class PluginSet:
    """The loaded plugins of one configuration, in discovery order."""

    def __init__(self, config: Config, sample_rate: int, only: Collection[str] | None = None) -> None:
        """Load every enabled plugin, or with ``only`` just those named (``sera evaluate`` needs one)."""
        context = PluginContext(models_dir=config.models_dir, sample_rate=sample_rate)
        found = {ep.name: ep for ep in entry_points(group=GROUP) if only is None or ep.name in only}
        self.infos = [self._load(ep, config, context) for ep in found.values()]
        for name in sorted(config.plugins.keys() - found.keys() if only is None else set(only) - found.keys()):
            log.warning("plugin %r is configured in %s but not installed", name, config.source)
            self.infos.append(PluginInfo(name, "config", enabled=True, error="not installed"))

    @property
    def loaded(self) -> list[Plugin]:
        return [i.plugin for i in self.infos if i.plugin is not None]

    @property
    def analyzers(self) -> list[Analyzer]:
        return [i.plugin for i in self.infos if isinstance(i.plugin, Analyzer)]

    def reporter(self, name: str) -> Reporter:
        for info in self.infos:
            if info.name == name and isinstance(info.plugin, Reporter):
                return info.plugin
        reason = next((i.status for i in self.infos if i.name == name), "not installed")
        raise SeraError(f"reporter {name!r} is not available ({reason})")

    def notify(self, hook: str, *args: object) -> None:
        """Call a session hook (``session_started``/``session_ended``) on every plugin; one that raises is logged."""
        for plugin in self.loaded:
            try:
                getattr(plugin, hook)(*args)
            except Exception:
                log.exception("plugin %s failed in %s", plugin.name, hook)

    def render_session(self, summary: SessionSummary) -> dict[str, Any]:
        """Every reporter's rendering of a session summary; one that raises is logged and left out."""
        out = {}
        for reporter in (p for p in self.loaded if isinstance(p, Reporter)):
            try:
                rendered = reporter.render_session(summary)
            except Exception:
                log.exception("reporter %s failed to render session %d", reporter.name, summary.session.id)
                continue
            if rendered is not None:
                out[reporter.name] = rendered
        return out

    def failures(self) -> list[PluginInfo]:
        return [i for i in self.infos if i.enabled and i.error]

    def close(self) -> None:
        for info in self.infos:
            if info.plugin is not None:
                try:
                    info.plugin.teardown()
                except Exception:
                    log.exception("plugin %s failed in teardown", info.name)
                info.plugin = None

    def _load(self, ep: EntryPoint, config: Config, context: PluginContext) -> PluginInfo:
        builtin = ep.value.startswith(BUILTIN_PACKAGE)
        origin = "built-in" if builtin else _distribution(ep)
        raw = dict(config.plugins.get(ep.name, {}))
        enabled = raw.pop("enabled", builtin)
        info = PluginInfo(ep.name, origin, enabled=enabled is True)
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, (Analyzer, Reporter))):
                raise TypeError(f"{ep.value} is not an Analyzer or Reporter subclass")
            info.kind = "analyzer" if issubclass(cls, Analyzer) else "reporter"
            if not isinstance(enabled, bool):
                raise SeraError(f"'plugins.{ep.name}.enabled' in {config.source} must be true or false")
            if not info.enabled:
                return info
            cls.name = cls.name or ep.name
            options = build(cls.Options, raw, config.source, prefix=f"plugins.{ep.name}.")
            plugin = cls(options, context)
            plugin.setup()
            info.plugin = plugin
        except SeraError as exc:
            info.error = str(exc)
            log.error("plugin %s not loaded: %s", ep.name, exc)
        except Exception as exc:
            info.error = f"{type(exc).__name__}: {exc}"
            log.exception("plugin %s failed to load", ep.name)
        return info


def _distribution(ep: EntryPoint) -> str:
    dist = ep.dist
    return f"{dist.name} {dist.version}" if dist else "unknown package"
