"""Checks of names that become parts of Redis keys: the one validator of sensor names.

A sensor's name is in its stream, lock, state, control and heartbeat keys, so whoever names a
sensor (``manage.py capture --sensor``/``NETMON_SENSOR``, ``control.request_capture``, the
WebSocket's ``start_capture``/``stop_capture``) checks it here against
``choices.SENSOR_NAME_PATTERN``. Django-free: the capture command calls it before it touches
Redis or the database.

Public API:

- ``check_sensor_name(value, field="sensor") -> str``: ``value`` if it is a valid sensor name,
  else ``ValueError`` naming ``field``, the value and the rule.
- ``sensor_name_from_host(hostname) -> str``: a host name made into a valid sensor name (the
  capture command's default, which nobody typed and so is not refused).
"""

from __future__ import annotations

import re

from capture.choices import SENSOR_NAME_MAX_LENGTH, SENSOR_NAME_PATTERN, SENSOR_NAME_RULE

__all__ = ["check_sensor_name", "sensor_name_from_host"]

_SENSOR_NAME = re.compile(SENSOR_NAME_PATTERN)
_OUTSIDE = re.compile(r"[^A-Za-z0-9_.-]+")
_FALLBACK = "sensor"


def check_sensor_name(value: object, field: str = "sensor") -> str:
    """``value`` if it is a sensor name (``SENSOR_NAME_PATTERN``); else ValueError naming ``field``."""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string of {SENSOR_NAME_RULE}, got {type(value).__name__}")
    if _SENSOR_NAME.fullmatch(value) is None:
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise ValueError(f"{field} {shown!r} is not a valid sensor name: use {SENSOR_NAME_RULE}")
    return value


def sensor_name_from_host(hostname: str) -> str:
    """The host name with every run of other characters replaced by '-', cut to the maximum length."""
    name = _OUTSIDE.sub("-", hostname).strip("-")[:SENSOR_NAME_MAX_LENGTH]
    return name or _FALLBACK
