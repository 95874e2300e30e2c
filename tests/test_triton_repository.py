"""`cmmsf-export triton`: every config.pbtxt parses with Triton's own schema, the ensemble wires each
stage input exactly once, and running the ensemble's steps on the repository's own ONNX files gives
the pipeline's scores."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("tritonclient", reason="the schema ships with tritonclient: pip install -e '.[serve]'")

from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

from cmmsf.cli import export_app  # noqa: E402
from cmmsf.contracts import PIPELINE_INPUTS, STAGE_ORDER, STAGES  # noqa: E402
from cmmsf.sample_inputs import make_inputs  # noqa: E402
from cmmsf.export.triton_repository import ENSEMBLE, STAGE_PREFIX, stage_config, to_pbtxt  # noqa: E402
from cmmsf.runtime.engine_folder import EngineFolder  # noqa: E402
from cmmsf.runtime.pipeline import Pipeline  # noqa: E402
from cmmsf.runtime.settings import RunSettings  # noqa: E402


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def repository(tiny_engines, tmp_path_factory):
    out = tmp_path_factory.mktemp("triton") / "model_repository"
    result = CliRunner().invoke(export_app, ["triton", "--engines", str(tiny_engines), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_every_config_parses_and_matches_the_contracts(repository, tiny_engines):
    folder = EngineFolder.open(tiny_engines)
    config = folder.config
    models = {p.parent.name: parse(p) for p in repository.glob("*/config.pbtxt")}
    assert set(models) == {ENSEMBLE, *(STAGE_PREFIX + s for s in STAGE_ORDER)}
    for stage in STAGE_ORDER:
        model = models[STAGE_PREFIX + stage]
        assert model.platform == "onnxruntime_onnx" and model.max_batch_size == folder.profile.batch[2]
        assert model.dynamic_batching.max_queue_delay_microseconds == 2000
        assert [i.name for i in model.input] == STAGES[stage].input_names
        assert [o.name for o in model.output] == STAGES[stage].output_names
        onnx = repository / model.name / "1" / "model.onnx"  # the FP16 graph, byte for byte
        assert hashlib.sha256(onnx.read_bytes()).hexdigest() == folder.record(stage, "fp16").sha256
    dims = {t.name: (t.data_type, list(t.dims), t.HasField("reshape"))
            for m in models.values() for t in [*m.input, *m.output]}
    fp32, boolean, int32 = (model_config_pb2.DataType.Value(n) for n in ("TYPE_FP32", "TYPE_BOOL", "TYPE_INT32"))
    assert dims["input_ids"] == (int32, [-1], False) and dims["text_mask"] == (boolean, [-1], False)
    assert dims["audio"] == (fp32, [-1, config.audio.feature_dim], False)
    assert dims["video"] == (fp32, [-1, 3, config.video.image_size, config.video.image_size], False)
    assert dims["u_text"] == (fp32, [-1, config.d_model], False)
    assert dims["score"] == (fp32, [1], True) and list(models[ENSEMBLE].output[0].reshape.shape) == []
    assert dims["logits"] == (fp32, [config.num_classes], False) and dims["gates"] == (fp32, [3], False)
    assert (repository / ENSEMBLE / "1").is_dir() and "tritonserver --model-repository" in (
        repository / "README.md").read_text()


def test_the_ensemble_wires_every_stage_input_exactly_once(repository):
    ensemble = parse(repository / ENSEMBLE / "config.pbtxt")
    assert ensemble.platform == "ensemble"
    available = {t.name for t in ensemble.input}
    assert available == {t.name for t in PIPELINE_INPUTS}
    consumed: set[str] = set()
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == [STAGE_PREFIX + s for s in STAGE_ORDER]
    for step, stage in zip(steps, STAGE_ORDER):
        keys = list(step.input_map.keys())
        assert sorted(keys) == sorted(STAGES[stage].input_names)  # each stage input mapped, once
        assert set(step.input_map.values()) <= available, f"{stage} reads a tensor nobody produced yet"
        consumed |= set(step.input_map.values())
        produced = set(step.output_map.values())
        assert not produced & available, f"{stage} produces a tensor twice"
        available |= produced
    assert {t.name for t in ensemble.input} <= consumed  # no client input goes unused
    assert {t.name for t in ensemble.output} <= available


def test_running_the_ensemble_steps_gives_the_pipeline_scores(repository, tiny_engines):
    import onnxruntime as ort

    config = EngineFolder.open(tiny_engines).config
    batch = make_inputs(config, batch=2, text_len=7, audio_len=15, video_len=5, seed=4)
    tensors = dict(batch)
    for step in parse(repository / ENSEMBLE / "config.pbtxt").ensemble_scheduling.step:
        session = ort.InferenceSession(str(repository / step.model_name / "1" / "model.onnx"),
                                       providers=["CPUExecutionProvider"])
        outputs = session.run(list(step.output_map.keys()),
                              {key: tensors[value] for key, value in step.input_map.items()})
        tensors.update({step.output_map[name]: value for name, value in zip(step.output_map.keys(), outputs)})
    pipeline = Pipeline.load(RunSettings(engines=tiny_engines, backend="onnxruntime", precision="fp16"))
    np.testing.assert_allclose(tensors["score"], pipeline.run_batch(batch).outputs["score"], atol=1e-5)
    pipeline.close()


def test_plans_for_several_gpus_get_cc_model_filenames(tiny_engines):
    config = EngineFolder.open(tiny_engines).config
    message = stage_config("mgf_head", config, 8, 500, {"8.7": "model.sm87.plan", "9.0": "model.sm90.plan"})
    model = text_format.Parse(to_pbtxt(message), model_config_pb2.ModelConfig())
    assert model.platform == "tensorrt_plan" and model.default_model_filename == "model.sm87.plan"
    assert dict(model.cc_model_filenames) == {"8.7": "model.sm87.plan", "9.0": "model.sm90.plan"}


def test_refusals_are_one_line(repository, tiny_engines, tmp_path):
    runner = CliRunner()
    again = runner.invoke(export_app, ["triton", "--engines", str(tiny_engines), "--out", str(repository)])
    assert again.exit_code == 1 and "exists; pass --force" in again.output
    plans = runner.invoke(export_app, ["triton", "--engines", str(tiny_engines), "--out", str(tmp_path / "r"),
                                       "--format", "plan"])
    assert plans.exit_code == 1 and "has no TensorRT plans" in plans.output and not (tmp_path / "r").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".r.")]  # no half-written staging folder
    forced = runner.invoke(export_app, ["triton", "--engines", str(tiny_engines), "--out", str(repository),
                                        "--precision", "fp32", "--force"])
    assert forced.exit_code == 0, forced.output
    manifest = json.loads((tiny_engines / "manifest.json").read_text())
    onnx = repository / (STAGE_PREFIX + "text_encoder") / "1" / "model.onnx"
    fp32 = manifest["stages"]["text_encoder"]["artifacts"]["fp32"]
    assert hashlib.sha256(onnx.read_bytes()).hexdigest() == fp32["sha256"]
