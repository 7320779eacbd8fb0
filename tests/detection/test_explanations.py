"""Explanations cite only values outside what training saw, farthest first, with the comparison.

A model is trained on synthetic rows of a few real features (so the real sentences are used),
whose training ranges are known by construction; rows are then explained through
``explain_records``, what the worker calls.
"""

from __future__ import annotations

import numpy as np
import pytest

from capture.records import empty_records, ip_to_bytes
from detection.ml import IsolationForestModel

NAMES = [
    "service_syn_per_s",  # 0..14 per second
    "client_distinct_dports",  # 1..5
    "client_iat_mean",  # 10, 50, 100 or 150 ms
    "client_syn_share",  # 0 %, 10 %, 20 % or 30 %
    "flag_urg",  # set on 0.4 % of the packets
    "ttl",  # 64 or 128
]
MEDIAN = {"service_syn_per_s": 7, "client_distinct_dports": 3, "client_iat_mean": 0.1,
          "client_syn_share": 0.1, "flag_urg": 0, "ttl": 64}  # fmt: skip


def _training(n: int = 4000) -> np.ndarray:
    rng = np.random.default_rng(0)
    X = np.empty((n, len(NAMES)), np.float32)
    X[:, 0] = rng.integers(0, 15, n)
    X[:, 1] = rng.integers(1, 6, n)
    X[:, 2] = rng.choice([0.01, 0.05, 0.1, 0.15], n)
    X[:, 3] = rng.choice([0.0, 0.1, 0.2, 0.3], n)
    X[:, 4] = 0
    X[rng.choice(n, 16, replace=False), 4] = 1  # 16 of 4,000: 0.4 %
    X[:, 5] = rng.choice([64, 128], n, p=[0.75, 0.25])
    return X


@pytest.fixture(scope="module")
def forest():
    return IsolationForestModel(NAMES, n_estimators=50).fit(_training())


class ColumnOrderModel(IsolationForestModel):
    """An isolation forest that blames its features in column order, whatever their values: a
    model's contributions are its own business, and need not follow the distance from normal."""

    def _contributions(self, Z: np.ndarray) -> np.ndarray:
        return (np.abs(Z) + 1.0) * 10.0 ** -np.arange(Z.shape[1])


def _records(n: int) -> np.ndarray:
    """n SYNs from 10.0.0.5:51000 to 127.0.0.10:8080/tcp."""
    r = empty_records(n)
    r["ip_version"], r["proto"], r["tcp_flags"], r["sport"], r["dport"] = 4, 6, 2, 51000, 8080
    r["src_ip"] = np.frombuffer(ip_to_bytes("10.0.0.5"), np.uint8)
    r["dst_ip"] = np.frombuffer(ip_to_bytes("127.0.0.10"), np.uint8)
    return r


def _explain(model, names: list[str], rows: list[dict[str, float]], top: int = 3) -> list[str]:
    X = np.array([[{**MEDIAN, **row}.get(n, 0.0) for n in names] for row in rows], np.float32)
    return [text for text, _ in model.explain_records(X, _records(len(X)), top=top)]


def test_a_value_inside_the_training_range_is_never_a_reason(forest):
    # One value outside: it alone is cited (the forest's other contributors are inside the range).
    (one,) = _explain(forest, NAMES, [{"client_distinct_dports": 40}])
    assert one == "10.0.0.5 contacted 40 distinct ports in 2 s; normally under 6."
    # None outside: said plainly, naming the value nearest an edge of its range, with the range.
    edge, middle = _explain(forest, NAMES, [{"client_distinct_dports": 5}, {}])
    assert edge == (
        "An unusual combination of otherwise normal values (closest to the edge: 10.0.0.5 contacted "
        "5 distinct ports in 2 s; normally 1 to 5)."
    )
    assert middle == "An unusual combination of otherwise normal values."
    # A flag most packets have unset, and a common code, are no reasons either.
    (common,) = _explain(forest, NAMES, [{"ttl": 128, "client_distinct_dports": 40}])
    assert "TTL" not in common and "URG" not in common


def test_a_value_inside_the_range_is_no_reason_even_when_the_model_blames_it_most():
    model = ColumnOrderModel(NAMES, n_estimators=10).fit(_training())
    X = np.array([[MEDIAN[n] for n in NAMES]], np.float32)
    X[0, 3] = 0.9  # the fourth contributor is the only value outside the range
    assert model.explain(X)[0][0].feature == "service_syn_per_s"  # in range, blamed most
    (text,) = _explain(model, NAMES, [{"client_syn_share": 0.9}])
    assert text == (
        "90 % of the SYN/ACK packets of 10.0.0.5's conversations in 2 s were connection attempts "
        "(SYN); normally under 30 %."
    )


def test_reasons_are_ranked_by_how_far_outside_the_range_they_lie():
    model = ColumnOrderModel(NAMES, n_estimators=10).fit(_training())
    # The model blames the SYN rate (first column) most; the port count lies much farther out.
    (text,) = _explain(model, NAMES, [{"service_syn_per_s": 16, "client_distinct_dports": 400}])
    assert text == (
        "10.0.0.5 contacted 400 distinct ports in 2 s; normally under 6. "
        "16 SYN/s to 127.0.0.10:8080/tcp; normally under 14."
    )


def test_a_statistic_at_several_time_scales_is_cited_once():
    names = ["client_w_l5", "client_w_l1", "client_w_l0.1", "service_syn_per_s"]
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.uniform(1, 10, 3000), rng.uniform(1, 30, 3000), rng.uniform(1, 300, 3000),
                         rng.integers(0, 15, 3000)]).astype(np.float32)  # fmt: skip
    model = IsolationForestModel(names, n_estimators=20).fit(X)
    (text,) = _explain(model, names, [{"client_w_l5": 5000, "client_w_l1": 9000, "client_w_l0.1": 9000,
                                       "service_syn_per_s": 2100}])  # fmt: skip
    sentences = text.split(". ")
    assert len(sentences) == 2 and sum("carried about" in s for s in sentences) == 1, text
    assert "2,100 SYN/s to 127.0.0.10:8080/tcp; normally under 14" in text


def test_the_sentences_say_the_comparison_in_the_same_human_units(forest):
    (text,) = _explain(
        forest,
        NAMES,
        [{"service_syn_per_s": 2100, "client_iat_mean": 2.0, "client_syn_share": 0.95, "flag_urg": 1,
          "ttl": 37}],
        top=5,
    )  # fmt: skip
    assert set(text.removesuffix(".").split(". ")) == {
        "2,100 SYN/s to 127.0.0.10:8080/tcp; normally under 14",
        "10.0.0.5's conversations had a packet every 2 s; normally under 150 ms",
        "95 % of the SYN/ACK packets of 10.0.0.5's conversations in 2 s were connection attempts (SYN); "
        "normally under 30 %",
        "The TCP URG flag is set; only 0.4 % of normal packets are like that",
        "TTL 37; never seen in training",
    }, text
