"""Cost of remembering who opened each conversation (issue 12, attribution), per packet and in state.

    .venv/bin/python bench/openers.py PCAP [--read 5000] [--level advanced] [--repeat 3]

The feature state remembers each TCP/UDP conversation's opener (``detection.features._Openers``,
updated vectorised per read) so incidents name the right client when a connection's handshake was
in an earlier read. This replays PCAP (e.g. a bench/make_labeled_capture.sh test.pcap) through the
worker's featurisation the way a worker does per read: load the sensor's state from bytes,
``FeatureExtractor.transform_opened`` on the read, save the state to bytes. Measured in the same
run, best of ``--repeat``:

* baseline: the same code with the opener step replaced by "unknown" for every packet (what the
  features cost before openers were remembered; the table stays empty);
* openers: today's code.

Printed: CPU us per packet of each, the ratio, the opener step alone (us per packet), the saved
state's size (bytes) at the end of each, the openers kept, and how often the remembered opener
changes the stateless guess (``client_side``) on the capture: the packets whose client it fixes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _records(path: Path) -> np.ndarray:
    """pcap -> records exactly as ``manage.py capture --pcap`` reads them."""
    from capture.pcapio import ReadStats
    from capture.sources import pcap_chunks

    return np.concatenate([chunk.records for chunk in pcap_chunks(str(path), ReadStats(), 5000)])


def _replay(records: np.ndarray, level: str, read: int, stub: bool) -> dict:
    """Featurise ``records`` read by read through a saved state; CPU seconds and what was kept."""
    from detection import features

    extractor = features.FeatureExtractor(level)
    step = {"cpu": 0.0}
    real = features.FeatureExtractor._opened

    def timed(*args):  # the opener step alone, timed
        t0 = time.process_time()
        out = np.full(len(args[0]), -1, np.int8) if stub else real(*args)
        step["cpu"] += time.process_time() - t0
        return out

    features.FeatureExtractor._opened = staticmethod(timed)
    try:
        raw = extractor.new_state().to_bytes()
        opened = np.empty(len(records), np.int8)
        t0 = time.process_time()
        for lo in range(0, len(records), read):
            state = features.FeatureState.from_bytes(raw)
            opened[lo : lo + read] = extractor.transform_opened(records[lo : lo + read], state)[2]
            raw = state.to_bytes()
        cpu = time.process_time() - t0
    finally:
        features.FeatureExtractor._opened = staticmethod(real)
    state = features.FeatureState.from_bytes(raw)
    kept = len(state.openers.keys)
    return {"cpu": cpu, "step": step["cpu"], "bytes": len(raw), "kept": kept, "opened": opened}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pcap", type=Path)
    parser.add_argument("--read", type=int, default=5000, help="packets per worker read (20 batches of 250)")
    parser.add_argument("--level", default="advanced")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "netmon.settings")
    os.environ.setdefault("NETMON_ENV", "test")
    import django

    django.setup()
    from detection.features import client_side

    records = _records(args.pcap)
    n = len(records)
    print(f"{args.pcap}: {n:,} packets, reads of {args.read:,}, level {args.level}, best of {args.repeat}")
    runs: dict[str, dict] = {}
    for _ in range(args.repeat):  # interleaved, so both see the same machine load
        for name, stub in (("baseline", True), ("openers", False)):
            run = _replay(records, args.level, args.read, stub)
            if name not in runs or run["cpu"] < runs[name]["cpu"]:
                runs[name] = run
    base, new = runs["baseline"], runs["openers"]
    for name, run in runs.items():
        print(
            f"  {name:9} {run['cpu'] / n * 1e6:7.2f} us/packet  (opener step {run['step'] / n * 1e6:5.2f} us)"
            f"  state {run['bytes'] / 1e6:6.2f} MB, openers kept {run['kept']:,}"
        )
    print(f"  ratio openers / baseline: {new['cpu'] / base['cpu']:.3f}")
    opened = new["opened"]
    ported = np.isin(records["proto"], (6, 17)) & (records["ip_version"] > 0)
    guess, remembered = client_side(records), client_side(records, opened)
    print(
        f"  TCP/UDP packets with a remembered opener: {(opened >= 0).sum():,} of {ported.sum():,};"
        f" client changed from the stateless guess: {(guess != remembered).sum():,}"
    )


if __name__ == "__main__":
    main()
