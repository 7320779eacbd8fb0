"""Detection's domain logic: training and versioning models, activation rules, status, anomaly marking."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from capture import services as capture_services
from capture import storage
from capture.choices import INCIDENT_TRANSITIONS, FeatureLevel, IncidentStatus
from capture.models import Packet
from capture.progress import Progress
from capture.records import RECORD_DTYPE
from detection import ml
from detection.features import FeatureExtractor, feature_names, neutralise, warm_medians
from detection.models import Anomaly, DetectionModel, Incident

log = logging.getLogger(__name__)

TRAIN_HINT = (
    "no active model: train one with `python manage.py train_detector --pcap FILE` or POST /api/models/train"
)
FEATURE_CHUNK = 100_000
# train()'s progress milestones: the data read and featurised, fitting starts (commands print it)
TRAIN_FIT_STAGE = 0.4


class ActivationError(ValueError):
    """A model that may not become active (not ready, trained at another feature level or on
    features this version no longer computes)."""


def artifact_digest(path: str | Path) -> str:
    """SHA-256 over a model's artifact directory: each file's relative name, size and bytes, in order."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        name = file.relative_to(root).as_posix().encode()
        digest.update(len(name).to_bytes(4, "big") + name + file.stat().st_size.to_bytes(8, "big"))
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def artifact_problem(model_row: DetectionModel) -> str | None:
    """Why the artifacts of ``model_row`` must not be loaded, or None when they may.

    Artifacts are pickles (joblib) and Keras files: loading one runs code. So a model is loaded only
    from under ``NETMON_MODEL_DIR`` (the path is read from the database, which is not trusted with
    code execution) and only when its files still have the digest recorded at training.
    """
    name = f"{model_row.kind} v{model_row.version}"
    model_dir = Path(settings.NETMON_MODEL_DIR).resolve()
    try:
        path = Path(model_row.artifact_path).resolve()
    except (OSError, RuntimeError):
        return f"{name}: its artifact path cannot be resolved: retrain it"
    if not model_row.artifact_path or not path.is_relative_to(model_dir) or path == model_dir:
        return (
            f"{name}: its artifacts are not under NETMON_MODEL_DIR ({model_dir}); models are loaded only "
            "from there: retrain it"
        )
    if not model_row.artifact_sha256:
        return f"{name} has no recorded artifact digest (trained by an older version of netmon): retrain it"
    return None


_verified: dict[tuple[str, str], tuple] = {}  # (path, digest) -> the files' (name, size, mtime) when checked


def _artifact_changed(model_row: DetectionModel) -> str | None:
    """A digest mismatch, checked again only when a file's size or modification time changed.

    /api/status asks on every call; hashing a model's files each time would cost milliseconds.
    """
    key = (model_row.artifact_path, model_row.artifact_sha256)
    try:
        files = sorted(p for p in Path(model_row.artifact_path).rglob("*") if p.is_file())
        signature = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
        if _verified.get(key) == signature:
            return None
        digest = artifact_digest(model_row.artifact_path)
    except OSError as exc:
        return f"{model_row.kind} v{model_row.version}: its artifacts cannot be read ({exc}): retrain it"
    if digest != model_row.artifact_sha256:
        return (
            f"{model_row.kind} v{model_row.version}: its artifact files changed since training "
            "(SHA-256 mismatch); refusing to load them: retrain it"
        )
    _verified[key] = signature
    return None


def outdated_reason(model_row: DetectionModel) -> str | None:
    """Why ``model_row`` cannot score, or None when it can: unsafe artifacts, or older features.

    A model learns the meaning of each feature column. When a release changes what the columns
    are (names are the contract), an older model would score nonsense, so it is refused instead.
    Artifacts outside the model directory, without a recorded digest, or whose files no longer
    match it are refused before anything is read from them (``artifact_problem``).
    """
    if problem := artifact_problem(model_row):
        return problem
    try:
        meta = json.loads((Path(model_row.artifact_path) / "model.json").read_text())
    except (OSError, ValueError):
        return _artifact_changed(model_row)  # unreadable: changed since training, or gone
    if meta.get("feature_names") == feature_names(model_row.feature_level):
        return _artifact_changed(model_row)
    return (
        f"{model_row.kind} v{model_row.version} was trained on the features of an older version of "
        f"netmon: retrain it (`python manage.py train_detector` or POST /api/models/train)"
    )


