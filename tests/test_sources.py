"""Multi-source training on generated RAVDESS- and faces-style folders, the subset table, and the gates."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from cmmsf.cli import run_app, train_app
from cmmsf.model.checkpoint import load_checkpoint
from cmmsf.config import preset
from cmmsf.data.datasets import load_dataset
from cmmsf.evaluation.evaluator import SubsetRow
from cmmsf.evaluation.metrics import valence3_as_seen, valence_metrics
from cmmsf.data.sources import (balance_weights, emotion_score, emotion_shares, face_bucket, held_split,
                                jittered_crop, load_sources_config, source_kind)
from cmmsf.train.trainer import predict

from .media import write_wav

runner = CliRunner()
EMOTIONS = {"happy": 520.0, "sad": 180.0, "neutral": 300.0}
"""Generated voices: each emotion's pitch, so that the audio branch has something real to learn."""


def write_ravdess(folder: Path, actors: range = range(1, 21)) -> Path:
    """RAVDESS's layout: actor_NN/<file>, labels.csv with actor, emotion, intensity and statement."""
    rows = []
    for actor in actors:
        (folder / f"actor_{actor:02d}").mkdir(parents=True)
        for emotion, pitch in EMOTIONS.items():
            name = f"actor_{actor:02d}/{emotion}.wav"
            write_wav(folder / name, seconds=0.8, rate=16000, tone_hz=pitch * (1 + 0.01 * actor))
            rows.append({"file": name, "actor": actor, "sex": "female", "emotion": emotion,
                         "intensity": "strong" if emotion == "happy" else "normal",
                         "statement": "kids are talking by the door", "repetition": 1})
    _write_csv(folder / "labels.csv", rows)
    return folder


def draw_expression(smile: bool, shade: int) -> np.ndarray:
    """A 96×96 face whose mouth curves up (happiness) or down (sadness)."""
    image = np.full((96, 96, 3), shade, np.uint8)
    cv2.circle(image, (48, 48), 34, (140, 170, 205), -1)
    for dx in (-13, 13):
        cv2.circle(image, (48 + dx, 38), 4, (30, 30, 30), -1)
    start, end = (20, 160) if smile else (200, 340)
    cv2.ellipse(image, (48, 62 if smile else 74), (16, 9), 0, start, end, (40, 40, 120), 3)
    return image


def write_faces(folder: Path, people: int = 40, blanks: int = 8) -> Path:
    (folder / "images").mkdir(parents=True)
    rows = []
    for person in range(people):
        for k, emotion in enumerate(("happiness", "sadness", "neutral")):
            name = f"images/Person_{person}_{k + 1:04d}.jpg"
            image = draw_expression(emotion == "happiness", 60 + person)
            if emotion == "neutral":
                image[60:80, 30:66] = (140, 170, 205)  # no mouth at all
            cv2.imwrite(str(folder / name), image)
            rows.append({"file": name, "emotion": emotion, "annotator": "t"})
    for k in range(blanks):  # photos without a face: the detector finds none, the user gets no answer
        name = f"images/Nobody_{k}_0001.jpg"
        cv2.imwrite(str(folder / name), np.full((96, 96, 3), 128, np.uint8))
        rows.append({"file": name, "emotion": "happiness", "annotator": "t"})
    _write_csv(folder / "labels.csv", rows)
    return folder


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    mosi = root / "mosi" / "label.csv"
    mosi.parent.mkdir()
    mosi.write_text("id,text,label,mode\n" + "".join(
        f"m{i},{'a great film' if i % 2 else 'a dreadful film'},{2.0 if i % 2 else -2.0},{mode}\n"
        for i, mode in enumerate(["train"] * 16 + ["dev"] * 4 + ["test"] * 4)))
    return {"mosi": mosi, "ravdess": write_ravdess(root / "ravdess"), "faces": write_faces(root / "faces"),
            "emodb": write_ravdess(root / "emodb", actors=range(3, 8))}


