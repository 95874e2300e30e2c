"""OpenVINO backend: the engine folder's ONNX graphs compiled by OpenVINO for Intel CPUs, iGPUs and NPUs.

It reads the same sealed ONNX graphs as ONNX Runtime (hash-checked first) and never writes into the
engine folder: OpenVINO's compiled-model cache lives in the user cache (runtime/locations.py). What ran
is reported, never assumed: the device OpenVINO executed on (`EXECUTION_DEVICES`) and the precision it
computed in (`INFERENCE_PRECISION_HINT`). On a CPU with BF16 OpenVINO's own default is to compute in
bfloat16; here `fp32` and `fp16` mean what they say (the FP32 or FP16 graph, computed in float32), and
`bf16` (the FP32 graph computed in bfloat16) is asked for by name, so a lower precision never runs
silently. `--device gpu` and `npu` reach Intel iGPUs and NPUs by OpenVINO's names (written against the
documented API; only the CPU has run here).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from cmmsf.contracts import STAGES
from cmmsf.inputs.face_detector import GraphRunner

from ..engine_folder import EngineFolder
from ..locations import cache_dir
from .base import Backend, conform
from .registry import BackendSpec, LoadRequest, missing_graphs

DEVICES = {"auto": "CPU", "cpu": "CPU", "gpu": "GPU", "npu": "NPU"}
"""Our device names → OpenVINO's (`auto`, every backend's default, is the CPU here)."""
COMPUTE = {"fp32": "f32", "fp16": "f32", "int8": "f32", "bf16": "bf16"}
"""Precision asked → OpenVINO's inference precision hint (the FP16 graph is computed in float32 on a CPU;
the INT8 graph's quantised operators in int8, the rest in float32)."""
GRAPH = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "bf16": "fp32"}
"""Precision asked → which ONNX graph of the folder is compiled."""
OURS = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}
"""OpenVINO's element type names → ours, for the report of what it computed in."""


def _device(request: LoadRequest) -> str:
    return DEVICES[request.device]


def compile_options(request: LoadRequest) -> dict[str, str]:
    """Properties set deliberately: latency (batch-1 streams), the compute precision asked for, threads,
    and a model cache kept apart from the sealed artifacts."""
    options = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": COMPUTE[request.precision],
               "CACHE_DIR": str(cache_dir() / "openvino")}
    if request.threads:
        options["INFERENCE_NUM_THREADS"] = str(request.threads)
    return options


class OpenVinoBackend(Backend):
    """Five compiled models, one infer request each (reused across calls)."""

    name = "openvino"

    def __init__(self, graphs: dict[str, Path], request: LoadRequest, options: dict[str, str] | None = None):
        """`options`: OpenVINO properties instead of `compile_options(request)` (`{}` is OpenVINO exactly as
        a user calls it with none, what scripts/versus_openvino.py measures us against)."""
        import openvino as ov

        core = ov.Core()
        device = _device(request)
        self.options = compile_options(request) if options is None else options
        self.graphs, self.request_args = graphs, request
        self.requests, self.output_names = {}, {}
        executed, computed = set(), set()
        for stage, path in graphs.items():
            compiled = core.compile_model(str(path), device, self.options)
            self.requests[stage] = compiled.create_infer_request()
            # OpenVINO may name a port after the node it fused (`/Squeeze_5_output_0`): find the contract's
            # name among each port's names
            wanted = set(STAGES[stage].output_names)
            self.output_names[stage] = [next(iter(wanted & port.get_names())) for port in compiled.outputs
                                        if wanted & port.get_names()]
            executed.update(compiled.get_property("EXECUTION_DEVICES"))
            computed.add(OURS.get(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(), "?"))
        self.precision = request.precision
        self.provider = (f"OpenVINO {ov.__version__.split('-')[0]} on {'+'.join(sorted(executed))}, computing in "
                         f"{'+'.join(sorted(computed))}")

    def graph_runner(self, graph: Path) -> GraphRunner:
        """The graph compiled for this backend's device with its options (the face detector runs where the
        stages run); one infer request, used by one caller at a time."""
        import threading

        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(graph))
        graph_names = [output.get_any_name() for output in model.outputs]  # before fusing renames a port
        compiled = core.compile_model(model, _device(self.request_args), self.options)
        request, lock = compiled.create_infer_request(), threading.Lock()

        def run(blob: np.ndarray) -> dict[str, np.ndarray]:
            with lock:
                request.infer({0: blob})
                return {name: np.array(request.get_output_tensor(i).data, copy=True)
                        for i, name in enumerate(graph_names)}

        return run

    def graph_provider(self, graph: Path) -> str:
        return self.provider

    def stage_operator_times(self, feeds: dict[str, dict[str, np.ndarray]], runs: int = 10
                             ) -> dict[str, dict[str, float]]:
        """OpenVINO's own counters (`PERF_COUNT`): each stage compiled once more with them on, its executed
        nodes' real times summed by node type."""
        import openvino as ov

        core, out = ov.Core(), {}
        for stage, stage_inputs in feeds.items():
            compiled = core.compile_model(str(self.graphs[stage]), _device(self.request_args),
                                          {**self.options, "PERF_COUNT": "YES"})
            request = compiled.create_infer_request()
            times: dict[str, float] = {}
            for _ in range(runs):
                request.infer(stage_inputs)
                for info in request.profiling_info:
                    if str(info.status).endswith("EXECUTED") and "NOT" not in str(info.status):
                        times[info.node_type] = times.get(info.node_type, 0.0) + \
                            info.real_time.total_seconds() * 1e3 / runs
            out[stage] = times
        return out

    @classmethod
    def from_engines(cls, engines: EngineFolder, request: LoadRequest) -> "OpenVinoBackend":
        return cls(engines.files(GRAPH[request.precision], request.stages), request)

    def run_stage(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = self.requests[stage]
        request.infer(conform(stage, feeds))
        return {name: np.array(request.get_tensor(name).data, copy=True) for name in self.output_names[stage]}


def _problem(engines: EngineFolder, request: LoadRequest) -> str | None:
    if importlib.util.find_spec("openvino") is None:
        return "OpenVINO is not installed (pip install 'cmmsf[openvino]')"
    import openvino as ov

    core = ov.Core()
    if request.device not in DEVICES:
        return f"OpenVINO runs on {', '.join(DEVICES)}, not {request.device}"
    if missing := missing_graphs(engines, request):
        return missing
    device = _device(request)
    if not any(d.split(".")[0] == device for d in core.available_devices):
        return f"OpenVINO sees no {device} device (it has {', '.join(core.available_devices)})"
    if request.precision == "bf16" and device == "CPU":
        capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if "BF16" not in capabilities:
            return "this CPU has no bfloat16 arithmetic (OpenVINO reports " + ", ".join(capabilities) + ")"
    return None


SPEC = BackendSpec(
    name="openvino", summary="OpenVINO on Intel CPUs (and iGPUs, NPUs): the ONNX graphs, FP32, FP16, INT8 or BF16 compute",
    precisions=("fp32", "fp16", "int8", "bf16"), devices=("cpu", "gpu", "npu"), problem=_problem,
    load=lambda engines, request: OpenVinoBackend.from_engines(engines, request), auto_rank=None)
