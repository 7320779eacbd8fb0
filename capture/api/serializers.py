"""Serializers for capture's API: configuration, packets, flows."""

from __future__ import annotations

from rest_framework import serializers

from capture.choices import (
    BUFFER_SIZE_MAX,
    BUFFER_SIZE_MIN,
    AnalysisDepth,
    EncryptionAlgorithm,
    FeatureLevel,
    MlModel,
)
from capture.models import ConfigChange, Flow, MonitorConfig, Packet


class MonitorConfigSerializer(serializers.ModelSerializer):
    """The configuration as the prototype exposed it (read side; writes go through services)."""

    class Meta:
        model = MonitorConfig
        fields = [
            "network_interface",
            "bpf_filter",
            "buffer_size",
            "analysis_depth",
            "ml_model",
            "feature_level",
            "encryption_algorithm",
            "updated_at",
        ]


class ConfigUpdateSerializer(serializers.Serializer):
    """Documents the partial update body; validation itself is capture.services.validate_config_changes."""

    network_interface = serializers.CharField(required=False)
    bpf_filter = serializers.CharField(required=False, allow_blank=True)
    buffer_size = serializers.IntegerField(
        required=False, min_value=BUFFER_SIZE_MIN, max_value=BUFFER_SIZE_MAX
    )
    analysis_depth = serializers.ChoiceField(AnalysisDepth.choices, required=False)
    ml_model = serializers.ChoiceField(MlModel.choices, required=False)
    feature_level = serializers.ChoiceField(FeatureLevel.choices, required=False)
    encryption_algorithm = serializers.ChoiceField(EncryptionAlgorithm.choices, required=False)


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
        ]


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
        ]
