"""Which incidents to announce where, the message, and sending it with apprise.

The flow: the ingest worker queues ``alerts.notify_incidents`` (by name, after its commit) with the
incidents a read opened or raised in severity; ``plan_deliveries`` decides, per enabled destination,
which of them it is told about (its minimum severity, not told this severity or a higher one before,
within its rate) and records a ``Delivery`` for each, unique per destination, incident and severity;
``deliver`` sends one (claiming it first, so two workers never send the same row) and records the
outcome. A failure is retried with a doubling back-off until ``NETMON_NOTIFY_ATTEMPTS``; nothing here
raises into ingest: apprise reports failures as results, and any other exception becomes the row's
error.

Over the rate limit (``NETMON_NOTIFY_RATE_PER_MINUTE`` per destination, sliding minute) a delivery is
recorded as ``rate_limited`` and not sent: it is counted (admin, ``/metrics``) and the next message
that goes to that destination says how many were held back and since when. Dropping rather
than queueing keeps a flood of incidents from turning into a backlog of stale messages.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import apprise
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from alerts.models import Delivery, Destination
from alerts.validation import DestinationRequestSerializer, redact, split_urls, url_problem
from capture.choices import IncidentKind, IncidentSeverity, IncidentStatus
from capture.validation import flat_errors
from detection.models import Incident

log = logging.getLogger(__name__)

RATE_WINDOW = timedelta(minutes=1)
# The sweep re-plans the incidents opened this recently (news lost between ingest and the notify task).
SWEEP_WINDOW = timedelta(hours=1)
SWEEP_LIMIT = 500
TARGETS_SHOWN = 5
_NOTIFY_TYPES = {
    IncidentSeverity.LOW: apprise.NotifyType.INFO,
    IncidentSeverity.MEDIUM: apprise.NotifyType.WARNING,
    IncidentSeverity.HIGH: apprise.NotifyType.FAILURE,
}


def severity_level(severity: str) -> int:
    """0 for low, 1 for medium, 2 for high (``IncidentSeverity`` is in rising order)."""
    return IncidentSeverity.values.index(severity)


# --- destinations ------------------------------------------------------------------------------------


def settings_destination_name(url: str) -> str:
    """A stable name for a ``NETMON_NOTIFY_URLS`` entry (its scheme and a hash: the URL holds secrets)."""
    scheme = url.split("://", 1)[0].lower()[:20]
    return f"NETMON_NOTIFY_URLS {scheme} {hashlib.sha256(url.encode()).hexdigest()[:10]}"


def sync_settings_destinations(text: str | None = None, min_severity: str | None = None) -> None:
    """Make the ``from_settings`` destinations those of ``NETMON_NOTIFY_URLS``: one enabled row per URL
    apprise can parse (others are skipped; the start-up warning named them), the rest disabled."""
    text = settings.NETMON_NOTIFY_URLS if text is None else text
    min_severity = min_severity or settings.NETMON_NOTIFY_MIN_SEVERITY
    wanted = {settings_destination_name(url): url for url in split_urls(text) if url_problem(url) is None}
    have = {d.name: d for d in Destination.objects.filter(from_settings=True)}
    for name, url in wanted.items():
        row = have.get(name)
        if row is None:  # get_or_create: two workers starting together make it once
            Destination.objects.get_or_create(
                name=name, defaults={"url": url, "min_severity": min_severity, "from_settings": True}
            )
        elif not row.enabled or row.min_severity != min_severity or row.url != url:
            Destination.objects.filter(pk=row.pk).update(enabled=True, min_severity=min_severity, url=url)
    Destination.objects.filter(from_settings=True, enabled=True).exclude(name__in=wanted).update(
        enabled=False
    )


class InvalidDestination(ValueError):
    """The validator refused a destination; ``errors`` holds one message per field."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


class ReadOnlyDestination(Exception):
    """A destination of ``NETMON_NOTIFY_URLS``: the variable owns it (it is synced back from it)."""

    def __init__(self, destination: Destination) -> None:
        super().__init__(
            f"destination {destination.pk} comes from NETMON_NOTIFY_URLS and is read-only: "
            "change the variable (and restart) to change or remove it"
        )


