"""Imports only run downward: cli → export, runtime → cmmsf (model) → inputs. Checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "inputs": {"cmmsf", "runtime", "export", "cli", "torch"},
    "cmmsf": {"runtime", "export", "cli"},
    "runtime": {"export", "cli"},
    "export": {"cli"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level package of every absolute import in a module (relative imports stay inside it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_back_up(package):
    offenders = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & FORBIDDEN[package])
                 for p in (ROOT / package).rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_the_checker_sees_a_violation(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom runtime.pipeline import Pipeline\nfrom . import sibling\n")
    assert imported_packages(module) == {"os", "runtime"}
