"""The project-wide live-monitoring WebSocket at /ws/monitor/ (protocol: docs/websocket.md).

One consumer per browser tab or API client. It relays what producers publish to the channel
layer groups (capture process: packets, stats, capture state; Celery: anomalies, exports) and
accepts a few commands (start/stop capture, update the configuration, choose streams/filters).
Everything a client sends is size-checked, rate-limited, checked against the user's permissions
(read from the database for every command: a role taken away applies at once) and validated
before it reaches capture: a refused message gets an ``error`` reply and the connection stays open.
A user with no role at all is told to ask for one and the socket is closed (4403).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from capture import control, events, geo, services, validation
from capture.choices import BPF_MAX_LENGTH, INTERFACE_MAX_LENGTH, IncidentStatus
from capture.connections import redis_client
from capture.permissions import NO_ROLE_MESSAGE
from detection import live
from detection import services as detection_services
from detection.incidents import incident_addresses
from detection.models import Incident
from netmon import roles
from netmon.auth import valid_token_user

log = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NO_ROLE = 4403  # authenticated, but the account has no role (no permission at all)
MAX_MESSAGE_BYTES = 64 * 1024
RATE_PER_SECOND = 20.0
RATE_BURST = 40
PACKET_MESSAGES_PER_SECOND = 4
PACKET_BUFFER = 200
# An open socket re-checks its user this often: a logged-out or deactivated user, or a revoked or
# expired token, is disconnected within this many seconds (and at the next message it sends).
AUTH_RECHECK_SECONDS = 3.0
MAX_NAME = 64
STREAMS = ("packets", "anomalies", "incidents", "stats", "exports")
# What each command needs (None: any role). Every command in MonitorConsumer._COMMANDS has an
# entry (tests/netmon/test_authz_matrix.py checks it, command by command and role by role).
COMMAND_PERMISSIONS: dict[str, str | None] = {
    "start_capture": "capture.control_capture",
    "stop_capture": "capture.control_capture",
    "update_config": "capture.change_monitorconfig",
    "incident_status": "detection.change_incident",
    "subscribe": None,  # each stream asked for needs its own permission (STREAM_PERMISSIONS)
    "ping": None,
}
STREAM_PERMISSIONS: dict[str, str] = {
    "packets": "capture.view_packet",
    "anomalies": "detection.view_anomaly",
    "incidents": "detection.view_incident",
    "stats": "capture.view_sensor",
    "exports": "exports.view_exportjob",  # and only the user's own jobs (export_group)
}


class ClientError(Exception):
    """A client message we refuse; becomes an ``error`` reply (the connection stays open)."""

    def __init__(
        self,
        error: str,
        field: str | None = None,
        fields: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.fields = fields if fields is not None else ({field: error} if field else {})
        self.field = field if field is not None else next(iter(self.fields), None)
        self.extra = extra

    def as_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "error", "error": self.error, **self.extra}
        if self.field is not None:
            message["field"] = self.field
            message["fields"] = self.fields
        return message


class TokenBucket:
    """Per-connection rate limit: ``rate`` messages a second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until the next message is accepted, rounded up to the millisecond."""
        # Rounded up, never to nearest: a bucket a hair short of one token refuses now,
        # so "retry after 0" would be a lie (CI once saw 0.0 here).
        return math.ceil(max(0.0, 1.0 - self.tokens) / self.rate * 1000) / 1000


class Permissions:
    """What a socket's user may do, as read from the database at one moment."""

    def __init__(self, superuser: bool, names: set[str]) -> None:
        self.superuser = superuser
        self.names = names

    @property
    def none(self) -> bool:
        """No permission at all: the account has no role (capture.permissions.has_no_role)."""
        return not self.superuser and not self.names

    def allows(self, permission: str | None) -> bool:
        return permission is None or self.superuser or permission in self.names

    def streams(self) -> set[str]:
        return {stream for stream, needed in STREAM_PERMISSIONS.items() if self.allows(needed)}


def _current_permissions(user_id: int) -> Permissions:
    """The user's permissions now: a fresh user object (Django caches permissions on the object)."""
    user = get_user_model().objects.get(pk=user_id)
    if not user.is_active:
        return Permissions(False, set())
    return Permissions(user.is_superuser, user.get_all_permissions())


