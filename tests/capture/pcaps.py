"""Test captures: build packets with scapy, write pcap/pcapng files byte by byte, and know what to expect.

Every ``make_*`` function writes a file under the given directory and returns a ``Capture``
with the frames written and, where the frames are well formed, the fields a decoder must produce
(derived from scapy's own dissection, so the decoder is checked against an independent parser).
``capinfos_count`` asks Wireshark's capinfos how many frames a file holds.
"""

from __future__ import annotations

import gzip
import ipaddress
import re
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scapy.all import (
    AH,
    ARP,
    GRE,
    ICMP,
    IP,
    TCP,
    UDP,
    CookedLinux,
    CookedLinuxV2,
    Dot1AD,
    Dot1Q,
    Ether,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPOption_RR,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Loopback,
    Packet,
    Raw,
    fragment,
)
from scapy.contrib.mpls import MPLS
from scapy.layers.dot11 import Dot11, Dot11QoS, RadioTap
from scapy.layers.l2 import LLC, SNAP
from scapy.layers.ppp import HDLC, PPP

BASE_TS = 1_700_000_000.0

LT_NULL, LT_ETHERNET, LT_RAW, LT_LOOP, LT_SLL, LT_SLL2 = 0, 1, 101, 108, 113, 276
LT_PPP, LT_FDDI, LT_PPP_HDLC, LT_IEEE802_11, LT_RADIOTAP, LT_NFLOG = 9, 10, 50, 105, 127, 239


@dataclass
class Frame:
    """One frame as written: timestamp, captured bytes, wire length, interface (pcapng)."""

    ts: float
    data: bytes
    length: int
    linktype: int = LT_ETHERNET
    iface: int = 0
    expect: dict[str, Any] | None = None  # fields the decoder must produce (None: only "no crash")


@dataclass
class Capture:
    """A capture file written by a make_* function and what it holds."""

    path: Path
    frames: list[Frame] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# file writers


