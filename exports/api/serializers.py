"""Serializers for export jobs, and the export request's one validator (``ExportRequestSerializer``).

The request serializer decides everything about a request (required fields, choices, key ids,
passphrase rules, recipient, filters) and is the request schema of POST /api/exports/, so the
OpenAPI document is the behaviour; ``exports.services.create_export`` receives its validated data.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC
from typing import Any

from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from capture import services as capture_services
from capture.choices import EncryptionAlgorithm
from capture.validation import ClosedSerializer, StrictField, VocabularyField
from exports import crypto, services
from exports.formats import RECORD_FORMATS
from exports.models import ExportJob, RecipientKey
from exports.services import MIN_PASSPHRASE


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


# --- the export request's contract -----------------------------------------------------------------
def _non_empty_text(data: Any) -> str:
    if not isinstance(data, str) or not data or "\x00" in data:
        # (PostgreSQL cannot store a NUL character: it was a 500 when the job was saved)
        raise serializers.ValidationError("must be a non-empty string without NUL characters")
    return data


class _NonEmptyText(StrictField, serializers.CharField):
    def to_internal_value(self, data: Any) -> str:
        return _non_empty_text(data)


@extend_schema_field({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]})
class _IPAddressField(StrictField, serializers.IPAddressField):
    def to_internal_value(self, data: Any) -> str:
        _non_empty_text(data)
        try:
            ipaddress.ip_address(data)
        except ValueError:
            # (the worker's query on PostgreSQL's inet column failed on anything else)
            raise serializers.ValidationError(f"{data!r} is not an IPv4 or IPv6 address") from None
        return data


class _DateTimeText(StrictField, serializers.DateTimeField):
    """An ISO 8601 date-time, kept as text: in UTC when it has an offset, as given when naive."""

    def to_internal_value(self, data: Any) -> str:
        try:
            parsed = parse_datetime(data) if isinstance(data, str) else None
            if parsed is not None and parsed.tzinfo is not None:
                # UTC: PostgreSQL refuses offsets beyond 15:59 that ISO 8601 allows
                data = parsed.astimezone(UTC).isoformat()
        except (ValueError, OverflowError):  # well formed but impossible, e.g. 2026-02-30T00:00:00Z
            parsed = None
        if parsed is None:
            raise serializers.ValidationError("must be an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z")
        return data


class _PortField(StrictField, serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int) or not 0 <= data <= 65535:
            raise serializers.ValidationError("must be an integer from 0 to 65535")
        return data


class _StrictBooleanField(StrictField, serializers.BooleanField):
    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            raise serializers.ValidationError("must be true or false")
        return data


class _KeyReference(StrictField, serializers.CharField):
    """Taken as sent: whether it is needed, and what it must be, depends on the algorithm (validate)."""

    def to_internal_value(self, data: Any) -> Any:
        return data


class _IncidentId(StrictField, serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int) or data < 1:
            raise serializers.ValidationError("must be the id of an incident (a positive whole number)")
        return data


# Filters that only some datasets read: sent with another dataset they are refused, never ignored.
_PCAP_ONLY_FILTERS = {"incident"}
_ROW_ONLY_FILTERS = {"protocol", "anomalies_only"}


class ExportFiltersSerializer(ClosedSerializer):
    """The ``filters`` object of an export request (no other keys are accepted; null means none)."""

    not_an_object = "must be an object"

    since = _DateTimeText(required=False)
    until = _DateTimeText(required=False)
    sensor = _NonEmptyText(required=False)
    ip = _IPAddressField(required=False)
    port = _PortField(required=False, min_value=0, max_value=65535)
    protocol = _NonEmptyText(required=False)
    anomalies_only = _StrictBooleanField(required=False)
    incident = _IncidentId(required=False, help_text="pcap dataset: the frames of this incident's packets")

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        if data is None:
            return (True, {})
        return super().validate_empty_values(data)

    def unknown_key_message(self, key: str) -> str:
        return f"unknown filter; known: {', '.join(sorted(self.fields))}"


def _configured_algorithm() -> str:
    return capture_services.get_config().encryption_algorithm


_AES_KEY_BYTES = {EncryptionAlgorithm.AES_256: 32, EncryptionAlgorithm.AES_192: 24}
# The key fields each algorithm reads. Any other key field sent is refused, never ignored: a
# passphrase sent with SHA was silently dropped and the file written in plaintext.
_KEY_FIELDS = ("key_id", "passphrase", "recipient", "public_key_pem")
_USES = {
    EncryptionAlgorithm.AES_256: {"key_id", "passphrase"},
    EncryptionAlgorithm.AES_192: {"key_id", "passphrase"},
    EncryptionAlgorithm.RSA: {"recipient", "public_key_pem"},
    EncryptionAlgorithm.SHA: set(),
}


def _unused_key_message(algorithm: str, key: str) -> str:
    if algorithm == EncryptionAlgorithm.SHA:
        return (
            f"SHA does not use {key}: SHA signs the file for integrity and does not encrypt it; "
            "choose AES-256 or AES-192 (key_id or passphrase) or RSA (recipient or public_key_pem) to encrypt"
        )
    uses = " or ".join(sorted(_USES[algorithm]))
    return f"{algorithm} does not use {key}; it takes {uses}"


class ExportRequestSerializer(ClosedSerializer):
    """POST /api/exports/ (and the prototype's POST /api/export): the one validator of a request.

    Its validated data is what ``exports.services.create_export`` needs: the job's fields (the key
    reference its algorithm uses, resolved) and the passphrase as sent.
    """

    dataset = VocabularyField(ExportJob.Dataset.choices, default=ExportJob.Dataset.PACKETS)
    format = VocabularyField(
        ExportJob.Format.choices, default=ExportJob.Format.JSON, hints={ExportJob.Format.JSON: "lines"}
    )
    algorithm = VocabularyField(
        EncryptionAlgorithm.choices,
        default=_configured_algorithm,
        hints={EncryptionAlgorithm.SHA: "integrity only"},
        help_text="Default: the configured encryption_algorithm. "
        "SHA gives integrity only, NOT confidentiality.",
    )
    key_id = _KeyReference(required=False, help_text="AES: a key id of NETMON_EXPORT_KEYS")
    passphrase = _KeyReference(
        required=False, min_length=MIN_PASSPHRASE, help_text="AES: stretched with scrypt; never stored"
    )
    recipient = _KeyReference(required=False, help_text="RSA: name of a registered recipient key")
    public_key_pem = _KeyReference(required=False, help_text="RSA: recipient public key, >= 2048 bits")
    filters = ExportFiltersSerializer(required=False)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, dict) and not data.get("algorithm"):
            # An empty or null algorithm means the default, like an absent one.
            data = {key: value for key, value in data.items() if key != "algorithm"}
        return super().to_internal_value(data)

    def error_rank(self, body_order: list[str]) -> Any:
        # The declared fields' order, with unknown keys (alphabetically) where the key references are.
        declared = list(self.fields)
        at = declared.index("key_id")
        return lambda key: (declared.index(key), "") if key in self.fields else (at, key)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        algorithm = attrs["algorithm"]
        unused = [key for key in _KEY_FIELDS if key in attrs and key not in _USES[algorithm]]
        if unused:
            raise serializers.ValidationError({key: _unused_key_message(algorithm, key) for key in unused})
        self._check_pcap(attrs)
        self._formats_of_dataset(attrs)
        job = {
            "dataset": attrs["dataset"],
            "format": attrs["format"],
            "algorithm": algorithm,
            "filters": attrs.get("filters", {}),
        }
        if algorithm in _AES_KEY_BYTES:
            job.update(self._aes_key(algorithm, attrs.get("key_id"), attrs.get("passphrase")))
        elif algorithm == EncryptionAlgorithm.RSA:
            job.update(self._rsa_recipient(attrs.get("recipient"), attrs.get("public_key_pem")))
        else:
            try:
                services.hmac_key()
            except crypto.ExportError as exc:
                raise serializers.ValidationError(
                    {"algorithm": f"SHA exports are not available on this server: {exc}"}
                ) from None
        if "passphrase" in attrs:
            job["passphrase"] = attrs["passphrase"]
        return job

    def _check_pcap(self, attrs: dict[str, Any]) -> None:
        """The pcap dataset is written as pcap (its default format) and reads its own filters."""
        pcap = ExportJob.Dataset.PCAP
        if attrs["dataset"] == pcap and "format" not in self.initial_data:
            attrs["format"] = ExportJob.Format.PCAP
        if attrs["dataset"] == pcap and attrs["format"] != ExportJob.Format.PCAP:
            message = "the pcap dataset is written as pcap: use format pcap"
            raise serializers.ValidationError({"format": message})
        if attrs["dataset"] != pcap and attrs["format"] == ExportJob.Format.PCAP:
            takes = ", ".join(services.formats_of(attrs["dataset"]))
            raise serializers.ValidationError(
                {"format": f"pcap is the format of the pcap dataset only; {attrs['dataset']} takes {takes}"}
            )
        filters = attrs.get("filters") or {}
        refused = _ROW_ONLY_FILTERS if attrs["dataset"] == pcap else _PCAP_ONLY_FILTERS
        wrong = sorted(refused & set(filters))
        if wrong:
            raise serializers.ValidationError(
                {"filters": {key: [f"not a filter of the {attrs['dataset']} dataset"] for key in wrong}}
            )
        if attrs["dataset"] == pcap and "incident" in filters and set(filters) - {"incident"}:
            raise serializers.ValidationError(
                {"filters": {"incident": ["an incident's frames take no other filter"]}}
            )

    @staticmethod
    def _formats_of_dataset(attrs: dict[str, Any]) -> None:
        """EVE lines are alerts (of incidents and anomalies), a Zeek conn.log lists flows; incidents
        have no protocol or port."""
        dataset, fmt = attrs["dataset"], attrs["format"]
        if fmt in RECORD_FORMATS and dataset not in services.RECORD_DATASETS[fmt]:
            takes = services.RECORD_DATASETS[fmt]
            noun = "datasets" if len(takes) > 1 else "dataset"
            raise serializers.ValidationError(
                {"format": f"{fmt} is for the {' and '.join(takes)} {noun}; "
                           f"{dataset} exports as {', '.join(services.formats_of(dataset))}"}
            )  # fmt: skip
        if dataset == ExportJob.Dataset.INCIDENTS:
            unused = [key for key in services.NOT_INCIDENT_FILTERS if key in attrs.get("filters", {})]
            if unused:
                allowed = ", ".join(k for k in ExportFiltersSerializer().fields if k not in unused)
                raise serializers.ValidationError(
                    {f"filters.{unused[0]}": f"not a filter of the incidents dataset; its filters: {allowed}"}
                )

    @staticmethod
    def _aes_key(algorithm: str, key_id: Any, passphrase: Any) -> dict[str, Any]:
        if (key_id is None) == (passphrase is None):
            raise serializers.ValidationError(
                {"key_id": f"{algorithm} needs exactly one of key_id (from NETMON_EXPORT_KEYS) or passphrase"}
            )
        if passphrase is not None:
            if not isinstance(passphrase, str) or len(passphrase) < MIN_PASSPHRASE:
                raise serializers.ValidationError(
                    {"passphrase": f"must be a string of at least {MIN_PASSPHRASE} characters"}
                )
            return {"uses_passphrase": True}
        try:
            ring = services.key_ring()
        except crypto.ExportError as exc:
            raise serializers.ValidationError({"key_id": f"server key ring unusable: {exc}"}) from None
        if not isinstance(key_id, str) or key_id not in ring:
            known = ", ".join(sorted(ring)) or "none configured (set NETMON_EXPORT_KEYS)"
            raise serializers.ValidationError({"key_id": f"unknown key id {key_id!r}; known: {known}"})
        if len(ring[key_id]) != _AES_KEY_BYTES[algorithm]:
            raise serializers.ValidationError(
                {"key_id": f"key {key_id!r} is not a {algorithm} key ({len(ring[key_id]) * 8} bits)"}
            )
        return {"key_id": key_id}

    @staticmethod
    def _rsa_recipient(recipient: Any, pem: Any) -> dict[str, Any]:
        if (recipient is None) == (pem is None):
            needs = "RSA needs exactly one of recipient (a registered key's name) or public_key_pem"
            raise serializers.ValidationError({"recipient": needs})
        if recipient is not None:
            found = (
                RecipientKey.objects.filter(name=recipient).first()
                if isinstance(recipient, str) and "\x00" not in recipient  # (a 500 on PostgreSQL)
                else None
            )
            if found is None:
                names = ", ".join(RecipientKey.objects.values_list("name", flat=True)) or "none registered"
                raise serializers.ValidationError(
                    {"recipient": f"no recipient key named {recipient!r}; registered: {names}"}
                )
            return {"recipient": found}
        if not isinstance(pem, str):
            raise serializers.ValidationError({"public_key_pem": "must be a PEM string"})
        try:
            services.validate_public_key(pem)
        except crypto.ExportError as exc:
            raise serializers.ValidationError({"public_key_pem": str(exc)}) from None
        return {"recipient_public_key_pem": pem}
