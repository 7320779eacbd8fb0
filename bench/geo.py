"""GeoIP benchmark: the data's load cost, lookups, and ?country= on a database of a million packets.

    .venv/bin/python bench/geo.py [--rows 1000000] [--addresses 5000] [--database-url postgres://...]

Three parts, each with a baseline measured in the same run:

1. Loading geoip2fast's bundled data (country + ASN, IPv4 + IPv6) in a fresh process: seconds and
   resident memory it adds (baseline: the same process importing Django and capture only).
2. Lookups: uncached (``geo.lookup`` with a cleared cache; baseline: ``ipaddress.ip_address``
   alone) and cached.
3. GET /api/packets/ (first page and count, as the API answers it) on ``--rows`` packets whose
   remote ends are ``--addresses`` public addresses: unfiltered (baseline), ``?ip=`` (an indexed
   filter), ``?country=US`` and ``?asn_name=...``. The country filter resolves the distinct
   addresses of the table with a loose index scan (``capture/talkers.py``); that step is also timed
   against ``SELECT DISTINCT`` over both address columns, the scan it replaces. The top talkers of
   the busiest hour (``GET /api/talkers``) are timed too.

The rows are made once per database (PostgreSQL, ``netmon_bench_geo`` by default) by the capture
storage code and reused by later runs.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SENSOR = "bench-geo"
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/netmon_bench_geo"


def setup_django(database_url: str) -> None:
    os.environ.setdefault("NETMON_ENV", "development")
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/4")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "netmon.settings")
    import django

    django.setup()


def public_pool(n: int, seed: int = 7) -> np.ndarray:
    """``n`` distinct public IPv4 addresses (as 4 bytes each), the remote ends of the traffic."""
    import ipaddress

    from capture import geo

    rng = np.random.default_rng(seed)
    out: list[bytes] = []
    seen: set[int] = set()
    while len(out) < n:
        value = int(rng.integers(1 << 24, 223 << 24))
        if value in seen:
            continue
        address = ipaddress.IPv4Address(value)
        if geo.scope_of(address) == "public":
            seen.add(value)
            out.append(address.packed)
    return np.frombuffer(b"".join(out), dtype=np.uint8).reshape(n, 4)


def fill(rows: int, addresses: int) -> float:
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
    pool = public_pool(addresses)
    started = time.perf_counter()
    chunk = 50_000
    seq = have + 1
    rng = np.random.default_rng(seq)
    while seq <= rows:
        n = min(chunk, rows - seq + 1)
        records = synthetic_records(n, seed=seq, ipv6_share=0.0)
        records["seq"] = range(seq, seq + n)
        # Half the packets go out to a public address, half come back from one (Zipf-like: a few
        # remote hosts carry most of the traffic, as on a real uplink).
        remote = pool[np.minimum(rng.zipf(1.3, n) - 1, len(pool) - 1)]
        ipv4 = records["ip_version"] == 4
        out = ipv4 & (rng.random(n) < 0.5)
        back = ipv4 & ~out
        records["dst_ip"][out, 12:16] = remote[out]
        records["src_ip"][back, 12:16] = remote[back]
        with transaction.atomic():
            store_batch(sensor, Batch(sensor=SENSOR, records=records), f"bench-geo-{seq}")
        seq += n
    return time.perf_counter() - started


def analyze() -> None:
    """Fresh planner statistics: without them PostgreSQL guesses the sensor has a few hundred rows."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE capture_packet" if connection.vendor == "postgresql" else "ANALYZE")


