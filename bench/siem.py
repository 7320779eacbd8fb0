"""SIEM output benchmark: what Community IDs and the EVE sinks cost the worker's ingest, in the same run.

    REDIS_URL=redis://127.0.0.1:6379/<your db> .venv/bin/python bench/siem.py [--packets 100000]
        [--batch 1000] [--rounds 3] [--attack-prob 0.05] [--database-url URL]

The worker's own drain (``detection.ingest.drain_sensor``: Redis stream, decode, one transaction
storing packets, flows, anomalies and incidents, acknowledgement, after-commit publishing) runs on
the demo's traffic (seed 7, floods and scans injected with ``--attack-prob``) published in batches
of ``--batch`` packets to a real Redis stream, in three variants, interleaved round by round:

* ``baseline``: ``NETMON_COMMUNITY_ID=0``, no sink (what ingest cost before this feature);
* ``community_id``: Community IDs computed per distinct flow of each batch and stored on flows,
  anomalies and incidents;
* ``siem``: the same, plus an EVE file (``NETMON_EVE_LOG``), a UDP syslog receiver on this host
  (``NETMON_SYSLOG_ADDR``, a socket read by a thread here) and ``NETMON_EVE_ANOMALIES=1``; the
  writer thread's CPU counts (it runs in this process), and the run waits until it has written.

Scoring is not the model's: the demo's ground truth (``label``) is the anomaly flag, with a fixed
score (``detection.scoring.ScoredBatch``), so every variant files the same anomalies and opens the
same incidents, and the model's cost (the same in every variant) is left out: the ratio printed is
of the ingest path without the model, an upper bound of the overhead of the whole worker.

Printed per variant: process CPU and wall time per packet (median of the rounds), packets per
second of CPU, EVE lines written, and the ratio to the baseline. The database is a fresh SQLite file
under var/ (or ``--database-url``, e.g. a PostgreSQL database of your own); sensors are named
``bench-siem-*`` and their Redis keys deleted at the end (the Redis database is not flushed).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup(database_url: str | None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "netmon.settings")
    os.environ.setdefault("NETMON_ENV", "test")
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    else:
        path = ROOT / "var" / "bench-siem.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
    if "REDIS_URL" not in os.environ:
        sys.exit("set REDIS_URL to a Redis database of your own (the bench writes streams there)")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=100_000, help="packets per variant and round")
    parser.add_argument("--batch", type=int, default=1000, help="packets per published batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--attack-prob", type=float, default=0.05)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    setup(args.database_url)

    import redis
    from django.conf import settings

    from capture.demo import DemoTraffic
    from capture.records import Batch, encode_batch, stream_key
    from detection import ingest, scoring, siem

    client = redis.Redis.from_url(settings.REDIS_URL)
    traffic = DemoTraffic(7, attack_prob=args.attack_prob)
    records = traffic.records(args.packets)
    records["seq"] = np.arange(1, len(records) + 1)  # sequence numbers start at 1
    attack_share = float((records["label"] != 0).mean())
    tmp = Path(tempfile.mkdtemp(prefix="bench-siem-"))

    # A fixed scorer: the ground truth flags the anomalies (the same in every variant).
    def score(sensor, merged: Batch, state) -> scoring.ScoredBatch:
        r = merged.records
        flagged = r["label"] != 0
        return scoring.ScoredBatch(
            scores=np.where(flagged, 1.0, 0.1), threshold=0.5, is_anomaly=flagged,
            top_features=[("syn_share",)] * len(r), explain=lambda pos, rows: [("bench", "[]")] * len(rows),
            model_kind="isolation_forest", model_versions={"isolation_forest": 0}, feature_state=b"",
        )  # fmt: skip

    scoring.score_batch = score

    # The CPU of the feature's own steps, measured where they run (the totals are noisy on a shared
    # machine; these are not): Community IDs (flows, anomalies), emit (the worker's side: the query,
    # the formatting, the hand-over) and the writer thread (files, sockets, counters).
    spent: dict[str, float] = {"community_ids": 0.0, "emit": 0.0, "writer": 0.0}

    def timed(key: str, fn, clock=time.process_time):
        def wrapper(*a, **kw):
            start = clock()
            try:
                return fn(*a, **kw)
            finally:
                spent[key] += clock() - start

        return wrapper

    from capture import storage
    from detection import anomalies

    storage.community_ids = timed("community_ids", storage.community_ids)
    anomalies.community_ids = timed("community_ids", anomalies.community_ids)
    ingest.siem.emit = timed("emit", siem.emit)
    siem.Writer._write = timed("writer", siem.Writer._write, time.thread_time)

    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    received = [0]

    def drain_receiver() -> None:
        while True:
            try:
                receiver.recv(65535)
            except OSError:
                return
            received[0] += 1

    threading.Thread(target=drain_receiver, daemon=True).start()

    variants = {
        "baseline": {"NETMON_COMMUNITY_ID": False, "NETMON_EVE_LOG": "", "NETMON_SYSLOG": None},
        "community_id": {"NETMON_COMMUNITY_ID": True, "NETMON_EVE_LOG": "", "NETMON_SYSLOG": None},
        "siem": {
            "NETMON_COMMUNITY_ID": True, "NETMON_EVE_LOG": str(tmp / "eve.json"),
            "NETMON_SYSLOG": ("udp", "127.0.0.1", receiver.getsockname()[1]), "NETMON_EVE_ANOMALIES": True,
        },
    }  # fmt: skip
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    steps: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    sensors: list[str] = []
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(f"{args.packets} demo packets per run ({attack_share:.1%} attack), batches of {args.batch}, "
          f"{args.rounds} rounds, database {engine}")  # fmt: skip
    for round_ in range(args.rounds):
        # Each round starts with another variant: the tables grow run after run, and a fixed order
        # would make the later variants pay for it.
        names = list(variants)
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            overrides = variants[name]
            for key in ("NETMON_EVE_ANOMALIES",):
                setattr(settings, key, False)
            for key, value in overrides.items():
                setattr(settings, key, value)
            siem.reset()
            spent.update(dict.fromkeys(spent, 0.0))
            sensor = f"bench-siem-{name}-{round_}"
            sensors.append(sensor)
            client.delete(stream_key(sensor), f"netmon:ingest:state:{sensor}")  # of an earlier run
            for lo in range(0, len(records), args.batch):
                part = records[lo : lo + args.batch].copy()
                client.xadd(stream_key(sensor), encode_batch(Batch(sensor=sensor, records=part)))
            cpu, wall = time.process_time(), time.perf_counter()
            stored = anomalies = 0
            while stored < len(records):  # a drain that lost its lock (a loaded machine) is resumed
                result = ingest.drain_sensor(sensor, client, max_seconds=3600)
                stored, anomalies = stored + result.packets, anomalies + result.anomalies
            siem.flush(60)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            results[name].append((cpu, wall))
            steps[name].append(dict(spent))
            print(f"  round {round_ + 1} {name:<13} cpu {cpu:6.2f} s  wall {wall:6.2f} s  "
                  f"anomalies {anomalies}")  # fmt: skip
    siem.reset()
    eve_log = tmp / "eve.json"
    lines = len(eve_log.read_text().splitlines()) if eve_log.exists() else 0
    base_cpu = statistics.median(c for c, _ in results["baseline"])
    base_wall = statistics.median(w for _, w in results["baseline"])
    header = ("variant", "cpu us/pkt", "wall us/pkt", "pkt/s cpu", "cpu ratio", "wall ratio")
    print("\n{:<13} {:>10} {:>11} {:>10} {:>9} {:>10}".format(*header))
    for name, runs in results.items():
        cpu = statistics.median(c for c, _ in runs)
        wall = statistics.median(w for _, w in runs)
        print(f"{name:<13} {cpu / args.packets * 1e6:>10.1f} {wall / args.packets * 1e6:>11.1f} "
              f"{args.packets / cpu:>10.0f} {cpu / base_cpu:>9.3f} {wall / base_wall:>10.3f}")  # fmt: skip
    print("\nthe feature's own steps, CPU per packet (median of the rounds; in the totals above):")
    for name in ("community_id", "siem"):
        parts = [f"{key} {statistics.median(r[key] for r in steps[name]) / args.packets * 1e6:.2f} us"
                 for key in spent]  # fmt: skip
        print(f"  {name:<13} " + ", ".join(parts))
    print(f"\nEVE lines: {lines} in the file, {received[0]} syslog datagrams received (all siem rounds)")
    for sensor in sensors:
        client.delete(stream_key(sensor), f"netmon:ingest:state:{sensor}")
    client.delete(siem.COUNTERS_KEY)
    receiver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
