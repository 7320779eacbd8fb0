"""GeoIP and ASN: an address's scope, country and autonomous system, from offline data only.

Public addresses get a country (ISO 3166 two-letter code) and an AS (number and name); private,
loopback, link-local, multicast and reserved addresses say so in ``scope`` and have none. The data
comes from a file on this machine and is never fetched at run time:

- by default, the database the ``geoip2fast`` package ships (``geoip2fast-asn-ipv6.dat.gz``:
  MaxMind GeoLite2 country and ASN, IPv4 and IPv6). It carries AS *names* only, not AS numbers, so
  ``asn`` is null with it and the AS is matched by ``asn_name``;
- or MaxMind-format ``.mmdb`` files read with ``geoip2``: ``NETMON_GEOIP_MMDB`` (a country or city
  database) and ``NETMON_GEOIP_ASN_MMDB`` (an ASN database: numbers and names).

The data is loaded lazily, once per process, on the first lookup (geoip2fast's file takes about half
a second and ~120 MB; ``bench/geo.py`` measures it), so processes that never look up an address (the
capture process, the workers) never pay for it. A configured ``.mmdb`` that is missing or corrupt is
reported at start-up (``check_configuration``, from ``CaptureConfig.ready``) and turns lookups off:
every address then has its scope and nothing else. Lookups are cached per address (LRU).

This module is the one home of the GeoIP filter vocabulary too: ``parse_country`` and ``parse_asn``
are the validators of ``?country=`` and ``?asn=`` wherever they are accepted.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from django.conf import settings

from capture.choices import AddressScope

logger = logging.getLogger(__name__)

GEOIP2FAST_FILE = "geoip2fast-asn-ipv6.dat.gz"
CACHE_SIZE = 65_536  # addresses; an entry is a small frozen dataclass
_COUNTRY_RE = re.compile(r"[A-Za-z]{2}")
_ASN_RE = re.compile(r"(?:AS)?(\d{1,10})", re.IGNORECASE)

COUNTRY_HELP = "a two-letter ISO 3166 country code, e.g. US"
ASN_HELP = 'an AS number, e.g. 15169 or "AS15169"'


@dataclass(frozen=True, slots=True)
class Geo:
    """What is known of one address: its scope and, for a public address, its country and AS."""

    scope: str
    country: str | None = None
    country_name: str | None = None
    asn: int | None = None
    asn_name: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": str(self.scope),
            "country": self.country,
            "country_name": self.country_name,
            "asn": self.asn,
            "asn_name": self.asn_name,
        }


class _Backend(Protocol):
    name: str

    def find(self, address: str) -> Geo: ...


class _NoData:
    """Lookups off (turned off, or the configured data could not be opened): the scope only."""

    name = "off"

    def find(self, address: str) -> Geo:
        return Geo(scope=AddressScope.PUBLIC)


class _Geoip2Fast:
    """The data geoip2fast ships: country and AS name (its files hold no AS numbers)."""

    name = "geoip2fast"

    def __init__(self) -> None:
        from geoip2fast import GeoIP2Fast

        # geoip2fast keeps its tables in module globals: one database per process, which is what
        # this module wants anyway (loaded once, under _LOCK).
        self._db = GeoIP2Fast(geoip2fast_data_file=GEOIP2FAST_FILE)

    def find(self, address: str) -> Geo:
        result = self._db.lookup(address)
        code = result.country_code
        country = code if len(code) == 2 and code.isalpha() else None  # "--": not found
        asn_name = result.asn_name if result.asn_name not in ("", "<unknown>") else None
        return Geo(
            scope=AddressScope.PUBLIC,
            country=country,
            country_name=result.country_name if country else None,
            asn_name=asn_name,
        )


@lru_cache(maxsize=1)
def _geoip2fast() -> _Geoip2Fast:
    # One per process, kept across reset(): its tables are module globals of geoip2fast anyway.
    return _Geoip2Fast()


class _MaxMind:
    """MaxMind-format databases read with geoip2: a country or city one, and optionally an ASN one."""

    name = "mmdb"

    def __init__(self, country_path: str, asn_path: str) -> None:
        country_kinds = ("Country", "City")
        self._country = _open_mmdb("NETMON_GEOIP_MMDB", country_path, country_kinds, "a country or city")
        self._asn = _open_mmdb("NETMON_GEOIP_ASN_MMDB", asn_path, ("ASN",), "an ASN")
        if self._country is not None:
            kind = self._country.metadata().database_type
            self._country_of = self._country.city if "City" in kind else self._country.country

    def find(self, address: str) -> Geo:
        import geoip2.errors

        country = country_name = asn_name = None
        asn = None
        # ValueError: an IPv6 address in an IPv4-only database; not found either way.
        if self._country is not None:
            try:
                found = self._country_of(address).country
                country, country_name = found.iso_code, found.name
            except (geoip2.errors.AddressNotFoundError, ValueError):
                pass
        if self._asn is not None:
            try:
                record = self._asn.asn(address)
                asn, asn_name = record.autonomous_system_number, record.autonomous_system_organization
            except (geoip2.errors.AddressNotFoundError, ValueError):
                pass
        return Geo(AddressScope.PUBLIC, country, country_name, asn, asn_name)


class GeoDataError(ValueError):
    """A configured database that cannot be used: the message names the variable and the reason."""


def _open_mmdb(variable: str, path: str, kinds: tuple[str, ...], what: str) -> Any:
    """geoip2's reader of ``path`` (None when not configured); GeoDataError saying why it cannot be."""
    if not path:
        return None
    import geoip2.database

    if not os.path.exists(path):
        raise GeoDataError(f"{variable}: no such file {path!r}")
    if not os.path.isfile(path):
        raise GeoDataError(f"{variable}: {path!r} is not a file")
    try:
        reader = geoip2.database.Reader(path)
    except Exception as exc:  # unreadable, or corrupt (maxminddb's InvalidDatabaseError)
        raise GeoDataError(f"{variable}: {path!r} is not a readable MaxMind database ({exc})") from None
    kind = reader.metadata().database_type
    if not any(k in kind for k in kinds):
        raise GeoDataError(f"{variable}: {path!r} is a {kind} database, not {what} one")
    return reader


