"""WebSocket latency benchmark: from a packet read by capture to its message on a WebSocket client.

    .venv/bin/python bench/latency.py [--rate 10000] [--baseline-rate 1000] [--clients 20]
                                      [--seconds 20] [--warmup 5] [--workers 2] [--drain-timeout 30]
                                      [--pace steady|demo]

Target (issue 6): p95 under 1 s and p99 under 2 s at 10,000 packets/s offered with 20 clients
connected, for ``packet_captured`` and for ``anomaly_detected``. Exit status 0 on PASS, 1 on FAIL.

Everything is real and runs on this machine: daphne (``netmon.asgi``), a Celery worker
(``--concurrency 2``) and ``manage.py capture`` reading the demo's traffic (seed 7, attacks
included; with ``--pace demo``, ``capture --demo`` at a ``--rate`` chosen so that, with its
attacks on top of its benign traffic, it offers the run's rate in all: ``demo_rate``); on Redis
database 9 (flushed at the start and the end) and the SQLite file var/bench-latency.sqlite3 (deleted, then
migrated); logs go to var/bench-latency/. ``buffer_size`` is set to 100,000 packets (10 s at
10,000 pps) so that a worker falling behind shows as latency rather than being hidden by drops.
An isolation-forest model is trained per rate on benign demo traffic of that rate's timing and
activated before the run, so the worker scores every packet and the demo's attacks (and some
false positives) become anomalies. The clients connect to ``/ws/monitor/?token=...`` with
``MonitorClient`` below (stdlib asyncio; see its docstring for why not a library).

``--pace``: ``steady`` (the default, what the target's "10,000 packets/s offered" means) writes
the packets ``capture --demo`` would read (same seed, attacks and timestamps) to a pcap and
replays it with ``capture --pcap --rate``, which reads them at exactly the offered rate, floods
included; ``demo`` runs ``capture --demo`` at its simulated timing, where a flood raises the rate
read to about 3.5 times the average for a few seconds (a stress beyond the target).

Latency, from the capture process's ``time.time()`` when it read a batch to the client's
``time.time()`` when the frame arrived (same host, same clock):

* ``packet_captured``: arrival - ``first_read_at`` (when the oldest batch merged into the message
  was read), so each message counts at the latency of its oldest packet.
* ``anomaly_detected``: arrival - ``anomaly.read_at`` (when the flagged packet's batch was read:
  capture -> Redis stream -> Celery ingest and scoring -> channel layer -> daphne -> client).
* ``stats`` (for information): arrival - ``ts`` (when the capture process computed them).

A listener on the channel-layer groups in this process (no daphne, no consumer) measures the same
for the group messages, which splits the latency into "producers" and "consumer + daphne".
Samples read in the first ``--warmup`` seconds after capture's first packet are left out (worker
processes load the model on their first batch); how many, and their worst latency, is printed.
After capture stops, the bench waits (up to ``--drain-timeout``) until the worker has stored all
that was published, so slow anomalies are counted rather than cut off.

Baselines in the same run: (1) the floor of the delivery path, probes ``group_send`` straight to
the channel layer (no capture, no worker) and received by the same 20 clients; (2) the whole
pipeline at ``--baseline-rate`` (1,000 pps). CPU use of daphne and the worker, the load average
and the client process's own event-loop lag are printed, because on a small shared machine they
decide the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VAR = ROOT / "var"
DB_PATH = VAR / "bench-latency.sqlite3"
LOG_DIR = VAR / "bench-latency"
BIN = Path(sys.executable).parent
REDIS_URL = "redis://127.0.0.1:6379/9"
PREFIX = f"netmon:bench-latency:{secrets.token_hex(4)}"
P95_TARGET, P99_TARGET = 1.0, 2.0
PROBE_SENSOR = "bench-probe"
USERNAME = "bench-latency"


def configure_environment() -> None:
    """The settings every process of the run shares (this one included: it reads the database)."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="netmon.settings",
        NETMON_ENV="development",
        DEBUG="0",  # no per-query bookkeeping in the worker, as in production
        SECRET_KEY=os.environ.get("BENCH_SECRET_KEY") or secrets.token_urlsafe(40),
        DATABASE_URL=f"sqlite:///{DB_PATH}",
        REDIS_URL=REDIS_URL,
        CELERY_BROKER_URL=REDIS_URL,
        CHANNELS_REDIS_URL=REDIS_URL,
        CHANNELS_PREFIX=PREFIX,
        NETMON_MODEL_DIR=str(LOG_DIR / "models"),
        PYTHONUNBUFFERED="1",
    )


