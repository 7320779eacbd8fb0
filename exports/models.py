"""Exports' data: export jobs (what, how encrypted, status, result) and registered recipient keys."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from capture.choices import EncryptionAlgorithm


class RecipientKey(models.Model):
    """An RSA public key (PEM, >= 2048 bits) that exports can be encrypted to."""

    name = models.CharField(max_length=100, unique=True)
    public_key_pem = models.TextField()
    fingerprint = models.CharField(max_length=64, editable=False, help_text="SHA-256 of the DER public key")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint[:16]})"


class ExportJob(models.Model):
    """One export: the rows it selects, its format and encryption, its progress and its file."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        EXPIRED = "expired"

    class Dataset(models.TextChoices):
        PACKETS = "packets"
        FLOWS = "flows"
        ANOMALIES = "anomalies"
        PCAP = "pcap"  # the evidence frames capture keeps (capture/evidence.py), written as pcap
        INCIDENTS = "incidents"

    class Format(models.TextChoices):
        JSON = "json", "JSON Lines"
        JSON_ARRAY = "json-array", "JSON array"
        CSV = "csv", "CSV"
        PCAP = "pcap", "pcap (classic libpcap; the pcap dataset only)"
        EVE = "eve", "Suricata EVE JSON"  # incidents and anomalies only (exports.services.RECORD_DATASETS)
        ZEEK_CONN = "zeek-conn", "Zeek conn.log"  # flows only

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="exports")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    dataset = models.CharField(max_length=10, choices=Dataset.choices, default=Dataset.PACKETS)
    format = models.CharField(max_length=10, choices=Format.choices, default=Format.JSON)
    algorithm = models.CharField(max_length=8, choices=EncryptionAlgorithm.choices)
    key_id = models.CharField(max_length=64, blank=True, default="", help_text="NETMON_EXPORT_KEYS key id")
    uses_passphrase = models.BooleanField(default=False)
    recipient = models.ForeignKey(RecipientKey, null=True, blank=True, on_delete=models.SET_NULL)
    recipient_public_key_pem = models.TextField(blank=True, default="")
    filters = models.JSONField(default=dict, blank=True)
    rows_written = models.BigIntegerField(default=0)
    row_count = models.BigIntegerField(null=True, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    plaintext_sha256 = models.CharField(max_length=64, blank=True, default="")
    file_sha256 = models.CharField(max_length=64, blank=True, default="")
    error = models.TextField(blank=True, default="")
    file_path = models.CharField(max_length=512, blank=True, default="")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.dataset} {self.format} {self.algorithm} ({self.status})"
