"""Property-based fuzzing of the whole API with schemathesis, against the schema at /api/schema/.

Every operation in the served OpenAPI document gets generated requests (valid and invalid), sent
in-process through Django's WSGI handler with a staff token (so staff-only operations are reached
too), and every response is checked: no 5xx, status code / content type / body / headers as
documented, invalid input rejected, valid input accepted.

The number of examples per operation is bounded (``NETMON_FUZZ_EXAMPLES``, default 15) so the
module runs in CI in well under three minutes.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.specs.openapi.checks import positive_data_acceptance

from capture.models import Flow, Packet, Sensor
from detection.models import Anomaly, DetectionModel
from exports.models import ExportJob

pytestmark = pytest.mark.django_db

MAX_EXAMPLES = int(os.environ.get("NETMON_FUZZ_EXAMPLES", "15"))
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def wsgi_app():
    """Django's WSGI handler, in this thread, so requests see the test's (uncommitted) transaction.

    Django's own test client does the same: a real handler would close the connection at the end
    of every request (``close_old_connections``), which would break the test transaction.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    cache.clear()  # the login throttle counts in the cache
    try:
        yield get_wsgi_application()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
        cache.clear()


@pytest.fixture
def seeded(staff, user):
    """A little of every kind of row, so list and detail responses serialise real data."""
    sensor = Sensor.objects.create(name="s1")
    for i in range(3):
        Packet.objects.create(
            sensor=sensor, seq=i + 1, ts=T0 + timedelta(seconds=i), src_ip="10.0.0.1", dst_ip="2001:db8::2",
            src_port=1000 + i, dst_port=443, protocol="TCP", ip_version=4, length=60,
        )  # fmt: skip
    Flow.objects.create(
        sensor=sensor, protocol="UDP", src_ip="10.0.0.1", src_port=53, dst_ip="10.0.0.2", dst_port=5353,
        first_seen=T0, last_seen=T0, packets=2, bytes=120,
    )  # fmt: skip
    Anomaly.objects.create(
        sensor=sensor, packet_seq=2, ts=T0, protocol="TCP", src_ip="10.0.0.1", dst_ip=None, score=0.9,
        threshold=0.5, model_kind="isolation_forest", explanation="rare port", contributions=[["port", 0.7]],
    )  # fmt: skip
    DetectionModel.objects.create(kind="isolation_forest", version=1, feature_level="standard", status="ready")
    ExportJob.objects.create(owner=staff, algorithm="SHA")
    ExportJob.objects.create(owner=user, algorithm="SHA")  # someone else's: never visible to staff's token
    return sensor


@pytest.fixture
def auth_headers(staff):
    return {"Authorization": f"Token {Token.objects.get_or_create(user=staff)[0].key}"}


# Loaded once, at collection, from the served endpoint (it needs neither the database nor a login).
# (``schemathesis.pytest.from_fixture`` would load it lazily, but it does not work with pytest 9.)
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())


# Bodies checked against this host and this server's keys, which no static schema can express:
# the interface must exist here and the BPF filter compile (POST /api/config); an export needs
# exactly the key reference its algorithm uses, naming a key the server has (POST /api/export(s)).
# A schema-valid body may therefore be refused there, so positive_data_acceptance is replaced by
# a stricter check of our own: such a refusal is a 400 that names the offending request fields.
SEMANTICALLY_CHECKED = {("POST", "/api/config"), ("POST", "/api/export"), ("POST", "/api/exports/")}


def refusal_names_request_fields(ctx, response, case):
    """A 400 for a schema-valid body says which of the documented fields is wrong, and why."""
    meta = case.meta
    if response.status_code != 400 or meta is None or not meta.generation.mode.is_positive:
        return None
    body = response.json()
    fields = body.get("fields")
    assert isinstance(fields, dict) and fields, f"400 without the offending fields: {body}"
    documented = set(case.operation.body[0].definition.get("schema", {}).get("properties", {}))
    documented |= {"non_field_errors"}
    for name, message in fields.items():
        assert name.split(".")[0] in documented or not documented, f"unknown field {name!r} blamed"
        assert isinstance(message, str) and message, f"no reason given for {name!r}: {body}"
    return None


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_schema(case, wsgi_app, seeded, auth_headers, redis_client):
    if (case.method.upper(), case.path) in SEMANTICALLY_CHECKED:
        case.call_and_validate(
            headers=auth_headers,
            excluded_checks=[positive_data_acceptance],
            additional_checks=[refusal_names_request_fields],
        )
    else:
        case.call_and_validate(headers=auth_headers)


def test_unknown_export_id_is_a_documented_404(wsgi_app, auth_headers):
    """Path parameters that match nothing: a JSON 404, never a 500."""
    from django.test import Client

    response = Client().get(f"/api/exports/{uuid.uuid4()}/", HTTP_AUTHORIZATION=auth_headers["Authorization"])
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
