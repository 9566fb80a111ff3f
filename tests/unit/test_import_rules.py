"""Arrows point down: sharding is used by the runtime and never uses it (nor anything above it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sollol_cli"
ABOVE = {
    "sharding": ("runtime", "gateway", "cli", "ui", "demo"),
    "runtime": ("gateway", "cli", "ui", "demo"),
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_no_upward_imports(package: str) -> None:
    upward = {
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in sorted((PACKAGE / package).rglob("*.py"))
        for name in imported_modules(path)
        if any(name == f"sollol_cli.{up}" or name.startswith(f"sollol_cli.{up}.") for up in ABOVE[package])
    }
    assert sorted(upward) == []
