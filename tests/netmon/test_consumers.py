"""The /ws/monitor/ WebSocket: auth, every client command and error, every relayed event, coalescing.

The communicator talks to ``netmon.asgi.application`` (origin check + session/token middleware)
and the consumer uses the real channels-redis layer on the test Redis database.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import timedelta

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from capture import control, events
from capture.models import ConfigChange, MonitorConfig, Sensor
from netmon import consumers
from netmon.asgi import application

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]

ORIGIN = (b"origin", b"http://testserver")
TIMEOUT = 5
VERSION_KEY = "netmon:capture:version"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


_OPEN: list[WebsocketCommunicator] = []


@pytest.fixture(autouse=True)
async def clean_layer(redis_client):
    """Empty Redis (groups, control keys) around each test; end its sockets and this loop's layer pools."""
    yield
    while _OPEN:
        communicator = _OPEN.pop()
        if not communicator.future.done():
            # A consumer may sit out the channel layer's 5 s blocking read before it ends (a socket
            # the server closed, say): the test is over, so one second is enough to say goodbye.
            await communicator.disconnect(timeout=1.0)
    await get_channel_layer().close_pools()


def socket(
    path: str = "/ws/monitor/", headers: list[tuple[bytes, bytes]] | None = None
) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, path, headers=headers or [ORIGIN])
    _OPEN.append(communicator)
    return communicator


@pytest.fixture
def session_headers(user) -> list[tuple[bytes, bytes]]:
    return headers_of(user)


def headers_of(user) -> list[tuple[bytes, bytes]]:
    """The handshake headers of a browser where ``user`` is signed in (session cookie)."""
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    return [ORIGIN, (b"cookie", cookie.encode())]


@pytest.fixture
def admin_headers(admin_role) -> list[tuple[bytes, bytes]]:
    """ada's browser: the admin role, who may control capture and change the configuration."""
    return headers_of(admin_role)


@pytest.fixture
def other_session_headers(other_user) -> list[tuple[bytes, bytes]]:
    return headers_of(other_user)


@pytest.fixture
def token(user) -> Token:
    return Token.objects.create(user=user)


async def open_socket(
    headers: list[tuple[bytes, bytes]], path: str = "/ws/monitor/"
) -> WebsocketCommunicator:
    """A connected, authenticated socket whose ``connected`` greeting has been read."""
    communicator = socket(path, headers)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    hello = await communicator.receive_json_from(timeout=TIMEOUT)
    assert hello["type"] == "connected", hello
    communicator.hello = hello
    return communicator


async def request(communicator: WebsocketCommunicator, message: dict) -> dict:
    await communicator.send_json_to(message)
    return await communicator.receive_json_from(timeout=TIMEOUT)


async def publish(group: str, message: dict) -> None:
    # The producers' path: a synchronous broadcast() from the capture process or a Celery task.
    assert await sync_to_async(events.broadcast)(group, message)


async def receive_until(communicator: WebsocketCommunicator, kind: str) -> dict:
    for _ in range(50):
        message = await communicator.receive_json_from(timeout=TIMEOUT)
        if message["type"] == kind:
            return message
    raise AssertionError(f"no {kind} message")


async def drain(communicator: WebsocketCommunicator, quiet: float = 1.0) -> list[dict]:
    """Every message until the socket is quiet for ``quiet`` seconds."""
    messages = []
    while not await communicator.receive_nothing(timeout=quiet):
        messages.append(await communicator.receive_json_from(timeout=TIMEOUT))
    return messages


# What the consumer adds to a private address (capture/geo.py): its scope, no country or AS.
PRIVATE_GEO = {"scope": "private", "country": None, "country_name": None, "asn": None, "asn_name": None}


def packet(seq: int, sensor: str = "s1", src: str = "10.0.0.1", dst: str = "10.0.0.2") -> dict:
    return {
        "seq": seq,
        "ts": 1_700_000_000.0 + seq / 1000,
        "sensor": sensor,
        "src_ip": src,
        "dst_ip": dst,
        "src_port": 40000 + seq % 1000,
        "dst_port": 443,
        "protocol": "TCP",
        "length": 60,
        "tcp_flags": 2,
        "app_protocol": "",
    }


def anomaly(anomaly_id: int, sensor: str = "s1", src: str = "10.0.0.9", dst: str = "10.0.0.2") -> dict:
    return {
        "id": anomaly_id,
        "sensor": sensor,
        "ts": "2025-01-01T00:00:00+00:00",
        "src_ip": src,
        "dst_ip": dst,
        "protocol": "TCP",
        "src_port": 5555,
        "dst_port": 22,
        "score": 0.97,
        "threshold": 0.8,
        "model": "autoencoder",
        "explanation": "many SYNs to distinct ports",
        "packet_seq": 1234,
        "incident_id": None,
        "read_at": 1_700_000_000.5,
    }


