"""`cmmsf-run bench --profile`: where a stage's time goes, and how far it is from what the machine can do.

- FLOPs are counted from a stage's ONNX graph at the shapes bench runs (ONNX shape inference with the
  inputs fixed to those shapes, and the real shapes where it cannot follow them): MatMul, Gemm, Conv
  (grouped and depthwise included), Einsum and the recurrent cells (LSTM, GRU: their input and recurrent
  weights at every step) as matrix products, two FLOPs a multiply-add. Element-wise work is not
  counted: it is memory-bound, and a small share of these stages' arithmetic.
- The machine's peak is measured, not looked up: ONNX Runtime runs a 1024³ float32 MatMul and a 1024³
  int8 MatMulInteger (MLAS picks AVX2/AVX-512/VNNI kernels where the CPU has them) on all cores.
- Operator times come from each backend's own profiler (`Backend.operator_times`): ONNX Runtime's
  profiling JSON, OpenVINO's profiling counters (`PERF_COUNT`), TensorRT's `IProfiler`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

MATRIX_OPS = ("MatMul", "Gemm", "Conv", "Einsum", "MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv",
              "LSTM", "GRU", "RNN")


def _dims(value_info) -> list[int] | None:
    shape = value_info.type.tensor_type.shape
    dims = [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]
    return None if any(d is None for d in dims) else dims


def _fixed(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """A copy with each graph input's shape set to the one benched, then shapes inferred through it."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for graph_input in model.graph.input:
        if graph_input.name in shapes:
            dims = graph_input.type.tensor_type.shape.dim
            for dim, size in zip(dims, shapes[graph_input.name]):
                dim.ClearField("dim_param")
                dim.dim_value = int(size)
    return shape_inference.infer_shapes(model, data_prop=True)


def node_flops(node: onnx.NodeProto, shape_of: dict[str, list[int]], attrs: dict) -> int:
    """FLOPs of one matrix node (0 where its shapes are unknown or it is not a matrix product)."""
    ins = [shape_of.get(name) for name in node.input]
    out = shape_of.get(node.output[0]) if node.output else None
    if node.op_type in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        a, b = (ins[0], ins[1]) if node.op_type != "QLinearMatMul" else (ins[0], ins[3])
        if a is None or b is None or out is None:
            return 0
        k = a[-1]
        return 2 * int(np.prod(out)) * k
    if node.op_type == "Gemm":
        a, b = ins[0], ins[1]
        if a is None or b is None:
            return 0
        m, k = (a[1], a[0]) if attrs.get("transA") else (a[0], a[1])
        n = b[0] if attrs.get("transB") else b[1]
        return 2 * m * k * n
    if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
        weight = ins[1] if node.op_type != "QLinearConv" else ins[3]
        if weight is None or out is None:
            return 0
        # weight [Cout, Cin/group, k...]: each output element is Cin/group × prod(k) multiply-adds
        return 2 * int(np.prod(out)) * int(np.prod(weight[1:]))
    if node.op_type in ("LSTM", "GRU", "RNN"):
        x, w, r = ins[0], ins[1], ins[2]
        if x is None or w is None or r is None:
            return 0
        steps, batch = x[0], x[1]  # layout 0: [T, B, I]; W [dirs, gates·H, I], R [dirs, gates·H, H]
        if attrs.get("layout"):
            steps, batch = x[1], x[0]
        return 2 * steps * batch * (int(np.prod(w)) + int(np.prod(r)))
    if node.op_type == "Einsum":
        if out is None or any(s is None for s in ins):
            return 0
        equation = attrs.get("equation", b"")
        equation = equation.decode() if isinstance(equation, bytes) else equation
        sizes: dict[str, int] = {}
        for term, shape in zip(equation.split("->")[0].split(","), ins):
            for letter, size in zip(term.strip(), shape):
                sizes[letter] = size
        return 2 * int(np.prod(list(sizes.values())))
    return 0


def graph_flops(path: Path | str, feeds: dict[str, np.ndarray]) -> dict[str, int]:
    """Op type → FLOPs of the graph's matrix products when it runs on `feeds`.

    Shapes come from ONNX shape inference with the inputs fixed to the feeds' shapes; where it cannot
    follow them (a Reshape to computed sizes), ONNX Runtime runs the graph once with those tensors as
    extra outputs and their real shapes are read back."""
    model = _fixed(onnx.load(str(path)), {k: v.shape for k, v in feeds.items()})
    graph = model.graph
    shape_of = {}
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        dims = _dims(info)
        if dims is not None:
            shape_of[info.name] = dims
    for init in graph.initializer:
        shape_of[init.name] = list(init.dims)
    nodes = [node for node in graph.node if node.op_type in MATRIX_OPS]
    unknown = {name for node in nodes for name in (*node.input, *node.output[:1]) if name and name not in shape_of}
    if unknown:
        shape_of.update(_run_shapes(model, sorted(unknown), feeds))
    totals: dict[str, int] = {}
    for node in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        flops = node_flops(node, shape_of, attrs)
        if flops:
            totals[node.op_type] = totals.get(node.op_type, 0) + flops
    return totals


def _run_shapes(model: onnx.ModelProto, names: list[str], feeds: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """The real shapes of `names` on `feeds`: the graph run once by ONNX Runtime with them as outputs."""
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names if name not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every node as it is
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    wanted = [o.name for o in session.get_outputs() if o.name in set(names)]
    inputs = {i.name: feeds[i.name] for i in session.get_inputs() if i.name in feeds}
    return {name: list(np.shape(value)) for name, value in zip(wanted, session.run(wanted, inputs))}


@dataclass(frozen=True)
class Peak:
    fp32_gflops: float
    int8_gops: float


def _matmul_model(integer: bool, n: int) -> bytes:
    if integer:
        a = helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])
        b = numpy_helper.from_array(np.random.default_rng(0).integers(-64, 64, (n, n), dtype=np.int8), "b")
        node = helper.make_node("MatMulInteger", ["a", "b"], ["c"])
        out = helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])
    else:
        a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
        b = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), "b")
        node = helper.make_node("MatMul", ["a", "b"], ["c"])
        out = helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])
    graph = helper.make_graph([node], "peak", [a], [out], initializer=[b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def measure_peak(threads: int | None = None, n: int = 1024, runs: int = 10) -> Peak:
    """The best of `runs` 1024³ matrix products in float32 and in int8, on ONNX Runtime's CPU kernels."""
    import onnxruntime as ort

    from .backends.onnxruntime import session_options

    rates = []
    for integer in (False, True):
        session = ort.InferenceSession(_matmul_model(integer, n), sess_options=session_options(threads),
                                       providers=["CPUExecutionProvider"])
        a = (np.random.default_rng(1).integers(0, 255, (n, n), dtype=np.uint8) if integer
             else np.random.default_rng(1).standard_normal((n, n)).astype(np.float32))
        session.run(None, {"a": a})
        best = float("inf")
        for _ in range(runs):
            begin = time.perf_counter()
            session.run(None, {"a": a})
            best = min(best, time.perf_counter() - begin)
        rates.append(2 * n ** 3 / best / 1e9)
    return Peak(fp32_gflops=round(rates[0], 1), int8_gops=round(rates[1], 1))


def top_operators(times: dict[str, float], k: int = 5) -> list[tuple[str, float, float]]:
    """(op type, ms per run, share of the stage) for the `k` costliest operator types."""
    total = sum(times.values()) or 1.0
    return [(op, ms, ms / total) for op, ms in sorted(times.items(), key=lambda kv: -kv[1])[:k]]
