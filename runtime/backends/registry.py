"""The backend registry: every module of this package that declares a `SPEC` is a backend.

A `BackendSpec` says what a backend is (name, the precisions it can run, the devices it reaches), whether it
can run a given engine folder here (`problem`: None, or one line saying what is missing) and how to load it.
`load_backend`, `check_choice`, the CLI's help, `bench`, `cmmsf-export check` and `scripts/gpu_check.py`
all read this registry, so adding a backend is one new module beside the others (Polygraphy's backend
folders are the model). Modules are imported to read their spec: heavy libraries (torch, TensorRT) are
imported inside their loaders, never at module level.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine_folder import EngineFolder
    from .base import Backend

AUTO = "auto"


@dataclass(frozen=True)
class LoadRequest:
    """What a command asks of a backend beyond its name (RunSettings' backend options)."""

    precision: str = "fp32"
    """The ONNX graphs to load (fp32, fp16); a backend with fixed-precision artifacts runs those."""
    threads: int | None = None
    memory_arena: bool = True
    providers: tuple[str, ...] | None = None
    """ONNX Runtime's execution providers, in order of preference (None: every one this machine has)."""
    device: str = "auto"
    """torch's device (cpu, cuda, auto): gpu_check times torch on CUDA beside the engines."""
    stages: tuple[str, ...] | None = None
    """Load only these stages (None: all five): the tuned `auto` loads each backend for the stages it runs."""


@dataclass(frozen=True)
class BackendSpec:
    name: str
    summary: str
    """One line for help texts and tables."""
    precisions: tuple[str, ...]
    """Precisions `--precision` can choose for it; empty where its artifacts fix the precision (plans)."""
    devices: tuple[str, ...]
    load: Callable[["EngineFolder", LoadRequest], "Backend"]
    problem: Callable[["EngineFolder", LoadRequest], str | None] = field(default=lambda engines, request: None)
    """None when it can run this engine folder here, else one line saying what is missing."""
    auto_rank: int | None = None
    """Order in which `auto` tries it (lowest first); None: `auto` never picks it."""
    fixed_precision: Callable[["EngineFolder"], str] | None = None
    """Where `precisions` is empty: the precision its artifacts were built in."""
    artifact: str | None = None
    """What of the folder it runs: None for the ONNX graph of the chosen precision, `plan`, `checkpoint`
    (the reference parity is judged against). `cmmsf-export check` names its parity rows by it."""

    def runs_in(self, engines: "EngineFolder", asked: str) -> str:
        """The precision it computes in when `asked` is requested."""
        if self.fixed_precision is not None:
            return self.fixed_precision(engines)
        return asked if asked in self.precisions else self.precisions[0]


@lru_cache(maxsize=1)
def registry() -> dict[str, BackendSpec]:
    """Name → spec of every backend module in this package, in auto order, then by name."""
    specs = []
    for module in pkgutil.iter_modules(_package_path()):
        if module.name in ("base", "registry"):
            continue
        spec = getattr(importlib.import_module(f"{__package__}.{module.name}"), "SPEC", None)
        if isinstance(spec, BackendSpec):
            specs.append(spec)
    specs.sort(key=lambda s: (s.auto_rank is None, s.auto_rank or 0, s.name))
    return {spec.name: spec for spec in specs}


def _package_path() -> list[str]:
    return list(importlib.import_module(__package__).__path__)


def missing_graphs(engines: "EngineFolder", request: LoadRequest) -> str | None:
    """Why the folder cannot give the graphs `request.precision` reads (None where it can): INT8 graphs
    exist only in folders built with --precision int8."""
    if request.precision == "int8" and "int8" not in engines.kinds():
        return ("this engine folder has no INT8 graphs (`cmmsf-export build --precision int8 --data-dir DATA` "
                "writes them)")
    return None


def backend_names() -> tuple[str, ...]:
    """`auto` and every registered backend: the choices of `--backend`."""
    return (AUTO, *registry())


def all_precisions() -> tuple[str, ...]:
    return tuple(dict.fromkeys(p for spec in registry().values() for p in spec.precisions))


def all_devices() -> tuple[str, ...]:
    """`auto` and every device a registered backend declares: the choices of `--device`."""
    return (AUTO, *dict.fromkeys(d for spec in registry().values() for d in spec.devices))


def engine_candidates(engines: "EngineFolder") -> Iterator[tuple[BackendSpec, str, LoadRequest, str | None]]:
    """Every registered backend × precision that runs the folder's engines (the checkpoint's reference
    excepted), with the request that loads it and why it cannot run here (None where it can): what
    `cmmsf-export check` checks and `cmmsf-export tune` times."""
    for spec in registry().values():
        if spec.artifact == "checkpoint":
            continue
        for precision in spec.precisions or (spec.runs_in(engines, "fp32"),):
            request = LoadRequest(precision=precision if spec.precisions else "fp32")
            yield spec, precision, request, spec.problem(engines, request)
