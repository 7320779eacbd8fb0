"""Where packets come from: pcap/pcapng files (optionally paced), the demo generator, live engines.

Each source is an iterator of ``Chunk`` (capture/records.py); the runner numbers and publishes
them. A live engine (``open_live``) is such an iterator itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from capture import host
from capture.choices import AnalysisDepth
from capture.decode import decode_frames
from capture.engines import CaptureUnavailable, DumpcapEngine, PysharkEngine
from capture.pcapio import ReadStats, iter_frame_batches
from capture.records import Chunk


def file_key(path: str) -> str:
    """Identifies a capture file across restarts (path, size and modification time)."""
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{int(st.st_mtime)}"


def pcap_chunks(
    path: str,
    stats: ReadStats,
    batch_size: int = 1000,
    *,
    realtime: bool = False,
    rate: float | None = None,
    sleep=time.sleep,
    clock=time.monotonic,
) -> Iterator[Chunk]:
    """Decoded chunks of one capture file, as fast as possible, at original timing, or at ``rate`` pps."""
    start_wall = clock()
    first_ts: float | None = None
    sent = 0
    for frames in iter_frame_batches(path, batch_size, stats=stats):
        records = decode_frames(frames)
        if realtime and len(records):
            first_ts = float(records["ts"][0]) if first_ts is None else first_ts
            wait = (float(records["ts"][-1]) - first_ts) - (clock() - start_wall)
            if wait > 0:
                sleep(wait)
        elif rate:
            wait = (sent + len(records)) / rate - (clock() - start_wall)
            if wait > 0:
                sleep(wait)
        sent += len(records)
        yield Chunk(
            records=records, interfaces=frames.interfaces, read_at=time.time(), source=path, frames=[frames]
        )


def demo_chunks(
    rate: float,
    batch_size: int = 1000,
    seed: int | None = None,
    attack_prob: float = 0.02,
    *,
    with_frames: bool = False,
) -> Iterator[Chunk]:
    """Simulated traffic at about ``rate`` packets/s, with labeled attacks injected now and then.

    ``with_frames``: also synthesize the records' Ethernet frames (capture.pcapwriter), so that the
    evidence ring has something to keep in demo mode too.
    """
    from capture.demo import DemoTraffic
    from capture.pcapwriter import frame_batch

    traffic = DemoTraffic(seed if seed is not None else int(time.time()), attack_prob=attack_prob)
    for records, _due in traffic.stream(rate, batch_size, max_delay=0.1):
        frames = [frame_batch(records, "demo")] if with_frames and len(records) else []
        yield Chunk(records=records, interfaces=["demo"], read_at=time.time(), source="demo", frames=frames)


def open_live(interface: str, bpf: str, depth: str) -> DumpcapEngine | PysharkEngine:
    """Start a live engine: dumpcap + our decoder for basic/intermediate, pyshark for deep.

    Raises CaptureUnavailable with one line when the interface, the tool or the permission is missing.
    """
    if not host.is_valid_interface(interface):
        raise CaptureUnavailable(f"interface {interface!r} not found on this host")
    engine = PysharkEngine(interface, bpf) if depth == AnalysisDepth.DEEP else DumpcapEngine(interface, bpf)
    engine.start()  # fail now, while the caller can still fall back to demo mode
    return engine
