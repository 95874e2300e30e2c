"""The GPU environment is decided in one place (runtime/gpu.py): what export and runtime are told here,
on a machine without TensorRT or a GPU, and the plan identity check. The paths that need a GPU run in
scripts/gpu_check.py on a machine that has one."""

from __future__ import annotations

import sys
import types

import pytest

from cmmsf.runtime import gpu
from cmmsf.runtime.backends import BackendUnavailableError, load_backend, resolve_auto
from cmmsf.runtime.backends.tensorrt import TensorRTBackend
from cmmsf.runtime.engine_folder import EngineFolder, ManifestError
from cmmsf.runtime.manifest import TensorRTRecord


@pytest.fixture
def fresh_answer():
    gpu.tensorrt_problem.cache_clear()
    yield
    gpu.tensorrt_problem.cache_clear()


def test_without_tensorrt_export_and_runtime_hear_the_same_reason(fresh_answer, tiny_engines, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on CI: not installed
    reason = gpu.tensorrt_problem()
    assert reason.startswith("TensorRT is not installed")
    engines = EngineFolder.open(tiny_engines)
    assert engines.tensorrt.reason == reason  # what the build recorded is what the runtime says now
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        load_backend("tensorrt", engines)
    assert resolve_auto(engines)[0] == "onnxruntime"


def test_tensorrt_without_cuda_bindings_is_named(fresh_answer, monkeypatch):
    """TensorRT importable but no cuda-python: refused here, before a build makes plans the runtime cannot
    load (the exporter used to ask torch, the runtime cuda-python)."""
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    assert "cuda-python" in gpu.tensorrt_problem() and gpu.GPU_EXTRA in gpu.tensorrt_problem()


def test_plans_for_another_gpu_or_tensorrt_are_refused(tmp_path):
    built = TensorRTRecord(status="built", gpu="NVIDIA H200", compute_capability="9.0", tensorrt="10.7.0")
    same = gpu.DeviceIdentity(gpu="NVIDIA H200", compute_capability="9.0", tensorrt="10.7.0", memory_mb=143000)
    TensorRTBackend.check_identity(built, tmp_path, same)
    for other in (gpu.DeviceIdentity("Orin", "8.7", "10.7.0", 30000), gpu.DeviceIdentity("NVIDIA H200", "9.0", "8.6.2", 1)):
        with pytest.raises(ManifestError, match="rebuild here"):
            TensorRTBackend.check_identity(built, tmp_path, other)
