"""Query filters for packets and flows: time range, ip, port, protocol, sensor, sequence range."""

from __future__ import annotations

from datetime import UTC, datetime

import django_filters
from django import forms
from django.db.models import Q
from django_filters.fields import IsoDateTimeField
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from capture.models import Flow, Packet


@extend_schema_field({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]})
class IPFilter(django_filters.CharFilter):
    """An IPv4 or IPv6 address; anything else is a 400 naming the parameter.

    (A plain CharFilter passed any text to the database: PostgreSQL's inet column then raised a 500.)
    """

    field_class = forms.GenericIPAddressField


@extend_schema_field(OpenApiTypes.INT)
class IntegerFilter(django_filters.NumberFilter):
    """A whole number, as the schema says (NumberFilter took "0.5" for a port and refused 10**51)."""

    field_class = forms.IntegerField

    def get_max_validator(self):
        return None  # beyond a column's range matches nothing (Django checks integer lookups)


class _TrueFalseField(forms.NullBooleanField):
    """``true`` or ``false`` (absent or empty: no filter); django-filter ignored any other value."""

    widget = forms.TextInput  # the raw text: NullBooleanSelect turns what it does not know into None

    def to_python(self, value):
        if value in (None, ""):
            return None
        if value in ("true", "false"):
            return value == "true"
        raise forms.ValidationError("must be true or false", code="invalid")


class TrueFalseFilter(django_filters.BooleanFilter):
    field_class = _TrueFalseField


class _UTCIsoDateTimeField(IsoDateTimeField):
    """ISO 8601, converted to UTC: PostgreSQL refuses UTC offsets beyond 15:59 (a 500), ISO allows 23:59."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is None or value.tzinfo is None:
            return value
        try:
            return value.astimezone(UTC)
        except OverflowError:  # within a day of year 1 or 9999: the nearest instant there is
            return (datetime.min if value.year < 5000 else datetime.max).replace(tzinfo=UTC)


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = _UTCIsoDateTimeField


class _TrafficFilter(django_filters.FilterSet):
    sensor = django_filters.CharFilter(field_name="sensor__name")
    ip = IPFilter(method="filter_ip", label="source or destination IP")
    port = IntegerFilter(method="filter_port", label="source or destination port")
    protocol = django_filters.CharFilter(field_name="protocol", lookup_expr="iexact")
    src_ip = IPFilter()
    dst_ip = IPFilter()
    src_port = IntegerFilter()
    dst_port = IntegerFilter()

    def filter_ip(self, queryset, name, value):
        return queryset.filter(Q(src_ip=value) | Q(dst_ip=value))

    def filter_port(self, queryset, name, value):
        return queryset.filter(Q(src_port=value) | Q(dst_port=value))


class PacketFilter(_TrafficFilter):
    since = IsoDateTimeFilter(field_name="ts", lookup_expr="gte")
    until = IsoDateTimeFilter(field_name="ts", lookup_expr="lt")
    seq_from = IntegerFilter(field_name="seq", lookup_expr="gte")
    seq_to = IntegerFilter(field_name="seq", lookup_expr="lte")
    ip_version = IntegerFilter()
    flagged = TrueFalseFilter(
        field_name="anomaly_score",
        lookup_expr="isnull",
        exclude=True,
        label="flagged by the model (true: packets with an anomaly score; false: the others)",
    )

    class Meta:
        model = Packet
        fields = ["sensor", "protocol", "src_ip", "dst_ip", "src_port", "dst_port", "ip_version"]


class FlowFilter(_TrafficFilter):
    since = IsoDateTimeFilter(field_name="last_seen", lookup_expr="gte")
    until = IsoDateTimeFilter(field_name="first_seen", lookup_expr="lt")

    class Meta:
        model = Flow
        fields = ["sensor", "protocol", "src_ip", "dst_ip", "src_port", "dst_port"]
