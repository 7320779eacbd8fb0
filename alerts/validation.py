"""The one validator of a notification destination: an apprise URL apprise can parse.

Used by the ``Destination`` model field (so the admin form refuses a bad URL with this message), by
the start-up check of ``NETMON_NOTIFY_URLS`` (``alerts/apps.py``), by the services that read it and
by ``DestinationRequestSerializer``, the request contract of ``POST``/``PATCH
/api/notifications/destinations/`` (name, url, min_severity, enabled; each refusal names its field).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

import apprise
from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from capture.choices import IncidentSeverity
from capture.validation import ClosedSerializer, StrictField, VocabularyField

NAME_MAX_LENGTH = 80  # Destination.name
# The rows NETMON_NOTIFY_URLS owns are named so (alerts.services.settings_destination_name).
SETTINGS_NAME_PREFIX = "NETMON_NOTIFY_URLS"

# A comma followed by a scheme starts a new URL; commas inside a URL (mailto's to=a@x,b@x) stay.
_SEPARATOR = re.compile(r"\s+|,\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")


@contextlib.contextmanager
def _quiet_apprise() -> Iterator[None]:
    # apprise logs the URL it cannot parse as given (secrets included); we say what is wrong, redacted.
    logger = logging.getLogger("apprise")
    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before


def _parse(url: str):
    with _quiet_apprise():
        return apprise.Apprise.instantiate(url, suppress_exceptions=True)


def split_urls(text: str) -> list[str]:
    """The URLs of ``NETMON_NOTIFY_URLS``: separated by white space or by commas starting a URL."""
    return [part.strip().rstrip(",") for part in _SEPARATOR.split(text or "") if part.strip().rstrip(",")]


def url_problem(url: str) -> str | None:
    """Why apprise cannot use ``url`` (None when it can)."""
    if not url or "://" not in url:
        return f"{url!r} is not an apprise URL (scheme://...; see the apprise wiki for the services)"
    scheme = url.split("://", 1)[0].lower()
    if _parse(url) is None:
        known = _known_scheme(scheme)
        why = "its parameters are invalid" if known else f"no apprise service has the scheme {scheme!r}"
        return f"apprise cannot parse the destination URL {redact(url)!r}: {why}"
    return None


def _known_scheme(scheme: str) -> bool:
    for service in apprise.Apprise().details().get("schemas", []):
        for key in ("protocols", "secure_protocols"):
            if scheme in (service.get(key) or ()):
                return True
    return False


def validate_apprise_url(url: str) -> None:
    """Raise ValidationError naming ``url`` when apprise cannot parse it."""
    problem = url_problem(url)
    if problem:
        raise ValidationError(problem, code="invalid_apprise_url")


def redact(url: str) -> str:
    """``url`` with what may be secret hidden: a password and query values (a token in the path stays
    for an URL apprise cannot parse, since there is no telling which part it is)."""
    plugin = _parse(url)
    if plugin is not None:
        return _hide_header_values(plugin.url(privacy=True))
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else netloc
    query = "&".join(f"{pair.split('=', 1)[0]}=***" for pair in parts.query.split("&") if pair)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


# apprise's privacy form hides passwords and tokens but not the values of custom headers (``+X-Api-Key=``,
# ``-X-Token=``), payload fields (``:field=``) or parameters named like secrets: hide those as well.
_SECRET_KEY_PREFIXES = ("+", "-", ":")
_SECRET_KEY_WORDS = ("token", "secret", "password", "passwd", "apikey", "api_key", "auth", "key")


def _hide_header_values(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = []
    for pair in parts.query.split("&"):
        key, sep, value = pair.partition("=")
        name = unquote(key).lower()
        if (
            sep
            and value
            and (name.startswith(_SECRET_KEY_PREFIXES) or any(w in name for w in _SECRET_KEY_WORDS))
        ):
            value = "****"
        pairs.append(f"{key}{sep}{value}")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(pairs), parts.fragment))


# --- the API's request contract ---------------------------------------------------------------------


@extend_schema_field(
    {
        "type": "string",
        "minLength": 1,
        "maxLength": NAME_MAX_LENGTH,
        "pattern": r"^[^\u0000]*[^\s\u0000][^\u0000]*$",
    }
)
class DestinationNameField(StrictField, serializers.CharField):
    """A non-empty name (not only blanks), at most 80 characters, without NUL; not the settings' prefix."""

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str) or not data.strip() or "\x00" in data or len(data) > NAME_MAX_LENGTH:
            raise serializers.ValidationError(
                f"must be a non-empty text of at most {NAME_MAX_LENGTH} characters without NUL"
            )
        if data.strip().startswith(SETTINGS_NAME_PREFIX):
            raise serializers.ValidationError(
                f"names starting with {SETTINGS_NAME_PREFIX!r} are kept for the destinations of that variable"
            )
        return data.strip()


@extend_schema_field({"type": "string", "minLength": 1, "description": "an apprise URL (scheme://...)"})
class AppriseUrlField(StrictField, serializers.CharField):
    """An apprise URL apprise can parse (``url_problem``, the one check: its message names the URL,
    redacted)."""

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str) or "\x00" in data:
            raise serializers.ValidationError(
                "must be an apprise URL as a string (scheme://...; see the apprise wiki for the services)"
            )
        problem = url_problem(data.strip())
        if problem:
            raise serializers.ValidationError(problem)
        return data.strip()


class StrictBooleanField(StrictField, serializers.BooleanField):
    """JSON true or false only."""

    def to_internal_value(self, data: object) -> bool:
        if not isinstance(data, bool):
            raise serializers.ValidationError(f"must be true or false, got {data!r}")
        return data


class DestinationRequestSerializer(ClosedSerializer):
    """A destination as an admin writes it (POST: name and url required; PATCH: any of the four)."""

    not_an_object = "expected a JSON object with name, url, min_severity, enabled"

    name = DestinationNameField(help_text="unique; how the destination is shown (the URL holds secrets)")
    url = AppriseUrlField(
        help_text="an apprise URL, e.g. json://host:port/path, mailto://user:pass@host?to=ops@example.com"
    )
    min_severity = VocabularyField(
        IncidentSeverity.choices, required=False, help_text="incidents below this severity are not sent here"
    )
    enabled = StrictBooleanField(required=False)

    def unknown_key_message(self, key: str) -> str:
        return f"unknown field; known: {', '.join(self.fields)}"
