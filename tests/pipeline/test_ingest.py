"""Draining a sensor stream into the database: in order, exactly once, gaps counted as dropped."""

from __future__ import annotations

import random

import numpy as np
import pytest

from capture.models import Flow, IngestedBatch, Packet, Sensor
from capture.records import Batch, empty_records, encode_batch, ip_to_bytes, stream_key
from detection import ingest

pytestmark = pytest.mark.django_db(transaction=True)


def make_records(first_seq: int, n: int, t0: float = 1_700_000_000.0) -> np.ndarray:
    r = empty_records(n)
    r["seq"] = np.arange(first_seq, first_seq + n)
    r["ts"] = t0 + r["seq"] * 0.001
    r["eth_type"] = 0x0800
    r["ip_version"] = 4
    r["proto"] = 6
    r["src_ip"] = np.frombuffer(ip_to_bytes("10.0.0.5"), dtype=np.uint8)
    r["dst_ip"] = np.frombuffer(ip_to_bytes("93.184.216.34"), dtype=np.uint8)
    r["sport"] = 40000 + (r["seq"] % 3)
    r["dport"] = 443
    r["length"] = 100
    r["tcp_flags"] = 16
    r["ttl"] = 64
    return r


def publish(client, sensor: str, first_seq: int, n: int) -> bytes:
    batch = Batch(sensor=sensor, records=make_records(first_seq, n), interfaces=["eth0"])
    return client.xadd(stream_key(sensor), encode_batch(batch))


def test_drain_stores_every_packet_once_with_flows(redis_client):
    for first in (1, 101, 201):
        publish(redis_client, "s1", first, 100)

    result = ingest.drain_sensor("s1", redis_client)

    assert result.packets == 300
    assert Packet.objects.count() == 300
    assert sorted(Packet.objects.values_list("seq", flat=True)) == list(range(1, 301))
    sensor = Sensor.objects.get(name="s1")
    assert (sensor.packets_stored, sensor.packets_dropped_stream, sensor.last_seq_ingested) == (300, 0, 300)
    flows = {(f.src_port, f.packets) for f in Flow.objects.all()}
    assert flows == {(40000, 100), (40001, 100), (40002, 100)}
    flow = Flow.objects.get(src_port=40000)
    assert flow.bytes == 100 * 100
    assert flow.first_seen < flow.last_seen
    packet = Packet.objects.get(seq=7)
    assert (packet.src_ip, packet.dst_ip, packet.protocol, packet.dst_port, packet.interface) == (
        "10.0.0.5", "93.184.216.34", "TCP", 443, "eth0",
    )  # fmt: skip


def test_second_drain_and_redelivery_store_nothing_twice(redis_client):
    publish(redis_client, "s1", 1, 50)
    ingest.drain_sensor("s1", redis_client)
    # The same batch published again (e.g. capture restarted and re-read a pcap)
    publish(redis_client, "s1", 1, 50)

    again = ingest.drain_sensor("s1", redis_client)

    assert again.packets == 0
    assert Packet.objects.count() == 50
    assert IngestedBatch.objects.count() == 1


def test_a_read_upserts_the_flows_of_the_batches_it_stores_now_once(redis_client):
    """The flows of a read are upserted together, of the batches stored now only: a read that
    meets a batch stored before (its receipt; the worker died before it saved its state) adds
    only the new batch's packets to the flows."""
    publish(redis_client, "s1", 1, 51)
    ingest.drain_sensor("s1", redis_client)
    stale = ingest.SensorState(last_seq=0).dumps()  # the state of before that commit
    redis_client.set(ingest._state_key("s1"), stale)
    publish(redis_client, "s1", 1, 51)  # redelivered
    publish(redis_client, "s1", 52, 51)

    again = ingest.drain_sensor("s1", redis_client)

    assert (again.packets, again.skipped) == (51, 1)
    assert Packet.objects.count() == 102
    flows = {(f.src_port, f.packets, f.bytes) for f in Flow.objects.all()}
    assert flows == {(40000, 34, 3400), (40001, 34, 3400), (40002, 34, 3400)}
    first = Flow.objects.get(src_port=40000)
    assert first.first_seen < first.last_seen


def test_unacknowledged_entry_of_a_dead_worker_is_processed(redis_client):
    publish(redis_client, "s1", 1, 40)
    ingest.ensure_group(redis_client, "s1")
    # A worker read the entry and died before acknowledging it
    redis_client.xreadgroup(ingest.GROUP, ingest.CONSUMER, {stream_key("s1"): ">"}, count=1)

    result = ingest.drain_sensor("s1", redis_client)

    assert result.packets == 40
    assert redis_client.xpending(stream_key("s1"), ingest.GROUP)["pending"] == 0


def test_gap_in_sequence_is_counted_as_dropped(redis_client):
    publish(redis_client, "s1", 1, 100)
    # seq 101..250 were trimmed away before any worker saw them
    publish(redis_client, "s1", 251, 100)

    ingest.drain_sensor("s1", redis_client)

    sensor = Sensor.objects.get(name="s1")
    assert sensor.packets_stored == 200
    assert sensor.packets_dropped_stream == 150
    assert sensor.packets_stored + sensor.packets_dropped_stream == 350


