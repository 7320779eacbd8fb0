"""Celery tasks of the notifications (queue ``notify``): thin, by id, idempotent; logic in alerts.services."""

from __future__ import annotations

from celery import shared_task
from django.db import transaction

from alerts import services
from alerts.models import Destination


@shared_task(name="alerts.notify_incidents", ignore_result=True)
def notify_incidents(incident_ids: list[int]) -> int:
    """Plan the deliveries the news about these incidents calls for (queued by the ingest worker after
    its commit) and queue each; returns how many were queued."""
    # Then the sweep: news of other incidents that was lost on its way here is sent with this one's.
    return _queue(services.plan_deliveries(incident_ids) + services.sweep_unannounced())


@shared_task(name="alerts.sweep_notifications", ignore_result=True)
def sweep_notifications() -> int:
    """Send what lost news called for (beat, every minute); returns how many deliveries were queued."""
    return _queue(services.sweep_unannounced())


@shared_task(name="alerts.send_test_message", ignore_result=True)
def send_test_message(destination_id: int) -> str:
    """Send a test message to a destination (an admin asked); "sent", "missing" or the error (logged)."""
    destination = Destination.objects.filter(pk=destination_id).first()
    if destination is None:
        return "missing"
    return services.send_test_message(destination) or "sent"


def _queue(planned: list[int]) -> int:
    for delivery_id in planned:
        # after the planning commit (it has, unless a caller wraps this in a transaction)
        transaction.on_commit(lambda pk=delivery_id: send_delivery.delay(pk))
    return len(planned)


@shared_task(name="alerts.send_delivery", bind=True, ignore_result=True, max_retries=None)
def send_delivery(self, delivery_id: int) -> str:
    """Send one delivery; a failure is recorded on its row and tried again after a back-off."""
    outcome = services.deliver(delivery_id)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status
