"""Sensor names become parts of Redis keys: one rule (capture/validation.py), checked where names come in.

The capture command (``--sensor``, ``NETMON_SENSOR``; the host name default is made valid instead)
and ``control.request_capture``; the WebSocket's capture commands are in tests/netmon/test_consumers.py.
"""

from __future__ import annotations

import pytest

from capture import control
from capture.management.commands.capture import Command
from capture.validation import check_sensor_name, sensor_name_from_host
from tests import processes

BAD_NAMES = ["", "a b", "netmon:stream:x", "s*", "{s1}", "é", "x" * 65, "s1\n", "../s1"]
GOOD_NAMES = ["s1", "sensor-01.example.org", "A_b.c-9", "x" * 64, "-", "."]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_valid_sensor_names_pass(name):
    assert check_sensor_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_sensor_names_are_refused_naming_the_field_and_the_rule(name):
    rule = r"^sensor .* is not a valid sensor name: use 1 to 64 characters"
    with pytest.raises(ValueError, match=rule) as exc:
        check_sensor_name(name)
    assert "A-Z a-z 0-9 _ . -" in str(exc.value)


def test_a_sensor_name_that_is_not_a_string_is_refused():
    with pytest.raises(ValueError, match=r"^sensor must be a string"):
        check_sensor_name(5)


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("probe-1", "probe-1"),
        ("probe 1 (lab)", "probe-1-lab"),
        ("høst:01", "h-st-01"),
        ("x" * 100, "x" * 64),
        ("***", "sensor"),
    ],
)
def test_the_host_name_default_is_made_into_a_valid_name(hostname, expected):
    assert sensor_name_from_host(hostname) == expected
    check_sensor_name(sensor_name_from_host(hostname))


def test_the_capture_command_defaults_to_the_host_name_made_valid(monkeypatch, settings):
    settings.NETMON_SENSOR = ""
    monkeypatch.setattr("capture.management.commands.capture.socket.gethostname", lambda: "lab box:7")

    assert Command.sensor_name(None) == "lab-box-7"


def test_request_capture_refuses_a_bad_sensor_and_writes_nothing(redis_client):
    with pytest.raises(ValueError, match=r"^sensor 'a b' is not a valid sensor name"):
        control.request_capture("stop", sensor="a b", client=redis_client)

    assert redis_client.keys("*") == []  # no version bump, no desired-state key


def test_request_capture_takes_a_valid_sensor(redis_client):
    control.request_capture("stop", sensor="s-1.lab", client=redis_client)

    assert control.pending_command("s-1.lab", 0, redis_client)["action"] == "stop"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--sensor", "a b"], {}, "--sensor 'a b' is not a valid sensor name"),
        ([], {"NETMON_SENSOR": "netmon:x"}, "NETMON_SENSOR 'netmon:x' is not a valid sensor name"),
    ],
)
def test_the_capture_command_refuses_a_bad_sensor_name_at_once(redis_client, monkeypatch, args, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    result = processes.run_capture(*args, "--demo", "--count", "10", timeout=60)

    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr
    assert "use 1 to 64 characters from A-Z a-z 0-9 _ . -" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert redis_client.keys("netmon:*") == []  # nothing published, no stream key made
