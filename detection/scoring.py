"""Scoring a batch with the active model and turning scores over its threshold into anomalies.

The model in use is the active version of the configured ``ml_model`` kind. Until one is
trained, ``score_batch`` returns None: packets are still stored, and /api/status says how to
train one. Stateful features continue the sensor's state (kept in Redis by detection.ingest).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.db import connection

from capture import events
from capture import services as capture_services
from capture.models import Sensor
from capture.records import Batch, PacketColumns, empty_records, timestamps_text
from detection import ml, services
from detection.features import FeatureExtractor, FeatureState
from detection.models import Anomaly, DetectionModel, Incident

log = logging.getLogger(__name__)

INCIDENT_QUIET = timedelta(seconds=60)  # a source quiet this long closes its incident
BROADCAST_PER_BATCH = 10
_IN_CHUNK = 500  # values per IN (...) list or bulk statement


@dataclass
class ScoredBatch:
    """Scores of one batch, which of its packets are anomalies, and the feature state after it."""

    scores: np.ndarray
    threshold: float
    is_anomaly: np.ndarray
    explanations: dict[int, tuple[str, str]]  # row index -> (text, contributions as JSON text)
    model_kind: str
    model_versions: dict[str, int]
    feature_state: bytes
    # The text columns of the explained rows, in row order: computed once for the explanations,
    # used again to store the anomalies.
    columns: PacketColumns | None = None

    def select(self, rows: np.ndarray) -> ScoredBatch:
        """The scores of the given rows, renumbered from 0 (the stored part of a read)."""
        position = {int(row): i for i, row in enumerate(rows)}
        explained = sorted(self.explanations)
        kept = [k for k, i in enumerate(explained) if i in position]
        return ScoredBatch(
            scores=self.scores[rows],
            threshold=self.threshold,
            is_anomaly=self.is_anomaly[rows],
            explanations={position[explained[k]]: self.explanations[explained[k]] for k in kept},
            model_kind=self.model_kind,
            model_versions=self.model_versions,
            feature_state=self.feature_state,
            columns=self.columns.take(kept) if self.columns is not None else None,
        )


class _ModelCache:
    """The model in use, loaded once per worker process and reloaded when the active version changes.

    Which version is active is asked of the database for every batch (one indexed query per
    thousands of packets), so switching or deactivating a model takes effect on the next batch.
    """

    def __init__(self) -> None:
        self.row: DetectionModel | None = None
        self.model: ml.AnomalyModel | None = None
        self.extractor: FeatureExtractor | None = None

    def current(self) -> tuple[DetectionModel, ml.AnomalyModel, FeatureExtractor] | None:
        kind = capture_services.get_config().ml_model
        ready = DetectionModel.Status.READY
        row = DetectionModel.objects.filter(kind=kind, is_active=True, status=ready).first()
        if row is None:
            self.row = self.model = self.extractor = None
            return None
        if self.row is None or row.pk != self.row.pk:
            if reason := services.outdated_reason(row):
                # Logged once per version: the row is remembered below. /api/status says it too.
                log.error("not scoring: %s", reason)
                self.model = self.extractor = None
            else:
                self.model = ml.load_model(row.artifact_path)
                self.extractor = FeatureExtractor(row.feature_level)
        self.row = row
        if self.model is None or self.extractor is None:
            return None
        return self.row, self.model, self.extractor


_models = _ModelCache()


def warm_up() -> DetectionModel | None:
    """Load the model in use and score a few records with it; the model's row, or None.

    The first read of a new process otherwise pays ~1 s for it (reading the artifacts, loading
    the compiled forest and feature code), which shows as a latency spike. A worker calls this
    in its main process before it starts its pool, so the processes it forks, and those that
    later replace them, start with all of that in memory.
    """
    current = _models.current()
    if current is None:
        return None
    row, model, extractor = current
    sample = empty_records(64)
    sample["ts"] = np.arange(64, dtype=np.float64)
    score_records(model, extractor, sample, extractor.new_state())
    return row


def score_records(
    model: ml.AnomalyModel, extractor: FeatureExtractor, records: np.ndarray, state: FeatureState
) -> tuple[np.ndarray, np.ndarray]:
    """(features, scores) of records, continuing ``state``: the one code path for live and offline scoring."""
    X = extractor.transform(records, state)
    return X, model.score(X)


def load_state(raw: bytes, extractor: FeatureExtractor) -> FeatureState:
    if raw:
        try:
            state = FeatureState.from_bytes(raw)
            if state.level == extractor.level:
                return state
        except Exception as exc:  # a state from another version: start cold rather than fail
            log.warning("feature state unusable, starting fresh: %s", exc)
    return extractor.new_state()


def score_batch(sensor: Sensor, batch: Batch, state: Any) -> ScoredBatch | None:
    """Score ``batch`` with the model in use (None while none is active)."""
    current = _models.current()
    if current is None:
        return None
    row, model, extractor = current
    fstate = load_state(state.features, extractor)
    X, scores = score_records(model, extractor, batch.records, fstate)
    flagged = np.flatnonzero(scores > model.threshold)
    explanations: dict[int, tuple[str, str]] = {}
    columns = None
    if len(flagged):
        records = batch.records[flagged]
        columns = PacketColumns.of(records)
        worded = model.explain_records(X[flagged], records, columns=columns)
        explanations = dict(zip(flagged.tolist(), worded, strict=True))
    return ScoredBatch(
        scores=scores,
        threshold=float(model.threshold),
        is_anomaly=scores > model.threshold,
        explanations=explanations,
        model_kind=row.kind,
        model_versions={row.kind: row.version},
        feature_state=fstate.to_bytes(),
        columns=columns,
    )


def _open_incidents(sensor: Sensor, firsts: dict[str | None, datetime]) -> dict[str | None, Incident]:
    """Per source, its most recent incident still open at the source's first anomaly of this read."""
    recent = Incident.objects.filter(sensor=sensor, last_seen__gte=min(firsts.values()) - INCIDENT_QUIET)
    addresses = [src for src in firsts if src is not None]
    found: list[Incident] = []
    for lo in range(0, len(addresses), _IN_CHUNK):  # a spoofed flood has thousands of sources
        found += recent.filter(src_ip__in=addresses[lo : lo + _IN_CHUNK])
    if None in firsts:
        found += recent.filter(src_ip__isnull=True)
    latest: dict[str | None, Incident] = {}
    for incident in found:
        src, first = incident.src_ip, firsts.get(incident.src_ip)
        if first is None:  # stored in another spelling than ours (cannot happen with inet_ntop text)
            continue
        if incident.last_seen >= first - INCIDENT_QUIET and (
            src not in latest or incident.last_seen > latest[src].last_seen
        ):
            latest[src] = incident
    return latest


