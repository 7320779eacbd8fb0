"""Grouping a read's anomalies into incidents: one per abnormal entity, opened on sustained evidence.

**Attribution.** An anomalous packet belongs to the entity whose behaviour is abnormal, never
simply to its source address:

- its conversation's *client* (``features.client_side``: the end that started it), so a scanned
  host's replies (SYN-ACKs, resets, ICMP unreachables) and a victim's answers to a flood are
  filed under the scanner or flooder, and one horizontal scan across a subnet is one incident
  whose ``targets`` list the hosts;
- the *service under attack* (``host:port/proto``) for anomalies of other clients to it: while an
  incident of a service-directed kind (floods, brute force, slow connections, large transfer) is
  active against that service, or when one client dominates the service's anomalies in the read
  (``DOMINANCE`` times any other's), the others' anomalies to it join that incident (counted as
  ``affected`` clients, not listed as sources); when many clients hit one service and none
  dominates (a distributed or spoofed flood, ``MANY_CLIENTS``), the service is the entity and the
  clients are its sources. Whether a client busy on its own account is joined to another's attack
  is weighed on its anomalies to the whole host where the attacker is elsewhere on it, and it is
  always its own incident when it hits ``SCAN_MIN`` targets of the host (a scan beside a flood);
- ICMP error reports follow their client's other anomalies to the host that sent them
  (``_file_icmp_errors``): a UDP scan's port unreachables are the scan's.

**Opening, quiet, recurrence** (numbers in ``detection.opening``): an entity's anomalies gather on
a *candidate* incident (``opened_at`` empty: not listed, announced or notified) until
``OPEN_MIN_ANOMALIES`` of them fall within ``OPEN_WINDOW`` seconds; then it opens. Anomalies of
the same entity within ``RECUR`` seconds of the incident's last sustained evidence (again that many
within that window: ``Evidence.active_ts``; for a candidate, its last anomaly) continue it (a
resolved one is reopened); it is quiet after ``QUIET`` seconds without sustained evidence. A lone
stray anomaly joins a recent incident, stored and counted, but does not keep it active.
Candidates that never open keep their anomalies: nothing is lost, they are only not worth an
operator's attention.

As an incident grows it is filled in: ``sources``, ``targets`` (the server ends its anomalies hit,
the first ``TARGETS_KEPT`` distinct ones, ``targets_more`` counting the rest), counts, the peak
score and the explanation of its own anomaly that reached it (``_top``), and its ``kind`` and ``severity``,
decided again on all the evidence each time it grows. The evidence is kept on the incident as
bounded counters (``evidence``), merged read by read.

Only the holder of the sensor's ingest lock writes its incidents, inside the read's transaction
(detection.ingest), so the counters are computed here and written back without a race: a few
SELECTs, one bulk UPDATE and one multi-row INSERT per read (chunked), however many anomalies.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import compress
from operator import itemgetter, not_
from typing import TYPE_CHECKING, Any

import numpy as np
from django.db import connection

from capture.choices import IncidentKind, IncidentSeverity, IncidentStatus
from capture.models import Sensor
from capture.records import ip_to_bytes, timestamps_text
from detection import opening, suppression
from detection.features import client_side
from detection.models import Incident

if TYPE_CHECKING:
    from collections.abc import Iterator

    from detection.scoring import WithoutService

INCIDENT_QUIET = timedelta(seconds=opening.QUIET)  # an entity quiet this long: its incident is quiet
INCIDENT_RECUR = timedelta(seconds=opening.RECUR)  # anomalies within this continue an incident
DOMINANCE = 5  # a client with this many times any other's anomalies to a service is its attacker
MANY_CLIENTS = 16  # clients of a service's anomalies in a read, none dominating: the service is the entity
SOURCES_KEPT = 100  # distinct sources listed on an incident
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
SLOW_SEND = 48  # bytes: what a held-open connection sends at a time (a header line), under a request
CONNECTIONS_KEPT = 64  # distinct client ports remembered per incident (connections, for the kind)
_SYN, _ACK = 0x02, 0x10
# ICMP error reports (unreachable, source quench, redirect, time exceeded, parameter problem): a host
# answering packets it did not want (a UDP flooder's kernel answering the victim's replies)
_ICMP_ERRORS = (3, 4, 5, 11, 12)
_ICMP6_ERRORS = (1, 2, 3, 4)
# Per read and incident, the anomalies stored as rows beyond these are only counted (anomaly_count,
# evidence) and keep their score on their packet row (Packet.anomaly_score).
REPRESENTATIVES_PER_GROUP = 20
TARGET_REPRESENTATIVES = 10  # of them at most this many as the first anomaly of a distinct target


_VOLUME_PARTS = ("bytes", "size", "mean", "std", "magnitude", "radius", "length", "payload")


def feature_family(name: str) -> str:
    """The family of a feature (detection/features.py names): what kind of behaviour it measures.

    ``spread`` (distinct ports, hosts, connections; connections held open), ``handshake`` (TCP
    flags, SYN share, resets, reply share), ``timing`` (gaps between packets), ``volume`` (sizes,
    bytes), ``rate`` (packets per second, recent packet counts) and ``identity`` (protocol, port
    class, well-known service, TTL, direction: what the traffic is rather than how much).
    """
    if "distinct" in name or "open_conns" in name:
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
    requests: int = 0  # anomalies sent by the client side (the rest are the other end's answers)
    icmp_sent: int = 0  # ICMP anomalies (not error reports) sent by the client side
    sent_with_data: int = 0  # anomalies the client side sent with a payload ...
    sent_payload: int = 0  # ... and their payload bytes (uploads, requests)
    sent_small: int = 0  # ... of which under SLOW_SEND bytes (a header line of a held-open request)
    client_ports: list[int] = field(default_factory=list)  # distinct client ports (its connections)
    protocols: Counter = field(default_factory=Counter)  # "TCP", "UDP", "ICMP", ... -> anomalies
    syn_only: int = 0  # TCP SYN without ACK: connection attempts
    with_payload: int = 0  # packets that carried data (requests, transfers)
    bytes: int = 0
    families: Counter = field(default_factory=Counter)  # feature family -> weight (top 3: 3, 2, 1)
    hosts: dict[str, list[int]] = field(default_factory=dict)  # destination host -> its ports seen
    port_hits: Counter = field(default_factory=Counter)  # destination port -> anomalies
    target_hits: Counter = field(default_factory=Counter)  # target -> anomalies (for the main target)
    recent: list[float] = field(default_factory=list)  # a candidate's latest anomaly times (opening rule)
    opened_ts: float | None = None  # packet time of the anomaly that made the evidence sustained
    # packet time of the latest anomaly completing OPEN_MIN_ANOMALIES within OPEN_WINDOW once open:
    # the incident's activity clock (RECUR, QUIET); lone strays after it do not move it
    active_ts: float | None = None
    affected: int = 0  # anomalies of other clients to the attacked service, joined to this incident
    coordinated: bool = False  # a service attacked by several clients together (it may open)
    explained: int = 0  # anomalies stored as rows with their explanation (representatives)
    # other clients' packets to the attacked service over the threshold only through the service's
    # statistics: the attack's effect, not anomalies (``set_effects_apart``)
    effects: int = 0

    @classmethod
    def loads(cls, data: dict[str, Any] | None) -> Evidence:
        data = data or {}
        return cls(
            anomalies=int(data.get("anomalies", 0)),
            requests=int(data.get("requests", data.get("anomalies", 0))),
            icmp_sent=int(data.get("icmp_sent", 0)),
            sent_with_data=int(data.get("sent_with_data", 0)),
            sent_payload=int(data.get("sent_payload", 0)),
            sent_small=int(data.get("sent_small", 0)),
            client_ports=[int(p) for p in data.get("client_ports") or []],
            protocols=Counter(data.get("protocols", {})),
            syn_only=int(data.get("syn_only", 0)),
            with_payload=int(data.get("with_payload", 0)),
            bytes=int(data.get("bytes", 0)),
            families=Counter(data.get("families", {})),
            hosts={h: list(p) for h, p in (data.get("hosts") or {}).items()},
            port_hits=Counter({int(p): n for p, n in (data.get("port_hits") or {}).items()}),
            target_hits=Counter(data.get("target_hits") or {}),
            recent=[float(t) for t in data.get("recent") or []],
            opened_ts=data.get("opened_ts"),
            active_ts=data.get("active_ts"),
            affected=int(data.get("affected", 0)),
            coordinated=bool(data.get("coordinated", False)),
            explained=int(data.get("explained", 0)),
            effects=int(data.get("effects", 0)),
        )

    def dumps(self) -> dict[str, Any]:
        return {
            "anomalies": self.anomalies,
            "requests": self.requests,
            "icmp_sent": self.icmp_sent,
            "sent_with_data": self.sent_with_data,
            "sent_payload": self.sent_payload,
            "sent_small": self.sent_small,
            "client_ports": self.client_ports,
            "protocols": dict(self.protocols),
            "syn_only": self.syn_only,
            "with_payload": self.with_payload,
            "bytes": self.bytes,
            "families": dict(self.families),
            "hosts": self.hosts,
            "port_hits": {str(p): n for p, n in self.port_hits.items()},
            "target_hits": dict(self.target_hits),
            "recent": self.recent,
            "opened_ts": self.opened_ts,
            "active_ts": self.active_ts,
            "affected": self.affected,
            "coordinated": self.coordinated,
            "explained": self.explained,
            "effects": self.effects,
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
        if port is None or len(ports) >= EVIDENCE_PORTS or port in ports:  # (full: no list scan)
            return False
        ports.append(port)
        return True

    def share(self, protocol: str) -> float:
        return self.protocols.get(protocol, 0) / max(1, self.anomalies)

    def connections(self) -> int:
        """Connections seen: connection attempts (SYN), or distinct client ports where more (the
        attempts of held-open connections may be cold, unflagged, or in an earlier read)."""
        return max(self.syn_only, len(self.client_ports))

    def max_ports_on_a_host(self) -> int:
        return max((len(p) for p in self.hosts.values()), default=0)

    def top_port(self) -> int | None:
        return self.port_hits.most_common(1)[0][0] if self.port_hits else None

    def main_target(self) -> str | None:
        return self.target_hits.most_common(1)[0][0] if self.target_hits else None


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
    icmp_sent = evidence.icmp_sent
    if icmp_sent * 2 >= max(1, evidence.requests) and icmp_sent >= FLOOD_MIN:
        return IncidentKind.ICMP_FLOOD  # ICMP it sent (a UDP scan's answers are ICMP unreachables)
    requests = max(1, evidence.requests)  # the victim's answers (SYN-ACKs, resets) are not attempts
    udp = evidence.share("UDP")
    if udp >= 0.5 and evidence.sent_with_data / requests >= 0.5 and evidence.anomalies >= FLOOD_MIN:
        # UDP whose sender fills its packets (a UDP scan's probes are mostly empty; the ICMP
        # errors answering them quote the probe, so only what the client sent counts)
        return IncidentKind.UDP_FLOOD
    if ports_on_host >= SCAN_MIN and ports_on_host * 3 >= evidence.port_hits.get(port, 0):
        return IncidentKind.PORT_SCAN  # about a probe per port, many ports of one host
    if hosts >= SCAN_MIN and single_port_hosts * 2 >= hosts:
        return IncidentKind.HORIZONTAL_SCAN  # one (or two) ports of many hosts
    syn_share = evidence.syn_only / requests
    if tcp >= 0.5 and port in LOGIN_PORTS and evidence.with_payload and syn_share < 0.9:
        return IncidentKind.BRUTE_FORCE  # connections to a login service that carry data (attempts)
    if tcp >= 0.5 and syn_share >= 0.4 and evidence.with_payload / n < 0.05:
        # connection attempts without data (a raw SYN flood's client also resets each SYN-ACK, so
        # attempts are about half of what it sends)
        return IncidentKind.SYN_FLOOD
    sent_size = evidence.sent_payload / max(1, evidence.sent_with_data)  # what the client sends
    if (
        evidence.sent_with_data >= FLOOD_MIN and sent_size >= 1000 and port is not None
        and port not in BULK_PORTS
    ):  # fmt: skip
        return IncidentKind.LARGE_TRANSFER  # large segments sent to an unusual port
    if tcp >= 0.5 and evidence.connections() >= CONNECTIONS_MIN:
        if port in LOGIN_PORTS:
            return IncidentKind.BRUTE_FORCE  # many short connections to a login service
        idle = dominant == "timing" and evidence.with_payload / n < 0.5
        # most of what the client sends is a trickle (the first segment of a held-open request may
        # be a whole request line and headers: a mean would be dominated by it)
        trickle = evidence.sent_small * 2 >= evidence.sent_with_data
        if idle or (evidence.sent_with_data and trickle):
            return IncidentKind.SLOW_CONNECTIONS  # many connections held open, sending a trickle
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


# Kinds aimed at one service: other clients' anomalies to it while it lasts are the attack's effect.
SERVICE_KINDS = frozenset(
    {IncidentKind.SYN_FLOOD, IncidentKind.UDP_FLOOD, IncidentKind.ICMP_FLOOD, IncidentKind.REQUEST_FLOOD,
     IncidentKind.BRUTE_FORCE, IncidentKind.SLOW_CONNECTIONS, IncidentKind.LARGE_TRANSFER}
)  # fmt: skip


# Kinds whose packets are probes or flood packets, not conversations: a one-packet flow of such an
# incident's own anomalies is held by the incident instead of a flow row of its own (``Assignment.probes``).
PROBE_KINDS = frozenset(
    {IncidentKind.PORT_SCAN, IncidentKind.HORIZONTAL_SCAN, IncidentKind.SYN_FLOOD, IncidentKind.UDP_FLOOD,
     IncidentKind.ICMP_FLOOD}
)  # fmt: skip


def host_entity(address: str | None) -> str:
    """The entity key of a client host (``Incident.entity``)."""
    return f"host {address or 'unknown'}"


def service_entity(target: str) -> str:
    """The entity key of a service (``Incident.entity``)."""
    return f"service {target}"


def target_address(target: str) -> str:
    """The address of a target: ``IP`` or ``IP:port/proto`` (IPv6 too: the port is after the last colon)."""
    if "/" in target:
        return target.rsplit("/", 1)[0].rsplit(":", 1)[0]
    return target


def incident_addresses(sources: list[str] | None, targets: list[str] | None) -> list[str]:
    """The distinct addresses among an incident's sources and targets, sources first."""
    seen = dict.fromkeys(str(s) for s in sources or [] if s)
    seen.update(dict.fromkeys(target_address(str(t)) for t in targets or [] if t))
    return list(seen)