def validated_destination(data: object, partial: bool = False) -> dict:
    """``data`` through the destination's one validator; raises InvalidDestination naming each field."""
    body = DestinationRequestSerializer(data=data, partial=partial)
    if not body.is_valid():
        raise InvalidDestination(flat_errors(body.errors))
    return dict(body.validated_data)


def _save_destination(destination: Destination, fields: dict) -> Destination:
    name = fields.get("name", destination.name)
    if Destination.objects.filter(name=name).exclude(pk=destination.pk).exists():
        raise InvalidDestination({"name": f"a destination named {name!r} exists already"})
    for key, value in fields.items():
        setattr(destination, key, value)
    try:
        with transaction.atomic():
            destination.save()
    except IntegrityError:  # made by someone else between the check and the save
        raise InvalidDestination({"name": f"a destination named {name!r} exists already"}) from None
    return destination


def create_destination(data: object) -> Destination:
    """A new admin-made destination from a request body (validated here); raises InvalidDestination."""
    return _save_destination(Destination(), validated_destination(data))


def update_destination(destination: Destination, data: object) -> Destination:
    """Change some of an admin-made destination's fields; raises ReadOnlyDestination, InvalidDestination."""
    if destination.from_settings:
        raise ReadOnlyDestination(destination)
    return _save_destination(destination, validated_destination(data, partial=True))


def delete_destination(destination: Destination) -> None:
    """Remove an admin-made destination and its deliveries; raises ReadOnlyDestination."""
    if destination.from_settings:
        raise ReadOnlyDestination(destination)
    destination.delete()


# --- planning ----------------------------------------------------------------------------------------


def plan_deliveries(
    incident_ids: list[int], now: datetime | None = None, *, sweep: bool = False
) -> list[int]:
    """Record the deliveries the news about ``incident_ids`` calls for; the ids of those to send.

    An incident is announced when it is opened (a candidate never is) and not marked a false
    positive, to each enabled destination whose minimum severity it reaches, once per severity: a
    destination told ``medium`` is told again only when it reaches ``high`` (idempotent: a re-run
    finds the rows and plans nothing). Destinations are locked while planning, so two workers
    count the same rate window. ``sweep``: a destination is not told of incidents opened before it
    was made (an admin adding one is not sent the last hour's backlog).
    """
    sync_settings_destinations()
    now = now or timezone.now()
    incidents = sorted(
        Incident.objects.opened()
        .exclude(status=IncidentStatus.FALSE_POSITIVE)
        .filter(pk__in=list(incident_ids))
        .only("pk", "severity", "opened_at"),
        key=lambda i: (-severity_level(i.severity), i.opened_at, i.pk),
    )
    if not incidents:
        return []
    to_send: list[int] = []
    with transaction.atomic():
        for destination in Destination.objects.select_for_update().filter(enabled=True).order_by("pk"):
            eligible = [i for i in incidents if not sweep or i.opened_at >= destination.created_at]
            to_send += _plan_for(destination, eligible, now)
    return to_send


def sweep_unannounced(now: datetime | None = None) -> list[int]:
    """Plan the deliveries whose news never reached ``notify_incidents``; the ids of those to send.

    The ingest worker queues the news after its commit and acknowledgement: a broker away or a worker
    dying in between loses it (``detection/announce.py``). Planning is idempotent, so re-planning the
    incidents opened in the last ``SWEEP_WINDOW``, and those still growing in it (an incident that
    opened hours ago can still rise), newest ``SWEEP_LIMIT`` of each, sends exactly what is missing:
    nothing when every destination was told, the opening or a rise when it was lost.
    """
    now = now or timezone.now()
    since = now - SWEEP_WINDOW
    candidates = Incident.objects.opened().exclude(status=IncidentStatus.FALSE_POSITIVE)
    opened = candidates.filter(opened_at__gte=since, opened_at__lte=now).order_by("-opened_at")
    # last_seen is the packets' time: the wall clock for live capture, which is where rises come late
    growing = candidates.filter(last_seen__gte=since, last_seen__lte=now).order_by("-last_seen")
    recent = {
        *opened.values_list("pk", flat=True)[:SWEEP_LIMIT],
        *growing.values_list("pk", flat=True)[:SWEEP_LIMIT],
    }
    return plan_deliveries(sorted(recent), now, sweep=True) if recent else []


