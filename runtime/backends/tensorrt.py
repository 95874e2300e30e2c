"""TensorRT backend: deserialised plans, name-based I/O, one CUDA stream, buffers reused across calls.

Device memory, the stream and the GPU's identity come from runtime/gpu.py (polygraphy.cuda and
cuda-python), the one place export and runtime ask. Only the API that TensorRT 8.5 also has is used
(`set_input_shape`, `set_tensor_address`, `execute_async_v3`, `get_tensor_mode`). Plans are tied to the
GPU and TensorRT version that built them: a mismatch is refused with the command that rebuilds.
The face detector runs on the GPU too, from the folder's `face_detector.plan` (its own context, buffers
and stream, since the tracker calls it between stage runs); a folder built before that plan existed
detects on ONNX Runtime's CPU kernels, and says so.
Not exercised on CI (no GPU there); its tests skip where TensorRT or a GPU is absent.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from cmmsf.contracts import STAGES
from cmmsf.inputs.face_detector import GraphRunner

from ..engine_folder import Artifact, EngineFolder, ManifestError
from ..gpu import DeviceBuffers, DeviceIdentity, device_identity, tensorrt_problem
from ..manifest import TensorRTRecord
from .base import Backend, conform
from .registry import BackendSpec, LoadRequest


class TensorRTBackend(Backend):
    """Five deserialised plans. `from_engines` checks the folder's plans were built for this GPU."""

    name = "tensorrt"

    def __init__(self, plans: dict[str, Path], precision: str = "fp16", graph_plans: dict[Path, Path] | None = None):
        """`graph_plans`: ONNX graph beside the stages → its plan (the folder's face detector)."""
        import tensorrt as trt

        self.memory = DeviceBuffers()
        self.trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(logger)
        self.engines, self.contexts = {}, {}
        for stage in STAGES:
            self.engines[stage] = self.runtime.deserialize_cuda_engine(Path(plans[stage]).read_bytes())
            if self.engines[stage] is None:
                raise ManifestError(f"TensorRT could not deserialise {plans[stage]} (see the log above)")
            self.contexts[stage] = self.engines[stage].create_execution_context()
        self.precision = precision
        self.graph_plans = graph_plans or {}
        self.runners: list[PlanRunner] = []
        self.provider = f"TensorRT {trt.__version__} on {device_identity().gpu}"

    @classmethod
    def from_engines(cls, engines: EngineFolder, stages: tuple[str, ...] | None = None) -> "TensorRTBackend":
        plans = engines.files(Artifact.PLAN.value, stages)
        cls.check_identity(engines.tensorrt, engines.path, device_identity())
        detector = engines.detector_plan
        return cls(plans, engines.manifest.precision,
                   {engines.detector_file: detector} if detector is not None else None)

    @staticmethod
    def check_identity(built: TensorRTRecord, folder: Path, here: DeviceIdentity) -> None:
        """Plans are tied to the GPU and TensorRT version that built them: refuse a mismatch."""
        if built.tensorrt != here.tensorrt or built.gpu != here.gpu:
            raise ManifestError(
                f"plans in {folder} were built for {built.gpu} with TensorRT {built.tensorrt}, "
                f"this machine has {here.gpu} with TensorRT {here.tensorrt}: rebuild here with "
                f"`cmmsf-export build --out {folder} --force --tensorrt on`")

    def run_stage(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return execute(self.engines[stage], self.contexts[stage], self.memory, stage, conform(stage, feeds),
                       STAGES[stage].output_names)

    def graph_runner(self, graph: Path) -> GraphRunner:
        """The face detector on the GPU, from its sealed plan; ONNX Runtime's CPU kernels for a folder
        built before the detector had one (`graph_plans` holds no plan for it)."""
        plan = self.graph_plans.get(graph)
        if plan is None:
            fallback = f"{graph.name} on ONNX Runtime's CPU kernels: the folder has no TensorRT plan of it " \
                       "(rebuild with --tensorrt on)"
            if fallback not in self.note:  # bench asks again for the same graph
                self.note = " ".join(filter(None, (self.note, fallback)))
            return super().graph_runner(graph)
        runner = PlanRunner(self.runtime, plan)
        self.runners.append(runner)
        return runner

    def graph_provider(self, graph: Path) -> str:
        return self.provider if graph in self.graph_plans else super().graph_provider(graph)

    def stage_operator_times(self, feeds: dict[str, dict[str, np.ndarray]], runs: int = 10
                             ) -> dict[str, dict[str, float]]:
        """TensorRT's IProfiler, as trtexec's --dumpProfile: each stage replayed on a fresh execution
        context with a profiler attached; layers as TensorRT names them (its fused layers). Written against
        TensorRT's documented API; not run here (no GPU)."""
        trt = self.trt

        class LayerTimes(trt.IProfiler):
            def __init__(self):
                trt.IProfiler.__init__(self)
                self.ms: dict[str, float] = {}

            def report_layer_time(self, layer_name: str, ms: float) -> None:
                self.ms[layer_name] = self.ms.get(layer_name, 0.0) + ms

        out = {}
        for stage, stage_inputs in feeds.items():
            plain, profiler = self.contexts[stage], LayerTimes()
            self.contexts[stage] = self.engines[stage].create_execution_context()
            self.contexts[stage].profiler = profiler
            try:
                for _ in range(runs):
                    self.run_stage(stage, stage_inputs)
            finally:
                self.contexts[stage] = plain
            out[stage] = {layer: ms / runs for layer, ms in profiler.ms.items()}
        return out

    def device_memory_mb(self) -> float | None:
        return (self.memory.allocated_bytes + sum(e.device_memory_size for e in self.engines.values())) / 1e6

    def close(self) -> None:
        self.memory.close()
        for runner in self.runners:
            runner.memory.close()


def execute(engine, context, memory: DeviceBuffers, key: str, feeds: dict[str, np.ndarray],
            output_names: list[str] | tuple[str, ...]) -> dict[str, np.ndarray]:
    """One synchronous run of a plan: inputs copied in (shapes set from them), outputs as float32 arrays."""
    import tensorrt as trt

    for name, array in feeds.items():
        context.set_input_shape(name, array.shape)
        context.set_tensor_address(name, memory.put((key, name), np.ascontiguousarray(array)))
    outputs = {}
    for name in output_names:
        shape = tuple(context.get_tensor_shape(name))
        outputs[name] = np.empty(shape, dtype=trt.nptype(engine.get_tensor_dtype(name)))
        context.set_tensor_address(name, memory.reserve((key, name), shape, outputs[name].dtype))
    if not context.execute_async_v3(memory.stream.ptr):
        raise RuntimeError(f"TensorRT failed to run {key}")
    for name, array in outputs.items():
        memory.get(array, (key, name))
    memory.synchronize()
    return {k: v.astype(np.float32, copy=False) for k, v in outputs.items()}


class PlanRunner:
    """A GraphRunner on a plan beside the stages (the face detector): its own execution context, device
    buffers and stream, so a detection between two stage runs touches none of theirs; one caller at a time."""

    def __init__(self, runtime, plan: Path):
        import tensorrt as trt

        self.engine = runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise ManifestError(f"TensorRT could not deserialise {plan} (see the log above)")
        self.context = self.engine.create_execution_context()
        self.memory = DeviceBuffers()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.lock = threading.Lock()

    def __call__(self, blob: np.ndarray) -> dict[str, np.ndarray]:
        with self.lock:
            return execute(self.engine, self.context, self.memory, "graph",
                           {self.input: blob.astype(np.float32, copy=False)}, self.outputs)


def _problem(engines: EngineFolder, request: LoadRequest) -> str | None:
    problem = tensorrt_problem()
    if problem is None and not engines.has_plans:
        return "no TensorRT plans in the engine folder (cmmsf-export build --tensorrt on, on this GPU)"
    return problem


SPEC = BackendSpec(
    name="tensorrt", summary="TensorRT plans on the GPU (built by cmmsf-export build where TensorRT is)",
    precisions=(), devices=("cuda",),
    load=lambda engines, request: TensorRTBackend.from_engines(engines, request.stages),
    problem=_problem, auto_rank=0, fixed_precision=lambda engines: engines.manifest.precision,
    artifact=Artifact.PLAN.value)
