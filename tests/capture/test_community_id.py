"""Community ID v1: the vectorised computation gives the spec's test vectors and the package's values."""

from __future__ import annotations

import ipaddress
import random

import numpy as np
import pytest
from communityid import CommunityID, FlowTuple

from capture.community import community_id, community_ids, protocol_number
from capture.records import empty_records, ip_to_bytes

# corelight/community-id-spec, baseline/baseline_deflt.json (seed 0, base64), as records hold them:
# ICMP's type in sport and its code in dport (the baseline lists the mapped "ports": for a type with
# an answer type, dport there is that type, here the code, 0).
SPEC_VECTORS = [
    (58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 135, 0, "1:dGHyGvjMfljg6Bppwm3bg0LO8TY="),
    (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 136, 0, "1:dGHyGvjMfljg6Bppwm3bg0LO8TY="),
    (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 135, 0, "1:zavyT/cezQr1fmImYCwYnMXbgck="),
    (58, "3ffe:501:1800:2345::2", "3ffe:507:0:1:200:86ff:fe05:80da", 3, 0, "1:2ObVBgIn28oZvibYZhZMBgh7WdQ="),
    (58, "3ffe:501:410:0:2c0:dfff:fe47:33e", "3ffe:507:0:1:200:86ff:fe05:80da", 1, 4,
     "1:hLZd0XGWojozrvxqE0dWB1iM6R0="),
    (58, "3ffe:507:0:1:200:86ff:fe05:80da", "3ffe:501:0:1001::2", 128, 0, "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg="),
    (58, "3ffe:501:0:1001::2", "3ffe:507:0:1:200:86ff:fe05:80da", 129, 0, "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg="),
    (58, "fe80::200:86ff:fe05:80da", "ff02::2", 133, 0, "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0="),
    (58, "fe80::260:97ff:fe07:69ea", "ff02::1", 134, 0, "1:pkvHqCL88/tg1k4cPigmZXUtL00="),
    (1, "192.168.0.89", "192.168.0.1", 8, 0, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="),
    (1, "192.168.0.1", "192.168.0.89", 0, 0, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="),
    (1, "10.0.0.1", "10.0.0.2", 11, 0, "1:YHxtAirCG//0OzkcVAukqKQN9xM="),
    (6, "2001:470:e5bf:dead:4957:2174:e82c:4887", "2607:f8b0:400c:c03::1a", 63943, 25,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4="),
    (6, "2607:f8b0:400c:c03::1a", "2001:470:e5bf:dead:4957:2174:e82c:4887", 25, 63943,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4="),
    (132, "192.168.170.8", "192.168.170.56", 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs="),
    (132, "192.168.170.56", "192.168.170.8", 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs="),
    (6, "128.232.110.120", "66.35.250.204", 34855, 80, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
    (6, "66.35.250.204", "128.232.110.120", 80, 34855, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
    (17, "192.168.1.52", "8.8.8.8", 54585, 53, "1:d/FP5EW3wiY1vCndhwleRRKHowQ="),
    (17, "8.8.8.8", "192.168.1.52", 53, 54585, "1:d/FP5EW3wiY1vCndhwleRRKHowQ="),
    (46, "10.1.12.1", "10.1.12.2", 0, 0, "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw="),
    (46, "10.1.12.2", "10.1.12.1", 0, 0, "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw="),
]  # fmt: skip


def records_of(tuples: list[tuple]) -> np.ndarray:
    records = empty_records(len(tuples))
    for i, (proto, src, dst, sport, dport, *_) in enumerate(tuples):
        records["ip_version"][i] = ipaddress.ip_address(src).version
        records["proto"][i] = proto
        records["src_ip"][i] = np.frombuffer(ip_to_bytes(src), np.uint8)
        records["dst_ip"][i] = np.frombuffer(ip_to_bytes(dst), np.uint8)
        records["sport"][i], records["dport"][i] = sport, dport
    return records


def package_value(proto: int, src: str, dst: str, sport: int, dport: int) -> str:
    """Corelight's package on the same tuple, called directly."""
    ported = proto in (1, 6, 17, 58, 132)
    flow = FlowTuple(proto, src, dst, sport, dport) if ported else FlowTuple(proto, src, dst)
    return CommunityID().calc(flow)


def test_the_specs_test_vectors():
    got = community_ids(records_of(SPEC_VECTORS))
    assert got == [expected for *_, expected in SPEC_VECTORS]
    assert [community_id(*vector[:5]) for vector in SPEC_VECTORS] == got  # the package, per tuple


def test_random_tuples_equal_the_packages_values_both_ways():
    rng = random.Random(14)
    tuples = []
    for _ in range(3000):
        proto = rng.choice([1, 6, 17, 58, 132, 47, 6, 17])
        v6 = proto == 58 or (proto != 1 and rng.random() < 0.3)

        def address(v6=v6):
            if v6:
                return str(ipaddress.IPv6Address((0x20010DB8 << 96) + rng.randrange(4)))
            return f"10.0.{rng.randrange(2)}.{rng.randrange(3)}"  # equal addresses happen: ports decide

        if proto in (1, 58):
            sport, dport = rng.randrange(256), rng.randrange(16)
        else:
            sport, dport = (
                rng.choice([0, 22, 80, rng.randrange(65536)]),
                rng.choice([0, 22, rng.randrange(65536)]),
            )
        tuples.append((proto, address(), address(), sport, dport))
    got = community_ids(records_of(tuples))
    assert got == [package_value(*t) for t in tuples]
    turned = community_ids(records_of([(p, d, s, dp, sp) for p, s, d, sp, dp in tuples if p not in (1, 58)]))
    assert turned == [g for g, t in zip(got, tuples, strict=True) if t[0] not in (1, 58)]


def test_records_without_an_ip_layer_have_none_and_an_empty_read_nothing():
    records = records_of([(6, "10.0.0.1", "10.0.0.2", 1000, 80, "")])
    arp = empty_records(1)
    arp["eth_type"] = 0x0806
    assert community_ids(np.concatenate([arp, records]))[0] is None
    assert community_ids(empty_records(0)) == []
    assert community_id("ARP", None, None, 0, 0) is None


@pytest.mark.parametrize(("name", "number"), [("TCP", 6), ("ICMPv6", 58), ("IP-47", 47), ("ARP", None)])
def test_protocol_names_as_stored(name, number):
    assert protocol_number(name) == number
