"""What the worker publishes to dashboards: the highest-scoring anomalies of each read.

Sent through capture.events to the anomalies group after the read is committed and acknowledged,
so a dashboard never shows an anomaly the database does not have.
"""

from __future__ import annotations

from typing import Any

from capture import events
from detection.anomalies import SavedAnomalies
from detection.models import Anomaly


def anomaly_event(anomaly: Anomaly, sensor_name: str, read_at: float) -> dict[str, Any]:
    """The ``anomaly`` of an ``anomaly.detected`` WebSocket message."""
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


def broadcast_anomalies(saved: SavedAnomalies, sensor_name: str, read_at: float) -> None:
    """The highest-scoring anomalies of a read (up to 20 batches) to dashboards; the API lists them all."""
    for anomaly in saved.top:
        events.broadcast(
            events.GROUP_ANOMALIES,
            {"type": "anomaly.detected", "anomaly": anomaly_event(anomaly, sensor_name, read_at),
             "batch_anomalies": saved.count},
        )  # fmt: skip