@dataclass
class ReadAnomalies:
    """The anomalies of a read, column by column (in the order they are stored)."""

    client: list[str | None]  # the conversation's client (the end that started it)
    target: list[str | None]  # the server end: "IP:port/proto", or "IP" for portless protocols
    host: list[str | None]  # the server end's address
    port: list[int | None]  # the server end's port (None for portless protocols)
    client_port: list[int | None]  # the client end's port
    request: list[bool]  # sent by the client
    protocol: list[str]
    syn_only: list[bool]
    icmp_request: list[bool]  # ICMP that is not an error report (echo, timestamp, ...): what a flood sends
    payload: list[int]
    length: list[int]
    ts: list[float]
    scores: np.ndarray
    families: list[tuple[str, ...]]  # the feature families of its top features, largest first
    threshold: float
    service_led: list[bool] = field(default_factory=list)  # its top feature is a statistic of the service
    # an ICMP error report (unreachable, time exceeded, ...): a host's answer to its client's packets,
    # filed with them (``_file_icmp_errors``), never by its portless target
    icmp_error: list[bool] = field(default_factory=list)
    # whose client is known from the opener the feature state remembered (not guessed): never turned
    # around by ``_orient_pairs``, and it orients the rest of its pair of hosts
    known: list[bool] = field(default_factory=list)
    texts: dict[int, str] = field(default_factory=dict)  # the representatives' explanations
    community_ids: dict[int, str] = field(default_factory=dict)  # the representatives' flows' IDs
    # columns as NumPy arrays and integer codes, made once per read (``array``, ``codes``; the
    # arrays of ``read_anomalies`` come with it), kept up to date by ``_turn_around``; and what
    # the database said was under attack (``_attacked``)
    derived: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False, compare=False)

    def array(self, name: str) -> np.ndarray:
        """Column ``name`` as a NumPy array (ports: ``_NO_PORT`` for None), to count a group's
        anomalies at once."""
        key = ("array", name)
        if key not in self.derived:
            column = getattr(self, name)
            self.derived[key] = _numbers(column) if name in ("port", "client_port") else np.array(column)
        return self.derived[key]

    def codes(self, name: str) -> tuple[list, np.ndarray]:
        """Column ``name``'s distinct values in the order of their first appearance and each
        anomaly's index among them (``_codes``)."""
        key = ("codes", name)
        if key not in self.derived:
            self.derived[key] = _codes(getattr(self, name))
        return self.derived[key]


@dataclass
class Assignment:
    """Each anomaly's incident id, and which incidents this read opened or updated (for events)."""

    ids: list[int | None]
    opened: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    raised: list[int] = field(default_factory=list)  # open before this read, a higher severity after it
    suppressed: list[int | None] = field(default_factory=list)  # per anomaly: the rule that suppressed it
    # the anomalies that are an open scan's or flood's own packets (``PROBE_KINDS``): their one-packet
    # flows are not stored as flow rows (``capture.storage.flow_rows``'s ``held``)
    probes: list[int] = field(default_factory=list)