def control_version(redis_client) -> int:
    return int(redis_client.get(VERSION_KEY) or 0)


# --- authentication --------------------------------------------------------------------------


async def test_anonymous_socket_is_closed_with_4401():
    communicator = socket()

    connected, _ = await communicator.connect(timeout=TIMEOUT)

    assert connected  # accepted first, so that the browser sees the close code
    assert "authentication required" in (await communicator.receive_json_from(timeout=TIMEOUT))["error"]
    assert await communicator.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 4401}


async def test_unknown_token_is_closed_with_4401(user):
    communicator = socket("/ws/monitor/?token=not-a-token")

    await communicator.connect(timeout=TIMEOUT)

    assert (await communicator.receive_json_from(timeout=TIMEOUT))["type"] == "error"
    assert (await communicator.receive_output(timeout=TIMEOUT))["code"] == 4401


async def test_session_user_is_greeted_with_config_and_capture_status(session_headers, redis_client):
    # Given a sensor that reported a heartbeat and a non-default configuration
    await sync_to_async(Sensor.objects.create)(name="s1", packets_read=42)
    await sync_to_async(MonitorConfig.objects.create)(pk=1, network_interface="demo", buffer_size=5000)
    control.write_heartbeat(
        "s1", {"state": "running", "mode": "demo", "mode_reason": "no pcap"}, redis_client
    )

    communicator = await open_socket(session_headers)
    hello = communicator.hello

    assert hello["user"] == "alice"
    assert hello["server_time"]
    assert hello["config"]["network_interface"] == "demo"
    assert hello["config"]["buffer_size"] == 5000
    assert set(hello["config"]) == {
        "network_interface",
        "bpf_filter",
        "buffer_size",
        "analysis_depth",
        "ml_model",
        "feature_level",
        "encryption_algorithm",
    }
    (sensor,) = hello["capture"]
    assert sensor["sensor"] == "s1"
    assert sensor["alive"] is True
    assert sensor["mode"] == "demo"
    assert sensor["mode_reason"] == "no pcap"
    assert sensor["packets_captured"] == 42


async def test_token_user_connects_and_can_ping(token):
    communicator = await open_socket([ORIGIN], f"/ws/monitor/?token={token.key}")

    reply = await request(communicator, {"type": "ping", "id": 7})

    assert communicator.hello["user"] == "alice"
    assert reply["type"] == "pong"
    assert reply["id"] == 7


async def test_revoked_token_closes_the_socket_on_its_next_message(token):
    communicator = await open_socket([ORIGIN], f"/ws/monitor/?token={token.key}")

    await sync_to_async(Token.objects.filter(key=token.key).delete)()
    await communicator.send_json_to({"type": "stop_capture"})

    assert "revoked" in (await communicator.receive_json_from(timeout=TIMEOUT))["error"]
    assert (await communicator.receive_output(timeout=TIMEOUT))["code"] == 4401


async def test_expired_token_closes_the_socket_at_the_periodic_check(token, monkeypatch, redis_client):
    monkeypatch.setattr(consumers, "AUTH_RECHECK_SECONDS", 0.2)
    communicator = await open_socket([ORIGIN], f"/ws/monitor/?token={token.key}")

    old = timezone.now() - timedelta(hours=settings.NETMON_TOKEN_TTL_HOURS + 1)
    await sync_to_async(Token.objects.filter(key=token.key).update)(created=old)

    assert "expired" in (await communicator.receive_json_from(timeout=TIMEOUT))["error"]
    assert (await communicator.receive_output(timeout=TIMEOUT))["code"] == 4401
    assert control_version(redis_client) == 0