@dataclass(frozen=True)
class Status:
    """Which data this process looks addresses up in, and how long it took to load."""

    backend: str
    detail: str
    load_seconds: float | None


_LOCK = threading.Lock()
_backend: _Backend | None = None
_status: Status | None = None


def _configured() -> tuple[str, str]:
    return settings.NETMON_GEOIP_MMDB, settings.NETMON_GEOIP_ASN_MMDB


def _open_backend() -> tuple[_Backend, Status]:
    """The configured data, opened; lookups off (and why) when it cannot be."""
    if not settings.NETMON_GEOIP:
        return _NoData(), Status("off", "NETMON_GEOIP is off", None)
    country_path, asn_path = _configured()
    started = time.perf_counter()
    if country_path or asn_path:
        try:
            backend: _Backend = _MaxMind(country_path, asn_path)
        except GeoDataError as exc:
            return _NoData(), Status("off", f"{exc}; GeoIP lookups are off", None)
        detail = ", ".join(p for p in (country_path, asn_path) if p)
    else:
        try:
            backend = _geoip2fast()
        except Exception as exc:  # a broken install: say so, do not take the API down with it
            return _NoData(), Status("off", f"geoip2fast: {exc}; GeoIP lookups are off", None)
        detail = GEOIP2FAST_FILE
    return backend, Status(backend.name, detail, time.perf_counter() - started)


def _loaded() -> _Backend:
    global _backend, _status
    if _backend is None:
        with _LOCK:
            if _backend is None:
                backend, status = _open_backend()
                if backend.name == "off" and settings.NETMON_GEOIP:
                    logger.error("%s", status.detail)
                elif status.load_seconds is not None:
                    logger.info("GeoIP data %s loaded in %.2f s", status.detail, status.load_seconds)
                _status, _backend = status, backend
    return _backend


def is_loaded() -> bool:
    """Whether this process has its data (a lookup will not wait for a load)."""
    return _backend is not None


def status() -> Status:
    """The data in use (loading it if it is not yet)."""
    _loaded()
    assert _status is not None
    return _status


def reset() -> None:
    """Forget the loaded data and the cache (tests, and after changing the settings)."""
    global _backend, _status
    with _LOCK:
        _backend, _status = None, None
    lookup.cache_clear()


def check_configuration() -> str | None:
    """Start-up check of a configured ``.mmdb`` (cheap: opening one reads its metadata only).

    Returns the problem, logged as an error, or None. geoip2fast's own file is not loaded here:
    it is loaded on first use, so a process that never looks an address up never pays for it.
    """
    country_path, asn_path = _configured()
    if not settings.NETMON_GEOIP or not (country_path or asn_path):
        return None
    current = status()
    return current.detail if current.backend == "off" else None


