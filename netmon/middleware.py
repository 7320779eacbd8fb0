"""Keeps the admin and /metrics reachable from localhost only, unless configured otherwise."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponseForbidden

_REFUSAL = "The admin and metrics answer only on localhost; set NETMON_ADMIN_ALLOW_REMOTE=1 to change."


class LocalOnlyMiddleware:
    """403 for admin and metrics requests from non-local addresses (NETMON_ADMIN_ALLOW_REMOTE=1 lifts it)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if (
            not settings.NETMON_ADMIN_ALLOW_REMOTE
            and request.path.startswith(settings.NETMON_LOCAL_ONLY_PATHS)
            and request.META.get("REMOTE_ADDR") not in settings.NETMON_LOCAL_ADDRESSES
        ):
            return HttpResponseForbidden(_REFUSAL, content_type="text/plain")
        return self.get_response(request)