def _initial_state(user: Any, permissions: Permissions, streams: set[str]) -> dict[str, Any]:
    """The ``connected`` payload: configuration and per-sensor capture status (DB + Redis), and
    the user's roles and dashboard permissions (so the page can hide what it may not use)."""
    capture: list[dict[str, Any]] = []
    if permissions.allows("capture.view_sensor"):
        try:
            heartbeats = control.read_heartbeats(redis_client())
        except Exception as exc:  # Redis down: the DB counters still describe the sensors
            log.warning("could not read capture heartbeats: %s", exc)
            heartbeats = {}
        capture = services.sensor_status(heartbeats)
    config = None
    if permissions.allows("capture.view_monitorconfig"):
        config = services.config_as_dict(services.get_config())
    return {
        "type": "connected",
        "server_time": timezone.now().isoformat(),
        "user": user.get_username(),
        "roles": roles.roles_of(user),
        "permissions": [name for name in roles.DASHBOARD_PERMISSIONS if permissions.allows(name)],
        "config": config,
        "capture": capture,
        "streams": [s for s in STREAMS if s in streams],
        "limits": {
            "max_message_bytes": MAX_MESSAGE_BYTES,
            "messages_per_second": RATE_PER_SECOND,
            "burst": RATE_BURST,
            "packet_messages_per_second": PACKET_MESSAGES_PER_SECOND,
            "packet_buffer": PACKET_BUFFER,
        },
    }


def _authorisation(
    user_id: int, token: str | None, session_key: str | None
) -> tuple[tuple[str, int] | None, Permissions]:
    """The user's permissions now, and why the socket's user may no longer use it (with the close
    code): token revoked or expired, logged out, deactivated (4401), or every role taken away (4403)."""
    nothing = Permissions(False, set())
    if token:
        if valid_token_user(token) is None:
            return ("token expired or revoked: get a new one", CLOSE_UNAUTHENTICATED), nothing
    else:
        if not get_user_model().objects.filter(pk=user_id, is_active=True).exists():
            return ("your account was deactivated", CLOSE_UNAUTHENTICATED), nothing
        store = import_module(settings.SESSION_ENGINE).SessionStore
        if not session_key or store(session_key).load().get(SESSION_KEY) != str(user_id):
            return ("you logged out (or your session ended): log in again", CLOSE_UNAUTHENTICATED), nothing
    permissions = _current_permissions(user_id)
    if permissions.none:
        return (NO_ROLE_MESSAGE, CLOSE_NO_ROLE), permissions
    return None, permissions


def _optional_str(
    data: dict[str, Any], key: str, max_length: int, *, allow_empty: bool = False
) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ClientError(f"{key} must be a string, got {type(value).__name__}", field=key)
    if not value and not allow_empty:
        raise ClientError(f"{key} must not be empty (leave it out instead)", field=key)
    if len(value) > max_length:
        raise ClientError(f"{key} must be at most {max_length} characters", field=key)
    return value


def _check_fields(data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed - {"type", "id"})
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise ClientError(
            f"unknown field {unknown[0]!r} for {data['type']}; allowed fields: {known}", field=unknown[0]
        )


def _validate_capture_target(interface: str | None, bpf: str | None) -> None:
    """The configuration's host checks (capture.validation) on start_capture's interface and bpf.

    Blocking (libpcap, socket): the caller runs it in a thread.
    """
    if interface is not None:
        try:
            validation.check_interface(interface)
        except ValueError as exc:
            raise ClientError(str(exc), field="interface") from None
    if bpf:
        try:
            validation.check_bpf(bpf)
        except validation.BpfCompileError as exc:
            # The socket's reply names its field: "bpf does not compile: ..." (docs/websocket.md).
            raise ClientError(f"bpf {exc}", field="bpf") from None
        except ValueError as exc:
            raise ClientError(str(exc), field="bpf") from None