def _plan_for(destination: Destination, incidents: list[Incident], now: datetime) -> list[int]:
    floor = severity_level(destination.min_severity)
    told: dict[int, int] = {}
    for incident_id, severity in Delivery.objects.filter(
        destination=destination, incident_id__in=[i.pk for i in incidents]
    ).values_list("incident_id", "severity"):
        told[incident_id] = max(told.get(incident_id, -1), severity_level(severity))
    recent = (
        Delivery.objects.filter(destination=destination, created_at__gt=now - RATE_WINDOW)
        .exclude(status=Delivery.Status.RATE_LIMITED)
        .count()
    )
    planned: list[int] = []
    for incident in incidents:
        level = severity_level(incident.severity)
        if level < floor or told.get(incident.pk, -1) >= level:
            continue
        within = recent < settings.NETMON_NOTIFY_RATE_PER_MINUTE
        delivery, created = Delivery.objects.get_or_create(
            destination=destination, incident=incident, severity=incident.severity,
            defaults={
                "event": Delivery.Event.RAISED if incident.pk in told else Delivery.Event.OPENED,
                "status": Delivery.Status.PENDING if within else Delivery.Status.RATE_LIMITED,
            },
        )  # fmt: skip
        if created and within:
            recent += 1
            planned.append(delivery.pk)
        elif not within:
            log.info("notification of incident %s to %s over the rate limit", incident.pk, destination.name)
    return planned


# --- the message -------------------------------------------------------------------------------------


def incident_link(incident_id: int) -> str:
    return f"{settings.NETMON_PUBLIC_URL}/incidents/{incident_id}/"


def compose(delivery: Delivery, held_back: int = 0, held_since: datetime | None = None) -> tuple[str, str]:
    """The title and body: kind, sources → targets, severity, the first explanation line, the link."""
    incident = delivery.incident
    kind = IncidentKind(incident.kind).label if incident.kind in IncidentKind.values else incident.kind
    news = "opened" if delivery.event == Delivery.Event.OPENED else "severity rose"
    title = f"Netmon: {delivery.severity} {kind} ({news}) on {incident.sensor.name}"
    sources = ", ".join(incident.sources) or incident.entity or "unknown source"
    targets = ", ".join(incident.targets[:TARGETS_SHOWN]) or "no single target"
    more = len(incident.targets) - TARGETS_SHOWN + incident.targets_more
    if len(incident.targets) > TARGETS_SHOWN or incident.targets_more:
        targets += f" and {max(more, 0)} more"
    explanation = next((line.strip() for line in incident.explanation.splitlines() if line.strip()), "")
    lines = [
        f"{kind}, severity {delivery.severity} ({news})",
        f"{sources} → {targets}",
        *([explanation] if explanation else []),
        incident_link(incident.pk),
    ]
    if held_back:
        since = f" since {held_since:%Y-%m-%d %H:%M:%S} UTC" if held_since else ""
        lines.append(
            f"({held_back} other notification(s) to this destination were held back by the rate limit{since})"
        )
    return title, "\n".join(lines)


