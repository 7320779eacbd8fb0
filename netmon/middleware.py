"""Keeps the admin and /metrics reachable from localhost only, unless configured otherwise.

"Local" is judged on the real client's address. Directly, that is ``REMOTE_ADDR``. Behind a reverse
proxy (``BEHIND_TLS_PROXY=1``, ``NETMON_NUM_PROXIES`` proxies of ours in front), ``REMOTE_ADDR``
is the proxy's own address, often 127.0.0.1, which would make every client of the proxy "local":
the client is then the address our outermost proxy saw, read from ``X-Forwarded-For`` counting
``NETMON_NUM_PROXIES`` entries from the right (entries further left were written by the client
and prove nothing). This is DRF's rule for the login rate limit too, so both see the same client.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponseForbidden

_REFUSAL = "The admin and metrics answer only on localhost; set NETMON_ADMIN_ALLOW_REMOTE=1 to change."


def client_address(request: HttpRequest) -> str:
    """The address of the client as our own proxies (``NETMON_NUM_PROXIES`` of them) saw it."""
    proxies = settings.REST_FRAMEWORK.get("NUM_PROXIES") or 0
    remote = request.META.get("REMOTE_ADDR", "")
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies <= 0 or not forwarded:
        return remote
    addresses = [a.strip() for a in forwarded.split(",") if a.strip()]
    return addresses[-min(proxies, len(addresses))] if addresses else remote


class LocalOnlyMiddleware:
    """403 for admin and metrics requests from non-local addresses (NETMON_ADMIN_ALLOW_REMOTE=1 lifts it)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if (
            not settings.NETMON_ADMIN_ALLOW_REMOTE
            and request.path.startswith(settings.NETMON_LOCAL_ONLY_PATHS)
            and client_address(request) not in settings.NETMON_LOCAL_ADDRESSES
        ):
            return HttpResponseForbidden(_REFUSAL, content_type="text/plain")
        return self.get_response(request)
