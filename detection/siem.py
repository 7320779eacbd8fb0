"""The live SIEM output: each read's opened and updated incidents as EVE lines to a file and/or syslog.

The worker calls ``emit(saved)`` after a read is committed and acknowledged (detection.ingest,
beside ``live.broadcast_incidents``). It never raises into ingest and never waits on a sink:

- with no sink configured (``NETMON_EVE_LOG`` and ``NETMON_SYSLOG_ADDR`` empty) it returns at once;
- otherwise it reads the incidents (one query, with their flows) and formats their lines
  (``detection.eve``) in the worker, then hands them to a writer thread of the worker process
  through a bounded queue (``put_nowait``: when the queue is full the lines are dropped and
  counted); the thread appends to the file and sends to syslog, with timeouts, so a slow or
  unreachable receiver delays nobody but the thread;
- what each sink wrote, failed to write, and what was dropped is counted in Redis
  (``COUNTERS_KEY``) and shown in ``/metrics`` (``netmon_siem_lines_total``).

Syslog: RFC 5424 (``<PRI>1 TIMESTAMP HOST netmon PID eve - {json}``), facility local5 (as Suricata's
EVE syslog output), one datagram per line over UDP, octet-counted framing (RFC 6587) over TCP.
The lines are live messages like the dashboard's: a worker killed between the commit and the
write loses them, and the ``eve`` export has every incident.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from django.conf import settings

from capture.choices import IncidentSeverity
from capture.connections import redis_client
from capture.models import Sensor
from detection import eve
from detection.anomalies import SavedAnomalies
from detection.models import Incident

log = logging.getLogger(__name__)

COUNTERS_KEY = "netmon:siem:lines"  # hash: "<sink>:written" / "<sink>:failed" / "queue:dropped" -> lines
INCIDENTS_PER_READ = 200  # lines of one read at most (highest peak first); the rest are counted as dropped
QUEUE_READS = 1000  # reads' lines waiting for the writer thread at most
SEND_TIMEOUT = 2.0  # seconds a syslog connect or send may take
RETRY_MAX = 30.0  # seconds between reconnection attempts at most (doubling from 1)
FACILITY_LOCAL5 = 21
# Syslog severity of an alert line: high -> error, medium -> warning, low (and anomalies) -> notice.
SYSLOG_SEVERITY = {IncidentSeverity.HIGH: 3, IncidentSeverity.MEDIUM: 4, IncidentSeverity.LOW: 5}


@dataclass
class Line:
    """An EVE line and the incident's severity (for the syslog priority)."""

    text: str
    severity: str = IncidentSeverity.LOW


class Sink(Protocol):
    name: str

    def write(self, lines: list[Line]) -> None: ...

    def close(self) -> None: ...


