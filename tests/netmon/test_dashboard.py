"""The dashboard page and the login page: access, rendering, static files, no external assets."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from capture.choices import CONFIG_KEYS, AnalysisDepth, EncryptionAlgorithm, FeatureLevel, MlModel
from exports.models import ExportJob

pytestmark = pytest.mark.django_db

STATIC_DIR = Path(settings.BASE_DIR) / "netmon" / "static" / "netmon"
TEMPLATES = [
    Path(settings.BASE_DIR) / "netmon" / "templates" / "netmon" / "dashboard.html",
    Path(settings.BASE_DIR) / "netmon" / "templates" / "registration" / "login.html",
]


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
    assert sorted(page.assets) == ["/static/netmon/dashboard.js", "/static/netmon/netmon.css"]


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
    assert shown(page, "packet-rows") and shown(page, "anomaly-feed") and shown(page, "config-form")
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
    script = (STATIC_DIR / "dashboard.js").read_text()
    template = TEMPLATES[0].read_text()
    for word in [*words, *CONFIG_KEYS, *ExportJob.Dataset.values]:
        assert f'"{word}"' not in script, word
    for word in [*words, *ExportJob.Dataset.values, *ExportJob.Format.values]:
        assert f'value="{word}"' not in template, word


@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        ("/static/netmon/dashboard.js", "text/javascript", b"/ws/monitor/"),
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
