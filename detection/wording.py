"""How numbers read in explanations: one function renders a feature's value with its unit.

Operators read "2,100 SYN/s; normally under 14" and "every 2 s; normally under 166 ms", not
"2100.0000" or "0.1655": three significant digits (``digits``), thousands separators, and the
unit scaled to the value (µs / ms / s / min / h, B / kB / MB / GB, kB/s, %). Counts (ports,
hosts, TTLs) are whole numbers. Rates and amounts of things the sentence names ("packets/s",
"SYN/s", "recent packets") are plain numbers: the sentence carries the noun, so the "normally
..." bound after it reads "normally under 14", in the same units.

Django-free and dependency-free: ``detection.features`` names its specs' units from here and
``detection.ml`` words explanations with ``format_value``.
"""

from __future__ import annotations

import math
from enum import StrEnum


class Unit(StrEnum):
    """How a feature's value is written (``FeatureSpec.unit``)."""

    BYTES = "bytes"  # 713 B, 1.51 kB, 2.1 MB
    BYTE_RATE = "bytes/s"  # 713 B/s, 12.5 kB/s
    SECONDS = "s"  # 420 µs, 150 ms, 2 s, 3.5 min
    SHARE = "share"  # a fraction 0..1, written as a percentage: 7 %
    COUNT = "count"  # whole things the sentence names: 480 (ports, hosts, a TTL)
    RATE = "per second"  # things per second the sentence names ("2,100 SYN/s"): 2,100, 0.5
    AMOUNT = "amount"  # any other number: 0.37, 2,130


_BYTE_PREFIXES = ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1.0, "B"))


def _round(x: float, digits: int) -> float:
    """``x`` rounded to ``digits`` significant digits."""
    return float(f"{x:.{digits - 1}e}") if math.isfinite(x) else x


def _number(x: float, digits: int) -> str:
    """``x`` with ``digits`` significant digits, thousands separators and no exponent:
    2134 -> "2,130", 0.333333 -> "0.333", 20.0 -> "20"."""
    if not math.isfinite(x):
        return "∞" if x > 0 else "-∞" if x < 0 else "?"
    if x == 0:
        return "0"
    # One correctly rounded conversion gives both the digits and the exponent.
    rounded = f"{x:.{digits - 1}e}"
    decimals = digits - 1 - int(rounded[rounded.index("e") + 1 :])
    if decimals <= 0:
        return f"{round(float(rounded)):,}"
    return f"{float(rounded):.{decimals}f}".rstrip("0").rstrip(".")


def _duration(x: float, digits: int) -> str:
    r = _round(x, digits)  # rounded first, so 0.9996 s is "1 s", not "1,000 ms"
    a = abs(r)
    if a == 0:
        return "0 s"
    if a < 1e-3:
        return f"{_number(r * 1e6, digits)} µs"
    if a < 1:
        return f"{_number(r * 1e3, digits)} ms"
    if a < 120:
        return f"{_number(r, digits)} s"
    if a < 7200:
        return f"{_number(r / 60, digits)} min"
    return f"{_number(r / 3600, digits)} h"


def _bytes(x: float, digits: int, suffix: str) -> str:
    r = _round(x, digits)
    a = abs(r)
    for size, name in _BYTE_PREFIXES:
        if a >= size:
            return f"{_number(r / size, digits)} {name}{suffix}"
    return f"{_number(r, digits)} B{suffix}"


def _count(x: float, digits: int) -> str:
    return f"{round(x):,}" if abs(x) < 1e15 else _number(x, digits)


_FORMATS = {
    Unit.SECONDS: _duration,
    Unit.BYTES: lambda x, digits: _bytes(x, digits, ""),
    Unit.BYTE_RATE: lambda x, digits: _bytes(x, digits, "/s"),
    Unit.SHARE: lambda x, digits: f"{_number(x * 100, digits)} %",
    Unit.COUNT: _count,
}


def format_value(value: float, unit: str, digits: int = 3) -> str:
    """``value`` as an operator reads it, in ``unit`` (a ``Unit``), to ``digits`` significant digits.

    e.g. (2134, RATE) -> "2,130"; (0.1655, SECONDS) -> "166 ms"; (1514, BYTES) -> "1.51 kB";
    (0.07, SHARE) -> "7 %"; (480.0, COUNT) -> "480".
    """
    value = float(value)
    if not math.isfinite(value):
        return _number(value, digits)
    return _FORMATS.get(unit, _number)(value, digits)
