"""The whole CM-MSF (Figure 1) as five stage modules whose boundaries are the contracts of DESIGN.md.

`CMMSF.forward` chains the stages exactly as the runtime chains the exported graphs, so the model *is*
the reference the parity checks compare against.
"""

from __future__ import annotations

import torch
from torch import nn

from cmmsf.config import ModelConfig
from cmmsf.contracts import OUTPUTS, STAGES, run_chain
from cmmsf.model.encoders import AudioEncoder, TextEncoder, VideoEncoder
from cmmsf.model.head import MaskGatedFusionHead
from cmmsf.model.interaction import CascadedInteraction

# DESIGN.md: the MHA fast path must be off for export. Our attention is hand-written, but transformers'
# or torch's own layers may still take the fused path in eval; turning it off keeps eager == exported.
torch.backends.mha.set_fastpath_enabled(False)


class CMMSF(nn.Module):
    """text + audio + video → score [B] in [-3, 3], logits [B, 7], gates [B, 3]."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config.validate()
        self.text_encoder = TextEncoder(config)
        self.audio_encoder = AudioEncoder(config)
        self.video_encoder = VideoEncoder(config)
        self.interaction = CascadedInteraction(config)
        self.mgf_head = MaskGatedFusionHead(config)

    def stage(self, name: str) -> nn.Module:
        """The module for one stage name of `contracts.STAGES`."""
        if name not in STAGES:
            raise KeyError(f"unknown stage {name!r}; stages are {list(STAGES)}")
        return getattr(self, name)

    def run_stage(self, name: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Call one stage with the named inputs its contract lists (extra keys are ignored)."""
        spec = STAGES[name]
        return self.stage(name)(*(tensors[n] for n in spec.input_names))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tensors = run_chain(self.run_stage, batch)
        return {k: tensors[k] for k in OUTPUTS}


def build_model(config: ModelConfig) -> CMMSF:
    """A fresh model in eval mode (the mode every caller but the trainer wants)."""
    return CMMSF(config).eval()


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