def pcap_bytes(
    frames: list[Frame],
    linktype: int = LT_ETHERNET,
    *,
    big_endian: bool = False,
    nanosecond: bool = False,
    snaplen: int = 65535,
) -> bytes:
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    units = 1_000_000_000 if nanosecond else 1_000_000
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for f in frames:
        ticks = round(f.ts * units)
        out.append(struct.pack(e + "IIII", ticks // units, ticks % units, len(f.data), f.length))
        out.append(f.data)
    return b"".join(out)


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _block(e: str, btype: int, body: bytes) -> bytes:
    body = _pad4(body)
    size = len(body) + 12
    return struct.pack(e + "II", btype, size) + body + struct.pack(e + "I", size)


def _option(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + _pad4(value)


def pcapng_shb(big_endian: bool = False) -> bytes:
    e = ">" if big_endian else "<"
    return _block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def pcapng_idb(
    linktype: int, name: str, tsresol: int | None = None, tsoffset: int = 0, *, be: bool = False
) -> bytes:
    e = ">" if be else "<"
    opts = _option(e, 2, name.encode())
    if tsresol is not None:
        opts += _option(e, 9, bytes([tsresol]))
    if tsoffset:
        opts += _option(e, 14, struct.pack(e + "q", tsoffset))
    opts += struct.pack(e + "HH", 0, 0)
    return _block(e, 1, struct.pack(e + "HHI", linktype, 0, 65535) + opts)


def pcapng_epb(iface: int, ticks: int, data: bytes, length: int, *, be: bool = False) -> bytes:
    e = ">" if be else "<"
    head = struct.pack(e + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), length)
    return _block(e, 6, head + data)


def pcapng_spb(data: bytes, length: int, *, be: bool = False) -> bytes:
    e = ">" if be else "<"
    return _block(e, 3, struct.pack(e + "I", length) + data)


def ticks_for(ts: float, tsresol: int | None) -> int:
    resol = 6 if tsresol is None else tsresol
    units = (1 << (resol & 0x7F)) if resol & 0x80 else 10**resol
    return round(ts * units)


def capinfos_count(path: Path | str) -> int:
    """Frames in ``path`` according to ``capinfos -c -M`` (0 when it cannot read the file)."""
    result = subprocess.run(["capinfos", "-c", "-M", str(path)], capture_output=True, text=True, check=False)
    match = re.search(r"Number of packets:\s+(\d+)", result.stdout)
    # on a damaged file capinfos prints no summary, only how far it got
    match = match or re.search(r"error occurred after reading (\d+) packets", result.stderr)
    return int(match.group(1)) if match else 0


# ---------------------------------------------------------------------------------------------
# what scapy says the decoder must produce


def _mac(text: str) -> int:
    return int(text.replace(":", ""), 16)


def _ip16(text: str) -> bytes:
    addr = ipaddress.ip_address(text)
    return (bytes(10) + b"\xff\xff" + addr.packed) if addr.version == 4 else addr.packed


_V6_EXT_CLASSES = (IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrFragment, IPv6ExtHdrDestOpt, AH)


def expected_fields(pkt: Packet) -> dict[str, Any]:
    """The record fields for a well-formed frame, from scapy's dissection of its bytes."""
    pkt = pkt.__class__(bytes(pkt))  # dissect, so lengths and defaults are filled in
    e: dict[str, Any] = {
        "eth_type": 0,
        "vlan": 0,
        "src_mac": 0,
        "dst_mac": 0,
        "ip_version": 0,
        "proto": 0,
        "src_ip": bytes(16),
        "dst_ip": bytes(16),
        "sport": 0,
        "dport": 0,
        "tcp_flags": 0,
        "ttl": 0,
        "payload_len": 0,
        "frag": 0,
        "status": 0,
    }
    et = 0
    if isinstance(pkt, Ether):
        e["src_mac"], e["dst_mac"] = _mac(pkt.src), _mac(pkt.dst)
        et = pkt.type
    elif isinstance(pkt, CookedLinuxV2):  # before CookedLinux: scapy derives V2 from it
        et = pkt.proto
        if pkt.lladdrlen == 6:
            e["src_mac"] = int.from_bytes(bytes(pkt)[12:18], "big")
    elif isinstance(pkt, CookedLinux):
        et = pkt.proto
        if pkt.lladdrlen == 6:
            e["src_mac"] = int.from_bytes(bytes(pkt)[6:12], "big")
    elif isinstance(pkt, Loopback):
        et = 0x0800 if pkt.type == 2 else 0x86DD
    elif isinstance(pkt, IP):
        et = 0x0800
    elif isinstance(pkt, IPv6):
        et = 0x86DD
    tags = [layer for layer in pkt.layers() if layer in (Dot1Q, Dot1AD)]
    if tags:
        first = pkt.getlayer(tags[0])
        e["vlan"] = first.vlan
        layer = first
        while isinstance(layer.payload, (Dot1Q, Dot1AD)):
            layer = layer.payload
        et = layer.type
    e["eth_type"] = et
    if et == 0x0806 and ARP in pkt:
        arp = pkt[ARP]
        e["sport"] = arp.op
        e["src_ip"], e["dst_ip"] = _ip16(arp.psrc), _ip16(arp.pdst)
        return e
    later = False
    if et == 0x0800 and IP in pkt:
        ip = pkt[IP]
        e["ip_version"] = 4
        e["src_ip"], e["dst_ip"] = _ip16(ip.src), _ip16(ip.dst)
        e["ttl"], e["proto"] = ip.ttl, ip.proto
        e["frag"] = int(bool(ip.flags.MF) or ip.frag > 0)
        later = ip.frag > 0
        ip_payload = ip.len - ip.ihl * 4
        upper = ip.payload
    elif et == 0x86DD and IPv6 in pkt:
        ip6 = pkt[IPv6]
        e["ip_version"] = 6
        e["src_ip"], e["dst_ip"] = _ip16(ip6.src), _ip16(ip6.dst)
        e["ttl"] = ip6.hlim
        ip_payload = ip6.plen
        nh = ip6.nh
        upper = ip6.payload
        while isinstance(upper, _V6_EXT_CLASSES):
            size = len(bytes(upper)) - len(bytes(upper.payload))
            ip_payload -= size
            if isinstance(upper, IPv6ExtHdrFragment):
                e["frag"] = 1
                later = upper.offset > 0
            nh = upper.nh
            upper = upper.payload
            if later:
                break
        e["proto"] = nh
    else:
        return e
    proto = e["proto"]
    if later or proto not in (6, 17, 1, 58):
        e["payload_len"] = ip_payload
        return e
    if proto in (6, 17) and not isinstance(upper, (TCP, UDP)):
        upper = (TCP if proto == 6 else UDP)(bytes(upper))  # scapy stops dissecting after AH
    if proto == 6:
        tcp = upper
        e["sport"], e["dport"] = tcp.sport, tcp.dport
        e["tcp_flags"] = int(tcp.flags) & 0xFF
        e["payload_len"] = ip_payload - tcp.dataofs * 4
    elif proto == 17:
        e["sport"], e["dport"] = upper.sport, upper.dport
        e["payload_len"] = ip_payload - 8
    else:
        raw = bytes(upper)
        e["sport"], e["dport"] = raw[0], raw[1]
        e["payload_len"] = ip_payload - 8
    return e


def _frames(pkts: list[Packet], linktype: int = LT_ETHERNET, *, start: float = BASE_TS) -> list[Frame]:
    frames = []
    for i, p in enumerate(pkts):
        data = bytes(p)
        frames.append(Frame(start + i * 0.001 + 0.000123, data, len(data), linktype, 0, expected_fields(p)))
    return frames


def _write(path: Path, frames: list[Frame], linktype: int = LT_ETHERNET, **kw: Any) -> Capture:
    path.write_bytes(pcap_bytes(frames, linktype, **kw))
    return Capture(path, frames, [""])


# ---------------------------------------------------------------------------------------------
# packets

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def ordinary_packets() -> list[Packet]:
    """A mix of everyday traffic with varied fields (flags, ttl, options, padding)."""
    eth = Ether(src=MAC_A, dst=MAC_B)
    return [
        eth / IP(src="10.0.0.1", dst="10.0.0.2", ttl=64) / TCP(sport=40000, dport=80, flags="S"),
        eth / IP(src="10.0.0.2", dst="10.0.0.1", ttl=63) / TCP(sport=80, dport=40000, flags="SA"),
        eth
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / TCP(sport=40000, dport=80, flags="PA")
        / Raw(b"GET / HTTP/1.1\r\n\r\n"),
        eth / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=80, flags="FA"),
        eth / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="FSRPAUEC"),
        eth
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / TCP(sport=5, dport=6, flags="R", options=[("MSS", 1460), ("NOP", None), ("WScale", 7)])
        / Raw(b"z" * 33),
        eth
        / IP(src="192.168.1.10", dst="8.8.8.8", ttl=128)
        / UDP(sport=5353, dport=53)
        / Raw(b"\x12\x34" + b"q" * 30),
        eth / IP(src="192.168.1.10", dst="192.168.1.1") / UDP(sport=68, dport=67) / Raw(b"d" * 300),
        eth / IP(src="10.0.0.1", dst="10.0.0.9", ttl=1) / ICMP(type=8, code=0) / Raw(b"p" * 56),
        eth / IP(src="10.0.0.9", dst="10.0.0.1") / ICMP(type=3, code=3) / Raw(b"e" * 28),
        eth
        / IP(src="10.1.2.3", dst="10.3.2.1", options=[IPOption_RR(routers=["1.1.1.1", "2.2.2.2"])])
        / TCP(sport=7, dport=8, flags="A")
        / Raw(b"o" * 5),
        eth
        / IP(src="10.0.0.1", dst="10.0.0.2", proto=47)
        / GRE()
        / IP(src="172.16.0.1", dst="172.16.0.2")
        / UDP(),
        Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=MAC_A, psrc="10.0.0.1", pdst="10.0.0.2"),
        Ether(src=MAC_B, dst=MAC_A) / ARP(op=2, hwsrc=MAC_B, psrc="10.0.0.2", hwdst=MAC_A, pdst="10.0.0.1"),
        eth
        / IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=42)
        / TCP(sport=443, dport=50000, flags="A")
        / Raw(b"t" * 100),
        eth / IPv6(src="fe80::1", dst="ff02::1") / UDP(sport=546, dport=547) / Raw(b"u" * 12),
        eth / IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest(id=1, seq=2, data=b"x" * 16),
        eth / IPv6(src="2001:db8::2", dst="2001:db8::1") / ICMPv6EchoReply(id=1, seq=2, data=b"x" * 16),
        Ether(src=MAC_A, dst=MAC_B, type=0x88CC) / Raw(b"\x02\x07\x04" + bytes(40)),  # LLDP
    ]


