"""GET /api/packets/ and /api/flows/: filters, pagination, auth; retention pruning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from capture.models import Flow, Packet, Sensor
from capture.services import prune_retention

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def traffic():
    s1 = Sensor.objects.create(name="s1")
    s2 = Sensor.objects.create(name="s2")
    rows = [
        (s1, 1, "10.0.0.1", "10.0.0.2", 1000, 80, "TCP"),
        (s1, 2, "10.0.0.2", "10.0.0.1", 80, 1000, "TCP"),
        (s1, 3, "10.0.0.3", "8.8.8.8", 5353, 53, "UDP"),
        (s2, 1, "10.0.0.9", "10.0.0.1", 2000, 22, "TCP"),
    ]
    for i, (sensor, seq, src, dst, sport, dport, proto) in enumerate(rows):
        Packet.objects.create(
            sensor=sensor, seq=seq, ts=T0 + timedelta(minutes=i), src_ip=src, dst_ip=dst, src_port=sport,
            dst_port=dport, protocol=proto, ip_version=4, length=60,
        )  # fmt: skip
    Flow.objects.create(
        sensor=s1, protocol="TCP", src_ip="10.0.0.1", src_port=1000, dst_ip="10.0.0.2", dst_port=80,
        first_seen=T0, last_seen=T0, packets=1, bytes=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    "query,expected",
    [
        ("", {("s1", 1), ("s1", 2), ("s1", 3), ("s2", 1)}),
        ("sensor=s2", {("s2", 1)}),
        ("ip=10.0.0.1", {("s1", 1), ("s1", 2), ("s2", 1)}),
        ("port=53", {("s1", 3)}),
        ("protocol=udp", {("s1", 3)}),
        ("src_ip=10.0.0.2", {("s1", 2)}),
        ("since=2026-01-01T00:01:00Z&until=2026-01-01T00:03:00Z", {("s1", 2), ("s1", 3)}),
        ("sensor=s1&seq_from=2&seq_to=3", {("s1", 2), ("s1", 3)}),
    ],
)
def test_packet_filters(api, traffic, query, expected):
    body = api.get(f"/api/packets/?{query}").json()

    assert {(p["sensor"], p["seq"]) for p in body["results"]} == expected
    assert body["count"] == len(expected)


def test_packets_are_paginated_newest_first(api, traffic):
    body = api.get("/api/packets/?limit=2").json()

    assert [p["seq"] for p in body["results"]] == [1, 3]
    assert body["next"]


def test_flows_list_and_filter(api, traffic):
    assert api.get("/api/flows/").json()["count"] == 1
    assert api.get("/api/flows/?port=22").json()["count"] == 0


def test_bad_filter_value_is_a_400(api, traffic):
    response = api.get("/api/packets/?since=yesterday")

    assert response.status_code == 400
    assert "since" in response.json()


@pytest.mark.parametrize("path", ["/api/packets/", "/api/flows/"])
def test_traffic_endpoints_need_authentication(anon, path):
    assert anon.get(path).status_code == 401


def test_retention_keeps_newest_packets_and_recent_days(traffic):
    deleted = prune_retention(keep_packets=2, keep_days=0)

    assert deleted["packets"] == 2
    assert set(Packet.objects.values_list("seq", "sensor__name")) == {(3, "s1"), (1, "s2")}


def test_retention_by_age():
    sensor = Sensor.objects.create(name="old")
    Packet.objects.create(sensor=sensor, seq=1, ts=datetime(2020, 1, 1, tzinfo=UTC), protocol="TCP")

    assert prune_retention(keep_packets=0, keep_days=7)["packets"] == 1
