"""cProfile output for the benchmarks' ``--profile``: where the time of one call goes."""

from __future__ import annotations

import cProfile
import io
import pstats
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
