"""§3.4 cascaded cross-modal interaction (stage `interaction`, eq 8-12).

For each of the six directed pairs src → tgt, N cascaded encoders update the target sequence with what
it attends to in the source:

    Û = LN(CrossAttn(U_tgt, U_src)) + LN(U_tgt)            (eq 10; eq 8 is the attention itself)
    U = LN(Conv1d(Û)) + LN(Û)                               (eq 11, inner part)
after the N layers a BiLSTM (hidden 100 in §3.4, forward + backward summed) closes the pair (eq 11).
Each target then concatenates its two incoming pairs after a linear reduction to d/2 each (eq 12), so
the updated sequence keeps the target's own length and d.
"""

from __future__ import annotations

import torch
from torch import nn

from cmmsf.config import ModelConfig
from cmmsf.contracts import MODALITIES
from cmmsf.model.layers import MaskedBiRNN, MaskedMultiheadAttention, zero_padding
from cmmsf.validation import FileFieldError

PAIRS: tuple[tuple[str, str], ...] = tuple((s, t) for t in MODALITIES for s in MODALITIES if s != t)
"""The six directed pairs (source, target), grouped by target in MODALITIES order."""


class CascadeLayer(nn.Module):
    """One cascaded encoder of eq 10-11 (without the closing BiLSTM)."""

    def __init__(self, d: int, num_heads: int, kernel: int, dropout: float):
        super().__init__()
        self.attn = MaskedMultiheadAttention(d, d, d, num_heads, dropout)
        self.norm_attn, self.norm_in = nn.LayerNorm(d), nn.LayerNorm(d)
        self.conv = nn.Conv1d(d, d, kernel, padding=kernel // 2)
        self.norm_conv, self.norm_mid = nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, target: torch.Tensor, target_mask: torch.Tensor, source: torch.Tensor,
                source_mask: torch.Tensor) -> torch.Tensor:
        mid = self.norm_attn(self.dropout(self.attn(target, source, source_mask))) + self.norm_in(target)
        conv = self.conv(zero_padding(mid, target_mask).transpose(1, 2)).transpose(1, 2)
        return self.norm_conv(self.dropout(conv)) + self.norm_mid(mid)


class PairEncoder(nn.Module):
    """N cascade layers for one directed pair, then the summed BiLSTM (dropped by the ablation)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.d_model
        self.layers = nn.ModuleList(CascadeLayer(d, config.cross_heads, config.conv_kernel, config.dropout)
                                    for _ in range(config.interaction_layers))
        self.bilstm = (MaskedBiRNN("lstm", d, config.interaction_lstm_hidden, merge="sum")
                       if config.use_cascade_bilstm else None)
        self.out_dim = self.bilstm.out_dim if self.bilstm is not None else d

    def forward(self, target: torch.Tensor, target_mask: torch.Tensor, source: torch.Tensor,
                source_mask: torch.Tensor) -> torch.Tensor:
        x = target
        for layer in self.layers:
            x = layer(x, target_mask, source, source_mask)
        return self.bilstm(x, target_mask) if self.bilstm is not None else x


class CascadedInteraction(nn.Module):
    """All six pairs and the eq 12 merge: {u_text, u_audio, u_video} → {h_text, h_audio, h_video}."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.d_model
        if d % 2:
            raise FileFieldError(f"d_model must be even for the eq 12 pair concatenation, got {d}")
        self.pairs = nn.ModuleDict({f"{s}_to_{t}": PairEncoder(config) for s, t in PAIRS})
        pair_dim = next(iter(self.pairs.values())).out_dim
        self.reduce = nn.ModuleDict({f"{s}_to_{t}": nn.Linear(pair_dim, d // 2) for s, t in PAIRS})

    def forward(self, u_text: torch.Tensor, u_audio: torch.Tensor, u_video: torch.Tensor,
                text_mask: torch.Tensor, audio_mask: torch.Tensor,
                video_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        seqs = {"text": u_text, "audio": u_audio, "video": u_video}
        masks = {"text": text_mask, "audio": audio_mask, "video": video_mask}
        out: dict[str, list[torch.Tensor]] = {m: [] for m in MODALITIES}
        for s, t in PAIRS:
            key = f"{s}_to_{t}"
            updated = self.pairs[key](seqs[t], masks[t], seqs[s], masks[s])
            out[t].append(self.reduce[key](updated))
        return {f"h_{m}": torch.cat(out[m], dim=-1) for m in MODALITIES}
