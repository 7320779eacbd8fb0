"""Grouping a read's anomalies into incidents, one per source while it keeps triggering.

Today's grouping rule: anomalies of the same source address (or of frames without an IP layer,
grouped under ``None``) belong to that source's most recent incident if it was last seen no
more than ``INCIDENT_QUIET`` before the source's first anomaly of the read; otherwise they open
a new one. (Attribution to the abnormal entity, sustained evidence and cold start come next.)

As an incident grows it is filled in: ``sources`` (the source), ``targets`` (the destinations
its anomalies hit, ``IP:port/proto`` or ``IP`` for portless protocols, the first
``TARGETS_KEPT`` distinct ones, ``targets_more`` counting the rest), counts, the peak score and
the explanation of the anomaly that reached it, and its ``kind`` and ``severity``, decided again
on all the evidence each time it grows (the latest decision is kept). The evidence the kind is
decided from is kept on the incident as bounded counters (``evidence``), merged read by read.

Only the holder of the sensor's ingest lock writes its incidents, inside the read's transaction
(detection.ingest), so the counters are computed here and written back without a race: one
SELECT, one bulk UPDATE and one multi-row INSERT per read (chunked), however many anomalies.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.db import connection

from capture.choices import IncidentKind, IncidentSeverity, IncidentStatus
from capture.models import Sensor
from capture.records import timestamps_text
from detection.models import Incident

INCIDENT_QUIET = timedelta(seconds=60)  # a source quiet this long closes its incident
TARGETS_KEPT = 100  # distinct targets listed on an incident; the rest are counted
EVIDENCE_HOSTS = 256  # distinct destination hosts remembered per incident (for the kind)
EVIDENCE_PORTS = 256  # distinct ports remembered per host, and port hit counters
_IN_CHUNK = 500  # values per IN (...) list or bulk statement

# Ports of services that take a login: many short connections to one of them is brute force.
LOGIN_PORTS = frozenset({21, 22, 23, 25, 110, 143, 445, 2222, 3306, 3389, 5432})
# Ports where large transfers are normal (web, file sharing, remote desktop, mail).
BULK_PORTS = frozenset({20, 21, 22, 80, 443, 445, 873, 993, 2049, 8080, 8443})
SCAN_MIN = 10  # distinct ports of one host (or hosts on one port) that make a scan
FLOOD_MIN = 20  # anomalies before a volume rule names a flood
CONNECTIONS_MIN = 5  # connection attempts before brute force, request flood or slow connections
_SYN, _ACK = 0x02, 0x10
_FEATURE = re.compile(r'"feature": "([^"]+)"')


_VOLUME_PARTS = ("bytes", "size", "mean", "std", "magnitude", "radius", "length", "payload")


def feature_family(name: str) -> str:
    """The family of a feature (detection/features.py names): what kind of behaviour it measures.

    ``spread`` (distinct ports, hosts, connections), ``handshake`` (TCP flags, SYN share, resets,
    reply share), ``timing`` (gaps between packets), ``volume`` (sizes, bytes), ``rate`` (packets
    per second, recent packet counts) and ``identity`` (protocol, port class, well-known service,
    TTL, direction: what the traffic is rather than how much).
    """
    if "distinct" in name:
        return "spread"
    if name.startswith("flag_") or any(part in name for part in ("syn", "rst", "reverse_share", "fwd_share")):
        return "handshake"
    if "iat" in name or "jitter" in name:
        return "timing"
    if any(part in name for part in _VOLUME_PARTS):
        return "volume"
    if "pkts_per_s" in name or "_w_" in name:
        return "rate"
    return "identity"


@dataclass
class Evidence:
    """What an incident's anomalies showed, as bounded counters (kept in ``Incident.evidence``)."""

    anomalies: int = 0
    protocols: Counter = field(default_factory=Counter)  # "TCP", "UDP", "ICMP", ... -> anomalies
    syn_only: int = 0  # TCP SYN without ACK: connection attempts
    with_payload: int = 0  # packets that carried data (requests, transfers)
    bytes: int = 0
    families: Counter = field(default_factory=Counter)  # feature family -> weight (top 3: 3, 2, 1)
    hosts: dict[str, list[int]] = field(default_factory=dict)  # destination host -> its ports seen
    port_hits: Counter = field(default_factory=Counter)  # destination port -> anomalies

    @classmethod
    def loads(cls, data: dict[str, Any] | None) -> Evidence:
        data = data or {}
        return cls(
            anomalies=int(data.get("anomalies", 0)),
            protocols=Counter(data.get("protocols", {})),
            syn_only=int(data.get("syn_only", 0)),
            with_payload=int(data.get("with_payload", 0)),
            bytes=int(data.get("bytes", 0)),
            families=Counter(data.get("families", {})),
            hosts={h: list(p) for h, p in (data.get("hosts") or {}).items()},
            port_hits=Counter({int(p): n for p, n in (data.get("port_hits") or {}).items()}),
        )

    def dumps(self) -> dict[str, Any]:
        return {
            "anomalies": self.anomalies,
            "protocols": dict(self.protocols),
            "syn_only": self.syn_only,
            "with_payload": self.with_payload,
            "bytes": self.bytes,
            "families": dict(self.families),
            "hosts": self.hosts,
            "port_hits": {str(p): n for p, n in self.port_hits.items()},
        }

    def add_target(self, host: str | None, port: int | None) -> bool:
        """Remember a destination; True when it is new (within the bounds remembered)."""
        if host is None:
            return False
        ports = self.hosts.get(host)
        if ports is None:
            if len(self.hosts) >= EVIDENCE_HOSTS:
                return False
            self.hosts[host] = [] if port is None else [port]
            return True
        if port is None or port in ports or len(ports) >= EVIDENCE_PORTS:
            return False
        ports.append(port)
        return True

    def share(self, protocol: str) -> float:
        return self.protocols.get(protocol, 0) / max(1, self.anomalies)

    def max_ports_on_a_host(self) -> int:
        return max((len(p) for p in self.hosts.values()), default=0)

    def top_port(self) -> int | None:
        return self.port_hits.most_common(1)[0][0] if self.port_hits else None


