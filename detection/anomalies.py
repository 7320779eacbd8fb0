"""Anomaly rows: the flagged packets of a stored read, written in the read's transaction.

Each flagged packet is filed under its entity's incident (detection.incidents), or with the
suppression rule that matched it, unless it is set apart as an attack's effect on another client
(over the threshold only through the attacked service's statistics: ``set_effects_apart``); then
it is no anomaly, its packet row loses its score, and the attack's incident counts it. Per read
and incident, its representatives (the highest scores and the first anomaly of each target,
``incidents.REPRESENTATIVES_PER_GROUP`` at most) are stored as anomaly rows with the model's
score, threshold, versions and explanation; the others are counted on the incident and keep
their score on their packet row (``Packet.anomaly_score``). The highest-scoring rows are read
back for the dashboards (detection.live); the API lists them all.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import connection

from capture.community import community_ids
from capture.models import Packet, Sensor
from capture.records import Batch, PacketColumns, timestamps_text
from detection import incidents
from detection.models import Anomaly
from detection.scoring import ScoredBatch

BROADCAST_PER_BATCH = 10  # anomalies of a read read back for the dashboards, highest scores first
_UNFLAG_CHUNK = 500  # sequence numbers per UPDATE of packets set apart as an attack's effect


@dataclass
class SavedAnomalies:
    """How many anomaly rows a read produced, and the highest-scoring ones (read back) for dashboards."""

    count: int  # flagged packets (each counted on its incident)
    top: list[Anomaly]
    opened: list[int] = field(default_factory=list)  # incidents this read opened
    updated: list[int] = field(default_factory=list)  # incidents this read added anomalies to
    stored: int = 0  # anomaly rows written (the incidents' representatives)
    raised: list[int] = field(default_factory=list)  # open incidents whose severity this read raised
    effects: int = 0  # flagged packets set apart as an attack's effect (not anomalies, not counted above)
    # rows of the batch that are an open scan's or flood's own packets (``incidents.PROBE_KINDS``):
    # their incident holds their one-packet flows (``capture.storage.store_flows``'s ``held``)
    probes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


_ANOMALY_COLUMNS = [
    "sensor_id", "incident_id", "packet_seq", "ts", "protocol", "src_ip", "dst_ip", "src_port",
    "dst_port", "score", "threshold", "model_kind", "model_versions", "explanation", "contributions",
    "false_positive", "created_at", "suppressed_by_id", "community_id",
]  # fmt: skip


def save_anomalies(
    sensor: Sensor, batch: Batch, scored: ScoredBatch | None, columns: PacketColumns | None = None
) -> SavedAnomalies:
    """File the flagged packets of a stored batch under their incidents; rows for the representatives.

    Every flagged packet counts on its incident (``anomaly_count``, evidence) and keeps its score
    on its packet row (written by ``capture.storage``); only each incident's representatives of the
    read (``incidents.REPRESENTATIVES_PER_GROUP``) are explained and stored as ``Anomaly`` rows, so a
    flood costs per packet about what benign traffic costs. ``columns``: the batch's
    ``PacketColumns`` when the caller has them (the worker made them to store the packets).
    """
    if scored is None or not scored.is_anomaly.any():
        return SavedAnomalies(0, [])
    rows = scored.flagged
    flagged = batch.records[rows]
    cols = columns.take(rows.tolist()) if columns is not None else PacketColumns.of(flagged)
    scores = scored.scores[rows]
    all_opened = scored.opened if len(scored.opened) else None  # who opened each conversation
    opened = all_opened[rows] if all_opened is not None else None
    read = incidents.read_anomalies(flagged, cols, scores, scored.top_features, scored.threshold, opened)
    groups = incidents.group_anomalies(sensor, read, scored.without_service)
    set_apart = incidents.effects(groups)  # an attack's effect on other clients: no anomalies
    if set_apart:
        _unflag(sensor, flagged["seq"][set_apart].tolist())
    chosen = incidents.representatives(groups)
    stored = np.array(chosen, dtype=np.int64)
    kept = flagged[stored]  # the rows stored (only theirs are needed as Python values)
    explanations = scored.explain(stored, kept)
    read.texts = {k: text for k, (text, _) in zip(chosen, explanations, strict=True)}
    # Only the rows stored need their flow's Community ID (a new incident takes its first one's).
    flows = community_ids(kept) if settings.NETMON_COMMUNITY_ID else [""] * len(chosen)
    read.community_ids = {k: flow or "" for k, flow in zip(chosen, flows, strict=True)}
    exchanged = incidents.packets_per_client(batch.records, all_opened)
    assignment = incidents.file_groups(sensor, read, groups, exchanged)
    versions = json.dumps(scored.model_versions)
    now = timestamps_text(np.array([time.time()]))[0]
    seqs, sports, dports = kept["seq"].tolist(), kept["sport"].tolist(), kept["dport"].tolist()
    values = [
        (
            sensor.pk, assignment.ids[k], seq, cols.ts[k], cols.protocol[k], cols.src_ip[k],
            cols.dst_ip[k], sport, dport, float(scores[k]), scored.threshold, scored.model_kind,
            versions, text, contributions, False, now, assignment.suppressed[k], read.community_ids[k],
        )
        for k, seq, sport, dport, (text, contributions) in zip(
            chosen, seqs, sports, dports, explanations, strict=True
        )
    ]  # fmt: skip
    # In the transaction of the batch receipt: a batch stored once has its anomalies once.
    _insert_anomalies(values)
    best = stored[np.argsort(-scores[stored], kind="stable")[:BROADCAST_PER_BATCH]]
    top = list(
        Anomaly.objects.filter(sensor=sensor, packet_seq__in=flagged["seq"][best].tolist()).order_by("-score")
    )
    return SavedAnomalies(
        len(rows) - len(set_apart), top, assignment.opened, assignment.updated, stored=len(chosen),
        raised=assignment.raised, effects=len(set_apart), probes=rows[assignment.probes],
    )  # fmt: skip


def _unflag(sensor: Sensor, seqs: list[int]) -> None:
    """Packets set apart as an attack's effect are not flagged: their rows, stored with their score
    earlier in the read's transaction, lose it (``Packet.anomaly_score``: anomalies only)."""
    for lo in range(0, len(seqs), _UNFLAG_CHUNK):
        Packet.objects.filter(sensor=sensor, seq__in=seqs[lo : lo + _UNFLAG_CHUNK]).update(anomaly_score=None)


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
