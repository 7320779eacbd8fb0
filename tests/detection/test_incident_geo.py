"""Incidents' GeoIP: the API's ``geo`` (address -> scope, country, AS), ?country= and ?asn_name=.

The live event's ``geo`` is tested with the consumer (tests/netmon/test_consumers.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from capture.models import Sensor
from detection.incidents import target_address
from detection.models import Incident

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CLOUDFLARE_AU = {
    "scope": "public", "country": "AU", "country_name": "Australia", "asn": None, "asn_name": "CLOUDFLARENET",
}  # fmt: skip


@pytest.fixture
def incidents():
    sensor = Sensor.objects.create(name="s1")
    scan = Incident.objects.create(
        sensor=sensor, src_ip="10.0.0.5", sources=["10.0.0.5"], targets=["1.1.1.1:443/tcp", "10.0.0.6"],
        kind="port_scan", severity="high", first_seen=T0, last_seen=T0, entity="host 10.0.0.5", opened_at=T0,
    )  # fmt: skip
    flood = Incident.objects.create(
        sensor=sensor, src_ip="2001:4860:4860::8888", sources=["2001:4860:4860::8888"],
        targets=["fd00::7:53/udp"], kind="udp_flood", severity="medium", first_seen=T0, last_seen=T0,
        entity="host 2001:4860:4860::8888", opened_at=T0,
    )  # fmt: skip
    return scan, flood


@pytest.mark.parametrize(
    ("target", "address"),
    [
        ("1.1.1.1:443/tcp", "1.1.1.1"),
        ("10.0.0.6", "10.0.0.6"),
        ("2001:db8::1:53/udp", "2001:db8::1"),
        ("::1", "::1"),
    ],
)
def test_the_address_of_a_target(target, address):
    assert target_address(target) == address


def test_incidents_show_the_geoip_of_their_sources_and_targets(api, incidents):
    scan, flood = incidents
    rows = {row["id"]: row for row in api.get("/api/incidents/").json()["results"]}

    assert list(rows[scan.pk]["geo"]) == ["10.0.0.5", "1.1.1.1", "10.0.0.6"]
    assert rows[scan.pk]["geo"]["1.1.1.1"] == CLOUDFLARE_AU
    assert rows[scan.pk]["geo"]["10.0.0.5"]["scope"] == "private"
    assert rows[flood.pk]["geo"]["2001:4860:4860::8888"]["country"] == "US"
    assert rows[flood.pk]["geo"]["fd00::7"]["scope"] == "private"


def test_incidents_filter_by_the_country_and_as_of_a_source_or_target(api, incidents):
    scan, flood = incidents

    def ids(query: str) -> set[int]:
        response = api.get(f"/api/incidents/?{query}")
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids("country=AU") == {scan.pk}  # a target's
    assert ids("country=us") == {flood.pk}  # a source's
    assert ids("asn_name=cloudflarenet") == {scan.pk}
    assert ids("country=US&kind=port_scan") == set()
    assert ids("country=DE") == set()
    assert ids("asn=13335") == set()  # no AS numbers in the bundled data
