"""The dashboard in a real browser against the real stack: daphne, a Celery worker, the demo capture.

Headless Debian chromium (never a downloaded browser) driven by playwright. The stack runs in
subprocesses on its own SQLite file (migrated here) and its own Redis database and channel prefix,
so concurrent test runs that flush the shared test Redis database cannot disturb it.
Screenshot: test-output/dashboard.png.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from capture.choices import EncryptionAlgorithm, MlModel

pytestmark = [pytest.mark.browser, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Not the shared test database (15): other test runs flush that one while this stack runs.
REDIS_URL = os.environ.get("NETMON_BROWSER_REDIS_URL", "redis://127.0.0.1:6379/14")
SENSOR = "browser-test"
USERNAME = "browser"  # in the admin role: controls capture and the configuration
VIEWER = "watcher"  # in the viewer role: sees the data, none of the controls
PASSWORD = "correct horse battery staple"
SCREENSHOT = ROOT / "test-output" / "dashboard.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}\n{logs()}")


class Stack:
    """The subprocesses of one dashboard deployment and their logs."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.prefix = f"netmon:browser:{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "NETMON_ENV": "test",
            "DJANGO_SETTINGS_MODULE": "netmon.settings",
            "NETMON_VAR_DIR": str(workdir / "var"),
            "DATABASE_URL": f"sqlite:///{workdir / 'var' / 'netmon.sqlite3'}",
            "REDIS_URL": REDIS_URL,
            "CELERY_BROKER_URL": REDIS_URL,
            "CHANNELS_REDIS_URL": REDIS_URL,
            "CHANNELS_PREFIX": self.prefix,
            "SECRET_KEY": f"browser-test-{uuid.uuid4().hex}",
            "PYTHONUNBUFFERED": "1",
        }
        self.procs: dict[str, subprocess.Popen] = {}

    def run(self, *args: str, stdin: str | None = None) -> None:
        result = subprocess.run(
            args,
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
            input=stdin,
        )
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"

    def prepare(self, users: dict[str, str]) -> None:
        """Migrate its database and create ``users`` (name -> role) with the test password."""
        self.run(sys.executable, "manage.py", "migrate", "--noinput")
        for name, role in users.items():
            self.run(
                sys.executable,
                "manage.py",
                "create_user",
                name,
                "--role",
                role,
                "--password-stdin",
                stdin=PASSWORD,
            )

    def start(self, name: str, *args: str) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - the process owns it until stop()
        self.procs[name] = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def logs(self) -> str:
        parts = []
        for name in self.procs:
            text = (self.workdir / f"{name}.log").read_text(errors="replace")
            parts.append(f"--- {name} (last lines) ---\n" + "\n".join(text.splitlines()[-25:]))
        return "\n".join(parts)

    def stop(self) -> None:
        # Capture first, so that it can announce "exited" while daphne is still up.
        for name in ["capture", "worker", "daphne"]:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    if not (ROOT / "capture" / "management" / "commands" / "capture.py").exists():
        pytest.skip("the capture management command is not available")
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    stack = Stack(tmp_path)
    stack.prepare({USERNAME: "admin", VIEWER: "viewer"})
    stack.run(
        sys.executable,
        "-c",
        "import django; django.setup()\n"
        "from capture.services import update_config\n"
        "update_config({'network_interface': 'demo'}, source='test')\n",
    )
    try:
        stack.start(
            "daphne", str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(stack.port), "netmon.asgi:application"
        )
        stack.start(
            "worker",
            str(BIN / "celery"),
            "-A",
            "netmon",
            "worker",
            "-l",
            "warning",
            "--concurrency",
            "1",
            "-n",
            f"browser-{uuid.uuid4().hex[:8]}@%h",
        )
        stack.start("capture", sys.executable, "manage.py", "capture", "--demo", "--sensor", SENSOR)
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


def publish_anomaly(stack: Stack, seq: int) -> None:
    """A synthetic anomaly (no model is trained here) through the stack's own channel layer."""
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=stack.prefix)
    anomaly = {
        "id": 900001,
        "sensor": SENSOR,
        "ts": time.time(),
        "src_ip": "10.0.0.66",
        "dst_ip": "10.0.0.3",
        "protocol": "TCP",
        "src_port": 4444,
        "dst_port": 22,
        "score": 0.93,
        "threshold": 0.75,
        "model": "autoencoder",
        "explanation": "SYN to 48 distinct ports in 2 s (port scan)",
        "packet_seq": seq,
        "incident_id": None,
        "read_at": time.time(),
    }
    message = {"type": "anomaly.detected", "anomaly": anomaly}
    # playwright's sync API runs an event loop in this thread, where async_to_sync refuses to run:
    # send from a worker thread with its own loop.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, layer.group_send("netmon.anomalies", message)).result(timeout=10)


