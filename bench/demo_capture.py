"""A labeled capture of `make run`'s demo, in bench/make_labeled_capture.sh's format (issue 12).

    .venv/bin/python bench/demo_capture.py OUTDIR [--minutes 10] [--seed 1] [--rate 200]
    .venv/bin/python bench/incidents.py OUTDIR --pace fast --no-throughput

writes into OUTDIR what `make run` does to a sensor for ``--minutes`` minutes, with the demo's own
labels as ground truth:

- benign.pcap: the training traffic of `make run` (``train_detector --demo 30000``: the demo's
  normal traffic, seed 1, timed like `capture --demo` at ``--rate`` packets/s);
- test.pcap: `capture --demo`'s traffic (attacks injected with its probability, 0.02 per simulated
  second) at ``--rate`` packets/s for ``--minutes`` minutes of packet time (``--seed``: its seed);
- labels.csv (frame,label,attack) and attacks.csv (attack,kind,attacker,targets,start,end): each
  injected attack is one row, named ``<kind>-<n>``: its labeled packets of one kind, split where
  they pause for more than 5 s. ``kind`` is the incident kind it should become; ``attacker`` the
  address that sent most of its packets (a spoofed flood's first source: its incident is the
  service's, whose sources list the first 100); ``targets`` the host it sent them to.

The question it answers (issue 12's target): do the dashboard's incidents match the demo's
injected attacks one to one, with at most one other?
"""

from __future__ import annotations

import argparse
import csv
import inspect
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import os  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "netmon.settings")

INCIDENT_KIND = {"port_scan": "port_scan", "syn_flood": "syn_flood", "udp_flood": "udp_flood",
                 "http_flood": "request_flood"}  # fmt: skip
PAUSE = 5.0  # seconds without a labeled packet of a kind that end an attack


def demo_records(minutes: float, seed: int, rate: float) -> np.ndarray:
    """``capture --demo``'s records for ``minutes`` of packet time at ``rate`` packets/s."""
    from capture.demo import DemoTraffic
    from capture.sources import demo_chunks

    attack_prob = inspect.signature(demo_chunks).parameters["attack_prob"].default  # `capture --demo`'s
    traffic = DemoTraffic(seed, attack_prob=attack_prob)
    factor = traffic.pps / rate
    parts, span, sim0 = [], 0.0, None
    while span < minutes * 60:
        records = traffic.records(50_000)
        sim0 = float(records["ts"][0]) if sim0 is None else sim0
        records["ts"] = 1.7e9 + (records["ts"] - sim0) * factor
        parts.append(records)
        span = float(records["ts"][-1]) - 1.7e9
    records = np.concatenate(parts)
    records = records[records["ts"] < 1.7e9 + minutes * 60]
    records["seq"] = np.arange(1, len(records) + 1)
    return records


def attacks_of(records: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Each labeled frame's attack name, and the attacks (rows of attacks.csv)."""
    from capture.records import ATTACK_LABELS, ip_texts

    names = np.full(len(records), "", dtype=object)
    src = ip_texts(records["src_ip"], records["ip_version"])
    dst = ip_texts(records["dst_ip"], records["ip_version"])
    rows, counters = [], Counter()
    for code in sorted({int(c) for c in np.unique(records["label"]) if c}):
        idx = np.flatnonzero(records["label"] == code)
        ts = records["ts"][idx]
        cuts = np.flatnonzero(np.diff(ts) > PAUSE) + 1
        for part in np.split(idx, cuts):
            kind = ATTACK_LABELS[code]
            counters[kind] += 1
            name = f"{kind}-{counters[kind]}"
            names[part] = name
            sources = Counter(src[i] for i in part)
            target = Counter(dst[i] for i in part).most_common(1)[0][0]
            sent = Counter(s for s in (src[i] for i in part) if s != target)
            attacker = sent.most_common(1)[0][0] if sent else sources.most_common(1)[0][0]
            if sent and sent.most_common(1)[0][1] * 10 < len(part):  # spoofed: thousands of sources
                attacker = src[part[0]] if src[part[0]] != target else attacker
            rows.append({"attack": name, "kind": INCIDENT_KIND.get(kind, kind), "attacker": attacker,
                         "targets": target, "start": float(records["ts"][part[0]]),
                         "end": float(records["ts"][part[-1]])})  # fmt: skip
    rows.sort(key=lambda r: r["start"])
    return names, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=None, help="packets/s (default: capture --demo's)")
    args = parser.parse_args()

    import django

    django.setup()
    from capture.demo import DEMO_RATE
    from capture.pcapwriter import write_pcap
    from detection.services import records_from_demo

    rate = args.rate or DEMO_RATE
    out = args.outdir
    out.mkdir(parents=True, exist_ok=True)
    write_pcap(out / "benign.pcap", np.concatenate(list(records_from_demo(30_000, rate=rate))))
    records = demo_records(args.minutes, args.seed, rate)
    write_pcap(out / "test.pcap", records)
    names, attacks = attacks_of(records)
    with open(out / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "label", "attack"])
        for frame, name in enumerate(names.tolist(), start=1):
            writer.writerow([frame, int(bool(name)), name])
    with open(out / "attacks.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["attack", "kind", "attacker", "targets", "start", "end"])
        writer.writeheader()
        writer.writerows(attacks)
    print(f"{out}: {len(records):,} packets over {args.minutes:g} min at {rate:g}/s, {len(attacks)} attacks:")
    for a in attacks:
        print(f"  {a['attack']:<14} {a['kind']:<14} {a['attacker']:<16} -> {a['targets']}  "
              f"{a['end'] - a['start']:.1f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
