"""The three unimodal dual encoders of §3.2-3.3 (stages `text_encoder`, `audio_encoder`, `video_encoder`).

Each modality has two parallel branches A and B over the same steps. `DualFusion` aligns them with
bidirectional multi-head cross attention (eq 1-5: C_a attends from A to B, C_b from B to A), projects the
concatenation (eq 6) and maps it to d with FC + ReLU (eq 7). Because both branches keep the modality's
own step count, the concatenation of eq 6 is per step and the output stays a sequence [B, L, d].
"""

from __future__ import annotations

import torch
from torch import nn

from cmmsf.model.backbone import build_text_backbone
from cmmsf.config import ModelConfig, branch_mode
from cmmsf.model.layers import (MaskedBiRNN, MaskedMultiheadAttention, SinusoidalPositions, Standardize, TransformerEncoder,
                     zero_padding)
from cmmsf.model.fer_backbone import FerFrameEncoder
from cmmsf.model.resnet import ResNet
from cmmsf.validation import FileFieldError


class DualFusion(nn.Module):
    """Eq 1-7: cross-attend the two branches both ways, concatenate, project, FC + ReLU to d.

    With `mode="first"`/`"second"` (the single-encoder ablation of §4.3.2) only that branch is
    projected, and the cross attention is not built at all.
    """

    def __init__(self, d_a: int, d_b: int, d_model: int, num_heads: int, dropout: float, mode: str = "dual"):
        super().__init__()
        self.mode = mode
        if mode == "dual":
            self.a_to_b = MaskedMultiheadAttention(d_a, d_b, d_model, num_heads, dropout)
            self.b_to_a = MaskedMultiheadAttention(d_b, d_a, d_model, num_heads, dropout)
            fused_in = 2 * d_model
        else:
            fused_in = d_a if mode == "first" else d_b
        self.project = nn.Linear(fused_in, d_model)  # eq 6: H = W [C_a, C_b]
        self.fc = nn.Linear(d_model, d_model)  # eq 7: U = ReLU(H W_o + b_1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, a: torch.Tensor | None, b: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        if self.mode == "dual":
            fused = torch.cat([self.a_to_b(a, b, mask), self.b_to_a(b, a, mask)], dim=-1)
        else:
            fused = a if self.mode == "first" else b
        return torch.relu(self.fc(self.dropout(self.project(fused))))


class TextEncoder(nn.Module):
    """§3.2.1: BERT (A) ∥ LSTM over BERT's own token embeddings (B), fused by DualFusion."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        tc = config.text
        self.mode = branch_mode("text", tc.encoder)
        self.bert = build_text_backbone(tc)
        hidden = self.bert.config.hidden_size
        # BERT is built in every mode: branch B's LSTM reads BERT's own token embeddings.
        self.lstm = nn.LSTM(hidden, tc.lstm_hidden, batch_first=True) if self.mode != "first" else None
        self.fusion = DualFusion(hidden, tc.lstm_hidden, config.d_model, config.cross_heads,
                                 config.dropout, self.mode)
        self.freeze_backbone(tc.trainable_layers)

    def freeze_backbone(self, trainable_layers: int) -> None:
        """Freeze the backbone except its top `trainable_layers` layers (0 = all frozen)."""
        for p in self.bert.parameters():
            p.requires_grad = False
        layers = self.bert.encoder.layer
        for layer in list(layers)[len(layers) - trainable_layers:] if trainable_layers else []:
            for p in layer.parameters():
                p.requires_grad = True

    def forward(self, input_ids: torch.Tensor, text_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        ids = input_ids.long()
        a = b = None
        if self.mode != "second":
            a = self.bert(input_ids=ids, attention_mask=text_mask.long()).last_hidden_state
        if self.mode != "first":
            b, _ = self.lstm(self.bert.embeddings.word_embeddings(ids))
            b = zero_padding(b, text_mask)  # real rows unchanged; keeps text_mask an input of every variant
        return {"u_text": self.fusion(a, b, text_mask)}


def positions(config: ModelConfig, max_len: int) -> nn.Module:
    """The Transformer branches' position encoding (config.positional_encoding)."""
    if config.positional_encoding == "sinusoidal":
        return SinusoidalPositions(config.d_model, max(max_len, 1024))
    return nn.Identity()


