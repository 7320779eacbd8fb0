"""The dashboard page and the login page: access, rendering, static files, no external assets."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.test import Client

from capture.choices import (
    CONFIG_KEYS,
    INCIDENT_KIND_TITLES,
    AnalysisDepth,
    EncryptionAlgorithm,
    FeatureLevel,
    IncidentKind,
    IncidentSeverity,
    IncidentStatus,
    MlModel,
)
from capture.models import Sensor
from detection.models import Incident
from exports.models import ExportJob

pytestmark = pytest.mark.django_db

STATIC_DIR = Path(settings.BASE_DIR) / "netmon" / "static" / "netmon"
TEMPLATES = [
    Path(settings.BASE_DIR) / "netmon" / "templates" / "netmon" / "dashboard.html",
    Path(settings.BASE_DIR) / "netmon" / "templates" / "registration" / "login.html",
    Path(settings.BASE_DIR) / "netmon" / "templates" / "netmon" / "incident.html",
]
SCRIPTS = ["dashboard.js", "incidents.js", "incident.js"]


class _Page(HTMLParser):
    """Collects what the tests look at: test ids, asset URLs and each select's option values."""

    def __init__(self) -> None:
        super().__init__()
        self.testids: set[str] = set()
        self.assets: list[str] = []
        self.options: dict[str, list[str]] = {}
        self.classes: dict[str, set[str]] = {}  # test id or id -> its classes
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("data-testid"):
            self.testids.add(attributes["data-testid"])
        for key in (attributes.get("data-testid"), attributes.get("id")):
            if key:
                self.classes[key] = set((attributes.get("class") or "").split())
        if tag == "script" and attributes.get("src"):
            self.assets.append(attributes["src"])
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.assets.append(attributes["href"])
        if tag == "select":
            self._select = attributes.get("name")
            self.options[self._select] = []
        if tag == "option" and self._select:
            self.options[self._select].append(attributes.get("value") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


@pytest.fixture
def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_dashboard_requires_login():
    response = Client().get("/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_dashboard_renders_every_panel_for_a_user(logged_in):
    response = logged_in.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    page = parse(html)
    assert {
        "capture-state",
        "capture-mode",
        "ws-status",
        "kpi-pps",
        "kpi-bps",
        "chart-pps",
        "chart-bps",
        "protocol-bars",
        "talker-bars",
        "incident-feed",
        "raw-feed",
        "anomaly-feed",
        "packet-rows",
        "capture-form",
        "capture-interface",
        "capture-bpf",
        "capture-start",
        "capture-stop",
        "config-form",
        "config-save",
        "export-form",
        "export-rows",
    } <= page.testids
    assert 'name="csrf-token"' in html
    assert "alice" in html
    assert sorted(page.assets) == [
        "/static/netmon/dashboard.js",
        "/static/netmon/incidents.js",
        "/static/netmon/netmon.css",
    ]


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def shown(page: _Page, key: str) -> bool:
    return key in page.classes and "hidden" not in page.classes[key]


def test_a_viewer_sees_the_data_but_no_controls_and_no_exports(viewer):
    response = signed_in(viewer).get("/")

    assert response.status_code == 200
    page = parse(response.content.decode())
    assert shown(page, "incident-feed") and shown(page, "raw-feed") and shown(page, "config-form")
    assert not shown(page, "capture-form")
    assert not shown(page, "exports") and not shown(page, "export-form")
    assert not shown(page, "config-actions")  # the configuration is read only
    assert 'data-permissions="' in response.content.decode()
    assert (
        "capture.control_capture"
        not in response.content.decode().split('data-permissions="')[1].split('"')[0]
    )


def test_an_analyst_sees_exports_but_no_capture_controls(logged_in):
    page = parse(logged_in.get("/").content.decode())

    assert shown(page, "exports") and shown(page, "export-form")
    assert not shown(page, "capture-form")
    assert not shown(page, "config-actions")


@pytest.mark.parametrize("who", ["admin_role", "staff"])
def test_the_admin_role_and_superusers_see_every_control(request, who):
    page = parse(signed_in(request.getfixturevalue(who)).get("/").content.decode())

    for key in ("capture-form", "config-form", "config-actions", "exports", "export-form"):
        assert shown(page, key), key


def test_a_user_with_no_role_sees_only_the_message(nogroup):
    response = signed_in(nogroup).get("/")

    assert response.status_code == 403
    html = response.content.decode()
    assert "ask an admin to give you one (viewer, analyst or admin)" in html
    page = parse(html)
    assert page.testids == {"no-role", "logout"}  # no data, no controls
    assert "dashboard.js" not in html


def test_the_config_form_offers_exactly_the_models_choices(logged_in):
    # The page's selects are built by dashboard.js from GET /api/config's options (the validator's).
    html = logged_in.get("/").content.decode()
    page = parse(html)
    options = logged_in.get("/api/config").json()["options"]

    for key in ("analysis_depth", "ml_model", "feature_level", "encryption_algorithm"):
        assert page.options[key] == []  # the page spells no choice
    assert options["analysis_depth"]["choices"] == list(AnalysisDepth.values)
    assert options["ml_model"]["choices"] == list(MlModel.values)
    assert options["feature_level"]["choices"] == list(FeatureLevel.values)
    assert options["encryption_algorithm"]["choices"] == list(EncryptionAlgorithm.values)
    for key in ("network_interface", "buffer_size", "bpf_filter"):
        assert f'name="{key}"' in html
    assert set(options) == set(CONFIG_KEYS)


def test_the_export_form_offers_exactly_the_models_choices(logged_in):
    # Built by dashboard.js from OPTIONS /api/exports/ (the export request's validator).
    page = parse(logged_in.get("/").content.decode())
    options = logged_in.options("/api/exports/").json()["options"]

    assert page.options["dataset"] == page.options["format"] == []
    assert page.options["algorithm"] == [""]  # "configured default"
    assert options["dataset"]["choices"] == list(ExportJob.Dataset.values)
    assert options["format"]["choices"] == list(ExportJob.Format.values)
    assert options["algorithm"]["choices"] == list(EncryptionAlgorithm.values)
    assert options["algorithm"]["hints"] == {"SHA": "integrity only"}  # the page warns: not encrypted


def test_the_page_and_its_script_spell_no_vocabulary():
    words = [*AnalysisDepth.values, *MlModel.values, *FeatureLevel.values, *EncryptionAlgorithm.values]
    # ("open" is also the socket's state in the scripts: the other statuses stand for it)
    statuses = [status for status in IncidentStatus.values if status != IncidentStatus.OPEN]
    incident_words = [*IncidentKind.values, *IncidentSeverity.values, *statuses]
    template = TEMPLATES[0].read_text()
    for name in SCRIPTS:
        script = (STATIC_DIR / name).read_text()
        for word in [*words, *CONFIG_KEYS, *ExportJob.Dataset.values, *incident_words]:
            assert f'"{word}"' not in script, (name, word)
    for word in incident_words:
        assert f'"{word}"' not in template and f'"{word}"' not in TEMPLATES[2].read_text(), word
    for word in [*words, *ExportJob.Dataset.values, *ExportJob.Format.values]:
        assert f'value="{word}"' not in template, word


@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        ("/static/netmon/dashboard.js", "text/javascript", b"/ws/monitor/"),
        ("/static/netmon/incidents.js", "text/javascript", b"/api/incidents/"),
        ("/static/netmon/incident.js", "text/javascript", b"/timeline/"),
        ("/static/netmon/netmon.css", "text/css", b"--accent"),
    ],
)
def test_static_files_are_served_by_whitenoise(path, content_type, marker):
    response = Client().get(path)

    assert response.status_code == 200
    assert response["Content-Type"].startswith(content_type)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert marker in body


