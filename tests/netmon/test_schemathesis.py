"""Property-based fuzzing of the whole API with schemathesis, against the schema at /api/schema/.

Every operation in the served OpenAPI document gets generated requests, schema-valid and not
(schemathesis' explicit-example, coverage and fuzzing phases, plus unsupported methods), sent
in-process through Django's WSGI handler with a staff token so that staff-only operations are
reached too. Every response goes through all of schemathesis' default checks: no 5xx; status
code, content type, headers and body as documented; invalid input refused; valid input accepted
(for the operations whose bodies are checked against this host, its keys or the clock, a stricter
check of our own replaces that last one, see ``SEMANTICALLY_CHECKED``). No operation is left out:
nothing is streamed except an export download and the evidence pcaps, which are small, and the
destructive ones (DELETE of an export or a suppression rule, training, activation) act on this
test's own rows, in its rolled-back transaction.

Examples per operation are bounded (``NETMON_FUZZ_EXAMPLES``, default 15) and derandomised, so
CI tries the same ~1,500 cases every run in about a minute; ``NETMON_FUZZ_RANDOM=1`` explores new
ones. The regression tests at the end pin the bugs the fuzzing found.
"""

from __future__ import annotations

import base64
import json
import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.specs.openapi.checks import positive_data_acceptance

from alerts.models import Delivery, Destination
from capture.models import Flow, Packet, Sensor
from detection.models import Anomaly, DetectionModel, Incident, SuppressionRule
from exports.models import ExportJob

pytestmark = pytest.mark.django_db

