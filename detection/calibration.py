"""Thresholds that mean something: a model's threshold from a target rate of false incidents.

Django-free (NumPy; SciPy's maximum-likelihood fit when it is installed). ``AnomalyModel.fit``
holds out the last ``VALIDATION_SHARE`` of the benign rows, in time order (traffic the model did
not fit, as live traffic will be), fits on the rest, scores the held-out part and calls
``calibrate``. The target is a setting (``NETMON_FALSE_INCIDENTS_PER_DAY``) passed in.

The method, on the validation part (``n`` packets over ``D`` seconds, scores ``s``, each packet's
entity: the client host of its conversation, ``client_entities``):

1. Peaks over threshold. ``u`` is the ``TAIL_QUANTILE`` (98 %) score; the ``N_u`` excesses
   ``s - u > 0`` are fitted with a generalized Pareto distribution (shape ``xi``, scale ``sigma``:
   maximum likelihood, or probability-weighted moments without SciPy). The per-packet exceedance
   probability beyond what the validation set resolves is then::

       p(t) = N_u / n * (1 + xi * (t - u) / sigma) ** (-1 / xi)      (exp(-(t - u) / sigma) if xi = 0)

2. Incidents per exceedance. Flagged packets open an incident only in clusters (the rule of
   ``detection.opening``: ``OPEN_MIN_ANOMALIES`` of one entity within ``OPEN_WINDOW`` s). Where the
   data resolves it (thresholds from ``u`` up with at least ``RESOLVED_MIN`` exceedances, halving
   the count each step), ``theta(t) = openings(t) / exceedances(t)`` with ``opening.openings``;
   ``theta`` is the largest of these, and at least ``1 / N_u`` (as if the validation had opened
   one incident at ``u``: no incident seen in a short validation is not evidence of none). This is
   the extremal index of POT for dependent data: clusters occur at ``theta`` times the rate of
   exceedances, whatever the threshold in the tail.

3. Expected false incidents per day at threshold ``t``, openings counted where the data resolves
   them and the tail model beyond::

       E(t) = 86400 / D * max(openings(t), theta * n * p(t))

   The threshold is the lowest ``t`` with ``E(t) <= target``, i.e. with
   ``p* = target * D / (86400 * theta * n)``::

       t_evt = u + sigma / xi * ((p* * n / N_u) ** (-xi) - 1)

   never below ``t_open`` (the lowest threshold at which the validation itself opens no incident)
   nor the ``floor_quantile`` (99.5 %) validation score (at most 0.5 % of benign packets flagged):
   ``threshold = max(t_evt, t_open, q_99.5)``.

4. Not absurdly high. ``p*`` is used down to ``1 / (EXTRAPOLATION_LIMIT * n)`` only. A target
   below that needs more validation time than there is (``D >= 86400 * theta /
   (EXTRAPOLATION_LIMIT * target)``): the threshold stops there, ``target_reachable`` is false,
   the expected rate at it (above the target) is reported and the message says how much traffic
   the target needs. Extrapolating further would put the threshold where the fit has no support
   and attacks would go unflagged.

Too little validation data (``MIN_VALIDATION_ROWS``, a time span, ``MIN_EXCESSES`` over ``u``)
falls back to the quantile rule, with the reason in the result (``quantile_rule``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from detection.features import client_side
from detection.opening import openings

VALIDATION_SHARE = 0.25  # the last quarter of the benign rows, in time order
MIN_VALIDATION_ROWS = 2500  # below this (10,000 training rows), the quantile rule
TAIL_QUANTILE = 0.98  # u: the GPD is fitted to the excesses over this validation quantile
MIN_EXCESSES = 50  # fewer excesses over u: no tail fit
RESOLVED_MIN = 100  # exceedances a threshold needs before its openings count as resolved
# The tail fit is trusted down to a per-packet probability of 1 / (this x validation rows): one
# exceedance in this many validation sets. Beyond, the threshold would rest on the fit alone.
EXTRAPOLATION_LIMIT = 10
DAY = 86400.0
_XI_ZERO = 1e-6


class CalibrationError(ValueError):
    """Validation data that cannot support the calibration (the quantile rule is used instead)."""


def client_entities(records: np.ndarray) -> np.ndarray:
    """Per record, an integer id of its conversation's client host (``features.client_side``):
    the entity whose anomalies the opening rule counts, for benign calibration data."""
    if not len(records):
        return np.zeros(0, np.int64)
    address = np.where(client_side(records)[:, None], records["src_ip"], records["dst_ip"])
    _, ids = np.unique(address, axis=0, return_inverse=True)
    return ids.reshape(-1).astype(np.int64)


def holdout(n: int, times: np.ndarray | None) -> tuple[int, str | None]:
    """Where the validation part starts among ``n`` time-ordered rows, and why there is none
    (then the cut is ``n``: fit on everything, quantile rule)."""
    if times is None:
        return n, "no packet times given: quantile rule on the training scores"
    cut = n - round(n * VALIDATION_SHARE)
    if n - cut < MIN_VALIDATION_ROWS:
        return n, (
            f"{n:,} training rows: calibration needs {math.ceil(MIN_VALIDATION_ROWS / VALIDATION_SHARE):,} "
            f"(a validation part of {MIN_VALIDATION_ROWS:,}); quantile rule on the training scores"
        )
    tail = np.asarray(times[cut:], dtype=np.float64)
    if not float(tail.max() - tail.min()) > 0:
        return n, "the validation part spans no time: quantile rule on the training scores"
    return cut, None


# ------------------------------------------------------------------------ generalized Pareto


def fit_gpd(excesses: np.ndarray) -> tuple[float, float, str]:
    """(shape xi, scale sigma, method) of a generalized Pareto fitted to positive ``excesses``.

    Maximum likelihood (SciPy's ``genpareto.fit`` with location 0) when SciPy is installed and
    the fit is finite; otherwise probability-weighted moments (Hosking & Wallis 1987), which
    exist for xi < 1.
    """
    y = np.sort(np.asarray(excesses, dtype=np.float64))
    if len(y) < 2 or not y[-1] > y[0]:
        raise CalibrationError("the excesses over the tail quantile are all equal: no tail to fit")
    xi, sigma = _gpd_pwm(y)
    try:
        from scipy.stats import genpareto
    except ImportError:
        return xi, sigma, "pwm"
    try:
        c, _, scale = genpareto.fit(y, floc=0.0)
    except (ValueError, RuntimeError, FloatingPointError):
        return xi, sigma, "pwm"
    if not (math.isfinite(c) and math.isfinite(scale) and scale > 0):
        return xi, sigma, "pwm"
    return float(c), float(scale), "mle"


def _gpd_pwm(y: np.ndarray) -> tuple[float, float]:
    """Probability-weighted moments of sorted ``y``: a0 = mean, a1 = mean((1 - p_i) y_i)."""
    n = len(y)
    p = (np.arange(1, n + 1) - 0.35) / n
    a0 = float(y.mean())
    a1 = float(((1.0 - p) * y).mean())
    d = a0 - 2.0 * a1
    if not d > 0:
        return 0.0, a0
    k = a0 / d - 2.0  # Hosking's k = -xi
    return -k, 2.0 * a0 * a1 / d


def gpd_sf(y: np.ndarray | float, xi: float, sigma: float) -> np.ndarray:
    """P(excess > y) of the generalized Pareto (0 beyond the upper end point when xi < 0)."""
    y = np.maximum(np.asarray(y, dtype=np.float64), 0.0)
    if abs(xi) < _XI_ZERO:
        return np.exp(-y / sigma)
    base = 1.0 + xi * y / sigma
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(base > 0, np.power(np.maximum(base, 1e-300), -1.0 / xi), 0.0)


def gpd_isf(q: float, xi: float, sigma: float) -> float:
    """The excess ``y`` with P(excess > y) = ``q`` (0 < q <= 1)."""
    if abs(xi) < _XI_ZERO:
        return -sigma * math.log(q)
    return sigma / xi * (q ** (-xi) - 1.0)


# ------------------------------------------------------------------------ calibration


def _incidents(scores: np.ndarray, times: np.ndarray, keys: np.ndarray, threshold: float) -> int:
    flagged = scores > threshold
    return len(openings(times[flagged], keys[flagged]))


def _lowest_quiet_threshold(scores: np.ndarray, times: np.ndarray, keys: np.ndarray, start: float) -> float:
    """The lowest score at or above ``start`` that, as the threshold, opens no incident.

    "Opens one" only grows as the threshold falls (more flagged packets, same rule), so a binary
    search over the distinct scores finds it.
    """
    candidates = np.unique(scores[scores >= start])
    if _incidents(scores, times, keys, start) == 0 or not len(candidates):
        return float(start)
    lo, hi = 0, len(candidates) - 1  # the highest score flags nothing: quiet
    while lo < hi:
        mid = (lo + hi) // 2
        if _incidents(scores, times, keys, float(candidates[mid])) == 0:
            hi = mid
        else:
            lo = mid + 1
    return float(candidates[lo])


def calibrate(
    scores: np.ndarray,
    times: np.ndarray,
    keys: np.ndarray,
    false_incidents_per_day: float,
    *,
    floor_quantile: float = 0.995,
) -> dict[str, Any]:
    """The threshold for validation ``scores`` (benign, not fitted on) at packet ``times`` of
    entities ``keys`` so that traffic like it opens at most ``false_incidents_per_day`` false
    incidents a day (module docstring: the method and its formula). Returns the threshold and
    the figures behind it (JSON-ready); raises CalibrationError when the data cannot support it.
    """
    if not false_incidents_per_day > 0:
        raise ValueError("false_incidents_per_day must be > 0")
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    k = np.asarray(keys)
    if not (len(s) == len(t) == len(k)):
        raise ValueError("scores, times and keys differ in length")
    n = len(s)
    seconds = float(t.max() - t.min()) if n else 0.0
    if n < MIN_VALIDATION_ROWS or not seconds > 0:
        raise CalibrationError(f"{n:,} validation rows over {seconds:.3g} s: too little to calibrate on")
    u = float(np.quantile(s, TAIL_QUANTILE))
    over = s[s > u]
    if len(over) < MIN_EXCESSES:
        raise CalibrationError(
            f"{len(over)} validation scores over the {TAIL_QUANTILE:.0%} quantile: no tail"
        )
    xi, sigma, fit_method = fit_gpd(over - u)
    zeta = len(over) / n

    # incidents per exceedance where the data resolves them
    resolved = []
    desc = np.sort(s)[::-1]
    count = len(over)
    while count >= RESOLVED_MIN:
        level = float(desc[count]) if count < n else u
        exceed = int((s > level).sum())
        if exceed:
            resolved.append((level, exceed, _incidents(s, t, k, level)))
        count //= 2
    theta = max([1.0 / len(over), *(opened / exceed for _, exceed, opened in resolved)])

    per_day = DAY / seconds
    q_target = false_incidents_per_day / (per_day * theta * n)  # p*: per-packet exceedance allowed
    reachable = q_target >= 1.0 / (EXTRAPOLATION_LIMIT * n)
    if not reachable:
        q_target = 1.0 / (EXTRAPOLATION_LIMIT * n)
    if q_target >= zeta:
        t_evt = float(np.quantile(s, 1.0 - min(q_target, 1.0)))
    else:
        t_evt = u + gpd_isf(q_target / zeta, xi, sigma)
    floor = float(np.quantile(s, floor_quantile))
    t_open = _lowest_quiet_threshold(s, t, k, u)
    threshold = max(t_evt, t_open, floor)
    candidates = {"evt": t_evt, "validation_openings": t_open, "floor_quantile": floor}
    binding = next(name for name, value in candidates.items() if value == threshold)

    p_at = float(zeta * gpd_sf(threshold - u, xi, sigma)) if threshold > u else float((s > threshold).mean())
    expected = per_day * max(_incidents(s, t, k, threshold), theta * n * p_at)
    reachable = reachable or expected <= false_incidents_per_day * (1 + 1e-9)
    needed = DAY * theta / (EXTRAPOLATION_LIMIT * false_incidents_per_day)
    message = (
        ""
        if reachable
        else f"the target needs at least {needed:,.0f} s of validation traffic, there are {seconds:,.0f} s "
        f"(the last {VALIDATION_SHARE:.0%} of the training data): the threshold stops where the tail fit "
        f"has support, expected {expected:.3g} false incidents/day; train on longer traffic"
    )
    return {
        "method": "evt",
        "threshold": threshold,
        "binding": binding,
        "target_false_incidents_per_day": float(false_incidents_per_day),
        "expected_false_incidents_per_day": float(expected),
        "target_reachable": reachable,
        "validation_seconds_needed": needed,
        "message": message,
        "validation_rows": n,
        "validation_seconds": seconds,
        "validation_entities": len(np.unique(k)),
        "validation_flagged_share": float((s > threshold).mean()),
        "validation_incidents_at_threshold": _incidents(s, t, k, threshold),
        "gpd": {
            "xi": xi,
            "sigma": sigma,
            "u": u,
            "tail_quantile": TAIL_QUANTILE,
            "excesses": len(over),
            "fit": fit_method,
        },
        "incidents_per_exceedance": theta,
        "resolved": [{"threshold": lv, "exceedances": ex, "incidents": op} for lv, ex, op in resolved],
        "candidates": candidates,
        "floor_quantile": floor_quantile,
    }


def quantile_rule(scores: np.ndarray, quantile: float, reason: str) -> dict[str, Any]:
    """The fallback: the ``quantile`` of ``scores``, with why calibration did not run."""
    s = np.asarray(scores, dtype=np.float64)
    threshold = float(np.quantile(s, quantile))
    return {
        "method": "quantile",
        "threshold": threshold,
        "quantile": quantile,
        "message": reason,
        "rows": len(s),
        "flagged_share": float((s > threshold).mean()),
    }


def summary(result: dict[str, Any]) -> str:
    """One line on how a threshold was chosen, for the training commands."""
    if result.get("method") != "evt":
        return f"quantile rule ({result.get('message', 'no calibration')})"
    binding = {
        "evt": "the tail fit",
        "validation_openings": "the validation's own incidents",
        "floor_quantile": f"the {result['floor_quantile']:.1%} quantile",
    }[result["binding"]]
    return (
        f"calibrated to {result['target_false_incidents_per_day']:g} false incidents/day: expected "
        f"{result['expected_false_incidents_per_day']:.3g}/day, {result['validation_flagged_share']:.3%} of "
        f"{result['validation_rows']:,} held-out packets ({result['validation_seconds']:,.0f} s) flagged; "
        f"set by {binding}" + (f"; {result['message']}" if result.get("message") else "")
    )
