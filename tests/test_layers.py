"""Imports only run downward, and the install names nobody else's module. Checked on the source.

Layers, top to bottom: `cmmsf.cli` → `cmmsf.export`, `cmmsf.runtime` (serving and Ray each in a room of
their own above the core runtime) → the model package (`cmmsf.train` → `cmmsf.evaluation` → `cmmsf.data` →
`cmmsf.model`, and `cmmsf`'s shared definitions: config, contracts, validation) → `cmmsf.inputs`.
"""

from __future__ import annotations

import ast
import importlib.util
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
"""Installed package name → its folder in the checkout (export/ and runtime/ install under cmmsf)."""

MODEL = "cmmsf"
LAYERS: dict[str, set[str]] = {
    "cmmsf.cli": set(),
    "cmmsf.inputs": {"cmmsf.model_side", "cmmsf.runtime", "cmmsf.export", "cmmsf.cli", "torch"},
    MODEL: {"cmmsf.runtime", "cmmsf.export", "cmmsf.cli", "cmmsf.model", "cmmsf.data", "cmmsf.train",
            "cmmsf.evaluation"},
    "cmmsf.model": {"cmmsf.runtime", "cmmsf.export", "cmmsf.cli", "cmmsf.data", "cmmsf.train", "cmmsf.evaluation"},
    "cmmsf.data": {"cmmsf.runtime", "cmmsf.export", "cmmsf.cli", "cmmsf.train", "cmmsf.evaluation.evaluator",
                   "cmmsf.evaluation.scoring"},
    "cmmsf.evaluation": {"cmmsf.runtime", "cmmsf.export", "cmmsf.cli", "cmmsf.train"},
    "cmmsf.train": {"cmmsf.runtime", "cmmsf.export", "cmmsf.cli"},
    "cmmsf.runtime": {"cmmsf.export", "cmmsf.cli", "cmmsf.runtime.serving", "cmmsf.runtime.scale"},
    "cmmsf.runtime.serving": {"cmmsf.export", "cmmsf.cli", "cmmsf.runtime.scale"},
    "cmmsf.runtime.scale": {"cmmsf.export", "cmmsf.cli", "cmmsf.runtime.serving"},
    "cmmsf.export": {"cmmsf.cli", "cmmsf.runtime.serving", "cmmsf.runtime.scale"},
}
"""Layer → module prefixes it must not import. `cmmsf.model_side` stands for every module of the model
package outside `cmmsf.inputs` (see `forbidden`). `cmmsf.data` may read `cmmsf.evaluation.metrics` (the
valence classes its splits balance), a leaf of numpy alone."""
MODEL_SIDE = {MODEL, "cmmsf.model", "cmmsf.data", "cmmsf.train", "cmmsf.evaluation"}


def module_name(path: Path) -> str:
    """The installed dotted name of a source file, through pyproject's package-dir mapping."""
    for package, folder in sorted(PACKAGE_DIRS.items(), key=lambda kv: -len(kv[0])):
        folder_path = ROOT / folder
        if folder_path in path.parents:
            parts = list(path.relative_to(folder_path).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join([package, *parts])
    raise AssertionError(f"{path} is in no installed package")


def imported_modules(path: Path, name: str) -> set[str]:
    """Every module a file imports, relative imports resolved to their installed names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level \
                else node.module
            found |= {f"{base}.{alias.name}" for alias in node.names} | {base}
    return found


def layer_of(name: str) -> str:
    return max((layer for layer in LAYERS if name == layer or name.startswith(layer + ".")), key=len)


def forbidden(layer: str, imported: str) -> bool:
    for prefix in LAYERS[layer]:
        if prefix == "cmmsf.model_side":
            if imported.startswith(MODEL + ".") and layer_of(imported) in MODEL_SIDE:
                return True
        elif imported == prefix or imported.startswith(prefix + "."):
            return True
    return False


def source_files() -> list[Path]:
    return sorted(p for folder in set(PACKAGE_DIRS.values()) for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_no_import_runs_back_up(layer):
    offenders = {}
    for path in source_files():
        name = module_name(path)
        if layer_of(name) != layer:
            continue
        bad = sorted(m for m in imported_modules(path, name) if forbidden(layer, m)
                     and layer_of(m) != layer)
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert not offenders


def test_the_checker_sees_a_violation(tmp_path):
    module = ROOT / "runtime" / "pipeline.py"
    assert module_name(module) == "cmmsf.runtime.pipeline"
    assert module_name(ROOT / "cmmsf" / "inputs" / "media.py") == "cmmsf.inputs.media"
    assert layer_of("cmmsf.runtime.serving.triton_serve") == "cmmsf.runtime.serving"
    assert forbidden("cmmsf.inputs", "cmmsf.config") and not forbidden("cmmsf.inputs", "cmmsf.inputs.media")
    assert forbidden("cmmsf.runtime", "cmmsf.runtime.serving.triton_client")
    assert not forbidden("cmmsf.runtime.serving", "cmmsf.runtime.pipeline")
    fake = tmp_path / "m.py"
    fake.write_text("import os\nfrom cmmsf.export.build import build\nfrom .media import x\n")
    assert imported_modules(fake, "cmmsf.inputs.m") >= {"os", "cmmsf.export.build", "cmmsf.inputs.media.x"}


def test_every_installed_package_is_under_cmmsf():
    """No `inputs`, `cli`, `export` or `runtime` lands in site-packages: each is someone else's name on PyPI."""
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert all(p == MODEL or p.startswith(MODEL + ".") for p in packages)
    found = {module_name(p) for p in source_files() if p.name == "__init__.py"}
    assert found == set(packages), "a package folder is missing from pyproject's packages (or listed but absent)"


def test_no_import_circle_between_modules():
    """Module-level imports form no cycle (data ↔ sources did, through a function-level import)."""
    graph = {}
    for path in source_files():
        name = module_name(path)
        graph[name] = {m for m in imported_modules(path, name) if m in {module_name(p) for p in source_files()}}
    # imports inside functions count too: a lazy import that runs back up is still a circle
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError(" → ".join(trail[trail.index(nxt):] + [nxt]) if nxt in trail else nxt)
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
