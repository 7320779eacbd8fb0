"""capture/geo.py: scope, country and AS of an address; the bundled data, a MaxMind .mmdb, bad paths."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from capture import geo
from tests.capture.mmdb import write_mmdb

ROOT = Path(__file__).resolve().parents[2]
US = {"iso_code": "US", "names": {"en": "United States"}}
AU = {"iso_code": "AU", "names": {"en": "Australia"}}
GOOGLE = {"autonomous_system_number": 15169, "autonomous_system_organization": "GOOGLE"}


@pytest.fixture(autouse=True)
def fresh_geo():
    """Each test opens the data its settings name; the next test gets the default again."""
    geo.reset()
    yield
    geo.reset()


@pytest.fixture
def mmdb(tmp_path, settings):
    """A country database and an ASN database of a few networks, configured instead of geoip2fast."""
    settings.NETMON_GEOIP_MMDB = str(
        write_mmdb(
            tmp_path / "country.mmdb",
            "GeoLite2-Country",
            {"8.8.8.0/24": {"country": US}, "1.1.1.0/24": {"country": AU}, "2001:4860::/32": {"country": US}},
        )
    )
    settings.NETMON_GEOIP_ASN_MMDB = str(
        write_mmdb(
            tmp_path / "asn.mmdb",
            "GeoLite2-ASN",
            {"8.8.8.0/24": GOOGLE, "2001:4860::/32": GOOGLE},
        )
    )
    geo.reset()


@pytest.mark.parametrize(
    ("address", "country", "asn_name"),
    [
        ("8.8.8.8", "US", "GOOGLE"),
        ("::ffff:8.8.8.8", "US", "GOOGLE"),  # the records' form of IPv4
        ("2001:4860:4860::8888", "US", "GOOGLE"),
        ("1.1.1.1", "AU", "CLOUDFLARENET"),
    ],
)
def test_public_addresses_have_a_country_and_an_as_from_the_bundled_data(address, country, asn_name):
    found = geo.describe(address)

    assert found["scope"] == "public"
    assert found["country"] == country and found["country_name"]
    assert found["asn_name"] == asn_name
    assert found["asn"] is None  # geoip2fast's files carry AS names, not numbers
    assert geo.status().backend == "geoip2fast"


@pytest.mark.parametrize(
    ("address", "scope"),
    [
        ("10.1.2.3", "private"),
        ("192.168.1.10", "private"),
        ("172.16.5.4", "private"),
        ("fd00::1", "private"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "reserved"),  # shared address space (carrier NAT)
        ("192.0.2.1", "reserved"),  # documentation
        ("0.0.0.0", "reserved"),
        ("::ffff:10.0.0.1", "private"),
    ],
)
def test_special_addresses_say_their_scope_and_have_no_country(address, scope):
    assert geo.describe(address) == {
        "scope": scope, "country": None, "country_name": None, "asn": None, "asn_name": None,
    }  # fmt: skip


def test_what_is_not_an_address_has_no_geoip():
    assert geo.describe(None) is None
    assert geo.describe("") is None
    assert geo.describe("not-an-ip") is None


def test_the_data_is_loaded_once_and_addresses_are_cached():
    geo.lookup("8.8.8.8")
    backend, hits = geo._backend, geo.lookup.cache_info().hits

    geo.lookup("8.8.8.8")
    geo.lookup("1.1.1.1")

    assert geo._backend is backend
    assert geo.lookup.cache_info().hits == hits + 1
    assert geo.status().load_seconds is not None


@pytest.mark.parametrize(("text", "code"), [("US", "US"), ("de", "DE"), (" fr ", "FR")])
def test_country_filter_values(text, code):
    assert geo.parse_country(text) == code


@pytest.mark.parametrize("text", ["USA", "U", "1A", "U.", "", "ÜS"])
def test_bad_country_filter_values_say_what_is_allowed(text):
    with pytest.raises(ValueError, match="two-letter ISO 3166 country code"):
        geo.parse_country(text)


@pytest.mark.parametrize(
    ("text", "number"), [("15169", 15169), ("AS15169", 15169), ("as13335", 13335), ("AS0", 0)]
)
def test_asn_filter_values(text, number):
    assert geo.parse_asn(text) == number


@pytest.mark.parametrize("text", ["AS", "ASX", "-1", "1.5", "12345678901", "AS 1", "GOOGLE"])
def test_bad_asn_filter_values_say_what_is_allowed(text):
    with pytest.raises(ValueError, match="AS number"):
        geo.parse_asn(text)


def test_a_configured_mmdb_is_used_instead(mmdb):
    assert geo.describe("8.8.8.8") == {
        "scope": "public", "country": "US", "country_name": "United States",
        "asn": 15169, "asn_name": "GOOGLE",
    }  # fmt: skip
    assert geo.describe("2001:4860:4860::8888")["asn"] == 15169
    assert geo.describe("1.1.1.1") == {
        "scope": "public", "country": "AU", "country_name": "Australia", "asn": None, "asn_name": None,
    }  # fmt: skip
    assert geo.describe("9.9.9.9")["country"] is None  # not in this database
    assert geo.describe("10.0.0.1")["scope"] == "private"
    assert geo.status().backend == "mmdb"
    assert geo.check_configuration() is None


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"this is not a MaxMind database" * 100)
    return path


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("NETMON_GEOIP_MMDB", lambda tmp: tmp / "missing.mmdb", "no such file"),
        ("NETMON_GEOIP_MMDB", lambda tmp: _corrupt(tmp / "corrupt.mmdb"), "not a readable MaxMind database"),
        ("NETMON_GEOIP_MMDB", lambda tmp: tmp, "is not a file"),  # a directory
        ("NETMON_GEOIP_ASN_MMDB", lambda tmp: tmp / "missing-asn.mmdb", "no such file"),
    ],
)
def test_a_missing_or_corrupt_mmdb_turns_lookups_off_with_a_clear_message(
    tmp_path, settings, caplog, name, make, reason
):
    path = make(tmp_path)
    setattr(settings, name, str(path))

    with caplog.at_level(logging.ERROR, logger="capture.geo"):
        problem = geo.check_configuration()

    assert problem is not None
    assert name in problem and reason in problem and "lookups are off" in problem
    assert problem in caplog.text
    # lookups go on, with the scope only: no crash, no bundled data behind the operator's back
    assert geo.describe("8.8.8.8") == {
        "scope": "public", "country": None, "country_name": None, "asn": None, "asn_name": None,
    }  # fmt: skip
    assert geo.describe("10.0.0.1")["scope"] == "private"


def test_an_asn_database_named_as_the_country_one_is_refused(tmp_path, settings):
    settings.NETMON_GEOIP_MMDB = str(write_mmdb(tmp_path / "asn.mmdb", "GeoLite2-ASN", {}))

    problem = geo.check_configuration()

    assert "NETMON_GEOIP_MMDB" in problem
    assert "is a GeoLite2-ASN database, not a country or city one" in problem


def test_lookups_can_be_turned_off(settings):
    settings.NETMON_GEOIP = False

    assert geo.describe("8.8.8.8")["country"] is None
    assert geo.status().backend == "off"


def test_the_start_up_message_names_the_bad_path_and_the_process_still_starts(tmp_path):
    missing = tmp_path / "GeoLite2-Country.mmdb"
    env = {**os.environ, "NETMON_ENV": "test", "NETMON_GEOIP_MMDB": str(missing)}

    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert f"NETMON_GEOIP_MMDB: no such file '{missing}'; GeoIP lookups are off" in result.stderr
