"""Remote control of running capture processes through Redis.

The web side (API, WebSocket) writes the desired state of a sensor (or of all sensors) as a
small JSON document with a version number; each capture process polls it (a GET twice a second
is cheaper and more robust than a pub/sub connection that must be re-established after a Redis
restart) and applies the newest version it has not seen.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from capture.connections import redis_client
from capture.validation import check_sensor_name

ALL_SENSORS = "*"
_DESIRED = "netmon:capture:desired:{sensor}"
_VERSION = "netmon:capture:version"
_HEARTBEAT = "netmon:capture:heartbeat:{sensor}"
HEARTBEAT_TTL = 10


def request_capture(
    action: str,
    sensor: str | None = None,
    interface: str | None = None,
    bpf: str | None = None,
    client: redis.Redis | None = None,
) -> dict[str, Any]:
    """Ask a sensor (or every sensor: ``sensor=None``) to start or stop; returns the command as stored.

    ``sensor`` becomes part of a Redis key: a name outside ``SENSOR_NAME_PATTERN`` is a ValueError
    naming ``sensor``, before anything is written.
    """
    if action not in {"start", "stop", "reconfigure"}:
        raise ValueError(f"unknown capture action {action!r}")
    if sensor is not None:
        check_sensor_name(sensor)
    client = client or redis_client()
    command: dict[str, Any] = {"action": action, "version": int(client.incr(_VERSION)), "at": time.time()}
    if interface is not None:
        command["interface"] = interface
    if bpf is not None:
        command["bpf"] = bpf
    client.set(_DESIRED.format(sensor=sensor or ALL_SENSORS), json.dumps(command))
    return command


def pending_command(sensor: str, seen_version: int, client: redis.Redis) -> dict[str, Any] | None:
    """The newest command for ``sensor`` (or all sensors) newer than ``seen_version``, if any."""
    raw = client.mget(_DESIRED.format(sensor=sensor), _DESIRED.format(sensor=ALL_SENSORS))
    commands = [json.loads(item) for item in raw if item]
    newest = max(commands, key=lambda c: c.get("version", 0), default=None)
    if newest is None or newest.get("version", 0) <= seen_version:
        return None
    return newest


def current_version(client: redis.Redis) -> int:
    return int(client.get(_VERSION) or 0)


def write_heartbeat(sensor: str, status: dict[str, Any], client: redis.Redis) -> None:
    client.set(_HEARTBEAT.format(sensor=sensor), json.dumps(status), ex=HEARTBEAT_TTL)


def read_heartbeats(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Live status documents of the capture processes that reported in the last few seconds."""
    keys = list(client.scan_iter(match=_HEARTBEAT.format(sensor="*"), count=100))
    if not keys:
        return {}
    prefix = len(_HEARTBEAT.format(sensor=""))
    return {
        key.decode()[prefix:]: json.loads(value)
        for key, value in zip(keys, client.mget(keys), strict=True)
        if value
    }
