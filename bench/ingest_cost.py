"""Ingest cost in process (issue 12): the worker's reads of a capture drained here, CPU per packet.

    .venv/bin/python bench/ingest_cost.py --prepare --train BENIGN.pcap --template T.sqlite3
    .venv/bin/python bench/ingest_cost.py --template T.sqlite3 PCAP [PCAP ...] [--count 51872]
                                          [--batch 1000] [--read 20] [--repeat N] [--dump OUT.pickle]
                                          [--profile OUT.pstats] [--stages]

``--prepare`` makes a template database (migrated, ``feature_level=advanced``, the model ``both``
trained on BENIGN.pcap with ``train_detector --use``; its artifacts under NETMON_MODEL_DIR, default
var/ingest-cost/models). A run copies the template to var/ingest-cost.sqlite3, migrates it (the
code under test may add migrations), loads the model as a worker does before forking
(``scoring.warm_up``; one BLAS thread and frozen start-up objects, as in a worker process), and
for each PCAP: its first ``--count`` packets, numbered from 1, in batches of ``--batch`` packets
(stream entries, ``encode_batch``), go through ``detection.ingest._process_entries`` ``--read``
entries at a time into a sensor of their own: score, store packets and flows, file anomalies under
incidents, save the feature state to Redis, publish. The CPU time of this process
(``time.process_time``: SQLite runs in it; Redis does not, as in the worker) per packet is printed
per PCAP, and their ratio to the last PCAP's.

Reads of 20 entries of 1,000 packets are what the worker takes when it lags behind a replay at
full speed (``bench/incidents.py --pace fast``); ``--batch 100`` gives reads of 2,000 packets,
closer to a worker that keeps up. Redis: ``REDIS_URL`` (default database 3, flushed). ``--dump``
writes every incident, anomaly row, flagged packet and flow of each sensor (no ids, no creation
times) to compare two versions of the code column by column (``--compare A B``).
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DB_PATH = ROOT / "var" / "ingest-cost.sqlite3"


def configure(db: Path, model_dir: Path) -> None:
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/3")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="netmon.settings",
        NETMON_ENV="development",
        DEBUG="0",
        SECRET_KEY="bench-ingest-cost-" + "x" * 40,
        DATABASE_URL=f"sqlite:///{db}",
        REDIS_URL=redis_url,
        CELERY_BROKER_URL=redis_url,
        CHANNELS_REDIS_URL=redis_url,
        CHANNELS_PREFIX="netmon:bench-ingest-cost",
        NETMON_MODEL_DIR=str(model_dir),
    )


def prepare(train: Path, template: Path) -> None:
    import django

    for suffix in ("", "-wal", "-shm"):
        Path(f"{template}{suffix}").unlink(missing_ok=True)
    django.setup()
    from django.core.management import call_command

    from capture.services import update_config

    call_command("migrate", "--noinput", verbosity=0)
    update_config({"feature_level": "advanced", "buffer_size": 5_000_000}, source="bench-ingest-cost")
    cmd = [sys.executable, "manage.py", "train_detector", "--pcap", str(train), "--model", "both"]
    cmd += ["--feature-level", "advanced", "--use"]
    subprocess.run(cmd, cwd=ROOT, check=True)
    from django.db import connection

    connection.close()
    print(f"template {template} ready")


def entries_of(records, batch: int, sensor: str) -> list[tuple[bytes, dict]]:
    from capture.records import Batch, encode_batch

    out = []
    for i, lo in enumerate(range(0, len(records), batch)):
        part = records[lo : lo + batch]
        out.append((f"{i + 1}-0".encode(), encode_batch(Batch(sensor=sensor, records=part))))
    return out


STAGES = (
    ("score", "detection.scoring", "score_batch"),
    ("packets", "capture.storage", "store_batch"),
    ("flows", "capture.storage", "store_flows"),
    ("anomalies", "detection.ingest", "save_anomalies"),
)


def time_stages() -> dict[str, float]:
    """Wrap the worker's stages (``STAGES``) with CPU clocks; the dict their seconds add up in."""
    import importlib

    spent = dict.fromkeys([name for name, _, _ in STAGES], 0.0)
    for name, module_name, attr in STAGES:
        module = importlib.import_module(module_name)
        inner = getattr(module, attr)

        def timed(*args, _inner=inner, _name=name, **kwargs):
            t0 = time.process_time()
            try:
                return _inner(*args, **kwargs)
            finally:
                spent[_name] += time.process_time() - t0

        setattr(module, attr, timed)
    return spent


