"""The worker's hub: draining a sensor's Redis stream in order (decode, score, store, acknowledge, publish).

One worker at a time holds a sensor's lock and reads its stream through a consumer group, so
batches are featurised in stream order whatever order their tasks arrive in, and the stateful
feature statistics (kept in Redis per sensor) stay exact.

This module owns the lock, the reads, the dedup of entries, the gap accounting, the transaction
and the acknowledgement; the work on the records is done by leaves that know nothing of streams:
``capture.storage.store_batch`` (receipt, packets, counters) and ``store_flows``, ``detection.scoring``
(``score_batch``), ``detection.anomalies`` (``save_anomalies``, which files each anomaly under
its incident with ``detection.incidents``) and ``detection.live`` (``broadcast_anomalies``).

Crash safety (the order of effects of a read, in ``_process_entries``, is this contract):

* the new batches of one read are scored together; their packets, flows, anomalies, incidents
  and batch receipts (idempotent on sensor + first seq) commit in one transaction, then the
  feature state is saved, then the entries are acknowledged, and only then are the read's top
  anomalies published: a dashboard never shows an anomaly that is not committed, and a crash
  before publishing loses live messages only (a redelivered read finds its receipts and
  publishes nothing again; the API lists every anomaly);
* an entry a dead worker read but never acknowledged stays pending in the consumer group and
  is read again first by the next lock holder (the lock expires if its holder dies);
* a gap in sequence numbers (entries trimmed at the stream's bound, or lost with a Redis
  restart) is counted as dropped, so stored + dropped always adds up to what was published;
  the part of a gap the capture dropped itself (announced in the entry's ``dropped_before``
  field) is not counted again: stored + dropped by capture + dropped in the stream = read;
* a defect in filing a read's anomalies (not a database error) undoes the filing to its savepoint
  and is logged; the read's packets are stored with their scores, under no incident, so one bad
  read cannot stall the sensor;
* the lock is extended before the commit: a holder whose scoring outlived the lock must not
  commit what its successor is reading again (the gaps would be counted twice).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import msgpack
import numpy as np
import redis
from django.db import DatabaseError, transaction
from django.db.models import F
from redis.lock import Lock

from capture import storage
from capture.connections import redis_client
from capture.models import Sensor
from capture.records import (
    Batch,
    BatchFormatError,
    PacketColumns,
    decode_batch,
    ingest_scheduled_key,
    stream_key,
)
from capture.stream import DROPPED_FIELD
from detection import announce, live, scoring, siem
from detection.anomalies import SavedAnomalies, save_anomalies

log = logging.getLogger(__name__)

GROUP = "netmon-ingest"
CONSUMER = "ingest"  # one consumer name: the lock makes the holder the only reader
LOCK_TTL = 15.0
READ_COUNT = 20
FOLLOW_UP_TTL_MS = 5000


def _state_key(sensor: str) -> str:
    return f"netmon:ingest:state:{sensor}"


@dataclass
class SensorState:
    """What the ingest of a sensor remembers between batches: the last seq processed and feature state."""

    last_seq: int = 0
    features: bytes = b""

    def dumps(self) -> bytes:
        return msgpack.packb({"last_seq": self.last_seq, "features": self.features})

    @classmethod
    def loads(cls, raw: bytes | None, sensor: Sensor) -> SensorState:
        if not raw:
            # Redis lost the state (restart): continue after what the database has, with cold statistics.
            return cls(last_seq=sensor.last_seq_ingested)
        data = msgpack.unpackb(raw)
        return cls(last_seq=int(data["last_seq"]), features=data.get("features") or b"")


@dataclass
class IngestResult:
    """What one drain did (for logs, tests and benchmarks)."""

    batches: int = 0
    packets: int = 0
    skipped: int = 0
    dropped: int = 0
    anomalies: int = 0
    locked_out: bool = False
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        """What the ingest task returns."""
        if self.locked_out:
            return {"batches": 0, "packets": 0, "dropped": 0, "locked_out": True}
        return {"batches": self.batches, "packets": self.packets, "dropped": self.dropped}


def ensure_group(client: redis.Redis, sensor: str) -> None:
    try:
        client.xgroup_create(stream_key(sensor), GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _follow_up_key(sensor: str) -> str:
    return f"netmon:ingest:follow-up:{sensor}"


def claim_follow_up(client: redis.Redis, sensor: str) -> bool:
    """True if the caller should queue the follow-up of a locked-out drain (none is waiting yet).

    One waiting task per sensor is enough to pick up what arrives after the lock holder's last
    read; every locked-out task retrying on its own made a storm of tasks (~30/s per process under
    overload) that took CPU from the holder. The claim expires, so a lost follow-up is replaced.
    """
    return bool(client.set(_follow_up_key(sensor), b"1", nx=True, px=FOLLOW_UP_TTL_MS))


def release_follow_up(client: redis.Redis, sensor: str) -> None:
    """The follow-up runs: the next locked-out task may queue another."""
    client.delete(_follow_up_key(sensor))


def mark_scheduled(client: redis.Redis, sensor: str) -> bool:
    """True if the caller should enqueue an ingest task (none is queued for this sensor already)."""
    return bool(client.set(ingest_scheduled_key(sensor), b"1", nx=True, ex=5))


def _read(client: redis.Redis, sensor: str, pending: bool) -> list[tuple[bytes, dict | None]]:
    try:
        reply = client.xreadgroup(
            GROUP, CONSUMER, {stream_key(sensor): "0" if pending else ">"}, count=READ_COUNT
        )
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        ensure_group(client, sensor)  # the stream vanished (Redis restarted): start over
        return []
    return reply[0][1] if reply else []


def drain_sensor(
    sensor_name: str, client: redis.Redis | None = None, max_seconds: float = 60.0
) -> IngestResult:
    """Process every unprocessed batch of ``sensor_name``'s stream, in order. Safe to call concurrently."""
    client = client or redis_client()
    result = IngestResult()
    lock = client.lock(f"netmon:lock:ingest:{sensor_name}", timeout=LOCK_TTL, blocking=False)
    if not lock.acquire():
        result.locked_out = True
        return result
    try:
        _drain_locked(client, sensor_name, lock, result, max_seconds)
    except redis.exceptions.LockNotOwnedError:
        # A read took longer than the lock lives and another worker took the sensor over. Raised
        # before the commit, nothing of the read was committed and the new holder reads it again
        # (it was not acknowledged); raised after it, the read was committed and acknowledged.
        log.warning("ingest of %s lost its lock to another worker; that worker carries on", sensor_name)
    finally:
        _release(lock, sensor_name)
    return result


