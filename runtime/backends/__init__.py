"""Backends over an EngineFolder, read from the registry (registry.py): each backend module declares a
`SPEC`; `auto` takes the first whose `problem` is None for the folder (TensorRT where plans, a GPU and
TensorRT are all here, else ONNX Runtime)."""

from __future__ import annotations

from cmmsf.inputs.errors import CmmsfError, UsageError

from ..engine_folder import EngineFolder
from .base import Backend
from .registry import AUTO, BackendSpec, LoadRequest, all_precisions, backend_names, registry

__all__ = ["AUTO", "Backend", "BackendSpec", "BackendUnavailableError", "LoadRequest", "backend_names",
           "check_choice", "choice_problem", "load_backend", "registry", "resolve_auto"]


class BackendUnavailableError(CmmsfError, RuntimeError):
    """A backend asked for by name cannot run on this machine; the message says what is missing."""


def resolve_auto(engines: EngineFolder, request: LoadRequest | None = None) -> tuple[str, str]:
    """(backend name, why) for `auto`: the first backend in auto order that can run `engines` here."""
    request = request or LoadRequest()
    passed_over = []
    for spec in registry().values():
        if spec.auto_rank is None:
            continue
        problem = choice_problem(spec, request) or spec.problem(engines, request)
        if problem is None:
            return spec.name, "; ".join(passed_over) or f"{spec.summary}"
        passed_over.append(f"{spec.name}: {problem}")
    raise BackendUnavailableError("no backend can run this engine folder here: " + "; ".join(passed_over))


def choice_problem(spec: BackendSpec, request: LoadRequest) -> str | None:
    """Why `spec` cannot take the precision or device asked for (None where it can; a backend whose
    artifacts fix the precision takes any)."""
    if spec.precisions and request.precision not in spec.precisions:
        return f"it runs {_either(spec.precisions)}, not {request.precision}"
    if request.device != AUTO and request.device not in spec.devices:
        return f"it runs on {_either(spec.devices)}, not {request.device}"
    return None


def _either(choices: tuple[str, ...]) -> str:
    """`a`, `a or b`, `a, b or c`."""
    return " or ".join(choices) if len(choices) < 3 else f"{', '.join(choices[:-1])} or {choices[-1]}"


def check_choice(backend: str, precision: str) -> None:
    """Refuse an unknown backend or precision with the valid choices (before anything loads)."""
    if backend not in backend_names():
        raise UsageError(f"unknown backend {backend!r}; choose one of {', '.join(backend_names())}")
    if precision not in all_precisions():
        raise UsageError(f"unknown precision {precision!r}; choose one of {', '.join(all_precisions())}")


def load_backend(name: str, engines: EngineFolder, precision: str = "fp32", threads: int | None = None,
                 memory_arena: bool = True, providers: tuple[str, ...] | None = None,
                 device: str = "auto") -> Backend:
    """Instantiate a backend by name over an engine folder (hashes are verified before loading).

    `precision` picks the ONNX graphs ONNX Runtime loads; TensorRT runs the plans at the precision they
    were built with and torch runs the FP32 checkpoint. `memory_arena` (ONNX Runtime's CPU arena) is
    faster but keeps its peak for good: a server turns it off.
    """
    check_choice(name, precision)
    request = LoadRequest(precision=precision, threads=threads, memory_arena=memory_arena,
                          providers=tuple(providers) if providers else None, device=device)
    note = ""
    if name == AUTO:
        tuned = _tuned(engines, request)
        if tuned is not None:
            return tuned
        name, why = resolve_auto(engines, request)
        note = f"auto → {name} ({why})"
    spec = registry()[name]
    problem = choice_problem(spec, request) or spec.problem(engines, request)
    if problem:
        raise BackendUnavailableError(f"the {name} backend cannot run here: {problem}")
    backend = spec.load(engines, request)
    backend.note = note
    return backend


def _tuned(engines: EngineFolder, request: LoadRequest) -> Backend | None:
    """`auto` on a folder `cmmsf-export tune` measured: each stage on its winner (runtime/tuning.py).
    Only where nothing was pinned: a precision, device or providers asked for choose the backend instead."""
    if request.precision != "fp32" or request.device != AUTO or request.providers:
        return None
    from ..tuning import read_tuning, stagewise_backend

    tuning, _ = read_tuning(engines.path)
    if tuning is None:
        return None
    try:
        return stagewise_backend(engines, tuning, request)
    except LookupError:
        return None
