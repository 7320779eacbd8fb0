"""The admin: every registered model's pages load for staff; config edits are validated and logged."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import Client

from capture.models import ConfigChange, MonitorConfig

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
