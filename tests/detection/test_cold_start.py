"""Cold start: statistics of a key without history (a new sensor, host, service, host pair or
socket) raise nothing and are never a reason; the grace ends after COLD_PACKETS or COLD_SECONDS."""

from __future__ import annotations

import json

import numpy as np
import pytest

from capture import services as capture_services
from capture.demo import DemoTraffic
from capture.models import Sensor
from capture.records import Batch, empty_records, ip_to_bytes
from detection import features, ingest, scoring, services
from detection.features import (
    COLD_PACKETS,
    COLD_SECONDS,
    IDLE_RESET,
    KEY_KINDS,
    FeatureExtractor,
    FeatureState,
    describe,
    feature_specs,
    key_kind,
)
from tests.detection.saved_states import as_npz

FRESH = "10.0.0.222"  # a host the demo never uses


def _tcp(rows):
    """(ts, src, dst, sport, dport) rows -> IPv4 TCP ACK records of 200 bytes."""
    r = empty_records(len(rows))
    for i, (ts, src, dst, sport, dport) in enumerate(rows):
        r[i]["ts"] = ts
        r[i]["src_ip"] = np.frombuffer(ip_to_bytes(src), np.uint8)
        r[i]["dst_ip"] = np.frombuffer(ip_to_bytes(dst), np.uint8)
        r[i]["sport"], r[i]["dport"] = sport, dport
    r["ip_version"], r["proto"], r["eth_type"], r["ttl"] = 4, 6, 0x0800, 64
    r["tcp_flags"], r["length"] = 16, 200
    return r


def _columns(fx: FeatureExtractor, kind: str | None) -> list[int]:
    return [j for j, spec in enumerate(fx.specs) if key_kind(spec) == kind]


def test_every_stateful_feature_needs_one_key_kind_and_header_features_none():
    for spec in feature_specs("advanced"):
        assert key_kind(spec) == (None if spec.level == "low" else key_kind(spec))
        assert spec.level == "low" or key_kind(spec) in KEY_KINDS
    fx = FeatureExtractor("advanced")
    assert {key_kind(fx.specs[fx.names.index(n)]) for n in ("client_iat_mean", "flow_pkts_per_s")} == {
        "client",
        "sock",
    }


@pytest.mark.parametrize("level", ["standard", "advanced"])
def test_a_new_key_is_cold_until_it_has_enough_packets_or_seconds(level):
    fx = FeatureExtractor(level)
    n_fast, gap_slow = 3 * COLD_PACKETS["client"], COLD_SECONDS["client"] / 4
    # one conversation of a new host, fast (a flood: 100 packets/s), then another new host, slow
    fast = [(100.0 + 0.01 * i, "10.0.0.5", "10.0.0.2", 40000, 80) for i in range(n_fast)]
    slow = [(200.0 + gap_slow * i, "10.0.0.6", "10.0.0.2", 40001, 81) for i in range(8)]
    # the slow host again after more than its idle reset: it starts afresh, cold
    again = [(slow[-1][0] + IDLE_RESET["client"] + 1.0, "10.0.0.6", "10.0.0.2", 40001, 81)]
    X, cold = fx.transform_cold(_tcp(fast + slow + again))
    assert X.shape == cold.shape and cold.dtype == bool

    assert not cold[:, _columns(fx, None)].any()  # per-packet header features are never cold
    for kind in KEY_KINDS:  # one client, service, host pair and socket per host: same story for all
        cols = _columns(fx, kind)
        per_packet = cold[:, cols]
        assert (per_packet == per_packet[:, :1]).all()  # a key kind's features are cold together
        was = per_packet[:, 0]
        # fast: warm once COLD_PACKETS packets came before (80 ms here), long before 2 s
        assert was[:n_fast].tolist() == [i < COLD_PACKETS[kind] for i in range(n_fast)]
        # slow: 4 packets per COLD_SECONDS, so warm by time after COLD_SECONDS, before 8 packets
        assert was[n_fast : n_fast + 8].tolist() == [gap_slow * i < COLD_SECONDS[kind] for i in range(8)]
        assert was[-1]