async def test_a_logged_out_session_closes_its_open_socket_within_seconds(user, monkeypatch, redis_client):
    monkeypatch.setattr(consumers, "AUTH_RECHECK_SECONDS", 0.2)
    browser = await sync_to_async(Client)()
    await sync_to_async(browser.force_login)(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"
    communicator = await open_socket([ORIGIN, (b"cookie", cookie.encode())])

    await sync_to_async(browser.post)("/accounts/logout/")

    assert "logged out" in (await communicator.receive_json_from(timeout=TIMEOUT))["error"]
    assert (await communicator.receive_output(timeout=TIMEOUT))["code"] == 4401


async def test_a_deactivated_user_is_disconnected_within_seconds(user, session_headers, monkeypatch):
    monkeypatch.setattr(consumers, "AUTH_RECHECK_SECONDS", 0.2)
    communicator = await open_socket(session_headers)

    user.is_active = False
    await sync_to_async(user.save)()

    assert "deactivated" in (await communicator.receive_json_from(timeout=TIMEOUT))["error"]
    assert (await communicator.receive_output(timeout=TIMEOUT))["code"] == 4401


async def test_a_deactivated_token_user_is_disconnected_within_seconds(user, token, monkeypatch):
    monkeypatch.setattr(consumers, "AUTH_RECHECK_SECONDS", 0.2)
    communicator = await open_socket([ORIGIN], f"/ws/monitor/?token={token.key}")

    user.is_active = False
    await sync_to_async(user.save)()

    assert "revoked" in (await communicator.receive_json_from(timeout=TIMEOUT))["error"]
    assert (await communicator.receive_output(timeout=TIMEOUT))["code"] == 4401


async def test_a_live_session_socket_stays_open_across_rechecks(session_headers, monkeypatch):
    monkeypatch.setattr(consumers, "AUTH_RECHECK_SECONDS", 0.05)
    communicator = await open_socket(session_headers)
    await asyncio.sleep(0.3)

    assert (await request(communicator, {"type": "ping"}))["type"] == "pong"


# --- roles ----------------------------------------------------------------------------------
# (every command and stream for every kind of user: tests/netmon/test_authz_matrix.py)


async def test_the_greeting_says_the_users_roles_and_permissions(session_headers, admin_headers):
    analyst = await open_socket(session_headers)
    admin = await open_socket(admin_headers)

    assert analyst.hello["roles"] == ["analyst"]
    assert "detection.change_anomaly" in analyst.hello["permissions"]
    assert "exports.add_exportjob" in analyst.hello["permissions"]
    assert "capture.control_capture" not in analyst.hello["permissions"]
    assert admin.hello["roles"] == ["admin"]
    assert {"capture.control_capture", "capture.change_monitorconfig"} <= set(admin.hello["permissions"])


async def test_a_viewer_starts_subscribed_to_what_it_may_see_only(viewer):
    communicator = await open_socket(await sync_to_async(headers_of)(viewer))

    assert communicator.hello["streams"] == ["packets", "anomalies", "incidents", "stats"]  # not exports
    assert communicator.hello["config"] is not None  # viewers read the configuration


async def test_an_analyst_may_not_stop_capture_and_nothing_reaches_it(session_headers, redis_client):
    communicator = await open_socket(session_headers)

    reply = await request(communicator, {"type": "stop_capture", "id": 9})

    assert reply == {
        "type": "error",
        "error": "permission denied: stop_capture needs capture.control_capture",
        "permission": "capture.control_capture",
        "id": 9,
    }
    assert control_version(redis_client) == 0
    assert await communicator.receive_nothing(timeout=0.3)  # no "stopping" broadcast either


async def test_a_viewer_may_not_change_the_configuration(viewer, redis_client):
    communicator = await open_socket(await sync_to_async(headers_of)(viewer))

    reply = await request(communicator, {"type": "update_config", "config": {"buffer_size": 2048}})

    assert reply["type"] == "error"
    assert "capture.change_monitorconfig" in reply["error"]
    assert await sync_to_async(ConfigChange.objects.count)() == 0
    assert control_version(redis_client) == 0


async def test_a_permission_is_checked_before_the_message_is_validated(session_headers, redis_client):
    communicator = await open_socket(session_headers)

    reply = await request(communicator, {"type": "start_capture", "bpf": "not host 10.1.2.3", "iface": "x"})

    assert "permission denied" in reply["error"]  # not "unknown field": nothing is looked at
    assert control_version(redis_client) == 0


async def test_a_user_with_no_role_is_told_to_ask_for_one_and_closed_with_4403(nogroup):
    communicator = socket(headers=await sync_to_async(headers_of)(nogroup))
    await communicator.connect(timeout=TIMEOUT)

    error = await communicator.receive_json_from(timeout=TIMEOUT)

    assert error == {
        "type": "error",
        "error": "your account has no role yet: ask an admin to give you one (viewer, analyst or admin)",
    }
    assert await communicator.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 4403}


async def test_a_role_taken_away_applies_to_the_next_command(admin_role, admin_headers, redis_client):
    from django.contrib.auth.models import Group

    communicator = await open_socket(admin_headers)
    viewer_group = await sync_to_async(Group.objects.get)(name="viewer")
    await sync_to_async(admin_role.groups.set)([viewer_group])  # demoted while the socket is open

    reply = await request(communicator, {"type": "stop_capture"})

    assert "permission denied" in reply["error"]
    assert control_version(redis_client) == 0


async def test_the_last_role_taken_away_closes_the_socket_within_seconds(
    admin_role, admin_headers, monkeypatch
):
    monkeypatch.setattr(consumers, "AUTH_RECHECK_SECONDS", 0.2)
    communicator = await open_socket(admin_headers)

    await sync_to_async(admin_role.groups.clear)()

    assert "no role yet" in (await communicator.receive_json_from(timeout=TIMEOUT))["error"]
    assert (await communicator.receive_output(timeout=TIMEOUT))["code"] == 4403


