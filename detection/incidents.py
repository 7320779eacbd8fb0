"""Grouping a read's anomalies into incidents, one per source while it keeps triggering.

Today's rule: anomalies of the same source address (or of frames without an IP layer, grouped
under ``None``) belong to that source's most recent incident if it was last seen no more than
``INCIDENT_QUIET`` before the source's first anomaly of the read; otherwise they open a new one.
An incident keeps its first summary, counts its anomalies and remembers its highest score and
the time of its last anomaly.

Only the holder of the sensor's ingest lock writes its incidents, inside the read's transaction
(detection.ingest), so the counters are computed here and written back without a race.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from django.db import connection

from capture.models import Sensor
from capture.records import timestamps_text
from detection.models import Incident

INCIDENT_QUIET = timedelta(seconds=60)  # a source quiet this long closes its incident
_IN_CHUNK = 500  # values per IN (...) list or bulk statement

# (source, first seen, last seen, anomaly count, max score, summary) of an incident to create
NewIncident = tuple[str | None, float, float, int, float, str]


def assign_incidents(
    sensor: Sensor, src_ips: list[str | None], ts: list[float], scores: np.ndarray, texts: list[str]
) -> list[int]:
    """The incident id of each anomaly of a read (its source address, time, score and explanation).

    Each source's open incident is updated with the read's anomalies, or one is created for it.
    """
    by_source: dict[str | None, list[int]] = {}
    for k, src in enumerate(src_ips):
        by_source.setdefault(src, []).append(k)
    summaries = {src: texts[ks[0]][:2000] for src, ks in by_source.items()}
    ids = _incident_ids(sensor, by_source, ts, scores, summaries)
    return [ids[src] for src in src_ips]


def _incident_ids(
    sensor: Sensor,
    sources: dict[str | None, list[int]],
    ts: list[float],
    scores: np.ndarray,
    summaries: dict[str | None, str],
) -> dict[str | None, int]:
    """The id of each source's open incident (created when none is open), updated with this read's
    anomalies (``sources``: the anomaly indexes of each source into ``ts`` and ``scores``).

    A handful of statements per read however many sources it has.
    """

    def when(t: float) -> datetime:
        return datetime.fromtimestamp(t, tz=UTC)

    firsts = {src: min(ts[k] for k in rows) for src, rows in sources.items()}
    current = _open_incidents(sensor, {src: when(t) for src, t in firsts.items()})
    created: list[NewIncident] = []
    updated = []
    for src, rows in sources.items():
        last = max(ts[k] for k in rows)
        top = float(scores[rows].max())
        incident = current.get(src)
        if incident is None:
            created.append((src, firsts[src], last, len(rows), top, summaries[src]))
        else:
            incident.last_seen = max(incident.last_seen, when(last))
            incident.anomaly_count += len(rows)
            incident.max_score = max(incident.max_score, top)
            incident.summary = incident.summary or summaries[src]
            updated.append(incident)
    fields = ["last_seen", "anomaly_count", "max_score", "summary"]
    Incident.objects.bulk_update(updated, fields, batch_size=_IN_CHUNK)
    ids = {src: incident.pk for src, incident in current.items()}
    ids.update(_insert_incidents(sensor, created))
    return ids


def _open_incidents(sensor: Sensor, firsts: dict[str | None, datetime]) -> dict[str | None, Incident]:
    """Per source, its most recent incident still open at the source's first anomaly of this read."""
    recent = Incident.objects.filter(sensor=sensor, last_seen__gte=min(firsts.values()) - INCIDENT_QUIET)
    addresses = [src for src in firsts if src is not None]
    found: list[Incident] = []
    for lo in range(0, len(addresses), _IN_CHUNK):  # a spoofed flood has thousands of sources
        found += recent.filter(src_ip__in=addresses[lo : lo + _IN_CHUNK])
    if None in firsts:
        found += recent.filter(src_ip__isnull=True)
    latest: dict[str | None, Incident] = {}
    for incident in found:
        src, first = incident.src_ip, firsts.get(incident.src_ip)
        if first is None:  # stored in another spelling than ours (cannot happen with inet_ntop text)
            continue
        if incident.last_seen >= first - INCIDENT_QUIET and (
            src not in latest or incident.last_seen > latest[src].last_seen
        ):
            latest[src] = incident
    return latest


_INCIDENT_COLUMNS = [
    "sensor_id", "src_ip", "first_seen", "last_seen", "anomaly_count", "max_score", "summary",
]  # fmt: skip


def _insert_incidents(sensor: Sensor, created: list[NewIncident]) -> dict[str | None, int]:
    """Insert new incidents (source, first, last, count, max score, summary); their ids by source.

    Multi-row INSERT ... RETURNING id, whose rows come back in VALUES order on SQLite and
    PostgreSQL (as bulk_create relies on too). A spoofed flood opens an incident per packet, and
    the ORM's bulk_create spent more on preparing values than the rest of the read.
    """
    if not created:
        return {}
    firsts = timestamps_text(np.array([row[1] for row in created], dtype=np.float64))
    lasts = timestamps_text(np.array([row[2] for row in created], dtype=np.float64))
    values = [
        (sensor.pk, src, first, last, count, top, summary)
        for (src, _, _, count, top, summary), first, last in zip(created, firsts, lasts, strict=True)
    ]
    width = len(_INCIDENT_COLUMNS)
    per = min(_IN_CHUNK, max(1, (connection.features.max_query_params or 999) // width))
    row_marks = "(" + ", ".join(["%s"] * width) + ")"
    ids: dict[str | None, int] = {}
    with connection.cursor() as cursor:
        for lo in range(0, len(values), per):
            chunk = values[lo : lo + per]
            sql = (
                f"INSERT INTO {Incident._meta.db_table} ({', '.join(_INCIDENT_COLUMNS)}) "  # noqa: S608
                f"VALUES {', '.join([row_marks] * len(chunk))} RETURNING id"
            )
            cursor.execute(sql, [value for row in chunk for value in row])
            returned = cursor.fetchall()
            if len(returned) != len(chunk):
                raise RuntimeError(f"inserted {len(chunk)} incidents, got {len(returned)} ids back")
            ids.update((row[1], pk) for row, (pk,) in zip(chunk, returned, strict=True))
    return ids
