"""Soak benchmark: the whole pipeline at a sustained rate with a dashboard client connected.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 20000] [--workers 2] [--interval 5]

Target (issue 7): 10 minutes at 20,000 packets/s through the whole pipeline (demo capture ->
Redis -> Celery worker -> database -> channel layer -> daphne -> a WebSocket client) with zero
unexplained loss, memory and Redis size flat, and p95 ``packet_captured`` latency under 1 s.

It reuses bench/latency.py's stack (daphne, a Celery worker, ``manage.py capture --demo``, its
stdlib WebSocket client) on Redis database 10 and var/bench-soak.sqlite3. Every ``--interval``
seconds it samples the sensor's counters, the stream backlog, Redis's used memory and the resident
memory of each process group (the worker's group is its main process and its pool processes; RSS
counts the pages they share after the fork once per process). At the end it prints the first, last
and highest RSS of each group, then one line:

    soak: <minutes> min at <rate>/s offered: read R, stored S, dropped D (capture C, stream T),
    unexplained U; p95 latency L s; RSS <first> -> <last> MB; Redis <first> -> <last> MB; PASS|FAIL

The demo's ``--rate`` is that of its benign traffic and its attacks come on top; as in
bench/latency.py (``demo_rate``), the rate passed to capture is scaled down so that the demo
offers ``--rate`` packets/s in all (its attack share measured over the first ``RATE_SAMPLE``
seconds of the same simulated network), and the model is trained on benign traffic of that timing.

"Unexplained" is read - stored - dropped once the workers have drained (what vanished without a
counter). "Flat" compares the mean of the last third of the samples with the middle third (the
first third is warm-up: models load, caches fill) and allows 20 % growth. The plot of rate, backlog
and memory over time goes to var/bench-soak/soak.png.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's packages before bench/'s scripts (bench/capture.py)

import latency as stack  # noqa: E402 - bench/latency.py: processes, database set-up, WebSocket client

SENSOR = "soak"
stack.DB_PATH = ROOT / "var" / "bench-soak.sqlite3"
stack.LOG_DIR = ROOT / "var" / "bench-soak"
stack.REDIS_URL = "redis://127.0.0.1:6379/10"
stack.PREFIX = "netmon:bench-soak"
stack.USERNAME = "bench-soak"
RATE_SAMPLE = 120.0  # seconds of demo traffic played to measure its attack share (demo_rate)


def group_rss_mb(proc: stack.Proc) -> float:
    """Resident memory of every live process in the process's group (Linux /proc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == proc.popen.pid:
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # rss pages
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e6