async def test_switching_to_a_model_kind_with_no_active_model_is_refused(admin_headers, redis_client):
    communicator = await open_socket(admin_headers)

    reply = await request(communicator, {"type": "update_config", "config": {"ml_model": "isolation_forest"}})

    assert reply["type"] == "error"
    assert reply["field"] == "ml_model"
    assert "no active isolation_forest model" in reply["fields"]["ml_model"]
    assert control_version(redis_client) == 0


# --- client commands -------------------------------------------------------------------------


async def test_start_capture_writes_the_command_and_tells_every_dashboard(
    admin_headers, other_session_headers, redis_client
):
    ada = await open_socket(admin_headers)
    bob = await open_socket(other_session_headers)

    await ada.send_json_to(
        {"type": "start_capture", "sensor": "s1", "interface": "demo", "bpf": "tcp port 443"}
    )

    for communicator in (ada, bob):
        status = await receive_until(communicator, "capture_status")
        assert status["sensor"] == "s1"
        assert status["state"] == "starting"
        assert status["requested_by"] == "ada"
        assert status["interface"] == "demo"
        assert status["bpf"] == "tcp port 443"
    command = control.pending_command("s1", 0, redis_client)
    assert command["action"] == "start"
    assert command["interface"] == "demo"
    assert command["bpf"] == "tcp port 443"


async def test_start_capture_without_arguments_targets_every_sensor(admin_headers, redis_client):
    communicator = await open_socket(admin_headers)

    status = await request(communicator, {"type": "start_capture"})

    assert status["type"] == "capture_status"
    assert status["sensor"] == "*"
    assert control.pending_command("any-sensor", 0, redis_client)["action"] == "start"


async def test_stop_capture_writes_the_command_and_broadcasts_stopping(admin_headers, redis_client):
    communicator = await open_socket(admin_headers)

    status = await request(communicator, {"type": "stop_capture", "sensor": "s1"})

    assert status["type"] == "capture_status"
    assert status["state"] == "stopping"
    assert status["sensor"] == "s1"
    assert control.pending_command("s1", 0, redis_client)["action"] == "stop"


@pytest.mark.parametrize(
    ("message", "field", "words"),
    [
        ({"type": "start_capture", "interface": "no-such-if0"}, "interface", "no interface"),
        ({"type": "start_capture", "interface": 3}, "interface", "must be a string"),
        ({"type": "start_capture", "interface": ""}, "interface", "must not be empty"),
        ({"type": "start_capture", "bpf": "tcp port banana"}, "bpf", "does not compile"),
        ({"type": "start_capture", "bpf": ["tcp"]}, "bpf", "must be a string"),
        ({"type": "start_capture", "bpf": "x" * 1025}, "bpf", "at most 1024"),
        ({"type": "start_capture", "sensor": {"a": 1}}, "sensor", "must be a string"),
        ({"type": "start_capture", "iface": "demo"}, "iface", "unknown field"),
        ({"type": "stop_capture", "sensor": 5}, "sensor", "must be a string"),
        ({"type": "start_capture", "sensor": "a b"}, "sensor", "is not a valid sensor name: use 1 to 64"),
        ({"type": "stop_capture", "sensor": "netmon:x*"}, "sensor", "A-Z a-z 0-9 _ . -"),
        ({"type": "stop_capture", "interface": "demo"}, "interface", "unknown field"),
    ],
)
async def test_invalid_capture_commands_are_refused_and_reach_no_capture(
    admin_headers, redis_client, message, field, words
):
    communicator = await open_socket(admin_headers)

    reply = await request(communicator, message)

    assert reply["type"] == "error"
    assert reply["field"] == field
    assert words in reply["error"]
    assert control_version(redis_client) == 0
    assert (await request(communicator, {"type": "ping"}))["type"] == "pong"  # still open


async def test_update_config_saves_records_history_and_tells_every_dashboard(
    admin_headers, other_session_headers, redis_client
):
    from detection.models import DetectionModel

    await sync_to_async(DetectionModel.objects.create)(
        kind="both", version=1, feature_level="advanced", status="ready", is_active=True
    )  # ml_model may name only a kind with an active model
    ada = await open_socket(admin_headers)
    bob = await open_socket(other_session_headers)

    await ada.send_json_to({"type": "update_config", "config": {"buffer_size": 2048, "ml_model": "both"}})

    for communicator in (ada, bob):
        update = await receive_until(communicator, "config_updated")
        assert update["config"]["buffer_size"] == 2048
        assert update["config"]["ml_model"] == "both"
    config = await sync_to_async(MonitorConfig.objects.get)(pk=1)
    assert config.buffer_size == 2048
    change = await sync_to_async(ConfigChange.objects.select_related("user").get)()
    assert change.source == "websocket"
    assert change.user.username == "ada"
    assert control.pending_command("s1", 0, redis_client)["action"] == "reconfigure"


