"""The compact packet record and the batch wire format shared by capture, detection and exports.

A batch of packets travels as one NumPy structured array (``RECORD_DTYPE``), so the capture
process can decode, publish and the worker can featurise and store whole batches with
vectorised code instead of one Python object per packet.

One Redis stream entry holds one batch: ``h`` is a msgpack header and ``r`` the raw bytes of
the record array. See ``encode_batch``/``decode_batch``. Before publication, in the capture
process, records travel as a ``Chunk`` (not numbered yet); the runner turns each into a ``Batch``.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import msgpack
import numpy as np

FORMAT_VERSION = 1

# IP addresses are 16 bytes: IPv6 as is, IPv4 mapped as ::ffff:a.b.c.d, all zero when absent.
# MAC addresses are 48-bit integers (0 when absent).
RECORD_DTYPE = np.dtype(
    [
        ("seq", "<u8"),  # per-sensor sequence number, assigned by capture, gap-free
        ("ts", "<f8"),  # capture time, seconds since the epoch (UTC)
        ("iface", "u1"),  # index into the batch header's interface list
        ("length", "<u4"),  # original length on the wire
        ("caplen", "<u4"),  # bytes captured
        ("eth_type", "<u2"),  # EtherType after VLAN tags (0 when not Ethernet)
        ("vlan", "<u2"),  # outermost 802.1Q VLAN id (0: untagged)
        ("src_mac", "<u8"),
        ("dst_mac", "<u8"),
        ("ip_version", "u1"),  # 0, 4 or 6
        ("proto", "u1"),  # IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6; 0 when not IP)
        ("src_ip", "u1", (16,)),
        ("dst_ip", "u1", (16,)),
        ("sport", "<u2"),  # TCP/UDP source port; ICMP type
        ("dport", "<u2"),  # TCP/UDP destination port; ICMP code
        ("tcp_flags", "<u2"),  # FIN=1 SYN=2 RST=4 PSH=8 ACK=16 URG=32 ECE=64 CWR=128
        ("ttl", "u1"),  # IPv4 TTL or IPv6 hop limit
        ("payload_len", "<u4"),  # transport payload bytes (captured or implied by headers)
        ("frag", "u1"),  # 1: an IP fragment (first or later)
        ("status", "u1"),  # 0: decoded; otherwise a DECODE_ERRORS code (decoded as far as possible)
        ("label", "u1"),  # demo/synthetic ground truth: 0 normal, else ATTACK_LABELS code
    ]
)

# Reasons a frame could be decoded only partly; the record still exists and is stored.
DECODE_ERRORS: dict[int, str] = {
    0: "",
    1: "truncated link-layer header",
    2: "truncated IPv4 header",
    3: "bad IPv4 header length",
    4: "truncated IPv6 header",
    5: "truncated transport header",
    6: "unsupported link type",
    7: "malformed IPv6 extension header",
    8: "truncated ARP packet",
    9: "bad IP version",
    10: "malformed packet (deep dissector)",
    11: "802.11 frame without data (management, control, null)",
    12: "802.11 protected frame (payload encrypted)",
}
DECODE_ERROR_CODES = {v: k for k, v in DECODE_ERRORS.items()}

ATTACK_LABELS: dict[int, str] = {0: "", 1: "port_scan", 2: "syn_flood", 3: "udp_flood", 4: "http_flood"}

PROTO_NAMES = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP", 58: "ICMPv6", 132: "SCTP"}
ETH_NAMES = {0x0806: "ARP", 0x8035: "RARP", 0x88CC: "LLDP", 0x8847: "MPLS", 0x86DD: "IPv6", 0x0800: "IPv4"}

APP_FIELDS = ("app_protocol", "dns_query", "http_host", "http_method", "tls_sni")

_V4_PREFIX = bytes(10) + b"\xff\xff"


def empty_records(n: int) -> np.ndarray:
    """A zero-filled record array of length ``n``."""
    return np.zeros(n, dtype=RECORD_DTYPE)


def ip_to_bytes(text: str) -> bytes:
    """'10.0.0.1' or '2001:db8::1' -> the 16-byte form used in records."""
    addr = ipaddress.ip_address(text)
    if addr.version == 4:
        return _V4_PREFIX + addr.packed
    return addr.packed


def ip_to_text(raw: bytes | np.ndarray, version: int) -> str | None:
    """The 16-byte form -> text, or None when the record has no IP layer."""
    raw = bytes(raw)
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    if version == 6:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return None


def mac_to_text(value: int) -> str:
    """48-bit integer -> 'aa:bb:cc:dd:ee:ff' ('' when absent)."""
    if not value:
        return ""
    h = f"{int(value):012x}"
    return ":".join(h[i : i + 2] for i in range(0, 12, 2))


def protocol_name(eth_type: int, proto: int, ip_version: int) -> str:
    """The short protocol name shown to operators: TCP, UDP, ICMP, ARP, ... or 'other'."""
    if ip_version:
        return PROTO_NAMES.get(int(proto), f"IP-{int(proto)}")
    return ETH_NAMES.get(int(eth_type), "other" if eth_type else "unknown")


@dataclass
class Chunk:
    """Records as a source read them (a pcap file, the demo, a live engine), not numbered yet.

    ``seq`` is not the packet's number yet and ``app`` is keyed by the record's index in the chunk:
    the capture runner numbers a chunk when it publishes it as a ``Batch``, the one place that does.
    """

    records: np.ndarray
    interfaces: list[str] = field(default_factory=lambda: [""])
    app: dict[int, dict[str, str]] = field(default_factory=dict)  # index in chunk -> application fields
    read_at: float = 0.0  # wall-clock time the first packet was read
    source: str = ""  # file path, interface, or "demo": what --summary-json counts per
    # the raw frames the records were decoded from, in order (record i is frame i of their
    # concatenation), for the evidence ring (capture/evidence.py); empty when the source has none
    frames: list[Any] = field(default_factory=list)


@dataclass
class Batch:
    """One batch of numbered records from one sensor, as carried by a stream entry."""

    sensor: str
    records: np.ndarray
    interfaces: list[str] = field(default_factory=lambda: [""])
    # seq -> {app_protocol, dns_query, ...}: only for records dissected in deep mode
    app: dict[int, dict[str, str]] = field(default_factory=dict)
    # wall-clock time the first packet of the batch was read, for end-to-end latency
    read_at: float = 0.0
    published_at: float = 0.0

    @property
    def first_seq(self) -> int:
        return int(self.records["seq"][0]) if len(self.records) else 0

    @property
    def last_seq(self) -> int:
        return int(self.records["seq"][-1]) if len(self.records) else 0


def encode_batch(batch: Batch) -> dict[bytes, bytes]:
    """Batch -> the fields of one Redis stream entry."""
    header = {
        "v": FORMAT_VERSION,
        "sensor": batch.sensor,
        "first_seq": batch.first_seq,
        "last_seq": batch.last_seq,
        "count": len(batch.records),
        "ifaces": batch.interfaces,
        "app": {int(k): v for k, v in batch.app.items()},
        "read_at": batch.read_at,
        "published_at": batch.published_at,
    }
    records = np.ascontiguousarray(batch.records, dtype=RECORD_DTYPE)
    return {b"h": msgpack.packb(header), b"r": records.tobytes()}


class BatchFormatError(ValueError):
    """A stream entry that is not a batch this version understands."""


def decode_batch(fields: dict[Any, bytes]) -> Batch:
    """The fields of one Redis stream entry -> Batch (raises BatchFormatError)."""
    head_raw = fields.get(b"h", fields.get("h"))
    body = fields.get(b"r", fields.get("r"))
    if head_raw is None or body is None:
        raise BatchFormatError("stream entry has no 'h'/'r' fields")
    try:
        header = msgpack.unpackb(head_raw, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise BatchFormatError(f"unreadable batch header: {exc}") from exc
    if header.get("v") != FORMAT_VERSION:
        raise BatchFormatError(f"batch format version {header.get('v')!r}, expected {FORMAT_VERSION}")
    if len(body) % RECORD_DTYPE.itemsize or len(body) // RECORD_DTYPE.itemsize != header["count"]:
        raise BatchFormatError("batch body length does not match its header")
    records = np.frombuffer(body, dtype=RECORD_DTYPE).copy()
    return Batch(
        sensor=header["sensor"],
        records=records,
        interfaces=list(header.get("ifaces") or [""]),
        app={int(k): v for k, v in (header.get("app") or {}).items()},
        read_at=float(header.get("read_at") or 0.0),
        published_at=float(header.get("published_at") or 0.0),
    )


STREAM_PREFIX = "netmon:stream:"


def stream_key(sensor: str, prefix: str = STREAM_PREFIX) -> str:
    """The Redis stream a sensor's batches go to (``prefix``: another namespace, for tests)."""
    return f"{prefix}{sensor}"