def flat(values: list[float], allowance: float = 0.2) -> bool:
    third = max(1, len(values) // 3)
    middle, last = values[third : 2 * third] or values, values[2 * third :] or values
    return sum(last) / len(last) <= (sum(middle) / len(middle)) * (1 + allowance) + 1.0


async def soak(args: argparse.Namespace, port: int, token: str, procs: list[stack.Proc]) -> int:
    import redis

    client = redis.Redis.from_url(stack.REDIS_URL)
    socket = await stack.MonitorSocket.connect(f"ws://127.0.0.1:{port}/ws/monitor/?token={token}")
    seconds = args.minutes * 60
    demo_rate = stack.demo_rate(args.rate, min(seconds, RATE_SAMPLE))  # computed (cached) in main()
    capture = stack.Proc(
        "capture",
        [sys.executable, "manage.py", "capture", "--demo", "--rate", f"{demo_rate:.1f}",
         "--seed", str(stack.DEMO_SEED), "--sensor", SENSOR, "--duration", str(seconds)],
    )  # fmt: skip
    procs.append(capture)
    samples = []  # (t, read, stored, backlog, redis MB, {name: rss MB})
    started = time.monotonic()
    while capture.popen.poll() is None:
        await asyncio.sleep(args.interval)
        if capture.popen.poll() is not None:
            break  # a sample without capture's memory would make the totals drop at the end
        counters = await asyncio.to_thread(stack.sensor_counters, SENSOR)
        rss = {proc.name: group_rss_mb(proc) for proc in procs}
        backlog = counters.get("published", 0) - counters.get("ingested", 0)
        samples.append((time.monotonic() - started, counters.get("read", 0), counters.get("stored", 0),
                        backlog, client.info("memory")["used_memory"] / 1e6, rss))  # fmt: skip
        print(f"  {samples[-1][0]:6.0f} s  read {samples[-1][1]:>10,}  stored {samples[-1][2]:>10,}  "
              f"backlog {backlog:>8,}  redis {samples[-1][4]:6.1f} MB  "
              + "  ".join(f"{k} {v:5.0f} MB" for k, v in rss.items()), flush=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # let the workers drain what was published
        c = await asyncio.to_thread(stack.sensor_counters, SENSOR)
        if c["ingested"] >= c["published"]:
            break
        await asyncio.sleep(1)
    await socket.close()
    c = await asyncio.to_thread(stack.sensor_counters, SENSOR)
    dropped = c["dropped_capture"] + c["dropped_stream"]
    unexplained = c["read"] - c["stored"] - dropped
    latencies = sorted(s.latency for s in socket.log.samples if s.kind == "packet_captured")
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("inf")
    total_rss = [sum(s[5].values()) for s in samples]
    redis_mb = [s[4] for s in samples]
    ok = unexplained == 0 and p95 < 1.0 and flat(total_rss) and flat(redis_mb)
    print(f"demo --rate {demo_rate:,.0f} (benign) read {c['read'] / seconds:,.0f} packets/s in all")
    for name in samples[0][5]:
        rss = [s[5][name] for s in samples if s[5][name] > 0]  # 0: the process had exited
        if rss:
            print(f"  {name:8} RSS {rss[0]:6.0f} -> {rss[-1]:6.0f} MB, max {max(rss):6.0f} MB")
    print(f"  {'redis':8} used {redis_mb[0]:6.1f} -> {redis_mb[-1]:6.1f} MB, max {max(redis_mb):6.1f} MB")
    print(
        f"soak: {args.minutes:g} min at {args.rate:,.0f}/s offered: read {c['read']:,}, "
        f"stored {c['stored']:,}, dropped {dropped:,} (capture {c['dropped_capture']:,}, "
        f"stream {c['dropped_stream']:,}), unexplained {unexplained:,}; p95 latency {p95:.2f} s; "
        f"RSS {total_rss[0]:.0f} -> {total_rss[-1]:.0f} MB; "
        f"Redis {redis_mb[0]:.1f} -> {redis_mb[-1]:.1f} MB; {'PASS' if ok else 'FAIL'}"
    )
    plot(samples)
    return 0 if ok else 1


def plot(samples: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s[0] for s in samples]
    rate = [0.0] + [(b[2] - a[2]) / (b[0] - a[0]) for a, b in itertools.pairwise(samples)]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(t, rate)
    axes[0].set_ylabel("stored packets/s")
    axes[1].plot(t, [s[3] for s in samples])
    axes[1].set_ylabel("backlog (packets)")
    for name in samples[0][5]:
        axes[2].plot(t, [s[5][name] for s in samples], label=name)
    axes[2].plot(t, [s[4] for s in samples], label="redis")
    axes[2].set_ylabel("memory (MB)")
    axes[2].set_xlabel("seconds")
    axes[2].legend()
    out = stack.LOG_DIR / "soak.png"
    fig.tight_layout()
    fig.savefig(out)
    print(f"plot: {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=5)
    args = parser.parse_args()
    stack.LOG_DIR.mkdir(parents=True, exist_ok=True)
    stack.configure_environment()
    import redis

    redis.Redis.from_url(stack.REDIS_URL).flushdb()
    token, _models, descriptions = stack.prepare_database(
        "isolation_forest", [args.rate], min(args.minutes * 60, RATE_SAMPLE)
    )
    print("\n".join(descriptions))
    port = stack.free_port()
    procs = [
        stack.Proc("daphne", [str(stack.BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port),
                              "netmon.asgi:application"]),
        stack.Proc("worker", [str(stack.BIN / "celery"), "-A", "netmon", "worker", "-l", "warning",
                              "--concurrency", str(args.workers), "--without-gossip", "--without-mingle"]),
    ]  # fmt: skip
    try:
        procs[0].wait_for("Listening on TCP address", 60)
        time.sleep(3)  # the worker's pool
        return asyncio.run(soak(args, port, token, procs))
    finally:
        for proc in reversed(procs):
            proc.stop()
        redis.Redis.from_url(stack.REDIS_URL).flushdb()


if __name__ == "__main__":
    sys.exit(main())
