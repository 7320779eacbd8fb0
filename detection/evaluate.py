"""Detection quality metrics: ROC AUC overall and per attack type, TPR at fixed false-positive rates,
and what a model's threshold does (``at_threshold``: false incidents per hour, attack recall,
whether and when an incident opens).

Pure NumPy. Labels follow ``capture.records.ATTACK_LABELS``: 0 is benign, any other code an
attack. Per-attack figures compare that attack's packets with all benign packets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from capture.records import ATTACK_LABELS
from detection.opening import openings

DEFAULT_FPRS = (0.01, 0.001)


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN if one class is empty."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    # average ranks (1-based) over runs of equal scores
    first = np.ones(len(ss), bool)
    first[1:] = ss[1:] != ss[:-1]
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], len(ss))
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(len(ss))
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def tpr_at_fpr(y_true: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """Share of attack rows scored above the threshold that flags at most ``fpr`` of benign rows."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    neg = np.sort(s[~y])
    if len(neg) == 0 or not y.any():
        return float("nan")
    # the smallest threshold with #(benign > threshold) <= fpr * n_benign
    allowed = int(np.floor(fpr * len(neg)))
    threshold = neg[len(neg) - allowed - 1] if allowed < len(neg) else -np.inf
    return float((s[y] > threshold).mean())


def evaluate(
    labels: np.ndarray,
    scores: np.ndarray,
    fprs: Sequence[float] = DEFAULT_FPRS,
    threshold: float | None = None,
    names: Mapping[int, str] = ATTACK_LABELS,
) -> dict[str, Any]:
    """Metrics for per-packet ``scores`` against ``labels`` (0 benign, else an attack code).

    Returns ``{"overall": {...}, "per_attack": {name: {...}}}``; each block has ``auc``,
    ``tpr@<fpr>`` and ``n``; with ``threshold``, also ``detected`` (attack rows above it) and
    overall ``false_alarms`` (benign rows above it).
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape:
        raise ValueError("labels and scores differ in length")
    benign = labels == 0

    def block(mask: np.ndarray) -> dict[str, float]:
        sel = benign | mask
        y = mask[sel]
        s = scores[sel]
        out: dict[str, float] = {"n": int(mask.sum()), "auc": roc_auc(y, s)}
        for f in fprs:
            out[f"tpr@{f:g}"] = tpr_at_fpr(y, s, f)
        if threshold is not None:
            out["detected"] = float((s[y] > threshold).mean()) if y.any() else float("nan")
        return out

    overall = block(~benign)
    if threshold is not None:
        overall["false_alarms"] = float((scores[benign] > threshold).mean()) if benign.any() else float("nan")
    per = {}
    for code in sorted(int(c) for c in np.unique(labels) if c):
        per[names.get(code, str(code)) or str(code)] = block(labels == code)
    return {"overall": overall, "per_attack": per}


def at_threshold(
    labels: np.ndarray,
    scores: np.ndarray,
    times: np.ndarray,
    keys: np.ndarray,
    threshold: float,
    names: Mapping[int, str] = ATTACK_LABELS,
) -> dict[str, Any]:
    """What ``threshold`` does to packets at ``times`` of entities ``keys`` (e.g.
    ``calibration.client_entities``), through the incident opening rule (``opening.openings``).

    ``benign``: ``flagged`` (share of benign packets over the threshold), ``incidents`` (openings
    among the benign packets alone), ``seconds`` (their time span) and ``incidents_per_hour``.
    ``per_attack``, per attack name: ``recall`` (share of its packets flagged), ``incidents``
    (openings among its packets alone), ``opened`` (at least one) and ``delay`` (seconds from its
    first packet to the first opening; None when none opens).
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    keys = np.asarray(keys)
    if not (labels.shape == scores.shape == times.shape == keys.shape):
        raise ValueError("labels, scores, times and keys differ in length")
    flagged = scores > threshold

    def opened(mask: np.ndarray) -> list[tuple[object, float, float]]:
        hit = mask & flagged
        return openings(times[hit], keys[hit])

    benign = labels == 0
    seconds = float(np.ptp(times[benign])) if benign.any() else 0.0
    false_incidents = len(opened(benign))
    out: dict[str, Any] = {
        "threshold": float(threshold),
        "benign": {
            "n": int(benign.sum()),
            "flagged": float(flagged[benign].mean()) if benign.any() else float("nan"),
            "incidents": false_incidents,
            "seconds": seconds,
            "incidents_per_hour": false_incidents * 3600.0 / seconds if seconds > 0 else float("nan"),
        },
        "per_attack": {},
    }
    for code in sorted(int(c) for c in np.unique(labels) if c):
        mask = labels == code
        incidents = opened(mask)
        first = float(times[mask].min())
        out["per_attack"][names.get(code, str(code)) or str(code)] = {
            "n": int(mask.sum()),
            "recall": float(flagged[mask].mean()),
            "incidents": len(incidents),
            "opened": bool(incidents),
            "delay": min(at for _, _, at in incidents) - first if incidents else None,
        }
    return out


def _ranked(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (attack, benign) counts above each distinct score, highest score first."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    # the last row of each run of equal scores: a threshold cannot split ties
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1] if len(s) else np.zeros(0, np.int64)
    tps = np.cumsum(y)[last]
    return tps, (last + 1) - tps


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) at every distinct threshold, from (0, 0) to (1, 1)."""
    y = np.asarray(y_true).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return np.zeros(0), np.zeros(0)
    tps, fps = _ranked(y, scores)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos]


def pr_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at every distinct threshold, highest threshold first; empty without attacks."""
    y = np.asarray(y_true).astype(bool)
    n_pos = int(y.sum())
    if n_pos == 0:
        return np.zeros(0), np.zeros(0)
    tps, fps = _ranked(y, scores)
    return tps / n_pos, tps / (tps + fps)


def operating_point(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """What ``threshold`` flags (score above it): ``fpr``, ``tpr`` (recall) and ``precision``.

    A rate without rows to count (no benign, no attack, nothing flagged) is NaN.
    """
    y = np.asarray(y_true).astype(bool)
    flagged = np.asarray(scores, dtype=np.float64) > threshold
    tp, fp = int((flagged & y).sum()), int((flagged & ~y).sum())
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return {
        "fpr": fp / n_neg if n_neg else float("nan"),
        "tpr": tp / n_pos if n_pos else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
    }
