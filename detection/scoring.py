"""Scoring a batch with the model in use: scores, which packets are over the threshold, and why.

The model in use is the active version of the configured ``ml_model`` kind, loaded once per
process (``warm_up`` loads it before a worker forks its pool). Until one is trained,
``score_batch`` returns None: packets are still stored, and /api/status says how to train one.
Stateful features continue the sensor's state (kept in Redis by detection.ingest). Statistics
still cold (a new sensor, host, service, host pair or socket: ``features.COLD_PACKETS``) are
replaced by the model's training medians before scoring and are never named in an explanation.
What becomes of the flagged packets is detection.anomalies' and detection.incidents' business.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from capture import services as capture_services
from capture.models import Sensor
from capture.records import Batch, PacketColumns, empty_records
from detection import ml, services
from detection.features import FeatureExtractor, FeatureState, describe, key_kind, neutralise
from detection.models import DetectionModel

log = logging.getLogger(__name__)


TOP_FEATURES = 3  # features named per flagged packet for the incident's kind evidence

# (positions among a batch's flagged rows, their records) -> (text, contributions as JSON text) each
Explain = Callable[[np.ndarray, np.ndarray], list[tuple[str, str]]]
# positions among a batch's flagged rows -> their scores with the service's statistics at their normal
# value (``scores_without_service``)
WithoutService = Callable[[np.ndarray], np.ndarray]


@dataclass
class ScoredBatch:
    """Scores of one batch, which of its packets are anomalies, and the feature state after it.

    Every flagged row gets the cheap part of an explanation, the names of the features that
    contributed most to its score (``top_features``, the kind evidence of its incident). The
    worded explanation and the contributions JSON cost ~35 us a row; they are made on demand by
    ``explain``, for the representatives of each incident only (detection.anomalies).
    """

    scores: np.ndarray
    threshold: float
    is_anomaly: np.ndarray
    top_features: list[tuple[str, ...]]  # per flagged row (in row order): its top feature names
    explain: Explain
    model_kind: str
    model_versions: dict[str, int]
    feature_state: bytes
    # per row: 1 its source opened its conversation, 0 its destination, -1 unknown (the feature
    # state remembers openers across reads: ``FeatureExtractor.transform_opened``); empty: unknown
    opened: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    # per flagged row on demand: its score had its service's statistics been normal (None: unknown,
    # every flagged row is an anomaly of its own); detection.incidents asks it of other clients'
    # packets to a service under attack (``incidents.set_effects_apart``)
    without_service: WithoutService | None = None

    @property
    def flagged(self) -> np.ndarray:
        """Indices of the rows over the threshold, in row order."""
        return np.flatnonzero(self.is_anomaly)

    def anomaly_scores(self) -> np.ndarray:
        """Per row, its score if it is flagged, else NaN (``Packet.anomaly_score``)."""
        return np.where(self.is_anomaly, self.scores, np.nan)

    def select(self, rows: np.ndarray) -> ScoredBatch:
        """The scores of the given rows, renumbered from 0 (the stored part of a read)."""
        kept = np.flatnonzero(np.isin(self.flagged, rows))  # positions among the flagged rows
        explain = self.explain

        def explain_kept(positions: np.ndarray, records: np.ndarray) -> list[tuple[str, str]]:
            return explain(kept[positions], records)

        without = self.without_service

        def without_kept(positions: np.ndarray) -> np.ndarray:
            assert without is not None
            return without(kept[positions])

        return ScoredBatch(
            scores=self.scores[rows],
            threshold=self.threshold,
            is_anomaly=self.is_anomaly[rows],
            top_features=[self.top_features[k] for k in kept.tolist()],
            explain=explain_kept,
            model_kind=self.model_kind,
            model_versions=self.model_versions,
            feature_state=self.feature_state,
            opened=self.opened[rows] if len(self.opened) else self.opened,
            without_service=None if without is None else without_kept,
        )


class _ModelCache:
    """The model in use, loaded once per worker process and reloaded when the active version changes.

    Which version is active is asked of the database for every batch (one indexed query per
    thousands of packets), so switching or deactivating a model takes effect on the next batch.
    A model is known by its row's id, path and artifacts' digest together: SQLite hands a
    rolled-back row's id out again, and a model retrained under the same version number is saved
    at the same path.
    """

    def __init__(self) -> None:
        self.row: DetectionModel | None = None
        self.model: ml.AnomalyModel | None = None
        self.extractor: FeatureExtractor | None = None

    def current(self) -> tuple[DetectionModel, ml.AnomalyModel, FeatureExtractor] | None:
        kind = capture_services.get_config().ml_model
        ready = DetectionModel.Status.READY
        row = DetectionModel.objects.filter(kind=kind, is_active=True, status=ready).first()
        if row is None:
            self.row = self.model = self.extractor = None
            return None
        if self.row is None or _identity(row) != _identity(self.row):
            if reason := services.outdated_reason(row):
                # Logged once per version: the row is remembered below. /api/status says it too.
                log.error("not scoring: %s", reason)
                self.model = self.extractor = None
            else:
                self.model = ml.load_model(row.artifact_path)
                self.extractor = FeatureExtractor(row.feature_level)
        self.row = row
        if self.model is None or self.extractor is None:
            return None
        return self.row, self.model, self.extractor


def _identity(row: DetectionModel) -> tuple[int, str, str]:
    return row.pk, row.artifact_path, row.artifact_sha256


_models = _ModelCache()


def warm_up() -> DetectionModel | None:
    """Load the model in use and score a few records with it; the model's row, or None.

    The first read of a new process otherwise pays ~1 s for it (reading the artifacts, loading
    the compiled forest, ranking and feature code), which shows as a latency spike. A worker calls this
    in its main process before it starts its pool, so the processes it forks, and those that
    later replace them, start with all of that in memory.
    """
    current = _models.current()
    if current is None:
        return None
    row, model, extractor = current
    sample = empty_records(64)
    sample["ts"] = np.arange(64, dtype=np.float64)
    X, _ = score_records(model, extractor, sample, extractor.new_state())
    model.score_top(X, TOP_FEATURES)  # as a read is scored: the compiled ranking of flagged rows too
    return row


def score_records(
    model: ml.AnomalyModel, extractor: FeatureExtractor, records: np.ndarray, state: FeatureState
) -> tuple[np.ndarray, np.ndarray]:
    """(features, scores) of records, continuing ``state``: the one code path for live and offline
    scoring. The features are those the model saw: cold statistics replaced (``neutralise_cold``)."""
    X, _, scores = _score(model, extractor, records, state)
    return X, scores


def _score(
    model: ml.AnomalyModel, extractor: FeatureExtractor, records: np.ndarray, state: FeatureState
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``score_records`` and the cold mask beside (the explanations leave those features out)."""
    X, cold = extractor.transform_cold(records, state)
    neutralise_cold(model, X, cold)
    return X, cold, model.score(X)


