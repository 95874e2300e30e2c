"""The PyTorch model as a scorer for evaluation (cmmsf/evaluation/evaluator.py): labelled items in, scores out.

`cmmsf-train eval` scores with `ModelScorer`; `cmmsf-run eval` with the deployed engines
(runtime/evaluate.py `PipelineScorer`), through the same evaluator and the same table.
"""

from __future__ import annotations

import numpy as np
import torch

from cmmsf.inputs.familiarity import VoiceFamiliarity

from cmmsf.config import ModelConfig
from cmmsf.contracts import MODALITIES
from cmmsf.data.datasets import make_batch
from cmmsf.data.examples import Labelled
from cmmsf.model.network import CMMSF


def predict(model: CMMSF, items: list[Labelled], batch_size: int = 64,
            modalities: tuple[str, ...] = MODALITIES) -> np.ndarray:
    """Scores for `items`; modalities not listed are masked (Table 5-style subsets)."""
    model.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            batch, _ = make_batch(items[start: start + batch_size], model.config)
            for m in MODALITIES:
                if m not in modalities:
                    batch[f"{m}_mask"][:] = False
            scores.append(model({k: torch.from_numpy(v) for k, v in batch.items()})["score"].numpy())
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


class ModelScorer:
    """A CMMSF model behind the evaluator's Scorer interface."""

    def __init__(self, model: CMMSF, voice: VoiceFamiliarity | None = None):
        self.model = model
        self.voice = voice
        """The checkpoint's voice statistics where the evaluation leaves out unfamiliar voices."""

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    def scores(self, items: list[Labelled], modalities: tuple[str, ...] = MODALITIES) -> np.ndarray:
        return predict(self.model, items, modalities=modalities)
