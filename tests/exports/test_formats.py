"""exports.formats: CSV / JSON Lines / JSON array serialisers: correctness against the stdlib, streaming."""

from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
import json
import math
import random
import uuid
from decimal import Decimal
from typing import Any

import pytest

from exports import formats
from exports.formats import FORMATS, iter_csv, iter_json_array, iter_json_lines, serialise

COLUMNS = ["id", "ts", "proto", "src_ip", "sport", "score", "flag", "note"]
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def packet_rows(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    return [
        {
            "id": i,
            "ts": T0 + dt.timedelta(microseconds=i * 1237),
            "proto": rnd.choice(["TCP", "UDP", "ICMP"]),
            "src_ip": f"10.0.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}",
            "sport": rnd.randint(0, 65535),
            "score": rnd.random(),
            "flag": rnd.random() < 0.5,
            "note": rnd.choice(["", "plain", "with,comma", 'with "quotes"', "line\r\nbreak", "ünïcødé ✓"]),
        }
        for i in range(n)
    ]


def text_of(pieces: Any) -> str:
    return b"".join(pieces).decode("utf-8")


def csv_records(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


# Reference renderings, value by value, with the standard library.
def ref_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def ref_json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {k: ref_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [ref_json(v) for v in value]
    return ref_text(value)


# --------------------------------------------------------------------------------------------------
# CSV


def test_csv_matches_the_csv_module_for_text():
    rows = packet_rows(3000)
    text = text_of(iter_csv(rows, COLUMNS, formula_guard=False))

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerows([[ref_text(r[c]) for c in COLUMNS] for r in rows])
    assert text == out.getvalue()


def test_csv_rfc4180_details():
    rows = [
        {"a": 'say "hi"', "b": "x,y", "c": "two\nlines"},
        {"a": None, "b": "", "c": "cr\ronly"},
    ]
    text = text_of(iter_csv(rows, ["a", "b", "c"]))
    assert text == 'a,b,c\r\n"say ""hi""","x,y","two\nlines"\r\n,,"cr\ronly"\r\n'
    assert csv_records(text)[1:] == [['say "hi"', "x,y", "two\nlines"], ["", "", "cr\ronly"]]


def test_csv_values():
    rows = [
        {
            "n": -5,
            "f": 0.1,
            "big": 10**30,
            "nan": float("nan"),
            "b": True,
            "none": None,
            "d": dt.date(2026, 1, 2),
            "t": dt.datetime(2026, 1, 2, 3, 4, 5, 6),
            "dec": Decimal("-1.50"),
            "ip": ipaddress.ip_address("2001:db8::1"),
            "raw": b"\x01\xff",
            "u": uuid.UUID(int=1),
        }
    ]
    text = text_of(iter_csv(rows, list(rows[0])))
    assert csv_records(text)[1] == [
        "-5",
        "0.1",
        str(10**30),
        "nan",
        "true",
        "",
        "2026-01-02",
        "2026-01-02T03:04:05.000006",
        "-1.50",
        "2001:db8::1",
        "01ff",
        "00000000-0000-0000-0000-000000000001",
    ]


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx", '=HYPERLINK("http://x")'])
def test_csv_formula_guard(cell):
    rows = [{"n": -3, "q": cell}, {"n": 4, "q": "safe"}]
    guarded = csv_records(text_of(iter_csv(rows, ["n", "q"])))
    assert guarded[1] == ["-3", "'" + cell]
    assert guarded[2] == ["4", "safe"]
    assert csv_records(text_of(iter_csv(rows, ["n", "q"], formula_guard=False)))[1] == ["-3", cell]
    # In a column that mixes None with text (the per-value path) too.
    mixed = csv_records(text_of(iter_csv([{"q": None}, {"q": cell}], ["q", "n"])))
    assert mixed[2][0] == "'" + cell


def test_csv_single_column_empty_value_is_not_an_empty_line():
    text = text_of(iter_csv([{"a": ""}, {"a": None}, {"a": "x"}], ["a"]))
    assert text == 'a\r\n""\r\n""\r\nx\r\n'
    assert csv_records(text) == [["a"], [""], [""], ["x"]]


# --------------------------------------------------------------------------------------------------
# JSON


def test_json_lines_match_json_module():
    rows = packet_rows(2500)
    text = text_of(iter_json_lines(rows, COLUMNS))
    lines = text.split("\n")
    assert lines[-1] == ""
    parsed = [json.loads(line) for line in lines[:-1]]
    assert parsed == [{c: ref_json(r[c]) for c in COLUMNS} for r in rows]
    assert all(list(p) == COLUMNS for p in parsed)
    assert text.isascii()


def test_json_array_is_one_valid_document():
    rows = packet_rows(2500)
    parsed = json.loads(text_of(iter_json_array(rows, COLUMNS)))
    assert parsed == [{c: ref_json(r[c]) for c in COLUMNS} for r in rows]


@pytest.mark.parametrize("n", [0, 1, 1024, 1025])
def test_json_array_sizes(n):
    assert json.loads(text_of(iter_json_array(packet_rows(n), COLUMNS))) == json.loads(
        json.dumps([{c: ref_json(r[c]) for c in COLUMNS} for r in packet_rows(n)])
    )


def test_json_values():
    row = {
        "nan": float("nan"),
        "inf": float("-inf"),
        "b": False,
        "none": None,
        "t": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "dec": Decimal("1.5"),
        "raw": b"\x00\x10",
        "nested": {"x": [1, float("nan"), "y"]},
        "surrogate": "\ud800 lone",
        "ctl": "tab\there \u2028",
        "big": 2**70,
        "tiny": 1e-300,
    }
    (line,) = text_of(iter_json_lines([row], list(row))).splitlines()
    assert json.loads(line) == {
        "nan": None,
        "inf": None,
        "b": False,
        "none": None,
        "t": "2026-01-02T03:04:05+00:00",
        "dec": "1.5",
        "raw": "0010",
        "nested": {"x": [1, None, "y"]},
        "surrogate": "\ud800 lone",
        "ctl": "tab\there \u2028",
        "big": 2**70,
        "tiny": 1e-300,
    }
    assert "NaN" not in line and "Infinity" not in line


def test_awkward_column_names():
    columns = ['we"ird', "per%cent", "%s", "ünï"]
    row = dict.fromkeys(columns, 1)
    assert json.loads(text_of(iter_json_lines([row], columns))) == row
    assert json.loads(text_of(iter_json_array([row], columns))) == [row]
    assert csv_records(text_of(iter_csv([row], columns)))[0] == columns


# --------------------------------------------------------------------------------------------------
# Every format


@pytest.mark.parametrize("fmt", FORMATS)
def test_mixed_types_in_a_column_across_batches(fmt):
    values = [1, "two", None, 3.5, True, T0, [1, 2], float("inf")] * 300
    rows = [{"v": v, "i": i} for i, v in enumerate(values)]
    text = text_of(serialise(fmt, rows, ["i", "v"]))
    if fmt == "csv":
        got = [r[1] for r in csv_records(text)[1:]]
        assert got == [ref_text(v) if not isinstance(v, list) else "[1, 2]" for v in values]
    else:
        parsed = json.loads(text) if fmt == "json-array" else [json.loads(x) for x in text.splitlines()]
        assert [p["v"] for p in parsed] == [ref_json(v) for v in values]


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_keys_are_empty_and_extra_keys_ignored(fmt):
    rows = [{"a": 1, "b": 2, "extra": "x"}, {"a": 3}]
    text = text_of(serialise(fmt, rows, ["a", "b"]))
    if fmt == "csv":
        assert csv_records(text) == [["a", "b"], ["1", "2"], ["3", ""]]
    else:
        parsed = json.loads(text) if fmt == "json-array" else [json.loads(x) for x in text.splitlines()]
        assert parsed == [{"a": 1, "b": 2}, {"a": 3, "b": None}]


@pytest.mark.parametrize("fmt", FORMATS)
def test_pieces_are_large_and_independent_of_piece_size(fmt):
    rows = packet_rows(40_000)
    pieces = list(serialise(fmt, iter(rows), COLUMNS))
    assert all(isinstance(p, bytes) for p in pieces)
    assert len(pieces) > 2
    assert all(len(p) >= formats.DEFAULT_PIECE_SIZE for p in pieces[:-1])
    tiny = list(serialise(fmt, iter(rows[:3000]), COLUMNS, piece_size=1))
    assert b"".join(tiny) == b"".join(serialise(fmt, rows[:3000], COLUMNS))
    assert all(tiny)


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_input(fmt):
    expected = {"csv": b"id,ts\r\n", "json": b"", "json-array": b"[]\n"}[fmt]
    assert b"".join(serialise(fmt, [], ["id", "ts"])) == expected


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_are_consumed_lazily(fmt):
    pulled = 0

    def rows():
        nonlocal pulled
        for row in packet_rows(50_000):
            pulled += 1
            yield row

    first = next(iter(serialise(fmt, rows(), COLUMNS)))
    assert first
    assert pulled < 50_000


def test_bad_arguments():
    with pytest.raises(ValueError, match="unsupported export format 'xml'"):
        serialise("xml", [], ["a"])
    with pytest.raises(ValueError, match="at least one column"):
        serialise("csv", [], [])
    with pytest.raises(ValueError, match="duplicate"):
        serialise("json", [], ["a", "a"])
    with pytest.raises(ValueError, match="piece_size"):
        serialise("json-array", [], ["a"], piece_size=0)


def test_media_types_and_extensions_cover_every_format():
    assert set(formats.MEDIA_TYPES) == set(formats.FILE_EXTENSIONS) == set(formats.ALL_FORMATS)
    assert set(FORMATS) < set(formats.ALL_FORMATS)


def test_csv_output_is_valid_utf8_even_with_lone_surrogates():
    data = b"".join(iter_csv([{"a": "ok \ud800"}], ["a"]))
    assert data.decode("utf-8") == "a\r\nok ?\r\n"
