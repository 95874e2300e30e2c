"""Datasets and training: MMSA pickles, clip folders, transcript CSVs, determinism, resume, eval CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmmsf.cli import train_app
from cmmsf.model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from cmmsf.config import preset
from cmmsf.data.datasets import load_dataset, load_mmsa_pickle, load_transcript_csv
from cmmsf.data.examples import Labelled
from cmmsf.inputs.errors import DataError
from cmmsf.evaluation.metrics import valence_metrics
from cmmsf.data.sources import balance_weights
from cmmsf.train.trainer import (
    TrainOptions,
    drop_modalities,
    evaluate,
    fit,
    grouped_names,
    load_splits,
    predict,
    readout_weights,
)

from .media import write_video, write_wav

runner = CliRunner()
MOSI_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "mosi" / "label.csv"
QUICK = TrainOptions(epochs=2, batch_size=4, patience=5)


def features_config():
    config = preset("tiny")
    config.audio.frontend, config.audio.feature_dim = "features", 5
    config.video.frontend, config.video.feature_dim = "features", 20
    return config


def write_mmsa_pickle(path: Path, sizes=None) -> Path:
    """The schema of MMSA's unaligned MOSI pickles, with random features and labels."""
    rng = np.random.default_rng(0)
    data = {}
    for split, n in (sizes or {"train": 12, "valid": 6, "test": 6}).items():
        text_bert = np.zeros((n, 3, 10), dtype=np.float32)
        lengths = rng.integers(3, 11, size=n)
        for i, length in enumerate(lengths):
            text_bert[i, 0, :length] = [101, *rng.integers(2000, 9000, size=length - 2), 102]
            text_bert[i, 1, :length] = 1
        labels = rng.uniform(-3, 3, size=(n, 1)).astype(np.float32)
        labels[0] = 7.0  # an out-of-range label the loader must skip
        data[split] = {
            "id": [f"{split}_{i}" for i in range(n)], "raw_text": ["x"] * n, "text_bert": text_bert,
            "audio": rng.standard_normal((n, 20, 5)).astype(np.float32),
            "vision": rng.standard_normal((n, 15, 20)).astype(np.float32),
            "audio_lengths": rng.integers(1, 21, size=n).tolist(),
            "vision_lengths": rng.integers(1, 16, size=n).tolist(),
            "regression_labels": labels,
        }
    path.write_bytes(pickle.dumps(data))
    return path


def test_mmsa_pickle_trains_end_to_end(tmp_path):
    data = write_mmsa_pickle(tmp_path / "mosi.pkl")
    items, skipped = load_mmsa_pickle(data, "train", features_config())
    assert len(items) == 11 and skipped.count == 1 and "train_0" in skipped.reasons[0]
    assert items[0].inputs.arrays["audio"].shape[1] == 5
    fit(features_config(), data, tmp_path / "run", QUICK)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["seeds"][0]["test"]["n"] == 5 and np.isfinite(metrics["seeds"][0]["test"]["mae"])
    model = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert model.config.audio.frontend == "features"
    test_items, _ = load_mmsa_pickle(data, "test", model.config)
    assert evaluate(model, test_items) == metrics["seeds"][0]["test"]  # the saved checkpoint is the one measured


def test_mmsa_features_are_cleaned_the_way_mmsa_cleans_them(tmp_path):
    """COVAREP's -inf becomes 0 (not -3.4e38); aligned pickles without lengths drop their zero padding."""
    data = pickle.loads(write_mmsa_pickle(tmp_path / "a.pkl").read_bytes())
    part = data["train"]
    part["audio"][1, 2, 0] = -np.inf
    part["audio"][1, 3, 1] = np.nan
    del part["audio_lengths"], part["vision_lengths"]
    part["vision"][1, :4] = 0.0  # aligned data: padding before the words ...
    part["vision"][1, 12:] = 0.0  # ... and after them
    (tmp_path / "a.pkl").write_bytes(pickle.dumps(data))
    items, _ = load_mmsa_pickle(tmp_path / "a.pkl", "train", features_config())
    row = next(it for it in items if it.inputs.id == "train_1").inputs.arrays
    assert np.isfinite(row["audio"]).all() and row["audio"][2, 0] == 0.0 and row["audio"][3, 1] == 0.0
    assert len(row["audio"]) == 20 and len(row["video"]) == 8  # rows 4..11 of vision are real
    np.testing.assert_array_equal(row["video"], part["vision"][1, 4:12])


def test_mmsa_loader_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"train": Path("/etc/passwd")}))
    with pytest.raises(DataError, match="only arrays are allowed"):
        load_mmsa_pickle(path, "train", features_config())
    result = runner.invoke(train_app, ["eval", "--data", str(path), "--checkpoint", "default"])
    assert result.exit_code == 1 and "Traceback" not in result.output and "refused" in result.output


