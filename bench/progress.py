"""Progress benchmark: what showing progress costs a pcap replay (issue 14, part 5: "must not slow").

    .venv/bin/python bench/progress.py [--packets 300000] [--repeat 5] [--batch-size 1000]
                                       [--cli-repeat 3] [--redis-url URL] [--json PATH] [--strict]

1. in-process: ``CaptureRunner.consume`` over a pcap exactly as ``manage.py capture --pcap`` runs
   it (its publisher, reporter threads, waiting-for-workers check; buffer_size at its maximum so it
   never waits), without progress (the baseline) and with ``capture.progress.Progress`` told each
   batch (``on_chunk``) with the reader's position for the ETA: plain lines (to /dev/null), and
   rich's bar drawn on a pseudo-terminal whose other end a thread reads (as a terminal would).
   The three alternate, ``--repeat`` times; the best of each by packets per CPU second.
2. per batch: the CPU of one ``Progress.advance`` (lines; the bar) over many calls, and the CPU
   the bar's redraw thread takes per second, against the baseline's CPU per batch from 1: the
   overhead without the machine's noise (1 and 3 share this 2-core machine with everything else).
3. cli: ``manage.py capture --pcap FILE`` as a subprocess, three ways alternating
   ``--cli-repeat`` times: ``-v 0`` (no progress, the baseline), stdout a pipe (plain lines) and
   stdout a pseudo-terminal (the bar). Wall seconds (start-up included) and CPU seconds of the child.

Each figure is printed beside its baseline from the same run and the ratio (rate with progress /
rate without; 1.00 means free). Targets: ratios of 1 at least 0.95 (the noise of this shared
2-core machine), and in 2 under 1 % of a batch's CPU; 3 (start-up, imports included) is printed.

Environment: Redis ``--redis-url`` (default redis://127.0.0.1:6379/11). THE BENCH OWNS THAT REDIS
DATABASE: it is emptied (FLUSHDB) before and after; databases 0 and 15 are refused. SQLite at
var/bench-progress.sqlite3 (migrated on start). Exit status 0, or with ``--strict`` 1 when a
ratio is under the target.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from measure import Clock, Run, bench_env, best  # noqa: E402 - bench/measure.py

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
SQLITE_PATH = ROOT / "var" / "bench-progress.sqlite3"
TARGET_RATIO = 0.95
TARGET_SHARE = 0.01
MODES = ("none", "lines", "bar")


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


class Terminal:
    """A pseudo-terminal: ``stream`` is its writable, isatty() end; a thread reads (and drops) the other."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.stream = os.fdopen(self.slave, "w", buffering=1, encoding="utf-8")
        self.received = 0
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.received += len(data)

    def close(self) -> None:
        self.stream.close()
        self._thread.join(timeout=2)
        os.close(self.master)


def consume_run(path: Path, mode: str, batch_size: int, redis_url: str, sensor: str) -> Run:
    """One replay of ``path`` through a CaptureRunner, with progress shown ``mode`` (none, lines, bar)."""
    from capture.choices import BUFFER_SIZE_MAX
    from capture.connections import fail_fast_client
    from capture.models import Sensor
    from capture.pcapio import ReadStats
    from capture.progress import BAR, BYTES, LINES, Progress, files_size
    from capture.runner import CaptureRunner
    from capture.sources import file_key, pcap_chunks

    flush_redis(redis_url)
    Sensor.objects.filter(name=sensor).delete()
    client = fail_fast_client(redis_url)
    runner = CaptureRunner(sensor, redis_client=client, buffer_size=BUFFER_SIZE_MAX, batch_size=batch_size)
    runner.set_mode(Sensor.Mode.PCAP, reason="bench")
    runner.wait_for_workers = True  # as the command: one look at the backlog per batch
    terminal = Terminal() if mode == "bar" else None
    sink = open(os.devnull, "w")  # noqa: SIM115 - closed below
    runner.start_reporter()
    try:
        with Clock() as clock:
            stats = ReadStats()
            on_chunk = None
            if mode != "none":
                out = terminal.stream if terminal else sink
                progress = Progress(
                    "capture", out, total=files_size([path]), unit=BYTES, style=BAR if terminal else LINES
                )

                def on_chunk(n: int) -> None:
                    progress.advance(n, stats.input_bytes)

            base = runner.file_base_seq(file_key(str(path)))
            runner.consume(pcap_chunks(str(path), stats, batch_size), base_seq=base, on_chunk=on_chunk)
            if mode != "none":
                progress.close()
            runner.drain(timeout=15)
    finally:
        runner.stop_reporter()
        runner.close(timeout=5)
        sink.close()
        if terminal:
            terminal.close()
    published = runner.publisher.stats()["published_packets"]
    client.close()
    Sensor.objects.filter(name=sensor).delete()
    flush_redis(redis_url)
    return Run(published, clock.wall, clock.cpu)


