"""Writing RECORD_DTYPE arrays back out as pcap files of synthetic Ethernet frames.

Used by tests and benchmarks to make large, realistic captures without scapy (which writes a few
thousand packets per second). Frames are built for whole chunks of records at once with NumPy.

Public API:

- ``write_pcap(dest, records, *, snaplen=65535, nanosecond=False) -> int``: write a whole file.
- ``PcapWriter(dest, *, snaplen=65535, linktype=1, nanosecond=False)``: streaming writer with
  ``write_records(records)``, ``write_frame(ts, data, length=None)`` and ``close()``.
- ``build_frames(records, snaplen) -> (frames, caplen, length)``: the frames as one uint8
  buffer, without pcap record headers.
- ``frame_batch(records, interface) -> FrameBatch``: the same frames as pcapio hands them out
  (the demo's frames for the evidence ring).
- ``synthetic_records(n, seed=0, start=..., ipv6_share=0.05) -> np.ndarray``: ordinary mixed traffic.

What a record becomes: Ethernet II (plus one 802.1Q tag when ``vlan`` is set), then by
``ip_version`` IPv4 (20-byte header, valid checksum, MF flag when ``frag``) or IPv6 (40 bytes,
no extension headers), then TCP (20 bytes, ``tcp_flags``), UDP (8), ICMP/ICMPv6 (8, type/code
from sport/dport), or nothing for other protocols; records with ``eth_type`` 0x0806 become ARP.
The payload is ``payload_len`` zero bytes; the frame is ``max(length, headers + payload)`` long
on the wire and captured up to ``snaplen``. A path ending in ``.gz`` is written gzip-compressed.
"""

from __future__ import annotations

import gzip
import os
import struct
from typing import BinaryIO

import numpy as np

from capture.pcapio import FrameBatch
from capture.records import RECORD_DTYPE

__all__ = ["PcapWriter", "build_frames", "frame_batch", "synthetic_records", "write_pcap"]

_CHUNK = 65536  # records built at once: bounds the temporary index arrays
_HDR_MAX = 18 + 40 + 20  # VLAN Ethernet + IPv6 + TCP


def _be(values: np.ndarray, nbytes: int) -> np.ndarray:
    """Unsigned integers -> (n, nbytes) big-endian bytes."""
    v = values.astype(np.uint64)
    shifts = np.arange(8 * (nbytes - 1), -1, -8, dtype=np.uint64)
    return ((v[:, None] >> shifts) & np.uint64(0xFF)).astype(np.uint8)


def _put(h: np.ndarray, rows: np.ndarray, col: np.ndarray, values: np.ndarray) -> None:
    """Write the byte columns ``values`` (m, k) at per-row column ``col`` (m,) of ``h``."""
    k = values.shape[1]
    h[rows[:, None], col[:, None] + np.arange(k)] = values


