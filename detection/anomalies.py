"""Anomaly rows: the flagged packets of a stored read, written in the read's transaction.

Each anomaly is filed under its entity's incident (detection.incidents), or with the suppression
rule that matched it, and carries the model's
score, threshold, versions and explanation. The highest-scoring ones are read back for the
dashboards (detection.live); the API lists them all.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
from django.db import connection

from capture.models import Sensor
from capture.records import Batch, PacketColumns, timestamps_text
from detection import incidents
from detection.models import Anomaly
from detection.scoring import ScoredBatch

BROADCAST_PER_BATCH = 10  # anomalies of a read read back for the dashboards, highest scores first


@dataclass
class SavedAnomalies:
    """How many anomaly rows a read produced, and the highest-scoring ones (read back) for dashboards."""

    count: int
    top: list[Anomaly]
    opened: list[int] = field(default_factory=list)  # incidents this read opened
    updated: list[int] = field(default_factory=list)  # incidents this read added anomalies to


_ANOMALY_COLUMNS = [
    "sensor_id", "incident_id", "packet_seq", "ts", "protocol", "src_ip", "dst_ip", "src_port",
    "dst_port", "score", "threshold", "model_kind", "model_versions", "explanation", "contributions",
    "false_positive", "created_at", "suppressed_by_id",
]  # fmt: skip


def save_anomalies(sensor: Sensor, batch: Batch, scored: ScoredBatch | None) -> SavedAnomalies:
    """Anomaly rows (grouped into incidents per source) for the flagged packets of a stored batch."""
    if scored is None or not scored.explanations:
        return SavedAnomalies(0, [])
    rows = sorted(scored.explanations)
    flagged = batch.records[rows]
    # text columns, computed for all rows at once (by score_batch already, for its explanations)
    cols = scored.columns if scored.columns is not None else PacketColumns.of(flagged)
    scores = scored.scores[rows]
    explanations = [scored.explanations[i] for i in rows]
    read = incidents.read_anomalies(flagged, cols, scores, explanations, scored.threshold)
    assignment = incidents.assign_incidents(sensor, read, incidents.packets_per_client(batch.records))
    incident_ids = assignment.ids
    rules = assignment.suppressed
    versions = json.dumps(scored.model_versions)
    now = timestamps_text(np.array([time.time()]))[0]
    values = [
        (
            sensor.pk, incident, seq, ts_text, protocol, src, dst, sport, dport, score,
            scored.threshold, scored.model_kind, versions, text, contributions, False, now, rule,
        )
        for incident, rule, seq, ts_text, protocol, src, dst, sport, dport, score, (text, contributions) in zip(  # noqa: E501
            incident_ids, rules, flagged["seq"].tolist(), cols.ts, cols.protocol, cols.src_ip, cols.dst_ip,
            flagged["sport"].tolist(), flagged["dport"].tolist(), scores.tolist(), explanations, strict=True,
        )
    ]  # fmt: skip
    # In the transaction of the batch receipt: a batch stored once has its anomalies once.
    _insert_anomalies(values)
    best = np.argsort(-scores, kind="stable")[:BROADCAST_PER_BATCH]
    seqs = flagged["seq"][best].tolist()
    top = list(Anomaly.objects.filter(sensor=sensor, packet_seq__in=seqs).order_by("-score"))
    return SavedAnomalies(len(rows), top, assignment.opened, assignment.updated)


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
