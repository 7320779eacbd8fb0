"""capture.stream against real Redis: one entry per batch, buffering, dropping oldest, recovery."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from capture.connections import fail_fast_client
from capture.records import RECORD_DTYPE, Batch, decode_batch
from capture.stream import DROP_UNAVAILABLE, StreamPublisher

SHARED_URL = "redis://127.0.0.1:6379/15"


def make_batch(first_seq: int, n: int, sensor: str = "s") -> Batch:
    records = np.zeros(n, dtype=RECORD_DTYPE)
    records["seq"] = np.arange(first_seq, first_seq + n)
    records["length"] = 60
    return Batch(sensor=sensor, records=records, interfaces=["eth0"], read_at=time.time())


@pytest.fixture
def shared() -> Iterator[tuple[redis.Redis, str]]:
    client = fail_fast_client(SHARED_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    prefix = f"test:capture:{uuid.uuid4().hex}:stream:"
    yield client, prefix
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A throwaway redis-server on its own port that the test can stop and start."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server not installed")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = fail_fast_client(self.url)
        for _ in range(100):
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


def test_one_entry_per_batch_with_callback(shared: tuple[redis.Redis, str]) -> None:
    client, prefix = shared
    seen: list[tuple[str, str, int]] = []
    pub = StreamPublisher(
        "s1",
        url=SHARED_URL,
        key_prefix=prefix,
        on_published=lambda sensor, entry, batch: seen.append((sensor, entry, batch.first_seq)),
    )
    for i in range(5):
        pub.publish(make_batch(i * 100, 100, "s1"))
    assert pub.close()
    entries = client.xrange(prefix + "s1")
    assert len(entries) == 5
    assert [e[0].decode() for e in entries] == [entry for _, entry, _ in seen]
    assert [s for s, _, _ in seen] == ["s1"] * 5
    batches = [decode_batch(fields) for _, fields in entries]
    assert [b.first_seq for b in batches] == [0, 100, 200, 300, 400]
    assert all(len(b.records) == 100 and b.interfaces == ["eth0"] and b.published_at > 0 for b in batches)
    assert pub.stats()["published_packets"] == 500 and pub.published_batches == 5
    assert pub.dropped == {}


def test_stream_is_trimmed_to_about_max_entries(shared: tuple[redis.Redis, str]) -> None:
    client, prefix = shared
    pub = StreamPublisher("trim", url=SHARED_URL, key_prefix=prefix, buffer_size=1000, batch_size=100)
    assert pub.max_entries == 16  # ceil(1000 / 100) = 10, raised to the minimum
    for i in range(600):
        pub.publish(make_batch(i * 10, 10))
    pub.close()
    # MAXLEN ~ trims whole stream nodes (100 entries by default), so allow one node of slack
    assert 16 <= client.xlen(prefix + "trim") <= 16 + 100


def test_failing_callback_does_not_stop_publishing(shared: tuple[redis.Redis, str]) -> None:
    client, prefix = shared

    def boom(*_: object) -> None:
        raise RuntimeError("celery down")

    pub = StreamPublisher("cb", url=SHARED_URL, key_prefix=prefix, on_published=boom)
    pub.publish(make_batch(0, 10))
    pub.publish(make_batch(10, 10))
    pub.close()
    assert client.xlen(prefix + "cb") == 2
    assert pub.callback_errors == 2


def test_unreachable_redis_buffers_and_drops_oldest_without_blocking() -> None:
    pub = StreamPublisher("down", url="redis://127.0.0.1:1/0", buffer_size=500, batch_size=100)
    start = time.monotonic()
    for i in range(10):
        pub.publish(make_batch(i * 100, 100))
    assert time.monotonic() - start < 1.0  # back-off: not one connection attempt per batch
    assert not pub.connected
    assert pub.pending_packets == 500 and pub.pending_batches == 5
    assert pub.dropped == {DROP_UNAVAILABLE: 500}
    assert [b.first_seq for b in pub._queue] == [500, 600, 700, 800, 900]  # the oldest went
    assert "Connection refused" in pub.last_error or "connecting" in pub.last_error
    assert not pub.flush(timeout=0.3)
    pub.close(timeout=0.1)
    assert pub.dropped == {DROP_UNAVAILABLE: 1000}
    assert pub.published_packets == 0


def test_backoff_doubles_and_is_capped() -> None:
    now = [1000.0]
    pub = StreamPublisher(
        "bo",
        url="redis://127.0.0.1:1/0",
        backoff_initial=0.1,
        backoff_max=1.0,
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )
    delays = []
    pub.publish(make_batch(0, 1))
    for _ in range(7):
        delays.append(round(pub.retry_in, 3))
        now[0] += pub.retry_in
        pub.publish(make_batch(0, 1))
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    attempts = pub.failures
    pub.publish(make_batch(0, 1))  # inside the pause: queued, no attempt
    assert pub.failures == attempts
    pub.close(timeout=0)


def test_recovers_when_redis_comes_back_and_pipelines_the_backlog(private: PrivateRedis) -> None:
    published: list[int] = []
    pub = StreamPublisher(
        "rec",
        url=private.url,
        buffer_size=10_000,
        batch_size=100,
        backoff_initial=0.05,
        backoff_max=0.2,
        on_published=lambda _s, _e, b: published.append(b.first_seq),
    )
    pub.publish(make_batch(0, 100))
    assert pub.published_batches == 1
    private.stop()
    for i in range(1, 21):
        pub.publish(make_batch(i * 100, 100))
    assert pub.pending_batches == 20 and not pub.connected
    private.start()
    trips_before = pub.round_trips
    assert pub.flush(timeout=10)
    assert pub.reconnects == 1
    assert pub.pending_packets == 0 and pub.published_batches == 21
    assert published == [i * 100 for i in range(21)]  # in order
    client = fail_fast_client(private.url)
    entries = client.xrange("netmon:stream:rec")
    # the restarted server has no persistence: it holds exactly the backlog, in order
    assert [decode_batch(f).first_seq for _, f in entries] == [i * 100 for i in range(1, 21)]
    # the backlog went in a pipeline, not one round trip per batch (plus failed attempts)
    successful_trips = pub.round_trips - trips_before - (pub.failures - 1)
    assert successful_trips <= 2
    client.close()
    pub.close()


def test_recovery_after_overflow_keeps_newest(private: PrivateRedis) -> None:
    pub = StreamPublisher("ovf", url=private.url, buffer_size=300, batch_size=100, backoff_initial=0.05)
    private.stop()
    for i in range(10):
        pub.publish(make_batch(i * 100, 100))
    private.start()
    assert pub.flush(timeout=10)
    client = fail_fast_client(private.url)
    seqs = [decode_batch(f).first_seq for _, f in client.xrange("netmon:stream:ovf")]
    assert seqs == [700, 800, 900]
    assert pub.dropped[DROP_UNAVAILABLE] == 700
    client.close()
    pub.close()