# ---------------------------------------------------------------------------------------------
# captures


def make_ordinary(d: Path, name: str = "ordinary.pcap", **kw: Any) -> Capture:
    return _write(d / name, _frames(ordinary_packets()), **kw)


def make_vlan(d: Path) -> Capture:
    eth = Ether(src=MAC_A, dst=MAC_B)
    pkts = [
        eth / Dot1Q(vlan=10) / IP(src="10.0.10.1", dst="10.0.10.2") / TCP(sport=1000, dport=22, flags="S"),
        eth / Dot1Q(vlan=4094, prio=5) / IPv6(src="2001:db8::a", dst="2001:db8::b") / UDP(sport=1, dport=2),
        eth
        / Dot1AD(vlan=100)
        / Dot1Q(vlan=200)
        / IP(src="10.0.20.1", dst="10.0.20.2")
        / UDP(sport=3, dport=4)
        / Raw(b"q" * 10),
        eth / Dot1Q(vlan=300) / Dot1Q(vlan=301) / IP(src="10.0.30.1", dst="10.0.30.2") / ICMP(),
        eth / Dot1Q(vlan=7) / ARP(op=1, psrc="10.7.0.1", pdst="10.7.0.2"),
        eth / Dot1Q(vlan=0, prio=3) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=9, dport=10, flags="A"),
    ]
    return _write(d / "vlan.pcap", _frames(pkts))


def ipv6_ext_packets() -> list[Packet]:
    eth = Ether(src=MAC_A, dst=MAC_B)
    v6 = IPv6(src="2001:db8::1", dst="2001:db8::2")
    return [
        eth / v6 / IPv6ExtHdrHopByHop() / TCP(sport=11, dport=12, flags="S"),
        eth / v6 / IPv6ExtHdrRouting(addresses=["2001:db8::99"]) / UDP(sport=13, dport=14) / Raw(b"r" * 20),
        eth / v6 / IPv6ExtHdrDestOpt() / ICMPv6EchoRequest(data=b"d" * 8),
        eth
        / v6
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting()
        / TCP(sport=15, dport=16, flags="PA")
        / Raw(b"x" * 7),
        eth / v6 / IPv6ExtHdrFragment(offset=0, m=1, id=7) / UDP(sport=17, dport=18) / Raw(b"f" * 64),
        eth / v6 / IPv6ExtHdrFragment(offset=8, m=0, id=7, nh=17) / Raw(b"g" * 40),
        eth
        / v6
        / AH(spi=0x1234, seq=1, icv=b"\x00" * 12, nh=6, payloadlen=4)
        / TCP(sport=19, dport=20, flags="A"),
        eth
        / v6
        / IPv6ExtHdrHopByHop()
        / AH(spi=1, icv=b"\x00" * 12, payloadlen=4, nh=17)
        / UDP(sport=21, dport=22),
    ]


def make_ipv6_ext(d: Path) -> Capture:
    frames = _frames(ipv6_ext_packets())
    # a chain that runs past the packet: hop-by-hop header claiming 2 KiB
    bad = bytearray(
        bytes(
            Ether(src=MAC_A, dst=MAC_B)
            / IPv6(src="2001:db8::1", dst="2001:db8::2")
            / IPv6ExtHdrHopByHop()
            / TCP()
        )
    )
    bad[14 + 40 + 1] = 255
    expect = expected_fields(Ether(src=MAC_A, dst=MAC_B) / IPv6(src="2001:db8::1", dst="2001:db8::2"))
    expect.update(proto=0, payload_len=0, status=7)  # proto: the header that could not be walked
    frames.append(Frame(BASE_TS + 1, bytes(bad), len(bad), LT_ETHERNET, 0, expect))
    return _write(d / "ipv6ext.pcap", frames)


def make_fragments(d: Path) -> Capture:
    big = IP(src="10.9.9.1", dst="10.9.9.2", id=4242) / UDP(sport=5000, dport=6000) / Raw(b"F" * 3000)
    pkts = [Ether(src=MAC_A, dst=MAC_B) / f for f in fragment(big, fragsize=1000)]
    return _write(d / "fragments.pcap", _frames(pkts))


