"""Capture's data: the monitoring configuration and its history, sensors, packets, flows, batch receipts."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from capture.choices import (
    BPF_MAX_LENGTH,
    BUFFER_SIZE_MAX,
    BUFFER_SIZE_MIN,
    INTERFACE_MAX_LENGTH,
    AnalysisDepth,
    EncryptionAlgorithm,
    FeatureLevel,
    MlModel,
)


class MonitorConfig(models.Model):
    """The active monitoring configuration: a single row (pk=1) holding the prototype's keys."""

    network_interface = models.CharField(
        max_length=INTERFACE_MAX_LENGTH,
        default="eth0",
        help_text="Capture interface name, or 'demo' for simulated traffic.",
    )
    bpf_filter = models.CharField(
        max_length=BPF_MAX_LENGTH,
        blank=True,
        default="",
        help_text="Capture filter (BPF syntax), compiled before saving.",
    )
    buffer_size = models.PositiveIntegerField(
        default=1000,
        validators=[MinValueValidator(BUFFER_SIZE_MIN), MaxValueValidator(BUFFER_SIZE_MAX)],
        help_text="Packets the capture may hold unprocessed (in memory and in Redis) "
        "before dropping the oldest.",
    )
    analysis_depth = models.CharField(
        max_length=16, choices=AnalysisDepth.choices, default=AnalysisDepth.BASIC
    )
    ml_model = models.CharField(max_length=20, choices=MlModel.choices, default=MlModel.AUTOENCODER)
    feature_level = models.CharField(
        max_length=16, choices=FeatureLevel.choices, default=FeatureLevel.ADVANCED
    )
    encryption_algorithm = models.CharField(
        max_length=8, choices=EncryptionAlgorithm.choices, default=EncryptionAlgorithm.RSA
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "monitor configuration"
        verbose_name_plural = "monitor configuration"

    def __str__(self) -> str:
        return f"configuration ({self.network_interface}, {self.analysis_depth}, {self.ml_model})"


class ConfigChange(models.Model):
    """One change to the configuration: who made it, when, and the old and new values of each key."""

    changed_at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    source = models.CharField(max_length=16, default="api", help_text="api, websocket or admin")
    old_values = models.JSONField(default=dict)
    new_values = models.JSONField(default=dict)

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.changed_at:%Y-%m-%d %H:%M:%S} {', '.join(sorted(self.new_values))}"


class Sensor(models.Model):
    """A capture process's identity and its durable counters (what it read, published, dropped)."""

    class Mode(models.TextChoices):
        LIVE = "live"
        PCAP = "pcap"
        DEMO = "demo"

    class State(models.TextChoices):
        RUNNING = "running"
        STOPPED = "stopped"
        EXITED = "exited"

    name = models.CharField(max_length=64, unique=True)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.DEMO)
    mode_reason = models.CharField(max_length=255, blank=True, default="")
    state = models.CharField(max_length=8, choices=State.choices, default=State.EXITED)
    interface = models.CharField(max_length=64, blank=True, default="")
    bpf_filter = models.CharField(max_length=1024, blank=True, default="")
    analysis_depth = models.CharField(max_length=16, blank=True, default="")
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    # Written by the capture process (cumulative over restarts).
    packets_read = models.BigIntegerField(default=0)
    packets_published = models.BigIntegerField(default=0)
    packets_undecodable = models.BigIntegerField(default=0)
    packets_dropped_capture = models.BigIntegerField(default=0)
    drop_reasons = models.JSONField(default=dict, blank=True)
    last_seq_published = models.BigIntegerField(default=0)
    # pcap resume points: "path|size|mtime" -> first seq given to that file, so a restarted capture
    # numbers the same frames the same way and the workers skip what they already stored.
    checkpoints = models.JSONField(default=dict, blank=True)
    # Written by the workers, in the same transaction as the packets.
    packets_stored = models.BigIntegerField(default=0)
    packets_scored = models.BigIntegerField(default=0)
    packets_dropped_stream = models.BigIntegerField(default=0)
    last_seq_ingested = models.BigIntegerField(default=0)

    class Meta:
        # Starting, stopping and filtering capture decides what the monitor sees: a permission of
        # its own (the admin role's), not a side effect of being allowed to edit sensor rows.
        permissions = [("control_capture", "Can start and stop capture and change its filter")]

    def __str__(self) -> str:
        return self.name

    @property
    def packets_dropped(self) -> int:
        return self.packets_dropped_capture + self.packets_dropped_stream