def active_models() -> list[DetectionModel]:
    return list(DetectionModel.objects.filter(is_active=True, status=DetectionModel.Status.READY))


def active_versions_text() -> str:
    """The active, ready versions ("isolation_forest v2, both v1"), or "none"."""
    rows = DetectionModel.objects.filter(is_active=True, status=DetectionModel.Status.READY).order_by("kind")
    return ", ".join(f"{row.kind} v{row.version}" for row in rows) or "none"


def no_model_reason(kind: str) -> str:
    """Why nothing scores with the configured ``ml_model`` ``kind``: its name, the active versions,
    and the ways out (a model trained with another kind is not used until the configuration says so)."""
    return (
        f"no active {kind} model (the configuration's ml_model is {kind}); active versions: "
        f"{active_versions_text()}. Train one with `python manage.py train_detector --model {kind} --pcap "
        "FILE`, or switch the configuration to a trained kind (`train_detector --use`, or set ml_model)"
    )


def in_use_text(row: DetectionModel, config: Any) -> str:
    """Whether ``row`` is the model the worker scores with, and if not, why and how to make it so."""
    if not row.is_active:
        return f"not in use: {row.kind} v{row.version} is not the active {row.kind} version"
    if config.ml_model != row.kind:
        return (
            f"not in use: the configuration's ml_model is {config.ml_model}; "
            f"use it with `train_detector --use` or by setting ml_model to {row.kind}"
        )
    if config.feature_level != row.feature_level:
        level = config.feature_level
        return f"not in use: the configuration's feature_level is {level}, not {row.feature_level}"
    return f"in use (ml_model {config.ml_model}, feature_level {config.feature_level})"


def check_model_kind(changes: dict[str, Any], current: Any) -> dict[str, str]:
    """The configuration's ``ml_model`` may only switch to a kind that has an active, ready model.

    Without one the worker stores packets unscored: detection would stop without a word. The way
    to a new kind is to train it first (which activates it), e.g. ``train_detector --use``.
    """
    kind = changes.get("ml_model")
    if kind is None or kind == current.ml_model:
        return {}
    if DetectionModel.objects.filter(kind=kind, is_active=True, status=DetectionModel.Status.READY).exists():
        return {}
    active = ", ".join(f"{m.kind} v{m.version}" for m in sorted(active_models(), key=lambda m: m.kind))
    return {
        "ml_model": (
            f"no active {kind} model (active versions: {active or 'none'}): switching to it would stop "
            f"detection. Train one first: `manage.py train_detector --model {kind} --use` (or "
            f'POST /api/models/train {{"model": "{kind}"}}, then activate it), then switch'
        )
    }


def detection_status() -> dict[str, Any]:
    """The detection part of /api/status: active model versions and recent anomaly count."""
    models = active_models()
    config = capture_services.get_config()
    since = timezone.now() - timedelta(hours=1)
    in_use = next((m for m in models if m.kind == config.ml_model), None)
    note = ""
    if in_use is None:
        note = TRAIN_HINT.replace("no active model", f"no active {config.ml_model} model")
    elif reason := outdated_reason(in_use):
        note = f"packets are stored but not scored: {reason}"
    elif in_use.feature_level != config.feature_level:
        note = (
            f"the active {in_use.kind} model was trained at feature level {in_use.feature_level}, "
            f"the configuration says {config.feature_level}: scoring uses the model's level"
        )
    return {
        "models": {
            m.kind: {
                "version": m.version,
                "feature_level": m.feature_level,
                "threshold": m.threshold,
                "id": m.pk,
            }
            for m in models
        },
        "model_in_use": in_use.kind if in_use else None,
        "models_note": note,
        "anomalies_last_hour": Anomaly.objects.filter(ts__gte=since, false_positive=False).count(),
    }