def make_mpls_gre(d: Path) -> Capture:
    eth = Ether(src=MAC_A, dst=MAC_B)
    pkts = [
        eth / MPLS(label=16, s=1, ttl=64) / IP(src="10.5.0.1", dst="10.5.0.2") / TCP(),
        eth / MPLS(label=17, s=0) / MPLS(label=18, s=1) / IP() / UDP(),
        eth
        / IP(src="10.6.0.1", dst="10.6.0.2")
        / GRE(proto=0x0800)
        / IP(src="1.1.1.1", dst="2.2.2.2")
        / TCP(),
        eth / IP(src="10.6.0.1", dst="10.6.0.2") / GRE(proto=0x6558) / Ether() / IP() / ICMP(),
    ]
    frames = _frames(pkts)
    for f in frames[:2]:
        assert f.expect is not None
        f.expect = {k: v for k, v in f.expect.items() if k in ("eth_type", "src_mac", "dst_mac", "status")}
        f.expect["eth_type"] = 0x8847
    return _write(d / "mpls_gre.pcap", frames)


def make_sll(d: Path) -> Capture:
    pkts = [
        CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=bytes.fromhex("020000000001") + b"\x00\x00")
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / TCP(sport=1, dport=2, flags="S"),
        CookedLinux(pkttype=4, lladdrtype=1, lladdrlen=6, src=bytes.fromhex("020000000002") + b"\x00\x00")
        / IPv6(src="::1", dst="::2")
        / UDP(sport=3, dport=4),
        CookedLinux(pkttype=0, lladdrtype=772, lladdrlen=0, src=bytes(8))
        / IP(src="127.0.0.1", dst="127.0.0.1")
        / UDP(sport=5, dport=6),
    ]
    return _write(d / "sll.pcap", _frames(pkts, LT_SLL), linktype=LT_SLL)


def make_sll2(d: Path) -> Capture:
    pkts = [
        CookedLinuxV2(
            proto=0x0800,
            ifindex=2,
            lladdrtype=1,
            pkttype=0,
            lladdrlen=6,
            src=bytes.fromhex("020000000003") + b"\x00\x00",
        )
        / IP(src="10.0.0.3", dst="10.0.0.4")
        / TCP(sport=7, dport=8, flags="A"),
        CookedLinuxV2(proto=0x86DD, ifindex=1, lladdrtype=772, pkttype=0, lladdrlen=0, src=bytes(8))
        / IPv6(src="::1", dst="::1")
        / ICMPv6EchoRequest(),
    ]
    return _write(d / "sll2.pcap", _frames(pkts, LT_SLL2), linktype=LT_SLL2)


def make_raw(d: Path) -> Capture:
    pkts = [
        IP(src="10.0.0.1", dst="10.0.0.2", ttl=5) / TCP(sport=1, dport=2, flags="S"),
        IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=3, dport=4) / Raw(b"r" * 9),
        IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=0),
    ]
    return _write(d / "raw.pcap", _frames(pkts, LT_RAW), linktype=LT_RAW)


def make_null_loop(d: Path) -> tuple[Capture, Capture]:
    inner = [
        IP(src="127.0.0.1", dst="127.0.0.2") / UDP(sport=1, dport=2),
        IPv6(src="::1", dst="::1") / TCP(sport=3, dport=4),
    ]
    null_frames, loop_frames = [], []
    for i, p in enumerate(inner):
        family = 2 if isinstance(p, IP) else 30
        exp = expected_fields(p)
        for frames, head in (
            (null_frames, struct.pack("<I", family)),
            (loop_frames, struct.pack(">I", family)),
        ):
            data = head + bytes(p)
            frames.append(
                Frame(BASE_TS + i, data, len(data), LT_NULL if frames is null_frames else LT_LOOP, 0, exp)
            )
    return (
        _write(d / "null.pcap", null_frames, linktype=LT_NULL),
        _write(d / "loop.pcap", loop_frames, linktype=LT_LOOP),
    )


def make_pcapng_two_interfaces(d: Path, *, big_endian: bool = False, name: str = "two_if.pcapng") -> Capture:
    """Interface 0: Ethernet, microseconds; interface 1: raw IP, nanoseconds with an offset.

    Also has a simple packet block, a name resolution block and a statistics block (skipped).
    """
    be = big_endian
    eth_frames = _frames(ordinary_packets()[:6])
    raw_frames = _frames(
        [
            IP(src="10.8.0.1", dst="10.8.0.2") / UDP(sport=9, dport=10),
            IPv6(src="::5", dst="::6") / TCP(sport=11, dport=12),
        ],
        LT_RAW,
        start=BASE_TS + 0.5,
    )
    offset = 100
    out = [
        pcapng_shb(be),
        pcapng_idb(LT_ETHERNET, "eth0", None, be=be),
        pcapng_idb(LT_RAW, "tun0", 9, offset, be=be),
    ]
    frames: list[Frame] = []
    e = ">" if be else "<"
    for i in range(max(len(eth_frames), len(raw_frames))):
        if i < len(eth_frames):
            f = eth_frames[i]
            out.append(pcapng_epb(0, ticks_for(f.ts, None), f.data, f.length, be=be))
            frames.append(f)
        if i < len(raw_frames):
            f = raw_frames[i]
            f.iface = 1
            out.append(pcapng_epb(1, ticks_for(f.ts - offset, 9), f.data, f.length, be=be))
            frames.append(f)
        if i == 1:
            out.append(_block(e, 4, struct.pack(e + "HH", 0, 0)))  # name resolution block: skipped
    # a simple packet block belongs to interface 0 and has no timestamp
    spb = ordinary_packets()[6]
    data = bytes(spb)
    out.append(pcapng_spb(data, len(data), be=be))
    frames.append(Frame(0.0, data, len(data), LT_ETHERNET, 0, expected_fields(spb)))
    out.append(_block(e, 5, struct.pack(e + "III", 0, 0, 0) + struct.pack(e + "HH", 0, 0)))  # statistics
    path = d / name
    path.write_bytes(b"".join(out))
    return Capture(path, frames, ["eth0", "tun0"])


