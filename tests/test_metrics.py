"""Metrics against hand-computed values (MMSA definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmmsf.evaluation.metrics import regression_metrics, weighted_f1


def test_hand_computed_case():
    truth = np.array([2.4, -0.8, 0.0, 1.6, -2.6])
    pred = np.array([1.9, 0.2, -0.4, 1.4, -3.5])
    m = regression_metrics(pred, truth)
    assert m["mae"] == pytest.approx((0.5 + 1.0 + 0.4 + 0.2 + 0.9) / 5)
    # acc7: truth rounds to 2,-1,0,2,-3; clipped preds round to 2,0,-0,1,-3 → 3 of 5 right
    assert m["acc7"] == pytest.approx(60.0)
    # acc5: clip to [-2,2]: truth 2,-1,0,2,-2; pred 2,0,0,1,-2 → 3 of 5
    assert m["acc5"] == pytest.approx(60.0)
    # has-0: truth>=0: T,F,T,T,F ; pred>=0: T,T,F,T,F → 3 of 5
    assert m["acc2_has0"] == pytest.approx(60.0)
    # non-0 drops the 0 label: truth>0 T,F,T,F ; pred>0 T,T,T,F → 3 of 4
    assert m["acc2_non0"] == pytest.approx(75.0)
    # non-0 F1: class True (support 2): tp2 fp1 fn0 → 0.8; class False (support 2): tp1 fp0 fn1 → 2/3
    assert m["f1_non0"] == pytest.approx(100 * (2 * 0.8 + 2 * 2 / 3) / 4)
    assert m["n"] == 5
    assert m["corr"] == pytest.approx(np.corrcoef(pred, truth)[0, 1])


def test_weighted_f1_perfect_and_inverted():
    t = np.array([True, False, True, True])
    assert weighted_f1(t, t) == pytest.approx(1.0)
    assert weighted_f1(t, ~t) == pytest.approx(0.0)


def test_constant_predictions_give_nan_corr_not_a_crash():
    m = regression_metrics(np.zeros(4), np.array([1.0, -1.0, 2.0, 0.5]))
    assert math.isnan(m["corr"]) and m["acc2_has0"] == pytest.approx(75.0)  # 3 of 4 labels are >= 0


def test_predictions_equal_but_for_float32_noise_are_a_constant():
    labels = np.array([1.0, -1.0, 2.0, 0.5, -2.0])
    noisy = np.float32(0.7312) + np.array([0, 1, -1, 2, 0], np.float32) * np.finfo(np.float32).eps
    assert len(np.unique(noisy)) > 1  # not bit-identical, which is what padding and batching give
    assert math.isnan(regression_metrics(noisy, labels)["corr"])
    assert regression_metrics(noisy + np.array([0, 0, 0, 0, 1e-3]), labels)["corr"] < 0  # a real spread counts


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        regression_metrics(np.zeros(3), np.zeros(2))