def _drain_locked(
    client: redis.Redis, sensor_name: str, lock: Lock, result: IngestResult, max_seconds: float
) -> None:
    """Read and process the stream while holding ``lock``: first what is pending, then what is new."""
    client.delete(ingest_scheduled_key(sensor_name))
    ensure_group(client, sensor_name)
    sensor, _ = Sensor.objects.get_or_create(name=sensor_name)
    state = SensorState.loads(client.get(_state_key(sensor_name)), sensor)
    deadline = time.monotonic() + max_seconds
    pending = True  # first what a previous holder read but never acknowledged
    while time.monotonic() < deadline:
        entries = _read(client, sensor_name, pending)
        if not entries:
            if pending:
                pending = False
                continue
            break
        _process_entries(client, sensor, state, entries, result, lock)
        lock.extend(LOCK_TTL, replace_ttl=True)


def _release(lock: Lock, sensor_name: str) -> None:
    try:
        lock.release()
    except redis.exceptions.LockError:
        log.warning("ingest lock for %s expired while draining", sensor_name)
    except redis.RedisError as exc:  # Redis went away: the lock expires on its own (LOCK_TTL)
        log.warning("could not release the ingest lock for %s: %s", sensor_name, exc)


@dataclass
class NewBatch:
    """A decoded stream entry with records not processed yet (only its new tail if it overlapped)."""

    entry_id: str
    batch: Batch
    dropped_by_capture: int  # announced in the entry's ``dropped_before`` field