def cli_run(path: Path, mode: str, env: dict[str, str], sensor: str, redis_url: str) -> tuple[Run, str]:
    """``manage.py capture --pcap path``: -v 0 (none), stdout a pipe (lines) or a pseudo-terminal (bar)."""
    from capture.models import Sensor

    flush_redis(redis_url)
    cmd = [sys.executable, "manage.py", "capture", "--pcap", str(path), "--sensor", sensor]
    if mode == "none":
        cmd += ["-v", "0"]
    terminal = Terminal() if mode == "bar" else None
    before, t0 = os.times(), time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=terminal.stream if terminal else subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    after = os.times()
    if terminal:
        time.sleep(0.2)  # let the reader take the last frame
        terminal.close()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    shown = (proc.stdout or "").count("\n") if not terminal else terminal.received
    packets = Sensor.objects.get(name=sensor).packets_published
    Sensor.objects.filter(name=sensor).delete()
    flush_redis(redis_url)
    what = f"{shown} lines" if mode == "lines" else (f"{shown:,} bytes to the terminal" if terminal else "-")
    return Run(packets, wall, cpu), what


def per_batch_costs(batch_cpu: float, calls: int = 20_000) -> dict[str, float]:
    """CPU seconds of one advance() (lines to /dev/null; the bar on a pseudo-terminal), and of the
    bar's redraws per second of wall time, as measured here."""
    from capture.progress import BAR, BYTES, LINES, Progress

    out: dict[str, float] = {}
    with open(os.devnull, "w") as sink:
        progress = Progress("capture", sink, total=1e12, unit=BYTES, style=LINES)
        with Clock() as clock:
            for i in range(calls):
                progress.advance(1000, i * 4e5)
        out["lines_advance"] = clock.cpu / calls
    terminal = Terminal()
    progress = Progress("capture", terminal.stream, total=1e12, unit=BYTES, style=BAR)
    with Clock() as clock:
        for i in range(calls):
            progress.advance(1000, i * 4e5)
    out["bar_advance"] = clock.cpu / calls
    with Clock() as clock:  # nothing but rich's own thread redrawing the bar
        time.sleep(2.0)
    out["bar_redraw_per_s"] = clock.cpu / clock.wall
    progress.close()
    terminal.close()
    for key in ("lines_advance", "bar_advance"):
        print(f"  {key.replace('_', ' ') + '()':<28} {out[key] * 1e6:>8.1f} us per batch = "
              f"{out[key] / batch_cpu:.3%} of a batch's CPU ({batch_cpu * 1e3:.2f} ms)")  # fmt: skip
    print(f"  {'bar redraws':<28} {out['bar_redraw_per_s']:.3%} of a core while it shows")
    out["share_lines"] = out["lines_advance"] / batch_cpu
    out["share_bar"] = out["bar_advance"] / batch_cpu
    return out


