"""Authorization matrix: every route and every WebSocket command, for each kind of user.

The kinds: anonymous, a signed-in user with no role (``nogroup``), the three roles (``viewer``,
``analyst``, ``admin``; netmon/roles.py) and a superuser. The routes are enumerated from the URL
resolver and the WebSocket commands from ``MonitorConsumer._COMMANDS``, so a new endpoint or
command without a row fails ``test_every_route_has_a_row`` / ``test_every_command_has_a_row``
instead of being forgotten. Each route row gives, per allowed method, the status expected for each
kind of user; methods a route does not allow must be refused (405, after authentication and
permission checks) for everyone. Each command row gives the outcome per kind of user, and a
refused command must reach nothing (the capture control version and the configuration do not
move). Users see and download only their own exports; the login form and the token endpoint are
rate limited.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib import admin
from django.core.cache import cache
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from alerts.models import Destination
from capture.models import Flow, MonitorConfig, Packet, Sensor
from capture.services import get_config
from detection import services as detection_services
from detection.features import feature_names
from detection.models import Anomaly, DetectionModel, Incident, SuppressionRule
from exports.models import ExportJob
from netmon import consumers
from netmon.asgi import application
from tests.conftest import PASSWORD, make_user

pytestmark = pytest.mark.django_db

ROLES = ("anon", "nogroup", "viewer", "analyst", "admin", "superuser")
METHODS = ("get", "post", "put", "patch", "delete")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ANY_OK = {200, 503}  # /api/interfaces: 503 when dumpcap is missing (documented)


@dataclass(frozen=True)
class Row:
    """Expected status per kind of user for one method of one route (an int or a set of ints)."""

    anon: int | set[int]
    nogroup: int | set[int]
    viewer: int | set[int]
    analyst: int | set[int]
    admin: int | set[int]
    superuser: int | set[int]
    body: dict | None = None


SHA_EXPORT = {"dataset": "packets", "format": "csv", "algorithm": "SHA"}
EVERYONE = (200, 200, 200, 200, 200, 200)
READ = (401, 403, 200, 200, 200, 200)  # every role reads; no role: "ask an admin for a role"
ANALYST_UP = (401, 403, 403)  # + the analyst's, the admin's and the superuser's
ADMIN_UP = (401, 403, 403, 403)  # + the admin's and the superuser's

# url name -> method -> Row. The analyst (alice) owns the export used for the export routes.
MATRIX: dict[str, dict[str, Row]] = {
    # no role: the page is only the message to ask an admin for a role (403)
    "dashboard": {"get": Row(302, 403, 200, 200, 200, 200)},
    "incident-page": {"get": Row(302, 403, 200, 200, 200, 200)},  # the incident's page, as the dashboard
    "login": {"get": Row(*EVERYONE), "post": Row(*EVERYONE, {"username": "x", "password": "y"})},
    "logout": {"post": Row(302, 302, 302, 302, 302, 302)},
    # the admin's login form: a signed-in staff user (the admin role) who opens it goes on to the admin
    "admin-login": {
        "get": Row(200, 200, 200, 200, 302, 302),
        "post": Row(*EVERYONE, {"username": "x", "password": "y"}),  # the form again, with an error
    },
    "healthz": {"get": Row(*EVERYONE)},
    "readyz": {"get": Row(*EVERYONE)},
    "metrics": {"get": Row(401, 403, 403, 403, 200, 200)},  # staff (the admin role) or the bearer token
    "status": {"get": Row(*READ)},
    "auth-token": {
        "post": Row(*EVERYONE, {"username": "alice", "password": PASSWORD}),
        "delete": Row(401, 204, 204, 204, 204, 204),  # anyone signed in may revoke their own token
    },
    "schema": {"get": Row(*READ)},  # the API's description needs a role, like the API
    "docs": {"get": Row(*READ)},
    "config": {"get": Row(*READ), "post": Row(*ADMIN_UP, 200, 200, {})},
    "config-history": {"get": Row(*READ)},
    "interfaces": {"get": Row(401, 403, ANY_OK, ANY_OK, ANY_OK, ANY_OK)},
    "packets": {"get": Row(*READ)},
    "flows": {"get": Row(*READ)},
    "talkers": {"get": Row(*READ)},  # top talkers: sums of packets, as packets
    # evidence pcaps: the analyst's and the admin's; 410 here because no frames are kept
    "packets-pcap": {"get": Row(*ANALYST_UP, 410, 410, 410)},
    "export-legacy": {"post": Row(*ANALYST_UP, 202, 202, 202, SHA_EXPORT)},
    "exports": {"get": Row(*ANALYST_UP, 200, 200, 200), "post": Row(*ANALYST_UP, 202, 202, 202, SHA_EXPORT)},
    # another user's export (admin and superuser included) is indistinguishable from one that does not exist
    "export-detail": {"get": Row(*ANALYST_UP, 200, 404, 404), "delete": Row(*ANALYST_UP, 204, 404, 404)},
    "export-download": {"get": Row(*ANALYST_UP, 200, 404, 404)},
    "anomalies": {"get": Row(*READ)},
    "anomaly-detail": {
        "get": Row(*READ),
        "patch": Row(*ANALYST_UP, 200, 200, 200, {"false_positive": True}),
    },
    "incidents": {"get": Row(*READ)},
    "incident-detail": {
        "get": Row(*READ),
        "patch": Row(*ANALYST_UP, 200, 200, 200, {"status": "acknowledged"}),
    },
    "incident-anomalies": {"get": Row(*READ)},
    "incident-timeline": {"get": Row(*READ)},
    "incident-pcap": {"get": Row(*ANALYST_UP, 410, 410, 410)},
    # suppression rules: every role sees them; the analyst and the admin make and delete them
    "incident-suppress": {"post": Row(*ANALYST_UP, 201, 201, 201, {})},
    "suppressions": {
        "get": Row(*READ),
        "post": Row(*ANALYST_UP, 201, 201, 201, {"port": 22, "reason": "known backup traffic"}),
    },
    "suppression-detail": {"get": Row(*READ), "delete": Row(*ANALYST_UP, 204, 204, 204)},
    # notification destinations (their URLs hold secrets) and deliveries: the admin role only
    "notification-destinations": {
        "get": Row(*ADMIN_UP, 200, 200),
        "post": Row(*ADMIN_UP, 201, 201, {"name": "ops", "url": "json://127.0.0.1:9/hook"}),
    },
    "notification-destination-detail": {
        "get": Row(*ADMIN_UP, 200, 200),
        "patch": Row(*ADMIN_UP, 200, 200, {"enabled": False}),
        "delete": Row(*ADMIN_UP, 204, 204),
    },
    "notification-destination-test": {"post": Row(*ADMIN_UP, 202, 202)},  # queued (after commit)
    "notification-deliveries": {"get": Row(*ADMIN_UP, 200, 200)},
    "models": {"get": Row(*READ)},
    "models-train": {"post": Row(*ADMIN_UP, 202, 202, {})},
    "model-activate": {"post": Row(*ADMIN_UP, 200, 200)},
}


# ---------------------------------------------------------------------------------------------
# the routes


@dataclass(frozen=True)
class Route:
    name: str
    pattern: str
    callback: object

    @property
    def methods(self) -> set[str]:
        """The HTTP methods the view answers (OPTIONS and HEAD aside)."""
        view = getattr(self.callback, "view_class", None) or getattr(self.callback, "cls", None)
        if view is None:  # a function view: the table says which methods it is for
            return set(MATRIX.get(self.name, {}))
        allowed = getattr(self.callback, "view_initkwargs", {}).get(
            "http_method_names", view.http_method_names
        )
        return {m for m in METHODS if m in allowed and hasattr(view, m)}


def project_routes() -> list[Route]:
    """Every route outside the admin (the admin is checked model by model below)."""
    routes: list[Route] = []

    def walk(patterns, prefix: str) -> None:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                if entry.namespace == "admin":
                    continue
                walk(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                pattern = prefix + str(entry.pattern)
                # an unnamed route shows up under its pattern, without a row: name it, add a row
                routes.append(Route(entry.name or pattern, pattern, entry.callback))

    walk(get_resolver().url_patterns, "/")
    return routes


ROUTES = {route.name: route for route in project_routes()}


def test_every_route_has_a_row():
    assert set(ROUTES) == set(MATRIX), (
        f"routes without a row: {sorted(set(ROUTES) - set(MATRIX))}; "
        f"rows without a route: {sorted(set(MATRIX) - set(ROUTES))}"
    )
    for name, route in ROUTES.items():
        assert route.methods == set(MATRIX[name]), (name, route.methods, set(MATRIX[name]))


def test_every_documented_operation_is_a_route(people):
    """The OpenAPI document describes only routes the matrix covers (and none is missing)."""
    schema = client_for(people["viewer"]).get("/api/schema/?format=json").json()
    documented = {(path, method) for path, item in schema["paths"].items() for method in item}
    routed = set()
    for route in ROUTES.values():
        path = route.pattern.replace("<uuid:job_id>", "{job_id}").replace("<int:pk>", "{id}")
        routed |= {(path, method) for method in route.methods}
    assert documented <= routed, documented - routed
    undocumented = {(p, m) for p, m in routed - documented if p.startswith("/api/")}
    assert undocumented <= {("/api/schema/", "get"), ("/api/docs/", "get")}, undocumented


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(autouse=True)
def setup(settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.NETMON_EXPORT_HMAC_KEY = base64.b64encode(b"h" * 32).decode()
    settings.NETMON_EXPORT_DIR = tmp_path
    settings.NETMON_EVIDENCE_DIR = tmp_path / "evidence"  # empty: the pcap routes answer 410
    cache.clear()  # the login rate limit counts in the cache
    yield
    cache.clear()


@pytest.fixture
def people(django_user_model):
    """One person per kind of user (made as ``manage.py create_user`` makes them), and bob, a
    second analyst."""
    return {
        "nogroup": make_user("nora", None),
        "viewer": make_user("vera", "viewer"),
        "analyst": make_user("alice", "analyst"),
        "admin": make_user("ada", "admin"),
        "superuser": django_user_model.objects.create_superuser(username="root", password=PASSWORD),
        "other": make_user("bob", "analyst"),
    }


def client_for(person) -> APIClient:
    """Signed in both ways: a session for the HTML pages, a token for the API."""
    client = APIClient()
    if person is not None:
        client.force_login(person)
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=person)[0].key}")
    return client


class Clients(dict):
    """Each kind of user's client, signed in when a test first asks for it.

    Most tests use one kind of user: signing in all six (a session and a token each) cost more
    than the request the test makes.
    """

    def __init__(self, people: dict):
        super().__init__()
        self.people = people

    def __missing__(self, role: str) -> APIClient:
        if role not in ROLES:
            raise KeyError(role)
        client = self[role] = client_for(None if role == "anon" else self.people[role])
        return client


@pytest.fixture
def clients(people) -> dict[str, APIClient]:
    return Clients(people)


def ready_model_row() -> DetectionModel:
    """A ready model whose artifacts (a model.json with this version's features) may be activated."""
    level = get_config().feature_level
    path = Path(settings.NETMON_MODEL_DIR) / "isolation_forest-v1"
    path.mkdir(parents=True)
    (path / "model.json").write_text(json.dumps({"feature_names": feature_names(level)}))
    return DetectionModel.objects.create(
        kind="isolation_forest",
        version=1,
        feature_level=level,
        status="ready",
        artifact_path=str(path),
        artifact_sha256=detection_services.artifact_digest(path),
    )


@pytest.fixture
def objects(people, tmp_path, settings):
    """One of everything the routes with ids need; the export is alice's, finished, with a file."""
    settings.NETMON_MODEL_DIR = tmp_path / "models"
    sensor = Sensor.objects.create(name="s1")
    Packet.objects.create(sensor=sensor, seq=1, ts=T0, src_ip="10.0.0.1", dst_ip="10.0.0.2", protocol="TCP")
    Flow.objects.create(
        sensor=sensor, protocol="TCP", src_ip="10.0.0.1", src_port=1, dst_ip="10.0.0.2", dst_port=2,
        first_seen=T0, last_seen=T0, packets=1, bytes=60,
    )  # fmt: skip
    anomaly = Anomaly.objects.create(
        sensor=sensor, packet_seq=1, ts=T0, score=0.9, threshold=0.5, model_kind="isolation_forest",
        explanation="rare port",
    )  # fmt: skip
    incident = Incident.objects.create(
        sensor=sensor, src_ip="10.0.0.1", first_seen=T0, last_seen=T0, opened_at=T0
    )
    rule = SuppressionRule.objects.create(target_cidr="10.0.0.2/32", reason="known")
    destination = Destination.objects.create(name="hook", url="json://127.0.0.1:9/hook")
    model = ready_model_row()
    file = tmp_path / "alice.nmx"
    file.write_bytes(b"NMX1 encrypted bytes")
    job = ExportJob.objects.create(
        owner=people["analyst"], algorithm="SHA", status=ExportJob.Status.SUCCEEDED, file_path=str(file)
    )
    return {"anomaly-detail": {"pk": anomaly.pk}, "incident-detail": {"pk": incident.pk},
            "incident-anomalies": {"pk": incident.pk}, "incident-timeline": {"pk": incident.pk},
            "incident-page": {"pk": incident.pk}, "model-activate": {"pk": model.pk}, "job": job,
            "incident-pcap": {"pk": incident.pk},
            "incident-suppress": {"pk": incident.pk}, "suppression-detail": {"pk": rule.pk},
            "export-detail": {"job_id": job.pk}, "export-download": {"job_id": job.pk},
            "notification-destination-detail": {"pk": destination.pk},
            "notification-destination-test": {"pk": destination.pk}}  # fmt: skip


def url_of(name: str, objects: dict) -> str:
    if name == "logout":
        return reverse(name)
    return reverse(name, kwargs=objects.get(name, {}))


def send(client: APIClient, method: str, url: str, body: dict | None):
    if body is None:
        return getattr(client, method)(url)
    if url.startswith("/api/"):
        return getattr(client, method)(url, body, format="json")
    return getattr(client, method)(url, body)  # a form


def expected(value: int | set[int]) -> set[int]:
    return value if isinstance(value, set) else {value}


# ---------------------------------------------------------------------------------------------
# the matrix


CELLS = [(name, method, role) for name, rows in MATRIX.items() for method in rows for role in ROLES]


@pytest.mark.parametrize(
    ("name", "method", "role"), CELLS, ids=[f"{m.upper()} {n} as {r}" for n, m, r in CELLS]
)
def test_allowed_method(name, method, role, clients, objects, redis_client):
    row = MATRIX[name][method]
    response = send(clients[role], method, url_of(name, objects), row.body)
    assert response.status_code in expected(getattr(row, role)), (name, method, role, response.content[:300])


REFUSALS = [
    (name, method, role)
    for name, route in ROUTES.items()
    if name in MATRIX
    for method in sorted(set(METHODS) - route.methods)
    for role in ROLES
]


@pytest.mark.parametrize(
    ("name", "method", "role"), REFUSALS, ids=[f"{m.upper()} {n} as {r}" for n, m, r in REFUSALS]
)
def test_other_methods_are_refused(name, method, role, clients, objects):
    """405, or the refusal the role gets anyway (401/403, or a redirect to the login page)."""
    allowed_row = next(iter(MATRIX[name].values()))
    refusals = {405} | (expected(getattr(allowed_row, role)) & {302, 401, 403})
    response = send(clients[role], method, url_of(name, objects), None)
    assert response.status_code in refusals, (name, method, role, response.status_code)


def test_admin_pages_are_for_the_admin_role_only(clients):
    """The admin index and every registered model's list page: the viewer and the analyst are not
    staff (to the admin's login), the admin role may view every model registered there."""
    urls = [reverse("admin:index")]
    for model in admin.site._registry:
        meta = model._meta
        urls.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
    for url in urls:
        for role in ("anon", "nogroup", "viewer", "analyst"):
            response = clients[role].get(url)
            assert response.status_code == 302, (url, role)
            assert response["Location"].startswith("/admin/login/"), (url, role)
        assert clients["admin"].get(url).status_code == 200, url
        assert clients["superuser"].get(url).status_code == 200, url


def test_in_the_admin_the_admin_role_has_its_permissions_and_no_more(clients, people):
    admin_client = clients["admin"]
    # it may edit the configuration and manage users and recipient keys ...
    get_config()
    assert 'name="buffer_size"' in admin_client.get("/admin/capture/monitorconfig/1/change/").content.decode()
    assert admin_client.get("/admin/auth/user/add/").status_code == 200
    assert admin_client.get("/admin/exports/recipientkey/add/").status_code == 200
    # ... but not make roles (groups), nor anyone a superuser
    assert admin_client.get("/admin/auth/group/add/").status_code == 403
    page = admin_client.get(f"/admin/auth/user/{people['viewer'].pk}/change/").content.decode()
    assert 'name="groups"' in page
    assert 'name="is_superuser"' not in page and 'name="user_permissions"' not in page
    assert (
        'name="is_superuser"'
        in clients["superuser"].get(f"/admin/auth/user/{people['viewer'].pk}/change/").content.decode()
    )


def test_admin_and_metrics_answer_only_on_localhost(clients):
    for url in ("/admin/", "/metrics"):
        assert clients["superuser"].get(url, REMOTE_ADDR="203.0.113.9").status_code == 403, url
        assert clients["admin"].get(url, REMOTE_ADDR="203.0.113.9").status_code == 403, url


# ---------------------------------------------------------------------------------------------
# exports: each user sees, downloads and deletes only their own


def test_users_see_only_their_own_exports(people, objects, clients):
    bob = client_for(people["other"])
    bobs = bob.post("/api/exports/", SHA_EXPORT, format="json").json()

    alice_ids = {job["id"] for job in clients["analyst"].get("/api/exports/").json()}
    bob_ids = {job["id"] for job in bob.get("/api/exports/").json()}
    admin_ids = {job["id"] for job in clients["admin"].get("/api/exports/").json()}
    staff_ids = {job["id"] for job in clients["superuser"].get("/api/exports/").json()}

    assert alice_ids == {str(objects["job"].pk)}
    assert bob_ids == {bobs["id"]}
    assert admin_ids == staff_ids == set()


@pytest.mark.parametrize("who", ["other", "admin", "superuser"])
def test_another_users_export_is_indistinguishable_from_none(who, people, objects):
    client = client_for(people[who])
    job = objects["job"]
    missing = uuid.uuid4()
    for suffix in ("/", "/download"):
        theirs = client.get(f"/api/exports/{job.pk}{suffix}")
        nobodys = client.get(f"/api/exports/{missing}{suffix}")
        assert theirs.status_code == nobodys.status_code == 404
        assert theirs.json().keys() == nobodys.json().keys()
        assert str(job.pk) not in theirs.content.decode()
    assert client.delete(f"/api/exports/{job.pk}/").status_code == 404
    assert ExportJob.objects.filter(pk=job.pk).exists()  # still there, file too
    assert client_for(people["analyst"]).get(f"/api/exports/{job.pk}/download").status_code == 200


# ---------------------------------------------------------------------------------------------
# rate limits on password guessing


@pytest.fixture
def low_login_rate(monkeypatch):
    """3 attempts a minute (the class reads its rates at import, so patch the class)."""
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"login": "3/min"})