# --- sending -----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What ``deliver`` did: ``retry_in`` seconds when another attempt is due, else None."""

    status: str
    attempts: int = 0
    error: str = ""
    retry_in: float | None = None


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: doubling from NETMON_NOTIFY_BACKOFF."""
    return settings.NETMON_NOTIFY_BACKOFF * 2 ** max(attempts - 1, 0)


def _claim_timeout() -> timedelta:
    # A row left "sending" longer than an attempt can take belongs to a worker that died mid-send.
    return timedelta(seconds=max(60.0, 4 * settings.NETMON_NOTIFY_TIMEOUT))


def send(url: str, title: str, body: str, notify_type: str) -> str:
    """Send one message with apprise; "" on success, else what went wrong (never raises)."""
    try:
        sender = apprise.Apprise()
        if not sender.add(url):
            return url_problem(url) or f"apprise cannot parse {redact(url)!r}"
        result = sender.notify(
            body=body, title=title, notify_type=notify_type, timeout=settings.NETMON_NOTIFY_TIMEOUT
        )
        if result:
            return ""
        errors = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR", "CRITICAL")]
        return "; ".join(errors) or f"apprise: {result.status}"
    except Exception as exc:  # a plugin's bug must not kill the task: it is this delivery's error
        return f"{type(exc).__name__}: {exc}"


def send_test_message(destination: Destination) -> str:
    """Send a test message to ``destination`` now (enabled or not); "" on success, else the error."""
    title = f"Netmon: test message to {destination.name}"
    body = (
        f"This is a test from Netmon ({settings.NETMON_PUBLIC_URL}). Incidents of severity "
        f"{destination.min_severity} and above are announced here"
        + ("." if destination.enabled else " once the destination is enabled.")
    )
    error = send(destination.url, title, body, apprise.NotifyType.INFO)
    if error:
        log.warning("test message to %s failed: %s", destination.name, error)
    else:
        log.info("test message to %s sent", destination.name)
    return error


def deliver(delivery_id: int) -> Outcome:
    """Try to send delivery ``delivery_id`` once, if it is due; record and return the outcome.

    Idempotent: a delivery sent, failed for good or rate-limited is left alone, and a worker claims
    the row (``sending``) before sending, so a redelivered task does not send it twice.
    """
    stale = timezone.now() - _claim_timeout()
    due = Q(status__in=[Delivery.Status.PENDING, Delivery.Status.RETRYING]) | Q(
        status=Delivery.Status.SENDING, updated_at__lt=stale
    )
    claimed = Delivery.objects.filter(due, pk=delivery_id).update(
        status=Delivery.Status.SENDING, attempts=F("attempts") + 1, updated_at=timezone.now()
    )
    delivery = (
        Delivery.objects.select_related("destination", "incident__sensor").filter(pk=delivery_id).first()
    )
    if delivery is None:
        return Outcome(status="missing")
    if not claimed:
        return Outcome(status=delivery.status, attempts=delivery.attempts, error=delivery.error)
    if not delivery.destination.enabled:
        error = "the destination was disabled before the message was sent"
    else:
        held = _held_back(delivery)
        title, body = compose(delivery, len(held), held[0].created_at if held else None)
        error = send(delivery.destination.url, title, body, _NOTIFY_TYPES[delivery.severity])
        if not error and held:
            Delivery.objects.filter(pk__in=[d.pk for d in held]).update(reported=True)
    if not error:
        status, retry_in = Delivery.Status.SENT, None
    elif delivery.attempts < settings.NETMON_NOTIFY_ATTEMPTS and delivery.destination.enabled:
        status, retry_in = Delivery.Status.RETRYING, backoff(delivery.attempts)
    else:
        status, retry_in = Delivery.Status.FAILED, None
    now = timezone.now()
    Delivery.objects.filter(pk=delivery_id).update(
        status=status,
        error=error[:2000],
        updated_at=now,
        sent_at=now if status == Delivery.Status.SENT else None,
    )
    if error:
        log.warning(
            "notification of incident %s to %s failed (attempt %d, %s): %s",
            delivery.incident_id, delivery.destination.name, delivery.attempts, status, error,
        )  # fmt: skip
    return Outcome(status=status, attempts=delivery.attempts, error=error, retry_in=retry_in)


def _held_back(delivery: Delivery) -> list[Delivery]:
    """Rate-limited deliveries to the destination that no message sent there has told of yet."""
    return list(
        Delivery.objects.filter(
            destination_id=delivery.destination_id, status=Delivery.Status.RATE_LIMITED, reported=False
        )
        .only("pk", "created_at")
        .order_by("created_at")
    )