def make_pcapng_two_sections(d: Path) -> Capture:
    """A little-endian section followed by a big-endian one with its own interfaces."""
    a = make_pcapng_two_interfaces(d, name="_a.pcapng")
    b = make_pcapng_two_interfaces(d, big_endian=True, name="_b.pcapng")
    path = d / "two_sections.pcapng"
    path.write_bytes(a.path.read_bytes() + b.path.read_bytes())
    frames = list(a.frames)
    for f in b.frames:
        frames.append(Frame(f.ts, f.data, f.length, f.linktype, f.iface + 2, f.expect))
    return Capture(path, frames, ["eth0", "tun0", "eth0", "tun0"])


def make_pcapng_tsresol(d: Path) -> Capture:
    """Timestamps in 2^-20 second units (binary if_tsresol)."""
    frames = _frames(ordinary_packets()[:3])
    out = [pcapng_shb(), pcapng_idb(LT_ETHERNET, "bin0", 0x80 | 20)]
    for f in frames:
        out.append(pcapng_epb(0, ticks_for(f.ts, 0x80 | 20), f.data, f.length))
    path = d / "tsresol.pcapng"
    path.write_bytes(b"".join(out))
    return Capture(path, frames, ["bin0"])


def make_pcapng_bad_block(d: Path) -> Capture:
    """A packet block whose captured length exceeds its block, then good packets: read on."""
    frames = _frames(ordinary_packets()[:4])
    out = [pcapng_shb(), pcapng_idb(LT_ETHERNET, "eth0")]
    for i, f in enumerate(frames):
        block = bytearray(pcapng_epb(0, ticks_for(f.ts, None), f.data, f.length))
        if i == 1:
            struct.pack_into("<I", block, 20, 5000)  # caplen field
        out.append(bytes(block))
    path = d / "bad_block.pcapng"
    path.write_bytes(b"".join(out))
    return Capture(path, [f for i, f in enumerate(frames) if i != 1], ["eth0"])


def make_snaplen(d: Path, snaplen: int = 60) -> Capture:
    """Frames cut to a small snaplen: headers complete, payload not captured."""
    frames = []
    for f in _frames(ordinary_packets()):
        # frames whose headers do not fit the snaplen decode with a status instead
        fits = f.expect is not None and len(f.data) - f.expect["payload_len"] <= snaplen
        frames.append(Frame(f.ts, f.data[:snaplen], f.length, f.linktype, 0, f.expect if fits else None))
    return _write(d / "snaplen.pcap", frames, snaplen=snaplen)


def make_truncated_final(d: Path) -> Capture:
    cap = make_ordinary(d, "truncated.pcap")
    data = cap.path.read_bytes()
    cap.path.write_bytes(data[:-10])
    cap.frames = cap.frames[:-1]
    return cap


def make_truncated_header(d: Path) -> Capture:
    cap = make_ordinary(d, "truncated_header.pcap")
    cap.path.write_bytes(cap.path.read_bytes() + b"\x01\x02\x03\x04\x05")
    return cap


def make_record_over_limit(d: Path) -> Capture:
    """The sixth record header claims 16 MiB: reading stops there.

    (Not earlier: Wireshark guesses among pcap variants from the first records.)
    """
    frames = _frames(ordinary_packets()[:8])
    data = bytearray(pcap_bytes(frames))
    pos = 24
    for f in frames[:5]:
        pos += 16 + len(f.data)
    struct.pack_into("<I", data, pos + 8, 16 * 1024 * 1024)
    path = d / "over_limit.pcap"
    path.write_bytes(bytes(data))
    return Capture(path, frames[:5], [""])


def make_gzip(d: Path) -> Capture:
    cap = make_ordinary(d, "ordinary_for_gz.pcap")
    path = d / "compressed.bin"  # no .gz extension: detected by magic
    path.write_bytes(gzip.compress(cap.path.read_bytes()))
    return Capture(path, cap.frames, [""])


def make_gzip_pcapng(d: Path) -> Capture:
    cap = make_pcapng_two_interfaces(d, name="_gz.pcapng")
    path = d / "two_if.pcapng.gz"
    path.write_bytes(gzip.compress(cap.path.read_bytes()))
    return Capture(path, cap.frames, cap.interfaces)


