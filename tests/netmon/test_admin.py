"""The admin: every registered model's pages load for staff; config edits are validated and logged;
the admin role reaches it with its permissions, the viewer and the analyst do not."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import Client

from capture.models import ConfigChange, MonitorConfig
from detection.models import Anomaly, DetectionModel

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def test_admin_index_and_every_changelist_load(admin_client_logged_in):
    assert admin_client_logged_in.get("/admin/").status_code == 200
    for model in admin.site._registry:
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        assert admin_client_logged_in.get(url).status_code == 200, url


def test_admin_is_refused_from_a_remote_address(admin_client_logged_in):
    response = admin_client_logged_in.get("/admin/", REMOTE_ADDR="203.0.113.9")

    assert response.status_code == 403
    assert b"localhost" in response.content


def test_admin_requires_login():
    response = Client().get("/admin/")

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_admin_config_edit_is_validated_and_recorded(admin_client_logged_in, staff, redis_client):
    MonitorConfig.objects.get_or_create(pk=1)
    DetectionModel.objects.create(kind="both", version=1, feature_level="low", status="ready", is_active=True)
    form = {
        "network_interface": "demo",
        "bpf_filter": "tcp port nope",
        "buffer_size": 2000,
        "analysis_depth": "deep",
        "ml_model": "both",
        "feature_level": "low",
        "encryption_algorithm": "AES-256",
    }
    bad = admin_client_logged_in.post("/admin/capture/monitorconfig/1/change/", form)
    assert bad.status_code == 200
    assert b"does not compile" in bad.content

    form["bpf_filter"] = "tcp port 80"
    good = admin_client_logged_in.post("/admin/capture/monitorconfig/1/change/", form)
    assert good.status_code == 302
    change = ConfigChange.objects.get()
    assert change.source == "admin"
    assert change.user == staff
    assert change.new_values["bpf_filter"] == "tcp port 80"
    assert change.old_values["buffer_size"] == 1000


def test_behind_a_proxy_the_admin_judges_the_forwarded_client_not_the_proxy(admin_client_logged_in, settings):
    # The proxy runs on this host: every request it forwards arrives from 127.0.0.1.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    via_proxy = {"REMOTE_ADDR": "127.0.0.1"}

    remote = admin_client_logged_in.get("/admin/", HTTP_X_FORWARDED_FOR="203.0.113.9", **via_proxy)
    # a client cannot claim to be local: only the entry our proxy appended counts
    spoofed = admin_client_logged_in.get(
        "/admin/", HTTP_X_FORWARDED_FOR="127.0.0.1, 203.0.113.9", **via_proxy
    )
    local = admin_client_logged_in.get("/admin/", HTTP_X_FORWARDED_FOR="127.0.0.1", **via_proxy)

    assert remote.status_code == spoofed.status_code == 403
    assert local.status_code == 200


def test_metrics_behind_a_proxy_refuse_a_remote_client(client, settings, monkeypatch):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    monkeypatch.setenv("NETMON_METRICS_TOKEN", "scrape-token")

    response = client.get(
        "/metrics",
        HTTP_AUTHORIZATION="Bearer scrape-token",
        HTTP_X_FORWARDED_FOR="198.51.100.4",
        REMOTE_ADDR="127.0.0.1",
    )

    assert response.status_code == 403


CONFIG_FORM = {
    "network_interface": "demo",
    "bpf_filter": "",
    "buffer_size": 1000,
    "analysis_depth": "basic",
    "ml_model": "autoencoder",
    "feature_level": "advanced",
    "encryption_algorithm": "RSA",
}


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("who", ["viewer", "user", "nogroup"])  # viewer, analyst, no role
def test_the_viewer_and_the_analyst_do_not_reach_the_admin(request, who):
    client = signed_in(request.getfixturevalue(who))

    response = client.get("/admin/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_admin_role_edits_the_configuration_through_the_one_validator(admin_role, redis_client):
    MonitorConfig.objects.get_or_create(pk=1)
    client = signed_in(admin_role)

    refused = client.post(
        "/admin/capture/monitorconfig/1/change/", {**CONFIG_FORM, "ml_model": "isolation_forest"}
    )
    saved = client.post("/admin/capture/monitorconfig/1/change/", {**CONFIG_FORM, "buffer_size": 4000})

    assert refused.status_code == 200  # the form again: no active isolation_forest model
    assert "no active isolation_forest model" in refused.content.decode()
    assert saved.status_code == 302
    config = MonitorConfig.objects.get(pk=1)
    assert (config.ml_model, config.buffer_size) == ("autoencoder", 4000)
    assert ConfigChange.objects.get().user == admin_role


def test_the_admin_role_manages_users(admin_role, viewer):
    client = signed_in(admin_role)

    assert client.get("/admin/auth/user/").status_code == 200
    assert client.get(f"/admin/auth/user/{viewer.pk}/change/").status_code == 200
    assert client.get("/admin/authtoken/tokenproxy/").status_code == 200


def test_marking_false_positives_in_the_admin_needs_the_change_permission(admin_role):
    from capture.models import Sensor
    from detection.admin import AnomalyAdmin

    sensor = Sensor.objects.create(name="s1")
    anomaly = Anomaly.objects.create(sensor=sensor, packet_seq=1, ts="2026-01-01T00:00:00Z", score=0.9,
                                     threshold=0.5, model_kind="autoencoder")  # fmt: skip
    action = {"action": "mark_false_positive", "_selected_action": [anomaly.pk]}
    client = signed_in(admin_role)
    assert list(AnomalyAdmin.mark_false_positive.allowed_permissions) == ["change"]

    # an admin-role user whose group lost detection.change_anomaly (a custom role) has no such action
    from django.contrib.auth.models import Group, Permission

    custom = Group.objects.create(name="auditor")
    custom.permissions.set(Permission.objects.filter(codename="view_anomaly"))
    admin_role.groups.set([custom])
    client.post("/admin/detection/anomaly/", action)
    anomaly.refresh_from_db()
    assert anomaly.false_positive is False

    admin_role.groups.set(Group.objects.filter(name="admin"))
    client.post("/admin/detection/anomaly/", action)
    anomaly.refresh_from_db()
    assert anomaly.false_positive is True


def test_incident_status_actions_in_the_admin_follow_the_rule_and_need_the_change_permission(admin_role):
    from django.contrib.auth.models import Group, Permission

    from capture.models import Sensor
    from detection.models import Incident

    sensor = Sensor.objects.create(name="s1")
    incident = Incident.objects.create(sensor=sensor, src_ip="10.0.0.9", first_seen="2026-01-01T00:00:00Z",
                                       last_seen="2026-01-01T00:00:01Z")  # fmt: skip
    client = signed_in(admin_role)

    def act(status: str):
        return client.post(
            "/admin/detection/incident/",
            {"action": f"mark_{status}", "_selected_action": [incident.pk]},
            follow=True,
        )

    custom = Group.objects.create(name="auditor")  # sees incidents, may not change them
    custom.permissions.set(Permission.objects.filter(codename="view_incident"))
    admin_role.groups.set([custom])
    act("resolved")
    incident.refresh_from_db()
    assert incident.status == "open"

    admin_role.groups.set(Group.objects.filter(name="admin"))
    act("resolved")
    incident.refresh_from_db()
    assert (incident.status, incident.status_changed_by_id) == ("resolved", admin_role.pk)
    refused = act("acknowledged")  # resolved -> acknowledged is not allowed: said, and nothing moves
    assert b"cannot go from resolved to acknowledged; allowed: open" in refused.content
    incident.refresh_from_db()
    assert incident.status == "resolved"
