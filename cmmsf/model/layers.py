"""Export-safe building blocks shared by every stage.

DESIGN.md's lessons live here so no stage re-learns them: attention written from plain matmuls with a
large *finite* negative for masked keys (no NaN on fully masked rows, safe in FP16), and recurrent
layers run on padded input with the backward direction reversed inside each sequence's own length
(no `pack_padded_sequence`, which cannot be exported).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cmmsf.validation import FileFieldError

MASK_FILL = -1.0e4
"""Masked attention logits: far below any real logit, yet finite in FP16 (max 65504)."""


class MaskedMultiheadAttention(nn.Module):
    """Multi-head attention, query from one sequence, key/value from another (eq 1-5, eq 8).

    Written out rather than `nn.MultiheadAttention` so the exported graph has no fast path and no
    length baked into reshapes, and so masked keys use MASK_FILL instead of -inf.
    """

    def __init__(self, d_query: int, d_key: int, d_model: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % num_heads:
            raise FileFieldError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.q = nn.Linear(d_query, d_model)
        self.k = nn.Linear(d_key, d_model)
        self.v = nn.Linear(d_key, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        return x.reshape(b, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q(query)), self._heads(self.k(key)), self._heads(self.v(key))
        logits = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        logits = logits.masked_fill(~key_mask[:, None, None, :], MASK_FILL)
        weights = self.dropout(torch.softmax(logits, dim=-1))
        mixed = torch.matmul(weights, v).transpose(1, 2)
        # A row whose keys are all masked (an absent modality) contributes exactly nothing.
        has_keys = (key_mask.sum(dim=1) > 0).to(query.dtype)[:, None, None]
        return self.out(mixed.reshape(query.shape[0], query.shape[1], -1)) * has_keys


class TransformerEncoderLayer(nn.Module):
    """Pre-LN self-attention block over a masked sequence (used by the audio and video branches)."""

    def __init__(self, d_model: int, num_heads: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = MaskedMultiheadAttention(d_model, d_model, d_model, num_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(2 * d_model, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.dropout(self.attn(h, h, mask))
        return x + self.dropout(self.ff(self.norm2(x)))


class TransformerEncoder(nn.Module):
    """A stack of TransformerEncoderLayer with a final LayerNorm."""

    def __init__(self, d_model: int, num_heads: int, num_layers: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(TransformerEncoderLayer(d_model, num_heads, dropout)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class SinusoidalPositions(nn.Module):
    """Adds the fixed sine/cosine position table of Vaswani et al. to a sequence [B, L, d].

    A table precomputed in FP32 and sliced to the sequence's length (no weights, nothing to train):
    computing angles in the graph would put them in FP16 in the FP16 engines, where position × frequency
    loses most of its digits. Sequences up to `max_len` steps.
    """

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        positions = torch.arange(max_len, dtype=torch.float64)[:, None]
        frequencies = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
        table = torch.zeros(max_len, d_model, dtype=torch.float64)
        table[:, 0::2] = torch.sin(positions * frequencies)
        table[:, 1::2] = torch.cos(positions * frequencies[: d_model // 2])
        self.register_buffer("table", table.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table[: x.shape[1]].unsqueeze(0)


class Standardize(nn.Module):
    """(x - mean) / std per feature, with the statistics of the training data kept as buffers.

    Whisper states share a large common component across clips (channel, speaker, the language
    itself); per-step LayerNorm keeps it, and the emotion-bearing differences between clips drown in
    it: without this the audio branch's output hardly moved with its input. The buffers travel with
    the checkpoint and are constants in the exported graph. Identity until `fit_statistics`."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit_statistics(self, steps: torch.Tensor) -> None:
        """Set mean and std from [N, dim] training steps."""
        self.mean.copy_(steps.mean(dim=0))
        self.std.copy_(steps.std(dim=0) + 1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def reverse_within_length(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's real steps in place, leaving its padding where it is.

    Step t of a row of length n maps to n-1-t for t < n and to itself after; applying it twice is the
    identity, so the same call undoes it. Pure tensor arithmetic: exports with dynamic lengths.
    """
    lengths = mask.sum(dim=1, keepdim=True)
    steps = torch.cumsum(torch.ones_like(mask, dtype=torch.long), dim=1) - 1
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    # Broadcast by addition rather than expand_as: the exporter mis-sizes Expand after an RNN output.
    return torch.gather(x, 1, index.unsqueeze(-1) + torch.zeros_like(x, dtype=torch.long))


class MaskedBiRNN(nn.Module):
    """Bidirectional LSTM/GRU on padded input whose real steps never see padding.

    The forward direction runs left to right, so trailing padding cannot reach real steps; the backward
    direction is a second unidirectional RNN run on each row reversed within its own length.
    `merge="sum"` adds the two directions (§3.4's BiLSTM); `"concat"` stacks them.
    """

    def __init__(self, cell: str, d_in: int, hidden: int, merge: str = "concat"):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.forward_rnn = rnn(d_in, hidden, batch_first=True)
        self.backward_rnn = rnn(d_in, hidden, batch_first=True)
        self.merge = merge
        self.out_dim = hidden if merge == "sum" else 2 * hidden

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        fwd, _ = self.forward_rnn(x)
        bwd, _ = self.backward_rnn(reverse_within_length(x, mask))
        bwd = reverse_within_length(bwd, mask)
        return fwd + bwd if self.merge == "sum" else torch.cat([fwd, bwd], dim=-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real steps; an all-padding row gives zeros, not NaN."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over real steps (§3.2.4's max pooling); an all-padding row gives zeros, not MASK_FILL."""
    pooled = x.masked_fill(~mask.unsqueeze(-1), MASK_FILL).max(dim=1).values
    return pooled * (mask.sum(dim=1, keepdim=True) > 0).to(x.dtype)


POOLING = {"mean": masked_mean, "max": masked_max}


def zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero padded steps so a convolution sees what it would see at the true end of a sequence."""
    return x * mask.to(x.dtype).unsqueeze(-1)
