"""What the benchmarks measure with: wall and CPU clocks, a measured run, and cProfile output.

Imported as ``measure`` (the scripts run with bench/ first on ``sys.path``).
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    """One measured run: how much work (packets, rows or bytes) and the wall-clock and CPU seconds it took.

    The CPU time is what "one core" means here, and it is far less disturbed than the wall clock
    when other work shares the machine; both are printed.
    """

    amount: int
    wall: float
    cpu: float

    def rate(self, clock: str = "cpu") -> float:
        return self.amount / max(self.cpu if clock == "cpu" else self.wall, 1e-9)


class Clock:
    """``with Clock() as c:`` ... then ``c.wall`` and ``c.cpu`` are the seconds the block took."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def best(runs: list[Run]) -> Run:
    """The least disturbed of several runs (the most work per CPU second)."""
    return max(runs, key=Run.rate)


def profile_call(fn, *args, top: int = 14, packages: str = "capture|detection|netmon", **kw) -> str:
    """Run ``fn`` under cProfile: the ``top`` functions by own time, then ours by cumulative time."""
    prof = cProfile.Profile()
    prof.enable()
    try:
        fn(*args, **kw)
    finally:
        prof.disable()
    parts = []
    for order, restrict in (("tottime", ()), ("cumulative", (rf"{ROOT}/({packages})/",))):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats(order).print_stats(*restrict, top)
        lines = out.getvalue().splitlines()
        start = next((i for i, line in enumerate(lines) if line.strip().startswith("ncalls")), 0)
        parts.append(f"    by {'own' if order == 'tottime' else 'cumulative'} time:")
        parts += ["    " + line.replace(str(ROOT) + "/", "") for line in lines[start:] if line.strip()]
    return "\n".join(parts)


def bench_env(database_url: str, redis_url: str) -> dict[str, str]:
    """Environment of a bench's Django and of the children it starts (development settings, quiet logs)."""
    return {
        "NETMON_ENV": "development",
        "DEBUG": "0",
        "SECRET_KEY": os.environ.get("BENCH_SECRET_KEY") or secrets.token_urlsafe(50),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "CHANNELS_REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "netmon.settings",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
