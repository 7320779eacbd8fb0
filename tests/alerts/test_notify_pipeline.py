"""The ingest worker tells the notifications of incidents it opened or raised, by task name after its
commit; a real Celery worker on the ``notify`` queue sends them (and retries a dead destination)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from django.core.management import call_command

from alerts.models import Delivery, Destination
from capture.choices import IncidentSeverity
from capture.demo import DemoTraffic
from capture.models import Sensor
from capture.pcapwriter import write_pcap
from detection import announce, anomalies, ingest
from detection.models import Incident
from tests.alerts.conftest import free_port
from tests.detection.test_detection_pipeline import publish_in_batches
from tests.detection.test_incidents import SCANNER, T0, _read
from tests.processes import BIN, Proc, process_env, running, wait_until


def _save_scan(sensor: Sensor, first_seq: int, t: float, threshold: float, n: int = 20):
    batch, scored = _read([SCANNER] * n, first_seq, t)
    scored.threshold = threshold  # the peak (2.0) over the threshold decides the severity
    return anomalies.save_anomalies(sensor, batch, scored)


@pytest.mark.django_db
def test_a_read_reports_the_incidents_it_opened_and_those_whose_severity_it_raised():
    sensor = Sensor.objects.create(name="inc")
    opened = _save_scan(sensor, 1, T0, threshold=1.9)  # peak 1.05x the threshold: low
    incident = Incident.objects.get()
    assert (opened.opened, opened.raised, incident.severity) == ([incident.pk], [], IncidentSeverity.LOW)
    same = _save_scan(sensor, 100, T0 + 1, threshold=1.9)
    assert (same.opened, same.updated, same.raised) == ([], [incident.pk], [])
    worse = _save_scan(sensor, 200, T0 + 2, threshold=1.0)  # 2x: higher
    incident.refresh_from_db()
    assert worse.raised == [incident.pk] and incident.severity != IncidentSeverity.LOW


def test_news_is_queued_by_task_name_on_the_notify_queue_and_nothing_without_news(redis_client):
    assert announce.queue_notifications([], []) is False
    assert redis_client.llen("notify") == 0
    assert announce.queue_notifications([7], [3, 7]) is True
    [raw] = redis_client.lrange("notify", 0, -1)
    message = json.loads(raw)
    assert message["headers"]["task"] == "alerts.notify_incidents"
    assert "[[3, 7], {}" in message["headers"]["argsrepr"] or message["headers"]["argsrepr"] == "[[3, 7]]"


def _train(model_dir) -> None:
    pcap = model_dir.parent / "benign.pcap"
    write_pcap(pcap, DemoTraffic(seed=1, attack_prob=0.0).records(30_000))
    call_command(
        "train_detector", "--pcap", str(pcap), "--model", "isolation_forest", "--feature-level", "standard",
        "--use",
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_a_scan_drained_by_ingest_is_notified_by_a_real_worker_and_a_dead_destination_retried(
    tmp_path, settings, redis_client, receiver
):
    settings.NETMON_MODEL_DIR = tmp_path / "models"
    # the worker starts while the model trains (it never loads one: notifications only)
    worker = Proc(
        "notify",
        [str(BIN / "celery"), "-A", "netmon", "worker", "-l", "info", "--concurrency", "1", "-Q", "notify",
         "--without-gossip", "--without-mingle", "-n", f"notify-{time.monotonic_ns()}@%h"],
        process_env(NETMON_NOTIFY_BACKOFF="0.2", NETMON_NOTIFY_ATTEMPTS="3",
                    NETMON_PUBLIC_URL="https://netmon.example.org"),
    )  # fmt: skip
    with running(worker):
        _train(settings.NETMON_MODEL_DIR)
        Destination.objects.create(name="hook", url=receiver.url)
        Destination.objects.create(name="down", url=f"json://127.0.0.1:{free_port()}/hook")
        traffic = DemoTraffic(seed=7, attack_prob=0.0)
        traffic.inject("port_scan")
        records = traffic.records(8_000)  # the scan: packets 695-6260
        records["seq"] = np.arange(1, len(records) + 1)
        publish_in_batches(redis_client, "n1", records)
        worker.wait_for("ready.", timeout=90)

        ingest.drain_sensor("n1", redis_client)  # the ingest worker's code, in this process

        scan = Incident.objects.opened().order_by("-anomaly_count").first()
        wait_until(lambda: receiver.received, timeout=30, message="the notification")
        wait_until(
            lambda: Delivery.objects.filter(destination__name="down", status="failed").exists(),
            timeout=30, message="the dead destination's last attempt",
        )  # fmt: skip
    titles = [m["title"] for m in receiver.received]
    assert "Port Scan (opened) on n1" in " ".join(titles)
    assert any(f"https://netmon.example.org/incidents/{scan.pk}/" in m["message"] for m in receiver.received)
    opened = Incident.objects.opened().count()
    assert Delivery.objects.filter(destination__name="hook", status="sent").count() >= opened
    failed = Delivery.objects.filter(destination__name="down", status="failed").first()
    assert failed.attempts == 3 and "Connection error" in failed.error
    assert "retry: Retry in 0.2s" in worker.log()  # Celery's retry, with the back-off's countdown
