"""``sera plugins new NAME``: a plugin package to start from, that installs and runs as it is.

It holds one analyzer (the loudness of each speech segment: a few lines of numpy, so the shape of a
plugin is not hidden behind a model), typed options, the plugin API version it was written for, its
entry point, and a config that enables it, so ``pip install -e NAME`` and one ``sera analyze`` show it
working before the author changes anything.
"""

from __future__ import annotations

import keyword
import re
from importlib.metadata import distributions, entry_points
from pathlib import Path

from sera import __version__
from sera.errors import SeraError
from sera.plugin import SERA_PLUGIN_API

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A sera plugin: {name}"
requires-python = ">=3.11"
dependencies = ["numpy", "sera-voice>={version},<{next_major}"]

# sera finds plugins through this entry-point group; the name is the key under plugins: in its config.
[project.entry-points."sera.plugins"]
{name} = "{package}:{cls}"

[tool.setuptools]
packages = ["{package}"]
"""

MODULE = '''\
"""{name}: a sera analyzer. Start here; ``sera.plugin``'s docstring describes the whole API."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from sera.plugin import Analyzer, Result, Segment, bounded


@dataclass(frozen=True)
class Options:
    """The keys this plugin accepts under ``plugins: {name}:`` in the sera config."""

    quiet_below_dbfs: float = bounded(-35.0, max=0)


@dataclass(frozen=True)
class SegmentLoudness(Result):
    dbfs: float = 0.0
    quiet: bool = False

    kind: ClassVar[str] = "{name}"

    def headline(self) -> str:
        return f"{{self.dbfs:.0f}} dBFS" + (" (quiet)" if self.quiet else "")


class {cls}(Analyzer[Options]):
    Options = Options
    api = {api}  # the sera plugin API this was written for (sera.plugin.SERA_PLUGIN_API)

    def analyze(self, segments: Sequence[Segment]) -> list[SegmentLoudness]:
        return [self._measure(s) for s in segments]

    def summarize(self, results: Sequence[Result]) -> SegmentLoudness | None:
        mine = [r for r in results if isinstance(r, SegmentLoudness)]
        if not mine:
            return None
        dbfs = float(np.mean([r.dbfs for r in mine]))
        return SegmentLoudness(mine[0].start, mine[-1].end, round(dbfs, 1), dbfs < self.options.quiet_below_dbfs)

    def _measure(self, segment: Segment) -> SegmentLoudness:
        rms = float(np.sqrt(np.mean(np.square(segment.samples)))) if segment.samples.size else 0.0
        dbfs = float(20 * np.log10(rms)) if rms > 0 else -120.0  # plain floats: results must be JSON
        return SegmentLoudness(segment.start, segment.end, round(dbfs, 1), dbfs < self.options.quiet_below_dbfs)
'''

CONFIG = """\
# A sera config that enables this plugin: SERA_CONFIG={folder}/sera.yaml sera analyze NOTE.ogg
plugins:
  {name}:
    enabled: true
    quiet_below_dbfs: -35
"""

README = """\
# {dist}

A sera plugin. Install it beside sera and see it run:

```bash
pip install -e {folder}
SERA_CONFIG={folder}/sera.yaml sera analyze NOTE.ogg     # a "{name}" line joins the emotion and prosody ones
sera plugins                                            # {name}  analyzer  {dist} 0.1.0  ...
```

`{package}/__init__.py` holds the analyzer; change what `_measure` computes, add options to `Options`
(a wrong value in a config is refused with the file and key named), and keep `api` at the
`sera.plugin.SERA_PLUGIN_API` you wrote it for: sera refuses a plugin written for another major version.
"""


MAX_NAME = 40  # a config key, a package and a class are named after it
# The names the template's module defines or imports: a plugin class of the same name would shadow one.
TEMPLATE_NAMES = set(re.findall(r"^class (\w+)", MODULE, re.M)) | {
    name.split(" as ")[-1].strip() for line in re.findall(r"^(?:from \S+ )?import (.+)$", MODULE, re.M) for name in line.split(",")
}
YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "none"}  # YAML 1.1 reads these as booleans or null


def bad_name(name: str) -> str | None:
    """Why ``name`` cannot name a plugin, or None. It becomes a config key (YAML would read ``true`` or
    ``none`` as something else), a Python package and class (``class None`` is a syntax error) and an
    entry point (a name another plugin has is refused at load time)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        return f"a plugin name is lower case letters, digits and _, starting with a letter: not {name[:60]!r}"
    if len(name) > MAX_NAME:
        return f"a plugin name is at most {MAX_NAME} characters; {name[:20]}... has {len(name)}"
    if name in YAML_WORDS or keyword.iskeyword(name) or keyword.iskeyword(class_name(name)):
        return f"{name!r} cannot name a plugin: YAML or Python reads it as something else; choose another name"
    if name in {ep.name for ep in entry_points(group="sera.plugins")}:
        return f"a plugin called {name!r} is already installed (`sera plugins` lists them); choose another name"
    if normalized(distribution(name)) in {normalized(d.metadata["Name"] or "") for d in distributions()}:
        return (f"{name!r} would make a package named {distribution(name)}, which is already installed "
                "(installing the new one would replace it); choose another name")  # fmt: skip
    if class_name(name) in TEMPLATE_NAMES:
        return f"{name!r} would name the plugin's class {class_name(name)}, which the template already uses; choose another name"
    return None


def distribution(name: str) -> str:
    """The package ``sera plugins new`` makes for plugin ``name``."""
    return f"sera-{name.replace('_', '-')}"


def normalized(project: str) -> str:
    """A project name as the package index compares them (PEP 503): ``Sera_Voice`` is ``sera-voice``."""
    return re.sub(r"[-_.]+", "-", project).lower()


def class_name(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))


def create(name: str, parent: Path) -> Path:
    """Write the package for plugin ``name`` into ``parent/name``; refuses to overwrite anything."""
    refusal = bad_name(name)
    if refusal:
        raise SeraError(refusal)
    folder = parent / name
    if folder.exists():
        raise SeraError(f"{folder} already exists; choose another name or folder")
    package = f"sera_{name}"
    fields = {
        "name": name,
        "dist": distribution(name),
        "package": package,
        "cls": class_name(name),
        "api": repr(SERA_PLUGIN_API),
        "version": __version__,
        "next_major": f"{int(__version__.split('.')[0]) + 1}",
        "folder": folder.as_posix(),
    }
    (folder / package).mkdir(parents=True)
    (folder / "pyproject.toml").write_text(PYPROJECT.format(**fields))
    (folder / package / "__init__.py").write_text(MODULE.format(**fields))
    (folder / "sera.yaml").write_text(CONFIG.format(**fields))
    (folder / "README.md").write_text(README.format(**fields))
    return folder
