"""Redis restarted (without persistence) during a capture: the capture reconnects, buffers up to
``buffer_size`` packets meanwhile, and the counters account for every packet read:

    stored + dropped by capture (buffer over buffer_size) + dropped in the stream (lost with Redis) = read

The test runs its own redis-server on a free port (never the shared one) and points the worker and
the capture process at it.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from capture.models import MonitorConfig, Sensor
from capture.pcapwriter import synthetic_records, write_pcap
from tests import processes
from tests.faults.conftest import seqs_of, stored

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.integration,
    pytest.mark.faults,
    pytest.mark.timeout(150),
]

BUFFER = 2000


def capture_proc(env: dict[str, str], *args: str) -> processes.Proc:
    return processes.Proc(
        "capture-private-redis", [sys.executable, "manage.py", "capture", *args], processes.process_env(**env)
    )


def accounted(sensor: str) -> tuple[int, int, int, int]:
    row = Sensor.objects.get(name=sensor)
    return row.packets_read, row.packets_stored, row.packets_dropped_capture, row.packets_dropped_stream


def test_redis_restarted_during_capture_every_packet_accounted_for(
    tmp_path, private_redis, staff_api, settings
):
    n, rate = 16_000, 2500
    MonitorConfig.objects.update_or_create(pk=1, defaults={"buffer_size": BUFFER})
    pcap = tmp_path / "traffic.pcap"
    write_pcap(pcap, synthetic_records(n, seed=21))
    summary_path = tmp_path / "summary.json"
    worker = processes.start_worker(concurrency=1, name="fault-redis-worker", **private_redis.env())
    capture = capture_proc(
        private_redis.env(), "--pcap", str(pcap), "--sensor", "r1", "--rate", str(rate),
        "--batch-size", "250", "--summary-json", str(summary_path),
    )  # fmt: skip
    with processes.running(capture, worker):
        processes.wait_until(lambda: stored("r1") > 2000, timeout=40, message="packets stored before")
        private_redis.restart(down_for=0.3)  # short: the capture's buffer holds what it reads meanwhile
        processes.wait_until(lambda: stored("r1") > 6000, timeout=40, message="packets stored after 1st")
        private_redis.restart(down_for=3.0)  # long: about 7,500 packets read while down, more than BUFFER
        capture.wait_for("reachable again", timeout=30)
        assert capture.popen.wait(60) == 0, capture.log()[-3000:]
        processes.wait_until(
            lambda: sum(accounted("r1")[1:]) >= n, timeout=40, message="every packet stored or counted"
        )
        time.sleep(1)  # nothing more may arrive

    summary = json.loads(summary_path.read_text())["totals"]
    read, stored_n, dropped_capture, dropped_stream = accounted("r1")
    report = f"read {read} stored {stored_n} dropped capture {dropped_capture} stream {dropped_stream}"
    print(report, summary)
    # the capture's own accounting: every packet read was published or dropped
    assert summary["packets_read"] == read == n
    assert summary["published"] + summary["dropped"] == n
    assert summary["unpublished_at_exit"] == 0
    assert summary["dropped"] == dropped_capture
    # the long outage overflowed the buffer: the oldest packets went, the newest BUFFER were kept
    assert 0 < dropped_capture <= 3.5 * rate
    assert set(summary["drop_reasons"]) <= {"redis unavailable", "redis error"}
    # the whole pipeline: stored + dropped = read, exactly, and nothing stored twice
    assert stored_n + dropped_capture + dropped_stream == n, report
    seqs = seqs_of("r1")
    assert len(seqs) == len(set(seqs)) == stored_n
    assert seqs[-1] == n  # the tail after the restarts arrived
    assert "Traceback" not in capture.log()

    settings.REDIS_URL = private_redis.url
    status = staff_api.get("/api/status").json()
    row = {s["sensor"]: s for s in status["sensors"]}["r1"]
    assert row["packets_captured"] == n
    assert row["packets_stored"] + row["packets_dropped"] == n
    assert row["queue_lag_packets"] == 0
