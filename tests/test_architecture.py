"""The tree shows how data flows, and the imports keep to it (docs/architecture.md).

Packages sit in layers, bottom up. A module may import its own package, the layers below
its own, and nothing above; and from another package only what that package exports
(its ``__init__`` or its public modules), never a ``_private`` module.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

SRC: Final = Path(__file__).resolve().parents[1] / "src"
# (package, layer): a module belongs to the longest package that contains it.
LAYERS: Final = (
    ("carbonlink.errors", 0),
    ("carbonlink.core", 0),
    ("carbonlink.wire", 1),
    ("carbonlink.emissions", 1),
    ("carbonlink.abatement", 1),
    ("carbonlink.config", 2),
    ("carbonlink.coordination.model", 2),
    ("carbonlink.mqtt", 3),
    ("carbonlink.jetstream", 3),
    ("carbonlink.sparkplug", 1),
    ("carbonlink.storage", 3),
    ("carbonlink.simulators", 4),
    ("carbonlink.agent", 4),
    ("carbonlink.platform", 4),
    ("carbonlink.coordination", 5),
    ("carbonlink.web", 6),
    ("carbonlink.cli", 7),
)
# The package root is the public API: it may gather from every layer.
FACADES: Final = frozenset({"carbonlink", "carbonlink.__main__"})


def _module_of(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> tuple[str, int] | None:
    found = [(p, n) for p, n in LAYERS if module == p or module.startswith(p + ".")]
    return max(found, key=lambda f: len(f[0])) if found else None


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "carbonlink":
                found += [(node.lineno, f"carbonlink.{a.name}") for a in node.names]
            elif node.module.startswith("carbonlink."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("carbonlink")]
    return found


MODULES: Final = sorted(SRC.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    unplaced = [
        _module_of(p) for p in MODULES
        if _module_of(p) not in FACADES and _layer(_module_of(p)) is None
    ]  # fmt: skip
    assert unplaced == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_of(p))
def test_no_import_points_up_or_into_another_packages_privates(path: Path) -> None:
    module = _module_of(path)
    if module in FACADES:
        return
    mine = _layer(module)
    assert mine is not None
    problems = []
    for line, target in _imports(path):
        theirs = _layer(target)
        if theirs is None:
            continue  # the package root's own names (carbonlink.__version__, ...)
        if theirs[1] > mine[1]:
            problems.append(f"line {line}: {target} is layer {theirs[1]}, above {mine[1]}")
        parts = target.split(".")
        private = next((i for i, part in enumerate(parts) if part.startswith("_")), None)
        if private is not None:
            owner = ".".join(parts[:private])
            if not (module == owner or module.startswith(owner + ".")):
                problems.append(f"line {line}: {target} is private to {owner}")
    assert problems == []


def test_the_architecture_page_names_every_layered_package() -> None:
    """docs/architecture.md's table tells the same story as LAYERS."""
    text = (SRC.parent / "docs" / "architecture.md").read_text()
    table = text[text.index("## The tree") :].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            for package in cells[1].split(","):
                rows[package.strip().strip("`")] = int(cells[0])
    present = {
        package: layer
        for package, layer in LAYERS
        if (SRC / package.replace(".", "/")).exists()
        or (SRC / (package.replace(".", "/") + ".py")).exists()
    }
    assert rows == present
