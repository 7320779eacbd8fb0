"""Decoding raw frames into RECORD_DTYPE arrays (see capture/records.py).

Public API:

- ``decode_frames(batch, first_seq=0, *, vectorised=True) -> np.ndarray``: a FrameBatch (pcapio)
  -> records with ``seq`` = first_seq, first_seq + 1, ... (gap-free).
- ``decode_frame(data, linktype) -> dict``: one frame -> its decoded fields (the reference
  decoder; also the fallback for uncommon frames).
- ``iter_record_batches(source, sensor, batch_size, first_seq=0, stats=None) -> Iterator[Batch]``:
  a capture file/stream straight to record batches.

Link types: Ethernet (1), raw IP (101, 228, 229), Linux SLL (113), SLL2 (276), NULL (0) and
LOOP (108); any other gets status 6 ("unsupported link type") with ts/length/caplen filled.
Above the link layer: 802.1Q/802.1ad/QinQ (``vlan`` = outermost VLAN id), IPv4 (options skipped
by IHL, ``frag`` = 1 for any fragment, later fragments have no ports), IPv6 with extension
headers (hop-by-hop, routing, fragment, destination options, AH), TCP, UDP, SCTP (ports),
ICMP/ICMPv6 (``sport`` = type, ``dport`` = code), ARP. Other EtherTypes (MPLS, LLDP, ...) and IP
protocols (GRE, ESP, ...) are recorded by number only.

ARP records: ``ip_version`` stays 0 (not IP), ``src_ip``/``dst_ip`` hold the sender/target IPv4
addresses (IPv4-mapped) and ``sport`` the ARP opcode (1 request, 2 reply).

``payload_len`` is the transport payload implied by the IP header lengths (so Ethernet padding
is not counted); when the IP length field is zero (segmentation offload) the captured bytes are
used. For a later fragment or a protocol without a decoded transport header it is the IP payload.

Speed: the common case (any supported link type, VLAN tags, IPv4 with or without options, IPv6
without extension headers, TCP/UDP/ICMP/ARP) is decoded for the whole batch at once with NumPy
over a window of the first ``WINDOW`` bytes of every frame; only frames that need bytes beyond
the window or an IPv6 extension-header walk go through ``decode_frame`` one by one. Both paths
give identical records (tests compare them).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from capture.pcapio import FrameBatch, ReadStats, Source, iter_frame_batches
from capture.records import RECORD_DTYPE, Batch

__all__ = ["WINDOW", "decode_frame", "decode_frames", "iter_record_batches"]

WINDOW = 96  # bytes of each frame the vectorised path looks at

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

ETH_IPV4, ETH_IPV6, ETH_ARP = 0x0800, 0x86DD, 0x0806
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
_MAX_TAGS = 8
# BSD loopback address families: AF_INET is 2 everywhere, AF_INET6 differs per OS
_AF_INET6 = (10, 24, 28, 30)

# IPv6 extension headers we walk; AH (51) has its own length unit
_V6_EXT = (0, 43, 44, 60, 51)
_MAX_EXT = 16

# Transport header handling per IP protocol: minimum header bytes and how to read it.
_TCP, _PORTS, _ICMP = 1, 2, 3
_L4_KIND = {6: _TCP, 17: _PORTS, 132: _PORTS, 136: _PORTS, 1: _ICMP, 58: _ICMP}
_L4_MIN = {6: 20, 17: 8, 132: 12, 136: 8, 1: 8, 58: 8}

# status codes (capture/records.py DECODE_ERRORS)
S_LINK, S_V4_TRUNC, S_V4_IHL, S_V6_TRUNC, S_L4_TRUNC = 1, 2, 3, 4, 5
S_LINKTYPE, S_V6_EXT, S_ARP, S_VERSION = 6, 7, 8, 9

_FIELDS = (
    "eth_type",
    "vlan",
    "src_mac",
    "dst_mac",
    "ip_version",
    "proto",
    "src_ip",
    "dst_ip",
    "sport",
    "dport",
    "tcp_flags",
    "ttl",
    "payload_len",
    "frag",
    "status",
)
_V4_PREFIX = bytes(10) + b"\xff\xff"
_ZERO16 = bytes(16)
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U32LE = struct.Struct("<I")


# ---------------------------------------------------------------------------------------------
# reference decoder: one frame at a time


def decode_frame(data: bytes, linktype: int) -> dict[str, Any]:
    """Decode one frame; returns the RECORD_DTYPE fields from ``eth_type`` to ``status``.

    ``src_ip``/``dst_ip`` are 16-byte ``bytes``. This is the reference for the vectorised path.
    """
    r: dict[str, Any] = dict.fromkeys(_FIELDS, 0)
    r["src_ip"] = r["dst_ip"] = _ZERO16
    cap = len(data)
    # -- link layer
    if linktype == LINKTYPE_ETHERNET:
        if cap < 14:
            r["status"] = S_LINK
            return r
        r["dst_mac"] = int.from_bytes(data[0:6], "big")
        r["src_mac"] = int.from_bytes(data[6:12], "big")
        et = _U16.unpack_from(data, 12)[0]
        l3 = 14
    elif linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        version = data[0] >> 4 if cap else 0
        if linktype == LINKTYPE_IPV4 or (linktype == LINKTYPE_RAW and version == 4):
            et = ETH_IPV4
        elif linktype == LINKTYPE_IPV6 or (linktype == LINKTYPE_RAW and version == 6):
            et = ETH_IPV6
        else:
            r["status"] = S_VERSION
            return r
        l3 = 0
    elif linktype == LINKTYPE_LINUX_SLL:
        if cap < 16:
            r["status"] = S_LINK
            return r
        if _U16.unpack_from(data, 4)[0] == 6:
            r["src_mac"] = int.from_bytes(data[6:12], "big")
        et = _U16.unpack_from(data, 14)[0]
        l3 = 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        if cap < 20:
            r["status"] = S_LINK
            return r
        if data[11] == 6:
            r["src_mac"] = int.from_bytes(data[12:18], "big")
        et = _U16.unpack_from(data, 0)[0]
        l3 = 20
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if cap < 4:
            r["status"] = S_LINK
            return r
        family = _U32.unpack_from(data, 0)[0]
        if linktype == LINKTYPE_NULL:
            # NULL is in the byte order of the machine that captured; try both
            le = _U32LE.unpack_from(data, 0)[0]
            if le == 2 or le in _AF_INET6:
                family = le
        et = ETH_IPV4 if family == 2 else ETH_IPV6 if family in _AF_INET6 else 0
        l3 = 4
    else:
        r["status"] = S_LINKTYPE
        return r
    # -- VLAN tags
    tags = 0
    while et in VLAN_TPIDS:
        if cap < l3 + 4 or tags >= _MAX_TAGS:
            r["eth_type"] = et
            r["status"] = S_LINK
            return r
        if tags == 0:
            r["vlan"] = _U16.unpack_from(data, l3)[0] & 0x0FFF
        et = _U16.unpack_from(data, l3 + 2)[0]
        l3 += 4
        tags += 1
    if linktype == LINKTYPE_ETHERNET and et <= 1500:
        et = 0  # 802.3 length field, not an EtherType
    r["eth_type"] = et
    avail = cap - l3
    # -- network layer
    if et == ETH_IPV4:
        if avail < 20:
            r["ip_version"] = 4
            r["status"] = S_V4_TRUNC
            return r
        b0 = data[l3]
        if b0 >> 4 != 4:
            r["status"] = S_VERSION
            return r
        r["ip_version"] = 4
        ihl = (b0 & 15) * 4
        total = _U16.unpack_from(data, l3 + 2)[0]
        fragword = _U16.unpack_from(data, l3 + 6)[0]
        r["ttl"] = data[l3 + 8]
        proto = r["proto"] = data[l3 + 9]
        r["src_ip"] = _V4_PREFIX + data[l3 + 12 : l3 + 16]
        r["dst_ip"] = _V4_PREFIX + data[l3 + 16 : l3 + 20]
        later_fragment = (fragword & 0x1FFF) != 0
        r["frag"] = 1 if fragword & 0x3FFF else 0
        if ihl < 20:
            r["status"] = S_V4_IHL
            return r
        if avail < ihl:
            r["status"] = S_V4_TRUNC
            return r
        ip_payload = total - ihl if total >= ihl else avail - ihl
        l4 = l3 + ihl
    elif et == ETH_IPV6:
        if avail < 40:
            r["ip_version"] = 6
            r["status"] = S_V6_TRUNC
            return r
        if data[l3] >> 4 != 6:
            r["status"] = S_VERSION
            return r
        r["ip_version"] = 6
        plen = _U16.unpack_from(data, l3 + 4)[0]
        nh = data[l3 + 6]
        r["ttl"] = data[l3 + 7]
        r["src_ip"] = data[l3 + 8 : l3 + 24]
        r["dst_ip"] = data[l3 + 24 : l3 + 40]
        # payload length 0 means a jumbogram (or offload): use what was captured
        ip_payload = plen if plen else avail - 40
        l4 = l3 + 40
        later_fragment = False
        walked = 0
        while nh in _V6_EXT:
            if walked >= _MAX_EXT or cap < l4 + 8:
                r["proto"] = nh
                r["status"] = S_V6_EXT
                return r
            if nh == 44:
                size = 8
                fragword = _U16.unpack_from(data, l4 + 2)[0]
                r["frag"] = 1
                later_fragment = (fragword >> 3) != 0
            elif nh == 51:
                size = (data[l4 + 1] + 2) * 4
            else:
                size = (data[l4 + 1] + 1) * 8
            if cap < l4 + size or size > ip_payload:
                r["proto"] = nh
                r["status"] = S_V6_EXT
                return r
            nh = data[l4]
            l4 += size
            ip_payload -= size
            walked += 1
            if later_fragment:
                break
        proto = r["proto"] = nh
    elif et == ETH_ARP:
        if avail < 8:
            r["status"] = S_ARP
            return r
        hlen, plen = data[l3 + 4], data[l3 + 5]
        if avail < 8 + 2 * (hlen + plen):
            r["status"] = S_ARP
            return r
        r["sport"] = _U16.unpack_from(data, l3 + 6)[0]
        if plen == 4:
            spa = l3 + 8 + hlen
            tpa = spa + 4 + hlen
            r["src_ip"] = _V4_PREFIX + data[spa : spa + 4]
            r["dst_ip"] = _V4_PREFIX + data[tpa : tpa + 4]
        return r
    else:
        return r
    # -- transport layer
    if ip_payload < 0:
        ip_payload = 0
    kind = _L4_KIND.get(proto)
    if later_fragment or kind is None:
        r["payload_len"] = ip_payload
        return r
    need = _L4_MIN[proto]
    have = cap - l4
    if kind == _ICMP:
        if have >= 2:
            r["sport"] = data[l4]
            r["dport"] = data[l4 + 1]
    elif have >= 4:
        r["sport"] = _U16.unpack_from(data, l4)[0]
        r["dport"] = _U16.unpack_from(data, l4 + 2)[0]
    if kind == _TCP:
        if have >= 14:
            r["tcp_flags"] = data[l4 + 13]
        if have >= 13 and data[l4 + 12] >> 4 >= 5:
            need = (data[l4 + 12] >> 4) * 4
        if have < 20:
            need = 20
    if have < min(need, _L4_MIN[proto]):
        r["status"] = S_L4_TRUNC
    r["payload_len"] = max(ip_payload - need, 0)
    return r


def _write_slow(rec: np.ndarray, rows: np.ndarray, batch: FrameBatch) -> None:
    """Fill ``rec[rows]`` with the reference decoder."""
    buf = batch.buf
    offsets = batch.offsets
    caplen = batch.caplen
    linktype = batch.linktype
    cols = {name: rec[name] for name in _FIELDS}
    for i in rows.tolist():
        start = int(offsets[i])
        fields = decode_frame(buf[start : start + int(caplen[i])], int(linktype[i]))
        for name in _FIELDS:
            value = fields[name]
            if name in ("src_ip", "dst_ip"):
                cols[name][i] = np.frombuffer(value, dtype=np.uint8)
            else:
                cols[name][i] = value


# ---------------------------------------------------------------------------------------------
# vectorised decoder


def _window(batch: FrameBatch, width: int) -> np.ndarray:
    """The first ``width`` bytes of each frame as an (n, width) array, zero beyond caplen."""
    arr = np.frombuffer(batch.buf, dtype=np.uint8)
    offsets = batch.offsets
    n = len(offsets)
    size = len(arr)
    head = np.zeros((n, width), dtype=np.uint8)
    inside = offsets <= size - width
    if size >= width:
        if inside.all():
            head[:] = sliding_window_view(arr, width)[offsets]
        else:
            rows = np.nonzero(inside)[0]
            head[rows] = sliding_window_view(arr, width)[offsets[rows]]
    for i in np.nonzero(~inside)[0].tolist():
        # frames near the end of the buffer
        start = int(offsets[i])
        chunk = arr[start : start + width]
        head[i, : len(chunk)] = chunk
    caplen = batch.caplen
    short = np.nonzero(caplen < width)[0]
    if len(short):
        head[short] *= np.arange(width, dtype=np.uint32) < caplen[short, None]
    return head


class _Cols:
    """Working columns for the vectorised decoder (one entry per frame)."""

    def __init__(self, n: int) -> None:
        self.et = np.zeros(n, dtype=np.int64)
        self.l3 = np.zeros(n, dtype=np.int64)
        self.status = np.zeros(n, dtype=np.uint8)
        self.slow = np.zeros(n, dtype=bool)
        self.src_mac = np.zeros(n, dtype=np.uint64)
        self.dst_mac = np.zeros(n, dtype=np.uint64)
        self.vlan = np.zeros(n, dtype=np.uint16)


def _mac(head: np.ndarray, start: int) -> np.ndarray:
    """6 bytes at a fixed column -> 48-bit integers (via a big-endian 8-byte view)."""
    block = np.zeros((len(head), 8), dtype=np.uint8)
    block[:, 2:8] = head[:, start : start + 6]
    return block.view(">u8")[:, 0].astype(np.uint64)


def _link_layer(head: np.ndarray, cap: np.ndarray, linktype: np.ndarray, c: _Cols) -> None:
    types = np.unique(linktype)
    for lt in types.tolist():
        rows = slice(None) if len(types) == 1 else np.nonzero(linktype == lt)[0]
        h = head[rows]
        cp = cap[rows]
        if lt == LINKTYPE_ETHERNET:
            ok = cp >= 14
            c.dst_mac[rows] = np.where(ok, _mac(h, 0), 0)
            c.src_mac[rows] = np.where(ok, _mac(h, 6), 0)
            c.et[rows] = np.where(ok, (h[:, 12].astype(np.int64) << 8) | h[:, 13], 0)
            c.l3[rows] = 14
            c.status[rows] = np.where(ok, 0, S_LINK)
        elif lt in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
            version = h[:, 0] >> 4
            if lt == LINKTYPE_IPV4:
                et = np.full(len(h), ETH_IPV4)
            elif lt == LINKTYPE_IPV6:
                et = np.full(len(h), ETH_IPV6)
            else:
                et = np.where(version == 4, ETH_IPV4, np.where(version == 6, ETH_IPV6, 0))
            c.et[rows] = et
            c.l3[rows] = 0
            c.status[rows] = np.where(et == 0, S_VERSION, 0)
        elif lt == LINKTYPE_LINUX_SLL:
            ok = cp >= 16
            alen = (h[:, 4].astype(np.int64) << 8) | h[:, 5]
            c.src_mac[rows] = np.where(ok & (alen == 6), _mac(h, 6), 0)
            c.et[rows] = np.where(ok, (h[:, 14].astype(np.int64) << 8) | h[:, 15], 0)
            c.l3[rows] = 16
            c.status[rows] = np.where(ok, 0, S_LINK)
        elif lt == LINKTYPE_LINUX_SLL2:
            ok = cp >= 20
            c.src_mac[rows] = np.where(ok & (h[:, 11] == 6), _mac(h, 12), 0)
            c.et[rows] = np.where(ok, (h[:, 0].astype(np.int64) << 8) | h[:, 1], 0)
            c.l3[rows] = 20
            c.status[rows] = np.where(ok, 0, S_LINK)
        elif lt in (LINKTYPE_NULL, LINKTYPE_LOOP):
            ok = cp >= 4
            b = h[:, 0:4].astype(np.int64)
            family = (b[:, 0] << 24) | (b[:, 1] << 16) | (b[:, 2] << 8) | b[:, 3]
            if lt == LINKTYPE_NULL:
                le = (b[:, 3] << 24) | (b[:, 2] << 16) | (b[:, 1] << 8) | b[:, 0]
                family = np.where((le == 2) | np.isin(le, _AF_INET6), le, family)
            et = np.where(family == 2, ETH_IPV4, np.where(np.isin(family, _AF_INET6), ETH_IPV6, 0))
            c.et[rows] = np.where(ok, et, 0)
            c.l3[rows] = 4
            c.status[rows] = np.where(ok, 0, S_LINK)
        else:
            c.status[rows] = S_LINKTYPE


def decode_frames(batch: FrameBatch, first_seq: int = 0, *, vectorised: bool = True) -> np.ndarray:
    """Decode a FrameBatch into a RECORD_DTYPE array with gap-free ``seq`` from ``first_seq``."""
    n = len(batch)
    rec = np.zeros(n, dtype=RECORD_DTYPE)
    if n == 0:
        return rec
    rec["seq"] = np.arange(first_seq, first_seq + n, dtype=np.uint64)
    rec["ts"] = batch.ts
    rec["iface"] = np.minimum(batch.iface, 255)
    rec["length"] = batch.length
    rec["caplen"] = batch.caplen
    if not vectorised:
        _write_slow(rec, np.arange(n), batch)
        return rec

    W = WINDOW
    head = _window(batch, W)
    cap = batch.caplen.astype(np.int64)
    c = _Cols(n)
    _link_layer(head, cap, batch.linktype, c)

    def u8(rows: np.ndarray, off: np.ndarray) -> np.ndarray:
        return head[rows, np.minimum(off, W - 1)].astype(np.int64)

    def u16(rows: np.ndarray, off: np.ndarray) -> np.ndarray:
        return (u8(rows, off) << 8) | u8(rows, off + 1)

    et, l3, status, slow = c.et, c.l3, c.status, c.slow
    # frames whose data goes beyond the window: only they may need bytes we did not gather
    big = cap > W

    # -- VLAN tags (any link type that yields an EtherType)
    tagged = np.nonzero((status == 0) & np.isin(et, VLAN_TPIDS))[0]
    depth = 0
    while len(tagged):
        if depth >= _MAX_TAGS:
            slow[tagged] = True
            break
        lt3 = l3[tagged]
        outside = big[tagged] & (lt3 + 4 > W)
        slow[tagged[outside]] = True
        short = ~outside & (cap[tagged] < lt3 + 4)
        status[tagged[short]] = S_LINK
        go = tagged[~outside & ~short]
        if depth == 0:
            c.vlan[go] = u16(go, l3[go]) & 0x0FFF
        et[go] = u16(go, l3[go] + 2)
        l3[go] += 4
        tagged = go[np.isin(et[go], VLAN_TPIDS)]
        depth += 1
    eth = batch.linktype == LINKTYPE_ETHERNET
    et[eth & (et <= 1500) & (status == 0)] = 0

    ip_version = np.zeros(n, dtype=np.uint8)
    proto = np.zeros(n, dtype=np.int64)
    ttl = np.zeros(n, dtype=np.uint8)
    frag = np.zeros(n, dtype=np.uint8)
    sport = np.zeros(n, dtype=np.int64)
    dport = np.zeros(n, dtype=np.int64)
    flags = np.zeros(n, dtype=np.int64)
    payload = np.zeros(n, dtype=np.int64)
    src_ip = rec["src_ip"]
    dst_ip = rec["dst_ip"]
    # transport decoding candidates: rows, l4 offset, IP payload length, later-fragment flag
    l4_rows: list[np.ndarray] = []
    l4_off: list[np.ndarray] = []
    l4_payload: list[np.ndarray] = []
    l4_later: list[np.ndarray] = []
    live = (status == 0) & ~slow
    avail = cap - l3

    def ip_rows(
        ethertype: int, version: int, header: int, truncated: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The rows of one IP version with a whole fixed header that says that version: (rows, bytes
        from the IP header on, its offset, its first byte). The others get their status."""
        r = np.nonzero(live & (et == ethertype))[0]
        a = avail[r]
        o = l3[r]
        b0 = u8(r, o)
        trunc = a < header
        status[r[trunc]] = truncated
        ip_version[r[trunc]] = version
        badver = ~trunc & (b0 >> 4 != version)
        status[r[badver]] = S_VERSION
        ok = ~trunc & ~badver
        return r[ok], a[ok], o[ok], b0[ok]

    # -- IPv4
    r, a, o, b0 = ip_rows(ETH_IPV4, 4, 20, S_V4_TRUNC)
    if len(r):
        # bytes 12..19 (addresses) must be in the window
        outside = big[r] & (o + 20 > W)
        slow[r[outside]] = True
        r, a, o, b0 = r[~outside], a[~outside], o[~outside], b0[~outside]
        ip_version[r] = 4
        ihl = (b0 & 15) * 4
        total = u16(r, o + 2)
        fragword = u16(r, o + 6)
        ttl[r] = u8(r, o + 8)
        p = u8(r, o + 9)
        proto[r] = p
        cols = o[:, None] + np.arange(12, 20)
        addr = head[r[:, None], np.minimum(cols, W - 1)]
        src_ip[r, 10:12] = 0xFF
        dst_ip[r, 10:12] = 0xFF
        src_ip[r, 12:16] = addr[:, 0:4]
        dst_ip[r, 12:16] = addr[:, 4:8]
        frag[r] = (fragword & 0x3FFF) != 0
        badihl = ihl < 20
        status[r[badihl]] = S_V4_IHL
        short = ~badihl & (a < ihl)
        status[r[short]] = S_V4_TRUNC
        go = ~badihl & ~short
        ipp = np.where(total >= ihl, total - ihl, a - ihl)
        l4_rows.append(r[go])
        l4_off.append((o + ihl)[go])
        l4_payload.append(ipp[go])
        l4_later.append(((fragword & 0x1FFF) != 0)[go])

    # -- IPv6 (extension headers go to the reference decoder)
    r, a, o, _ = ip_rows(ETH_IPV6, 6, 40, S_V6_TRUNC)
    if len(r):
        outside = big[r] & (o + 40 > W)
        nh = u8(r, o + 6)
        ext = np.isin(nh, _V6_EXT)
        slow[r[outside | ext]] = True
        keep = ~outside & ~ext
        r, a, o, nh = r[keep], a[keep], o[keep], nh[keep]
        ip_version[r] = 6
        plen = u16(r, o + 4)
        ttl[r] = u8(r, o + 7)
        proto[r] = nh
        cols = o[:, None] + np.arange(8, 40)
        addr = head[r[:, None], np.minimum(cols, W - 1)]
        src_ip[r] = addr[:, 0:16]
        dst_ip[r] = addr[:, 16:32]
        l4_rows.append(r)
        l4_off.append(o + 40)
        l4_payload.append(np.where(plen > 0, plen, a - 40))
        l4_later.append(np.zeros(len(r), dtype=bool))

    # -- transport
    if l4_rows:
        r = np.concatenate(l4_rows)
        o = np.concatenate(l4_off)
        ipp = np.maximum(np.concatenate(l4_payload), 0)
        later = np.concatenate(l4_later)
        p = proto[r]
        kind = np.zeros(len(r), dtype=np.int64)
        need = np.zeros(len(r), dtype=np.int64)
        for number, k in _L4_KIND.items():
            m = p == number
            kind[m] = k
            need[m] = _L4_MIN[number]
        plain = later | (kind == 0)
        payload[r[plain]] = ipp[plain]
        t = ~plain
        r, o, ipp, kind, need = r[t], o[t], ipp[t], kind[t], need[t]
        outside = big[r] & (o + 20 > W)
        slow[r[outside]] = True
        t = ~outside
        r, o, ipp, kind, need = r[t], o[t], ipp[t], kind[t], need[t]
        have = cap[r] - o
        icmp = kind == _ICMP
        m = icmp & (have >= 2)
        sport[r[m]] = u8(r[m], o[m])
        dport[r[m]] = u8(r[m], o[m] + 1)
        m = ~icmp & (have >= 4)
        sport[r[m]] = u16(r[m], o[m])
        dport[r[m]] = u16(r[m], o[m] + 2)
        tcp = kind == _TCP
        m = tcp & (have >= 14)
        flags[r[m]] = u8(r[m], o[m] + 13)
        doff = u8(r, o + 12) >> 4
        m = tcp & (have >= 13) & (doff >= 5)
        need = np.where(m, doff * 4, need)
        need = np.where(tcp & (have < 20), 20, need)
        minimum = np.where(tcp, 20, need)
        status[r[have < minimum]] = S_L4_TRUNC
        payload[r] = np.maximum(ipp - need, 0)

    # -- ARP (Ethernet/IPv4 ARP vectorised; other hardware/protocol sizes by the reference)
    r = np.nonzero(live & (et == ETH_ARP))[0]
    if len(r):
        a = avail[r]
        o = l3[r]
        outside = big[r] & (o + 28 > W)
        hlen = u8(r, o + 4)
        plen = u8(r, o + 5)
        odd = (hlen != 6) | (plen != 4)
        slow[r[outside | (odd & (a >= 8))]] = True
        short = ~outside & (a < 28) & ~(odd & (a >= 8))
        status[r[short]] = S_ARP
        m = ~outside & ~odd & (a >= 28)
        r, o = r[m], o[m]
        sport[r] = u16(r, o + 6)
        cols = o[:, None] + np.array([14, 15, 16, 17, 24, 25, 26, 27])
        addr = head[r[:, None], np.minimum(cols, W - 1)]
        src_ip[r, 10:12] = 0xFF
        dst_ip[r, 10:12] = 0xFF
        src_ip[r, 12:16] = addr[:, 0:4]
        dst_ip[r, 12:16] = addr[:, 4:8]

    rec["eth_type"] = et
    rec["vlan"] = c.vlan
    rec["src_mac"] = c.src_mac
    rec["dst_mac"] = c.dst_mac
    rec["ip_version"] = ip_version
    rec["proto"] = proto
    rec["sport"] = sport
    rec["dport"] = dport
    rec["tcp_flags"] = flags
    rec["ttl"] = ttl
    rec["payload_len"] = payload
    rec["frag"] = frag
    rec["status"] = status
    slow_rows = np.nonzero(slow)[0]
    if len(slow_rows):
        src_ip[slow_rows] = 0
        dst_ip[slow_rows] = 0
        _write_slow(rec, slow_rows, batch)
    return rec


def iter_record_batches(
    source: Source,
    sensor: str,
    batch_size: int = 4096,
    first_seq: int = 0,
    stats: ReadStats | None = None,
) -> Iterator[Batch]:
    """Read a capture (path, bytes or stream) and yield decoded ``Batch`` objects for ``sensor``."""
    import time

    seq = first_seq
    for frames in iter_frame_batches(source, batch_size, stats=stats):
        read_at = time.time()
        records = decode_frames(frames, seq)
        seq += len(records)
        yield Batch(sensor=sensor, records=records, interfaces=frames.interfaces, read_at=read_at)
