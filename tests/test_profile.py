"""`bench --profile`: FLOPs counted from a graph (checked against hand-computed small graphs), operator
times from the backends' own profilers naming real operators, the machine's measured peak."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from cmmsf.cli import run_app
from cmmsf.runtime.backends import LoadRequest, load_backend, registry
from cmmsf.runtime.engine_folder import EngineFolder
from cmmsf.runtime.profile import graph_flops, measure_peak
from cmmsf.sample_inputs import make_inputs


def _save(tmp_path, nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_flops_of_a_small_graph_are_the_hand_computed_ones(tmp_path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "w")
    k = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "k")
    dw = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "dw")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]),  # [B, 5, 3] × [3, 4]
             helper.make_node("Conv", ["img", "k"], ["c"]),  # [B, 3, 8, 8] → [B, 4, 6, 6]
             helper.make_node("Conv", ["c", "dw"], ["d"], group=4)]  # depthwise → [B, 4, 4, 4]
    path = _save(tmp_path, nodes,
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 5, 3]),
                  helper.make_tensor_value_info("img", TensorProto.FLOAT, ["B", 3, 8, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                  helper.make_tensor_value_info("d", TensorProto.FLOAT, None)], [w, k, dw])
    feeds = {"x": np.zeros((2, 5, 3), np.float32), "img": np.zeros((2, 3, 8, 8), np.float32)}
    flops = graph_flops(path, feeds)
    assert flops["MatMul"] == 2 * (2 * 5) * 3 * 4
    assert flops["Conv"] == 2 * (2 * 4 * 6 * 6) * (3 * 3 * 3) + 2 * (2 * 4 * 4 * 4) * (1 * 3 * 3)


def test_flops_through_a_reshape_to_computed_sizes_use_the_real_shapes(tmp_path):
    """Shape inference cannot follow a Reshape whose target is computed at run time: the graph is run."""
    w = numpy_helper.from_array(np.ones((6, 2), np.float32), "w")
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ReduceProd", ["s"], ["n"], keepdims=1),
             helper.make_node("Div", ["n", "six"], ["rows"]),
             helper.make_node("Concat", ["rows", "six"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["y"])]
    six = numpy_helper.from_array(np.array([6], np.int64), "six")
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", 6])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, six])
    assert graph_flops(path, {"x": np.zeros((3, 4, 6), np.float32)})["MatMul"] == 2 * 12 * 6 * 2


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_each_backend_profiler_names_real_operators_of_the_tiny_graphs(tiny_engines, name):
    engines = EngineFolder.open(tiny_engines)
    if name not in registry() or registry()[name].problem(engines, LoadRequest()):
        pytest.skip(f"{name} cannot run here")
    inputs = make_inputs(engines.config, 1, 8, 12, 4, seed=0)
    with load_backend(name, engines) as backend:
        times = backend.operator_times(inputs, runs=2)
    graph_ops = {node.op_type for node in onnx.load(str(engines.files("fp32")["text_encoder"])).graph.node}
    assert set(times) == {"text_encoder", "audio_encoder", "video_encoder", "interaction", "mgf_head"}
    assert all(ms >= 0 for stage in times.values() for ms in stage.values())
    if name == "onnxruntime":  # ONNX Runtime names the graph's own operator types
        assert set(times["text_encoder"]) & graph_ops
    assert sum(times["video_encoder"].values()) > 0


def test_bench_profile_prints_operators_flops_and_the_measured_peak(tiny_engines, tmp_path):
    import json

    out = tmp_path / "bench.json"
    result = CliRunner().invoke(run_app, ["bench", "--engines", str(tiny_engines), "--backends", "onnxruntime",
                                          "--batch", "1", "--runs", "3", "--warmup", "1", "--no-front-ends",
                                          "--profile", "--json", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "machine peak, measured" in result.output and "GFLOP/s" in result.output
    profile = json.loads(out.read_text())["results"]["onnxruntime fp32"]["1"]["profile"]
    assert profile["video_encoder"]["gflop"] > 0 and profile["video_encoder"]["top_operators"]
    peak = measure_peak(n=256, runs=2)
    assert peak.fp32_gflops > 0 and peak.int8_gops > 0
