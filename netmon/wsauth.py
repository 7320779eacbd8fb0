"""WebSocket authentication: the session cookie, or a DRF token in ``?token=``."""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.auth import AuthMiddleware, CookieMiddleware, SessionMiddleware
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser


@database_sync_to_async
def user_for_token(key: str):
    from netmon.auth import valid_token_user

    return valid_token_user(key) or AnonymousUser()


class TokenAuthMiddleware:
    """Sets scope["user"] from ``?token=`` when given, keeping the session user otherwise."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        query = parse_qs(scope.get("query_string", b"").decode())
        tokens = query.get("token")
        if tokens:
            scope = dict(scope, user=await user_for_token(tokens[0]), auth_token=tokens[0])
        return await self.inner(scope, receive, send)


def TokenOrSessionAuthMiddleware(inner):
    return CookieMiddleware(SessionMiddleware(AuthMiddleware(TokenAuthMiddleware(inner))))
