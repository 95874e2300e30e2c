"""What each modality contributes: metrics per source and per modality subset, checked against gates.

`cmmsf-train eval` with several data paths prints one row per (source, subset): MMSA's regression
metrics plus two valence readings of the score that emotion-labelled data can be judged by:
- `valence2_bal`: balanced accuracy of score > 0 against label > 0, over examples whose label is not 0
  (RAVDESS: happy and calm against sad, angry, fearful and disgust);
- `valence3_bal`: balanced accuracy over three classes read the way `label7` reads a score (one that
  rounds to 0 is neutral, above is positive, below negative): faces' happiness / neutral+surprise /
  negative.
The gates of cmmsf/recipes/sources.json name, per source, the subset and the bar it must clear.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .contracts import MODALITIES
from .data import Labelled
from .metrics import regression_metrics, valence_metrics
from .model import CMMSF
from .train import by_source, predict

SUBSETS: dict[str, tuple[str, ...]] = {"text": ("text",), "audio": ("audio",), "video": ("video",),
                                       "all": MODALITIES}

GATE_KEYS = {"mae_max": ("mae", max), "corr_min": ("corr", min), "valence2_balanced_min": ("valence2_bal", min),
             "valence3_balanced_min": ("valence3_bal", min)}
"""A gate key → (metric it bounds, max: metric must be <= bar, min: metric must be >= bar)."""


@dataclass
class SubsetRow:
    source: str
    subset: str
    metrics: dict[str, float]
    gate: dict[str, float] = field(default_factory=dict)
    """The bars this row is held to (empty: not gated)."""

    @property
    def failures(self) -> list[str]:
        """`metric value vs bar` for every gate this row misses."""
        out = []
        for key, bar in self.gate.items():
            metric, direction = GATE_KEYS[key]
            value = self.metrics[metric]
            if not np.isfinite(value) or (value > bar if direction is max else value < bar):
                out.append(f"{metric} {value:.3f} {'>' if direction is max else '<'} {bar}")
        return out


def parse_subsets(text: str | None) -> dict[str, tuple[str, ...]]:
    """`--modalities`: None → SUBSETS; `text,audio` → that one subset (named `text+audio`)."""
    if text is None:
        return dict(SUBSETS)
    keep = tuple(m.strip() for m in text.split(",") if m.strip())
    if not keep or set(keep) - set(MODALITIES):
        raise ValueError(f"--modalities takes a subset of {','.join(MODALITIES)}, got {text!r}")
    return {"+".join(keep): keep}


def subset_table(model: CMMSF, items: list[Labelled], gates: dict[str, dict] | None = None,
                 subsets: dict[str, tuple[str, ...]] | None = None) -> list[SubsetRow]:
    """One row per source and per subset it has data for (`all` only when it has more than one)."""
    gates, subsets = gates or {}, subsets or dict(SUBSETS)
    trained = set(model.config.trained_modalities)
    rows = []
    for source, group in by_source(items).items():
        has = set().union(*(it.modalities for it in group)) & trained
        labels = np.array([it.label for it in group])
        gate = {k: v for k, v in gates.get(source, {}).items() if k != "modalities"}
        for name, modalities in subsets.items():
            keep = tuple(m for m in modalities if m in has)
            if not keep or (name == "all" and len(has) < 2):
                continue
            pred = predict(model, group, modalities=keep)
            metrics = {**regression_metrics(pred, labels), **valence_metrics(pred, labels)}
            rows.append(SubsetRow(source, "+".join(keep) if name != "all" else "all", metrics,
                                  gate if gates.get(source, {}).get("modalities") == name else {}))
    return rows
