"""A corpus of odd captures: read and decoded without a crash, every file's counts matching capinfos.

The files are generated with scapy (and the byte-level writers of tests/capture/pcaps.py) into a
temporary directory: IPv6 extension-header chains, VLAN/QinQ stacks, MPLS, GRE variants, IPv4 and
IPv6 fragments, pcapng files whose interfaces have different link types, truncated last records,
wrong magic numbers, and every non-Ethernet link type the decoder knows (raw IP, Linux SLL/SLL2,
BSD loopback/null, PPP and Cisco HDLC, FDDI, 802.11 with and without radiotap, NFLOG) plus some it
does not. tests/capture/test_pcapio.py and test_decode.py check
the ordinary flavours field by field; here the point is surviving the odd ones, and accounting:

    frames read (== ``capinfos -c -M``) = decoded + undecodable;  damaged records are counted too.

The same corpus then goes through ``manage.py capture --pcap ... --summary-json`` once, and the
per-file counts it reports must agree.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scapy.all import (
    ARP,
    GRE,
    ICMP,
    IP,
    LLC,
    SNAP,
    TCP,
    UDP,
    CookedLinux,
    CookedLinuxV2,
    Dot1AD,
    Dot1Q,
    Ether,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Jumbo,
    Raw,
    fragment,
    fragment6,
)
from scapy.contrib.mpls import MPLS
from scapy.layers.inet6 import MIP6MH_BRR, IPv6ExtHdrSegmentRouting

from capture.decode import decode_frame, decode_frames, iter_record_batches
from capture.models import Packet
from capture.pcapio import TS_MAX, TS_MIN, CaptureFileError, ReadStats, iter_frame_batches
from capture.records import DECODE_ERRORS
from tests import processes
from tests.capture import pcaps
from tests.capture.pcaps import (
    BASE_TS,
    LT_ETHERNET,
    LT_LOOP,
    LT_NULL,
    LT_RAW,
    LT_SLL,
    LT_SLL2,
    MAC_A,
    MAC_B,
    Frame,
    pcap_bytes,
    pcapng_epb,
    pcapng_idb,
    pcapng_shb,
    pcapng_spb,
    ticks_for,
)

HAVE_CAPINFOS = shutil.which("capinfos") is not None
LT_IPV4, LT_IPV6, LT_IEEE802_11, LT_USER0, LT_IEEE802_15_4 = 228, 229, 105, 147, 195
ETH = Ether(src=MAC_A, dst=MAC_B)
V6 = IPv6(src="2001:db8::1", dst="2001:db8::2")


@dataclass
class Odd:
    """One odd file and what reading it must give."""

    path: Path
    frames: int  # frames a reader returns
    undecodable: int = 0  # of those, records only partly decoded (status != 0)
    errors: int = 0  # damaged records pcapio counts (truncated + bad)
    fields: dict[int, dict[str, Any]] = field(default_factory=dict)  # frame index -> record fields
    not_a_capture: bool = False  # CaptureFileError: no frames at all
    capinfos: int | None = None  # capinfos' count, when it stops at a bad record we read past

    @property
    def capinfos_frames(self) -> int:
        return self.frames if self.capinfos is None else self.capinfos


def _frames(pkts: list, linktype: int = LT_ETHERNET) -> list[Frame]:
    out = []
    for i, p in enumerate(pkts):
        data = p if isinstance(p, bytes) else bytes(p)
        out.append(Frame(BASE_TS + i * 0.01, data, len(data), linktype))
    return out


def _pcap(path: Path, pkts: list, linktype: int = LT_ETHERNET, **kw: Any) -> Path:
    path.write_bytes(pcap_bytes(_frames(pkts, linktype), linktype, **kw))
    return path


def _block(btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


# ---------------------------------------------------------------------------------------------
# the corpus


def ipv6_extension_headers(d: Path) -> Odd:
    destopts = IPv6ExtHdrDestOpt()
    for _ in range(16):
        destopts = destopts / IPv6ExtHdrDestOpt()  # 17 in all: more than the decoder walks
    cut = bytes(ETH / V6 / IPv6ExtHdrDestOpt(options=[]) / IPv6ExtHdrRouting() / UDP())
    pkts = [
        # jumbogram: payload length 0, the real one in a hop-by-hop option
        ETH
        / IPv6(src="2001:db8::1", dst="2001:db8::2", plen=0)
        / IPv6ExtHdrHopByHop(options=[Jumbo(jumboplen=36)])
        / UDP(sport=1, dport=2)
        / Raw(b"j" * 20),
        ETH / V6 / destopts / UDP(sport=3, dport=4),
        ETH / V6 / IPv6ExtHdrDestOpt(nh=59) / Raw(b"z" * 8),  # no next header
        ETH / V6 / IPv6ExtHdrHopByHop(nh=50) / Raw(b"\x00\x00\x12\x34" + b"e" * 28),  # ESP
        ETH / V6 / IPv6ExtHdrFragment(m=1, id=9) / IPv6ExtHdrRouting() / TCP(sport=5, dport=6, flags="S"),
        ETH / V6 / IPv6ExtHdrFragment(m=0, id=10) / UDP(sport=7, dport=8),  # atomic fragment
        ETH
        / V6
        / IPv6ExtHdrRouting(type=0, addresses=[f"2001:db8::{i}" for i in range(1, 9)])
        / ICMPv6EchoRequest(),
        ETH
        / V6
        / IPv6ExtHdrSegmentRouting(addresses=["2001:db8::a", "2001:db8::b"])
        / UDP(sport=9, dport=10),
        ETH / V6 / MIP6MH_BRR(),  # mobility header
        cut[: 14 + 40 + 10],  # captured up to the middle of the first extension header
        ETH / V6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrHopByHop() / TCP(),  # hop-by-hop twice (not allowed)
    ]
    return Odd(
        _pcap(d / "ipv6_ext_odd.pcap", pkts),
        frames=len(pkts),
        undecodable=2,
        fields={
            0: {"proto": 17, "sport": 1, "dport": 2, "payload_len": 20, "status": 0},
            1: {"proto": 60, "status": 7},
            2: {"proto": 59, "payload_len": 8, "status": 0},
            3: {"proto": 50, "status": 0},
            4: {"proto": 6, "sport": 5, "dport": 6, "frag": 1, "status": 0},
            5: {"proto": 17, "sport": 7, "dport": 8, "frag": 1, "status": 0},
            6: {"proto": 58, "sport": 128, "status": 0},
            7: {"proto": 17, "sport": 9, "dport": 10, "status": 0},
            8: {"proto": 135, "status": 0},
            9: {"ip_version": 6, "proto": 43, "status": 7},  # the routing header it could not walk
            10: {"proto": 6, "status": 0},
        },
    )


def vlan_and_qinq(d: Path) -> Odd:
    ip = IP(src="10.1.0.1", dst="10.1.0.2")
    nine_tags = (
        bytes(ETH)[:12] + b"".join(struct.pack(">HH", 0x8100, 100 + i) for i in range(9)) + b"\x08\x00"
    )
    nine_tags += bytes(ip / UDP())
    two_tags = bytes(ETH / Dot1AD(vlan=10) / Dot1Q(vlan=20) / ip / TCP())  # outer tag: bytes 12-15
    pkts = [
        ETH / Dot1AD(vlan=10) / Dot1Q(vlan=20) / Dot1Q(vlan=30) / ip / UDP(sport=1, dport=2),
        Ether(src=MAC_A, dst=MAC_B, type=0x9100)
        / Dot1Q(vlan=11)
        / Dot1Q(vlan=21)
        / V6
        / TCP(sport=3, dport=4),
        nine_tags,
        ETH / Dot1Q(vlan=40) / ARP(op=2, psrc="10.1.0.9", pdst="10.1.0.1"),
        ETH / Dot1Q(vlan=50, type=0x0026) / LLC() / SNAP() / Raw(b"l" * 30),  # 802.3 length, not a type
        two_tags[:20],  # cut inside the second tag
        ETH / Dot1Q(vlan=0, prio=7, dei=1) / ip / ICMP(),  # priority tag with the DEI bit set
    ]
    return Odd(
        _pcap(d / "vlan_qinq_odd.pcap", pkts),
        frames=len(pkts),
        undecodable=2,
        fields={
            0: {"vlan": 10, "eth_type": 0x0800, "sport": 1, "dport": 2, "status": 0},
            1: {"vlan": 11, "eth_type": 0x86DD, "proto": 6, "sport": 3, "dport": 4, "status": 0},
            2: {"status": 1},
            3: {"vlan": 40, "eth_type": 0x0806, "sport": 2, "status": 0},
            4: {"vlan": 50, "eth_type": 0, "ip_version": 0, "status": 0},
            5: {"vlan": 10, "status": 1},
            6: {"vlan": 0, "proto": 1, "status": 0},
        },
    )


def mpls(d: Path) -> Odd:
    stack = MPLS(label=100, s=0) / MPLS(label=200, s=0) / MPLS(label=300, s=0) / MPLS(label=400, s=0)
    pkts = [
        ETH / stack / MPLS(label=500, s=1) / IP() / UDP(),
        Ether(src=MAC_A, dst=MAC_B, type=0x8848) / MPLS(label=16, s=1) / IP() / TCP(),  # multicast
        ETH / Dot1Q(vlan=5, type=0x8847) / MPLS(label=17, s=1) / IPv6() / UDP(),
        ETH / MPLS(label=18, s=1) / Raw(b"\x00\x00\x00\x00") / Ether() / IP() / ICMP(),  # pseudowire
        bytes(ETH / MPLS(label=19, s=1))[:16],  # label cut short
    ]
    return Odd(
        _pcap(d / "mpls_odd.pcap", pkts),
        frames=len(pkts),
        fields={
            0: {"eth_type": 0x8847, "ip_version": 0, "status": 0},
            1: {"eth_type": 0x8848, "status": 0},
            2: {"eth_type": 0x8847, "vlan": 5, "status": 0},
            3: {"eth_type": 0x8847, "status": 0},
            4: {"eth_type": 0x8847, "status": 0},
        },
    )


def gre(d: Path) -> Odd:
    outer = IP(src="10.2.0.1", dst="10.2.0.2")
    pkts = [
        ETH
        / outer
        / GRE(key_present=1, key=7, seqnum_present=1, sequence_number=3, chksum_present=1)
        / V6
        / UDP(),
        ETH / V6 / GRE(proto=0x0800) / IP() / TCP(),  # GRE over IPv6
        ETH
        / outer
        / GRE(version=1, proto=0x880B, key_present=1, key=0x00040001)
        / Raw(b"\xff\x03\x00\x21"),  # PPTP
        ETH
        / outer
        / GRE(proto=0x88BE, seqnum_present=1)
        / Raw(b"\x10\x00\x00\x01" * 2)
        / Ether()
        / IP(),  # ERSPAN
        ETH
        / outer
        / GRE(proto=0x6558, key_present=1, key=0x1234500)
        / Ether()
        / IPv6()
        / ICMPv6EchoRequest(),  # NVGRE
    ]
    return Odd(
        _pcap(d / "gre_odd.pcap", pkts),
        frames=len(pkts),
        fields={i: {"proto": 47, "sport": 0, "dport": 0, "status": 0} for i in range(len(pkts))},
    )


def fragments(d: Path) -> Odd:
    tcp = IP(src="10.3.0.1", dst="10.3.0.2", id=77) / TCP(sport=1000, dport=80, flags="PA") / Raw(b"T" * 60)
    tiny = fragment(tcp, fragsize=8)  # the TCP header itself split across fragments
    overlap = [
        IP(src="10.3.0.3", dst="10.3.0.4", id=88, flags="MF", frag=0, proto=17) / Raw(b"A" * 24),
        IP(src="10.3.0.3", dst="10.3.0.4", id=88, frag=1, proto=17) / Raw(b"B" * 24),  # overlaps the first
    ]
    big6 = (
        IPv6(src="2001:db8::3", dst="2001:db8::4")
        / IPv6ExtHdrFragment(id=5)
        / UDP(sport=5, dport=6)
        / Raw(b"F" * 3000)
    )
    pkts = [ETH / f for f in tiny] + [ETH / f for f in overlap] + [ETH / f for f in fragment6(big6, 1280)]
    pkts.append(ETH / IP(src="10.3.0.5", dst="10.3.0.6", flags="MF", proto=1) / ICMP() / Raw(b"i" * 16))
    fields = {
        0: {"frag": 1, "proto": 6, "sport": 1000, "dport": 80, "status": 5}
    }  # header cut by the fragment
    fields.update(
        {i: {"frag": 1, "proto": 6, "sport": 0, "dport": 0, "status": 0} for i in range(1, len(tiny))}
    )
    fields[len(tiny)] = {"frag": 1, "proto": 17, "status": 0}
    fields[len(tiny) + 1] = {"frag": 1, "proto": 17, "sport": 0, "payload_len": 24, "status": 0}
    return Odd(_pcap(d / "fragments_odd.pcap", pkts), frames=len(pkts), undecodable=1, fields=fields)


def other_link_types(d: Path) -> list[Odd]:
    ip4 = IP(src="10.4.0.1", dst="10.4.0.2") / TCP(sport=11, dport=12, flags="S")
    ip6 = IPv6(src="2001:db8::5", dst="2001:db8::6") / UDP(sport=13, dport=14)
    odd = []
    # raw IP: v4, v6, neither, and nothing captured at all
    odd.append(
        Odd(
            _pcap(d / "raw_odd.pcap", [ip4, ip6, b"\x50" + bytes(30), b""], LT_RAW),
            frames=4,
            undecodable=2,
            fields={
                0: {"ip_version": 4, "sport": 11},
                1: {"ip_version": 6, "sport": 13},
                2: {"status": 9},
                3: {"status": 9},
            },
        )
    )
    # LINKTYPE_IPV4 holding an IPv6 packet; LINKTYPE_IPV6 as it should be
    odd.append(
        Odd(
            _pcap(d / "ipv4_linktype_odd.pcap", [ip4, ip6], LT_IPV4),
            frames=2,
            undecodable=1,
            fields={0: {"ip_version": 4, "dport": 12}, 1: {"status": 9}},
        )
    )
    odd.append(
        Odd(_pcap(d / "ipv6_linktype.pcap", [ip6, ip6], LT_IPV6), frames=2, fields={1: {"ip_version": 6}})
    )
    sll = [
        CookedLinux(pkttype=4, lladdrtype=1, lladdrlen=6, src=b"\x02" * 6 + b"\x00\x00", proto=0x8100)
        / Dot1Q(vlan=33)
        / ip4,
        CookedLinux(pkttype=0, lladdrtype=0xFFFE, lladdrlen=0, src=bytes(8), proto=0x86DD)
        / ip6,  # ARPHRD_NONE
        CookedLinux(pkttype=3, lladdrtype=1, lladdrlen=6, src=b"\x02" * 8, proto=0x0806) / ARP(),
        bytes(CookedLinux(proto=0x0800) / ip4)[:10],  # cut inside the cooked header
    ]
    odd.append(
        Odd(
            _pcap(d / "sll_odd.pcap", sll, LT_SLL),
            frames=4,
            undecodable=1,
            fields={
                0: {"vlan": 33, "ip_version": 4, "sport": 11},
                1: {"ip_version": 6, "src_mac": 0},
                3: {"status": 1},
            },
        )
    )
    sll2 = [
        CookedLinuxV2(proto=0x86DD, ifindex=3, lladdrtype=1, pkttype=4, lladdrlen=6, src=b"\x02" * 8) / ip6,
        CookedLinuxV2(proto=0x8100, lladdrlen=0, src=bytes(8)) / Dot1Q(vlan=44) / Dot1Q(vlan=45) / ip4,
        bytes(CookedLinuxV2(proto=0x0800) / ip4)[:19],
    ]
    odd.append(
        Odd(
            _pcap(d / "sll2_odd.pcap", sll2, LT_SLL2),
            frames=3,
            undecodable=1,
            fields={0: {"ip_version": 6, "dport": 14}, 1: {"vlan": 44, "ip_version": 4}, 2: {"status": 1}},
        )
    )
    # BSD loopback: the address family in the capturing host's byte order (NULL) or big-endian (LOOP)
    null = [struct.pack("<I", 2) + bytes(ip4)]
    null += [
        struct.pack("<I", family) + bytes(ip6) for family in (24, 28, 30)
    ]  # AF_INET6: NetBSD, FreeBSD, macOS
    null += [struct.pack(">I", 2) + bytes(ip4), struct.pack("<I", 7) + bytes(ip4), b"\x02\x00"]
    odd.append(
        Odd(
            _pcap(d / "null_odd.pcap", null, LT_NULL),
            frames=len(null),
            undecodable=1,
            fields={
                0: {"ip_version": 4},
                1: {"ip_version": 6},
                2: {"ip_version": 6},
                3: {"ip_version": 6},
                4: {"ip_version": 4},
                5: {"ip_version": 0, "status": 0},  # an unknown family: recorded, not IP
                6: {"status": 1},
            },
        )
    )
    loop = [struct.pack(">I", 2) + bytes(ip4), struct.pack(">I", 30) + bytes(ip6)]
    odd.append(
        Odd(
            _pcap(d / "loop_odd.pcap", loop, LT_LOOP, big_endian=True),
            frames=2,
            fields={1: {"ip_version": 6}},
        )
    )
    # link types the decoder does not know: records with status 6, nothing else
    zigbee = [bytes(30 + i) for i in range(3)]
    odd.append(
        Odd(
            _pcap(d / "ieee802154.pcap", zigbee, LT_IEEE802_15_4),
            frames=3,
            undecodable=3,
            fields={0: {"status": 6}},
        )
    )
    # 802.11 of zero bytes: management frames (association requests), records with status 11
    odd.append(
        Odd(
            _pcap(d / "ieee80211_zeros.pcap", [bytes(24 + i) for i in range(3)], LT_IEEE802_11),
            frames=3,
            undecodable=3,
            fields={i: {"status": 11, "dst_mac": 0, "eth_type": 0} for i in range(3)},
        )
    )
    return odd


def pcapng_several_link_types(d: Path) -> Odd:
    """One section, nine interfaces of different link types and resolutions, frames interleaved;
    then a big-endian section with two more; blocks of other types in between (skipped)."""
    ip4 = IP(src="10.5.0.1", dst="10.5.0.2") / UDP(sport=21, dport=22)
    ip6 = IPv6(src="2001:db8::7", dst="2001:db8::8") / TCP(sport=23, dport=24)
    interfaces = [
        (LT_ETHERNET, "eth0", None, ETH / ip4),
        (LT_RAW, "tun0", 9, ip6),
        (LT_IPV4, "ipv4", 3, ip4),
        (LT_IPV6, "ipv6", 0x80 | 20, ip6),
        (LT_SLL, "any", None, CookedLinux(proto=0x0800, lladdrlen=6, src=b"\x02" * 8) / ip4),
        (LT_SLL2, "any2", 6, CookedLinuxV2(proto=0x86DD, lladdrlen=0, src=bytes(8)) / ip6),
        (LT_NULL, "lo0", None, struct.pack("<I", 2) + bytes(ip4)),
        (LT_LOOP, "lo1", None, struct.pack(">I", 2) + bytes(ip4)),
        (LT_IEEE802_11, "wlan0", None, bytes(24)),
    ]
    out = [pcapng_shb()]
    out += [pcapng_idb(lt, name, resol) for lt, name, resol, _ in interfaces]
    fields: dict[int, dict[str, Any]] = {}
    n = 0
    for rnd in range(2):
        for i, (lt, _name, resol, pkt) in enumerate(interfaces):
            data = pkt if isinstance(pkt, bytes) else bytes(pkt)
            out.append(pcapng_epb(i, ticks_for(BASE_TS + rnd + i / 100, resol), data, len(data)))
            fields[n] = {"iface": i, "status": 11 if lt == LT_IEEE802_11 else 0}  # a management frame
            if lt != LT_IEEE802_11:
                fields[n]["ip_version"] = (
                    6 if pkt is ip6 or (not isinstance(pkt, bytes) and IPv6 in pkt) else 4
                )
            n += 1
        out.append(_block(4, struct.pack("<HH", 0, 0)))  # name resolution
        out.append(_block(0x0000000A, struct.pack("<II", 0x544C534B, 4) + b"keys"))  # decryption secrets
        out.append(_block(0x40000BAD, struct.pack("<I", 32473) + b"custom"))  # custom block
    out.append(_block(5, struct.pack("<III", 0, 0, 0) + struct.pack("<HH", 0, 0)))  # interface statistics
    out.append(pcapng_shb(big_endian=True))
    out.append(pcapng_idb(LT_RAW, "tun9", None, be=True))
    out.append(pcapng_idb(LT_USER0, "user0", None, be=True))
    for i, data in enumerate((bytes(ip4), b"\x00" * 12)):
        out.append(pcapng_epb(i, ticks_for(BASE_TS + 5, None), data, len(data), be=True))
        fields[n] = {"iface": len(interfaces) + i, "status": 0 if i == 0 else 6}
        n += 1
    path = d / "several_link_types.pcapng"
    path.write_bytes(b"".join(out))
    return Odd(path, frames=n, undecodable=3, fields=fields)


def pcapng_odd_clocks_and_sizes(d: Path) -> list[Odd]:
    """Interface resolutions and tick counts that mean absurd times, and an oversized record."""
    data = bytes(ETH / IP(src="10.7.0.1", dst="10.7.0.2") / UDP(sport=31, dport=32))
    clocks = [pcapng_shb()]
    clocks += [pcapng_idb(LT_ETHERNET, f"if{i}", resol) for i, resol in enumerate((0xFF, 0xC0, 0, 6))]
    clocks.append(pcapng_idb(LT_ETHERNET, "past", 6, -(2**62)))  # if_tsoffset: long before year 1
    for iface, ticks in ((0, 12345), (1, 2**40), (2, 2**63), (3, 2**64 - 1), (4, 5)):
        clocks.append(pcapng_epb(iface, ticks, data, len(data)))
    path = d / "odd_clocks.pcapng"
    path.write_bytes(b"".join(clocks))
    big = [pcapng_shb(), pcapng_idb(LT_ETHERNET, "eth0")]
    big += [pcapng_epb(0, 1, bytes(300_000), 300_000), pcapng_epb(0, 2, data, len(data))]
    big_path = d / "record_over_limit.pcapng"
    big_path.write_bytes(b"".join(big))
    # a packet before any interface is declared; a simple packet block shorter than its packet
    orphan = [pcapng_shb(), pcapng_epb(0, 1, data, len(data)), pcapng_idb(LT_ETHERNET, "eth0")]
    orphan += [pcapng_epb(0, 2, data, len(data))]
    orphan_path = d / "packet_before_interface.pcapng"
    orphan_path.write_bytes(b"".join(orphan))
    spb = [pcapng_shb(), pcapng_idb(LT_ETHERNET, "eth0"), pcapng_spb(data, len(data)), pcapng_spb(data, 9000)]
    spb_path = d / "short_simple_block.pcapng"
    spb_path.write_bytes(b"".join(spb))
    # (in each, we skip the bad record, count it and read on; capinfos stops there)
    return [
        Odd(path, frames=5, fields={i: {"sport": 31, "status": 0} for i in range(5)}),
        Odd(big_path, frames=1, errors=1, capinfos=0, fields={0: {"caplen": len(data)}}),
        Odd(orphan_path, frames=1, errors=1, capinfos=0),
        Odd(spb_path, frames=1, errors=1, capinfos=1, fields={0: {"caplen": len(data), "length": len(data)}}),
    ]


def truncated(d: Path) -> list[Odd]:
    pkts = [ETH / IP() / TCP(sport=i, dport=80) / Raw(b"x" * 40) for i in range(1, 6)]
    whole = pcap_bytes(_frames(pkts))
    odd = []
    for name, cut in (("truncated_in_data.pcap", 7), ("truncated_in_header.pcap", len(bytes(pkts[-1])) + 9)):
        path = d / name
        path.write_bytes(whole[:-cut])
        odd.append(Odd(path, frames=4, errors=1))
    ng = [pcapng_shb(), pcapng_idb(LT_ETHERNET, "eth0")]
    ng += [pcapng_epb(0, ticks_for(BASE_TS + i, None), bytes(p), len(bytes(p))) for i, p in enumerate(pkts)]
    path = d / "truncated_block.pcapng"
    path.write_bytes(b"".join(ng)[:-20])
    odd.append(Odd(path, frames=4, errors=1))
    path = d / "truncated.pcap.gz"
    path.write_bytes(gzip.compress(whole[:-7]))
    odd.append(Odd(path, frames=4, errors=1))
    return odd


def sizes_and_lengths(d: Path) -> Odd:
    """An empty frame, a 64 KiB jumbo, a frame longer on the wire than captured, and the reverse."""
    jumbo = ETH / IP(src="10.6.0.1", dst="10.6.0.2") / UDP(sport=1, dport=2) / Raw(b"J" * (65535 - 28))
    frames = [
        Frame(BASE_TS, b"", 60),
        Frame(BASE_TS + 1, bytes(jumbo), len(bytes(jumbo))),
        Frame(BASE_TS + 2, bytes(ETH / IP() / TCP())[:40], 1514),  # snapped
        Frame(BASE_TS + 3, bytes(ETH / IP() / UDP()), 10),  # wire length below captured: nonsense
    ]
    path = d / "sizes.pcap"
    path.write_bytes(pcap_bytes(frames, snaplen=262144))
    return Odd(
        path,
        frames=4,
        undecodable=2,
        fields={
            0: {"status": 1, "caplen": 0},
            1: {"sport": 1, "payload_len": 65535 - 28, "status": 0},
            2: {"status": 5},
            3: {"length": 42},
        },
    )


def empty_captures(d: Path) -> list[Odd]:
    """Captures without a packet: a pcap header alone, a pcapng section with an interface, and gzip of
    an empty pcap. They are captures (no error), and --summary-json must still list each of them."""
    files = {
        "empty.pcap": pcap_bytes([]),
        "empty.pcapng": pcapng_shb() + pcapng_idb(LT_ETHERNET, "eth0"),
        "empty.pcap.gz": gzip.compress(pcap_bytes([])),
    }
    odd = []
    for name, data in files.items():
        path = d / name
        path.write_bytes(data)
        odd.append(Odd(path, frames=0))
    return odd


def wrong_magic(d: Path) -> list[Odd]:
    good = pcap_bytes(_frames([ETH / IP() / TCP()]))
    files = {
        "magic_one_byte_off.pcap": b"\xd4\xc3\xb2\xa2" + good[4:],
        "magic_kuznetzov.pcap": b"\x34\xcd\xb2\xa1" + good[4:],
        "magic_pcapng_bad_bom.pcapng": pcapng_shb()[:8] + b"\x4d\x3c\x2b\x1b" + pcapng_shb()[12:],
        "magic_elf.pcap": b"\x7fELF\x02\x01\x01" + bytes(57),
        "magic_png.pcap": b"\x89PNG\r\n\x1a\n" + bytes(40),
        "magic_zeros.pcap": bytes(4096),
        "magic_three_bytes.pcap": good[:3],
        "magic_gzip_of_text.pcap.gz": gzip.compress(b"GET / HTTP/1.1\r\n" * 20),
    }
    odd = []
    for name, data in files.items():
        path = d / name
        path.write_bytes(data)
        odd.append(Odd(path, frames=0, not_a_capture=True))
    return odd


def _partly_decoded(capture: pcaps.Capture) -> int:
    return sum(1 for frame in capture.frames if (frame.expect or {}).get("status"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Odd]:
    d = tmp_path_factory.mktemp("odd")
    # the odd cases the pcapio/decode tests already build, reused as they are
    reused = [pcaps.make_ipv6_ext(d), pcaps.make_mpls_gre(d), pcaps.make_fragments(d), pcaps.make_vlan(d)]
    reused += [pcaps.make_sll(d), pcaps.make_sll2(d), pcaps.make_raw(d), *pcaps.make_null_loop(d)]
    reused += [pcaps.make_pcapng_two_sections(d), pcaps.make_truncated_final(d)]
    reused = [*pcaps.make_link_types(d), *reused]  # PPP, Cisco HDLC, FDDI, 802.11, radiotap, NFLOG
    odd = [Odd(c.path, frames=len(c.frames), undecodable=_partly_decoded(c)) for c in reused]
    odd[-1].errors = 1  # the truncated last record
    # a packet block claims more bytes than its block has: we count it and read on (the block
    # length is sound, so the next block is found); capinfos stops there
    odd.append(Odd(pcaps.make_pcapng_bad_block(d).path, frames=3, errors=1, capinfos=1))
    odd += [ipv6_extension_headers(d), vlan_and_qinq(d), mpls(d), gre(d), fragments(d)]
    odd += [*other_link_types(d), pcapng_several_link_types(d), *pcapng_odd_clocks_and_sizes(d)]
    odd += [*truncated(d), sizes_and_lengths(d), *empty_captures(d)]
    odd += wrong_magic(d)
    for item in odd:
        assert item.path.stat().st_size < 512_000, item.path  # small: generated per run
    return {item.path.name: item for item in odd}


# ---------------------------------------------------------------------------------------------
# reading


@dataclass
class Counts:
    frames: int = 0
    undecodable: int = 0
    errors: int = 0
    records: list[np.ndarray] = field(default_factory=list)
    file_error: str = ""


def read(path: Path, batch_size: int) -> Counts:
    counts = Counts()
    stats = ReadStats()
    try:
        for batch in iter_record_batches(path, "odd", batch_size=batch_size, stats=stats):
            counts.records.append(batch.records)
            counts.undecodable += int(np.count_nonzero(batch.records["status"]))
    except CaptureFileError as exc:
        counts.file_error = str(exc)
    counts.frames = stats.frames
    counts.errors = stats.truncated + stats.bad_records
    return counts


@pytest.mark.parametrize("batch_size", [1, 3, 4096])
def test_every_odd_file_reads_without_a_crash_and_counts_add_up(corpus, batch_size):
    for name, odd in corpus.items():
        counts = read(odd.path, batch_size)
        records = np.concatenate(counts.records) if counts.records else np.zeros(0)
        assert bool(counts.file_error) == odd.not_a_capture, (name, counts.file_error)
        if odd.not_a_capture:
            assert odd.path.name in counts.file_error or str(odd.path) in counts.file_error
            assert "\n" not in counts.file_error  # one line, naming the file
        assert counts.frames == len(records) == odd.frames, name
        assert counts.undecodable == odd.undecodable, name
        assert counts.errors == odd.errors, name
        if len(records):
            assert set(np.unique(records["status"]).tolist()) <= set(DECODE_ERRORS), name
            assert records["seq"].tolist() == list(range(len(records)))  # gap-free, whatever the damage
            assert (records["ts"] >= TS_MIN).all() and (records["ts"] <= TS_MAX).all(), name


def test_record_fields_of_the_odd_frames(corpus):
    checked = 0
    for name, odd in corpus.items():
        if not odd.fields:
            continue
        records = np.concatenate(read(odd.path, 4096).records)
        for index, want in odd.fields.items():
            rec = records[index]
            for key, value in want.items():
                assert int(rec[key]) == value, (name, index, key, int(rec[key]), value)
                checked += 1
    assert checked > 150


def test_vectorised_decoder_equals_the_reference_on_every_odd_frame(corpus):
    frames = 0
    for name, odd in corpus.items():
        if odd.not_a_capture:
            continue
        for batch in iter_frame_batches(odd.path, 5):
            fast = decode_frames(batch)
            slow = decode_frames(batch, vectorised=False)
            for column in fast.dtype.names:
                assert (fast[column] == slow[column]).all(), (name, column)
            for i in range(len(batch)):  # and the reference decoder alone, frame by frame
                decode_frame(batch.frame(i), int(batch.linktype[i]))
            frames += len(batch)
    assert frames > 150


def capinfos_file_type(path: Path) -> str:
    """capinfos' name for the file's format ("pcap", "pcapng", ...; "" when it cannot read it)."""
    result = subprocess.run(["capinfos", "-t", str(path)], capture_output=True, text=True, check=False)
    match = re.search(r"File type:\s+(.+)", result.stdout)
    return match.group(1).strip() if match else ""


@pytest.mark.skipif(not HAVE_CAPINFOS, reason="capinfos (Wireshark) is not installed")
def test_frame_counts_match_capinfos(corpus):
    for name, odd in corpus.items():
        if odd.not_a_capture:
            # Wireshark agrees there are no packets: it refuses the file, reads none from it (the
            # modified pcap format, which we refuse outright), or opens it as another kind of file
            # (ELF and PNG files as one "MIME file" record, three bytes as MP4)
            kind = capinfos_file_type(odd.path)
            assert pcaps.capinfos_count(odd.path) == 0 or "pcap" not in kind, (name, kind)
            continue
        counts = read(odd.path, 4096)
        assert counts.frames == odd.frames, name
        assert pcaps.capinfos_count(odd.path) == odd.capinfos_frames, name
        if odd.capinfos_frames != counts.frames:
            # capinfos stops at the first damaged record; we count that record and read on
            assert odd.capinfos_frames < counts.frames and counts.errors > 0, name


# ---------------------------------------------------------------------------------------------
# the capture command, end to end


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        proc = processes.start_worker(concurrency=1, name="odd-worker")
    yield proc
    proc.stop()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_capture_command_ingests_the_corpus_and_reports_matching_counts(
    corpus, worker, tmp_path, redis_client, api
):
    """Capture process -> Redis -> Celery worker -> database -> API, for every odd file at once."""
    paths = [str(odd.path) for odd in corpus.values()]
    summary_path = tmp_path / "summary.json"

    result = processes.run_capture(
        "--pcap", *paths, "--sensor", "odd", "--summary-json", str(summary_path), timeout=180
    )

    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 1  # the files that are not captures are reported, not fatal
    summary = json.loads(summary_path.read_text())
    files = {Path(f["source"]).name: f for f in summary["files"]}
    assert set(files) == set(corpus)
    for name, odd in corpus.items():
        got = files[name]
        if odd.not_a_capture:
            assert "error" in got["file"] and got["packets_read"] == 0, (name, got)
            continue
        if odd.frames == 0:
            assert "error" not in got["file"], (name, got)
            assert (got["packets_read"], got["published"], got["dropped"], got["undecodable"]) == (0, 0, 0, 0)
        if HAVE_CAPINFOS:
            assert pcaps.capinfos_count(odd.path) == odd.capinfos_frames, name
        assert got["packets_read"] == got["file"]["frames"] == odd.frames, (name, got)
        assert got["published"] + got["dropped"] == got["packets_read"], (name, got)
        assert got["dropped"] == 0, (name, got)
        assert got["undecodable"] == odd.undecodable, (name, got)
        assert got["file"]["truncated"] + got["file"]["bad_records"] == odd.errors, (name, got)
    totals = summary["totals"]
    total = sum(odd.frames for odd in corpus.values())
    assert totals["packets_read"] == total
    assert totals["undecodable"] == sum(odd.undecodable for odd in corpus.values())
    # every record is stored, and reads back through the API (times included)
    stored = Packet.objects.filter(sensor__name="odd")
    processes.wait_until(lambda: stored.count() >= total, timeout=90, message="odd packets stored")
    assert stored.count() == total
    assert stored.exclude(decode_error="").count() == totals["undecodable"]
    listed, url = 0, "/api/packets/?sensor=odd&limit=1000"
    while url:
        response = api.get(url)
        assert response.status_code == 200, response.content[:500]
        listed += len(response.json()["results"])
        url = response.json()["next"]
    assert listed == total
