"""API tokens: they expire, are renewed when issued again, and are revoked by logout or a new password.

- A token older than ``NETMON_TOKEN_TTL_HOURS`` is refused (``ExpiringTokenAuthentication``, and the
  WebSocket's periodic re-check through ``valid_token_user``).
- ``issue_token(user)`` hands out the user's live token; an expired one is replaced by a new key
  (DRF's ``get_or_create`` would return the expired key for ever, so it could never be renewed).
- ``revoke_tokens(user)`` deletes it: on logout (session logout, ``DELETE /api/auth/token/``) and
  when the password changes, wherever it changes (admin, ``changepassword``, the shell), through
  the receivers ``connect_signals`` installs.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import pre_save
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


def issue_token(user) -> Token:
    """The user's live token: the existing one while it is valid, otherwise a new key."""
    with transaction.atomic():
        token, created = Token.objects.select_for_update().get_or_create(user=user)
        if not created and token_expired(token):
            token.delete()
            token = Token.objects.create(user=user)
    return token


def revoke_tokens(user) -> int:
    """Delete the user's API token (there is at most one); returns how many were deleted."""
    if user is None or user.pk is None:
        return 0
    return Token.objects.filter(user_id=user.pk).delete()[0]


def _revoke_on_logout(sender, request, user, **kwargs) -> None:
    revoke_tokens(user)


def _revoke_on_password_change(sender, instance, raw=False, **kwargs) -> None:
    if raw or instance.pk is None:  # fixtures, or a new user (no token yet)
        return
    stored = sender.objects.filter(pk=instance.pk).values_list("password", flat=True).first()
    if stored is not None and stored != instance.password:
        revoke_tokens(instance)


def connect_signals() -> None:
    """Revoke tokens on logout and on a password change (called once, from the app's ready())."""
    user_logged_out.connect(_revoke_on_logout, dispatch_uid="netmon.auth.revoke_on_logout")
    pre_save.connect(
        _revoke_on_password_change, sender=get_user_model(), dispatch_uid="netmon.auth.revoke_on_password"
    )
