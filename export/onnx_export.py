"""One stage module → one FP32 ONNX graph with dynamic batch and length axes.

We use the TorchScript-based exporter (`dynamo=False`). DESIGN.md warns that it bakes sequence lengths
into `nn.MultiheadAttention` reshapes; our attention is hand-written (cmmsf/model/layers.py), so that trap is
gone, and parity at several lengths (export/parity.py) proves it on every build. On torch 2.13 the dynamo
exporter specialised audio_mask's length to the example's (parity caught it) and took 44 s instead of
1.3 s for the interaction stage. RNNs become native ONNX LSTM/GRU ops, which TensorRT runs directly.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from cmmsf.config import ModelConfig
from cmmsf.contracts import STAGES
from cmmsf.model.network import CMMSF

from .profiles import dynamic_axes

OPSET = 17
"""≥ 17 keeps LayerNorm one `LayerNormalization` op (decomposed LayerNorm overflows in FP16)."""


def stamp_symbolic_axes(model: onnx.ModelProto, axes: dict[str, dict[int, str]]) -> None:
    """Write the contract's axis names on graph inputs and outputs.

    The exporter infers some output lengths from the example (e.g. after an LSTM) and records them as
    fixed; ONNX Runtime then warns and TensorRT could trust the wrong size. The contract is the truth.
    """
    for value in list(model.graph.input) + list(model.graph.output):
        for index, name in axes.get(value.name, {}).items():
            dim = value.type.tensor_type.shape.dim[index]
            dim.ClearField("dim_value")
            dim.dim_param = name


def export_stage(model: CMMSF, stage: str, example: dict[str, torch.Tensor], path: Path,
                 config: ModelConfig) -> Path:
    """Export `stage` of `model` to `path` and run the full ONNX checker on it."""
    spec = STAGES[stage]
    module = model.stage(stage).eval()
    args = tuple(example[n] for n in spec.input_names)
    axes = dynamic_axes(stage, config)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints are expected and harmless here
        torch.onnx.export(module, args, str(path), input_names=spec.input_names,
                          output_names=spec.output_names, dynamic_axes=axes, opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)
    graph = onnx.load(str(path))
    exported = [value.name for value in graph.graph.input]
    if exported != spec.input_names:  # an input the stage ignores is dropped by the exporter
        raise ValueError(f"stage {stage} exported with inputs {exported}, its contract says {spec.input_names}: "
                         "every contract input must reach the graph")
    stamp_symbolic_axes(graph, axes)
    graph.doc_string = f"CM-MSF stage {stage} ({config.name} preset)"
    onnx.save(graph, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return path
