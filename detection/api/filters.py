"""Query filters for anomalies and incidents."""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Q

from capture.api.filters import (
    COMMUNITY_ID_RULE,
    CommunityIdFilter,
    GeoFilterSet,
    IntegerFilter,
    IPFilter,
    IsoDateTimeFilter,
    TrueFalseFilter,
)
from capture.choices import IncidentKind, IncidentSeverity, IncidentStatus
from detection.incidents import incident_addresses
from detection.models import Anomaly, Incident
from detection.services import incident_has_address

_MAX_ID = 2**63 - 1


class FloatFilter(django_filters.NumberFilter):
    """Any finite number, as the schema says (NumberFilter refused more than 1e50)."""

    field_class = forms.FloatField

    def get_max_validator(self):
        return None


class AnomalyFilter(django_filters.FilterSet):
    sensor = django_filters.CharFilter(field_name="sensor__name")
    ip = IPFilter(method="filter_ip", label="source or destination IP")
    src_ip = IPFilter()
    dst_ip = IPFilter()
    # An id no incident has matches nothing (a model choice filter answered 400 "not one of the
    # available choices" for it, although the schema says any integer); ids beyond the column's
    # range are not looked up at all (SQLite raises OverflowError on them).
    incident = IntegerFilter(method="filter_incident", label="incident id")
    false_positive = TrueFalseFilter()
    since = IsoDateTimeFilter(field_name="ts", lookup_expr="gte")
    until = IsoDateTimeFilter(field_name="ts", lookup_expr="lt")
    min_score = FloatFilter(field_name="score", lookup_expr="gte")
    community_id = CommunityIdFilter(label=COMMUNITY_ID_RULE)

    class Meta:
        model = Anomaly
        fields = ["sensor", "src_ip", "dst_ip", "protocol", "false_positive", "incident", "model_kind"]

    def filter_ip(self, queryset, name, value):
        return queryset.filter(Q(src_ip=value) | Q(dst_ip=value))

    def filter_incident(self, queryset, name, value: int):
        if not 0 < value <= _MAX_ID:
            return queryset.none()
        return queryset.filter(incident_id=value)


def _choice(vocabulary, name: str) -> django_filters.ChoiceFilter:
    """One of a vocabulary's words; anything else is a 400 naming the allowed values."""
    allowed = ", ".join(vocabulary.values)
    return django_filters.ChoiceFilter(
        choices=vocabulary.choices,
        error_messages={"invalid_choice": f"%(value)s is not a {name}; allowed: {allowed}"},
    )


class IncidentFilter(GeoFilterSet):
    sensor = django_filters.CharFilter(field_name="sensor__name")
    status = _choice(IncidentStatus, "status")
    kind = _choice(IncidentKind, "kind")
    severity = _choice(IncidentSeverity, "severity")
    ip = IPFilter(method="filter_ip", label="an address among its sources or targets")
    since = IsoDateTimeFilter(field_name="last_seen", lookup_expr="gte", label="last seen at or after")
    until = IsoDateTimeFilter(field_name="first_seen", lookup_expr="lt", label="first seen before")
    community_id = CommunityIdFilter(
        method="filter_community_id", label=f"{COMMUNITY_ID_RULE}: its own, or one of its anomalies'"
    )

    class Meta:
        model = Incident
        fields = ["sensor", "status", "kind", "severity"]

    def filter_ip(self, queryset, name, value: str):
        return queryset.filter(incident_has_address(value))

    def filter_community_id(self, queryset, name, value: str):
        # Its own (its first flow's), or a flow among its stored anomalies' (a scan spans many).
        of_anomalies = Anomaly.objects.filter(community_id=value, incident__isnull=False)
        of_anomalies = of_anomalies.values("incident_id")
        return queryset.filter(Q(community_id=value) | Q(pk__in=of_anomalies))

    def filter_queryset(self, queryset):
        # GeoIP: incidents whose sources or targets hold an address that meets the criteria. An
        # incident lists at most a few hundred addresses and lookups are cached per address, so
        # the filtered incidents' lists are read and matched here.
        queryset = super().filter_queryset(queryset)
        criteria = self.geo_criteria()
        if not criteria:
            return queryset
        rows = queryset.order_by().values_list("id", "sources", "targets")
        wanted = [
            pk
            for pk, sources, targets in rows.iterator(chunk_size=2000)
            if any(criteria.matches(a) for a in incident_addresses(sources, targets))
        ]
        return queryset.filter(pk__in=wanted)