# --- processes ------------------------------------------------------------------------------------


class Proc:
    """A started subprocess (own session, so it and its children stop together) with its log file."""

    def __init__(self, name: str, args: list[str]) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOG_DIR / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {text!r} after {timeout}s:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM to the main process (a Celery worker shuts its pool down), then kill the group."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # leftovers of the group, if any
        self._log.close()
        return self.popen.returncode

    def cpu_seconds(self) -> float:
        """User + system CPU time of the live processes of this process group (Linux /proc)."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.popen.pid:  # pgrp
                    total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- set-up ---------------------------------------------------------------------------------------


def prepare_database(
    model: str, rates: list[float], seconds: float = 60.0
) -> tuple[str, dict[float, int], list[str]]:
    """A fresh migrated database with a user and its token, and one trained model per rate.

    The demo source plays its simulated network faster or slower to offer ``rate`` (its timeline
    is scaled by ``DemoTraffic.pps / rate``), which changes every per-second feature; a model is
    trained on benign traffic of the same timing, as an operator trains on their own network.
    Returns (token, {rate: model id}, descriptions).
    """
    import django

    for suffix in ("", "-wal", "-shm"):
        Path(f"{DB_PATH}{suffix}").unlink(missing_ok=True)
    django.setup()
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from capture.choices import Role
    from capture.demo import DemoTraffic
    from capture.pcapwriter import write_pcap
    from capture.services import update_config
    from detection.models import DetectionModel
    from netmon.roles import create_user

    call_command("migrate", "--noinput", verbosity=0)
    user, _password = create_user(USERNAME, Role.VIEWER)  # the dashboard's client: a viewer
    token = Token.objects.create(user=user).key
    # 100,000 packets of stream backlog (10 s at 10,000 pps) before capture drops the oldest.
    # ml_model is switched after training (it may only name a kind with an active model).
    update_config(
        {"network_interface": "demo", "feature_level": "standard", "buffer_size": 100_000}, source="bench"
    )
    models, descriptions = {}, []
    for rate in rates:
        traffic = DemoTraffic(seed=1, attack_prob=0.0)
        records = traffic.records(30_000)
        benign_rate = demo_rate(rate, seconds)
        records["ts"] = records["ts"][0] + (records["ts"] - records["ts"][0]) * (traffic.pps / benign_rate)
        benign = LOG_DIR / f"benign-{int(rate)}.pcap"
        write_pcap(benign, records)
        call_command(
            "train_detector", "--pcap", str(benign), "--model", model, "--use",
            stdout=open(os.devnull, "w"),  # noqa: SIM115
        )  # fmt: skip
        row = DetectionModel.objects.get(is_active=True)
        models[rate] = row.pk
        descriptions.append(
            f"{row.kind} v{row.version} ({row.feature_level} features) for {rate:,.0f} pps: trained on "
            f"{row.packet_count:,} benign demo packets in {row.training_seconds:.1f} s, "
            f"threshold {row.threshold:.4g}"
        )
    return token, models, descriptions


DEMO_SEED = 7
DEMO_ATTACK_PROB = 0.02  # capture.sources.demo_chunks' default, what `capture --demo` injects


@functools.cache
def demo_rate(offered: float, seconds: float) -> float:
    """The demo's ``--rate`` that offers ``offered`` packets/s in all over a run of ``seconds``.

    The demo's rate is that of its benign traffic, and its attacks come on top (a flood adds
    thousands of packets a second): at ``--rate 10000`` capture would read ~12,500/s. This plays
    the same simulated network (same seed and attack probability as the capture command) for as
    many packets as the run should read, and scales the rate down by its share of attack packets.
    """
    from capture.demo import DemoTraffic

    traffic = DemoTraffic(seed=DEMO_SEED, attack_prob=DEMO_ATTACK_PROB)
    records = traffic.records(int(offered * seconds))
    span = float(records["ts"][-1] - records["ts"][0])
    total_over_benign = len(records) / (span * traffic.pps) if span > 0 else 1.0
    return offered / max(total_over_benign, 1.0)


def activate(model_id: int) -> None:
    """The worker's model cache follows the active row from its next batch on."""
    from django.db import close_old_connections

    from detection.models import DetectionModel
    from detection.services import activate_model

    close_old_connections()
    activate_model(DetectionModel.objects.get(pk=model_id))


