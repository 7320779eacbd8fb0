"""The opening rule (detection.opening): sustained evidence opens, scattered anomalies do not."""

import numpy as np

from detection import opening


def test_scattered_anomalies_never_open():
    ts = np.arange(0, 1000, 3.0)  # one every 3 s: never 10 within 2 s
    assert opening.openings(ts, np.zeros(len(ts), int)) == []


def test_a_burst_opens_once_at_the_anomaly_that_completes_it():
    ts = np.concatenate([[0.0, 50.0], 100 + np.arange(30) * 0.1])
    assert opening.openings(ts, np.zeros(len(ts), int)) == [(0, 0.0, 100.9)]


def test_entities_are_separate_and_a_late_recurrence_is_a_new_incident():
    burst = np.arange(10) * 0.1
    ts = np.concatenate([burst, burst, burst + opening.RECUR + 10])
    keys = np.array(["a"] * 10 + ["b"] * 10 + ["a"] * 10)
    found = sorted(opening.openings(ts, keys))
    assert [k for k, _, _ in found] == ["a", "a", "b"]
    soon = np.concatenate([burst, burst + opening.QUIET + 5])
    assert len(opening.openings(soon, np.zeros(20, int))) == 1  # within RECUR: continued


def test_strays_after_an_opening_do_not_keep_it_going_a_later_burst_opens_anew():
    burst = np.arange(10) * 0.1
    strays = 50.0 + 50.0 * np.arange(7)  # one anomaly every 50 s after the burst
    ts = np.concatenate([burst, strays, strays[-1] + 30 + burst])
    found = opening.openings(ts, np.zeros(len(ts), int))
    # the strays 150 s on are more than RECUR after its last sustained evidence: a new candidate,
    # which the second burst opens
    assert found == [(0, 0.0, 0.9), (0, 150.0, strays[-1] + 30 + 0.9)]
    assert len(opening.openings(np.concatenate([burst, strays[:2]]), np.zeros(12, int))) == 1
