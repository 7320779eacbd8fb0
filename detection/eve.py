"""Incidents and anomalies as Suricata EVE JSON alert events: the one formatting function of the SIEM output.

Used by the live sinks (``detection.siem``: a file and/or syslog, after each read's commit) and by
the ``eve`` export format (``exports``). An event follows Suricata's ``etc/schema.json`` and
``doc/userguide/output/eve/eve-json-format.rst``::

    {"timestamp": "2026-12-05T14:18:30.123456+0000", "flow_id": 4503599627370495,
     "event_type": "alert", "src_ip": "10.0.0.66", "src_port": 40000, "dest_ip": "10.0.0.5",
     "dest_port": 22, "proto": "TCP", "community_id": "1:...",
     "alert": {"action": "allowed", "gid": 1, "signature_id": 9100006, "rev": 1,
               "signature": "NETMON Brute force", "category": "Attempted User Privilege Gain",
               "severity": 1},
     "netmon": {"event": "incident_opened", "incident_id": 7, "kind": "brute_force", "score": ...}}

- the flow (addresses, ports, ``proto``, ``community_id``) is the incident's first anomaly's
  (``Incident.community_id``), turned so that ``src_ip`` is the incident's source (its client);
  ICMP carries ``icmp_type``/``icmp_code`` instead of ports, as Suricata does;
- ``flow_id``: the first 53 bits of the Community ID's digest, so every line of one conversation
  carries the same id, and it stays exact in JSON readers that parse numbers as doubles
  (Suricata's own is a per-process hash; the Community ID is what joins tools);
- ``timestamp``: packet time of the incident's latest anomaly (``last_seen``);
- ``alert.severity``: Suricata's scale, 1 high, 2 medium, 3 low; ``alert.action`` is always
  ``allowed`` (Netmon watches, it blocks nothing); ``signature_id`` per kind: ``SIGNATURES``;
- ``netmon``: the vendor object with Netmon's kind, score and explanation (Suricata's schema lists
  no such key: its top level is closed to its own event types; SIEMs keep unknown keys).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery

from capture.choices import INCIDENT_KIND_TITLES, IncidentKind, IncidentSeverity
from detection.models import Anomaly, Incident

GID = 1
REV = 1
ACTION = "allowed"


@dataclass(frozen=True)
class Signature:
    """How an incident kind reads in a SIEM: its stable signature id, and Suricata's category for it."""

    sid: int
    category: str


# Stable: a SIEM's rules and dashboards key on these numbers, so a kind keeps its number forever and
# a new kind takes the next free one. 9,100,000-9,100,099 is ours (outside the ranges the public rule
# sets use: 1-999,999 Snort/Talos, 2,000,000-2,999,999 Emerging Threats, 1,000,000-1,999,999 local).
# Categories are the descriptions of Suricata's classification.config.
SIGNATURES: dict[str, Signature] = {
    IncidentKind.PORT_SCAN: Signature(9_100_001, "Detection of a Network Scan"),
    IncidentKind.HORIZONTAL_SCAN: Signature(9_100_002, "Detection of a Network Scan"),
    IncidentKind.SYN_FLOOD: Signature(9_100_003, "Detection of a Denial of Service Attack"),
    IncidentKind.UDP_FLOOD: Signature(9_100_004, "Detection of a Denial of Service Attack"),
    IncidentKind.ICMP_FLOOD: Signature(9_100_005, "Detection of a Denial of Service Attack"),
    IncidentKind.BRUTE_FORCE: Signature(9_100_006, "Attempted User Privilege Gain"),
    IncidentKind.REQUEST_FLOOD: Signature(9_100_007, "Detection of a Denial of Service Attack"),
    IncidentKind.SLOW_CONNECTIONS: Signature(9_100_008, "Attempted Denial of Service"),
    IncidentKind.LARGE_TRANSFER: Signature(9_100_009, "Potential Corporate Privacy Violation"),
    IncidentKind.NEW_SERVICE: Signature(9_100_010, "Detection of a non-standard protocol or event"),
    IncidentKind.UNUSUAL_TRAFFIC: Signature(9_100_011, "Potentially Bad Traffic"),
}
ANOMALY_SIGNATURE = Signature(9_100_050, "Potentially Bad Traffic")  # one anomalous packet (optional)

