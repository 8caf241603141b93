"""The layers, read from the imports themselves: the core knows no adapter, no Discord, no torch, no
training code and no built-in plugin; adapters reach plugins only through the registry; and the
``sera`` command pays for librosa, onnxruntime and torch only when a command needs them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BOT = ROOT / "bot"
ADAPTERS = BOT / "adapters"
ENTRY = BOT / "__main__.py"  # ``python -m sera``: the command line's entry, so an adapter
CORE = sorted(p for p in BOT.rglob("*.py") if ADAPTERS not in p.parents and p != ENTRY)
ADAPTER_FILES = sorted([*ADAPTERS.rglob("*.py"), ENTRY])
NOT_IN_THE_CORE = ("sera.adapters", "discord", "davey", "aiohttp", "torch", "onnx", "sera.training", "sera.plugins", "bot", "plugins", "training")
HEAVY = ("librosa", "onnxruntime", "torch", "sklearn", "discord")


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (lazy imports inside functions count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_imports_no_adapter_discord_torch_training_or_plugin(path: Path) -> None:
    assert not sorted(m for m in imports(path) if within(m, NOT_IN_THE_CORE))


@pytest.mark.parametrize("path", ADAPTER_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_adapters_reach_plugins_only_through_the_registry(path: Path) -> None:
    assert not sorted(m for m in imports(path) if within(m, ("sera.plugins", "plugins")))


PLUGIN_FILES = sorted((ROOT / "plugins").glob("*.py"))
TRAINING_FILES = sorted((ROOT / "training").rglob("*.py"))
LEARNER_FOLDERS = sorted(p for p in (ROOT / "training" / "learners").iterdir() if (p / "learner.py").is_file())
PROTOCOL_INTERFACES = ("sera.training.protocol", "sera.training.data", "sera.training.results")  # what a learner may import of training


def module_of(path: Path) -> str:
    """``training/learners/cnn/fit.py`` -> ``sera.training.learners.cnn.fit``."""
    parts = path.relative_to(ROOT / "training").with_suffix("").parts
    return ".".join(("sera", "training", *(parts[:-1] if parts[-1] == "__init__" else parts)))


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_built_in_plugins_use_the_public_plugin_api_alone(path: Path) -> None:
    """A built-in has no privilege a third-party plugin lacks: of sera, it imports ``sera.plugin`` only."""
    assert sorted(m for m in imports(path) if within(m, ("sera", "bot", "plugins", "training")) and m != "sera.plugin") == []


@pytest.mark.parametrize("path", TRAINING_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_training_imports_no_plugin_and_no_adapter(path: Path) -> None:
    assert not sorted(m for m in imports(path) if within(m, ("sera.plugins", "plugins", "sera.adapters", "discord")))


def test_training_modules_import_no_circle() -> None:
    """The protocol, the learners' parts and the command import one another one way only."""
    graph = {module_of(p): {m for m in imports(p) if m.startswith("sera.training.")} for p in TRAINING_FILES}

    def reaches(start: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    assert [m for m in graph if reaches(m, m)] == []


def test_the_protocol_knows_no_learner() -> None:
    """The protocol every model's training shares imports no learner and no torch (of training, only the
    results record it returns): a learner supplies logits to it, never the other way round. The card
    writer and the results record import no torch either (a card is rebuilt without the [train] extra)."""
    assert sorted(m for m in imports(ROOT / "training" / "protocol.py") if within(m, ("sera.training", "torch"))) == ["sera.training.results"]
    for shared in ("card.py", "results.py", "data.py", "cli.py"):
        assert not sorted(m for m in imports(ROOT / "training" / shared) if within(m, ("sera.training.learners", "torch"))
                          and m != "sera.training.learners.cnn.recipe"), shared  # fmt: skip


@pytest.mark.parametrize("folder", LEARNER_FOLDERS, ids=lambda p: p.name)
def test_a_learner_imports_the_protocols_interfaces_and_its_own_folder_only(folder: Path) -> None:
    """Learners are peers: each imports, of training, the protocol's interfaces and its own modules,
    never another learner; its ``card`` module (read to write any card) imports no torch."""
    own = f"sera.training.learners.{folder.name}"
    for path in folder.glob("*.py"):
        foreign = sorted(m for m in imports(path) if within(m, ("sera.training",)) and not within(m, (own, *PROTOCOL_INTERFACES)))
        assert foreign == [], path.name
    assert not sorted(m for m in imports(folder / "card.py") if within(m, ("torch", "onnx", "onnxruntime")))


def test_every_learner_folder_is_a_line_of_sera_train() -> None:
    from sera.training.cli import LEARNERS

    assert set(LEARNERS) == {p.name for p in LEARNER_FOLDERS} == {"whisper", "cnn"}


def test_the_layer_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    """The rule above reads real imports: a core module importing the Discord adapter lazily is caught."""
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("def later():\n    from sera.adapters.discord.notes import VoiceNotes\n    import torch.nn as nn\n")
    assert sorted(m for m in imports(sneaky) if within(m, NOT_IN_THE_CORE)) == ["sera.adapters.discord.notes", "torch.nn"]


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["config"], ["plugins"]])
def test_light_commands_import_nothing_heavy(argv: list[str]) -> None:
    probe = (
        "import sys\nfrom sera.adapters.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_every_package_folder_is_in_the_distribution() -> None:
    """The package list in pyproject.toml is explicit (the folders are mapped): a new subpackage left out
    of it would silently be missing from the wheel."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {folder: package for package, folder in setuptools["package-dir"].items()}
    found = set()
    for top, package in mapped.items():
        for init in (ROOT / top).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / top)
            found.add(".".join([package, *relative.parts]))
    assert found == set(setuptools["packages"])