def sensor_counters(name: str) -> dict[str, int]:
    from django.db import close_old_connections

    from capture.models import Sensor
    from detection.models import Anomaly

    close_old_connections()
    sensor = Sensor.objects.filter(name=name).first()
    if sensor is None:
        return {}
    return {
        "read": sensor.packets_read,
        "published": sensor.last_seq_published,
        "ingested": sensor.last_seq_ingested,
        "stored": sensor.packets_stored,
        "dropped_capture": sensor.packets_dropped_capture,
        "dropped_stream": sensor.packets_dropped_stream,
        "anomalies": Anomaly.objects.filter(sensor=sensor).count(),
    }


# --- WebSocket clients ----------------------------------------------------------------------------


@dataclass
class Sample:
    kind: str  # packet_captured, anomaly_detected, stats, probe
    sensor: str
    origin: float  # read time (or send time for probes, computation time for stats)
    latency: float


@dataclass
class ClientLog:
    samples: list[Sample] = field(default_factory=list)
    messages: Counter = field(default_factory=Counter)  # (sensor, type) -> count
    packets: Counter = field(default_factory=Counter)  # sensor -> packets received
    dropped: Counter = field(default_factory=Counter)  # sensor -> packets the consumer coalesced away
    anomaly_ids: dict[str, set] = field(default_factory=lambda: defaultdict(set))
    rates: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # stats packets_per_s


def record(log: ClientLog, arrived: float, message: dict[str, Any]) -> None:
    """One message a client (or the channel-layer tap, with dotted group types) received."""
    kind = str(message.get("type", "")).replace(".", "_")
    if kind == "packet_captured":
        sensor = message["sensor"]
        log.packets[sensor] += len(message["packets"])
        log.dropped[sensor] += message.get("dropped", 0)
        # A client's message spans batches (first_read_at: the oldest); a group message is one push.
        origin = message.get("first_read_at", message["read_at"])
    elif kind == "anomaly_detected":
        anomaly = message["anomaly"]
        sensor = anomaly["sensor"]
        origin = anomaly["read_at"]
        if sensor == PROBE_SENSOR:
            kind = "probe"
        else:
            log.anomaly_ids[sensor].add(anomaly["id"])
    elif kind == "stats":
        sensor, origin = message["sensor"], message["ts"]
        log.rates[sensor].append(message["packets_per_s"])
    else:
        log.messages[("", kind)] += 1
        return
    log.messages[(sensor, kind)] += 1
    log.samples.append(Sample(kind, sensor, origin, arrived - origin))