class FileSink:
    """Appends lines to ``path``; reopens it when it was rotated away (logrotate's move-and-create)."""

    name = "file"

    def __init__(self, path: str) -> None:
        self.path = path
        self.handle = None
        self.inode: tuple[int, int] | None = None

    def write(self, lines: list[Line]) -> None:
        if self.handle is not None and self._rotated():
            self.close()
        if self.handle is None:
            self.handle = open(self.path, "a", encoding="ascii")  # noqa: SIM115 - kept open between writes
            st = os.fstat(self.handle.fileno())
            self.inode = (st.st_dev, st.st_ino)
        try:
            self.handle.write("".join(line.text + "\n" for line in lines))
            self.handle.flush()
        except OSError:
            self.close()
            raise

    def _rotated(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self.inode

    def close(self) -> None:
        if self.handle is not None:
            with contextlib.suppress(OSError):
                self.handle.close()
        self.handle = None


class SyslogSink:
    """RFC 5424 messages over UDP (a datagram each) or TCP (octet-counted, RFC 6587), reconnecting."""

    def __init__(self, transport: str, host: str, port: int) -> None:
        self.transport, self.host, self.port = transport, host, port
        self.name = f"syslog-{transport}"
        self.sock: socket.socket | None = None
        self.retry_at = 0.0
        self.backoff = 1.0
        self.hostname = (socket.gethostname() or "-")[:255].replace(" ", "-")

    def message(self, line: Line) -> bytes:
        """One RFC 5424 message: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG."""
        pri = FACILITY_LOCAL5 * 8 + SYSLOG_SEVERITY.get(line.severity, 5)
        now = datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return f"<{pri}>1 {now} {self.hostname} netmon {os.getpid()} eve - {line.text}".encode()

    def _connect(self) -> socket.socket:
        if time.monotonic() < self.retry_at:
            raise ConnectionError(f"{self.transport}://{self.host}:{self.port} unreachable; retrying later")
        kind = socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM
        try:
            family, _, _, _, address = socket.getaddrinfo(self.host, self.port, type=kind)[0]
            sock = socket.socket(family, kind)
            sock.settimeout(SEND_TIMEOUT)
            sock.connect(address)  # UDP: fixes the peer, so sends are plain send()
        except OSError:
            self.retry_at = time.monotonic() + self.backoff
            self.backoff = min(RETRY_MAX, self.backoff * 2)
            raise
        self.backoff = 1.0
        return sock

    def write(self, lines: list[Line]) -> None:
        if self.sock is None:
            self.sock = self._connect()
        try:
            if self.transport == "udp":
                for line in lines:
                    self.sock.send(self.message(line))
            else:
                frames = []
                for line in lines:
                    message = self.message(line)
                    frames.append(b"%d %s" % (len(message), message))
                self.sock.sendall(b"".join(frames))
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None


def configured_sinks() -> list[Sink]:
    """The sinks the settings ask for (none: the SIEM output is off)."""
    sinks: list[Sink] = []
    if settings.NETMON_EVE_LOG:
        sinks.append(FileSink(settings.NETMON_EVE_LOG))
    if settings.NETMON_SYSLOG:
        sinks.append(SyslogSink(*settings.NETMON_SYSLOG))
    return sinks


@dataclass
class Writer:
    """The worker process's writer thread and its queue of lines (one per process, started on first use)."""

    sinks: list[Sink]
    pid: int = field(default_factory=os.getpid)
    lines: queue.Queue = field(default_factory=lambda: queue.Queue(maxsize=QUEUE_READS))
    thread: threading.Thread | None = None

    def put(self, lines: list[Line]) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="netmon-siem", daemon=True)
            self.thread.start()
        try:
            self.lines.put_nowait(lines)
        except queue.Full:
            count({"queue:dropped": len(lines)})

    def _run(self) -> None:
        while True:
            lines = self.lines.get()
            try:
                if lines is None:
                    return
                self._write(lines)
            finally:
                self.lines.task_done()

    def _write(self, lines: list[Line]) -> None:
        counts: Counter = Counter()
        for sink in self.sinks:
            try:
                sink.write(lines)
                counts[f"{sink.name}:written"] += len(lines)
            except Exception as exc:  # a sink's failure is counted, never raised
                counts[f"{sink.name}:failed"] += len(lines)
                log.warning("SIEM output to %s failed (%d lines): %s", sink.name, len(lines), exc)
        count(counts)

    def stop(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            self.lines.put(None)
            self.thread.join(timeout=5)
        for sink in self.sinks:
            sink.close()


def count(counts: dict[str, int]) -> None:
    """Add to the SIEM counters in Redis (read by /metrics); a Redis outage loses counts, nothing else."""
    try:
        pipe = redis_client().pipeline(transaction=False)
        for key, n in counts.items():
            if n:
                pipe.hincrby(COUNTERS_KEY, key, n)
        pipe.execute()
    except Exception as exc:
        log.warning("SIEM counters not updated: %s", exc)


_writer: Writer | None = None
_lock = threading.Lock()


def writer() -> Writer | None:
    """This process's writer (None when no sink is configured). A forked child makes its own."""
    global _writer
    with _lock:
        if _writer is None or _writer.pid != os.getpid():
            _writer = Writer(configured_sinks())  # without sinks: remembers "off" for this process
        return _writer if _writer.sinks else None


def reset() -> None:
    """Stop the writer and read the settings again (tests, after changing them)."""
    global _writer
    with _lock:
        if _writer is not None and _writer.pid == os.getpid():
            _writer.stop()
        _writer = None


def flush(timeout: float = 10.0) -> bool:
    """Wait until the writer has written what it was given (tests, benchmarks); False on timeout."""
    current = _writer
    if current is None or current.thread is None:
        return True
    deadline = time.monotonic() + timeout
    while current.lines.unfinished_tasks:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def incident_lines(opened: list[int], updated: list[int]) -> list[Line]:
    """The EVE lines of the incidents a read opened or updated, highest peak score first."""
    wanted = [*opened, *updated]
    if not wanted:
        return []
    rows = eve.with_flows(Incident.objects.filter(pk__in=wanted)).order_by("-peak_score")[:INCIDENTS_PER_READ]
    events = dict.fromkeys(updated, "incident_updated") | dict.fromkeys(opened, "incident_opened")
    rows = list(rows)
    return [
        Line(eve.line(event), incident.severity)
        for incident, event in zip(rows, eve.incident_events(rows, events), strict=True)
    ]


def anomaly_lines(saved: SavedAnomalies) -> list[Line]:
    """The EVE lines of a read's highest-scoring anomalies (those the dashboards are told of)."""
    if not saved.top:
        return []
    names = dict(Sensor.objects.filter(pk__in={a.sensor_id for a in saved.top}).values_list("pk", "name"))
    return [
        Line(eve.line(eve.anomaly_event(a, names.get(a.sensor_id, ""))), IncidentSeverity.LOW)
        for a in saved.top
    ]


def emit(saved: SavedAnomalies) -> None:
    """After a read's commit: its opened and updated incidents (and, with ``NETMON_EVE_ANOMALIES``, its
    top anomalies) to the SIEM sinks. Returns at once when none is configured; never raises."""
    out = writer()
    if out is None or not (saved.opened or saved.updated or (saved.top and settings.NETMON_EVE_ANOMALIES)):
        return
    try:
        lines = incident_lines(saved.opened, saved.updated)
        if settings.NETMON_EVE_ANOMALIES:
            lines += anomaly_lines(saved)
        beyond = len(saved.opened) + len(saved.updated) - INCIDENTS_PER_READ
        if beyond > 0:
            count({"queue:dropped": beyond})
        if lines:
            out.put(lines)
    except Exception:
        log.exception("SIEM output: the read's lines could not be made")
        count({"format:failed": 1})
