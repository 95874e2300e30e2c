"""The GPU environment, decided in one place for export and runtime: is TensorRT usable here, which GPU
is this, and device memory for the TensorRT backend.

Before this module the exporter asked torch (CUDA torch) and the runtime asked cuda-python, so a machine
with CUDA torch but no CUDA bindings built plans that the runtime then could not load for parity. Now
both ask `tensorrt_problem()` and `device_identity()` here, through one library each:
- identity (name, compute capability, memory) from CUDA's runtime API through cuda-python
  (`cuda.bindings.runtime`, NVIDIA's bindings, on PyPI and in JetPack 6);
- buffers, copies and the stream through Polygraphy's `polygraphy.cuda` (NVIDIA, on PyPI), which loads
  libcudart itself: no hand-written memory layer of ours.
Both come with the `gpu` extra. Not exercised on CI (no GPU there): callers skip where this says no.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

GPU_EXTRA = "pip install 'cmmsf[gpu]'"


@dataclass(frozen=True)
class DeviceIdentity:
    """What a TensorRT plan is tied to (the manifest records it at build, the backend checks it at load)."""

    gpu: str
    compute_capability: str
    tensorrt: str
    memory_mb: int


def _runtime_api():
    """cuda-python's CUDA runtime module (its name moved in 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime  # cuda-python < 12.6
    return runtime


def _checked(result):
    """A cuda-python call's (error, value...) tuple → its value, or RuntimeError naming the CUDA error."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


@lru_cache(maxsize=1)
def tensorrt_problem() -> str | None:
    """None when TensorRT, the CUDA bindings and a GPU are all here, else one line saying what is missing
    (asked once a process)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (`pip install tensorrt`, or JetPack's python3-libnvinfer)"
    try:
        runtime = _runtime_api()
        import polygraphy.cuda  # noqa: F401
    except ImportError:
        return f"the CUDA bindings (cuda-python) or Polygraphy are not installed: {GPU_EXTRA}"
    err, count = runtime.cudaGetDeviceCount()
    return None if int(err) == 0 and count > 0 else "no CUDA GPU is visible"


@lru_cache(maxsize=1)
def device_identity() -> DeviceIdentity:
    """GPU 0 and the TensorRT version; call only where `tensorrt_problem()` is None."""
    import tensorrt as trt

    props = _checked(_runtime_api().cudaGetDeviceProperties(0))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return DeviceIdentity(gpu=name.rstrip("\x00"), compute_capability=f"{props.major}.{props.minor}",
                          tensorrt=trt.__version__, memory_mb=int(props.totalGlobalMem) // (1 << 20))


class DeviceBuffers:
    """Device arrays by name that only grow (steady-state calls reuse the same memory), one stream, and
    the asynchronous copies between them and NumPy arrays: `polygraphy.cuda`'s DeviceArray and Stream."""

    def __init__(self):
        from polygraphy import cuda

        self.cuda = cuda
        self.stream = cuda.Stream()
        self.arrays: dict[object, object] = {}
        self.dtypes: dict[object, object] = {}

    def reserve(self, key: object, shape: tuple[int, ...], dtype) -> int:
        """The device address of array `key`, sized for `shape` of `dtype` (reallocated only to grow)."""
        if key in self.arrays and self.dtypes[key] == dtype:
            return self.arrays[key].resize(tuple(shape)).ptr
        if key in self.arrays:
            self.arrays[key].free()
        self.arrays[key], self.dtypes[key] = self.cuda.DeviceArray(shape=tuple(shape), dtype=dtype), dtype
        return self.arrays[key].ptr

    def put(self, key: object, host) -> int:
        """Copy a contiguous host array into array `key` on the stream; returns its device address."""
        ptr = self.reserve(key, host.shape, host.dtype)
        self.arrays[key].copy_from(host, stream=self.stream)
        return ptr

    def get(self, host, key: object) -> None:
        """Copy array `key` into a host array of its shape, on the stream (valid after `synchronize`)."""
        self.arrays[key].copy_to(host, stream=self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    @property
    def allocated_bytes(self) -> int:
        return sum(array.allocated_nbytes for array in self.arrays.values())

    def close(self) -> None:
        for array in self.arrays.values():
            array.free()
        self.arrays.clear()
        self.dtypes.clear()
        self.stream.free()
