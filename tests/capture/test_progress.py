"""Progress of the long commands (capture/progress.py): plain lines off a terminal, a bar on one,
silence at verbosity 0, the pcap reader's position for the ETA, and `capture --pcap` writing them."""

from __future__ import annotations

import gzip
import io
import re
import shutil

import pytest
from django.core.management.base import OutputWrapper

from capture.pcapio import ReadStats, iter_frame_batches
from capture.pcapwriter import synthetic_records, write_pcap
from capture.progress import BAR, BYTES, LINES, OFF, Progress, files_size
from tests import processes


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_every_tenth_of_the_total_with_rate_and_eta():
    out, clock = io.StringIO(), FakeClock()
    progress = Progress("capture", out, total=1000, clock=clock)

    for _ in range(20):  # batches of 50 packets, one every 0.1 s
        clock.now += 0.1
        progress.advance(50)
    progress.close()

    lines = out.getvalue().splitlines()
    assert len(lines) == 11  # 10 %, 20 %, ... 100 %, and the last line
    assert lines[0] == "capture: 100 of 1,000 packets (10%), 500 packets/s, ETA 0:00:02"
    assert lines[4].startswith("capture: 500 of 1,000 packets (50%)")
    assert lines[-1] == "capture: done, 1,000 packets in 2.0 s, 500 packets/s"


def test_lines_every_interval_when_the_total_is_unknown():
    out, clock = io.StringIO(), FakeClock()
    progress = Progress("train_detector", out, clock=clock)

    for _ in range(12):  # one batch of 1,000 a second: a line at 5 s and at 10 s
        clock.now += 1.0
        progress.advance(1000)

    lines = out.getvalue().splitlines()
    assert lines == [
        "train_detector: 5,000 packets, 1,000 packets/s",
        "train_detector: 10,000 packets, 1,000 packets/s",
    ]


def test_a_total_in_bytes_follows_the_position_not_the_packets():
    out, clock = io.StringIO(), FakeClock()
    progress = Progress("capture", out, total=40e6, unit=BYTES, clock=clock)

    clock.now += 3.0
    progress.advance(30_000, position=10e6)

    assert out.getvalue() == "capture: 30,000 packets, 25% of 40.0 MB, 10,000 packets/s, ETA 0:00:09\n"
    assert progress.eta() == pytest.approx(9.0)


def test_the_stream_decides_the_style_and_verbosity_0_silences_it():
    piped = Progress.for_command("x", io.StringIO(), 1)
    assert piped.style == LINES
    silent_out = io.StringIO()
    silent = Progress.for_command("x", silent_out, 0, total=10)
    silent.advance(10)
    silent.close()
    assert silent.style == OFF and silent_out.getvalue() == ""

    terminal = Terminal()
    bar = Progress.for_command("capture", terminal, 1, total=1000)
    bar.advance(400)
    bar.close()
    assert bar.style == BAR
    drawn = terminal.getvalue()
    assert "40%" in drawn and "400 packets" in drawn and "\x1b[" in drawn  # rich's bar, redrawn in place
    assert "capture: done, 400 packets in " in drawn


def test_a_django_output_wrapper_gets_one_newline_per_line():
    out = io.StringIO()
    progress = Progress.for_command("evaluate_detector: scoring", OutputWrapper(out), 1, total=10)
    progress.advance(10)
    progress.close()
    assert "\n\n" not in out.getvalue()
    assert len(out.getvalue().splitlines()) == 2


@pytest.mark.parametrize("compressed", [False, True])
def test_the_reader_says_where_it_is_in_the_file(tmp_path, compressed):
    path = tmp_path / "t.pcap"
    write_pcap(path, synthetic_records(20_000, seed=3))
    if compressed:
        with open(path, "rb") as raw, gzip.open(tmp_path / "t.pcap.gz", "wb") as packed:
            shutil.copyfileobj(raw, packed)
        path = tmp_path / "t.pcap.gz"
    stats = ReadStats()
    positions, ends = [], []  # where the reader says it is; where the batch's last frame ends
    for frames in iter_frame_batches(path, 2000, stats=stats):
        positions.append(stats.input_bytes)
        ends.append((ends[-1] if ends else 24) + int(frames.caplen.sum()) + 16 * len(frames))

    assert positions == sorted(positions) and positions[0] > 0
    assert positions[-1] == files_size([path]) == path.stat().st_size
    if not compressed:  # exactly after the batch's last record, though the file is read 1 MB at a time
        assert positions == ends


@pytest.mark.django_db(transaction=True)
def test_capture_of_a_pcap_writes_progress_lines_when_stdout_is_not_a_terminal(tmp_path, redis_client):
    pcap = tmp_path / "traffic.pcap"
    write_pcap(pcap, synthetic_records(5000, seed=1))

    result = processes.run_capture("--pcap", str(pcap), "--sensor", "prog", "--batch-size", "250")

    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("capture: ")]
    percents = [int(m.group(1)) for line in lines if (m := re.search(r"(\d+)% of ", line))]
    assert len(percents) >= 9 and percents == sorted(percents) and percents[-1] == 100
    assert all("packets/s" in line and "ETA" in line for line in lines[:-1])
    assert lines[-1].startswith("capture: done, 5,000 packets in ")
    assert "\x1b[" not in result.stdout  # no terminal codes in a log