SEVERITY = {IncidentSeverity.HIGH: 1, IncidentSeverity.MEDIUM: 2, IncidentSeverity.LOW: 3}
_PROTO = {"ICMPv6": "IPv6-ICMP"}  # Suricata's names where ours differ
_ICMP = ("ICMP", "ICMPv6")


def timestamp(when: datetime) -> str:
    """Suricata's form: ``2026-12-05T14:18:30.123456+0000`` (UTC)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def flow_id(community_id: str) -> int | None:
    """A conversation's ``flow_id``: the first 53 bits of its Community ID's SHA-1 digest."""
    try:
        digest = base64.b64decode(community_id[2:], validate=True)
    except (ValueError, TypeError):
        return None
    return int.from_bytes(digest[:8], "big") >> 11 if len(digest) == 20 else None


@dataclass
class Flow:
    """The flow an event is about: protocol name, addresses, ports (ICMP: type and code)."""

    protocol: str
    src_ip: str | None
    src_port: int
    dest_ip: str | None
    dest_port: int
    community_id: str = ""


def _flow_fields(flow: Flow) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if flow.community_id and (fid := flow_id(flow.community_id)) is not None:
        out["flow_id"] = fid
    out["event_type"] = "alert"
    if flow.src_ip:
        out["src_ip"] = flow.src_ip
    if flow.protocol not in _ICMP:
        out["src_port"] = flow.src_port
    if flow.dest_ip:
        out["dest_ip"] = flow.dest_ip
    if flow.protocol not in _ICMP:
        out["dest_port"] = flow.dest_port
    out["proto"] = _PROTO.get(flow.protocol, flow.protocol)
    if flow.protocol in _ICMP:
        out["icmp_type"], out["icmp_code"] = flow.src_port, flow.dest_port
    if flow.community_id:
        out["community_id"] = flow.community_id
    return out


def _alert(signature: Signature, title: str, severity: str) -> dict[str, Any]:
    return {
        "action": ACTION,
        "gid": GID,
        "signature_id": signature.sid,
        "rev": REV,
        "signature": f"NETMON {title}",
        "category": signature.category,
        "severity": SEVERITY.get(severity, 3),
    }


def incident_event(incident: Incident, flow: Flow | None = None, event: str = "incident") -> dict[str, Any]:
    """The EVE alert of an incident (``event``: incident_opened, incident_updated, or incident in exports).

    ``flow``: its representative flow (``incident_flows``); None: made from its sources and targets.
    """
    flow = flow or _flow_from_lists(incident)
    kind = incident.kind
    out: dict[str, Any] = {"timestamp": timestamp(incident.last_seen)}
    out.update(_flow_fields(flow))
    out["alert"] = _alert(
        SIGNATURES.get(kind, SIGNATURES[IncidentKind.UNUSUAL_TRAFFIC]),
        INCIDENT_KIND_TITLES.get(kind, kind),
        incident.severity,
    )
    out["netmon"] = {
        "event": event,
        "incident_id": incident.pk,
        "sensor": incident.sensor.name,
        "entity": incident.entity,
        "kind": kind,
        "severity": incident.severity,
        "status": incident.status,
        "score": incident.peak_score,
        "explanation": incident.explanation,
        "sources": incident.sources,
        "targets": incident.targets,
        "targets_more": incident.targets_more,
        "first_seen": incident.first_seen.isoformat(),
        "last_seen": incident.last_seen.isoformat(),
        "opened_at": incident.opened_at.isoformat() if incident.opened_at else None,
        "anomaly_count": incident.anomaly_count,
        "packet_count": incident.packet_count,
        "url": f"/incidents/{incident.pk}/",
    }
    return out


def anomaly_event(anomaly: Anomaly, sensor_name: str) -> dict[str, Any]:
    """The EVE alert of one anomaly (``NETMON_EVE_ANOMALIES``, and ``eve`` exports of anomalies)."""
    severity = _anomaly_severity(anomaly.score, anomaly.threshold)
    out: dict[str, Any] = {"timestamp": timestamp(anomaly.ts)}
    flow = Flow(
        anomaly.protocol,
        anomaly.src_ip,
        anomaly.src_port,
        anomaly.dst_ip,
        anomaly.dst_port,
        anomaly.community_id,
    )
    out.update(_flow_fields(flow))
    out["alert"] = _alert(ANOMALY_SIGNATURE, "Anomalous packet", severity)
    out["netmon"] = {
        "event": "anomaly",
        "anomaly_id": anomaly.pk,
        "sensor": sensor_name,
        "packet_seq": anomaly.packet_seq,
        "score": anomaly.score,
        "threshold": anomaly.threshold,
        "model": anomaly.model_kind,
        "explanation": anomaly.explanation,
        "incident_id": anomaly.incident_id,
        "false_positive": anomaly.false_positive,
    }
    return out


def _anomaly_severity(score: float, threshold: float) -> str:
    """As an incident's severity from its peak (detection.incidents.incident_severity), without a kind."""
    ratio = score / threshold if threshold > 0 else 1.0
    return IncidentSeverity.HIGH if ratio >= 1.5 else IncidentSeverity.MEDIUM if ratio >= 1.15 else "low"


