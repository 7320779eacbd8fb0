"""GET /api/interfaces: the host's capture interfaces, or a clear 503 without dumpcap."""

from __future__ import annotations

import shutil
import socket

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.skipif(shutil.which("dumpcap") is None, reason="dumpcap (tshark) is not installed")
def test_lists_host_interfaces_with_descriptions(api):
    response = api.get("/api/interfaces")

    assert response.status_code == 200
    names = {item["name"] for item in response.json()}
    assert {name for _, name in socket.if_nameindex()} <= names
    assert "demo" in names
    assert any(item["description"] for item in response.json())


def test_missing_dumpcap_is_a_clear_503(api, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")

    response = api.get("/api/interfaces")

    assert response.status_code == 503
    assert response.json()["detail"] == "dumpcap not found: install tshark (apt-get install tshark)"
    assert response.json()["interfaces"][0]["name"] == "demo"