async def test_update_config_without_a_change_answers_the_sender_only(admin_headers):
    communicator = await open_socket(admin_headers)
    current = communicator.hello["config"]["analysis_depth"]

    reply = await request(communicator, {"type": "update_config", "config": {"analysis_depth": current}})

    assert reply == {"type": "config_updated", "config": communicator.hello["config"], "changed": False}
    assert await sync_to_async(ConfigChange.objects.count)() == 0


@pytest.mark.parametrize(
    ("config", "field", "words"),
    [
        ({"buffer_size": 5}, "buffer_size", "must be from 10"),
        ({"buffer_size": "big"}, "buffer_size", "must be an integer"),
        ({"ml_model": "gpt"}, "ml_model", "is not one of"),
        ({"bpf_filter": "tcp port banana"}, "bpf_filter", "does not compile"),
        ({"network_interface": "nope0"}, "network_interface", "no interface"),
        ({"colour": "blue"}, "colour", "unknown configuration key"),
    ],
)
async def test_invalid_configuration_is_refused_with_field_errors(
    admin_headers, redis_client, config, field, words
):
    communicator = await open_socket(admin_headers)

    reply = await request(communicator, {"type": "update_config", "config": config})

    assert reply["type"] == "error"
    assert reply["error"] == "invalid configuration"
    assert reply["field"] == field
    assert words in reply["fields"][field]
    assert await sync_to_async(ConfigChange.objects.count)() == 0
    assert control_version(redis_client) == 0


async def test_invalid_configuration_names_every_bad_key(admin_headers):
    communicator = await open_socket(admin_headers)

    reply = await request(
        communicator, {"type": "update_config", "config": {"buffer_size": 1, "feature_level": "max"}}
    )

    assert set(reply["fields"]) == {"buffer_size", "feature_level"}
    assert reply["field"] in reply["fields"]


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ({"type": "update_config"}, "missing 'config'"),
        ({"type": "update_config", "config": [1, 2]}, "must be an object"),
        ({"type": "update_config", "config": {}}, "config is empty"),
    ],
)
async def test_update_config_needs_a_config_object(admin_headers, message, words):
    communicator = await open_socket(admin_headers)

    reply = await request(communicator, message)

    assert reply["type"] == "error"
    assert reply["field"] == "config"
    assert words in reply["error"]


async def test_subscribe_drops_the_streams_left_out(session_headers):
    communicator = await open_socket(session_headers)

    reply = await request(communicator, {"type": "subscribe", "streams": ["packets"]})
    await publish(events.GROUP_STATS, {"type": "stats", "sensor": "s1", "packets_per_s": 1.0})
    await publish(events.GROUP_ANOMALIES, {"type": "anomaly.detected", "anomaly": anomaly(1)})
    await publish(events.GROUP_PACKETS, {"type": "packet.captured", "sensor": "s1", "packets": [packet(1)]})

    assert reply == {"type": "subscribed", "streams": ["packets"], "sensor": None, "ip": None}
    received = await drain(communicator)
    assert [m["type"] for m in received] == ["packet_captured"]


async def test_subscribe_filters_packets_and_anomalies_by_ip(session_headers):
    communicator = await open_socket(session_headers)

    reply = await request(
        communicator, {"type": "subscribe", "streams": ["packets", "anomalies"], "ip": "::ffff:10.0.0.7"}
    )
    await publish(
        events.GROUP_PACKETS,
        {
            "type": "packet.captured",
            "sensor": "s1",
            "read_at": 1.0,
            "packets": [packet(1), packet(2, src="10.0.0.7"), packet(3, dst="10.0.0.7")],
        },
    )
    await publish(events.GROUP_ANOMALIES, {"type": "anomaly.detected", "anomaly": anomaly(1)})
    await publish(events.GROUP_ANOMALIES, {"type": "anomaly.detected", "anomaly": anomaly(2, dst="10.0.0.7")})

    assert reply["ip"] == "10.0.0.7"  # IPv4-mapped form normalised to what records carry
    received = await drain(communicator)
    assert [m["type"] for m in received] == ["packet_captured", "anomaly_detected"]
    assert [p["seq"] for p in received[0]["packets"]] == [2, 3]
    assert received[1]["anomaly"]["id"] == 2