def _capture_sensor(content: dict[str, Any]) -> str | None:
    """The ``sensor`` of a capture command, if any: it names Redis keys, so it must be a sensor name."""
    sensor = _optional_str(content, "sensor", MAX_NAME)
    if sensor is not None:
        try:
            validation.check_sensor_name(sensor)
        except ValueError as exc:
            raise ClientError(str(exc), field="sensor") from None
    return sensor


def _apply_config(data: Any, user: Any) -> dict[str, Any]:
    config, change = services.update_config(data, user=user, source="websocket")
    if change is not None:
        services.announce_config(config)  # broadcasts config.updated to every dashboard
    return {"config": services.config_as_dict(config), "changed": change is not None}


def _change_incident_status(pk: int, status: str, user: Any) -> dict[str, Any]:
    """The incident_status command: the same service (and transition rule) as the API and admin."""
    incident = Incident.objects.opened().filter(pk=pk).first()
    if incident is None:
        raise LookupError(pk)
    detection_services.change_incident_status(incident, status, user)
    fresh = Incident.objects.select_related("sensor", "status_changed_by").get(pk=pk)
    return live.incident_event(fresh)


def _normalise_ip(value: str) -> str:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        raise ClientError(f"ip {value!r} is not an IPv4 or IPv6 address", field="ip") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # records carry IPv4 as dotted quads
    return str(address)


async def _with_geo(func: Callable[..., Any], *args: Any) -> Any:
    """Run a GeoIP function: in the loop once the data is loaded (cached lookups take microseconds);
    in a thread while it is not, so the first lookup's load (about half a second) blocks no socket."""
    if geo.is_loaded():
        return func(*args)
    return await sync_to_async(func, thread_sensitive=False)(*args)


def _incident_with_geo(incident: dict[str, Any]) -> dict[str, Any]:
    addresses = incident_addresses(incident.get("sources"), incident.get("targets"))
    return {**incident, "geo": geo.describe_many(addresses)}


def _resilient_receive(receive: Callable[[], Awaitable[dict[str, Any]]]) -> Callable[[], Awaitable[dict]]:
    """The channel-layer receive, retried when Redis times out or drops the connection.

    channels-redis waits for messages with a 5 s BZPOPMIN, and redis-py's default socket timeout is
    also 5 s: on a quiet socket (no capture running) the read can time out first, and channels
    would end the consumer (close code 1011) although nothing is wrong. A lost Redis connection is
    retried too (with a pause), so the socket stays open and resumes when Redis is back.
    """
    import redis.exceptions

    async def receive_again() -> dict[str, Any]:
        failures = 0
        while True:
            try:
                return await receive()
            except redis.exceptions.TimeoutError:
                continue  # an idle wait outlived the socket timeout: wait again
            except (redis.exceptions.ConnectionError, OSError) as exc:
                failures += 1
                if failures == 1:
                    log.warning("channel layer receive failed, retrying: %s", exc)
                await asyncio.sleep(min(5.0, 0.2 * 2**failures))

    return receive_again


