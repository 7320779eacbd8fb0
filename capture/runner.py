"""The capture process: read packets from a source, number them, publish batches, report, obey control.

A source (capture/sources.py, or a live engine) yields ``Chunk``s; ``CaptureRunner.consume``
numbers each (the only place sequence numbers are assigned: on from the sensor's last packet,
or from a pcap file's checkpoint) into a ``Batch`` and hands it to its own ``StreamPublisher``,
whose ``on_published`` callback is the runner's: count per source, trim the stream, enqueue ingest.
A pcap replay waits instead of dropping when the workers fall behind; while it waits it queues
the ingest again whenever the backlog stops moving, so a killed worker's lost task never leaves
it waiting for beat's sweeper.

The main thread reads the source (pyshark must run there) and publishes; a background
"reporter" thread, once every few hundred milliseconds, polls the control key, writes the
heartbeat and the durable counters, and sends live packets and per-second stats to dashboards,
so a slow Redis or channel layer never stalls reading.

Counters always reconcile: ``read = published + dropped (by reason) + in flight``, and
``undecodable`` counts records that were only partly decoded (they are still published).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import close_old_connections
from django.utils import timezone

from capture import control, events
from capture.evidence import EvidenceRing
from capture.models import Sensor
from capture.records import (
    Batch,
    BatchFormatError,
    Chunk,
    decode_batch,
    ingest_scheduled_key,
    ip_to_text,
    protocol_name,
    stream_key,
)
from capture.stream import StreamPublisher

log = logging.getLogger(__name__)

REPORT_INTERVAL = 0.1  # seconds between live packet pushes
STATS_INTERVAL = 1.0
CONTROL_INTERVAL = 0.5
SAMPLE_PER_PUSH = 50
# While capture waits for the workers, a backlog that has not moved this long gets the sensor's
# ingest queued again (then after twice as long, ... up to REQUEUE_MAX): its task may have died with
# a killed worker, and recovery must not wait for beat's sweeper.
REQUEUE_AFTER = 3.0
REQUEUE_MAX = 30.0


class StopSource(Exception):
    """Raised inside a source's iteration when the runner asks it to stop."""


@dataclass
class FileCounts:
    """Per-source counts for --summary-json."""

    source: str
    packets_read: int = 0
    published: int = 0
    undecodable: int = 0
    skipped_already_published: int = 0
    dropped: Counter = field(default_factory=Counter)
    file_stats: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "packets_read": self.packets_read,
            "published": self.published,
            "undecodable": self.undecodable,
            "skipped_already_published": self.skipped_already_published,
            "dropped": sum(self.dropped.values()),
            "drop_reasons": dict(self.dropped),
            **({"file": self.file_stats} if self.file_stats else {}),
        }