def test_the_mapping_is_data_and_each_source_splits_by_speaker_or_person(sources):
    config, rules = preset("tiny"), load_sources_config()
    assert emotion_score("happy", rules, "strong") == 2.5 and emotion_score("calm", rules) == 1.0
    assert emotion_score("surprise", rules) == 0.0 and emotion_score("fearful", rules) == -1.5
    assert emotion_score("bored", rules) == -1.0  # EmoDB's seventh emotion
    with pytest.raises(ValueError, match="'pensive' has no sentiment"):
        emotion_score("pensive", rules)
    assert source_kind(sources["ravdess"]) == "speech" and source_kind(sources["faces"]) == "faces"
    actors = {split: {int(it.maker.id.split("/")[0][-2:]) for it in load_dataset(sources["ravdess"], split, config)[0]}
              for split in ("train", "dev", "test")}
    assert actors == {"train": set(range(1, 17)), "dev": {17, 18}, "test": {19, 20}}
    train, _ = load_dataset(sources["ravdess"], "train", config)
    assert len(train) == 16 * 3 * 3  # each clip three times per epoch (train_repeat)
    people = {split: {face_bucket(it.maker.id, 10) for it in load_dataset(sources["faces"], split, config)[0]}
              for split in ("train", "dev", "test")}
    assert people["dev"] == {1} and people["test"] == {0} and not people["train"] & {0, 1}
    assert face_bucket("images/A_B_0001.jpg", 10) == face_bucket("images/A_B_0042.jpg", 10)


def test_tess_and_turev_load_split_by_their_own_speaker_names(tmp_path):
    """TESS names its two actresses OAF and YAF; TurEV numbers its six speakers: each is split as named."""
    config, rules = preset("tiny"), load_sources_config()
    folder = tmp_path / "tess"
    rows = []
    for actor in ("OAF", "YAF"):
        (folder / f"speaker_{actor}").mkdir(parents=True)
        for emotion, pitch in EMOTIONS.items():
            name = f"speaker_{actor}/{actor}_back_{emotion}.wav"
            write_wav(folder / name, seconds=0.8, rate=16000, tone_hz=pitch)
            rows.append({"file": name, "actor": actor, "sex": "female", "emotion": emotion, "intensity": "normal",
                         "statement": "Say the word back", "language": "en"})
    _write_csv(folder / "labels.csv", rows)
    speakers = {split: {it.maker.id.split("/")[0] for it in load_dataset(folder, split, config)[0]}
                for split in ("train", "dev", "test", "all")}
    assert speakers == {"train": set(), "dev": {"speaker_YAF"}, "test": {"speaker_OAF"},
                        "all": {"speaker_OAF", "speaker_YAF"}}
    assert [held_split(rules["turev"], a) for a in ("7895", "6783", "1157")] == ["dev", "test", "train"]
    assert held_split(rules["emodb"], "03") == "train" and held_split(rules["emodb"], "10") == "dev"
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    for corpus in ("tess", "turev"):  # the real labels: every emotion has a sentiment, every split a speaker
        labels = shared / corpus / "labels.csv"
        if not labels.is_file():
            continue
        with open(labels, newline="", encoding="utf-8") as handle:
            real = list(csv.DictReader(handle))
        assert all(emotion_score(row["emotion"], rules) is not None for row in real)
        splits = {held_split(rules[corpus], row["actor"]) for row in real}
        assert splits == ({"dev", "test"} if corpus == "tess" else {"train", "dev", "test"})


def test_faces_are_short_jittered_clips_in_training_and_still_ones_in_evaluation(sources):
    face = load_dataset(sources["faces"], "train", preset("tiny"))[0][0]
    plain = face.sample().arrays["video"]
    # evaluation: the same 15 frames every time, each read as video.DITHER says (frame 1 is frame 0 mirrored)
    assert plain.shape == (15, 3, 32, 32) and np.array_equal(plain, face.sample().arrays["video"])
    np.testing.assert_allclose(plain[1], plain[0][:, :, ::-1], atol=0.05)
    assert not np.allclose(plain[0], plain[2], atol=0.05)
    jittered = face.sample(np.random.default_rng(0)).arrays["video"]
    assert 4 <= len(jittered) <= 10 and not np.array_equal(jittered[0], jittered[1])
    assert face.sample().arrays["text"] is None and face.sample().arrays["audio"] is None