def _incidents_for(
    sensor: Sensor,
    sources: dict[str | None, list[int]],
    ts: list[float],
    scores: np.ndarray,
    summaries: dict[str | None, str],
) -> dict[str | None, int]:
    """The id of each source's open incident (created when none is open), updated with this read's
    anomalies.

    A handful of statements per read however many sources it has. Only the holder of the sensor's
    ingest lock writes its incidents, inside the read's transaction, so the counters can be
    computed here and written back.
    """

    def when(t: float) -> datetime:
        return datetime.fromtimestamp(t, tz=UTC)

    firsts = {src: min(ts[k] for k in rows) for src, rows in sources.items()}
    current = _open_incidents(sensor, {src: when(t) for src, t in firsts.items()})
    created: list[tuple[str | None, float, float, int, float, str]] = []
    updated = []
    for src, rows in sources.items():
        last = max(ts[k] for k in rows)
        top = float(scores[rows].max())
        incident = current.get(src)
        if incident is None:
            created.append((src, firsts[src], last, len(rows), top, summaries[src]))
        else:
            incident.last_seen = max(incident.last_seen, when(last))
            incident.anomaly_count += len(rows)
            incident.max_score = max(incident.max_score, top)
            incident.summary = incident.summary or summaries[src]
            updated.append(incident)
    fields = ["last_seen", "anomaly_count", "max_score", "summary"]
    Incident.objects.bulk_update(updated, fields, batch_size=_IN_CHUNK)
    ids = {src: incident.pk for src, incident in current.items()}
    ids.update(_insert_incidents(sensor, created))
    return ids


_INCIDENT_COLUMNS = [
    "sensor_id", "src_ip", "first_seen", "last_seen", "anomaly_count", "max_score", "summary",
]  # fmt: skip


