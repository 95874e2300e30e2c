"""§3.5 mask-gated fusion and classification (stage `mgf_head`, eq 13-22).

Per modality: a binary mask vector M (padding × presence × the adaptive threshold below), a sigmoid
gate G = σ(W_g U + b_g) (eq 13), the gated features F = U ⊙ G ⊙ M (eq 14), a GRU over F (eq 15-18) and
the residual H = Ĥ + F (eq 19). Masked steps enter the GRU as zero vectors (the GRU still steps over
them and its state decays through them); it runs over the whole padded sequence. Each H is pooled over
its real steps to one vector, by max as §3.2.4 says (`pooling: max`, paper preset) or by the mean
(`pooling: mean`, edge); an absent modality pools to zeros, so the fusion MLP sees "nothing" rather
than noise. The MLP of eq 20-21 gives a regression score squashed to [-3, 3] by 3·tanh and, from the
same fused vector, the 7-class logits of eq 22. `gates` reports each modality's mean gate over its
real steps (0 if absent): the per-modality explanation the paper promises.
"""

from __future__ import annotations

import torch
from torch import nn

from cmmsf.config import ModelConfig
from cmmsf.contracts import MODALITIES
from cmmsf.model.layers import POOLING, masked_mean


def adaptive_mask(x: torch.Tensor, mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """§3.5 step 1 for audio and video: keep steps whose feature norm reaches ratio × the clip's mean.

    Near-silent audio windows and blank frames carry no signal; masking them zeroes their features
    before the GRU and leaves them out of the pooling. A row keeps at least its strongest step, so a
    present modality is never masked away entirely. The norm is computed in FP32 even in FP16 graphs
    (export/fp16.py keeps ReduceL2 in FP32): its sum of squares overflows FP16 above a norm of 256.
    """
    if ratio <= 0:
        return mask
    norms = x.norm(dim=-1) * mask.to(x.dtype)
    threshold = ratio * masked_mean(norms.unsqueeze(-1), mask).squeeze(-1)
    strongest = norms >= norms.max(dim=1, keepdim=True).values
    return mask & ((norms >= threshold.unsqueeze(1)) | strongest)


class MaskGatedFusionHead(nn.Module):
    """Eq 13-22 over the three interaction outputs; `use_mgf=False` is the §4.3.2 ablation."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.d_model
        self.use_mgf = config.use_mgf
        self.ratio = config.adaptive_mask_ratio
        self.pool = POOLING[config.pooling]
        if self.use_mgf:
            self.gate = nn.ModuleDict({m: nn.Linear(d, d) for m in MODALITIES})
            self.gru = nn.ModuleDict({m: nn.GRU(d, d, batch_first=True) for m in MODALITIES})
        self.fuse = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(3 * d, config.head_hidden), nn.ReLU())
        self.regress = nn.Linear(config.head_hidden, 1)
        self.classify = nn.Linear(config.head_hidden, config.num_classes)

    def _modality(self, name: str, u: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if name != "text":
            mask = adaptive_mask(u, mask, self.ratio)
        keep = mask.to(u.dtype).unsqueeze(-1)
        if not self.use_mgf:
            return self.pool(u, mask), (keep.sum(dim=(1, 2)) > 0).to(u.dtype)
        gate = torch.sigmoid(self.gate[name](u))
        features = u * gate * keep
        hidden, _ = self.gru[name](features)
        pooled = self.pool(hidden + features, mask)
        return pooled, masked_mean(gate.mean(dim=-1, keepdim=True), mask).squeeze(-1)

    def forward(self, h_text: torch.Tensor, h_audio: torch.Tensor, h_video: torch.Tensor,
                text_mask: torch.Tensor, audio_mask: torch.Tensor,
                video_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = [self._modality(m, u, k) for m, u, k in zip(
            MODALITIES, (h_text, h_audio, h_video), (text_mask, audio_mask, video_mask))]
        fused = self.fuse(torch.cat([p for p, _ in parts], dim=-1))
        score = 3.0 * torch.tanh(self.regress(fused).squeeze(-1))
        return {"score": score, "logits": self.classify(fused), "gates": torch.stack([g for _, g in parts], -1)}
