"""Notification destinations (apprise URLs) and the deliveries made to them."""

from __future__ import annotations

from django.db import models

from alerts.validation import redact, validate_apprise_url
from capture.choices import IncidentSeverity


class Destination(models.Model):
    """Where incident notifications go: an apprise URL, the least severity it is told about, on or off.

    Admins keep theirs in the admin; each URL of ``NETMON_NOTIFY_URLS`` has a row too
    (``from_settings``, kept in step with the variable by ``alerts.services``), so deliveries, rate
    limits and failures are counted the same way for both.
    """

    name = models.CharField(max_length=80, unique=True)
    # Holds the service's secrets (tokens, passwords): shown redacted in lists and messages.
    url = models.TextField(
        validators=[validate_apprise_url],
        help_text="an apprise URL, e.g. json://host:port/path, mailto://user:pass@host?to=ops@example.com, "
        "slack://TokenA/TokenB/TokenC (https://github.com/caronc/apprise/wiki)",
    )
    min_severity = models.CharField(
        max_length=8, choices=IncidentSeverity.choices, default=IncidentSeverity.LOW,
        help_text="incidents below this severity are not sent here",
    )  # fmt: skip
    enabled = models.BooleanField(default=True)
    from_settings = models.BooleanField(default=False, editable=False, help_text="from NETMON_NOTIFY_URLS")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def redacted_url(self) -> str:
        return redact(self.url)


class Delivery(models.Model):
    """One message about one incident at one severity to one destination, and how sending it went.

    Unique per destination, incident and severity: the dedup key, so a retried or re-run task never
    sends the same news twice. ``attempts`` counts tries, ``error`` keeps the last failure.
    """

    class Status(models.TextChoices):
        PENDING = "pending"  # planned, not tried yet
        SENDING = "sending"  # a worker is trying it
        RETRYING = "retrying"  # failed, tried again after a back-off
        SENT = "sent"
        FAILED = "failed"  # every attempt failed
        RATE_LIMITED = "rate_limited"  # over the destination's rate: not sent, summed up in the next message

    class Event(models.TextChoices):
        OPENED = "opened"
        RAISED = "raised"  # its severity rose after it was announced

    destination = models.ForeignKey(Destination, on_delete=models.CASCADE, related_name="deliveries")
    incident = models.ForeignKey("detection.Incident", on_delete=models.CASCADE, related_name="+")
    severity = models.CharField(max_length=8, choices=IncidentSeverity.choices)
    event = models.CharField(max_length=8, choices=Event.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    # rate_limited: told in a message sent to the destination since ("n held back by the rate limit")
    reported = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["destination", "incident", "severity"], name="alerts_delivery_once_per_severity"
            )
        ]
        indexes = [models.Index(fields=["destination", "created_at"], name="alerts_delivery_recent")]

    def __str__(self) -> str:
        return f"incident {self.incident_id} ({self.severity}) to {self.destination_id}: {self.status}"
