"""cmmsf-export: per-stage ONNX in both precisions, parity, manifest, check, and the CLI's errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from cmmsf.cli import export_app
from cmmsf.contracts import STAGES
from cmmsf.sample_inputs import make_inputs
from cmmsf.export.build import BuildError, BuildOptions, build, check
from cmmsf.export.parity import FP32_TOLERANCE, check_parity, error_stats
from cmmsf.export.profiles import ProfileError, ShapeProfile, parse_batch, parse_max_len, stage_shapes
from cmmsf.export.tensorrt_build import BuildPath, choose_build_path
from cmmsf.runtime.gpu import tensorrt_problem
from cmmsf.runtime.backends.onnxruntime import OnnxRuntimeBackend
from cmmsf.runtime.backends.torch_ref import TorchBackend
from cmmsf.runtime.engine_folder import EngineFolder

runner = CliRunner()


def test_build_writes_every_stage_in_both_precisions_and_a_verifying_manifest(tiny_engines):
    engines = EngineFolder.open(tiny_engines)
    manifest = engines.manifest
    for stage in STAGES:
        for kind in ("fp32", "fp16"):
            record = manifest.stages[stage].artifacts[kind]
            onnx.checker.check_model(str(tiny_engines / record.file), full_check=True)
    assert engines.problems() == []
    assert manifest.parity["passed"] is True
    assert manifest.tensorrt.status == "skipped" and manifest.tensorrt.reason
    assert manifest.opset >= 17
    assert manifest.parity["chained"]["fp32"]["score_max_abs"] <= 1e-4
    assert manifest.parity["chained"]["fp16"]["acc2_flips"] == 0
    assert manifest.stages["audio_encoder"].profile_shapes["audio"] == [[1, 1, 16], [2, 20, 16], [4, 40, 16]]
    assert set(manifest.versions) >= {"torch", "onnx", "onnxruntime", "tensorrt"}


def test_fp16_graph_keeps_layernorm_softmax_and_io_in_fp32(tiny_engines):
    model = onnx.load(str(tiny_engines / "interaction.fp16.onnx"))
    inits = {t.name: t.data_type for t in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in inits.values()
    for node in model.graph.node:
        if node.op_type == "LayerNormalization":
            assert all(inits.get(i, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT for i in node.input[1:])
    for value in list(model.graph.input) + list(model.graph.output):
        assert value.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL)


@pytest.mark.parametrize("batch,lt,la,lv", [(1, 1, 1, 1), (3, 16, 40, 30), (2, 5, 33, 2)])
def test_exported_stages_match_torch_at_other_shapes(tiny_engines, tiny_model, batch, lt, la, lv):
    candidates = {"fp32": OnnxRuntimeBackend.from_engines(EngineFolder.open(tiny_engines), "fp32")}
    report = check_parity(TorchBackend(tiny_model, device="cpu"), candidates,
                          {"case": make_inputs(tiny_model.config, batch, lt, la, lv, seed=5)})
    assert report.passed, report.failures
    assert max(e.max_abs for e in report.errors) <= 1e-4


def test_exported_graphs_are_padding_invariant(tiny_engines, tiny_model):
    backend = OnnxRuntimeBackend.from_engines(EngineFolder.open(tiny_engines), "fp32")

    def chain(inputs):
        return backend.run(inputs)["score"]

    inputs = make_inputs(tiny_model.config, batch=3, text_len=12, audio_len=30, video_len=9, seed=11)
    batched = chain(inputs)
    for row in range(3):
        single = {}
        for m, data in (("text", "input_ids"), ("audio", "audio"), ("video", "video")):
            n = int(inputs[f"{m}_mask"][row].sum())
            single[data] = inputs[data][row: row + 1, :n]
            single[f"{m}_mask"] = inputs[f"{m}_mask"][row: row + 1, :n]
        assert abs(chain(single)[0] - batched[row]) < 1e-5


def test_check_passes_then_detects_a_tampered_artifact(tiny_engines, tmp_path):
    report = check(tiny_engines)
    assert report.passed
    copy = tmp_path / "copy"
    shutil.copytree(tiny_engines, copy)
    target = copy / "mgf_head.fp16.onnx"
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BuildError, match="mgf_head fp16: mgf_head.fp16.onnx does not match its sha256"):
        check(copy)


def test_overwrite_is_refused_without_force(tiny_engines, tiny_checkpoint):
    with pytest.raises(BuildError, match="--force"):
        build(BuildOptions(checkpoint=str(tiny_checkpoint), out=tiny_engines))


def test_cli_bad_checkpoint_path_is_one_clear_line(tmp_path):
    result = runner.invoke(export_app, ["build", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "e")])
    assert result.exit_code == 1
    assert "checkpoint folder not found" in result.output and "Traceback" not in result.output


def test_cli_inspect_prints_the_manifest_table(tiny_engines):
    result = runner.invoke(export_app, ["inspect", str(tiny_engines)])
    assert result.exit_code == 0, result.output
    assert "interaction" in result.output and "skipped" in result.output


def test_failed_parity_leaves_no_manifest(tiny_checkpoint, tmp_path, monkeypatch):
    import cmmsf.export.parity as parity

    monkeypatch.setattr(parity, "FP32_TOLERANCE", 0.0)  # nothing can pass a zero tolerance
    out = tmp_path / "e"
    with pytest.raises(BuildError, match="parity failed"):
        build(BuildOptions(checkpoint=str(tiny_checkpoint), out=out,
                           profile=ShapeProfile((1, 1, 2), {"text": 4, "audio": 4, "video": 3})))
    assert not out.exists()  # nothing published: the failed build's report is kept beside it
    assert json.loads((tmp_path / "e.parity_report.json").read_text())["passed"] is False


def test_fp32_parity_allows_float32_rounding_relative_to_the_outputs_size():
    """2e-4 off a value near 1000 is float32 rounding (one ulp is 6e-5 there); 2e-4 off 0.5 is drift."""
    rng = np.random.default_rng(0)
    large = rng.uniform(500, 1500, size=(2, 90, 128)).astype(np.float32)
    small = rng.uniform(-0.5, 0.5, size=(2, 90, 128)).astype(np.float32)
    large_max, *_, large_excess, large_ref = error_stats(large, large + np.float32(2e-4))
    small_max, *_, small_excess, _ = error_stats(small, small + np.float32(2e-4))
    assert large_max > FP32_TOLERANCE and large_excess <= FP32_TOLERANCE and large_ref > 1000
    assert small_max == pytest.approx(2e-4, rel=0.05) and small_excess > FP32_TOLERANCE


def test_profile_parsing_and_shapes(tiny_config):
    assert parse_batch("8") == (1, 1, 8) and parse_batch("1,4,16") == (1, 4, 16)
    for bad in ("0,1,2", "4,2,8", "a,b,c", "1,2"):
        with pytest.raises(ProfileError):
            parse_batch(bad)
    assert parse_max_len("text=32", {"text": 64, "audio": 10, "video": 5}) == {"text": 32, "audio": 10, "video": 5}
    with pytest.raises(ProfileError, match="use text="):
        parse_max_len("speech=3", {"text": 1})
    profile = ShapeProfile((1, 2, 4), {"text": 16, "audio": 40, "video": 30})
    shapes = stage_shapes("video_encoder", tiny_config, profile)
    assert shapes["video"] == [[1, 1, 3, 32, 32], [2, 15, 3, 32, 32], [4, 30, 3, 32, 32]]
    assert shapes["video_mask"] == [[1, 1], [2, 15], [4, 30]]


def test_tensorrt_build_path_per_version():
    assert choose_build_path("8.5.2", "fp16").fp16_flag and choose_build_path("8.6.1", "fp16").onnx_kind == "fp32"
    for version in ("9.3.0", "10.8.0", "11.0.1"):
        path = choose_build_path(version, "fp16")
        assert path.network == "strongly_typed" and path.onnx_kind == "fp16" and not path.fp16_flag
    assert choose_build_path("10.1", "fp32").onnx_kind == "fp32"
    assert choose_build_path("10.8.0", "int8") == BuildPath("strongly_typed", "int8", False)  # the QDQ graph decides
    assert choose_build_path("8.6.1", "int8") == BuildPath("weakly_typed", "int8", True, True)


@pytest.mark.skipif(tensorrt_problem() is not None, reason=f"TensorRT build needs a GPU: {tensorrt_problem()}")
def test_tensorrt_plans_build_and_match(tiny_checkpoint, tmp_path):  # pragma: no cover - GPU machines only
    manifest = build(BuildOptions(checkpoint=str(tiny_checkpoint), out=tmp_path / "trt", tensorrt="on",
                                  profile=ShapeProfile((1, 1, 2), {"text": 8, "audio": 8, "video": 4})))
    assert manifest.tensorrt.status == "built"
    from cmmsf.runtime.backends.tensorrt import TensorRTBackend

    backend = TensorRTBackend.from_engines(EngineFolder.open(tmp_path / "trt"))
    inputs = make_inputs(manifest_config(manifest), 2, 8, 8, 4)
    tensors = backend.run(inputs)
    ref = TorchBackend.from_checkpoint(tiny_checkpoint, device="cpu").run(inputs)
    assert np.max(np.abs(ref["score"] - tensors["score"])) < 1e-2
    # the face detector runs on the GPU too, from its own sealed plan, and finds the face ONNX Runtime finds
    from cmmsf.inputs.face_detector import YuNet

    from .media import draw_face

    engines = EngineFolder.open(tmp_path / "trt")
    assert manifest.detector.plan is not None and engines.detector_plan.name == "face_detector.plan"
    frame = np.full((240, 320, 3), 120, np.uint8)
    frame[60:180, 100:220] = draw_face(120, 0.0)
    [ours] = YuNet(backend.graph_runner(engines.detector_file)).faces(frame)
    [theirs] = engines.face_detector().faces(frame)
    np.testing.assert_allclose(ours.box, theirs.box, atol=1.0)
    assert backend.graph_provider(engines.detector_file) == backend.provider


def manifest_config(manifest):
    from cmmsf.config import ModelConfig

    return ModelConfig.from_dict(manifest.model.config)


@pytest.mark.parametrize("variant", ["no-bilstm", "no-mgf", "cm-msf-i", "cm-msf-ii", "text-bert", "text-lstm"])
def test_every_paper_variant_builds_and_exports_with_parity(variant, tmp_path):
    """§4.3.2's ablations and Table 7's text encoders are configs that export like the full model."""
    import torch
    from rich.console import Console

    from cmmsf.model.checkpoint import save_checkpoint
    from cmmsf.config import preset
    from cmmsf.model.network import build_model

    torch.manual_seed(0)
    checkpoint = save_checkpoint(build_model(preset("tiny", variant)), tmp_path / "ck")
    manifest = build(BuildOptions(checkpoint=str(checkpoint), out=tmp_path / "e",
                                  profile=ShapeProfile((1, 1, 3), {"text": 6, "audio": 8, "video": 4})),
                     Console(quiet=True))
    assert manifest.parity["passed"] and manifest.model.config == preset("tiny", variant).to_dict()
    assert manifest.parity["chained"]["fp32"]["score_max_abs"] <= 1e-4


def test_fp16_graphs_keep_every_reduction_in_fp32(tiny_engines):
    """No Reduce* node of an FP16 graph reads an FP16 tensor: its input is a graph input or a Cast to
    float (integer casts are mask step counts). The adaptive mask's ReduceL2 overflowed in FP16 above a
    norm of 256 on engines that compute in FP16; ORT's CPU provider computes wider, so the guarantee is
    checked on the graph itself."""
    checked = 0
    for stage in STAGES:
        model = onnx.load(str(tiny_engines / f"{stage}.fp16.onnx"))
        casts = {n.output[0]: n for n in model.graph.node if n.op_type == "Cast"}
        inputs = {v.name for v in model.graph.input}
        for node in model.graph.node:
            if node.op_type.startswith("Reduce"):
                source = node.input[0]
                to = next((a.i for a in casts[source].attribute if a.name == "to"), None) if source in casts else None
                assert source in inputs or (to is not None and to != onnx.TensorProto.FLOAT16), (stage, node.name)
                checked += 1
    assert checked > 10