def make_truncated_link(d: Path) -> Capture:
    """Frames cut inside each header: every status code the decoder has for truncation."""
    ip = IP(src="10.0.0.1", dst="10.0.0.2")
    eth = Ether(src=MAC_A, dst=MAC_B)
    cases = [
        (bytes(eth)[:10], {"status": 1}),
        (bytes(eth / Dot1Q(vlan=5) / ip)[:16], {"status": 1, "eth_type": 0x8100}),
        (bytes(eth / ip / TCP())[: 14 + 12], {"status": 2, "ip_version": 4, "eth_type": 0x0800}),
        (bytes(eth / IPv6() / TCP())[: 14 + 30], {"status": 4, "ip_version": 6, "eth_type": 0x86DD}),
        (bytes(eth / ip / TCP())[: 14 + 20 + 10], {"status": 5, "ip_version": 4, "proto": 6}),
        (bytes(eth / ip / UDP())[: 14 + 20 + 6], {"status": 5, "ip_version": 4, "proto": 17}),
        (bytes(eth / ARP())[: 14 + 20], {"status": 8, "eth_type": 0x0806}),
        (bytes(eth / IP(ihl=3) / TCP()), {"status": 3, "ip_version": 4}),
        (
            bytes(Ether(src=MAC_A, dst=MAC_B, type=0x0800)) + b"\x65" + bytes(30),
            {"status": 9, "ip_version": 0},
        ),
    ]
    frames = [
        Frame(BASE_TS + i, data, len(data) + 50, LT_ETHERNET, 0, exp) for i, (data, exp) in enumerate(cases)
    ]
    return _write(d / "truncated_headers.pcap", frames)


def make_unknown_linktype(d: Path) -> Capture:
    frames = [
        Frame(BASE_TS + i, b"\x00" * (20 + i), 100 + i, 147, 0, {"status": 6, "eth_type": 0})
        for i in range(3)
    ]
    return _write(d / "user0.pcap", frames, linktype=147)


def make_bad_files(d: Path) -> dict[str, Path]:
    """Files that are not captures at all: name -> path."""
    files = {
        "empty": b"",
        "garbage": bytes(range(256)) * 20,
        "wrong_magic": b"\xde\xad\xbe\xef" + bytes(100),
        "short_header": pcap_bytes([])[:14],
        "gzip_garbage": gzip.compress(b"not a capture at all" * 10),
        "text": b"hello, this is a text file\n" * 5,
        "pcapng_bad_bom": pcapng_shb()[:8] + b"\x00\x00\x00\x00" + pcapng_shb()[12:],
    }
    paths = {}
    for name, data in files.items():
        path = d / f"{name}.pcap"
        path.write_bytes(data)
        paths[name] = path
    return paths


# ---------------------------------------------------------------------------------------------
# link types with their own headers before IP: PPP, Cisco HDLC, FDDI, 802.11 (plain, radiotap), NFLOG

WLAN_DA, WLAN_SA, WLAN_BSSID = "02:00:00:00:00:0d", "02:00:00:00:00:05", "02:00:00:00:00:0b"
WLAN_RA, WLAN_TA = "02:00:00:00:00:0e", "02:00:00:00:00:0f"
_LLC_SNAP = LLC(dsap=0xAA, ssap=0xAA, ctrl=3) / SNAP(OUI=0)


def _ip_packets(tag: int) -> list[Packet]:
    """IPv4/TCP, IPv6/UDP and IPv4/ICMP packets with fields that tell them apart (``tag``: 1..250)."""
    return [
        IP(src=f"10.{tag}.0.1", dst=f"10.{tag}.0.2", ttl=50 + tag % 50)
        / TCP(sport=1000 + tag, dport=80, flags="PA")
        / Raw(b"t" * (tag % 7 + 1)),
        IPv6(src=f"2001:db8:{tag:x}::1", dst=f"2001:db8:{tag:x}::2", hlim=60)
        / UDP(sport=2000 + tag, dport=4000)
        / Raw(b"u" * 12),
        IP(src=f"10.{tag}.1.1", dst=f"10.{tag}.1.2") / ICMP(type=8, code=0) / Raw(b"i" * 8),
    ]


def _link_frames(cases: list[tuple[bytes, dict[str, Any]]], linktype: int) -> list[Frame]:
    return [
        Frame(BASE_TS + i * 0.001, data, len(data), linktype, 0, expect)
        for i, (data, expect) in enumerate(cases)
    ]


def _with_ip(inner: Packet, **link: Any) -> dict[str, Any]:
    """Every record field of an IP packet carried by a link layer, plus the link layer's (MACs)."""
    return {**expected_fields(inner), **link}


def _non_ip(**fields: Any) -> dict[str, Any]:
    return {"eth_type": 0, "ip_version": 0, "proto": 0, "sport": 0, "src_ip": bytes(16), **fields}


def make_ppp(d: Path) -> Capture:
    """LINKTYPE_PPP: with and without HDLC-like address/control, compressed protocol, LCP, cut short."""
    v4, v6, icmp = _ip_packets(21)
    cases = [
        (bytes(HDLC() / PPP(proto=0x0021) / v4), _with_ip(v4)),
        (bytes(PPP(proto=0x0057) / v6), _with_ip(v6)),  # no address and control bytes
        (b"\xff\x03\x21" + bytes(icmp), _with_ip(icmp)),  # protocol field compressed to one byte
        (bytes(HDLC() / PPP(proto=0xC021)) + b"\x01\x01\x00\x04", _non_ip(status=0)),  # LCP
        (b"\xff\x03\x00", _non_ip(status=1)),
    ]
    return _write(d / "ppp.pcap", _link_frames(cases, LT_PPP), linktype=LT_PPP)


def make_ppp_hdlc(d: Path) -> Capture:
    """LINKTYPE_PPP_HDLC: PPP in HDLC-like framing, and Cisco HDLC (address 0x0F/0x8F, EtherType)."""
    v4, v6, icmp = _ip_packets(22)
    cases = [
        (bytes(HDLC() / PPP(proto=0x0057) / v6), _with_ip(v6)),
        (b"\x0f\x00\x08\x00" + bytes(v4), _with_ip(v4)),
        (b"\x8f\x00\x08\x00" + bytes(icmp), _with_ip(icmp)),
        (b"\x0f\x00\x08", _non_ip(status=1)),
    ]
    return _write(d / "ppp_hdlc.pcap", _link_frames(cases, LT_PPP_HDLC), linktype=LT_PPP_HDLC)


