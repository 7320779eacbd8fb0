"""Notifications never delay ingest: the same attack traffic drained with notifications off and on.

    .venv/bin/python bench/notify.py [--packets 30000] [--rounds 3] [--slow 2.0] [--receivers 4]
                                     [--redis-db 3]

"off": no destination (the worker still queues ``alerts.notify_incidents`` for what it opens; the
task finds nobody to tell). "on": ``--receivers`` slow HTTP receivers (``json://``, each answers
after ``--slow`` seconds) and an unreachable destination (connection refused, retried with
back-off), served by a real Celery worker on the ``notify`` queue (``--concurrency 2``, as in the
Procfile) that competes for the same CPUs. Each run drains a fresh sensor's stream (the same demo
traffic, seed 7, with attacks) with ``detection.ingest.drain_sensor``, the ingest worker's code,
in this process; off and on alternate for ``--rounds`` rounds. Printed: each drain's wall time and
packets/s, the median ratio on/off (1.0 = no delay), what the notify worker did (deliveries by
status, attempts) and how long after the last drain it was still sending: the sending happens
beside ingest, not in it.

Runs on the SQLite file var/bench-notify.sqlite3 (deleted, then migrated) and Redis database
``--redis-db`` (flushed at the start and the end; use your own). Logs: var/bench-notify/.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VAR = ROOT / "var"
DB_PATH = VAR / "bench-notify.sqlite3"
LOG_DIR = VAR / "bench-notify"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlowReceiver:
    """A ``json://`` receiver that answers each post after ``delay`` seconds, noting when they came."""

    def __init__(self, delay: float) -> None:
        self.port = free_port()
        self.arrivals: list[float] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(delay)
                receiver.arrivals.append(time.monotonic())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def configure(redis_db: int) -> str:
    redis_url = f"redis://127.0.0.1:6379/{redis_db}"
    os.environ.update(
        DJANGO_SETTINGS_MODULE="netmon.settings",
        NETMON_ENV="development",
        DEBUG="0",
        SECRET_KEY=os.environ.get("BENCH_SECRET_KEY") or secrets.token_urlsafe(40),
        DATABASE_URL=f"sqlite:///{DB_PATH}",
        REDIS_URL=redis_url,
        CELERY_BROKER_URL=redis_url,
        CHANNELS_REDIS_URL=redis_url,
        CHANNELS_PREFIX=f"netmon:bench-notify:{secrets.token_hex(4)}",
        NETMON_MODEL_DIR=str(LOG_DIR / "models"),
        NETMON_NOTIFY_RATE_PER_MINUTE="1000",  # every incident is sent: the most work for the notify worker
        NETMON_NOTIFY_BACKOFF="0.5",
        NETMON_NOTIFY_ATTEMPTS="3",
        PYTHONUNBUFFERED="1",
    )
    return redis_url


