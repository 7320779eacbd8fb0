"""Progress of the long commands (``capture --pcap``, ``train_detector``, ``evaluate_detector``).

One ``Progress`` per phase of work: packets done, their rate and the time left. On a terminal it
is a rich bar redrawn by rich's own thread a few times a second; when the output is a file or a
pipe (a log, CI, ``docker logs``) it is a plain line every ``interval`` seconds or every ``step``
of the total, whichever comes first, and one last line with the totals. Verbosity 0 silences it.

The caller reports once per batch (``advance``), never per packet: an update is a few additions
and a clock read, so progress costs nothing next to decoding a batch (``bench/progress.py``).
The total may be in packets or in bytes: a capture file's size is known before its packet count,
so a pcap's ETA comes from the bytes read (``ReadStats.input_bytes``) out of the files' sizes.

It sits in ``capture`` (the lowest app) because capture and detection commands both use it.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

# The three ways of showing progress; chosen by ``Progress.for_command`` from the output stream.
BAR, LINES, OFF = "bar", "lines", "off"
LINE_INTERVAL = 5.0  # seconds between plain lines
LINE_STEP = 0.1  # ... or one line per tenth of the total
BYTES, PACKETS = "bytes", "packets"


def files_size(paths: Iterable[str | os.PathLike[str]]) -> int:
    """Bytes of the capture files as stored (compressed if so); a missing file counts 0 (read says why)."""
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):
            total += os.path.getsize(path)
    return total


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _megabytes(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


class Progress:
    """Packets done, rate and ETA of one phase of a command (see the module's docstring).

    ``total`` is in ``unit`` (``"packets"`` or ``"bytes"``); None when unknown (rate only).
    ``style``: ``"bar"`` (rich), ``"lines"`` or ``"off"``. Use it as a context manager, or
    call ``close`` (the last line) once the phase is over.
    """

    def __init__(
        self,
        label: str,
        stream: TextIO,
        *,
        total: float | None = None,
        unit: str = PACKETS,
        style: str = LINES,
        interval: float = LINE_INTERVAL,
        step: float = LINE_STEP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if unit not in (PACKETS, BYTES):
            raise ValueError(f"unit must be {PACKETS!r} or {BYTES!r}, not {unit!r}")
        if style not in (BAR, LINES, OFF):
            raise ValueError(f"style must be one of {BAR}, {LINES}, {OFF}, not {style!r}")
        # Django wraps stdout in an OutputWrapper that appends a newline to every write: rich's
        # redraws (cursor moves, carriage returns) must reach the real stream.
        self.stream = getattr(stream, "_out", stream)
        self.label, self.total, self.unit, self.style = label, total or None, unit, style
        self.interval, self.step, self.clock = interval, step, clock
        self.packets = 0
        self.position = 0.0
        self.started = clock()
        self._next_time = self.started + interval
        self._next_fraction = step
        self._closed = False
        self._bar: Any = None
        if style == BAR:
            self._start_bar()

    @classmethod
    def for_command(cls, label: str, stdout: TextIO, verbosity: int = 1, **kwargs: Any) -> Progress:
        """A bar when ``stdout`` is a terminal, plain lines when it is not, nothing at verbosity 0."""
        if verbosity < 1:
            style = OFF
        else:
            isatty = getattr(stdout, "isatty", None)
            style = BAR if isatty is not None and isatty() else LINES
        return cls(label, stdout, style=style, **kwargs)

    # --- reporting ------------------------------------------------------------------------------
    def advance(self, packets: int, position: float | None = None) -> None:
        """``packets`` more done; ``position``: where the work is now, in the total's unit.

        Without ``position``, a total in packets follows the packet count.
        """
        self.packets += packets
        if position is not None:
            self.position = float(position)
        elif self.unit == PACKETS:
            self.position = float(self.packets)
        if self.style == LINES:
            now = self.clock()
            fraction = self.fraction()
            if now >= self._next_time or (fraction is not None and fraction >= self._next_fraction):
                self._write(self.line(now))
                self._next_time = now + self.interval
                if fraction is not None:
                    self._next_fraction = (math.floor(fraction / self.step + 1e-9) + 1) * self.step
        elif self.style == BAR:
            self._bar.update(
                self._task, completed=self.position, packets=self.packets, rate=self._rate_text(self.clock())
            )

    def fraction(self) -> float | None:
        """Share of the total done (0..1), None when the total is unknown."""
        if not self.total:
            return None
        return min(1.0, max(0.0, self.position / self.total))

    def rate(self, now: float | None = None) -> float:
        """Packets per second since the start."""
        elapsed = (self.clock() if now is None else now) - self.started
        return self.packets / elapsed if elapsed > 0 else 0.0

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the average speed so far; None before anything is done or without a total."""
        fraction = self.fraction()
        if not fraction:
            return None
        elapsed = (self.clock() if now is None else now) - self.started
        return elapsed * (1.0 - fraction) / fraction

    def line(self, now: float | None = None) -> str:
        """One plain line: ``capture: 120,000 packets, 35% of 12.3 MB, 24,000 packets/s, ETA 0:00:12``."""
        now = self.clock() if now is None else now
        fraction = self.fraction()
        if fraction is not None and self.unit != BYTES:  # "120,000 of 300,000 packets (40%)"
            parts = [f"{self.label}: {self.packets:,} of {self.total:,.0f} packets ({fraction:.0%})"]
        else:
            parts = [f"{self.label}: {self.packets:,} packets"]
            if fraction is not None:
                parts.append(f"{fraction:.0%} of {_megabytes(self.total)}")
        parts.append(self._rate_text(now))
        eta = self.eta(now)
        if eta is not None:
            parts.append(f"ETA {_duration(eta)}")
        return ", ".join(parts)

    def close(self) -> None:
        """End the phase: the bar's last frame, or one last line with the totals."""
        if self._closed:
            return
        self._closed = True
        if self.style == OFF:
            return
        now = self.clock()
        if self.style == BAR:
            self._bar.update(self._task, packets=self.packets, rate=self._rate_text(now))
            self._bar.stop()
        took = now - self.started
        self._write(f"{self.label}: done, {self.packets:,} packets in {took:,.1f} s, {self._rate_text(now)}")

    def note(self, text: str) -> None:
        """A message between phases (e.g. "fitting the model"), unless silenced."""
        if self.style != OFF:
            self._write(text)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- output ---------------------------------------------------------------------------------
    def _rate_text(self, now: float) -> str:
        return f"{self.rate(now):,.0f} packets/s"

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        console = Console(file=self.stream)
        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[packets]:,} packets"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            # rich redraws from its own thread; a few frames a second is plenty and costs no CPU
            refresh_per_second=4,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task = self._bar.add_task(self.label, total=self.total, packets=0, rate="")
        self._bar.start()
