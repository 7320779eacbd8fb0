"""The house's rules, checked: imports point one way, and the vocabulary is spelled in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# app -> the apps (and project package) it must never import
FORBIDDEN = {
    "capture": {"detection", "exports", "netmon", "alerts"},
    "detection": {"exports", "netmon", "alerts"},  # it queues alerts' task by name
    "exports": {"netmon", "alerts"},
    "alerts": {"netmon", "exports"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports (module level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("app", sorted(FORBIDDEN))
def test_imports_point_one_way(app):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[app])
        for path in (ROOT / app).rglob("*.py")
        if "migrations" not in path.parts and imported_packages(path) & FORBIDDEN[app]
    }

    assert offenders == {}, f"{app} must not import {sorted(FORBIDDEN[app])}"
