"""Serializers for capture's API: configuration, packets, flows.

The configuration's request body, ``ConfigUpdateSerializer``, lives in ``capture.validation``
(the services run it too); it is re-exported here with the rest of the API's serializers.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from capture import geo, validation
from capture.choices import CONFIG_KEYS, AddressScope
from capture.community import community_id
from capture.models import ConfigChange, Flow, MonitorConfig, Packet
from capture.validation import ConfigUpdateSerializer, check_sensor_name

__all__ = [
    "ConfigChangeSerializer",
    "ConfigOptionsSerializer",
    "ConfigUpdateSerializer",
    "FlowSerializer",
    "GeoField",
    "InterfaceSerializer",
    "MonitorConfigSerializer",
    "PacketSerializer",
    "TalkersSerializer",
]


class MonitorConfigSerializer(serializers.ModelSerializer):
    """The configuration as the prototype exposed it (read side; writes go through services)."""

    class Meta:
        model = MonitorConfig
        fields = [*CONFIG_KEYS, "updated_at"]


# What GET /api/config's ``options`` holds: capture.validation.describe(ConfigUpdateSerializer()).
_FIELD_OPTIONS = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["choice", "boolean", "integer", "datetime", "object", "string"]},
        "required": {"type": "boolean"},
        "choices": {"type": "array", "items": {"type": "string"}},
        "hints": {"type": "object", "additionalProperties": {"type": "string"}},
        "min": {"type": "integer"},
        "max": {"type": "integer"},
        "min_length": {"type": "integer"},
        "max_length": {"type": "integer"},
        "allow_blank": {"type": "boolean"},
        "default": {},
        "help_text": {"type": "string"},
        "fields": {"type": "object", "additionalProperties": {"type": "object"}},
    },
    "required": ["type", "required"],
}


@extend_schema_field({"type": "object", "additionalProperties": _FIELD_OPTIONS})
class _OptionsField(serializers.SerializerMethodField):
    pass


class ConfigOptionsSerializer(MonitorConfigSerializer):
    """GET /api/config: the configuration, plus ``options``: each key's type and allowed values.

    ``options`` is read-only, like ``updated_at``: a POST that sends either back is refused
    (unknown configuration key), as for any key that is not a configuration key.
    """

    options = _OptionsField(
        help_text="Per configuration key: its type, and its choices or bounds (what POST accepts)."
    )

    class Meta(MonitorConfigSerializer.Meta):
        fields = [*MonitorConfigSerializer.Meta.fields, "options"]

    def get_options(self, config: MonitorConfig) -> dict[str, Any]:
        return validation.describe(ConfigUpdateSerializer())


class ConfigChangeSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", default=None, read_only=True)

    class Meta:
        model = ConfigChange
        fields = ["id", "changed_at", "user", "source", "old_values", "new_values"]


class InterfaceSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)


# An address's GeoIP as the API shows it (capture/geo.py): null when there is no address.
GEO_SCHEMA = {
    "type": "object",
    "nullable": True,
    "properties": {
        "scope": {"type": "string", "enum": AddressScope.values},
        "country": {"type": "string", "nullable": True, "description": "ISO 3166 two-letter code"},
        "country_name": {"type": "string", "nullable": True},
        "asn": {"type": "integer", "nullable": True, "description": "null with the bundled data"},
        "asn_name": {"type": "string", "nullable": True},
    },
    "required": ["scope", "country", "country_name", "asn", "asn_name"],
}


@extend_schema_field(GEO_SCHEMA)
class GeoField(serializers.Field):
    """The scope, country and AS of the address in ``source`` (read-only)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> dict[str, Any] | None:
        return geo.describe(value)


class PacketSerializer(serializers.ModelSerializer):
    sensor = serializers.CharField(source="sensor.name", read_only=True)
    src_geo = GeoField(source="src_ip", help_text="the source address's scope, country and AS")
    dst_geo = GeoField(source="dst_ip", help_text="the destination address's scope, country and AS")
    community_id = serializers.SerializerMethodField()

    class Meta:
        model = Packet
        fields = [
            "id",
            "sensor",
            "seq",
            "ts",
            "interface",
            "src_mac",
            "dst_mac",
            "ip_version",
            "protocol",
            "src_ip",
            "dst_ip",
            "src_port",
            "dst_port",
            "length",
            "tcp_flags",
            "ttl",
            "vlan",
            "app_protocol",
            "dns_query",
            "http_host",
            "http_method",
            "tls_sni",
            "decode_error",
            "anomaly_score",
            "src_geo",
            "dst_geo",
            "community_id",
        ]

    def get_community_id(self, packet: Packet) -> str | None:
        """Its flow's Community ID v1 (null without an IP layer); filter with ?community_id=."""
        return community_id(packet.protocol, packet.src_ip, packet.dst_ip, packet.src_port, packet.dst_port)


class FlowSerializer(serializers.ModelSerializer):
    sensor = serializers.CharField(source="sensor.name", read_only=True)

    class Meta:
        model = Flow
        fields = [
            "id",
            "sensor",
            "protocol",
            "src_ip",
            "src_port",
            "dst_ip",
            "dst_port",
            "first_seen",
            "last_seen",
            "packets",
            "bytes",
            "community_id",
        ]


class TalkerSerializer(serializers.Serializer):
    ip = serializers.CharField()
    bytes = serializers.IntegerField(help_text="bytes it sent in the window")
    packets = serializers.IntegerField(help_text="packets it sent in the window")
    geo = GeoField(source="ip")


class TalkersSerializer(serializers.Serializer):
    """GET /api/talkers: the sources that sent the most bytes in the window, most first."""

    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    talkers = TalkerSerializer(many=True)


_ISO = "must be an ISO 8601 date and time, e.g. 2026-01-01T12:00:00Z"


@extend_schema_field({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]})
class _IPAddress(serializers.CharField):
    """An IPv4 or IPv6 address (documented as such, like the packet filters' ``ip``)."""

    def to_internal_value(self, data: Any) -> str:
        text = super().to_internal_value(data)
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            raise serializers.ValidationError("must be an IPv4 or IPv6 address") from None


class PcapQuerySerializer(serializers.Serializer):
    """GET /api/packets/pcap's query: which kept frames (every criterion given must match)."""

    since = serializers.DateTimeField(
        required=False, help_text="ISO 8601; frames at or after", error_messages={"invalid": _ISO}
    )
    until = serializers.DateTimeField(
        required=False, help_text="ISO 8601; frames before", error_messages={"invalid": _ISO}
    )
    ip = _IPAddress(required=False, help_text="either end")
    port = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=65535,
        help_text="either end",
        error_messages={
            "invalid": "must be a whole number from 0 to 65535",
            "min_value": "must be from 0 to 65535",
            "max_value": "must be from 0 to 65535",
        },
    )
    sensor = serializers.CharField(
        required=False, help_text="needed when several sensors keep evidence", max_length=64
    )

    def validate_sensor(self, value: str) -> str:
        try:
            return check_sensor_name(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # (an empty or inverted time range is valid: it holds no frames)
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            known = ", ".join(self.fields)
            raise serializers.ValidationError(dict.fromkeys(unknown, f"unknown parameter; known: {known}"))
        return attrs
