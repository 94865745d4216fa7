"""The embedded server's module layering: toxics depend only on their contract."""

from __future__ import annotations

import ast
from pathlib import Path

import chaos.toxiproxy.toxics as toxics_package

FORBIDDEN = ("chaos.toxiproxy.chain", "chaos.toxiproxy.dataplane", "chaos.toxiproxy.model")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_toxics_never_import_the_chain_or_the_data_plane():
    package = Path(toxics_package.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert len(modules) > 5
    for module in modules:
        bad = {m for m in imported_modules(module) if m.startswith(FORBIDDEN)}
        assert not bad, f"{module.name} imports {sorted(bad)}"