class AudioEncoder(nn.Module):
    """§3.2.2: Transformer (A, with positions) ∥ BiGRU (B) over log-mel frames or COVAREP vectors."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        ac, d = config.audio, config.d_model
        self.mode = branch_mode("audio", ac.encoder)
        self.standardize = Standardize(ac.feature_dim) if ac.standardize else None
        self.input = nn.Sequential(nn.LayerNorm(ac.feature_dim), nn.Linear(ac.feature_dim, d))
        if self.mode != "second":
            self.positions = positions(config, ac.max_len)
            self.transformer = TransformerEncoder(d, config.num_heads, ac.transformer_layers, config.dropout)
        if self.mode != "first":
            self.bigru = MaskedBiRNN("gru", d, ac.gru_hidden)
        self.fusion = DualFusion(d, 2 * ac.gru_hidden, d, config.cross_heads, config.dropout, self.mode)

    def forward(self, audio: torch.Tensor, audio_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.input(self.standardize(audio) if self.standardize is not None else audio)
        a = self.transformer(self.positions(x), audio_mask) if self.mode != "second" else None
        b = self.bigru(x, audio_mask) if self.mode != "first" else None
        return {"u_audio": self.fusion(a, b, audio_mask)}


class VideoEncoder(nn.Module):
    """§3.2.3: per-frame ResNet (A) ∥ Transformer over frame tokens with positions (B).

    Branch B embeds each frame from a small average-pooled thumbnail, so the two branches really run in
    parallel on the pixels rather than B re-reading A. With the `features` front-end (FACET vectors)
    branch A is a temporal Conv1d over the projected vectors and B the same Transformer.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        vc, d = config.video, config.d_model
        self.mode = branch_mode("video", vc.encoder)
        self.frontend = vc.frontend
        if vc.frame_step < 1:
            raise FileFieldError(f"video.frame_step must be at least 1, not {vc.frame_step}")
        self.frame_step = vc.frame_step
        uses_a, uses_b = self.mode != "second", self.mode != "first"
        if vc.mirror_average and vc.backbone != "fer":
            raise FileFieldError(f"video.mirror_average reads faces through backbone 'fer', not {vc.backbone!r}")
        if vc.frontend == "frames":
            if uses_a and vc.backbone == "fer":
                if vc.image_size != 64:
                    raise FileFieldError(f"video.backbone 'fer' takes 64×64 frames, not {vc.image_size}")
                self.cnn = FerFrameEncoder(d, mirror_average=vc.mirror_average)
            elif uses_a:
                self.cnn = ResNet(vc.resnet_depth, vc.resnet_width, d)
            if uses_b:
                if vc.image_size % vc.token_grid:
                    raise FileFieldError(f"video.image_size {vc.image_size} must be a multiple of token_grid {vc.token_grid}")
                self.token_pool = nn.AvgPool2d(vc.image_size // vc.token_grid)  # fixed kernel: exports anywhere
                self.token_embed = nn.Linear(3 * vc.token_grid**2, d)
        else:
            self.feature_in = nn.Sequential(nn.LayerNorm(vc.feature_dim), nn.Linear(vc.feature_dim, d))
            if uses_a:
                self.temporal_conv = nn.Conv1d(d, d, config.conv_kernel, padding=config.conv_kernel // 2)
        if uses_b:
            self.positions = positions(config, vc.max_len)
            self.transformer = TransformerEncoder(d, config.num_heads, vc.transformer_layers, config.dropout)
        self.fusion = DualFusion(d, d, d, config.cross_heads, config.dropout, self.mode)

    def _branches(self, video: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Branch A's output and branch B's input tokens (None for a branch this mode does not use)."""
        a = tokens = None
        if self.frontend == "frames":
            b, length = video.shape[0], video.shape[1]
            flat = video.flatten(0, 1)  # [B*Lv, 3, H, W]: the backbone sees frames one by one
            if self.mode != "second":  # padding zeroed: real rows unchanged, video_mask stays a graph input
                a = zero_padding(self._frame_features(video), mask)
            if self.mode != "first":
                tokens = self.token_embed(self.token_pool(flat).flatten(1).reshape(b, length, -1))
            return a, tokens
        x = zero_padding(self.feature_in(video), mask)
        if self.mode != "second":
            a = torch.relu(self.temporal_conv(x.transpose(1, 2))).transpose(1, 2) + x
        return a, x

    def _frame_features(self, video: torch.Tensor) -> torch.Tensor:
        """Branch A's backbone on every `frame_step`-th frame, each reading repeated over its k frames."""
        b, length, step = video.shape[0], video.shape[1], self.frame_step
        picked = video[:, ::step] if step > 1 else video
        features = self.cnn(picked.flatten(0, 1)).reshape(b, picked.shape[1], -1)
        if step == 1:
            return features
        held = features.unsqueeze(2).expand(-1, -1, step, -1).reshape(b, -1, features.shape[-1])
        return held[:, :length]

    def forward(self, video: torch.Tensor, video_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        a, tokens = self._branches(video, video_mask)
        b = self.transformer(self.positions(tokens), video_mask) if self.mode != "first" else None
        return {"u_video": self.fusion(a, b, video_mask)}
