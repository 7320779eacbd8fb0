"""GeoIP over the API: packets' src_geo/dst_geo, top talkers, ?country=/?asn=/?asn_name= and their 400s."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from capture import geo, talkers
from capture.models import Packet, Sensor
from tests.capture.mmdb import write_mmdb

pytestmark = pytest.mark.django_db

PRIVATE = {"scope": "private", "country": None, "country_name": None, "asn": None, "asn_name": None}


@pytest.fixture(autouse=True)
def fresh_geo():
    geo.reset()
    yield
    geo.reset()


@pytest.fixture
def traffic():
    """Three hosts of a LAN: one talks to Google (US), one to Cloudflare (AU, also over IPv6), one inside."""
    now = timezone.now()
    sensor = Sensor.objects.create(name="s1")
    rows = [
        (1, "10.0.0.1", "8.8.8.8", 100),
        (2, "8.8.8.8", "10.0.0.1", 1500),
        (3, "10.0.0.2", "1.1.1.1", 200),
        (4, "2001:4860:4860::8888", "fd00::2", 900),
        (5, "10.0.0.3", "10.0.0.4", 60),
        (6, "1.1.1.1", "10.0.0.2", 700),
    ]
    for seq, src, dst, length in rows:
        Packet.objects.create(
            sensor=sensor, seq=seq, ts=now - timedelta(seconds=60 - seq), src_ip=src, dst_ip=dst,
            protocol="TCP", ip_version=6 if ":" in src else 4, length=length,
        )  # fmt: skip
    return sensor


def seqs(api, query: str) -> set[int]:
    response = api.get(f"/api/packets/?{query}")
    assert response.status_code == 200, response.content
    return {p["seq"] for p in response.json()["results"]}


def test_packets_show_the_country_and_as_of_both_ends(api, traffic):
    rows = {p["seq"]: p for p in api.get("/api/packets/").json()["results"]}

    assert rows[1]["src_geo"] == PRIVATE
    assert rows[1]["dst_geo"] == {
        "scope": "public", "country": "US", "country_name": "United States",
        "asn": None, "asn_name": "GOOGLE",
    }  # fmt: skip
    assert rows[4]["src_geo"]["country"] == "US" and rows[4]["dst_geo"] == PRIVATE
    assert rows[6]["src_geo"]["country"] == "AU"


PACKET_FILTERS = [
    ("country=US", {1, 2, 4}),
    ("country=us", {1, 2, 4}),
    ("country=AU", {3, 6}),
    ("country=FR", set()),
    ("asn_name=google", {1, 2, 4}),
    ("asn_name=CLOUDFLARENET&country=AU", {3, 6}),
    ("asn_name=CLOUDFLARENET&country=US", set()),  # all criteria hold for one address
    ("country=US&ip_version=6", {4}),
    ("country=US&src_ip=8.8.8.8", {2}),
    ("asn=15169", set()),  # the bundled data has no AS numbers
]


def test_packets_filter_by_country_and_as(api, traffic):
    # one test, many queries: the fixture's user and rows cost more than the queries
    assert {query: seqs(api, query) for query, _ in PACKET_FILTERS} == dict(PACKET_FILTERS)


def test_packets_filter_by_as_number_with_an_asn_database(api, traffic, tmp_path, settings):
    google = {"autonomous_system_number": 15169, "autonomous_system_organization": "GOOGLE LLC"}
    settings.NETMON_GEOIP_ASN_MMDB = str(
        write_mmdb(tmp_path / "asn.mmdb", "GeoLite2-ASN", {"8.8.8.0/24": google, "2001:4860::/32": google})
    )
    geo.reset()

    assert seqs(api, "asn=15169") == {1, 2, 4}
    assert seqs(api, "asn=AS15169") == {1, 2, 4}
    assert seqs(api, "asn=13335") == set()
    row = next(p for p in api.get("/api/packets/?asn=15169").json()["results"] if p["seq"] == 1)
    assert row["dst_geo"]["asn"] == 15169 and row["dst_geo"]["asn_name"] == "GOOGLE LLC"


BAD_FILTERS = [
    ("/api/packets/?country=USA", "country", "two-letter ISO 3166 country code"),
    ("/api/packets/?country=1", "country", "two-letter ISO 3166 country code"),
    ("/api/packets/?asn=GOOGLE", "asn", "AS number"),
    ("/api/packets/?asn=AS-1", "asn", "AS number"),
    ("/api/talkers?country=ZZZ", "country", "two-letter ISO 3166 country code"),
    ("/api/talkers?asn=x", "asn", "AS number"),
    ("/api/talkers?limit=0", "limit", "greater than or equal to 1"),
    ("/api/talkers?limit=101", "limit", "less than or equal to 100"),
    ("/api/incidents/?country=U", "country", "two-letter ISO 3166 country code"),
    ("/api/incidents/?asn=99999999999", "asn", "AS number"),
]


def test_bad_filter_values_are_a_400_naming_the_field_and_what_is_allowed(api):
    for url, field, words in BAD_FILTERS:
        response = api.get(url)

        assert response.status_code == 400, url
        assert words in " ".join(response.json()[field]), (url, response.json())


def test_top_talkers_are_bytes_sent_per_source_with_their_country_and_as(api, traffic):
    body = api.get("/api/talkers").json()

    assert [(t["ip"], t["bytes"], t["packets"]) for t in body["talkers"]] == [
        ("8.8.8.8", 1500, 1),
        ("2001:4860:4860::8888", 900, 1),
        ("1.1.1.1", 700, 1),
        ("10.0.0.2", 200, 1),
        ("10.0.0.1", 100, 1),
        ("10.0.0.3", 60, 1),
    ]
    assert body["talkers"][0]["geo"]["country"] == "US" and body["talkers"][0]["geo"]["asn_name"] == "GOOGLE"
    assert body["talkers"][3]["geo"] == PRIVATE


TALKER_FILTERS = [
    ("country=US", ["8.8.8.8", "2001:4860:4860::8888"]),
    ("country=AU", ["1.1.1.1"]),
    ("asn_name=CloudflareNet", ["1.1.1.1"]),
    ("limit=2", ["8.8.8.8", "2001:4860:4860::8888"]),
    ("sensor=other", []),
]


def test_top_talkers_filter(api, traffic):
    found = {
        query: [t["ip"] for t in api.get(f"/api/talkers?{query}").json()["talkers"]]
        for query, _ in TALKER_FILTERS
    }
    assert found == dict(TALKER_FILTERS)


def test_top_talkers_window(api, traffic):
    now = timezone.now()
    Packet.objects.create(
        sensor=traffic, seq=99, ts=now - timedelta(hours=3), src_ip="9.9.9.9", dst_ip="10.0.0.1",
        protocol="UDP", ip_version=4, length=10**6,
    )  # fmt: skip

    recent = api.get("/api/talkers").json()["talkers"]  # the last hour by default
    assert "9.9.9.9" not in [t["ip"] for t in recent]
    since = (now - timedelta(hours=4)).isoformat().replace("+00:00", "Z")
    until = (now - timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    old = api.get("/api/talkers", {"since": since, "until": until}).json()["talkers"]
    assert [t["ip"] for t in old] == ["9.9.9.9"]


def test_the_distinct_addresses_of_packets_come_from_the_index(traffic):
    assert talkers.packet_addresses() == {
        "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4",
        "8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "fd00::2",
    }  # fmt: skip


def test_status_says_which_geoip_data_is_in_use_and_why_lookups_are_off(api, tmp_path, settings):
    assert api.get("/api/status").json()["geoip"]["backend"] == "geoip2fast"

    missing = tmp_path / "missing.mmdb"
    settings.NETMON_GEOIP_MMDB = str(missing)
    geo.reset()
    body = api.get("/api/status").json()["geoip"]

    assert body["backend"] == "off"
    assert f"NETMON_GEOIP_MMDB: no such file '{missing}'; GeoIP lookups are off" in body["detail"]
