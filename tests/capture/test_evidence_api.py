"""The evidence pcap over HTTP: GET /api/packets/pcap and /api/incidents/{id}/pcap, the incident's
"download pcap" flag, the pcap export dataset, and a failing ring in /api/status and /metrics."""

from __future__ import annotations

import base64
import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from django.core.management import call_command
from django.http import StreamingHttpResponse
from prometheus_client.parser import text_string_to_metric_families

from capture import control, evidence
from capture.evidence import EvidenceRing
from capture.models import Packet, Sensor
from capture.pcapio import iter_frame_batches
from capture.pcapwriter import synthetic_records, write_pcap
from capture.records import ip_to_text
from capture.runner import CaptureRunner
from detection.models import Anomaly, Incident
from exports import services as export_services
from exports.models import ExportJob
from tests import processes
from tests.capture.evidence_ring import feed

pytestmark = pytest.mark.django_db

N = 1500
KEY = base64.b64encode(b"k" * 32).decode()


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """Sensor s1's ring holding N synthetic frames numbered 1..N (made once; tests that change it copy it)."""
    root = tmp_path_factory.mktemp("evidence")
    write_pcap(root / "in.pcap", synthetic_records(N, seed=5))
    ring = EvidenceRing(root / "ring", "s1", max_bytes=1 << 30, max_age=3600)
    feed(ring, root / "in.pcap")
    ring.close()
    batches = list(iter_frame_batches(str(root / "in.pcap")))
    frames = [b.frame(i) for b in batches for i in range(len(b))]
    records = synthetic_records(N, seed=5)
    records["seq"] = np.arange(1, N + 1)
    records["ts"] = [t for b in batches for t in b.ts]  # as read from the file (microseconds)
    return root, records, frames


@pytest.fixture
def ring(kept, settings, tmp_path):
    """The kept ring (a copy of it) as NETMON_EVIDENCE_DIR; the records and frames it holds."""
    root, records, frames = kept
    shutil.copytree(root / "ring", tmp_path / "evidence")
    shutil.copy(root / "in.pcap", tmp_path / "in.pcap")
    settings.NETMON_EVIDENCE_DIR = tmp_path / "evidence"
    return records, frames


def frames_of(data: bytes) -> list[bytes]:
    return [b.frame(i) for b in iter_frame_batches(data) for i in range(len(b))]


def body(response) -> bytes:
    assert isinstance(response, StreamingHttpResponse)  # streamed, never built in memory
    return b"".join(response.streaming_content)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


# --- GET /api/packets/pcap -----------------------------------------------------------------------


def test_packets_pcap_answers_exactly_the_matching_frames(api, ring):
    records, frames = ring
    since, until = float(records["ts"][100]), float(records["ts"][1200])
    response = api.get("/api/packets/pcap", {"since": iso(since), "until": iso(until), "port": 443})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/vnd.tcpdump.pcap"
    assert 'filename="netmon-s1-packets.pcap"' in response["Content-Disposition"]
    want = (records["ts"] >= since) & (records["ts"] < until)
    want &= (records["sport"] == 443) | (records["dport"] == 443)
    assert frames_of(body(response)) == [f for f, w in zip(frames, want, strict=True) if w]
    assert int(response["X-Netmon-Frames"]) == int(want.sum()) > 0


