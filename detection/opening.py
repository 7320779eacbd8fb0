"""When flagged packets become an incident: sustained evidence, quiet close and recurrence.

The one home of these numbers (README, "Incidents"). ``detection.incidents`` applies them live,
read by read; calibration and ``evaluate_detector`` apply them offline with ``openings`` to count
the incidents a threshold would open. Django-free.

- An entity's anomalies are a *candidate* until ``OPEN_MIN_ANOMALIES`` of them fall within
  ``OPEN_WINDOW`` seconds: then the incident opens (and is shown, announced, notified). A lone
  flagged packet, or a few scattered ones, never opens one; they stay stored on the candidate.
- An incident is *active* while its entity keeps triggering with sustained evidence (again
  ``OPEN_MIN_ANOMALIES`` within ``OPEN_WINDOW``); ``QUIET`` seconds without it close it (it shows
  as quiet).
- Anomalies of the same entity within ``RECUR`` seconds of its last sustained evidence continue
  the same incident (a recurrence soon after is the same attack); later ones start a new
  candidate. A lone stray anomaly within ``RECUR`` still joins the incident (stored and counted)
  but does not keep it active: a host's odd benign anomaly now and then must not make a second
  attack minutes later a continuation of the first.
"""

from __future__ import annotations

import numpy as np

OPEN_MIN_ANOMALIES = 10  # anomalies of one entity ...
OPEN_WINDOW = 2.0  # ... within this many seconds open an incident
QUIET = 60.0  # seconds without anomalies after which an incident is quiet (closed)
RECUR = 120.0  # seconds after its last anomaly during which the entity continues the incident


def dense(ts: np.ndarray, k: int = OPEN_MIN_ANOMALIES, window: float = OPEN_WINDOW) -> int:
    """Index into sorted ``ts`` of the first anomaly that completes ``k`` within ``window``; -1 if none."""
    if len(ts) < k:
        return -1
    hit = np.flatnonzero(ts[k - 1 :] - ts[: len(ts) - k + 1] <= window)
    return int(hit[0]) + k - 1 if len(hit) else -1


def last_dense(ts: np.ndarray, k: int = OPEN_MIN_ANOMALIES, window: float = OPEN_WINDOW) -> int:
    """Index into sorted ``ts`` of the last anomaly that completes ``k`` within ``window``; -1 if none."""
    if len(ts) < k:
        return -1
    hit = np.flatnonzero(ts[k - 1 :] - ts[: len(ts) - k + 1] <= window)
    return int(hit[-1]) + k - 1 if len(hit) else -1


def openings(ts: np.ndarray, keys: np.ndarray) -> list[tuple[object, float, float]]:
    """The incidents the rule opens for anomalies at times ``ts`` of entities ``keys`` (any order).

    One ``(key, first_seen, opened)`` per incident: the time of its first anomaly and of the
    anomaly that made the evidence sustained. Anomalies of a key split into separate incidents
    where a gap exceeds ``RECUR``, and, once one opened, where an anomaly comes more than ``RECUR``
    after its last sustained evidence (strays in between joined it): what ``detection.incidents``
    does read by read, anomaly by anomaly here.
    """
    ts = np.asarray(ts, dtype=np.float64)
    keys = np.asarray(keys)
    if not len(ts):
        return []
    order = np.lexsort((ts, keys))
    ts, keys = ts[order], keys[order]
    start = np.ones(len(ts), bool)
    start[1:] = (keys[1:] != keys[:-1]) | (np.diff(ts) > RECUR)
    bounds = np.append(np.flatnonzero(start), len(ts))
    out = []
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        key = keys[lo].item() if hasattr(keys[lo], "item") else keys[lo]
        seg = ts[lo:hi]
        while (at := dense(seg)) >= 0:  # (a loop only over segments that open: few on benign traffic)
            out.append((key, float(seg[0]), float(seg[at])))
            sustained = np.full(len(seg), -np.inf)
            k = OPEN_MIN_ANOMALIES
            ok = seg[k - 1 :] - seg[: len(seg) - k + 1] <= OPEN_WINDOW
            sustained[k - 1 :][ok] = seg[k - 1 :][ok]
            active = np.maximum.accumulate(sustained[at:])  # its last sustained evidence so far
            lapse = np.flatnonzero(seg[at + 1 :] - active[:-1] > RECUR)
            if not len(lapse):
                break
            seg = seg[at + 1 + int(lapse[0]) :]  # a new candidate from that anomaly on
    return out