class MonitorClient:
    """A minimal RFC 6455 client on asyncio streams (stdlib only) for /ws/monitor/.

    No WebSocket client library is installed (``websockets`` is not a dependency) and autobahn,
    which comes with daphne, cannot run on asyncio in a process where Django has loaded daphne
    (txaio is bound to Twisted there). Text frames only, as the protocol needs; answers pings and
    the closing handshake. Every message is stamped with ``time.time()`` the moment its last frame
    is read, then handed to ``on_message(arrived, message)`` if given, and queued for ``receive()``
    while ``queue_messages`` is true.
    """

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, on_message=None) -> None:
        self.reader, self.writer = reader, writer
        self.on_message = on_message
        self.messages: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self.queue_messages = True
        self.close_code: int | None = None
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self._reader_task: asyncio.Task | None = None

    @classmethod
    async def connect(
        cls, url: str, *, origin: str | None = None, timeout: float = 15.0, on_message=None
    ) -> MonitorClient:
        parts = urlsplit(url)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, parts.port or 80, limit=1 << 24), timeout
        )
        key = base64.b64encode(os.urandom(16)).decode()
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        writer.write(
            (
                f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: {origin or 'http://' + parts.netloc}\r\n\r\n"
            ).encode()
        )
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)).decode("latin-1")
        status, *lines = head.split("\r\n")
        fields = (line.partition(":") for line in lines if line)
        headers = {name.strip().lower(): value.strip() for name, _, value in fields}
        accept = base64.b64encode(hashlib.sha1((key + cls.GUID).encode()).digest()).decode()  # noqa: S324
        if status.split(" ")[1:2] != ["101"] or headers.get("sec-websocket-accept") != accept:
            writer.close()
            raise ConnectionError(f"WebSocket handshake refused: {status}")
        client = cls(reader, writer, on_message)
        client._reader_task = asyncio.create_task(client._read_frames())
        return client

    async def _read_frames(self) -> None:
        parts: list[bytes] = []
        code = 1006  # connection lost without a close frame
        try:
            while True:
                b0, b1 = await self.reader.readexactly(2)
                opcode, length = b0 & 0x0F, b1 & 0x7F
                if length == 126:
                    (length,) = struct.unpack("!H", await self.reader.readexactly(2))
                elif length == 127:
                    (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
                if b1 & 0x80:  # servers must not mask; unmask anyway
                    payload = _mask(await self.reader.readexactly(4), await self.reader.readexactly(length))
                else:
                    payload = await self.reader.readexactly(length)
                if opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    with contextlib.suppress(ConnectionError):
                        self._send_frame(0x8, payload[:2])
                    break
                if opcode == 0x9:
                    self._send_frame(0xA, payload)
                    continue
                if opcode in (0x0, 0x1, 0x2):
                    parts.append(payload)
                    if b0 & 0x80:  # FIN: the message is complete
                        arrived = time.time()
                        message = json.loads(b"".join(parts))
                        parts = []
                        if self.on_message is not None:
                            self.on_message(arrived, message)
                        if self.queue_messages:
                            self.messages.put_nowait((arrived, message))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.close_code = code
            self.writer.close()
            if not self.closed.done():
                self.closed.set_result(code)

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        self.writer.write(header + mask + _mask(mask, payload))

    def send(self, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        self._send_frame(0x1, text.encode())

    async def receive(self, timeout: float = 10.0) -> dict[str, Any]:
        return (await asyncio.wait_for(self.messages.get(), timeout))[1]

    async def close(self, code: int = 1000) -> None:
        if not self.closed.done():
            with contextlib.suppress(ConnectionError):
                self._send_frame(0x8, struct.pack("!H", code))
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), 5)
            except TimeoutError:
                self.writer.close()
                if self._reader_task is not None:
                    self._reader_task.cancel()


def _mask(mask: bytes, payload: bytes) -> bytes:
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


class MonitorSocket:
    """A benchmark client: a MonitorClient whose every message is recorded in ``log``."""

    def __init__(self, client: MonitorClient, log: ClientLog) -> None:
        self.client, self.log = client, log

    @classmethod
    async def connect(cls, url: str, timeout: float = 15.0) -> MonitorSocket:
        log = ClientLog()
        client = await MonitorClient.connect(
            url, timeout=timeout, on_message=lambda arrived, message: record(log, arrived, message)
        )
        greeting = await client.receive(timeout)
        if greeting.get("type") != "connected":
            raise ConnectionError(f"expected the connected greeting, got {greeting}")
        client.queue_messages = False  # the bench reads ``log`` only
        return cls(client, log)

    async def close(self) -> None:
        await self.client.close()


async def channel_layer_tap(log: ClientLog, stop: asyncio.Event) -> None:
    """A listener on the producers' groups in this process, without daphne or a consumer.

    Its latencies are those of the group messages themselves (producer -> Redis -> here): the
    difference to the clients' is what the consumer (coalescing) and daphne add.
    """
    from channels_redis.core import RedisChannelLayer

    from capture import events

    layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=PREFIX, capacity=1000, expiry=30)
    channel = await layer.new_channel()
    groups = [events.GROUP_PACKETS, events.GROUP_ANOMALIES, events.GROUP_STATS]
    for group in groups:
        await layer.group_add(group, channel)
    try:
        while not stop.is_set():
            try:
                message = await asyncio.wait_for(layer.receive(channel), 1.0)
            except TimeoutError:
                continue
            except Exception:  # a Redis read timeout on a quiet channel: wait again
                await asyncio.sleep(0.05)
                continue
            record(log, time.time(), message)
    finally:
        for group in groups:
            await layer.group_discard(group, channel)
        await layer.close_pools()


