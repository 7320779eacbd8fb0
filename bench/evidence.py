"""Evidence pcap benchmark: carving 100,000 packets out of a 1 GB ring (issue 14's "< 2 s").

    .venv/bin/python bench/evidence.py [--ring-mb 1024] [--carve 100000] [--repeat 3]
                                       [--dir var/bench-evidence] [--keep] [--tshark-full]

1. The ring: capture.evidence.EvidenceRing as the capture process writes it (64 MiB segments
   and their index files), filled with ``--ring-mb`` of synthetic traffic
   (capture.pcapwriter.synthetic_records: frames of 60 to ~1,500 bytes), numbered on from 1,
   appended 20,000 frames at a time (the same frames, shifted in time). The write rate is
   printed too (frames/s on one core).
2. Carves of ``--carve`` packets (best of ``--repeat``), streamed to /dev/null as the API does:
   - ``seqs``: an incident's packets, given as sequence numbers: every 10th packet of a
     ``10 x --carve`` stretch in the middle of the ring (scattered reads, 64 KiB apart at most);
   - ``time``: a time range in the middle of the ring holding ``--carve`` packets (one run of
     contiguous records);
   - ``ip``: one address, the whole ring searched (every index read; as many packets as it has).
3. Baselines in the same run: our own pcap reader (capture.pcapio) reading every segment from
   the start and keeping the same sequence numbers (what carving costs without the index), and
   tshark reading one segment linearly with a display filter and writing the matches, with its
   rate extrapolated to the whole ring (``--tshark-full`` reads the whole ring instead).

The files are in the page cache when carved (they were just written): the figures are the
warm-cache case, like a ring that capture is writing. The ring is deleted at the end unless
``--keep``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from measure import Clock, Run  # noqa: E402 - bench/measure.py

TARGET_CARVE_S = 2.0
SENSOR = "bench"


def fill_ring(directory: Path, megabytes: int, batch: int = 20_000) -> tuple[Run, int]:
    """Write ``megabytes`` of frames into a fresh ring; (write run, frames written)."""
    from capture.evidence import EvidenceRing
    from capture.pcapio import iter_frame_batches
    from capture.pcapwriter import synthetic_records, write_pcap

    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    sample = directory / "sample.pcap"
    records = synthetic_records(batch, seed=7)
    write_pcap(sample, records)
    frames = next(iter_frame_batches(str(sample), batch))
    sample.unlink()
    span = float(frames.ts[-1] - frames.ts[0]) + 0.001
    limit = megabytes << 20
    # bound two segments above the size wanted: the ring is filled to ``megabytes``, nothing deleted
    ring = EvidenceRing(
        directory, SENSOR, max_bytes=limit + (128 << 20), max_age=10 * 365 * 86400.0, segment_bytes=64 << 20
    )
    seq = 1
    with Clock() as clock:
        while ring.status()["bytes"] < limit:
            records["seq"] = np.arange(seq, seq + batch, dtype=np.uint64)
            frames.ts = frames.ts + (span if seq > 1 else 0.0)
            ring.append(records, [frames])
            seq += batch
        ring.close()
    assert ring.segments_deleted == 0
    return Run(seq - 1, clock.wall, clock.cpu), seq - 1


def carve_to_null(directory: Path, **criteria) -> tuple[Run, int]:
    from capture.evidence import select

    with Clock() as clock, open(os.devnull, "wb") as out:
        selection = select(directory, SENSOR, **criteria)
        size = 0
        for piece in selection.iter_pcap():
            out.write(piece)
            size += len(piece)
    return Run(selection.frames, clock.wall, clock.cpu), size


def linear_ours(directory: Path, seqs: np.ndarray) -> Run:
    """Baseline: read every segment with capture.pcapio from the start, keep the wanted seqs."""
    from capture.evidence import list_segments
    from capture.pcapio import iter_frame_batches

    kept = 0
    with Clock() as clock, open(os.devnull, "wb") as out:
        for seg in list_segments(directory, SENSOR):
            seq = seg.first_seq
            for batch in iter_frame_batches(str(seg.pcap), 65536):
                numbers = np.arange(seq, seq + len(batch), dtype=np.uint64)
                seq += len(batch)
                for i in np.flatnonzero(np.isin(numbers, seqs)).tolist():
                    out.write(batch.frame(i))
                    kept += 1
    return Run(kept, clock.wall, clock.cpu)


def linear_tshark(paths: list[Path], ip: str) -> tuple[float, int]:
    """Baseline: tshark reads the files one after another with a display filter; (seconds, bytes read)."""
    t0 = time.perf_counter()
    for path in paths:
        subprocess.run(
            ["tshark", "-r", str(path), "-Y", f"ip.addr == {ip}", "-w", os.devnull],
            capture_output=True,
            check=True,
        )
    return time.perf_counter() - t0, sum(p.stat().st_size for p in paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ring-mb", type=int, default=1024, help="ring size in MiB (1024)")
    parser.add_argument("--carve", type=int, default=100_000, help="packets carved (100,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each carve, best kept (3)")
    parser.add_argument("--dir", type=Path, default=ROOT / "var" / "bench-evidence", help="ring directory")
    parser.add_argument("--keep", action="store_true", help="keep the ring afterwards")
    parser.add_argument("--tshark-full", action="store_true", help="tshark reads the whole ring (slow)")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "netmon.settings")
    os.environ.setdefault("NETMON_ENV", "development")

    print(f"== 1. a {args.ring_mb:,} MiB ring (64 MiB segments + index files), synthetic traffic ==")
    write, frames = fill_ring(args.dir, args.ring_mb)
    from capture.evidence import list_segments

    segments = list_segments(args.dir, SENSOR)
    on_disk = sum(s.size for s in segments)
    print(
        f"  {frames:,} frames, {len(segments)} segments, {on_disk / (1 << 20):,.0f} MiB on disk; "
        f"written at {write.rate():,.0f} frames/s (CPU) ({write.rate('wall'):,.0f} wall)"
    )

    print(f"== 2. carving {args.carve:,} packets to /dev/null (best of {args.repeat}) ==")
    first = segments[0].first_seq
    middle = first + (frames - first) // 2
    seqs = np.arange(middle - 5 * args.carve, middle + 5 * args.carve, 10, dtype=np.uint64) + 1
    rows = segments[len(segments) // 2].rows()
    ts0 = float(rows["ts"][0])
    # the time range holding --carve packets from there on (frames are in time order)
    all_ts = np.concatenate([s.rows()["ts"] for s in segments[len(segments) // 2 :]])
    until = float(all_ts[min(args.carve, len(all_ts) - 1)])
    ip = "10.0.0.17"
    results = {}
    for name, criteria in (
        ("seqs: every 10th of a stretch", {"seqs": seqs}),
        ("time: one contiguous range", {"since": ts0, "until": until}),
        ("ip: one address, whole ring", {"ip": ip}),
    ):
        runs = [carve_to_null(args.dir, **criteria) for _ in range(args.repeat)]
        run, size = min(runs, key=lambda r: r[0].wall)
        results[name] = run
        verdict = "PASS" if run.wall < TARGET_CARVE_S else "FAIL"
        print(
            f"  {name:<32} {run.amount:>9,} frames {size / (1 << 20):>7.1f} MiB  "
            f"{run.wall:6.2f} s wall ({run.cpu:.2f} s CPU)  target < {TARGET_CARVE_S:g} s: {verdict}"
        )

    print("== 3. baselines in the same run ==")
    ours = linear_ours(args.dir, seqs)
    print(f"  pcapio linear read of the ring, same seqs: {ours.amount:,} frames in {ours.wall:.2f} s wall")
    if shutil.which("tshark"):
        paths = [s.pcap for s in segments] if args.tshark_full else [segments[len(segments) // 2].pcap]
        seconds, read = linear_tshark(paths, ip)
        whole = sum(s.pcap.stat().st_size for s in segments)
        estimate = seconds * whole / read
        how = "whole ring" if args.tshark_full else f"one segment ({read / (1 << 20):.0f} MiB), extrapolated"
        print(f"  tshark -Y 'ip.addr == {ip}' linear read: {estimate:,.1f} s for the ring ({how})")
        seq_run = results["seqs: every 10th of a stretch"]
        print(
            f"  -> carve (seqs) is {ours.wall / seq_run.wall:,.0f}x faster than our linear read, "
            f"{estimate / seq_run.wall:,.0f}x than tshark's"
        )
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
