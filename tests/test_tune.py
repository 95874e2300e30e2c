"""`cmmsf-export tune` and the tuned `auto`: winners per stage measured here, reduced precision only behind
the accuracy guard, and a winner this machine cannot run replaced with the reason said."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from rich.console import Console

from cmmsf.runtime.backends import load_backend
from cmmsf.runtime.backends.base import Backend
from cmmsf.runtime.engine_folder import EngineFolder
from cmmsf.runtime.pipeline import Pipeline
from cmmsf.runtime.settings import RunSettings
from cmmsf.runtime.tuning import TUNING, StagewiseBackend, read_tuning

from .media import write_wav
from .test_sources import write_faces, write_ravdess


@pytest.fixture
def engines(tiny_engines, tmp_path, monkeypatch):
    """A copy of the tiny build: tuning writes tuning.json beside its manifest."""
    monkeypatch.setenv("CMMSF_CACHE_DIR", str(tmp_path / "cache"))
    return shutil.copytree(tiny_engines, tmp_path / "engines")


class Miscalibrated(Backend):
    """A backend whose scores are pushed off by a constant: what a broken calibration does."""

    name, precision, provider = "miscalibrated", "int8", "test"

    def __init__(self, inner: Backend, shift: float):
        self.inner, self.shift = inner, shift

    def run_stage(self, stage, feeds):
        out = self.inner.run_stage(stage, feeds)
        if stage == "mgf_head":
            out = {**out, "score": out["score"] + self.shift}
        return out


def test_tune_without_guard_data_keeps_fp32_compute_and_auto_runs_the_winners(engines, tmp_path):
    from cmmsf.export.tune import TuneOptions, tune

    tuning = tune(TuneOptions(folder=engines, runs=3, rounds=1), Console(quiet=True))
    assert read_tuning(engines)[0] == tuning
    assert all(t[0].precision == "fp32" for t in tuning.stages.values())
    assert tuning.guard["onnxruntime fp16"] == "no dev data to guard reduced precision (--data-dir)"
    assert tuning.guard["onnxruntime fp32"] == "passed"
    write_wav(tmp_path / "a.wav")
    tuned = Pipeline.load(RunSettings(engines=engines))
    plain = Pipeline.load(RunSettings(engines=engines, backend="onnxruntime"))
    try:
        assert isinstance(tuned.backend, StagewiseBackend) and "tuned per stage" in tuned.note
        record, reference = tuned.predict([tmp_path / "a.wav"])[0], plain.predict([tmp_path / "a.wav"])[0]
    finally:
        tuned.close()
        plain.close()
    assert set(record["stage_backends"]) == {"text_encoder", "audio_encoder", "video_encoder", "interaction",
                                             "mgf_head"}
    assert record["score"] == pytest.approx(reference["score"], abs=1e-4)


def test_auto_replaces_a_winner_this_machine_cannot_run_and_says_why(engines):
    (engines / TUNING).write_text(json.dumps({
        "machine": "elsewhere", "created": "2026-12-06T00:00:00+00:00", "guard": {},
        "stages": {stage: [{"backend": "tensorrt", "precision": "fp16", "p50_ms": 0.1},
                           {"backend": "onnxruntime", "precision": "fp32", "p50_ms": 1.0}]
                   for stage in ("text_encoder", "audio_encoder", "video_encoder", "interaction", "mgf_head")}}))
    with load_backend("auto", EngineFolder.open(engines)) as backend:
        assert set(backend.stage_labels().values()) == {"onnxruntime fp32"}
        assert "text_encoder: tensorrt fp16 cannot run here (TensorRT is not installed" in backend.note
    (engines / TUNING).write_text("{not json")
    with load_backend("auto", EngineFolder.open(engines)) as backend:  # a broken file is ignored, not fatal
        assert backend.name == "onnxruntime"


def test_the_accuracy_guard_refuses_a_miscalibrated_candidate(engines, tmp_path):
    from cmmsf.export.tune import AccuracyGuard

    data = tmp_path / "data"
    (data / "mosi").mkdir(parents=True)
    (data / "mosi" / "label.csv").write_text("id,text,label,mode\n" + "".join(
        f"m{i},{'a great film' if i % 2 else 'a dreadful film'},{2.0 if i % 2 else -2.0},dev\n" for i in range(8)))
    write_ravdess(data / "ravdess", actors=range(17, 19))
    write_faces(data / "faces", people=10)
    guard = AccuracyGuard(EngineFolder.open(engines), data, Console(quiet=True))
    try:
        with load_backend("onnxruntime", EngineFolder.open(engines)) as same:
            assert guard.verdict(same).startswith("passed: 0/")  # what moved is said: nothing
            assert guard.verdict(Miscalibrated(same, 0.0)).startswith("passed: 0/")
            refused = guard.verdict(Miscalibrated(same, 2.5))
    finally:
        guard.close()
    assert refused.startswith("accuracy:"), refused
    assert np.isfinite(guard.scores).all() and guard.n > 10


def test_verdicts_recorded_with_the_checkpoint_stand_in_for_dev_data_on_the_same_weights(tmp_path, monkeypatch):
    from rich.console import Console

    from cmmsf.config import preset
    from cmmsf.export.tune import RECORDED, TuneOptions, record_verdicts, tune

    from .conftest import build_engines

    monkeypatch.setenv("CMMSF_CACHE_DIR", str(tmp_path / "cache"))
    folder = build_engines(tmp_path, preset("tiny"), {"text": 16, "audio": 40, "video": 12})
    kept = record_verdicts(EngineFolder.open(folder), {"onnxruntime fp16": "passed: 0/1489 flips",
                                                       "onnxruntime fp32": "passed"})
    assert kept.resolve() == (tmp_path / "ck" / RECORDED).resolve() and "fp32" not in kept.read_text()
    tuning = tune(TuneOptions(folder=folder, runs=3, rounds=1), Console(quiet=True))
    assert tuning.guard["onnxruntime fp16"].startswith("passed: 0/1489 flips (recorded with the checkpoint")
    recorded = json.loads(kept.read_text())
    kept.write_text(json.dumps({**recorded, "model_sha256": "0" * 64}))  # other weights: not this model's verdict
    tuning = tune(TuneOptions(folder=folder, runs=3, rounds=1), Console(quiet=True))
    assert tuning.guard["onnxruntime fp16"] == "no dev data to guard reduced precision (--data-dir)"


def test_record_needs_the_data_it_records():
    from typer.testing import CliRunner

    from cmmsf.cli import export_app

    result = CliRunner().invoke(export_app, ["tune", ".", "--record"])
    assert result.exit_code == 2 and "--data-dir" in result.output


def test_the_tuned_auto_loads_each_backend_for_its_own_stages_only(engines):
    from cmmsf.contracts import STAGE_ORDER
    from cmmsf.sample_inputs import make_inputs

    (engines / TUNING).write_text(json.dumps({
        "machine": "here", "created": "2026-12-07T00:00:00+00:00", "guard": {},
        "stages": {stage: [{"backend": "onnxruntime", "precision": "fp16" if stage == "mgf_head" else "fp32",
                            "p50_ms": 1.0}] for stage in STAGE_ORDER}}))
    folder = EngineFolder.open(engines)
    with load_backend("auto", folder) as backend, load_backend("onnxruntime", folder) as plain:
        head, rest = backend.stage_backends["mgf_head"], backend.stage_backends["text_encoder"]
        assert set(head.sessions) == {"mgf_head"} and set(rest.sessions) == set(STAGE_ORDER) - {"mgf_head"}
        inputs = make_inputs(folder.config, 1, 8, 20, 4, seed=3)
        assert backend.run(inputs)["score"] == pytest.approx(plain.run(inputs)["score"], abs=2e-2)
        times = backend.operator_times(inputs, runs=2)  # each stage profiled on the backend that runs it
    assert set(times) == set(STAGE_ORDER) and all(times[stage] for stage in STAGE_ORDER)
    assert "Gemm" in times["mgf_head"] or "MatMul" in times["mgf_head"]