def test_login_rate_is_configured(settings):
    assert settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["login"]
    from netmon import api, views

    assert ScopedRateThrottle in api.TokenView.throttle_classes and api.TokenView.throttle_scope == "login"
    assert views.LoginView.throttle_scope == "login"


def test_token_endpoint_is_rate_limited(low_login_rate, people):
    client = APIClient()
    statuses = [
        client.post("/api/auth/token/", {"username": "alice", "password": "guess"}, format="json").status_code
        for _ in range(4)
    ]
    assert statuses == [400, 400, 400, 429]
    response = client.post("/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 429  # even the right password, until the window passes
    assert int(response["Retry-After"]) > 0
    # another client address has its own allowance
    other = APIClient(REMOTE_ADDR="198.51.100.7")
    assert other.post("/api/auth/token/", {"username": "alice", "password": PASSWORD}).status_code == 200


def test_login_form_is_rate_limited(low_login_rate, people):
    client = APIClient()
    statuses = [
        client.post("/accounts/login/", {"username": "alice", "password": "guess"}).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]  # 200: the form again, with an error
    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert client.get("/accounts/login/").status_code == 200  # the form itself stays reachable


def test_admin_login_is_rate_limited(low_login_rate, people):
    client = APIClient()  # from 127.0.0.1: the admin answers on localhost
    statuses = [
        client.post("/admin/login/", {"username": "alice", "password": "guess"}).status_code for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]  # 200: the admin's form again, with an error
    assert client.get("/admin/login/").status_code == 200  # the form itself stays reachable
    # and the admin's form draws on the same allowance as the token endpoint
    response = client.post("/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 429


def test_form_and_token_endpoint_share_one_allowance(low_login_rate, people):
    client = APIClient()
    for _ in range(3):
        client.post("/accounts/login/", {"username": "alice", "password": "guess"})
    response = client.post("/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 429


def test_a_forged_forwarded_for_header_does_not_reset_the_allowance(low_login_rate, people):
    client = APIClient()
    statuses = [
        client.post(
            "/api/auth/token/", {"username": "alice", "password": "guess"}, format="json",
            HTTP_X_FORWARDED_FOR=f"203.0.113.{i}",
        ).status_code
        for i in range(4)
    ]  # fmt: skip
    assert statuses == [400, 400, 400, 429]  # all from the same address, whatever the header says


# ---------------------------------------------------------------------------------------------
# the WebSocket: every command, for each kind of user

OK, DENIED = "ok", "denied"
ORIGIN = (b"origin", b"http://testserver")
TIMEOUT = 5


@dataclass(frozen=True)
class WsRow:
    """Per kind of user: OK (the command's reply or broadcast), DENIED (an ``error`` naming the
    permission, nothing reaches capture), or the close code of a socket that may not stay open."""

    anon: str | int
    nogroup: str | int
    viewer: str | int
    analyst: str | int
    admin: str | int
    superuser: str | int


NO_SOCKET = (consumers.CLOSE_UNAUTHENTICATED, consumers.CLOSE_NO_ROLE)  # 4401, 4403
# command -> (a valid message that would reach capture if allowed, the reply it then gets, the row)
WS_MATRIX: dict[str, tuple[dict, str, WsRow]] = {
    "start_capture": (
        {"type": "start_capture", "sensor": "s1", "interface": "demo", "bpf": "tcp"},
        "capture_status",
        WsRow(*NO_SOCKET, DENIED, DENIED, OK, OK),
    ),
    "stop_capture": ({"type": "stop_capture"}, "capture_status", WsRow(*NO_SOCKET, DENIED, DENIED, OK, OK)),
    "update_config": (
        {"type": "update_config", "config": {"buffer_size": 2048}},
        "config_updated",
        WsRow(*NO_SOCKET, DENIED, DENIED, OK, OK),
    ),
    # the incident is made by the test (its id replaces 0)
    "incident_status": (
        {"type": "incident_status", "incident": 0, "status": "acknowledged"},
        "incident_status",
        WsRow(*NO_SOCKET, DENIED, OK, OK, OK),
    ),
    "subscribe": ({"type": "subscribe", "streams": []}, "subscribed", WsRow(*NO_SOCKET, OK, OK, OK, OK)),
    "ping": ({"type": "ping"}, "pong", WsRow(*NO_SOCKET, OK, OK, OK, OK)),
}
# stream -> the row for {"type": "subscribe", "streams": [stream]}
STREAM_MATRIX: dict[str, WsRow] = {
    "packets": WsRow(*NO_SOCKET, OK, OK, OK, OK),
    "anomalies": WsRow(*NO_SOCKET, OK, OK, OK, OK),
    "incidents": WsRow(*NO_SOCKET, OK, OK, OK, OK),
    "stats": WsRow(*NO_SOCKET, OK, OK, OK, OK),
    "exports": WsRow(*NO_SOCKET, DENIED, OK, OK, OK),  # each user's own export jobs
}


def test_every_command_has_a_row():
    assert set(WS_MATRIX) == set(consumers.MonitorConsumer._COMMANDS) == set(consumers.COMMAND_PERMISSIONS)
    assert set(STREAM_MATRIX) == set(consumers.STREAMS) == set(consumers.STREAM_PERMISSIONS)


def _person(role: str):
    if role == "anon":
        return None
    if role == "superuser":
        from django.contrib.auth import get_user_model

        return get_user_model().objects.create_superuser(username="root", password=PASSWORD)
    return make_user({"nogroup": "nora", "viewer": "vera", "analyst": "alice", "admin": "ada"}[role],
                     None if role == "nogroup" else role)  # fmt: skip


async def _socket_for(role: str) -> tuple[WebsocketCommunicator, dict]:
    """A socket of this kind of user (an API token in ?token=), with its first message."""
    person = await sync_to_async(_person)(role)
    path = "/ws/monitor/"
    if person is not None:
        token = await sync_to_async(Token.objects.create)(user=person)
        path += f"?token={token.key}"
    communicator = WebsocketCommunicator(application, path, headers=[ORIGIN])
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected  # accepted, so that the client sees why it is closed
    return communicator, await communicator.receive_json_from(timeout=TIMEOUT)


def _control_version(redis_client) -> int:
    return int(redis_client.get("netmon:capture:version") or 0)


async def _check_cell(role: str, expected: str | int, message: dict, reply_type: str, redis_client) -> dict:
    communicator, first = await _socket_for(role)
    try:
        if isinstance(expected, int):  # no socket for this kind of user: one error, then the close code
            assert first["type"] == "error", first
            assert await communicator.receive_output(timeout=TIMEOUT) == {
                "type": "websocket.close",
                "code": expected,
            }
            return first
        assert first["type"] == "connected", first
        await communicator.send_json_to({**message, "id": 1})
        reply = await communicator.receive_json_from(timeout=TIMEOUT)
        if expected == OK:
            assert reply["type"] == reply_type, reply
        else:
            assert reply["type"] == "error", reply
            assert reply["error"].startswith("permission denied: "), reply
            assert reply["permission"] in reply["error"] and reply["id"] == 1, reply
            assert (await communicator.receive_nothing(timeout=0.3)) is True  # no broadcast follows
        return reply
    finally:
        # A socket the server closed itself needs no long goodbye: its consumer may sit out the
        # channel layer's 5 s blocking read before it notices, which only costs the suite time.
        await communicator.disconnect(timeout=0.5 if isinstance(expected, int) else TIMEOUT)
        await get_channel_layer().close_pools()


WS_CELLS = [(command, role) for command in WS_MATRIX for role in ROLES]


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("command", "role"), WS_CELLS, ids=[f"{c} as {r}" for c, r in WS_CELLS])
async def test_websocket_command(command, role, redis_client):
    message, reply_type, row = WS_MATRIX[command]
    expected = getattr(row, role)
    incident = None
    if command == "incident_status":
        sensor = await sync_to_async(Sensor.objects.create)(name="s1")
        incident = await sync_to_async(Incident.objects.create)(
            sensor=sensor, src_ip="10.0.0.1", first_seen=T0, last_seen=T0, opened_at=T0
        )
        message = {**message, "incident": incident.pk}

    await _check_cell(role, expected, message, reply_type, redis_client)

    if incident is not None:  # a refused change changes nothing; an allowed one is recorded
        await sync_to_async(incident.refresh_from_db)()
        assert incident.status == ("acknowledged" if expected == OK else "open")

    moved = _control_version(redis_client)
    config = await sync_to_async(MonitorConfig.objects.filter(pk=1).first)()
    if expected == OK and command in {"start_capture", "stop_capture", "update_config"}:
        assert moved == 1  # the command reached the capture processes
    else:
        assert moved == 0, "a refused command reached capture"
        assert config is None or config.buffer_size != 2048


STREAM_CELLS = [(stream, role) for stream in STREAM_MATRIX for role in ROLES]


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("stream", "role"), STREAM_CELLS, ids=[f"{s} as {r}" for s, r in STREAM_CELLS])
async def test_websocket_stream(stream, role, redis_client):
    expected = getattr(STREAM_MATRIX[stream], role)

    reply = await _check_cell(
        role, expected, {"type": "subscribe", "streams": [stream]}, "subscribed", redis_client
    )

    if expected == OK:
        assert reply["streams"] == [stream]
    elif expected == DENIED:
        assert reply["field"] == "streams" and consumers.STREAM_PERMISSIONS[stream] in reply["error"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
