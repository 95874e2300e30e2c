"""The engine folder: one reader of manifest.json, sealed content, paths relative to the folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cmmsf.cli import export_app, run_app
from cmmsf.export.build import BuildError, BuildOptions, build, check
from cmmsf.export.profiles import ShapeProfile
from cmmsf.runtime.engine_folder import EngineFolder, ManifestError
from cmmsf.runtime.manifest import MANIFEST
from cmmsf.runtime.pipeline import Pipeline
from cmmsf.runtime.settings import RunSettings

from .media import write_video

runner = CliRunner()


def flat(output: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(output.split())


@pytest.fixture
def copied_engines(tiny_engines, tmp_path):
    """The tiny engines copied elsewhere, without the checkpoint folder they were built from."""
    copy = tmp_path / "deployed" / "tiny"
    shutil.copytree(tiny_engines, copy)
    return copy


def edit_manifest(folder, change) -> None:
    path = folder / MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_checkpoint_is_recorded_relative_to_the_folder(tiny_engines, tiny_checkpoint):
    engines = EngineFolder.open(tiny_engines)
    assert not engines.checkpoint_ref.startswith("/")
    assert engines.checkpoint_dir().resolve() == tiny_checkpoint.resolve()
    assert engines.checkpoint_problem() is None


def test_a_copied_folder_runs_infer_bench_and_eval_without_its_checkpoint(copied_engines, tmp_path):
    engines = EngineFolder.open(copied_engines)
    assert engines.checkpoint_dir() is None and "is not here" in engines.checkpoint_problem()
    write_video(tmp_path / "clip.mp4", seconds=1.0)
    (tmp_path / "clip.txt").write_text("what a lovely day")
    out = tmp_path / "r.jsonl"
    result = runner.invoke(run_app, ["infer", str(tmp_path / "clip.mp4"), "--engines", str(copied_engines),
                                     "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert -3 <= json.loads(out.read_text())["score"] <= 3

    bench_json = tmp_path / "bench.json"
    result = runner.invoke(run_app, ["bench", "--engines", str(copied_engines), "--runs", "3", "--warmup", "0",
                                     "--batch", "1", "--json", str(bench_json)])
    assert result.exit_code == 0, result.output
    results = json.loads(bench_json.read_text())["results"]
    assert results["onnxruntime fp32"]["1"]["end_to_end_ms"]["p50"] > 0
    assert "needs the checkpoint" in results["torch fp32"]["error"]  # keyed as a torch row that ran would be

    data = tmp_path / "labels.csv"
    data.write_text("id,text,label,mode\na,good movie,1.5,test\nb,bad movie,-2,test\n")
    result = runner.invoke(run_app, ["eval", str(data), "--engines", str(copied_engines), "--backend", "onnxruntime",
                                     "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 2
    assert "no comparison with PyTorch" in flat(result.output)


def test_each_artifact_kind_is_hashed_once_per_folder(tiny_engines, monkeypatch):
    import cmmsf.runtime.engine_folder as module

    calls = []
    real = module.sha256_file
    monkeypatch.setattr(module, "sha256_file", lambda path: calls.append(path) or real(path))
    engines = EngineFolder.open(tiny_engines)
    for _ in range(3):
        engines.files("fp32")
    assert len(calls) == 5  # the five fp32 graphs, once
    engines.files("fp16")
    assert len(calls) == 10


@pytest.mark.parametrize("change,message", [
    (lambda m: m["model"]["config"].update(trained_modalities=["text", "audio", "video", "text"]),
     "was edited after the build"),
    (lambda m: m["profile"]["max_len"].update(text=4096), "was edited after the build"),
    (lambda m: m.pop("stages"), "lacks stages"),
    (lambda m: m["tensorrt"].update(status="maybe"), r"tensorrt\.status 'maybe' is not one of 'built' or 'skipped'"),
    (lambda m: m["stages"]["mgf_head"]["artifacts"]["fp32"].update(file="../x.onnx"), "not a file inside the folder"),
    (lambda m: m.update(tuned=True), r"unknown manifest\.json keys: \['tuned'\]"),
])
def test_an_edited_manifest_is_refused_by_every_reader(copied_engines, change, message):
    edit_manifest(copied_engines, change)
    with pytest.raises(ManifestError, match=message):
        EngineFolder.open(copied_engines)
    with pytest.raises(BuildError, match=message):
        check(copied_engines, Console(quiet=True))


@pytest.mark.parametrize("content,message", [
    ("[1, 2, 3]", "it holds a list, not an object"), ('{"format": 5}', "it lacks"), ("{nope", "not valid JSON"),
    ('{"format": 2}', "has format 2, this runtime reads 5"),
])
def test_a_malformed_manifest_is_one_clear_line(copied_engines, tmp_path, content, message):
    (copied_engines / MANIFEST).write_text(content)
    (tmp_path / "clip.txt").write_text("fine")
    result = runner.invoke(run_app, ["infer", str(tmp_path / "clip.txt"), "--engines", str(copied_engines),
                                     "--out", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert message in flat(result.output)
    result = runner.invoke(export_app, ["check", str(copied_engines)])
    assert result.exit_code == 1 and message in flat(result.output)


def test_check_needs_the_checkpoint_and_says_so(copied_engines):
    with pytest.raises(BuildError, match="is not here or has changed"):
        check(copied_engines, Console(quiet=True))


def test_parity_covers_absent_modalities(tiny_engines):
    report = json.loads((tiny_engines / "parity_report.json").read_text())
    cases = {e["case"] for e in report["errors"]}
    assert {"text_only", "mixed_absent", "min", "max", "real"} <= cases
    assert report["passed"] and set(report["providers"]) == {"fp32", "fp16"}


def test_eval_on_a_feature_vector_checkpoint_gives_metrics(tmp_path):
    """A checkpoint trained on an MMSA pickle (COVAREP/FACET vectors) is evaluated by its engines."""
    from cmmsf.train.trainer import TrainOptions, fit

    from .test_train import features_config, write_mmsa_pickle

    data = write_mmsa_pickle(tmp_path / "mosi.pkl")
    fit(features_config(), data, tmp_path / "run", TrainOptions(epochs=1, batch_size=4))
    out = tmp_path / "engines"
    build(BuildOptions(checkpoint=str(tmp_path / "run" / "checkpoint"), out=out,
                       profile=ShapeProfile((1, 2, 4), {"text": 16, "audio": 40, "video": 30})), Console(quiet=True))
    result = runner.invoke(run_app, ["eval", str(data), "--engines", str(out), "--precision", "fp16",
                                     "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n"] == 5 and np.isfinite(metrics["mae"]) and metrics["precision"] == "fp16"
    assert metrics["acc2_decisions_differing_from_torch"] == 0 and metrics["max_abs_score_difference"] < 1e-2


def test_fp16_eval_reports_the_fp16_graphs_and_differing_decisions(tiny_engines, tmp_path):
    data = tmp_path / "labels.csv"
    data.write_text("id,text,label,mode\n" + "".join(f"r{i},{w} movie {i},{(-1) ** i * 1.5},test\n"
                                                      for i, w in enumerate(["good", "bad", "dull", "fine"] * 3)))
    out = tmp_path / "m.json"
    result = runner.invoke(run_app, ["eval", str(data), "--engines", str(tiny_engines), "--precision", "fp16",
                                     "--json", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["precision"] == "fp16" and metrics["n"] == 12
    assert "acc2_decisions_differing_from_torch" in metrics and 0 < metrics["max_abs_score_difference"] < 1e-2
    assert "onnxruntime fp16" in result.output
    fp32 = Pipeline.load(RunSettings(engines=tiny_engines, backend="onnxruntime", precision="fp32"))
    fp16 = Pipeline.load(RunSettings(engines=tiny_engines, backend="onnxruntime", precision="fp16"))
    assert fp16.backend.precision == "fp16" and fp32.backend.precision == "fp32"


def test_an_unknown_precision_or_backend_is_one_clear_line(tiny_engines, tmp_path):
    for option, value in (("--precision", "fp8"), ("--backend", "cuda")):
        result = runner.invoke(run_app, ["eval", str(tmp_path / "x.csv"), "--engines", str(tiny_engines), option, value])
        assert result.exit_code == 2 and "Traceback" not in result.output and value in result.output
