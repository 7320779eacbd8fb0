"""Query filters for deliveries: by incident, status and destination; a bad value is a 400 naming
the parameter (and, for a status, the allowed values)."""

from __future__ import annotations

import django_filters

from alerts.models import Delivery
from capture.api.filters import IntegerFilter

_MAX_ID = 2**63 - 1
_STATUSES = ", ".join(Delivery.Status.values)


class DeliveryFilter(django_filters.FilterSet):
    # An id nothing has matches nothing (ids beyond the column's range are not looked up at all).
    incident = IntegerFilter(method="filter_id", field_name="incident_id", label="incident id")
    destination = IntegerFilter(method="filter_id", field_name="destination_id", label="destination id")
    status = django_filters.ChoiceFilter(
        choices=Delivery.Status.choices,
        error_messages={"invalid_choice": f"%(value)s is not a delivery status; allowed: {_STATUSES}"},
    )

    class Meta:
        model = Delivery
        fields = ["incident", "destination", "status"]

    def filter_id(self, queryset, name, value: int):
        if not 0 < value <= _MAX_ID:
            return queryset.none()
        return queryset.filter(**{name: value})
