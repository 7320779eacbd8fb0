"""Serializers for export jobs (the request body itself is validated by exports.services.create_export)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from capture.choices import EncryptionAlgorithm
from exports.models import ExportJob


class ExportJobSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = ExportJob
        fields = [
            "id",
            "url",
            "download_url",
            "status",
            "dataset",
            "format",
            "algorithm",
            "key_id",
            "uses_passphrase",
            "filters",
            "rows_written",
            "row_count",
            "size_bytes",
            "plaintext_sha256",
            "file_sha256",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "expires_at",
        ]

    def get_url(self, job: ExportJob) -> str:
        return f"/api/exports/{job.id}/"

    def get_download_url(self, job: ExportJob) -> str | None:
        return f"/api/exports/{job.id}/download" if job.status == ExportJob.Status.SUCCEEDED else None


@extend_schema_field({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]})
class _IPAddressField(serializers.IPAddressField):
    pass


class ExportFiltersSerializer(serializers.Serializer):
    """Documents the ``filters`` object of an export request (no other keys are accepted)."""

    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    sensor = serializers.CharField(required=False)
    ip = _IPAddressField(required=False)
    port = serializers.IntegerField(required=False, min_value=0, max_value=65535)
    protocol = serializers.CharField(required=False)
    anomalies_only = serializers.BooleanField(required=False)


class ExportRequestSerializer(serializers.Serializer):
    """Documents POST /api/exports/ (and the prototype's POST /api/export)."""

    dataset = serializers.ChoiceField(["packets", "flows", "anomalies"], default="packets")
    format = serializers.ChoiceField(["json", "json-array", "csv"], default="json")
    algorithm = serializers.ChoiceField(
        EncryptionAlgorithm.choices,
        required=False,
        help_text="Default: the configured encryption_algorithm. "
        "SHA gives integrity only, NOT confidentiality.",
    )
    key_id = serializers.CharField(required=False, help_text="AES: a key id of NETMON_EXPORT_KEYS")
    passphrase = serializers.CharField(
        required=False, min_length=8, help_text="AES: stretched with scrypt; never stored"
    )
    recipient = serializers.CharField(required=False, help_text="RSA: name of a registered recipient key")
    public_key_pem = serializers.CharField(
        required=False, help_text="RSA: recipient public key, >= 2048 bits"
    )
    filters = ExportFiltersSerializer(required=False)