def _process_entries(
    client: redis.Redis,
    sensor: Sensor,
    state: SensorState,
    entries: list[tuple[bytes, dict | None]],
    result: IngestResult,
    lock: Lock | None = None,
) -> None:
    """Score the new batches of ``entries`` together, store each once, then acknowledge them all.

    One model call and one transaction for up to READ_COUNT batches: the fixed costs of scoring
    and committing are paid once per read, not per batch, which is what lets one worker keep up
    with a fast sensor. Scoring the concatenation in stream order is the same as scoring the
    batches one after the other (the feature state flows through). If the worker dies before the
    state is saved, the whole read is redelivered, re-scored from the old state (same features)
    and the batches stored already are recognised by their receipts.

    The order of the steps is the crash-safety contract (module docstring): score, commit
    (receipts, packets, gaps, anomalies, incidents, flows), save the feature state, acknowledge,
    and only then publish.
    """
    new, last = _new_batches(sensor, state.last_seq, entries, result)
    if not new:
        _acknowledge(client, sensor, entries)
        return
    merged = _merge(sensor, new)
    scored = scoring.score_batch(sensor, merged, state)
    if lock is not None:
        # Commit only while we own the sensor: if scoring outlived the lock, another worker may be
        # reading these entries already, and two commits would count the same gaps twice.
        lock.extend(LOCK_TTL, replace_ttl=True)
    with transaction.atomic():
        fresh, cols = _store_batches(sensor, new, result, scored)
        rows = np.flatnonzero(fresh)  # not the batches stored before a crash
        records = merged.records if len(rows) == len(fresh) else merged.records[rows]
        stored = Batch(sensor=sensor.name, records=records, read_at=merged.read_at)
        saved = _save_fresh_anomalies(sensor, stored, rows, scored, cols)
        _store_fresh_flows(sensor, stored, cols, saved)
    _save_state(client, sensor, state, last, scored)
    _acknowledge(client, sensor, entries)
    result.anomalies += saved.count
    live.broadcast_anomalies(saved, merged.sensor, merged.read_at)
    live.broadcast_incidents(saved.opened, saved.updated)
    announce.queue_notifications(saved.opened, saved.raised)
    siem.emit(saved)


def _new_batches(
    sensor: Sensor, last: int, entries: list[tuple[bytes, dict | None]], result: IngestResult
) -> tuple[list[NewBatch], int]:
    """The batches of ``entries`` with records after seq ``last``, in order, and the last seq they reach.

    Unreadable entries are logged and passed over; batches processed before (a redelivery after a
    crash, a duplicate publish) are counted as skipped.
    """
    new: list[NewBatch] = []
    for entry_id, fields in entries:
        if not fields:  # pending entry deleted by trimming: its seq gap is counted with the next batch
            continue
        try:
            batch = decode_batch(fields)
        except BatchFormatError as exc:
            log.error("sensor %s: unreadable stream entry %s skipped: %s", sensor.name, entry_id, exc)
            continue
        if batch.last_seq <= last:  # stored before a crash, or a duplicate publish
            result.skipped += 1
            continue
        if batch.first_seq <= last:  # overlaps what we have: keep only the new tail
            batch.records = batch.records[batch.records["seq"] > last]
        last = batch.last_seq
        new.append(NewBatch(entry_id.decode(), batch, _capture_dropped_before(fields)))
    return new, last


def _merge(sensor: Sensor, new: list[NewBatch]) -> Batch:
    """One batch of the read's new records in stream order, scored with one model call."""
    return Batch(
        sensor=sensor.name,
        records=np.concatenate([part.batch.records for part in new]),
        app={seq: fields for part in new for seq, fields in part.batch.app.items()},
        read_at=min((part.batch.read_at for part in new if part.batch.read_at), default=0.0),
    )


def _store_batches(
    sensor: Sensor, new: list[NewBatch], result: IngestResult, scored: scoring.ScoredBatch | None = None
) -> tuple[np.ndarray, PacketColumns | None]:
    """Store each batch once with the gap before it counted as dropped; which merged rows were
    stored now, and their text columns (None if none was).

    Runs in the read's transaction. Gaps are measured from what the database has accounted for
    (stored or counted), read in the write transaction (BEGIN IMMEDIATE on SQLite, a row lock on
    PostgreSQL): a worker whose state in Redis is stale (its predecessor died, or lost the lock
    while committing) cannot count packets that were stored as dropped. The read is scored before
    it is stored, so each flagged packet's row is written with its score (``anomaly_score``).
    Their flows are stored after the anomalies are filed (``_store_fresh_flows``).
    """
    flagged_scores = scored.anomaly_scores() if scored is not None else None
    fresh = np.zeros(sum(len(part.batch.records) for part in new), dtype=bool)
    offset = 0
    stored_now: list[PacketColumns] = []
    floor = Sensor.objects.select_for_update().values_list("last_seq_ingested", flat=True).get(pk=sensor.pk)
    for part in new:
        batch = part.batch
        n = len(batch.records)
        gap = _lost_in_stream(batch.first_seq, floor, part.dropped_by_capture)
        floor = max(floor, batch.last_seq)
        part_scores = flagged_scores[offset : offset + n] if flagged_scores is not None else None
        cols = PacketColumns.of(batch.records)
        stored = storage.store_batch(
            sensor,
            batch,
            part.entry_id,
            dropped_before=gap,
            anomaly_scores=part_scores,
            with_flows=False,
            cols=cols,
        )
        if stored.stored:
            fresh[offset : offset + n] = True
            stored_now.append(cols)
            result.batches += 1
            result.packets += stored.packets
            result.dropped += gap
            if batch.read_at:
                result.latencies.append(time.time() - batch.read_at)
        else:
            result.skipped += 1
        offset += n
    if not stored_now:
        return fresh, None
    return fresh, PacketColumns.joined(stored_now)