def test_locked_sensor_is_left_to_the_lock_holder(redis_client):
    publish(redis_client, "s1", 1, 10)
    lock = redis_client.lock("netmon:lock:ingest:s1", timeout=5)
    assert lock.acquire(blocking=False)

    result = ingest.drain_sensor("s1", redis_client)

    assert result.locked_out
    assert Packet.objects.count() == 0
    lock.release()


def _queued_ingest_tasks(client) -> list[dict]:
    """Ingest tasks waiting in the Celery queue (kombu's Redis transport: a list named after it)."""
    import json

    messages = [json.loads(raw) for raw in client.lrange("celery", 0, -1)]
    return [
        m["headers"] | {"body": m["body"]}
        for m in messages
        if m["headers"]["task"] == "detection.ingest_sensor"
    ]


def test_locked_out_tasks_leave_one_follow_up_which_drains_once_the_lock_is_free(redis_client):
    from detection import tasks

    publish(redis_client, "s1", 1, 10)
    lock = redis_client.lock("netmon:lock:ingest:s1", timeout=5)
    assert lock.acquire(blocking=False)

    for _ in range(5):  # a storm of tasks while another worker holds the sensor
        assert tasks.ingest_sensor.apply(args=("s1",)).get()["locked_out"]

    queued = _queued_ingest_tasks(redis_client)
    assert len(queued) == 1  # not one retry per task
    assert queued[0]["eta"] is not None  # after a short delay

    # the follow-up finds the sensor still locked: it queues the next one, again only one
    redis_client.delete("celery")
    assert tasks.ingest_sensor.apply(args=("s1",), kwargs={"follow_up": True}).get()["locked_out"]
    assert len(_queued_ingest_tasks(redis_client)) == 1
    assert Packet.objects.count() == 0

    # once the holder is done, the follow-up drains what it left
    lock.release()
    redis_client.delete("celery")
    assert tasks.ingest_sensor.apply(args=("s1",), kwargs={"follow_up": True}).get()["packets"] == 10
    assert Packet.objects.count() == 10
    assert _queued_ingest_tasks(redis_client) == []


def test_garbage_stream_entry_is_skipped_without_blocking_the_rest(redis_client):
    redis_client.xadd(stream_key("s1"), {b"h": b"\xc1garbage", b"r": b"xx"})
    publish(redis_client, "s1", 1, 10)

    result = ingest.drain_sensor("s1", redis_client)

    assert result.packets == 10


def test_stream_lost_in_redis_restart_recovers(redis_client):
    publish(redis_client, "s1", 1, 10)
    ingest.drain_sensor("s1", redis_client)
    redis_client.flushdb()  # what a restart of a Redis without persistence does
    publish(redis_client, "s1", 11, 10)

    result = ingest.drain_sensor("s1", redis_client)

    assert result.packets == 10
    assert Sensor.objects.get(name="s1").packets_stored == 20


def test_sweeper_finds_streams_with_unprocessed_entries(redis_client):
    publish(redis_client, "s1", 1, 10)
    publish(redis_client, "s2", 1, 10)
    ingest.drain_sensor("s2", redis_client)

    assert ingest.sensors_needing_ingest(redis_client) == ["s1"]


def _ingest_task():
    """The Celery task by its name, wherever the module that defines it lives."""
    from netmon.celery import app

    app.loader.import_default_modules()  # what a worker does at start: the apps' tasks modules
    return app.tasks["detection.ingest_sensor"]


def test_batches_in_random_task_order_give_the_in_order_result(redis_client):
    """Each published batch queues a task; the tasks run late and in any order (the task of batch 5
    may run before that of batch 2). Each must drain everything the stream has, in stream order."""
    task = _ingest_task()
    arrivals = list(range(8))
    random.Random(4).shuffle(arrivals)
    assert arrivals != sorted(arrivals)
    published, expected, drained = 0, [], []

    for k in arrivals:
        new = 0
        while published <= k:  # batch k's task can only arrive once batch k is in the stream
            publish(redis_client, "s1", 1 + 25 * published, 25)
            published, new = published + 1, new + 25
        expected.append(new)
        drained.append(task.apply(args=("s1",)).get()["packets"])

    assert drained == expected  # every task took all that was there, not only "its" batch
    assert len([n for n in drained if n]) > 1  # the schedule did split the stream between tasks
    assert list(Packet.objects.order_by("id").values_list("seq", flat=True)) == list(range(1, 201))
    sensor = Sensor.objects.get(name="s1")
    assert (sensor.packets_stored, sensor.packets_dropped_stream, sensor.last_seq_ingested) == (200, 0, 200)
    # the same batches drained by one task in one go: the same flows
    for i in range(8):
        publish(redis_client, "ref", 1 + 25 * i, 25)
    assert task.apply(args=("ref",)).get()["packets"] == 200

    def flows(name: str) -> list[tuple]:
        return sorted(
            Flow.objects.filter(sensor__name=name).values_list(
                "src_port", "packets", "bytes", "first_seen", "last_seen"
            )
        )

    assert flows("s1") == flows("ref")
