"""Netmon's vocabulary: each word the configuration, the models and the exports use has its home here.

Configuration keys, analysis depths, model kinds, feature levels, encryption algorithms and the
names of the roles are spelled once, in this module, and every app imports them from here
(``capture`` is the lowest app: ``detection`` and ``exports`` read it, and it imports neither).
The dashboard does not spell them either: it reads them from ``GET /api/config`` (its ``options``).

Django-free on purpose (plain ``enum.StrEnum``), so the Django-free cores (``detection.features``,
``detection.ml``, ``exports.crypto``) use the same words. Each class offers ``values`` and
``choices`` like Django's ``TextChoices``, with the same labels, so model fields take
``choices=MlModel.choices`` unchanged.
"""

from __future__ import annotations

from enum import EnumType, StrEnum

__all__ = [
    "BPF_MAX_LENGTH",
    "BUFFER_SIZE_MAX",
    "BUFFER_SIZE_MIN",
    "CONFIG_KEYS",
    "INCIDENT_KIND_TITLES",
    "INCIDENT_STATUS_ACTIONS",
    "INCIDENT_TRANSITIONS",
    "INTERFACE_MAX_LENGTH",
    "SENSOR_NAME_MAX_LENGTH",
    "SENSOR_NAME_PATTERN",
    "SENSOR_NAME_RULE",
    "SERVICE_DIRECTED_KINDS",
    "AnalysisDepth",
    "EncryptionAlgorithm",
    "FeatureLevel",
    "IncidentKind",
    "IncidentSeverity",
    "IncidentStatus",
    "MlModel",
    "Role",
]


class _VocabularyType(EnumType):
    """Gives the classes Django's ``TextChoices`` class attributes ``values`` and ``choices``."""

    @property
    def values(cls) -> list[str]:
        return [member.value for member in cls]

    @property
    def choices(cls) -> list[tuple[str, str]]:
        return [(member.value, member.label) for member in cls]


class Vocabulary(StrEnum, metaclass=_VocabularyType):
    """A closed set of words; members compare equal to their strings."""

    @property
    def label(self) -> str:
        # Django's TextChoices label (the member's name in title case): the migrations' choices.
        return self.name.replace("_", " ").title()


class AnalysisDepth(Vocabulary):
    """``analysis_depth``: how much of each packet the capture decodes."""

    BASIC = "basic"
    INTERMEDIATE = "intermediate"
    DEEP = "deep"


class MlModel(Vocabulary):
    """``ml_model``, and the kinds of trained models: each kind has its own versions."""

    AUTOENCODER = "autoencoder"
    ISOLATION_FOREST = "isolation_forest"
    BOTH = "both"


class FeatureLevel(Vocabulary):
    """``feature_level``: the feature families computed per packet (detection/features.py)."""

    ADVANCED = "advanced"
    STANDARD = "standard"
    LOW = "low"


class EncryptionAlgorithm(Vocabulary):
    """``encryption_algorithm`` and an export's ``algorithm`` (exports/crypto.py implements them)."""

    RSA = "RSA"
    AES_256 = "AES-256"
    AES_192 = "AES-192"
    SHA = "SHA"


class IncidentKind(Vocabulary):
    """An incident's ``kind``: what the evidence says happened (rules: detection.incidents.incident_kind)."""

    PORT_SCAN = "port_scan"
    HORIZONTAL_SCAN = "horizontal_scan"
    SYN_FLOOD = "syn_flood"
    UDP_FLOOD = "udp_flood"
    ICMP_FLOOD = "icmp_flood"
    REQUEST_FLOOD = "request_flood"
    BRUTE_FORCE = "brute_force"
    SLOW_CONNECTIONS = "slow_connections"
    LARGE_TRANSFER = "large_transfer"
    NEW_SERVICE = "new_service"
    UNUSUAL_TRAFFIC = "unusual_traffic"


# Kinds aimed at one service (a port of a host): a suppression rule made from such an incident
# keeps the target's port, so the host's other services stay watched (detection.suppression).
SERVICE_DIRECTED_KINDS = frozenset(
    {
        IncidentKind.SYN_FLOOD,
        IncidentKind.UDP_FLOOD,
        IncidentKind.REQUEST_FLOOD,
        IncidentKind.BRUTE_FORCE,
        IncidentKind.SLOW_CONNECTIONS,
        IncidentKind.LARGE_TRANSFER,
        IncidentKind.NEW_SERVICE,
    }
)


