"""A Celery worker killed with SIGKILL in the middle of a batch loses nothing and stores nothing twice.

Two ways a worker dies:

* the pool process running ``detection.ingest_sensor`` is killed: the worker's main process sees
  the loss, and ``acks_late`` + ``reject_on_worker_lost`` put the task back on the queue;
* the whole worker (main process and pool) is killed: its reserved message stays unacknowledged in
  the broker for the visibility timeout (an hour), so the beat sweeper re-schedules the sensor;
  during a pcap replay that waits for the workers, capture re-queues it itself (no beat needed).

Either way the stream entries the dead process had read but not acknowledged stay pending in the
consumer group; the next holder of the sensor's lock (it expires ``LOCK_TTL`` seconds after its
holder died) reads them first, and the batch receipt makes storing them idempotent.

No hook slows ingest down, so "in the middle of a batch" is made sure of by killing only while
the consumer group has entries read but not acknowledged, several times over one large capture.
"""

from __future__ import annotations

import time

import pytest

from capture.models import Sensor
from capture.pcapwriter import synthetic_records, write_pcap
from detection import ingest
from tests import processes
from tests.faults.conftest import (
    assert_stored_exactly_once,
    kill_pid,
    pending_entries,
    pool_children,
    stored,
    sweep,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.integration,
    pytest.mark.faults,
    pytest.mark.timeout(150),
]

KILLS = 2


def wait_mid_batch(client, sensor: str, above: int, timeout: float = 40) -> int:
    """Wait until more than ``above`` packets are stored and a batch is read but not acknowledged."""
    return processes.wait_until(
        lambda: stored(sensor) > above and pending_entries(client, sensor) > 0 and stored(sensor),
        timeout=timeout,
        interval=0.01,
        message=f"{sensor}: a batch in flight after {above} stored",
    )


def kill_pool_mid_batch(client, worker: processes.Proc, sensor: str, above: int, attempts: int = 10) -> int:
    """Kill -9 the worker's pool process while one of its reads is pending; return the pending count.

    The window between "a read is pending" and the kill is a few milliseconds on a loaded machine:
    the read may be acknowledged before the signal lands. Such a kill still hits the task (between
    two reads) but not a batch, so it does not count: the kill is tried again on the next read.
    """
    processes.wait_until(lambda: stored(sensor) > above, timeout=40, message=f"{sensor}: {above} stored")
    for _ in range(attempts):
        children = pool_children(worker)
        assert children, "the worker has no pool process"
        in_flight = "a read in flight"
        processes.wait_until(lambda: pending_entries(client, sensor) > 0, 40, 0.002, in_flight)
        for pid in children:
            kill_pid(pid)  # kill -9 the process that runs the task
        pending = pending_entries(client, sensor)  # a dead reader's entries stay pending
        processes.wait_until(
            lambda dead=children: pool_children(worker) and pool_children(worker) != dead,
            timeout=20,
            message="a new pool process",
        )
        if pending:
            return pending
    raise AssertionError(f"no kill in {attempts} landed while a read was pending")


