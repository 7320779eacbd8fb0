"""Fault-test helpers: a private Redis that may be restarted, a TCP proxy that can cut the database,
the beat sweeper run from the test, and the accounting every fault test checks at the end.

Never restart or flush anything but what a test started itself: the shared Redis on 6379 and the
lead's databases are left alone (``redis_client`` only flushes the test database of REDIS_URL).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from capture.models import IngestedBatch, Packet, Sensor
from capture.records import stream_key
from detection import ingest
from tests import processes

REDIS_SERVER = shutil.which("redis-server")


def stored(sensor: str) -> int:
    return Packet.objects.filter(sensor__name=sensor).count()


def seqs_of(sensor: str) -> list[int]:
    return list(Packet.objects.filter(sensor__name=sensor).order_by("seq").values_list("seq", flat=True))


def assert_stored_exactly_once(sensor: str, n: int) -> None:
    """Seqs 1..n, each once; the receipts cover the same packets; the counters agree."""
    seqs = seqs_of(sensor)
    assert len(seqs) == len(set(seqs)), "a packet was stored twice"
    missing = sorted(set(range(1, n + 1)) - set(seqs))
    assert not missing, f"{len(missing)} packets lost, first {missing[:10]}"
    assert seqs == list(range(1, n + 1))
    receipts = IngestedBatch.objects.filter(sensor__name=sensor)
    assert sum(receipts.values_list("count", flat=True)) == n
    row = Sensor.objects.get(name=sensor)
    assert row.packets_stored == n
    assert row.packets_dropped_stream == 0
    assert row.last_seq_ingested == n


def pending_entries(client: redis.Redis, sensor: str) -> int:
    """Stream entries a worker has read but not acknowledged (it is in the middle of a batch)."""
    try:
        return int(client.xpending(stream_key(sensor), ingest.GROUP)["pending"])
    except redis.ResponseError:  # no stream or group yet
        return 0


def sweep(client: redis.Redis) -> list[str]:
    """What beat's ``detection.sweep_streams`` does every 5 s, done from the test process.

    (Beat itself is not started: its retention task would prune the 2023-dated synthetic packets.)
    """
    from detection.tasks import ingest_sensor

    sensors = ingest.sensors_needing_ingest(client)
    for sensor in sensors:
        if ingest.mark_scheduled(client, sensor):
            ingest_sensor.delay(sensor)
    return sensors


def pool_children(proc: processes.Proc) -> list[int]:
    """Pids of the prefork pool processes of a Celery worker (the ones that run tasks)."""
    pid = proc.popen.pid
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --- a Redis of the test's own, that the test may kill and restart ------------------------------------


@dataclass
class PrivateRedis:
    port: int
    workdir: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def env(self) -> dict[str, str]:
        """Overrides for processes.process_env: everything that talks to Redis talks to this one."""
        return {"REDIS_URL": self.url, "CELERY_BROKER_URL": self.url, "CHANNELS_REDIS_URL": self.url}

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=2)

    def start(self) -> None:
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        processes.wait_until(self._pings, timeout=10, interval=0.05, message=f"redis on {self.port}")

    def _pings(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """kill -9: whatever was in memory (streams, queued tasks, locks, state) is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, down_for: float = 0.0) -> None:
        self.kill()
        time.sleep(down_for)
        self.start()


@pytest.fixture
def private_redis(tmp_path):
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(port=processes.free_port(), workdir=tmp_path)
    server.start()
    yield server
    server.kill()


# --- a TCP proxy between the processes and PostgreSQL, so the test can take the database away ----------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``cut()`` closes every connection and refuses new ones
    (the listening socket is closed, so clients get "connection refused") until ``restore()``."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = processes.free_port()
        self._listener: socket.socket | None = None
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._loop, name="db-proxy", daemon=True)
        self.connections = 0

    def start(self) -> TcpProxy:
        self._listen()
        self._thread.start()
        return self

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.setblocking(False)
        with self._lock:
            self._listener = listener
            self._sel.register(listener, selectors.EVENT_READ, None)

    def cut(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._sel.unregister(self._listener)
                self._listener.close()
                self._listener = None
            for a, b in self._pairs:
                for s in (a, b):
                    with contextlib.suppress(KeyError, ValueError):
                        self._sel.unregister(s)
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                    s.close()
            self._pairs.clear()

    def restore(self) -> None:
        self._listen()

    def stop(self) -> None:
        self._stop.set()
        self.cut()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                has_sockets = bool(self._sel.get_map())
            if not has_sockets:
                time.sleep(0.05)
                continue
            try:
                events = self._sel.select(timeout=0.05)
            except (OSError, ValueError):
                continue
            for key, _ in events:
                with self._lock:
                    self._handle(key)

    def _handle(self, key) -> None:
        sock = key.fileobj
        if key.data is None:  # the listener
            if sock is not self._listener:
                return
            try:
                client, _ = sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                return
            self.connections += 1
            self._pairs.append((client, upstream))
            self._sel.register(client, selectors.EVENT_READ, upstream)
            self._sel.register(upstream, selectors.EVENT_READ, client)
            return
        peer = key.data
        try:
            data = sock.recv(65536)
            if data:
                peer.sendall(data)
                return
        except OSError:
            pass
        for s in (sock, peer):  # one side closed: close both
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(s)
            s.close()
        self._pairs = [p for p in self._pairs if sock not in p]
