"""API tokens that expire: older than NETMON_TOKEN_TTL_HOURS is refused; deleting one revokes it."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed


def token_expired(token: Token) -> bool:
    ttl = settings.NETMON_TOKEN_TTL_HOURS
    return bool(ttl) and token.created < timezone.now() - timedelta(hours=ttl)


def valid_token_user(key: str):
    """The active user owning a live (existing, unexpired) token, or None."""
    try:
        token = Token.objects.select_related("user").get(key=key)
    except Token.DoesNotExist:
        return None
    if token_expired(token) or not token.user.is_active:
        return None
    return token.user


class ExpiringTokenAuthentication(TokenAuthentication):
    """DRF token authentication that also refuses expired tokens."""

    def authenticate_credentials(self, key):
        user, token = super().authenticate_credentials(key)
        if token_expired(token):
            raise AuthenticationFailed("Token has expired; request a new one at /api/auth/token/.")
        return user, token