class MonitorConsumer(AsyncJsonWebsocketConsumer):
    """Relays live capture, detection and export events to one client and takes its commands."""

    # channels' AsyncConsumer.__call__ assigns ``channel_receive`` right before its dispatch loop.
    @property
    def channel_receive(self) -> Callable[[], Awaitable[dict[str, Any]]]:
        return self._channel_receive

    @channel_receive.setter
    def channel_receive(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self._channel_receive = _resilient_receive(receive)

    async def connect(self) -> None:
        # Accept first so the client sees the 4401 close code (a refused handshake is only a 403).
        await self.accept()
        self.user = self.scope.get("user")
        self.token: str | None = self.scope.get("auth_token")
        self._tasks: list[asyncio.Task] = []
        self._closed = False
        if self.user is None or not self.user.is_authenticated:
            await self.send_json(
                {"type": "error", "error": "authentication required: log in or pass ?token="}
            )
            await self.close(code=CLOSE_UNAUTHENTICATED)
            self._closed = True
            return
        self.permissions = await database_sync_to_async(_current_permissions)(self.user.pk)
        if self.permissions.none:
            await self.send_json({"type": "error", "error": NO_ROLE_MESSAGE})
            await self.close(code=CLOSE_NO_ROLE)
            self._closed = True
            return
        self.bucket = TokenBucket(RATE_PER_SECOND, RATE_BURST)
        self.streams: set[str] = set()
        self.sensor_filter: str | None = None
        self.ip_filter: str | None = None
        self._packets: deque[dict[str, Any]] = deque()
        self._packets_dropped = 0
        self._packets_sensors: set[str] = set()
        self._packets_read_at: float | None = None
        self._packets_first_read_at: float | None = None
        self._last_packet_send = 0.0
        self._flush_task: asyncio.Task | None = None
        await self.channel_layer.group_add(events.GROUP_CONTROL, self.channel_name)
        self.groups.append(events.GROUP_CONTROL)
        await self._set_streams(self.permissions.streams())  # the streams this user may see
        await self.send_json(
            await database_sync_to_async(_initial_state)(self.user, self.permissions, self.streams)
        )
        session = self.scope.get("session")
        self.session_key: str | None = getattr(session, "session_key", None)
        self._tasks.append(asyncio.ensure_future(self._recheck_authorisation_periodically()))

    async def disconnect(self, code: int) -> None:
        self._closed = True
        for task in [*getattr(self, "_tasks", []), getattr(self, "_flush_task", None)]:
            if task is not None:
                task.cancel()

    async def dispatch(self, message: dict[str, Any]) -> None:
        try:
            await super().dispatch(message)
        except StopConsumer:
            raise
        except Exception:
            if str(message.get("type", "")).startswith("websocket."):
                raise
            # A malformed or unknown producer message must not take the client's connection down.
            log.exception("dropped channel-layer message of type %r", message.get("type"))

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content, cls=DjangoJSONEncoder)

    # --- authentication -----------------------------------------------------------------------
    async def _still_authorised(self) -> bool:
        """Re-check the user (and re-read its permissions); close the socket when it lost access."""
        lost, permissions = await database_sync_to_async(_authorisation)(
            self.user.pk, self.token, self.session_key
        )
        if lost is None:
            self.permissions = permissions
            if self.streams - self.permissions.streams():  # a role narrowed: stop what it may not see
                await self._set_streams(self.streams & self.permissions.streams())
            return True
        if not self._closed:
            self._closed = True
            reason, code = lost
            await self.send_json({"type": "error", "error": reason})
            await self.close(code=code)
        return False

    async def _recheck_authorisation_periodically(self) -> None:
        while not self._closed:
            await asyncio.sleep(AUTH_RECHECK_SECONDS)
            try:
                if not await self._still_authorised():
                    return
            except Exception as exc:  # database hiccup: try again next round rather than drop the client
                log.warning("authorisation re-check failed: %s", exc)

    # --- client -> server ---------------------------------------------------------------------
    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        if self._closed:
            return
        content: dict[str, Any] | None = None
        try:
            content = self._parse(text_data, bytes_data)
            if not await self._still_authorised():
                return
            reply = await self._handle(content)
        except ClientError as exc:
            reply = exc.as_message()
        except Exception:
            log.exception("websocket message failed")
            reply = {"type": "error", "error": "internal error; see the server log"}
        if reply is not None:
            if content is not None and "id" in content:
                reply["id"] = content["id"]
            await self.send_json(reply)

    def _parse(self, text_data: str | None, bytes_data: bytes | None) -> dict[str, Any]:
        # Cheap checks first: an oversized or flooding client costs no JSON parsing.
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > MAX_MESSAGE_BYTES:
            raise ClientError(f"message too large: {size} bytes, the limit is {MAX_MESSAGE_BYTES}")
        if not self.bucket.take():
            raise ClientError(
                f"rate limit exceeded: at most {RATE_PER_SECOND:g} messages per second "
                f"(bursts of {RATE_BURST}); message ignored",
                retry_after=self.bucket.retry_after(),
            )
        if text_data is None:
            raise ClientError("binary frames are not accepted: send JSON text")
        try:
            content = json.loads(text_data)
        except ValueError as exc:
            raise ClientError(f"malformed JSON: {exc}") from None
        if not isinstance(content, dict):
            raise ClientError(f"expected a JSON object with a 'type', got a JSON {type(content).__name__}")
        kind = content.get("type")
        if not isinstance(kind, str) or not kind:
            raise ClientError("missing 'type': one of " + ", ".join(self._COMMANDS), field="type")
        if kind not in self._COMMANDS:
            raise ClientError(
                f"unknown message type {kind[:64]!r}; expected one of: {', '.join(self._COMMANDS)}",
                field="type",
            )
        return content

    async def _handle(self, content: dict[str, Any]) -> dict[str, Any] | None:
        kind = content["type"]
        needed = COMMAND_PERMISSIONS[kind]
        if not self.permissions.allows(needed):  # read by _still_authorised just before
            raise ClientError(f"permission denied: {kind} needs {needed}", permission=needed)
        return await getattr(self, self._COMMANDS[kind])(content)

    async def _cmd_start_capture(self, content: dict[str, Any]) -> dict[str, Any] | None:
        _check_fields(content, {"interface", "bpf", "sensor"})
        interface = _optional_str(content, "interface", INTERFACE_MAX_LENGTH)
        bpf = _optional_str(content, "bpf", BPF_MAX_LENGTH, allow_empty=True)
        sensor = _capture_sensor(content)
        await sync_to_async(_validate_capture_target, thread_sensitive=False)(interface, bpf)
        return await self._request_capture("start", "starting", sensor, interface, bpf)

    async def _cmd_stop_capture(self, content: dict[str, Any]) -> dict[str, Any] | None:
        _check_fields(content, {"sensor"})
        sensor = _capture_sensor(content)
        return await self._request_capture("stop", "stopping", sensor)

    async def _request_capture(
        self,
        action: str,
        state: str,
        sensor: str | None,
        interface: str | None = None,
        bpf: str | None = None,
    ) -> dict[str, Any] | None:
        try:
            command = await sync_to_async(control.request_capture, thread_sensitive=False)(
                action, sensor=sensor, interface=interface, bpf=bpf
            )
        except Exception as exc:  # Redis down: tell the client instead of pretending
            log.warning("capture %s request failed: %s", action, exc)
            raise ClientError(f"could not reach the capture processes (Redis): {exc}") from None
        status: dict[str, Any] = {
            "type": "capture.status",
            "sensor": sensor or control.ALL_SENSORS,
            "state": state,
            "requested_by": self.user.get_username(),
            "version": command["version"],
        }
        if interface is not None:
            status["interface"] = interface
        if bpf is not None:
            status["bpf"] = bpf
        await self.channel_layer.group_send(events.GROUP_CONTROL, status)
        return None  # the broadcast reaches this client too

    async def _cmd_update_config(self, content: dict[str, Any]) -> dict[str, Any] | None:
        _check_fields(content, {"config"})
        if "config" not in content:
            raise ClientError("missing 'config': an object of configuration keys", field="config")
        if not isinstance(content["config"], dict):
            raise ClientError("config must be an object of configuration keys", field="config")
        if not content["config"]:
            raise ClientError("config is empty: give at least one key to change", field="config")
        try:
            result = await database_sync_to_async(_apply_config)(content["config"], self.user)
        except services.ConfigError as exc:
            raise ClientError("invalid configuration", fields=exc.errors) from None
        if result["changed"]:
            return None  # announce_config's broadcast reaches this client too
        return {"type": "config_updated", "config": result["config"], "changed": False}

    async def _cmd_incident_status(self, content: dict[str, Any]) -> dict[str, Any]:
        # The incident is "incident", not "id": "id" is every message's own id, echoed in its reply.
        _check_fields(content, {"incident", "status"})
        incident = content.get("incident")
        if not isinstance(incident, int) or isinstance(incident, bool) or incident < 1:
            raise ClientError("incident must be an incident id (a positive integer)", field="incident")
        status = content.get("status")
        if not isinstance(status, str):
            raise ClientError(f"status must be one of: {', '.join(IncidentStatus.values)}", field="status")
        try:
            changed = await database_sync_to_async(_change_incident_status)(incident, status, self.user)
        except LookupError:
            raise ClientError(f"no incident {incident}", field="incident") from None
        except ValueError as exc:  # unknown status, or a transition the rule does not allow
            raise ClientError(str(exc), field="status") from None
        return {"type": "incident_status", "incident": changed}

    async def _cmd_subscribe(self, content: dict[str, Any]) -> dict[str, Any]:
        _check_fields(content, {"streams", "sensor", "ip"})
        streams = content.get("streams")
        if not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
            raise ClientError(
                "streams must be a list of stream names from: " + ", ".join(STREAMS), field="streams"
            )
        unknown = sorted(set(streams) - set(STREAMS))
        if unknown:
            raise ClientError(
                f"unknown stream {unknown[0][:64]!r}; choose from: {', '.join(STREAMS)}", field="streams"
            )
        allowed = self.permissions.streams()
        forbidden = [s for s in STREAMS if s in streams and s not in allowed]
        if forbidden:
            needed = STREAM_PERMISSIONS[forbidden[0]]
            raise ClientError(
                f"permission denied: the stream {forbidden[0]!r} needs {needed}",
                field="streams",
                permission=needed,
            )
        sensor = _optional_str(content, "sensor", MAX_NAME, allow_empty=True) or None
        ip = _optional_str(content, "ip", 64, allow_empty=True)
        ip = _normalise_ip(ip) if ip else None
        self.sensor_filter, self.ip_filter = sensor, ip
        await self._set_streams(set(streams))
        if "packets" not in self.streams or sensor or ip:
            # Buffered packets were chosen under the old filters.
            self._clear_packets()
        return {
            "type": "subscribed",
            "streams": [s for s in STREAMS if s in self.streams],
            "sensor": self.sensor_filter,
            "ip": self.ip_filter,
        }

    async def _cmd_ping(self, content: dict[str, Any]) -> dict[str, Any]:
        _check_fields(content, set())
        return {"type": "pong", "server_time": timezone.now().isoformat()}

    _COMMANDS = {
        "start_capture": "_cmd_start_capture",
        "stop_capture": "_cmd_stop_capture",
        "update_config": "_cmd_update_config",
        "incident_status": "_cmd_incident_status",
        "subscribe": "_cmd_subscribe",
        "ping": "_cmd_ping",
    }

    def _stream_group(self, stream: str) -> str:
        return {
            "packets": events.GROUP_PACKETS,
            "stats": events.GROUP_STATS,
            "anomalies": events.GROUP_ANOMALIES,
            "incidents": events.GROUP_INCIDENTS,
            "exports": events.export_group(self.user.id),
        }[stream]

    async def _set_streams(self, wanted: set[str]) -> None:
        for stream in STREAMS:
            group = self._stream_group(stream)
            if stream in wanted and stream not in self.streams:
                await self.channel_layer.group_add(group, self.channel_name)
                self.groups.append(group)
            elif stream not in wanted and stream in self.streams:
                await self.channel_layer.group_discard(group, self.channel_name)
                self.groups.remove(group)
        self.streams = set(wanted)

    # --- filters ------------------------------------------------------------------------------
    def _wanted(self, item: dict[str, Any]) -> bool:
        if self.sensor_filter and item.get("sensor") != self.sensor_filter:
            return False
        return not (self.ip_filter and self.ip_filter not in (item.get("src_ip"), item.get("dst_ip")))

    # --- server -> client (channel-layer group messages) --------------------------------------
    async def _relay(self, event: dict[str, Any], client_type: str) -> None:
        if not self._closed:
            await self.send_json({**event, "type": client_type})

    async def packet_captured(self, event: dict[str, Any]) -> None:
        if "packets" not in self.streams:
            return
        packets = [p for p in event.get("packets") or [] if isinstance(p, dict) and self._wanted(p)]
        if not packets:
            return
        self._packets.extend(packets)
        overflow = len(self._packets) - PACKET_BUFFER
        for _ in range(max(0, overflow)):
            self._packets.popleft()  # the newest packets matter most on a live table
        self._packets_dropped += max(0, overflow)
        self._packets_sensors.update(str(p.get("sensor", event.get("sensor", ""))) for p in packets)
        read_at = event.get("read_at")
        if isinstance(read_at, int | float) and not isinstance(read_at, bool):
            read_at = float(read_at)
            newest, oldest = self._packets_read_at, self._packets_first_read_at
            self._packets_read_at = read_at if newest is None else max(newest, read_at)
            self._packets_first_read_at = read_at if oldest is None else min(oldest, read_at)
        if self._flush_task is None:
            delay = self._last_packet_send + 1.0 / PACKET_MESSAGES_PER_SECOND - time.monotonic()
            if delay <= 0:
                await self._flush_packets()
            else:
                # Coalesce: whatever arrives until then goes out in one message.
                self._flush_task = asyncio.ensure_future(self._flush_packets_later(delay))

    async def _flush_packets_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._flush_task = None
        await self._flush_packets()

    async def _flush_packets(self) -> None:
        if not self._packets or self._closed:
            return
        sensors = self._packets_sensors
        message = {
            "type": "packet_captured",
            "sensor": next(iter(sensors)) if len(sensors) == 1 else control.ALL_SENSORS,
            "read_at": self._packets_read_at,
            "first_read_at": self._packets_first_read_at,
            "packets": await _with_geo(geo.with_packet_geo, list(self._packets)),
            "dropped": self._packets_dropped,
        }
        self._clear_packets()
        self._packets_dropped = 0
        self._last_packet_send = time.monotonic()
        await self.send_json(message)

    def _clear_packets(self) -> None:
        self._packets.clear()
        self._packets_sensors = set()
        self._packets_read_at = None
        self._packets_first_read_at = None

    async def stats(self, event: dict[str, Any]) -> None:
        if not self.sensor_filter or event.get("sensor") == self.sensor_filter:
            talkers_geo = await _with_geo(geo.talkers_geo, event.get("top_talkers"))
            await self._relay({**event, "talkers_geo": talkers_geo}, "stats")

    _BATCHABLE = {  # group message types a batch may carry -> their handler
        "anomaly.detected": "anomaly_detected",
        "incident.opened": "incident_opened",
        "incident.updated": "incident_updated",
    }

    async def events_batch(self, event: dict[str, Any]) -> None:
        """Several messages sent at once (``capture.events.broadcast_many``): each handled as if alone."""
        for message in event.get("messages") or []:
            handler = self._BATCHABLE.get(message.get("type")) if isinstance(message, dict) else None
            if handler is not None:
                await getattr(self, handler)(message)

    async def anomaly_detected(self, event: dict[str, Any]) -> None:
        anomaly = event.get("anomaly")
        if isinstance(anomaly, dict) and self._wanted(anomaly):
            await self._relay(event, "anomaly_detected")

    async def incident_opened(self, event: dict[str, Any]) -> None:
        if self._wanted_incident(event.get("incident")):
            await self._relay(await self._incident_geo(event), "incident_opened")

    async def incident_updated(self, event: dict[str, Any]) -> None:
        if self._wanted_incident(event.get("incident")):
            await self._relay(await self._incident_geo(event), "incident_updated")

    async def _incident_geo(self, event: dict[str, Any]) -> dict[str, Any]:
        # The worker sends incidents without GeoIP (workers never load the data); added here, as
        # the API's ``geo``.
        return {**event, "incident": await _with_geo(_incident_with_geo, event["incident"])}

    def _wanted_incident(self, incident: Any) -> bool:
        if not isinstance(incident, dict):
            return False
        if self.sensor_filter and incident.get("sensor") != self.sensor_filter:
            return False
        ips = [*(incident.get("sources") or []), *(incident.get("targets") or [])]
        return not self.ip_filter or any(
            ip == self.ip_filter or str(ip).startswith(self.ip_filter + ":") for ip in ips
        )

    async def capture_status(self, event: dict[str, Any]) -> None:
        if self.permissions.allows("capture.view_sensor"):
            await self._relay(event, "capture_status")

    async def config_updated(self, event: dict[str, Any]) -> None:
        if self.permissions.allows("capture.view_monitorconfig"):
            await self._relay(event, "config_updated")

    async def export_progress(self, event: dict[str, Any]) -> None:
        await self._relay(event, "export_progress")

    async def export_ready(self, event: dict[str, Any]) -> None:
        await self._relay(event, "export_ready")
