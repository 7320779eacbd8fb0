"""capture.pcapio: every capture flavour is read completely and exactly; damage is counted, not fatal."""

from __future__ import annotations

import gzip
import io
import subprocess
from pathlib import Path

import numpy as np
import pytest

from capture.pcapio import (
    MAX_CAPLEN,
    CaptureFileError,
    FrameBatch,
    FrameReader,
    ReadStats,
    iter_frame_batches,
)
from capture.pcapwriter import synthetic_records, write_pcap
from tests.capture import pcaps


@pytest.fixture(scope="module")
def capdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pcapio")


@pytest.fixture(scope="module")
def good(capdir: Path) -> dict[str, pcaps.Capture]:
    return {c.path.name: c for c in pcaps.all_good_captures(capdir)}


def read_all(source: object, batch_size: int = 5, **kw: object) -> tuple[list[FrameBatch], ReadStats]:
    stats = ReadStats()
    batches = list(iter_frame_batches(source, batch_size, stats=stats, **kw))  # type: ignore[arg-type]
    return batches, stats


def flat(batches: list[FrameBatch]) -> list[tuple[bytes, float, int, int, int, str]]:
    out = []
    for b in batches:
        for i in range(len(b)):
            out.append(
                (
                    b.frame(i),
                    float(b.ts[i]),
                    int(b.length[i]),
                    int(b.linktype[i]),
                    int(b.iface[i]),
                    b.interfaces[b.iface[i]],
                )
            )
    return out


def test_every_good_capture_reads_exactly_like_capinfos(good: dict[str, pcaps.Capture]) -> None:
    for name, cap in good.items():
        batches, stats = read_all(cap.path)
        frames = flat(batches)
        assert stats.frames == len(frames) == len(cap.frames) == pcaps.capinfos_count(cap.path), name
        for got, want in zip(frames, cap.frames, strict=True):
            data, ts, length, linktype, iface, ifname = got
            assert data == want.data, name
            assert ts == pytest.approx(want.ts, abs=1e-6), name
            assert length == want.length, name
            assert linktype == want.linktype, name
            assert iface == want.iface, name
            if cap.interfaces[0]:
                assert ifname == cap.interfaces[want.iface], name
        assert stats.bad_records == 0, (name, stats.details)


def test_formats_are_recognised_by_magic(good: dict[str, pcaps.Capture]) -> None:
    formats = {name: read_all(cap.path)[1].format for name, cap in good.items()}
    assert formats["ordinary.pcap"] == "pcap"
    assert formats["ordinary_be.pcap"] == "pcap"
    assert formats["ordinary_ns.pcap"] == "pcap-ns"
    assert formats["ordinary_be_ns.pcap"] == "pcap-ns"
    assert formats["two_if.pcapng"] == "pcapng"
    assert formats["two_if_be.pcapng"] == "pcapng"
    assert formats["compressed.bin"] == "pcap+gzip"
    assert formats["two_if.pcapng.gz"] == "pcapng+gzip"


def test_nanosecond_timestamps_keep_their_precision(capdir: Path) -> None:
    frames = [pcaps.Frame(1_700_000_000.123456789, b"\x00" * 20, 20)]
    path = capdir / "ns_precision.pcap"
    path.write_bytes(pcaps.pcap_bytes(frames, nanosecond=True))
    (batch,), _ = read_all(path)
    assert batch.ts[0] == pytest.approx(1_700_000_000.123456789, abs=2e-7)


def test_pcapng_interfaces_link_types_and_resolutions(good: dict[str, pcaps.Capture]) -> None:
    batches, stats = read_all(good["two_if.pcapng"].path, 100)
    (batch,) = batches
    assert batch.interfaces == ["eth0", "tun0"]
    assert batch.linktypes == [1, 101]
    assert sorted(set(batch.linktype.tolist())) == [1, 101]
    assert stats.skipped_blocks == 2  # name resolution + interface statistics
    batches, _ = read_all(good["two_sections.pcapng"].path, 100)
    assert batches[-1].interfaces == ["eth0", "tun0", "eth0", "tun0"]


def test_truncated_final_record_is_counted_and_the_rest_read(good: dict[str, pcaps.Capture]) -> None:
    _, stats = read_all(good["truncated.pcap"].path)
    assert stats.truncated == 1
    assert stats.reasons == {"truncated record": 1}
    assert stats.stopped_early
    assert "promises" in stats.details[0]
    _, stats = read_all(good["truncated_header.pcap"].path)
    assert stats.reasons == {"truncated record header": 1}
    assert stats.frames == len(good["truncated_header.pcap"].frames)


def test_record_over_limit_stops_cleanly(capdir: Path) -> None:
    cap = pcaps.make_record_over_limit(capdir)
    batches, stats = read_all(cap.path)
    assert [f[0] for f in flat(batches)] == [f.data for f in cap.frames]
    assert stats.bad_records == 1 and stats.reasons == {"record length over limit": 1}
    assert stats.stopped_early
    assert pcaps.capinfos_count(cap.path) == len(cap.frames)
    assert str(MAX_CAPLEN) in stats.details[0]


