"""The one small interface every backend implements: named numpy arrays in, named arrays out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from cmmsf.contracts import STAGES, run_chain
from cmmsf.inputs.face_detector import GraphRunner, onnx_runner

NUMPY_DTYPES = {"int32": np.int32, "bool": np.bool_, "float32": np.float32}

FRAMES_PER_CALL = 192
"""At most this many face frames per video-encoder call. The face backbone's activations grow with the
frames of one call (a batch of 20 clips of 89 frames: +1.2 GB on the CPU, 2.5x the whole run at batch 1),
while its kernels gain nothing beyond a few hundred 64x64 images; rows are independent, so a batch is run
in row slices of up to this many frames (one row of any length is never split)."""


def conform(stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pick the stage's inputs from `feeds` in contract dtypes, C-contiguous (engines need both)."""
    out = {}
    for spec in STAGES[stage].inputs:
        if spec.name not in feeds:
            raise KeyError(f"stage {stage} needs input {spec.name!r}; got {sorted(feeds)}")
        out[spec.name] = np.ascontiguousarray(feeds[spec.name], dtype=NUMPY_DTYPES[spec.dtype])
    return out


class Backend(ABC):
    """Runs the five stages. `provider` says what actually executed (e.g. CPUExecutionProvider)."""

    name: str = "base"
    provider: str = "unknown"
    precision: str = "fp32"
    """What the backend computes in: fp32/fp16 ONNX, a plan's build precision, or torch's fp32."""
    note: str = ""
    """How `auto` came to it (which backend, or which per stage, and why), for the line before a run."""

    @property
    def label(self) -> str:
        """`onnxruntime fp16`, `tensorrt fp16`, `torch fp32`: how reports name this backend."""
        return f"{self.name} {self.precision}"

    @abstractmethod
    def run_stage(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one stage on contract-named inputs; return its contract-named outputs."""

    def run(self, inputs: dict[str, np.ndarray], stage_ms: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """All five stages through `cmmsf.contracts.run_chain`; returns inputs plus every stage output."""
        return run_chain(self.run_bounded, inputs, stage_ms)

    def run_bounded(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`run_stage`, with the video encoder's rows in slices of at most FRAMES_PER_CALL frames, so memory
        does not grow with the batch (see FRAMES_PER_CALL)."""
        video = feeds.get("video") if stage == "video_encoder" else None
        if video is None or video.ndim < 3 or len(video) * video.shape[1] <= FRAMES_PER_CALL:
            return self.run_stage(stage, feeds)
        rows = max(1, FRAMES_PER_CALL // max(1, video.shape[1]))
        parts = [self.run_stage(stage, {k: v[start: start + rows] for k, v in feeds.items()})
                 for start in range(0, len(video), rows)]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def graph_runner(self, graph: Path) -> GraphRunner:
        """A runner, on this backend's device, for a graph beside the five stages (the face detector):
        ONNX Runtime's CPU kernels unless the backend runs it itself."""
        return onnx_runner(graph.read_bytes())

    def graph_provider(self, graph: Path) -> str:
        """Where `graph_runner(graph)` runs it, as reports name it."""
        return "onnxruntime CPUExecutionProvider, 1 thread"

    def operator_times(self, inputs: dict[str, np.ndarray], runs: int = 10) -> dict[str, dict[str, float]] | None:
        """Stage → operator type → milliseconds per run, from the backend's own profiler (`bench
        --profile`); None where the backend has none."""
        return self.stage_operator_times(self.stage_feeds(inputs), runs)

    def stage_operator_times(self, feeds: dict[str, dict[str, np.ndarray]], runs: int = 10
                             ) -> dict[str, dict[str, float]] | None:
        """`operator_times` of the stages in `feeds`, each replayed on its own inputs (None: no profiler)."""
        return None

    def stage_feeds(self, inputs: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        """Each stage's own inputs for `inputs`, from one pass of the chain (what a profiler replays)."""
        tensors = self.run(inputs)
        return {stage: conform(stage, tensors) for stage in STAGES}

    def stage_labels(self) -> dict[str, str] | None:
        """Where each stage ran, where that differs between stages (the tuned `auto`); None when one
        backend runs them all."""
        return None

    def device_memory_mb(self) -> float | None:
        """Peak (or current) device memory this backend holds, where a GPU is in use; None on CPU."""
        return None

    def close(self) -> None:
        """Release sessions and device memory (a no-op where there is none)."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
