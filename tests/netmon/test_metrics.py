"""/metrics: Prometheus text read from the database and Redis at scrape time, for staff or a bearer token."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token

from capture import control
from capture.models import Sensor
from capture.records import stream_key
from detection import ingest
from detection.models import Anomaly
from exports.models import ExportJob
from tests import processes

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-scrape-token-for-tests"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a scrape."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv("NETMON_METRICS_TOKEN", TOKEN)


@pytest.fixture
def populated(user, redis_client):
    sensor = Sensor.objects.create(
        name="s1", mode="pcap", packets_read=1000, packets_published=950, packets_stored=900,
        packets_scored=800, packets_undecodable=7, packets_dropped_capture=50, packets_dropped_stream=30,
        last_seq_published=1000, last_seq_ingested=930, last_heartbeat=timezone.now(),
    )  # fmt: skip
    Sensor.objects.create(name="s2")
    for seq, false_positive in ((1, False), (2, False), (3, True)):
        Anomaly.objects.create(
            sensor=sensor, packet_seq=seq, ts=timezone.now(), score=2.0, threshold=1.0,
            model_kind="autoencoder", explanation="odd", false_positive=false_positive,
        )  # fmt: skip
    for status in ("queued", "succeeded", "succeeded", "failed"):
        ExportJob.objects.create(owner=user, algorithm="AES-256", status=status)
    redis_client.xadd(stream_key("s1"), {"h": b"x", "r": b""})
    redis_client.xadd(stream_key("s1"), {"h": b"x", "r": b""})
    ingest.ensure_group(redis_client, "s1")
    redis_client.xreadgroup(ingest.GROUP, ingest.CONSUMER, {stream_key("s1"): ">"}, count=1)
    control.write_heartbeat("s1", {"state": "running", "mode": "pcap", "packets_read": 1010}, redis_client)
    return sensor


def test_anonymous_gets_401_with_a_bearer_challenge(client):
    response = client.get("/metrics")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"netmon_" not in response.content


def test_normal_user_is_refused_by_session_or_token(client, user):
    client.force_login(user)
    assert client.get("/metrics").status_code == 403
    token = Token.objects.create(user=user).key
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Token {token}").status_code == 403


def test_staff_session_and_staff_api_token_may_scrape(client, staff, redis_client):
    client.force_login(staff)
    assert client.get("/metrics").status_code == 200
    token = Token.objects.create(user=staff).key
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200


def test_bearer_token_from_the_environment(client, token_env, redis_client):
    ok = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    other_scheme = client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}")

    assert ok.status_code == 200
    assert ok["Content-Type"].startswith("text/plain; version=0.0.4")
    assert ok["Cache-Control"].startswith("max-age=0")
    assert wrong.status_code == other_scheme.status_code == 401


def test_no_token_configured_means_no_bearer_access(client, monkeypatch):
    monkeypatch.delenv("NETMON_METRICS_TOKEN", raising=False)

    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer none").status_code == 401


def test_remote_clients_are_refused_even_with_the_token(client, token_env):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", REMOTE_ADDR="203.0.113.5")

    assert response.status_code == 403


def test_only_get_and_head(client, token_env, redis_client):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    assert client.head("/metrics", **auth).status_code == 200
    assert client.post("/metrics", **auth).status_code == 405


def test_values_come_from_the_database_and_redis(client, token_env, populated):
    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    got = samples(text)

    def value(name: str, **labels) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert value("netmon_sensor_packets_captured_total", sensor="s1") == 1010  # the live heartbeat is newer
    assert value("netmon_sensor_packets_published_total", sensor="s1") == 950
    assert value("netmon_sensor_packets_stored_total", sensor="s1") == 900
    assert value("netmon_sensor_packets_scored_total", sensor="s1") == 800
    assert value("netmon_sensor_packets_undecodable_total", sensor="s1") == 7
    assert value("netmon_sensor_packets_dropped_total", sensor="s1", stage="capture") == 50
    assert value("netmon_sensor_packets_dropped_total", sensor="s1", stage="stream") == 30
    assert value("netmon_sensor_queue_lag_packets", sensor="s1") == 70
    assert value("netmon_sensor_up", sensor="s1") == 1
    assert value("netmon_sensor_up", sensor="s2") == 0
    assert value("netmon_sensor_info", sensor="s1", mode="pcap", state="running") == 1
    assert value("netmon_sensor_packets_stored_total", sensor="s2") == 0
    assert value("netmon_sensor_stream_entries", sensor="s1") == 2
    assert value("netmon_sensor_stream_pending_entries", sensor="s1") == 1
    assert value("netmon_anomalies_stored", sensor="s1", false_positive="false") == 2
    assert value("netmon_anomalies_stored", sensor="s1", false_positive="true") == 1
    assert value("netmon_anomalies_last_hour") == 2
    assert value("netmon_export_jobs", status="succeeded") == 2
    assert value("netmon_export_jobs", status="queued") == value("netmon_export_jobs", status="failed") == 1
    assert value("netmon_export_jobs", status="expired") == 0
    assert value("netmon_redis_up") == value("netmon_database_up") == 1
    assert ("netmon_celery_queue_messages", (("queue", "celery"),)) in got
    assert "# TYPE netmon_sensor_packets_stored_total counter" in text


def test_each_scrape_reads_current_values(client, token_env, populated):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    key = ("netmon_sensor_packets_stored_total", (("sensor", "s1"),))
    before = samples(client.get("/metrics", **auth).content.decode())[key]
    Sensor.objects.filter(name="s1").update(packets_stored=905)

    after = samples(client.get("/metrics", **auth).content.decode())[key]

    assert (before, after) == (900, 905)


def test_openmetrics_when_the_scraper_asks_for_it(client, token_env, redis_client):
    response = client.get(
        "/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", HTTP_ACCEPT="application/openmetrics-text"
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.rstrip().endswith(b"# EOF")


def test_redis_down_still_serves_the_database_metrics(client, token_env, populated, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{processes.free_port()}/0"  # nothing listens there

    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 200
    got = samples(response.content.decode())
    assert got[("netmon_redis_up", ())] == 0
    assert got[("netmon_database_up", ())] == 1
    assert got[("netmon_sensor_packets_captured_total", (("sensor", "s1"),))] == 1000
    assert not any(name == "netmon_sensor_stream_entries" for name, _ in got)


def test_a_non_ascii_bearer_token_is_refused_not_an_error(client, token_env):
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-\u00e9t\u00e9")

    assert response.status_code == 401