class StatsWindow:
    """Per-second traffic statistics for dashboards (thread-safe: the reporter swaps it out)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.protocols: Counter = Counter()
        self.talkers: Counter = Counter()
        self.started = time.monotonic()

    def add(self, records: np.ndarray) -> None:
        if not len(records):
            return
        protos = records["proto"].astype(np.uint32) << 16 | records["eth_type"]
        values, counts = np.unique(
            protos | (records["ip_version"].astype(np.uint32) << 24), return_counts=True
        )
        # Addresses as one 16-byte value each: np.unique(axis=0) sorts rows element by element,
        # which was half the capture process's CPU.
        keys = np.ascontiguousarray(records["src_ip"]).view(np.dtype((np.void, 16))).ravel()
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        talker_bytes = np.bincount(inverse.ravel(), weights=records["length"], minlength=len(first))
        top = np.argsort(talker_bytes)[-10:]
        src = records["src_ip"][first]
        versions = records["ip_version"][first]
        with self._lock:
            self.packets += len(records)
            self.bytes += int(records["length"].sum())
            for value, count in zip(values.tolist(), counts.tolist(), strict=True):
                name = protocol_name(value & 0xFFFF, (value >> 16) & 0xFF, value >> 24)
                self.protocols[name] += count
            for i in top.tolist():
                ip = ip_to_text(src[i], int(versions[i]))
                if ip:
                    self.talkers[ip] += int(talker_bytes[i])

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            elapsed = max(time.monotonic() - self.started, 1e-3)
            snap = {
                "packets_per_s": round(self.packets / elapsed, 1),
                "bytes_per_s": round(self.bytes / elapsed, 1),
                "protocols": dict(self.protocols.most_common(12)),
                "top_talkers": [[ip, b] for ip, b in self.talkers.most_common(10)],
            }
            self._reset()
        return snap


def packet_dicts(
    sensor: str, records: np.ndarray, interfaces: list[str], app: dict[int, dict[str, str]] | None = None
) -> list[dict[str, Any]]:
    """A few records as JSON-ready dicts for the live packet table (``app``: deep-mode fields by seq)."""
    app = app or {}
    out = []
    for r in records:
        version = int(r["ip_version"])
        out.append(
            {
                "seq": int(r["seq"]),
                "ts": float(r["ts"]),
                "sensor": sensor,
                "src_ip": ip_to_text(r["src_ip"], version),
                "dst_ip": ip_to_text(r["dst_ip"], version),
                "src_port": int(r["sport"]),
                "dst_port": int(r["dport"]),
                "protocol": protocol_name(int(r["eth_type"]), int(r["proto"]), version),
                "length": int(r["length"]),
                "tcp_flags": int(r["tcp_flags"]),
                "app_protocol": app.get(int(r["seq"]), {}).get("app_protocol", ""),
            }
        )
    return out


class CaptureRunner:
    """Numbers, publishes and accounts for the packets of one sensor, and follows remote control.

    It owns the sensor's ``StreamPublisher`` (on ``redis_client``, shared with control polling,
    the heartbeat and trimming) and is its ``on_published`` callback.
    """

    def __init__(
        self,
        sensor: str,
        *,
        redis_client: Any,
        buffer_size: int,
        batch_size: int = 1000,
        broadcast: Callable[[str, dict], bool] = events.broadcast,
    ) -> None:
        self.sensor_name = sensor
        self.redis = redis_client
        self.publisher = StreamPublisher(
            sensor,
            client=redis_client,
            buffer_size=buffer_size,
            batch_size=batch_size,
            # the runner trims by packets (buffer_size); this entry cap is only a backstop
            max_entries=max(64, buffer_size),
            on_published=self._on_published,
        )
        self.broadcast = broadcast
        self.sensor, _ = Sensor.objects.get_or_create(name=sensor)
        self.mode = Sensor.Mode.DEMO
        self.mode_reason = ""
        self.interface = ""
        self.bpf = ""
        self.state = Sensor.State.RUNNING
        self.next_seq = self._resume_seq()
        self.files: dict[str, FileCounts] = {}
        self.read = 0
        self.undecodable = 0
        self.skipped = 0
        self.stats = StatsWindow()
        self._samples: deque = deque(maxlen=SAMPLE_PER_PUSH * 4)
        self._base = {
            # every seq below next_seq went to a packet read: a process killed before it wrote its
            # last counters read at least that many
            "read": max(self.sensor.packets_read, self.next_seq - 1),
            "published": self.sensor.packets_published,
            "undecodable": self.sensor.packets_undecodable,
            "dropped": self.sensor.packets_dropped_capture,
            "reasons": Counter(self.sensor.drop_reasons or {}),
        }
        self._entries: deque = deque()  # (stream entry id, last seq) of published batches, oldest first
        self._batch_sources: dict[int, str] = {}  # first seq -> source, for per-file publish/drop counts
        self.commands: deque = deque()
        self.control_version = self._control_version()
        self._stop_reporter = threading.Event()
        self._reporters: list[threading.Thread] = []
        self.wait_for_workers = False  # True for files: back-pressure instead of dropping
        self.batch_size = batch_size
        self.interrupt = threading.Event()  # set: the current source should stop
        self.on_interrupt: Callable[[], None] | None = None  # unblocks a source waiting for packets
        # the evidence ring (capture/evidence.py): the command sets it, numbered on from next_seq
        self.evidence: EvidenceRing | None = None

    # --- sequence numbers -------------------------------------------------------------------
    def _resume_seq(self) -> int:
        """Continue after everything already numbered: the stream's newest entry or the DB's counters."""
        last = max(self.sensor.last_seq_published, self.sensor.last_seq_ingested)
        try:
            newest = self.redis.xrevrange(stream_key(self.sensor_name), count=1)
        except Exception as exc:  # Redis down at start: the DB counters are the best we have
            log.warning("could not read the stream's newest entry: %s", exc)
            newest = []
        if newest:
            with contextlib.suppress(BatchFormatError):
                last = max(last, decode_batch(newest[0][1]).last_seq)
        return last + 1

    def _control_version(self) -> int:
        try:
            return control.current_version(self.redis)
        except Exception:
            return 0

    def file_base_seq(self, key: str) -> int:
        """The first seq of a pcap file: the one used by an earlier run on the same file, else the next."""
        checkpoints = dict(self.sensor.checkpoints or {})
        if key in checkpoints:
            return int(checkpoints[key])
        checkpoints[key] = self.next_seq
        # Written before anything of the file is published, so a restart numbers it the same way.
        Sensor.objects.filter(pk=self.sensor.pk).update(checkpoints=checkpoints)
        self.sensor.checkpoints = checkpoints
        return self.next_seq

    def add_source(self, source: str) -> None:
        """List a source in --summary-json even if it yields no packet (an empty capture file)."""
        self.files.setdefault(source, FileCounts(source))

    def add_file_stats(self, path: str, stats: dict[str, Any], error: str | None = None) -> None:
        """Keep a capture file's reader statistics (and why it could not be read) for --summary-json."""
        if error is not None:
            self.files.setdefault(path, FileCounts(path)).file_stats = {"error": error}
        if path in self.files:
            self.files[path].file_stats = {**stats, **self.files[path].file_stats}

    # --- the main loop ----------------------------------------------------------------------
    def set_mode(self, mode: str, reason: str = "", interface: str = "", bpf: str = "") -> None:
        self.mode, self.mode_reason, self.interface, self.bpf = mode, reason, interface, bpf
        Sensor.objects.filter(pk=self.sensor.pk).update(
            mode=mode, mode_reason=reason[:255], interface=interface, bpf_filter=bpf
        )

    def consume(
        self,
        chunks: Iterator[Chunk],
        *,
        count: int | None = None,
        deadline: float | None = None,
        base_seq: int | None = None,
        on_chunk: Callable[[int], None] | None = None,
    ) -> bool:
        """Number and publish every chunk of a source; False when stopped early (count, duration or control).

        Live and demo chunks are numbered on from the last packet; a pcap file's from ``base_seq``
        (its checkpoint), skipping the packets an earlier run on the same file published already.
        ``on_chunk(n)`` is told each chunk's packets once they are handed to the publisher (or
        skipped): the command's progress, updated once per batch.
        """
        seq = base_seq
        for chunk in chunks:
            n = len(chunk.records)
            if n == 0:
                if self.evidence is not None:
                    self.evidence.prune()
                if self._should_stop(deadline):
                    return False
                continue
            if count is not None and self.read + self.skipped + n > count:
                n = max(0, count - self.read - self.skipped)
            counts = self.files.setdefault(chunk.source or self.mode, FileCounts(chunk.source or self.mode))
            if seq is None:
                first, skip = self.next_seq, 0
            else:  # numbers fixed by the file's checkpoint: those below next_seq are published already
                first, seq = seq, seq + n
                skip = min(n, max(0, self.next_seq - first))
                if skip:
                    counts.skipped_already_published += skip
                    self.skipped += skip
            if skip < n:
                batch = self._number(chunk, first, skip, n)
                if self.evidence is not None:  # kept before publishing: an incident never precedes its frames
                    self.evidence.append(batch.records, chunk.frames, skip)
                self._publish(batch, counts)
            if on_chunk is not None:
                on_chunk(n)
            if count is not None and self.read + self.skipped >= count:
                return False
            if self._should_stop(deadline):
                return False
        return True

    def _number(self, chunk: Chunk, first: int, skip: int, n: int) -> Batch:
        """Records ``skip`` .. ``n - 1`` of ``chunk`` as a Batch, record ``i`` numbered ``first + i``."""
        records = chunk.records[skip:n]
        records["seq"] = np.arange(first + skip, first + n, dtype=np.uint64)
        return Batch(
            sensor=self.sensor_name,
            records=records,
            interfaces=chunk.interfaces,
            app={first + i: fields for i, fields in chunk.app.items() if skip <= i < n},
            read_at=chunk.read_at or time.time(),
        )

    def _publish(self, batch: Batch, counts: FileCounts) -> None:
        records = batch.records
        n = len(records)
        if self.wait_for_workers:
            self._wait_for_backlog(n)
        undecodable = int(np.count_nonzero(records["status"]))
        self.read += n
        self.undecodable += undecodable
        counts.packets_read += n
        counts.undecodable += undecodable
        self.next_seq = batch.last_seq + 1
        self._batch_sources[batch.first_seq] = counts.source
        self.publisher.publish(batch)
        self.publisher.flush(0)
        self.stats.add(records)
        self._samples.append((records[-SAMPLE_PER_PUSH:], batch.interfaces, batch.read_at, batch.app))

    def trim_bound(self) -> int:
        """Packets kept in the stream: buffer_size, but never less than a few batches when waiting."""
        if self.wait_for_workers:
            return max(self.publisher.buffer_size, 20 * self.batch_size)
        return self.publisher.buffer_size

    def _wait_for_backlog(self, n: int) -> None:
        """Files are not a live network: instead of dropping, wait while the workers catch up.

        Waiting, capture publishes nothing, so nothing queues ingest after publishing either: if
        the backlog stands still for ``REQUEUE_AFTER`` seconds (the worker that had the sensor's
        task was killed, say), the ingest is queued again, and again at growing intervals.
        """
        bound = self.trim_bound()
        waited_since = time.monotonic()
        last_note = waited_since
        ingested = self._ingested_seq()
        still_since, requeue_after = waited_since, REQUEUE_AFTER
        while (self.next_seq - 1 + n) - ingested > bound and not self.interrupt.is_set():
            # Keep sending what a Redis outage left buffered (the workers catch up only on what is in
            # the stream), and stop waiting for entries that are gone with a Redis restart: the next
            # batch shows the workers the gap, which they count as dropped.
            self.publisher.flush(0)
            if self._stream_lost():
                break
            time.sleep(0.02)
            now, seen = time.monotonic(), self._ingested_seq()
            if seen != ingested:
                ingested, still_since, requeue_after = seen, now, REQUEUE_AFTER
            elif now - still_since >= requeue_after:
                log.info(
                    "backlog of %s still for %.0fs: queueing its ingest again",
                    self.sensor_name,
                    now - still_since,
                )
                enqueue_ingest(self.redis, self.sensor_name, requeue=True)
                requeue_after = min(2 * requeue_after, REQUEUE_MAX)
                still_since = now
            if now - last_note > 10:
                last_note = time.monotonic()
                log.warning(
                    "waiting %.0fs for the workers (backlog over %d packets): is a Celery worker running?",
                    last_note - waited_since,
                    bound,
                )

    def _stream_lost(self) -> bool:
        """True when nothing is buffered and the stream is empty: the backlog will never be ingested."""
        if self.publisher.pending_batches:
            return False
        try:
            return self.redis.xlen(stream_key(self.sensor_name)) == 0
        except Exception:  # Redis down: keep waiting
            return False

    def _on_published(self, sensor: str, entry_id: Any, batch: Batch) -> None:
        """The publisher's callback: count per source, bound the stream, make sure a worker will drain it."""
        source = self._batch_sources.pop(batch.first_seq, None)
        if source in self.files:
            self.files[source].published += len(batch.records)
        self._trim(entry_id, batch.last_seq)
        enqueue_ingest(self.redis, sensor)

    def _trim(self, entry_id: Any, last_seq: int) -> None:
        """Keep about ``buffer_size`` packets in the stream (MINID trim): the oldest go first.

        Entries the workers had not read yet become a gap in sequence numbers, which they
        count as dropped, so nothing disappears silently.
        """
        self._entries.append((entry_id, last_seq))
        keep_from = None
        bound = self.trim_bound()
        while self._entries and last_seq - self._entries[0][1] >= bound:
            self._entries.popleft()
            keep_from = self._entries[0][0] if self._entries else None
        if keep_from is not None:
            try:
                self.redis.xtrim(stream_key(self.sensor_name), minid=keep_from, approximate=True)
            except Exception as exc:  # the next publish trims again
                log.debug("trim failed: %s", exc)

    def _should_stop(self, deadline: float | None) -> bool:
        if deadline is not None and time.monotonic() >= deadline:
            return True
        return self.interrupt.is_set()

    def drain(self, timeout: float = 10.0) -> None:
        """Publish what is still buffered (bounded wait: Redis may be down), and queue a last ingest.

        The last ingest is queued even while the sensor's "scheduled" flag is set: a capture killed
        between setting the flag and sending the task leaves the flag without a task, and a run that
        publishes everything within the flag's 5 s would otherwise leave its batches undrained.
        """
        self.publisher.flush(timeout)
        if self._entries:
            enqueue_ingest(self.redis, self.sensor_name, requeue=True)

    def close(self, timeout: float = 5.0) -> None:
        """Close the publisher: what it could not publish by then counts as dropped. Close the ring."""
        self.publisher.close(timeout)
        if self.evidence is not None:
            self.evidence.close()

    # --- reporting (background thread) ------------------------------------------------------
    def start_reporter(self) -> None:
        # Two threads: packet samples must not wait behind database writes (SQLite holds its write
        # lock while a worker stores a batch), so only the slow loop touches the database.
        self._reporters = [
            threading.Thread(target=self._sample_loop, name="capture-samples", daemon=True),
            threading.Thread(target=self._report_loop, name="capture-reporter", daemon=True),
        ]
        for thread in self._reporters:
            thread.start()

    def stop_reporter(self) -> None:
        self._stop_reporter.set()
        for thread in self._reporters:
            thread.join(timeout=5)
        self._push_samples()
        self.write_counters()
        self.heartbeat()

    def _sample_loop(self) -> None:
        while not self._stop_reporter.wait(REPORT_INTERVAL):
            self._push_samples()

    def _report_loop(self) -> None:
        next_stats = next_control = time.monotonic()
        try:
            while not self._stop_reporter.wait(REPORT_INTERVAL):
                now = time.monotonic()
                if now >= next_control:
                    next_control = now + CONTROL_INTERVAL
                    self._poll_control()
                    self.write_counters()
                    self.heartbeat()
                if now >= next_stats:
                    next_stats = now + STATS_INTERVAL
                    self._push_stats()
        finally:
            close_old_connections()

    def _push_samples(self) -> None:
        packets: list[dict] = []
        read_at = 0.0
        while self._samples:
            records, interfaces, batch_read_at, app = self._samples.popleft()
            packets.extend(packet_dicts(self.sensor_name, records, interfaces, app))
            read_at = read_at or batch_read_at
        if packets:
            self.broadcast(
                events.GROUP_PACKETS,
                {
                    "type": "packet.captured",
                    "sensor": self.sensor_name,
                    "read_at": read_at,
                    "packets": packets[-SAMPLE_PER_PUSH:],
                },
            )

    def totals(self) -> dict[str, Any]:
        pub = self.publisher.stats()
        reasons = Counter(self._base["reasons"])
        reasons.update(pub["dropped"])
        return {
            "packets_read": self._base["read"] + self.read,
            "packets_published": self._base["published"] + pub["published_packets"],
            "packets_undecodable": self._base["undecodable"] + self.undecodable,
            "packets_dropped": self._base["dropped"] + pub["dropped_packets"],
            "drop_reasons": dict(reasons),
            "buffered": pub["pending_packets"],
        }

    def _push_stats(self) -> None:
        totals = self.totals()
        snap = self.stats.snapshot()
        self.broadcast(
            events.GROUP_STATS,
            {
                "type": "stats",
                "sensor": self.sensor_name,
                "ts": time.time(),
                **snap,
                "packets_dropped": totals["packets_dropped"],
                "packets_undecodable": totals["packets_undecodable"],
                "queue_lag_packets": max(0, self.next_seq - 1 - self._ingested_seq()),
                "mode": self.mode,
                "state": self.state,
            },
        )

    def _ingested_seq(self) -> int:
        try:
            return Sensor.objects.values_list("last_seq_ingested", flat=True).get(pk=self.sensor.pk)
        except Exception:
            close_old_connections()  # the database went away: reconnect on the next call, not never
            return 0

    def write_counters(self) -> None:
        totals = self.totals()
        try:
            Sensor.objects.filter(pk=self.sensor.pk).update(
                packets_read=totals["packets_read"],
                packets_published=totals["packets_published"],
                packets_undecodable=totals["packets_undecodable"],
                packets_dropped_capture=totals["packets_dropped"],
                drop_reasons=totals["drop_reasons"],
                last_seq_published=self.next_seq - 1,
                state=self.state,
                last_heartbeat=timezone.now(),
            )
        except Exception as exc:  # the database is down: keep capturing, write again next time
            log.warning("could not write capture counters: %s", exc)
            close_old_connections()

    def heartbeat(self) -> None:
        totals = self.totals()
        doc = {
            "state": self.state,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "interface": self.interface,
            "bpf": self.bpf,
            "pid": os.getpid(),
            **{k: v for k, v in totals.items() if k != "drop_reasons"},
        }
        if self.evidence is not None:
            doc["evidence"] = self.evidence.status()
        try:
            control.write_heartbeat(self.sensor_name, doc, self.redis)
        except Exception as exc:
            log.debug("heartbeat not written: %s", exc)

    def _poll_control(self) -> None:
        try:
            command = control.pending_command(self.sensor_name, self.control_version, self.redis)
        except Exception:
            return
        if command is None:
            return
        self.control_version = command["version"]
        self.commands.append(command)
        if command["action"] in {"stop", "start", "reconfigure"}:
            self.request_interrupt()  # the main thread applies it once the source has stopped

    def request_interrupt(self) -> None:
        self.interrupt.set()
        if self.on_interrupt is not None:
            try:
                self.on_interrupt()
            except Exception as exc:
                log.warning("stopping the source failed: %s", exc)

    def announce_state(self, state: str) -> None:
        self.state = state
        self.broadcast(
            events.GROUP_CONTROL,
            {
                "type": "capture.status",
                "sensor": self.sensor_name,
                "state": state,
                "mode": self.mode,
                "reason": self.mode_reason,
                "interface": self.interface,
            },
        )
        self.write_counters()
        self.heartbeat()

    def summary(self) -> dict[str, Any]:
        """Counts for --summary-json; call after the publisher is closed (nothing left in flight)."""
        pub = self.publisher.stats()
        for counts in self.files.values():
            # A closed publisher has published or dropped every batch: the rest of a file was dropped.
            lost = counts.packets_read - counts.published
            if lost > 0:
                reason = next(iter(pub["dropped"]), "unpublished at exit")
                counts.dropped = Counter({reason: lost})
        return {
            "sensor": self.sensor_name,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "files": [c.as_dict() for c in self.files.values()],
            "totals": {
                "packets_read": self.read,
                "published": pub["published_packets"],
                "undecodable": self.undecodable,
                "skipped_already_published": self.skipped,
                "dropped": pub["dropped_packets"],
                "drop_reasons": dict(pub["dropped"]),
                "unpublished_at_exit": pub["pending_packets"],
            },
        }


def enqueue_ingest(redis_client: Any, sensor: str, *, requeue: bool = False) -> bool:
    """Queue the ingest task for ``sensor`` by name, unless one is queued already.

    "Queued already" is the sensor's scheduled flag (the worker clears it when a drain starts; it
    expires after 5 s). ``requeue`` queues one even so: the flag may belong to a task that died
    with its worker.
    """
    from celery import current_app
    from django.conf import settings

    try:
        if not redis_client.set(ingest_scheduled_key(sensor), b"1", nx=not requeue, ex=5):
            return False
        current_app.send_task(settings.NETMON_INGEST_TASK, args=[sensor])
    except Exception as exc:  # the beat sweeper schedules it once the broker is back
        log.warning("could not enqueue ingest for %s: %s", sensor, exc)
        return False
    return True