MAX_EXAMPLES = int(os.environ.get("NETMON_FUZZ_EXAMPLES", "15"))
CASES: Counter[str] = Counter()  # cases tried per documented operation, reported by the last test
HMAC_KEY = base64.b64encode(b"h" * 32).decode()  # for SHA-mode exports
SUMMARY = Path(__file__).resolve().parents[2] / "test-output" / "schemathesis-summary.json"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    """Users are created for every operation: the production hasher would dominate the run time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


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
    DetectionModel.objects.create(
        kind="isolation_forest", version=1, feature_level="standard", status="ready"
    )
    ExportJob.objects.create(owner=staff, algorithm="SHA")
    ExportJob.objects.create(owner=user, algorithm="SHA")  # someone else's: never visible to staff's token
    Incident.objects.create(
        sensor=sensor, src_ip="10.0.0.1", sources=["10.0.0.1"], targets=["10.0.0.2:22/tcp"],
        kind="brute_force", first_seen=T0, last_seen=T0,
    )  # fmt: skip
    SuppressionRule.objects.create(source_cidr="10.0.0.0/24", port=22, reason="known", created_by=staff)
    hook = Destination.objects.create(name="hook", url="json://user:secret@127.0.0.1:9/hook")
    Delivery.objects.create(
        destination=hook, incident=Incident.objects.get(), severity="low", event="opened", status="failed",
        attempts=3, error="connection refused",
    )  # fmt: skip
    return sensor


@pytest.fixture
def auth_headers(staff):
    return {"Authorization": f"Token {Token.objects.get_or_create(user=staff)[0].key}"}


def generated_schema() -> dict:
    """The OpenAPI document /api/schema/ serves, made as its view makes it (without a request).

    The served one needs a user with a role, and the database (tokens, users) is out of reach at
    collection time; ``test_the_served_schema_is_the_one_fuzzed`` checks that the two are the same.
    """
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    return json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))


# Loaded once, at collection. (``schemathesis.pytest.from_fixture`` would load it lazily, but it
# does not work with pytest 9.) Requests go in-process to Django's WSGI handler, as from_wsgi does.
schema = schemathesis.openapi.from_dict(generated_schema())
schema.app = get_wsgi_application()
schema.location = "/api/schema/?format=json"


# Bodies checked against this host and this server's keys, which no static schema can express:
# the interface must exist here and the BPF filter compile (POST /api/config); an export needs
# exactly the key reference its algorithm uses, naming a key the server has (POST /api/export(s)).
# A schema-valid body may therefore be refused there, so positive_data_acceptance is replaced by
# a stricter check of our own: such a refusal is a 400 that names the offending request fields.
# A suppression rule's expiry must lie in the future, its CIDRs must parse and it needs a criterion.
# A notification destination's URL must be one apprise can parse, and its name unused.
SEMANTICALLY_CHECKED = {
    ("POST", "/api/notifications/destinations/"),
    ("PATCH", "/api/notifications/destinations/{id}/"),
    ("POST", "/api/config"),
    ("POST", "/api/export"),
    ("POST", "/api/exports/"),
    ("POST", "/api/suppressions/"),
    ("POST", "/api/incidents/{id}/suppress/"),
}


# The evidence pcaps answer a schema-valid query with 410 when its frames are not (or no longer)
# kept, and with 400 when several sensors keep evidence and none is named: instead of
# positive_data_acceptance, such an answer must say why (a 410's detail, a 400 naming the parameter).
EVIDENCE_CHECKED = {("GET", "/api/packets/pcap"), ("GET", "/api/incidents/{id}/pcap")}


def refusal_says_why(ctx, response, case):
    """A 410 or 400 for a schema-valid evidence query gives its reason (and a 400 its parameter)."""
    meta = case.meta
    if response.status_code not in (400, 410) or meta is None or not meta.generation.mode.is_positive:
        return None
    body = response.json()
    assert isinstance(body.get("detail"), str) and body["detail"], f"no reason given: {body}"
    if response.status_code == 400:
        assert set(body) - {"detail"} <= {"sensor"}, f"a parameter the query does not have is blamed: {body}"
    return None


@pytest.fixture
def evidence(settings, tmp_path):
    """Sensor s1's ring holding its three packets' frames, so the pcap routes answer with frames."""
    from capture.evidence import EvidenceRing
    from capture.pcapio import iter_frame_batches
    from capture.pcapwriter import synthetic_records, write_pcap

    settings.NETMON_EVIDENCE_DIR = tmp_path / "evidence"
    records = synthetic_records(3, seed=1, start=T0.timestamp())
    records["seq"] = [1, 2, 3]
    write_pcap(tmp_path / "three.pcap", records)
    ring = EvidenceRing(settings.NETMON_EVIDENCE_DIR, "s1", max_bytes=1 << 20, max_age=3600, next_seq=4)
    ring.append(records, list(iter_frame_batches(str(tmp_path / "three.pcap"))))
    ring.close()


def refusal_names_request_fields(ctx, response, case):
    """A 400 for a schema-valid body says which of the documented fields is wrong, and why."""
    meta = case.meta
    if response.status_code != 400 or meta is None or not meta.generation.mode.is_positive:
        return None
    body = response.json()
    fields = body.get("fields")
    assert isinstance(fields, dict) and fields, f"400 without the offending fields: {body}"
    documented = request_properties(case.method, case.path) | {"non_field_errors"}
    for name, message in fields.items():
        assert name.split(".")[0] in documented, f"a field the request does not have is blamed: {name!r}"
        assert isinstance(message, str) and message, f"no reason given for {name!r}: {body}"
    return None


def request_properties(method: str, path: str) -> set[str]:
    """The documented top-level properties of an operation's JSON request body."""
    raw = schema.raw_schema
    body = raw["paths"][path][method.lower()]["requestBody"]["content"]["application/json"]["schema"]
    name = body["$ref"].rsplit("/", 1)[-1]
    return set(raw["components"]["schemas"][name]["properties"])


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=not os.environ.get("NETMON_FUZZ_RANDOM"),  # CI: the same cases every run
)
def test_api_conforms_to_its_schema(case, wsgi_app, seeded, evidence, auth_headers, redis_client):
    CASES[case.operation.label] += 1
    if (case.method.upper(), case.path) in EVIDENCE_CHECKED:
        case.call_and_validate(
            headers=auth_headers,
            excluded_checks=[positive_data_acceptance],
            additional_checks=[refusal_says_why],
        )
    elif (case.method.upper(), case.path) in SEMANTICALLY_CHECKED:
        case.call_and_validate(
            headers=auth_headers,
            excluded_checks=[positive_data_acceptance],
            additional_checks=[refusal_names_request_fields],
        )
    else:
        case.call_and_validate(headers=auth_headers)


def test_the_served_schema_is_the_one_fuzzed(viewer_api):
    assert viewer_api.get("/api/schema/?format=json").json() == generated_schema()


def test_zz_fuzz_cases_were_tried():
    """After the fuzzing above (file order): every documented operation was tried; say how often."""
    if not CASES:
        pytest.skip("the fuzzing test did not run in this session")
    assert set(CASES) == {result.ok().label for result in schema.get_all_operations()}
    total = sum(CASES.values())
    print(f"schemathesis: {total} cases over {len(CASES)} operations")
    SUMMARY.parent.mkdir(exist_ok=True)
    SUMMARY.write_text(
        json.dumps({"cases": total, "max_examples": MAX_EXAMPLES, "per_operation": CASES}, indent=1)
    )


# ---------------------------------------------------------------------------------------------
# what the fuzzing found, pinned (several were 500s on PostgreSQL only, where CI also runs)


