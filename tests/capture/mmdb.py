"""A tiny MaxMind DB (.mmdb) writer for tests: a few networks and their records, nothing fetched.

Follows the MaxMind DB File Format Specification 2.0: a binary search tree (24-bit records) over
the address bits, a 16-byte separator, the data section, and the metadata after
``\\xab\\xcd\\xefMaxMind.com``. Enough types for GeoLite2-Country and GeoLite2-ASN records.
"""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path
from typing import Any

_METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"


def _control(type_: int, size: int) -> bytes:
    if size < 29:
        head, extra = size, b""
    elif size < 29 + 256:
        head, extra = 29, bytes([size - 29])
    else:
        head, extra = 30, struct.pack(">H", size - 285)
    if type_ <= 7:
        return bytes([(type_ << 5) | head]) + extra
    return bytes([head, type_ - 7]) + extra  # extended type


class U32(int):
    """An int written as uint32 (libmaxminddb checks the metadata's types)."""


class U64(int):
    """An int written as uint64."""


def encode(value: Any) -> bytes:
    if isinstance(value, str):
        raw = value.encode()
        return _control(2, len(raw)) + raw
    if isinstance(value, bool):
        return _control(14, int(value))
    if isinstance(value, int):
        raw = value.to_bytes(8, "big").lstrip(b"\0")
        type_ = 9 if isinstance(value, U64) else 6 if isinstance(value, U32) else 5 if value < 2**16 else 6
        return _control(type_, len(raw)) + raw
    if isinstance(value, dict):
        return _control(7, len(value)) + b"".join(encode(k) + encode(v) for k, v in value.items())
    if isinstance(value, list):
        return _control(11, len(value)) + b"".join(encode(v) for v in value)
    raise TypeError(type(value))


def write_mmdb(path: Path, database_type: str, networks: dict[str, dict[str, Any]]) -> Path:
    """An IPv6 database (IPv4 at ::a.b.c.d) mapping each network to its record."""
    data = b""
    tree: dict = {}
    for network, record in networks.items():
        net = ipaddress.ip_network(network)
        bits = net.prefixlen + (96 if net.version == 4 else 0)
        value = int(net.network_address)
        node = tree
        for i in range(bits - 1):
            node = node.setdefault((value >> (127 - i)) & 1, {})
        node[(value >> (127 - (bits - 1))) & 1] = len(data)  # a leaf: the record's offset
        data += encode(record)
    nodes: list[dict] = []

    def number(node: dict) -> int:
        nodes.append(node)
        index = len(nodes) - 1
        for child in node.values():
            if isinstance(child, dict):
                number(child)
        return index

    ids: dict[int, int] = {}
    number(tree)
    for index, node in enumerate(nodes):
        ids[id(node)] = index
    count = len(nodes)
    out = bytearray()
    for node in nodes:
        for bit in (0, 1):
            child = node.get(bit)
            if child is None:
                value = count  # no data
            elif isinstance(child, dict):
                value = ids[id(child)]
            else:
                value = count + 16 + child
            out += value.to_bytes(3, "big")
    metadata = {
        "node_count": U32(count),
        "record_size": 24,
        "ip_version": 6,
        "database_type": database_type,
        "languages": ["en"],
        "binary_format_major_version": 2,
        "binary_format_minor_version": 0,
        "build_epoch": U64(1_700_000_000),
        "description": {"en": "netmon test data"},
    }
    path.write_bytes(bytes(out) + b"\0" * 16 + data + _METADATA_MARKER + encode(metadata))
    return path