# --- training data -------------------------------------------------------------------------------
def records_from_pcaps(paths: Iterable[str], progress: Progress | None = None) -> Iterator[np.ndarray]:
    """Decoded records of capture files, in file order (what ``capture --pcap`` would publish).

    ``progress`` (its total: the files' bytes, ``capture.progress.files_size``) is told each batch
    and where reading is in the files.
    """
    from capture.decode import decode_frames
    from capture.pcapio import ReadStats, iter_frame_batches

    seq, done_bytes = 1, 0
    for path in paths:
        stats = ReadStats()
        for frames in iter_frame_batches(path, 65536, stats=stats):
            records = decode_frames(frames, seq)
            seq += len(records)
            if progress is not None:
                progress.advance(len(records), done_bytes + stats.input_bytes)
            yield records
        done_bytes += stats.input_bytes


def records_from_demo(
    count: int,
    seed: int = 1,
    chunk: int = 50_000,
    rate: float | None = None,
    progress: Progress | None = None,
) -> Iterator[np.ndarray]:
    """Normal traffic of the demo generator (no attacks injected): a model for demo mode.

    With the timing of `capture --demo` at ``rate`` packets/s (default: its default rate): the
    live demo stretches the simulated timeline to that rate, and a model trained on the simulated
    timing (10x denser at 200 packets/s) took every live conversation's gaps for anomalies.
    """
    from capture.demo import DEMO_RATE, DemoTraffic

    traffic = DemoTraffic(seed, attack_prob=0.0)
    factor = traffic.pps / (rate or DEMO_RATE)
    sim0 = None
    while count > 0:
        records = traffic.records(min(chunk, count))
        count -= len(records)
        if len(records):
            sim0 = float(records["ts"][0]) if sim0 is None else sim0
            records["ts"] = sim0 + (records["ts"] - sim0) * factor
        if progress is not None:
            progress.advance(len(records))
        yield records


class DatabaseTrainingData:
    """Stored packets in time order, without the ones flagged as real anomalies (iterable of chunks).

    Packets an operator marked as false positives stay in: the next model should learn that they
    are normal. Packets behind anomalies nobody disputed are left out, so attacks are not learnt.
    After iterating, ``false_positives_used`` says how many marked packets went in (training
    reports it: a wrong mark teaches the model to ignore an attack). ``progress`` is told each chunk.
    """

    def __init__(
        self,
        since: datetime | None,
        until: datetime | None,
        sensor: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.since, self.until, self.sensor = since, until, sensor
        self.progress = progress
        self.false_positives_used = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        marked = set(Anomaly.objects.filter(false_positive=True).values_list("sensor_id", "packet_seq"))
        for chunk in _stored_records(self.since, self.until, self.sensor):
            if marked:
                keys = zip(chunk["sensor_id"].tolist(), chunk["seq"].tolist(), strict=True)
                self.false_positives_used += sum(1 for key in keys if key in marked)
            if self.progress is not None:
                self.progress.advance(len(chunk["records"]))
            yield chunk["records"]


def records_from_database(
    since: datetime | None,
    until: datetime | None,
    sensor: str | None = None,
    progress: Progress | None = None,
) -> DatabaseTrainingData:
    """Stored packets for training (see ``DatabaseTrainingData``)."""
    return DatabaseTrainingData(since, until, sensor, progress)


def _stored_records(since: datetime | None, until: datetime | None, sensor: str | None) -> Iterator[dict]:
    qs = Packet.objects.order_by("sensor_id", "seq")
    if since:
        qs = qs.filter(ts__gte=since)
    if until:
        qs = qs.filter(ts__lt=until)
    if sensor:
        qs = qs.filter(sensor__name=sensor)
    flagged = set(Anomaly.objects.filter(false_positive=False).values_list("sensor_id", "packet_seq"))
    fields = ["sensor_id", "seq", "ts", "length", "payload_len", "ip_version", "protocol", "src_ip", "dst_ip",
              "src_port", "dst_port", "tcp_flags", "ttl", "vlan", "src_mac", "dst_mac"]  # fmt: skip
    chunk: list[dict] = []
    for row in qs.values(*fields).iterator(chunk_size=20_000):
        if (row["sensor_id"], row["seq"]) in flagged:
            continue
        chunk.append(row)
        if len(chunk) >= FEATURE_CHUNK:
            yield _chunk(chunk)
            chunk = []
    if chunk:
        yield _chunk(chunk)


def _chunk(rows: list[dict]) -> dict:
    return {
        "records": storage.records_from_packets(rows),
        "sensor_id": np.fromiter((r["sensor_id"] for r in rows), np.int64, len(rows)),
        "seq": np.fromiter((r["seq"] for r in rows), np.int64, len(rows)),
    }


def featurise(chunks: Iterable[np.ndarray], level: str) -> tuple[np.ndarray, np.ndarray]:
    """Training features of a record stream at ``level`` (one state, in order). Returns (X, records).

    Cold statistics (keys without history yet) are replaced by the median of the warm values, as
    scoring replaces them by the model's training median (the same value): the model learns the
    view it will score, and no training row teaches it that a cold figure is normal.
    """
    extractor = FeatureExtractor(level)
    state = extractor.new_state()
    xs, colds, recs = [], [], []
    for records in chunks:
        if len(records):
            X, cold = extractor.transform_cold(records, state)
            xs.append(X)
            colds.append(cold)
            recs.append(records)
    if not xs:
        return np.zeros((0, extractor.n_features), np.float32), np.zeros(0, RECORD_DTYPE)
    X, cold = np.concatenate(xs), np.concatenate(colds)
    return neutralise(X, cold, warm_medians(X, cold)), np.concatenate(recs)


# --- training ------------------------------------------------------------------------------------
def next_version(kind: str) -> int:
    return (DetectionModel.objects.filter(kind=kind).aggregate(v=Max("version"))["v"] or 0) + 1


def create_training(kind: str, level: str, source: str, user: Any = None) -> DetectionModel:
    """A registry row for a model about to be trained (status training)."""
    if kind not in ml.MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(ml.MODEL_KINDS)}")
    if level not in FeatureLevel.values:
        raise ValueError(f"unknown feature level {level!r}; known: {', '.join(FeatureLevel.values)}")
    with transaction.atomic():
        return DetectionModel.objects.create(
            kind=kind, version=next_version(kind), feature_level=level, source=source[:255],
            created_by=user if getattr(user, "is_authenticated", False) else None,
        )  # fmt: skip