def test_the_page_and_its_assets_reference_nothing_external():
    files = [*TEMPLATES, *sorted(STATIC_DIR.glob("*"))]
    assert len(files) >= 4
    external = re.compile(r"""(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|@import|url\(\s*['"]?(https?:|//)""", re.I)
    for path in files:
        text = path.read_text()
        assert not external.search(text), f"{path.name} references an external resource"


def test_login_page_is_styled_and_signs_in(user):
    client = Client()

    page = client.get("/accounts/login/?next=/")
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "correct horse battery", "next": "/"}
    )

    assert page.status_code == 200
    assert "/static/netmon/netmon.css" in page.content.decode()
    assert 'data-testid="login-form"' in page.content.decode()
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_login_page_shows_a_wrong_password(user):
    response = Client().post("/accounts/login/", {"username": "alice", "password": "nope"})

    assert response.status_code == 200
    assert 'data-testid="login-errors"' in response.content.decode()
    assert "correct username and password" in response.content.decode()


def test_sign_out_is_a_post_form(logged_in):
    html = logged_in.get("/").content.decode()

    assert re.search(r'<form method="post" action="/accounts/logout/">', html)
    response = logged_in.post("/accounts/logout/")
    assert response.status_code == 302
    assert Client().get("/").status_code == 302