def neutralise_cold(model: ml.AnomalyModel, X: np.ndarray, cold: np.ndarray) -> np.ndarray:
    """``X`` with its cold statistics (``cold``: ``transform_cold``'s mask) replaced by the model's
    training median of each feature, in place: a statistic without history raises nothing."""
    return neutralise(X, cold, model.stats["p50"])


class _LiveStates:
    """The feature state each sensor's last read in this process left, beside the bytes saved of it.

    A read continues its sensor's saved state (``SensorState.features``, kept in Redis by
    detection.ingest). Parsing those bytes again cost each read about as much as saving them: 15 ms
    for the 7 MB a port scan leaves (a service and a socket per port), 4-8 ms for benign traffic's,
    i.e. 3-7 us a packet with reads of 2,000 packets. When the bytes a read starts from are those the
    previous read here left (the next read of a drain, or the next drain while no other worker took
    the sensor over), it continues from that object instead. A read takes the object out while it
    uses it, and the bytes decide: a read that failed after scoring, or whose state never reached
    Redis, leaves bytes that the saved ones are not equal to, so the next read parses what was saved.
    """

    def __init__(self) -> None:
        self._by_sensor: dict[str, tuple[bytes, FeatureState]] = {}

    def take(self, sensor: str, raw: bytes, extractor: FeatureExtractor) -> FeatureState | None:
        """The state ``raw`` was saved from, if this process has it (and takes it out), else None."""
        entry = self._by_sensor.pop(sensor, None)
        if entry is None or not raw:
            return None
        saved, state = entry
        if state.level != extractor.level or not (saved is raw or saved == raw):
            return None
        return state

    def put(self, sensor: str, raw: bytes, state: FeatureState) -> None:
        """``state`` was saved as ``raw`` (and is not changed any more until ``take`` hands it out)."""
        self._by_sensor[sensor] = (raw, state)


_live_states = _LiveStates()


def load_state(raw: bytes, extractor: FeatureExtractor) -> FeatureState:
    """A sensor's saved feature state for ``extractor``, or a cold one (none saved, or of another level)."""
    if raw:
        try:
            state = FeatureState.from_bytes(raw)
            if state.level == extractor.level:
                return state
        except Exception as exc:  # a state from another version: start cold rather than fail
            log.warning("feature state unusable, starting fresh: %s", exc)
    return extractor.new_state()