# How many pixels of a chart canvas carry the line colour (blue or green dominant). The last
# point's dot alone is about 28 pixels, so "more than 50" means a line has been drawn.
INK_JS = """(testid) => {
    const c = document.querySelector(`[data-testid="${testid}"]`);
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
        const [r, g, b, a] = [d[i], d[i + 1], d[i + 2], d[i + 3]];
        if (a > 200 && (b - r > 80 || g - r > 60)) n += 1;
    }
    return n;
}"""
LINE_INK = 50


def api_request(stack: Stack, method: str, path: str, body: dict) -> dict:
    """An API call as another client: the test user's token (POST /api/auth/token/), then the call."""

    def call(path: str, body: dict, headers: dict[str, str], method: str = "POST") -> dict:
        request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1, our own server)
            stack.base_url + path,
            data=json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json", **headers},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (our own server)
            return json.loads(response.read())

    token = call("/api/auth/token/", {"username": USERNAME, "password": PASSWORD}, {})["token"]
    return call(path, body, {"Authorization": f"Token {token}"}, method)


def canvas_ink(page, testid: str) -> int:
    return page.evaluate(INK_JS, testid)


def wait_for_line(page, testid: str, timeout_ms: int = 30_000) -> None:
    """Wait until the chart has drawn a line, not just its last point's dot.

    A line over a 5-minute window grows about 2 pixels a second; a few nearly equal samples
    can stay under the threshold for a moment, so sampling the canvas once is flaky.
    """
    page.wait_for_function(f"(testid) => ({INK_JS})(testid) > {LINE_INK}", arg=testid, timeout=timeout_ms)
    assert canvas_ink(page, testid) > LINE_INK