def ingest_scheduled_key(sensor: str) -> str:
    """Set (briefly) while an ingest task for the sensor is queued: one task, not one per batch."""
    return f"netmon:ingest:scheduled:{sensor}"


# ------------------------------------------------------------------------------ text columns


def timestamps_text(ts: np.ndarray) -> list[str]:
    """Epoch seconds -> 'YYYY-MM-DD HH:MM:SS.ffffff+00:00', vectorised (both backends parse it as UTC)."""
    micro = np.round(ts * 1e6).astype("datetime64[us]")
    return [s.replace("T", " ") + "+00:00" for s in np.datetime_as_string(micro, unit="us").tolist()]


def ip_texts(raw: np.ndarray, versions: np.ndarray) -> list[str | None]:
    """``ip_to_text`` of a column of 16-byte addresses (None where a record has no IP layer)."""
    ntop = socket.inet_ntop
    v4, v6 = socket.AF_INET, socket.AF_INET6
    buf = np.ascontiguousarray(raw).tobytes()
    out: list[str | None] = []
    for i, version in enumerate(versions.tolist()):
        at = i * 16
        if version == 4:
            out.append(ntop(v4, buf[at + 12 : at + 16]))
        elif version == 6:
            out.append(ntop(v6, buf[at : at + 16]))
        else:
            out.append(None)
    return out


