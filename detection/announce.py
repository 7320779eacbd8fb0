"""Telling the notifications about incidents: the task is queued by name (detection does not import
the alerts app, which reads detection), after the read's commit, and only with news.

News is an incident a read opened, or an open one whose severity it raised; the alerts app decides
who is told (``alerts.notify_incidents``). Queuing never raises into ingest: with the broker away the
news is lost (logged), the dashboards and the API still have the incidents. Like the live messages,
it is sent after the acknowledgement (``detection/ingest.py``'s order), so a worker dying between
the two loses it too.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

NOTIFY_TASK = "alerts.notify_incidents"


def queue_notifications(opened: list[int], raised: list[int]) -> bool:
    """Queue ``alerts.notify_incidents`` for these incidents when there are any; True if queued."""
    ids = sorted({*opened, *raised})
    if not ids:
        return False
    from celery import current_app

    try:
        current_app.send_task(NOTIFY_TASK, args=[ids])
    except Exception as exc:
        log.warning("could not queue notifications of incidents %s: %s", ids[:10], exc)
        return False
    return True
