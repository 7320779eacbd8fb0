"""An incident's kind is named from its anomalies' evidence: one synthetic case per kind, then the
demo's labeled attacks through the worker with a trained model."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from capture.choices import IncidentKind, IncidentSeverity
from capture.demo import DemoTraffic
from capture.models import Flow, Packet
from capture.pcapwriter import write_pcap
from capture.records import ip_texts, ip_to_text
from detection import incidents, ingest, ml, scoring
from detection.features import FeatureExtractor
from detection.models import Incident
from tests.detection.test_detection_pipeline import publish_in_batches
from tests.detection.trained import trained_with

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _kind_of(rows: list[dict]) -> str:
    """The kind of an incident of ``rows`` (protocol, dst, dport, syn, payload, length, features)."""
    n = len(rows)
    protocol = [r.get("protocol", "TCP") for r in rows]
    hosts = [r.get("dst", "10.0.0.5") for r in rows]
    ports = [r.get("dport", 80) if p in ("TCP", "UDP") else None for r, p in zip(rows, protocol, strict=True)]
    read = incidents.ReadAnomalies(
        client=["203.0.113.9"] * n,
        target=[
            h if p is None else f"{h}:{p}/{pr.lower()}"
            for h, p, pr in zip(hosts, ports, protocol, strict=True)
        ],
        host=hosts,
        port=ports,
        client_port=[None if p is None else r.get("sport", 50_000) for r, p in zip(rows, ports, strict=True)],
        request=[True] * n,
        protocol=protocol,
        syn_only=[r.get("syn", False) for r in rows],
        icmp_request=[r.get("protocol", "TCP") == "ICMP" and not r.get("icmp_error") for r in rows],
        payload=[r.get("payload", 0) for r in rows],
        length=[r.get("length", 60) for r in rows],
        ts=[T0.timestamp() + i * 0.01 for i in range(n)],
        scores=np.full(n, 1.0),
        families=incidents._families([tuple(r.get("features", ["length"])) for r in rows])[0],
        threshold=0.5,
        texts=dict.fromkeys(range(n), "why"),
    )
    incident = Incident(src_ip="203.0.113.9", targets=[], first_seen=T0, last_seen=T0)
    incidents._grow(
        incident, incidents.Evidence(), read, incidents._Group("host 203.0.113.9", list(range(n)))
    )
    return incident.kind


SPREAD = ["client_distinct_dports", "chan_distinct_dports", "client_pkts_per_s"]
RATE = ["service_pkts_per_s", "service_syn_per_s", "client_pkts_per_s"]

CASES = {
    IncidentKind.PORT_SCAN: [{"dport": p, "syn": True, "features": SPREAD} for p in range(1, 200)],
    IncidentKind.HORIZONTAL_SCAN: [
        {"dst": f"10.0.1.{h}", "dport": 445, "syn": True, "features": SPREAD} for h in range(1, 60)
    ],
    IncidentKind.SYN_FLOOD: [{"dport": 80, "syn": True, "features": RATE} for _ in range(300)],
    IncidentKind.UDP_FLOOD: [
        {"protocol": "UDP", "dport": 9999, "payload": 1372, "length": 1400, "features": RATE}
        for _ in range(300)
    ],
    IncidentKind.ICMP_FLOOD: [{"protocol": "ICMP", "dport": 0, "features": RATE} for _ in range(300)],
    IncidentKind.REQUEST_FLOOD: [
        {"dport": 8080, "syn": i % 5 == 0, "payload": 200 if i % 5 == 2 else 0, "features": RATE}
        for i in range(300)
    ],
    IncidentKind.BRUTE_FORCE: [
        {"dport": 22, "syn": i % 6 == 0, "payload": 80 if i % 6 == 3 else 0, "features": RATE}
        for i in range(120)
    ],
    IncidentKind.SLOW_CONNECTIONS: [
        {
            "dport": 80,
            "syn": i % 3 == 0,
            "payload": 0,
            "features": ["client_iat_mean", "chan_jitter_mean_l1", "flow_pkts_per_s"],
        }
        for i in range(60)
    ],
    IncidentKind.LARGE_TRANSFER: [
        {
            "dport": 31337,
            "payload": 1400,
            "length": 1514,
            "features": ["chan_bytes_per_s", "client_size_mean", "flow_bytes_per_s"],
        }
        for _ in range(200)
    ],
    IncidentKind.NEW_SERVICE: [
        {"dport": 6667, "payload": 40, "features": ["dport_registered", "proto_tcp", "ttl"]} for _ in range(3)
    ],
    IncidentKind.UNUSUAL_TRAFFIC: [
        {"dport": 443, "payload": 300, "features": ["client_pkts_per_s", "chan_pkts_per_s"]} for _ in range(3)
    ],
}


@pytest.mark.parametrize("kind", list(CASES), ids=list(CASES))
def test_each_kind_is_named_from_its_evidence(kind):
    assert _kind_of(CASES[kind]) == kind


def test_empty_udp_probes_to_many_ports_are_a_port_scan_not_a_flood():
    probes = [{"protocol": "UDP", "dport": p, "length": 42, "features": SPREAD} for p in range(1, 300)]
    assert _kind_of(probes) == IncidentKind.PORT_SCAN


def test_a_udp_flooders_kernel_answering_the_victims_replies_does_not_make_it_an_icmp_flood():
    # hping3 listens on none of its source ports: each reply of the flooded service gets an ICMP
    # port unreachable from the flooder, as many as its UDP packets
    rows = [{"protocol": "UDP", "dport": 5353, "payload": 120, "length": 162} for _ in range(300)]
    rows += [{"protocol": "ICMP", "icmp_error": True, "length": 190} for _ in range(300)]
    assert _kind_of(rows) == IncidentKind.UDP_FLOOD


def test_held_open_connections_are_slow_connections_without_their_syns_and_whole_first_requests():
    # slowloris: each connection sends its request line and headers (200 B), then a header line
    # (12 B) now and then; its connection attempts were not among the anomalies (cold, or in an
    # earlier read). The client's mean segment (75 B) looked like requests, and without the
    # SYNs nothing counted its 60 connections: it was named unusual_traffic.
    rows = []
    for c in range(60):
        rows.append({"dport": 8081, "sport": 40_000 + c, "payload": 200, "features": SPREAD})
        rows += [{"dport": 8081, "sport": 40_000 + c, "payload": 12, "features": SPREAD} for _ in range(2)]
        rows.append({"dport": 8081, "sport": 40_000 + c, "payload": 0, "features": SPREAD})  # an ACK
    assert _kind_of(rows) == IncidentKind.SLOW_CONNECTIONS
    # the same connections each sending whole requests are a request flood
    flood = [{**r, "payload": 120} if r["payload"] else r for r in rows]
    assert _kind_of(flood) == IncidentKind.REQUEST_FLOOD


def test_held_connections_are_spread_evidence():
    # a client holding hundreds of connections open to one service spreads over connections, as
    # distinct client ports do; not "identity" (what the traffic is), which names a new service
    assert incidents.feature_family("client_open_conns") == "spread"
    rows = [{"dport": 8081, "sport": 40_000 + c % 300, "payload": 18, "features": [
        "client_open_conns", "client_distinct_sports", "client_iat_mean"]} for c in range(600)]  # fmt: skip
    assert _kind_of(rows) == IncidentKind.SLOW_CONNECTIONS


def test_every_kind_has_a_case():
    assert set(CASES) == set(IncidentKind.values)


def test_severity_follows_the_peak_over_the_threshold_and_the_kind():
    assert incidents.incident_severity(IncidentKind.PORT_SCAN, 0.55, 0.5) == IncidentSeverity.LOW
    assert incidents.incident_severity(IncidentKind.PORT_SCAN, 0.6, 0.5) == IncidentSeverity.MEDIUM
    assert incidents.incident_severity(IncidentKind.PORT_SCAN, 0.8, 0.5) == IncidentSeverity.HIGH
    assert incidents.incident_severity(IncidentKind.SYN_FLOOD, 0.6, 0.5) == IncidentSeverity.HIGH
    assert incidents.incident_severity(IncidentKind.UNUSUAL_TRAFFIC, 5.0, 0.5) == IncidentSeverity.MEDIUM


def test_the_kind_is_decided_again_as_evidence_grows():
    first = CASES[IncidentKind.PORT_SCAN][:5]  # five probes: not a scan yet
    assert _kind_of(first) != IncidentKind.PORT_SCAN
    assert _kind_of(CASES[IncidentKind.PORT_SCAN]) == IncidentKind.PORT_SCAN


@pytest.fixture
def trained(tmp_path, settings, redis_client):
    settings.NETMON_MODEL_DIR = tmp_path / "models"

    def benign():
        path = tmp_path / "benign.pcap"
        write_pcap(path, DemoTraffic(seed=1, attack_prob=0.0).records(30_000))
        return path

    # The autoencoder (the default ml_model): since cold statistics raise nothing, every packet of
    # a spoofed SYN flood (each from a new source) is judged on its service's statistics alone,
    # which the isolation forest alone does not flag (README, Detection: cold start). Trained once
    # for the tests of this process (tests/detection/trained.py).
    return trained_with(("--model", "autoencoder", "--feature-level", "standard"), benign)


def _demo_with(attack: str) -> np.ndarray:
    """20,000 packets of the demo network (seed 7) with ``attack`` injected, numbered from 1."""
    traffic = DemoTraffic(seed=7, attack_prob=0.0)
    traffic.inject(attack)
    records = traffic.records(20_000)
    records["seq"] = np.arange(1, len(records) + 1)
    return records


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("attack", "kind"),
    [("port_scan", IncidentKind.PORT_SCAN), ("syn_flood", IncidentKind.SYN_FLOOD),
     ("udp_flood", IncidentKind.UDP_FLOOD), ("http_flood", IncidentKind.REQUEST_FLOOD)],
)  # fmt: skip
def test_the_demo_attackers_incidents_are_named_after_their_attack(trained, redis_client, attack, kind):
    records = _demo_with(attack)
    publish_in_batches(redis_client, "k1", records)

    ingest.drain_sensor("k1", redis_client)

    # the attack's own packets: its UDP, its connection attempts (SYN without ACK); the incidents
    # that name an attacker among their sources (a spoofed flood's is the attacked service's)
    flags = records["tcp_flags"]
    syn_only = (records["proto"] == 6) & (flags & 0x02 != 0) & (flags & 0x10 == 0)
    attacking = (records["label"] > 0) & ((records["proto"] == 17) | syn_only)
    attackers = {ip_to_text(raw, 4) for raw in records["src_ip"][attacking]}
    kinds = [i.kind for i in Incident.objects.opened() if attackers & set(i.sources)]
    assert kinds, f"no incident for the {attack} attackers"
    assert kinds.count(kind) / len(kinds) >= 0.5, (
        attack,
        sorted(set(kinds)),
        [
            (
                i.anomaly_count,
                i.first_seen,
                i.last_seen,
                {k: v for k, v in i.evidence.items() if k != "hosts"},
            )
            for i in Incident.objects.opened()
        ],
    )
    ours = [i for i in Incident.objects.opened() if attackers & set(i.sources)]
    incident = max(ours, key=lambda i: i.anomaly_count)
    assert incident.kind == kind, (attack, incident.kind, incident.evidence)
    if incident.src_ip:  # one attacking host
        assert incident.sources == [incident.src_ip] and incident.targets
    else:  # spoofed sources: the attacked service is the entity, its clients the sources
        assert incident.entity == f"service {incident.targets[0]}" and len(incident.sources) > 1
    assert incident.opened_at is not None and incident.packet_count >= incident.anomaly_count


def _drain_and_collect(redis_client, sensor: str) -> list[dict]:
    """Drain ``sensor`` while listening to the incidents group; the messages the worker sent."""
    return _sent_while(lambda: ingest.drain_sensor(sensor, redis_client))


def _sent_while(action) -> list[dict]:
    """The group messages to the incidents group while ``action()`` runs, each of a batch on its own."""
    import asyncio

    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from capture import events

    layer = get_channel_layer()

    async def listen() -> str:
        channel = await layer.new_channel()
        await layer.group_add(events.GROUP_INCIDENTS, channel)
        return channel

    async def collect(channel: str) -> list[dict]:
        out = []
        while True:  # until nothing more arrives (the worker has published before this runs)
            try:
                out.append(await asyncio.wait_for(layer.receive(channel), 1.0))
            except TimeoutError:
                break
        await layer.group_discard(events.GROUP_INCIDENTS, channel)
        await layer.close_pools()
        return out

    channel = async_to_sync(listen)()
    action()
    sent = async_to_sync(collect)(channel)
    assert len(sent) <= 1  # one group message per read (several incidents: one batch)
    return [m for s in sent for m in (s["messages"] if s["type"] == events.BATCH_TYPE else [s])]


@pytest.mark.django_db(transaction=True)
def test_the_worker_announces_opened_and_grown_incidents_once_per_read(trained, redis_client):
    records = _demo_with("port_scan")
    probes = records["label"] > 0
    cut = int(np.flatnonzero(probes)[probes.sum() // 2])  # the scan goes on across two reads

    publish_in_batches(redis_client, "e1", records[:cut])
    first = _drain_and_collect(redis_client, "e1")
    publish_in_batches(redis_client, "e1", records[cut:])
    second = _drain_and_collect(redis_client, "e1")

    scanner = Incident.objects.order_by("-anomaly_count").first()
    for read in (first, second):  # coalesced: one message per incident per read
        ids = [m["incident"]["id"] for m in read]
        assert len(ids) == len(set(ids))
    opened = {m["incident"]["id"] for m in first if m["type"] == "incident.opened"}
    assert scanner.pk in opened
    grown = [m for m in second if m["incident"]["id"] == scanner.pk]
    assert [m["type"] for m in grown] == ["incident.updated"]
    assert grown[0]["incident"]["anomaly_count"] == scanner.anomaly_count
    assert grown[0]["incident"]["kind"] == scanner.kind
    assert {m["type"] for m in second} <= {"incident.opened", "incident.updated"}


@pytest.mark.django_db(transaction=True)
def test_a_reads_incident_events_are_one_group_message():
    """``incident_opened``/``incident_updated`` of one read go to the group in one send (a round trip
    each was most of a small read's publishing under attack); highest peak first, as before."""
    from capture.models import Sensor
    from detection import live

    sensor = Sensor.objects.create(name="b1")
    made = [
        Incident.objects.create(
            sensor=sensor, entity=f"host 10.0.0.{i}", src_ip=f"10.0.0.{i}", sources=[f"10.0.0.{i}"],
            first_seen=T0, last_seen=T0, opened_at=T0, peak_score=float(i),
        )
        for i in (1, 2, 3)
    ]  # fmt: skip

    sent = _sent_while(lambda: live.broadcast_incidents([made[0].pk, made[2].pk], [made[1].pk]))

    assert [(m["type"], m["incident"]["id"]) for m in sent] == [
        ("incident.opened", made[2].pk), ("incident.updated", made[1].pk), ("incident.opened", made[0].pk),
    ]  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_benign_clients_packets_to_a_flooded_service_are_its_effect_not_anomalies(trained, redis_client):
    """Issue 12: "benign clients' packets to a service under attack join that attack's incident".
    During a SYN flood of the SSH server its statistics are the flood's, and the benign SSH
    sessions' packets carry them: over the threshold with nothing abnormal of their own. They are
    not flagged; the flood's incident counts them (``evidence.effects``, ``packet_count``)."""
    traffic = DemoTraffic(seed=3, attack_prob=0.0)
    traffic.inject("syn_flood")  # from one host (seed 3), to port 22
    records = traffic.records(20_000)
    records["seq"] = np.arange(1, len(records) + 1)
    publish_in_batches(redis_client, "fx", records)

    ingest.drain_sensor("fx", redis_client)

    # what is over the threshold: the worker's code path offline, one feature state throughout
    model = ml.load_model(trained.artifact_path)
    extractor = FeatureExtractor(trained.feature_level)
    over = scoring.score_records(model, extractor, records, extractor.new_state())[1] > model.threshold
    flagged = np.zeros(len(records), bool)
    seqs = Packet.objects.filter(sensor__name="fx", anomaly_score__isnull=False).values_list("seq", flat=True)
    flagged[np.array(list(seqs), dtype=np.int64) - 1] = True
    set_apart = over & ~flagged
    attack = records["label"] > 0
    port = int(np.bincount(records["dport"][attack]).argmax())
    victim = ip_to_text(records["dst_ip"][attack & (records["dport"] == port)][0], 4)
    src = ip_texts(records["src_ip"], records["ip_version"])
    dst = ip_texts(records["dst_ip"], records["ip_version"])
    to_service = np.array(
        [(d == victim and dp == port) or (s == victim and sp == port)
         for s, d, sp, dp in zip(src, dst, records["sport"].tolist(), records["dport"].tolist(), strict=True)]
    )  # fmt: skip
    attackers = set(np.array(src, dtype=object)[attack & (records["dport"] == port)].tolist())
    assert len(attackers) == 1

    # benign clients' packets to the flooded service were over the threshold: set apart, not flagged
    assert set_apart.any()
    assert not (set_apart & attack).any() and not (set_apart & ~to_service).any()
    assert (flagged & ~attack & to_service).sum() < set_apart.sum()
    # ... and counted on the flood's incident, the only one of its attacker
    flood = [i for i in Incident.objects.opened() if attackers & set(i.sources)]
    assert len(flood) == 1 and flood[0].kind == IncidentKind.SYN_FLOOD
    assert sum(i.evidence.get("effects", 0) for i in Incident.objects.all()) == set_apart.sum()
    assert flood[0].evidence["effects"] == set_apart.sum()
    assert flood[0].packet_count >= flood[0].anomaly_count + set_apart.sum()
    # no benign client has an incident of its own
    assert all(set(i.sources) & attackers for i in Incident.objects.opened())


@pytest.mark.django_db(transaction=True)
def test_a_scans_one_packet_probes_are_held_by_its_incident_not_flow_rows(trained, redis_client):
    records = _demo_with("port_scan")
    publish_in_batches(redis_client, "k1", records)

    ingest.drain_sensor("k1", redis_client)

    scan = Incident.objects.opened().get(kind=IncidentKind.PORT_SCAN)
    assert Packet.objects.filter(sensor__name="k1").count() == len(records)  # every packet is stored
    key = ("protocol", "src_ip", "src_port", "dst_ip", "dst_port")
    stored_flows = Flow.objects.filter(sensor__name="k1").values_list(*key, "packets")
    flows = {tuple(row[:5]): row[5] for row in stored_flows}
    per_tuple: dict[tuple, list] = {}
    for *five, score, ts in Packet.objects.filter(sensor__name="k1", ip_version__gt=0).values_list(
        *key, "anomaly_score", "ts"
    ):
        per_tuple.setdefault(tuple(five), []).append((score, ts))
    scanning = {t for t in per_tuple if scan.src_ip in (t[1], t[3])}  # the probes and the replies to them
    assert len(scanning) > 500
    # other traffic keeps a flow row per 5-tuple with all its packets
    for five in per_tuple.keys() - scanning:
        assert flows.get(five) == len(per_tuple[five]), five
    # the scan's: a row with all its packets, or none for a one-packet flow the open incident holds
    held = [five for five in scanning if five not in flows]
    assert len(held) > 0.9 * len(scanning)  # nearly every probe and reply (the code before: none)
    for five in scanning - set(held):
        assert flows[five] == len(per_tuple[five]), five
    for five in held:
        [(score, ts)] = per_tuple[five]
        assert score is not None and scan.first_seen <= ts <= scan.last_seen, five
    assert scan.packet_count >= len(held)


@pytest.mark.django_db(transaction=True)
def test_a_defect_in_filing_anomalies_does_not_stall_the_sensor(trained, redis_client, monkeypatch, caplog):
    records = _demo_with("port_scan")
    publish_in_batches(redis_client, "k1", records)

    def broken(*args, **kwargs):
        raise RuntimeError("a defect in grouping")

    monkeypatch.setattr(incidents, "group_anomalies", broken)  # fault injection: our own code fails
    ingest.drain_sensor("k1", redis_client)

    # every packet stored once, the flagged ones with their scores, no incident; the reads acknowledged
    assert Packet.objects.filter(sensor__name="k1").count() == len(records)
    assert Packet.objects.filter(sensor__name="k1", anomaly_score__isnull=False).count() > 500
    assert not Incident.objects.exists()
    assert "filing the anomalies of packets 1-" in caplog.text
    assert ingest.drain_sensor("k1", redis_client).batches == 0
