"""Shared fixtures: users in each role with tokens, API clients, and a clean Redis test database.

The people: ``user`` is alice, an analyst (the everyday role: reads everything, marks false
positives, makes her own exports), also ``analyst``; ``other_user`` is bob, another analyst;
``viewer`` is vera (reads only); ``admin_role`` is ada (the admin role: configuration, capture,
models, users; staff, not superuser); ``nogroup`` is nora (signed in, no role); ``staff`` is root,
a superuser. They are made by ``netmon.roles.create_user``, the code ``manage.py create_user`` runs.

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


@pytest.fixture(scope="session", autouse=True)
def _own_evidence_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """This pytest process's own evidence ring directory (handed to the processes it starts).

    ``make test`` runs several pytest processes at once; a capture resets its sensor's ring when
    it starts (segments past the database's next seq are deleted), so a shared directory would let
    one pass delete another's frames.
    """
    settings.NETMON_EVIDENCE_DIR = tmp_path_factory.mktemp("evidence")


@pytest.fixture(scope="session", autouse=True)
def _static_files_found_once():
    """WhiteNoise lists and stats every static file (about 160, with their headers) each time a
    middleware chain is built, and every test client builds one: 25 ms of CPU per client, a
    minute per pass. The files do not change during a run, so each configuration's list is made
    once and handed to later middlewares (the same dictionary WhiteNoise would make itself).
    """
    from whitenoise.middleware import WhiteNoiseMiddleware

    find_all = WhiteNoiseMiddleware.add_files_from_finders
    found: dict[tuple, dict] = {}

    def add_files_from_finders(self) -> None:
        shaping = (
            "WHITENOISE_MIMETYPES", "WHITENOISE_ADD_HEADERS_FUNCTION", "WHITENOISE_IMMUTABLE_FILE_TEST",
            "STATICFILES_FINDERS", "STATICFILES_DIRS",
        )  # fmt: skip
        key = (
            self.static_prefix, self.max_age, self.allow_all_origins, self.charset, self.index_file,
            *(repr(getattr(settings, name, None)) for name in shaping),
        )  # fmt: skip
        if key not in found:
            before = dict(self.files)
            find_all(self)
            found[key] = {url: file for url, file in self.files.items() if before.get(url) is not file}
        self.files.update(found[key])

    WhiteNoiseMiddleware.add_files_from_finders = add_files_from_finders
    yield
    WhiteNoiseMiddleware.add_files_from_finders = find_all


@pytest.fixture
def redis_client():
    """The real Redis (the test database from REDIS_URL), emptied before and after the test."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


PASSWORD = "correct horse battery"


def make_user(username: str, role: str | None):
    """A user in ``role`` (None: in no group), made as ``manage.py create_user`` makes one."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from capture.choices import Role
    from netmon import roles

    if role is None:
        return get_user_model().objects.create_user(username=username, password=PASSWORD)
    # The groups come from a data migration; a transactional test's flush empties every table
    # (permissions are made again by post_migrate, the groups are not), so make them again. The
    # flush takes a group's permissions with it, so groups that are there still hold the
    # migration's (tests/netmon/test_roles.py), and syncing them for each user only cost time.
    if Group.objects.filter(name__in=Role.values).count() < len(Role.values):
        roles.sync_roles()
    return roles.create_user(username, role, password=PASSWORD)[0]


@pytest.fixture
def user(django_user_model):
    """alice, an analyst."""
    return make_user("alice", "analyst")


@pytest.fixture
def analyst(user):
    return user


@pytest.fixture
def other_user(django_user_model):
    """bob, another analyst."""
    return make_user("bob", "analyst")


@pytest.fixture
def viewer(django_user_model):
    return make_user("vera", "viewer")


@pytest.fixture
def admin_role(django_user_model):
    """ada, in the admin role (staff, not a superuser)."""
    return make_user("ada", "admin")


@pytest.fixture
def nogroup(django_user_model):
    """nora: signed in, in no group."""
    return make_user("nora", None)


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
def viewer_api(viewer) -> APIClient:
    return token_client(viewer)


@pytest.fixture
def admin_api(admin_role) -> APIClient:
    return token_client(admin_role)


@pytest.fixture
def nogroup_api(nogroup) -> APIClient:
    return token_client(nogroup)


@pytest.fixture
def anon() -> APIClient:
    return APIClient()
