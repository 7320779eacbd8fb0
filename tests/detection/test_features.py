"""Feature extraction: shapes, exactness against naive references, batch-size invariance, state, garbage."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from capture.demo import DemoTraffic
from capture.records import empty_records, ip_to_bytes
from detection.features import (
    DECAYS,
    LEVELS,
    WINDOW,
    FeatureExtractor,
    FeatureState,
    client_side,
    describe,
    feature_names,
    feature_specs,
)
from tests.detection.saved_states import as_npz


@pytest.fixture(scope="module")
def stream():
    return DemoTraffic(11, attack_prob=0.1).records(40_000)


def _packets(rows):
    """(ts, src, dst, sport, dport, flags, length) tuples -> IPv4 TCP records."""
    r = empty_records(len(rows))
    for i, (ts, src, dst, sport, dport, flags, length) in enumerate(rows):
        r[i]["ts"] = ts
        r[i]["src_ip"] = np.frombuffer(ip_to_bytes(src), np.uint8)
        r[i]["dst_ip"] = np.frombuffer(ip_to_bytes(dst), np.uint8)
        r[i]["sport"], r[i]["dport"], r[i]["tcp_flags"], r[i]["length"] = sport, dport, flags, length
    r["ip_version"], r["proto"], r["eth_type"], r["ttl"] = 4, 6, 0x0800, 64
    return r


@pytest.mark.parametrize("level", LEVELS)
def test_names_specs_and_width_agree(level, stream):
    fx = FeatureExtractor(level)
    X = fx.transform(stream[:2000])
    names = feature_names(level)
    assert X.shape == (2000, len(names)) and X.dtype == np.float32
    assert len(set(names)) == len(names)
    assert [s.name for s in feature_specs(level)] == names
    for spec in feature_specs(level):
        assert spec.description and spec.text
        spec.text.format(
            value=1.0, src="10.0.0.1", dst="10.0.0.2", sport=1, dport=2, proto="TCP",
            client="10.0.0.1", service="10.0.0.2:2/tcp",
        )  # fmt: skip
    assert describe("client_distinct_dports").kind == "value"
    assert len(feature_names("low")) < len(feature_names("standard")) < len(feature_names("advanced"))


@pytest.mark.parametrize("level", ["standard", "advanced"])
def test_any_batching_gives_the_same_features(level, stream):
    fx = FeatureExtractor(level, chunk=4096)
    data = stream[:12_000]
    whole = fx.transform(data, fx.new_state())
    rng = np.random.default_rng(1)
    state = fx.new_state()
    parts, i = [], 0
    while i < len(data):
        k = int(rng.choice([1, 2, 17, 250, 1999, 5000]))
        parts.append(fx.transform(data[i : i + k], state))
        if rng.random() < 0.3:  # the worker keeps the state in Redis between batches
            state = FeatureState.from_bytes(state.to_bytes())
        i += k
    batched = np.concatenate(parts)
    np.testing.assert_allclose(batched, whole, rtol=2e-6, atol=1e-6)


def _client_is_src(row) -> bool:
    """The rule of ``client_side``, written out for one (ts, src, dst, sport, dport, flags, length) row."""
    flags = row[5]
    if flags & 2:  # SYN: from the client; SYN-ACK: from the server
        return not flags & 16
    return row[3] >= row[4]


def _ends(row):
    """(client, server, client port, server port) of a row."""
    _, src, dst, sport, dport = row[:5]
    return (src, dst, sport, dport) if _client_is_src(row) else (dst, src, dport, sport)


def test_windows_match_a_naive_reference():
    rng = np.random.default_rng(5)
    n = 600
    ts = 1000.0 + np.cumsum(rng.exponential(0.02, n))
    ts[100:110] = ts[100]  # identical timestamps
    hosts = [f"10.0.0.{i}" for i in range(1, 6)]
    rows = [
        (ts[i], hosts[rng.integers(5)], hosts[rng.integers(5)],
         int(rng.integers(1, 30)), int(rng.integers(1, 40)),
         int(rng.choice([2, 16, 18, 4])), int(rng.integers(60, 1500)))
        for i in range(n)
    ]  # fmt: skip
    rec = _packets(rows)
    fx = FeatureExtractor("standard")
    state = fx.new_state()
    X = np.concatenate([fx.transform(rec[:250], state), fx.transform(rec[250:], state)])
    col = {name: j for j, name in enumerate(fx.names)}
    for i in range(0, n, 7):
        t, src, dst = rows[i][0], rows[i][1], rows[i][2]
        client, server, _, server_port = _ends(rows[i])
        win = [r for r in rows[: i + 1] if r[0] > t - WINDOW]
        # the client's conversations, both directions
        mine = [r for r in win if _ends(r)[0] == client]
        assert X[i, col["client_pkts_per_s"]] == pytest.approx(len(mine) / WINDOW)
        assert X[i, col["client_distinct_dports"]] == len({_ends(r)[3] for r in mine})
        assert X[i, col["client_distinct_servers"]] == len({_ends(r)[1] for r in mine})
        assert X[i, col["client_distinct_sports"]] == len({_ends(r)[2] for r in mine})
        assert X[i, col["client_size_mean"]] == pytest.approx(np.mean([r[6] for r in mine]), rel=1e-5)
        assert X[i, col["client_size_std"]] == pytest.approx(np.std([r[6] for r in mine]), rel=1e-4, abs=1e-3)
        assert X[i, col["client_rst_per_s"]] == pytest.approx(sum(1 for r in mine if r[5] & 4) / WINDOW)
        syn = sum(1 for r in mine if r[5] & 2 and not r[5] & 16)
        ack = sum(1 for r in mine if r[5] & 16)
        assert X[i, col["client_syn_share"]] == pytest.approx(syn / max(syn + ack, 1))
        service = [r for r in win if _ends(r)[1::2] == (server, server_port)]
        assert X[i, col["service_pkts_per_s"]] == pytest.approx(len(service) / WINDOW)
        assert X[i, col["service_distinct_clients"]] == len({_ends(r)[0] for r in service})
        assert X[i, col["service_distinct_sports"]] == len({_ends(r)[2] for r in service})
        syns = sum(1 for r in service if r[5] & 2 and not r[5] & 16)
        assert X[i, col["service_syn_per_s"]] == pytest.approx(syns / WINDOW)
        chan = [r for r in win if r[1] == src and r[2] == dst]
        assert X[i, col["chan_distinct_sports"]] == len({r[3] for r in chan})


def test_damped_statistics_match_a_naive_reference():
    rng = np.random.default_rng(9)
    n = 300
    ts = 50.0 + np.cumsum(rng.exponential(0.05, n))
    hosts = ["10.0.0.1", "10.0.0.2", "192.0.2.7"]
    # requests (1000 -> 80) and replies (80 -> 1000): the client is the end on port 1000
    ports = [(1000, 80) if rng.random() < 0.5 else (80, 1000) for _ in range(n)]
    rows = [
        (ts[i], hosts[rng.integers(3)], hosts[rng.integers(3)], *ports[i], 16, int(rng.integers(60, 1500)))
        for i in range(n)
    ]
    fx = FeatureExtractor("advanced")
    X = fx.transform(_packets(rows))
    col = {name: j for j, name in enumerate(fx.names)}
    for lam in DECAYS:
        for i in range(0, n, 11):
            t = rows[i][0]
            for ent, end in (("client", 0), ("service", 1)):
                key = _ends(rows[i])[end]
                w = ls = 0.0
                for r in rows[: i + 1]:
                    if _ends(r)[end] == key:
                        d = 2.0 ** (-lam * (t - r[0]))
                        w += d
                        ls += d * r[6]
                assert X[i, col[f"{ent}_w_l{lam:g}"]] == pytest.approx(w, rel=1e-5)
                assert X[i, col[f"{ent}_mean_l{lam:g}"]] == pytest.approx(ls / w, rel=1e-5)


def test_port_scan_shows_as_distinct_ports_and_expires():
    rows = [(100.0 + i * 0.01, "10.0.0.66", "10.0.0.3", 40000, 1 + i, 2, 60) for i in range(150)]
    rows.append((100.0 + 150 * 0.01 + 3 * WINDOW, "10.0.0.66", "10.0.0.3", 40000, 80, 2, 60))
    fx = FeatureExtractor("standard")
    X = fx.transform(_packets(rows))
    j = fx.names.index("client_distinct_dports")
    assert X[149, j] == 150
    assert X[150, j] == 1  # the window has moved on


def test_the_client_is_the_end_that_started_the_conversation():
    rows = [
        (1.0, "10.0.0.1", "10.0.0.2", 80, 40000, 2, 60),  # SYN: from the client, whatever the ports
        (1.0, "10.0.0.2", "10.0.0.1", 40000, 80, 18, 60),  # SYN-ACK: to the client
        (1.0, "10.0.0.1", "10.0.0.2", 40000, 443, 16, 60),  # otherwise the higher port
        (1.0, "10.0.0.2", "10.0.0.1", 443, 40000, 4 | 16, 60),  # a reset from the server
        (1.0, "10.0.0.1", "10.0.0.2", 5353, 5353, 16, 60),  # equal ports: the source
    ]
    r = _packets(rows)
    assert client_side(r).tolist() == [True, False, True, False, True]
    icmp = empty_records(4)
    icmp["ip_version"], icmp["proto"] = 4, 1
    icmp["sport"] = [8, 0, 3, 11]  # echo request, echo reply, unreachable, time exceeded
    assert client_side(icmp).tolist() == [True, False, False, False]
    icmp["ip_version"], icmp["proto"] = 6, 58
    icmp["sport"] = [128, 129, 1, 3]
    assert client_side(icmp).tolist() == [True, False, False, False]


def test_a_scan_of_a_server_leaves_its_other_clients_features_alone():
    # A benign client's conversation with a server, with and without a SYN scan of that server
    # from another host at the same time (the server answering with a RST from every port).
    request, reply = ("10.0.0.5", "10.0.0.2", 50000, 8081), ("10.0.0.2", "10.0.0.5", 8081, 50000)
    benign = [(100.0 + 0.05 * i, *(reply if i % 2 else request), 16, 400) for i in range(80)]
    scan = []
    for k in range(1500):
        t = 100.0 + 0.0025 * k
        scan += [
            (t, "10.0.0.66", "10.0.0.2", 41000, 1 + k, 2, 60),
            (t + 1e-4, "10.0.0.2", "10.0.0.66", 1 + k, 41000, 20, 60),
        ]
    both = sorted(benign + scan, key=lambda r: r[0])  # stable: ties keep the benign packet first
    fx = FeatureExtractor("advanced")
    alone = fx.transform(_packets(benign))
    X = fx.transform(_packets(both))
    mixed = X[[both.index(r) for r in benign]]
    host_level = [j for j, name in enumerate(fx.names) if name.startswith(("client_", "service_"))]
    np.testing.assert_allclose(mixed[:, host_level], alone[:, host_level], rtol=1e-6)
    # ...while the scanner's own packets carry the scan (after 2 s, a full window of it)
    probes = np.array([both.index(r) for r in scan[1600::2]])
    assert (X[probes, fx.names.index("client_distinct_dports")] > 100).all()
    assert (X[probes, fx.names.index("client_rst_per_s")] > 100).all()


def test_held_open_connections_count_from_the_handshake_until_closed_or_silent():
    # slowloris: 300 connections to one web server, each sending a header line every 2 s and
    # never a whole request; beside it a browser whose connections close after each page.
    rows = []
    for c in range(300):
        t = 10.0 + c / 150  # opened at 150/s
        rows += [
            (t, "10.0.0.74", "10.0.0.2", 40000 + c, 8081, 2, 74),  # SYN
            (t + 1e-4, "10.0.0.2", "10.0.0.74", 8081, 40000 + c, 18, 74),  # SYN-ACK
            (t + 2e-4, "10.0.0.74", "10.0.0.2", 40000 + c, 8081, 24, 130),  # a partial request
        ]
        rows += [(t + 2 * k, "10.0.0.74", "10.0.0.2", 40000 + c, 8081, 24, 86) for k in (1, 2, 3)]
    for k in range(20):  # the browser: a page every 0.5 s, each on its own closed connection
        t = 10.0 + 0.5 * k
        rows += [
            (t, "10.0.0.10", "10.0.0.2", 50000 + k, 8081, 2, 74),
            (t + 0.01, "10.0.0.10", "10.0.0.2", 50000 + k, 8081, 24, 400),
            (t + 0.02, "10.0.0.2", "10.0.0.10", 8081, 50000 + k, 25, 3000),  # the page, FIN
            (t + 0.03, "10.0.0.10", "10.0.0.2", 50000 + k, 8081, 17, 66),  # FIN: closed already
        ]
    rows.append((10.0 + 2 + 60.5 + 8, "10.0.0.74", "10.0.0.2", 40000, 8081, 24, 86))  # silent > 60 s
    rows.sort(key=lambda r: r[0])
    rec = _packets(rows)
    fx = FeatureExtractor("standard")
    j = fx.names.index("client_open_conns")
    X = fx.transform(rec)[:, j]
    src = np.array([r[1] for r in rows])
    size = np.array([r[6] for r in rows])
    trickle = (src == "10.0.0.74") & (size == 86)
    assert X[trickle][:-1].min() == 300  # every header line of a held connection: all 300 open
    assert X[trickle][-1] == 1  # the others fell silent for over a minute: only this one again
    browser = src == "10.0.0.10"
    assert set(X[browser].tolist()) <= {0.0, 1.0}  # one at a time (its last FIN: none open)
    # open once the handshake is done: a connection's SYN and SYN-ACK count those before it
    openers = (src == "10.0.0.74") & (size == 74)
    assert X[openers][:6].tolist() == [0, 1, 2, 3, 4, 5]
    handshake = (np.array([r[2] for r in rows]) == "10.0.0.74") & (size == 74)
    assert X[handshake][:3].tolist() == [0, 1, 2]
    # a SYN flood's attempts (answered, never completed) hold nothing open
    flood = [(20.0 + k * 1e-3, "10.0.0.67", "10.0.0.2", 30000 + k, 8081, 2, 60) for k in range(500)]
    flood += [(20.0 + k * 1e-3 + 1e-4, "10.0.0.2", "10.0.0.67", 8081, 30000 + k, 18, 60) for k in range(500)]
    flood.sort(key=lambda r: r[0])
    assert fx.transform(_packets(flood))[:, j].max() == 0
    # exact whatever the batching, with the state saved and restored between batches
    for cut in (1, 600, 1201, 1800, len(rows) - 1):
        state = fx.new_state()
        head = fx.transform(rec[:cut], state)[:, j]
        tail = fx.transform(rec[cut:], FeatureState.from_bytes(state.to_bytes()))[:, j]
        np.testing.assert_array_equal(np.concatenate([head, tail]), X)


def test_a_state_saved_before_open_connections_loads_with_none_known():
    rows = [(1.0 + c, "10.0.0.9", "10.0.0.2", 40000 + c, 80, 2, 60) for c in range(3)]
    fx = FeatureExtractor("standard")
    state = fx.new_state()
    fx.transform(_packets(rows), state)
    with np.load(io.BytesIO(as_npz(state))) as z:
        arrays = {k: z[k] for k in z.files if not k.startswith("conn")}  # as the code before saved it
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    old = FeatureState.from_bytes(buf.getvalue())
    assert len(old.conns.keys) == 0 and len(old.conn_pairs.keys) == 0 and len(old.history["sock"].keys) == 3
    # a connection open before is counted again from its next packet on
    later = [
        (5.0, "10.0.0.9", "10.0.0.2", 40000, 80, 24, 80),
        (5.1, "10.0.0.9", "10.0.0.2", 40001, 80, 24, 80),
    ]
    assert fx.transform(_packets(later), old)[:, fx.names.index("client_open_conns")].tolist() == [1, 2]


def test_open_connections_match_a_naive_reference():
    rng = np.random.default_rng(12)
    n = 3000
    ts = 100.0 + np.cumsum(rng.exponential(0.05, n))
    ts[1000:] += 70.0  # a silence longer than CONN_IDLE
    hosts = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    flags = [2, 18, 16, 24, 17, 4, 20, 1]  # SYN, SYN-ACK, ACK, PSH-ACK, FIN-ACK, RST, RST-ACK, FIN
    weights = [0.15, 0.05, 0.4, 0.25, 0.05, 0.04, 0.03, 0.03]
    rows = []
    for i in range(n):
        a, b = rng.choice(3, 2, replace=False)
        sport, dport = int(rng.integers(40000, 40012)), int(rng.choice([80, 443]))
        if rng.random() < 0.5:  # the server's answer
            a, b, sport, dport = b, a, dport, sport
        rows.append((ts[i], hosts[a], hosts[b], sport, dport, int(rng.choice(flags, p=weights)), 60))
    fx = FeatureExtractor("standard")
    rec = _packets(rows)
    j = fx.names.index("client_open_conns")
    X = fx.transform(rec)[:, j]
    state, parts = fx.new_state(), []
    for lo, hi in zip([0, 7, 8, 500, 999, 1001, 2500], [7, 8, 500, 999, 1001, 2500, n], strict=True):
        parts.append(fx.transform(rec[lo:hi], state)[:, j])
        state = FeatureState.from_bytes(state.to_bytes())
    np.testing.assert_array_equal(np.concatenate(parts), X)
    conns: dict = {}  # socket pair -> [pair it counts for, last time, 0 not open / 1 open / 2 closed]
    for i, (t, src, dst, sport, dport, f, _) in enumerate(rows):
        client, server, _, server_port = _ends(rows[i])
        pair = (client, server, server_port)
        key = frozenset([(src, sport), (dst, dport)])
        c = conns.get(key)
        if c is None or t - c[1] > 60.0:
            c = conns[key] = [None, t, 0]  # new, or silent too long: a new one, not open yet
        was = c[2]
        if f & 5:
            now = 2  # a FIN or RST closes it
        elif f & 2:
            now = was if f & 16 else 0  # a SYN-ACK changes nothing; a SYN starts it again
        else:
            now = 2 if was == 2 else 1  # the handshake's last ACK, or any later packet, opens it
        if now == 1 and was != 1:
            c[0] = pair
        c[1], c[2] = t, 1 if 1 in (was, now) else now  # a closing packet still counts it
        want = sum(1 for p, last, st in conns.values() if st == 1 and p == pair and t - last <= 60.0)
        assert X[i] == want, i
        c[2] = now


@pytest.mark.parametrize("level", LEVELS)
def test_garbage_input_never_gives_nan_or_inf(level, stream):
    r = stream[:3000].copy()
    r["length"][::7] = 0
    r["payload_len"][::5] = 4_000_000_000
    r["length"][::11] = 4_294_967_295
    r["ts"][100:400] = r["ts"][100]  # identical
    r["ts"][500:600] = r["ts"][500:600] - 1e6  # backwards
    r["ts"][700] = np.nan
    r["ts"][701] = np.inf
    r["ts"][702] = -np.inf
    r["ts"][703] = 1e300
    r["ts"][704:710] = 0.0
    r["ttl"][::3] = 255
    r["ip_version"][::13] = 9
    r["proto"][::17] = 255
    zeros = empty_records(500)
    fx = FeatureExtractor(level)
    state = fx.new_state()
    for batch in (r, zeros, r[:1], stream[3000:4000]):
        X = fx.transform(batch, state)
        assert np.isfinite(X).all()
    assert fx.transform(empty_records(0), state).shape == (0, fx.n_features)


def test_state_roundtrip_bounds_and_mismatch(stream):
    fx = FeatureExtractor("advanced", max_keys=50, max_tail=300)
    state = fx.new_state()
    fx.transform(stream[:5000], state)
    assert all(len(t.keys) <= 50 for t in state.tables.values())
    assert len(state.tail["t"]) <= 300
    again = FeatureState.from_bytes(state.to_bytes())
    assert again.t_last == state.t_last and again.packets == 5000
    for name, tab in state.tables.items():
        np.testing.assert_array_equal(again.tables[name].sums, tab.sums)
    assert again.memory_bytes() == state.memory_bytes()
    with pytest.raises(ValueError, match="another level"):
        FeatureExtractor("standard").transform(stream[:10], again)


def test_idle_keys_are_evicted_without_changing_results(stream):
    fx = FeatureExtractor("advanced")
    first, later = stream[:2000].copy(), stream[2000:4000].copy()
    later["ts"] += 4000.0  # everything idle far longer than any reset time
    state = fx.new_state()
    fx.transform(first, state)
    fx.transform(later[:1], state)
    assert sum(len(t.keys) for t in state.tables.values()) <= 4  # only the one new packet's keys
    np.testing.assert_allclose(fx.transform(later[1:], state), fx.transform(later)[1:], rtol=2e-6, atol=1e-6)
    assert math.isfinite(state.t_last)
