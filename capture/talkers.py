"""Stored traffic by address: top talkers, and packets filtered by their addresses' country or AS.

There is no per-packet GeoIP column (it would cost every insert, and go stale when the data is
updated). A GeoIP filter instead resolves the *distinct* addresses of the packet table, keeps those
whose country/AS match (``capture/geo.py``, cached per address) and filters the packets by
``src_ip IN (...) OR dst_ip IN (...)`` on the two indexed address columns. The distinct addresses
are read with a loose index scan (a recursive query that jumps from one address to the next along
the index): its cost grows with the number of distinct addresses, not of packets
(``bench/geo.py`` measures it on a million packets against ``SELECT DISTINCT``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from capture import geo
from capture.models import Packet

TALKERS_DEFAULT_WINDOW = timedelta(hours=1)
TALKERS_MAX = 100


def distinct_values(queryset: QuerySet, column: str) -> set[str]:
    """The distinct non-null values of an indexed column of the queryset's table (loose index scan).

    The whole table's values, whatever the queryset's filters: callers filter the queryset by the
    values they keep, so a superset costs nothing but a longer IN list.
    """
    model = queryset.model
    connection = connections[queryset.db]
    quote = connection.ops.quote_name
    table, col = quote(model._meta.db_table), quote(model._meta.get_field(column).column)
    # Names only (quoted, of our own table and column); no user input reaches this text.
    sql = (
        "WITH RECURSIVE seen(value) AS ("  # noqa: S608
        f" SELECT MIN({col}) FROM {table}"
        " UNION ALL"
        f" SELECT (SELECT MIN({col}) FROM {table} WHERE {col} > seen.value)"
        " FROM seen WHERE seen.value IS NOT NULL"
        ") SELECT value FROM seen WHERE value IS NOT NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return {str(row[0]) for row in cursor.fetchall()}


def packet_addresses(queryset: QuerySet | None = None) -> set[str]:
    """Every address that is the source or destination of a stored packet."""
    queryset = Packet.objects.all() if queryset is None else queryset
    return distinct_values(queryset, "src_ip") | distinct_values(queryset, "dst_ip")


def filter_packets_by_geo(queryset: QuerySet, criteria: geo.GeoCriteria) -> QuerySet:
    """Packets whose source or destination address meets the criteria (all of them, one address)."""
    if not criteria:
        return queryset
    wanted = geo.matching(packet_addresses(queryset), criteria)
    if not wanted:
        return queryset.none()
    return queryset.filter(Q(src_ip__in=wanted) | Q(dst_ip__in=wanted))


def top_talkers(
    queryset: QuerySet,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    criteria: geo.GeoCriteria | None = None,
    limit: int = 10,
) -> dict[str, Any]:
    """The sources that sent the most bytes in [since, until), with their country and AS.

    Without ``since``, the hour before ``until`` (or now). The GeoIP criteria are applied to the
    aggregated sources (one lookup per source), before the ``limit`` is taken.
    """
    until_ = until or timezone.now()
    since_ = since or (until_ - TALKERS_DEFAULT_WINDOW)
    rows = (
        queryset.filter(ts__gte=since_, ts__lt=until_, src_ip__isnull=False)
        .order_by()
        .values("src_ip")
        .annotate(bytes=Sum("length"), packets=Count("id"))
        .order_by("-bytes", "src_ip")
    )
    talkers: list[dict[str, Any]] = []
    for row in rows.iterator(chunk_size=2000):
        address = str(row["src_ip"])
        if criteria and not criteria.matches(address):
            continue
        bytes_sent = int(row["bytes"] or 0)
        talkers.append({"ip": address, "bytes": bytes_sent, "packets": row["packets"]})
        if len(talkers) >= limit:
            break
    return {"since": since_, "until": until_, "talkers": talkers}