def test_clip_folder_trains_end_to_end_with_bad_clips_skipped(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    rows = []
    for i in range(6):
        write_video(folder / f"v{i}.mp4", seconds=1.0, tone_hz=300 + 100 * i)
        (folder / f"v{i}.txt").write_text("good" if i % 2 else "bad")
        rows.append((f"v{i}", 1.5 if i % 2 else -1.5, "train" if i < 4 else "dev"))
    write_wav(folder / "w0.wav")
    rows.append(("w0", 0.5, "test"))
    (folder / "broken.mp4").write_bytes(b"garbage")
    rows.append(("broken", 1.0, "train"))
    with open(folder / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("id", "label", "mode"), *rows])
    train, skipped = load_dataset(folder, "train", preset("tiny"))
    assert len(train) == 4 and skipped.count == 1 and "broken" in skipped.reasons[0]
    fit(preset("tiny"), folder, tmp_path / "run", QUICK)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["seeds"][0]["test"]["n"] == 1


def test_transcript_csv_skips_bad_rows_with_reasons(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,text,label,mode\na,great,2.0,train\nb,,1.0,train\nc,meh,9,train\nd,bad,x,train\ne,ok,0,dev\n")
    items, skipped = load_transcript_csv(path, "train", preset("tiny"))
    assert [it.inputs.id for it in items] == ["a"] and skipped.count == 3
    assert any("empty text" in r for r in skipped.reasons) and any("'9'" in r for r in skipped.reasons)
    assert items[0].inputs.arrays["audio"] is None


def test_training_is_deterministic_and_resumable(tmp_path):
    path = tmp_path / "t.csv"
    lines = ["id,text,label,mode"] + [f"r{i},{'good fun' if i % 2 else 'dull mess'} {i},{(-1) ** i * 1.5},"
                                      f"{'train' if i < 12 else 'dev'}" for i in range(16)]
    path.write_text("\n".join(lines) + "\n")
    one = TrainOptions(epochs=1, batch_size=4)
    fit(preset("tiny"), path, tmp_path / "a", one)
    fit(preset("tiny"), path, tmp_path / "b", one)
    a, b = (load_checkpoint(tmp_path / x / "checkpoint").state_dict() for x in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    fit(preset("tiny"), path, tmp_path / "a", TrainOptions(epochs=2, batch_size=4))  # resumes after epoch 1
    log = (tmp_path / "a" / "train.log").read_text()
    assert "resuming after epoch 1" in log and "epoch   2" in log and log.count("epoch   1 ") == 1


def test_fit_from_init_trains_the_init_model_and_a_mismatched_resume_is_one_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,text,label,mode\n" + "".join(
        f"r{i},{'nice' if i % 2 else 'awful'} film {i},{(-1) ** (i + 1) * 2.0},{['train', 'dev'][i % 2]}\n"
        for i in range(8)))
    small = dataclasses.replace(preset("tiny"), d_model=24)
    fit(small, path, tmp_path / "first", TrainOptions(epochs=1, batch_size=4))
    init = str(tmp_path / "first" / "checkpoint")
    base = ["fit", "--data", str(path), "--epochs", "1", "--batch-size", "4", "--init", init]
    result = runner.invoke(train_app, [*base, "--out", str(tmp_path / "second")])
    assert result.exit_code == 0, result.output  # no --preset: the model --init's weights belong to
    assert load_checkpoint(tmp_path / "second" / "checkpoint").config.d_model == 24
    result = runner.invoke(train_app, [*base, "--preset", "tiny", "--epochs", "2", "--out", str(tmp_path / "second")])
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    assert "holds the training state of another model" in result.output


def test_modality_dropout_keeps_one_modality_per_row():
    rng = np.random.default_rng(0)
    batch = {f"{m}_mask": np.ones((200, 3), dtype=bool) for m in ("text", "audio", "video")}
    drop_modalities(batch, 0.9, rng)
    present = np.stack([batch[f"{m}_mask"].any(1) for m in ("text", "audio", "video")], 1)
    assert present.any(1).all() and (~present).any()


@pytest.mark.skipif(not (DEFAULT_CHECKPOINT / "model.safetensors").is_file() or not MOSI_CSV.is_file(),
                    reason="needs the shipped default checkpoint and ../shared/data/mosi/label.csv")