def _fddi(fc: int, payload: bytes) -> bytes:
    return (
        bytes([fc])
        + bytes.fromhex(WLAN_DA.replace(":", ""))
        + bytes.fromhex(WLAN_SA.replace(":", ""))
        + payload
    )


def make_fddi(d: Path) -> Capture:
    """LINKTYPE_FDDI: frame control, destination, source, then LLC/SNAP for LLC frames."""
    v4, v6, icmp = _ip_packets(23)
    macs = {"dst_mac": _mac(WLAN_DA), "src_mac": _mac(WLAN_SA)}
    cases = [
        (_fddi(0x50, bytes(_LLC_SNAP / v4)), _with_ip(v4, **macs)),
        (_fddi(0x51, bytes(LLC(dsap=0xAA, ssap=0xAA, ctrl=3) / SNAP(OUI=0xF8) / v6)), _with_ip(v6, **macs)),
        (_fddi(0x57, bytes(_LLC_SNAP / icmp)), _with_ip(icmp, **macs)),
        (_fddi(0x41, bytes(40)), _non_ip(status=0, **macs)),  # an SMT frame: no LLC
        (_fddi(0x50, bytes(LLC(dsap=0x42, ssap=0x42, ctrl=3)) + bytes(30)), _non_ip(status=0, **macs)),  # STP
        (_fddi(0x50, b"\xaa\xaa\x03"), _non_ip(status=1, **macs)),  # SNAP cut short
        (_fddi(0x50, b"")[:9], _non_ip(status=1, dst_mac=0, src_mac=0)),
    ]
    return _write(d / "fddi.pcap", _link_frames(cases, LT_FDDI), linktype=LT_FDDI)


def _wlan_cases(tag: int) -> list[tuple[bytes, dict[str, Any]]]:
    """802.11 frames: every To/From DS address layout, QoS (with HT control), and frames without IP."""
    v4, v6, icmp = _ip_packets(tag)
    da, sa = {"dst_mac": _mac(WLAN_DA)}, {"src_mac": _mac(WLAN_SA)}
    qos_htc = Dot11(type=2, subtype=8, FCfield=0x80 | 0x01, addr1=WLAN_BSSID, addr2=WLAN_SA, addr3=WLAN_DA)
    return [
        # To DS: BSSID, source, destination
        (
            bytes(
                Dot11(type=2, subtype=0, FCfield=1, addr1=WLAN_BSSID, addr2=WLAN_SA, addr3=WLAN_DA)
                / _LLC_SNAP
                / v4
            ),
            _with_ip(v4, **da, **sa),
        ),
        # From DS: destination, BSSID, source; QoS data
        (
            bytes(
                Dot11(type=2, subtype=8, FCfield=2, addr1=WLAN_DA, addr2=WLAN_BSSID, addr3=WLAN_SA)
                / Dot11QoS(TID=5)
                / _LLC_SNAP
                / v6
            ),
            _with_ip(v6, **da, **sa),
        ),
        # To and From DS (WDS): receiver, transmitter, destination, source; QoS data
        (
            bytes(
                Dot11(
                    type=2, subtype=8, FCfield=3, addr1=WLAN_RA, addr2=WLAN_TA, addr3=WLAN_DA, addr4=WLAN_SA
                )
                / Dot11QoS()
                / _LLC_SNAP
                / icmp
            ),
            _with_ip(icmp, **da, **sa),
        ),
        # neither (ad hoc): destination, source, BSSID; QoS data with the Order bit: 4 bytes HT control
        (
            bytes(
                Dot11(type=2, subtype=0, FCfield=0, addr1=WLAN_DA, addr2=WLAN_SA, addr3=WLAN_BSSID)
                / _LLC_SNAP
                / v6
            ),
            _with_ip(v6, **da, **sa),
        ),
        (bytes(qos_htc / Dot11QoS()) + b"\x00\x00\x00\x00" + bytes(_LLC_SNAP / v4), _with_ip(v4, **da, **sa)),
        # protected QoS data: addresses, no payload
        (
            bytes(
                Dot11(type=2, subtype=8, FCfield=0x41, addr1=WLAN_BSSID, addr2=WLAN_SA, addr3=WLAN_DA)
                / Dot11QoS()
            )
            + bytes(range(40)),
            _non_ip(status=12, **da, **sa),
        ),
        # null data (a power-save announcement), a beacon, an ACK
        (
            bytes(Dot11(type=2, subtype=4, FCfield=1, addr1=WLAN_BSSID, addr2=WLAN_SA, addr3=WLAN_DA)),
            _non_ip(status=11, **da, **sa),
        ),
        (
            bytes(Dot11(type=0, subtype=8, addr1=WLAN_DA, addr2=WLAN_SA, addr3=WLAN_BSSID)) + bytes(36),
            _non_ip(status=11, **da, **sa),
        ),
        (bytes(Dot11(type=1, subtype=13, addr1=WLAN_DA))[:10], _non_ip(status=11, dst_mac=0, src_mac=0)),
        # data that is not LLC/SNAP, and data cut inside the 802.11 header and inside SNAP
        (
            bytes(Dot11(type=2, subtype=0, FCfield=2, addr1=WLAN_DA, addr2=WLAN_BSSID, addr3=WLAN_SA))
            + b"\x42" * 20,
            _non_ip(status=0, **da, **sa),
        ),
        (bytes(Dot11(type=2, subtype=0, FCfield=1))[:20], _non_ip(status=1, dst_mac=0, src_mac=0)),
        (
            bytes(Dot11(type=2, subtype=0, FCfield=1, addr1=WLAN_BSSID, addr2=WLAN_SA, addr3=WLAN_DA))
            + b"\xaa\xaa",
            _non_ip(status=1, **da, **sa),
        ),
    ]


