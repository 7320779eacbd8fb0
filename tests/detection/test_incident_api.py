"""Incidents over the API: listing with filters, status actions with their transition rule, the
false-positive mark on their anomalies, and the events a status change sends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from capture import events
from capture.models import Sensor
from detection.models import Anomaly, Incident

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def incident():
    sensor = Sensor.objects.create(name="s1")
    row = Incident.objects.create(
        sensor=sensor, src_ip="203.0.113.9", sources=["203.0.113.9"], targets=["10.0.0.5:22/tcp", "10.0.0.6"],
        kind="port_scan", severity="high", first_seen=T0, last_seen=T0 + timedelta(seconds=3),
        anomaly_count=2, entity="host 203.0.113.9", opened_at=T0,
    )  # fmt: skip
    for seq in (1, 2):
        Anomaly.objects.create(
            sensor=sensor, incident=row, packet_seq=seq, ts=T0, score=0.9, threshold=0.5,
            model_kind="isolation_forest", explanation="probe",
        )  # fmt: skip
    Incident.objects.create(
        sensor=sensor, src_ip="10.0.0.7", sources=["10.0.0.7"], first_seen=T0, last_seen=T0, kind="udp_flood",
        status="resolved", entity="host 10.0.0.7", opened_at=T0,
    )  # fmt: skip
    Incident.objects.create(  # a candidate (evidence not sustained yet): never listed
        sensor=sensor, src_ip="10.0.0.8", sources=["10.0.0.8"], first_seen=T0, last_seen=T0,
        entity="host 10.0.0.8",
    )  # fmt: skip
    return row


def test_list_filters_by_status_kind_severity_ip_and_time(api, incident):
    def ids(query: str) -> list[int]:
        response = api.get(f"/api/incidents/?{query}")
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    assert len(ids("")) == 2
    assert ids("status=open") == [incident.pk]
    assert ids("kind=port_scan&severity=high") == [incident.pk]
    assert ids("ip=10.0.0.5") == [incident.pk]  # a target IP:port
    assert ids("ip=10.0.0.6") == [incident.pk]  # a portless target
    assert ids("ip=203.0.113.9") == [incident.pk]  # a source
    assert ids("ip=10.0.0.50") == []
    assert ids("ip=10.0.0.8") == []  # the candidate
    candidate = Incident.objects.get(src_ip="10.0.0.8")
    assert api.get(f"/api/incidents/{candidate.pk}/").status_code == 404
    assert ids("since=2026-01-01T00:00:02Z") == [incident.pk]
    assert ids("until=2025-12-31T00:00:00Z") == []
    assert ids("sensor=s1&limit=1&offset=1") and len(ids("limit=1")) == 1
    row = api.get(f"/api/incidents/{incident.pk}/").json()
    assert row["anomalies_url"] == f"/api/incidents/{incident.pk}/anomalies/"
    assert "src_ip=203.0.113.9" in row["packets_url"] and row["targets"] == ["10.0.0.5:22/tcp", "10.0.0.6"]
    anomalies = api.get(row["anomalies_url"]).json()
    assert anomalies["count"] == 2 and {a["incident"] for a in anomalies["results"]} == {incident.pk}


@pytest.mark.parametrize(("param", "word"), [("status", "acknowledged"), ("kind", "port_scan"),
                                             ("severity", "medium")])  # fmt: skip
def test_unknown_filter_values_are_refused_naming_the_allowed_ones(api, incident, param, word):
    response = api.get(f"/api/incidents/?{param}=nonsense")
    assert response.status_code == 400
    assert param in response.json() and word in str(response.json()[param])


def test_status_actions_follow_the_transition_rule_and_record_who(api, user, incident):
    url = f"/api/incidents/{incident.pk}/"
    response = api.patch(url, {"status": "resolved"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "resolved"
    assert response.json()["status_changed_by"] == user.username and response.json()["status_changed_at"]

    refused = api.patch(url, {"status": "acknowledged"}, format="json")
    assert refused.status_code == 409
    assert refused.json()["detail"] == "cannot go from resolved to acknowledged; allowed: open"

    unknown = api.patch(url, {"status": "closed"}, format="json")
    assert unknown.status_code == 400 and "acknowledged" in str(unknown.json()["status"])
    assert api.patch(url, {"status": "open"}, format="json").json()["status"] == "open"


def test_a_false_positive_incident_marks_its_anomalies_for_training_and_reopening_unmarks(
    api, user, incident
):
    url = f"/api/incidents/{incident.pk}/"
    assert api.patch(url, {"status": "false_positive"}, format="json").status_code == 200
    marked = Anomaly.objects.filter(incident=incident)
    assert [(a.false_positive, a.false_positive_by_id) for a in marked] == [(True, user.pk)] * 2
    assert api.patch(url, {"status": "open"}, format="json").status_code == 200
    assert not Anomaly.objects.filter(incident=incident, false_positive=True).exists()


def test_a_viewer_may_not_change_a_status(viewer_api, incident):
    response = viewer_api.patch(f"/api/incidents/{incident.pk}/", {"status": "resolved"}, format="json")
    assert response.status_code == 403 and "detection.change_incident" in response.json()["detail"]
    incident.refresh_from_db()
    assert incident.status == "open"


@pytest.mark.django_db(transaction=True)
def test_a_status_change_is_published_as_incident_updated(api, incident, redis_client):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(events.GROUP_INCIDENTS, channel)
    try:
        response = api.patch(f"/api/incidents/{incident.pk}/", {"status": "acknowledged"}, format="json")
        assert response.status_code == 200
        message = async_to_sync(layer.receive)(channel)
    finally:
        async_to_sync(layer.group_discard)(events.GROUP_INCIDENTS, channel)
    assert message["type"] == "incident.updated"
    assert message["incident"]["id"] == incident.pk and message["incident"]["status"] == "acknowledged"


def test_anomalies_can_be_listed_highest_score_first(api, incident):
    Anomaly.objects.filter(incident=incident, packet_seq=2).update(score=0.99, ts=T0 - timedelta(seconds=1))
    url = f"/api/incidents/{incident.pk}/anomalies/"

    newest = [a["packet_seq"] for a in api.get(url).json()["results"]]
    by_score = [a["packet_seq"] for a in api.get(url + "?order=score").json()["results"]]
    refused = api.get(url + "?order=loudest")

    assert newest == [1, 2] and by_score == [2, 1]
    assert refused.status_code == 400 and "newest, score" in refused.json()["order"][0]