def read_anomalies(
    flagged: np.ndarray,
    cols: Any,
    scores: np.ndarray,
    top_features: list[tuple[str, ...]],
    threshold: float,
    opened: np.ndarray | None = None,
) -> ReadAnomalies:
    """The columns ``group_anomalies`` and ``file_groups`` need from a read's flagged records, their
    text columns and the names of their top features (``scoring.ScoredBatch.top_features``).
    ``opened``: per flagged record, whether its source opened its conversation (1), its destination
    (0) or unknown (-1) (``ScoredBatch.opened``); the known ones set the client before any guess."""
    proto = flagged["proto"]
    flags = flagged["tcp_flags"]
    syn_only = (proto == 6) & ((flags & _SYN) != 0) & ((flags & _ACK) == 0)
    icmp_type = flagged["sport"]  # the ICMP type, for ICMP
    icmp_error = ((proto == 1) & np.isin(icmp_type, _ICMP_ERRORS)) | (
        (proto == 58) & np.isin(icmp_type, _ICMP6_ERRORS)
    )
    icmp_request = np.isin(proto, (1, 58)) & ~icmp_error
    families, service_led = _families(top_features)
    ported = (flagged["ip_version"] > 0) & np.isin(proto, (6, 17))
    is_request = client_side(flagged, opened)
    known = [False] * len(flagged) if opened is None else (opened >= 0).tolist()
    # Column by column (a loop per anomaly was most of the reading): the client is the source of a
    # request, else the destination, and the server the other end
    src, dst = np.array(cols.src_ip, dtype=object), np.array(cols.dst_ip, dtype=object)
    client, host = np.where(is_request, src, dst), np.where(is_request, dst, src)
    has_ports = ported & (host != None)  # noqa: E711 - elementwise
    sport, dport = flagged["sport"].astype(np.int64), flagged["dport"].astype(np.int64)  # (and _NO_PORT)
    server_port = np.where(has_ports, np.where(is_request, dport, sport), _NO_PORT)
    own_port = np.where(has_ports, np.where(is_request, sport, dport), _NO_PORT)
    port, client_port = np.where(has_ports, server_port, None), np.where(has_ports, own_port, None)
    client, host = client.tolist(), host.tolist()
    derived: dict[tuple[str, str], Any] = {}
    keys = _address_keys(flagged, is_request)
    if keys is not None:  # (numbered without hashing an address's text per anomaly)
        for name, column, key in (("client", client, keys[0]), ("host", host, keys[1])):
            codes, firsts = _numbered(key)
            derived[("codes", name)] = (_take(column, firsts.tolist()), codes)
    if ("codes", "host") not in derived:
        derived[("codes", "host")] = _codes(host)
    hosts, host_codes = derived[("codes", "host")]
    # A target is its server's address, and its port and protocol where it has ports: "IP:port/proto"
    # spelled once per distinct target (a flood repeats one), numbered in the order of first appearance
    udp = (proto == 17).astype(np.int64)  # (TCP or UDP: the protocol named by its number)
    ported_key = len(hosts) + (host_codes * 65536 + server_port) * 2 + udp
    target_codes, firsts = _numbered(np.where(has_ports, ported_key, host_codes))
    names = [
        f"{host[k]}:{port}/{cols.protocol[k].lower()}" if ported_k else host[k]
        for k, port, ported_k in zip(
            firsts.tolist(), server_port[firsts].tolist(), has_ports[firsts].tolist(), strict=True
        )
    ]
    derived[("codes", "target")] = (names, target_codes)
    target = _take(names, target_codes.tolist())
    return ReadAnomalies(
        client=client,
        target=target,
        host=host,
        port=port.tolist(),
        client_port=client_port.tolist(),
        request=is_request.tolist(),
        protocol=cols.protocol,
        syn_only=syn_only.tolist(),
        icmp_request=icmp_request.tolist(),
        payload=flagged["payload_len"].tolist(),
        length=flagged["length"].tolist(),
        ts=flagged["ts"].astype(np.float64).tolist(),
        scores=scores,
        families=families,
        threshold=threshold,
        service_led=service_led,
        known=known,
        icmp_error=icmp_error.tolist(),
        derived={
            **derived,
            ("array", "request"): is_request,
            ("array", "payload"): flagged["payload_len"].astype(np.int64),
            ("array", "length"): flagged["length"].astype(np.int64),
            ("array", "syn_only"): syn_only,
            ("array", "icmp_request"): icmp_request,
            ("array", "ts"): flagged["ts"].astype(np.float64),
            ("array", "port"): server_port,
            ("array", "client_port"): own_port,
        },
    )