class Packet(models.Model):
    """One captured packet, decoded to its headers (and application fields in deep mode)."""

    # Every index costs each of the many inserts: the (sensor, seq) constraint already serves lookups
    # by sensor, and the protocol (a handful of values) is filtered beside a time range or an IP.
    sensor = models.ForeignKey(Sensor, on_delete=models.CASCADE, related_name="packets", db_index=False)
    seq = models.BigIntegerField()
    ts = models.DateTimeField(db_index=True)
    interface = models.CharField(max_length=64, blank=True, default="")
    src_mac = models.CharField(max_length=17, blank=True, default="")
    dst_mac = models.CharField(max_length=17, blank=True, default="")
    ip_version = models.PositiveSmallIntegerField(default=0)
    protocol = models.CharField(max_length=12)
    src_ip = models.GenericIPAddressField(null=True, blank=True, db_index=True)
    dst_ip = models.GenericIPAddressField(null=True, blank=True, db_index=True)
    src_port = models.PositiveIntegerField(default=0)
    dst_port = models.PositiveIntegerField(default=0)
    length = models.PositiveIntegerField(default=0)
    payload_len = models.PositiveIntegerField(default=0)
    tcp_flags = models.PositiveSmallIntegerField(default=0)
    ttl = models.PositiveSmallIntegerField(default=0)
    vlan = models.PositiveSmallIntegerField(default=0)
    app_protocol = models.CharField(max_length=32, blank=True, default="")
    dns_query = models.CharField(max_length=255, blank=True, default="")
    http_host = models.CharField(max_length=255, blank=True, default="")
    http_method = models.CharField(max_length=16, blank=True, default="")
    tls_sni = models.CharField(max_length=255, blank=True, default="")
    decode_error = models.CharField(max_length=64, blank=True, default="")
    # The model's score when it was over the threshold (an anomaly), written with the packet: a
    # flood's packets are not each given an anomaly row, and this is what remains of each of them.
    anomaly_score = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-ts", "-seq"]
        constraints = [models.UniqueConstraint(fields=["sensor", "seq"], name="packet_unique_sensor_seq")]
        permissions = [("download_evidence", "Can download evidence pcaps (the raw frames kept by capture)")]

    def __str__(self) -> str:
        route = f"{self.src_ip}:{self.src_port} > {self.dst_ip}:{self.dst_port}"
        return f"{self.sensor_id}#{self.seq} {self.protocol} {route}"


class Flow(models.Model):
    """Packets aggregated by sensor and 5-tuple (protocol, addresses, ports) with first/last seen."""

    # No index of its own: the five-tuple's unique index starts with sensor_id and serves lookups by
    # sensor; a second index only cost every flow row under a scan (one B-tree more per probe).
    sensor = models.ForeignKey(Sensor, on_delete=models.CASCADE, related_name="flows", db_index=False)
    protocol = models.CharField(max_length=12)
    src_ip = models.GenericIPAddressField()
    src_port = models.PositiveIntegerField(default=0)
    dst_ip = models.GenericIPAddressField()
    dst_port = models.PositiveIntegerField(default=0)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)
    packets = models.BigIntegerField(default=0)
    bytes = models.BigIntegerField(default=0)
    # Community ID v1 (capture.community), the same for both directions of a conversation: what a
    # SIEM joins our flows on with Zeek's and Suricata's. Indexed: packets are found by it through
    # their flows (a column on the packet table would cost every insert for a rare lookup).
    community_id = models.CharField(max_length=32, blank=True, default="", db_index=True)

    class Meta:
        ordering = ["-last_seen"]
        constraints = [
            models.UniqueConstraint(
                fields=["sensor", "protocol", "src_ip", "src_port", "dst_ip", "dst_port"],
                name="flow_unique_five_tuple",
            )
        ]

    def __str__(self) -> str:
        return f"{self.protocol} {self.src_ip}:{self.src_port} > {self.dst_ip}:{self.dst_port}"


class IngestedBatch(models.Model):
    """Receipt of a stored batch: makes storing a batch idempotent (sensor + first sequence number)."""

    sensor = models.ForeignKey(Sensor, on_delete=models.CASCADE, related_name="batches")
    first_seq = models.BigIntegerField()
    last_seq = models.BigIntegerField()
    count = models.PositiveIntegerField()
    stream_id = models.CharField(max_length=32)
    ingested_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["sensor", "first_seq"], name="batch_unique_sensor_seq")
        ]

    def __str__(self) -> str:
        return f"{self.sensor_id} {self.first_seq}-{self.last_seq}"