class IncidentSeverity(Vocabulary):
    """An incident's ``severity`` (rule: detection.incidents.incident_severity)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class IncidentStatus(Vocabulary):
    """An incident's ``status``: what an operator decided (transitions: ``INCIDENT_TRANSITIONS``)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    FALSE_POSITIVE = "false_positive"


# The status an incident may go to from each status; anything else is refused (409 over the API).
INCIDENT_TRANSITIONS: dict[str, tuple[str, ...]] = {
    IncidentStatus.OPEN: (
        IncidentStatus.ACKNOWLEDGED,
        IncidentStatus.RESOLVED,
        IncidentStatus.FALSE_POSITIVE,
    ),
    IncidentStatus.ACKNOWLEDGED: (
        IncidentStatus.RESOLVED,
        IncidentStatus.FALSE_POSITIVE,
        IncidentStatus.OPEN,
    ),
    IncidentStatus.RESOLVED: (IncidentStatus.OPEN,),
    IncidentStatus.FALSE_POSITIVE: (IncidentStatus.OPEN,),
}


# How an operator reads each kind on the dashboard and the incident page (the API and the events
# carry the words; a kind without a title here is shown by its label).
INCIDENT_KIND_TITLES: dict[str, str] = {
    IncidentKind.PORT_SCAN: "Port scan",
    IncidentKind.HORIZONTAL_SCAN: "Horizontal scan",
    IncidentKind.SYN_FLOOD: "SYN flood",
    IncidentKind.UDP_FLOOD: "UDP flood",
    IncidentKind.ICMP_FLOOD: "ICMP flood",
    IncidentKind.REQUEST_FLOOD: "Request flood",
    IncidentKind.BRUTE_FORCE: "Brute force",
    IncidentKind.SLOW_CONNECTIONS: "Slow connections",
    IncidentKind.LARGE_TRANSFER: "Large transfer",
    IncidentKind.NEW_SERVICE: "New service",
    IncidentKind.UNUSUAL_TRAFFIC: "Unusual traffic",
}
# What the button that puts an incident in each status says.
INCIDENT_STATUS_ACTIONS: dict[str, str] = {
    IncidentStatus.ACKNOWLEDGED: "Acknowledge",
    IncidentStatus.RESOLVED: "Resolve",
    IncidentStatus.FALSE_POSITIVE: "False positive",
    IncidentStatus.OPEN: "Reopen",
}


class AddressScope(Vocabulary):
    """Where an address belongs (``capture/geo.py``): only ``public`` addresses have a country and an AS."""

    PUBLIC = "public"
    PRIVATE = "private"
    LOOPBACK = "loopback"
    LINK_LOCAL = "link-local"
    MULTICAST = "multicast"
    RESERVED = "reserved"  # unspecified, documentation, shared (CGNAT), benchmarking, future use


class Role(Vocabulary):
    """The roles: Django groups of these names, each a set of permissions (``netmon/roles.py``).

    Ordered from the least to the most: each role may do what the one before it may, and more.
    """

    VIEWER = "viewer"
    ANALYST = "analyst"
    ADMIN = "admin"


# The monitor configuration's keys, in the order the prototype listed them (bpf_filter came later).
CONFIG_KEYS = (
    "network_interface",
    "bpf_filter",
    "buffer_size",
    "analysis_depth",
    "ml_model",
    "feature_level",
    "encryption_algorithm",
)
BUFFER_SIZE_MIN = 10
BUFFER_SIZE_MAX = 10_000_000
BPF_MAX_LENGTH = 1024
INTERFACE_MAX_LENGTH = 64
# A sensor's name is part of Redis keys (its stream, lock, state, control and heartbeat keys) and of
# the Sensor row (max_length 64): a closed alphabet and a bound keep clients from minting arbitrary
# keys. capture/validation.py is the one place that checks it.
SENSOR_NAME_MAX_LENGTH = 64
SENSOR_NAME_PATTERN = rf"[A-Za-z0-9_.-]{{1,{SENSOR_NAME_MAX_LENGTH}}}"
SENSOR_NAME_RULE = f"1 to {SENSOR_NAME_MAX_LENGTH} characters from A-Z a-z 0-9 _ . -"
