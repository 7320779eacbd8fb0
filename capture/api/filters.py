"""Query filters for packets and flows: time range, ip, port, protocol, sensor, sequence range, GeoIP."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import django_filters
from django import forms
from django.db.models import Q
from django_filters.fields import IsoDateTimeField
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from capture import geo, talkers
from capture.community import MAX_LENGTH, PREFIX
from capture.models import Flow, Packet

_COMMUNITY_ID = re.compile(r"1:[A-Za-z0-9+/]{27}=")
COMMUNITY_ID_EXAMPLE = "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
COMMUNITY_ID_RULE = f"a Community ID v1, e.g. {COMMUNITY_ID_EXAMPLE}"


class _CommunityIdField(forms.CharField):
    """``1:`` and 28 base64 characters. A ``+`` sent unencoded in a query string arrives as a space:
    base64 has no spaces, so they are taken back as ``+``."""

    def to_python(self, value):
        value = super().to_python(value)
        if value in (None, ""):
            return value
        value = value.strip().replace(" ", "+")
        if len(value) > MAX_LENGTH or not value.startswith(PREFIX) or not _COMMUNITY_ID.fullmatch(value):
            raise forms.ValidationError(f"must be {COMMUNITY_ID_RULE}", code="invalid")
        return value


@extend_schema_field(
    {"type": "string", "pattern": f"^{_COMMUNITY_ID.pattern}$", "example": COMMUNITY_ID_EXAMPLE}
)
class CommunityIdFilter(django_filters.CharFilter):
    """A Community ID v1 (capture.community); anything else is a 400 naming the parameter."""

    field_class = _CommunityIdField


# A conversation is two flow rows (a direction each) per sensor: more than this is not one flow.
_FLOWS_PER_COMMUNITY_ID = 64


def packets_of_community_id(queryset, value: str):
    """Packets of the flows with Community ID ``value``: found through the indexed flow column, then
    by each flow's 5-tuple (packets carry no column of their own; see ``Flow.community_id``)."""
    flows = Flow.objects.filter(community_id=value).values_list(
        "sensor_id", "protocol", "src_ip", "src_port", "dst_ip", "dst_port"
    )[:_FLOWS_PER_COMMUNITY_ID]
    match = Q()
    for sensor_id, protocol, src_ip, src_port, dst_ip, dst_port in flows:
        match |= Q(
            sensor_id=sensor_id, protocol=protocol, src_ip=src_ip, src_port=src_port, dst_ip=dst_ip,
            dst_port=dst_port,
        )  # fmt: skip
    return queryset.filter(match) if match else queryset.none()


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


class _CountryField(forms.CharField):
    """``?country=``: a two-letter ISO 3166 code (capture.geo.parse_country); anything else is a 400."""

    def to_python(self, value):
        value = super().to_python(value)
        if not value:
            return None
        try:
            return geo.parse_country(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc), code="invalid") from None


class _AsnField(forms.CharField):
    """``?asn=``: an AS number, bare or "AS123" (capture.geo.parse_asn); anything else is a 400."""

    def to_python(self, value):
        value = super().to_python(value)
        if not value:
            return None
        try:
            return geo.parse_asn(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc), code="invalid") from None


@extend_schema_field({"type": "string", "pattern": "^[A-Za-z]{2}$", "example": "US"})
class CountryFilter(django_filters.CharFilter):
    field_class = _CountryField


@extend_schema_field({"type": "string", "pattern": "^([Aa][Ss])?[0-9]{1,10}$", "example": "AS15169"})
class AsnFilter(django_filters.CharFilter):
    field_class = _AsnField


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": talkers.TALKERS_MAX})
class TalkerLimitFilter(IntegerFilter):
    pass


class GeoFilterSet(django_filters.FilterSet):
    """``?country=``, ``?asn=`` and ``?asn_name=``: one address of the row must meet all of them.

    The fields only validate; the subclass applies ``geo_criteria()`` in ``filter_queryset`` (the
    criteria are matched together, against the same address).
    """

    country = CountryFilter(method="_validated_only", label=f"country of an address: {geo.COUNTRY_HELP}")
    asn = AsnFilter(method="_validated_only", label=f"AS of an address: {geo.ASN_HELP}")
    asn_name = django_filters.CharFilter(
        method="_validated_only", label="AS name of an address (case-insensitive), e.g. GOOGLE"
    )

    def _validated_only(self, queryset, name, value):
        return queryset

    def geo_criteria(self) -> geo.GeoCriteria:
        data = self.form.cleaned_data
        return geo.GeoCriteria(
            country=data.get("country") or None, asn=data.get("asn"), asn_name=data.get("asn_name") or None
        )


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


class PacketFilter(_TrafficFilter, GeoFilterSet):
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
    community_id = CommunityIdFilter(method="filter_community_id", label=COMMUNITY_ID_RULE)

    class Meta:
        model = Packet
        fields = ["sensor", "protocol", "src_ip", "dst_ip", "src_port", "dst_port", "ip_version"]

    def filter_community_id(self, queryset, name, value: str):
        return packets_of_community_id(queryset, value)

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        return talkers.filter_packets_by_geo(queryset, self.geo_criteria())


class TalkerFilter(GeoFilterSet):
    """GET /api/talkers: the window and sensor; the GeoIP criteria select among the talkers."""

    sensor = django_filters.CharFilter(field_name="sensor__name")
    since = IsoDateTimeFilter(method="_validated_only", label="from (default: an hour before until)")
    until = IsoDateTimeFilter(method="_validated_only", label="until (default: now)")
    limit = TalkerLimitFilter(
        method="_validated_only",
        min_value=1,
        max_value=talkers.TALKERS_MAX,
        label=f"how many talkers (1 to {talkers.TALKERS_MAX}, default 10)",
    )

    class Meta:
        model = Packet
        fields = ["sensor"]


class FlowFilter(_TrafficFilter):
    since = IsoDateTimeFilter(field_name="last_seen", lookup_expr="gte")
    until = IsoDateTimeFilter(field_name="first_seen", lookup_expr="lt")
    community_id = CommunityIdFilter(label=COMMUNITY_ID_RULE)

    class Meta:
        model = Flow
        fields = ["sensor", "protocol", "src_ip", "dst_ip", "src_port", "dst_port"]
