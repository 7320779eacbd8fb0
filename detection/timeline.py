"""An incident's timeline: how many stored packets its hosts sent and received, bucket by bucket.

``GET /api/incidents/{id}/timeline/`` and the incident page's chart read it. The packets counted are
the sensor's stored packets within [first_seen, last_seen] (``TIME_SLACK`` beyond, for rounding)
with a source or target host of the incident at either end; ``from_sources`` is the part its
sources sent, ``anomalies`` the incident's own anomalies. The bucket width is the smallest of a
ladder of round widths (1 s .. 1 day) that keeps the count within ``max_buckets``, so the chart's
axis reads in round numbers and the answer stays small whatever the incident's length. The
database groups rows by second, minute or hour (depending on the width) and this module folds
those groups into buckets: at most 60 rows per bucket leave the database, never one per packet.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncHour, TruncMinute, TruncSecond

from capture.models import Packet
from detection.models import Anomaly, Incident

# An incident's times and its packets' times can differ by a microsecond (each is rounded from the
# packet's float timestamp on its own path): windows over its packets reach this far beyond them.
TIME_SLACK = timedelta(milliseconds=1)
DEFAULT_BUCKETS = 120
MAX_BUCKETS = 500
# Round bucket widths in seconds: the chart's ticks and "packets per second" read well with these.
WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def target_host(target: str) -> str:
    """The address of a target: ``IP:port/proto`` (IPv6 too: the port follows the last colon) or ``IP``."""
    if "/" not in target:
        return target
    return target.split("/", 1)[0].rsplit(":", 1)[0]


def incident_hosts(incident: Incident) -> tuple[list[str], list[str]]:
    """Its sources, and the hosts of its targets (each once, in the order listed)."""
    sources = [str(s) for s in incident.sources or ([incident.src_ip] if incident.src_ip else [])]
    targets = list(dict.fromkeys(target_host(str(t)) for t in incident.targets or []))
    return sources, [t for t in targets if t not in sources]


def bucket_width(start: datetime, end: datetime, max_buckets: int) -> int:
    """The smallest width of ``WIDTHS`` whose aligned buckets cover [start, end] in ``max_buckets``."""
    first, last = start.timestamp(), end.timestamp()

    def fits(width: int) -> bool:
        return math.floor(last / width) - math.floor(first / width) + 1 <= max_buckets

    for width in WIDTHS:
        if fits(width):
            return width
    days = max(1, math.ceil((last - first) / WIDTHS[-1] / max_buckets))
    while not fits(days * WIDTHS[-1]):  # whole days beyond the ladder: one or two steps
        days += 1
    return days * WIDTHS[-1]


def _grouping(width: int):
    """Group rows by the coarsest unit that divides the width (a bucket is whole groups)."""
    if width % 3600 == 0:
        return TruncHour
    if width % 60 == 0:
        return TruncMinute
    return TruncSecond


def incident_timeline(incident: Incident, max_buckets: int = DEFAULT_BUCKETS) -> dict[str, Any]:
    """The timeline of ``incident`` in at most ``max_buckets`` buckets (the API's answer)."""
    if not 1 <= max_buckets <= MAX_BUCKETS:
        raise ValueError(f"buckets must be from 1 to {MAX_BUCKETS}")
    start, end = incident.first_seen, max(incident.last_seen, incident.first_seen)
    width = bucket_width(start, end, max_buckets)
    origin = math.floor(start.timestamp() / width) * width
    count = math.floor(end.timestamp() / width) - math.floor(start.timestamp() / width) + 1
    buckets = [{"packets": 0, "bytes": 0, "from_sources": 0, "anomalies": 0} for _ in range(count)]

    def slot(moment: datetime) -> int:
        return min(count - 1, max(0, int((moment.timestamp() - origin) // width)))

    group = _grouping(width)("ts", tzinfo=UTC)
    sources, targets = incident_hosts(incident)
    hosts = [*sources, *targets]
    if hosts:
        packets = (
            Packet.objects.filter(
                sensor_id=incident.sensor_id, ts__gte=start - TIME_SLACK, ts__lte=end + TIME_SLACK
            )
            .filter(Q(src_ip__in=hosts) | Q(dst_ip__in=hosts))
            .annotate(moment=group)
            .values("moment")
            .annotate(
                packets=Count("id"),
                bytes=Sum("length"),
                from_sources=Count("id", filter=Q(src_ip__in=sources)),
            )
            .order_by()
        )
        for row in packets:
            bucket = buckets[slot(row["moment"])]
            bucket["packets"] += row["packets"]
            bucket["bytes"] += row["bytes"] or 0
            bucket["from_sources"] += row["from_sources"]
    anomalies = (
        Anomaly.objects.filter(incident=incident).annotate(moment=group).values("moment")
        .annotate(n=Count("id")).order_by()
    )  # fmt: skip
    for row in anomalies:
        buckets[slot(row["moment"])]["anomalies"] += row["n"]
    first = datetime.fromtimestamp(origin, UTC)
    return {
        "incident": incident.pk,
        "first_seen": start.isoformat(),
        "last_seen": end.isoformat(),
        "bucket_seconds": width,
        "sources": sources,
        "target_hosts": targets,
        "packets": sum(b["packets"] for b in buckets),
        "peak_packets_per_second": max(b["packets"] for b in buckets) / width,
        "buckets": [
            {
                "start": (first + timedelta(seconds=i * width)).isoformat(),
                **bucket,
                "packets_per_second": bucket["packets"] / width,
            }
            for i, bucket in enumerate(buckets)
        ],
    }