def child_load() -> dict:
    """A fresh process: load the bundled data; its seconds and the memory it added."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from capture import geo

    geo.reset()
    started = time.perf_counter()
    geo.lookup("8.8.8.8")
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "rss_mb": (after - before) / 1024, "backend": geo.status().backend}


def best(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def lookups() -> None:
    import ipaddress

    from capture import geo

    sample = [str(ipaddress.IPv4Address(bytes(a))) for a in public_pool(20_000, seed=11)]
    geo.lookup("8.8.8.8")  # loaded

    def uncached():
        geo.lookup.cache_clear()
        for address in sample:
            geo.lookup(address)

    def cached():
        for address in sample:
            geo.lookup(address)

    base = best(lambda: [ipaddress.ip_address(a) for a in sample])
    cold = best(uncached, 3)
    geo.lookup.cache_clear()
    cached()
    warm = best(cached)
    n = len(sample)
    print("\nlookups (20,000 public addresses)")
    print(f"  baseline ipaddress.ip_address only  {base / n * 1e6:7.2f} us each")
    print(f"  geo.lookup, uncached                 {cold / n * 1e6:7.2f} us each  ({cold / base:.1f}x)")
    print(f"  geo.lookup, cached (LRU)             {warm / n * 1e6:7.2f} us each  ({warm / base:.1f}x)")


def api_queries(rows: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.test import APIClient

    from capture import geo, talkers
    from capture.models import Packet
    from netmon.roles import create_user

    user = get_user_model().objects.filter(username="bench-geo").first()
    user = user or create_user("bench-geo", "viewer")[0]  # a generated password, never used
    client = APIClient()
    client.force_authenticate(user)
    geo.lookup("8.8.8.8")
    busiest = Packet.objects.filter(sensor__name=SENSOR).order_by("ts").values_list("ts", flat=True).first()

    def get(query: str):
        def run():
            response = client.get(f"/api/packets/?sensor={SENSOR}&{query}")
            assert response.status_code == 200, response.content
            run.count = response.json()["count"]

        return run

    ours = Packet.objects.filter(sensor__name=SENSOR)
    remote = str(ours.exclude(dst_ip__startswith="10.").values_list("dst_ip", flat=True)[:1][0])
    names = ours.filter(dst_ip=remote).count()
    found = [geo.lookup(a) for a in sorted(talkers.packet_addresses())]
    us_as = next((f.asn_name for f in found if f and f.country == "US" and f.asn_name), "GOOGLE")

    def distinct_scan():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT src_ip FROM capture_packet WHERE src_ip IS NOT NULL UNION "
                "SELECT dst_ip FROM capture_packet WHERE dst_ip IS NOT NULL"
            )
            distinct_scan.n = len(cursor.fetchall())

    def loose():
        loose.n = len(talkers.packet_addresses())

    print(f"\ndatabase: {connection.vendor}, {rows:,} packets")
    print("distinct addresses of the packet table (the first step of ?country=)")
    t_base = best(distinct_scan, 3)
    t_loose = best(loose, 3)
    print(f"  baseline SELECT DISTINCT (UNION)     {t_base * 1000:8.1f} ms  ({distinct_scan.n:,} addresses)")
    print(f"  loose index scan (recursive)         {t_loose * 1000:8.1f} ms  ({loose.n:,} addresses)")
    print(f"  ratio loose / DISTINCT               {t_loose / t_base:8.2f}x")

    print("GET /api/packets/ (first page of 50, with the count): first request (its addresses not yet")
    print("looked up in this process), then the best of 3")
    cases = [
        ("baseline: no filter", ""),
        (f"?ip={remote} ({names:,} to it)", f"ip={remote}"),
        ("?country=US", "country=US"),
        ("?country=DE", "country=DE"),
        (f"?asn_name={us_as}", f"asn_name={us_as}"),
    ]
    base = None
    for label, query in cases:
        run = get(query)
        first = best(run, 1)
        seconds = best(run, 3)
        base = base or seconds
        print(
            f"  {label:34} {first * 1000:8.1f} ms, then {seconds * 1000:8.1f} ms  {run.count:>9,} rows"
            f"  ({seconds / base:.2f}x baseline)"
        )

    since = busiest.isoformat().replace("+00:00", "Z")

    def talkers_all():
        assert client.get(f"/api/talkers?sensor={SENSOR}&since={since}").status_code == 200

    def talkers_us():
        assert client.get(f"/api/talkers?sensor={SENSOR}&since={since}&country=US").status_code == 200

    t_all = best(talkers_all, 3)
    t_us = best(talkers_us, 3)
    print("GET /api/talkers (all stored packets' window)")
    print(f"  baseline no filter                   {t_all * 1000:8.1f} ms")
    print(f"  ?country=US                          {t_us * 1000:8.1f} ms  ({t_us / t_all:.2f}x baseline)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--addresses", type=int, default=5000, help="distinct public remote addresses")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--child", choices=["load", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        setup_django(args.database_url)
        import capture.geo  # noqa: F401

        if args.child == "load":
            result = child_load()
        else:
            result = {"rss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}
        result["total_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return 0

    def child(kind: str) -> dict:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", kind, "--database-url", args.database_url],
            capture_output=True, text=True, check=True, cwd=ROOT,
        )  # fmt: skip
        return json.loads(proc.stdout.strip().splitlines()[-1])

    base, load = child("baseline"), child("load")
    print(f"loading the bundled data ({load['backend']}: geoip2fast-asn-ipv6.dat.gz) in a fresh process")
    print(f"  baseline process (Django + capture)  {base['total_rss_mb']:8.0f} MB resident")
    print(f"  + data                               {load['seconds']:8.2f} s, +{load['rss_mb']:.0f} MB")

    setup_django(args.database_url)
    lookups()
    filled = fill(args.rows, args.addresses)
    if filled:
        print(f"\nstored {args.rows:,} packets in {filled:.1f} s")
    analyze()
    api_queries(args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
