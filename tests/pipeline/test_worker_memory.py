"""What keeps a worker pool process's memory flat: one Redis client per process, prompt collection of
the cyclic garbage that retried tasks leave behind."""

from __future__ import annotations

import gc
import weakref

import pytest
from django.test import override_settings

from capture import connections
from capture.connections import redis_client
from netmon import celery as netmon_celery


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Cycle:
    """A reference cycle holding a payload, like a retried task's exception, traceback and frames."""

    def __init__(self) -> None:
        self.me = self
        self.payload = [(i, i) for i in range(1000)]


@pytest.fixture
def collector():
    wall, cpu = Clock(), Clock()
    c = netmon_celery.GarbageCollector(interval=5.0, budget=0.01, clock=wall, cpu_clock=cpu)
    c.wall, c.cpu = wall, cpu
    yield c
    gc.unfreeze()  # start() froze this test process's objects


def garbage_cycle() -> weakref.ref:
    ref = weakref.ref(Cycle())
    assert ref() is not None  # a cycle: reference counting alone does not free it
    return ref


def test_collector_does_nothing_outside_a_worker_pool_process(collector):
    gc.disable()
    try:
        ref = garbage_cycle()
        collector.wall.now = 100.0
        collector.after_task()
        assert ref() is not None
        assert collector.collections == 0
    finally:
        gc.enable()


def test_collector_collects_cycles_once_the_interval_has_passed(collector):
    collector.start()
    assert gc.get_freeze_count() > 0  # start-up objects are never walked again
    gc.disable()  # only the collector may collect in this test
    try:
        ref = garbage_cycle()
        collector.wall.now = 4.9
        collector.after_task()
        assert ref() is not None and collector.collections == 0

        collector.wall.now = 5.0
        collector.after_task()
        assert ref() is None and collector.collections == 1
    finally:
        gc.enable()


def test_collector_spaces_collections_to_stay_within_its_cpu_budget(collector, monkeypatch):
    collector.start()

    def slow_collect():
        collector.cpu.now += 0.2  # a collection that costs 200 ms of CPU

    collector.wall.now = 5.0
    with monkeypatch.context() as patch:
        patch.setattr(gc, "collect", slow_collect)
        collector.after_task()
    assert collector.collections == 1
    assert collector.gap == pytest.approx(20.0)  # 0.2 s is 1 % of 20 s

    collector.wall.now = 5.0 + 19.0
    collector.after_task()
    assert collector.collections == 1
    collector.wall.now = 5.0 + 20.0
    collector.after_task()
    assert collector.collections == 2
    assert collector.gap == pytest.approx(5.0)  # a cheap collection: back to the interval


def test_ingest_reuses_one_redis_client_per_process(monkeypatch):
    first = redis_client()
    assert redis_client() is first

    with override_settings(REDIS_URL="redis://127.0.0.1:6379/14"):
        other = redis_client()
        assert other is not first
        assert other.connection_pool.connection_kwargs["db"] == 14

    # A forked pool process builds its own client (the parent's connections are not its to use).
    monkeypatch.setattr(connections.os, "getpid", lambda: -1)
    assert redis_client() is not first
