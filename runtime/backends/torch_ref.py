"""The PyTorch checkpoint as a backend: the reference for parity and the baseline of benchmarks.

torch is imported here, lazily, only when this backend is asked for: the rest of the runtime stays
torch-free.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Backend, conform


class TorchBackend(Backend):
    """A CMMSF model (FP32, eager) behind the backend interface: parity's reference, bench's baseline."""

    name = "torch"

    def __init__(self, model, device: str = "auto", threads: int | None = None):
        import torch

        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                                   else ("cpu" if device == "auto" else device))
        self.model = model.to(self.device).eval()
        self.provider = f"torch-eager-{self.device.type}"

    @classmethod
    def from_checkpoint(cls, folder: str | Path, device: str = "auto", threads: int | None = None) -> "TorchBackend":
        from cmmsf.checkpoint import load_checkpoint

        return cls(load_checkpoint(folder), device, threads)

    def run_stage(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in conform(stage, feeds).items()}
        with torch.inference_mode():
            out = self.model.run_stage(stage, tensors)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return {k: v.float().cpu().numpy() for k, v in out.items()}

    def device_memory_mb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return self.torch.cuda.max_memory_allocated(self.device) / 1e6
