"""The PyTorch model: stage contracts, padding invariance, ablation switches (tiny preset)."""

from __future__ import annotations

import pytest
import torch

from cmmsf.config import preset
from cmmsf.contracts import STAGES
from cmmsf.model.network import build_model, parameter_count
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


@pytest.mark.parametrize("variant,missing", [
    ("no-bilstm", "bilstm"),
    ("no-mgf", "mgf_head.gru"),
    ("cm-msf-i", "a_to_b"),
    ("cm-msf-ii", "a_to_b"),
    ("text-bert", "text_encoder.lstm"),
    ("text-lstm", "text_encoder.fusion.a_to_b"),
])
def test_each_variant_changes_the_graph(variant, missing):
    torch.manual_seed(0)
    full = build_model(preset("tiny"))
    torch.manual_seed(0)
    ablated = build_model(preset("tiny", variant))
    assert any(missing in k for k in full.state_dict())
    assert not any(missing in k for k in ablated.state_dict())  # not built at all: no dead weights
    assert parameter_count(ablated) < parameter_count(full)
    inputs = make_inputs(preset("tiny"), batch=2, seed=2)
    with torch.no_grad():
        a, b = full(to_torch(inputs))["score"], ablated(to_torch(inputs))["score"]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("variant,branches", [
    ("cm-msf-i", {"text": "first", "audio": "first", "video": "second"}),
    ("cm-msf-ii", {"text": "second", "audio": "second", "video": "first"}),
    ("text-lstm", {"text": "second", "audio": "dual", "video": "dual"}),
])
def test_single_encoder_variants_keep_the_contract_and_use_only_their_branch(variant, branches):
    """CM-MSF(I) = BERT / audio Transformer / video Transformer; (II) = LSTM / BiGRU / ResNet (Fig. 11)."""
    torch.manual_seed(0)
    model = build_model(preset("tiny", variant))
    encoders = {"text": model.text_encoder, "audio": model.audio_encoder, "video": model.video_encoder}
    assert {m: e.mode for m, e in encoders.items()} == branches
    inputs = make_inputs(model.config, 2, 4, 5, 3)
    out = run_all_stages(model, inputs)
    d = model.config.d_model
    for name, shape in (("u_text", (2, 4, d)), ("u_audio", (2, 5, d)), ("u_video", (2, 3, d)),
                        ("h_text", (2, 4, d)), ("h_audio", (2, 5, d)), ("h_video", (2, 3, d)),
                        ("score", (2,)), ("logits", (2, 7)), ("gates", (2, 3))):
        assert tuple(out[name].shape) == shape and torch.isfinite(out[name]).all(), name
    dropped = {"first": "second", "second": "first"}
    branch_modules = {"text": {"second": "lstm"}, "audio": {"first": "transformer", "second": "bigru"},
                      "video": {"first": "cnn", "second": "transformer"}}
    for modality, mode in branches.items():
        if mode == "dual":
            continue
        gone = branch_modules[modality].get(dropped[mode])
        if gone:  # the branch a variant drops is not built: no weights, no compute
            assert getattr(encoders[modality], gone, None) is None, (modality, gone)


def test_paper_preset_is_the_paper_architecture():
    """§4.2/§4.3.3: ResNet-101, BERT-base sizes, 5 Transformer layers with 8 heads, N = 8 cascade encoders,
    5 heads in the cross attentions, max pooling, positional encodings (built on the meta device)."""
    cfg = preset("paper")
    with torch.device("meta"):
        model = build_model(cfg)
    assert len(model.interaction.pairs["text_to_audio"].layers) == 8
    assert model.interaction.pairs["text_to_audio"].layers[0].attn.num_heads == 5
    assert model.text_encoder.fusion.a_to_b.num_heads == 5
    assert len(model.audio_encoder.transformer.layers) == 5
    assert model.audio_encoder.transformer.layers[0].attn.num_heads == 8
    assert type(model.audio_encoder.positions).__name__ == "SinusoidalPositions"
    assert type(model.video_encoder.positions).__name__ == "SinusoidalPositions"
    blocks = model.video_encoder.cnn.blocks
    assert len(blocks) == 33 and len(blocks[0].body) == 5  # 3+4+23+3 bottlenecks
    assert model.text_encoder.bert.config.hidden_size == 768 and model.text_encoder.bert.config.num_hidden_layers == 12
    assert model.mgf_head.pool.__name__ == "masked_max"
    assert 150e6 < parameter_count(model) < 400e6


def test_positions_make_the_audio_transformer_order_aware():
    torch.manual_seed(0)
    with_pe = build_model(preset("tiny", "cm-msf-i"))  # audio: Transformer branch alone
    torch.manual_seed(0)
    without = build_model(preset("tiny", "cm-msf-i").replace(positional_encoding="none"))
    audio = torch.randn(1, 6, with_pe.config.audio.feature_dim)
    mask = torch.ones(1, 6, dtype=torch.bool)
    flipped = audio.flip(1)
    with torch.no_grad():
        plain = [without.audio_encoder(x, mask)["u_audio"] for x in (audio, flipped)]
        ordered = [with_pe.audio_encoder(x, mask)["u_audio"] for x in (audio, flipped)]
    # without positions, reversing the steps only reverses the output (self-attention is order-blind)
    torch.testing.assert_close(plain[0], plain[1].flip(1), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(ordered[0], ordered[1].flip(1), atol=1e-3)


def test_max_pooling_ignores_padding_and_absent_rows():
    from cmmsf.model.layers import masked_max

    x = torch.tensor([[[1.0, -2.0], [3.0, -1.0], [99.0, 99.0]], [[5.0, 5.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert masked_max(x, mask).tolist() == [[3.0, -1.0], [0.0, 0.0]]


def test_legacy_global_encoders_switch_still_loads():
    from cmmsf.config import ModelConfig

    data = preset("tiny").to_dict()
    for modality in ("text", "audio", "video"):
        del data[modality]["encoder"]
    data["encoders"] = "second"
    config = ModelConfig.from_dict(data)
    assert (config.text.encoder, config.audio.encoder, config.video.encoder) == ("lstm", "bigru", "transformer")


def test_unknown_preset_and_bad_depth_have_clear_errors():
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    cfg = preset("tiny")
    cfg.video.resnet_depth = 7
    with pytest.raises(ValueError, match="ResNet depth 7"):
        build_model(cfg)
    with pytest.raises(ValueError, match="unknown variant"):
        preset("tiny", "no-text")
    with pytest.raises(ValueError, match="audio.encoder 'lstm' is not one of"):
        build_model(preset("tiny").replace(audio=preset("tiny").audio.__class__(encoder="lstm")))
    with pytest.raises(ValueError, match="not divisible by fusion_heads 5"):
        build_model(preset("tiny").replace(fusion_heads=5))


def test_adaptive_mask_drops_silent_steps_but_keeps_one():
    from cmmsf.model.head import adaptive_mask

    x = torch.tensor([[[3.0, 4.0], [0.0, 0.1], [6.0, 8.0], [0.0, 0.0]]])  # norms 5, .1, 10, 0 (pad)
    mask = torch.tensor([[True, True, True, False]])
    kept = adaptive_mask(x, mask, ratio=0.1)
    assert kept.tolist() == [[True, False, True, False]]
    silent = adaptive_mask(torch.zeros(1, 3, 2), torch.tensor([[True, True, False]]), 0.1)
    assert silent.any()
