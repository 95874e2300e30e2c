"""Configs round-trip through JSON; checkpoints round-trip bit-exactly and name what mismatches."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from cmmsf.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from cmmsf.config import ModelConfig, preset


def test_config_json_round_trip(tmp_path):
    cfg = preset("edge", "cm-msf-ii").replace(use_mgf=False, pooling="max", fusion_heads=4)
    cfg.save(tmp_path / "c.json")
    assert ModelConfig.load(tmp_path / "c.json") == cfg


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown config keys"):
        ModelConfig.from_dict({"d_model": 8, "dmodel": 9})


def test_checkpoint_round_trips_bit_exactly(tmp_path, tiny_model):
    save_checkpoint(tiny_model, tmp_path / "ck")
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.config == tiny_model.config
    a, b = tiny_model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_wrong_shape_names_the_tensor(tmp_path, tiny_model):
    folder = save_checkpoint(tiny_model, tmp_path / "ck")
    state = load_file(str(folder / "model.safetensors"))
    state["mgf_head.regress.weight"] = torch.zeros(2, 99)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"mgf_head\.regress\.weight: checkpoint shape \(2, 99\)"):
        load_checkpoint(folder)


def test_missing_and_unexpected_tensors_are_named(tmp_path, tiny_model):
    folder = save_checkpoint(tiny_model, tmp_path / "ck")
    state = load_file(str(folder / "model.safetensors"))
    del state["mgf_head.classify.bias"]
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(folder)
    assert "missing tensor mgf_head.classify.bias" in str(err.value)
    assert "unexpected tensor extra.weight" in str(err.value)


def test_bad_checkpoint_paths_say_what_is_wrong(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text(json.dumps({}))
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_checkpoint(tmp_path / "half")


@pytest.mark.parametrize("section,key,value", [("video", "backbone", "vgg"), ("audio", "frontend", "wav2vec"),
                                               ("video", "frontend", "pixels"), (None, "pooling", "sum")])
def test_every_literal_switch_is_checked_when_a_config_loads(section, key, value):
    """Choices are read from the `Literal[...]` annotations: an unknown one fails at load, naming the field
    (an unknown video.backbone used to load and fail later with a misleading message)."""
    from cmmsf.config import ModelConfig, preset

    data = preset("tiny").to_dict()
    (data[section] if section else data)[key] = value
    name = f"{section}.{key}" if section else key
    with pytest.raises(ValueError, match=f"^{name} '{value}' is not one of "):
        ModelConfig.from_dict(data)


def test_an_edited_checkpoint_config_is_refused_in_one_line_naming_the_field(tiny_checkpoint, tmp_path):
    """The config a user edits by hand: an unknown value is one red line naming the field and its choices,
    before anything is built (issue 19); the same for an unknown key."""
    import shutil

    from typer.testing import CliRunner

    from cmmsf.cli import export_app

    for field, value, said in (("backbone", "vgg", "video.backbone 'vgg' is not one of 'resnet' or 'fer'"),
                               ("colour", True, "unknown config keys: ['video.colour']")):
        folder = tmp_path / field
        shutil.copytree(tiny_checkpoint, folder)
        config = json.loads((folder / "config.json").read_text())
        config["video"][field] = value
        (folder / "config.json").write_text(json.dumps(config))
        result = CliRunner().invoke(export_app, ["build", "--checkpoint", str(folder), "--out", str(tmp_path / "e")])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1 and "Traceback" not in result.output, result.output
        assert said in lines[0] and lines[0].startswith("error:")
        assert not (tmp_path / "e").exists()
