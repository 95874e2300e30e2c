"""FP32 ONNX → FP16 ONNX for strongly typed TensorRT builds (TensorRT ≥ 9, required by 11).

Converted with `onnxconverter-common`, keeping in FP32 what overflows or loses too much in half
precision: LayerNormalization, Softmax, norms and all reductions, the cumulative sums of the mask arithmetic, the
recurrent cells (their state accumulates over time) and the graph's inputs and outputs.
Two repairs make the converter's output valid, both for patterns the TorchScript exporter emits:
Identity nodes that alias an initializer (shared weights) are turned into real initializers first,
and Casts whose result the converter declared FP16 are told to cast to FP16.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
from onnxconverter_common import float16

KEEP_FP32_OPS = ["LayerNormalization", "Softmax", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin",
                 "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "CumSum",
                 "LSTM", "GRU", "Range"]
"""Norms and every other reduction accumulate in FP32: the adaptive mask's ReduceL2 sums squares that
overflow FP16 (max 65504) as soon as a feature vector's norm passes 256."""


def _materialise_identity_initializers(model: onnx.ModelProto) -> None:
    initializers = {t.name: t for t in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    del model.graph.value_info[:]  # stale FP32 annotations; the converter re-infers what it needs


def _cast_to_declared_fp16(model: onnx.ModelProto) -> None:
    declared = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    for node in model.graph.node:
        if node.op_type == "Cast" and declared.get(node.output[0]) == onnx.TensorProto.FLOAT16:
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == onnx.TensorProto.FLOAT:
                    attribute.i = onnx.TensorProto.FLOAT16


def convert_to_fp16(src: Path, dst: Path) -> Path:
    """Write the FP16 twin of `src` to `dst` (I/O stays FP32) and run the full ONNX checker."""
    model = onnx.load(str(src))
    _materialise_identity_initializers(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter warns for every tiny weight it clamps
        half = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=KEEP_FP32_OPS)
    _cast_to_declared_fp16(half)
    onnx.save(half, str(dst))
    onnx.checker.check_model(str(dst), full_check=True)
    return dst