def test_pool_process_killed_mid_batch_is_redelivered(tmp_path, redis_client):
    n = 12_000
    pcap = tmp_path / "big.pcap"
    write_pcap(pcap, synthetic_records(n, seed=11))
    worker = processes.start_worker(concurrency=1, name="fault-pool-worker")
    # Small batches make many short reads (at most READ_COUNT entries each): a read is in flight
    # for most of the time the worker has a backlog, and one that a kill missed has others after it.
    capture = processes.start_capture("--pcap", str(pcap), "--sensor", "f1", "--batch-size", "50")
    kills = []
    with processes.running(capture, worker):
        for i in range(KILLS):
            kills.append(kill_pool_mid_batch(redis_client, worker, "f1", above=(i + 1) * n // (KILLS + 2)))
            processes.wait_until(
                lambda i=i: worker.log().count("WorkerLostError") > i, timeout=20, message="loss noticed"
            )
        assert capture.popen.wait(90) == 0, capture.log()[-3000:]
        processes.wait_until(lambda: stored("f1") >= n, timeout=60, message="every packet stored")
        time.sleep(1)  # nothing more may arrive

    assert len(kills) == KILLS and all(kills)
    assert worker.log().count("WorkerLostError") >= KILLS
    assert_stored_exactly_once("f1", n)
    assert Sensor.objects.get(name="f1").packets_read == n


def test_whole_worker_killed_repeatedly_then_a_new_worker_finishes(tmp_path, redis_client):
    n = 12_000
    pcap = tmp_path / "big.pcap"
    write_pcap(pcap, synthetic_records(n, seed=12))
    # Small batches, short reads: after the last kill several reads are left (``stored < n`` below)
    capture = processes.start_capture("--pcap", str(pcap), "--sensor", "f2", "--batch-size", "50")
    with processes.running(capture):
        for i in range(KILLS):
            worker = processes.start_worker(concurrency=1, name=f"fault-worker-{i}")
            with processes.running(worker):
                sweep(redis_client)  # beat's job: the previous worker's task died with it
                wait_mid_batch(redis_client, "f2", above=(i + 1) * n // (KILLS + 2), timeout=60)
                worker.kill()  # kill -9 the main process and its pool at once
        assert stored("f2") < n
        last = processes.start_worker(concurrency=1, name="fault-worker-last")
        with processes.running(last):
            processes.wait_until(
                lambda: sweep(redis_client) is not None and stored("f2") >= n,
                timeout=90,
                interval=0.5,
                message="every packet stored by the new worker",
            )
            assert capture.popen.wait(30) == 0, capture.log()[-3000:]
            time.sleep(1)

    assert_stored_exactly_once("f2", n)
    assert pending_entries(redis_client, "f2") == 0  # every entry the dead workers read was acknowledged
    assert ingest.sensors_needing_ingest(redis_client) == []


def test_without_beat_capture_requeues_ingest_after_the_whole_worker_is_killed(tmp_path, redis_client):
    """No beat and no sweep from the test: capture's own re-queueing is all the recovery there is.

    The worker runs two processes, as in production: while one drains, the other takes each task
    capture queues, is locked out and leaves a follow-up (a countdown task the worker holds), so
    the broker's queue is empty and the sensor's "scheduled" flag is fresh when the worker dies.
    Its tasks die with it (unacknowledged for the broker's visibility timeout, an hour), capture
    publishes until the backlog reaches its bound (about a second at this pace), before the flag
    expires, and then waits without publishing. Capture must notice that the backlog does not
    move and queue the sensor's ingest again itself.
    """
    n = 30_000
    pcap = tmp_path / "paced.pcap"
    write_pcap(pcap, synthetic_records(n, seed=13))
    worker = processes.start_worker(concurrency=2, name="fault-nobeat-worker")
    capture = processes.start_capture(
        "--pcap", str(pcap), "--sensor", "f3", "--batch-size", "200", "--rate", "20000"
    )
    with processes.running(capture, worker):
        wait_mid_batch(redis_client, "f3", above=n // 6, timeout=60)
        worker.kill()  # kill -9 the main process and its pool at once
        worker.popen.wait(10)
        at_kill = stored("f3")
        last = processes.start_worker(concurrency=2, name="fault-nobeat-worker-new")
        with processes.running(last):
            processes.wait_until(
                lambda: stored("f3") >= n, timeout=90, interval=0.5, message="every packet stored, no beat"
            )
            assert capture.popen.wait(30) == 0, capture.log()[-3000:]
            time.sleep(1)  # nothing more may arrive

    assert at_kill < n
    assert_stored_exactly_once("f3", n)
    assert pending_entries(redis_client, "f3") == 0
    assert ingest.sensors_needing_ingest(redis_client) == []