def test_default_checkpoint_eval_on_real_mosi(tmp_path):
    out = tmp_path / "out.json"
    result = runner.invoke(train_app, ["eval", "--data", str(MOSI_CSV), "--checkpoint", "default", "--split", "dev",
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output  # the MOSI gate (MAE <= 0.80, Corr >= 0.75) holds on dev too
    (row,) = json.loads(out.read_text())  # transcripts bring text only: one row
    assert (row["source"], row["modalities"]) == ("mosi", "text") and row["gate"] and row["failures"] == []
    assert {"mae", "corr", "acc7", "acc5", "acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "n"} <= set(row)
    assert row["n"] == 229 and row["corr"] > 0.75 and row["mae"] < 0.8


def test_fit_cli_reports_mean_and_std_over_seeds(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,text,label,mode\n" + "".join(
        f"r{i},{'nice' if i % 2 else 'awful'} film {i},{(-1) ** (i + 1) * 2.0},{['train', 'dev', 'test'][i % 3]}\n"
        for i in range(18)))
    result = runner.invoke(train_app, ["fit", "--data", str(path), "--preset", "tiny", "--epochs", "1",
                                       "--batch-size", "4", "--seeds", "2", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [s["seed"] for s in summary["seeds"]] == [0, 1]
    maes = [s["test"]["mae"] for s in summary["seeds"]]
    assert maes[0] != maes[1]  # two seeds really are two different runs
    assert summary["summary"]["test"]["mae"]["mean"] == pytest.approx(np.mean(maes))
    assert summary["summary"]["test"]["mae"]["std"] == pytest.approx(np.std(maes))
    assert f"{np.mean(maes):.3f} ± {np.std(maes):.3f}" in result.output
    assert (tmp_path / "run" / "seed_1" / "checkpoint" / "model.safetensors").is_file()


def test_untrained_modality_encoders_keep_their_batchnorm_statistics(tmp_path):
    """Text-only training must not teach the video ResNet the statistics of masked zero frames."""
    path = tmp_path / "t.csv"
    path.write_text("id,text,label,mode\n" + "".join(
        f"r{i},word {i},{(-1) ** i},{'train' if i < 8 else 'dev'}\n" for i in range(10)))
    config = preset("tiny")
    config.trained_modalities = ["text"]
    fit(config, path, tmp_path / "run", TrainOptions(epochs=1, batch_size=4))
    state = load_checkpoint(tmp_path / "run" / "checkpoint").state_dict()
    stats = [k for k in state if k.startswith("video_encoder.") and k.endswith("running_var")]
    assert stats and all(torch.equal(state[k], torch.ones_like(state[k])) for k in stats)


def test_readout_weights_put_the_weighted_mean_on_the_threshold_when_classes_weigh_alike():
    """Balanced weights give 2 negatives the mass of 4 neutrals; under weighted MSE such an input would
    fit -1.0 and read as negative. After readout_weights its fit lands on -0.5, the label7 boundary."""
    labels = [-2.0] * 2 + [0.0] * 4 + [2.0] * 8
    items = [Labelled(None, y, "faces", w) for y, w in zip(labels, balance_weights(labels, cap=6.0))]
    items.append(Labelled(None, -2.0, "mosi", 1.0))
    adjusted = readout_weights(items, 0.5)

    def fit(group: list[Labelled]) -> float:
        return sum(it.weight * it.label for it in group) / sum(it.weight for it in group)

    assert fit(items[:6]) == pytest.approx(-1.0)
    assert fit(adjusted[:6]) == pytest.approx(-0.5)
    assert [it.weight for it in adjusted[2:6]] == [it.weight for it in items[2:6]]  # neutral unchanged
    assert adjusted[0].weight == pytest.approx(items[0].weight / 3)
    assert adjusted[-1].weight == 1.0  # MOSI is a regression source, never class-balanced


def test_readout_balance_is_refused_with_l1(tmp_path):
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"loss": "l1", "readout_balance": 0.5}))
    with pytest.raises(ValueError, match="readout_balance"):
        TrainOptions.from_recipe(recipe)


def test_select_valence3_keeps_the_epoch_with_the_best_balanced_valence(tmp_path):
    path = tmp_path / "t.csv"
    lines = ["id,text,label,mode"] + [f"r{i},{'good fun' if i % 3 else 'dull mess'} {i},{[-2.0, 0.0, 2.0][i % 3]},"
                                      f"{'train' if i < 18 else 'dev'}" for i in range(27)]
    path.write_text("\n".join(lines) + "\n")
    fit(preset("tiny"), path, tmp_path / "run", TrainOptions(epochs=3, batch_size=4, select="valence3", patience=0))
    log = (tmp_path / "run" / "train.log").read_text()
    errors = [float(line.split("valid valence-3 error ")[1].split()[0]) for line in log.splitlines()
              if line.startswith("epoch")]
    assert len(errors) == 3
    model = load_checkpoint(tmp_path / "run" / "checkpoint")
    dev = load_splits(path, model.config, splits=("dev",))["dev"]
    readings = valence_metrics(np.asarray(predict(model, dev)), np.array([it.label for it in dev]))
    assert 100 - readings["valence3_bal"] == pytest.approx(min(errors), abs=1e-3)
    with pytest.raises(ValueError, match="select"):
        TrainOptions.from_recipe("edge", select="acc7")


def test_new_tensor_names_are_logged_by_prefix():
    names = [f"video_encoder.cnn.backbone.m{i}.weight" for i in range(90)] + ["video_encoder.cnn.project.0.bias",
                                                                             "fusion.gate"]
    assert grouped_names(names) == ("video_encoder.cnn.backbone.* (90), video_encoder.cnn.project.* (1), "
                                    "fusion.gate")