def _insert_incidents(
    sensor: Sensor, created: list[tuple[str | None, float, float, int, float, str]]
) -> dict[str | None, int]:
    """Insert new incidents (source, first, last, count, max score, summary); their ids by source.

    Multi-row INSERT ... RETURNING id, whose rows come back in VALUES order on SQLite and
    PostgreSQL (as bulk_create relies on too). A spoofed flood opens an incident per packet, and
    the ORM's bulk_create spent more on preparing values than the rest of the read.
    """
    if not created:
        return {}
    firsts = timestamps_text(np.array([row[1] for row in created], dtype=np.float64))
    lasts = timestamps_text(np.array([row[2] for row in created], dtype=np.float64))
    values = [
        (sensor.pk, src, first, last, count, top, summary)
        for (src, _, _, count, top, summary), first, last in zip(created, firsts, lasts, strict=True)
    ]
    width = len(_INCIDENT_COLUMNS)
    per = min(_IN_CHUNK, max(1, (connection.features.max_query_params or 999) // width))
    row_marks = "(" + ", ".join(["%s"] * width) + ")"
    ids: dict[str | None, int] = {}
    with connection.cursor() as cursor:
        for lo in range(0, len(values), per):
            chunk = values[lo : lo + per]
            sql = (
                f"INSERT INTO {Incident._meta.db_table} ({', '.join(_INCIDENT_COLUMNS)}) "  # noqa: S608
                f"VALUES {', '.join([row_marks] * len(chunk))} RETURNING id"
            )
            cursor.execute(sql, [value for row in chunk for value in row])
            returned = cursor.fetchall()
            if len(returned) != len(chunk):
                raise RuntimeError(f"inserted {len(chunk)} incidents, got {len(returned)} ids back")
            ids.update((row[1], pk) for row, (pk,) in zip(chunk, returned, strict=True))
    return ids


@dataclass
class SavedAnomalies:
    """How many anomaly rows a read produced, and the highest-scoring ones (read back) for dashboards."""

    count: int
    top: list[Anomaly]


_ANOMALY_COLUMNS = [
    "sensor_id", "incident_id", "packet_seq", "ts", "protocol", "src_ip", "dst_ip", "src_port",
    "dst_port", "score", "threshold", "model_kind", "model_versions", "explanation", "contributions",
    "false_positive", "created_at",
]  # fmt: skip


def _insert_anomalies(values: list[tuple]) -> None:
    # The ORM's bulk_create prepared each of 17 values per row in Python: with a fifth of the traffic
    # attacking, that was two thirds of a worker's time. Table and column names are ours, not input.
    json_cast = "::jsonb" if connection.vendor == "postgresql" else ""
    marks = ["%s"] * len(_ANOMALY_COLUMNS)
    for column in ("model_versions", "contributions"):
        marks[_ANOMALY_COLUMNS.index(column)] += json_cast
    sql = (
        f"INSERT INTO {Anomaly._meta.db_table} ({', '.join(_ANOMALY_COLUMNS)}) "  # noqa: S608
        f"VALUES ({', '.join(marks)})"
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, values)


def save_anomalies(sensor: Sensor, batch: Batch, scored: ScoredBatch | None) -> SavedAnomalies:
    """Anomaly rows (grouped into incidents per source) for the flagged packets of a stored batch."""
    if scored is None or not scored.explanations:
        return SavedAnomalies(0, [])
    rows = sorted(scored.explanations)
    flagged = batch.records[rows]
    # text columns, computed for all rows at once (by score_batch already, for its explanations)
    cols = scored.columns if scored.columns is not None else PacketColumns.of(flagged)
    ts = flagged["ts"].astype(np.float64).tolist()
    scores = scored.scores[rows]
    by_source: dict[str | None, list[int]] = {}
    for k, src in enumerate(cols.src_ip):
        by_source.setdefault(src, []).append(k)
    explanations = [scored.explanations[i] for i in rows]
    summaries = {src: explanations[ks[0]][0][:2000] for src, ks in by_source.items()}
    incidents = _incidents_for(sensor, by_source, ts, scores, summaries)
    versions = json.dumps(scored.model_versions)
    now = timestamps_text(np.array([time.time()]))[0]
    incident_ids = [incidents[src] for src in cols.src_ip]
    values = [
        (
            sensor.pk, incident, seq, ts_text, protocol, src, dst, sport, dport, score,
            scored.threshold, scored.model_kind, versions, text, contributions, False, now,
        )
        for incident, seq, ts_text, protocol, src, dst, sport, dport, score, (text, contributions) in zip(
            incident_ids, flagged["seq"].tolist(), cols.ts, cols.protocol, cols.src_ip, cols.dst_ip,
            flagged["sport"].tolist(), flagged["dport"].tolist(), scores.tolist(), explanations, strict=True,
        )
    ]  # fmt: skip
    # In the transaction of the batch receipt: a batch stored once has its anomalies once.
    _insert_anomalies(values)
    best = np.argsort(-scores, kind="stable")[:BROADCAST_PER_BATCH]
    seqs = flagged["seq"][best].tolist()
    top = list(Anomaly.objects.filter(sensor=sensor, packet_seq__in=seqs).order_by("-score"))
    return SavedAnomalies(len(rows), top)


def anomaly_event(anomaly: Anomaly, sensor_name: str, read_at: float) -> dict[str, Any]:
    return {
        "id": anomaly.pk,
        "sensor": sensor_name,
        "ts": anomaly.ts.isoformat(),
        "src_ip": anomaly.src_ip,
        "dst_ip": anomaly.dst_ip,
        "protocol": anomaly.protocol,
        "src_port": anomaly.src_port,
        "dst_port": anomaly.dst_port,
        "score": anomaly.score,
        "threshold": anomaly.threshold,
        "model": anomaly.model_kind,
        "model_versions": anomaly.model_versions,
        "explanation": anomaly.explanation,
        "packet_seq": anomaly.packet_seq,
        "incident_id": anomaly.incident_id,
        "read_at": read_at,
    }


def broadcast_anomalies(saved: SavedAnomalies, batch: Batch) -> None:
    """The highest-scoring anomalies of a read (up to 20 batches) to dashboards; the API lists them all."""
    for anomaly in saved.top:
        events.broadcast(
            events.GROUP_ANOMALIES,
            {"type": "anomaly.detected", "anomaly": anomaly_event(anomaly, batch.sensor, batch.read_at),
             "batch_anomalies": saved.count},
        )  # fmt: skip