def test_crop_jitter_moves_scales_and_turns_the_crop_within_its_bounds():
    size = 200
    crop = np.zeros((size, size, 3), np.uint8)
    cv2.circle(crop, (size // 2, size // 2), 40, (255, 255, 255), -1)  # a disc of area 5027 px at the centre
    rng = np.random.default_rng(0)
    assert np.array_equal(jittered_crop(crop, rng, 0.0, 0.0, 0.0), crop)
    for _ in range(40):
        grey = jittered_crop(crop, rng, 0.02, 0.08, 3.0)[..., 0].astype(np.float64) / 255
        ys, xs = np.indices(grey.shape)
        centre = np.array([(xs * grey).sum(), (ys * grey).sum()]) / grey.sum()
        assert np.abs(centre - size / 2).max() <= 0.02 * size + 1  # moved by at most 2% of the side
        area = grey.sum() / (math.pi * 40 ** 2)
        assert 1 / 1.08 ** 2 - 0.03 <= area <= 1 / 0.92 ** 2 + 0.03  # the box 8% larger or smaller at most

def test_balance_weights_make_each_valence_class_count_alike():
    weights = balance_weights([2.0] * 8 + [0.0] * 4 + [-2.0] * 2, cap=6.0)
    assert weights[0] == pytest.approx(14 / 24) and weights[8] == pytest.approx(14 / 12)
    assert weights[-1] == pytest.approx(14 / 6)
    assert sum(weights[:8]) == pytest.approx(sum(weights[8:12])) == pytest.approx(sum(weights[12:]))
    assert balance_weights([1.0] * 99 + [-1.0], cap=6.0)[-1] == 6.0


def test_emotion_shares_weigh_each_emotion_of_a_class_alike_and_keep_the_class_total():
    labels = [0.0] * 6 + [2.0, 1.0, 1.25] + [-2.0] * 3
    emotions = ["neutral"] * 2 + ["surprised"] * 4 + ["happy", "calm", "calm"] + ["sad", "angry", "angry"]
    shares = emotion_shares(labels, emotions)
    assert shares[:2] == pytest.approx([1.5, 1.5]) and shares[2:6] == pytest.approx([0.75] * 4)
    assert sum(shares[:2]) == pytest.approx(sum(shares[2:6]))  # neutral now counts as much as surprised
    assert shares[6] == pytest.approx(1.5) and shares[7:9] == pytest.approx([0.75, 0.75])  # calm's intensities share
    assert sum(shares) == pytest.approx(len(labels))  # every class keeps its total weight


def test_valence_readings_of_a_score():
    truth = np.array([2.0, 2.0, 0.0, 0.0, -2.0, -1.5])
    pred = np.array([1.2, -0.2, 0.4, 0.6, -0.7, 0.3])
    readings = valence_metrics(pred, truth)
    assert readings["valence2_bal"] == pytest.approx(100 * (0.5 + 0.5) / 2)  # signed labels only
    assert readings["valence3_bal"] == pytest.approx(100 * (1 / 2 + 1 / 2 + 1 / 2) / 3)
    # two more photos, positive and negative, that got no answer: each a miss in its class
    assert valence3_as_seen(pred, truth, [2.0, -2.0]) == pytest.approx(100 * (1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert valence3_as_seen(pred, truth, []) == pytest.approx(readings["valence3_bal"])
    row = SubsetRow("faces", "video", {"valence3_bal": 74.9, "mae": 0.5}, {"valence3_balanced_min": 75.0})
    assert row.failures == ["valence3_bal 74.900 < 75.0"]
    assert SubsetRow("mosi", "text", {"mae": 0.79}, {"mae_max": 0.8}).failures == []


def test_one_run_trains_on_three_sources_and_eval_reports_each_modality(sources, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(train_app, [
        "fit", "--data", str(sources["mosi"]), "--data", str(sources["ravdess"]), "--data", str(sources["faces"]),
        "--preset", "tiny", "--recipe", "trimodal", "--epochs", "4", "--batch-size", "16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    faces = {split: len(load_dataset(sources["faces"], split, preset("tiny"))[0]) for split in ("train", "test")}
    assert f"train {16 + 144 + faces['train']} (mosi 16, ravdess 144, faces {faces['train']})" in " ".join(
        result.output.split())
    log = (out / "train.log").read_text()
    assert "mosi" in log and "ravdess" in log and "faces" in log  # valid MAE per source, every epoch
    metrics = json.loads((out / "metrics.json").read_text())["seeds"][0]
    assert set(metrics["by_source"]["test"]) == {"mosi", "ravdess", "faces"}

    table = tmp_path / "table.json"
    result = runner.invoke(train_app, ["eval", "--data", str(sources["mosi"]), "--data", str(sources["ravdess"]),
                                       "--data", str(sources["faces"]), "--checkpoint", str(out / "checkpoint"),
                                       "--split", "test", "--json", str(table)])
    rows = {(r["source"], r["modalities"]): r for r in json.loads(table.read_text())}
    assert set(rows) == {("mosi", "text"), ("ravdess", "text"), ("ravdess", "audio"), ("ravdess", "all"),
                         ("faces", "video"), ("faces", "video framed")}
    framed, tight = rows[("faces", "video framed")], rows[("faces", "video")]
    unanswered = len(load_dataset(sources["faces"], "test", preset("tiny"))[1].unanswered)
    assert unanswered >= 1 and tight["no_face"] == pytest.approx(100 * unanswered / (unanswered + tight["n"]))
    assert tight["valence3_seen"] <= tight["valence3_bal"]  # each blank photo is a happy face missed
    assert 0 <= framed["framing_agree"] <= 100 and 0 <= framed["framing_no_face"] <= 100
    assert framed["n"] + round(framed["framing_no_face"] * tight["n"] / 100) == tight["n"]
    voices = rows[("ravdess", "audio")]
    assert voices["neutral_abs_median"] >= 0 and voices["emotion_spread"] >= 0  # 2 test actors, 3 emotions each
    assert math.isnan(rows[("mosi", "text")]["emotion_spread"])  # transcripts have no speakers
    one_sentence = predict(load_checkpoint(out / "checkpoint"), load_dataset(sources["ravdess"], "test",
                                                                           preset("tiny"))[0], modalities=("text",))
    assert np.ptp(one_sentence) < 1e-4  # one sentence, one score (up to float noise from padding and batching)
    assert math.isnan(rows[("ravdess", "text")]["corr"])  # so its correlation is undefined, not noise
    gated = {k for k, r in rows.items() if r["gate"]}
    assert gated == {("mosi", "text"), ("ravdess", "audio"), ("faces", "video")}
    failed = {k for k, r in rows.items() if r["failures"]}
    assert (result.exit_code == 1) == bool(failed) and ("gate missed" in result.output) == bool(failed)
    assert {k: r["n"] for k, r in rows.items() if k[1] != "video framed"} == {
        ("mosi", "text"): 4, ("ravdess", "text"): 6, ("ravdess", "audio"): 6, ("ravdess", "all"): 6,
        ("faces", "video"): faces["test"]}

    # one evaluator: the deployed engines through `cmmsf-run eval` give the same table, per source and subset
    from cmmsf.export.build import BuildOptions, build

    build(BuildOptions(checkpoint=str(out / "checkpoint"), out=tmp_path / "engines"), Console(quiet=True))
    deployed_json = tmp_path / "deployed.json"
    deployed = runner.invoke(run_app, ["eval", str(sources["mosi"]), str(sources["ravdess"]), str(sources["faces"]),
                                       "--engines", str(tmp_path / "engines"), "--backend", "onnxruntime",
                                       "--split", "test", "--gates", "--json", str(deployed_json)])
    assert deployed_json.is_file(), deployed.output
    report = json.loads(deployed_json.read_text())
    deployed_rows = {(r["source"], r["modalities"]): r for r in report["rows"]}
    assert deployed_rows.keys() == rows.keys() and (deployed.exit_code == 1) == bool(failed), deployed.output
    for key, row in rows.items():
        assert deployed_rows[key]["n"] == row["n"] and deployed_rows[key]["gate"] == row["gate"], key
        assert deployed_rows[key]["mae"] == pytest.approx(row["mae"], abs=1e-3), key
    assert report["n"] == 4 + 6 + faces["test"]  # the summary row: every item, every modality
    assert report["acc2_decisions_differing_from_torch"] == 0

    # leave one corpus out: a corpus the run never saw, every one of its speakers (`--split all`)
    result = runner.invoke(train_app, ["eval", "--data", str(sources["emodb"]), "--checkpoint", str(out / "checkpoint"),
                                       "--split", "all", "--json", str(table), "--no-gates"])
    assert result.exit_code == 0, result.output
    unseen = {r["modalities"]: r for r in json.loads(table.read_text()) if r["source"] == "emodb"}
    assert unseen["audio"]["n"] == 5 * len(EMOTIONS) and np.isfinite(unseen["audio"]["emotion_spread"])
    losses = [float(line.split("loss ")[1].split()[0]) for line in log.splitlines() if line.startswith("epoch")]
    assert len(losses) == 4 and losses[-1] < losses[0]  # the weighted loss over all three sources falls


def test_audio_standardisation_learns_training_statistics_and_travels_with_the_checkpoint(sources, tmp_path):
    import torch

    from cmmsf.model.checkpoint import load_checkpoint, save_checkpoint
    from cmmsf.model.network import build_model
    from cmmsf.train.trainer import fit_audio_statistics

    config = preset("tiny")
    config.audio.standardize = True
    model = build_model(config)
    items = load_dataset(sources["ravdess"], "train", config)[0] + load_dataset(sources["faces"], "dev", config)[0]
    count = fit_audio_statistics(model, items)
    clips = {id(it.maker): it.maker for it in items if it.source == "ravdess"}
    assert len(clips) < sum(it.source == "ravdess" for it in items)  # train_repeat: each clip is there 3 times
    steps = torch.from_numpy(np.concatenate([clip.audio for clip in clips.values()]))
    assert count == len(steps)  # each clip read once; faces bring no audio and are not sampled
    standardised = model.audio_encoder.standardize(steps)
    assert standardised.mean(0).abs().max() < 1e-4 and (standardised.std(0) - 1).abs().max() < 0.01
    again = load_checkpoint(save_checkpoint(model, tmp_path / "ck")).audio_encoder.standardize
    fitted = model.audio_encoder.standardize
    assert torch.equal(again.mean, fitted.mean) and torch.equal(again.std, fitted.std)


def test_a_batch_without_video_leaves_the_video_batchnorm_statistics_alone(sources):
    import torch

    from cmmsf.data.datasets import make_batch
    from cmmsf.model.network import build_model
    from cmmsf.train.trainer import encoders_resting, to_tensors

    config = preset("tiny")
    model = build_model(config).train()
    norms = [m for m in model.video_encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    voices = load_dataset(sources["ravdess"], "train", config)[0][:4]
    batch, _ = make_batch(voices, config)
    with encoders_resting(model, batch):
        assert not model.video_encoder.training and model.audio_encoder.training
        model(to_tensors(batch))
    assert model.video_encoder.training  # restored after the batch
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms))
    faces = load_dataset(sources["faces"], "train", config)[0][:4]
    batch, _ = make_batch(faces, config, np.random.default_rng(0))
    with encoders_resting(model, batch):
        model(to_tensors(batch))
    assert not all(torch.equal(b, m.running_mean) for b, m in zip(before, norms))  # faces do teach it


def test_a_held_out_corpus_selects_on_happy_vs_negative_and_is_never_trained_on(sources, tmp_path):
    """Leave one corpus out: `select_data` is read for its dev and test actors only; `hap_neg` is the mean
    over those sources of 100 − the sign's balanced accuracy, and picks the epoch where it is lowest."""
    from cmmsf.evaluation.evaluator import emotion_readings
    from cmmsf.train.trainer import TrainOptions, fit, load_splits

    emodb = write_ravdess(tmp_path / "emodb", actors=range(8, 12))  # EmoDB's dev actor 10, test actor 11
    out = tmp_path / "run"
    summary = fit(preset("tiny"), sources["ravdess"], out, TrainOptions(epochs=3, batch_size=16, select="hap_neg",
                                                                       patience=0), console=Console(),
                  select_data=[emodb])
    log = (out / "train.log").read_text().splitlines()
    epochs = [line for line in log if line.startswith("epoch")]
    assert len(epochs) == 3 and all("ravdess" in line and "emodb" in line for line in epochs)
    errors = [float(line.split("valid happy/negative error ")[1].split()[0]) for line in epochs]
    model = load_checkpoint(out / "checkpoint")
    dev = load_splits([sources["ravdess"], emodb], model.config, splits=("dev",))["dev"]
    readings = [emotion_readings(group, predict(model, group))["happy_vs_negative_bal"]
                for group in ([it for it in dev if it.source == s] for s in ("ravdess", "emodb"))]
    assert 100 - np.mean(readings) == pytest.approx(min(errors), abs=1e-3)
    assert set(summary["seeds"][0]["by_source"]["test"]) == {"ravdess", "emodb"}
    assert summary["seeds"][0]["by_source"]["test"]["emodb"]["n"] == len(EMOTIONS)  # actor 11's three voices


def test_fresh_stages_are_not_copied_from_the_init_checkpoint():
    from cmmsf.model.network import build_model
    from cmmsf.train.trainer import init_from

    source, model = build_model(preset("tiny")), build_model(preset("tiny"))
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    fresh = init_from(model, source, ("audio_encoder",))
    assert fresh and all(name.startswith("audio_encoder.") for name in fresh)
    own, theirs = model.state_dict(), source.state_dict()
    assert all(torch.equal(own[k], theirs[k]) for k in own if not k.startswith("audio_encoder."))
    assert not any(torch.equal(own[k], theirs[k]) for k in fresh if own[k].is_floating_point() and own[k].numel() > 1)


def test_speaker_centring_removes_each_speakers_own_mean_and_keeps_what_differs_within_a_speaker():
    """Two speakers through different rooms (a constant offset each): centred, each speaker's clips average
    to 0, a clip's difference from its speaker's other clips is kept, and variants are centred on their own."""
    from cmmsf.data.sources import SpokenClip, centre_by_speaker

    rng = np.random.default_rng(0)
    clips = []
    for speaker, room in (("actor_01", 5.0), ("actor_02", -3.0)):
        for k, emotion in enumerate(("happy", "sad", "neutral")):
            audio = room + k + 0.1 * rng.standard_normal((20, 4))
            clips.append(SpokenClip(f"{speaker}/{emotion}.wav", "ravdess", emotion, 0.0, audio=audio.astype(np.float32),
                                    variants=((audio + 10.0).astype(np.float32),)))
    before = [c.audio.mean() for c in clips]
    centre_by_speaker(clips)
    for speaker in ("actor_01", "actor_02"):
        mine = [c for c in clips if c.id.startswith(speaker)]
        assert np.mean([c.audio.mean(axis=0) for c in mine], axis=0) == pytest.approx(np.zeros(4), abs=1e-5)
        assert np.mean([c.variants[0].mean(axis=0) for c in mine], axis=0) == pytest.approx(np.zeros(4), abs=1e-5)
    assert clips[2].audio.mean() - clips[0].audio.mean() == pytest.approx(before[2] - before[0], abs=1e-5)
    assert clips[0].audio.mean() == pytest.approx(clips[3].audio.mean(), abs=0.1)  # the rooms are gone