async def test_a_batch_of_group_messages_reaches_the_client_as_the_messages_one_by_one(session_headers):
    """The worker sends a read's anomalies (and incidents) in one group message
    (``events.broadcast_many``); the client receives what the messages sent alone gave, filters too."""
    communicator = await open_socket(session_headers)
    await request(communicator, {"type": "subscribe", "streams": ["anomalies"], "ip": "10.0.0.7"})
    wanted = {"type": "anomaly.detected", "anomaly": anomaly(2, dst="10.0.0.7"), "batch_anomalies": 3}
    other = {"type": "anomaly.detected", "anomaly": anomaly(1), "batch_anomalies": 3}
    unknown = {"type": "export.ready", "job": 1}  # not a type a batch may carry: dropped

    await publish(
        events.GROUP_ANOMALIES, {"type": events.BATCH_TYPE, "messages": [other, wanted, unknown, wanted]}
    )

    received = await drain(communicator)
    assert received == [{**wanted, "type": "anomaly_detected"}] * 2


async def test_subscribe_filters_by_sensor(session_headers):
    communicator = await open_socket(session_headers)

    await request(
        communicator, {"type": "subscribe", "streams": ["packets", "stats", "anomalies"], "sensor": "s2"}
    )
    await publish(events.GROUP_STATS, {"type": "stats", "sensor": "s1", "packets_per_s": 1.0})
    await publish(events.GROUP_STATS, {"type": "stats", "sensor": "s2", "packets_per_s": 2.0})
    await publish(
        events.GROUP_PACKETS,
        {"type": "packet.captured", "sensor": "s1", "read_at": 1.0, "packets": [packet(1, sensor="s1")]},
    )
    await publish(
        events.GROUP_PACKETS,
        {"type": "packet.captured", "sensor": "s2", "read_at": 1.0, "packets": [packet(9, sensor="s2")]},
    )
    await publish(events.GROUP_ANOMALIES, {"type": "anomaly.detected", "anomaly": anomaly(1, sensor="s1")})

    received = await drain(communicator)
    assert [(m["type"], m["sensor"]) for m in received] == [("stats", "s2"), ("packet_captured", "s2")]


@pytest.mark.parametrize(
    ("message", "field", "words"),
    [
        ({"type": "subscribe"}, "streams", "must be a list"),
        ({"type": "subscribe", "streams": "packets"}, "streams", "must be a list"),
        ({"type": "subscribe", "streams": ["packets", 3]}, "streams", "must be a list"),
        ({"type": "subscribe", "streams": ["videos"]}, "streams", "unknown stream"),
        ({"type": "subscribe", "streams": [], "ip": "10.0.0.300"}, "ip", "not an IPv4 or IPv6"),
        ({"type": "subscribe", "streams": [], "ip": 10}, "ip", "must be a string"),
        ({"type": "subscribe", "streams": [], "sensor": True}, "sensor", "must be a string"),
    ],
)
async def test_invalid_subscriptions_are_refused(session_headers, message, field, words):
    communicator = await open_socket(session_headers)

    reply = await request(communicator, message)

    assert reply["type"] == "error"
    assert reply["field"] == field
    assert words in reply["error"]


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        ({"text_data": "{not json"}, "malformed JSON"),
        ({"text_data": "[1, 2, 3]"}, "expected a JSON object"),
        ({"text_data": '"start_capture"'}, "expected a JSON object"),
        ({"text_data": json.dumps({"interface": "demo"})}, "missing 'type'"),
        ({"text_data": json.dumps({"type": 5})}, "missing 'type'"),
        ({"text_data": json.dumps({"type": "format_disk"})}, "unknown message type"),
        ({"bytes_data": b'{"type": "stop_capture"}'}, "binary frames"),
        (
            {"text_data": json.dumps({"type": "start_capture", "bpf": "x" * 70_000})},
            "message too large",
        ),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_stays_open(admin_headers, redis_client, frame, words):
    communicator = await open_socket(admin_headers)

    await communicator.send_to(**frame)
    reply = await communicator.receive_json_from(timeout=TIMEOUT)

    assert reply["type"] == "error"
    assert words in reply["error"]
    assert control_version(redis_client) == 0
    assert (await request(communicator, {"type": "ping"}))["type"] == "pong"


async def test_a_flood_is_rate_limited_and_refused_messages_reach_no_capture(
    admin_headers, redis_client, monkeypatch
):
    # A slow refill, so what is accepted does not depend on how fast this machine sends 100
    # messages (under load, 20 tokens a second refilled past 70 accepted): the burst, then refusals.
    monkeypatch.setattr(consumers, "RATE_PER_SECOND", 0.01)
    communicator = await open_socket(admin_headers)

    for _ in range(100):
        await communicator.send_json_to({"type": "stop_capture", "sensor": "s1"})
    received = await drain(communicator)

    accepted = [m for m in received if m["type"] == "capture_status"]
    refused = [m for m in received if m["type"] == "error"]
    assert len(accepted) + len(refused) == 100
    assert consumers.RATE_BURST <= len(accepted) < 70
    assert "rate limit exceeded" in refused[0]["error"]
    assert refused[0]["retry_after"] > 0
    assert control_version(redis_client) == len(accepted)