def prepare() -> None:
    import django

    for suffix in ("", "-wal", "-shm"):
        Path(f"{DB_PATH}{suffix}").unlink(missing_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    django.setup()
    from django.core.management import call_command

    from capture.demo import DemoTraffic
    from capture.pcapwriter import write_pcap

    call_command("migrate", "--noinput", verbosity=0)
    pcap = LOG_DIR / "benign.pcap"
    write_pcap(pcap, DemoTraffic(seed=1, attack_prob=0.0).records(30_000))
    call_command(
        "train_detector", "--pcap", str(pcap), "--model", "isolation_forest", "--feature-level", "standard",
        "--use", verbosity=0,
    )  # fmt: skip


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of the live processes of a process group (Linux /proc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def drain(client, sensor: str, packets: int) -> tuple[float, float, int, int]:
    """Publish the attack traffic to ``sensor``'s stream and time its drain: wall seconds, CPU seconds
    of this process (the ingest's own cost), packets, incidents opened."""
    from capture.demo import DemoTraffic
    from capture.records import Batch, encode_batch, stream_key
    from detection import ingest
    from detection.models import Incident

    traffic = DemoTraffic(seed=7, attack_prob=0.25)
    records = traffic.records(packets)
    records["seq"] = range(1, len(records) + 1)
    for i in range(0, len(records), 1000):
        client.xadd(stream_key(sensor), encode_batch(Batch(sensor=sensor, records=records[i : i + 1000])))
    started, cpu, stored = time.perf_counter(), time.process_time(), 0
    while stored < len(records):
        result = ingest.drain_sensor(sensor, client)
        stored += result.packets
        if result.packets == 0:
            break
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return seconds, cpu, stored, Incident.objects.opened().filter(sensor__name=sensor).count()


def wait_idle(client, timeout: float = 120.0) -> float:
    """Wait until the notify worker has nothing queued or due (so the next run starts from quiet and
    an "off" run has no sending beside it); the seconds waited."""
    from alerts.models import Delivery

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        busy = (
            client.llen("notify")
            or client.hlen("unacked")
            or Delivery.objects.filter(status__in=["pending", "sending", "retrying"]).exists()
        )
        if not busy:
            break
        time.sleep(0.2)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slow", type=float, default=2.0, help="seconds the receiver takes to answer")
    parser.add_argument("--receivers", type=int, default=4, help="slow destinations (each its own receiver)")
    parser.add_argument("--redis-db", type=int, default=3)
    args = parser.parse_args()
    redis_url = configure(args.redis_db)
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    print("preparing: migrate, train an isolation forest on 30,000 benign demo packets ...", flush=True)
    prepare()
    from django.db.models import Count, Sum

    from alerts.models import Delivery, Destination

    receivers = [SlowReceiver(args.slow) for _ in range(args.receivers)]
    log = open(LOG_DIR / "notify-worker.log", "wb")  # noqa: SIM115 - closed at the end
    worker = subprocess.Popen(
        [str(BIN / "celery"), "-A", "netmon", "worker", "-Q", "notify", "-n", "bench-notify@%h", "-l", "info",
         "--concurrency", "2", "--without-gossip", "--without-mingle"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while b"ready." not in (LOG_DIR / "notify-worker.log").read_bytes():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the notify worker did not start: see var/bench-notify/notify-worker.log")
            time.sleep(0.2)
        for i, receiver in enumerate(receivers):
            Destination.objects.create(
                name=f"slow {i}", url=f"json://127.0.0.1:{receiver.port}/hook", enabled=False
            )
        Destination.objects.create(name="dead", url=f"json://127.0.0.1:{free_port()}/hook", enabled=False)
        times: dict[str, list[float]] = {"off": [], "on": []}
        cpus: dict[str, list[float]] = {"off": [], "on": []}
        tails: list[float] = []
        busy_after: list[float] = []
        for r in range(args.rounds):
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                # off: nobody to tell (the previous run's sending is over: wait_idle)
                Destination.objects.update(enabled=mode == "on")
                worker_cpu = group_cpu_seconds(worker.pid)
                seconds, cpu, stored, opened = drain(client, f"bench-{mode}-{r}", args.packets)
                worker_cpu = group_cpu_seconds(worker.pid) - worker_cpu
                times[mode].append(seconds)
                cpus[mode].append(cpu)
                tails.append(wait_idle(client))
                if mode == "on":
                    busy_after.append(tails[-1])
                print(
                    f"round {r + 1} notifications {mode:3}: drained {stored:,} packets in {seconds:6.2f} s "
                    f"({stored / seconds:8,.0f} packets/s), ingest CPU {cpu:5.2f} s, notify worker CPU "
                    f"{worker_cpu:4.2f} s; {opened} incidents; notify worker busy {tails[-1]:.1f} s after",
                    flush=True,
                )
        off, on = statistics.median(times["off"]), statistics.median(times["on"])
        by_status = dict(Delivery.objects.values_list("status").annotate(n=Count("id")).order_by())
        attempts = Delivery.objects.aggregate(n=Sum("attempts"))["n"] or 0
        arrivals = sum(len(receiver.arrivals) for receiver in receivers)
        print()
        print(f"baseline (notifications off): median drain {off:.2f} s")
        print(
            f"notifications on ({args.receivers} receivers answering in {args.slow:g} s, one unreachable): "
            f"median drain {on:.2f} s"
        )
        print(f"ratio on/off: {on / off:.3f} (1.0 = ingest not delayed)")
        cpu_off, cpu_on = statistics.median(cpus["off"]), statistics.median(cpus["on"])
        print(
            f"ingest CPU per drain, median: off {cpu_off:.2f} s, on {cpu_on:.2f} s, "
            f"ratio {cpu_on / cpu_off:.3f}"
        )
        print(
            f"notify worker: deliveries by status {by_status}, {attempts} attempts; the slow receivers got "
            f"{arrivals} messages; after each 'on' drain the notify worker was still busy for a median "
            f"{statistics.median(busy_after):.1f} s: it sent beside ingest, not in it"
        )
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, 9)
        log.close()
        client.flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
