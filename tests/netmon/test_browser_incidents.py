"""Incidents in a real browser: the dashboard's live incident feed and the incident page.

The stack is daphne alone (no capture, no worker: the incident, its anomalies and its packets are
written to the stack's database by a script, which then announces the incident with the worker's
own ``detection.live.broadcast_incidents``). Headless Debian chromium driven by playwright, as in
test_browser.py. Screenshots: test-output/incident-feed.png and test-output/incident-page.png
(and NETMON_SHOTS_DIR, when set, gets copies).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.netmon.test_browser import (
    BIN,
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    REDIS_URL,
    ROOT,
    Stack,
    canvas_ink,
    wait_until,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration]

ANALYST = "analyst-on-duty"
VIEWER = "watcher"
SHOTS = ROOT / "test-output"
SCANNER = "9.9.9.66"  # public: its country and AS show (GeoIP and ASN, the bundled data)
SCANNER_GEO = "CH · QUAD9-AS-1"
VICTIM = "10.0.0.5"

# Run in the stack's environment: 40 s of a port scan (20 probes a second, with replies) stored as
# packets, then its incident and anomalies, announced as the worker announces them.
OPEN_INCIDENT = f"""
import django, sys
django.setup()
from datetime import timedelta
from django.utils import timezone
from capture.models import Packet, Sensor
from detection.models import Anomaly, Incident
from detection.live import broadcast_incidents

now = timezone.now()
start = now - timedelta(seconds=40)
sensor, _ = Sensor.objects.get_or_create(name="edge-lab")
packets = []
for i in range(800):
    ts = start + timedelta(seconds=i / 20)
    packets.append(Packet(sensor=sensor, seq=2 * i + 1, ts=ts, src_ip="{SCANNER}", dst_ip="{VICTIM}",
                          protocol="TCP", src_port=40000, dst_port=1 + i, length=60, tcp_flags=2))
    packets.append(Packet(sensor=sensor, seq=2 * i + 2, ts=ts + timedelta(milliseconds=3), src_ip="{VICTIM}",
                          dst_ip="{SCANNER}", protocol="TCP", src_port=1 + i, dst_port=40000, length=54,
                          tcp_flags=20))