def test_bad_pcapng_block_is_skipped_and_reading_goes_on(capdir: Path) -> None:
    cap = pcaps.make_pcapng_bad_block(capdir)
    batches, stats = read_all(cap.path)
    assert [f[0] for f in flat(batches)] == [f.data for f in cap.frames]
    assert stats.bad_records == 1 and stats.reasons == {"bad packet block": 1}
    assert not stats.stopped_early


def test_pcapng_garbage_block_length_stops(capdir: Path) -> None:
    cap = pcaps.make_pcapng_two_interfaces(capdir, name="garbage_tail.pcapng")
    path = capdir / "garbage_tail2.pcapng"
    path.write_bytes(cap.path.read_bytes() + b"\x06\x00\x00\x00\x07\x00\x00\x00" + bytes(40))
    batches, stats = read_all(path)
    assert len(flat(batches)) == len(cap.frames)
    assert stats.reasons == {"bad block length": 1}


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("empty", "empty file"),
        ("garbage", "not a pcap or pcapng file"),
        ("wrong_magic", "0xdeadbeef"),
        ("short_header", "header cut short"),
        ("gzip_garbage", "after gzip"),
        ("text", "not a pcap or pcapng file"),
        ("pcapng_bad_bom", "byte-order magic"),
    ],
)
def test_files_that_are_not_captures_raise_one_clear_line(capdir: Path, name: str, words: str) -> None:
    path = pcaps.make_bad_files(capdir)[name]
    with pytest.raises(CaptureFileError) as info:
        list(iter_frame_batches(path))
    message = str(info.value)
    assert words in message
    assert str(path) in message
    assert "\n" not in message
    assert pcaps.capinfos_count(path) == 0


def test_missing_file_raises_capture_file_error(capdir: Path) -> None:
    with pytest.raises(CaptureFileError, match="cannot open"):
        list(iter_frame_batches(capdir / "nope.pcap"))


def test_batches_are_full_until_the_last(capdir: Path) -> None:
    path = capdir / "thousand.pcap"
    write_pcap(path, synthetic_records(1000, seed=3))
    batches, stats = read_all(path, 300)
    assert [len(b) for b in batches] == [300, 300, 300, 100]
    assert stats.frames == 1000
    # small chunks: batches span many reads and stay identical
    small = list(iter_frame_batches(path, 300, chunk_size=1000))
    assert [len(b) for b in small] == [300, 300, 300, 100]
    assert flat(small) == flat(batches)


def test_push_parser_gives_the_same_frames_whatever_the_pieces(good: dict[str, pcaps.Capture]) -> None:
    for name in (
        "ordinary.pcap",
        "two_sections.pcapng",
        "two_if.pcapng.gz",
        "compressed.bin",
        "truncated.pcap",
    ):
        cap = good[name]
        data = cap.path.read_bytes()
        want, want_stats = read_all(cap.path)
        for piece in (1, 3, 7, 64):
            reader = FrameReader(name)
            got = []
            for start in range(0, len(data), piece):
                reader.feed(data[start : start + piece])
                while (batch := reader.take(4)) is not None:
                    got.append(batch)
            reader.close()
            while (batch := reader.take(4)) is not None:
                got.append(batch)
            assert flat(got) == flat(want), (name, piece)
            assert reader.stats.reasons == want_stats.reasons, (name, piece)


def test_reads_a_pipe_without_seeking(good: dict[str, pcaps.Capture]) -> None:
    for name in ("ordinary.pcap", "two_if.pcapng", "compressed.bin"):
        cap = good[name]
        proc = subprocess.Popen(["cat", str(cap.path)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        batches, stats = read_all(proc.stdout, 4, live=True)
        proc.wait()
        assert [f[0] for f in flat(batches)] == [f.data for f in cap.frames]
        assert stats.frames == len(cap.frames)


def test_concatenated_gzip_members(good: dict[str, pcaps.Capture]) -> None:
    data = good["ordinary.pcap"].path.read_bytes()
    half = len(data) // 2
    two_members = gzip.compress(data[:half]) + gzip.compress(data[half:])
    batches, stats = read_all(io.BytesIO(two_members))
    assert len(flat(batches)) == len(good["ordinary.pcap"].frames)
    assert stats.truncated == 0


def test_truncated_gzip_is_counted(good: dict[str, pcaps.Capture]) -> None:
    data = gzip.compress(good["ordinary.pcap"].path.read_bytes())
    batches, stats = read_all(data[: len(data) - 40])
    assert 0 < len(flat(batches)) <= len(good["ordinary.pcap"].frames)
    assert stats.reasons["compressed stream ends early"] == 1


def test_large_file_matches_capinfos(capdir: Path) -> None:
    path = capdir / "large.pcap.gz"
    records = synthetic_records(50_000, seed=11)
    write_pcap(path, records)
    batches, stats = read_all(path, 4096)
    assert stats.frames == 50_000 == pcaps.capinfos_count(path)
    lengths = np.concatenate([b.length for b in batches])
    assert (lengths == records["length"]).all()
    assert stats.as_dict()["frames"] == 50_000
