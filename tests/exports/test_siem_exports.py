"""Exports for SIEMs: incidents and anomalies in the ``eve`` format (the live sinks' lines), the
incidents dataset, Community IDs in the flow and anomaly columns, and requests that do not fit."""

from __future__ import annotations

import base64
import io
import json

import jsonschema
import pytest

from capture.models import Sensor
from detection import eve
from detection.models import Incident
from exports import crypto, formats, services
from exports.models import ExportJob
from tests.detection.test_incidents import T0, _store_and_save
from tests.detection.test_siem import FLOOD, FLOW_ID, SURICATA_ALERT_SCHEMA

pytestmark = pytest.mark.django_db

KEY = b"s" * 32


@pytest.fixture
def flood(settings, tmp_path):
    settings.NETMON_EXPORT_KEYS = f"k:{base64.b64encode(KEY).decode()}"
    settings.NETMON_EXPORT_DIR = tmp_path
    sensor = Sensor.objects.create(name="inc")
    return _store_and_save(sensor, FLOOD, 1, T0)


def export(user, dataset: str, fmt: str, **filters) -> bytes:
    job = ExportJob.objects.create(
        owner=user, dataset=dataset, format=fmt, algorithm="AES-256", key_id="k", filters=filters
    )
    services.write_export(job)
    with open(job.file_path, "rb") as handle:
        return b"".join(crypto.ExportReader(io.BytesIO(handle.read()), key_ring={"k": KEY}))


def test_incidents_export_as_the_eve_lines_the_live_sink_writes(flood, user):
    lines = export(user, "incidents", "eve").decode().splitlines()
    incident = eve.with_flows(Incident.objects.all()).get()
    assert lines == [eve.line(eve.incident_event(incident, eve.incident_flow(incident)))]
    event = json.loads(lines[0])
    jsonschema.validate(event, SURICATA_ALERT_SCHEMA)
    assert event["community_id"] == FLOW_ID and event["netmon"]["event"] == "incident"
    assert export(user, "incidents", "eve", ip="192.0.2.99") == b""  # filtered out


def test_anomalies_export_as_eve_lines_and_tables_carry_community_ids(flood, user):
    events = [json.loads(x) for x in export(user, "anomalies", "eve").decode().splitlines()]
    assert len(events) == flood.stored
    for event in events:
        jsonschema.validate(event, SURICATA_ALERT_SCHEMA)
        assert event["alert"]["signature_id"] == eve.ANOMALY_SIGNATURE.sid and event["community_id"]
    flows = [json.loads(x) for x in export(user, "flows", "json").decode().splitlines()]
    assert FLOW_ID in {row["community_id"] for row in flows}
    (row,) = [json.loads(x) for x in export(user, "incidents", "json").decode().splitlines()]
    assert (row["community_id"], row["kind"], row["sensor"]) == (FLOW_ID, "syn_flood", "inc")


def test_flows_export_as_a_zeek_conn_log_one_line_per_conversation(flood, user):
    text = export(user, "flows", "zeek-conn").decode()
    lines = text.splitlines()
    assert lines[0] == "#separator \\x09" and lines[4] == "#path\tconn" and lines[-1].startswith("#close\t")
    fields = lines[6].split("\t")
    assert fields[0] == "#fields" and fields[1:] == list(formats.ZEEK_CONN_FIELDS)
    assert lines[7].split("\t")[1:] == list(formats.ZEEK_CONN_FIELDS.values())
    conns = [dict(zip(fields[1:], line.split("\t"), strict=True)) for line in lines[8:-1]]
    assert len(conns) == 60  # the SYN-ACK's flow and its SYN's are one connection
    (both,) = [c for c in conns if c["community_id"] == FLOW_ID]
    # the victim's answer was seen first: it is the originator of that conversation here
    assert (both["id.orig_h"], both["id.orig_p"], both["id.resp_h"], both["id.resp_p"]) == (
        "10.0.0.1", "8080", "10.0.0.66", "1024",
    )  # fmt: skip
    assert (both["proto"], both["orig_pkts"], both["resp_pkts"], both["conn_state"]) == ("tcp", "1", "1", "-")
    assert float(both["duration"]) == pytest.approx(0.001, abs=1e-6)
    assert float(both["ts"]) == pytest.approx(T0)


def test_event_lines_stream_in_pieces_and_spell_non_finite_numbers_null():
    rows = [{"event_type": "alert", "n": i, "score": float("nan") if i == 3 else 0.5} for i in range(5000)]
    pieces = list(formats.iter_events(iter(rows), piece_size=10_000))
    assert len(pieces) > 2
    parsed = [json.loads(x) for x in b"".join(pieces).decode().splitlines()]
    assert parsed[3]["score"] is None and parsed[4999] == rows[4999]
    assert b"".join(formats.serialise("eve", rows, ["ignored"])) == b"".join(pieces)


def test_the_models_formats_are_the_formats_module_s():
    assert set(ExportJob.Format.values) == set(formats.ALL_FORMATS)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"dataset": "flows", "format": "eve"}, "format", "eve is for the incidents and anomalies datasets"),
        ({"dataset": "packets", "format": "zeek-conn"}, "format", "zeek-conn is for the flows dataset;"),
        ({"dataset": "incidents", "filters": {"port": 22}}, "filters.port", "not a filter of the incidents"),
    ],
)
def test_requests_that_do_not_fit_the_dataset_are_refused_naming_the_field(api, body, field, message):
    response = api.post("/api/exports/", {"algorithm": "SHA", **body}, format="json")
    assert response.status_code == 400
    assert message in response.json()["fields"][field]
