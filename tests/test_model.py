"""The PyTorch model: stage contracts, padding invariance, ablation switches (tiny preset)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmmsf.config import preset
from cmmsf.contracts import STAGES
from cmmsf.model import build_model, parameter_count
from cmmsf.sample_inputs import make_inputs

from .conftest import to_torch


def run_all_stages(model, inputs):
    tensors = to_torch(inputs)
    with torch.no_grad():
        for name in STAGES:
            tensors.update(model.run_stage(name, tensors))
    return tensors


@pytest.mark.parametrize("batch,lt,la,lv", [(1, 5, 7, 3), (3, 9, 20, 6), (4, 2, 2, 2)])
def test_every_stage_output_follows_its_contract(tiny_model, batch, lt, la, lv):
    cfg = tiny_model.config
    out = run_all_stages(tiny_model, make_inputs(cfg, batch, lt, la, lv))
    lengths = {"B": batch, "Lt": lt, "La": la, "Lv": lv, "d": cfg.d_model, "K": cfg.num_classes, "M": 3}
    for spec in STAGES.values():
        for t in spec.outputs:
            assert tuple(out[t.name].shape) == tuple(lengths[a] for a in t.axes), t.name
            assert torch.isfinite(out[t.name]).all(), t.name
    assert (out["score"].abs() <= 3).all()


def test_padding_never_changes_a_real_row(tiny_model):
    """Each row run alone at its own length equals that row inside a padded batch, at every stage."""
    cfg = tiny_model.config
    inputs = make_inputs(cfg, batch=3, text_len=9, audio_len=14, video_len=7, seed=3)
    batched = run_all_stages(tiny_model, inputs)
    for row in range(3):
        lens = {m: int(inputs[f"{m}_mask"][row].sum()) for m in ("text", "audio", "video")}
        single = {
            "input_ids": inputs["input_ids"][row: row + 1, : lens["text"]],
            "text_mask": inputs["text_mask"][row: row + 1, : lens["text"]],
            "audio": inputs["audio"][row: row + 1, : lens["audio"]],
            "audio_mask": inputs["audio_mask"][row: row + 1, : lens["audio"]],
            "video": inputs["video"][row: row + 1, : lens["video"]],
            "video_mask": inputs["video_mask"][row: row + 1, : lens["video"]],
        }
        alone = run_all_stages(tiny_model, single)
        for spec in STAGES.values():
            for t in spec.outputs:
                got = batched[t.name][row: row + 1]
                if "Lt" in t.axes or "La" in t.axes or "Lv" in t.axes:
                    axis_len = lens[{"Lt": "text", "La": "audio", "Lv": "video"}[t.axes[1]]]
                    got = got[:, :axis_len]
                torch.testing.assert_close(got, alone[t.name], atol=1e-5, rtol=1e-4, msg=t.name)


def test_absent_modality_gives_finite_output_and_zero_gate(tiny_model):
    inputs = make_inputs(tiny_model.config, batch=2, seed=1)
    inputs["video_mask"][:] = False
    out = run_all_stages(tiny_model, inputs)
    assert torch.isfinite(out["score"]).all()
    assert (out["gates"][:, 2] == 0).all() and (out["gates"][:, 0] > 0).all()


@pytest.mark.parametrize("change,missing", [
    ({"use_cascade_bilstm": False}, "bilstm"),
    ({"use_mgf": False}, "mgf_head.gru"),
    ({"encoders": "first"}, "a_to_b"),
    ({"encoders": "second"}, "a_to_b"),
])
def test_each_ablation_switch_changes_the_graph(change, missing):
    torch.manual_seed(0)
    full = build_model(preset("tiny"))
    torch.manual_seed(0)
    ablated = build_model(preset("tiny").replace(**change))
    full_keys, ablated_keys = set(full.state_dict()), set(ablated.state_dict())
    assert any(missing in k for k in full_keys)
    assert not any(missing in k for k in ablated_keys)
    assert parameter_count(ablated) < parameter_count(full)
    inputs = make_inputs(preset("tiny"), batch=2, seed=2)
    with torch.no_grad():
        a, b = full(to_torch(inputs))["score"], ablated(to_torch(inputs))["score"]
    assert not torch.allclose(a, b)


def test_single_encoder_modes_keep_the_contract():
    for mode in ("first", "second"):
        model = build_model(preset("tiny").replace(encoders=mode))
        out = run_all_stages(model, make_inputs(model.config, 2, 4, 5, 3))
        assert out["u_text"].shape == (2, 4, model.config.d_model)


def test_paper_preset_builds_resnet101_and_bert_base_sizes():
    cfg = preset("paper")
    assert cfg.video.resnet_depth == 101 and cfg.text.hidden_size == 768
    assert cfg.audio.transformer_layers == 5 and cfg.num_heads == 8 and cfg.dropout == 0.3


def test_unknown_preset_and_bad_depth_have_clear_errors():
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    cfg = preset("tiny")
    cfg.video.resnet_depth = 7
    with pytest.raises(ValueError, match="ResNet depth 7"):
        build_model(cfg)


def test_adaptive_mask_drops_silent_steps_but_keeps_one():
    from cmmsf.head import adaptive_mask

    x = torch.tensor([[[3.0, 4.0], [0.0, 0.1], [6.0, 8.0], [0.0, 0.0]]])  # norms 5, .1, 10, 0 (pad)
    mask = torch.tensor([[True, True, True, False]])
    kept = adaptive_mask(x, mask, ratio=0.1)
    assert kept.tolist() == [[True, False, True, False]]
    silent = adaptive_mask(torch.zeros(1, 3, 2), torch.tensor([[True, True, False]]), 0.1)
    assert silent.any()