async def loop_lag_monitor(lags: list[float], stop: asyncio.Event, interval: float = 0.05) -> None:
    """How late this process's event loop wakes up: a busy client process would inflate latencies."""
    while not stop.is_set():
        expected = time.monotonic() + interval
        await asyncio.sleep(interval)
        lags.append(max(0.0, time.monotonic() - expected))


# --- runs -----------------------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    sensor: str
    rate: float | None
    started: float = 0.0  # wall clock
    warm_from: float = 0.0
    stopped: float = 0.0
    drained: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    drain_timed_out: bool = False
    cpu: dict[str, float] = field(default_factory=dict)  # process -> share of one core while running
    warmup: float = 0.0
    load: float = 0.0  # 1-minute load average when capture stopped


class CpuMeter:
    """CPU use of the stack's processes over a run, as a share of one core."""

    def __init__(self, procs: list[Proc]) -> None:
        self.procs = procs
        self.start = (time.monotonic(), {p.name: p.cpu_seconds() for p in procs})

    def shares(self) -> dict[str, float]:
        began, before = self.start
        elapsed = max(time.monotonic() - began, 1e-3)
        return {p.name: (p.cpu_seconds() - before[p.name]) / elapsed for p in self.procs}


async def probe_floor(count: int, per_second: float, stack: list[Proc]) -> Run:
    """``group_send`` probes straight to the channel layer: the delivery floor without capture/worker."""
    from channels_redis.core import RedisChannelLayer

    from capture import events

    layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=PREFIX, capacity=200, expiry=30)
    run = Run("channel-layer floor", PROBE_SENSOR, None, started=time.time())
    meter = CpuMeter(stack)
    for i in range(count):
        now = time.time()
        anomaly = {"id": i, "sensor": PROBE_SENSOR, "src_ip": "", "dst_ip": "", "read_at": now}
        await layer.group_send(events.GROUP_ANOMALIES, {"type": "anomaly.detected", "anomaly": anomaly})
        await asyncio.sleep(max(0.0, 1.0 / per_second - (time.time() - now)))
    run.cpu = meter.shares()
    run.load = os.getloadavg()[0]
    await asyncio.sleep(1.0)
    run.stopped = run.drained = time.time()
    await layer.close_pools()
    return run


def steady_pcap(rate: float, seconds: float) -> Path:
    """The packets ``capture --demo`` reads in a run (same seed, attacks and timestamps), as a pcap."""
    from capture.demo import DemoTraffic
    from capture.pcapwriter import write_pcap

    traffic = DemoTraffic(seed=DEMO_SEED, attack_prob=DEMO_ATTACK_PROB)
    records = traffic.records(int(rate * seconds))
    stretch = traffic.pps / demo_rate(rate, seconds)  # as DemoTraffic.stream stretches them
    records["ts"] = time.time() + (records["ts"] - records["ts"][0]) * stretch
    path = LOG_DIR / f"steady-{int(rate)}.pcap"
    write_pcap(path, records)
    return path


