"""Backend selection over an EngineFolder: `auto` takes TensorRT where plans, a GPU and TensorRT are all
here, else ONNX Runtime. Each backend module has a `from_engines` loader and a runner."""

from __future__ import annotations

from cmmsf.inputs.errors import CmmsfError, UsageError

from ..engine_folder import ONNX_PRECISIONS, EngineFolder
from ..gpu import tensorrt_problem
from .base import Backend

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")


class BackendUnavailableError(CmmsfError, RuntimeError):
    """A backend asked for by name cannot run on this machine; the message says what is missing."""


def resolve_auto(engines: EngineFolder) -> tuple[str, str]:
    """(backend name, why) for `auto`."""
    if not engines.has_plans:
        return "onnxruntime", "no TensorRT plans in the engine folder"
    reason = tensorrt_problem()
    return ("onnxruntime", reason) if reason else ("tensorrt", "plans, GPU and TensorRT present")


def check_choice(backend: str, precision: str) -> None:
    """Refuse an unknown backend or precision with the valid choices (before anything loads)."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in ONNX_PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose one of {', '.join(ONNX_PRECISIONS)}")


def load_backend(name: str, engines: EngineFolder, precision: str = "fp32", threads: int | None = None,
                 memory_arena: bool = True) -> Backend:
    """Instantiate a backend by name over an engine folder (hashes are verified before loading).

    `precision` picks the ONNX graphs ONNX Runtime loads; TensorRT runs the plans at the precision they
    were built with and torch runs the FP32 checkpoint, so for them it is ignored. `memory_arena`
    (ONNX Runtime's CPU arena) is faster but keeps its peak for good: a server turns it off.
    """
    check_choice(name, precision)
    if name == "auto":
        name, _ = resolve_auto(engines)
    if name == "tensorrt":
        reason = tensorrt_problem()
        if reason:
            raise BackendUnavailableError(f"the tensorrt backend cannot run here: {reason}")
        from .tensorrt import TensorRTBackend

        return TensorRTBackend.from_engines(engines)
    if name == "torch":
        from .torch_ref import TorchBackend

        problem = engines.checkpoint_problem()
        if problem:
            raise BackendUnavailableError(f"the torch backend needs the checkpoint: {problem}")
        return TorchBackend.from_checkpoint(engines.checkpoint_dir(), threads=threads)
    from .onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend.from_engines(engines, precision=precision, threads=threads, memory_arena=memory_arena)
