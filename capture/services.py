"""Capture's domain logic: the configuration (validation, updates, history) and sensor status."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction

from capture import control, events, validation
from capture.choices import CONFIG_KEYS
from capture.models import ConfigChange, MonitorConfig, Sensor

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """Invalid configuration: ``errors`` maps each offending key to a message naming what is allowed."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{key}: {message}" for key, message in errors.items()))


# Checks other apps add to the configuration's validator (capture imports no other app): each gets
# the cleaned changes and the current configuration and returns {key: message} for what it refuses.
# detection adds one: ml_model may only name a kind that has an active model (detection/apps.py).
ConfigCheck = Callable[[dict[str, Any], MonitorConfig], dict[str, str]]
_CONFIG_CHECKS: list[ConfigCheck] = []


def add_config_check(check: ConfigCheck) -> None:
    """Make ``validate_config_changes`` run ``check`` too (once per function, from an AppConfig.ready)."""
    if check not in _CONFIG_CHECKS:
        _CONFIG_CHECKS.append(check)


def get_config() -> MonitorConfig:
    """The active configuration row, created with defaults on first use."""
    config, _ = MonitorConfig.objects.get_or_create(pk=1)
    return config


def config_as_dict(config: MonitorConfig) -> dict[str, Any]:
    return {key: getattr(config, key) for key in CONFIG_KEYS}


def validate_config_changes(data: Any) -> dict[str, Any]:
    """Check a partial update; returns the cleaned values or raises ConfigError naming every bad key.

    The contract is ``capture.validation.ConfigUpdateSerializer`` (also the API's request schema);
    the API, the WebSocket's ``update_config`` and the admin form all come through here.
    """
    serializer = validation.ConfigUpdateSerializer(data=data)
    if not serializer.is_valid():
        raise ConfigError(validation.flat_errors(serializer.errors))
    cleaned = dict(serializer.validated_data)
    if _CONFIG_CHECKS:
        current = get_config()
        errors: dict[str, str] = {}
        for check in _CONFIG_CHECKS:
            errors.update(check(cleaned, current))
        if errors:
            raise ConfigError(errors)
    return cleaned


def update_config(
    data: Any, user: Any = None, source: str = "api"
) -> tuple[MonitorConfig, ConfigChange | None]:
    """Validate and apply a partial update, recording who changed what. Returns (config, change or None)."""
    cleaned = validate_config_changes(data)
    with transaction.atomic():
        get_config()  # make sure the row exists before locking it
        config = MonitorConfig.objects.select_for_update().get(pk=1)
        old = {key: getattr(config, key) for key in cleaned if getattr(config, key) != cleaned[key]}
        if not old:
            return config, None
        for key in old:
            setattr(config, key, cleaned[key])
        config.save()
        change = ConfigChange.objects.create(
            user=user if getattr(user, "is_authenticated", False) else None,
            source=source,
            old_values=old,
            new_values={key: cleaned[key] for key in old},
        )
    return config, change


def record_admin_change(config: MonitorConfig, old: dict[str, Any], user: Any) -> ConfigChange | None:
    """History entry for an edit made in the Django admin (already validated by the admin form)."""
    changed = {key: value for key, value in old.items() if getattr(config, key) != value}
    if not changed:
        return None
    return ConfigChange.objects.create(
        user=user,
        source="admin",
        old_values=changed,
        new_values={key: getattr(config, key) for key in changed},
    )


def announce_config(config: MonitorConfig) -> None:
    """Tell running capture processes and connected dashboards that the configuration changed."""
    try:
        control.request_capture("reconfigure")
    except Exception as exc:  # Redis down: capture re-reads the config when it reconnects
        log.warning("could not notify capture processes: %s", exc)
    events.broadcast(events.GROUP_CONTROL, {"type": "config.updated", "config": config_as_dict(config)})


def sensor_status(heartbeats: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per-sensor capture state and counters, merging DB counters with live heartbeats from Redis."""
    heartbeats = heartbeats or {}
    rows = []
    for sensor in Sensor.objects.order_by("name"):
        live = heartbeats.get(sensor.name)
        rows.append(
            {
                "sensor": sensor.name,
                "alive": live is not None,
                "state": (live or {}).get("state", sensor.state if live else Sensor.State.EXITED),
                "mode": (live or {}).get("mode", sensor.mode),
                "mode_reason": (live or {}).get("mode_reason", sensor.mode_reason),
                "interface": (live or {}).get("interface", sensor.interface),
                "bpf_filter": (live or {}).get("bpf", sensor.bpf_filter),
                "packets_captured": max(sensor.packets_read, (live or {}).get("packets_read", 0)),
                "packets_published": max(sensor.packets_published, (live or {}).get("packets_published", 0)),
                "packets_undecodable": max(
                    sensor.packets_undecodable, (live or {}).get("packets_undecodable", 0)
                ),
                "packets_stored": sensor.packets_stored,
                "packets_scored": sensor.packets_scored,
                "packets_dropped": sensor.packets_dropped_capture + sensor.packets_dropped_stream,
                "drop_reasons": _drop_reasons(sensor),
                "queue_lag_packets": max(0, sensor.last_seq_published - sensor.last_seq_ingested),
                "last_heartbeat": sensor.last_heartbeat,
                # the evidence ring (capture/evidence.py) as the running capture process reports it:
                # state "on", "off" or "failed" (full or unwritable directory) with the reason
                "evidence": (live or {}).get("evidence"),
            }
        )
    return rows


def _drop_reasons(sensor: Sensor) -> dict[str, int]:
    reasons = dict(sensor.drop_reasons or {})
    if sensor.packets_dropped_stream:
        reasons["backlog over buffer_size or lost from Redis"] = sensor.packets_dropped_stream
    return reasons


def prune_retention(keep_packets: int, keep_days: int) -> dict[str, int]:
    """Delete packets beyond the newest ``keep_packets`` or older than ``keep_days``, and old flows."""
    from datetime import timedelta

    from django.utils import timezone

    from capture.models import Flow, IngestedBatch, Packet

    deleted = {"packets": 0, "flows": 0, "batches": 0}
    cutoff = timezone.now() - timedelta(days=keep_days) if keep_days else None
    if cutoff is not None:
        deleted["packets"] += Packet.objects.filter(ts__lt=cutoff).delete()[0]
        deleted["flows"] += Flow.objects.filter(last_seen__lt=cutoff).delete()[0]
        deleted["batches"] += IngestedBatch.objects.filter(ingested_at__lt=cutoff).delete()[0]
    if keep_packets:
        # ids grow with insertion: everything below the id of the Nth newest packet goes.
        boundary = Packet.objects.order_by("-id").values_list("id", flat=True)[
            keep_packets : keep_packets + 1
        ]
        if boundary:
            deleted["packets"] += Packet.objects.filter(id__lte=boundary[0]).delete()[0]
    return deleted
