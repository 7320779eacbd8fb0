"""SIEM output: Community IDs of flows, packets, anomalies and incidents (API and filters), their EVE
alert lines (Suricata's schema), and the live sinks: a file, and real UDP and TCP syslog receivers."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime

import jsonschema
import pytest
from django.core.exceptions import ImproperlyConfigured

from capture.choices import IncidentKind
from capture.models import Flow, Sensor
from capture.records import Batch, encode_batch, stream_key
from detection import eve, ingest, scoring, siem
from detection.models import Anomaly, Incident
from netmon.settings import _syslog_address
from tests.capture.test_community_id import package_value
from tests.detection.test_incidents import SYN, SYN_ACK, T0, VICTIM, _read, _store_and_save

pytestmark = pytest.mark.django_db

ATTACKER = "10.0.0.66"
# The first packet is the victim's answer: the incident's flow is turned so its source is the attacker.
FLOOD = [(VICTIM, ATTACKER, 8080, 1024, 6, SYN_ACK, 0)] + [
    (ATTACKER, VICTIM, 1024 + i, 8080, 6, SYN, 0) for i in range(60)
]
FLOW_ID = package_value(6, ATTACKER, VICTIM, 1024, 8080)

# Suricata's etc/schema.json (OISF/suricata), the parts an alert line uses: its top level is closed
# (additionalProperties false) to Suricata's own keys, so our vendor object "netmon" is declared here.
SURICATA_ALERT_SCHEMA = {
    "type": "object",
    "required": ["timestamp", "event_type"],
    "properties": {
        "timestamp": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+[+\-]\d+$"},
        "flow_id": {"type": "integer"},
        "event_type": {"type": "string"},
        "src_ip": {"type": "string"},
        "src_port": {"type": "integer"},
        "dest_ip": {"type": "string"},
        "dest_port": {"type": "integer"},
        "proto": {"type": "string"},
        "community_id": {"type": "string"},
        "icmp_type": {"type": "integer"},
        "icmp_code": {"type": "integer"},
        "alert": {
            "type": "object",
            "properties": {
                "action": {"type": "string"}, "category": {"type": "string"}, "gid": {"type": "integer"},
                "rev": {"type": "integer"}, "severity": {"type": "integer"}, "signature": {"type": "string"},
                "signature_id": {"type": "integer"},
            },
            "additionalProperties": False,
        },
        "netmon": {"type": "object"},
    },
    "additionalProperties": False,
}  # fmt: skip


@pytest.fixture
def flood():
    """A SYN flood read stored as the worker stores it: one opened incident."""
    sensor = Sensor.objects.create(name="inc")
    saved = _store_and_save(sensor, FLOOD, 1, T0)
    assert saved.opened
    return saved


@pytest.fixture
def sinks(settings, redis_client):
    """Sinks configured by the test (settings), a fresh writer, and its counters in a clean Redis."""
    settings.NETMON_EVE_LOG, settings.NETMON_SYSLOG = "", None
    siem.reset()
    yield settings
    siem.reset()


def counters(redis_client) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in redis_client.hgetall(siem.COUNTERS_KEY).items()}


def test_flows_anomalies_and_the_incident_carry_their_flows_community_id(flood):
    assert {f.community_id for f in Flow.objects.filter(src_port=1024)} == {FLOW_ID}
    assert Flow.objects.get(src_ip=VICTIM).community_id == FLOW_ID  # the answer's direction: the same
    for a in Anomaly.objects.all():
        assert a.community_id == package_value(6, a.src_ip, a.dst_ip, a.src_port, a.dst_port)
    incident = Incident.objects.get()
    assert incident.community_id == FLOW_ID  # its first anomaly's flow


def test_the_api_shows_community_ids_and_filters_by_them(api, flood):
    def get(path: str, **query) -> dict:
        response = api.get(path, query)
        assert response.status_code == 200, response.content
        return response.json()

    flows = get("/api/flows/", community_id=FLOW_ID)["results"]
    assert len(flows) == 2 and {f["community_id"] for f in flows} == {FLOW_ID}  # both directions
    packets = get("/api/packets/", community_id=FLOW_ID)["results"]
    assert sorted(p["seq"] for p in packets) == [1, 2] and {p["community_id"] for p in packets} == {FLOW_ID}
    assert get("/api/packets/", seq_from=3, seq_to=3)["results"][0]["community_id"] == package_value(
        6, ATTACKER, VICTIM, 1025, 8080
    )
    anomalies = get("/api/anomalies/", community_id=FLOW_ID)["results"]
    assert [a["packet_seq"] for a in anomalies] == [1]
    incident = Incident.objects.get()
    assert [i["id"] for i in get("/api/incidents/", community_id=FLOW_ID)["results"]] == [incident.pk]
    assert get(f"/api/incidents/{incident.pk}/")["community_id"] == FLOW_ID
    # another flow of the incident finds it through its anomalies
    other = Anomaly.objects.exclude(community_id=FLOW_ID).first().community_id
    assert [i["id"] for i in get("/api/incidents/", community_id=other)["results"]] == [incident.pk]
    assert get("/api/flows/", community_id="1:" + "A" * 27 + "=")["count"] == 0


def test_a_plus_sent_unencoded_is_read_back_and_other_values_are_refused(api):
    sensor = Sensor.objects.create(name="s")
    Flow.objects.create(
        sensor=sensor, protocol="TCP", src_ip="128.232.110.120", src_port=34855, dst_ip="66.35.250.204",
        dst_port=80, first_seen="2026-01-01T00:00:00Z", last_seen="2026-01-01T00:00:00Z",
        community_id="1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
    )  # fmt: skip
    found = api.get("/api/flows/?community_id=1:LQU9qZlK+B5F3KDmev6m5PMibrg=")  # the + arrives as a space
    assert found.status_code == 200 and found.json()["count"] == 1
    for path in ("/api/flows/", "/api/packets/", "/api/anomalies/", "/api/incidents/"):
        refused = api.get(path, {"community_id": "LQU9qZlK"})
        assert refused.status_code == 400, path
        assert "Community ID v1" in str(refused.json()["community_id"])


def test_an_incidents_eve_line_follows_suricatas_schema(flood):
    incident = eve.with_flows(Incident.objects.all()).get()
    event = json.loads(eve.line(eve.incident_event(incident, eve.incident_flow(incident), "incident_opened")))
    jsonschema.validate(event, SURICATA_ALERT_SCHEMA)
    assert event["event_type"] == "alert" and event["timestamp"].endswith("+0000")
    assert (event["src_ip"], event["src_port"], event["dest_ip"], event["dest_port"], event["proto"]) == (
        ATTACKER, 1024, VICTIM, 8080, "TCP",
    )  # fmt: skip
    assert event["community_id"] == FLOW_ID and event["flow_id"] == eve.flow_id(FLOW_ID) < 2**53
    assert incident.kind == IncidentKind.SYN_FLOOD
    assert event["alert"] == {
        "action": "allowed", "gid": 1, "signature_id": 9_100_003, "rev": 1, "signature": "NETMON SYN flood",
        "category": "Detection of a Denial of Service Attack", "severity": eve.SEVERITY[incident.severity],
    }  # fmt: skip
    netmon = event["netmon"]
    assert (netmon["event"], netmon["incident_id"]) == ("incident_opened", incident.pk)
    assert netmon["kind"] == "syn_flood"
    assert netmon["score"] == incident.peak_score and netmon["explanation"] == incident.explanation
    assert netmon["sources"] == [ATTACKER] and netmon["url"] == f"/incidents/{incident.pk}/"


def test_every_kind_has_its_own_stable_signature_id():
    assert set(eve.SIGNATURES) == set(IncidentKind.values)
    sids = [s.sid for s in eve.SIGNATURES.values()] + [eve.ANOMALY_SIGNATURE.sid]
    assert len(set(sids)) == len(sids)
    # Published in the README: a kind never changes its number.
    assert {k: s.sid for k, s in eve.SIGNATURES.items()} == {
        "port_scan": 9100001, "horizontal_scan": 9100002, "syn_flood": 9100003, "udp_flood": 9100004,
        "icmp_flood": 9100005, "brute_force": 9100006, "request_flood": 9100007, "slow_connections": 9100008,
        "large_transfer": 9100009, "new_service": 9100010, "unusual_traffic": 9100011,
    }  # fmt: skip


def test_an_icmp_anomaly_line_has_type_and_code_instead_of_ports():
    sensor = Sensor.objects.create(name="icmp")
    anomaly = Anomaly(
        sensor=sensor, packet_seq=1, ts=datetime(2026, 1, 1, tzinfo=UTC), protocol="ICMP", src_ip="10.0.0.1",
        dst_ip="10.0.0.2", src_port=8, dst_port=0, score=float("nan"), threshold=0.5, model_kind="m",
        explanation="x", community_id=package_value(1, "10.0.0.1", "10.0.0.2", 8, 0),
    )  # fmt: skip
    event = json.loads(eve.line(eve.anomaly_event(anomaly, "icmp")))
    jsonschema.validate(event, SURICATA_ALERT_SCHEMA)
    assert (event["icmp_type"], event["icmp_code"], event["proto"]) == (8, 0, "ICMP")
    assert "src_port" not in event and event["netmon"]["score"] is None  # NaN: JSON has no spelling for it


def test_the_file_sink_appends_each_incidents_line(flood, sinks, tmp_path, redis_client):
    path = tmp_path / "eve.json"
    sinks.NETMON_EVE_LOG = str(path)
    siem.reset()
    siem.emit(flood)
    assert siem.flush()
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["netmon"]["event"] == "incident_opened" and event["community_id"] == FLOW_ID
    assert counters(redis_client) == {"file:written": 1}


def test_with_eve_anomalies_the_reads_top_anomalies_follow_its_incidents(flood, sinks, tmp_path):
    sinks.NETMON_EVE_LOG, sinks.NETMON_EVE_ANOMALIES = str(tmp_path / "eve.json"), True
    siem.reset()
    siem.emit(flood)
    assert siem.flush()
    events = [json.loads(line) for line in (tmp_path / "eve.json").read_text().splitlines()]
    assert [e["netmon"]["event"] for e in events] == ["incident_opened"] + ["anomaly"] * len(flood.top)
    assert {e["netmon"]["anomaly_id"] for e in events[1:]} == {a.pk for a in flood.top}
    for event in events:
        jsonschema.validate(event, SURICATA_ALERT_SCHEMA)


def test_an_unwritable_file_is_counted_never_raised_and_shown_in_metrics(flood, sinks, tmp_path, redis_client,
                                                                          client, staff):  # fmt: skip
    sinks.NETMON_EVE_LOG = str(tmp_path)  # a directory: cannot be opened for appending
    siem.reset()
    siem.emit(flood)
    assert siem.flush()
    assert counters(redis_client) == {"file:failed": 1}
    client.force_login(staff)
    text = client.get("/metrics").content.decode()
    assert 'netmon_siem_lines_total{outcome="failed",sink="file"} 1.0' in text


SYSLOG = re.compile(r"^<(\d+)>1 (\S+Z) (\S+) netmon (\d+) eve - (.*)$", re.S)


def check_syslog_message(message: bytes, incident: Incident) -> None:
    """An RFC 5424 message: PRI (facility local5, the severity's level), version 1, timestamp, host,
    app, pid, msgid, no structured data, and the EVE line."""
    match = SYSLOG.match(message.decode())
    assert match, message
    assert int(match[1]) == 21 * 8 + siem.SYSLOG_SEVERITY[incident.severity]
    event = json.loads(match[5])
    assert event["community_id"] == FLOW_ID and event["netmon"]["incident_id"] == incident.pk


def test_a_real_udp_syslog_receiver_gets_rfc5424_messages(flood, sinks, redis_client):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        sinks.NETMON_SYSLOG = ("udp", "127.0.0.1", receiver.getsockname()[1])
        siem.reset()
        siem.emit(flood)
        message, _ = receiver.recvfrom(65535)
    check_syslog_message(message, Incident.objects.get())
    assert siem.flush() and counters(redis_client) == {"syslog-udp:written": 1}


def test_a_real_tcp_syslog_receiver_gets_octet_counted_messages(flood, sinks, redis_client):
    received = bytearray()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(5)

        def accept() -> None:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(5)
                while not (m := re.match(rb"(\d+) ", received)) or len(received) < m.end() + int(m[1]):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    received.extend(chunk)

        thread = threading.Thread(target=accept)
        thread.start()
        sinks.NETMON_SYSLOG = ("tcp", "127.0.0.1", server.getsockname()[1])
        siem.reset()
        siem.emit(flood)
        thread.join(10)
    length, _, message = bytes(received).partition(b" ")
    assert int(length) == len(message)  # RFC 6587 octet counting: exactly one message
    check_syslog_message(message, Incident.objects.get())
    assert siem.flush() and counters(redis_client) == {"syslog-tcp:written": 1}


def test_an_unreachable_tcp_receiver_is_counted_and_ingest_goes_on(flood, sinks, redis_client):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        sinks.NETMON_SYSLOG = ("tcp", "127.0.0.1", port)
        siem.reset()
        siem.emit(flood)
        siem.emit(flood)  # within the back-off: not even tried, counted all the same
        assert siem.flush()
    assert counters(redis_client) == {"syslog-tcp:failed": 2}


@pytest.mark.django_db(transaction=True)
def test_the_worker_writes_the_lines_of_the_incidents_a_read_opens(
    sinks, tmp_path, redis_client, monkeypatch
):
    # The real drain (Redis stream, transaction, acknowledgement), with a model that flags every packet.
    batch, scored = _read(FLOOD, 1, T0)
    monkeypatch.setattr(scoring, "score_batch", lambda sensor, merged, state: scored)
    sinks.NETMON_EVE_LOG = str(tmp_path / "eve.json")
    siem.reset()
    redis_client.xadd(stream_key("inc"), encode_batch(Batch(sensor="inc", records=batch.records)))

    ingest.drain_sensor("inc", redis_client)

    assert siem.flush()
    (line,) = (tmp_path / "eve.json").read_text().splitlines()
    assert json.loads(line)["netmon"]["incident_id"] == Incident.objects.get().pk


@pytest.mark.parametrize(
    "raw", ["514", "udp://collector", "http://collector:514", "udp://collector:99999", "tcp://:514",
            "udp://collector:514/path", "tcp://collector:port"],
)  # fmt: skip
def test_a_bad_syslog_address_is_refused_naming_the_variable(raw):
    with pytest.raises(ImproperlyConfigured, match=r"NETMON_SYSLOG_ADDR=.*udp://host:port"):
        _syslog_address("NETMON_SYSLOG_ADDR", raw)
    assert _syslog_address("NETMON_SYSLOG_ADDR", "udp://[::1]:514") == ("udp", "::1", 514)


def test_the_server_does_not_start_with_a_bad_syslog_address():
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "NETMON_SYSLOG_ADDR": "syslog.example:514"},
    )  # fmt: skip
    assert result.returncode != 0
    assert "NETMON_SYSLOG_ADDR='syslog.example:514'" in result.stderr


def test_no_sink_configured_costs_nothing(flood, sinks, django_assert_num_queries):
    with django_assert_num_queries(0):
        siem.emit(flood)
    assert siem.writer() is None
