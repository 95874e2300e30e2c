"""ONNX Runtime backend: TensorRT EP → CUDA EP → CPU EP, whichever this machine really has.

Sessions are created with deliberate options (thread count, full graph optimisation) and the backend
reports the provider that actually runs each stage: ONNX Runtime silently drops the TensorRT EP when
libnvinfer is missing (DESIGN.md), so asking is not the same as getting.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from cmmsf.inputs.face_detector import GraphRunner, onnx_runner

from ..engine_folder import EngineFolder
from .base import Backend, conform
from .registry import BackendSpec, LoadRequest, missing_graphs

PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def disabled_optimizers(path: Path) -> list[str] | None:
    """Optimisers to turn off for one graph: NCHWc where the graph has no convolution.

    ONNX Runtime 1.32's NCHWc layout transformer crashes the process (a segfault, nothing to catch)
    while creating a session for some graphs without convolutions (seen: the FP16 LSTM-only text encoder
    of CM-MSF(II)). It only rewrites convolutions, so such graphs lose nothing without it; graphs with
    convolutions keep it (measured on the edge FP16 graphs: 27 ms with it, 43 ms without).
    """
    graph = onnx.load(str(path), load_external_data=False).graph
    return None if any(node.op_type == "Conv" for node in graph.node) else ["NchwcTransformer"]


def session_options(threads: int | None = None, memory_arena: bool = True) -> ort.SessionOptions:
    """`memory_arena` off: each run allocates and frees its own memory. The arena is ~15-25% faster at
    typical lengths (2 cores) but keeps the peak of the largest batch ever seen (measured on the
    shipped engines: 0.45 GB → 1.79 GB after five batch-8 maximum-length runs, never returned; 0.34 GB
    throughout without it), which a long-running server cannot afford."""
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = memory_arena
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initialisers are noise to users
    # Five sessions run one after another: a finished session's threads must not spin-wait and steal
    # the cores from the next stage (measured: ORT went from 0.92x to faster than torch eager).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def available_providers(requested: tuple[str, ...] = PREFERRED) -> list[str]:
    have = set(ort.get_available_providers())
    return [p for p in requested if p in have]


def providers_problem(requested: tuple[str, ...] | None) -> str | None:
    """One line naming asked-for execution providers this ONNX Runtime build lacks (None: all present)."""
    missing = [p for p in requested or () if p not in ort.get_available_providers()]
    if missing:
        return (f"this ONNX Runtime build has no {', '.join(missing)} (it has "
                f"{', '.join(ort.get_available_providers())})")
    return None


def provider_options(provider: str, folder: Path, precision: str) -> dict[str, str]:
    """Options set deliberately: the TensorRT EP caches its engines beside ours and uses FP16 when asked."""
    if provider == "TensorrtExecutionProvider":
        return {"trt_fp16_enable": str(precision == "fp16"), "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(folder / "ort_trt_cache")}
    return {}


class OrtSession:
    """One ONNX graph in one session; `provider` is the provider the session actually bound."""

    def __init__(self, path: str | Path, providers: list | None = None, threads: int | None = None,
                 memory_arena: bool = True):
        self.path = Path(path)
        self.session = ort.InferenceSession(
            str(self.path), sess_options=session_options(threads, memory_arena),
            providers=providers or ["CPUExecutionProvider"],
            disabled_optimizers=disabled_optimizers(self.path))
        self.provider = self.session.get_providers()[0]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))


class OnnxRuntimeBackend(Backend):
    """Five stage graphs in ONNX Runtime sessions. `from_engines` loads a verified engine folder's."""

    name = "onnxruntime"

    def __init__(self, graphs: dict[str, Path], precision: str, providers: list[str] | None = None,
                 threads: int | None = None, cache_dir: Path | None = None, memory_arena: bool = True):
        providers = providers or available_providers()
        cache_dir = cache_dir or next(iter(graphs.values())).parent
        configured = [(p, provider_options(p, cache_dir, precision)) for p in providers]
        self.sessions = {stage: OrtSession(path, configured, threads, memory_arena) for stage, path in graphs.items()}
        self.threads, self.memory_arena = threads, memory_arena
        self.provider = "+".join(sorted({s.provider for s in self.sessions.values()}))
        self.precision = precision
        self.requested = providers

    @classmethod
    def from_engines(cls, engines: EngineFolder, precision: str = "fp32", threads: int | None = None,
                     providers: list[str] | None = None, memory_arena: bool = True,
                     stages: tuple[str, ...] | None = None) -> "OnnxRuntimeBackend":
        """`stages`: load only these (the tuned `auto` runs a backend for some stages only)."""
        return cls(engines.files(precision, stages), precision, providers, threads, cache_dir=engines.path,
                   memory_arena=memory_arena)

    def run_stage(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.sessions[stage].run(conform(stage, feeds))

    def graph_runner(self, graph: Path) -> GraphRunner:
        """The graph on this backend's providers (CUDA where the stages run on it), TensorRT's left out."""
        return onnx_runner(graph.read_bytes(), self._graph_providers or None)

    def graph_provider(self, graph: Path) -> str:
        return f"onnxruntime {(self._graph_providers or ['CPUExecutionProvider'])[0]}, 1 thread"

    @property
    def _graph_providers(self) -> list[str]:
        """The stages' providers less TensorRT's, which would build an engine for every frame size."""
        return [p for p in self.requested if p != "TensorrtExecutionProvider"]

    def stage_operator_times(self, feeds: dict[str, dict[str, np.ndarray]], runs: int = 10
                             ) -> dict[str, dict[str, float]]:
        """ONNX Runtime's own profiler: a profiling session per stage (same graph, same options), its JSON
        read back by operator type and removed."""
        import json
        import tempfile

        out = {}
        with tempfile.TemporaryDirectory(prefix="cmmsf-profile-") as folder:
            for stage, stage_inputs in feeds.items():
                session = self.sessions[stage]
                options = session_options(self.threads, self.memory_arena)
                options.enable_profiling = True
                options.profile_file_prefix = str(Path(folder) / stage)
                profiled = ort.InferenceSession(str(session.path), sess_options=options,
                                                providers=session.session.get_providers(),
                                                disabled_optimizers=disabled_optimizers(session.path))
                for _ in range(runs):
                    profiled.run(session.output_names, stage_inputs)
                events = json.loads(Path(profiled.end_profiling()).read_text())
                times: dict[str, float] = {}
                for event in events:
                    if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
                        op = event.get("args", {}).get("op_name", "?")
                        times[op] = times.get(op, 0.0) + event["dur"] / 1e3 / runs
                out[stage] = times
        return out


DEVICE_PROVIDERS = {"cpu": ("CPUExecutionProvider",), "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider")}
"""The providers a device means, where providers are not named (`auto`: every one this machine has)."""


def _providers(request: LoadRequest) -> tuple[str, ...] | None:
    return request.providers or DEVICE_PROVIDERS.get(request.device)


def _load(engines: EngineFolder, request: LoadRequest) -> OnnxRuntimeBackend:
    providers = _providers(request)
    return OnnxRuntimeBackend.from_engines(engines, precision=request.precision, threads=request.threads,
                                           providers=list(providers) if providers else None,
                                           memory_arena=request.memory_arena, stages=request.stages)


SPEC = BackendSpec(
    name="onnxruntime", summary="ONNX Runtime on the best execution provider here (TensorRT, CUDA, CPU)",
    precisions=("fp32", "fp16", "int8"), devices=("cpu", "cuda"), load=_load,
    problem=lambda engines, request: missing_graphs(engines, request) or providers_problem(_providers(request)),
    auto_rank=1)
