"""Celery tasks of capture: retention (beat)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from capture import services


@shared_task(name="capture.prune_retention", ignore_result=True)
def prune_retention() -> dict[str, int]:
    """Keep at most NETMON_RETENTION_PACKETS packets and NETMON_RETENTION_DAYS days of history."""
    return services.prune_retention(settings.NETMON_RETENTION_PACKETS, settings.NETMON_RETENTION_DAYS)