def test_packets_pcap_by_address(api, ring):
    records, frames = ring
    ip = ip_to_text(records["src_ip"][7], 4)
    response = api.get("/api/packets/pcap", {"ip": ip, "sensor": "s1"})
    got = frames_of(body(response))
    want = [
        f
        for f, r in zip(frames, records, strict=True)
        if ip in (ip_to_text(r["src_ip"], 4), ip_to_text(r["dst_ip"], 4))
    ]
    assert got == want and got


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"since": "yesterday"}, "since", "ISO 8601"),
        ({"until": "2026-13-01"}, "until", "ISO 8601"),
        ({"ip": "10.0.0.300"}, "ip", "IPv4 or IPv6"),
        ({"port": "70000"}, "port", "from 0 to 65535"),
        ({"port": "http"}, "port", "whole number"),
        ({"sensor": ".."}, "sensor", "cannot name an evidence ring"),
        ({"sensor": "a/b"}, "sensor", "is not a valid sensor name"),
        ({"protocol": "TCP"}, "protocol", "unknown parameter; known: since, until, ip, port, sensor"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(api, ring, params, field, message):
    response = api.get("/api/packets/pcap", params)

    assert response.status_code == 400
    assert message in str(response.json()[field])


def test_several_sensors_need_a_sensor_parameter(api, ring, settings, tmp_path):
    feed(
        EvidenceRing(settings.NETMON_EVIDENCE_DIR, "s2", max_bytes=1 << 30, max_age=3600),
        tmp_path / "in.pcap",
    )

    response = api.get("/api/packets/pcap")
    assert response.status_code == 400
    assert "name one of: s1, s2" in str(response.json()["sensor"])
    assert api.get("/api/packets/pcap", {"sensor": "s2", "port": 53}).status_code == 200


def test_aged_out_frames_answer_410_with_the_reason(api, ring):
    response = api.get("/api/packets/pcap", {"until": "2020-01-01T00:00:00Z"})

    assert response.status_code == 410
    assert "aged out of the evidence ring of sensor 's1'" in response.json()["detail"]
    assert "NETMON_EVIDENCE_MAX_AGE_HOURS" in response.json()["detail"]


def test_no_evidence_at_all_answers_410(api, settings, tmp_path):
    settings.NETMON_EVIDENCE_DIR = tmp_path / "none"
    response = api.get("/api/packets/pcap")
    assert response.status_code == 410
    assert "no sensor keeps evidence" in response.json()["detail"]


def test_viewers_may_not_download_frames(viewer_api, ring):
    response = viewer_api.get("/api/packets/pcap")
    assert response.status_code == 403
    assert "capture.download_evidence" in response.json()["detail"]


# --- GET /api/incidents/{id}/pcap ----------------------------------------------------------------


@pytest.fixture
def incident(ring):
    """An incident of the host behind packet 10, with its packets stored and one anomaly."""
    records, _ = ring
    sensor = Sensor.objects.create(name="s1")
    Packet.objects.bulk_create(
        Packet(
            sensor=sensor, seq=int(r["seq"]), ts=datetime.fromtimestamp(float(r["ts"]), UTC),
            src_ip=ip_to_text(r["src_ip"], 4), dst_ip=ip_to_text(r["dst_ip"], 4), protocol="TCP",
        )
        for r in records if r["ip_version"] == 4
    )  # fmt: skip
    host = ip_to_text(records["src_ip"][10], 4)
    first, last = float(records["ts"][300]), float(records["ts"][1000])
    row = Incident.objects.create(
        sensor=sensor, src_ip=host, sources=[host], first_seen=datetime.fromtimestamp(first, UTC),
        last_seen=datetime.fromtimestamp(last, UTC), opened_at=datetime.now(UTC),
    )  # fmt: skip
    Anomaly.objects.create(
        sensor=sensor, incident=row, packet_seq=11, ts=datetime.fromtimestamp(float(records["ts"][10]), UTC),
        score=1.0, threshold=0.5, model_kind="isolation_forest",
    )  # fmt: skip
    return row


def test_incident_pcap_holds_its_hosts_packets_and_its_anomalies(api, ring, incident):
    records, frames = ring
    host = incident.sources[0]
    ends = [(ip_to_text(r["src_ip"], 4), ip_to_text(r["dst_ip"], 4)) for r in records]
    lo, hi = incident.first_seen.timestamp() - 0.001, incident.last_seen.timestamp() + 0.001
    want = [
        i for i, r in enumerate(records)
        if (r["ip_version"] == 4 and host in ends[i] and lo <= float(r["ts"]) <= hi) or r["seq"] == 11
    ]  # fmt: skip

    response = api.get(f"/api/incidents/{incident.pk}/pcap")
    assert response.status_code == 200
    assert frames_of(body(response)) == [frames[i] for i in want]
    assert 'filename="netmon-incident-' in response["Content-Disposition"]

    detail = api.get(f"/api/incidents/{incident.pk}/").json()
    assert detail["pcap_kept"] is True
    assert detail["pcap_url"] == f"/api/incidents/{incident.pk}/pcap"


def test_incident_frames_that_aged_out_answer_410(api, ring, incident, settings):
    for segment in evidence.list_segments(settings.NETMON_EVIDENCE_DIR, "s1"):
        segment.pcap.unlink()
        segment.index.unlink()
    # a newer segment remains: its frames are not the incident's
    feed(
        EvidenceRing(settings.NETMON_EVIDENCE_DIR, "s1", max_bytes=1 << 30, max_age=3600, next_seq=10**6),
        settings.NETMON_EVIDENCE_DIR.parent / "in.pcap",
        first_seq=N + 1,
    )

    response = api.get(f"/api/incidents/{incident.pk}/pcap")
    assert response.status_code == 410
    assert "aged out" in response.json()["detail"]
    assert api.get(f"/api/incidents/{incident.pk}/").json()["pcap_kept"] is False


def test_the_incident_page_lets_analysts_see_the_download(client, analyst, viewer, incident):
    # the page hides the button unless the user holds the permission (incident.js reads data-permissions)
    client.force_login(analyst)
    assert "capture.download_evidence" in client.get(f"/incidents/{incident.pk}/").content.decode()
    client.force_login(viewer)
    assert "capture.download_evidence" not in client.get(f"/incidents/{incident.pk}/").content.decode()


def test_an_incident_without_kept_frames_hides_the_button(api, settings, tmp_path):
    settings.NETMON_EVIDENCE_DIR = tmp_path / "none"
    sensor = Sensor.objects.create(name="s9")
    now = datetime.now(UTC)
    row = Incident.objects.create(
        sensor=sensor, src_ip="10.0.0.1", first_seen=now, last_seen=now, opened_at=now
    )
    Anomaly.objects.create(
        sensor=sensor, incident=row, packet_seq=1, ts=now, score=1, threshold=0.5, model_kind="x"
    )
    assert api.get(f"/api/incidents/{row.pk}/").json()["pcap_kept"] is False
    assert api.get(f"/api/incidents/{row.pk}/pcap").status_code == 410


# --- the pcap export dataset ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_body", "field", "message"),
    [
        ({"dataset": "pcap", "format": "csv"}, "format", "use format pcap"),
        ({"dataset": "packets", "format": "pcap"}, "format", "pcap dataset only"),
        ({"dataset": "pcap", "filters": {"protocol": "TCP"}}, "filters.protocol", "not a filter of the pcap"),
        ({"dataset": "flows", "filters": {"incident": 1}}, "filters.incident", "not a filter of the flows"),
        ({"dataset": "pcap", "filters": {"incident": "one"}}, "filters.incident", "id of an incident"),
    ],
)
def test_pcap_export_requests_are_checked(api, settings, request_body, field, message):
    settings.NETMON_EXPORT_KEYS = f"k256:{KEY}"
    response = api.post(
        "/api/exports/", {"algorithm": "AES-256", "key_id": "k256", **request_body}, format="json"
    )
    assert response.status_code == 400
    assert message in str(response.json()["fields"][field])