def score_batch(sensor: Sensor, batch: Batch, state: Any) -> ScoredBatch | None:
    """Score ``batch`` with the model in use (None while none is active)."""
    current = _models.current()
    if current is None:
        return None
    row, model, extractor = current
    fstate = _live_states.take(sensor.name, state.features, extractor)
    if fstate is None:
        fstate = load_state(state.features, extractor)
    X, cold, opened = extractor.transform_opened(batch.records, fstate)
    neutralise_cold(model, X, cold)
    # The flagged rows' top features come from the scoring pass itself (``score_top``): running both
    # models again on them cost a flood more than scoring all of its packets.
    scores, top = model.score_top(X, TOP_FEATURES)
    is_anomaly = scores > model.threshold
    # The rows asked for are picked out of the read's features when asked (a few representatives
    # per incident): copying every flagged row up front cost a flood a copy of most of its features.
    flagged = np.flatnonzero(is_anomaly)

    def explain(positions: np.ndarray, records: np.ndarray) -> list[tuple[str, str]]:
        if not len(positions):
            return []
        rows = flagged[positions]
        return model.explain_records(X[rows], records, columns=PacketColumns.of(records), cold=cold[rows])

    def without_service(positions: np.ndarray) -> np.ndarray:
        return scores_without_service(model, X[flagged[positions]])

    saved_state = fstate.to_bytes()
    _live_states.put(sensor.name, saved_state, fstate)

    return ScoredBatch(
        scores=scores,
        threshold=float(model.threshold),
        is_anomaly=is_anomaly,
        top_features=_names(model, top),
        explain=explain,
        model_kind=row.kind,
        model_versions={row.kind: row.version},
        feature_state=saved_state,
        opened=opened,
        without_service=without_service,
    )


def service_columns(names: list[str]) -> np.ndarray:
    """Per feature, whether it is a statistic of the packet's *service* (its server end's host, port
    and protocol: every client's packets to it together), not of its client, conversation or packet."""
    return np.array([key_kind(describe(name)) == "service" for name in names], dtype=bool)


def scores_without_service(model: ml.AnomalyModel, X: np.ndarray) -> np.ndarray:
    """The scores of feature rows ``X`` (as scored) with their service's statistics set to their
    training median: what the packets score on their own (header, socket, conversation and client
    statistics). A benign client's packet to a flooded service carries the flood's figures in its
    service's statistics (\"127.0.0.2:8081/tcp carried about 9,970 packets over the last ~10 s\");
    at or under the threshold here, nothing of its own is abnormal (``incidents.set_effects_apart``)."""
    if not len(X):
        return np.zeros(0)
    service = _service_columns(model)
    normal = np.array(X, dtype=np.float32, copy=True)
    normal[:, service] = np.asarray(model.stats["p50"], dtype=np.float32)[service]
    return model.score(normal)


_SERVICE_COLUMNS: dict[tuple[str, ...], np.ndarray] = {}  # feature names -> service_columns (per model)


def _service_columns(model: ml.AnomalyModel) -> np.ndarray:
    key = tuple(model.feature_names)
    if key not in _SERVICE_COLUMNS:
        _SERVICE_COLUMNS[key] = service_columns(model.feature_names)
    return _SERVICE_COLUMNS[key]


def top_feature_names(
    model: ml.AnomalyModel, X: np.ndarray, top: int = TOP_FEATURES
) -> list[tuple[str, ...]]:
    """Per row, the names of the ``top`` features that contribute most to its score, largest first."""
    if not len(X):
        return []
    return _names(model, model.top_features(X, top))


def _names(model: ml.AnomalyModel, idx: np.ndarray) -> list[tuple[str, ...]]:
    """Feature indices (rows of ``top``) -> their names."""
    if not len(idx):
        return []
    # Spelled once per distinct row of indices (a flood repeats a few), not per flagged row.
    names = model.feature_names
    if len(names) ** idx.shape[1] >= 2**63:  # too many to number each row with one integer
        return [tuple(names[j] for j in row) for row in idx.tolist()]
    code = np.zeros(len(idx), dtype=np.int64)
    for column in idx.T:  # one integer per row of indices
        code = code * len(names) + column
    _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    spelled = [tuple(names[j] for j in row) for row in idx[first].tolist()]
    return list(map(spelled.__getitem__, inverse.reshape(-1).tolist()))
