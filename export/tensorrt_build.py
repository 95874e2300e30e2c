"""TensorRT engine builds: the only module of the project that calls TensorRT's builder.

Two documented paths, chosen by the installed version:
- TensorRT ≥ 9 (11 removed `BuilderFlag.FP16`): a *strongly typed* network parsed from our FP16 ONNX,
  whose precisions we chose ourselves (export/fp16.py);
- TensorRT 8.5/8.6 (JetPack 5/6.0): the FP32 ONNX with `BuilderFlag.FP16`, the only FP16 path there.
INT8 is explicit quantisation on both: the INT8 ONNX's QDQ pairs say what runs in int8 (export/quantize.py),
strongly typed on ≥ 9 (the float parts run in float32 there), `BuilderFlag.INT8` (+FP16) on 8.x; no
calibrator runs on the device.
One optimisation profile per stage, a workspace limit, a timing cache reused across builds, and the
engine inspector's JSON saved beside each plan. Whether TensorRT can build here and which GPU this is
come from runtime/gpu.py, the place the runtime asks too. Untested on CI (no GPU there): tests skip without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cmmsf.inputs.errors import CmmsfError

DEFAULT_WORKSPACE_BYTES = 1 << 30  # 1 GiB: Jetson builds run out of memory with more


@dataclass(frozen=True)
class BuildPath:
    network: str  # "strongly_typed" | "weakly_typed"
    onnx_kind: str  # which ONNX feeds the parser: "fp16" or "fp32"
    fp16_flag: bool
    int8_flag: bool = False


def choose_build_path(tensorrt_version: str, precision: str) -> BuildPath:
    """Which network flavour and which ONNX to build from, for a TensorRT version and a precision."""
    major = int(tensorrt_version.split(".")[0])
    if precision == "int8":
        strongly = major >= 9  # 8.x: weakly typed, with the INT8 flag (and FP16 for the float parts)
        return BuildPath("strongly_typed" if strongly else "weakly_typed", "int8", not strongly, not strongly)
    if precision == "fp32":
        return BuildPath("strongly_typed" if major >= 9 else "weakly_typed", "fp32", False)
    if major >= 9:
        return BuildPath("strongly_typed", "fp16", False)
    return BuildPath("weakly_typed", "fp32", True)


class EngineBuildError(CmmsfError, RuntimeError):
    """TensorRT could not parse or build a stage; the message carries every parser error."""


def build_engine(onnx_path: Path, plan_path: Path, shapes: dict[str, list[list[int]]], precision: str,
                 timing_cache: Path, workspace_bytes: int = DEFAULT_WORKSPACE_BYTES) -> dict:
    """Build one stage's plan from `onnx_path`; returns how (the manifest's PlanRecord fields beyond the file)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    path = choose_build_path(trt.__version__, precision)
    flag_names = ["STRONGLY_TYPED"] if path.network == "strongly_typed" else ["EXPLICIT_BATCH"]
    flags = 0
    for name in flag_names:
        if hasattr(trt.NetworkDefinitionCreationFlag, name):
            flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path.name}:\n{errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if path.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if path.int8_flag:
        config.set_flag(trt.BuilderFlag.INT8)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT failed to build {onnx_path.name} (see the log above)")
    plan_path.write_bytes(bytes(plan))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))

    engine = trt.Runtime(logger).deserialize_cuda_engine(bytes(plan))
    inspector = engine.create_engine_inspector()
    layers = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    plan_path.with_suffix(".layers.json").write_text(json.dumps(json.loads(layers), indent=1))
    return {"build_path": path.network, "built_from": path.onnx_kind, "fp16_flag": path.fp16_flag,
            "workspace_bytes": workspace_bytes}
