"""Where packets come from: pcap/pcapng files (optionally paced), the demo generator, live engines.

Each source is an iterator of ``runner.Chunk``; the runner numbers and publishes them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from capture.choices import AnalysisDepth
from capture.decode import decode_frames
from capture.pcapio import ReadStats, iter_frame_batches
from capture.runner import Chunk


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
        records = decode_frames(frames, 0)
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
        yield Chunk(records=records, interfaces=frames.interfaces, read_at=time.time(), source=path)


def demo_chunks(
    rate: float, batch_size: int = 1000, seed: int | None = None, attack_prob: float = 0.02
) -> Iterator[Chunk]:
    """Simulated traffic at about ``rate`` packets/s, with labeled attacks injected now and then."""
    from capture.demo import DemoTraffic

    traffic = DemoTraffic(seed if seed is not None else int(time.time()), attack_prob=attack_prob)
    for records, _due in traffic.stream(rate, batch_size, max_delay=0.1):
        yield Chunk(records=records, interfaces=["demo"], read_at=time.time(), source="demo")


class CaptureUnavailable(RuntimeError):
    """Live capture cannot start (no tool, no interface, no permission); the message says which."""


def open_live(interface: str, bpf: str, depth: str):
    """Start a live engine: dumpcap + our decoder for basic/intermediate, pyshark for deep.

    Raises CaptureUnavailable with one line when the interface, the tool or the permission is missing.
    """
    import shutil

    from capture import engines, host

    if not host.is_valid_interface(interface):
        raise CaptureUnavailable(f"interface {interface!r} not found on this host")
    try:
        if depth == AnalysisDepth.DEEP:
            if shutil.which("tshark") is None:
                raise engines.CaptureUnavailable(engines.TSHARK_MISSING)
            engine = engines.PysharkEngine(interface, bpf)
        else:
            engine = engines.DumpcapEngine(interface, bpf)
        engine.start()  # fail now, while the caller can still fall back to demo mode
        return engine
    except engines.CaptureUnavailable as exc:
        raise CaptureUnavailable(str(exc)) from None


def live_chunks(engine, interface: str) -> Iterator[Chunk]:
    """Chunks from a live engine; empty ones while the link is idle, so the runner can check for stop."""
    for batch in engine:
        records = batch.records
        app: dict[int, dict[str, str]] = {}
        if batch.app and len(records):
            index = {int(seq): i for i, seq in enumerate(records["seq"])}
            app = {index[seq]: fields for seq, fields in batch.app.items() if seq in index}
        yield Chunk(
            records=records,
            interfaces=batch.interfaces or [interface],
            app=app,
            read_at=batch.read_at or time.time(),
            source=interface,
        )