Packet.objects.bulk_create(packets)
incident = Incident.objects.create(
    sensor=sensor, src_ip="{SCANNER}", sources=["{SCANNER}"],
    targets=[f"{VICTIM}:{{port}}/tcp" for port in range(1, 101)], targets_more=700,
    kind="port_scan", severity="high", first_seen=start, last_seen=start + timedelta(seconds=39.95),
    opened_at=start + timedelta(seconds=2), anomaly_count=120, packet_count=1600, peak_score=0.97,
    explanation="{SCANNER} contacted 800 distinct ports of {VICTIM} in 40 s; normal is under 5.\\n"
                "Most probes were SYN without ACK; the host answered with resets.",
)
Anomaly.objects.bulk_create([
    Anomaly(sensor=sensor, incident=incident, packet_seq=2 * i + 1, ts=start + timedelta(seconds=i / 3),
            protocol="TCP", src_ip="{SCANNER}", dst_ip="{VICTIM}", src_port=40000, dst_port=1 + i,
            score=0.8 + (i % 17) / 100, threshold=0.75, model_kind="autoencoder",
            explanation="{SCANNER} contacted many distinct ports in 2 s")
    for i in range(120)
])
broadcast_incidents([incident.pk], [])
print(incident.pk)
"""


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Stack]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    stack = Stack(tmp_path)
    stack.prepare({ANALYST: "analyst", VIEWER: "viewer"})
    try:
        stack.start(
            "daphne", str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(stack.port), "netmon.asgi:application"
        )
        wait_until(
            lambda: urllib.request.urlopen(stack.base_url + "/healthz", timeout=2).status == 200,  # noqa: S310
            60,
            "daphne to answer /healthz",
            stack.logs,
        )
        yield stack
    finally:
        stack.stop()
        client.flushdb()


def open_incident(stack: Stack) -> int:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", OPEN_INCIDENT], cwd=ROOT, env=stack.env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip().splitlines()[-1])


def api_get(stack: Stack, path: str, username: str) -> dict:
    def call(path: str, data: bytes | None, headers: dict[str, str]) -> dict:
        request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1, our own server)
            stack.base_url + path, data=data, headers={"Content-Type": "application/json", **headers}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (our own server)
            return json.loads(response.read())

    token = call("/api/auth/token/", json.dumps({"username": username, "password": PASSWORD}).encode(), {})
    return call(path, None, {"Authorization": f"Token {token['token']}"})


def sign_in(page, stack: Stack, username: str) -> None:
    page.goto(stack.base_url + "/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("[data-testid=login-submit]")
    page.wait_for_url(stack.base_url + "/")


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the sticky top bar belongs at the top of the picture
    page.screenshot(path=str(SHOTS / name), full_page=True)
    if os.environ.get("NETMON_SHOTS_DIR"):
        Path(os.environ["NETMON_SHOTS_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(SHOTS / name, Path(os.environ["NETMON_SHOTS_DIR"]) / name)


def test_an_incident_appears_live_is_acknowledged_and_has_its_page(web):
    from playwright.sync_api import expect, sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            expect.set_options(timeout=15_000)

            # Given an analyst on the dashboard, with no incident yet
            sign_in(page, web, ANALYST)
            expect(page.get_by_test_id("ws-status")).to_have_attribute("data-state", "open")
            expect(page.get_by_test_id("incident-empty")).to_be_visible()
            expect(page.get_by_test_id("raw-feed")).not_to_have_attribute("open", "")  # packets: closed

            # When the worker announces an incident, its card appears: kind, hosts, counts, active
            incident_id = open_incident(web)
            card = page.locator(f"[data-testid=incident-card][data-incident-id='{incident_id}']")
            expect(card).to_be_visible()
            expect(card.get_by_test_id("incident-kind")).to_have_text("Port scan")
            expect(card.get_by_test_id("incident-severity")).to_have_text("high")
            expect(card.get_by_test_id("incident-hosts")).to_contain_text(
                f"{SCANNER} → {VICTIM} ports 1/tcp, 2/tcp, 3/tcp and 797 more"
            )
            expect(card).to_contain_text("120 anomalies · 1,600 packets")
            expect(card.get_by_test_id("incident-geo")).to_have_text(f"{SCANNER} {SCANNER_GEO}")
            expect(card.get_by_test_id("incident-times")).to_contain_text("active")
            expect(card.get_by_test_id("incident-why")).to_have_text(
                f"{SCANNER} contacted 800 distinct ports of {VICTIM} in 40 s; normal is under 5. …"
            )
            expect(page.get_by_test_id("incident-open-count")).to_have_text("1 open")
            # an analyst may acknowledge, resolve, mark false positive and suppress
            for status in ("acknowledged", "resolved", "false_positive"):
                expect(card.get_by_test_id(f"incident-action-{status}")).to_be_visible()
            expect(card.get_by_test_id("incident-suppress")).to_be_visible()

            # Expanding it shows the whole explanation and its top anomalies and packets
            card.get_by_test_id("incident-why").click()
            expect(card.get_by_test_id("incident-explanation")).to_contain_text("answered with resets")
            expect(card.get_by_test_id("incident-anomaly-rows").locator("tr")).to_have_count(10)
            assert card.get_by_test_id("incident-anomaly-rows").locator("td").first.inner_text() == "0.960"
            expect(card.get_by_test_id("incident-packet-rows").locator("tr")).to_have_count(20)
            shot(page, "incident-feed.png")

            # When the analyst acknowledges it, the card says so and the server kept it; the card
            # is updated in place (the same element: the list is not rebuilt per event)
            card.evaluate("node => { node.dataset.sameNode = 'yes'; }")
            card.get_by_test_id("incident-action-acknowledged").click()
            expect(card.get_by_test_id("incident-status")).to_have_text("acknowledged")
            expect(card).to_contain_text(f"acknowledged by {ANALYST}")
            expect(page.get_by_test_id("incident-open-count")).to_have_text("0 open")
            page.wait_for_timeout(500)  # the incident_updated the change broadcasts has arrived
            assert card.get_attribute("data-same-node") == "yes"
            stored = api_get(web, f"/api/incidents/{incident_id}/", ANALYST)
            assert stored["status"] == "acknowledged" and stored["status_changed_by"] == ANALYST

            # The incident page: header, the packet-rate timeline, hosts, anomalies and packets
            card.get_by_test_id("incident-open").click()
            page.wait_for_url(f"{web.base_url}/incidents/{incident_id}/")
            expect(page.get_by_test_id("incident-kind")).to_have_text("Port scan")
            expect(page.get_by_test_id("incident-status")).to_have_text("acknowledged")
            expect(page.get_by_test_id("fact-anomalies")).to_have_text("120")
            chart = page.get_by_test_id("timeline-chart")
            page.wait_for_function(
                "() => Number(document.querySelector('[data-testid=timeline-chart]').dataset.buckets) >= 30"
            )
            assert float(chart.get_attribute("data-peak")) == pytest.approx(
                40, abs=1
            )  # 20 probes + 20 replies a second
            assert canvas_ink(page, "timeline-chart") > 500  # bars, not just axes
            expect(page.get_by_test_id("target-list").locator("li")).to_have_count(100)
            expect(page.get_by_test_id("source-list").get_by_test_id("geo")).to_have_text(SCANNER_GEO)
            expect(page.get_by_test_id("anomaly-rows").locator("tr")).to_have_count(50)
            expect(page.get_by_test_id("anomaly-pager")).to_contain_text("1\u201350 of 120")
            page.get_by_test_id("anomaly-pager").get_by_text("Next →").click()
            expect(page.get_by_test_id("anomaly-pager")).to_contain_text("51\u2013100 of 120")
            page.get_by_test_id("tab-packets").click()
            expect(page.get_by_test_id("packet-rows").locator("tr")).to_have_count(50)
            expect(page.get_by_test_id("packet-rows").get_by_test_id("geo").first).to_have_text(SCANNER_GEO)
            expect(page.get_by_test_id("packet-pager")).to_contain_text("of 800")
            # the same buttons: from acknowledged, resolve it here
            page.get_by_test_id("incident-action-resolved").click()
            expect(page.get_by_test_id("incident-status")).to_have_text("resolved")
            expect(page.get_by_test_id("incident-action-open")).to_be_visible()  # reopen
            assert api_get(web, f"/api/incidents/{incident_id}/", ANALYST)["status"] == "resolved"
            # and suppress what it shows for a day, with a reason: the server keeps the rule
            page.get_by_test_id("incident-suppress").click()
            page.get_by_test_id("suppress-for").select_option(label="1 day")
            page.get_by_test_id("suppress-reason").fill("the lab's weekly scanner")
            page.get_by_test_id("suppress-submit").click()
            expect(page.locator("#head-actions .incident-say")).to_contain_text("Suppressed by rule")
            rules = api_get(web, "/api/suppressions/", ANALYST)
            rules = rules["results"] if isinstance(rules, dict) else rules
            assert [(r["source_cidr"], r["reason"]) for r in rules] == [
                (f"{SCANNER}/32", "the lab's weekly scanner")
            ]
            assert rules[0]["expires_at"] is not None
            page.get_by_test_id("tab-anomalies").click()
            shot(page, "incident-page.png")

            # A viewer sees the same page without any action
            viewer = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            viewer.on("pageerror", lambda exc: errors.append(str(exc)))
            sign_in(viewer, web, VIEWER)
            viewer_card = viewer.locator(f"[data-testid=incident-card][data-incident-id='{incident_id}']")
            expect(viewer_card.get_by_test_id("incident-status")).to_have_text("resolved")
            expect(viewer_card.locator("[data-testid=incident-actions] button")).to_have_count(0)
            viewer.goto(f"{web.base_url}/incidents/{incident_id}/")
            expect(viewer.get_by_test_id("incident-kind")).to_have_text("Port scan")
            expect(viewer.locator("[data-testid=incident-actions] button")).to_have_count(0)
        finally:
            browser.close()
    assert not errors, f"JavaScript errors on the page: {errors}\n{web.logs()}"
