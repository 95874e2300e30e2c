"""TensorRT backend: deserialised plans, name-based I/O, one CUDA stream, buffers reused across calls.

Device memory comes from `cuda.bindings.runtime` (cuda-python, what TensorRT's samples use now) or, on
Jetson images that only ship it, pycuda. Only the API that TensorRT 8.5 also has is used
(`set_input_shape`, `set_tensor_address`, `execute_async_v3`). Plans are tied to the GPU and TensorRT
version that built them: a mismatch is refused with the command that rebuilds.
Not exercised on CI (no GPU there); its tests skip where TensorRT or a GPU is absent.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from cmmsf.contracts import STAGES

from ..engine_folder import Artifact, EngineFolder, ManifestError
from ..manifest import TensorRTRecord
from .base import Backend, conform


@lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """None when TensorRT, CUDA bindings and a GPU are all here, else what is missing (asked once a process)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed"
    try:
        cudart = _cudart()
    except ImportError:
        return "neither cuda-python (cuda.bindings) nor pycuda is installed"
    if cudart is None:
        return None  # pycuda: it raises on its own when no GPU is present
    err, count = cudart.cudaGetDeviceCount()
    return None if int(err) == 0 and count > 0 else "no CUDA GPU is visible"


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            import pycuda.autoinit  # noqa: F401  (Jetson images)
            return None
    return cudart


def _check(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


def gpu_name() -> str:
    """Name of GPU 0, as the manifest records it for the plans built there."""
    cudart = _cudart()
    if cudart is None:
        import pycuda.driver as cuda

        return cuda.Device(0).name()
    name = _check(cudart.cudaGetDeviceProperties(0)).name
    return (name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00")


class _DeviceMemory:
    """Device buffers and copies over cuda.bindings.runtime, or pycuda where that is what exists."""

    def __init__(self):
        self.cudart = _cudart()
        if self.cudart is None:
            import pycuda.driver as cuda

            self.cuda = cuda
            self.stream = cuda.Stream()
            self.stream_handle = self.stream.handle
        else:
            self.stream = _check(self.cudart.cudaStreamCreate())
            self.stream_handle = int(self.stream)

    def alloc(self, nbytes: int):
        if self.cudart is None:
            buf = self.cuda.mem_alloc(nbytes)
            return buf, int(buf)
        ptr = _check(self.cudart.cudaMalloc(nbytes))
        return ptr, int(ptr)

    def free(self, handle) -> None:
        if self.cudart is None:
            handle.free()
        else:
            self.cudart.cudaFree(handle)

    def to_device(self, ptr: int, array: np.ndarray) -> None:
        if self.cudart is None:
            self.cuda.memcpy_htod_async(ptr, array, self.stream)
        else:
            _check(self.cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes,
                                               self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def to_host(self, array: np.ndarray, ptr: int) -> None:
        if self.cudart is None:
            self.cuda.memcpy_dtoh_async(array, ptr, self.stream)
        else:
            _check(self.cudart.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes,
                                               self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    def synchronize(self) -> None:
        if self.cudart is None:
            self.stream.synchronize()
        else:
            _check(self.cudart.cudaStreamSynchronize(self.stream))


class TensorRTBackend(Backend):
    """Five deserialised plans. `from_engines` checks the folder's plans were built for this GPU."""

    name = "tensorrt"

    def __init__(self, plans: dict[str, Path], precision: str = "fp16"):
        import tensorrt as trt

        self.memory = _DeviceMemory()
        self.trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(logger)
        self.engines, self.contexts = {}, {}
        for stage in STAGES:
            self.engines[stage] = self.runtime.deserialize_cuda_engine(Path(plans[stage]).read_bytes())
            if self.engines[stage] is None:
                raise ManifestError(f"TensorRT could not deserialise {plans[stage]} (see the log above)")
            self.contexts[stage] = self.engines[stage].create_execution_context()
        self.buffers: dict[tuple[str, str], tuple[object, int, int]] = {}
        self.precision = precision
        self.provider = f"TensorRT {trt.__version__} on {gpu_name()}"

    @classmethod
    def from_engines(cls, engines: EngineFolder) -> "TensorRTBackend":
        import tensorrt as trt

        plans = engines.files(Artifact.PLAN.value)
        cls.check_identity(engines.tensorrt, engines.path, trt.__version__, gpu_name())
        return cls(plans, engines.manifest.precision)

    @staticmethod
    def check_identity(built: TensorRTRecord, folder: Path, version: str, here_gpu: str) -> None:
        """Plans are tied to the GPU and TensorRT version that built them: refuse a mismatch."""
        if built.tensorrt != version or built.gpu != here_gpu:
            raise ManifestError(
                f"plans in {folder} were built for {built.gpu} with TensorRT {built.tensorrt}, "
                f"this machine has {here_gpu} with TensorRT {version}: rebuild here with "
                f"`cmmsf-export build --out {folder} --force --tensorrt on`")

    def _buffer(self, stage: str, name: str, nbytes: int) -> int:
        key = (stage, name)
        handle, ptr, size = self.buffers.get(key, (None, 0, 0))
        if size < nbytes:  # grow only: steady-state calls reuse the same device memory
            if handle is not None:
                self.memory.free(handle)
            handle, ptr = self.memory.alloc(max(nbytes, 1))
            self.buffers[key] = (handle, ptr, nbytes)
        return ptr

    def run_stage(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        trt, engine, context = self.trt, self.engines[stage], self.contexts[stage]
        for name, array in conform(stage, feeds).items():
            context.set_input_shape(name, array.shape)
            ptr = self._buffer(stage, name, array.nbytes)
            self.memory.to_device(ptr, array)
            context.set_tensor_address(name, ptr)
        outputs = {}
        for name in STAGES[stage].output_names:
            shape = tuple(context.get_tensor_shape(name))
            outputs[name] = np.empty(shape, dtype=trt.nptype(engine.get_tensor_dtype(name)))
            context.set_tensor_address(name, self._buffer(stage, name, outputs[name].nbytes))
        if not context.execute_async_v3(self.memory.stream_handle):
            raise RuntimeError(f"TensorRT failed to run stage {stage}")
        for name, array in outputs.items():
            self.memory.to_host(array, self.buffers[(stage, name)][1])
        self.memory.synchronize()
        return {k: v.astype(np.float32, copy=False) for k, v in outputs.items()}

    def device_memory_mb(self) -> float | None:
        return sum(size for _, _, size in self.buffers.values()) / 1e6 + sum(
            e.device_memory_size for e in self.engines.values()) / 1e6

    def close(self) -> None:
        for handle, _, _ in self.buffers.values():
            self.memory.free(handle)
        self.buffers.clear()
