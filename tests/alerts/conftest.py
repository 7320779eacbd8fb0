"""Real receivers for notifications: an HTTP server taking apprise's ``json://`` posts and an SMTP
server (aiosmtpd) taking ``mailto://`` mail, both on 127.0.0.1 in this process; and incidents."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from capture.choices import IncidentKind, IncidentSeverity
from capture.models import Sensor
from detection.models import Incident


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class HttpReceiver:
    """What arrived (JSON bodies, in order); answers ``fail`` requests with 500 first."""

    port: int
    received: list[dict] = field(default_factory=list)
    fail: int = 0

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    state = HttpReceiver(port=free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if state.fail > 0:
                state.fail -= 1
                self.send_response(500)
            else:
                state.received.append(json.loads(body))
                self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class MailReceiver:
    port: int
    messages: list = field(default_factory=list)  # email.message.EmailMessage

    @property
    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?to=ops@example.com&from=netmon@example.com"


@pytest.fixture
def smtp_server() -> Iterator[MailReceiver]:
    state = MailReceiver(port=free_port())

    class Handler:
        async def handle_DATA(self, server, session, envelope) -> str:
            state.messages.append(message_from_bytes(envelope.content, policy=policy.default))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=state.port)
    controller.start()
    yield state
    controller.stop()


T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def make_incident(db):
    """An incident (opened unless ``opened=False``) of a scan from 10.0.0.9, on sensor "edge"."""
    sensor = Sensor.objects.get_or_create(name="edge")[0]

    def make(severity: str = IncidentSeverity.MEDIUM, opened: bool = True, **fields) -> Incident:
        values = {
            "sensor": sensor, "entity": "host 10.0.0.9", "src_ip": "10.0.0.9", "kind": IncidentKind.PORT_SCAN,
            "severity": severity, "sources": ["10.0.0.9"], "targets": ["10.0.0.1:22/tcp", "10.0.0.1:80/tcp"],
            "first_seen": T0, "last_seen": T0 + timedelta(seconds=5),
            "opened_at": T0 + timedelta(seconds=2) if opened else None, "anomaly_count": 40,
            "explanation": "10.0.0.9 probed 40 ports of 10.0.0.1 in 5 s\nmost anomalous: dst_port_entropy",
        }  # fmt: skip
        values.update(fields)
        return Incident.objects.create(**values)

    return make


@pytest.fixture
def staff_client(client, staff):
    """The Django test client signed in as a superuser (admin pages, /metrics)."""
    client.force_login(staff)
    return client
