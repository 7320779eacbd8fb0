"""Community ID v1 (corelight/community-id-spec): the flow hash that joins our records with other tools.

``community_ids(records)`` gives each record of a batch its flow's ID, e.g. ``1:LQU9qZlK+B5F3KDmev6m5PMibrg=``
(None for records without an IP layer). It is the spec's computation done a read at a time: the
ordering of the endpoints, the ICMP/ICMPv6 type mapping and the hash input are built with NumPy for
the whole array, and SHA-1 runs once per distinct flow of the read (the packets of a 5-tuple share
it). The ``communityid`` package (Corelight's reference implementation) computes the same value per
tuple in pure Python, tens of microseconds each: ``community_id`` calls it for single tuples (an API
page), and the tests hold the two to the same answers on the spec's vectors and on random tuples.

Django-free: the worker's storage, the API and the exports use it.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

import numpy as np
from communityid import CommunityID, FlowTuple, icmp, icmp6

__all__ = ["PREFIX", "community_id", "community_ids", "protocol_number"]

PREFIX = "1:"  # version 1, base64 (the default rendering every tool uses)
SEED = 0  # the spec's default seed; every tool must use the same one for IDs to match
MAX_LENGTH = 32  # "1:" + 28 base64 characters of a SHA-1 digest (a column's width)

_TCP, _UDP, _ICMP, _ICMP6, _SCTP = 6, 17, 1, 58, 132
_PORT_PROTOS = (_ICMP, _TCP, _UDP, _ICMP6, _SCTP)  # hashed with ports (the spec's list)


def _mapping(table: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """An ICMP type -> the type of its answer (Zeek's mapping), as lookup arrays: (mapped, known)."""
    mapped = np.zeros(256, dtype=np.uint16)
    known = np.zeros(256, dtype=bool)
    for mtype, other in table.items():
        mapped[mtype], known[mtype] = other, True
    return mapped, known


_ICMP_MAP = _mapping(icmp.TYPE_MAPPER)
_ICMP6_MAP = _mapping(icmp6.TYPE_MAPPER)
_V4_PREFIX = np.array([0] * 10 + [0xFF, 0xFF], dtype=np.uint8)


def community_ids(records: np.ndarray, seed: int = SEED) -> list[str | None]:
    """Each record's Community ID v1 (``RECORD_DTYPE``: ``sport``/``dport`` hold an ICMP type/code).

    Records without an IP layer get None. Equal to the ``communityid`` package's value per tuple.
    """
    n = len(records)
    if not n:
        return []
    version = records["ip_version"]
    proto = records["proto"].astype(np.uint16)
    src = records["src_ip"]
    dst = records["dst_ip"]
    sport = records["sport"].astype(np.uint16)
    dport = records["dport"].astype(np.uint16)
    # ICMP: the type is the "source port"; a type with an answer type (echo, timestamp, ...) pairs
    # with it as the "destination port", so request and answer share an ID; other types keep
    # their code and are one-way (never flipped).
    one_way = np.zeros(n, dtype=bool)
    for number, (mapped, known) in ((_ICMP, _ICMP_MAP), (_ICMP6, _ICMP6_MAP)):
        is_icmp = proto == number
        if is_icmp.any():
            mtype = np.minimum(sport, 255)
            pairs = is_icmp & known[mtype] & (sport < 256)
            dport = np.where(pairs, mapped[mtype], dport)
            one_way |= is_icmp & ~pairs
    ported = np.isin(proto, _PORT_PROTOS)
    sport = np.where(ported, sport, 0)
    dport = np.where(ported, dport, 0)
    # Ordered: the smaller address first (network byte order), the smaller port first when the
    # addresses are equal. IPv4 is stored IPv4-mapped: the common prefix does not change the order.
    less, equal = _compare(src, dst)
    ordered = one_way | less | (equal & ported & (sport < dport))
    flip = ~ordered
    first = np.where(flip[:, None], dst, src)
    second = np.where(flip[:, None], src, dst)
    p1 = np.where(flip, dport, sport)
    p2 = np.where(flip, sport, dport)
    # The hash input, laid out for IPv6 (seed, 16 + 16 address bytes, proto, pad, ports): IPv4 rows
    # are rebuilt below with 4-byte addresses. One fixed-width row per record, so that identical
    # flows are found with one np.unique.
    key = np.zeros((n, 41), dtype=np.uint8)
    key[:, 0:2] = np.frombuffer(int(seed).to_bytes(2, "big"), np.uint8)
    v4 = version == 4
    key[:, 2:18] = first
    key[:, 18:34] = second
    key[v4, 2:6] = first[v4, 12:16]
    key[v4, 6:10] = second[v4, 12:16]
    key[v4, 10:34] = 0
    at = np.where(v4, 10, 34)  # where the protocol byte goes
    rows = np.arange(n)
    key[rows, at] = proto
    key[rows, at + 2] = p1 >> 8
    key[rows, at + 3] = p1 & 0xFF
    key[rows, at + 4] = p2 >> 8
    key[rows, at + 5] = p2 & 0xFF
    length = at + np.where(ported, 6, 2)
    key[:, 40] = length  # part of the row, so that distinct lengths never share an ID
    valid = (version == 4) | (version == 6)
    flat = np.ascontiguousarray(key).view(np.dtype((np.void, 41))).ravel()
    unique, inverse = np.unique(flat, return_inverse=True)
    ids: list[str | None] = []
    sha1, b64 = hashlib.sha1, base64.b64encode
    for item in unique.tolist():
        ids.append(PREFIX + b64(sha1(item[: item[40]]).digest()).decode("ascii"))
    out = [ids[i] for i in inverse.ravel().tolist()]
    if not valid.all():
        for i in np.flatnonzero(~valid).tolist():
            out[i] = None
    return out


def _compare(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: a < b and a == b, comparing the 16 bytes as big-endian numbers."""
    differs = a != b
    equal = ~differs.any(axis=1)
    first = np.argmax(differs, axis=1)  # the first byte that differs
    rows = np.arange(len(a))
    less = ~equal & (a[rows, first] < b[rows, first])
    return less, equal


_PROTOCOL_NUMBERS = {
    "ICMP": 1, "IGMP": 2, "TCP": 6, "UDP": 17, "GRE": 47, "ESP": 50, "ICMPV6": 58, "SCTP": 132
}  # fmt: skip


def protocol_number(name: str) -> int | None:
    """The IP protocol number of a stored protocol name ("TCP", "ICMPv6", "IP-47"); None when not IP."""
    upper = (name or "").upper()
    if upper in _PROTOCOL_NUMBERS:
        return _PROTOCOL_NUMBERS[upper]
    if upper.startswith("IP-") and upper[3:].isdigit():
        return int(upper[3:])
    return None


_ALGORITHM = CommunityID(seed=SEED)


@lru_cache(maxsize=4096)
def community_id(
    protocol: str | int, src_ip: str | None, dst_ip: str | None, sport: int, dport: int
) -> str | None:
    """The Community ID of one stored tuple (a protocol name or number, addresses as text), by the
    ``communityid`` package; None for a record without an IP layer. Cached: a page of packets
    repeats a few flows."""
    number = protocol if isinstance(protocol, int) else protocol_number(protocol)
    if number is None or not src_ip or not dst_ip:
        return None
    try:
        if number in _PORT_PROTOS:
            flow = FlowTuple(number, src_ip, dst_ip, int(sport), int(dport))
        else:
            flow = FlowTuple(number, src_ip, dst_ip)
    except Exception:  # the package raises its own types (and ValueError): a bad tuple has no ID
        return None
    return _ALGORITHM.calc(flow)
