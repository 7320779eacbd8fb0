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
from django.db.models import F
from django.db.models.functions import Greatest

from capture import events
from capture import services as capture_services
from capture.models import Sensor
from capture.records import Batch, ip_to_text, protocol_name
from capture.storage import timestamps_text
from detection import ml
from detection.features import FeatureExtractor, FeatureState
from detection.models import Anomaly, DetectionModel, Incident

log = logging.getLogger(__name__)

INCIDENT_QUIET = timedelta(seconds=60)  # a source quiet this long closes its incident
BROADCAST_PER_BATCH = 10


@dataclass
class ScoredBatch:
    """Scores of one batch, which of its packets are anomalies, and the feature state after it."""

    scores: np.ndarray
    threshold: float
    is_anomaly: np.ndarray
    explanations: dict[int, tuple[str, list[dict[str, Any]]]]  # row index -> (text, contributions)
    model_kind: str
    model_versions: dict[str, int]
    feature_state: bytes

    def select(self, rows: np.ndarray) -> ScoredBatch:
        """The scores of the given rows, renumbered from 0 (the stored part of a read)."""
        position = {int(row): i for i, row in enumerate(rows)}
        return ScoredBatch(
            scores=self.scores[rows],
            threshold=self.threshold,
            is_anomaly=self.is_anomaly[rows],
            explanations={position[i]: v for i, v in self.explanations.items() if i in position},
            model_kind=self.model_kind,
            model_versions=self.model_versions,
            feature_state=self.feature_state,
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
            self.model = ml.load_model(row.artifact_path)
            self.extractor = FeatureExtractor(row.feature_level)
        self.row = row
        return self.row, self.model, self.extractor


_models = _ModelCache()


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
    explanations: dict[int, tuple[str, list[dict[str, Any]]]] = {}
    if len(flagged):
        for i, contributions in zip(flagged.tolist(), model.explain(X[flagged]), strict=True):
            text = ml.explain_text(model, batch.records[i], contributions)
            explanations[i] = (text, ml.contributions_as_dicts(contributions))
    return ScoredBatch(
        scores=scores,
        threshold=float(model.threshold),
        is_anomaly=scores > model.threshold,
        explanations=explanations,
        model_kind=row.kind,
        model_versions={row.kind: row.version},
        feature_state=fstate.to_bytes(),
    )


def _incidents_for(sensor: Sensor, sources: dict[str | None, list[int]], ts: list[datetime], scores) -> dict:
    """The open incident of each source (created when none is open), updated with this batch's anomalies."""
    result = {}
    for src, rows in sources.items():
        first, last = min(ts[i] for i in rows), max(ts[i] for i in rows)
        top = float(max(scores[i] for i in rows))
        incident = (
            Incident.objects.filter(sensor=sensor, src_ip=src, last_seen__gte=first - INCIDENT_QUIET)
            .order_by("-last_seen")
            .first()
        )
        if incident is None:
            incident = Incident.objects.create(
                sensor=sensor,
                src_ip=src,
                first_seen=first,
                last_seen=last,
                anomaly_count=len(rows),
                max_score=top,
            )
        else:
            Incident.objects.filter(pk=incident.pk).update(
                last_seen=Greatest(F("last_seen"), last),
                anomaly_count=F("anomaly_count") + len(rows),
                max_score=Greatest(F("max_score"), top),
            )
        result[src] = incident
    return result


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
    records = batch.records
    rows = sorted(scored.explanations)
    ts = {i: datetime.fromtimestamp(float(records["ts"][i]), tz=UTC) for i in rows}
    ts_text = dict(zip(rows, timestamps_text(records["ts"][rows]), strict=True))
    src = {i: ip_to_text(records["src_ip"][i], int(records["ip_version"][i])) for i in rows}
    by_source: dict[str | None, list[int]] = {}
    for i in rows:
        by_source.setdefault(src[i], []).append(i)
    incidents = _incidents_for(sensor, by_source, ts, scored.scores)
    for source, incident in incidents.items():
        if not incident.summary:
            incident.summary = scored.explanations[by_source[source][0]][0][:2000]
            Incident.objects.filter(pk=incident.pk, summary="").update(summary=incident.summary)
    versions = json.dumps(scored.model_versions)
    now = timestamps_text(np.array([time.time()]))[0]
    values = []
    for i in rows:
        r = records[i]
        version = int(r["ip_version"])
        text, contributions = scored.explanations[i]
        values.append(
            (
                sensor.pk, incidents[src[i]].pk, int(r["seq"]), ts_text[i],
                protocol_name(int(r["eth_type"]), int(r["proto"]), version), src[i],
                ip_to_text(r["dst_ip"], version), int(r["sport"]), int(r["dport"]),
                float(scored.scores[i]), scored.threshold, scored.model_kind, versions, text,
                json.dumps(contributions), False, now,
            )
        )  # fmt: skip
    # In the transaction of the batch receipt: a batch stored once has its anomalies once.
    _insert_anomalies(values)
    best = sorted(rows, key=lambda i: scored.scores[i], reverse=True)[:BROADCAST_PER_BATCH]
    seqs = [int(records["seq"][i]) for i in best]
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
