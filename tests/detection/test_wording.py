"""How numbers read: ``format_value``'s table, and the feature sentences that use it."""

from __future__ import annotations

import re

import pytest

from detection.features import describe, feature_specs
from detection.wording import Unit, format_value


@pytest.mark.parametrize(
    ("value", "unit", "words"),
    [
        # plain numbers: 3 significant digits, thousands separators, no exponent
        (2100.0, Unit.RATE, "2,100"),
        (2134.0, Unit.RATE, "2,130"),
        (15.5, Unit.RATE, "15.5"),
        (0.5, Unit.RATE, "0.5"),
        (0.37, Unit.AMOUNT, "0.37"),
        (123_456.0, Unit.AMOUNT, "123,000"),
        (0.0, Unit.AMOUNT, "0"),
        # counts are whole numbers
        (480.0, Unit.COUNT, "480"),
        (1133.0, Unit.COUNT, "1,133"),
        # durations: µs, ms, s, min, h
        (0.333333, Unit.SECONDS, "333 ms"),
        (0.15, Unit.SECONDS, "150 ms"),
        (0.1655, Unit.SECONDS, "166 ms"),
        (20.1125, Unit.SECONDS, "20.1 s"),
        (2.0, Unit.SECONDS, "2 s"),
        (0.0004, Unit.SECONDS, "400 µs"),
        (0.9996, Unit.SECONDS, "1 s"),
        (300.0, Unit.SECONDS, "5 min"),
        (36_000.0, Unit.SECONDS, "10 h"),
        (0.0, Unit.SECONDS, "0 s"),
        # bytes and byte rates: B, kB, MB
        (713.0, Unit.BYTES, "713 B"),
        (1514.0, Unit.BYTES, "1.51 kB"),
        (2_100_000.0, Unit.BYTES, "2.1 MB"),
        (999.7, Unit.BYTES, "1 kB"),
        (12_500.0, Unit.BYTE_RATE, "12.5 kB/s"),
        (30.0, Unit.BYTE_RATE, "30 B/s"),
        (0.0, Unit.BYTES, "0 B"),
        # shares as percentages
        (0.07, Unit.SHARE, "7 %"),
        (0.004, Unit.SHARE, "0.4 %"),
        (1.0, Unit.SHARE, "100 %"),
        (0.789, Unit.SHARE, "78.9 %"),
    ],
)
def test_format_value(value, unit, words):
    assert format_value(value, unit) == words


def test_format_value_with_fewer_or_more_digits():
    assert format_value(2134.0, Unit.RATE, 2) == "2,100"
    assert format_value(1514.0, Unit.BYTES, 4) == "1.514 kB"
    assert format_value(1 / 3, Unit.SECONDS, 1) == "300 ms"


@pytest.mark.parametrize("spec", feature_specs("advanced"), ids=lambda s: s.name)
def test_every_sentence_takes_its_value_in_words(spec):
    # {value} is already written with its unit: no format spec ("{value:.4f}") left in a sentence
    assert "{value:" not in spec.text and "half-life" not in spec.text
    assert not re.search(r"\d\.\d{3}", spec.text + spec.description), "raw precision"
    if spec.kind == "value":
        assert "{value}" in spec.text and spec.unit in set(Unit)


def test_time_scales_read_as_recent_windows():
    assert describe("client_w_l5").text.endswith("over the last ~200 ms")
    assert describe("chan_jitter_mean_l0.01").text.endswith("over the last ~100 s")
    assert describe("client_w_l3").description.endswith("(damped, half-life 300 ms)")
