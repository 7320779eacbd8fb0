"""Detection metrics against scikit-learn and hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from detection.evaluate import evaluate, roc_auc, tpr_at_fpr


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.random(5000) < 0.2
    s = np.round(rng.normal(size=5000) + y * 0.8, 1)  # rounding makes many ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_extremes_and_degenerate():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert roc_auc(y, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert roc_auc(y, np.ones(4)) == 0.5
    assert math.isnan(roc_auc(np.zeros(3), np.arange(3)))


def test_tpr_at_fpr():
    benign = np.arange(1000, dtype=float)  # 0..999
    attack = np.array([995.5, 998.5, 1000.5, 5.0])
    y = np.r_[np.zeros(1000), np.ones(4)]
    s = np.r_[benign, attack]
    # 1 % FPR: 10 benign may be above the threshold (989) -> 3 of 4 attacks above
    assert tpr_at_fpr(y, s, 0.01) == 0.75
    # 0.1 %: one benign above (threshold 998) -> 998.5 and 1000.5
    assert tpr_at_fpr(y, s, 0.001) == 0.5
    assert tpr_at_fpr(y, s, 0.0) == 0.25


def test_evaluate_per_attack():
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(2000, int), np.full(100, 1), np.full(100, 2)]
    scores = np.r_[rng.normal(size=2000), rng.normal(5, 1, 100), rng.normal(0.5, 1, 100)]
    out = evaluate(labels, scores, threshold=3.0)
    assert set(out["per_attack"]) == {"port_scan", "syn_flood"}
    assert out["per_attack"]["port_scan"]["auc"] > 0.99
    assert 0.5 < out["per_attack"]["syn_flood"]["auc"] < 0.8
    assert out["per_attack"]["port_scan"]["n"] == 100
    assert 0 <= out["overall"]["false_alarms"] < 0.01
    assert out["per_attack"]["port_scan"]["detected"] > 0.9
    assert {"auc", "tpr@0.01", "tpr@0.001", "n"} <= set(out["overall"])
    with pytest.raises(ValueError):
        evaluate(labels, scores[:10])
