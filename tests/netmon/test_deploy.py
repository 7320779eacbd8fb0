"""Deployment: settings fail fast, production passes `check --deploy`, the compose file is sound."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "NETMON_ENV", "DEBUG"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_production_without_secret_key_stops_with_instructions():
    result = run_manage("check", NETMON_ENV="production")

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert "export SECRET_KEY=" in result.stderr


def test_invalid_boolean_setting_is_named():
    result = run_manage("check", DEBUG="maybe")

    assert result.returncode != 0
    assert "DEBUG='maybe' is not a boolean" in result.stderr


def test_production_settings_pass_check_deploy():
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        NETMON_ENV="production",
        SECRET_KEY="k" * 20 + "-production-secret-key-with-entropy-0123456789",
        ALLOWED_HOSTS="netmon.example.org",
        CSRF_TRUSTED_ORIGINS="https://netmon.example.org",
    )

    assert result.returncode == 0, result.stderr + result.stdout


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_defines_the_stack_and_keeps_datastores_private():
    services = compose()["services"]

    assert set(services) >= {"redis", "postgres", "web", "worker", "capture"}
    assert "ports" not in services["redis"]
    assert "ports" not in services["postgres"]
    assert all(p.startswith("${NETMON_PUBLISH:-127.0.0.1}:") for p in services["web"]["ports"])
    assert "--demo" in services["capture"]["command"]
    assert compose()["volumes"].keys() >= {"postgres-data"}


def test_live_override_grants_capture_capabilities():
    live = yaml.safe_load((ROOT / "docker-compose.live.yml").read_text())["services"]["capture"]

    assert live["network_mode"] == "host"
    assert {"NET_ADMIN", "NET_RAW"} <= set(live["cap_add"])


def docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not docker_compose_available(), reason="the docker client has no compose plugin here")
def test_docker_compose_config_is_valid():
    env = {**os.environ, "SECRET_KEY": "test"}
    for files in (
        ["-f", "docker-compose.yml"],
        ["-f", "docker-compose.yml", "-f", "docker-compose.live.yml"],
    ):
        result = subprocess.run(
            ["docker", "compose", *files, "config", "-q"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def test_compose_keeps_admin_local_and_cookies_secure_by_default():
    stack = compose()
    web = stack["services"]["web"]["environment"]
    shared = stack["x-netmon"]["environment"]

    assert web["NETMON_ADMIN_ALLOW_REMOTE"] == "${NETMON_ADMIN_ALLOW_REMOTE:-0}"
    for key in ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE"):
        assert shared[key] == "${" + key + ":-1}", key


def test_compose_gives_redis_a_password_that_every_client_uses():
    stack = compose()
    redis = stack["services"]["redis"]
    live = yaml.safe_load((ROOT / "docker-compose.live.yml").read_text())["services"]["capture"]

    assert "--requirepass" in " ".join(redis["command"])
    assert redis["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")
    assert stack["x-netmon"]["environment"]["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?")
    assert ":${REDIS_PASSWORD:?" in live["environment"]["REDIS_URL"]