def _address_keys(flagged: np.ndarray, is_request: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per anomaly, an integer for its client's address and one for its server's (0: none), where
    every address is IPv4 (its 4 bytes tell it apart, as its text does); None where some is IPv6."""
    if (flagged["ip_version"] == 6).any():
        return None
    v4 = flagged["ip_version"] == 4
    src, dst = (
        np.where(v4, np.ascontiguousarray(flagged[column]).view(np.uint32)[:, 3].astype(np.int64) + 1, 0)
        for column in ("src_ip", "dst_ip")
    )
    return np.where(is_request, src, dst), np.where(is_request, dst, src)


def _numbered(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer keys numbered in the order of their first appearance (as ``_codes`` numbers values),
    and the position of each number's first appearance."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[inverse.reshape(-1)], first[order]


def _families(top_features: list[tuple[str, ...]]) -> tuple[list[tuple[str, ...]], list[bool]]:
    """``feature_family`` of each name, and whether the first is a statistic of the service, worked
    out once per distinct tuple of names (a flood repeats a few)."""
    distinct = set(top_features)
    families = {names: tuple(feature_family(name) for name in names) for names in distinct}
    led = {names: bool(names) and names[0].startswith("service_") for names in distinct}
    return list(map(families.__getitem__, top_features)), list(map(led.__getitem__, top_features))


def packets_per_client(records: np.ndarray, opened: np.ndarray | None = None) -> dict[bytes, int]:
    """How many packets of a read each client (16-byte address) exchanged, both directions
    (``opened``: as in ``read_anomalies``, for all the read's records)."""
    if not len(records):
        return {}
    cs = client_side(records, opened)
    # (an address's first and last 8 bytes, picked as integers: 4 times faster than as bytes)
    src, dst = (np.ascontiguousarray(records[column]).view(np.uint64) for column in ("src_ip", "dst_ip"))
    halves = np.where(cs[:, None], src, dst)
    if (halves[:, 0] == halves[0, 0]).all():  # IPv4 (mapped) only: the last 8 bytes tell them apart
        last, counts = np.unique(halves[:, 1], return_counts=True)  # (as integers: 30 times faster)
        unique = np.stack([np.full(len(last), halves[0, 0]), last], axis=1)
    else:
        unique, counts = np.unique(halves.view(np.dtype((np.void, 16))).ravel(), return_counts=True)
    buf = unique.tobytes()
    return {buf[16 * i : 16 * i + 16]: c for i, c in enumerate(counts.tolist())}


@dataclass
class _Group:
    """A read's anomalies of one entity: its own (``rows``) and other clients' joined to it (``joined``)."""

    entity: str
    rows: list[int] = field(default_factory=list)
    joined: list[int] = field(default_factory=list)
    incident: Incident | None = None
    coordinated: bool = False  # several clients attacking one service together (a service entity)
    representatives: list[int] = field(default_factory=list)  # the anomalies stored as rows
    effects: list[int] = field(default_factory=list)  # other clients' packets set apart as its effect

    def all_rows(self) -> list[int]:
        return self.rows + self.joined


# Kinds aimed at a host's services: other clients' anomalies to that host while it lasts are its effect.
HOST_KINDS = SERVICE_KINDS | {IncidentKind.PORT_SCAN}


def active_until(incident: Incident) -> datetime:
    """When ``incident`` last had sustained evidence (its RECUR and QUIET clock): ``active_ts`` once
    open (``last_seen`` for one opened before it was kept), its last anomaly while a candidate."""
    ts = (incident.evidence or {}).get("active_ts") if incident.opened_at is not None else None
    return _when(ts) if ts is not None else incident.last_seen


def _under_attack(sensor: Sensor, since: datetime) -> tuple[dict[str, Incident], dict[str, Incident]]:
    """Services and hosts an open, active incident is aimed at (its main target), latest first:
    services of service-directed kinds, and the hosts of those and of port scans."""
    found = Incident.objects.filter(
        sensor=sensor, opened_at__isnull=False, last_seen__gte=since - INCIDENT_QUIET, kind__in=HOST_KINDS
    ).order_by("last_seen")
    services: dict[str, Incident] = {}
    hosts: dict[str, Incident] = {}
    for incident in found:  # later ones overwrite earlier ones
        if active_until(incident) < since - INCIDENT_QUIET:  # only strays since: quiet
            continue
        main = Evidence.loads(incident.evidence).main_target()
        if not main:
            continue
        if incident.kind in SERVICE_KINDS:
            services[main] = incident
        hosts[suppression.parse_target(main)[0]] = incident
    return services, hosts


def _attacked(sensor: Sensor, read: ReadAnomalies) -> tuple[dict[str, Incident], dict[str, Incident]]:
    """``_under_attack`` since the read's first anomaly, asked of the database once per read
    (grouping and setting effects apart both ask; nothing is written in between)."""
    key = ("under attack", str(sensor.pk))
    if key not in read.derived:
        read.derived[key] = _under_attack(sensor, _when(float(read.array("ts").min())))
    return read.derived[key]


def _take(column: Any, rows: list[int]) -> list:
    """``[column[k] for k in rows]``, gathered in C (a flood's group has thousands of rows)."""
    if len(rows) > 1:
        return list(itemgetter(*rows)(column))
    return [column[rows[0]]] if rows else []


def _codes(values: list) -> tuple[list, np.ndarray]:
    """The distinct values in the order of their first appearance, and each value's index among them."""
    distinct = list(dict.fromkeys(values))
    index = {value: i for i, value in enumerate(distinct)}
    return distinct, np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=len(values))


def _runs(codes: np.ndarray, n: int) -> tuple[list[int], list[int]]:
    """Row indexes ordered by code (ascending within a code), and where each code's run starts
    (``n + 1`` bounds): code ``i``'s rows are ``order[starts[i]:starts[i + 1]]``."""
    starts = [0, *np.cumsum(np.bincount(codes, minlength=n)).tolist()]
    return _by_code(codes, n).tolist(), starts


def _by_code(codes: np.ndarray, n: int) -> np.ndarray:
    """Indexes ordered by code (``n`` codes), ascending within a code."""
    # (a stable sort of 16-bit codes is a radix sort: ten times faster than of 64-bit ones)
    return np.argsort(codes.astype(np.uint16) if n <= 1 << 16 else codes, kind="stable")


_Rows = dict[str | None, list[int]]  # anomaly indexes per client (or target)
_NEVER = datetime.min.replace(tzinfo=UTC)


class _Services:
    """A read's anomaly indexes per target and client: targets in the order of their first anomaly,
    each one's clients in the order of theirs, indexes ascending (what filling dicts one anomaly
    after the other gives), kept as arrays per distinct (client, target) pair. The dicts of a
    target are made only for the targets that need them (``clients_of``): a scan has a target per
    probe, and a dict and a list per pair were most of the grouping's cost."""

    def __init__(
        self, clients: list, client_codes: np.ndarray, targets: list, target_codes: np.ndarray
    ) -> None:
        self.clients, self.client_codes = clients, client_codes
        self.targets, self.target_codes = targets, target_codes
        pairs = client_codes * len(targets) + target_codes
        distinct, first, inverse = np.unique(pairs, return_index=True, return_inverse=True)
        # pairs by target (codes number targets in the order of their first anomaly), then each
        # target's clients in the order of their first anomaly
        nested = np.lexsort((first, distinct % len(targets)))
        rank = np.empty(len(nested), dtype=np.int64)
        rank[nested] = np.arange(len(nested))
        self.pair_client = (distinct // len(targets))[nested]
        self.pair_target = (distinct % len(targets))[nested]
        self.row_pair = rank[inverse.reshape(-1)]
        self.taken = np.zeros(len(client_codes), dtype=bool)  # rows taken out (ICMP error reports)
        self._index()

    def _index(self) -> None:
        """Rows per pair (``rows[bounds[p]:bounds[p + 1]]``), pairs per target, of the rows not taken."""
        kept = np.flatnonzero(~self.taken)
        pairs, targets = len(self.pair_client), len(self.targets)
        self.rows = kept[_by_code(self.row_pair[kept], pairs)]
        sizes = np.bincount(self.row_pair[kept], minlength=pairs)
        self.bounds = np.concatenate(([0], np.cumsum(sizes)))
        self.live = sizes > 0  # pairs with rows left
        self.pairs_of = np.concatenate(([0], np.cumsum(np.bincount(self.pair_target, minlength=targets))))
        self.live_pairs = np.bincount(self.pair_target[self.live], minlength=targets)  # per target

    def take(self, rows: np.ndarray) -> list[int]:
        """Take ``rows`` out; they are returned in the order of their target, client and index."""
        self.taken[rows] = True
        ordered = rows[np.lexsort((rows, self.row_pair[rows]))].tolist()
        self._index()
        return ordered

    def clients_of(self, target: int) -> dict[Any, list[int]]:
        """The clients of target ``target`` (its code) and their anomaly indexes."""
        lo, hi = self.pairs_of[target], self.pairs_of[target + 1]
        return {
            self.clients[self.pair_client[p]]: self.rows[self.bounds[p] : self.bounds[p + 1]].tolist()
            for p in range(lo, hi)
            if self.live[p]
        }

    def items(self) -> Iterator[tuple[Any, dict[Any, list[int]]]]:
        """(target, its clients and their anomaly indexes), targets with anomalies left only."""
        for target in np.flatnonzero(self.live_pairs).tolist():
            yield self.targets[target], self.clients_of(target)


def _by_service_and_client(read: ReadAnomalies, led: np.ndarray) -> tuple[_Services, _Rows, _Rows]:
    """A read's anomaly indexes per target and client, per client, and per client those led by its
    own statistics (``led`` False); each in the order of first appearance, indexes ascending,
    as one anomaly after the other would fill them, but worked out per distinct (client, target)."""
    clients, client_codes = read.codes("client")
    targets, target_codes = read.codes("target")
    order, starts = _runs(client_codes, len(clients))
    by_client = {c: order[starts[i] : starts[i + 1]] for i, c in enumerate(clients)}
    mine = np.flatnonzero(~led)
    own_order, own_starts = _runs(client_codes[mine], len(clients))
    own_rows = mine[own_order].tolist()
    own = {c: own_rows[own_starts[i] : own_starts[i + 1]] for i, c in enumerate(clients)}
    return _Services(clients, client_codes, targets, target_codes), by_client, own


def _group(sensor: Sensor, read: ReadAnomalies) -> dict[str, _Group]:
    """Each anomaly's entity (see the module docstring), as groups of anomaly indexes."""
    _orient_pairs(read)
    # ... counting only anomalies led by the client's own statistics: a client whose anomalies are
    # led by the service's (its rate during someone else's flood) is not attacking anything
    led = read.service_led or [False] * len(read.ts)
    by_service, by_client, own = _by_service_and_client(read, np.array(led[: len(read.ts)], dtype=bool))
    errors = _icmp_errors(read, by_service)
    services, hosts = _attacked(sensor, read)
    host_names, host_codes = read.codes("host")
    target_codes, n_targets = by_service.target_codes, len(by_service.targets)
    # Clients busy enough in this read to open an incident, and for each host the busiest of them
    # that hit it: that client's incident takes other (quiet) clients' anomalies to the host.
    enough = opening.OPEN_MIN_ANOMALIES
    first_seen = [c for c, rows in own.items() if c is not None and len(rows) >= enough]
    busy = set(first_seen)
    hits: Counter = Counter()  # (busy client, host) -> its own anomalies to the host
    spread: Counter = Counter()  # (busy client, host) -> the distinct targets of the host they hit
    # The first seen last: of clients with as many anomalies to a host, it is written last below and
    # is the host's attacker (the order of the set was the hash seed's, so a tie changed at restart).
    for c in reversed(first_seen):
        rows = np.array(own[c], dtype=np.int64)
        for h, n in _counted(host_codes[rows]):  # (the pairs in the order of their first anomaly)
            hits[(c, host_names[h])] += n
        seen = _distinct(host_codes[rows] * n_targets + target_codes[rows]) // n_targets
        for h, n in zip(*np.unique(seen, return_counts=True), strict=True):
            spread[(c, host_names[h])] += int(n)
    attacker_of: dict[str | None, str] = {}
    for (client, host), n in sorted(hits.items(), key=lambda item: item[1]):
        if host is not None and host not in busy and n >= opening.OPEN_MIN_ANOMALIES:
            attacker_of[host] = client  # the most anomalies wins (sorted ascending)
    groups: dict[str, _Group] = {}

    def group(entity: str) -> _Group:
        g = groups.get(entity)
        if g is None:
            g = groups[entity] = _Group(entity)
        return g

    def join(
        entity: str, ranked: list[tuple[str | None, list[int]]], own: set[str | None], host: str | None
    ) -> None:
        """The attackers' (``own``) anomalies to a service go to ``entity``, and so do other clients'.

        Another client busy on its own account (``busy``) with at least 1/DOMINANCE of the attackers'
        anomalies to the service is a co-attacker (one more source) while they attack it in this
        read, and its own incident when they do not (their attack is over, or elsewhere on the
        host: then its anomalies to the whole host are weighed, not to this one target, since a
        scan has a target per probe); so is a client busy scanning the host (``SCAN_MIN`` targets of
        it in the read). A quieter client's anomalies are joined (the attack's effect on it,
        ``affected``).
        """
        here = max((len(rows) for client, rows in ranked if client in own), default=0)
        anywhere = sum(len(by_client.get(client, ())) for client in own)
        for client, rows in ranked:
            if client in own:
                group(entity).rows.extend(rows)
            elif client in busy and spread[(client, host)] >= SCAN_MIN:
                group(host_entity(client)).rows.extend(rows)  # a scan of the host: its own attack
            elif client in busy and here and len(rows) * DOMINANCE >= here:
                group(entity).rows.extend(rows)  # a co-attacker
            elif client in busy and not here and max(len(rows), hits[(client, host)]) * DOMINANCE >= anywhere:
                group(host_entity(client)).rows.extend(rows)  # a new attack of its own
            else:
                group(entity).joined.extend(rows)

    # A target of one client and no attack it could be the effect of (none on the service, none on
    # its host, no other client's attack of the host) is its client's own (what the rules below give
    # it, here in one step, before any ranking): a scan has a target per probe, so these are found
    # at once, per distinct client and host, and their anomalies added to their groups together.
    alone = np.flatnonzero(by_service.live_pairs == 1)
    if services:
        alone = alone[[by_service.targets[t] not in services for t in alone.tolist()]]
    live = np.flatnonzero(by_service.live)
    single = np.zeros(n_targets, dtype=np.int64)  # target -> its (only) live pair
    single[by_service.pair_target[live]] = live
    client_of = by_service.pair_client[single[alone]]
    host_of = np.zeros(n_targets, dtype=np.int64)
    host_of[target_codes] = host_codes  # (a target's server end is its host)
    pair_keys = client_of * len(host_names) + host_of[alone]
    mine = [
        key for key in _distinct(pair_keys).tolist()
        if _own_attack(by_service.clients[key // len(host_names)], host_names[key % len(host_names)],
                       attacker_of, hosts)
    ]  # fmt: skip
    picked = np.isin(pair_keys, mine)
    own_targets, own_clients = alone[picked], client_of[picked]
    # each such client's group is made where its first such target is, among the other targets
    distinct_clients, first = np.unique(own_clients, return_index=True)
    made_at = dict(zip(own_targets[first].tolist(), distinct_clients.tolist(), strict=True))
    is_own = np.zeros(n_targets, dtype=bool)
    is_own[own_targets] = True
    rest = np.flatnonzero((by_service.live_pairs > 0) & ~is_own).tolist()
    for t in sorted([*rest, *made_at]):
        if t in made_at:
            group(host_entity(by_service.clients[made_at[t]]))
            continue
        target, clients = by_service.targets[t], by_service.clients_of(t)
        ranked = list(clients.items())
        if len(ranked) > 1:
            ranked.sort(key=lambda item: -len(item[1]))
        host = read.host[ranked[0][1][0]]
        owner = services.get(target) if target is not None else None
        if owner is None and host not in attacker_of:
            owner = hosts.get(host) if host is not None else None
        if owner is not None:
            own = {*owner.sources, owner.src_ip} if owner.src_ip else set(owner.sources)
            if owner.entity.startswith("service "):  # a distributed attack: its busy clients are its sources
                own |= {client for client, _ in ranked if client in busy}
            # its attackers are in this read, or no one here attacks on their own: the owner's
            # effect; else its attack is over and a new one is grouped afresh below
            if any(client in by_client for client in own) or not any(c in busy for c, _ in ranked):
                join(owner.entity, ranked, own, host)
                if owner.entity in groups:  # (every client of the service may be busy on its own account)
                    groups[owner.entity].incident = owner
                continue
        # Several clients each attacking this service on their own statistics, none dominating: one
        # coordinated (distributed) attack, whose entity is the service and whose sources they are.
        attackers = [c for c, rows in ranked if c in busy and len(rows) - sum(_take(led, rows)) >= enough]
        if target is not None and len(attackers) >= 2:
            counts = sorted((len(clients[c]) for c in attackers), reverse=True)
            if counts[0] < DOMINANCE * counts[1]:
                join(service_entity(target), ranked, set(attackers), host)
                groups[service_entity(target)].coordinated = True
                continue
        if host in attacker_of:
            attacker = attacker_of[host]
            join(host_entity(attacker), ranked, {attacker}, host)
            continue
        lead, lead_rows = ranked[0]
        second = len(ranked[1][1]) if len(ranked) > 1 else 0
        dominant = len(lead_rows) >= opening.OPEN_MIN_ANOMALIES and len(lead_rows) >= DOMINANCE * second
        if len(ranked) > 1 and dominant:
            join(host_entity(lead), ranked, {lead}, host)
        elif target is not None and len(ranked) >= MANY_CLIENTS:
            group(service_entity(target)).rows.extend(k for _, rows in ranked for k in rows)
        else:
            for client, rows in ranked:
                # A quiet client's anomalies whose leading reason is the service's own statistics
                # (its rate, its clients) say the service is abnormal, not the client: they gather
                # on the service, which opens only when many clients show it (MANY_CLIENTS).
                leds = _take(led, rows)
                by_service_stats = list(compress(rows, leds))
                if target is not None and by_service_stats and len(ranked) > 1:  # (alone: the cause)
                    group(service_entity(target)).rows.extend(by_service_stats)
                    rows = list(compress(rows, map(not_, leds)))
                if rows:
                    group(host_entity(client)).rows.extend(rows)
    if len(own_targets):
        rows = np.flatnonzero(is_own[target_codes] & ~by_service.taken)
        order, starts = _runs(by_service.client_codes[rows], len(by_service.clients))
        ordered = _take(rows.tolist(), order)
        for c in distinct_clients.tolist():
            group(host_entity(by_service.clients[c])).rows.extend(ordered[starts[c] : starts[c + 1]])
    if errors:
        _file_icmp_errors(read, errors, groups, by_client)
    for g in groups.values():
        g.rows.sort()
        g.joined.sort()
    return groups


def _own_attack(client: str | None, host: str | None, attacker_of: dict, hosts: dict) -> bool:
    """Whether a client's anomalies to a host are its own attack when no one else's are there: no
    other client attacks the host in the read, and no active incident is aimed at the host."""
    return attacker_of.get(host, client) == client and (host in attacker_of or host not in hosts)


def _icmp_errors(read: ReadAnomalies, by_service: _Services) -> list[int]:
    """The read's ICMP error reports, taken out of ``by_service`` (filed by ``_file_icmp_errors``).

    An error report (a closed UDP port's "port unreachable") answers its client's packets to the
    host that sent it. Its target is only that host (it has no ports), which it shares with echo
    requests: filed by target, a UDP scan's answers joined an ICMP flood of the same host (the
    service entity of two "attackers") or opened an ``icmp_flood`` of their own.
    """
    if not any(read.icmp_error):
        return []
    portless = np.array([t is None or "/" not in t for t in by_service.targets], dtype=bool)
    error = np.array(read.icmp_error, dtype=bool) & portless[by_service.target_codes]
    return by_service.take(np.flatnonzero(error))


def _file_icmp_errors(
    read: ReadAnomalies, errors: list[int], groups: dict[str, _Group], by_client: _Rows
) -> None:
    """File each ICMP error report with its client's other anomalies to the host that sent it (its
    own or joined, as they are), else under the client (its probes were in an earlier read)."""
    listed = list(groups.values())
    owner = np.full(len(read.ts), -1, dtype=np.int64)  # anomaly -> 2 x its group (+1: joined)
    for i, g in enumerate(listed):
        owner[g.rows] = 2 * i
        owner[g.joined] = 2 * i + 1
    error = read.icmp_error
    where: dict[tuple[str | None, str | None], int] = {}
    for k in errors:
        client, host = pair = read.client[k], read.host[k]
        if pair not in where:
            rows = by_client.get(client, ())
            where[pair] = next((int(owner[j]) for j in rows if read.host[j] == host and not error[j]), -1)
        at = where[pair]
        if at < 0:
            groups.setdefault(host_entity(client), _Group(host_entity(client))).rows.append(k)
        elif at % 2:
            listed[at // 2].joined.append(k)
        else:
            listed[at // 2].rows.append(k)


EPHEMERAL = 32768  # ports from here up are clients' (Linux's range starts here; IANA's at 49152)


def _orient_pairs(read: ReadAnomalies) -> None:
    """Between two hosts, one end is the client of all the read's anomalies between them.

    Where the feature state remembered who opened a conversation (``read.known``: its SYN, or a UDP
    conversation's first packet, seen in this read or an earlier one), that is its client: those
    anomalies are never turned around, and the pair's other anomalies (ICMP errors, connections
    whose handshake was not seen) follow the end most of them name. Otherwise which end is the
    client is guessed per packet (``client_side``: SYNs, then the higher port): a flood from source
    ports below the service's port, or a scanner's reset to a port above its own source port, reads
    as the other host's conversation, which would make a victim look like an attacker. Per pair of
    hosts without known clients, in order: when one end used a single port and the other several,
    the single port is the service's unless it is ephemeral (then it is a scanner's source port);
    else the end most packets' guess names (not the end that sent more: a server answering a
    download sends more than its client).
    """
    n = len(read.client)
    if not n:
        return
    # Counted on integer codes with NumPy: a scan or a flood has tens of thousands of anomalies
    # between a few pairs of hosts, and counting tuples of addresses was most of the grouping's cost.
    clients, client_codes = read.codes("client")  # (kept for the grouping when none is turned)
    hosts, host_codes = read.codes("host")
    ends = list(dict.fromkeys([*clients, *hosts]))  # the distinct addresses (None among them)
    m = len(ends)
    index = {end: i for i, end in enumerate(ends)}
    client = np.array(_take(index, clients), dtype=np.int64)[client_codes]
    host = np.array(_take(index, hosts), dtype=np.int64)[host_codes]
    missing = index.get(None, -1)  # (no address: no IP layer)
    both = (client != missing) & (host != missing)
    known = np.array(read.known, dtype=bool) if read.known else np.zeros(n, dtype=bool)
    pair = client * m + host  # (client guess, server guess)
    votes = _counts(pair[both])  # -> anomalies
    sure = _counts(pair[both & known])  # -> known anomalies
    # (end, other end) -> how many ports the end used and, for one, which: the distinct triples
    port, client_port = read.array("port"), read.array("client_port")
    ported = both & (port != _NO_PORT)
    end_pairs = np.concatenate([pair[ported], (host * m + client)[ported]])
    used_ports = np.concatenate([client_port[ported], port[ported]]) - _NO_PORT
    universe, at = np.unique(end_pairs, return_inverse=True)
    used = _distinct(at.reshape(-1) * _PORT_SPAN + used_ports)
    port_count = (universe, np.bincount(used // _PORT_SPAN, minlength=len(universe)))
    one_port = np.zeros(len(universe), dtype=np.int64)
    one_port[used // _PORT_SPAN] = used % _PORT_SPAN + _NO_PORT  # (read only where the end used one)
    ports = (universe, one_port)
    unknown = both & ~known
    guessed = _distinct(pair[unknown])  # (client guess, server guess) pairs without known clients
    turned = guessed % m * m + guessed // m  # the same pairs the other way round
    sure_mine, sure_theirs = _lookup(sure, guessed), _lookup(sure, turned)
    mine, theirs = _lookup(port_count, guessed), _lookup(port_count, turned)
    flip = np.where(
        (sure_mine > 0) | (sure_theirs > 0),
        sure_theirs > sure_mine,  # the openers remembered decide
        np.where(
            (theirs == 1) & (mine >= 3),  # the guessed server used one port
            _lookup(ports, turned) >= EPHEMERAL,  # a scanner's fixed source port
            np.where(
                (mine == 1) & (theirs >= 3),  # the guessed client used one port
                _lookup(ports, guessed) < EPHEMERAL,  # a service's port: it is the server
                # (not who sent more: a server answering a download sends more than its client)
                _lookup(votes, turned) > _lookup(votes, guessed),
            ),
        ),
    )
    if flip.any():
        _turn_around(read, np.flatnonzero(unknown & np.isin(pair, guessed[flip])).tolist())


_NO_PORT = -1  # a portless anomaly's port in _numbers
_PORT_SPAN = 65537  # distinct port values: 0-65535 and _NO_PORT


def _numbers(values: list[int | None]) -> np.ndarray:
    """A column of ports (None: portless) as integers, ``_NO_PORT`` for None."""
    column = np.array(values, dtype=object)
    column[column == None] = _NO_PORT  # noqa: E711 - elementwise
    return column.astype(np.int64)


def _distinct(keys: np.ndarray) -> np.ndarray:
    """The distinct values of an integer array, sorted (``np.unique`` alone hashes them first: slower)."""
    ordered = np.sort(keys)
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))] if len(ordered) else ordered


def _counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct keys (sorted) and how many times each occurs (``_lookup`` reads them)."""
    return np.unique(keys, return_counts=True)


def _lookup(table: tuple[np.ndarray, np.ndarray], keys: np.ndarray) -> np.ndarray:
    """The values of ``keys`` in a table of sorted distinct keys and their values (0 where absent)."""
    distinct, values = table
    at = np.minimum(np.searchsorted(distinct, keys), max(0, len(distinct) - 1))
    found = distinct[at] == keys if len(distinct) else np.zeros(len(keys), dtype=bool)
    return np.where(found, values[at] if len(distinct) else 0, 0)


def _turn_around(read: ReadAnomalies, rows: list[int]) -> None:
    """Swap which end of anomalies ``rows`` is the client."""
    for k in rows:
        client, server, port = read.host[k], read.client[k], read.client_port[k]
        read.client[k], read.host[k] = client, server
        read.client_port[k], read.port[k] = read.port[k], port
        read.request[k] = not read.request[k]
        proto = read.protocol[k].lower()
        read.target[k] = server if port is None or server is None else f"{server}:{port}/{proto}"
    for name in ("client", "host", "target", "request", "port", "client_port"):
        read.derived.pop(("codes", name), None)
    at = np.asarray(rows, dtype=np.int64)
    arrays = read.derived
    if ("array", "request") in arrays:
        arrays[("array", "request")][at] = ~arrays[("array", "request")][at]
    if ("array", "port") in arrays and ("array", "client_port") in arrays:
        port, client_port = arrays[("array", "port")], arrays[("array", "client_port")]
        port[at], client_port[at] = client_port[at], port[at].copy()
    else:
        arrays.pop(("array", "port"), None)
        arrays.pop(("array", "client_port"), None)


def group_anomalies(
    sensor: Sensor, read: ReadAnomalies, without_service: WithoutService | None = None
) -> dict[str, _Group]:
    """A read's anomalies by entity (module docstring), each group with its representatives chosen.
    ``without_service`` (``scoring.ScoredBatch.without_service``): the attacks' effects are set apart
    (``set_effects_apart``)."""
    groups = _group(sensor, read)
    if without_service is not None:
        set_effects_apart(sensor, read, groups, without_service)
    for g in groups.values():
        g.representatives = _representatives(read, g)
    return groups


def effects(groups: dict[str, _Group]) -> list[int]:
    """The packets of a read set apart as an attack's effect (no anomalies), in row order."""
    return sorted(k for g in groups.values() for k in g.effects)


def set_effects_apart(
    sensor: Sensor, read: ReadAnomalies, groups: dict[str, _Group], without_service: WithoutService
) -> None:
    """Other clients' packets to a service under attack that are over the threshold only through the
    service's statistics: no anomalies, the attack's effect (``_Group.effects`` of its incident).

    A service (``IP:port/proto``, or a host for portless protocols) is under attack while a client
    has at least ``OPEN_MIN_ANOMALIES`` anomalies to it in the read that its own statistics lead
    (its attacker), or while an active incident of a client (a ``host`` entity) of a
    service-directed kind is aimed at it (its attackers: the incident's sources; asked only where
    some of the service's anomalies in the read are led by its statistics). The service's
    statistics are then the attack's figures, and every other client's packet to it carries them
    (\"127.0.0.2:8081/tcp carried about 9,970 packets over the last ~10 s; normally under 1,710\").
    Such a packet whose score with the service's statistics at their training median
    (``without_service``) is at or under the threshold has nothing abnormal of its own: it is
    taken out of the anomalies (its packet is not flagged) and counted on the attack's incident
    (``packet_count``, ``evidence.effects``): the attacker's group of the read, else the active
    incident. A distributed or spoofed flood (a ``service`` entity, no one attacker) is never
    anyone's effect: its clients are the attack.
    """
    n = len(read.ts)
    if not n:
        return
    led = np.zeros(n, dtype=bool)
    led[: len(read.service_led)] = read.service_led[:n]
    # (client, target) pairs as integer codes: a scan has a pair per probe
    clients, client_codes = read.codes("client")
    targets, target_codes = read.codes("target")
    pair = client_codes * len(targets) + target_codes
    keys, first, counts = np.unique(pair[~led], return_index=True, return_counts=True)
    many = counts >= opening.OPEN_MIN_ANOMALIES
    attackers: dict[str, list[str]] = {}  # target -> its attackers in the read, most anomalies first
    first_attacker: dict[str, int] = {}  # target -> the pair of its first attacker
    for key in keys[many][np.lexsort((first[many], -counts[many]))].tolist():  # (ties: first seen first)
        client, target = clients[key // len(targets)], targets[key % len(targets)]
        if client is not None and target is not None:
            attackers.setdefault(target, []).append(client)
            first_attacker.setdefault(target, key)
    # the active incidents are asked for (one query) only for services no attacker of the read is
    # on whose anomalies include some led by the service's statistics (an effect's usual look)
    led_elsewhere = set(_take(targets, _distinct(target_codes[led]).tolist())).difference(attackers)
    owners: dict[str, Incident] = {}
    if led_elsewhere:
        services, _ = _attacked(sensor, read)
        owners = {t: i for t, i in services.items() if t in led_elsewhere and i.entity.startswith("host ")}
    if not attackers and not owners:
        return
    attacking = {t: set(clients) for t, clients in attackers.items()}
    for t, incident in owners.items():
        attacking.setdefault(t, set()).update({*incident.sources, incident.src_ip})
    attacked = np.isin(target_codes, [targets.index(t) for t in attacking])
    others = [
        key for key in _distinct(pair[attacked]).tolist()
        if clients[key // len(targets)] not in attacking[targets[key % len(targets)]]
    ]  # fmt: skip
    candidates = np.flatnonzero(np.isin(pair, others)).tolist()
    if not candidates:
        return
    normal = without_service(np.array(candidates, dtype=np.int64)) <= read.threshold
    set_apart = list(compress(candidates, normal.tolist()))
    if not set_apart:
        return
    listed = list(groups.values())
    owner = np.full(n, -1, dtype=np.int64)  # anomaly -> its group's index
    for i, g in enumerate(listed):
        owner[g.rows] = i
        owner[g.joined] = i
    into: dict[str, _Group] = {}  # target -> the group its effects are counted on
    for target in dict.fromkeys(read.target[k] for k in set_apart):
        if target in attackers:  # the group the attacker's anomalies to it went to
            at = int(owner[np.flatnonzero(pair == first_attacker[target])[0]])
            if at >= 0:
                into[target] = listed[at]
        else:
            incident = owners[target]
            g = into[target] = groups.setdefault(incident.entity, _Group(incident.entity))
            g.incident = g.incident or incident
    set_apart = [k for k in set_apart if read.target[k] in into]
    taken = set(set_apart)
    for i in set(owner[set_apart].tolist()) - {-1}:
        g = listed[i]
        g.rows = [k for k in g.rows if k not in taken]
        g.joined = [k for k in g.joined if k not in taken]
    for k in set_apart:
        into[read.target[k]].effects.append(k)
    for entity, g in list(groups.items()):
        if not (g.rows or g.joined or g.effects):
            del groups[entity]


def representatives(groups: dict[str, _Group]) -> list[int]:
    """The anomalies of a read stored as rows (with an explanation), in row order."""
    return sorted(k for g in groups.values() for k in g.representatives)


def _top(read: ReadAnomalies, group: _Group) -> int:
    """The first of the highest-scoring anomalies of the group's own (its entity's), else of those
    joined to it: the one that explains the incident."""
    rows = group.rows or group.joined
    return rows[int(np.argmax(np.asarray(read.scores)[rows]))]


def _representatives(read: ReadAnomalies, group: _Group) -> list[int]:
    """The anomalies of a group worth a row: all of them when there are few (benign-level reads),
    else at most ``REPRESENTATIVES_PER_GROUP``: its top anomaly (``_top``: the incident's peak and
    explanation come from it), the first anomaly of each distinct target of the read (up to
    ``TARGET_REPRESENTATIVES``: a scan's spread shows), then the next highest scores."""
    rows = group.all_rows()
    if len(rows) <= REPRESENTATIVES_PER_GROUP:
        return sorted(rows)
    candidates = np.array(rows)
    by_score = candidates[np.argsort(-read.scores[candidates], kind="stable")].tolist()
    chosen = {_top(read, group)}
    in_order = np.sort(candidates)
    _, firsts, _ = _tally(read.codes("target")[1][in_order])  # each distinct target's first anomaly
    chosen.update(in_order[firsts[:TARGET_REPRESENTATIVES]].tolist())
    for k in by_score:
        if len(chosen) >= REPRESENTATIVES_PER_GROUP:
            break
        chosen.add(k)
    return sorted(chosen)


def file_groups(
    sensor: Sensor, read: ReadAnomalies, groups: dict[str, _Group], exchanged: dict[bytes, int]
) -> Assignment:
    """The incident of each anomaly of a read: each entity's incident grows, or a candidate is started.

    ``groups``: from ``group_anomalies``, with the representatives' explanations in ``read.texts``.
    ``exchanged``: packets of the whole read per client address (``packets_per_client``).
    """
    return _incidents(sensor, read, groups, exchanged)


def _when(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


def _grow(incident: Incident, evidence: Evidence, read: ReadAnomalies, group: _Group) -> None:
    """Add a read's anomalies of one entity to ``incident`` and its evidence."""
    evidence.effects += len(group.effects)
    if not group.all_rows():  # only other clients' packets, its effect: nothing else changes
        incident.evidence = evidence.dumps()
        return
    _add_evidence(incident, evidence, read, group.rows)
    evidence.affected += len(group.joined)
    evidence.explained += len(group.representatives)
    incident.anomaly_count += len(group.all_rows())
    top = _top(read, group)
    # other clients' joined anomalies (the attack's effect on them) say what the attack did, not what
    # it is: they explain an incident only while it has no explanation of its own
    if (group.rows and float(read.scores[top]) > incident.peak_score) or not incident.explanation:
        incident.peak_score = float(read.scores[top])
        incident.explanation = read.texts.get(top, "")[:2000]  # the top score is a representative
    times = read.array("ts")[np.asarray(group.rows, dtype=np.int64)]
    if len(times):  # other clients' joined anomalies (its effect) do not keep an attack going
        incident.last_seen = max(incident.last_seen, _when(float(times.max())))
    if incident.opened_at is None:
        times = np.sort(np.concatenate([np.asarray(evidence.recent, dtype=np.float64), times]))
        at = opening.dense(times)
        evidence.coordinated = evidence.coordinated or group.coordinated
        if incident.entity.startswith("service ") and len(incident.sources) < MANY_CLIENTS:
            at = (
                at if evidence.coordinated else -1
            )  # a service opens when many clients, or attackers, show it
        if at >= 0:
            incident.opened_at = _now()
            evidence.opened_ts = float(times[at])
            evidence.active_ts = float(times[opening.last_dense(times)])
        evidence.recent = times[-(opening.OPEN_MIN_ANOMALIES - 1) :].tolist()
    elif len(times):  # open: only sustained evidence keeps it active (the latest times carry it across reads)
        merged = np.sort(np.concatenate([np.asarray(evidence.recent, dtype=np.float64), times]))
        at = opening.last_dense(merged)
        if at >= 0:
            evidence.active_ts = max(float(merged[at]), evidence.active_ts or 0.0)
        evidence.recent = merged[-(opening.OPEN_MIN_ANOMALIES - 1) :].tolist()
    if evidence.anomalies:
        incident.kind = incident_kind(evidence)
    incident.severity = incident_severity(incident.kind, incident.peak_score, read.threshold)
    incident.evidence = evidence.dumps()


def _add_evidence(incident: Incident, evidence: Evidence, read: ReadAnomalies, rows: list[int]) -> None:
    """Count anomalies ``rows`` of the read in ``evidence`` and list their sources and targets.

    A flood repeats a few values thousands of times, so each column is counted at once (NumPy, on
    the read's arrays and codes) and the bounded lists and counters visit each distinct value once,
    in the order of its first anomaly: what one anomaly after the other would give (the bounds
    admit a value at its first sight, and a value seen again changes nothing but its count), down
    to the order of the counters' keys.
    """
    if not rows:
        return
    at = np.asarray(rows, dtype=np.int64)
    request = read.array("request")[at].astype(bool)
    payload = read.array("payload")[at].astype(np.int64)
    carried = payload > 0
    sent = request & carried
    evidence.anomalies += len(rows)
    evidence.requests += int(np.count_nonzero(request))
    icmp = read.array("icmp_request")[at].astype(bool)
    evidence.icmp_sent += int(np.count_nonzero(request & icmp))
    evidence.sent_with_data += int(np.count_nonzero(sent))
    evidence.sent_payload += int(payload[sent].sum())
    evidence.sent_small += int(np.count_nonzero(sent & (payload < SLOW_SEND)))
    if len(evidence.client_ports) < CONNECTIONS_KEPT:
        known = set(evidence.client_ports)
        for port in _tally(read.array("client_port")[at])[0]:
            if len(evidence.client_ports) >= CONNECTIONS_KEPT:
                break
            if port != _NO_PORT and port not in known:
                evidence.client_ports.append(port)
                known.add(port)
    names, codes = read.codes("protocol")
    for code, n in _counted(codes[at]):
        evidence.protocols[names[code]] += n
    evidence.syn_only += int(np.count_nonzero(read.array("syn_only")[at].astype(bool)))
    evidence.with_payload += int(np.count_nonzero(carried))
    evidence.bytes += int(read.array("length")[at].astype(np.int64).sum())
    kinds, codes = read.codes("families")
    for code, n in _counted(codes[at]):
        for weight, family in zip((3, 2, 1), kinds[code], strict=False):
            evidence.families[family] += weight * n
    sources = list(incident.sources)
    named = set(sources)
    clients, codes = read.codes("client")
    for client in _take(clients, _tally(codes[at])[0]):
        if len(sources) >= SOURCES_KEPT:
            break
        if client is not None and client not in named:
            sources.append(client)
            named.add(client)
    incident.sources = sources
    hits = evidence.port_hits
    for port, n in _counted(read.array("port")[at]):
        if port != _NO_PORT and (port in hits or len(hits) < EVIDENCE_PORTS):
            hits[port] += n
    names, codes = read.codes("target")
    distinct, firsts, counts = _tally(codes[at])
    # each distinct target, its first anomaly and its count, in the order of first sight
    seen, ks = _take(names, distinct), _take(rows, firsts)
    if None in seen:  # (no target: not counted, not listed)
        at_none = seen.index(None)
        del seen[at_none], ks[at_none], counts[at_none]
    hits, room = evidence.target_hits, EVIDENCE_PORTS - len(evidence.target_hits)
    for target, n in zip(seen, counts, strict=True):
        if target in hits:
            hits[target] += n
        elif room > 0:
            hits[target] += n
            room -= 1
    hosts, ports = _take(read.host, ks), _take(read.port, ks)
    targets = list(incident.targets)
    listed = set(targets)
    listing = 0  # targets listed until the list is full; each one's destination is remembered
    while len(targets) < TARGETS_KEPT and listing < len(seen):
        if seen[listing] not in listed:
            targets.append(seen[listing])
            listed.add(seen[listing])
            evidence.add_target(hosts[listing], ports[listing])
        listing += 1
    # then each new destination (within the bounds remembered) is one more target not listed
    incident.targets_more += sum(map(evidence.add_target, hosts[listing:], ports[listing:]))
    incident.targets = targets


def _tally(values: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """The distinct integers (codes, ports) in the order of their first appearance, the position of
    each one's first appearance and how many times each appears (counted and ordered in O(n), not
    sorted: ``_by_code``)."""
    if not len(values):
        return [], [], []
    low = int(values.min())
    codes = values - low
    counts = np.bincount(codes)
    present = np.flatnonzero(counts)
    firsts = _by_code(codes, len(counts))[(np.cumsum(counts) - counts)[present]]  # (a stable order)
    seq = np.argsort(firsts, kind="stable")
    return (present[seq] + low).tolist(), firsts[seq].tolist(), counts[present][seq].tolist()


def _counted(codes: np.ndarray) -> Iterator[tuple[int, int]]:
    """(code, how many times it appears), in the order of first appearance (a Counter's order)."""
    distinct, _, counts = _tally(codes)
    return zip(distinct, counts, strict=True)


def _now() -> datetime:
    return datetime.now(tz=UTC)


_CHANGED = ["last_seen", "anomaly_count", "packet_count", "peak_score", "explanation", "kind", "severity",
            "sources", "targets", "targets_more", "evidence", "opened_at", "status", "status_changed_by",
            "status_changed_at"]  # fmt: skip


def _incidents(
    sensor: Sensor, read: ReadAnomalies, groups: dict[str, _Group], exchanged: dict[bytes, int]
) -> Assignment:
    """Grow each entity's incident (or start a candidate) with the read's anomalies. A handful of
    statements per read however many entities it has."""
    # (a group of only an attack's effects has its incident: no first anomaly is needed)
    ts = read.array("ts")
    firsts = {e: _when(float(ts[g.all_rows()].min())) for e, g in groups.items() if g.all_rows()}
    current = _recent_incidents(sensor, {e: t for e, t in firsts.items() if groups[e].incident is None})
    rules = suppression.RuleSet.active()
    created: list[Incident] = []
    updated: list[Incident] = []
    opened: list[Incident] = []
    raised: list[Incident] = []
    suppressed: list[int | None] = [None] * len(read.ts)
    hits: Counter = Counter()
    for entity, g in list(groups.items()):
        incident = g.incident or current.get(entity)
        was_open = incident is not None and incident.opened_at is not None
        new = incident is None
        if new:
            first = firsts[entity]
            src = entity[5:] if entity.startswith("host ") and entity != host_entity(None) else None
            incident = Incident(
                sensor=sensor, entity=entity, src_ip=src, sources=[], targets=[], first_seen=first,
                last_seen=first, status=IncidentStatus.OPEN,
                # its first anomaly's flow (always a representative: _representatives)
                community_id=read.community_ids.get(min(g.all_rows()), ""),
            )  # fmt: skip
        elif incident.status == IncidentStatus.RESOLVED and incident.last_seen < firsts.get(entity, _NEVER):
            # it came back after the operator resolved it: an operator must look again
            incident.status = IncidentStatus.OPEN
            incident.status_changed_by, incident.status_changed_at = None, _now()
        before = _LEVELS.index(incident.severity) if was_open else None
        own = exchanged.get(ip_to_bytes(entity[5:]), 0) if incident.src_ip else 0
        if g.all_rows():
            incident.packet_count += max(own, len(g.rows)) + len(g.joined)
        incident.packet_count += len(g.effects)
        _grow(incident, Evidence.loads(incident.evidence), read, g)
        if rules and (rule := _suppressing_rule(rules, incident)) is not None:
            # stored with the rule, filed under no incident; the incident is left as it was
            for k in g.all_rows():
                suppressed[k] = rule.pk
            hits[rule.pk] += len(g.all_rows())
            del groups[entity]
            continue
        g.incident = incident
        (created if new else updated).append(incident)
        if incident.opened_at is not None and not was_open:
            opened.append(incident)
        elif before is not None and _LEVELS.index(incident.severity) > before:
            raised.append(incident)
    _update_incidents(updated)
    _insert_incidents(sensor, created)
    if hits:
        suppression.record_hits(dict(hits), _when(max(read.ts)))
    filed = np.full(len(read.ts), None, dtype=object)
    for g in groups.values():
        filed[g.all_rows()] = g.incident.pk
    ids: list[int | None] = filed.tolist()
    opened_ids = {i.pk for i in opened}
    probes = [
        k
        for g in groups.values()
        if g.incident.opened_at is not None and g.incident.kind in PROBE_KINDS
        for k in g.rows
    ]
    return Assignment(
        ids=ids,
        opened=sorted(opened_ids),
        updated=sorted({g.incident.pk for g in groups.values() if g.incident.opened_at} - opened_ids),
        raised=sorted({i.pk for i in raised}),
        suppressed=suppressed,
        probes=probes,
    )


def _suppressing_rule(rules: suppression.RuleSet, incident: Incident) -> Any:
    """The rule matching what the incident is about (its source, main target and kind), if any."""
    main = Evidence.loads(incident.evidence).main_target()
    host, port = suppression.parse_target(main) if main else (None, None)
    sources = incident.sources or [None]
    for src in sources[:SOURCES_KEPT]:
        if rule := rules.match(src, host, port, incident.kind):
            return rule
    return None


def _recent_incidents(sensor: Sensor, firsts: dict[str, datetime]) -> dict[str, Incident]:
    """Per entity, its latest incident (candidate or open) that its anomalies from ``firsts`` continue:
    within RECUR of its sustained evidence (``active_until``; ``last_seen`` is never earlier)."""
    if not firsts:
        return {}
    recent = Incident.objects.filter(sensor=sensor, last_seen__gte=min(firsts.values()) - INCIDENT_RECUR)
    entities = list(firsts)
    found: list[Incident] = []
    for lo in range(0, len(entities), _IN_CHUNK):  # a spoofed flood has thousands of sources
        found += recent.filter(entity__in=entities[lo : lo + _IN_CHUNK])
    latest: dict[str, Incident] = {}
    for incident in found:
        entity = incident.entity
        if active_until(incident) >= firsts[entity] - INCIDENT_RECUR and (
            entity not in latest or incident.last_seen > latest[entity].last_seen
        ):
            latest[entity] = incident
    return latest


def _update_incidents(updated: list[Incident]) -> None:
    """Write back the incidents a read grew (the ``_CHANGED`` fields): one UPDATE statement run for
    each in one ``executemany``. The ORM's bulk_update built a CASE per field and incident, most of
    the filing of a small read under attack; the values are adapted as the ORM adapts them."""
    if not updated:
        return
    adapt = connection.ops.adapt_datetimefield_value
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    columns = [Incident._meta.get_field(name).column for name in _CHANGED]
    sets = ", ".join(f"{column} = %s{cast if column in _JSON_COLUMNS else ''}" for column in columns)
    values = [
        (adapt(i.last_seen), i.anomaly_count, i.packet_count, i.peak_score, i.explanation, i.kind, i.severity,
         json.dumps(i.sources), json.dumps(i.targets), i.targets_more, json.dumps(i.evidence),
         adapt(i.opened_at), i.status, i.status_changed_by_id, adapt(i.status_changed_at), i.pk)
        for i in updated
    ]  # fmt: skip
    with connection.cursor() as cursor:  # table and column names are ours (model meta), never input
        cursor.executemany(f"UPDATE {Incident._meta.db_table} SET {sets} WHERE id = %s", values)  # noqa: S608


_INCIDENT_COLUMNS = [
    "sensor_id", "entity", "src_ip", "kind", "severity", "status", "sources", "targets", "targets_more",
    "first_seen", "last_seen", "opened_at", "anomaly_count", "packet_count", "peak_score", "explanation",
    "evidence", "community_id",
]  # fmt: skip
_JSON_COLUMNS = ("sources", "targets", "evidence")


def _insert_incidents(sensor: Sensor, created: list[Incident]) -> None:
    """Insert new incidents and set their ids.

    Multi-row INSERT ... RETURNING id, whose rows come back in VALUES order on SQLite and
    PostgreSQL (as bulk_create relies on too). A spoofed flood opens an incident per packet, and
    the ORM's bulk_create spent more on preparing values than the rest of the read.
    """
    if not created:
        return
    firsts = timestamps_text(np.array([i.first_seen.timestamp() for i in created], dtype=np.float64))
    lasts = timestamps_text(np.array([i.last_seen.timestamp() for i in created], dtype=np.float64))
    opened = timestamps_text(np.array([i.opened_at.timestamp() if i.opened_at else 0.0 for i in created]))
    values = [
        (sensor.pk, i.entity, i.src_ip, i.kind, i.severity, i.status, json.dumps(i.sources),
         json.dumps(i.targets), i.targets_more, first, last, at if i.opened_at else None, i.anomaly_count,
         i.packet_count, i.peak_score, i.explanation, json.dumps(i.evidence), i.community_id)
        for i, first, last, at in zip(created, firsts, lasts, opened, strict=True)
    ]  # fmt: skip
    width = len(_INCIDENT_COLUMNS)
    per = min(_IN_CHUNK, max(1, (connection.features.max_query_params or 999) // width))
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    marks = [f"%s{cast}" if column in _JSON_COLUMNS else "%s" for column in _INCIDENT_COLUMNS]
    row_marks = "(" + ", ".join(marks) + ")"
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
            for incident, (pk,) in zip(created[lo : lo + per], returned, strict=True):
                incident.pk = pk
