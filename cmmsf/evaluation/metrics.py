"""Regression metrics of the field, exactly as MMSA computes them for MOSI/MOSEI (numpy only).

- mae, corr: on the raw predictions and labels.
- acc7 / acc5: round after clipping to [-3, 3] / [-2, 2] (numpy's round: halves go to even, as MMSA).
- acc2/f1 "has-0": negative (< 0) vs non-negative (>= 0), every sample counted.
- acc2/f1 "non-0": samples labelled exactly 0 dropped, then > 0 vs the rest.
- f1: weighted over the two classes (sklearn's `average="weighted"`), in percent like the accuracies.
"""

from __future__ import annotations

import numpy as np

METRIC_KEYS = ("mae", "corr", "acc7", "acc5", "acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "n")


def weighted_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """Support-weighted mean of per-class F1 over the classes present in `truth`."""
    total = 0.0
    for cls in np.unique(truth):
        tp = np.sum((pred == cls) & (truth == cls))
        fp = np.sum((pred == cls) & (truth != cls))
        fn = np.sum((pred != cls) & (truth == cls))
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        total += f1 * np.sum(truth == cls)
    return float(total / len(truth)) if len(truth) else float("nan")


def _accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(truth == pred)) if len(truth) else float("nan")


CONSTANT_RTOL = 1e-5
"""Values whose spread is within this share of their magnitude are one constant: float32 predictions of one
input differ in their last bits with padding and batch composition, and a correlation of that noise is any
number between -1 and 1."""


def is_constant(values: np.ndarray) -> bool:
    """True when every value equals the others within CONSTANT_RTOL of the largest magnitude (at least 1)."""
    values = np.asarray(values, np.float64)
    return bool(np.ptp(values) <= CONSTANT_RTOL * max(1.0, float(np.abs(values).max())))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN (undefined, not a crash or noise) when either side is constant."""
    if len(a) < 2 or is_constant(a) or is_constant(b):
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def regression_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """All MMSA regression metrics; accuracies and F1 in percent."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    if pred.shape != truth.shape:
        raise ValueError(f"{len(pred)} predictions for {len(truth)} labels")
    non0 = truth != 0
    return {
        "mae": float(np.mean(np.abs(pred - truth))),
        "corr": pearson(pred, truth),
        "acc7": 100 * _accuracy(np.round(np.clip(truth, -3, 3)), np.round(np.clip(pred, -3, 3))),
        "acc5": 100 * _accuracy(np.round(np.clip(truth, -2, 2)), np.round(np.clip(pred, -2, 2))),
        "acc2_has0": 100 * _accuracy(truth >= 0, pred >= 0),
        "acc2_non0": 100 * _accuracy(truth[non0] > 0, pred[non0] > 0),
        "f1_has0": 100 * weighted_f1(truth >= 0, pred >= 0),
        "f1_non0": 100 * weighted_f1(truth[non0] > 0, pred[non0] > 0),
        "n": int(len(truth)),
    }


def valence_classes(scores: np.ndarray | list[float]) -> np.ndarray:
    """-1, 0 or +1 per score, the way `label7` reads it: one that rounds to 0 is neutral."""
    return np.sign(np.round(np.clip(np.asarray(scores, np.float64), -3, 3))).astype(int)


def balanced_accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean over the classes present in `truth` of the share predicted right, in percent."""
    classes = np.unique(truth)
    if not len(classes):
        return float("nan")
    return float(100 * np.mean([np.mean(pred[truth == c] == c) for c in classes]))


def valence3_as_seen(pred: np.ndarray, truth: np.ndarray, unanswered: list[float]) -> float:
    """valence3_bal with the examples the runtime gives no answer for (their labels: `unanswered`) counted
    as misses in their class, never skipped: the accuracy a user sees."""
    truth_all = valence_classes(np.concatenate([np.asarray(truth, np.float64), np.asarray(unanswered, np.float64)]))
    no_answer = np.full(len(unanswered), 2, int)  # a class no label has
    return balanced_accuracy(truth_all, np.concatenate([valence_classes(pred), no_answer]))


def valence_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """How emotion-labelled data judges a score: valence2_bal, the balanced accuracy of its sign over examples
    whose label is not 0; valence3_bal, over the three classes `valence_classes` reads."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    signed = truth != 0
    return {"valence2_bal": balanced_accuracy(truth[signed] > 0, pred[signed] > 0),
            "valence3_bal": balanced_accuracy(valence_classes(truth), valence_classes(pred))}
