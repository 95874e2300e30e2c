"""INT8: one static QDQ ONNX graph per stage, where quantising pays.

ONNX Runtime's `quantize_static` inserts QuantizeLinear/DequantizeLinear pairs around the chosen
operators: weights int8 per output channel (symmetric), activations uint8 with ranges fixed by the
calibration set (export/calibration.py). That QDQ graph is the one format every engine reads as INT8:
ONNX Runtime's CPU kernels fuse the pairs into integer kernels, OpenVINO compiles them to its int8
primitives, and TensorRT's explicit quantisation builds a strongly typed network from them.

Which operators: a measurement, not a rule (INT8_OPS). Quantising a whole stage made the face stage
slower in both engines (each QDQ pair around a cheap op costs more than the op), so each stage lists the
operator types whose int8 kernels were faster at the same accuracy; a stage listing none keeps its FP32
graph, and its `int8` artifact is that graph.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import onnx

INT8_OPS: dict[str, tuple[str, ...]] = {
    "text_encoder": ("MatMul",),
    "audio_encoder": (),
    "video_encoder": (),
    "interaction": (),
    "mgf_head": (),
}
"""Stage → operator types quantised (a MatMul only where its second input is a weight: attention's
activation × activation products stay in float); empty: the stage keeps FP32. Measured at batch 1,
typical lengths, on 2 cores of an AVX-512 VNNI CPU, each QDQ variant against its FP32 graph in ONNX
Runtime and OpenVINO: the text encoder's MatMuls 7.9 → 4.9 ms on ONNX Runtime; the face stage slower
quantised every way tried (MatMul 46.5 → 54.2 ms, Conv → 71.1 ms, both → 49.8 ms on ONNX Runtime;
OpenVINO's BF16 FP32 graph 16.4 ms beats all its INT8 variants, 26.8-64.6 ms); audio, interaction and head
within noise (±0.6 ms)."""
KEEP_FLOAT: dict[str, str] = {"text_encoder": r"layer\.\d+/output/dense/"}
"""Stage → a regular expression of node names left in float though their type is quantised: BERT's
feed-forward down projections read the GELU activations' few huge outlier channels, which one uint8 range
cannot hold (with them quantised the text encoder's output moved 16% on average and MOSI dev MAE rose 0.04,
past the guard's 0.02; without them 5.6%)."""


def chosen_nodes(model: onnx.ModelProto, ops: tuple[str, ...], keep_float: str | None) -> list[str]:
    """The nodes of types `ops` to quantise: MatMuls with a weight (an initialiser or constant) as their
    second input, every other listed type, minus the names `keep_float` matches."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    return [node.name for node in model.graph.node
            if node.op_type in ops and (node.op_type != "MatMul" or node.input[1] in constants)
            and not (keep_float and re.search(keep_float, node.name))]


def quantize_stage(fp32: Path, out: Path, feeds: list[dict[str, np.ndarray]], ops: tuple[str, ...],
                   keep_float: str | None = None) -> Path:
    """The stage's QDQ graph at `out`: the `chosen_nodes` of `ops` quantised, calibrated on `feeds` (MinMax)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory(prefix="cmmsf-int8-") as work:
        prepared = Path(work) / "prepared.onnx"  # shapes inferred and graph folded, as quantisation expects
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        nodes = chosen_nodes(onnx.load(str(prepared)), ops, keep_float)
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(ops), nodes_to_quantize=nodes, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    model = onnx.load(str(out))
    model.doc_string = f"{model.doc_string} INT8 QDQ: {', '.join(ops)}".strip()
    onnx.save(model, str(out))
    onnx.checker.check_model(str(out), full_check=True)
    return out


def quantized_ops(path: Path) -> dict[str, int]:
    """Operator type → how many of its nodes take two dequantised inputs (activation and weight, or two
    activations): the nodes an engine fuses into integer kernels, counted in the graph itself (`cmmsf-export
    inspect` answers "is my engine really INT8?" with it). A node fed one dequantised tensor runs in float."""
    graph = onnx.load(str(path), load_external_data=False).graph
    dequantised = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    counts: dict[str, int] = {}
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") and \
                sum(name in dequantised for name in node.input) >= 2:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
