"""The project-level API: status, token, health, errors, schema."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_status_reports_sensors_models_and_health(api, redis_client):
    # Given no capture process has run yet
    response = api.get("/api/status")

    assert response.status_code == 200
    body = response.json()
    assert body["capturing"] is False
    assert body["sensors"] == []
    assert body["redis"] == {"ok": True}
    assert body["database"]["ok"] is True
    assert body["models"] == {}
    assert "train_detector" in body["models_note"]
    assert body["anomalies_last_hour"] == 0


def test_status_merges_live_heartbeat(api, redis_client):
    from capture import control
    from capture.models import Sensor

    Sensor.objects.create(
        name="s1", packets_read=10, packets_stored=7, last_seq_published=10, last_seq_ingested=7
    )
    control.write_heartbeat(
        "s1", {"state": "running", "mode": "demo", "mode_reason": "no tshark"}, redis_client
    )

    body = api.get("/api/status").json()

    assert body["capturing"] is True
    assert body["mode"] == "demo"
    assert body["mode_reason"] == "no tshark"
    (sensor,) = body["sensors"]
    assert sensor["packets_captured"] == 10
    assert sensor["packets_stored"] == 7
    assert sensor["queue_lag_packets"] == 3


def test_token_endpoint_issues_token_for_valid_credentials(anon, user):
    response = anon.post(
        "/api/auth/token/", {"username": "alice", "password": "correct horse battery"}, format="json"
    )

    assert response.status_code == 200
    token = response.json()["token"]
    assert anon.get("/api/status", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200


def test_token_endpoint_rejects_wrong_password(anon, user):
    response = anon.post("/api/auth/token/", {"username": "alice", "password": "nope"}, format="json")

    assert response.status_code == 400
    assert "Unable to log in" in str(response.json())


@pytest.mark.parametrize("path", ["/api/status", "/api/config", "/api/interfaces", "/api/config/history"])
def test_every_endpoint_requires_authentication(anon, path):
    response = anon.get(path)

    assert response.status_code == 401
    assert response.json()["detail"]


def test_bad_token_is_rejected(anon):
    response = anon.get("/api/status", HTTP_AUTHORIZATION="Token not-a-real-token")

    assert response.status_code == 401


def test_unknown_api_route_is_json_404(api):
    response = api.get("/api/no-such-thing")

    assert response.status_code == 404
    assert response.json() == {"detail": "no such route: /api/no-such-thing"}


def test_malformed_json_is_a_clear_400(admin_api):
    response = admin_api.post("/api/config", data="{not json", content_type="application/json")

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_wrong_content_type_is_415(admin_api):
    response = admin_api.post(
        "/api/config", data="buffer_size=5", content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 415
    assert "Unsupported media type" in response.json()["detail"]


def test_health_is_public_and_ready_checks_dependencies(anon):
    assert anon.get("/healthz").json() == {"status": "ok"}
    ready = anon.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "redis": True, "database": True}


def test_openapi_schema_and_docs_are_served(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"] if schema["Content-Type"].endswith("json") else None
    if paths is None:
        import yaml

        paths = yaml.safe_load(schema.content)["paths"]
    for expected in ("/api/status", "/api/config", "/api/interfaces", "/api/auth/token/"):
        assert expected in paths
    assert api.get("/api/docs/").status_code == 200


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/"])
def test_schema_and_docs_need_a_user_with_a_role(anon, nogroup_api, viewer_api, path):
    assert anon.get(path).status_code == 401
    refused = nogroup_api.get(path)
    assert refused.status_code == 403
    assert "no role yet" in refused.content.decode()
    assert viewer_api.get(path).status_code == 200


def test_a_refusal_names_the_missing_permission(viewer_api):
    response = viewer_api.post("/api/config", {"buffer_size": 2000}, format="json")

    assert response.status_code == 403
    assert (
        response.json()["detail"]
        == "permission denied: this needs the permission capture.change_monitorconfig"
    )


def test_a_user_with_no_role_is_told_to_ask_for_one(nogroup_api):
    response = nogroup_api.get("/api/status")

    assert response.status_code == 403
    assert response.json()["detail"] == (
        "your account has no role yet: ask an admin to give you one (viewer, analyst or admin)"
    )


def test_a_view_without_declared_permissions_refuses_every_method(rf, staff):
    """The default permission class: a view that declares nothing is open to nobody, not everybody."""
    from rest_framework.response import Response
    from rest_framework.test import force_authenticate
    from rest_framework.views import APIView

    class Undeclared(APIView):
        def get(self, request):
            return Response({"secret": 1})

    request = rf.get("/x")
    force_authenticate(request, user=staff)
    response = Undeclared.as_view()(request)

    assert response.status_code == 403
    assert "declares no permission for GET" in response.data["detail"]


def test_expired_token_is_refused(anon, user, settings):
    from datetime import timedelta

    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=user)
    Token.objects.filter(pk=token.pk).update(
        created=timezone.now() - timedelta(hours=settings.NETMON_TOKEN_TTL_HOURS + 1)
    )

    response = anon.get("/api/status", HTTP_AUTHORIZATION=f"Token {token.key}")

    assert response.status_code == 401
    assert "expired" in response.json()["detail"]