def mac_texts(values: np.ndarray) -> list[str]:
    """``mac_to_text`` of a column of 48-bit integers."""
    out = []
    for value in values.tolist():
        if value:
            h = f"{value:012x}"
            out.append(f"{h[0:2]}:{h[2:4]}:{h[4:6]}:{h[6:8]}:{h[8:10]}:{h[10:12]}")
        else:
            out.append("")
    return out


def protocol_names(records: np.ndarray) -> list[str]:
    """``protocol_name`` of each record."""
    names = []
    for eth_type, proto, version in zip(
        records["eth_type"].tolist(), records["proto"].tolist(), records["ip_version"].tolist(), strict=True
    ):
        if version:
            names.append(PROTO_NAMES.get(proto) or f"IP-{proto}")
        else:
            names.append(ETH_NAMES.get(eth_type) or ("other" if eth_type else "unknown"))
    return names


@dataclass
class PacketColumns:
    """The text/number columns of a batch, computed once and shared by packets, flows and anomalies."""

    ts: list[str]
    src_ip: list[str | None]
    dst_ip: list[str | None]
    protocol: list[str]

    @classmethod
    def of(cls, records: np.ndarray) -> PacketColumns:
        versions = records["ip_version"]
        return cls(
            ts=timestamps_text(records["ts"]),
            src_ip=ip_texts(records["src_ip"], versions),
            dst_ip=ip_texts(records["dst_ip"], versions),
            protocol=protocol_names(records),
        )

    @classmethod
    def joined(cls, parts: list[PacketColumns]) -> PacketColumns:
        """The columns of consecutive parts as one (the batches of a read)."""
        return cls(
            ts=[v for p in parts for v in p.ts],
            src_ip=[v for p in parts for v in p.src_ip],
            dst_ip=[v for p in parts for v in p.dst_ip],
            protocol=[v for p in parts for v in p.protocol],
        )

    def take(self, rows: list[int]) -> PacketColumns:
        """The columns of some rows, in the order given (gathered in C: a flood flags most rows)."""
        if len(rows) < 2:  # (itemgetter of one index gives the value, not a tuple)
            return PacketColumns(*([column[i] for i in rows] for column in self._columns()))
        get = itemgetter(*rows)
        return PacketColumns(*(list(get(column)) for column in self._columns()))

    def _columns(self) -> tuple[list, list, list, list]:
        return self.ts, self.src_ip, self.dst_ip, self.protocol
