"""OpenVINO as a backend: one module (runtime/backends/openvino.py), the same sealed ONNX graphs, parity
like the others, and the precision and device that ran reported. Skipped where OpenVINO is absent."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("openvino")

from cmmsf.cli import export_app, run_app  # noqa: E402
from cmmsf.runtime.backends import BackendUnavailableError, load_backend, registry  # noqa: E402
from cmmsf.runtime.engine_folder import EngineFolder  # noqa: E402
from cmmsf.runtime.locations import CACHE_ENV  # noqa: E402
from cmmsf.sample_inputs import make_inputs  # noqa: E402

from .media import write_wav  # noqa: E402


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _bf16_here() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_openvino_matches_onnx_runtime_and_says_what_it_computed_in(tiny_engines, cache):
    assert "openvino" in registry()
    engines = EngineFolder.open(tiny_engines)
    before = sorted(p.name for p in tiny_engines.iterdir())
    inputs = make_inputs(engines.config, 2, 9, 17, 5, seed=3)
    with load_backend("onnxruntime", engines) as reference:
        expected = reference.run(inputs)
    with load_backend("openvino", engines, precision="fp32") as backend:
        got = backend.run(inputs)
        assert backend.label == "openvino fp32" and "on CPU, computing in fp32" in backend.provider
    for name in ("score", "logits", "gates"):
        np.testing.assert_allclose(got[name], expected[name], atol=1e-4, rtol=1e-4)
    assert sorted(p.name for p in tiny_engines.iterdir()) == before  # nothing written into the sealed folder
    assert any((cache / "openvino").iterdir())  # its compiled-model cache lives in the user cache
    if _bf16_here():
        with load_backend("openvino", engines, precision="bf16") as backend:
            assert "computing in bf16" in backend.provider
            assert np.max(np.abs(backend.run(inputs)["score"] - expected["score"])) < 0.1


def test_a_precision_or_device_a_backend_cannot_take_is_one_line(tiny_engines):
    engines = EngineFolder.open(tiny_engines)
    with pytest.raises(BackendUnavailableError, match="it runs fp32, fp16 or int8, not bf16"):
        load_backend("onnxruntime", engines, precision="bf16")
    with pytest.raises(BackendUnavailableError, match="it runs on cpu, gpu or npu, not cuda"):
        load_backend("openvino", engines, device="cuda")
    with pytest.raises(BackendUnavailableError, match="OpenVINO sees no NPU"):
        load_backend("openvino", engines, device="npu")


def test_infer_and_check_run_openvino(tiny_engines, tmp_path, cache):
    write_wav(tmp_path / "a.wav")
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(run_app, ["infer", str(tmp_path / "a.wav"), "--engines", str(tiny_engines),
                                          "--backend", "openvino", "--out", str(out), "--asr", "off"])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["backend"] == "openvino" and record["provider"].startswith("OpenVINO")
    copied = shutil.copytree(tiny_engines, tmp_path / "engines")  # check rewrites the folder's parity report
    checked = CliRunner().invoke(export_app, ["check", str(copied)], terminal_width=200)
    said = " ".join(checked.output.split())
    assert checked.exit_code == 0, checked.output
    assert "fp32 on openvino on OpenVINO" in said and "fp16 on openvino" in said


def test_the_face_detector_runs_where_the_stages_run(tiny_engines):
    """`--backend openvino`: YuNet compiled by OpenVINO finds the same face as on ONNX Runtime."""
    import numpy as np

    from cmmsf.inputs.face_detector import YuNet
    from cmmsf.runtime.pipeline import Pipeline
    from cmmsf.runtime.settings import RunSettings

    from .media import draw_face

    frame = np.full((240, 320, 3), 120, np.uint8)
    frame[60:180, 100:220] = draw_face(120, 0.0)
    pipeline = Pipeline.load(RunSettings(engines=tiny_engines, backend="openvino"))
    reference = YuNet(Pipeline.load(RunSettings(engines=tiny_engines, backend="onnxruntime")).backend
                      .graph_runner(pipeline.engines.detector_file))
    [ours], [theirs] = pipeline.preprocessor.detector.faces(frame), reference.faces(frame)
    np.testing.assert_allclose(ours.box, theirs.box, atol=1.0)  # OpenVINO may compute in bf16 here
    assert abs(ours.score - theirs.score) < 0.05