@pytest.mark.parametrize("tokens", [0.0, 0.5, 0.99999, 0.9999999999])
async def test_a_refused_message_is_never_told_to_retry_after_zero(tokens):
    bucket = consumers.TokenBucket(consumers.RATE_PER_SECOND, consumers.RATE_BURST)
    bucket.tokens = tokens  # refused: fewer than one token left

    wait = bucket.retry_after()

    assert wait > 0
    assert wait >= (1.0 - tokens) / consumers.RATE_PER_SECOND


# --- server events ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "message", "client_type"),
    [
        (
            events.GROUP_STATS,
            {
                "type": "stats",
                "sensor": "s1",
                "ts": 1_700_000_000.0,
                "packets_per_s": 1200.5,
                "bytes_per_s": 800_000.0,
                "protocols": {"TCP": 900, "UDP": 300},
                "top_talkers": [["10.0.0.1", 500_000], ["10.0.0.2", 300_000]],
                "packets_dropped": 3,
                "packets_undecodable": 1,
                "queue_lag_packets": 40,
                "mode": "demo",
                "state": "running",
            },
            "stats",
        ),
        (events.GROUP_ANOMALIES, {"type": "anomaly.detected", "anomaly": anomaly(5)}, "anomaly_detected"),
        (
            events.GROUP_CONTROL,
            {"type": "capture.status", "sensor": "s1", "state": "running", "mode": "demo", "reason": "x"},
            "capture_status",
        ),
        (
            events.GROUP_CONTROL,
            {"type": "config.updated", "config": {"buffer_size": 10}},
            "config_updated",
        ),
    ],
)
async def test_every_server_event_is_relayed(session_headers, group, message, client_type):
    communicator = await open_socket(session_headers)

    await publish(group, message)

    received = await communicator.receive_json_from(timeout=TIMEOUT)
    if client_type == "stats":  # the consumer adds the talkers' GeoIP (capture/geo.py)
        message = {**message, "talkers_geo": {"10.0.0.1": PRIVATE_GEO, "10.0.0.2": PRIVATE_GEO}}
    assert received == {**message, "type": client_type}


async def test_incident_events_are_relayed_with_the_geoip_of_their_addresses(session_headers):
    communicator = await open_socket(session_headers)
    incident = {
        "id": 7, "sensor": "s1", "kind": "port_scan", "severity": "high", "status": "open",
        "sources": ["10.0.0.5"], "targets": ["1.1.1.1:443/tcp", "2001:4860:4860::8888:53/udp"],
    }  # fmt: skip

    await publish(events.GROUP_INCIDENTS, {"type": "incident.opened", "incident": incident})

    received = await receive_until(communicator, "incident_opened")
    assert received["incident"] == {**incident, "geo": received["incident"]["geo"]}
    assert received["incident"]["geo"]["10.0.0.5"] == PRIVATE_GEO
    assert received["incident"]["geo"]["1.1.1.1"]["country"] == "AU"
    assert received["incident"]["geo"]["2001:4860:4860::8888"]["asn_name"] == "GOOGLE"


async def test_packets_are_relayed_with_their_fields(session_headers):
    communicator = await open_socket(session_headers)

    await publish(
        events.GROUP_PACKETS,
        {"type": "packet.captured", "sensor": "s1", "read_at": 1_700_000_000.25, "packets": [packet(1)]},
    )

    received = await communicator.receive_json_from(timeout=TIMEOUT)
    assert received == {
        "type": "packet_captured",
        "sensor": "s1",
        "read_at": 1_700_000_000.25,
        "first_read_at": 1_700_000_000.25,
        "packets": [{**packet(1), "src_geo": PRIVATE_GEO, "dst_geo": PRIVATE_GEO}],
        "dropped": 0,
    }


async def test_export_events_reach_only_their_owner(session_headers, other_session_headers, user):
    alice = await open_socket(session_headers)
    bob = await open_socket(other_session_headers)
    progress = {"type": "export.progress", "job": {"id": 3, "status": "running", "rows_written": 500}}
    ready = {
        "type": "export.ready",
        "job": {
            "id": 3,
            "status": "ready",
            "row_count": 1000,
            "size_bytes": 4096,
            "download_url": "/api/exports/3/download",
            "error": "",
        },
    }

    await publish(events.export_group(user.id), progress)
    await publish(events.export_group(user.id), ready)

    assert await alice.receive_json_from(timeout=TIMEOUT) == {**progress, "type": "export_progress"}
    assert await alice.receive_json_from(timeout=TIMEOUT) == {**ready, "type": "export_ready"}
    assert await bob.receive_nothing(timeout=0.5)


