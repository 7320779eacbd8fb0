"""Project-wide API pieces: JSON error handling, the token endpoint, health and the status overview."""

from __future__ import annotations

import logging
from typing import Any

from django.db import connection
from django.http import JsonResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import serializers
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from capture import control, geo
from capture import services as capture_services
from capture.connections import redis_client
from capture.permissions import HasPermission
from netmon.auth import issue_token, revoke_tokens

log = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus a JSON 500 (logged) instead of Django's HTML page for unexpected errors."""
    response = drf_exception_handler(exc, context)
    if response is None:
        log.exception("unhandled API error", exc_info=exc)
        return Response({"detail": "internal error; see the server log"}, status=500)
    return response


def json_not_found(request, exception=None) -> JsonResponse:
    return JsonResponse({"detail": f"no such route: {request.path}"}, status=404)


def json_server_error(request) -> JsonResponse:
    return JsonResponse({"detail": "internal error; see the server log"}, status=500)


class TokenView(ObtainAuthToken):
    """POST username/password -> {"token": ...} (rate limited per client address); DELETE revokes it.

    An expired token is replaced by a new one (auth.issue_token); DELETE is the API's logout.
    """

    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "login"
    permission_classes = [AllowAny]  # as ObtainAuthToken's empty list, but the schema then says so
    renderer_classes = ObtainAuthToken.renderer_classes

    @extend_schema(
        request=inline_serializer(
            "TokenRequest", {"username": serializers.CharField(), "password": serializers.CharField()}
        ),
        responses=inline_serializer("TokenResponse", {"token": serializers.CharField()}),
    )
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token = issue_token(serializer.validated_data["user"])
        return Response({"token": token.key})

    def get_permissions(self):
        # Anyone may ask for a token; only its holder (token or session) may revoke it.
        return [IsAuthenticated()] if self.request.method == "DELETE" else super().get_permissions()

    def get_throttles(self):
        return super().get_throttles() if self.request.method == "POST" else []

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, *args, **kwargs):
        revoke_tokens(request.user)
        return Response(status=204)


def check_redis() -> dict[str, Any]:
    try:
        redis_client().ping()
    except Exception as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True}


def check_database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "vendor": connection.vendor}


def collect_status() -> dict[str, Any]:
    """Everything /api/status shows, from every app."""
    from detection import services as detection_services

    redis_health = check_redis()
    heartbeats = {}
    if redis_health["ok"]:
        try:
            heartbeats = control.read_heartbeats(redis_client())
        except Exception as exc:
            redis_health = {"ok": False, "error": str(exc)}
    sensors = capture_services.sensor_status(heartbeats)
    capturing = any(s["alive"] and s["state"] == "running" for s in sensors)
    primary = next((s for s in sensors if s["alive"]), sensors[0] if sensors else None)
    totals = {
        key: sum(s[key] for s in sensors)
        for key in (
            "packets_captured",
            "packets_stored",
            "packets_scored",
            "packets_dropped",
            "queue_lag_packets",
        )
    }
    return {
        "capturing": capturing,
        "mode": primary["mode"] if primary else None,
        "mode_reason": primary["mode_reason"] if primary else "no capture process has reported yet",
        "sensors": sensors,
        "totals": totals,
        **detection_services.detection_status(),
        "redis": redis_health,
        "database": check_database(),
        "geoip": geoip_status(),
    }


def geoip_status() -> dict[str, Any]:
    """Which GeoIP data this server looks addresses up in; "off" with the reason when none (a bad
    ``.mmdb`` path is otherwise only in the start-up log)."""
    current = geo.status()
    return {"backend": current.backend, "detail": current.detail}


class StatusView(APIView):
    """GET /api/status: capture state per sensor, counters, anomalies, models, queue lag, health."""

    required_permissions = {"GET": "capture.view_sensor"}

    @extend_schema(responses=inline_serializer("Status", {"capturing": serializers.BooleanField()}))
    def get(self, request: Request) -> Response:
        return Response(collect_status())


# The API's description needs a signed-in user with a role, like the API it describes (README,
# HTTP API): the same permission as GET /api/status, which every built-in role holds.
SCHEMA_PERMISSION = "capture.view_sensor"


class SchemaView(SpectacularAPIView):
    """GET /api/schema/: the OpenAPI document (for users with a role)."""

    permission_classes = [HasPermission]  # drf-spectacular's own default is AllowAny
    required_permissions = {"GET": SCHEMA_PERMISSION}


class DocsView(SpectacularSwaggerView):
    """GET /api/docs/: the interactive documentation (Swagger UI) of /api/schema/."""

    permission_classes = [HasPermission]
    required_permissions = {"GET": SCHEMA_PERMISSION}


class HealthView(APIView):
    """GET /healthz: the process answers (no authentication, no dependencies)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(responses=inline_serializer("Health", {"status": serializers.CharField()}))
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


_READY = inline_serializer(
    "Ready",
    {
        "status": serializers.CharField(),
        "redis": serializers.BooleanField(),
        "database": serializers.BooleanField(),
    },
)


class ReadyView(APIView):
    """GET /readyz: Redis and the database are reachable (503 otherwise)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(responses={200: _READY, 503: _READY})
    def get(self, request: Request) -> Response:
        checks = {"redis": check_redis(), "database": check_database()}
        ready = all(check["ok"] for check in checks.values())
        # Error details stay in the log: this endpoint is public.
        body = {"status": "ready" if ready else "not ready", **{k: v["ok"] for k, v in checks.items()}}
        return Response(body, status=200 if ready else 503)
