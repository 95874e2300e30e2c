"""Adapting the FER backbone to the detector's crops: only the backbone changes, the best dev epoch is kept."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cmmsf.model.checkpoint import load_checkpoint, save_checkpoint
from cmmsf.cli import train_app
from cmmsf.train.face_adapt import REPORT, AdaptOptions, FaceAdaptError, adapt_backbone, jitter
from cmmsf.model.network import build_model
from tests.test_fer_backbone import fer_config
from tests.test_sources import write_faces


@pytest.fixture(scope="module")
def fer_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(build_model(fer_config()), tmp_path_factory.mktemp("fer") / "checkpoint")


def test_adapting_trains_the_backbone_alone_and_keeps_the_best_dev_epoch(tmp_path, fer_checkpoint):
    faces = write_faces(tmp_path / "faces", people=80)
    (fer_checkpoint / "voice_familiarity.safetensors").write_bytes(b"kept as it is")
    report = adapt_backbone(fer_checkpoint, [faces], tmp_path / "run", AdaptOptions(epochs=4, lr=3e-3, batch_size=8),
                            say=lambda _: None)
    out = tmp_path / "run" / "checkpoint"
    scores = [sum(h["dev_valence3"].values()) for h in report["history"]]
    assert len(scores) == 5 and report["best_epoch"] == max(range(5), key=lambda e: (scores[e], -e))
    assert json.loads((out / REPORT).read_text())["best_epoch"] == report["best_epoch"]
    # smiles, frowns and no mouth are easy: the drawn faces' dev people are read far above chance (33.3)
    assert max(scores) >= 80.0, report["history"]
    assert report["history"][-1]["train_loss"] < report["history"][1]["train_loss"]
    before, after = load_file(str(fer_checkpoint / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("video_encoder.cnn.backbone.") for k in changed)
    assert (out / "voice_familiarity.safetensors").read_bytes() == b"kept as it is"
    assert not any(p.requires_grad for p in load_checkpoint(out).video_encoder.cnn.backbone.parameters())


def test_a_checkpoint_without_the_fer_backbone_is_one_clear_error(tmp_path, tiny_checkpoint):
    with pytest.raises(FaceAdaptError, match="not 'fer'"):
        adapt_backbone(tiny_checkpoint, [tmp_path], tmp_path / "run", say=lambda _: None)


def test_jitter_mirrors_and_shifts_within_the_limit():
    image = torch.arange(64.0).view(1, 1, 8, 8).repeat(200, 1, 1, 1)
    moved = jitter(image, 2, torch.Generator().manual_seed(0))
    assert moved.shape == image.shape
    flipped = image.flip(3)
    for out in moved[:20]:  # away from the repeated edges, a pure shift of the image or its mirror
        found = any(torch.equal(out[0, 2:6, 2:6], src[0, 0, 2 + dy: 6 + dy, 2 + dx: 6 + dx])
                    for src in (image[:1], flipped[:1]) for dy in range(-2, 3) for dx in range(-2, 3))
        assert found
    assert not all(torch.equal(m, moved[0]) for m in moved)  # draws differ


def test_the_command_names_a_wrong_checkpoint_in_one_line(tmp_path, tiny_checkpoint):
    faces = write_faces(tmp_path / "faces", people=4)
    result = CliRunner().invoke(train_app, ["adapt-faces", "--data", str(faces), "--init", str(tiny_checkpoint),
                                            "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and "not 'fer'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