def test_dashboard_shows_live_traffic_and_controls_capture(stack):
    from playwright.sync_api import expect, sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            expect.set_options(timeout=30_000)

            # Given a signed-in user
            page.goto(stack.base_url + "/")
            assert "/accounts/login/" in page.url
            page.fill("#id_username", USERNAME)
            page.fill("#id_password", PASSWORD)
            page.click("[data-testid=login-submit]")
            page.wait_for_url(stack.base_url + "/")
            expect(page.get_by_test_id("ws-status")).to_have_attribute("data-state", "open")

            # Then live packets fill the table (in the raw feed, closed until asked for) and the
            # chart draws and moves
            page.get_by_test_id("raw-feed-toggle").click()
            page.get_by_test_id("tab-packets").click()
            rows = page.get_by_test_id("packet-rows")
            expect(rows.locator("tr").first).to_be_visible()
            first_seq = int(rows.get_attribute("data-last-seq"))
            expect(page.get_by_test_id("capture-state")).to_have_attribute("data-state", "running")
            expect(page.get_by_test_id("capture-mode")).to_have_attribute("data-mode", "demo")
            page.wait_for_function(
                "() => Number(document.querySelector('[data-testid=chart-pps]').dataset.points) >= 3",
                timeout=30_000,
            )
            points = int(page.get_by_test_id("chart-pps").get_attribute("data-points"))
            page.wait_for_function(
                f"() => Number(document.querySelector('[data-testid=chart-pps]').dataset.points) > {points}",
                timeout=15_000,
            )
            wait_for_line(page, "chart-pps")
            wait_for_line(page, "chart-bps")
            assert int(rows.get_attribute("data-last-seq")) > first_seq
            expect(page.get_by_test_id("protocol-bars").locator("li").first).to_be_visible()
            expect(page.get_by_test_id("talker-bars").locator("li").first).to_be_visible()
            assert page.get_by_test_id("kpi-pps").inner_text() != "\u2013"  # the placeholder dash

            # When the user stops the sensor, the dashboard hears "stopping" then "stopped"
            page.get_by_test_id("capture-sensor").select_option(SENSOR)
            page.get_by_test_id("capture-stop").click()
            events = page.get_by_test_id("capture-events")
            expect(events).to_contain_text(f"{SENSOR}: stopping (by {USERNAME})")
            expect(events).to_contain_text(f"{SENSOR}: stopped")
            expect(page.get_by_test_id("capture-state")).to_have_attribute("data-state", "stopped")

            # And when it starts it again, "starting" then "running", and packets flow again
            stopped_seq = int(rows.get_attribute("data-last-seq"))
            page.get_by_test_id("capture-start").click()
            expect(events).to_contain_text(f"{SENSOR}: starting (by {USERNAME})")
            expect(page.get_by_test_id("capture-state")).to_have_attribute("data-state", "running")
            page.wait_for_function(
                "(seq) => Number(document.querySelector('[data-testid=packet-rows]').dataset.lastSeq) > seq",
                arg=stopped_seq,
                timeout=30_000,
            )

            # An invalid start request is refused with the field named, and nothing changes
            page.get_by_test_id("capture-bpf").fill("tcp port banana")
            page.get_by_test_id("capture-start").click()
            expect(page.get_by_test_id("capture-message")).to_contain_text("does not compile")
            page.get_by_test_id("capture-bpf").fill("")

            # The forms' choices come from the API (the server's validators), none from the page
            ml_model = page.get_by_test_id("config-ml_model")
            expect(ml_model.locator("option")).to_have_count(len(MlModel.values))
            assert ml_model.locator("option").evaluate_all("els => els.map(e => e.value)") == MlModel.values
            expect(ml_model).not_to_have_value("")  # the configured value, chosen once the choices exist
            expect(page.get_by_test_id("export-algorithm").locator("option")).to_have_count(
                1 + len(EncryptionAlgorithm.values)  # and "configured default"
            )
            page.get_by_test_id("export-algorithm").select_option(EncryptionAlgorithm.SHA)
            expect(page.get_by_test_id("export-algorithm-note")).to_be_visible()
            page.get_by_test_id("export-algorithm").select_option("")
            expect(page.get_by_test_id("export-algorithm-note")).to_be_hidden()

            # The configuration form shows the server's field errors, then saves
            buffer = page.get_by_test_id("config-buffer_size")
            buffer.fill("5")
            page.get_by_test_id("config-save").click()
            expect(page.locator("#config-form [data-error-for=buffer_size]")).to_contain_text("from 10")
            buffer.fill("2000")
            page.get_by_test_id("config-save").click()
            expect(page.get_by_test_id("config-message")).to_contain_text("Saved")

            # A change made elsewhere is announced and fills the form (our own save's echo is not:
            # it would have replaced "Saved"), once past the echo window
            page.wait_for_timeout(3_500)
            api_request(stack, "POST", "/api/config", {"buffer_size": 3000})
            expect(page.get_by_test_id("config-message")).to_contain_text("Configuration updated")
            expect(buffer).to_have_value("3000")
            with urllib.request.urlopen(stack.base_url + "/healthz", timeout=5) as response:  # noqa: S310
                assert json.loads(response.read())["status"] == "ok"

            # A live anomaly appears in the feed with score, threshold and a link to its packets
            publish_anomaly(stack, seq=int(rows.get_attribute("data-last-seq")))
            page.get_by_test_id("tab-anomalies").click()
            feed = page.get_by_test_id("anomaly-feed")
            expect(feed.locator("li").first).to_contain_text("0.930")
            expect(feed.locator("li").first).to_contain_text("threshold 0.750")
            link = feed.locator("li").first.locator("a").first
            assert f"sensor={SENSOR}" in link.get_attribute("href")

            page.wait_for_timeout(1500)  # one more chart tick for the picture
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # The admin role sees every control; a viewer, in another browser, sees the live data
            # but no capture controls, no export form, and a configuration it cannot change
            for testid in ("capture-start", "capture-stop", "config-save", "export-form"):
                expect(page.get_by_test_id(testid)).to_be_visible()
            viewer = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
            viewer.on("pageerror", lambda exc: errors.append(str(exc)))
            viewer.goto(stack.base_url + "/")
            viewer.fill("#id_username", VIEWER)
            viewer.fill("#id_password", PASSWORD)
            viewer.click("[data-testid=login-submit]")
            viewer.wait_for_url(stack.base_url + "/")
            expect(viewer.get_by_test_id("ws-status")).to_have_attribute("data-state", "open")
            expect(viewer.get_by_test_id("roles")).to_contain_text("viewer")
            viewer.get_by_test_id("raw-feed-toggle").click()
            viewer.get_by_test_id("tab-packets").click()
            expect(viewer.get_by_test_id("packet-rows").locator("tr").first).to_be_visible()
            expect(viewer.get_by_test_id("config-buffer_size")).to_have_value("3000")
            expect(viewer.get_by_test_id("config-buffer_size")).to_be_disabled()
            for testid in ("capture-form", "capture-start", "capture-stop", "config-save", "export-form"):
                expect(viewer.get_by_test_id(testid)).to_be_hidden()
            # and the server refuses what a viewer's page would not offer (its own session's socket)
            refusal = viewer.evaluate(
                """() => new Promise((resolve) => {
                    const ws = new WebSocket(`ws://${location.host}/ws/monitor/`);
                    ws.onmessage = (event) => {
                        const message = JSON.parse(event.data);
                        if (message.type === "connected") {
                            ws.send(JSON.stringify({type: "stop_capture", id: 1}));
                        } else if (message.id === 1) { resolve(message); ws.close(); }
                    };
                })"""
            )
            assert refusal["type"] == "error" and "capture.control_capture" in refusal["error"], refusal
            expect(page.get_by_test_id("capture-state")).to_have_attribute("data-state", "running")
        finally:
            browser.close()
    assert not errors, f"JavaScript errors on the page: {errors}\n{stack.logs()}"
