"""The one validator of a notification destination: an apprise URL apprise can parse.

Used by the ``Destination`` model field (so the admin form refuses a bad URL with this message), by
the start-up check of ``NETMON_NOTIFY_URLS`` (``alerts/apps.py``) and by the services that read it.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import apprise
from django.core.exceptions import ValidationError

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
        return plugin.url(privacy=True)
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else netloc
    query = "&".join(f"{pair.split('=', 1)[0]}=***" for pair in parts.query.split("&") if pair)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