def incident_kind(evidence: Evidence) -> str:
    """The kind of an incident from its evidence; the first rule that matches (README, "Incident kinds").

    Reads the protocols and TCP flags of its anomalies, the spread of their destinations and the
    feature families that dominated their explanations.
    """
    n = max(1, evidence.anomalies)
    tcp = evidence.share("TCP")
    dominant = evidence.families.most_common(1)[0][0] if evidence.families else ""
    port = evidence.top_port()
    ports_on_host = evidence.max_ports_on_a_host()
    hosts = len(evidence.hosts)
    single_port_hosts = sum(1 for p in evidence.hosts.values() if len(p) <= 2)
    if evidence.share("ICMP") + evidence.share("ICMPv6") >= 0.5 and evidence.anomalies >= FLOOD_MIN:
        return IncidentKind.ICMP_FLOOD
    udp = evidence.share("UDP")
    if udp >= 0.5 and evidence.with_payload / n >= 0.5 and evidence.anomalies >= FLOOD_MIN:
        return IncidentKind.UDP_FLOOD  # UDP that carries data (a UDP scan's probes are mostly empty)
    if ports_on_host >= SCAN_MIN and ports_on_host * 3 >= evidence.port_hits.get(port, 0):
        return IncidentKind.PORT_SCAN  # about a probe per port, many ports of one host
    if hosts >= SCAN_MIN and single_port_hosts * 2 >= hosts:
        return IncidentKind.HORIZONTAL_SCAN  # one (or two) ports of many hosts
    if tcp >= 0.5 and evidence.syn_only / n >= 0.5:
        return IncidentKind.SYN_FLOOD  # mostly connection attempts to a service
    mean_size = evidence.bytes / n
    if dominant == "volume" and mean_size >= 1000 and port is not None and port not in BULK_PORTS:
        return IncidentKind.LARGE_TRANSFER
    if tcp >= 0.5 and evidence.syn_only >= CONNECTIONS_MIN:
        if port in LOGIN_PORTS:
            return IncidentKind.BRUTE_FORCE  # many short connections to a login service
        if dominant == "timing" and evidence.with_payload / n < 0.5:
            return IncidentKind.SLOW_CONNECTIONS  # many connections held open, nearly idle
        if evidence.with_payload:
            return IncidentKind.REQUEST_FLOOD  # many complete requests to one service
    if dominant == "identity":
        return IncidentKind.NEW_SERVICE  # what the traffic is (protocol, port, service) was not seen
    return IncidentKind.UNUSUAL_TRAFFIC


# Kinds that hurt availability or try to get in: one level more severe than the score alone says.
_SERIOUS = frozenset(
    {IncidentKind.SYN_FLOOD, IncidentKind.UDP_FLOOD, IncidentKind.ICMP_FLOOD, IncidentKind.REQUEST_FLOOD,
     IncidentKind.BRUTE_FORCE, IncidentKind.SLOW_CONNECTIONS}
)  # fmt: skip
_LEVELS = [IncidentSeverity.LOW, IncidentSeverity.MEDIUM, IncidentSeverity.HIGH]