def build_frames(records: np.ndarray, snaplen: int = 65535) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames for ``records``: (concatenated captured bytes, caplen per frame, wire length per frame)."""
    rec = np.asarray(records, dtype=RECORD_DTYPE)
    n = len(rec)
    rows = np.arange(n)
    vlan = rec["vlan"].astype(np.int64)
    tagged = vlan != 0
    ipv = rec["ip_version"]
    v4, v6 = ipv == 4, ipv == 6
    et = np.where(v4, 0x0800, np.where(v6, 0x86DD, rec["eth_type"].astype(np.int64)))
    arp = ~v4 & ~v6 & (et == 0x0806)
    proto = rec["proto"].astype(np.int64)
    ip = v4 | v6
    tcp = ip & (proto == 6)
    udp = ip & (proto == 17)
    icmp = ip & ((proto == 1) | (proto == 58))
    l3 = np.where(tagged, 18, 14)
    l3len = np.where(v4, 20, np.where(v6, 40, np.where(arp, 28, 0)))
    l4 = l3 + l3len
    l4len = np.where(tcp, 20, np.where(udp | icmp, 8, 0))
    payload = rec["payload_len"].astype(np.int64)
    ip_total = np.minimum(l3len + l4len + np.where(ip, payload, 0), 65535)
    wire = np.maximum(rec["length"].astype(np.int64), l3 + np.where(ip, ip_total, l3len))
    caplen = np.minimum(wire, snaplen)

    h = np.zeros((n, _HDR_MAX), dtype=np.uint8)
    h[:, 0:6] = _be(rec["dst_mac"], 6)
    h[:, 6:12] = _be(rec["src_mac"], 6)
    t = rows[tagged]
    if len(t):
        h[t, 12:14] = _be(np.full(len(t), 0x8100), 2)
        h[t, 14:16] = _be(vlan[t] & 0x0FFF, 2)
    _put(h, rows, l3 - 2, _be(et, 2))

    r = rows[v4]
    if len(r):
        o = l3[r]
        hdr = np.zeros((len(r), 20), dtype=np.uint8)
        hdr[:, 0] = 0x45
        hdr[:, 2:4] = _be(ip_total[r], 2)
        hdr[:, 4:6] = _be(rec["seq"][r] & np.uint64(0xFFFF), 2)
        hdr[:, 6] = np.where(rec["frag"][r] != 0, 0x20, 0x40)  # MF, or DF
        hdr[:, 8] = rec["ttl"][r]
        hdr[:, 9] = proto[r]
        hdr[:, 12:16] = rec["src_ip"][r, 12:16]
        hdr[:, 16:20] = rec["dst_ip"][r, 12:16]
        words = hdr.astype(np.uint32).reshape(len(r), 10, 2)
        total = (words[:, :, 0] << 8 | words[:, :, 1]).sum(axis=1)
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        hdr[:, 10:12] = _be(~total & 0xFFFF, 2)
        _put(h, r, o, hdr)
    r = rows[v6]
    if len(r):
        hdr = np.zeros((len(r), 40), dtype=np.uint8)
        hdr[:, 0] = 0x60
        hdr[:, 4:6] = _be(ip_total[r] - 40, 2)
        hdr[:, 6] = proto[r]
        hdr[:, 7] = rec["ttl"][r]
        hdr[:, 8:24] = rec["src_ip"][r]
        hdr[:, 24:40] = rec["dst_ip"][r]
        _put(h, r, l3[r], hdr)
    r = rows[arp]
    if len(r):
        hdr = np.zeros((len(r), 28), dtype=np.uint8)
        hdr[:, 0:8] = [0, 1, 8, 0, 6, 4, 0, 1]
        op = rec["sport"][r]
        hdr[:, 6:8] = _be(np.where(op != 0, op, 1), 2)
        hdr[:, 8:14] = _be(rec["src_mac"][r], 6)
        hdr[:, 14:18] = rec["src_ip"][r, 12:16]
        hdr[:, 18:24] = _be(rec["dst_mac"][r], 6)
        hdr[:, 24:28] = rec["dst_ip"][r, 12:16]
        _put(h, r, l3[r], hdr)
    r = rows[tcp | udp]
    if len(r):
        ports = np.concatenate([_be(rec["sport"][r], 2), _be(rec["dport"][r], 2)], axis=1)
        _put(h, r, l4[r], ports)
    r = rows[tcp]
    if len(r):
        tail = np.zeros((len(r), 10), dtype=np.uint8)  # bytes 10..19 of the TCP header
        tail[:, 2] = 0x50  # data offset 5
        tail[:, 3] = rec["tcp_flags"][r] & 0xFF
        tail[:, 4:6] = _be(np.full(len(r), 64240), 2)
        _put(h, r, l4[r] + 10, tail)
    r = rows[udp]
    if len(r):
        _put(h, r, l4[r] + 4, _be(np.minimum(payload[r] + 8, 65535), 2))
    r = rows[icmp]
    if len(r):
        tc = np.stack([rec["sport"][r] & 0xFF, rec["dport"][r] & 0xFF], axis=1).astype(np.uint8)
        _put(h, r, l4[r], tc)

    hdr_len = np.minimum(l4 + l4len, caplen)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(caplen[:-1], out=starts[1:])
    out = np.zeros(int(caplen.sum()), dtype=np.uint8)
    mask = np.arange(_HDR_MAX) < hdr_len[:, None]
    idx = starts[:, None] + np.arange(_HDR_MAX)
    out[idx[mask]] = h[mask]
    return out, caplen.astype(np.uint32), wire.astype(np.uint32)


def frame_batch(records: np.ndarray, interface: str = "", snaplen: int = 65535) -> FrameBatch:
    """The Ethernet frames of ``records`` as a pcapio ``FrameBatch`` (one buffer, no record headers)."""
    frames, caplen, wire = build_frames(records, snaplen)
    offsets = np.zeros(len(caplen), dtype=np.int64)
    np.cumsum(caplen[:-1], out=offsets[1:])
    n = len(caplen)
    return FrameBatch(
        buf=frames.tobytes(),
        offsets=offsets,
        caplen=caplen,
        length=wire,
        ts=np.asarray(records["ts"], dtype=np.float64).copy(),
        linktype=np.ones(n, dtype=np.uint16),
        iface=np.zeros(n, dtype=np.uint16),
        interfaces=[interface],
        linktypes=[1],
    )


class PcapWriter:
    """Streaming pcap writer (one link type); gzip-compressed when the path ends in ``.gz``."""

    def __init__(
        self,
        dest: str | os.PathLike[str] | BinaryIO,
        *,
        snaplen: int = 65535,
        linktype: int = 1,
        nanosecond: bool = False,
    ) -> None:
        self.snaplen = snaplen
        self.nanosecond = nanosecond
        self.count = 0
        self._owned = isinstance(dest, (str, os.PathLike))
        if isinstance(dest, (str, os.PathLike)):
            path = os.fspath(dest)
            # level 1: these files are mostly zero padding; higher levels only cost time
            self._f: BinaryIO
            if path.endswith(".gz"):
                self._f = gzip.open(path, "wb", compresslevel=1)  # noqa: SIM115 - closed by close()
            else:
                self._f = open(path, "wb")  # noqa: SIM115 - closed by close()
        else:
            self._f = dest
        magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
        self._f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))

    def _split_ts(self, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        units = 1_000_000_000 if self.nanosecond else 1_000_000
        sec = np.floor(ts)
        frac = np.round((ts - sec) * units)
        carry = frac >= units
        return (sec + carry).astype(np.uint32), np.where(carry, 0, frac).astype(np.uint32)

    def write_records(self, records: np.ndarray) -> int:
        """Append frames built from ``records``; returns how many were written."""
        rec = np.asarray(records, dtype=RECORD_DTYPE)
        for start in range(0, len(rec), _CHUNK):
            part = rec[start : start + _CHUNK]
            frames, caplen, wire = build_frames(part, self.snaplen)
            m = len(part)
            sec, frac = self._split_ts(part["ts"])
            heads = np.empty((m, 4), dtype="<u4")
            heads[:, 0], heads[:, 1], heads[:, 2], heads[:, 3] = sec, frac, caplen, wire
            size = 16 * m + len(frames)
            out = np.empty(size, dtype=np.uint8)
            rec_start = np.zeros(m, dtype=np.int64)
            np.cumsum(caplen[:-1].astype(np.int64) + 16, out=rec_start[1:])
            hidx = rec_start[:, None] + np.arange(16)
            out[hidx.ravel()] = heads.view(np.uint8).ravel()
            body = np.ones(size, dtype=bool)
            body[hidx.ravel()] = False
            out[body] = frames
            self._f.write(out.tobytes())
            self.count += m
        return len(rec)

    def write_frame(self, ts: float, data: bytes, length: int | None = None) -> None:
        """Append one raw frame (cut to snaplen; ``length`` defaults to ``len(data)``)."""
        sec, frac = self._split_ts(np.array([ts], dtype=np.float64))
        cap = data[: self.snaplen]
        self._f.write(struct.pack("<IIII", int(sec[0]), int(frac[0]), len(cap), length or len(data)))
        self._f.write(cap)
        self.count += 1

    def close(self) -> None:
        if self._owned:
            self._f.close()
        else:
            self._f.flush()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_pcap(
    dest: str | os.PathLike[str] | BinaryIO,
    records: np.ndarray,
    *,
    snaplen: int = 65535,
    nanosecond: bool = False,
) -> int:
    """Write ``records`` as an Ethernet pcap (gzip when the path ends in .gz); returns the frame count."""
    with PcapWriter(dest, snaplen=snaplen, nanosecond=nanosecond) as writer:
        writer.write_records(records)
        return writer.count


def synthetic_records(
    n: int,
    seed: int = 0,
    start: float = 1_700_000_000.0,
    rate: float = 10_000.0,
    ipv6_share: float = 0.05,
) -> np.ndarray:
    """``n`` records of ordinary traffic: mostly TCP and UDP between a few hundred hosts, some ICMP, ARP.

    Deterministic for a given seed; ``rate`` packets per second on average.
    """
    rng = np.random.default_rng(seed)
    rec = np.zeros(n, dtype=RECORD_DTYPE)
    rec["seq"] = np.arange(n, dtype=np.uint64)
    rec["ts"] = start + np.cumsum(rng.exponential(1.0 / rate, n))
    kind = rng.choice(4, size=n, p=[0.70, 0.24, 0.04, 0.02])  # tcp, udp, icmp, arp
    v6 = (rng.random(n) < ipv6_share) & (kind < 3)
    hosts = rng.integers(1, 250, size=(n, 2))
    rec["src_mac"] = 0x020000000000 + hosts[:, 0]
    rec["dst_mac"] = 0x020000000000 + hosts[:, 1]
    ip = kind < 3
    rec["ip_version"] = np.where(ip, np.where(v6, 6, 4), 0)
    rec["eth_type"] = np.where(ip, np.where(v6, 0x86DD, 0x0800), 0x0806)
    proto = np.array([6, 17, 1, 0])[kind]
    proto = np.where(v6 & (kind == 2), 58, proto)
    rec["proto"] = proto
    src = rec["src_ip"]
    dst = rec["dst_ip"]
    v4rows = ~v6
    src[v4rows, 10:12] = 0xFF
    dst[v4rows, 10:12] = 0xFF
    src[v4rows, 12:14] = [10, 0]
    dst[v4rows, 12:14] = [10, 0]
    src[v4rows, 14] = hosts[v4rows, 0] // 100
    src[v4rows, 15] = hosts[v4rows, 0]
    dst[v4rows, 14] = hosts[v4rows, 1] // 100
    dst[v4rows, 15] = hosts[v4rows, 1]
    src[v6, 0:2] = [0x20, 0x01]
    dst[v6, 0:2] = [0x20, 0x01]
    src[v6, 15] = hosts[v6, 0]
    dst[v6, 15] = hosts[v6, 1]
    services = np.array([80, 443, 53, 22, 123, 8080, 25, 3306])
    server = services[rng.integers(0, len(services), n)]
    client = rng.integers(1024, 65535, n)
    outbound = rng.random(n) < 0.5
    ports = (kind == 0) | (kind == 1)
    rec["sport"] = np.where(ports, np.where(outbound, client, server), 0)
    rec["dport"] = np.where(ports, np.where(outbound, server, client), 0)
    icmp = kind == 2
    rec["sport"][icmp] = np.where(v6[icmp], 128, 8)  # echo request
    arp = kind == 3
    rec["sport"][arp] = 1
    rec["dst_mac"][arp] = 0xFFFFFFFFFFFF
    rec["tcp_flags"] = np.where(kind == 0, rng.choice([0x10, 0x18, 0x02, 0x12, 0x11], n), 0)
    rec["ttl"] = np.where(ip, rng.choice([64, 128, 255, 57], n), 0)
    payload = np.where(rng.random(n) < 0.4, 0, rng.integers(1, 1400, n))
    payload = np.where(kind == 1, rng.integers(20, 512, n), payload)
    payload = np.where(icmp, 56, np.where(arp, 0, payload))
    rec["payload_len"] = payload
    l3 = np.where(v6, 40, 20)
    l4 = np.array([20, 8, 8, 0])[kind]
    length = np.where(arp, 60, 14 + l3 + l4 + payload)
    rec["length"] = np.maximum(length, 60)  # Ethernet minimum frame (without FCS)
    rec["caplen"] = rec["length"]
    return rec
