"""GET /api/interfaces: the host's capture interfaces, or a clear 503 without dumpcap."""

from __future__ import annotations

import shutil
import socket

import pytest

from capture import host

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


# --- dumpcap -D runs at most once per INTERFACE_CACHE_SECONDS per process ------------------------


@pytest.fixture
def fake_dumpcap(tmp_path, monkeypatch):
    """A ``dumpcap`` first on PATH that lists fake0 and any, and counts its runs (one line per run)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    runs = tmp_path / "runs"
    runs.write_text("")
    script = bin_dir / "dumpcap"
    script.write_text(f"#!/bin/sh\necho run >> {runs}\nprintf '1. fake0 (Fake one)\\n2. any\\n'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return lambda: len(runs.read_text().splitlines())


@pytest.fixture
def clock(monkeypatch):
    """The interface cache's clock, moved by hand (no sleeping)."""
    now = [1000.0]
    monkeypatch.setattr(host, "_clock", lambda: now[0])
    return now


def test_two_calls_within_the_window_run_dumpcap_once(fake_dumpcap):
    first = host.list_interfaces()
    second = host.list_interfaces()

    assert fake_dumpcap() == 1
    assert first == second
    assert first == [{"name": "fake0", "description": "Fake one"}, {"name": "any", "description": ""}]


def test_dumpcap_runs_again_after_the_window(fake_dumpcap, clock):
    host.list_interfaces()
    clock[0] += host.INTERFACE_CACHE_SECONDS - 0.5
    host.list_interfaces()
    assert fake_dumpcap() == 1

    clock[0] += 1.0
    host.list_interfaces()
    assert fake_dumpcap() == 2


def test_the_api_answers_from_the_cache(api, fake_dumpcap):
    responses = [api.get("/api/interfaces") for _ in range(3)]

    assert fake_dumpcap() == 1
    assert all(r.status_code == 200 for r in responses)
    assert [item["name"] for item in responses[-1].json()] == ["fake0", "any", "demo"]


def test_a_failing_dumpcap_is_cached_too(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    runs = tmp_path / "runs"
    script = bin_dir / "dumpcap"
    script.write_text(f"#!/bin/sh\necho run >> {runs}\necho 'no permission' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))

    for _ in range(2):
        with pytest.raises(host.ToolMissing, match="dumpcap -D failed: no permission"):
            host.list_interfaces()

    assert len(runs.read_text().splitlines()) == 1


def test_interface_checks_use_the_same_cached_list(admin_api, fake_dumpcap):
    host.list_interfaces()

    assert host.is_valid_interface("fake0")  # only dumpcap lists it
    assert host.is_valid_interface("lo")  # the kernel's own names still count
    assert not host.is_valid_interface("eth99")
    response = admin_api.post("/api/config", {"network_interface": "fake0"}, format="json")
    assert response.status_code == 200, response.json()
    assert fake_dumpcap() == 1
