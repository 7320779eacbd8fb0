"""Limit/offset pagination for the list endpoints, with its query parameters validated.

DRF's LimitOffsetPagination silently replaces a bad ``limit``/``offset`` (``?offset=abc``,
``?limit=-1``) with the default and has no upper bound, so ``?limit=100000000`` loaded every
stored packet in one response. Here a bad value is a 400 naming the parameter, and ``limit`` is
capped at ``max_limit`` (bulk data goes through /api/exports/).
"""

from __future__ import annotations

from rest_framework import pagination
from rest_framework.exceptions import ValidationError


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    max_limit = 1000

    def _int_param(self, request, name: str, minimum: int) -> int | None:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return None  # absent or empty: the default, as for every filter
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise ValidationError({name: [f"must be an integer of at least {minimum}, got {raw!r}"]})
        return value

    def get_limit(self, request) -> int | None:
        limit = self._int_param(request, self.limit_query_param, 1)
        return self.default_limit if limit is None else min(limit, self.max_limit)

    def get_offset(self, request) -> int:
        return self._int_param(request, self.offset_query_param, 0) or 0

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.limit_query_param:
                parameter["schema"]["minimum"] = 1
                parameter["description"] += f" At most {self.max_limit}; larger values are capped."
            elif parameter["name"] == self.offset_query_param:
                parameter["schema"]["minimum"] = 0
        return parameters