def train(
    model_row: DetectionModel,
    chunks: Iterable[np.ndarray],
    *,
    activate: bool = True,
    progress: Callable[[float], None] = lambda p: None,
    **model_kw: Any,
) -> DetectionModel:
    """Featurise, fit, calibrate and save a model for ``model_row``; activate it if asked.

    On failure the row is marked failed with the reason and re-raised (ml.TrainingError for too
    little data).
    """
    started = time.perf_counter()
    try:
        progress(0.05)
        X, records = featurise(chunks, model_row.feature_level)
        progress(TRAIN_FIT_STAGE)
        model_kw.setdefault("false_incidents_per_day", settings.NETMON_FALSE_INCIDENTS_PER_DAY)
        model = ml.train_model(model_row.kind, X, FeatureExtractor(model_row.feature_level).names, records,
                               level=model_row.feature_level, **model_kw)  # fmt: skip
        progress(0.9)
        path = Path(settings.NETMON_MODEL_DIR) / f"{model_row.kind}-v{model_row.version}"
        if path.exists():
            shutil.rmtree(path)
        model.save(path)
        scores = model.score(X)
    except Exception as exc:
        model_row.status, model_row.error = DetectionModel.Status.FAILED, str(exc)[:2000]
        model_row.save(update_fields=["status", "error"])
        raise
    model_row.status = DetectionModel.Status.READY
    model_row.progress = 1.0
    model_row.threshold = float(model.threshold)
    model_row.packet_count = len(X)
    model_row.training_seconds = round(time.perf_counter() - started, 3)
    model_row.artifact_path = str(path)
    model_row.artifact_sha256 = artifact_digest(path)
    if len(records):
        model_row.data_from = datetime.fromtimestamp(float(records["ts"].min()), tz=UTC)
        model_row.data_until = datetime.fromtimestamp(float(records["ts"].max()), tz=UTC)
    model_row.metrics = {
        **(
            {"false_positives_used": chunks.false_positives_used}
            if isinstance(chunks, DatabaseTrainingData)
            else {}
        ),
        "n_features": int(X.shape[1]),
        "flagged_training_share": float(np.mean(scores > model.threshold)),
        "score_median": float(np.median(scores)),
        "quantile": model.quantile,
        "calibration": model.calibration,
    }
    model_row.save()
    progress(1.0)
    if activate:
        try:
            activate_model(model_row)
        except ActivationError as exc:  # trained for another level: kept, not activated
            log.warning("%s", exc)
    return model_row