@pytest.mark.parametrize("level", ["standard", "advanced"])
def test_cold_masks_do_not_depend_on_batching_or_saving_the_state(level):
    fx = FeatureExtractor(level, chunk=4096)
    data = DemoTraffic(11, attack_prob=0.1).records(12_000)
    whole_x, whole_cold = fx.transform_cold(data, fx.new_state())
    assert 0 < whole_cold.any(axis=1).mean() < 1
    rng = np.random.default_rng(2)
    state = fx.new_state()
    xs, colds, i = [], [], 0
    while i < len(data):
        k = int(rng.choice([1, 3, 17, 250, 1999, 5000]))
        x, c = fx.transform_cold(data[i : i + k], state)
        xs.append(x)
        colds.append(c)
        if rng.random() < 0.3:  # the worker keeps the state in Redis between batches
            state = FeatureState.from_bytes(state.to_bytes())
        i += k
    np.testing.assert_array_equal(np.concatenate(colds), whole_cold)
    np.testing.assert_allclose(np.concatenate(xs), whole_x, rtol=2e-6, atol=1e-6)


def test_a_state_saved_by_the_previous_version_loads_cold():
    fx = FeatureExtractor("standard")
    state = fx.new_state()
    fx.transform(DemoTraffic(3).records(3000), state)
    assert scoring.load_state(state.to_bytes(), fx).packets == 3000
    old = scoring.load_state(as_npz(state, version=2), fx)
    assert old.packets == 0 and not old.history["client"].keys.size


def test_a_state_saved_as_an_npz_by_the_previous_release_continues():
    """The raw container replaced the npz; a sensor's state saved before the upgrade is not lost."""
    fx = FeatureExtractor("advanced")
    traffic = DemoTraffic(5).records(4000)
    state = fx.new_state()
    fx.transform(traffic[:2000], state)
    saved = as_npz(state)
    assert saved[:2] == b"PK" and not state.to_bytes().startswith(b"PK")
    restored = scoring.load_state(saved, fx)
    assert restored.packets == 2000
    again = FeatureState.from_bytes(state.to_bytes())
    X = fx.transform(traffic[2000:], state)
    assert np.array_equal(fx.transform(traffic[2000:], restored), X, equal_nan=True)
    assert np.array_equal(fx.transform(traffic[2000:], again), X, equal_nan=True)


def test_a_raw_state_of_another_version_or_cut_short_loads_cold():
    fx = FeatureExtractor("standard")
    state = fx.new_state()
    fx.transform(DemoTraffic(3).records(3000), state)
    raw = state.to_bytes()
    other = raw.replace(b'"version": %d' % features.STATE_VERSION, b'"version": 2', 1)
    assert other != raw
    assert scoring.load_state(other, fx).packets == 0
    assert scoring.load_state(raw[:-8], fx).packets == 0
    assert scoring.load_state(raw, fx).packets == 3000


# --------------------------------------------------------------------- scoring (live and offline)


@pytest.fixture
def model_in_use(db, settings, tmp_path):
    """An isolation forest at the standard level trained on benign demo traffic, the model in use.

    quantile 0.5: it flags half of normal traffic, so that nearly every packet is explained.
    Trained on fewer packets than the calibration to a false-incident rate needs, so the quantile
    rule sets the threshold (calibrated, the new host's odd packets sat at its edge).
    """
    settings.NETMON_MODEL_DIR = tmp_path / "models"
    traffic = DemoTraffic(seed=1, attack_prob=0.0)
    row = services.create_training("isolation_forest", "standard", "test")
    row = services.train(row, [traffic.records(9_000)], activate=False, quantile=0.5)
    assert row.metrics["calibration"]["method"] == "quantile"
    services.activate_model(row, force_level=True)
    capture_services.update_config(
        {"ml_model": "isolation_forest", "feature_level": "standard"}, source="test"
    )
    scoring._models.__init__()  # as in a new process
    return traffic