@pytest.mark.parametrize(
    "url",
    [
        "/api/packets/?ip=not-an-ip",  # PostgreSQL's inet column: a 500
        "/api/packets/?src_ip=10.0.0",
        "/api/flows/?dst_ip=zz",
        "/api/anomalies/?ip=::zz",
        "/api/packets/?src_port=0.5",  # accepted as a number before
        "/api/packets/?seq_from=abc",
        "/api/packets/?limit=abc",  # silently the default before
        "/api/flows/?offset=-1",
        "/api/packets/?limit=0",
        "/api/anomalies/?false_positive=maybe",  # silently ignored before
        "/api/packets/?since=2026-02-30T00:00:00Z",
        "/api/anomalies/?min_score=nan",
    ],
)
def test_bad_query_parameters_are_a_400_naming_them(staff_api, url):
    response = staff_api.get(url)
    assert response.status_code == 400, response.content
    name = url.split("?")[1].split("=")[0]
    assert name in response.json()


@pytest.mark.parametrize(
    "url",
    [
        "/api/anomalies/?incident=0",  # a 400 "not one of the available choices" before
        "/api/anomalies/?incident=99999999999999999999999",  # beyond any id: no integer overflow
        "/api/packets/?until=2026-01-01T00:00:00-21:50",  # a 500 on PostgreSQL (offset over 15:59)
        "/api/flows/?since=0001-01-01T00:00:00%2B05:00",  # before year 1 in UTC
        "/api/anomalies/?since=&ip=&incident=&false_positive=",  # empty: no filter
        "/api/packets/?port=99999999999999999999",
        "/api/packets/?seq_from=1" + "0" * 60,
        "/api/anomalies/?min_score=6.2e208",  # a 400 "less than or equal to 1e+50" before
    ],
)
def test_odd_but_valid_query_parameters_are_answered(staff_api, url):
    response = staff_api.get(url)
    assert response.status_code == 200, response.content


def test_limit_is_capped(staff_api):
    body = staff_api.get("/api/packets/?limit=100000").json()
    assert body["results"] == [] and body["count"] == 0
    from netmon.pagination import LimitOffsetPagination

    assert LimitOffsetPagination.max_limit == 1000


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"since": "2026-02-30T00:00:00Z"}, "filters.since"),  # parse_datetime raised: a 500
        ({"ip": "not-an-ip"}, "filters.ip"),  # the worker's query failed on PostgreSQL
        ({"sensor": "s\x001"}, "filters.sensor"),  # PostgreSQL cannot store NUL: a 500
    ],
)
def test_bad_export_filters_are_a_400_naming_them(api, settings, filters, field):
    settings.NETMON_EXPORT_HMAC_KEY = HMAC_KEY
    body = {"dataset": "packets", "algorithm": "SHA", "filters": filters}
    response = api.post("/api/exports/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]


def test_export_filter_times_are_stored_in_utc(api, settings):
    settings.NETMON_EXPORT_HMAC_KEY = HMAC_KEY
    body = {"algorithm": "SHA", "filters": {"since": "2026-01-01T00:00:00-21:50"}}
    response = api.post("/api/exports/", body, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["filters"]["since"] == "2026-01-01T21:50:00+00:00"


def test_recipient_name_with_nul_is_a_400(api):
    response = api.post("/api/exports/", {"algorithm": "RSA", "recipient": "a\x00b"}, format="json")
    assert response.status_code == 400  # a 500 on PostgreSQL
    assert "recipient" in response.json()["fields"]


def test_json_types_are_not_coerced(staff_api, seeded):
    anomaly = Anomaly.objects.get()
    response = staff_api.patch(f"/api/anomalies/{anomaly.pk}/", {"false_positive": "yes"}, format="json")
    assert response.status_code == 400  # DRF's BooleanField took "yes" (and 1, "on", ...)
    response = staff_api.post("/api/models/train", {"sensor": 0}, format="json")
    assert response.status_code == 400  # DRF's CharField took 0 as "0"
    assert "sensor" in response.json()


def test_schema_documents_errors_and_empty_filters(staff_api):
    schema_doc = staff_api.get("/api/schema/?format=json").json()
    packets = schema_doc["paths"]["/api/packets/"]["get"]
    assert {"200", "400", "401", "403"} <= set(packets["responses"])
    assert all(p["allowEmptyValue"] for p in packets["parameters"] if p["in"] == "query")
    token = schema_doc["paths"]["/api/auth/token/"]["post"]
    assert "429" in token["responses"]
    assert "404" in schema_doc["paths"]["/api/exports/{job_id}/download"]["get"]["responses"]