def activate_model(model_row: DetectionModel, force_level: bool = False) -> DetectionModel:
    """Make ``model_row`` the one active version of its kind (refusing a feature-level mismatch)."""
    if model_row.status != DetectionModel.Status.READY:
        raise ActivationError(f"{model_row} is {model_row.status}, not ready")
    if reason := outdated_reason(model_row):
        raise ActivationError(reason)
    level = capture_services.get_config().feature_level
    if model_row.feature_level != level and not force_level:
        raise ActivationError(
            f"{model_row.kind} v{model_row.version} was trained at feature level {model_row.feature_level}, "
            f"but the configured feature_level is {level}: retrain at {level} or change the configuration"
        )
    with transaction.atomic():
        DetectionModel.objects.filter(kind=model_row.kind, is_active=True).exclude(pk=model_row.pk).update(
            is_active=False
        )
        model_row.is_active = True
        model_row.save(update_fields=["is_active"])
    return model_row


def mark_false_positive(anomaly: Anomaly, value: bool = True, user: Any = None) -> Anomaly:
    """Mark (or unmark) one anomaly as a false positive, recording who and when."""
    mark_false_positives(Anomaly.objects.filter(pk=anomaly.pk), value, user)
    anomaly.refresh_from_db(fields=["false_positive", "false_positive_by", "false_positive_at"])
    return anomaly


def mark_false_positives(anomalies: Any, value: bool, user: Any) -> int:
    """Mark (or unmark) a queryset of anomalies; returns how many changed. Unmarking clears who/when."""
    by = user if value and getattr(user, "is_authenticated", False) else None
    return anomalies.exclude(false_positive=value).update(
        false_positive=value, false_positive_by=by, false_positive_at=timezone.now() if value else None
    )


class TransitionError(ValueError):
    """An incident status change the transition rule does not allow (409 over the API)."""


def allowed_statuses_text() -> str:
    return ", ".join(IncidentStatus.values)


def change_incident_status(incident: Incident, status: str, user: Any = None) -> Incident:
    """Move ``incident`` to ``status`` (``INCIDENT_TRANSITIONS``), recording who and when.

    Marking it a false positive marks its anomalies false positives (they count as normal in the
    next training); reopening a false positive takes that mark back. Dashboards get
    ``incident_updated`` once the change is committed. Raises ValueError for an unknown status and
    TransitionError for a change the rule does not allow; both say what is allowed.
    """
    from detection import live  # live publishes through capture.events: only after the commit

    if status not in IncidentStatus.values:
        raise ValueError(f"unknown status {status!r}; allowed: {allowed_statuses_text()}")
    with transaction.atomic():
        incident = Incident.objects.select_for_update().get(pk=incident.pk)
        allowed = INCIDENT_TRANSITIONS[incident.status]
        if status not in allowed:
            raise TransitionError(
                f"cannot go from {incident.status} to {status}; allowed: {', '.join(allowed)}"
            )
        previous = incident.status
        incident.status = status
        incident.status_changed_by = user if getattr(user, "is_authenticated", False) else None
        incident.status_changed_at = timezone.now()
        incident.save(update_fields=["status", "status_changed_by", "status_changed_at"])
        if status == IncidentStatus.FALSE_POSITIVE:
            mark_false_positives(incident.anomalies.all(), True, user)
        elif previous == IncidentStatus.FALSE_POSITIVE:
            mark_false_positives(incident.anomalies.all(), False, user)
        pk = incident.pk
        transaction.on_commit(lambda: live.broadcast_incidents([], [pk]))
    return incident


def incident_has_address(address: str) -> Q:
    """Incidents with ``address`` among their sources or targets (the API's and the exports' ``ip``)."""
    # Sources and targets are JSON lists of text: a source is the address, a target the address
    # or "address:port/proto". The source column is indexed; targets are matched as text.
    quoted = f'"{address}'
    return (
        Q(src_ip=address)
        | Q(sources__icontains=f'"{address}"')
        | Q(targets__icontains=f'{quoted}"')
        | Q(targets__icontains=f"{quoted}:")
    )