def run(
    pcaps: list[Path],
    count: int,
    batch: int,
    read: int,
    profile: str | None,
    repeat: int = 1,
    stages: bool = False,
) -> dict:
    import numpy as np
    import redis
    from django.conf import settings
    from threadpoolctl import threadpool_limits

    from capture.models import Sensor
    from detection import ingest, scoring
    from detection.services import records_from_pcaps

    # One BLAS thread, as in each worker process (netmon/celery.py, _one_blas_thread): a second one
    # spins after every matrix product and was billed to this process, 3-6 us a packet.
    threadpool_limits(1)
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    scoring.warm_up()
    inputs = []
    for path in pcaps:
        records = np.concatenate(list(records_from_pcaps([str(path)])))
        n = min(count, len(records)) if count else len(records)
        records = records[:n].copy()
        records["seq"] = np.arange(1, n + 1)
        inputs.append((path, records))
    # Warm up as a worker is after its first reads (imports on first use: Celery's task sending...)
    warm = Sensor.objects.create(name="cost-warm-up")
    first = inputs[0][1][: batch * read]
    ingest._process_entries(
        client, warm, ingest.SensorState(), entries_of(first, batch, warm.name), ingest.IngestResult()
    )
    # What is alive now is frozen, as a worker process freezes its start-up objects
    # (netmon/celery.py, GarbageCollector.start): collections then walk only what the reads make.
    gc.collect()
    gc.freeze()
    out = {}
    spent = time_stages() if stages else None
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    rounds = [(r, k, path, records) for r in range(repeat) for k, (path, records) in enumerate(inputs)]
    for r, k, path, records in rounds:
        name = f"cost-{k}-{path.parent.name}-{path.stem}" + (f"-{r + 1}" if r else "")
        sensor = Sensor.objects.create(name=name)
        entries = entries_of(records, batch, name)
        state = ingest.SensorState()
        result = ingest.IngestResult()
        if profiler:
            profiler.enable()
        if spent is not None:
            spent.update(dict.fromkeys(spent, 0.0))
        c0, w0 = time.process_time(), time.perf_counter()
        for lo in range(0, len(entries), read):
            ingest._process_entries(client, sensor, state, entries[lo : lo + read], result)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        if profiler:
            profiler.disable()
        out[name] = {
            "packets": result.packets,
            "cpu_s": cpu,
            "wall_s": wall,
            "us": 1e6 * cpu / result.packets,
        }
        print(
            f"{name}: {result.packets:,} packets, {result.anomalies:,} anomalies, CPU {cpu:.2f} s, "
            f"{out[name]['us']:.1f} us/packet (wall {wall:.2f} s)",
            flush=True,
        )
        if spent is not None:
            parts = {**spent, "rest": cpu - sum(spent.values())}
            out[name]["stages"] = {k: 1e6 * v / result.packets for k, v in parts.items()}
            print("    us/packet: " + ", ".join(f"{k} {v:.1f}" for k, v in out[name]["stages"].items()))
    if profiler:
        import pstats

        profiler.dump_stats(profile)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(45)
    for r in range(repeat):
        figures = list(out.values())[r * len(inputs) : (r + 1) * len(inputs)]
        print(
            f"  round {r + 1}: "
            + ", ".join(f"{fig['us']:.1f}" for fig in figures)
            + " us/packet; ratio to the last "
            + ", ".join(f"{fig['us'] / figures[-1]['us']:.3f}x" for fig in figures)
        )
    return out


def dump() -> dict:
    """Every sensor's incidents, anomaly rows, flagged packets and flows, without ids or creation times."""
    from capture.models import Flow, Packet, Sensor
    from capture.storage import FLOW_COLUMNS
    from detection.models import Anomaly, Incident

    skip_inc = {"id", "sensor", "created_at", "updated_at", "opened_at", "status_changed_at"}
    data = {}
    for sensor in Sensor.objects.order_by("name"):
        incs = list(Incident.objects.filter(sensor=sensor).order_by("id").values())
        index = {row["id"]: i for i, row in enumerate(incs)}
        incidents = [{k: v for k, v in row.items() if k.removesuffix("_id") not in skip_inc} for row in incs]
        anomalies = [
            {
                **{k: v for k, v in row.items() if k not in ("id", "sensor_id", "created_at", "incident_id")},
                "incident": index.get(row["incident_id"]),
            }
            for row in Anomaly.objects.filter(sensor=sensor).order_by("packet_seq", "id").values()
        ]
        flagged = list(
            Packet.objects.filter(sensor=sensor, anomaly_score__isnull=False)
            .order_by("seq")
            .values_list("seq", "anomaly_score")
        )
        columns = [c for c in FLOW_COLUMNS if c != "sensor_id"]
        flows = sorted(tuple(row) for row in Flow.objects.filter(sensor=sensor).values_list(*columns))
        data[sensor.name] = {
            "incidents": incidents,
            "anomalies": anomalies,
            "flagged": flagged,
            "flows": flows,
        }
    return data


def compare(a: Path, b: Path) -> int:
    """Column by column; 0 when equal."""
    left, right = pickle.loads(a.read_bytes()), pickle.loads(b.read_bytes())  # noqa: S301 - our dumps
    bad = 0
    if sorted(left) != sorted(right):
        print("sensors differ", sorted(left), sorted(right))
        return 1
    for name in left:
        for part in ("incidents", "anomalies", "flagged", "flows"):
            x, y = left[name][part], right[name][part]
            same = x == y
            print(f"{name} {part}: {len(x):,} vs {len(y):,} {'identical' if same else 'DIFFER'}")
            if not same:
                bad += 1
                for i, (p, q) in enumerate(zip(x, y, strict=False)):
                    if p != q:
                        print("  first difference at", i, "\n   ", p, "\n   ", q)
                        break
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("pcaps", nargs="*", type=Path)
    parser.add_argument("--prepare", action="store_true")
    parser.add_argument("--train", type=Path)
    parser.add_argument("--template", type=Path, required=False)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "var" / "ingest-cost" / "models")
    parser.add_argument("--count", type=int, default=0, help="first N packets of each capture (0: all)")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--read", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the captures, one after the other")
    parser.add_argument("--dump", type=Path)
    parser.add_argument("--profile")
    parser.add_argument("--stages", action="store_true", help="CPU per packet of each stage of a read")
    parser.add_argument("--compare", nargs=2, type=Path)
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.prepare:
        configure(args.template, args.model_dir)
        prepare(args.train, args.template)
        return 0
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DB_PATH}{suffix}").unlink(missing_ok=True)
    DB_PATH.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.template, DB_PATH)
    configure(DB_PATH, args.model_dir)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)
    run(args.pcaps, args.count, args.batch, args.read, args.profile, args.repeat, args.stages)
    if args.dump:
        args.dump.write_bytes(pickle.dumps(dump()))
        print(f"dump: {args.dump}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
