"""A suppression rule's contract: the one validator of a rule, for the API, the admin and the services.

``SuppressionRuleRequestSerializer`` decides a rule (``POST /api/suppressions/``, the admin's
form, and ``detection.suppression.rule_from_incident`` for the one-click route and the admin
action): each CIDR an IPv4/IPv6 network or a bare address (stored normalised, a bare address as
/32 or /128), the port 0-65535, the kind one of ``IncidentKind``, a non-empty reason, an expiry
in the future (or null: never), and at least one of the four criteria. Each refusal names its
field and what is allowed. ``SuppressFromIncidentSerializer`` is the optional body of
``POST /api/incidents/{id}/suppress/`` (reason and expiry only; the criteria come from the incident).
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from capture.choices import IncidentKind
from capture.validation import NON_FIELD, ClosedSerializer, StrictField

REASON_MAX_LENGTH = 1000
CRITERIA = ("source_cidr", "target_cidr", "port", "kind")
NO_CRITERION = (
    "a rule needs at least one of source_cidr, target_cidr, port, kind "
    "(a rule matching everything is refused)"
)
_KINDS = ", ".join(IncidentKind.values)


def normalise_cidr(text: str) -> str:
    """``text`` as a network in canonical form ("10.0.0.0/24"; a bare address as /32 or /128).

    An IPv4-mapped IPv6 network (``::ffff:10.0.0.0/120``) becomes its IPv4 network, as the worker
    sees IPv4 addresses. Raises ValueError saying what is allowed.
    """
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            wider = ipaddress.ip_network(text.strip(), strict=False)
            raise ValueError(f"{text!r} has host bits set; did you mean {wider}?") from None
        raise ValueError(
            f"{text!r} is not an IPv4 or IPv6 network: use a CIDR (10.0.0.0/24, 2001:db8::/32) or an address"
        ) from None
    if network.version == 6 and network.prefixlen >= 96 and network.network_address.ipv4_mapped:
        mapped = network.network_address.ipv4_mapped
        network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return str(network)


@extend_schema_field(
    {
        "type": "string",
        "nullable": True,
        "maxLength": 64,
        "description": "An IPv4 or IPv6 network (10.0.0.0/24) or a bare address; null or empty: any",
    }
)
class CidrField(StrictField, serializers.CharField):
    """An IPv4/IPv6 network or address, normalised; null, absent or "" mean "any" ("")."""

    def to_internal_value(self, data: Any) -> str:
        if data is None or data == "":
            return ""
        if not isinstance(data, str) or len(data) > 64:
            raise serializers.ValidationError(
                "must be an IPv4 or IPv6 network (10.0.0.0/24, 2001:db8::/32) or an address, or null"
            )
        try:
            return normalise_cidr(data)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


@extend_schema_field({"type": "integer", "nullable": True, "minimum": 0, "maximum": 65535})
class PortField(StrictField, serializers.IntegerField):
    """The target port, 0-65535; null or absent: any port."""

    def to_internal_value(self, data: Any) -> int | None:
        if data is None:
            return None
        if isinstance(data, bool) or not isinstance(data, int) or not 0 <= data <= 65535:
            raise serializers.ValidationError(f"must be an integer from 0 to 65535 or null, got {data!r}")
        return data


@extend_schema_field(serializers.ChoiceField(IncidentKind.choices, allow_null=True))
class KindField(StrictField, serializers.CharField):
    """One of the incident kinds; null or absent: any kind (stored as "")."""

    def to_internal_value(self, data: Any) -> str:
        if data is None:
            return ""
        if not isinstance(data, str) or data not in IncidentKind.values:
            raise serializers.ValidationError(
                f"{data!r} is not an incident kind; allowed: {_KINDS} (or null: any kind)"
            )
        return data


@extend_schema_field(
    {
        "type": "string",
        "minLength": 1,
        "maxLength": REASON_MAX_LENGTH,
        "pattern": r"^[^\u0000]*[^\s\u0000][^\u0000]*$",
    }
)
class ReasonField(StrictField, serializers.CharField):
    """Why the traffic is known: non-empty text (not only blanks), without NUL characters."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or not data.strip() or "\x00" in data or len(data) > REASON_MAX_LENGTH:
            raise serializers.ValidationError(
                f"must be a non-empty text of at most {REASON_MAX_LENGTH} characters "
                "(why this traffic is known)"
            )
        return data.strip()


@extend_schema_field({"type": "string", "format": "date-time", "nullable": True})
class ExpiryField(StrictField, serializers.DateTimeField):
    """An ISO 8601 date-time in the future (naive: UTC), or null: never expires."""

    def to_internal_value(self, data: Any) -> datetime | None:
        if data is None:
            return None
        when = data if isinstance(data, datetime) else None
        if isinstance(data, str):
            try:
                when = parse_datetime(data)
            except (ValueError, OverflowError):  # well formed but impossible: 2026-02-30T00:00:00Z
                when = None
        if when is None:
            raise serializers.ValidationError(
                "must be an ISO 8601 date-time in the future (e.g. 2026-01-31T12:00:00Z), or null for never"
            )
        if timezone.is_naive(when):
            when = when.replace(tzinfo=UTC)
        try:
            when = when.astimezone(UTC)
        except OverflowError:
            raise serializers.ValidationError("must be a date-time between years 1 and 9999") from None
        if when <= timezone.now():
            raise serializers.ValidationError(
                f"{when.isoformat()} is in the past: must be a date-time in the future, or null for never"
            )
        return when


class SuppressionRuleRequestSerializer(ClosedSerializer):
    """A new suppression rule: the criteria (at least one), the reason, the expiry."""

    not_an_object = "expected a JSON object with source_cidr, target_cidr, port, kind, reason, expires_at"

    source_cidr = CidrField(
        required=False, allow_blank=True, help_text="the source address within this network; empty: any"
    )
    target_cidr = CidrField(
        required=False, allow_blank=True, help_text="the target host within this network; empty: any"
    )
    port = PortField(required=False, help_text="the target port; null: any")
    kind = KindField(required=False, help_text="the incident kind; null: any")
    reason = ReasonField(help_text="why this traffic is known (required)")
    expires_at = ExpiryField(required=False, help_text="when the rule stops matching; null or absent: never")

    def unknown_key_message(self, key: str) -> str:
        return f"unknown field; known: {', '.join(self.fields)}"

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = {"source_cidr": "", "target_cidr": "", "port": None, "kind": "", "expires_at": None, **attrs}
        if not any(attrs[name] not in ("", None) for name in CRITERIA):
            raise serializers.ValidationError({NON_FIELD: [NO_CRITERION]})
        return attrs


class SuppressFromIncidentSerializer(ClosedSerializer):
    """POST /api/incidents/{id}/suppress/: optional reason and expiry (absent: the defaults)."""

    not_an_object = "expected a JSON object with reason and expires_at (both optional)"

    reason = ReasonField(required=False, help_text='default: "suppressed from incident #N"')
    expires_at = ExpiryField(
        required=False,
        help_text="null: never; absent: NETMON_SUPPRESSION_DEFAULT_HOURS from now (default 24 h)",
    )

    def unknown_key_message(self, key: str) -> str:
        return f"unknown field; known: {', '.join(self.fields)}"
