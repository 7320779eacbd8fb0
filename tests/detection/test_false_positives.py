"""False positives feed the next training: a mark records who and when; training says how many it used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin.sites import site
from django.core.management import call_command
from django.test import RequestFactory

from capture.models import Packet, Sensor
from detection.admin import AnomalyAdmin
from detection.models import Anomaly, DetectionModel

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def sensor():
    return Sensor.objects.create(name="s1")


def anomaly(sensor: Sensor, seq: int, **fields) -> Anomaly:
    return Anomaly.objects.create(
        sensor=sensor, packet_seq=seq, ts=T0 + timedelta(seconds=seq), score=2.0, threshold=1.0,
        model_kind="isolation_forest", explanation="odd", **fields,
    )  # fmt: skip


def test_marking_through_the_api_records_who_and_when(api, user, sensor):
    row = anomaly(sensor, 1)

    body = api.patch(f"/api/anomalies/{row.pk}/", {"false_positive": True}, format="json").json()

    row.refresh_from_db()
    assert row.false_positive and row.false_positive_by == user
    assert row.false_positive_at is not None
    assert body["false_positive_by"] == "alice" and body["false_positive_at"]

    body = api.patch(f"/api/anomalies/{row.pk}/", {"false_positive": False}, format="json").json()
    row.refresh_from_db()
    assert (row.false_positive, row.false_positive_by, row.false_positive_at) == (False, None, None)
    assert body["false_positive_by"] is None


def test_the_admin_action_records_the_admin(staff, sensor):
    rows = [anomaly(sensor, 1), anomaly(sensor, 2)]
    request = RequestFactory().post("/admin/")
    request.user = staff
    request._messages = type("Messages", (), {"add": lambda *a, **k: None})()

    AnomalyAdmin(Anomaly, site).mark_false_positive(request, Anomaly.objects.all())

    for row in rows:
        row.refresh_from_db()
        assert row.false_positive and row.false_positive_by == staff and row.false_positive_at


def test_training_on_stored_packets_reports_the_false_positives_it_learnt(
    sensor, redis_client, settings, tmp_path, capsys
):
    settings.NETMON_MODEL_DIR = tmp_path / "models"
    Packet.objects.bulk_create(
        Packet(
            sensor=sensor, seq=i, ts=T0 + timedelta(milliseconds=10 * i), protocol="TCP", ip_version=4,
            src_ip=f"10.0.0.{i % 7 + 1}", dst_ip="10.0.1.1", src_port=40000 + i % 50, dst_port=443,
            length=60 + i % 40, tcp_flags=16, ttl=64,
        )
        for i in range(1, 1601)
    )  # fmt: skip
    for seq in (10, 20, 30):
        anomaly(sensor, seq, false_positive=True)
    anomaly(sensor, 40)  # undisputed: left out of the training data

    call_command(
        "train_detector", "--since", "2026-01-01T00:00:00Z", "--model", "isolation_forest",
        "--feature-level", "low",
    )  # fmt: skip

    row = DetectionModel.objects.get()
    assert row.packet_count == 1599
    assert row.metrics["false_positives_used"] == 3
    assert "3 packets marked as false positives learnt as normal" in capsys.readouterr().out
