"""Storing batches of records: packets (bulk insert, COPY on PostgreSQL), flows (upsert), receipts, counters.

Idempotency: a batch is stored at most once per sensor, guarded by an ``IngestedBatch`` receipt
created in the same transaction as its packets; a redelivered batch finds the receipt and is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.db.models.functions import Greatest

from capture.community import community_ids
from capture.models import Flow, IngestedBatch, Packet, Sensor
from capture.records import (
    APP_FIELDS,
    DECODE_ERRORS,
    ETH_NAMES,
    PROTO_NAMES,
    Batch,
    PacketColumns,
    mac_texts,
)

PACKET_COLUMNS = (
    "sensor_id",
    "seq",
    "ts",
    "interface",
    "src_mac",
    "dst_mac",
    "ip_version",
    "protocol",
    "src_ip",
    "dst_ip",
    "src_port",
    "dst_port",
    "length",
    "payload_len",
    "tcp_flags",
    "ttl",
    "vlan",
    "app_protocol",
    "dns_query",
    "http_host",
    "http_method",
    "tls_sni",
    "decode_error",
    "anomaly_score",
)
FLOW_COLUMNS = (
    "sensor_id",
    "protocol",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "first_seen",
    "last_seen",
    "packets",
    "bytes",
    "community_id",
)


@dataclass
class StoreResult:
    """What storing one batch did."""

    stored: bool  # False: the batch had been stored before (redelivery)
    packets: int = 0
    flows: int = 0  # flow rows upserted (0 with ``with_flows=False``: the caller upserts them)


def packet_rows(
    sensor_id: int, batch: Batch, cols: PacketColumns, anomaly_scores: np.ndarray | None = None
) -> list[tuple]:
    """The packet table's rows of a batch; ``anomaly_scores``: per record its score if flagged, else NaN."""
    r = batch.records
    if anomaly_scores is None:
        flagged: list[float | None] = [None] * len(r)
    else:
        flagged = [None if s != s else s for s in np.asarray(anomaly_scores, dtype=np.float64).tolist()]
    ifaces = batch.interfaces or [""]
    app = batch.app
    empty_app = ("",) * len(APP_FIELDS)
    rows = []
    seqs = r["seq"].tolist()
    src_mac, dst_mac = mac_texts(r["src_mac"]), mac_texts(r["dst_mac"])
    for i, (seq, iface, version, sport, dport, length, payload, flags, ttl, vlan, status) in enumerate(
        zip(
            seqs,
            r["iface"].tolist(),
            r["ip_version"].tolist(),
            r["sport"].tolist(),
            r["dport"].tolist(),
            r["length"].tolist(),
            r["payload_len"].tolist(),
            r["tcp_flags"].tolist(),
            r["ttl"].tolist(),
            r["vlan"].tolist(),
            r["status"].tolist(),
            strict=True,
        )
    ):
        fields = app.get(seq)
        app_values = tuple(str(fields.get(k) or "")[:255] for k in APP_FIELDS) if fields else empty_app
        rows.append(
            (
                sensor_id,
                seq,
                cols.ts[i],
                ifaces[iface] if iface < len(ifaces) else "",
                src_mac[i],
                dst_mac[i],
                version,
                cols.protocol[i],
                cols.src_ip[i],
                cols.dst_ip[i],
                sport,
                dport,
                length,
                payload,
                flags,
                ttl,
                vlan,
                *app_values,
                DECODE_ERRORS.get(status, "unknown decode error"),
                flagged[i],
            )
        )
    return rows


