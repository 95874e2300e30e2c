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
    ("[1, 2, 3]", "it holds a list, not an object"), ('{"format": 6}', "it lacks"), ("{nope", "not valid JSON"),
    ('{"format": 2}', "has format 2, this runtime reads 6"),
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


def reseal(folder, change) -> None:
    """Edit the manifest and seal it again, as someone who knows the format would."""
    from cmmsf.runtime.manifest import content_sha256

    def changed(manifest):
        change(manifest)
        manifest["content_sha256"] = content_sha256(manifest)

    edit_manifest(folder, changed)


@pytest.mark.parametrize("change,message", [
    (lambda m: m["profile"].update(batch=[1, 2, 10**30]), "profile.batch"),
    (lambda m: m["profile"]["max_len"].update(text=-5), "profile.max_len.text"),
    (lambda m: m["stages"]["mgf_head"]["profile_shapes"].update(h_text=[[1, 1, 8]]), "profile_shapes"),
    (lambda m: m["stages"]["text_encoder"]["inputs"].reverse(), "does not match the stage contracts: text_encoder"),
    (lambda m: m["stages"]["video_encoder"]["outputs"][0].update(dtype="float16"), "video_encoder's outputs"),
])
def test_a_resealed_manifest_out_of_bounds_or_contract_is_one_line(copied_engines, change, message):
    reseal(copied_engines, change)
    with pytest.raises(ManifestError, match=message) as refused:
        EngineFolder.open(copied_engines)
    assert "\n" not in str(refused.value)


def test_a_huge_integer_in_the_manifest_is_not_a_bug(copied_engines, tmp_path):
    text = (copied_engines / MANIFEST).read_text().replace('"opset": ', '"opset": ' + "9" * 5000 + ", \"x\": ", 1)
    (copied_engines / MANIFEST).write_text(text)
    (tmp_path / "clip.txt").write_text("fine")
    result = runner.invoke(run_app, ["infer", str(tmp_path / "clip.txt"), "--engines", str(copied_engines),
                                     "--out", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 1 and "not valid JSON" in flat(result.output) and "internal error" not in result.output


def test_another_stages_graph_resealed_in_is_refused_before_any_session(copied_engines, tmp_path):
    from cmmsf.inputs.hashing import sha256_file

    swapped = copied_engines / "video_encoder.onnx"
    shutil.copyfile(copied_engines / "interaction.onnx", swapped)
    reseal(copied_engines, lambda m: m["stages"]["video_encoder"]["artifacts"]["fp32"].update(
        sha256=sha256_file(swapped), bytes=swapped.stat().st_size))
    engines = EngineFolder.open(copied_engines)  # the manifest itself is consistent
    with pytest.raises(ManifestError, match="video_encoder fp32: video_encoder.onnx has inputs .*another stage's"):
        engines.files("fp32")
    (tmp_path / "clip.txt").write_text("fine")
    result = runner.invoke(run_app, ["infer", str(tmp_path / "clip.txt"), "--engines", str(copied_engines),
                                     "--backend", "onnxruntime", "--out", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 1 and "another stage's" in flat(result.output) and "Traceback" not in result.output


def test_an_artifact_linked_to_a_file_outside_the_folder_is_refused(copied_engines, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    shutil.copyfile(copied_engines / "mgf_head.onnx", outside)  # the same bytes: the hash alone would pass
    (copied_engines / "mgf_head.onnx").unlink()
    (copied_engines / "mgf_head.onnx").symlink_to(outside)
    problems = EngineFolder.open(copied_engines).problems(["fp32"])
    assert problems == [f"mgf_head fp32: mgf_head.onnx is a link to {outside.resolve()}, outside the folder"]


def test_a_folder_being_built_says_so(tmp_path):
    import os

    staging = tmp_path / f".tiny.building-{os.getpid()}"  # a live pid: this one
    staging.mkdir()
    with pytest.raises(ManifestError, match=f"is being built by pid {os.getpid()}; wait for it"):
        EngineFolder.open(tmp_path / "tiny")
    staging.rename(tmp_path / ".tiny.building-999999999")  # its builder is gone
    with pytest.raises(ManifestError, match="has no manifest.json: build it"):
        EngineFolder.open(tmp_path / "tiny")
