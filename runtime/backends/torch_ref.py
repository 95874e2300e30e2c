"""The PyTorch checkpoint as a backend: the reference for parity and the baseline of benchmarks.

torch is imported here, lazily, only when this backend is asked for: the rest of the runtime stays
torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .base import Backend, conform
from .registry import BackendSpec, LoadRequest

if TYPE_CHECKING:
    from ..engine_folder import EngineFolder


class TorchBackend(Backend):
    """A CMMSF model (FP32, eager) behind the backend interface: parity's reference, bench's baseline."""

    name = "torch"

    def __init__(self, model, device: str = "auto", threads: int | None = None, precision: str = "fp32"):
        import torch

        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                                   else ("cpu" if device == "auto" else device))
        self.precision = precision
        """fp32 (the reference); fp16 halves the weights and float inputs (scripts/gpu_check.py, on CUDA)."""
        self.model = model.to(self.device, torch.float16 if precision == "fp16" else torch.float32).eval()
        self.provider = f"torch-eager-{self.device.type}"

    @classmethod
    def from_checkpoint(cls, folder: str | Path, device: str = "auto", threads: int | None = None,
                        precision: str = "fp32") -> "TorchBackend":
        from cmmsf.model.checkpoint import load_checkpoint

        return cls(load_checkpoint(folder), device, threads, precision)

    def run_stage(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        half = self.precision == "fp16"
        tensors = {k: torch.from_numpy(v).to(self.device, torch.float16 if half and v.dtype == np.float32 else None)
                   for k, v in conform(stage, feeds).items()}
        with torch.inference_mode():
            out = self.model.run_stage(stage, tensors)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return {k: v.float().cpu().numpy() for k, v in out.items()}

    def device_memory_mb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return self.torch.cuda.max_memory_allocated(self.device) / 1e6


def _problem(engines: "EngineFolder", request: LoadRequest) -> str | None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install 'cmmsf[export]')"
    problem = engines.checkpoint_problem()
    if problem:
        return f"it needs the checkpoint: {problem}"
    if request.device == "cuda" or request.precision == "fp16":
        import torch

        if not torch.cuda.is_available():
            half = " (torch fp16 runs on CUDA only)" if request.precision == "fp16" else ""
            return "torch sees no CUDA GPU" + half
        if request.device == "cpu":
            return "torch fp16 runs on CUDA only (fp32 on the CPU)"
    return None


SPEC = BackendSpec(
    name="torch", summary="the PyTorch checkpoint, eager (the reference of parity, the baseline of bench)",
    precisions=("fp32", "fp16"), devices=("cpu", "cuda"), problem=_problem, artifact="checkpoint",
    load=lambda engines, request: TorchBackend.from_checkpoint(
        engines.checkpoint_dir(), device=request.device, threads=request.threads, precision=request.precision))
