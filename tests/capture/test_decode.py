"""capture.decode, capture.pcapwriter: records carry exactly what the frames say (speed: bench/capture.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scapy.all import IP, TCP, UDP, CookedLinuxV2, Dot1Q, Ether, IPOption_NOP, IPv6, IPv6ExtHdrDestOpt, Raw

from capture.decode import WINDOW, decode_frame, decode_frames, iter_record_batches
from capture.pcapio import FrameBatch, ReadStats, iter_frame_batches
from capture.pcapwriter import PcapWriter, build_frames, synthetic_records, write_pcap
from capture.records import DECODE_ERRORS, RECORD_DTYPE, decode_batch, encode_batch, ip_to_text
from tests.capture import pcaps

ALL_LINKTYPES = (0, 1, 101, 108, 113, 228, 229, 276, 147, 9, 10, 50, 105, 127, 239)


@pytest.fixture(scope="module")
def capdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("decode")


@pytest.fixture(scope="module")
def good(capdir: Path) -> list[pcaps.Capture]:
    return pcaps.all_good_captures(capdir)


def decode_file(path: Path, batch_size: int = 7, vectorised: bool = True) -> np.ndarray:
    parts = []
    seq = 0
    for batch in iter_frame_batches(path, batch_size):
        parts.append(decode_frames(batch, seq, vectorised=vectorised))
        seq += len(batch)
    return np.concatenate(parts) if parts else np.zeros(0, RECORD_DTYPE)


def field(rec: np.void, name: str) -> object:
    value = rec[name]
    return bytes(value) if name in ("src_ip", "dst_ip") else int(value)


def frames_batch(frames: list[bytes], linktypes: list[int]) -> FrameBatch:
    """A FrameBatch straight from frame bytes (no file)."""
    buf = b"".join(frames)
    offsets = np.cumsum([0] + [len(f) for f in frames[:-1]]).astype(np.int64)
    n = len(frames)
    caplen = np.array([len(f) for f in frames], dtype=np.uint32)
    return FrameBatch(
        buf,
        offsets,
        caplen,
        caplen.copy(),
        np.arange(n, dtype=np.float64),
        np.array(linktypes, dtype=np.uint16),
        np.zeros(n, dtype=np.uint16),
        [""],
        [1],
    )


def test_every_field_matches_what_was_written(good: list[pcaps.Capture]) -> None:
    checked = 0
    for cap in good:
        for vectorised in (True, False):
            records = decode_file(cap.path, vectorised=vectorised)
            assert len(records) == len(cap.frames), cap.path.name
            for rec, frame in zip(records, cap.frames, strict=True):
                assert int(rec["caplen"]) == len(frame.data)
                assert int(rec["length"]) == frame.length
                assert float(rec["ts"]) == pytest.approx(frame.ts, abs=1e-6)
                assert int(rec["label"]) == 0
                for name, want in (frame.expect or {}).items():
                    assert field(rec, name) == want, (cap.path.name, name, frame.data.hex())
                    checked += 1
    assert checked > 2000


def test_status_codes_of_damaged_frames(capdir: Path) -> None:
    cap = pcaps.make_truncated_link(capdir)
    records = decode_file(cap.path)
    assert sorted({int(s) for s in records["status"]}) == [1, 2, 3, 4, 5, 8, 9]
    assert all(int(s) in DECODE_ERRORS for s in records["status"])


def test_unknown_link_type_still_gives_records(capdir: Path) -> None:
    cap = pcaps.make_unknown_linktype(capdir)
    records = decode_file(cap.path)
    assert (records["status"] == 6).all()
    assert records["length"].tolist() == [100, 101, 102]
    assert records["caplen"].tolist() == [20, 21, 22]
    assert (records["ts"] > 0).all()


def test_seq_is_gap_free_across_batches(capdir: Path) -> None:
    path = capdir / "seq.pcap"
    write_pcap(path, synthetic_records(1000, seed=5))
    stats = ReadStats()
    batches = list(iter_record_batches(path, "s1", batch_size=128, first_seq=5000, stats=stats))
    seqs = np.concatenate([b.records["seq"] for b in batches])
    assert seqs.tolist() == list(range(5000, 6000))
    assert all(b.sensor == "s1" and b.interfaces == [""] for b in batches)
    assert stats.frames == 1000
    again = decode_batch(encode_batch(batches[1]))
    assert (again.records == batches[1].records).all()


def _samples() -> list[tuple[bytes, int]]:
    """Well-formed frames of every kind, with their link types."""
    out = []
    for cap_frames in (
        pcaps._frames(pcaps.ordinary_packets()),
        pcaps._frames(pcaps.ipv6_ext_packets()),
    ):
        out += [(f.data, f.linktype) for f in cap_frames]
    eth = Ether(src=pcaps.MAC_A, dst=pcaps.MAC_B)
    extra = [
        eth / Dot1Q(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / IP() / TCP() / Raw(b"v" * 80),
        eth / IP(options=[IPOption_NOP()] * 40) / TCP(flags="S") / Raw(b"w" * 80),
        eth / Dot1Q(vlan=9) / IP(options=[IPOption_NOP()] * 40) / UDP() / Raw(b"w" * 80),
        eth / Dot1Q(vlan=9) / IPv6() / IPv6ExtHdrDestOpt() / TCP() / Raw(b"x" * 80),
        eth / Dot1Q(vlan=9) / Dot1Q(vlan=10) / IPv6() / TCP() / Raw(b"x" * 80),
    ]
    out += [(bytes(p), 1) for p in extra]
    sll2 = (
        CookedLinuxV2(proto=0x8100, lladdrlen=6, src=b"\x02" * 8)
        / Dot1Q(vlan=4)
        / IPv6()
        / TCP()
        / Raw(b"y" * 80)
    )
    out.append((bytes(sll2), 276))
    ip4 = bytes(IP(src="1.2.3.4", dst="5.6.7.8") / TCP(flags="A") / Raw(b"z" * 100))
    ip6 = bytes(IPv6() / UDP() / Raw(b"z" * 100))
    for lt in (101, 228, 229):
        out += [(ip4, lt), (ip6, lt)]
    for fam_le in (b"\x02\x00\x00\x00", b"\x1e\x00\x00\x00", b"\x00\x00\x00\x02", b"\x00\x00\x00\x0a"):
        out += [(fam_le + ip4, 0), (fam_le + ip6, 0), (fam_le + ip4, 108)]
    sll = bytes.fromhex("0000000100060200000000010000") + b"\x08\x00" + ip4
    out.append((sll, 113))
    out += pcaps.link_type_samples()  # PPP, Cisco HDLC, FDDI, 802.11, radiotap, NFLOG
    return out


def test_vectorised_equals_reference_at_every_truncation() -> None:
    frames, linktypes = [], []
    for data, lt in _samples():
        for cut in range(len(data) + 1):
            frames.append(data[:cut])
            linktypes.append(lt)
    batch = frames_batch(frames, linktypes)
    fast = decode_frames(batch, 0)
    slow = decode_frames(batch, 0, vectorised=False)
    bad = np.nonzero(fast != slow)[0]
    assert len(bad) == 0, [(frames[i].hex(), linktypes[i], fast[i], slow[i]) for i in bad[:3]]
    assert len(frames) > 5000


def test_vectorised_equals_reference_on_random_bytes() -> None:
    rng = np.random.default_rng(1234)
    frames, linktypes = [], []
    samples = _samples()
    for i in range(20_000):
        if i % 2:
            # mutate a real frame: random bytes at random places keep most headers plausible
            data, lt = samples[int(rng.integers(len(samples)))]
            arr = bytearray(data)
            for _ in range(int(rng.integers(1, 6))):
                arr[int(rng.integers(len(arr)))] = int(rng.integers(256))
            data = bytes(arr[: int(rng.integers(len(arr) + 1))])
        else:
            lt = ALL_LINKTYPES[int(rng.integers(len(ALL_LINKTYPES)))]
            data = rng.integers(0, 256, int(rng.integers(0, 160))).astype(np.uint8).tobytes()
            if lt == 1 and len(data) > 14 and rng.random() < 0.7:
                data = data[:12] + bytes([[0x08, 0x86, 0x81, 0x08][int(rng.integers(4))], 0x00]) + data[14:]
        frames.append(data)
        linktypes.append(lt)
    batch = frames_batch(frames, linktypes)
    fast = decode_frames(batch, 0)
    slow = decode_frames(batch, 0, vectorised=False)
    bad = np.nonzero(fast != slow)[0]
    assert len(bad) == 0, [(frames[i].hex(), linktypes[i], fast[i], slow[i]) for i in bad[:3]]


def test_frames_beyond_the_window_take_the_reference_path() -> None:
    frames = [data for data, lt in _samples() if lt == 1 and len(data) > WINDOW]
    assert len(frames) >= 4
    fast = decode_frames(frames_batch(frames, [1] * len(frames)))
    for data, rec in zip(frames, fast, strict=True):
        want = decode_frame(data, 1)
        for name, value in want.items():
            assert field(rec, name) == value, name


def test_decode_frame_reference_examples() -> None:
    qinq = bytes(
        Ether()
        / Dot1Q(vlan=100, type=0x8100)
        / Dot1Q(vlan=200)
        / IP(src="9.9.9.9", dst="8.8.8.8")
        / UDP(dport=53)
    )
    f = decode_frame(qinq, 1)
    assert (f["vlan"], f["eth_type"], f["proto"], f["dport"], f["status"]) == (100, 0x0800, 17, 53, 0)
    assert ip_to_text(np.frombuffer(f["src_ip"], np.uint8), 4) == "9.9.9.9"
    assert decode_frame(b"", 1)["status"] == 1
    assert decode_frame(b"\x00" * 30, 12345)["status"] == 6


def test_writer_round_trip(capdir: Path) -> None:
    records = synthetic_records(20_000, seed=7)
    # exercise what synthetic traffic lacks: VLAN tags, fragments, other EtherTypes, GRE
    records["vlan"][::97] = 42
    records["length"][::97] += 4  # the tag is on the wire too
    records["caplen"][::97] += 4
    records["frag"][::101] = records["ip_version"][::101] == 4  # the writer fragments IPv4 only
    gre = np.arange(5, len(records), 173)
    gre = gre[records["ip_version"][gre] == 4]
    records["proto"][gre] = 47
    records["sport"][gre] = records["dport"][gre] = records["tcp_flags"][gre] = 0
    lldp = np.arange(3, len(records), 211)
    lldp = lldp[records["eth_type"][lldp] == 0x0806]
    records["eth_type"][lldp] = 0x88CC
    records["src_ip"][lldp] = records["dst_ip"][lldp] = 0
    records["sport"][lldp] = 0
    for name in ("rt.pcap", "rt.pcap.gz"):
        path = capdir / name
        assert write_pcap(path, records) == len(records)
        assert pcaps.capinfos_count(path) == len(records)
        got = decode_file(path, batch_size=4096)
        for col in RECORD_DTYPE.names:
            if col in ("ts", "label"):
                continue
            assert (got[col] == records[col]).all(), col
        assert np.abs(got["ts"] - records["ts"]).max() < 1e-6


def test_writer_snaplen_and_frames(capdir: Path) -> None:
    records = synthetic_records(500, seed=8)
    frames, caplen, _wire = build_frames(records, snaplen=64)
    assert (caplen == np.minimum(records["length"], 64)).all()
    assert len(frames) == int(caplen.sum())
    path = capdir / "snap.pcap"
    write_pcap(path, records, snaplen=64, nanosecond=True)
    got = decode_file(path, batch_size=100)
    assert (got["length"] == records["length"]).all()
    assert (got["caplen"] <= 64).all()
    ok = got["status"] == 0
    assert (got["payload_len"][ok] == records["payload_len"][ok]).all()
    with PcapWriter(capdir / "raw.pcap", linktype=101) as w:
        w.write_frame(1.5, bytes(IP() / TCP()))
    assert pcaps.capinfos_count(capdir / "raw.pcap") == 1
