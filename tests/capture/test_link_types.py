"""Link types with their own headers before IP: PPP (9), Cisco HDLC/PPP in HDLC framing (50), FDDI (10),
802.11 (105), 802.11 behind radiotap (127) and NFLOG (239).

The captures are generated (tests/capture/pcaps.py ``make_link_types``: scapy's PPP, HDLC, RadioTap,
Dot11, Dot11QoS, LLC and SNAP; FDDI and NFLOG by hand). Each frame's record is checked field by field,
by both decoders; tshark, reading the same files, is the oracle of the addresses, ports and protocol;
and the vectorised decoder must not hand these frames to the one-frame reference decoder.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from capture import decode
from capture.decode import decode_frame, decode_frames
from capture.pcapio import iter_frame_batches
from capture.records import DECODE_ERRORS, ip_to_text
from tests.capture import pcaps
from tests.capture.test_decode import frames_batch

HAVE_TSHARK = shutil.which("tshark") is not None
MAKERS = [pcaps.make_ppp, pcaps.make_ppp_hdlc, pcaps.make_fddi, pcaps.make_ieee80211, pcaps.make_radiotap]
MAKERS.append(pcaps.make_nflog)


@pytest.fixture(scope="module")
def capdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("link_types")


def records_of(path: Path, vectorised: bool = True) -> np.ndarray:
    return np.concatenate([decode_frames(b, vectorised=vectorised) for b in iter_frame_batches(path, 1000)])


def value(rec: np.void, name: str) -> object:
    return bytes(rec[name]) if name in ("src_ip", "dst_ip") else int(rec[name])


@pytest.mark.parametrize("make", MAKERS, ids=lambda make: make.__name__)
def test_every_frame_decodes_field_by_field(capdir, make):
    cap = make(capdir)
    for vectorised in (True, False):
        records = records_of(cap.path, vectorised)
        assert len(records) == len(cap.frames)
        for i, (rec, frame) in enumerate(zip(records, cap.frames, strict=True)):
            for name, want in frame.expect.items():
                assert value(rec, name) == want, (cap.path.name, vectorised, i, name)
            # and decode_frame alone, on the frame's bytes
            alone = decode_frame(frame.data, frame.linktype)
            for name, want in frame.expect.items():
                assert alone[name] == want, (cap.path.name, i, name)


def test_what_the_records_say_in_words(capdir):
    """A few frames spelled out, so a reader sees what each link type gives."""
    wlan = records_of(pcaps.make_ieee80211(capdir).path)
    wds = wlan[2]  # QoS data, To DS and From DS: four addresses
    assert ip_to_text(wds["src_ip"], 4) == "10.24.1.1" and ip_to_text(wds["dst_ip"], 4) == "10.24.1.2"
    assert int(wds["proto"]) == 1 and int(wds["sport"]) == 8  # ICMP echo request
    assert f"{int(wds['src_mac']):012x}" == pcaps.WLAN_SA.replace(":", "")  # the fourth address
    assert f"{int(wds['dst_mac']):012x}" == pcaps.WLAN_DA.replace(":", "")  # the third
    assert [DECODE_ERRORS[int(s)] for s in wlan["status"][5:8]] == [
        "802.11 protected frame (payload encrypted)",
        "802.11 frame without data (management, control, null)",
        "802.11 frame without data (management, control, null)",
    ]
    nflog = records_of(pcaps.make_nflog(capdir).path)
    v6 = nflog[1]
    assert int(v6["ip_version"]) == 6 and int(v6["eth_type"]) == 0x86DD
    assert ip_to_text(v6["src_ip"], 6) == "2001:db8:1a::1"
    assert (int(v6["proto"]), int(v6["sport"]), int(v6["dport"])) == (17, 2026, 4000)
    ppp = records_of(pcaps.make_ppp(capdir).path)
    assert (int(ppp[0]["proto"]), int(ppp[0]["sport"]), int(ppp[0]["dport"])) == (6, 1021, 80)
    assert int(ppp[0]["tcp_flags"]) == 0x18  # PSH ACK
    fddi = records_of(pcaps.make_fddi(capdir).path)
    assert ip_to_text(fddi[0]["dst_ip"], 4) == "10.23.0.2"


TSHARK_FIELDS = (
    "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "ip.proto", "ipv6.nxt",
    "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport", "wlan.da", "wlan.sa",
)  # fmt: skip


def tshark_rows(path: Path) -> list[dict[str, str]]:
    args = ["tshark", "-r", str(path), "-T", "fields", "-E", "occurrence=f"]
    for name in TSHARK_FIELDS:
        args += ["-e", name]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout
    return [dict(zip(TSHARK_FIELDS, line.split("\t"), strict=True)) for line in out.splitlines()]


@pytest.mark.skipif(not HAVE_TSHARK, reason="tshark (Wireshark) is not installed")
@pytest.mark.parametrize("make", MAKERS, ids=lambda make: make.__name__)
def test_tshark_agrees_on_addresses_ports_and_protocol(capdir, make):
    cap = make(capdir)
    records = records_of(cap.path)
    rows = tshark_rows(cap.path)
    assert len(rows) == len(records)
    compared = 0
    for i, (rec, row) in enumerate(zip(records, rows, strict=True)):
        version = int(rec["ip_version"])
        if version == 0 and not row["ip.src"] and not row["ipv6.src"]:
            continue  # neither sees IP
        if not (row["ip.src"] or row["ipv6.src"]):
            # Wireshark reads NFLOG TLVs in this host's byte order only; we also take big-endian ones
            assert cap.path.name == "nflog.pcap" and i == 2, (cap.path.name, i, row)
            continue
        prefix = "ip" if version == 4 else "ipv6"
        assert ip_to_text(rec["src_ip"], version) == row[f"{prefix}.src"], (cap.path.name, i)
        assert ip_to_text(rec["dst_ip"], version) == row[f"{prefix}.dst"], (cap.path.name, i)
        assert int(rec["proto"]) == int(row["ip.proto"] or row["ipv6.nxt"]), (cap.path.name, i)
        transport = "tcp" if int(rec["proto"]) == 6 else "udp" if int(rec["proto"]) == 17 else ""
        if transport:
            assert int(rec["sport"]) == int(row[f"{transport}.srcport"]), (cap.path.name, i)
            assert int(rec["dport"]) == int(row[f"{transport}.dstport"]), (cap.path.name, i)
        if row["wlan.da"]:
            assert f"{int(rec['dst_mac']):012x}" == row["wlan.da"].replace(":", ""), (cap.path.name, i)
            assert f"{int(rec['src_mac']):012x}" == row["wlan.sa"].replace(":", ""), (cap.path.name, i)
        compared += 1
    assert compared >= 2, cap.path.name


def test_the_bulk_decoder_handles_these_frames_itself(monkeypatch):
    """No frame of these link types goes to the one-frame reference decoder (no per-packet Python),
    also beside Ethernet frames in one batch, and the records equal the reference's."""
    samples = pcaps.link_type_samples()
    ethernet = [bytes(p) for p in pcaps.ordinary_packets()[:5]]
    frames = [data for data, _ in samples] + ethernet
    linktypes = [lt for _, lt in samples] + [1] * len(ethernet)
    batch = frames_batch(frames, linktypes)
    slow = decode_frames(batch, vectorised=False)

    def no_reference(*args: object) -> None:
        raise AssertionError("a frame took the reference path")

    monkeypatch.setattr(decode, "decode_frame", no_reference)
    fast = decode_frames(batch)
    assert (fast == slow).all()
    assert np.count_nonzero(fast["ip_version"][: len(samples)]) >= 20  # their IP packets, decoded


def test_frames_beyond_the_wide_window_still_decode(monkeypatch):
    """A radiotap header long enough to push IP past the window: that frame alone takes the reference."""
    radio = bytes([0, 0, 200, 0]) + bytes(196)
    wlan = bytes.fromhex("08010000") + bytes(20)  # data, To DS, 24-byte header
    ip = bytes(pcaps._ip_packets(30)[0]) + bytes(40)
    frame = radio + wlan + bytes.fromhex("aaaa030000000800") + ip
    assert len(frame) > decode.WIDE_WINDOW
    want = decode_frame(frame, pcaps.LT_RADIOTAP)
    assert want["ip_version"] == 4 and want["sport"] == 1030
    calls = []
    real = decode.decode_frame
    monkeypatch.setattr(decode, "decode_frame", lambda *a: calls.append(1) or real(*a))
    rec = decode_frames(frames_batch([frame], [pcaps.LT_RADIOTAP]))[0]
    assert calls == [1]
    for name, expected in want.items():
        got = bytes(rec[name]) if name in ("src_ip", "dst_ip") else int(rec[name])
        assert got == expected, name
