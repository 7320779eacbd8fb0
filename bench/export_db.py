"""Export benchmark, database part: N packet rows from the database to an encrypted CSV file.

    .venv/bin/python bench/export_db.py [--rows 1000000] [--database-url URL] [--keep]

Target (issue "Exports"): 1,000,000 packet rows to encrypted CSV (AES-256) in under 30 s with peak
memory under 300 MB. The export runs in a fresh child process (``exports.services.write_export``,
exactly what the Celery task calls), so its peak RSS is the export's own. The baseline, in another
child process of the same run, reads the same rows with the same query and writes them with the
stdlib ``csv`` module to a plain file: no encryption, no formatting of our own. The ratio says what
encryption and our serialisation cost on top of reading the rows.

The rows are made once per database (``var/bench-export.sqlite3`` by default; PostgreSQL with
``--database-url postgres://...``) by the capture storage code, and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SENSOR = "bench-export"
TARGET_SECONDS = 30.0
TARGET_RSS_MB = 300.0


def setup_django(database_url: str) -> None:
    os.environ.setdefault("NETMON_ENV", "development")
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/11")
    os.environ.setdefault("NETMON_EXPORT_DIR", str(ROOT / "var" / "bench-exports"))
    os.environ.setdefault("NETMON_EXPORT_KEYS", "bench:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "netmon.settings")
    import django

    django.setup()


def fill(rows: int) -> float:
    """Store packets until the bench sensor has ``rows``; returns the seconds it took (0 if none)."""
    from django.core.management import call_command
    from django.db import transaction

    from capture.models import Packet, Sensor
    from capture.pcapwriter import synthetic_records
    from capture.records import Batch
    from capture.storage import store_batch

    call_command("migrate", verbosity=0)
    sensor, _ = Sensor.objects.get_or_create(name=SENSOR)
    have = Packet.objects.filter(sensor=sensor).count()
    if have >= rows:
        return 0.0
    started = time.perf_counter()
    chunk = 50_000
    seq = have + 1
    while seq <= rows:
        n = min(chunk, rows - seq + 1)
        records = synthetic_records(n, seed=seq)
        records["seq"] = range(seq, seq + n)
        with transaction.atomic():
            store_batch(sensor, Batch(sensor=SENSOR, records=records), f"bench-{seq}")
        seq += n
    return time.perf_counter() - started


def child_export(rows: int) -> dict:
    from django.contrib.auth import get_user_model

    from exports.models import ExportJob
    from exports.services import write_export

    user, _ = get_user_model().objects.get_or_create(username="bench-export")
    job = ExportJob.objects.create(
        owner=user, dataset="packets", format="csv", algorithm="AES-256", key_id="bench",
        filters={"sensor": SENSOR},
    )  # fmt: skip
    started = time.perf_counter()
    info = write_export(job)
    seconds = time.perf_counter() - started
    Path(job.file_path).unlink(missing_ok=True)
    job.delete()
    return {"rows": job.row_count, "seconds": seconds, "bytes": info.file_size}


def child_baseline(rows: int) -> dict:
    import csv

    from capture.models import Packet
    from exports.services import COLUMNS

    columns = [c for c in COLUMNS["packets"] if c != "sensor"]
    out = ROOT / "var" / "bench-exports" / "baseline.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    n = 0
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        qs = Packet.objects.filter(sensor__name=SENSOR).order_by("sensor_id", "seq")
        for row in qs.values_list(*columns).iterator(chunk_size=5000):
            writer.writerow(row)
            n += 1
    seconds = time.perf_counter() - started
    size = out.stat().st_size
    out.unlink()
    return {"rows": n, "seconds": seconds, "bytes": size}


def run_child(kind: str, database_url: str, rows: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--rows", str(rows), "--database-url", database_url],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{ROOT}/var/bench-export.sqlite3"),
    )
    parser.add_argument("--child", choices=["export", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    setup_django(args.database_url)
    if args.child:
        result = child_export(args.rows) if args.child == "export" else child_baseline(args.rows)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return 0

    from django.db import connection

    filled = fill(args.rows)
    vendor = connection.vendor
    connection.close()
    if filled:
        print(
            f"stored {args.rows:,} packet rows in {filled:.1f} s ({args.rows / filled:,.0f} rows/s, {vendor})"
        )
    base = run_child("baseline", args.database_url, args.rows)
    ours = run_child("export", args.database_url, args.rows)
    print(f"\nexport of {ours['rows']:,} packet rows from {vendor} to CSV")
    print(f"{'':28}{'seconds':>10}{'rows/s':>12}{'MB':>9}{'peak RSS MB':>13}")
    for name, r in (("baseline: csv, no crypto", base), ("netmon: CSV + AES-256-GCM", ours)):
        print(
            f"{name:28}{r['seconds']:>10.1f}{r['rows'] / r['seconds']:>12,.0f}"
            f"{r['bytes'] / 1e6:>9.1f}{r['peak_rss_mb']:>13.0f}"
        )
    print(f"ratio netmon / baseline time: {ours['seconds'] / base['seconds']:.2f}x")
    ok_time = ours["seconds"] < TARGET_SECONDS * args.rows / 1_000_000
    ok_mem = ours["peak_rss_mb"] < TARGET_RSS_MB
    print(f"target < {TARGET_SECONDS:.0f} s per 1,000,000 rows: {'PASS' if ok_time else 'FAIL'}")
    print(f"target peak RSS < {TARGET_RSS_MB:.0f} MB: {'PASS' if ok_mem else 'FAIL'}")
    return 0 if ok_time and ok_mem else 1


if __name__ == "__main__":
    sys.exit(main())