def flow_rows(
    sensor_id: int,
    records: np.ndarray,
    cols: PacketColumns,
    with_community_id: bool = True,
    held: np.ndarray | None = None,
) -> list[tuple]:
    """The batch's IP packets by 5-tuple: (key..., first_seen, last_seen, packets, bytes, community_id).

    Worked out per distinct 5-tuple with NumPy (a scan or a flood has about a flow per packet:
    a loop per packet was a third of what a flow row cost), in the order of each flow's first
    packet. The Community ID is that of the flow's first packet (``capture.community``), computed
    once per flow; ``with_community_id`` False (``NETMON_COMMUNITY_ID=0``) leaves it empty.
    ``held``: per record, True when the caller keeps the packet elsewhere if it is its flow's only
    packet (the worker: a scan's probe or a flood's packet, which its incident holds); such flows
    have no row.
    """
    version = records["ip_version"]
    ip = np.flatnonzero((version == 4) | (version == 6))  # the records with addresses (text not None)
    if not len(ip):
        return []
    rec = records[ip]
    # Grouped by exactly what a flow's text key (protocol, addresses, ports) is made of: the
    # protocol's name is one per number, an IPv4 address is its last four bytes. Within a flow,
    # packets in time order (the last sort key): its first and last are its first and last seen.
    src, dst = (
        _address_words(rec["src_ip"], rec["ip_version"]),
        _address_words(rec["dst_ip"], rec["ip_version"]),
    )
    sport, dport = rec["sport"], rec["dport"]
    columns = (dport, sport, dst[1], dst[0], src[1], src[0], rec["proto"], rec["ip_version"])
    order = np.lexsort((rec["ts"], *columns))
    boundary = np.zeros(len(order), dtype=bool)
    boundary[0] = True
    for column in columns:
        c = column[order]
        boundary[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(boundary)
    ends = np.r_[starts[1:], len(order)] - 1
    sizes = np.add.reduceat(rec["length"].astype(np.int64)[order], starts)
    # each flow's first packet (in the batch); the flows in the order of their first packets
    first = ip[np.minimum.reduceat(order, starts)]
    if held is not None:
        kept = (ends > starts) | ~held[first]
        first, starts, ends, sizes = first[kept], starts[kept], ends[kept], sizes[kept]
        if not len(first):
            return []
    by_first = np.argsort(first, kind="stable")
    first, starts, ends, sizes = first[by_first], starts[by_first], ends[by_first], sizes[by_first]
    earliest, latest = ip[order[starts]].tolist(), ip[order[ends]].tolist()
    ids = community_ids(records[first]) if with_community_id else [""] * len(first)
    at = first.tolist()
    return list(
        zip(
            repeat(sensor_id),
            _gather(cols.protocol, at),
            _gather(cols.src_ip, at),
            records["sport"][first].tolist(),
            _gather(cols.dst_ip, at),
            records["dport"][first].tolist(),
            _gather(cols.ts, earliest),
            _gather(cols.ts, latest),
            (ends - starts + 1).tolist(),
            sizes.tolist(),
            ids,
            strict=False,
        )
    )


def _gather(column: list, rows: list[int]) -> list:
    """``[column[k] for k in rows]``, gathered in C."""
    if len(rows) > 1:
        return list(itemgetter(*rows)(column))
    return [column[rows[0]]] if rows else []


def _address_words(raw: np.ndarray, version: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """16-byte addresses as two integers each; an IPv4 address (the last 4 bytes) alone."""
    words = np.ascontiguousarray(raw).view(">u8").reshape(-1, 2).astype(np.uint64)
    high = np.where(version == 4, np.uint64(0), words[:, 0])
    low = np.where(version == 4, words[:, 1] & np.uint64(0xFFFFFFFF), words[:, 1])
    return high, low


def _insert_packets(rows: list[tuple]) -> None:
    table = Packet._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # COPY is several times faster than INSERT for bulk rows.
            with cursor.cursor.copy(f"COPY {table} ({', '.join(PACKET_COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            placeholders = ", ".join(["%s"] * len(PACKET_COLUMNS))
            # Table and column names are ours (model meta), never input.
            sql = f"INSERT INTO {table} ({', '.join(PACKET_COLUMNS)}) VALUES ({placeholders})"  # noqa: S608
            cursor.executemany(sql, rows)


FLOW_CHUNK = 500  # rows per statement: 4,500 parameters, far below SQLite's and PostgreSQL's limits


def _upsert_flows(rows: list[tuple]) -> None:
    if not rows:
        return
    table = Flow._meta.db_table
    postgresql = connection.vendor == "postgresql"
    later = "GREATEST" if postgresql else "MAX"
    earlier = "LEAST" if postgresql else "MIN"
    row_sql = "(" + ", ".join(["%s"] * len(FLOW_COLUMNS)) + ")"

    def statement(n: int) -> str:
        # Keys are unique within a read (rows are aggregated), as ON CONFLICT needs. Table and
        # column names are ours (model meta), never input.
        return (
            f"INSERT INTO {table} ({', '.join(FLOW_COLUMNS)}) VALUES {', '.join([row_sql] * n)} "  # noqa: S608
            "ON CONFLICT (sensor_id, protocol, src_ip, src_port, dst_ip, dst_port) DO UPDATE SET "
            f"first_seen = {earlier}({table}.first_seen, excluded.first_seen), "
            f"last_seen = {later}({table}.last_seen, excluded.last_seen), "
            f"packets = {table}.packets + excluded.packets, bytes = {table}.bytes + excluded.bytes"
            # (community_id: set when the flow is first stored; a 5-tuple's ID never changes)
        )

    # Sorted keys: concurrent upserts (several sensors) take row locks in one order, so no deadlock.
    # (The sensor is one per read and the five-tuple unique: the whole row orders as its key does.)
    rows.sort()
    with connection.cursor() as cursor:
        if not postgresql:
            # SQLite: one statement compiled once and run per row in C. Multi-row VALUES cost
            # twice as much per flow row here (a scan writes about a flow row per packet).
            cursor.executemany(statement(1), rows)
            return
        # PostgreSQL: one multi-row statement per chunk; a round trip per flow (executemany)
        # cost ~60 ms per batch.
        for lo in range(0, len(rows), FLOW_CHUNK):
            chunk = rows[lo : lo + FLOW_CHUNK]
            cursor.execute(statement(len(chunk)), [value for row in chunk for value in row])


def store_batch(
    sensor: Sensor,
    batch: Batch,
    stream_id: str,
    dropped_before: int = 0,
    anomaly_scores: np.ndarray | None = None,
    with_flows: bool = True,
    cols: PacketColumns | None = None,
) -> StoreResult:
    """Store a batch's packets and flows once, and count ``dropped_before`` packets lost before it.

    ``anomaly_scores``: per record, the score of a packet the model flagged, NaN for the others
    (written in ``Packet.anomaly_score``; the worker scores a read before it stores it).
    ``with_flows=False``: the caller upserts the flows of the batch itself, with ``store_flows``
    (the worker does it once per read, for the batches stored now). ``cols``: the records'
    ``PacketColumns`` when the caller has them already.
    Must run inside ``transaction.atomic()`` (the caller also writes anomalies in the same transaction).
    """
    records = batch.records
    if not len(records):
        return StoreResult(stored=False)
    try:
        with transaction.atomic():
            IngestedBatch.objects.create(
                sensor=sensor,
                first_seq=batch.first_seq,
                last_seq=batch.last_seq,
                count=len(records),
                stream_id=stream_id,
            )
    except IntegrityError:
        return StoreResult(stored=False)
    cols = cols if cols is not None else PacketColumns.of(records)
    _insert_packets(packet_rows(sensor.pk, batch, cols, anomaly_scores))
    flows = store_flows(sensor, records, cols) if with_flows else 0
    Sensor.objects.filter(pk=sensor.pk).update(
        packets_stored=F("packets_stored") + len(records),
        packets_dropped_stream=F("packets_dropped_stream") + max(0, dropped_before),
        last_seq_ingested=Greatest(F("last_seq_ingested"), batch.last_seq),
    )
    return StoreResult(stored=True, packets=len(records), flows=flows)


def store_flows(
    sensor: Sensor, records: np.ndarray, cols: PacketColumns | None = None, held: np.ndarray | None = None
) -> int:
    """Add stored packets to their flows (one upsert per 5-tuple); the number of flow rows upserted.

    Upserting a whole read's flows at once, rather than each batch's, writes a flow that spans
    batches once, and gives SQLite's indexes keys in one sorted run: under a scan or a flood,
    where nearly every packet is a flow of its own, that halved the cost of a flow row.
    ``held``: per record, True for a packet whose flow has no row if it is the flow's only packet
    (``flow_rows``). Must run inside the transaction that stores the packets.
    """
    if not len(records):
        return 0
    columns = cols if cols is not None else PacketColumns.of(records)
    flows = flow_rows(sensor.pk, records, columns, settings.NETMON_COMMUNITY_ID, held)
    _upsert_flows(flows)
    return len(flows)


def count_lost(sensor: Sensor, packets: int, last_seq: int) -> None:
    """Count packets that left the stream unprocessed (trimmed or lost in a Redis restart)."""
    Sensor.objects.filter(pk=sensor.pk).update(
        packets_dropped_stream=F("packets_dropped_stream") + packets,
        last_seq_ingested=Greatest(F("last_seq_ingested"), last_seq),
    )


def records_from_packets(rows) -> np.ndarray:
    """Stored packets (dicts of Packet fields, in time order) back into RECORD_DTYPE, e.g. for training."""
    from capture.records import empty_records, ip_to_bytes

    rows = list(rows)
    out = empty_records(len(rows))
    proto_numbers = {name: number for number, name in PROTO_NAMES.items()}
    eth_numbers = {name: number for number, name in ETH_NAMES.items()}
    for i, row in enumerate(rows):
        r = out[i]
        r["seq"] = row["seq"]
        r["ts"] = row["ts"].timestamp()
        r["length"] = row["length"]
        r["payload_len"] = row["payload_len"]
        r["ip_version"] = row["ip_version"]
        if row["ip_version"]:
            r["eth_type"] = 0x0800 if row["ip_version"] == 4 else 0x86DD
            r["proto"] = proto_numbers.get(row["protocol"], 0)
            r["src_ip"] = np.frombuffer(ip_to_bytes(row["src_ip"]), np.uint8)
            r["dst_ip"] = np.frombuffer(ip_to_bytes(row["dst_ip"]), np.uint8)
        else:
            r["eth_type"] = eth_numbers.get(row["protocol"], 0)
        r["sport"], r["dport"] = row["src_port"], row["dst_port"]
        r["tcp_flags"], r["ttl"], r["vlan"] = row["tcp_flags"], row["ttl"], row["vlan"]
        for name in ("src_mac", "dst_mac"):
            r[name] = int(row[name].replace(":", ""), 16) if row[name] else 0
    return out
