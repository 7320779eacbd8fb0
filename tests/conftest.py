"""Shared fixtures: users with tokens, API clients, and a clean Redis test database.

``NETMON_TEST_DATABASE_ONLY=1`` (set by ``make test`` for its PostgreSQL pass) keeps only the tests
that use the database: the others (decoders, features, models, crypto, engines) do not depend on
which database runs, and they already ran in the SQLite pass.
"""

from __future__ import annotations

import os

import pytest
import redis
from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

_DATABASE_FIXTURES = {
    "db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback", "live_server",
    "django_user_model", "client", "admin_client", "admin_user",
}  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("NETMON_TEST_DATABASE_ONLY") != "1":
        return
    keep, drop = [], []
    for item in items:
        uses_db = item.get_closest_marker("django_db") or _DATABASE_FIXTURES & set(
            getattr(item, "fixturenames", ())
        )
        (keep if uses_db else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session", autouse=True)
def _end_other_database_sessions(request: pytest.FixtureRequest):
    """Before the PostgreSQL test database is dropped, end the sessions still connected to it.

    Threads that ran sync code for async tests (asgiref, Channels) keep their connections
    (CONN_MAX_AGE) until the process exits, and PostgreSQL refuses to drop a database in use
    ("being accessed by other users").
    """
    if "postgresql" not in settings.DATABASES["default"]["ENGINE"]:
        yield
        return
    request.getfixturevalue("django_db_setup")  # set up before this one, so torn down after it
    yield
    from django.db import connection

    blocker = request.getfixturevalue("django_db_blocker")
    with blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def redis_client():
    """The real Redis (the test database from REDIS_URL), emptied before and after the test."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="correct horse battery")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="bob", password="correct horse battery")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_superuser(username="root", password="correct horse battery")


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.fixture
def api(user) -> APIClient:
    """An API client authenticated with alice's token."""
    return token_client(user)


@pytest.fixture
def staff_api(staff) -> APIClient:
    return token_client(staff)


@pytest.fixture
def anon() -> APIClient:
    return APIClient()
