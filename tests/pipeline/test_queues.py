"""Exports have a queue of their own: a pile of them never waits in front of ingest."""

from __future__ import annotations

import base64
import time

import pytest
import redis
from celery import current_app

from capture.models import Packet
from exports.models import ExportJob
from tests import processes
from tests.pipeline.test_ingest import publish

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

SHA_EXPORT = {"dataset": "packets", "format": "csv", "algorithm": "SHA"}


def wait_until(check, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError(check)


@pytest.fixture
def hmac_key(settings, monkeypatch):
    """The SHA signing key, for this process and the workers it starts."""
    key = base64.b64encode(b"h" * 32).decode()
    settings.NETMON_EXPORT_HMAC_KEY = key
    monkeypatch.setenv("NETMON_EXPORT_HMAC_KEY", key)


def test_ingest_keeps_pace_while_exports_pile_up_on_their_own_queue(
    staff_api, redis_client, hmac_key, settings
):
    settings.NETMON_EXPORT_MAX_ACTIVE_PER_USER = 5  # (the default, 3, would refuse the last two)
    jobs = [staff_api.post("/api/exports/", SHA_EXPORT, format="json").json()["id"] for _ in range(5)]
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    assert broker.llen(settings.EXPORT_QUEUE) == 5  # routed by name (exports.*), not to the default queue

    ingest_worker = processes.start_worker(concurrency=1, name="ingest-only", queues="celery")
    try:
        for first in range(1, 2001, 200):
            publish(redis_client, "s1", first, 200)
        current_app.send_task("detection.ingest_sensor", args=["s1"])

        wait_until(lambda: Packet.objects.filter(sensor__name="s1").count() == 2000)
    finally:
        ingest_worker.stop()
    # Ingest finished while every export was still waiting: nothing of theirs was in its way.
    assert set(ExportJob.objects.filter(id__in=jobs).values_list("status", flat=True)) == {"queued"}
    assert broker.llen(settings.EXPORT_QUEUE) == 5

    exports_worker = processes.start_worker(concurrency=1, name="exports-only", queues="exports")
    try:
        wait_until(lambda: ExportJob.objects.filter(id__in=jobs, status="succeeded").count() == 5)
    finally:
        exports_worker.stop()
