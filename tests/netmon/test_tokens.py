"""API token lifecycle: renewal after expiry, revocation by logout (session or API) and by a new password."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


def ask_for_token(client: APIClient, password: str = PASSWORD):
    return client.post("/api/auth/token/", {"username": "alice", "password": password}, format="json")


def age(token: Token, hours: float) -> None:
    Token.objects.filter(pk=token.pk).update(created=timezone.now() - timedelta(hours=hours))


def test_an_expired_token_is_replaced_by_a_new_one_that_works(anon, user, settings):
    settings.NETMON_TOKEN_TTL_HOURS = 1
    old = Token.objects.create(user=user)
    age(old, 2)
    assert anon.get("/api/status", HTTP_AUTHORIZATION=f"Token {old.key}").status_code == 401

    response = ask_for_token(anon)

    assert response.status_code == 200
    new = response.json()["token"]
    assert new != old.key
    assert anon.get("/api/status", HTTP_AUTHORIZATION=f"Token {new}").status_code == 200
    assert anon.get("/api/status", HTTP_AUTHORIZATION=f"Token {old.key}").status_code == 401


def test_a_live_token_is_handed_out_again_unchanged(anon, user):
    first = ask_for_token(anon).json()["token"]

    assert ask_for_token(anon).json()["token"] == first


def test_delete_revokes_the_callers_token(anon, user):
    key = ask_for_token(anon).json()["token"]

    response = anon.delete("/api/auth/token/", HTTP_AUTHORIZATION=f"Token {key}")

    assert response.status_code == 204
    assert anon.get("/api/status", HTTP_AUTHORIZATION=f"Token {key}").status_code == 401
    assert not Token.objects.filter(user=user).exists()


def test_delete_without_credentials_is_401(anon, user):
    assert anon.delete("/api/auth/token/").status_code == 401


def test_session_logout_revokes_the_token(client, user):
    key = Token.objects.create(user=user).key
    client.force_login(user)

    client.post("/accounts/logout/")

    assert not Token.objects.filter(key=key).exists()


def test_a_password_change_revokes_the_token(anon, user):
    key = Token.objects.create(user=user).key

    user.set_password("a brand new passphrase")
    user.save()

    assert anon.get("/api/status", HTTP_AUTHORIZATION=f"Token {key}").status_code == 401
    assert ask_for_token(anon, "a brand new passphrase").json()["token"] != key


def test_saving_a_user_without_a_new_password_keeps_the_token(anon, user):
    key = Token.objects.create(user=user).key

    user.first_name = "Alice"
    user.save()

    assert anon.get("/api/status", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200


def test_ensure_demo_user_prints_a_live_token(capsys, settings):
    call_command("ensure_demo_user", username="demo")

    out = capsys.readouterr().out
    key = out.split("API token: ")[1].split()[0]
    assert Token.objects.get(key=key).user.username == "demo"