async def capture_run(
    name: str, rate: float, args: argparse.Namespace, model_id: int, stack: list[Proc]
) -> Run:
    await asyncio.to_thread(activate, model_id)
    sensor = f"bench-{int(rate)}"
    summary = LOG_DIR / f"{sensor}-summary.json"
    seconds, warmup = args.seconds, args.warmup
    if args.pace == "steady":
        pcap = await asyncio.to_thread(steady_pcap, rate, warmup + seconds)
        source = ["--pcap", str(pcap), "--rate", f"{rate:.1f}"]
    else:
        source = ["--demo", "--rate", f"{demo_rate(rate, warmup + seconds):.1f}", "--seed", str(DEMO_SEED),
                  "--duration", str(warmup + seconds)]  # fmt: skip
    run = Run(name, sensor, rate, started=time.time(), warmup=warmup)
    meter = CpuMeter(stack)
    proc = Proc(
        sensor,
        [sys.executable, "manage.py", "capture", *source, "--sensor", sensor, "--summary-json", str(summary)],
    )
    while proc.popen.poll() is None:
        await asyncio.sleep(0.2)
    run.stopped = time.time()
    run.cpu = meter.shares()
    run.load = os.getloadavg()[0]
    code = proc.stop()
    if code != 0:
        raise RuntimeError(f"capture exited with {code}:\n{proc.log()[-3000:]}")
    run.summary = json.loads(summary.read_text())["totals"]
    # Wait until the worker stored what was published: late anomalies count, not cut off.
    deadline = time.monotonic() + args.drain_timeout
    while True:
        run.counters = await asyncio.to_thread(sensor_counters, sensor)
        if run.counters and run.counters["ingested"] >= run.counters["published"]:
            break
        if time.monotonic() > deadline:
            run.drain_timed_out = True
            break
        await asyncio.sleep(0.25)
    await asyncio.sleep(1.0)  # the last broadcasts reach the clients
    run.drained = time.time()
    run.counters = await asyncio.to_thread(sensor_counters, sensor)
    return run


# --- report ---------------------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float]:
    import numpy as np

    if not values:
        return {}
    a = np.asarray(values)
    return {
        "n": len(a),
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
    }


def fmt(p: dict[str, float]) -> str:
    if not p:
        return "no samples"
    return (
        f"n={p['n']:>6,}  p50 {p['p50'] * 1000:7.1f} ms  p95 {p['p95'] * 1000:7.1f} ms  "
        f"p99 {p['p99'] * 1000:7.1f} ms  max {p['max'] * 1000:7.1f} ms"
    )


def warm_start(run: Run, logs: list[ClientLog], warmup: float) -> float:
    """``warmup`` seconds after the first packet the run's capture read (process start-up excluded)."""
    origins = [
        smp.origin for log in logs for smp in log.samples if smp.sensor == run.sensor and smp.kind != "stats"
    ]
    return (min(origins) if origins else run.started) + warmup


def achieved_rate(run: Run, tap: ClientLog) -> float:
    """Mean packets/s the capture process itself reported (stats), over the measured seconds."""
    rates = tap.rates.get(run.sensor, [])[int(run.warmup) :]
    busy = [r for r in rates if r > 0]
    return sum(busy) / len(busy) if busy else 0.0


def report_run(run: Run, clients: list[MonitorSocket], tap: ClientLog) -> dict[str, dict[str, float]]:
    """Prints one run; returns the clients' percentiles per message kind."""
    kinds = ["probe"] if run.rate is None else ["packet_captured", "anomaly_detected", "stats"]
    run.warm_from = warm_start(run, [tap, *(c.log for c in clients)], run.warmup)
    window = max(run.drained - run.started, 1e-3)
    messages = sum(n for c in clients for (sensor, _), n in c.log.messages.items() if sensor == run.sensor)
    print(f"\n== {run.name}" + (f": {run.rate:,.0f} packets/s offered" if run.rate else ""))
    if run.rate is None:
        print("   group_send of probes straight to the channel layer (no capture, no worker)")
    else:
        t, c = run.summary, run.counters
        print(
            f"   capture: read {t['packets_read']:,} ({achieved_rate(run, tap):,.0f} pps by its own stats), "
            f"published {t['published']:,}, dropped {t['dropped']:,}"
        )
        print(
            f"   worker: stored {c.get('stored', 0):,}, dropped from the stream backlog "
            f"{c.get('dropped_stream', 0):,}, anomalies {c.get('anomalies', 0):,}; "
            + (
                f"NOT caught up {run.drained - run.stopped - 1.0:.0f} s after capture stopped (drain timeout)"
                if run.drain_timed_out
                else f"caught up {run.drained - run.stopped - 1.0:.1f} s after capture stopped"
            )
        )
    result = {}
    for kind in kinds:
        samples = [
            smp for c in clients for smp in c.log.samples if smp.sensor == run.sensor and smp.kind == kind
        ]
        warm = [smp.latency for smp in samples if smp.origin >= run.warm_from]
        cold = [smp.latency for smp in samples if smp.origin < run.warm_from]
        result[kind] = percentiles(warm)
        note = f"  (warm-up left out: {len(cold):,}, max {max(cold) * 1000:.0f} ms)" if cold else ""
        print(f"   {kind:<17} {fmt(result[kind])}{note}")
    if run.rate is not None:
        print("   at the channel layer (group messages, before the consumer and daphne):")
        for kind in ("packet_captured", "anomaly_detected", "stats"):
            warm = [
                smp.latency
                for smp in tap.samples
                if smp.sensor == run.sensor and smp.kind == kind and smp.origin >= run.warm_from
            ]
            print(f"     {kind:<15} {fmt(percentiles(warm))}")
    per_client = [sum(n for (s, _), n in c.log.messages.items() if s == run.sensor) for c in clients]
    print(
        f"   messages: {messages:,} to {len(clients)} clients in {window:.1f} s = "
        f"{messages / window:,.0f} msgs/s ({min(per_client) / window:,.1f}-{max(per_client) / window:,.1f} "
        "per client)"
    )
    if run.cpu:
        cpu = ", ".join(f"{name} {share * 100:.0f}%" for name, share in run.cpu.items())
        print(f"   CPU while capture ran (100% = one core): {cpu}; load average {run.load:.1f}")
    if run.rate is not None:
        packets = [c.log.packets[run.sensor] for c in clients]
        dropped = [c.log.dropped[run.sensor] for c in clients]
        ids = [len(c.log.anomaly_ids[run.sensor]) for c in clients]
        print(
            f"   per client: packets shown {min(packets):,}-{max(packets):,}, left out by coalescing "
            f"{min(dropped):,}-{max(dropped):,}; distinct anomalies {min(ids):,}-{max(ids):,}"
        )
    return result