def ratio_rows(runs: dict[str, Run], notes: dict[str, str], clock: str) -> dict[str, float]:
    print(f"  {'':<28} {'pkt/s ' + clock:>14} {'(wall)':>11} {'packets':>9}  ratio")
    base = runs["none"]
    ratios = {}
    for mode in MODES:
        run = runs[mode]
        ratio = run.rate(clock) / base.rate(clock)
        ratios[mode] = ratio
        label = {"none": "no progress (baseline)", "lines": "plain lines", "bar": "rich bar on a pty"}[mode]
        print(
            f"  {label:<28} {run.rate(clock):>14,.0f} {run.rate('wall'):>11,.0f} {run.amount:>9,}  "
            f"{ratio:5.3f}  {notes.get(mode, '')}".rstrip()
        )
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=300_000, help="packets of the capture (300,000)")
    parser.add_argument("--repeat", type=int, default=7, help="in-process runs of each mode, best kept (7)")
    parser.add_argument("--cli-repeat", type=int, default=3, help="subprocess runs of each mode (3; 0 skips)")
    parser.add_argument("--batch-size", type=int, default=1000, help="records per batch (NETMON_BATCH_SIZE)")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help="a Redis database the bench may empty (default %(default)s)",
    )
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--strict", action="store_true", help=f"exit 1 when a ratio is under {TARGET_RATIO}")
    args = parser.parse_args(argv)
    if int(urlparse(args.redis_url).path.strip("/") or 0) in (0, 15):
        parser.error(f"{args.redis_url}: the bench empties its Redis database; use one of its own (e.g. /11)")

    SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
    env = bench_env(f"sqlite:///{SQLITE_PATH}", args.redis_url)
    os.environ.update(env)
    os.environ["BENCH_SECRET_KEY"] = env["SECRET_KEY"]
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from capture.choices import BUFFER_SIZE_MAX
    from capture.models import MonitorConfig
    from capture.pcapwriter import synthetic_records, write_pcap
    from capture.services import get_config

    old_buffer = get_config().buffer_size
    MonitorConfig.objects.filter(pk=1).update(buffer_size=BUFFER_SIZE_MAX)  # never wait for workers
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    tmp = Path(tempfile.mkdtemp(prefix="netmon-bench-progress-"))
    try:
        path = tmp / "replay.pcap"
        write_pcap(path, synthetic_records(args.packets, seed=1))
        print(f"== 1. CaptureRunner.consume, {args.packets:,} packets ({path.stat().st_size / 1e6:,.0f} MB), "
              f"batches of {args.batch_size:,}, best of {args.repeat} by CPU ==")  # fmt: skip
        runs: dict[str, list[Run]] = {mode: [] for mode in MODES}
        for i in range(args.repeat):
            for mode in MODES:  # alternating, so drift of the machine hits all three alike
                runs[mode].append(consume_run(path, mode, args.batch_size, args.redis_url, f"bench-prog-{i}"))
        in_process = {mode: best(r) for mode, r in runs.items()}
        ratios = ratio_rows(in_process, {}, "cpu")
        results["in_process"] = {"runs": {m: asdict(r) for m, r in in_process.items()}, "ratios": ratios}
        verdict_ratios = dict(ratios)
        print("== 2. per batch (no noise from the pipeline) ==")
        base = in_process["none"]
        costs = per_batch_costs(base.cpu / (base.amount / args.batch_size))
        results["per_batch"] = costs
        shares = {
            "lines per batch": costs["share_lines"],
            "bar per batch": costs["share_bar"],
            "bar redraws": costs["bar_redraw_per_s"],
        }

        if args.cli_repeat:
            print(f"== 3. manage.py capture --pcap (subprocess, start-up in), best of {args.cli_repeat} ==")
            cli: dict[str, list[tuple[Run, str]]] = {mode: [] for mode in MODES}
            for i in range(args.cli_repeat):
                for mode in MODES:
                    cli[mode].append(cli_run(path, mode, env, f"bench-prog-cli-{mode}-{i}", args.redis_url))
            chosen = {mode: max(r, key=lambda x: x[0].rate()) for mode, r in cli.items()}
            cli_ratios = ratio_rows(
                {m: r for m, (r, _) in chosen.items()}, {m: n for m, (_, n) in chosen.items()}, "cpu"
            )
            results["cli"] = {"runs": {m: asdict(r) for m, (r, _) in chosen.items()}, "ratios": cli_ratios}
            verdict_ratios.update({f"cli {m}": v for m, v in cli_ratios.items()})
    finally:
        MonitorConfig.objects.filter(pk=1).update(buffer_size=old_buffer)
        for leftover in tmp.iterdir():
            leftover.unlink()
        tmp.rmdir()
        flush_redis(args.redis_url)
    low = {k: v for k, v in verdict_ratios.items() if v < TARGET_RATIO and not k.startswith("cli")}
    print(f"target: in-process ratios >= {TARGET_RATIO}: " + ("PASS" if not low else f"FAIL {low}"))
    heavy = {k: v for k, v in shares.items() if v >= TARGET_SHARE}
    print(
        f"target: progress under {TARGET_SHARE:.0%} of a batch's CPU: "
        + ("PASS" if not heavy else f"FAIL {heavy}")
    )
    low.update(heavy)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if (args.strict and low) else 0


if __name__ == "__main__":
    sys.exit(main())
