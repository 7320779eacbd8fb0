"""Query filters for anomalies."""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Q

from capture.api.filters import IntegerFilter, IPFilter, IsoDateTimeFilter
from detection.models import Anomaly

_MAX_ID = 2**63 - 1


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

    class Meta:
        model = Anomaly
        fields = ["sensor", "src_ip", "dst_ip", "protocol", "false_positive", "incident", "model_kind"]

    def filter_ip(self, queryset, name, value):
        return queryset.filter(Q(src_ip=value) | Q(dst_ip=value))

    def filter_incident(self, queryset, name, value: int):
        if not 0 < value <= _MAX_ID:
            return queryset.none()
        return queryset.filter(incident_id=value)
