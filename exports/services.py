"""Exports' domain logic: turn a validated request into an ExportJob, run it (stream rows -> serialise ->
encrypt -> file), expire old files, and hand passphrases to the worker without storing them."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from capture import evidence
from capture.choices import EncryptionAlgorithm
from capture.connections import redis_client
from capture.models import Flow, Packet
from detection import eve
from detection import evidence as detection_evidence
from detection.models import Anomaly, Incident
from detection.services import incident_has_address
from exports import crypto
from exports.formats import FILE_EXTENSIONS, FORMATS, FRAME_FORMATS, RECORD_FORMATS, serialise
from exports.models import ExportJob

log = logging.getLogger(__name__)

PROGRESS_EVERY = 50_000
MIN_PASSPHRASE = 8
PASSPHRASE_TTL = 3600

COLUMNS = {
    "packets": [
        "sensor", "seq", "ts", "interface", "src_mac", "dst_mac", "ip_version", "protocol", "src_ip",
        "dst_ip", "src_port", "dst_port", "length", "tcp_flags", "ttl", "vlan", "app_protocol", "dns_query",
        "http_host", "http_method", "tls_sni", "decode_error",
    ],
    "flows": [
        "sensor", "protocol", "src_ip", "src_port", "dst_ip", "dst_port", "first_seen", "last_seen",
        "packets", "bytes", "community_id",
    ],
    "anomalies": [
        "id", "sensor", "packet_seq", "ts", "protocol", "src_ip", "dst_ip", "src_port", "dst_port", "score",
        "threshold", "model_kind", "explanation", "false_positive", "incident_id", "community_id",
    ],
    "incidents": [
        "id", "sensor", "entity", "kind", "severity", "status", "sources", "targets", "targets_more",
        "first_seen", "last_seen", "opened_at", "anomaly_count", "packet_count", "peak_score", "explanation",
        "community_id",
    ],
}  # fmt: skip
# The datasets the event formats (EVE alerts: detection.eve) can write, and the filters that do not
# apply to incidents (they have sources and targets, not one protocol and port).
RECORD_DATASETS = {"eve": ("incidents", "anomalies"), "zeek-conn": ("flows",)}


def formats_of(dataset: str) -> tuple[str, ...]:
    """What ``dataset`` exports as: the pcap dataset as pcap; the others as the column formats and
    the event formats made for them (``RECORD_DATASETS``)."""
    if dataset == ExportJob.Dataset.PCAP:
        return FRAME_FORMATS
    return FORMATS + tuple(f for f in RECORD_FORMATS if dataset in RECORD_DATASETS[f])


NOT_INCIDENT_FILTERS = ("port", "protocol", "anomalies_only")


# --- keys from the environment ------------------------------------------------------------------
def key_ring() -> dict[str, bytes]:
    """NETMON_EXPORT_KEYS parsed (raises crypto.InvalidKeyError naming the bad entry)."""
    return crypto.parse_key_ring(settings.NETMON_EXPORT_KEYS) if settings.NETMON_EXPORT_KEYS else {}


def hmac_key() -> bytes:
    raw = settings.NETMON_EXPORT_HMAC_KEY
    if not raw:
        raise crypto.MissingKeyError("the SHA mode needs NETMON_EXPORT_HMAC_KEY (base64, 32 random bytes)")
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        raise crypto.InvalidKeyError("NETMON_EXPORT_HMAC_KEY is not valid base64") from None


# --- passphrases: sealed in Redis for the worker, never in the database or a task argument -------
def _seal_key() -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"netmon export passphrase").derive(
        settings.SECRET_KEY.encode()
    )


def seal_passphrase(job_id: str, passphrase: str) -> None:
    nonce = os.urandom(12)
    sealed = nonce + AESGCM(_seal_key()).encrypt(nonce, passphrase.encode(), str(job_id).encode())
    redis_client().set(f"netmon:export:secret:{job_id}", sealed, ex=PASSPHRASE_TTL)


def unseal_passphrase(job_id: str) -> str:
    sealed = redis_client().getdel(f"netmon:export:secret:{job_id}")
    if not sealed:
        raise crypto.MissingKeyError("the passphrase for this export has expired; create the export again")
    return AESGCM(_seal_key()).decrypt(sealed[:12], sealed[12:], str(job_id).encode()).decode()


# --- requests -----------------------------------------------------------------------------------
class TooManyExports(Exception):
    """The user has ``NETMON_EXPORT_MAX_ACTIVE_PER_USER`` exports queued or running already."""


def create_export(user: Any, request: dict[str, Any]) -> ExportJob:
    """Create the job (queued) of a request validated by ``exports.api.serializers.ExportRequestSerializer``.

    ``request`` holds the job's fields (dataset, format, algorithm, filters and the key reference
    the algorithm uses) and, when the client sent one, the passphrase, which is sealed for the
    worker in Redis and never stored in the database. Raises ``TooManyExports`` when the user has
    as many unfinished exports as ``NETMON_EXPORT_MAX_ACTIVE_PER_USER`` allows (call it in a
    transaction: the user's row is locked so two requests cannot both take the last place).
    """
    limit = settings.NETMON_EXPORT_MAX_ACTIVE_PER_USER
    if limit:
        type(user).objects.select_for_update().filter(pk=user.pk).first()
        active = ExportJob.objects.filter(
            owner=user, status__in=[ExportJob.Status.QUEUED, ExportJob.Status.RUNNING]
        ).count()
        if active >= limit:
            raise TooManyExports(
                f"you have {active} exports queued or running; at most {limit} at once "
                "(NETMON_EXPORT_MAX_ACTIVE_PER_USER): wait for one to finish or delete one"
            )
    fields = dict(request)
    passphrase = fields.pop("passphrase", None)
    job = ExportJob.objects.create(owner=user, **fields)
    if passphrase:
        seal_passphrase(str(job.id), passphrase)
    return job


def validate_public_key(pem: str) -> str:
    """Check an RSA public key PEM (>= 2048 bits); returns its fingerprint (raises crypto.ExportError)."""
    import io

    crypto.ExportWriter(io.BytesIO(), EncryptionAlgorithm.RSA, public_key_pem=pem)
    return crypto.public_key_fingerprint(pem)


# --- running ------------------------------------------------------------------------------------
def dataset_queryset(job: ExportJob) -> QuerySet:
    """The rows the job selects (its dataset, filtered), in export order."""
    f = job.filters
    if job.dataset == "incidents":
        return _incidents(f)
    if job.dataset == "packets":
        qs = Packet.objects.order_by("sensor_id", "seq")
        time_field, start_field = "ts", "ts"
    elif job.dataset == "flows":
        qs = Flow.objects.order_by("id")
        time_field, start_field = "last_seen", "first_seen"
    else:
        qs = Anomaly.objects.order_by("id")
        time_field, start_field = "ts", "ts"
    if "since" in f:
        qs = qs.filter(**{f"{time_field}__gte": parse_datetime(f["since"])})
    if "until" in f:
        qs = qs.filter(**{f"{start_field}__lt": parse_datetime(f["until"])})
    if "sensor" in f:
        qs = qs.filter(sensor__name=f["sensor"])
    if "ip" in f:
        qs = qs.filter(Q(src_ip=f["ip"]) | Q(dst_ip=f["ip"]))
    if "port" in f:
        qs = qs.filter(Q(src_port=f["port"]) | Q(dst_port=f["port"]))
    if "protocol" in f:
        qs = qs.filter(protocol__iexact=f["protocol"])
    if f.get("anomalies_only"):
        if job.dataset == "packets":
            qs = qs.filter(sensor__anomalies__packet_seq=F("seq"))
        elif job.dataset == "anomalies":
            qs = qs.filter(false_positive=False)
    return qs


def _incidents(f: dict[str, Any]) -> QuerySet:
    """Opened incidents (not candidates, as the API lists them), by id; since/until/sensor/ip filters."""
    qs = Incident.objects.opened().order_by("id")
    if "since" in f:
        qs = qs.filter(last_seen__gte=parse_datetime(f["since"]))
    if "until" in f:
        qs = qs.filter(first_seen__lt=parse_datetime(f["until"]))
    if "sensor" in f:
        qs = qs.filter(sensor__name=f["sensor"])
    if "ip" in f:
        qs = qs.filter(incident_has_address(f["ip"]))
    return qs


def dataset_rows(job: ExportJob) -> Iterator[dict[str, Any]]:
    """The job's rows as dicts in COLUMNS order, streamed from the database in chunks."""
    qs = dataset_queryset(job)
    columns = [c for c in COLUMNS[job.dataset] if c != "sensor"]
    yield from (
        qs.annotate(sensor_name=F("sensor__name")).values(*columns, "sensor_name").iterator(chunk_size=5000)
    )


def record_rows(job: ExportJob) -> Iterator[dict[str, Any]]:
    """The job's rows as its record format's records, streamed from the database in chunks."""
    qs = dataset_queryset(job)
    if job.format == "zeek-conn":
        yield from zeek_connections(qs)
        return
    if job.dataset == "incidents":
        yield from eve.incident_events(eve.with_flows(qs).iterator(chunk_size=2000))
        return
    for anomaly in qs.select_related("sensor").iterator(chunk_size=5000):
        yield eve.anomaly_event(anomaly, anomaly.sensor.name)


_ZEEK_PROTO = {"TCP": "tcp", "UDP": "udp", "ICMP": "icmp", "ICMPv6": "icmp"}
_CONN_FIELDS = ("id", "sensor_id", "protocol", "src_ip", "src_port", "dst_ip", "dst_port", "first_seen",
                "last_seen", "packets", "bytes", "community_id")  # fmt: skip


def zeek_connections(flows: QuerySet) -> Iterator[dict[str, Any]]:
    """Flows as Zeek conn.log records: the two directions of a conversation (one Community ID, one
    sensor) are one connection, its originator the direction seen first.

    Our flows count frames and their bytes on the wire: ``orig_pkts``/``resp_pkts`` are packets,
    ``orig_ip_bytes``/``resp_ip_bytes`` frame bytes (IP bytes plus the link header); what Netmon
    does not track (payload bytes, state, history, service) is unset (``-``).
    """
    rows = flows.order_by("sensor_id", "community_id", "first_seen", "id").values(*_CONN_FIELDS)
    group: list[dict[str, Any]] = []
    for row in rows.iterator(chunk_size=5000):
        if group and (not row["community_id"] or (row["sensor_id"], row["community_id"]) != (
            group[0]["sensor_id"], group[0]["community_id"]
        )):  # fmt: skip
            yield from _connections(group)
            group = []
        group.append(row)
    yield from _connections(group)


def _connections(group: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One conversation's flows (first seen first): the first is the originator, the flows back are
    its responder's; anything else stands alone."""
    while group:
        orig, rest = group[0], group[1:]
        back = [r for r in rest if r["src_ip"] == orig["dst_ip"] and r["dst_ip"] == orig["src_ip"]]
        group = [r for r in rest if r not in back]
        first = min([orig["first_seen"], *(r["first_seen"] for r in back)])
        last = max([orig["last_seen"], *(r["last_seen"] for r in back)])
        yield {
            "ts": first.timestamp(), "uid": f"CN{orig['id']:x}", "id.orig_h": orig["src_ip"],
            "id.orig_p": orig["src_port"], "id.resp_h": orig["dst_ip"], "id.resp_p": orig["dst_port"],
            "proto": _ZEEK_PROTO.get(orig["protocol"], "unknown_transport"),
            "duration": (last - first).total_seconds(), "orig_pkts": orig["packets"],
            "orig_ip_bytes": orig["bytes"], "resp_pkts": sum(r["packets"] for r in back),
            "resp_ip_bytes": sum(r["bytes"] for r in back), "community_id": orig["community_id"],
        }  # fmt: skip


def _counted(
    rows: Iterator[dict[str, Any]], counter: list[int], on_progress: Callable[[int], None]
) -> Iterator:
    n = 0
    for row in rows:
        n += 1
        if n % PROGRESS_EVERY == 0:
            counter[0] = n
            on_progress(n)
        yield row
    counter[0] = n


def _renamed(
    rows: Iterator[dict[str, Any]], counter: list[int], on_progress: Callable[[int], None]
) -> Iterator:
    """``_counted`` rows whose ``sensor_name`` column is exported as ``sensor``."""
    for row in _counted(rows, counter, on_progress):
        row["sensor"] = row.pop("sensor_name")
        yield row


def writer_keys(job: ExportJob) -> dict[str, Any]:
    if job.algorithm == EncryptionAlgorithm.RSA:
        pem = job.recipient.public_key_pem if job.recipient_id else job.recipient_public_key_pem
        return {"public_key_pem": pem}
    if job.algorithm == EncryptionAlgorithm.SHA:
        return {"hmac_key": hmac_key()}
    if job.uses_passphrase:
        return {"passphrase": unseal_passphrase(str(job.id))}
    return {"key_ring": key_ring(), "key_id": job.key_id}


def export_path(job: ExportJob) -> Path:
    extension = FILE_EXTENSIONS[job.format]
    return settings.NETMON_EXPORT_DIR / f"{job.id}{extension}.nmx"


def pcap_selection(job: ExportJob) -> evidence.Selection:
    """The kept frames a pcap export selects (raises capture.evidence.EvidenceGone with the reason)."""
    f = job.filters
    if "incident" in f:
        incident = Incident.objects.opened().select_related("sensor").filter(pk=f["incident"]).first()
        if incident is None:
            raise evidence.EvidenceGone(f"incident {f['incident']} does not exist (any more)")
        return detection_evidence.incident_pcap(incident)
    directory = settings.NETMON_EVIDENCE_DIR
    sensor = evidence.resolve_sensor(directory, f.get("sensor"))
    return evidence.select(
        directory,
        sensor,
        since=parse_datetime(f["since"]).timestamp() if "since" in f else None,
        until=parse_datetime(f["until"]).timestamp() if "until" in f else None,
        ip=f.get("ip"),
        port=f.get("port"),
    )


def _pieces(job: ExportJob, counter: list[int], on_progress: Callable[[int], None]) -> Iterator[bytes]:
    """The plaintext of the job's file, in pieces."""
    if job.dataset == ExportJob.Dataset.PCAP:
        selection = pcap_selection(job)
        counter[0] = selection.frames
        yield from selection.iter_pcap()
        return
    if job.format in RECORD_FORMATS:
        rows = _counted(record_rows(job), counter, on_progress)
    else:
        rows = _renamed(dataset_rows(job), counter, on_progress)
    yield from serialise(job.format, rows, COLUMNS[job.dataset])


def write_export(job: ExportJob, on_progress: Callable[[int], None] = lambda n: None) -> crypto.ExportInfo:
    """Stream the job's rows into its encrypted file. A failure leaves no file behind."""
    directory = settings.NETMON_EXPORT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    final = export_path(job)
    counter = [0]
    fd, tmp_name = tempfile.mkstemp(prefix=f".{job.id}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            writer = crypto.ExportWriter(handle, job.algorithm, **writer_keys(job))
            for piece in _pieces(job, counter, on_progress):
                writer.write(piece)
            info = writer.close()
        os.chmod(tmp_name, 0o600)
        os.replace(tmp_name, final)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    job.row_count = job.rows_written = counter[0]
    job.size_bytes = info.file_size
    job.plaintext_sha256 = info.plaintext_sha256
    job.file_sha256 = info.file_sha256
    job.file_path = str(final)
    return info


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def delete_export(job: ExportJob) -> None:
    if job.file_path:
        Path(job.file_path).unlink(missing_ok=True)
    job.delete()


def expire_exports(max_age_hours: int, now: datetime | None = None) -> int:
    """Delete files of exports older than ``max_age_hours``; their jobs stay, marked expired."""
    now = now or timezone.now()
    expired = 0
    for job in ExportJob.objects.filter(
        status=ExportJob.Status.SUCCEEDED, finished_at__lt=now - timedelta(hours=max_age_hours)
    ):
        if job.file_path:
            Path(job.file_path).unlink(missing_ok=True)
        job.status = ExportJob.Status.EXPIRED
        job.file_path = ""
        job.save(update_fields=["status", "file_path"])
        expired += 1
    return expired