def test_the_pcap_dataset_is_an_encrypted_export_of_the_kept_frames(api, ring, incident, settings, tmp_path):
    settings.NETMON_EXPORT_KEYS = f"k256:{KEY}"
    settings.NETMON_EXPORT_DIR = tmp_path / "exports"
    response = api.post(
        "/api/exports/",
        {"dataset": "pcap", "algorithm": "AES-256", "key_id": "k256", "filters": {"incident": incident.pk}},
        format="json",
    )
    assert response.status_code == 202, response.content
    job = ExportJob.objects.get(pk=response.json()["id"])
    assert job.format == "pcap"  # the pcap dataset's default format

    export_services.write_export(job)
    assert job.file_path.endswith(".pcap.nmx")
    call_command("decrypt_export", job.file_path, "--key-id", "k256", "--out", str(tmp_path / "plain.pcap"))
    expected = body(api.get(f"/api/incidents/{incident.pk}/pcap"))
    assert (tmp_path / "plain.pcap").read_bytes() == expected
    assert job.row_count == len(frames_of(expected)) > 0


# --- a failing ring in /api/status and /metrics --------------------------------------------------


def test_an_unwritable_ring_is_reported_in_status_and_metrics(
    api, staff, client, redis_client, settings, tmp_path
):
    (tmp_path / "file").write_text("not a directory")
    runner = CaptureRunner("s1", redis_client=redis_client, buffer_size=1000)
    runner.evidence = EvidenceRing(tmp_path / "file" / "ev", "s1", max_bytes=1 << 30, max_age=3600)
    runner.heartbeat()

    ring = next(s for s in api.get("/api/status").json()["sensors"] if s["sensor"] == "s1")["evidence"]
    assert ring["state"] == "failed" and "cannot write" in ring["reason"]

    client.force_login(staff)
    text = client.get("/metrics").content.decode()
    up = {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "netmon_sensor_evidence_up"
        for s in family.samples
    }
    assert [(dict(labels)["state"], value) for labels, value in up.items()] == [("failed", 0.0)]


def test_a_capture_with_a_writable_ring_reports_it_on(api, redis_client, settings, tmp_path):
    runner = CaptureRunner("s1", redis_client=redis_client, buffer_size=1000)
    runner.evidence = EvidenceRing(tmp_path / "ev", "s1", max_bytes=1 << 30, max_age=3600)
    runner.heartbeat()
    ring = api.get("/api/status").json()["sensors"][0]["evidence"]
    assert ring["state"] == "on" and ring["max_bytes"] == 1 << 30
    assert (timedelta(seconds=ring["max_age_seconds"])) == timedelta(hours=1)


# --- the capture command ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_capture_command_keeps_evidence_by_default(tmp_path, settings, redis_client):
    settings.NETMON_EVIDENCE_DIR = tmp_path / "evidence"  # the command's environment (tests/processes.py)
    write_pcap(tmp_path / "in.pcap", synthetic_records(500, seed=6))
    result = processes.run_capture("--pcap", str(tmp_path / "in.pcap"), "--sensor", "evcmd", timeout=120)
    assert result.returncode == 0, result.stderr

    carved = b"".join(evidence.carve(settings.NETMON_EVIDENCE_DIR, "evcmd"))
    assert carved[24:] == (tmp_path / "in.pcap").read_bytes()[24:]  # every record, as it was in the file
    heartbeat = control.read_heartbeats(redis_client)["evcmd"]
    assert heartbeat["evidence"]["state"] == "on" and heartbeat["evidence"]["frames_kept"] == 500