async def test_fast_packet_messages_are_coalesced_and_the_excess_counted(session_headers):
    communicator = await open_socket(session_headers)
    layer = get_channel_layer()

    started = time.monotonic()
    for batch in range(100):
        await layer.group_send(
            events.GROUP_PACKETS,
            {
                "type": "packet.captured",
                "sensor": "s1",
                "read_at": float(batch),
                "packets": [packet(batch * 5 + i) for i in range(5)],
            },
        )
    received = []
    while sum(len(m["packets"]) + m["dropped"] for m in received) < 500:
        received.append(await communicator.receive_json_from(timeout=TIMEOUT))
    elapsed = time.monotonic() - started

    assert all(m["type"] == "packet_captured" for m in received)
    assert sum(len(m["packets"]) + m["dropped"] for m in received) == 500
    assert len(received) <= 2 + elapsed * consumers.PACKET_MESSAGES_PER_SECOND
    assert all(len(m["packets"]) <= consumers.PACKET_BUFFER for m in received)
    assert received[-1]["packets"][-1]["seq"] == 499  # the newest packets are kept
    assert received[-1]["read_at"] == 99.0
    # Each message spans the read times of the batches it merged: oldest and newest, in order.
    assert received[0]["first_read_at"] == 0.0
    assert all(m["first_read_at"] <= m["read_at"] for m in received)
    for previous, message in itertools.pairwise(received):
        assert message["first_read_at"] == previous["read_at"] + 1.0
    assert await communicator.receive_nothing(timeout=0.5)


async def test_a_redis_read_timeout_on_a_quiet_socket_does_not_end_it(session_headers, monkeypatch):
    # channels-redis blocks 5 s in BZPOPMIN and redis-py's socket timeout is 5 s as well: on an idle
    # socket the read can time out first, which used to end the consumer (close code 1011).
    layer = get_channel_layer()
    receive = layer.receive
    failures = []

    async def flaky_receive(channel):
        if not failures:
            failures.append(channel)
            raise redis.exceptions.TimeoutError("Timeout reading from 127.0.0.1:6379")
        return await receive(channel)

    monkeypatch.setattr(layer, "receive", flaky_receive)
    communicator = await open_socket(session_headers)

    await publish(events.GROUP_CONTROL, {"type": "capture.status", "sensor": "s1", "state": "running"})

    assert (await communicator.receive_json_from(timeout=TIMEOUT))["type"] == "capture_status"
    assert failures
    assert (await request(communicator, {"type": "ping"}))["type"] == "pong"


async def test_a_malformed_producer_message_does_not_break_the_socket(session_headers):
    communicator = await open_socket(session_headers)

    await publish(events.GROUP_CONTROL, {"type": "no.such.event"})
    await publish(events.GROUP_ANOMALIES, {"type": "anomaly.detected"})
    await publish(events.GROUP_PACKETS, {"type": "packet.captured", "packets": "oops"})

    assert (await request(communicator, {"type": "ping"}))["type"] == "pong"


async def test_incident_status_over_the_socket_follows_the_rule_and_is_announced(session_headers):
    from detection.models import Incident

    sensor = await sync_to_async(Sensor.objects.create)(name="s1")
    incident = await sync_to_async(Incident.objects.create)(
        sensor=sensor, src_ip="10.0.0.66", sources=["10.0.0.66"], targets=["10.0.0.5:22/tcp"],
        first_seen=timezone.now(), last_seen=timezone.now(), opened_at=timezone.now(),
    )  # fmt: skip
    communicator = await open_socket(session_headers)  # alice, an analyst: subscribed to incidents
    assert "incidents" in communicator.hello["streams"]

    change = {"type": "incident_status", "incident": incident.pk}
    reply = await request(communicator, {**change, "status": "resolved", "id": 3})
    assert reply["type"] == "incident_status" and reply["id"] == 3
    assert reply["incident"]["status"] == "resolved" and reply["incident"]["status_changed_by"] == "alice"
    announced = await communicator.receive_json_from(timeout=TIMEOUT)
    assert announced["type"] == "incident_updated" and announced["incident"]["id"] == incident.pk

    refused = await request(communicator, {**change, "status": "acknowledged"})
    assert refused["field"] == "status"
    assert refused["error"] == "cannot go from resolved to acknowledged; allowed: open"
    unknown = await request(communicator, {**change, "status": "closed"})
    assert unknown["field"] == "status" and "false_positive" in unknown["error"]
    missing = await request(communicator, {"type": "incident_status", "incident": 10**9, "status": "open"})
    assert missing["field"] == "incident" and missing["error"] == f"no incident {10**9}"
    not_an_id = await request(communicator, {"type": "incident_status", "incident": "12", "status": "open"})
    assert not_an_id["field"] == "incident"
    await sync_to_async(incident.refresh_from_db)()
    assert incident.status == "resolved"
    await communicator.disconnect()