# ---------------------------------------------------------------------------------------------
# incidents: what the pages are told, and the incident page


def vocabulary_of(html: str) -> dict:
    return json.loads(
        html.split('<script id="incident-vocabulary" type="application/json">')[1].split("</script>")[0]
    )


@pytest.fixture
def incident() -> Incident:
    sensor = Sensor.objects.create(name="edge-1")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return Incident.objects.create(
        sensor=sensor,
        src_ip="203.0.113.9",
        sources=["203.0.113.9"],
        opened_at=t0,
        first_seen=t0,
        last_seen=t0,
        kind="port_scan",
    )


def test_the_pages_get_the_incident_vocabulary_from_the_server(logged_in, incident):
    for url in ("/", f"/incidents/{incident.pk}/"):
        vocabulary = vocabulary_of(logged_in.get(url).content.decode())

        assert vocabulary["kinds"] == {kind.value: INCIDENT_KIND_TITLES[kind] for kind in IncidentKind}
        assert vocabulary["severities"] == IncidentSeverity.values  # from the least
        assert vocabulary["statuses"][0] == IncidentStatus.OPEN  # a new incident's, shown first
        assert vocabulary["transitions"][IncidentStatus.RESOLVED] == [IncidentStatus.OPEN]
        assert set(vocabulary["actions"]) == set(IncidentStatus.values)


def test_every_incident_kind_has_a_title():
    assert set(INCIDENT_KIND_TITLES) == set(IncidentKind.values)


def test_the_pages_tell_which_incident_actions_the_user_may_use(request, incident):
    def permissions(who: str) -> list[str]:
        html = signed_in(request.getfixturevalue(who)).get(f"/incidents/{incident.pk}/").content.decode()
        return html.split('data-permissions="')[1].split('"')[0].split()

    assert "detection.view_incident" in permissions("viewer")
    assert "detection.change_incident" not in permissions("viewer")
    assert "detection.change_incident" in permissions("analyst")
    assert "detection.add_suppressionrule" in permissions("staff")  # a superuser holds every permission


def test_the_incident_page_renders_for_a_role_and_needs_login(logged_in, incident):
    response = logged_in.get(f"/incidents/{incident.pk}/")

    assert response.status_code == 200
    page = parse(response.content.decode())
    assert {
        "incident-head",
        "timeline-chart",
        "source-list",
        "target-list",
        "anomaly-pager",
        "packet-pager",
    } <= (page.testids)
    assert f'data-incident="{incident.pk}"' in response.content.decode()
    assert sorted(page.assets) == [
        "/static/netmon/incident.js",
        "/static/netmon/incidents.js",
        "/static/netmon/netmon.css",
    ]
    anonymous = Client().get(f"/incidents/{incident.pk}/")
    assert (
        anonymous.status_code == 302
        and anonymous["Location"] == f"/accounts/login/?next=/incidents/{incident.pk}/"
    )


def test_an_unknown_incident_page_is_a_404_page(logged_in, incident):
    response = logged_in.get(f"/incidents/{incident.pk + 1}/")

    assert response.status_code == 404
    assert f"There is no incident {incident.pk + 1}." in response.content.decode()
    assert 'href="/"' in response.content.decode()
    Incident.objects.filter(pk=incident.pk).update(opened_at=None)  # a candidate: not shown either
    assert logged_in.get(f"/incidents/{incident.pk}/").status_code == 404


def test_the_incident_page_refuses_no_role_and_a_role_without_incidents(nogroup, django_user_model, incident):
    assert signed_in(nogroup).get(f"/incidents/{incident.pk}/").status_code == 403
    packets_only = Group.objects.create(name="packets-only")
    packets_only.permissions.add(Permission.objects.get(codename="view_packet"))
    user = django_user_model.objects.create_user(username="pat", password="x")
    user.groups.add(packets_only)
    response = signed_in(user).get(f"/incidents/{incident.pk}/")
    assert response.status_code == 403
    assert "detection.view_incident" in response.content.decode()
