"""What the worker publishes to dashboards: each read's top anomalies and the incidents it opened or grew.

Sent through capture.events to the anomalies group after the read is committed and acknowledged,
so a dashboard never shows an anomaly the database does not have; each read's messages of a group
in one send (``events.broadcast_many``), which the consumer takes apart into the same WebSocket
messages as before.
"""

from __future__ import annotations

from typing import Any

from capture import events
from detection.anomalies import SavedAnomalies
from detection.incidents import active_until
from detection.models import Anomaly, Incident


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
        "community_id": anomaly.community_id,
        "read_at": read_at,
    }


def broadcast_anomalies(saved: SavedAnomalies, sensor_name: str, read_at: float) -> None:
    """The highest-scoring anomalies of a read (up to 20 batches) to dashboards; the API lists them all."""
    events.broadcast_many(
        events.GROUP_ANOMALIES,
        [{"type": "anomaly.detected", "anomaly": anomaly_event(anomaly, sensor_name, read_at),
          "batch_anomalies": saved.count} for anomaly in saved.top],
    )  # fmt: skip


BROADCAST_INCIDENTS = 50  # incident events per read at most (a spoofed flood opens thousands)


def incident_event(incident: Incident) -> dict[str, Any]:
    """The ``incident`` of an ``incident_opened`` / ``incident_updated`` WebSocket message."""
    return {
        "id": incident.pk,
        "sensor": incident.sensor.name,
        "entity": incident.entity,
        "kind": incident.kind,
        "severity": incident.severity,
        "status": incident.status,
        "sources": incident.sources,
        "targets": incident.targets,
        "targets_more": incident.targets_more,
        "affected": int((incident.evidence or {}).get("affected", 0)),
        "effects": int((incident.evidence or {}).get("effects", 0)),
        "first_seen": incident.first_seen.isoformat(),
        "last_seen": incident.last_seen.isoformat(),
        "active_until": active_until(incident).isoformat(),
        "opened_at": incident.opened_at.isoformat() if incident.opened_at else None,
        "anomaly_count": incident.anomaly_count,
        "packet_count": incident.packet_count,
        "peak_score": incident.peak_score,
        "explanation": incident.explanation,
        "status_changed_by": who.get_username() if (who := incident.status_changed_by) else None,
        "status_changed_at": incident.status_changed_at.isoformat() if incident.status_changed_at else None,
        "community_id": incident.community_id,
    }


def broadcast_incidents(opened: list[int], updated: list[int]) -> None:
    """``incident.opened`` / ``incident.updated`` for incidents a read (or an operator) changed.

    One message per incident per call: a read that adds a thousand anomalies to an incident sends
    one ``incident_updated``. At most ``BROADCAST_INCIDENTS`` per call, highest peak score first.
    """
    wanted = [*opened, *updated]
    if not wanted:
        return
    rows = (
        Incident.objects.filter(pk__in=wanted[: BROADCAST_INCIDENTS * 4])
        .select_related("sensor", "status_changed_by")
        .order_by("-peak_score")[:BROADCAST_INCIDENTS]
    )
    new = set(opened)
    messages = [
        {
            "type": "incident.opened" if incident.pk in new else "incident.updated",
            "incident": incident_event(incident),
        }
        for incident in rows
    ]
    events.broadcast_many(events.GROUP_INCIDENTS, messages)