def scope_of(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The address's scope, from the IANA special-purpose registries Python's ipaddress knows."""
    if address.is_loopback:
        return AddressScope.LOOPBACK
    if address.is_link_local:
        return AddressScope.LINK_LOCAL
    if address.is_multicast:
        return AddressScope.MULTICAST
    if address.is_unspecified or address.is_reserved:
        return AddressScope.RESERVED
    if address.is_private:
        # ipaddress counts documentation and benchmarking ranges as private; RFC 1918, ULA and
        # the like are what operators call private.
        return AddressScope.PRIVATE if _rfc_private(address) else AddressScope.RESERVED
    if not address.is_global:
        return AddressScope.RESERVED  # e.g. 100.64.0.0/10, shared address space
    return AddressScope.PUBLIC


_PRIVATE_NETS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def _rfc_private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(address.version == net.version and address in net for net in _PRIVATE_NETS)


@lru_cache(maxsize=CACHE_SIZE)
def lookup(address: str) -> Geo | None:
    """The address's ``Geo``; None when it is not an address (e.g. empty)."""
    try:
        parsed = ipaddress.ip_address(str(address).strip())
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped  # the records' form of IPv4 (::ffff:a.b.c.d)
    scope = scope_of(parsed)
    if scope != AddressScope.PUBLIC:
        return Geo(scope=scope)
    return _loaded().find(str(parsed))


def describe(address: str | None) -> dict[str, Any] | None:
    """``lookup`` as the API and the WebSocket show it (None when there is no address)."""
    if not address:
        return None
    found = lookup(str(address))
    return found.as_dict() if found is not None else None


def talkers_geo(talkers: Any) -> dict[str, dict[str, Any]]:
    """address -> GeoIP for a stats message's ``top_talkers`` (``[[address, bytes], ...]``)."""
    if not isinstance(talkers, list):
        return {}
    return describe_many(str(t[0]) for t in talkers if isinstance(t, list | tuple) and t and t[0])


def with_packet_geo(packets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of packet dicts (WebSocket samples) with ``src_geo`` and ``dst_geo``, as the API has them."""
    return [
        {**packet, "src_geo": describe(packet.get("src_ip")), "dst_geo": describe(packet.get("dst_ip"))}
        for packet in packets
    ]


def describe_many(addresses: Iterable[str | None]) -> dict[str, dict[str, Any]]:
    """address -> ``describe(address)`` for each distinct address (those that are addresses)."""
    out: dict[str, dict[str, Any]] = {}
    for address in addresses:
        if address and address not in out and (found := describe(address)) is not None:
            out[str(address)] = found
    return out


# --- filters -------------------------------------------------------------------------------------
def parse_country(value: str) -> str:
    """``?country=``: a two-letter ISO 3166 code (any case), upper-cased; ValueError otherwise."""
    text = str(value).strip()
    if not _COUNTRY_RE.fullmatch(text):
        raise ValueError(f"{value!r} is not {COUNTRY_HELP}")
    return text.upper()


def parse_asn(value: str) -> int:
    """``?asn=``: an AS number, bare or as "AS123" (up to 10 digits); ValueError otherwise.

    A number no AS has (0, or beyond 4-byte AS numbers) is accepted and matches nothing, as the
    schema's pattern says.
    """
    match = _ASN_RE.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"{value!r} is not {ASN_HELP}")
    return int(match.group(1))


@dataclass(frozen=True)
class GeoCriteria:
    """What a filtered list asks of an address: every given criterion must hold."""

    country: str | None = None
    asn: int | None = None
    asn_name: str | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.country, self.asn, self.asn_name))

    def matches(self, address: str | None) -> bool:
        found = lookup(str(address)) if address else None
        if found is None:
            return False
        if self.country is not None and found.country != self.country:
            return False
        if self.asn is not None and found.asn != self.asn:
            return False
        return self.asn_name is None or (found.asn_name or "").casefold() == self.asn_name.casefold()


def matching(addresses: Iterable[str | None], criteria: GeoCriteria) -> list[str]:
    """The addresses (distinct, as given) that meet the criteria."""
    return sorted({str(a) for a in addresses if a and criteria.matches(str(a))})