def incident_severity(kind: str, peak_score: float, threshold: float) -> str:
    """Severity from how far the peak score went over the threshold, and the kind (README rule).

    Peak at least 1.5 times the threshold: high; at least 1.15 times: medium; else low. Floods, brute
    force and slow connections are one level higher; ``unusual_traffic`` is at most medium.
    """
    ratio = peak_score / threshold if threshold > 0 else 1.0
    level = 2 if ratio >= 1.5 else 1 if ratio >= 1.15 else 0
    if kind in _SERIOUS:
        level = min(2, level + 1)
    if kind == IncidentKind.UNUSUAL_TRAFFIC:
        level = min(1, level)
    return _LEVELS[level]


@dataclass
class ReadAnomalies:
    """The anomalies of a read, column by column (in the order they are stored)."""

    src_ip: list[str | None]
    dst_ip: list[str | None]
    protocol: list[str]
    dport: list[int]
    ported: list[bool]  # TCP or UDP over IP: the target is IP:port/proto
    syn_only: list[bool]
    payload: list[int]
    length: list[int]
    src_raw: list[bytes]  # 16-byte source address, to count the read's packets per source
    ts: list[float]
    scores: np.ndarray
    texts: list[str]
    contributions: list[str]  # JSON text
    threshold: float


@dataclass
class Assignment:
    """Each anomaly's incident id, and which incidents this read opened or updated (for events)."""

    ids: list[int]
    opened: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)


def read_anomalies(
    flagged: np.ndarray, cols: Any, scores: np.ndarray, explanations: list[tuple[str, str]], threshold: float
) -> ReadAnomalies:
    """The columns ``assign_incidents`` needs from a read's flagged records and their text columns."""
    proto = flagged["proto"]
    flags = flagged["tcp_flags"]
    syn_only = (proto == 6) & ((flags & _SYN) != 0) & ((flags & _ACK) == 0)
    ported = (flagged["ip_version"] > 0) & np.isin(proto, (6, 17))
    raw = np.ascontiguousarray(flagged["src_ip"]).tobytes()
    return ReadAnomalies(
        src_ip=cols.src_ip,
        dst_ip=cols.dst_ip,
        protocol=cols.protocol,
        dport=flagged["dport"].tolist(),
        ported=ported.tolist(),
        syn_only=syn_only.tolist(),
        payload=flagged["payload_len"].tolist(),
        length=flagged["length"].tolist(),
        src_raw=[raw[i * 16 : i * 16 + 16] for i in range(len(flagged))],
        ts=flagged["ts"].astype(np.float64).tolist(),
        scores=scores,
        texts=[text for text, _ in explanations],
        contributions=[contributions for _, contributions in explanations],
        threshold=threshold,
    )


def packets_per_source(records: np.ndarray) -> dict[bytes, int]:
    """How many packets of a read each source address (16-byte form) sent."""
    if not len(records):
        return {}
    raw = np.ascontiguousarray(records["src_ip"]).view(np.dtype((np.void, 16))).ravel()
    unique, counts = np.unique(raw, return_counts=True)
    return {u.tobytes(): int(c) for u, c in zip(unique, counts, strict=True)}


def assign_incidents(sensor: Sensor, read: ReadAnomalies, sent: dict[bytes, int]) -> Assignment:
    """The incident of each anomaly of a read; each source's open incident grows, or one is opened.

    ``sent``: packets of the whole read per source address (``packets_per_source``).
    """
    by_source: dict[str | None, list[int]] = {}
    for k, src in enumerate(read.src_ip):
        by_source.setdefault(src, []).append(k)
    return _incidents(sensor, read, by_source, sent)


