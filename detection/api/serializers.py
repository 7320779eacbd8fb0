"""Serializers for anomalies, incidents, model versions and suppression rules (the rule's request
validator is ``detection.validation``, shared with the admin and the services)."""

from __future__ import annotations

from urllib.parse import quote

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from capture import geo
from capture.api.serializers import GEO_SCHEMA
from capture.choices import FeatureLevel, IncidentKind, IncidentStatus, MlModel
from detection import evidence, timeline
from detection.incidents import active_until, incident_addresses
from detection.models import Anomaly, DetectionModel, Incident, SuppressionRule


class StrictBooleanField(serializers.BooleanField):
    """JSON true or false only (DRF's BooleanField also took "yes", "on", 1 and "0")."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictCharField(serializers.CharField):
    """A JSON string only (DRF's CharField also took numbers and turned them into text)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class AnomalySerializer(serializers.ModelSerializer):
    sensor = serializers.CharField(source="sensor.name", read_only=True)
    packets_url = serializers.SerializerMethodField()
    false_positive = StrictBooleanField(required=False)
    false_positive_by = serializers.SerializerMethodField()

    class Meta:
        model = Anomaly
        fields = ["id", "sensor", "packet_seq", "ts", "protocol", "src_ip", "dst_ip", "src_port", "dst_port",
                  "score", "threshold", "model_kind", "model_versions", "explanation", "contributions",
                  "false_positive", "false_positive_by", "false_positive_at", "incident", "suppressed_by",
                  "created_at", "packets_url", "community_id"]  # fmt: skip
        read_only_fields = [f for f in fields if f != "false_positive"]

    def get_false_positive_by(self, anomaly: Anomaly) -> str | None:
        """Who marked it as a false positive (a method field: also present in a PATCH's answer)."""
        return anomaly.false_positive_by.get_username() if anomaly.false_positive_by else None

    def get_packets_url(self, anomaly: Anomaly) -> str:
        """The packets around this one (50 before and after)."""
        return (
            f"/api/packets/?sensor={anomaly.sensor.name}&seq_from={max(1, anomaly.packet_seq - 50)}"
            f"&seq_to={anomaly.packet_seq + 50}"
        )


class DetectionModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = DetectionModel
        fields = ["id", "kind", "version", "feature_level", "status", "progress", "error", "is_active",
                  "created_at", "source", "data_from", "data_until", "packet_count", "threshold",
                  "training_seconds", "metrics"]  # fmt: skip
        read_only_fields = fields


class TrainRequestSerializer(serializers.Serializer):
    model = serializers.ChoiceField(MlModel.choices, required=False)
    feature_level = serializers.ChoiceField(FeatureLevel.choices, required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    sensor = StrictCharField(required=False)


class IncidentSerializer(serializers.ModelSerializer):
    """An incident as the API shows it, with links to its packets and its anomalies."""

    sensor = serializers.CharField(source="sensor.name", read_only=True)
    status_changed_by = serializers.SerializerMethodField()
    packets_url = serializers.SerializerMethodField()
    anomalies_url = serializers.SerializerMethodField()
    affected = serializers.SerializerMethodField()
    effects = serializers.SerializerMethodField()
    active_until = serializers.SerializerMethodField()
    geo = serializers.SerializerMethodField()

    class Meta:
        model = Incident
        fields = ["id", "sensor", "entity", "kind", "severity", "status", "sources", "targets",
                  "targets_more", "affected", "effects", "first_seen", "last_seen", "active_until",
                  "opened_at", "anomaly_count", "packet_count", "peak_score", "explanation",
                  "status_changed_by", "status_changed_at", "packets_url", "anomalies_url", "geo",
                  "community_id"]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field({"type": "object", "additionalProperties": GEO_SCHEMA})
    def get_geo(self, incident: Incident) -> dict:
        """Scope, country and AS of each address among its sources and targets (address -> GeoIP)."""
        return geo.describe_many(incident_addresses(incident.sources, incident.targets))

    @extend_schema_field({"type": "string", "format": "date-time"})
    def get_active_until(self, incident: Incident) -> str:
        """Packet time of its last sustained evidence (its quiet and recurrence clock; lone stray
        anomalies since move ``last_seen`` only)."""
        return serializers.DateTimeField().to_representation(active_until(incident))

    def get_status_changed_by(self, incident: Incident) -> str | None:
        """Who last changed its status."""
        return incident.status_changed_by.get_username() if incident.status_changed_by else None

    def get_packets_url(self, incident: Incident) -> str:
        """Its sources' packets during the incident (the first source's; one source today)."""
        since = quote((incident.first_seen - timeline.TIME_SLACK).isoformat())
        until = quote((incident.last_seen + timeline.TIME_SLACK).isoformat())
        url = f"/api/packets/?sensor={incident.sensor.name}&since={since}&until={until}"
        return url + (f"&src_ip={incident.sources[0]}" if incident.sources else "")

    def get_affected(self, incident: Incident) -> int:
        """Anomalies of other clients to the attacked service, filed under this incident (not its sources)."""
        return int((incident.evidence or {}).get("affected", 0))

    def get_effects(self, incident: Incident) -> int:
        """Packets of other clients to the attacked service counted as its effect: over the threshold only
        through the service's statistics, not anomalies (in ``packet_count``, not ``anomaly_count``)."""
        return int((incident.evidence or {}).get("effects", 0))

    def get_anomalies_url(self, incident: Incident) -> str:
        """Its anomalies, newest first."""
        return f"/api/incidents/{incident.pk}/anomalies/"


class IncidentDetailSerializer(IncidentSerializer):
    """One incident (its page): also whether capture still keeps its frames (the "download pcap" button)."""

    pcap_kept = serializers.SerializerMethodField()
    pcap_url = serializers.SerializerMethodField()

    class Meta(IncidentSerializer.Meta):
        fields = [*IncidentSerializer.Meta.fields, "pcap_kept", "pcap_url"]
        read_only_fields = fields

    def get_pcap_kept(self, incident: Incident) -> bool:
        """Whether the evidence ring may still hold its frames (the download can still answer 410)."""
        return evidence.pcap_kept(incident)

    def get_pcap_url(self, incident: Incident) -> str:
        """Its evidence pcap (analyst role)."""
        return f"/api/incidents/{incident.pk}/pcap"


_STATUSES = ", ".join(IncidentStatus.values)


class IncidentStatusSerializer(serializers.Serializer):
    """PATCH /api/incidents/{id}/: the one thing an operator changes on an incident."""

    status = serializers.ChoiceField(
        IncidentStatus.choices,
        error_messages={"invalid_choice": '"{input}" is not a status; allowed: ' + _STATUSES},
    )


class TimelineQuerySerializer(serializers.Serializer):
    """GET /api/incidents/{id}/timeline/'s query: how many buckets at most."""

    buckets = serializers.IntegerField(
        min_value=1,
        max_value=timeline.MAX_BUCKETS,
        default=timeline.DEFAULT_BUCKETS,
        error_messages={
            "invalid": f"buckets must be a whole number from 1 to {timeline.MAX_BUCKETS}",
            "min_value": f"buckets must be from 1 to {timeline.MAX_BUCKETS}",
            "max_value": f"buckets must be from 1 to {timeline.MAX_BUCKETS}",
        },
    )


class TimelineBucketSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    packets = serializers.IntegerField()
    bytes = serializers.IntegerField()
    from_sources = serializers.IntegerField(help_text="packets its sources sent")
    anomalies = serializers.IntegerField(help_text="its anomalies in this bucket")
    packets_per_second = serializers.FloatField()


class TimelineSerializer(serializers.Serializer):
    """An incident's packet rate over its duration (detection/timeline.py); the schema's description."""

    incident = serializers.IntegerField()
    first_seen = serializers.DateTimeField()
    last_seen = serializers.DateTimeField()
    bucket_seconds = serializers.IntegerField()
    sources = serializers.ListField(child=serializers.CharField())
    target_hosts = serializers.ListField(child=serializers.CharField())
    packets = serializers.IntegerField()
    peak_packets_per_second = serializers.FloatField()
    buckets = TimelineBucketSerializer(many=True)


class IncidentAnomaliesQuerySerializer(serializers.Serializer):
    """GET /api/incidents/{id}/anomalies/'s query: newest first, or the highest scores first."""

    ORDERS = {"newest": ("-ts", "-id"), "score": ("-score", "-ts", "-id")}

    order = serializers.ChoiceField(
        list(ORDERS),
        default="newest",
        error_messages={"invalid_choice": '"{input}" is not an order; allowed: ' + ", ".join(ORDERS)},
    )


class SuppressionRuleSerializer(serializers.ModelSerializer):
    """A suppression rule as the API shows it: criteria (null: any), reason, expiry, hits, ``active``."""

    source_cidr = serializers.SerializerMethodField()
    target_cidr = serializers.SerializerMethodField()
    kind = serializers.SerializerMethodField()
    active = serializers.SerializerMethodField()
    created_by = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = SuppressionRule
        fields = ["id", "url", "source_cidr", "target_cidr", "port", "kind", "reason", "expires_at", "active",
                  "created_by", "created_at", "incident", "hits", "last_hit_at"]  # fmt: skip
        read_only_fields = fields

    def get_source_cidr(self, rule: SuppressionRule) -> str | None:
        """The source network; null: any source."""
        return rule.source_cidr or None

    def get_target_cidr(self, rule: SuppressionRule) -> str | None:
        """The target network; null: any target."""
        return rule.target_cidr or None

    @extend_schema_field(serializers.ChoiceField(IncidentKind.choices, allow_null=True))
    def get_kind(self, rule: SuppressionRule) -> str | None:
        """The incident kind; null: any kind."""
        return rule.kind or None

    def get_active(self, rule: SuppressionRule) -> bool:
        """Whether it matches now (not expired)."""
        return rule.is_active()

    def get_created_by(self, rule: SuppressionRule) -> str | None:
        """Who made it."""
        return rule.created_by.get_username() if rule.created_by else None

    def get_url(self, rule: SuppressionRule) -> str:
        return f"/api/suppressions/{rule.pk}/"
