"""The evidence ring (capture/evidence.py): frames kept by capture, bounded by size and age, carved.

A replay goes through the real CaptureRunner (real Redis and database); the carved files are read
back with Wireshark's tshark and capinfos and compared frame by frame with what tshark reads from
the input. The bounds and failures use the ring directly, with a fake clock for age.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from capture import evidence
from capture.engines import PysharkEngine
from capture.evidence import EvidenceGone, EvidenceRing
from capture.pcapio import ReadStats, iter_frame_batches
from capture.pcapwriter import synthetic_records, write_pcap
from capture.records import ip_to_bytes
from capture.runner import CaptureRunner
from capture.sources import demo_chunks, file_key, pcap_chunks
from tests.capture.evidence_ring import feed, write
from tests.capture.pcaps import make_ordinary, make_pcapng_two_interfaces

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


def tshark_frames(path: Path) -> list[tuple[str, str, str]]:
    """(time in µs, wire length, raw bytes hex) of every frame, as tshark reads them.

    A frame without a time (a pcapng simple packet block) counts as time 0, as a pcap record has one.
    """
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "json", "-x", "-j", "frame"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    frames = []
    for packet in json.loads(out):
        layers = packet["_source"]["layers"]
        frame = layers["frame"]
        epoch = round(float(frame.get("frame.time_epoch", 0)) * 1_000_000)
        frames.append((str(epoch), frame["frame.len"], layers["frame_raw"][0]))
    return frames


def capinfos(path: Path) -> dict[str, str]:
    out = subprocess.run(["capinfos", "-M", "-c", "-t", "-E", str(path)], capture_output=True, text=True)
    return dict(line.split(":", 1) for line in out.stdout.splitlines() if ":" in line)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- replay through capture, carve, read back with Wireshark ------------------------------------


@needs_tshark
@pytest.mark.django_db
def test_a_replay_carves_back_byte_identical_frames(tmp_path, redis_client):
    capture = make_ordinary(tmp_path)
    synthetic = tmp_path / "synthetic.pcap"
    write_pcap(synthetic, synthetic_records(1000, seed=4))
    runner = CaptureRunner("ev1", redis_client=redis_client, buffer_size=1_000_000, batch_size=500)
    runner.evidence = EvidenceRing(tmp_path / "ring", "ev1", max_bytes=1 << 30, max_age=3600)
    for path in (capture.path, synthetic):
        runner.consume(
            pcap_chunks(str(path), ReadStats(), 500), base_seq=runner.file_base_seq(file_key(str(path)))
        )
    runner.drain(timeout=5)
    runner.close()

    carved = write(tmp_path / "all.pcap", evidence.carve(tmp_path / "ring", "ev1"))
    expected = tshark_frames(capture.path) + tshark_frames(synthetic)
    assert tshark_frames(carved) == expected
    info = capinfos(carved)
    assert info["File type"].strip() == "pcap"  # classic libpcap, not pcapng
    assert info["File encapsulation"].strip() == "ether"
    assert int(info["Number of packets"]) == len(expected)
    assert runner.evidence.status()["frames_kept"] == len(expected)

    # a few packets by their sequence numbers: exactly those frames
    first = len(capture.frames) + 1  # the synthetic file's first seq
    wanted = [2, first, first + 500, first + 999]
    subset = write(tmp_path / "some.pcap", evidence.carve(tmp_path / "ring", "ev1", seqs=wanted))
    assert tshark_frames(subset) == [expected[s - 1] for s in wanted]


@needs_tshark
def test_pcapng_input_is_kept_per_link_type_with_its_timestamps(tmp_path):
    capture = make_pcapng_two_interfaces(tmp_path)  # Ethernet frames, then raw IP frames
    ring = EvidenceRing(tmp_path / "ring", "s", max_bytes=1 << 30, max_age=3600)
    end = feed(ring, capture.path)
    ring.close()

    segments = evidence.list_segments(tmp_path / "ring", "s")
    assert len(segments) >= 2 and {seg.linktype() for seg in segments} == {1, 101}
    source = tshark_frames(capture.path)
    eth = write(tmp_path / "eth.pcap", evidence.carve(tmp_path / "ring", "s"))  # the first frame's type
    raw = [i + 1 for i, batch in enumerate(_linktypes(capture.path)) if batch == 101]
    raw_pcap = write(tmp_path / "raw.pcap", evidence.carve(tmp_path / "ring", "s", seqs=raw))
    assert tshark_frames(eth) == [
        f for f, lt in zip(source, _linktypes(capture.path), strict=True) if lt == 1
    ]
    assert tshark_frames(raw_pcap) == [source[s - 1] for s in raw]
    assert evidence.select(tmp_path / "ring", "s").other_linktype == len(raw)
    assert end - 1 == len(source)


def _linktypes(path: Path) -> list[int]:
    return [int(lt) for batch in iter_frame_batches(str(path)) for lt in batch.linktype]


@needs_tshark
def test_demo_frames_are_kept_and_readable(tmp_path):
    ring = EvidenceRing(tmp_path / "ring", "demo", max_bytes=1 << 30, max_age=3600)
    chunk = next(demo_chunks(50_000, 200, seed=3, with_frames=True))
    records = chunk.records
    records["seq"] = np.arange(1, len(records) + 1)
    ring.append(records, chunk.frames)
    ring.close()
    carved = write(tmp_path / "demo.pcap", evidence.carve(tmp_path / "ring", "demo"))
    frames = tshark_frames(carved)
    assert len(frames) == len(records)
    assert [int(f[1]) for f in frames] == records["length"].tolist()


@needs_tshark
def test_deep_mode_hands_its_frames_to_the_ring_too(tmp_path):
    capture = make_ordinary(tmp_path)
    ring = EvidenceRing(tmp_path / "ring", "deep", max_bytes=1 << 30, max_age=3600)
    seq = 1
    for chunk in PysharkEngine(capture.path, batch_size=4):
        records = chunk.records
        records["seq"] = np.arange(seq, seq + len(records))
        ring.append(records, chunk.frames)
        seq += len(records)
    ring.close()
    carved = b"".join(evidence.carve(tmp_path / "ring", "deep"))
    assert carved[24:] == capture.path.read_bytes()[24:]
    assert ring.status()["state"] == "on" and ring.status()["frames_not_kept"] == 0


# --- selecting -----------------------------------------------------------------------------------


def test_filters_select_exactly_the_matching_frames(tmp_path):
    records = synthetic_records(5000, seed=9)
    write_pcap(tmp_path / "in.pcap", records)
    ring = EvidenceRing(tmp_path / "ring", "s", max_bytes=1 << 30, max_age=3600, segment_bytes=200_000)
    feed(ring, tmp_path / "in.pcap")
    ring.close()
    assert len(evidence.list_segments(tmp_path / "ring", "s")) >= 3
    ip = "10.0.1.17"
    mask = (records["src_ip"] == np.frombuffer(ip_to_bytes(ip), np.uint8)).all(axis=1) | (
        records["dst_ip"] == np.frombuffer(ip_to_bytes(ip), np.uint8)
    ).all(axis=1)
    records["ts"] = [t for b in iter_frame_batches(str(tmp_path / "in.pcap")) for t in b.ts]  # as read: µs
    since, until = float(records["ts"][1000]), float(records["ts"][4000])
    cases = [
        ({"ip": ip}, mask),
        ({"port": 53}, (records["sport"] == 53) | (records["dport"] == 53)),
        ({"since": since, "until": until}, (records["ts"] >= since) & (records["ts"] < until)),
        ({"ip": ip, "port": 443, "since": since},
         mask & ((records["sport"] == 443) | (records["dport"] == 443)) & (records["ts"] >= since)),
    ]  # fmt: skip
    for criteria, want in cases:
        selection = evidence.select(tmp_path / "ring", "s", **criteria)
        assert selection.frames == int(want.sum()), criteria
        data = b"".join(selection.iter_pcap())
        got = [len(b.frame(i)) for b in iter_frame_batches(data) for i in range(len(b))]
        assert got == records["length"][want].tolist(), criteria


def test_nothing_kept_or_aged_out_says_why(tmp_path):
    with pytest.raises(EvidenceGone, match="holds no frames"):
        evidence.select(tmp_path / "ring", "nobody")
    write_pcap(tmp_path / "in.pcap", synthetic_records(100, seed=1))
    ring = EvidenceRing(tmp_path / "ring", "s", max_bytes=1 << 30, max_age=3600)
    feed(ring, tmp_path / "in.pcap", first_seq=500)
    with pytest.raises(EvidenceGone, match=r"aged out .* keeps packets from #500"):
        evidence.select(tmp_path / "ring", "s", seqs=[10, 20])
    with pytest.raises(EvidenceGone, match=r"frames before .* have aged out"):
        evidence.select(tmp_path / "ring", "s", until=1_600_000_000.0)
    # inside the kept window, nothing matching is an empty pcap, not a 410
    assert evidence.select(tmp_path / "ring", "s", ip="192.0.2.1").frames == 0


# --- bounds --------------------------------------------------------------------------------------


def test_the_ring_stays_within_its_size_and_drops_the_oldest(tmp_path):
    write_pcap(tmp_path / "in.pcap", synthetic_records(20_000, seed=2))  # about 9 MB of frames
    ring = EvidenceRing(tmp_path / "ring", "s", max_bytes=2_000_000, max_age=3600, segment_bytes=250_000)
    end = feed(ring, tmp_path / "in.pcap", batch=500)

    on_disk = sum(p.stat().st_size for p in (tmp_path / "ring" / "s").iterdir())
    assert on_disk <= 2_000_000 + 250_000  # the bound, give or take the last batch written
    assert ring.status()["bytes"] == on_disk
    with pytest.raises(EvidenceGone, match="aged out"):
        evidence.select(tmp_path / "ring", "s", seqs=[1, 2, 3])
    assert evidence.select(tmp_path / "ring", "s", seqs=[end - 1]).frames == 1


def test_segments_older_than_the_age_bound_are_deleted(tmp_path):
    clock = Clock()
    write_pcap(tmp_path / "in.pcap", synthetic_records(2000, seed=2))
    ring = EvidenceRing(tmp_path / "ring", "s", max_bytes=1 << 30, max_age=3600, clock=clock)
    assert ring.segment_seconds == 150  # a 24th of the age bound
    feed(ring, tmp_path / "in.pcap")
    old = evidence.list_segments(tmp_path / "ring", "s")
    assert len(old) == 1
    clock.now += 200  # the open segment rotates when idle...
    ring.prune()
    assert evidence.select(tmp_path / "ring", "s", seqs=[5]).frames == 1
    clock.now += 3600  # ... and goes once its last write is past the bound
    os.utime(old[0].pcap, (clock.now - 3601, clock.now - 3601))  # its mtime on the fake clock's scale
    ring.prune()
    assert evidence.list_segments(tmp_path / "ring", "s") == []
    with pytest.raises(EvidenceGone):
        evidence.select(tmp_path / "ring", "s", seqs=[5])


def test_segments_numbered_before_a_reset_are_dropped(tmp_path):
    write_pcap(tmp_path / "in.pcap", synthetic_records(100, seed=2))
    ring = EvidenceRing(tmp_path / "ring", "s", max_bytes=1 << 30, max_age=3600)
    feed(ring, tmp_path / "in.pcap", first_seq=1000)
    ring.close()
    EvidenceRing(tmp_path / "ring", "s", max_bytes=1 << 30, max_age=3600, next_seq=1100)  # numbered on
    assert len(evidence.list_segments(tmp_path / "ring", "s")) == 1
    # a new database numbers from below the segment's last frame (1099): its frames are not those packets
    EvidenceRing(tmp_path / "ring", "s", max_bytes=1 << 30, max_age=3600, next_seq=1050)
    assert evidence.list_segments(tmp_path / "ring", "s") == []


def test_zero_turns_evidence_off(tmp_path):
    ring = EvidenceRing(tmp_path / "ring", "s", max_bytes=0, max_age=3600)
    assert ring.status()["state"] == "off" and "NETMON_EVIDENCE_MAX_MB" in ring.status()["reason"]
    assert not (tmp_path / "ring").exists()


# --- failures ------------------------------------------------------------------------------------


def test_an_unwritable_directory_leaves_capture_running_without_evidence(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    write_pcap(tmp_path / "in.pcap", synthetic_records(1000, seed=2))
    ring = EvidenceRing(tmp_path / "file" / "ring", "s", max_bytes=1 << 30, max_age=3600)
    feed(ring, tmp_path / "in.pcap")  # no exception
    status = ring.status()
    assert status["state"] == "failed"
    assert "cannot write" in status["reason"] and str(tmp_path / "file") in status["reason"]
    assert status["frames_not_kept"] == 1000 and status["frames_kept"] == 0


def test_a_directory_that_fails_mid_run_is_retried(tmp_path):
    clock = Clock()
    write_pcap(tmp_path / "in.pcap", synthetic_records(4000, seed=2))
    root = tmp_path / "ring"
    ring = EvidenceRing(root, "s", max_bytes=1 << 30, max_age=3600, segment_bytes=100_000, clock=clock)
    seq = feed(ring, tmp_path / "in.pcap", batch=100)
    assert ring.status()["state"] == "on"
    shutil.rmtree(root / "s")
    (root / "s").write_text("the directory is gone")  # the next segment cannot be made
    seq = feed(ring, tmp_path / "in.pcap", first_seq=seq, batch=100)
    assert ring.status()["state"] == "failed" and ring.status()["frames_not_kept"] > 0
    (root / "s").unlink()
    clock.now += evidence.RETRY_SECONDS
    feed(ring, tmp_path / "in.pcap", first_seq=seq, batch=100)
    assert ring.status()["state"] == "on"
    assert evidence.select(root, "s", seqs=[seq, seq + 3999]).frames == 2
