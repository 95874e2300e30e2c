"""INT8: QDQ graphs per stage that ONNX Runtime and OpenVINO both run, the build's accuracy guard refusing a
broken calibration, and folders without INT8 graphs saying how to get them."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
from rich.console import Console

from cmmsf.contracts import STAGE_ORDER
from cmmsf.export.build import BuildError, BuildOptions, build
from cmmsf.export.inspect import inspect_folder
from cmmsf.export.quantize import quantize_stage, quantized_ops
from cmmsf.runtime.backends import BackendUnavailableError, load_backend
from cmmsf.runtime.backends.onnxruntime import OnnxRuntimeBackend, OrtSession
from cmmsf.runtime.engine_folder import EngineFolder
from cmmsf.runtime.manifest import artifact_record, write_manifest
from cmmsf.sample_inputs import make_inputs

from .test_sources import write_faces, write_ravdess


def stage_feeds(engines: EngineFolder, seeds: range) -> dict[str, list[dict[str, np.ndarray]]]:
    fp32 = OnnxRuntimeBackend.from_engines(engines, "fp32")
    feeds = [fp32.stage_feeds(make_inputs(engines.config, 1, 12, 30, 8, seed=s, padded=False)) for s in seeds]
    return {stage: [f[stage] for f in feeds] for stage in STAGE_ORDER}


def test_a_qdq_stage_stays_close_to_fp32_in_onnx_runtime_and_openvino(tiny_engines, tmp_path):
    engines = EngineFolder.open(tiny_engines)
    calibration, held_out = stage_feeds(engines, range(6)), stage_feeds(engines, range(50, 53))
    fp32 = engines.files("fp32")["audio_encoder"]
    int8 = quantize_stage(fp32, tmp_path / "audio_encoder.int8.onnx", calibration["audio_encoder"], ("MatMul",))
    assert quantized_ops(int8).get("MatMul", 0) >= 2 and quantized_ops(fp32) == {}  # "is it really INT8?"
    reference, quantised = OrtSession(fp32), OrtSession(int8)
    for feeds in held_out["audio_encoder"]:
        want, got = reference.run(feeds)["u_audio"], quantised.run(feeds)["u_audio"]
        assert not np.array_equal(want, got)  # integer kernels ran
        assert np.max(np.abs(want - got)) <= 0.1 * np.max(np.abs(want)) + 1e-3
    if importlib.util.find_spec("openvino") is not None:
        import openvino as ov

        request = ov.Core().compile_model(str(int8), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
        feeds = held_out["audio_encoder"][0]
        request.infer(feeds)
        got = np.array(request.get_tensor("u_audio").data)
        want = quantised.run(feeds)["u_audio"]
        assert np.max(np.abs(want - got)) <= 0.1 * np.max(np.abs(want)) + 1e-3


def test_only_weight_matmuls_are_chosen_and_named_ones_stay_float(tiny_engines):
    import onnx

    from cmmsf.export.quantize import KEEP_FLOAT, chosen_nodes

    model = onnx.load(str(EngineFolder.open(tiny_engines).files("fp32")["text_encoder"]))
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    every = chosen_nodes(model, ("MatMul",), None)
    kept = chosen_nodes(model, ("MatMul",), KEEP_FLOAT["text_encoder"])
    assert every and set(kept) < set(every) < set(matmuls)  # attention's score products are never chosen
    assert any("/attention/self/MatMul" in name for name in set(matmuls) - set(every))
    assert all("/output/dense/" not in name or "/attention/" in name for name in kept)


def test_a_folder_without_int8_graphs_says_how_to_build_them(tiny_engines):
    with pytest.raises(BackendUnavailableError, match="--precision int8"):
        load_backend("onnxruntime", EngineFolder.open(tiny_engines), precision="int8")


def test_the_int8_build_is_guarded_and_refuses_a_broken_calibration(tmp_path, monkeypatch):
    import torch

    import cmmsf.export.calibration as calibration
    import cmmsf.export.quantize as quantize
    from cmmsf.config import preset
    from cmmsf.model.checkpoint import save_checkpoint
    from cmmsf.model.network import build_model

    torch.manual_seed(0)
    model = build_model(preset("tiny"))
    with torch.no_grad():  # a head whose scores spread with the inputs, as a trained one's do
        for parameter in model.mgf_head.parameters():
            parameter.mul_(4.0)
    checkpoint = save_checkpoint(model, tmp_path / "checkpoint")
    data = tmp_path / "data"
    (data / "mosi").mkdir(parents=True)
    (data / "mosi" / "label.csv").write_text("id,text,label,mode\n" + "".join(
        f"m{i},{'a great film' if i % 2 else 'a dreadful film'} {i},{2.0 if i % 2 else -2.0},{mode}\n"
        for i, mode in enumerate(["train"] * 6 + ["dev"] * 8)))
    write_ravdess(data / "ravdess", actors=range(1, 20, 3))
    shutil.copytree(data / "ravdess", data / "emodb")
    write_faces(data / "faces", people=20)
    monkeypatch.setattr(quantize, "INT8_OPS", {"mgf_head": ("MatMul", "Gemm")})
    options = BuildOptions(checkpoint=str(checkpoint), out=tmp_path / "int8", precision="int8", data_dir=data)

    manifest = build(options, Console(quiet=True))
    assert manifest.int8.guard["mgf_head"].startswith("passed") and manifest.int8.guard["chain"].startswith("passed")
    assert manifest.int8.calibration["sources"] == ["mosi/label.csv", "ravdess", "emodb", "faces"]
    assert manifest.int8.calibration["clips"] > 6 and len(manifest.int8.calibration["sha256"]) == 64
    head = manifest.stages["mgf_head"].artifacts["int8"]
    assert head.quantized_ops == ["MatMul", "Gemm"] and head.file == "mgf_head.int8.onnx"
    assert manifest.stages["text_encoder"].artifacts["int8"].file == "text_encoder.onnx"  # kept in FP32

    real = calibration.record_feeds

    def shrunk(backend, batches):  # ranges 10⁴ times too narrow: the head's activations saturate
        feeds = real(backend, batches)
        return {stage: [{k: v * 1e-4 if v.dtype == np.float32 else v for k, v in f.items()} for f in per]
                for stage, per in feeds.items()}

    monkeypatch.setattr(calibration, "record_feeds", shrunk)
    options.out, options.force = tmp_path / "broken", True
    with pytest.raises(BuildError, match="fail the accuracy guard") as refused:
        build(options, Console(quiet=True))
    assert "mgf_head: accuracy:" in str(refused.value) and not options.out.exists()
    assert not list(tmp_path.glob(".broken.building-*"))
    options.data_dir = None
    with pytest.raises(BuildError, match="--data-dir"):
        build(options, Console(quiet=True))


def test_an_int8_manifest_names_its_calibration_and_what_was_quantised(tiny_engines, tmp_path):
    """The int8 artifacts and their record are sealed like every other field (a hand-made folder here: the
    real build is timed and guarded on real data, see docs/model-card.md)."""
    folder = shutil.copytree(tiny_engines, tmp_path / "engines")
    manifest = json.loads((folder / "manifest.json").read_text())
    engines = EngineFolder.open(folder)
    feeds = stage_feeds(engines, range(4))
    path = quantize_stage(engines.files("fp32")["text_encoder"], folder / "text_encoder.int8.onnx",
                          feeds["text_encoder"], ("MatMul",))
    for stage, record in manifest["stages"].items():
        record["artifacts"]["int8"] = ({**artifact_record(path), "quantized_ops": ["MatMul"]} if stage == "text_encoder"
                                       else {**record["artifacts"]["fp32"], "quantized_ops": []})
    manifest["int8"] = {"calibration": {"clips": 4}, "guard": {"chain": "passed"}}
    write_manifest(folder, manifest)
    opened = EngineFolder.open(folder)
    assert "int8" in opened.kinds() and opened.problems() == []
    report = inspect_folder(opened)["stages"]  # "is my engine really INT8?"
    assert report["text_encoder"]["artifacts"]["int8"]["int8_ops"].get("MatMul", 0) >= 2
    assert report["mgf_head"]["artifacts"]["int8"]["int8_ops"] == {}
    with load_backend("onnxruntime", opened, precision="int8") as backend:
        scores = backend.run(make_inputs(opened.config, 1, 8, 20, 4))["score"]
        assert backend.precision == "int8" and np.isfinite(scores).all()
    manifest["int8"]["calibration"]["clips"] = 5  # edited after the build
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="content_sha256"):
        EngineFolder.open(folder)
