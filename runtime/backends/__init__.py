"""Backend selection: `auto` takes TensorRT where plans, a GPU and TensorRT are all here, else ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

from inputs.errors import CmmsfError

from ..manifest import read_manifest
from .base import Backend

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")


class BackendUnavailableError(CmmsfError, RuntimeError):
    """A backend asked for by name cannot run on this machine; the message says what is missing."""


def resolve_auto(folder: str | Path) -> tuple[str, str]:
    """(backend name, why) for `auto`."""
    from .tensorrt import unavailable_reason

    manifest = read_manifest(folder)
    if manifest["tensorrt"].get("status") != "built":
        return "onnxruntime", "no TensorRT plans in the engine folder"
    reason = unavailable_reason()
    return ("onnxruntime", reason) if reason else ("tensorrt", "plans, GPU and TensorRT present")


def load_backend(name: str, folder: str | Path, precision: str = "fp32", threads: int | None = None) -> Backend:
    """Instantiate a backend by name over an engine folder (hashes are verified before loading)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        name, _ = resolve_auto(folder)
    if name == "tensorrt":
        from .tensorrt import TensorRTBackend, unavailable_reason

        reason = unavailable_reason()
        if reason:
            raise BackendUnavailableError(f"the tensorrt backend cannot run here: {reason}")

        return TensorRTBackend(folder)
    if name == "torch":
        from .torch_ref import TorchBackend

        return TorchBackend(folder, threads=threads)
    from .onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(folder, precision=precision, threads=threads)
