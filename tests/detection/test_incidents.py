"""Anomalies are grouped into one incident per abnormal entity (scanner, flooder, attacked service),
opened on sustained evidence, continued by a recurrence, whatever the read."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from django.db import transaction

from capture import storage
from capture.choices import IncidentKind, IncidentStatus
from capture.models import Packet, Sensor
from capture.records import Batch, PacketColumns, empty_records, ip_to_bytes
from detection import anomalies, incidents, live, opening, scoring, suppression
from detection.models import Anomaly, Incident, SuppressionRule

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def _read(
    packets: list[tuple | str | None], first_seq: int, t: float, step: float = 0.001, top: tuple = ()
) -> tuple[Batch, scoring.ScoredBatch]:
    """A read whose every packet is an anomaly. A packet is ``(src, dst, sport, dport, proto, flags,
    payload)`` (proto 6 TCP, 17 UDP, 0 none), or a bare source address (to 10.0.0.1, no ports), or
    ``None``: a frame without an IP layer (ARP)."""
    n = len(packets)
    records = empty_records(n)
    records["seq"] = np.arange(first_seq, first_seq + n)
    records["ts"] = t + np.arange(n) * step
    for i, packet in enumerate(packets):
        if packet is None:
            records["eth_type"][i] = 0x0806
            continue
        src, dst, sport, dport, proto, flags, payload = (
            packet if isinstance(packet, tuple) else (packet, "10.0.0.1", 0, 0, 0, 0, 0)
        )
        records["ip_version"][i] = 4
        records["src_ip"][i] = np.frombuffer(ip_to_bytes(src), np.uint8)
        records["dst_ip"][i] = np.frombuffer(ip_to_bytes(dst), np.uint8)
        records["sport"][i], records["dport"][i], records["proto"][i] = sport, dport, proto
        records["tcp_flags"][i], records["payload_len"][i] = flags, payload
    scores = np.linspace(1.0, 2.0, n)
    scored = scoring.ScoredBatch(
        scores=scores,
        threshold=0.5,
        is_anomaly=np.ones(n, bool),
        top_features=[top] * n,
        explain=_reasons,
        model_kind="isolation_forest",
        model_versions={"isolation_forest": 1},
        feature_state=b"",
    )
    return Batch(sensor="inc", records=records), scored


def _reasons(positions: np.ndarray, records: np.ndarray) -> list[tuple[str, str]]:
    """Explanations that name their packet (the model's cost ~35 us a row; what matters is which rows)."""
    return [(f"reason {seq}", "[]") for seq in records["seq"].tolist()]


SYN, SYN_ACK, RST_ACK, PSH_ACK = 0x02, 0x12, 0x14, 0x18
SCANNER, VICTIM, CLIENT = "10.0.0.9", "10.0.0.1", "10.0.0.20"


def _save(sensor: Sensor, packets: list, first_seq: int, t: float, step: float = 0.001, top: tuple = ()):
    batch, scored = _read(packets, first_seq, t, step, top)
    return anomalies.save_anomalies(sensor, batch, scored)


def test_a_port_scan_and_the_victims_replies_are_one_incident_of_the_scanner():
    sensor = Sensor.objects.create(name="inc")
    packets = []
    for port in range(1, 61):
        packets.append((SCANNER, VICTIM, 45_000, port, 6, SYN, 0))
        packets.append((VICTIM, SCANNER, port, 45_000, 6, RST_ACK, 0))  # closed: the victim answers
    saved = _save(sensor, packets, 1, T0)
    incident = Incident.objects.get()
    assert (incident.entity, incident.sources, incident.src_ip) == (f"host {SCANNER}", [SCANNER], SCANNER)
    assert incident.kind == IncidentKind.PORT_SCAN
    assert incident.targets[:3] == [f"{VICTIM}:1/tcp", f"{VICTIM}:2/tcp", f"{VICTIM}:3/tcp"]
    assert len(incident.targets) == 60 and incident.anomaly_count == 120
    assert saved.opened == [incident.pk] and incident.opened_at is not None
    # 120 anomalies of one read: its representatives are stored as rows, all 120 counted
    assert Anomaly.objects.filter(incident=incident).count() == incidents.REPRESENTATIVES_PER_GROUP


def test_a_horizontal_scan_across_a_subnet_is_one_incident_listing_the_hosts():
    sensor = Sensor.objects.create(name="inc")
    packets = []
    for h in range(1, 101):
        host = f"10.0.1.{h}"
        packets.append((SCANNER, host, 45_000, 22, 6, SYN, 0))
        packets.append((host, SCANNER, 22, 45_000, 6, RST_ACK if h % 2 else SYN_ACK, 0))
    _save(sensor, packets, 1, T0)
    incident = Incident.objects.get()
    assert incident.kind == IncidentKind.HORIZONTAL_SCAN
    assert incident.sources == [SCANNER]
    assert incident.targets == [f"10.0.1.{h}:22/tcp" for h in range(1, 101)]


def test_a_benign_clients_anomalies_to_a_flooded_service_join_the_flood_never_their_own():
    sensor = Sensor.objects.create(name="inc")
    service = (VICTIM, 8080)
    flood = [("10.0.0.66", VICTIM, 1024 + i, 8080, 6, SYN, 0) for i in range(300)]
    benign = [(CLIENT, VICTIM, 50_000 + i, 8080, 6, PSH_ACK, 300) for i in range(8)]
    benign += [(VICTIM, CLIENT, 8080, 50_000 + i, 6, PSH_ACK, 900) for i in range(8)]  # its replies too
    _save(sensor, flood[:150] + benign + flood[150:], 1, T0)
    flood_incident = Incident.objects.get()
    assert flood_incident.entity == "host 10.0.0.66" and flood_incident.sources == ["10.0.0.66"]
    assert flood_incident.kind == IncidentKind.SYN_FLOOD
    assert flood_incident.targets == [f"{service[0]}:{service[1]}/tcp"]
    assert flood_incident.anomaly_count == 316 and flood_incident.evidence["affected"] == 16
    # a later read, the flood going on elsewhere on the host: the benign client's anomalies are still its
    more = [(CLIENT, VICTIM, 51_000 + i, 8080, 6, PSH_ACK, 300) for i in range(30)]
    _save(
        sensor, more + [("10.0.0.66", VICTIM, 1024 + i, 8081, 6, SYN, 0) for i in range(300)], 1_000, T0 + 5
    )
    assert Incident.objects.count() == 1
    assert Anomaly.objects.filter(src_ip=CLIENT).exclude(incident=flood_incident).count() == 0
    # ... but its anomalies to another host are its own business
    _save(sensor, [(CLIENT, "10.0.0.2", 52_000 + i, 443, 6, PSH_ACK, 300) for i in range(3)], 2_000, T0 + 6)
    assert Incident.objects.filter(entity=f"host {CLIENT}").count() == 1


def test_a_new_attacker_of_a_host_whose_attack_ended_opens_its_own_incident():
    sensor = Sensor.objects.create(name="inc")
    _save(sensor, [("10.0.0.66", VICTIM, 1024 + i, 8080, 6, SYN, 0) for i in range(300)], 1, T0)
    udp = [("10.0.0.69", VICTIM, 40_000, 5353, 17, 0, 120) for _ in range(300)]
    _save(sensor, udp, 1_000, T0 + 4)  # the SYN flood is over (not in this read), still active
    kinds = sorted((i.entity, i.kind) for i in Incident.objects.opened())
    assert kinds == [("host 10.0.0.66", IncidentKind.SYN_FLOOD), ("host 10.0.0.69", IncidentKind.UDP_FLOOD)]


def test_many_clients_none_dominating_make_the_service_the_entity():
    sensor = Sensor.objects.create(name="inc")
    spoofed = [f"198.51.{i // 250}.{i % 250 + 1}" for i in range(1_200)]  # more than one IN (...) chunk
    saved = _save(sensor, [*spoofed, None], 1, T0)
    assert saved.count == 1_201
    service = Incident.objects.opened().get()
    assert service.entity == f"service {VICTIM}" and service.src_ip is None
    assert service.sources == spoofed[:100] and service.anomaly_count == 1_200
    # the frame without an IP layer is a candidate of its own, not shown
    assert Incident.objects.count() == 2
    assert Anomaly.objects.filter(incident__isnull=True).count() == 0


def test_scattered_anomalies_stay_a_candidate_and_sustained_ones_open_it():
    sensor = Sensor.objects.create(name="inc")
    saved = _save(sensor, [SCANNER] * 3, 1, T0)
    candidate = Incident.objects.get()
    assert candidate.opened_at is None and saved.opened == [] and saved.updated == []
    assert Incident.objects.opened().count() == 0
    assert Anomaly.objects.filter(incident=candidate).count() == 3  # nothing is lost
    # one anomaly every 1.5 s: never OPEN_MIN_ANOMALIES within OPEN_WINDOW
    for i in range(12):
        _save(sensor, [SCANNER], 10 + i, T0 + 10 + i * 1.5)
    assert Incident.objects.opened().count() == 0
    # then a burst: the same candidate opens
    saved = _save(sensor, [SCANNER] * opening.OPEN_MIN_ANOMALIES, 100, T0 + 40, step=0.1)
    candidate.refresh_from_db()
    assert saved.opened == [candidate.pk] and candidate.opened_at is not None
    assert candidate.anomaly_count == 3 + 12 + opening.OPEN_MIN_ANOMALIES
    assert candidate.evidence["opened_ts"] == pytest.approx(T0 + 40 + 0.9)
    assert candidate.first_seen == datetime.fromtimestamp(T0, tz=UTC)
    saved = _save(sensor, [SCANNER], 200, T0 + 41)
    assert (saved.opened, saved.updated) == ([], [candidate.pk])


def test_a_recurrence_continues_the_incident_and_reopens_it_if_resolved_a_late_one_is_new():
    sensor = Sensor.objects.create(name="inc")
    _save(sensor, [SCANNER] * 20, 1, T0)
    incident = Incident.objects.get()
    Incident.objects.filter(pk=incident.pk).update(status=IncidentStatus.RESOLVED)
    back = T0 + opening.QUIET + 30  # quiet, then back within RECUR
    _save(sensor, [SCANNER] * 2, 100, back)
    incident.refresh_from_db()
    assert (Incident.objects.count(), incident.anomaly_count, incident.status) == (1, 22, IncidentStatus.OPEN)
    assert incident.last_seen == datetime.fromtimestamp(back + 0.001, tz=UTC)
    late = back + opening.RECUR + 5
    _save(sensor, [SCANNER] * 2, 200, late)
    assert Incident.objects.count() == 2
    newest = Incident.objects.order_by("-first_seen").first()
    assert newest.pk != incident.pk and newest.opened_at is None


def test_stray_anomalies_join_an_attack_but_do_not_keep_it_active_so_a_second_attack_is_its_own():
    sensor = Sensor.objects.create(name="inc")
    _save(sensor, [SCANNER] * 20, 1, T0)  # an attack: sustained evidence
    first = Incident.objects.opened().get()
    strays = [T0 + 50 + 50 * n for n in range(7)]  # then the host's odd anomaly now and then
    for n, t in enumerate(strays):
        _save(sensor, [SCANNER], 100 + n, t)
    first.refresh_from_db()
    # the strays within RECUR of its sustained evidence join it (stored, counted) ...
    assert first.anomaly_count == 20 + 2 and first.last_seen == datetime.fromtimestamp(strays[1], tz=UTC)
    assert first.evidence["active_ts"] == pytest.approx(T0 + 0.019)  # ... but do not keep it active
    shown = datetime.fromisoformat(live.incident_event(first)["active_until"])  # the dashboard's "active"
    assert shown.timestamp() == pytest.approx(T0 + 0.019)
    again = strays[-1] + 30  # a second attack minutes later: an incident of its own, opened by it
    saved = _save(sensor, [SCANNER] * 20, 200, again)
    second = Incident.objects.opened().exclude(pk=first.pk).get()
    assert saved.opened == [second.pk]
    assert second.evidence["opened_ts"] == pytest.approx(again + 0.009)
    assert second.anomaly_count == 5 + 20  # the later strays were its candidate: nothing is lost
    first.refresh_from_db()
    assert first.anomaly_count == 22
    # sustained evidence spread over reads keeps an incident active: 5 + 5 within OPEN_WINDOW
    _save(sensor, [SCANNER] * 5, 300, again + 30, step=0.1)
    _save(sensor, [SCANNER] * 5, 310, again + 30.5, step=0.1)
    second.refresh_from_db()
    assert second.evidence["active_ts"] == pytest.approx(again + 30.9)


def test_the_stored_part_of_a_read_keeps_each_anomaly_with_its_own_columns():
    # score_batch hands the text columns of the explained rows on to save_anomalies; the ingest
    # stores only part of a read when some of its batches were stored before (select).
    sensor = Sensor.objects.create(name="inc")
    sources = [f"192.0.2.{i + 1}" for i in range(12)]
    batch, scored = _read(sources, 1, T0)
    flagged = [1, 2, 5, 8, 11]
    scored.is_anomaly = np.isin(np.arange(12), flagged)
    scored.top_features = [(f"feature of {i}",) for i in flagged]
    asked = []

    def explain(positions: np.ndarray, records: np.ndarray) -> list[tuple[str, str]]:
        asked.append(positions.tolist())  # positions among the read's flagged rows
        return _reasons(positions, records)

    scored.explain = explain
    rows = np.array([0, 2, 3, 4, 5, 9, 10, 11])  # the rows stored now

    part = scored.select(rows)
    saved = anomalies.save_anomalies(sensor, Batch(sensor="inc", records=batch.records[rows]), part)

    assert saved.count == 3
    stored = sorted(Anomaly.objects.values_list("packet_seq", "src_ip", "explanation"))
    assert stored == [(seq, sources[seq - 1], f"reason {seq}") for seq in (3, 6, 12)]
    assert part.top_features == [("feature of 2",), ("feature of 5",), ("feature of 11",)]
    assert sorted(p for call in asked for p in call) == [1, 2, 4]


def _scan(scanner: str, victim: str = VICTIM) -> list[tuple]:
    packets = []
    for port in range(1, 61):
        packets.append((scanner, victim, 45_000, port, 6, SYN, 0))
        packets.append((victim, scanner, port, 45_000, 6, RST_ACK, 0))
    return packets


def test_a_suppression_rule_keeps_matching_evidence_from_opening_incidents_and_its_anomalies_stored():
    sensor = Sensor.objects.create(name="inc")
    rule = SuppressionRule.objects.create(
        source_cidr=f"{SCANNER}/32", kind=IncidentKind.PORT_SCAN, reason="audit"
    )
    saved = _save(sensor, _scan(SCANNER), 1, T0)
    assert saved.count == 120 and saved.opened == []
    assert Incident.objects.count() == 0
    # its representatives stored with the rule; every anomaly counted on it
    assert (
        Anomaly.objects.filter(suppressed_by=rule, incident__isnull=True).count()
        == incidents.REPRESENTATIVES_PER_GROUP
    )
    rule.refresh_from_db()
    assert rule.hits == 120 and rule.last_hit_at is not None
    # another scanner is not covered by it
    _save(sensor, _scan("10.0.0.10"), 1_000, T0 + 1)
    assert [i.entity for i in Incident.objects.opened()] == ["host 10.0.0.10"]


def test_a_rule_made_from_an_open_incident_stops_it_growing():
    sensor = Sensor.objects.create(name="inc")
    _save(sensor, _scan(SCANNER), 1, T0)
    incident = Incident.objects.opened().get()
    rule = suppression.rule_from_incident(incident, None, "a scanner we run", None)
    saved = _save(sensor, _scan(SCANNER), 1_000, T0 + 5)
    incident.refresh_from_db()
    assert incident.anomaly_count == 120 and saved.updated == []
    assert Anomaly.objects.filter(suppressed_by=rule).count() == incidents.REPRESENTATIVES_PER_GROUP


def _store_and_save(sensor: Sensor, packets: list, first_seq: int, t: float):
    """A read as the worker commits it: packets stored with their scores, then the anomalies filed."""
    batch, scored = _read(packets, first_seq, t)
    with transaction.atomic():
        storage.store_batch(sensor, batch, f"{first_seq}-0", anomaly_scores=scored.anomaly_scores())
        return anomalies.save_anomalies(sensor, batch, scored)


def test_a_flood_read_stores_its_incidents_representatives_and_counts_every_packet(api):
    sensor = Sensor.objects.create(name="inc")
    n = 2_000
    flood = [("10.0.0.66", VICTIM, 1024 + i % 60_000, 8080, 6, SYN, 0) for i in range(n)]
    saved = _store_and_save(sensor, flood, 1, T0)
    incident = Incident.objects.get()
    assert incident.kind == IncidentKind.SYN_FLOOD
    assert (saved.count, saved.stored, incident.anomaly_count) == (n, incidents.REPRESENTATIVES_PER_GROUP, n)
    rows = Anomaly.objects.filter(incident=incident)
    assert rows.count() == incidents.REPRESENTATIVES_PER_GROUP == incident.evidence["explained"]
    # the highest score is among them and explains the incident (scores rise with seq in _read)
    assert rows.order_by("-score").first().packet_seq == n
    assert incident.explanation == f"reason {n}"
    # nothing lost: every flagged packet has its score on its packet row, and the API lists them
    assert Packet.objects.filter(anomaly_score__isnull=False).count() == n
    listed = api.get("/api/packets/", {"flagged": "true", "limit": 1})
    assert listed.status_code == 200 and listed.json()["count"] == n
    assert listed.json()["results"][0]["anomaly_score"] == pytest.approx(2.0)
    # the next read of the same flood adds its own representatives, counts all of it
    _store_and_save(sensor, flood, n + 1, T0 + 1)
    incident.refresh_from_db()
    assert incident.anomaly_count == 2 * n
    assert Anomaly.objects.filter(incident=incident).count() == 2 * incidents.REPRESENTATIVES_PER_GROUP


def test_benign_level_reads_keep_a_row_per_anomaly_and_unflagged_packets_no_score(api):
    sensor = Sensor.objects.create(name="inc")
    few = [(f"10.0.2.{h}", VICTIM, 40_000 + i, 443, 6, PSH_ACK, 100) for h in range(1, 4) for i in range(5)]
    batch, scored = _read([*few, CLIENT], 1, T0)
    scored.is_anomaly[-1] = False  # the last packet is not over the threshold
    with transaction.atomic():
        storage.store_batch(sensor, batch, "1-0", anomaly_scores=scored.anomaly_scores())
        saved = anomalies.save_anomalies(sensor, batch, scored)
    assert saved.count == saved.stored == Anomaly.objects.count() == 15
    assert sorted(Anomaly.objects.values_list("packet_seq", flat=True)) == list(range(1, 16))
    assert list(Packet.objects.filter(anomaly_score__isnull=True).values_list("seq", flat=True)) == [16]
    assert api.get("/api/packets/", {"flagged": "false"}).json()["count"] == 1
    refused = api.get("/api/packets/", {"flagged": "maybe"})
    assert refused.status_code == 400 and "flagged" in refused.json()


def test_a_scans_representatives_show_its_spread_first_anomaly_of_each_target():
    sensor = Sensor.objects.create(name="inc")
    _save(sensor, _scan(SCANNER), 1, T0)  # 60 ports: probe and reset each, scores rise with seq
    stored = set(Anomaly.objects.values_list("dst_port", "src_ip", flat=False))
    first_targets = {(port, SCANNER) for port in range(1, incidents.TARGET_REPRESENTATIVES + 1)}
    assert first_targets <= stored  # the first probes, though their scores are the lowest
    assert Anomaly.objects.count() == incidents.REPRESENTATIVES_PER_GROUP


UNREACHABLE, ECHO = 3, 8  # ICMP types (the record's sport; its dport is the code)


def _udp_scan(scanner: str, ports: range, answered: bool = True) -> list[tuple]:
    """UDP probes from one source port, each closed port answered with an ICMP port unreachable."""
    packets = []
    for port in ports:
        packets.append((scanner, VICTIM, 45_720, port, 17, 0, 0))
        if answered:
            packets.append((VICTIM, scanner, UNREACHABLE, 3, 1, 0, 28))
    return packets


def test_a_scan_of_a_host_another_client_floods_harder_in_the_same_read_is_its_own_incident():
    # The flood has more anomalies to the host in the read, so it is the host's attacker; the
    # scan's probes (one per port: one anomaly per target) used to be joined to the flood as its
    # effect, and the scan had no incident of its own.
    sensor = Sensor.objects.create(name="inc")
    flood = [("10.0.0.68", VICTIM, 40_000 + i, 8080, 6, PSH_ACK, 300) for i in range(300)]
    _save(sensor, flood[:150] + _udp_scan("10.0.0.70", range(1, 41)) + flood[150:], 1, T0)
    flood_incident = Incident.objects.get(entity="host 10.0.0.68")
    scan = Incident.objects.get(entity="host 10.0.0.70")
    assert scan.kind == IncidentKind.PORT_SCAN and scan.sources == ["10.0.0.70"]
    assert scan.anomaly_count == 80  # its probes and the host's answers to them
    assert flood_incident.sources == ["10.0.0.68"] and flood_incident.evidence["affected"] == 0


def test_two_clients_flooding_a_host_equally_the_first_seen_takes_a_quiet_clients_anomalies():
    # A tie for "the host's attacker" was decided by the iteration order of a set of addresses,
    # which changes with the names and with Python's hash seed. Several pairs of names: the old
    # order gave the quiet client's anomalies to the second attacker for about half of them.
    pairs = [(f"10.0.{k}.7", f"10.0.{k}.3") for k in range(4)] + [
        (f"10.0.{k}.3", f"10.0.{k}.7") for k in range(4)
    ]
    for k, (first, second) in enumerate(pairs):
        sensor = Sensor.objects.create(name=f"tie{k}")
        packets = []
        for i in range(150):  # the same number of anomalies each, to two services of the host
            packets.append((first, VICTIM, 40_000 + i, 8080, 6, SYN, 0))
            packets.append((second, VICTIM, 40_000 + i, 8081, 6, SYN, 0))
        packets += [(CLIENT, VICTIM, 50_000 + i, 443, 6, PSH_ACK, 300) for i in range(3)]
        _save(sensor, packets, 1, T0)
        by_entity = {i.entity: i for i in Incident.objects.filter(sensor=sensor)}
        assert set(by_entity) == {f"host {first}", f"host {second}"}, (first, second)
        affected = {e: i.evidence["affected"] for e, i in by_entity.items()}
        assert affected == {f"host {first}": 3, f"host {second}": 0}, (first, second)


def test_port_unreachables_answering_a_udp_scan_join_the_scan_not_an_icmp_flood_of_the_host():
    sensor = Sensor.objects.create(name="inc")
    _save(sensor, _udp_scan("10.0.0.70", range(1, 41), answered=False), 1, T0)
    scan = Incident.objects.get()
    # the next read: an ICMP flood of the same host, and the host's late answers to the probes
    echo = [("10.0.0.72", VICTIM, ECHO, 0, 1, 0, 56) for _ in range(100)]
    replies = [(VICTIM, "10.0.0.72", 0, 0, 1, 0, 56) for _ in range(100)]
    answers = [(VICTIM, "10.0.0.70", UNREACHABLE, 3, 1, 0, 28) for _ in range(40)]
    _save(sensor, echo[:50] + answers + replies + echo[50:], 1_000, T0 + 1)
    scan.refresh_from_db()
    flood = Incident.objects.get(entity="host 10.0.0.72")
    assert flood.kind == IncidentKind.ICMP_FLOOD and flood.sources == ["10.0.0.72"]
    assert flood.anomaly_count == 200 and flood.evidence["affected"] == 0
    assert scan.anomaly_count == 80 and scan.kind == IncidentKind.PORT_SCAN
    assert Incident.objects.count() == 2


def test_an_incident_is_explained_by_its_own_anomalies_not_by_other_clients_joined_to_it():
    sensor = Sensor.objects.create(name="inc")
    flood = [("10.0.0.66", VICTIM, 1024 + i, 8080, 6, SYN, 0) for i in range(300)]
    benign = [(CLIENT, VICTIM, 50_000 + i, 8080, 6, PSH_ACK, 300) for i in range(8)]
    _save(sensor, flood + benign, 1, T0)  # scores rise with the packet: the joined ones score highest
    incident = Incident.objects.get()
    assert incident.evidence["affected"] == 8
    assert incident.explanation == "reason 300"  # the flood's own highest-scoring anomaly
    assert incident.peak_score == pytest.approx(1.0 + 299 / 307)
    assert Anomaly.objects.filter(packet_seq=300, incident=incident).exists()  # stored, with its reason


def test_a_new_busy_client_of_a_service_under_attack_opens_its_own_incident():
    sensor = Sensor.objects.create(name="inc")
    _save(sensor, [("10.0.0.66", VICTIM, 1024 + i, 8080, 6, SYN, 0) for i in range(300)], 1, T0)
    requests = [("10.0.0.70", VICTIM, 50_000 + i, 8080, 6, PSH_ACK, 300) for i in range(50)]
    _save(sensor, requests, 1_000, T0 + 3)  # the SYN flood is not in this read; its incident is active
    assert sorted(i.entity for i in Incident.objects.opened()) == ["host 10.0.0.66", "host 10.0.0.70"]


def test_quiet_clients_anomalies_led_by_the_services_statistics_do_not_open_incidents_of_their_own():
    # a flood that is not flagged itself yet makes the service's rate abnormal for everyone
    sensor = Sensor.objects.create(name="inc")
    clients = ["10.0.0.15", "10.0.0.16", "10.0.0.17"]
    packets = [(c, VICTIM, 40_000 + i, 5353, 17, 0, 40) for c in clients for i in range(12)]
    batch, scored = _read(packets, 1, T0, step=0.01, top=("service_pkts_per_s", "client_pkts_per_s"))
    anomalies.save_anomalies(sensor, batch, scored)
    assert Incident.objects.opened().count() == 0
    candidate = Incident.objects.get()
    assert candidate.entity == f"service {VICTIM}:5353/udp" and candidate.anomaly_count == 36
    # the same anomalies led by each client's own statistics: the three attack the service together
    batch, scored = _read(packets, 1_000, T0 + 700, step=0.01, top=("client_pkts_per_s",))
    anomalies.save_anomalies(sensor, batch, scored)
    opened = Incident.objects.opened().get()
    assert (opened.entity, sorted(opened.sources)) == (f"service {VICTIM}:5353/udp", clients)
    assert opened.pk != candidate.pk  # the candidate was quiet for longer than RECUR


def test_a_server_answering_a_download_is_not_the_client_of_its_own_service():
    sensor = Sensor.objects.create(name="inc")
    packets = [(CLIENT, VICTIM, 56_275, 8081, 6, PSH_ACK, 80) for _ in range(3)]
    packets += [(VICTIM, CLIENT, 8081, 56_275, 6, PSH_ACK, 1400) for _ in range(20)]  # the server sends more
    _save(sensor, packets, 1, T0)
    assert [i.entity for i in Incident.objects.all()] == [f"host {CLIENT}"]
    assert Incident.objects.get().targets == [f"{VICTIM}:8081/tcp"]


def test_a_distributed_request_flood_is_one_incident_of_the_service_with_its_attackers_as_sources():
    sensor = Sensor.objects.create(name="inc")
    bots = [f"203.0.113.{i}" for i in range(1, 6)]
    flood = [(b, VICTIM, 40_000 + i, 80, 6, PSH_ACK, 100) for i in range(30) for b in bots]
    _save(sensor, flood, 1, T0, top=("client_pkts_per_s",))
    incident = Incident.objects.opened().get()
    assert incident.entity == f"service {VICTIM}:80/tcp" and sorted(incident.sources) == bots
    assert incident.kind == IncidentKind.REQUEST_FLOOD or incident.kind == IncidentKind.UNUSUAL_TRAFFIC
    # a sixth bot joining later is one more source of the same incident
    more = [(b, VICTIM, 41_000 + i, 80, 6, PSH_ACK, 100) for i in range(30) for b in [*bots, "203.0.113.6"]]
    _save(sensor, more, 1_000, T0 + 3, top=("client_pkts_per_s",))
    assert Incident.objects.opened().count() == 1
    assert "203.0.113.6" in Incident.objects.opened().get().sources


def test_a_second_attacker_joining_an_attack_on_a_service_is_one_more_source():
    sensor = Sensor.objects.create(name="inc")

    def requests(client: str, port: int) -> list[tuple]:  # a connection: its SYN, then its request
        return [(client, VICTIM, port, 80, 6, SYN, 0), (client, VICTIM, port, 80, 6, PSH_ACK, 100)]

    _save(sensor, [p for i in range(25) for p in requests("203.0.113.1", 40_000 + i)], 1, T0)
    assert Incident.objects.opened().get().kind == IncidentKind.REQUEST_FLOOD
    pair = ("203.0.113.1", "203.0.113.2")
    both = [p for i in range(20) for b in pair for p in requests(b, 41_000 + i)]
    _save(sensor, both, 1_000, T0 + 2)
    incident = Incident.objects.opened().get()
    assert incident.sources == list(pair)


def test_bots_attacking_a_service_whose_previous_attack_is_over_are_one_new_incident():
    sensor = Sensor.objects.create(name="inc")
    _save(sensor, [("10.0.0.66", VICTIM, 1024 + i, 80, 6, SYN, 0) for i in range(300)], 1, T0)
    bots = [f"203.0.113.{i}" for i in range(1, 6)]
    flood = [(b, VICTIM, 40_000 + i, 80, 6, PSH_ACK, 100) for i in range(30) for b in bots]
    _save(sensor, flood, 1_000, T0 + 20)  # the SYN flood's incident is still active, its attacker gone
    entities = sorted(i.entity for i in Incident.objects.opened())
    assert entities == ["host 10.0.0.66", f"service {VICTIM}:80/tcp"]
    assert sorted(Incident.objects.get(entity=f"service {VICTIM}:80/tcp").sources) == bots


def test_joined_anomalies_trickling_in_do_not_keep_an_attack_going():
    sensor = Sensor.objects.create(name="inc")
    _save(sensor, [("10.0.0.66", VICTIM, 1024 + i, 8080, 6, SYN, 0) for i in range(300)], 1, T0)
    flood = Incident.objects.opened().get()
    end = flood.last_seen
    for n, t in enumerate(range(30, 300, 30)):  # a benign client's odd packet to the service now and then
        _save(sensor, [(CLIENT, VICTIM, 50_000 + n, 8080, 6, PSH_ACK, 300)], 1_000 + n, T0 + t)
    flood.refresh_from_db()
    assert flood.last_seen == end  # it ended when its attacker stopped


def test_evidence_of_a_read_counted_at_once_is_what_one_anomaly_after_the_other_gives(monkeypatch):
    """``_add_evidence`` counts each column at once and visits each distinct value once: the same
    counters (and the same key order), sources, targets and overflow counts as adding the
    anomalies one by one, with the bounds reached on the way."""
    bounds = {"SOURCES_KEPT": 3, "TARGETS_KEPT": 4, "EVIDENCE_PORTS": 5, "EVIDENCE_HOSTS": 3}
    for name, bound in bounds.items():
        monkeypatch.setattr(incidents, name, bound)
    rng = np.random.default_rng(7)
    packets = []
    for _ in range(400):
        src, dst = f"10.0.0.{rng.integers(1, 8)}", f"10.0.1.{rng.integers(1, 6)}"
        proto = int(rng.choice([6, 17, 1, 0]))
        flags = int(rng.choice([SYN, SYN_ACK, RST_ACK, PSH_ACK])) if proto == 6 else 0
        packets.append((src, dst, 40000 + int(rng.integers(0, 3)), int(rng.integers(20, 30)), proto, flags,
                        int(rng.choice([0, 0, 12, 700]))))  # fmt: skip
    batch, scored = _read(packets, 1, T0)
    tops = [("src_distinct_ports", "flag_syn", "iat_mean"), ("bytes_per_s", "syn_share"), ("ttl",)]
    scored.top_features = [tops[i % 3] for i in range(len(packets))]
    flagged = batch.records
    read = incidents.read_anomalies(flagged, PacketColumns.of(flagged), scored.scores,
                                    scored.top_features, 0.5)  # fmt: skip
    rows = [k for k in rng.permutation(len(packets)).tolist() if k % 5]  # not in row order, with gaps
    at_once, one_by_one = (Incident(sources=[], targets=[]) for _ in range(2))
    evidence_at_once, evidence_one_by_one = incidents.Evidence(), incidents.Evidence()

    incidents._add_evidence(at_once, evidence_at_once, read, rows)
    for k in rows:
        incidents._add_evidence(one_by_one, evidence_one_by_one, read, [k])

    assert json.dumps(evidence_at_once.dumps()) == json.dumps(evidence_one_by_one.dumps())  # key order too
    assert (at_once.sources, at_once.targets, at_once.targets_more) == (
        one_by_one.sources, one_by_one.targets, one_by_one.targets_more,
    )  # fmt: skip
    assert len(at_once.sources) == 3 and len(at_once.targets) == 4 and at_once.targets_more > 0
    assert len(evidence_at_once.port_hits) == 5 and len(evidence_at_once.hosts) == 3
    # ports are those of TCP and UDP anomalies (ICMP and frames without IP have none)
    assert set(evidence_at_once.client_ports) <= {read.client_port[k] for k in rows} - {None}
    assert set(evidence_at_once.port_hits) <= {read.port[k] for k in rows} - {None}


def test_anomalies_by_service_and_client_are_what_one_anomaly_after_the_other_gives():
    """``_by_service_and_client`` works per distinct (client, target) pair; its dicts must be what
    filling them anomaly by anomaly gives, in the same key order (the order of first sight decides
    ties between equally busy clients) and with ascending indexes."""
    rng = np.random.default_rng(3)
    n = 500
    clients = [None, "10.0.0.1", "10.0.0.2", "10.0.0.3", "203.0.113.9"]
    targets = [None, "10.0.1.1", "10.0.1.1:80/tcp", "10.0.1.2:22/tcp", "10.0.1.3:53/udp"]
    client = [clients[i] for i in rng.integers(0, len(clients), n)]
    target = [targets[i] for i in rng.integers(0, len(targets), n)]
    led = rng.random(n) < 0.3
    read = incidents.ReadAnomalies(
        client=client, target=target, host=[None] * n, port=[None] * n, client_port=[None] * n,
        request=[True] * n, protocol=["TCP"] * n, syn_only=[False] * n, icmp_request=[False] * n,
        payload=[0] * n, length=[60] * n, ts=[T0] * n, scores=np.ones(n), families=[()] * n, threshold=0.5,
    )  # fmt: skip
    by_service, by_client, own = {}, {}, {}
    for k, (c, t) in enumerate(zip(client, target, strict=True)):
        by_service.setdefault(t, {}).setdefault(c, []).append(k)
        by_client.setdefault(c, []).append(k)
    own = {c: [k for k in rows if not led[k]] for c, rows in by_client.items()}

    got = incidents._by_service_and_client(read, led)

    assert [(t, list(cs.items())) for t, cs in got[0].items()] == [
        (t, list(cs.items())) for t, cs in by_service.items()
    ]
    assert list(got[1].items()) == list(by_client.items())
    assert list(got[2].items()) == list(own.items())


def _store_and_save_normal_without_service(
    sensor: Sensor, packets: list, first_seq: int, t: float, normal, led=lambda seq: False
):
    """``_store_and_save``, the model saying of each flagged packet (``normal(seq)``) whether it is
    at or under the threshold with its service's statistics normal (``without_service``), and
    leading its explanation with the service's rate where ``led(seq)``."""
    batch, scored = _read(packets, first_seq, t)
    seqs = batch.records["seq"][scored.flagged]
    scored.top_features = [
        ("service_pkts_per_s", "flow_pkts_per_s") if led(seq) else ("client_pkts_per_s", "flow_pkts_per_s")
        for seq in seqs.tolist()
    ]
    scored.without_service = lambda positions: np.array(
        [0.0 if normal(int(seq)) else 9.0 for seq in seqs[positions].tolist()]
    )
    with transaction.atomic():
        storage.store_batch(sensor, batch, f"{first_seq}-0", anomaly_scores=scored.anomaly_scores())
        return anomalies.save_anomalies(sensor, batch, scored)


def test_other_clients_packets_abnormal_only_through_the_attacked_services_statistics_are_its_effect(api):
    sensor = Sensor.objects.create(name="inc")
    flood = [("10.0.0.66", VICTIM, 1024 + i, 8080, 6, SYN, 0) for i in range(300)]
    benign = [(CLIENT, VICTIM, 50_000 + i, 8080, 6, PSH_ACK, 300) for i in range(8)]
    benign += [(VICTIM, CLIENT, 8080, 50_000 + i, 6, PSH_ACK, 900) for i in range(8)]
    other = [("10.0.0.21", VICTIM, 50_000 + i, 8080, 6, PSH_ACK, 300) for i in range(4)]  # abnormal itself
    # the benign client's packets are led by the service's rate; all but the other client's are
    # normal without the service's statistics (the flooder's are never asked)
    saved = _store_and_save_normal_without_service(
        sensor, flood[:150] + benign + other + flood[150:], 1, T0,
        lambda seq: not 167 <= seq <= 170, lambda seq: 151 <= seq <= 166,
    )  # fmt: skip
    incident = Incident.objects.get()
    assert incident.entity == "host 10.0.0.66" and incident.kind == IncidentKind.SYN_FLOOD
    # the benign client's 16: no anomalies, the flood's effect; the other client's 4 joined as before
    assert incident.evidence["effects"] == 16 and incident.evidence["affected"] == 4
    assert incident.anomaly_count == 304 and (saved.count, saved.effects) == (304, 16)
    assert incident.packet_count >= 300 + 4 + 16
    unflagged = Packet.objects.filter(anomaly_score__isnull=True).values_list("seq", flat=True)
    assert sorted(unflagged) == list(range(151, 167))
    assert not Anomaly.objects.filter(packet_seq__in=range(151, 167)).exists()
    shown = api.get(f"/api/incidents/{incident.pk}/").json()
    assert (shown["effects"], shown["affected"], shown["anomaly_count"]) == (16, 4, 304)
    # a later read, the flooder quiet but its incident active: the same; nothing opens, nothing reopens
    incident.status = IncidentStatus.RESOLVED
    incident.save()
    _store_and_save_normal_without_service(sensor, benign, 1_000, T0 + 5, lambda seq: True, lambda seq: True)
    incident.refresh_from_db()
    assert Incident.objects.count() == 1 and incident.status == IncidentStatus.RESOLVED
    assert incident.evidence["effects"] == 32 and incident.anomaly_count == 304
    assert Packet.objects.filter(anomaly_score__isnull=True).count() == 32


def test_a_spoofed_flood_is_nobodys_effect():
    sensor = Sensor.objects.create(name="inc")
    spoofed = [(f"198.51.100.{i + 1}", VICTIM, 40_000 + i, 8080, 6, SYN, 0) for i in range(200)]
    saved = _store_and_save_normal_without_service(sensor, spoofed, 1, T0, lambda seq: True)
    service = Incident.objects.opened().get()
    assert service.entity == f"service {VICTIM}:8080/tcp" and service.anomaly_count == 200
    assert saved.effects == 0 and service.evidence["effects"] == 0
    assert Packet.objects.filter(anomaly_score__isnull=False).count() == 200