def verdict(
    run: Run, result: dict[str, dict[str, float]], clients: list[MonitorSocket], tap: ClientLog
) -> list[str]:
    """Reasons the target run fails (empty: PASS)."""
    problems = []
    for kind in ("packet_captured", "anomaly_detected"):
        p = result.get(kind)
        if not p:
            problems.append(f"no {kind} samples")
            continue
        if p["p95"] >= P95_TARGET:
            problems.append(f"{kind} p95 {p['p95']:.3f} s >= {P95_TARGET:g} s")
        if p["p99"] >= P99_TARGET:
            problems.append(f"{kind} p99 {p['p99']:.3f} s >= {P99_TARGET:g} s")
    if any(c.log.packets[run.sensor] == 0 for c in clients):
        problems.append("a client received no packets")
    achieved = achieved_rate(run, tap)
    if run.rate and achieved < 0.9 * run.rate:
        problems.append(f"capture read only {achieved:,.0f} pps of the {run.rate:,.0f} offered")
    if run.drain_timed_out:
        problems.append("the worker did not catch up with capture (later anomalies are not even counted)")
    return problems


# --- main -----------------------------------------------------------------------------------------


async def measure(
    args: argparse.Namespace, port: int, token: str, models: dict[float, int], stack: list[Proc]
) -> int:
    url = f"ws://127.0.0.1:{port}/ws/monitor/?token={token}"
    clients = await asyncio.gather(*(MonitorSocket.connect(url) for _ in range(args.clients)))
    lags: list[float] = []
    tap = ClientLog()
    stop = asyncio.Event()
    background = [
        asyncio.create_task(loop_lag_monitor(lags, stop)),
        asyncio.create_task(channel_layer_tap(tap, stop)),
    ]
    try:
        runs = [await probe_floor(args.probes, args.probe_rate, stack)]
        if args.baseline_rate:
            runs.append(
                await capture_run("baseline", args.baseline_rate, args, models[args.baseline_rate], stack)
            )
        target = await capture_run("target", args.rate, args, models[args.rate], stack)
        runs.append(target)
    finally:
        stop.set()
        await asyncio.gather(*background)
        await asyncio.gather(*(c.close() for c in clients))

    results = {run.name: report_run(run, clients, tap) for run in runs}
    lag = percentiles(lags)
    print(
        f"\n   client event loop lag (this process, {args.clients} clients): p99 {lag['p99'] * 1000:.1f} ms, "
        f"max {lag['max'] * 1000:.1f} ms"
    )
    floor = results["channel-layer floor"].get("probe", {})
    base = results.get("baseline", {})
    tgt = results["target"]
    print("\n== comparison (p95 / p99 on the clients)")
    for kind in ("packet_captured", "anomaly_detected"):
        parts = [f"floor {floor['p95'] * 1000:.0f} / {floor['p99'] * 1000:.0f} ms" if floor else "floor -"]
        for rate, res in ((args.baseline_rate, base), (args.rate, tgt)):
            if res.get(kind):
                parts.append(
                    f"{rate:,.0f} pps {res[kind]['p95'] * 1000:.0f} / {res[kind]['p99'] * 1000:.0f} ms"
                )
        if base.get(kind) and tgt.get(kind) and base[kind]["p95"] > 0:
            parts.append(f"x{tgt[kind]['p95'] / base[kind]['p95']:.2f} vs baseline")
        print(f"   {kind:<17} " + ", ".join(parts))
    problems = verdict(target, tgt, clients, tap)
    if lag and lag["p99"] > 0.1:
        print("   note: the client process itself was busy (loop lag p99 > 100 ms): latencies are inflated")
    print(
        f"\ntarget: p95 < {P95_TARGET:g} s and p99 < {P99_TARGET:g} s at {args.rate:,.0f} pps with "
        f"{args.clients} clients: " + ("PASS" if not problems else "FAIL: " + "; ".join(problems))
    )
    return 0 if not problems else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=10_000.0, help="packets/s offered (target run)")
    parser.add_argument("--baseline-rate", type=float, default=1_000.0, help="baseline run; 0 skips it")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds left out at the start of a run")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker concurrency")
    parser.add_argument("--model", default="isolation_forest", choices=["isolation_forest", "autoencoder"])
    parser.add_argument("--probes", type=int, default=200, help="channel-layer probes for the floor")
    parser.add_argument("--probe-rate", type=float, default=20.0, help="probes per second")
    parser.add_argument(
        "--drain-timeout", type=float, default=30.0, help="wait this long for the worker to catch up"
    )
    parser.add_argument("--keep", action="store_true", help="do not flush Redis db 9 at the end")
    parser.add_argument(
        "--pace",
        choices=["demo", "steady"],
        default="steady",
        help="steady: the demo's packets from a pcap at exactly the offered rate; demo: the demo's "
        "simulated timing (floods at ~3.5x the average rate)",
    )
    args = parser.parse_args()

    configure_environment()
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        print(f"Redis does not answer at {REDIS_URL}: run `make redis` first", file=sys.stderr)
        return 2
    client.flushdb()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(
        f"netmon WebSocket latency bench: {REDIS_URL}, {DB_PATH.relative_to(ROOT)}, "
        f"logs in {LOG_DIR.relative_to(ROOT)}/; {os.cpu_count()} CPUs, load average "
        + " ".join(f"{x:.1f}" for x in os.getloadavg())
    )
    rates = [args.rate] + ([args.baseline_rate] if args.baseline_rate else [])
    token, models, descriptions = prepare_database(args.model, sorted(set(rates)), args.warmup + args.seconds)
    for description in descriptions:
        print(f"model: {description}")
    port = free_port()
    procs: list[Proc] = []
    try:
        daphne = Proc(
            "daphne", [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "netmon.asgi:application"]
        )
        procs.append(daphne)
        worker = Proc(
            "worker",
            [str(BIN / "celery"), "-A", "netmon", "worker", "-l", "info", "--concurrency", str(args.workers),
             "--without-gossip", "--without-mingle", "-n", f"bench-latency-{os.getpid()}@%h"],
        )  # fmt: skip
        procs.append(worker)
        daphne.wait_for("Listening on TCP address", 60)
        worker.wait_for("ready.", 90)
        print(
            f"stack: daphne on :{port}, celery worker --concurrency {args.workers}, {args.clients} clients; "
            f"{args.seconds:g} s per run after {args.warmup:g} s warm-up; pace: {args.pace}"
        )
        code = asyncio.run(measure(args, port, token, models, procs))
    finally:
        for proc in reversed(procs):
            proc.stop()
        if not args.keep:
            client.flushdb()
    print(f"(bench took {time.monotonic() - started:.0f} s)")
    return code


if __name__ == "__main__":
    sys.exit(main())
