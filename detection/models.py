"""Detection's data: trained model versions, anomalies, the incidents that group them, and the
suppression rules that keep known traffic from opening incidents."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from capture.choices import IncidentKind, IncidentSeverity, IncidentStatus, MlModel


class DetectionModel(models.Model):
    """A trained, versioned detector (scaler + model + threshold) whose artifact lives on disk."""

    class Status(models.TextChoices):
        TRAINING = "training"
        READY = "ready"
        FAILED = "failed"

    kind = models.CharField(max_length=20, choices=MlModel.choices)
    version = models.PositiveIntegerField()
    feature_level = models.CharField(max_length=16)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.TRAINING)
    progress = models.FloatField(default=0.0)
    error = models.TextField(blank=True, default="")
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    source = models.CharField(
        max_length=255, blank=True, default="", help_text="pcap files or packet time range"
    )
    data_from = models.DateTimeField(null=True, blank=True)
    data_until = models.DateTimeField(null=True, blank=True)
    packet_count = models.BigIntegerField(default=0)
    threshold = models.FloatField(null=True, blank=True)
    training_seconds = models.FloatField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    artifact_path = models.CharField(max_length=512, blank=True, default="")
    artifact_sha256 = models.CharField(
        max_length=64, blank=True, default="", help_text="digest of the artifact files, recorded at training"
    )

    class Meta:
        ordering = ["kind", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "version"], name="detectionmodel_unique_version"),
            models.UniqueConstraint(
                fields=["kind"], condition=models.Q(is_active=True), name="detectionmodel_one_active_per_kind"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} v{self.version} ({self.feature_level}){' active' if self.is_active else ''}"


class IncidentQuerySet(models.QuerySet):
    """Incidents; ``opened()`` leaves out candidates (evidence not yet sustained, detection.opening)."""

    def opened(self) -> IncidentQuerySet:
        return self.filter(opened_at__isnull=False)


class Incident(models.Model):
    """The anomalies of one abnormal entity (a client host or an attacked service) while it keeps triggering.

    The unit of alerting: what happened (``kind``, ``severity``, ``explanation``), who did it
    (``sources``) and what it hit (``targets``: ``IP`` or ``IP:port/proto``, the first
    ``TARGETS_KEPT`` distinct ones, ``targets_more`` counting the rest), filled by the worker as
    the incident grows (detection.incidents), and what an operator decided (``status``, who, when).
    ``evidence`` holds the bounded counters the kind is decided from, so that it can be decided
    again on all the evidence when the incident grows.
    """

    sensor = models.ForeignKey("capture.Sensor", on_delete=models.CASCADE, related_name="incidents")
    # Whose behaviour is abnormal: "host <address>" (a scanner, a flooder) or "service <IP:port/proto>"
    # (a service many clients hit at once); detection.incidents decides it.
    entity = models.CharField(max_length=80, blank=True, default="", db_index=True)
    src_ip = models.GenericIPAddressField(null=True, blank=True, db_index=True)
    kind = models.CharField(
        max_length=20, choices=IncidentKind.choices, default=IncidentKind.UNUSUAL_TRAFFIC, db_index=True
    )
    severity = models.CharField(
        max_length=8, choices=IncidentSeverity.choices, default=IncidentSeverity.LOW, db_index=True
    )
    status = models.CharField(
        max_length=16, choices=IncidentStatus.choices, default=IncidentStatus.OPEN, db_index=True
    )
    sources = models.JSONField(default=list, blank=True)
    targets = models.JSONField(default=list, blank=True)
    targets_more = models.PositiveIntegerField(default=0, help_text="distinct targets beyond those listed")
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)
    # Wall clock when its evidence became sustained and Netmon opened it; empty while it is a candidate
    # (not listed, announced or notified; detection.opening).
    opened_at = models.DateTimeField(null=True, blank=True, db_index=True)
    anomaly_count = models.PositiveIntegerField(default=0)
    packet_count = models.PositiveBigIntegerField(
        default=0, help_text="packets its sources sent in the reads that added to it"
    )
    peak_score = models.FloatField(default=0.0)
    explanation = models.TextField(blank=True, default="")
    evidence = models.JSONField(default=dict, blank=True)
    # Community ID of its first anomaly's flow (set when it is created, never changed): the flow of
    # its SIEM alert lines (detection.eve).
    community_id = models.CharField(max_length=32, blank=True, default="", db_index=True)
    status_changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status_changed_at = models.DateTimeField(null=True, blank=True)

    objects = IncidentQuerySet.as_manager()

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return (
            f"{self.kind} of {self.entity or self.src_ip or 'unknown source'} "
            f"{self.first_seen:%H:%M:%S}-{self.last_seen:%H:%M:%S}"
        )


class SuppressionRule(models.Model):
    """Anomalies an operator decided are known and need no incident: who, what, why and until when.

    A rule matches an anomaly group when every criterion it sets matches (one left empty matches
    anything): its source address within ``source_cidr``, its target host within ``target_cidr``,
    its target ``port``, its incident ``kind``. At least one criterion is set (a rule matching
    everything is refused by the validator, ``detection.validation``, and by a constraint). An
    expired rule (``expires_at`` passed; None: never) matches nothing. Suppressed anomalies are
    still stored, with the rule that suppressed them (``Anomaly.suppressed_by``), and counted in
    ``hits``. Matching: ``detection.suppression.RuleSet``.
    """

    # CIDRs are stored normalised ("10.0.0.0/24", a bare address as "10.0.0.5/32"); "" = any.
    source_cidr = models.CharField(max_length=64, blank=True, default="")
    target_cidr = models.CharField(max_length=64, blank=True, default="")
    port = models.PositiveIntegerField(null=True, blank=True, help_text="the target port; empty: any")
    kind = models.CharField(
        max_length=20, choices=IncidentKind.choices, blank=True, default="", help_text="empty: any kind"
    )
    reason = models.TextField()
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True, help_text="empty: never")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    incident = models.ForeignKey(
        Incident, null=True, blank=True, on_delete=models.SET_NULL, related_name="suppression_rules",
        help_text="the incident it was made from",
    )  # fmt: skip
    hits = models.PositiveBigIntegerField(default=0, help_text="anomalies it suppressed")
    last_hit_at = models.DateTimeField(null=True, blank=True)

    CRITERIA = ("source_cidr", "target_cidr", "port", "kind")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(source_cidr="")
                | ~models.Q(target_cidr="")
                | models.Q(port__isnull=False)
                | ~models.Q(kind=""),
                name="suppressionrule_has_a_criterion",
            )
        ]

    def __str__(self) -> str:
        return f"suppress {self.criteria_text()}"

    def is_active(self, now=None) -> bool:
        """Not expired at ``now`` (default: the current time)."""
        return self.expires_at is None or self.expires_at > (now or timezone.now())

    def criteria_text(self) -> str:
        """The criteria it sets, in words ("from 10.0.0.0/24 to 10.0.0.5/32 port 22 kind brute_force")."""
        parts = []
        if self.source_cidr:
            parts.append(f"from {self.source_cidr}")
        if self.target_cidr:
            parts.append(f"to {self.target_cidr}")
        if self.port is not None:
            parts.append(f"port {self.port}")
        if self.kind:
            parts.append(f"kind {self.kind}")
        return " ".join(parts) or "(no criterion)"


class Anomaly(models.Model):
    """A packet scored over its model's threshold, with the reason in words."""

    sensor = models.ForeignKey("capture.Sensor", on_delete=models.CASCADE, related_name="anomalies")
    incident = models.ForeignKey(
        Incident, null=True, blank=True, on_delete=models.SET_NULL, related_name="anomalies"
    )
    packet_seq = models.BigIntegerField()
    ts = models.DateTimeField(db_index=True)
    protocol = models.CharField(max_length=12, blank=True, default="")
    src_ip = models.GenericIPAddressField(null=True, blank=True, db_index=True)
    dst_ip = models.GenericIPAddressField(null=True, blank=True)
    src_port = models.PositiveIntegerField(default=0)
    dst_port = models.PositiveIntegerField(default=0)
    community_id = models.CharField(max_length=32, blank=True, default="", db_index=True)  # its flow's
    score = models.FloatField()
    threshold = models.FloatField()
    model_kind = models.CharField(max_length=20)
    model_versions = models.JSONField(default=dict)
    explanation = models.TextField()
    contributions = models.JSONField(default=list)
    false_positive = models.BooleanField(default=False, db_index=True)
    # Who said "this is normal", and when: a false positive teaches the next training that such
    # traffic is benign, so the mark is an audited decision, not an anonymous flag.
    false_positive_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    false_positive_at = models.DateTimeField(null=True, blank=True)
    # Suppressed anomalies are still stored, with the rule that suppressed them; they open no incident.
    suppressed_by = models.ForeignKey(
        SuppressionRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="suppressed_anomalies"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-ts", "-id"]
        verbose_name_plural = "anomalies"
        constraints = [
            models.UniqueConstraint(fields=["sensor", "packet_seq"], name="anomaly_unique_sensor_seq")
        ]

    def __str__(self) -> str:
        return f"{self.src_ip} score {self.score:.2f} > {self.threshold:.2f}"