def line(event: dict[str, Any]) -> str:
    """One EVE line: compact JSON, ASCII (non-ASCII escaped), no newline; non-finite numbers as null."""
    try:
        return json.dumps(event, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except ValueError:  # a NaN or infinite score: JSON has no spelling for it
        return json.dumps(_finite(event), separators=(",", ":"), ensure_ascii=True)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# --- an incident's representative flow ----------------------------------------------------------
_FLOW_FIELDS = ("protocol", "src_ip", "src_port", "dst_ip", "dst_port")


def with_flows(incidents: QuerySet[Incident]) -> QuerySet[Incident]:
    """``incidents`` annotated with their first anomaly's flow (``_flow_protocol`` ...), in one query.

    The first anomaly (in packet order) is always stored as a row (detection.incidents picks it as
    a representative) and its flow's Community ID is the incident's.
    """
    first = Anomaly.objects.filter(incident=OuterRef("pk")).order_by("packet_seq", "id")
    return incidents.select_related("sensor").annotate(
        **{f"_flow_{name}": Subquery(first.values(name)[:1]) for name in _FLOW_FIELDS}
    )


def incident_flow(incident: Incident) -> Flow:
    """The flow of an incident annotated by ``with_flows``, turned so its source is the incident's client."""
    protocol = getattr(incident, "_flow_protocol", None)
    if not protocol:
        return _flow_from_lists(incident)
    src, sport = incident._flow_src_ip, incident._flow_src_port
    dst, dport = incident._flow_dst_ip, incident._flow_dst_port
    sources = set(incident.sources or ()) | ({incident.src_ip} if incident.src_ip else set())
    if src not in sources and dst in sources and protocol not in _ICMP:
        src, sport, dst, dport = dst, dport, src, sport  # an answer to its source: turn it around
    return Flow(protocol, src, sport, dst, dport, incident.community_id)


def _flow_from_lists(incident: Incident) -> Flow:
    """No anomaly row left (pruned): its first source and first target (``IP:port/proto`` or ``IP``)."""
    src = incident.src_ip or (incident.sources[0] if incident.sources else None)
    target = incident.targets[0] if incident.targets else ""
    host, port, protocol = target, 0, "IP"
    if "/" in target:
        address, _, rest = target.rpartition(":")
        number, _, proto = rest.partition("/")
        host, port, protocol = address.strip("[]"), int(number) if number.isdigit() else 0, proto.upper()
    return Flow(protocol, src, 0, host or None, port, incident.community_id)


def incident_events(incidents: Iterable[Incident], events: dict[int, str] | None = None) -> Iterator[dict]:
    """EVE alerts of incidents annotated by ``with_flows``; ``events``: per id, what happened to it."""
    for incident in incidents:
        event = (events or {}).get(incident.pk, "incident")
        yield incident_event(incident, incident_flow(incident), event)
