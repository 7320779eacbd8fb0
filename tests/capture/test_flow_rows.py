"""A read's flow rows, worked out per distinct 5-tuple, are what adding one packet after the other gives."""

from __future__ import annotations

import random

import numpy as np

from capture.community import community_ids
from capture.records import PacketColumns, empty_records, ip_to_bytes
from capture.storage import flow_rows

ADDRESSES = ["10.0.0.1", "10.0.0.2", "10.0.0.10", "192.168.1.7", "2001:db8::1", "2001:db8::a", "fe80::1"]


def _records(n: int, seed: int) -> np.ndarray:
    rng = random.Random(seed)
    r = empty_records(n)
    t = 1_700_000_000.0
    for i in range(n):
        t += rng.choice([0.0, 0.0000004, 0.001, 0.3])  # equal times, and times one microsecond apart
        r[i]["seq"] = i + 1
        r[i]["ts"] = t - rng.choice([0.0, 0.0, 0.5])  # now and then a packet earlier than the last
        r[i]["length"] = rng.randrange(40, 1500)
        if rng.random() < 0.05:  # no IP layer (ARP): no flow
            r[i]["eth_type"] = 0x0806
            continue
        v6 = rng.random() < 0.3
        pool = [a for a in ADDRESSES if (":" in a) == v6]
        r[i]["ip_version"] = 6 if v6 else 4
        r[i]["eth_type"] = 0x86DD if v6 else 0x0800
        r[i]["proto"] = rng.choice([6, 6, 17, 58 if v6 else 1, 47])
        r[i]["src_ip"] = np.frombuffer(ip_to_bytes(rng.choice(pool)), np.uint8)
        r[i]["dst_ip"] = np.frombuffer(ip_to_bytes(rng.choice(pool)), np.uint8)
        r[i]["sport"] = rng.choice([22, 80, 443, 40000, 40001, 65535])
        r[i]["dport"] = rng.choice([22, 80, 443, 40000])
    return r


def _one_after_the_other(sensor_id: int, records: np.ndarray, cols: PacketColumns) -> list[tuple]:
    """The flows as each packet in turn adds to its own (the flow's first packet gives its ID)."""
    ids = community_ids(records)
    flows: dict[tuple, list] = {}
    for i, (sport, dport, length) in enumerate(
        zip(records["sport"].tolist(), records["dport"].tolist(), records["length"].tolist(), strict=True)
    ):
        if cols.src_ip[i] is None:
            continue
        key = (cols.protocol[i], cols.src_ip[i], sport, cols.dst_ip[i], dport)
        entry = flows.get(key)
        if entry is None:
            flows[key] = [cols.ts[i], cols.ts[i], 1, length, ids[i]]
        else:
            entry[0], entry[1] = min(entry[0], cols.ts[i]), max(entry[1], cols.ts[i])
            entry[2] += 1
            entry[3] += length
    return [(sensor_id, *key, *values) for key, values in flows.items()]


def test_flow_rows_are_those_of_one_packet_after_the_other():
    for seed in range(5):
        records = _records(3000, seed)
        cols = PacketColumns.of(records)
        assert flow_rows(7, records, cols) == _one_after_the_other(7, records, cols)


def test_without_ip_packets_or_community_ids():
    records = _records(50, 3)
    records["ip_version"] = 0
    assert flow_rows(7, records, PacketColumns.of(records)) == []
    records = _records(50, 4)
    rows = flow_rows(7, records, PacketColumns.of(records), with_community_id=False)
    assert rows and {row[-1] for row in rows} == {""}