def make_ieee80211(d: Path) -> Capture:
    """LINKTYPE_IEEE802_11: 802.11 frames as they are (no radio header)."""
    frames = _link_frames(_wlan_cases(24), LT_IEEE802_11)
    return _write(d / "wlan80211.pcap", frames, linktype=LT_IEEE802_11)


def make_radiotap(d: Path) -> Capture:
    """LINKTYPE_IEEE802_11_RADIOTAP: radiotap headers of different lengths before the same 802.11 frames."""
    radios = [
        RadioTap(),
        RadioTap(present="Flags+Rate+Channel+dBm_AntSignal+Antenna", Rate=12, ChannelFrequency=2437),
        RadioTap(present="TSFT+Flags+Rate+Channel+dBm_AntSignal+RXFlags", mac_timestamp=123456789),
    ]
    cases = [
        (bytes(radios[i % len(radios)]) + data, expect) for i, (data, expect) in enumerate(_wlan_cases(25))
    ]
    wlan = bytes(Dot11(type=2, subtype=0, FCfield=1) / _LLC_SNAP / IP() / TCP())
    # a radiotap version other than 0 is read the same way (as Wireshark does)
    cases.append((b"\x01\x00\x08\x00\x00\x00\x00\x00" + wlan, _with_ip(IP() / TCP(), dst_mac=0, src_mac=0)))
    cases.append((b"\x00\x00\xff\x00\x00\x00\x00\x00" + wlan, _non_ip(status=1)))  # longer than the frame
    cases.append((b"\x00\x00\x08\x00", _non_ip(status=1)))
    return _write(d / "radiotap.pcap", _link_frames(cases, LT_RADIOTAP), linktype=LT_RADIOTAP)


def _tlv(kind: int, value: bytes, big_endian: bool = False) -> bytes:
    header = struct.pack(">HH" if big_endian else "<HH", 4 + len(value), kind)
    return header + value + bytes(-len(value) % 4)


def nflog_frame(
    family: int, payload: bytes | None, *, big_endian: bool = False, prefix: bytes = b"test"
) -> bytes:
    """An NFLOG frame: family, version 0, resource id 1, hardware protocol, prefix and indev TLVs, payload."""
    tlvs = [
        _tlv(1, struct.pack(">HBx", 0x0800 if family == 2 else 0x86DD, 3), big_endian),
        _tlv(10, prefix + b"\x00", big_endian),
        _tlv(4, struct.pack(">I", 2), big_endian),
    ]
    if payload is not None:
        tlvs.append(_tlv(9, payload, big_endian))
    return struct.pack(">BBH", family, 0, 1) + b"".join(tlvs)


def make_nflog(d: Path) -> Capture:
    """LINKTYPE_NFLOG: IPv4 and IPv6 payload TLVs, either byte order, no payload, cut short, malformed."""
    v4, v6, icmp = _ip_packets(26)
    cases = [
        (nflog_frame(2, bytes(v4)), _with_ip(v4)),
        (nflog_frame(10, bytes(v6), prefix=b"a longer log prefix than usual"), _with_ip(v6)),
        (nflog_frame(2, bytes(icmp), big_endian=True), _with_ip(icmp)),
        (nflog_frame(2, None), _non_ip(status=0)),  # no payload TLV (a copy range of 0)
        (nflog_frame(2, bytes(v4))[:10], _non_ip(status=1)),  # cut inside a TLV header
        (struct.pack(">BBH", 2, 0, 1) + struct.pack("<HH", 2, 9) + bytes(v4), _non_ip(status=1)),  # length 2
    ]
    return _write(d / "nflog.pcap", _link_frames(cases, LT_NFLOG), linktype=LT_NFLOG)


def make_link_types(d: Path) -> list[Capture]:
    return [make_ppp(d), make_ppp_hdlc(d), make_fddi(d), make_ieee80211(d), make_radiotap(d), make_nflog(d)]


def link_type_samples() -> list[tuple[bytes, int]]:
    """The frames of ``make_link_types`` as (bytes, link type), for tests that need no file."""
    with tempfile.TemporaryDirectory() as tmp:
        return [(frame.data, frame.linktype) for cap in make_link_types(Path(tmp)) for frame in cap.frames]


def all_good_captures(d: Path) -> list[Capture]:
    """Every readable capture above (the ones whose frame count capinfos can confirm)."""
    null, loop = make_null_loop(d)
    return [
        make_ordinary(d),
        make_ordinary(d, "ordinary_be.pcap", big_endian=True),
        make_ordinary(d, "ordinary_ns.pcap", nanosecond=True),
        make_ordinary(d, "ordinary_be_ns.pcap", big_endian=True, nanosecond=True),
        make_vlan(d),
        make_ipv6_ext(d),
        make_fragments(d),
        make_mpls_gre(d),
        make_sll(d),
        make_sll2(d),
        make_raw(d),
        null,
        loop,
        make_pcapng_two_interfaces(d),
        make_pcapng_two_interfaces(d, big_endian=True, name="two_if_be.pcapng"),
        make_pcapng_two_sections(d),
        make_pcapng_tsresol(d),
        make_snaplen(d),
        make_truncated_final(d),
        make_truncated_header(d),
        make_gzip(d),
        make_gzip_pcapng(d),
        make_truncated_link(d),
        make_unknown_linktype(d),
        *make_link_types(d),
    ]
