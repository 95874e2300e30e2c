"""TensorRT backend: deserialised plans, name-based I/O, one CUDA stream, buffers reused across calls.

Device memory, the stream and the GPU's identity come from runtime/gpu.py (polygraphy.cuda and
cuda-python), the one place export and runtime ask. Only the API that TensorRT 8.5 also has is used
(`set_input_shape`, `set_tensor_address`, `execute_async_v3`). Plans are tied to the GPU and TensorRT
version that built them: a mismatch is refused with the command that rebuilds.
Not exercised on CI (no GPU there); its tests skip where TensorRT or a GPU is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmmsf.contracts import STAGES

from ..engine_folder import Artifact, EngineFolder, ManifestError
from ..gpu import DeviceBuffers, DeviceIdentity, device_identity, tensorrt_problem
from ..manifest import TensorRTRecord
from .base import Backend, conform
from .registry import BackendSpec, LoadRequest


class TensorRTBackend(Backend):
    """Five deserialised plans. `from_engines` checks the folder's plans were built for this GPU."""

    name = "tensorrt"

    def __init__(self, plans: dict[str, Path], precision: str = "fp16"):
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
        self.provider = f"TensorRT {trt.__version__} on {device_identity().gpu}"

    @classmethod
    def from_engines(cls, engines: EngineFolder, stages: tuple[str, ...] | None = None) -> "TensorRTBackend":
        plans = engines.files(Artifact.PLAN.value, stages)
        cls.check_identity(engines.tensorrt, engines.path, device_identity())
        return cls(plans, engines.manifest.precision)

    @staticmethod
    def check_identity(built: TensorRTRecord, folder: Path, here: DeviceIdentity) -> None:
        """Plans are tied to the GPU and TensorRT version that built them: refuse a mismatch."""
        if built.tensorrt != here.tensorrt or built.gpu != here.gpu:
            raise ManifestError(
                f"plans in {folder} were built for {built.gpu} with TensorRT {built.tensorrt}, "
                f"this machine has {here.gpu} with TensorRT {here.tensorrt}: rebuild here with "
                f"`cmmsf-export build --out {folder} --force --tensorrt on`")

    def run_stage(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        trt, engine, context = self.trt, self.engines[stage], self.contexts[stage]
        for name, array in conform(stage, feeds).items():
            context.set_input_shape(name, array.shape)
            context.set_tensor_address(name, self.memory.put((stage, name), np.ascontiguousarray(array)))
        outputs = {}
        for name in STAGES[stage].output_names:
            shape = tuple(context.get_tensor_shape(name))
            outputs[name] = np.empty(shape, dtype=trt.nptype(engine.get_tensor_dtype(name)))
            context.set_tensor_address(name, self.memory.reserve((stage, name), shape, outputs[name].dtype))
        if not context.execute_async_v3(self.memory.stream.ptr):
            raise RuntimeError(f"TensorRT failed to run stage {stage}")
        for name, array in outputs.items():
            self.memory.get(array, (stage, name))
        self.memory.synchronize()
        return {k: v.astype(np.float32, copy=False) for k, v in outputs.items()}

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
