"""Suppression rules at work: which rule suppresses an anomaly group, hit counts, rules from incidents.

The worker's grouping of anomalies into incidents (``detection.incidents``) loads the unexpired
rules once per read (``RuleSet.active()``, one query) and asks ``RuleSet.match`` for each
anomaly group: the anomalies of a matching group are stored with the rule (``suppressed_by``)
and open no incident; ``record_hits`` then adds the read's counts to each rule (one UPDATE per
rule). ``match`` is pure and runs in the hot path: the CIDRs are parsed once when the set is
built, addresses are parsed through a small cache, and no query is made.

``rule_from_incident`` is the one-click "suppress similar incidents" (the API's
``POST /api/incidents/{id}/suppress/`` and the admin action): the incident's single source, its
main target's host, that target's port for kinds aimed at one service, and its kind.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from django.conf import settings
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from capture.choices import SERVICE_DIRECTED_KINDS
from capture.validation import flat_errors
from detection.models import Incident, SuppressionRule
from detection.validation import SuppressionRuleRequestSerializer

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT = object()  # "not given": rule_from_incident then uses the default expiry


class InvalidRule(ValueError):
    """The validator refused a rule; ``errors`` holds one message per field."""

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


@lru_cache(maxsize=65536)
def _address(text: str) -> IPAddress | None:
    """An address as the rules compare it (IPv4-mapped IPv6 as IPv4); None when it is not one."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class _Compiled(NamedTuple):
    rule: SuppressionRule
    source: IPNetwork | None
    target: IPNetwork | None
    port: int | None
    kind: str


def _network(text: str) -> IPNetwork | None:
    return ipaddress.ip_network(text, strict=False) if text else None


class RuleSet:
    """The rules in force, compiled for matching: first match wins, oldest rule first."""

    def __init__(self, rules: Iterable[SuppressionRule]) -> None:
        self._rules = [
            _Compiled(rule, _network(rule.source_cidr), _network(rule.target_cidr), rule.port, rule.kind)
            for rule in rules
        ]

    @classmethod
    def active(cls, now: datetime | None = None) -> RuleSet:
        """The rules unexpired at ``now`` (default: the current time), in one query."""
        now = now or timezone.now()
        unexpired = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        return cls(SuppressionRule.objects.filter(unexpired).order_by("id"))

    def __len__(self) -> int:
        return len(self._rules)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def match(
        self, src: str | None, dst: str | None, port: int | None, kind: str | None
    ) -> SuppressionRule | None:
        """The first rule whose every criterion matches, or None.

        A criterion the rule leaves empty matches anything; one it sets does not match an unknown
        value (``src``/``dst``/``port``/``kind`` None): in particular ``kind=None`` means "kind not
        known yet", and then rules that set a kind do not match. ``port`` is the target port.
        """
        if not self._rules:
            return None
        source = _address(src) if src else None
        target = _address(dst) if dst else None
        for compiled in self._rules:
            if compiled.source is not None and (source is None or source not in compiled.source):
                continue
            if compiled.target is not None and (target is None or target not in compiled.target):
                continue
            if compiled.port is not None and port != compiled.port:
                continue
            if compiled.kind and kind != compiled.kind:
                continue
            return compiled.rule
        return None


def record_hits(counts: dict[int, int], when: datetime) -> None:
    """Add ``counts`` (rule id -> anomalies it suppressed) to the rules' hits; ``last_hit_at`` becomes
    ``when`` unless it is later already. One UPDATE per rule; a deleted rule is skipped."""
    for rule_id, count in counts.items():
        if count <= 0:
            continue
        SuppressionRule.objects.filter(pk=rule_id).update(
            hits=F("hits") + count,
            last_hit_at=Case(
                When(Q(last_hit_at__isnull=True) | Q(last_hit_at__lt=when), then=Value(when)),
                default=F("last_hit_at"),
            ),
        )


def validated_rule(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` through the rule's one validator; raises InvalidRule naming each refused field."""
    body = SuppressionRuleRequestSerializer(data=data)
    if not body.is_valid():
        raise InvalidRule(flat_errors(body.errors))
    return dict(body.validated_data)


def create_rule(data: dict[str, Any], user: Any = None, incident: Incident | None = None) -> SuppressionRule:
    """A new rule from a request body (validated here); raises InvalidRule."""
    fields = validated_rule(data)
    created_by = user if getattr(user, "is_authenticated", False) else None
    return SuppressionRule.objects.create(**fields, created_by=created_by, incident=incident)


def parse_target(target: str) -> tuple[str, int | None]:
    """An incident target's host and port: ``IP`` -> (IP, None); ``IP:port/proto`` (IPv6 as
    ``2001:db8::1:443/tcp`` or ``[2001:db8::1]:443/tcp``) -> (IP, port)."""
    if "/" not in target:
        return target.strip("[]"), None
    host, _, rest = target.rpartition(":")
    port = rest.split("/", 1)[0]
    return host.strip("[]"), int(port) if port.isdigit() else None


def default_expiry(now: datetime | None = None) -> datetime | None:
    """Now + NETMON_SUPPRESSION_DEFAULT_HOURS, or None (never) when it is 0."""
    hours = settings.NETMON_SUPPRESSION_DEFAULT_HOURS
    return (now or timezone.now()) + timedelta(hours=hours) if hours > 0 else None


def rule_criteria(incident: Incident) -> dict[str, Any]:
    """What "similar incidents" means for ``incident``: its single source (as /32 or /128), its main
    (first) target's host, that target's port when its kind is aimed at one service, its kind."""
    criteria: dict[str, Any] = {"kind": incident.kind}
    if len(incident.sources) == 1 and _address(incident.sources[0]) is not None:
        criteria["source_cidr"] = str(_address(incident.sources[0]))
    if incident.targets:
        host, port = parse_target(incident.targets[0])
        if _address(host) is not None:
            criteria["target_cidr"] = str(_address(host))
        if port is not None and incident.kind in SERVICE_DIRECTED_KINDS:
            criteria["port"] = port
    return criteria


def rule_from_incident(
    incident: Incident, user: Any, reason: str | None = None, expires_at: Any = DEFAULT
) -> SuppressionRule:
    """A rule suppressing incidents like ``incident`` (``rule_criteria``), made by ``user``.

    ``reason`` defaults to "suppressed from incident #N"; ``expires_at`` not given: the default
    expiry (``default_expiry``), None: never. Raises InvalidRule (e.g. an expiry in the past).
    """
    data = {
        **rule_criteria(incident),
        "reason": reason or f"suppressed from incident #{incident.pk}",
        "expires_at": default_expiry() if expires_at is DEFAULT else expires_at,
    }
    return create_rule(data, user, incident)
