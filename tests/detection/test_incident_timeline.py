"""GET /api/incidents/{id}/timeline/: its hosts' stored packets per bucket, the bound on buckets,
who may read it, and the 404 of an unknown incident."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from capture.models import Packet, Sensor
from detection.models import Anomaly, Incident
from detection.timeline import MAX_BUCKETS, target_host

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
SCANNER = "203.0.113.9"
VICTIM = "10.0.0.5"


def packet(sensor: Sensor, seq: int, seconds: float, src: str, dst: str, length: int = 60) -> Packet:
    return Packet(
        sensor=sensor, seq=seq, ts=T0 + timedelta(seconds=seconds), src_ip=src, dst_ip=dst, protocol="TCP",
        length=length,
    )  # fmt: skip


@pytest.fixture
def scan():
    """A 10-second scan: 3 probes a second from the scanner, 1 reply a second from the victim,
    plus packets the timeline must leave out (other hosts, outside the window, another sensor)."""
    sensor, other = Sensor.objects.create(name="edge-1"), Sensor.objects.create(name="edge-2")
    incident = Incident.objects.create(
        sensor=sensor, src_ip=SCANNER, sources=[SCANNER], targets=[f"{VICTIM}:22/tcp", f"{VICTIM}:23/tcp"],
        kind="port_scan", severity="high", first_seen=T0, last_seen=T0 + timedelta(seconds=9.5),
        opened_at=T0 + timedelta(seconds=2), anomaly_count=4,
    )  # fmt: skip
    rows, seq = [], 0
    for second in range(10):
        for k in range(3):
            seq += 1
            rows.append(packet(sensor, seq, second + 0.1 * k, SCANNER, VICTIM, length=60))
        seq += 1
        rows.append(packet(sensor, seq, second + 0.5, VICTIM, SCANNER, length=40))
    rows += [
        packet(sensor, 1001, 2.0, "10.0.0.8", "10.0.0.9"),  # neither end is the incident's
        packet(sensor, 1002, -5.0, SCANNER, VICTIM),  # before it
        packet(sensor, 1003, 30.0, SCANNER, VICTIM),  # after it
        packet(other, 1, 2.0, SCANNER, VICTIM),  # another sensor
    ]
    Packet.objects.bulk_create(rows)
    for k, second in enumerate((0.2, 0.3, 4.1, 9.0)):
        Anomaly.objects.create(
            sensor=sensor, incident=incident, packet_seq=k + 1, ts=T0 + timedelta(seconds=second), score=0.9,
            threshold=0.5, model_kind="isolation_forest", explanation="probe",
        )  # fmt: skip
    return incident


def test_the_timeline_counts_the_incidents_packets_per_second(viewer_api, scan):
    response = viewer_api.get(f"/api/incidents/{scan.pk}/timeline/")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["bucket_seconds"] == 1
    assert body["sources"] == [SCANNER] and body["target_hosts"] == [VICTIM]
    buckets = body["buckets"]
    assert len(buckets) == 10
    assert (
        buckets[0]["start"] == T0.isoformat()
        and buckets[9]["start"] == (T0 + timedelta(seconds=9)).isoformat()
    )
    assert [b["packets"] for b in buckets] == [4] * 10  # the scanner's 3 and the victim's reply
    assert [b["from_sources"] for b in buckets] == [3] * 10
    assert [b["bytes"] for b in buckets] == [3 * 60 + 40] * 10
    assert [b["packets_per_second"] for b in buckets] == [4.0] * 10
    assert [b["anomalies"] for b in buckets] == [2, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    assert body["packets"] == 40 and body["peak_packets_per_second"] == 4.0


def test_a_long_incident_gets_wider_buckets_never_more_than_asked(viewer_api, scan):
    scan.last_seen = T0 + timedelta(hours=2)
    scan.save(update_fields=["last_seen"])

    default = viewer_api.get(f"/api/incidents/{scan.pk}/timeline/").json()
    fifty = viewer_api.get(f"/api/incidents/{scan.pk}/timeline/?buckets=50").json()

    # 2 h in minutes is 121 buckets, one more than the default 120: two minutes each
    assert default["bucket_seconds"] == 120 and len(default["buckets"]) == 61
    assert fifty["bucket_seconds"] == 300 and len(fifty["buckets"]) == 25
    # every packet of the first ten seconds is in the first bucket, and the one at +30 s now counts
    assert fifty["buckets"][0]["packets"] == 41 and fifty["buckets"][0]["from_sources"] == 31
    assert sum(b["packets"] for b in fifty["buckets"]) == 41
    assert sum(b["anomalies"] for b in fifty["buckets"]) == 4


def test_default_buckets_are_bounded(viewer_api, scan):
    scan.last_seen = T0 + timedelta(days=3, seconds=7)
    scan.save(update_fields=["last_seen"])

    body = viewer_api.get(f"/api/incidents/{scan.pk}/timeline/").json()

    assert len(body["buckets"]) <= 120 and body["bucket_seconds"] == 3600


@pytest.mark.parametrize("value", ["0", str(MAX_BUCKETS + 1), "ten", "1.5"])
def test_a_bad_bucket_count_is_refused_naming_the_field(viewer_api, scan, value):
    response = viewer_api.get(f"/api/incidents/{scan.pk}/timeline/?buckets={value}")

    assert response.status_code == 400
    assert f"from 1 to {MAX_BUCKETS}" in " ".join(response.json()["buckets"])


def test_an_unknown_incident_is_a_404(viewer_api, scan):
    assert viewer_api.get(f"/api/incidents/{scan.pk + 1000}/timeline/").status_code == 404
    Incident.objects.filter(pk=scan.pk).update(opened_at=None)  # a candidate, not opened (yet)
    assert viewer_api.get(f"/api/incidents/{scan.pk}/timeline/").status_code == 404


def test_who_may_read_it(anon, nogroup_api, viewer_api, api, scan):
    url = f"/api/incidents/{scan.pk}/timeline/"
    assert anon.get(url).status_code == 401
    refused = nogroup_api.get(url)
    assert refused.status_code == 403 and "ask an admin" in refused.json()["detail"]
    assert viewer_api.get(url).status_code == 200 and api.get(url).status_code == 200
    assert viewer_api.post(url, {}, format="json").status_code == 405


def test_target_hosts_are_read_from_ipv4_ipv6_and_portless_targets():
    assert target_host("10.0.0.5:22/tcp") == "10.0.0.5"
    assert target_host("2001:db8::7:443/tcp") == "2001:db8::7"
    assert target_host("10.0.0.6") == "10.0.0.6"
    assert target_host("2001:db8::8") == "2001:db8::8"


def test_a_packet_a_microsecond_past_the_incidents_times_is_its_own(viewer_api, scan):
    # Seen live: an incident of one anomaly at .118641 s, its packet stored at .118642 s (the two
    # times are rounded from the packet's float timestamp on different paths).
    scan.first_seen = scan.last_seen = T0 + timedelta(seconds=20, microseconds=118641)
    scan.save(update_fields=["first_seen", "last_seen"])
    Packet.objects.create(
        sensor=scan.sensor, seq=5000, ts=T0 + timedelta(seconds=20, microseconds=118642), src_ip=SCANNER,
        dst_ip=VICTIM, protocol="TCP",
    )  # fmt: skip

    timeline = viewer_api.get(f"/api/incidents/{scan.pk}/timeline/").json()
    listed = viewer_api.get(viewer_api.get(f"/api/incidents/{scan.pk}/").json()["packets_url"]).json()

    assert timeline["packets"] == 1 and len(timeline["buckets"]) == 1
    assert [p["seq"] for p in listed["results"]] == [5000]
