"""Anomalies are grouped into one incident per source while it keeps triggering, whatever the read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from capture.models import Sensor
from capture.records import Batch, PacketColumns, empty_records, ip_to_bytes
from detection import anomalies, scoring
from detection.incidents import INCIDENT_QUIET
from detection.models import Anomaly, Incident

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def _read(sources: list[str | None], first_seq: int, t: float) -> tuple[Batch, scoring.ScoredBatch]:
    """A read whose every packet is an anomaly; ``None`` is a frame without an IP layer (ARP)."""
    n = len(sources)
    records = empty_records(n)
    records["seq"] = np.arange(first_seq, first_seq + n)
    records["ts"] = t + np.arange(n) * 0.001
    for i, src in enumerate(sources):
        if src is not None:
            records["ip_version"][i] = 4
            records["src_ip"][i] = np.frombuffer(ip_to_bytes(src), np.uint8)
            records["dst_ip"][i] = np.frombuffer(ip_to_bytes("10.0.0.1"), np.uint8)
        else:
            records["eth_type"][i] = 0x0806
    scores = np.linspace(1.0, 2.0, n)
    scored = scoring.ScoredBatch(
        scores=scores,
        threshold=0.5,
        is_anomaly=np.ones(n, bool),
        explanations={i: (f"reason {first_seq + i}", "[]") for i in range(n)},
        model_kind="isolation_forest",
        model_versions={"isolation_forest": 1},
        feature_state=b"",
    )
    return Batch(sensor="inc", records=records), scored


def test_one_incident_per_source_across_reads_and_a_new_one_after_quiet():
    sensor = Sensor.objects.create(name="inc")
    spoofed = [f"198.51.{i // 250}.{i % 250 + 1}" for i in range(1_200)]  # more than one IN (...) chunk
    batch, scored = _read([*spoofed, "10.0.0.9", "10.0.0.9", None], 1, T0)
    saved = anomalies.save_anomalies(sensor, batch, scored)
    assert saved.count == 1_203
    assert Incident.objects.count() == 1_202
    scanner = Incident.objects.get(src_ip="10.0.0.9")
    assert (scanner.anomaly_count, scanner.explanation) == (2, "reason 1202")  # its top score's
    assert Incident.objects.get(src_ip__isnull=True).anomaly_count == 1
    # each new incident is the one of its own source, with that source's first and last time
    linked = Anomaly.objects.values_list("src_ip", "incident__src_ip", "ts", "incident__first_seen")
    mismatched = [(a, b) for a, b, ts, first in linked if a != b or (a in spoofed and ts != first)]
    assert mismatched == []

    # 30 s later: the same sources add to their incidents (one new source opens one)
    batch, scored = _read(["10.0.0.9", spoofed[0], "10.0.0.7", None], 5_000, T0 + 30)
    anomalies.save_anomalies(sensor, batch, scored)
    assert Incident.objects.count() == 1_203
    scanner.refresh_from_db()
    assert scanner.anomaly_count == 3
    assert scanner.last_seen == datetime.fromtimestamp(T0 + 30, tz=UTC)
    assert scanner.peak_score == pytest.approx(1.0 + 1_201 / 1_202)  # its best, in the first read
    assert scanner.explanation == "reason 1202"  # the peak's explanation stays
    assert Incident.objects.get(src_ip=spoofed[0]).anomaly_count == 2
    assert Incident.objects.get(src_ip__isnull=True).anomaly_count == 2

    # after more than INCIDENT_QUIET without anomalies, the source opens a new incident
    later = T0 + 30 + INCIDENT_QUIET.total_seconds() + 5
    batch, scored = _read(["10.0.0.9"], 9_000, later)
    anomalies.save_anomalies(sensor, batch, scored)
    incidents = Incident.objects.filter(src_ip="10.0.0.9").order_by("first_seen")
    assert [i.anomaly_count for i in incidents] == [3, 1]
    assert incidents[1].first_seen - incidents[0].last_seen > timedelta(seconds=60)
    # every anomaly points at its source's incident
    for anomaly in Anomaly.objects.filter(src_ip="10.0.0.9"):
        assert anomaly.incident.src_ip == "10.0.0.9"
    assert Anomaly.objects.filter(incident__isnull=True).count() == 0


def test_the_stored_part_of_a_read_keeps_each_anomaly_with_its_own_columns():
    # score_batch hands the text columns of the explained rows on to save_anomalies; the ingest
    # stores only part of a read when some of its batches were stored before (select).
    sensor = Sensor.objects.create(name="inc")
    sources = [f"192.0.2.{i + 1}" for i in range(12)]
    batch, scored = _read(sources, 1, T0)
    flagged = [1, 2, 5, 8, 11]
    scored.explanations = {i: scored.explanations[i] for i in flagged}
    scored.columns = PacketColumns.of(batch.records[flagged])
    rows = np.array([0, 2, 3, 4, 5, 9, 10, 11])  # the rows stored now

    part = scored.select(rows)
    saved = anomalies.save_anomalies(sensor, Batch(sensor="inc", records=batch.records[rows]), part)

    assert saved.count == 3
    stored = sorted(Anomaly.objects.values_list("packet_seq", "src_ip", "explanation"))
    assert stored == [(seq, sources[seq - 1], f"reason {seq}") for seq in (3, 6, 12)]
    assert part.columns.src_ip == [sources[2], sources[5], sources[11]]