def _when(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


def _grow(incident: Incident, evidence: Evidence, read: ReadAnomalies, rows: list[int]) -> None:
    """Add a read's anomalies of one source (``rows``) to ``incident`` and its evidence."""
    targets = list(incident.targets)
    listed = set(targets)
    for k in rows:
        evidence.anomalies += 1
        evidence.protocols[read.protocol[k]] += 1
        evidence.syn_only += read.syn_only[k]
        evidence.with_payload += read.payload[k] > 0
        evidence.bytes += read.length[k]
        for weight, name in zip((3, 2, 1), _FEATURE.findall(read.contributions[k], 0, 400), strict=False):
            evidence.families[feature_family(name)] += weight
        host, port = read.dst_ip[k], read.dport[k] if read.ported[k] else None
        if port is not None and (port in evidence.port_hits or len(evidence.port_hits) < EVIDENCE_PORTS):
            evidence.port_hits[port] += 1
        if host is None:
            continue
        target = f"{host}:{port}/{read.protocol[k].lower()}" if port is not None else host
        if len(targets) < TARGETS_KEPT:
            if target not in listed:
                targets.append(target)
                listed.add(target)
                evidence.add_target(host, port)
        elif evidence.add_target(host, port):
            incident.targets_more += 1
    incident.targets = targets
    incident.anomaly_count += len(rows)
    top = max(rows, key=lambda k: read.scores[k])
    if float(read.scores[top]) > incident.peak_score or not incident.explanation:
        incident.peak_score = float(read.scores[top])
        incident.explanation = read.texts[top][:2000]
    incident.last_seen = max(incident.last_seen, _when(max(read.ts[k] for k in rows)))
    incident.kind = incident_kind(evidence)
    incident.severity = incident_severity(incident.kind, incident.peak_score, read.threshold)
    incident.evidence = evidence.dumps()


_CHANGED = ["last_seen", "anomaly_count", "packet_count", "peak_score", "explanation", "kind", "severity",
            "targets", "targets_more", "evidence"]  # fmt: skip


def _incidents(
    sensor: Sensor, read: ReadAnomalies, sources: dict[str | None, list[int]], sent: dict[bytes, int]
) -> Assignment:
    """Grow each source's open incident (or open one) with the read's anomalies (``sources``: the
    anomaly indexes of each source). A handful of statements per read however many sources it has."""
    firsts = {src: min(read.ts[k] for k in rows) for src, rows in sources.items()}
    current = _open_incidents(sensor, {src: _when(t) for src, t in firsts.items()})
    created: list[Incident] = []
    updated: list[Incident] = []
    for src, rows in sources.items():
        incident = current.get(src)
        packets = sent.get(read.src_raw[rows[0]], len(rows))
        if incident is None:
            first = _when(firsts[src])
            incident = Incident(
                sensor=sensor, src_ip=src, sources=[src] if src else [], targets=[], first_seen=first,
                last_seen=first, status=IncidentStatus.OPEN,
            )  # fmt: skip
            created.append(incident)
        else:
            updated.append(incident)
        incident.packet_count += packets
        _grow(incident, Evidence.loads(incident.evidence), read, rows)
    Incident.objects.bulk_update(updated, _CHANGED, batch_size=_IN_CHUNK)
    ids = {src: incident.pk for src, incident in current.items()}
    ids.update(_insert_incidents(sensor, created))
    return Assignment(
        ids=[ids[src] for src in read.src_ip],
        opened=[ids[i.src_ip] for i in created],
        updated=[i.pk for i in updated],
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


_INCIDENT_COLUMNS = [
    "sensor_id", "src_ip", "kind", "severity", "status", "sources", "targets", "targets_more",
    "first_seen", "last_seen", "opened_at", "anomaly_count", "packet_count", "peak_score", "explanation",
    "evidence",
]  # fmt: skip
_JSON_COLUMNS = ("sources", "targets", "evidence")


def _insert_incidents(sensor: Sensor, created: list[Incident]) -> dict[str | None, int]:
    """Insert new incidents; their ids by source.

    Multi-row INSERT ... RETURNING id, whose rows come back in VALUES order on SQLite and
    PostgreSQL (as bulk_create relies on too). A spoofed flood opens an incident per packet, and
    the ORM's bulk_create spent more on preparing values than the rest of the read.
    """
    if not created:
        return {}
    firsts = timestamps_text(np.array([i.first_seen.timestamp() for i in created], dtype=np.float64))
    lasts = timestamps_text(np.array([i.last_seen.timestamp() for i in created], dtype=np.float64))
    opened = timestamps_text(np.array([time.time()]))[0]
    values = [
        (sensor.pk, i.src_ip, i.kind, i.severity, i.status, json.dumps(i.sources), json.dumps(i.targets),
         i.targets_more, first, last, opened, i.anomaly_count, i.packet_count, i.peak_score, i.explanation,
         json.dumps(i.evidence))
        for i, first, last in zip(created, firsts, lasts, strict=True)
    ]  # fmt: skip
    width = len(_INCIDENT_COLUMNS)
    per = min(_IN_CHUNK, max(1, (connection.features.max_query_params or 999) // width))
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    marks = [f"%s{cast}" if column in _JSON_COLUMNS else "%s" for column in _INCIDENT_COLUMNS]
    row_marks = "(" + ", ".join(marks) + ")"
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