def _store_fresh_flows(
    sensor: Sensor, stored: Batch, cols: PacketColumns | None, saved: SavedAnomalies
) -> None:
    """The flows of the rows stored now, in one upsert for the whole read (see ``store_flows``).

    After the anomalies are filed: a one-packet flow that is an open scan's probe or a flood's
    packet (``saved.probes``) is held by its incident, which counts and lists it, and gets no
    flow row (a 10,000-port scan made 20,000 one-packet flow rows, the dearest part of its ingest;
    its packets are stored, flagged and linked to the incident all the same).
    """
    if cols is None:
        return
    held = np.zeros(len(stored.records), dtype=bool)
    held[saved.probes] = True
    storage.store_flows(sensor, stored.records, cols, held)


def _lost_in_stream(first_seq: int, floor: int, dropped_by_capture: int) -> int:
    """Packets missing between what is accounted for (``floor``) and a batch, lost on the way.

    Sequence numbers start at 1. Packets the capture dropped itself (its buffer overflowed while
    Redis was away) are in its own counters already: only the rest of the gap was lost in the stream.
    """
    gap = max(0, first_seq - floor - 1)
    return gap - min(gap, dropped_by_capture)


def _save_fresh_anomalies(
    sensor: Sensor,
    stored: Batch,
    rows: np.ndarray,
    scored: scoring.ScoredBatch | None,
    cols: PacketColumns | None = None,
) -> SavedAnomalies:
    """Anomalies of the rows stored now (``stored``: the read's rows ``rows``), counted as scored;
    ``cols``: the text columns of those rows."""
    if not len(rows) or scored is None:
        return SavedAnomalies(0, [])
    try:
        with transaction.atomic():  # a savepoint: what a failed filing wrote is undone, not the packets
            saved = save_anomalies(sensor, stored, scored.select(rows), cols)
    except DatabaseError:
        raise  # the database's own trouble: the task retries the whole read (tasks.ingest_sensor)
    except Exception:
        # A defect in filing (grouping, wording, ...) must not stall the sensor: the same read would
        # fail again at every redelivery while capture's backlog is trimmed and counted as dropped.
        # Its packets are stored with their scores (``?flagged=true`` finds them), under no incident.
        seqs = stored.records["seq"]
        log.exception(
            "sensor %s: filing the anomalies of packets %d-%d failed; they are stored with their "
            "scores, under no incident",
            sensor.name, int(seqs.min()), int(seqs.max()),
        )  # fmt: skip
        saved = SavedAnomalies(0, [])
    Sensor.objects.filter(pk=sensor.pk).update(packets_scored=F("packets_scored") + len(rows))
    return saved


def _save_state(
    client: redis.Redis, sensor: Sensor, state: SensorState, last: int, scored: scoring.ScoredBatch | None
) -> None:
    """Remember the last seq processed and the feature state after it (unchanged while nothing scores)."""
    state.last_seq = last
    if scored is not None:
        state.features = scored.feature_state
    client.set(_state_key(sensor.name), state.dumps())


def _acknowledge(client: redis.Redis, sensor: Sensor, entries: list[tuple[bytes, dict | None]]) -> None:
    client.xack(stream_key(sensor.name), GROUP, *[entry_id for entry_id, _ in entries])


def _capture_dropped_before(fields: dict) -> int:
    raw = fields.get(DROPPED_FIELD, fields.get(DROPPED_FIELD.decode()))
    try:
        return max(0, int(raw)) if raw else 0
    except ValueError:
        return 0


def known_sensors(client: redis.Redis) -> list[str]:
    prefix = len(stream_key(""))
    return [key.decode()[prefix:] for key in client.scan_iter(match=stream_key("*"), count=100)]


def sensors_needing_ingest(client: redis.Redis) -> list[str]:
    """Sensors whose stream has entries not yet delivered or not yet acknowledged."""
    needy = []
    for sensor in known_sensors(client):
        try:
            groups = client.xinfo_groups(stream_key(sensor))
        except redis.ResponseError:
            continue
        group = next((g for g in groups if g["name"] in (GROUP, GROUP.encode())), None)
        if group is None or group.get("pending") or group.get("lag") is None or group.get("lag"):
            needy.append(sensor)
    return needy
