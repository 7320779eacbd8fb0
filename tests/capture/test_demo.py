"""DemoTraffic: determinism, record sanity, injected attacks, live pacing (speed: bench/capture.py)."""

from __future__ import annotations

import numpy as np
import pytest

from capture.demo import ATTACK_CODES, DemoTraffic
from capture.records import RECORD_DTYPE, ip_to_text


def test_same_seed_same_stream_however_sliced():
    whole = DemoTraffic(3, attack_prob=0.05).records(30_000)
    d = DemoTraffic(3, attack_prob=0.05)
    parts = np.concatenate([d.records(1), d.records(999), d.records(7), d.records(28_993)])
    assert whole.dtype == RECORD_DTYPE
    assert (whole == parts).all()
    assert not (DemoTraffic(4).records(1000) == whole[:1000]).all()


def test_records_are_plausible():
    r = DemoTraffic(1).records(50_000, first_seq=100)
    assert (r["seq"] == np.arange(100, 50_100)).all()
    assert (np.diff(r["ts"]) >= 0).all()
    assert (r["label"] == 0).all()
    protos = set(np.unique(r["proto"][r["ip_version"] == 4]).tolist())
    assert {1, 6, 17} <= protos
    arp = r["eth_type"] == 0x0806
    assert arp.any() and (r["ip_version"][arp] == 0).all()
    assert (r["length"] >= 60).all() and (r["length"] >= r["payload_len"]).all()
    tcp = r[r["proto"] == 6]
    assert {80, 443, 22} <= set(np.unique(np.minimum(tcp["sport"], tcp["dport"])).tolist())
    srcs = {ip_to_text(x, 4) for x in r["src_ip"][r["ip_version"] == 4][:2000]}
    assert any(s.startswith("10.0.0.") for s in srcs) and any(not s.startswith("10.") for s in srcs)
    # the rate is about the configured pps
    pps = len(r) / (r["ts"][-1] - r["ts"][0])
    assert 1000 < pps < 4000


@pytest.mark.parametrize("kind", sorted(ATTACK_CODES))
def test_injected_attack_is_labelled(kind):
    d = DemoTraffic(2)
    d.records(2000)
    d.inject(kind)
    r = d.records(30_000)
    labels = set(np.unique(r["label"]).tolist())
    assert labels == {0, ATTACK_CODES[kind]}
    attack = r[r["label"] > 0]
    assert len(attack) > 150
    if kind == "port_scan":
        assert len(np.unique(attack["dport"][attack["tcp_flags"] == 2])) > 150
        assert (attack["tcp_flags"] & 4).any()  # RST answers from closed ports
    if kind == "syn_flood":
        assert (attack["tcp_flags"] == 2).mean() > 0.6
    if kind == "udp_flood":
        assert (attack["proto"] == 17).mean() > 0.8


def test_attack_probability_and_kinds():
    r = DemoTraffic(5, attack_prob=0.2, attacks=["udp_flood"]).records(100_000)
    assert set(np.unique(r["label"]).tolist()) == {0, ATTACK_CODES["udp_flood"]}
    with pytest.raises(ValueError, match="unknown attack"):
        DemoTraffic(1, attacks=["ping_of_death"])
    with pytest.raises(ValueError, match="unknown attack"):
        DemoTraffic(1).inject("nope")


def test_stream_rescales_time_and_cuts_batches():
    now = [1000.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    d = DemoTraffic(1)
    gen = d.stream(500, batch_size=200, first_seq=10, max_delay=0.25, clock=lambda: now[0], sleep=sleep)
    batches = [next(gen) for _ in range(40)]
    seqs = np.concatenate([b["seq"] for b, _ in batches])
    assert (seqs == np.arange(10, 10 + len(seqs))).all()
    for b, due in batches:
        assert 1 <= len(b) <= 200
        assert b["ts"][-1] - b["ts"][0] <= 0.25 + 1e-9
        assert due == b["ts"][-1]
    ts = np.concatenate([b["ts"] for b, _ in batches])
    assert ts[0] == pytest.approx(1000.0)
    assert 250 < len(ts) / (ts[-1] - ts[0]) < 1000  # about 500 packets/s on the wall clock
    assert slept and now[0] == pytest.approx(batches[-1][1])
