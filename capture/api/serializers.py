"""Serializers for capture's API: configuration, packets, flows.

The configuration's request body, ``ConfigUpdateSerializer``, lives in ``capture.validation``
(the services run it too); it is re-exported here with the rest of the API's serializers.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from capture import validation
from capture.choices import CONFIG_KEYS
from capture.community import community_id
from capture.models import ConfigChange, Flow, MonitorConfig, Packet
from capture.validation import ConfigUpdateSerializer

__all__ = [
    "ConfigChangeSerializer",
    "ConfigOptionsSerializer",
    "ConfigUpdateSerializer",
    "FlowSerializer",
    "InterfaceSerializer",
    "MonitorConfigSerializer",
    "PacketSerializer",
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


class PacketSerializer(serializers.ModelSerializer):
    sensor = serializers.CharField(source="sensor.name", read_only=True)
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