def _fresh_host_among(traffic: DemoTraffic, n: int = 3000, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """``n`` more benign packets with ``k`` odd ones of a new host among them, 0.3 s apart (its
    first packets: too few and too recent to be judged on statistics); (records, the new host's rows)."""
    later = traffic.records(n)
    template = later[later["dport"] == 53][:1]  # a DNS query to the demo's DNS server...
    fresh = np.repeat(template, k)
    fresh["src_ip"] = np.frombuffer(ip_to_bytes(FRESH), np.uint8)
    fresh["ts"] = later["ts"][0] + 0.3 * np.arange(1, k + 1)
    # ...made odd per packet (TTL 1, TCP with URG/PSH/FIN, a big payload): worth explaining
    fresh["sport"], fresh["dport"], fresh["proto"], fresh["tcp_flags"] = 40000 + np.arange(k), 31337, 6, 0x29
    fresh["ttl"], fresh["length"], fresh["payload_len"] = 1, 1400, 1346
    records = np.sort(np.concatenate([later, fresh]), order="ts", kind="stable")
    records["seq"] = np.arange(1, len(records) + 1)
    return records, np.flatnonzero((records["src_ip"] == fresh["src_ip"][0]).all(axis=1))


def test_scoring_leaves_cold_values_alone_by_default(model_in_use):
    # NEUTRALISE_COLD is off: replacing cold values cost ranking on the labeled captures (README)
    assert features.NEUTRALISE_COLD is False
    _, model, fx = scoring._models.current()
    state = fx.new_state()
    fx.transform(model_in_use.records(5000), state)
    records, _ = _fresh_host_among(model_in_use)
    unscored = FeatureState.from_bytes(state.to_bytes())
    X, _ = scoring.score_records(model, fx, records, state)
    np.testing.assert_array_equal(X, fx.transform(records, unscored))


def test_score_records_replaces_cold_statistics_by_the_training_median_when_switched_on(
    model_in_use, monkeypatch
):
    monkeypatch.setattr(features, "NEUTRALISE_COLD", True)
    current = scoring._models.current()
    assert current is not None
    _, model, fx = current
    state = fx.new_state()
    fx.transform(model_in_use.records(5000), state)  # the sensor has history; the new host has not
    records, mine = _fresh_host_among(model_in_use)
    unscored = FeatureState.from_bytes(state.to_bytes())

    X, scores = scoring.score_records(model, fx, records, state)

    assert len(scores) == len(records)
    median = model.stats["p50"].astype(np.float32)
    # the new host's client, service, host pair and sockets are new: every statistic is cold
    for j, spec in enumerate(fx.specs):
        if key_kind(spec) is not None:
            np.testing.assert_array_equal(X[mine, j], median[j], err_msg=spec.name)
    raw = fx.transform(records, unscored)
    header = _columns(fx, None)
    np.testing.assert_array_equal(X[:, header], raw[:, header])  # never cold
    # elsewhere a value is either its own or, for a key still cold, the median
    changed = raw != X
    assert (X[changed] == np.broadcast_to(median, X.shape)[changed]).all()
    assert (raw == X).all(axis=1).mean() > 0.3  # packets whose keys all have history keep every value


def _explanations(scored: scoring.ScoredBatch, records: np.ndarray) -> dict[int, tuple[str, str]]:
    """Every flagged row's explanation (the worker explains only representatives; this asks for all)."""
    flagged = np.flatnonzero(scored.is_anomaly)
    return dict(zip(flagged.tolist(), scored.explain(np.arange(len(flagged)), records[flagged]), strict=True))


def _assert_no_cold_reason(scored: scoring.ScoredBatch, records: np.ndarray, before: FeatureState) -> None:
    """No explanation of a read names a statistic that was cold for its packet."""
    fx = FeatureExtractor(before.level)
    _, cold = fx.transform_cold(records, before)
    explanations = _explanations(scored, records)
    assert explanations
    for i, (_, contributions) in explanations.items():
        for item in json.loads(contributions):
            assert not cold[i, fx.names.index(item["feature"])], (i, item["feature"])


def test_a_cold_statistic_is_never_a_reason(model_in_use):
    sensor = Sensor.objects.create(name="cold")
    state = ingest.SensorState()
    warm_up = model_in_use.records(5000)
    first = scoring.score_batch(sensor, Batch(sensor="cold", records=warm_up), state)
    assert first is not None
    state.features = first.feature_state
    records, mine = _fresh_host_among(model_in_use)
    before = FeatureState.from_bytes(state.features)

    scored = scoring.score_batch(sensor, Batch(sensor="cold", records=records), state)

    assert scored is not None
    explanations = _explanations(scored, records)
    explained = [int(i) for i in mine if int(i) in explanations]
    assert explained, "the new host's odd packets should be flagged and explained"
    for i in explained:
        named = [item["feature"] for item in json.loads(explanations[i][1])]
        # its host, service, host pair and sockets are new: none of their statistics may be a reason
        stateful = [n for n in named if key_kind(describe(n)) is not None]
        assert not stateful, explanations[i][0]
    _assert_no_cold_reason(scored, records, before)
    _assert_no_cold_reason(first, warm_up, FeatureState("standard"))  # a new sensor starts cold
