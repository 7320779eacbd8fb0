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
from capture.records import Batch
from capture.stream import DROP_UNAVAILABLE, StreamPublisher
from detection import ingest
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


def run_through_restarts(private_redis, tmp_path, sensor: str, n: int, *source: str) -> dict:
    """Capture ``n`` packets while Redis is restarted twice; returns the capture's --summary-json totals."""
    summary_path = tmp_path / "summary.json"
    worker = processes.start_worker(concurrency=1, name="fault-redis-worker", **private_redis.env())
    capture = capture_proc(
        private_redis.env(), *source, "--sensor", sensor, "--batch-size", "250",
        "--summary-json", str(summary_path),
    )  # fmt: skip
    with processes.running(capture, worker):
        processes.wait_until(lambda: stored(sensor) > 2000, timeout=40, message="packets stored before")
        private_redis.restart(down_for=0.3)  # short: the capture's buffer holds what it reads meanwhile
        processes.wait_until(lambda: stored(sensor) > 6000, timeout=40, message="packets stored after 1st")
        private_redis.restart(down_for=3.0)  # long: more packets read while down than the buffer holds
        capture.wait_for("reachable again", timeout=30)
        assert capture.popen.wait(60) == 0, capture.log()[-3000:]
        processes.wait_until(
            lambda: sum(accounted(sensor)[1:]) >= n, timeout=40, message="every packet stored or counted"
        )
        time.sleep(1)  # nothing more may arrive
        assert "Traceback" not in capture.log()
    summary = json.loads(summary_path.read_text())["totals"]
    read, stored_n, dropped_capture, dropped_stream = accounted(sensor)
    print(
        f"{sensor}: read {read} stored {stored_n} dropped: capture {dropped_capture} stream {dropped_stream}"
    )
    # the capture's own accounting: every packet read was published or dropped
    assert summary["packets_read"] == read == n
    assert summary["published"] + summary["dropped"] == n
    assert summary["unpublished_at_exit"] == 0
    assert summary["dropped"] == dropped_capture
    assert set(summary["drop_reasons"]) <= {"redis unavailable", "redis error"}
    # the whole pipeline: stored + dropped = read, exactly, and nothing stored twice
    assert stored_n + dropped_capture + dropped_stream == n
    seqs = seqs_of(sensor)
    assert len(seqs) == len(set(seqs)) == stored_n
    assert seqs[-1] == n  # the tail after the restarts arrived
    return summary


def test_live_capture_through_redis_restarts_buffers_and_accounts_for_every_packet(
    tmp_path, private_redis, staff_api, settings
):
    n, rate = 16_000, 2500
    MonitorConfig.objects.update_or_create(pk=1, defaults={"buffer_size": BUFFER})

    summary = run_through_restarts(
        private_redis, tmp_path, "r1", n, "--demo", "--seed", "3", "--rate", str(rate), "--count", str(n)
    )

    # a live source does not wait: over the 3 s outage (~7,500 packets) the buffer kept the newest
    # BUFFER packets and dropped the oldest
    assert 1000 <= summary["dropped"] <= rate * 4.0
    settings.REDIS_URL = private_redis.url
    status = staff_api.get("/api/status").json()
    row = {s["sensor"]: s for s in status["sensors"]}["r1"]
    assert row["packets_captured"] == n
    assert row["packets_stored"] + row["packets_dropped"] == n
    assert row["queue_lag_packets"] == 0


def test_pcap_capture_through_redis_restarts_accounts_for_every_packet(tmp_path, private_redis):
    """A file source waits for the workers instead of dropping; the wait must not outlast a restart."""
    n = 16_000
    MonitorConfig.objects.update_or_create(pk=1, defaults={"buffer_size": BUFFER})
    pcap = tmp_path / "traffic.pcap"
    write_pcap(pcap, synthetic_records(n, seed=21))

    run_through_restarts(private_redis, tmp_path, "r3", n, "--pcap", str(pcap), "--rate", "2500")


def batch(first_seq: int, n: int = 100) -> Batch:
    records = synthetic_records(n, seed=first_seq)
    records["seq"] = range(first_seq, first_seq + n)
    return Batch(sensor="r2", records=records, interfaces=["eth0"])


def test_packets_the_capture_dropped_are_not_counted_again_by_the_workers(private_redis):
    """In process, step by step: the gap the workers see is part capture drop, part Redis loss."""
    client = private_redis.client()
    pub = StreamPublisher("r2", client=private_redis.client(), buffer_size=300, backoff_initial=0.05)
    for first in (1, 101, 201):
        pub.publish(batch(first))
    ingest.drain_sensor("r2", client)  # 300 stored
    for first in (301, 401, 501):
        pub.publish(batch(first))  # in the stream, not yet ingested...
    private_redis.kill()  # ...and gone with Redis
    for first in range(601, 1101, 100):
        pub.publish(batch(first))  # 500 read while Redis is down: the oldest 200 over the buffer go
    assert pub.dropped[DROP_UNAVAILABLE] == 200
    private_redis.start()
    assert pub.flush(timeout=10)

    result = ingest.drain_sensor("r2", client)

    row = Sensor.objects.get(name="r2")
    assert result.packets == 300 and row.packets_stored == 600
    assert row.packets_dropped_stream == 300 == result.dropped  # what Redis lost, not the capture's 200
    assert row.packets_stored + pub.dropped[DROP_UNAVAILABLE] + row.packets_dropped_stream == 1100
    pub.close()
