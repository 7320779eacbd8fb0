"""Celery tasks of detection: thin wrappers that take ids and call the services."""

from __future__ import annotations

import logging
import random

from celery import shared_task
from celery.signals import worker_init
from django.db import InterfaceError, OperationalError, close_old_connections, connections
from django.utils.dateparse import parse_datetime

from capture.connections import redis_client
from detection import ingest, ml, scoring, services
from detection.models import DetectionModel

log = logging.getLogger(__name__)

DB_RETRY_BASE = 0.5  # seconds; doubled at each retry of a task, up to DB_RETRY_MAX
DB_RETRY_MAX = 5.0
FOLLOW_UP_DELAY = 0.5  # seconds before a locked-out drain's follow-up tries again


@worker_init.connect
def _load_the_model_before_forking(**_: object) -> None:
    """The worker's pool processes start with the model in use loaded (scoring.warm_up)."""
    try:
        row = scoring.warm_up()
        if row is not None:
            log.info("model %s v%s loaded before starting the pool", row.kind, row.version)
    except Exception as exc:  # e.g. the database is not up yet: the first read loads the model
        log.warning("model not loaded before starting the pool: %s", exc)
    finally:
        connections.close_all()  # a connection must not be shared with the forked processes


def db_retry_delay(retries: int) -> float:
    """Back-off before retrying after a database error: 0.5, 1, 2, 4, 5, 5... seconds, +-20% jitter."""
    return min(DB_RETRY_MAX, DB_RETRY_BASE * 2 ** min(retries, 10)) * random.uniform(0.8, 1.2)


@shared_task(
    bind=True,
    name="detection.ingest_sensor",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=None,
)
def ingest_sensor(self, sensor: str, follow_up: bool = False) -> dict:
    """Drain the sensor's stream (idempotent: a redelivered or duplicate task finds nothing new)."""
    if follow_up:
        ingest.release_follow_up(redis_client(), sensor)
    try:
        result = ingest.drain_sensor(sensor)
    except (OperationalError, InterfaceError) as exc:
        # The database is down or locked. Entries are acknowledged only after their transaction
        # commits, so what this drain read stays pending in the stream: try again later, forever.
        close_old_connections()  # a broken connection is replaced on the next attempt
        countdown = db_retry_delay(self.request.retries)
        log.warning("ingest of %s: database unavailable (%s); retrying in %.1fs", sensor, exc, countdown)
        raise self.retry(exc=exc, countdown=countdown) from exc
    if result.locked_out and ingest.claim_follow_up(redis_client(), sensor):
        # Another worker is draining, but it may have done its last read before the entry that
        # queued us arrived. The capture process queues no new task while the "scheduled" flag is
        # set, so a task must run once the lock is free or that entry waits for the sweeper: one
        # follow-up per sensor, which queues the next one if it is locked out in turn.
        ingest_sensor.apply_async((sensor,), {"follow_up": True}, countdown=FOLLOW_UP_DELAY)
    return result.summary()


@shared_task(name="detection.sweep_streams", ignore_result=True)
def sweep_streams() -> list[str]:
    """Safety net (beat, every few seconds): schedule ingest for streams with unprocessed entries."""
    client = redis_client()
    sensors = ingest.sensors_needing_ingest(client)
    for sensor in sensors:
        if ingest.mark_scheduled(client, sensor):
            ingest_sensor.delay(sensor)
    return sensors


@shared_task(name="detection.train_model", acks_late=True, ignore_result=True)
def train_model(model_id: int, since: str | None, until: str | None, sensor: str | None) -> str:
    """Train the registry row ``model_id`` on stored packets (a finished row is left alone)."""
    row = DetectionModel.objects.filter(pk=model_id, status=DetectionModel.Status.TRAINING).first()
    if row is None:
        return "nothing to do"

    def progress(value: float) -> None:
        DetectionModel.objects.filter(pk=model_id).update(progress=value)

    chunks = services.records_from_database(
        parse_datetime(since) if since else None, parse_datetime(until) if until else None, sensor
    )
    try:
        services.train(row, chunks, progress=progress)
    except ml.TrainingError:
        return "refused"  # the reason is on the row
    return "ready"
