"""Anomaly detection models over feature matrices, with calibrated thresholds and explanations.

All models share one interface (``AnomalyModel``): ``fit(X)`` on benign traffic, ``score(X)``
(float64, higher = more anomalous), ``threshold`` calibrated at fit time, ``explain(X)`` (the
features that made rows anomalous), ``save(dir)`` / ``load_model(dir)``.

Pipeline: a ``RobustScaler`` learnt on the training data (signed log1p of the value over a
per-feature unit, to tame heavy-tailed rates and counts while small values such as times in
seconds keep their resolution, then median / IQR standardisation with a floor, clipped to
+-``Z_CLIP``) feeds

``isolation_forest``
    scikit-learn's IsolationForest on whitened principal components; explanation = the features whose
    scaled values lie furthest outside the training range (0.5 %..99.5 % quantiles).
``autoencoder``
    a dense Keras autoencoder trained with TensorFlow (imported lazily, only to train), whose
    weights are exported so scoring is plain NumPy; score = mean squared reconstruction error,
    explanation = per-feature reconstruction error.
``both``
    the two combined: each model's score divided by its own threshold, on a log scale normalised
    by that model's training spread, then a weighted mean, the forest weighing ``FOREST_WEIGHT``
    (see ``CombinedModel``).

Threshold: calibrated to a target rate of false incidents (``false_incidents_per_day``, the
setting ``NETMON_FALSE_INCIDENTS_PER_DAY`` passed in by the caller): ``fit`` given the rows'
packet records holds out the last quarter of the rows (time order), fits on the rest, and
``detection.calibration.calibrate`` picks the threshold from the held-out scores (a generalized
Pareto tail and the incident opening rule; never flagging more than 1 - ``quantile`` of them).
Without records, or with fewer than 10,000 rows, it falls back to the ``quantile`` (default
99.5 %) of the training scores; ``calibration`` says which and why.

Explanations in words (``explain_records``, ``explain_text``) cite only values outside what
training saw (below its 1 % or above its 99 % point, a flag set on under 1 % of training packets,
a code under 1 % of them carried or never seen), ranked by how far outside, the model's top
contributors first; the ``contributions`` stored beside them stay the model's own top three.

Artifacts are JSON + NPZ (no pickle), except the fitted IsolationForest, stored with joblib
(scikit-learn's trees have no other stable export; the file is only ever loaded from the
model directory the application wrote, and the scikit-learn version is checked).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from capture.choices import FeatureLevel, MlModel
from detection import calibration as calib
from detection.features import FeatureSpec, client_side, describe
from detection.wording import Unit, format_value

if TYPE_CHECKING:
    from capture.records import PacketColumns

MIN_TRAIN_SAMPLES = 1000
DEFAULT_QUANTILE = 0.995
DEFAULT_FALSE_INCIDENTS_PER_DAY = 24.0  # netmon.settings.NETMON_FALSE_INCIDENTS_PER_DAY
# The forest's weight in ``both`` (the autoencoder's is the rest). On the labeled captures of real
# tools (bench/kitsune.py) the autoencoder alone ranks every attack at least as well as the two
# averaged; an equal-weight forest pulled a brute force down to 95 % of its packets caught at 1 %
# FPR (the forest alone: 11 %), a slowloris to 96 %. At 0.1-0.3 the worst attack rose to 97-98 %
# on both captures; 0.2 keeps the forest's voice where the two moderately agree.
FOREST_WEIGHT = 0.2
_EQUAL_WEIGHT = 0.5  # what models saved before FOREST_WEIGHT combined with (their threshold assumes it)
Z_CLIP = 20.0  # scaled features are clipped to +-this: bounds the autoencoder's error per feature
_SCALE_FLOOR = 0.1  # in log1p units: a feature constant in training still gets a finite scale
FORMAT_VERSION = 1
MODEL_KINDS = tuple(MlModel)  # the vocabulary (capture/choices.py), re-exported
_CHUNK = 65536
# flagged rows per block of contributions in score_top: 256 rows of ~160 float64 features, ~330 kB per
# temporary, stay in the CPU's cache (2,048 rows did not: their top features cost 10-15 % more)
_TOP_BLOCK = 256


class TrainingError(ValueError):
    """Training data unusable (too few rows, wrong shape)."""


# contributions_as_dicts' dict as json.dumps writes it (float repr is JSON's number syntax)
_JSON_ITEM = '{{"feature": {}, "index": {}, "contribution": {!r}, "value": {!r}, "scaled": {!r}}}'


class Contribution(NamedTuple):
    """One feature's share in a row's anomaly: raw value, scaled value and contribution."""

    # A named tuple, not a dataclass: a flood makes three of these per flagged packet.

    feature: str
    index: int
    contribution: float
    value: float
    scaled: float


def _slog(x: np.ndarray, unit: np.ndarray | float = 1.0) -> np.ndarray:
    """sign(x) * log1p(|x| / unit): the scaler's log units (``unit`` per feature, last axis)."""
    return np.sign(x) * np.log1p(np.abs(x) / unit)


def _knees(X: np.ndarray) -> np.ndarray:
    """Per column, the unit below which ``_slog`` is about linear: the median of the non-zero
    absolute values where that is below 1, else 1.

    With a unit of 1, values measured in seconds or shares (almost all below 0.1) map to about
    themselves, so the whole 0..0.1 range fits in a tenth of the spread floor: a flood's 0.27 ms
    jitter against a normal 11..47 ms scaled to about -0.1. Over their own median they spread
    over log units like the large counts do.
    """
    knee = np.ones(X.shape[1])
    for j in range(X.shape[1]):  # column by column: no float64 copy of the whole sample
        values = np.abs(X[:, j].astype(np.float64))
        values = values[values > 0]
        if len(values):
            knee[j] = min(float(np.median(values)), 1.0)
    return knee


class RobustScaler:
    """Signed log1p of x / unit, then (x - median) / scale, clipped to +-Z_CLIP.

    ``unit`` is per feature (``_knees``): the median of the non-zero absolute training values
    where that is below 1, else 1; a scaler saved before units existed loads with ones.
    ``scale`` is IQR / 1.349 (the standard deviation for normal data); where that is below the
    floor (features that are mostly constant, e.g. rare flags) the standard deviation of the
    0.5..99.5 % clipped values is used, and at least ``_SCALE_FLOOR``.
    """

    def __init__(self) -> None:
        self.center = np.zeros(0)
        self.scale = np.ones(0)
        self.unit = np.ones(0)

    def fit(self, X: np.ndarray) -> RobustScaler:
        self.unit = _knees(X)
        L = self.log(X)
        q = np.quantile(L, [0.005, 0.25, 0.5, 0.75, 0.995], axis=0)
        self.center = q[2]
        scale = (q[3] - q[1]) / 1.349
        clipped_std = np.clip(L, q[0], q[4]).std(axis=0)
        scale = np.where(scale < _SCALE_FLOOR, clipped_std, scale)
        self.scale = np.maximum(scale, _SCALE_FLOOR)
        return self

    def log(self, X: np.ndarray) -> np.ndarray:
        """The values in the scaler's log units (before centring and scaling), float64."""
        return _slog(np.asarray(X, np.float64), self.unit)

    def transform(self, X: np.ndarray) -> np.ndarray:
        out = np.empty(X.shape, np.float32)
        # In row blocks: the float64 temporaries of a million-row training set would take gigabytes.
        for lo in range(0, len(X), _CHUNK):
            Z = (self.log(X[lo : lo + _CHUNK]) - self.center) / self.scale
            out[lo : lo + _CHUNK] = np.clip(Z, -Z_CLIP, Z_CLIP, out=Z)
        return out


class AnomalyModel:
    """Base class: scaler, training statistics, threshold, explanations and artifacts."""

    kind = "base"

    def __init__(
        self,
        feature_names: Sequence[str],
        *,
        quantile: float = DEFAULT_QUANTILE,
        seed: int = 0,
        level: str | None = None,
        false_incidents_per_day: float = DEFAULT_FALSE_INCIDENTS_PER_DAY,
    ) -> None:
        if not 0.5 <= quantile < 1.0:
            raise ValueError("quantile must be in [0.5, 1)")
        if not (math.isfinite(false_incidents_per_day) and false_incidents_per_day > 0):
            raise ValueError("false_incidents_per_day must be a number > 0")
        self.feature_names = list(feature_names)
        self.quantile = float(quantile)
        self.false_incidents_per_day = float(false_incidents_per_day)
        self.calibration: dict[str, Any] = {}  # how the threshold was chosen (detection.calibration)
        self.seed = int(seed)
        self.level = level
        self.scaler = RobustScaler()
        self.threshold = math.inf
        self.stats: dict[str, np.ndarray] = {}
        self.trained_samples = 0
        self.train_seconds = 0.0

    # -- training

    def fit(self, X: np.ndarray, records: np.ndarray | None = None) -> AnomalyModel:
        """Learn scaler, statistics and model from benign rows; calibrate the threshold.

        ``records``: the rows' packet records (time order), for the calibration to a false-incident
        rate on a held-out last part (``detection.calibration``); without them, or with too few
        rows, the threshold is the ``quantile`` of the training scores.
        """
        X = self._check(X, training=True)
        if records is not None and len(records) != len(X):
            raise TrainingError(f"{len(records):,} records for {len(X):,} feature rows")
        t0 = time.perf_counter()
        cut, reason = calib.holdout(len(X), None if records is None else records["ts"])
        Z = self._fit_common(X[:cut])
        scores = self._fit_scaled(Z)
        if scores is None:
            scores = self._score_scaled(Z)
        if reason is None:
            assert records is not None
            validation = self.score(X[cut:])
            try:
                self.calibration = calib.calibrate(
                    validation, records["ts"][cut:], calib.client_entities(records[cut:]),
                    self.false_incidents_per_day, floor_quantile=self.quantile,
                )  # fmt: skip
            except calib.CalibrationError as exc:
                self.calibration = calib.quantile_rule(
                    validation, self.quantile, f"{exc}; quantile rule on the validation scores"
                )
        else:
            self.calibration = calib.quantile_rule(scores, self.quantile, reason)
        self.threshold = float(self.calibration["threshold"])
        self.trained_samples = cut
        self.train_seconds = time.perf_counter() - t0
        return self

    def _fit_common(self, X: np.ndarray) -> np.ndarray:
        """Fit the scaler and the per-feature training statistics; returns the scaled rows."""
        # Quantiles of a 200k-row sample are as good as of all rows and much cheaper.
        rng = np.random.default_rng(self.seed)
        sample = X if len(X) <= 200_000 else X[np.sort(rng.choice(len(X), 200_000, replace=False))]
        self.scaler.fit(sample)
        Z = self.scaler.transform(X)
        Zs = Z if sample is X else self.scaler.transform(sample)
        raw_q = np.quantile(sample.astype(np.float64), [0.01, 0.5, 0.99], axis=0)
        z_q = np.quantile(Zs, [0.005, 0.995], axis=0)
        self.stats = {
            "p01": raw_q[0],
            "p50": raw_q[1],
            "p99": raw_q[2],
            "mean": X.mean(axis=0, dtype=np.float64),
            "max": X.max(axis=0).astype(np.float64),
            "z_lo": z_q[0].astype(np.float64),
            "z_hi": z_q[1].astype(np.float64),
        }
        self.stats.update(_code_shares(sample, self.feature_names))
        return Z

    def _check(self, X: np.ndarray, training: bool = False) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise TrainingError(f"expected rows of {len(self.feature_names)} features, got shape {X.shape}")
        if training and len(X) < MIN_TRAIN_SAMPLES:
            raise TrainingError(f"need at least {MIN_TRAIN_SAMPLES:,} packets to train, got {len(X):,}")
        if not np.isfinite(X).all():
            X = np.nan_to_num(X.astype(np.float32), nan=0.0, posinf=1e12, neginf=-1e12)
        return X

    # -- scoring

    def score(self, X: np.ndarray) -> np.ndarray:
        """Anomaly score per row (float64, higher = more anomalous)."""
        X = self._check(X)
        out = np.empty(len(X))
        for lo in range(0, len(X), _CHUNK):
            out[lo : lo + _CHUNK] = self._score_scaled(self.scaler.transform(X[lo : lo + _CHUNK]))
        return out

    def score_top(self, X: np.ndarray, top: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """``score`` of every row, and ``top_features`` of the rows over the threshold (in row
        order), from one pass: the scaled rows and what the models computed to score them (the
        autoencoder's errors, the forest's scores) are what the contributions are made of, so the
        flagged rows of a flood are not transformed and run through both models a second time."""
        X = self._check(X)
        scores = np.empty(len(X))
        tops = [np.empty((0, min(top, X.shape[1])), np.intp)]
        for lo in range(0, len(X), _CHUNK):
            Z = self.scaler.transform(X[lo : lo + _CHUNK])
            parts = self._score_parts(Z)
            chunk = self._score_from_parts(parts)
            scores[lo : lo + _CHUNK] = chunk
            tops.append(self._top_from_parts(Z, parts, np.flatnonzero(chunk > self.threshold), top))
        return scores, np.concatenate(tops)

    def is_anomalous(self, X: np.ndarray) -> np.ndarray:
        """score > threshold, per row."""
        return self.score(X) > self.threshold

    # -- explanations

    def explain(self, X: np.ndarray, top: int = 3) -> list[list[Contribution]]:
        """For each row, the ``top`` features that contribute most to its score, largest first."""
        idx, C, V, Z = self._ranked(X, top)
        names = self.feature_names
        return [
            [Contribution(names[j], j, c, x, z) for j, c, x, z in zip(*parts, strict=True)]
            for parts in zip(idx.tolist(), C.tolist(), V.tolist(), Z.tolist(), strict=True)
        ]

    def _contributors(
        self, X: np.ndarray, cold: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The checked rows, their scaled values, the contribution of every feature and, per row,
        the feature indices by contribution, largest first: arrays of shape (rows, features).
        Features marked in ``cold`` (statistics without history, detection.features) rank last."""
        X = self._check(np.atleast_2d(X))
        Z = self.scaler.transform(X)
        C = self._contributions(Z)
        if cold is not None:
            C[cold] = -np.inf  # ranked last; per-packet features are never cold, so never reached
        # One stable argsort of the whole matrix ranks every row as a per-row argsort would.
        return X, Z, C, np.argsort(-C, axis=1, kind="stable")

    def _ranked(self, X: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per row, the ``top`` feature indices by contribution (largest first), and their
        contributions, raw values and scaled values: arrays of shape (rows, top)."""
        X, Z, C, order = self._contributors(X)
        idx = order[:, :top]
        rows = np.arange(len(X))[:, None]
        return idx, C[rows, idx], X[rows, idx], Z[rows, idx]

    def top_features(self, X: np.ndarray, top: int = 3) -> np.ndarray:
        """Per row, the indices of the ``top`` features by contribution, largest first (as
        ``explain`` ranks them): shape (rows, top). No values, no words: cheap enough for every
        flagged packet of a flood."""
        return _top_indices(self._contributions(self.scaler.transform(self._check(np.atleast_2d(X)))), top)

    def explain_records(
        self,
        X: np.ndarray,
        records: np.ndarray,
        top: int = 3,
        columns: PacketColumns | None = None,
        cold: np.ndarray | None = None,
    ) -> list[tuple[str, str]]:
        """(text, contributions as JSON text) per row: ``explain_text`` of the row and the JSON of
        ``contributions_as_dicts`` of ``explain``, for many rows at once. ``columns``: the records'
        ``PacketColumns`` when the caller has them already; ``cold``: the mask of cold statistics,
        which are never a reason.

        A flood flags thousands of packets per read, so this works on columns: one ranking of the
        contributions and one of the reasons for all rows, each value's sentence part worded once,
        and the JSON written as text (json.dumps of a list of dicts per row cost more than the
        scoring).
        """
        X, Z, C, order = self._contributors(X, cold)
        wording = _Wording(self)
        present = None if cold is None else ~cold  # a cold statistic is never a reason
        texts = wording.texts(_contexts(records, columns), X, *wording.reasons(X, order, top, present))
        idx = order[:, :top]
        rows = np.arange(len(X))[:, None]
        # JSON has no NaN or infinity (and PostgreSQL's jsonb refuses them)
        C, V, Z = (np.nan_to_num(a[rows, idx], nan=0.0, posinf=1e12, neginf=-1e12) for a in (C, X, Z))
        names = [json.dumps(name) for name in self.feature_names]
        out = []
        for text, js, cs, vs, zs in zip(texts, idx.tolist(), C.tolist(), V.tolist(), Z.tolist(), strict=True):
            items = ", ".join(
                _JSON_ITEM.format(names[j], j, c, v, z) for j, c, v, z in zip(js, cs, vs, zs, strict=True)
            )
            out.append((text, f"[{items}]"))
        return out

    def _outside_range(self, Z: np.ndarray) -> np.ndarray:
        """How far (in scaled units) each value lies outside the training 0.5..99.5 % range."""
        excess = np.maximum(Z - self.stats["z_hi"], self.stats["z_lo"] - Z)
        excess = np.maximum(excess, 0.0)
        # Inside the range everywhere: rank by distance from the median instead.
        inside = ~(excess > 0).any(axis=1)
        excess[inside] = np.abs(Z[inside]) * 1e-3
        return excess

    # -- to override

    def _fit_scaled(self, Z: np.ndarray) -> np.ndarray | None:
        """Fit on the scaled training rows ``Z``; their scores if fitting computed them (for the
        threshold), else None and ``fit`` scores them."""
        raise NotImplementedError

    def _score_scaled(self, Z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _contributions(self, Z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # What scoring computed on the way to the scores, reused for the contributions (``score_top``);
    # by default nothing: the scores are the parts, and contributions are computed from ``Z``.

    def _score_parts(self, Z: np.ndarray) -> Any:
        return self._score_scaled(Z)

    def _score_from_parts(self, parts: Any) -> np.ndarray:
        return parts

    def _contributions_from_parts(self, Z: np.ndarray, parts: Any, rows: np.ndarray) -> np.ndarray:
        """``_contributions`` of ``Z`` (the scaled ``rows`` of a chunk whose ``parts`` these are)."""
        return self._contributions(Z)

    def _top_from_parts(self, Z: np.ndarray, parts: Any, rows: np.ndarray, top: int) -> np.ndarray:
        """``_top_indices`` of the contributions of ``rows`` of a chunk (its scaled rows ``Z``, and
        the ``parts`` scoring computed of them), in row order: shape (len(rows), top)."""
        tops = [np.empty((0, min(top, Z.shape[1])), np.intp)]
        # Row by row arithmetic, in blocks whose float64 temporaries stay in the CPU's cache
        for block in range(0, len(rows), _TOP_BLOCK):
            part = rows[block : block + _TOP_BLOCK]
            tops.append(_top_indices(self._contributions_from_parts(Z[part], parts, part), top))
        return np.concatenate(tops)

    # -- artifacts

    def _meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "feature_names": self.feature_names,
            "level": self.level,
            "quantile": self.quantile,
            "threshold": self.threshold,
            "false_incidents_per_day": self.false_incidents_per_day,
            "calibration": self.calibration,
            "seed": self.seed,
            "trained_samples": self.trained_samples,
            "train_seconds": self.train_seconds,
            "params": self._params(),
        }

    def _params(self) -> dict[str, Any]:
        return {}

    def save(self, path: str | Path) -> Path:
        """Write the model to directory ``path`` (created); returns it."""
        if not math.isfinite(self.threshold):
            raise ValueError("model is not trained")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        scaler = self.scaler
        np.savez(path / "scaler.npz", center=scaler.center, scale=scaler.scale, unit=scaler.unit)
        np.savez(path / "stats.npz", **self.stats)
        self._save_extra(path)
        (path / "model.json").write_text(json.dumps(self._meta(), indent=1))
        return path

    def _save_extra(self, path: Path) -> None:
        pass

    def _load_extra(self, path: Path, meta: dict[str, Any]) -> None:
        pass

    @classmethod
    def _from_meta(cls, path: Path, meta: dict[str, Any]) -> AnomalyModel:
        target = meta.get("false_incidents_per_day", DEFAULT_FALSE_INCIDENTS_PER_DAY)
        model = cls(meta["feature_names"], quantile=meta["quantile"], seed=meta["seed"], level=meta["level"],
                    false_incidents_per_day=target)  # fmt: skip
        model.threshold = float(meta["threshold"])
        model.calibration = meta.get("calibration", {})
        model.trained_samples = int(meta["trained_samples"])
        model.train_seconds = float(meta.get("train_seconds", 0.0))
        with np.load(path / "scaler.npz", allow_pickle=False) as z:
            model.scaler.center, model.scaler.scale = z["center"], z["scale"]
            # Saved before units existed: a unit of 1 is what that scaler applied.
            model.scaler.unit = z["unit"] if "unit" in z.files else np.ones_like(z["scale"])
        with np.load(path / "stats.npz", allow_pickle=False) as z:
            model.stats = {k: z[k] for k in z.files}
        model._load_extra(path, meta)
        return model

    def describe(self) -> dict[str, Any]:
        """Summary for logs and the API (no arrays)."""
        return {k: v for k, v in self._meta().items() if k != "feature_names"} | {
            "n_features": len(self.feature_names)
        }


class IsolationForestModel(AnomalyModel):
    """scikit-learn IsolationForest on whitened principal components of the scaled features.

    Score = -score_samples (about 0.3..0.8). The forest splits on one random coordinate at a
    time, so with many redundant features (the advanced level repeats each statistic at five
    time scales) an anomaly visible in a few features is rarely isolated early. Whitening
    (rotate to principal components, divide by their standard deviation, components with less
    than ``min_variance`` of the largest variance dropped, values clipped to +-50) gives each
    independent direction equal weight; on demo traffic it doubled detection of HTTP floods
    and of port-scan answers at the same false-positive rate.
    """

    kind = MlModel.ISOLATION_FOREST

    def __init__(
        self,
        feature_names: Sequence[str],
        *,
        n_estimators: int = 100,
        max_samples: int = 1024,
        whiten: bool = True,
        min_variance: float = 1e-3,
        **kw,
    ):
        super().__init__(feature_names, **kw)
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.whiten = whiten
        self.min_variance = min_variance
        self.forest: Any = None
        self._flat: Any = None  # detection.forest.FlatForest of self.forest, built on first use
        self.pca_mean = np.zeros(0, np.float32)
        self.pca_w = np.zeros((0, 0), np.float32)

    def _params(self) -> dict[str, Any]:
        return {
            "n_estimators": self.n_estimators,
            "max_samples": self.max_samples,
            "whiten": self.whiten,
            "min_variance": self.min_variance,
        }

    def _project(self, Z: np.ndarray) -> np.ndarray:
        if not self.whiten:
            return Z
        P = (Z - self.pca_mean) @ self.pca_w
        return np.clip(P, -50.0, 50.0, out=P)

    def _fit_scaled(self, Z: np.ndarray) -> None:
        from sklearn.ensemble import IsolationForest

        rng = np.random.default_rng(self.seed)
        # Each tree sees max_samples rows; a 200k-row sample is as good as all and fits faster.
        if len(Z) > 200_000:
            Z = Z[np.sort(rng.choice(len(Z), 200_000, replace=False))]
        if self.whiten:
            Zd = Z.astype(np.float64)
            mean = Zd.mean(axis=0)
            var, vec = np.linalg.eigh(np.cov(Zd - mean, rowvar=False))
            keep = var > self.min_variance * max(var.max(), 1e-12)
            self.pca_mean = mean.astype(np.float32)
            self.pca_w = (vec[:, keep] / np.sqrt(var[keep])).astype(np.float32)
        self.forest = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=min(self.max_samples, len(Z)),
            random_state=self.seed,
            n_jobs=1,
        ).fit(self._project(Z))

    def _score_scaled(self, Z: np.ndarray) -> np.ndarray:
        if self._flat is None or self._flat.source is not self.forest:
            from detection.forest import FlatForest

            self._flat = FlatForest(self.forest)
        return -self._flat.score_samples(self._project(Z))

    def _contributions(self, Z: np.ndarray) -> np.ndarray:
        return self._outside_range(Z)

    def _save_extra(self, path: Path) -> None:
        import joblib
        import sklearn

        joblib.dump(self.forest, path / "isolation_forest.joblib")
        np.savez(path / "whitening.npz", mean=self.pca_mean, w=self.pca_w)
        (path / "sklearn.json").write_text(json.dumps({"sklearn": sklearn.__version__}))

    def _load_extra(self, path: Path, meta: dict[str, Any]) -> None:
        import joblib
        import sklearn

        saved = json.loads((path / "sklearn.json").read_text())["sklearn"]
        if saved != sklearn.__version__:
            warnings.warn(
                f"isolation forest saved with scikit-learn {saved}, running {sklearn.__version__}",
                stacklevel=2,
            )
        self.forest = joblib.load(path / "isolation_forest.joblib")
        p = meta["params"]
        self.n_estimators, self.max_samples = p["n_estimators"], p["max_samples"]
        self.whiten, self.min_variance = p["whiten"], p["min_variance"]
        with np.load(path / "whitening.npz", allow_pickle=False) as z:
            self.pca_mean, self.pca_w = z["mean"], z["w"]


class AutoencoderModel(AnomalyModel):
    """Dense autoencoder: Keras to train, NumPy to score (exported weights, ReLU hidden layers)."""

    kind = MlModel.AUTOENCODER

    def __init__(
        self,
        feature_names: Sequence[str],
        *,
        hidden: Sequence[int] | None = None,
        epochs: int = 10,
        batch_size: int = 256,
        max_train_rows: int = 200_000,
        learning_rate: float = 1e-3,
        **kw,
    ):
        super().__init__(feature_names, **kw)
        d = len(self.feature_names)
        # d -> h -> bottleneck -> h -> d
        self.hidden = list(hidden) if hidden else [min(64, max(8, d // 2)), max(4, d // 8)]
        self.epochs = epochs
        self.batch_size = batch_size
        self.max_train_rows = max_train_rows
        self.learning_rate = learning_rate
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        self.keras_model: Any = None  # kept after fit (not saved), for checks against Keras
        self.history: dict[str, list[float]] = {}

    def _params(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "max_train_rows": self.max_train_rows,
            "learning_rate": self.learning_rate,
        }

    def _fit_scaled(self, Z: np.ndarray) -> None:
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras  # lazy: importing TensorFlow costs seconds and hundreds of MB

        keras.utils.set_random_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        if len(Z) > self.max_train_rows:
            Z = Z[rng.choice(len(Z), self.max_train_rows, replace=False)]
        else:
            Z = Z[rng.permutation(len(Z))]
        d = Z.shape[1]
        sizes = [*self.hidden, *self.hidden[-2::-1]]
        layers: list[Any] = [keras.Input(shape=(d,))]
        layers += [keras.layers.Dense(h, activation="relu") for h in sizes]
        layers.append(keras.layers.Dense(d, activation="linear"))
        model = keras.Sequential(layers)
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss="mse")
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
        hist = model.fit(
            Z,
            Z,
            epochs=self.epochs,
            batch_size=self.batch_size,
            validation_split=0.1,
            shuffle=True,
            verbose=0,
            callbacks=[stop],
        )
        self.history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
        self.keras_model = model
        self.weights, self.biases = [], []
        for layer in model.layers:
            w, b = layer.get_weights()
            self.weights.append(np.ascontiguousarray(w, dtype=np.float32))
            self.biases.append(np.ascontiguousarray(b, dtype=np.float32))

    def reconstruct(self, Z: np.ndarray) -> np.ndarray:
        """Forward pass in NumPy (float32) of scaled rows."""
        h = np.asarray(Z, dtype=np.float32)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w
            h += b
            if i < last:
                np.maximum(h, 0.0, out=h)
        return h

    def _errors(self, Z: np.ndarray) -> np.ndarray:
        R = self.reconstruct(Z)
        R -= Z
        return np.square(R, out=R)

    def _score_scaled(self, Z: np.ndarray) -> np.ndarray:
        return self._errors(Z).mean(axis=1, dtype=np.float64)

    def _contributions(self, Z: np.ndarray) -> np.ndarray:
        return self._errors(Z).astype(np.float64)

    def _score_parts(self, Z: np.ndarray) -> np.ndarray:
        return self._errors(Z)

    def _score_from_parts(self, parts: np.ndarray) -> np.ndarray:
        return parts.mean(axis=1, dtype=np.float64)

    def _contributions_from_parts(self, Z: np.ndarray, parts: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return parts[rows].astype(np.float64)

    def _save_extra(self, path: Path) -> None:
        arrays = {f"w{i}": w for i, w in enumerate(self.weights)}
        arrays.update({f"b{i}": b for i, b in enumerate(self.biases)})
        np.savez(path / "autoencoder.npz", **arrays)

    def _load_extra(self, path: Path, meta: dict[str, Any]) -> None:
        p = meta["params"]
        self.hidden, self.epochs, self.batch_size = p["hidden"], p["epochs"], p["batch_size"]
        self.max_train_rows, self.learning_rate = p["max_train_rows"], p["learning_rate"]
        with np.load(path / "autoencoder.npz", allow_pickle=False) as z:
            n = len([k for k in z.files if k.startswith("w")])
            self.weights = [z[f"w{i}"] for i in range(n)]
            self.biases = [z[f"b{i}"] for i in range(n)]


class CombinedModel(AnomalyModel):
    """Isolation forest and autoencoder together (``both``).

    Each sub-model's score is divided by its own calibrated threshold (1.0 = at that model's
    99.5 % point), then put on a common scale: ``log(ratio) / log(threshold / median)``, i.e. 0
    at the threshold and -1 at the median training score. The combined score is the mean of the
    two, weighted: the forest ``forest_weight`` (``FOREST_WEIGHT`` for new models; a model saved
    before the weight existed keeps the equal weights its threshold was calibrated with), the
    autoencoder the rest. Raw ratios are not comparable (the forest's scores live in 0.3..0.8,
    the autoencoder's errors span orders of magnitude, so a plain mean or max is the autoencoder
    alone); on demo traffic this normalised mean beat mean and max of raw ratios in ROC AUC and
    TPR at 1 % FPR. The mean lets two moderately unusual verdicts add up and keeps one model's
    false alarm from passing alone. The combined threshold is calibrated again on the combined
    scores (``fit``).
    """

    kind = MlModel.BOTH

    def __init__(
        self, feature_names: Sequence[str], *, forest: dict | None = None, ae: dict | None = None, **kw
    ):
        super().__init__(feature_names, **kw)
        common = {"quantile": self.quantile, "seed": self.seed, "level": self.level}
        self.forest = IsolationForestModel(feature_names, **common, **(forest or {}))
        self.autoencoder = AutoencoderModel(feature_names, **common, **(ae or {}))
        self.spreads = [1.0, 1.0]  # log(threshold / median training score) per sub-model
        self.forest_weight = FOREST_WEIGHT

    def _parts(self) -> tuple[AnomalyModel, AnomalyModel]:
        return self.forest, self.autoencoder

    def _fit_scaled(self, Z: np.ndarray) -> np.ndarray:
        spreads, ratios = [], []
        for m in self._parts():
            m.scaler, m.stats = self.scaler, self.stats
            t0 = time.perf_counter()
            m._fit_scaled(Z)
            scores = m._score_scaled(Z)
            m.threshold = float(np.quantile(scores, self.quantile))
            m.trained_samples = len(Z)
            m.train_seconds = time.perf_counter() - t0
            median = float(np.median(scores))
            spreads.append(max(math.log(max(m.threshold, 1e-300) / max(median, 1e-300)), 1e-6))
            ratios.append(scores / max(m.threshold, 1e-12))
        self.spreads = spreads
        # Each part scored every training row just now: combine those scores rather than score again.
        return self._combine(*ratios)

    def _ratios(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each model's score over its threshold (1.0 = at that model's calibrated threshold)."""
        f, a = self._parts()
        return (
            f._score_scaled(Z) / max(f.threshold, 1e-12),
            a._score_scaled(Z) / max(a.threshold, 1e-12),
        )

    def _score_scaled(self, Z: np.ndarray) -> np.ndarray:
        return self._combine(*self._ratios(Z))

    def _combine(self, rf: np.ndarray, ra: np.ndarray) -> np.ndarray:
        # log ratio in units of the model's own spread: 0 at its threshold, -1 at its median
        lf = np.log(np.maximum(rf, 1e-300)) / self.spreads[0]
        la = np.log(np.maximum(ra, 1e-300)) / self.spreads[1]
        return self.forest_weight * lf + (1.0 - self.forest_weight) * la

    def _contributions(self, Z: np.ndarray) -> np.ndarray:
        rf, ra = self._ratios(Z)
        return self._shares(((rf, self.forest._contributions(Z)), (ra, self.autoencoder._contributions(Z))))

    @staticmethod
    def _shares(weighted: tuple[tuple[np.ndarray, np.ndarray], ...]) -> np.ndarray:
        out = np.zeros(weighted[0][1].shape, np.float64)
        for r, c in weighted:
            # Normalise each model's contributions to shares, weighted by how anomalous it finds the row.
            out += r[:, None] * c / np.maximum(c.sum(axis=1, keepdims=True), 1e-12)
        return out

    def _score_parts(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each model's ratio (as ``_ratios``) and the autoencoder's errors (its contributions)."""
        f, a = self._parts()
        errors = a._score_parts(Z)
        return (
            f._score_scaled(Z) / max(f.threshold, 1e-12),
            a._score_from_parts(errors) / max(a.threshold, 1e-12),
            errors,
        )

    def _score_from_parts(self, parts: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        return self._combine(parts[0], parts[1])

    def _contributions_from_parts(
        self, Z: np.ndarray, parts: tuple[np.ndarray, np.ndarray, np.ndarray], rows: np.ndarray
    ) -> np.ndarray:
        rf, ra, errors = parts
        forest = self.forest._contributions(Z)
        autoencoder = self.autoencoder._contributions_from_parts(Z, errors, rows)
        return self._shares(((rf[rows], forest), (ra[rows], autoencoder)))

    def _top_from_parts(
        self, Z: np.ndarray, parts: tuple[np.ndarray, np.ndarray, np.ndarray], rows: np.ndarray, top: int
    ) -> np.ndarray:
        # Compiled (detection.ranking): in NumPy the top features of a flood's flagged rows cost
        # more than scoring all of its packets. Imported here: only scoring processes need Numba.
        from detection.ranking import combined_top

        rf, ra, errors = parts
        stats = self.forest.stats
        out, ok = combined_top(Z, errors, rf, ra, stats["z_lo"], stats["z_hi"], rows, top)
        if not ok.all():  # contributions not all finite: ranked by NumPy's stable sort
            out[~ok] = super()._top_from_parts(Z, parts, rows[~ok], top)
        return out

    def _params(self) -> dict[str, Any]:
        return {"spreads": self.spreads, "forest_weight": self.forest_weight}

    def _save_extra(self, path: Path) -> None:
        # Each half in a directory named by its kind (the vocabulary's values: the file layout).
        for kind, m in ((MlModel.ISOLATION_FOREST, self.forest), (MlModel.AUTOENCODER, self.autoencoder)):
            m.save(path / kind)

    def _load_extra(self, path: Path, meta: dict[str, Any]) -> None:
        f = load_model(path / MlModel.ISOLATION_FOREST)
        a = load_model(path / MlModel.AUTOENCODER)
        assert isinstance(f, IsolationForestModel) and isinstance(a, AutoencoderModel)
        self.forest, self.autoencoder = f, a
        self.spreads = [float(v) for v in meta["params"]["spreads"]]
        self.forest_weight = float(meta["params"].get("forest_weight", _EQUAL_WEIGHT))
        for m in self._parts():
            m.scaler, m.stats = self.scaler, self.stats


_CLASSES: dict[str, type[AnomalyModel]] = {
    MlModel.ISOLATION_FOREST: IsolationForestModel,
    MlModel.AUTOENCODER: AutoencoderModel,
    MlModel.BOTH: CombinedModel,
}


def _top_indices(C: np.ndarray, top: int) -> np.ndarray:
    """Per row of contributions ``C``, the indices of the ``top`` largest, largest first (ties: the
    lower index first, as a stable full sort ranks them)."""
    top = min(top, C.shape[1])
    if not np.isfinite(C).all():
        # NaN, and -inf that the loop below could not tell from a winner taken out: sorted
        return _top_indices_sorted(C, top)
    # ``top`` passes of argmax (the first of equal maxima: the lower index), each taking the winner
    # out: ~10x cheaper than argpartition, whose per-row partition dominated a flood's top features.
    W = C.copy()
    rows = np.arange(len(C))
    out = np.empty((len(C), top), np.intp)
    for k in range(top):
        out[:, k] = best = W.argmax(axis=1)
        W[rows, best] = -np.inf
    return out


def _top_indices_sorted(C: np.ndarray, top: int) -> np.ndarray:
    """``_top_indices`` by a stable full sort of each row (NaN ranks last)."""
    return np.argsort(-C, axis=1, kind="stable")[:, :top]


def create_model(kind: str, feature_names: Sequence[str], **kw: Any) -> AnomalyModel:
    """A new untrained model of ``kind`` (one of MODEL_KINDS)."""
    if kind not in _CLASSES:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
    return _CLASSES[kind](feature_names, **kw)


def train_model(
    kind: str, X: np.ndarray, feature_names: Sequence[str], records: np.ndarray | None = None, **kw: Any
) -> AnomalyModel:
    """Create and fit in one go (raises TrainingError on too little data); ``records``: the rows'
    packet records, for the threshold's calibration (``AnomalyModel.fit``)."""
    return create_model(kind, feature_names, **kw).fit(X, records)


def load_model(path: str | Path) -> AnomalyModel:
    """Load a model saved with ``save``."""
    path = Path(path)
    meta = json.loads((path / "model.json").read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"model format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    cls = _CLASSES.get(meta.get("kind"))
    if cls is None:
        raise ValueError(f"unknown model kind {meta.get('kind')!r} in {path}")
    return cls._from_meta(path, meta)


# ------------------------------------------------------------------------------------ wording

_RARE = 0.01  # a flag set on, or a code carried by, fewer training packets than this is a reason
_POOL = 10  # the model's top contributors: their out-of-range values are cited before any other
_FIRST = 1e3  # added to those values' distances: more than any distance (at most ~300)
_CODES = "codes_"  # stats key prefix: the values of a "code" feature seen in training, and their shares
_EDGE_Z = NormalDist().inv_cdf(1 - _RARE)


def _code_shares(X: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Per "code" feature (a category, e.g. the TTL), the values seen in ``X`` and the share of
    rows carrying each: ``{"codes_<name>": [[values...], [shares...]]}`` (sorted by value)."""
    out = {}
    for j, name in enumerate(names):
        if describe(name).kind == "code":
            values, counts = np.unique(X[:, j].astype(np.float64), return_counts=True)
            out[_CODES + name] = np.stack([values, counts / max(len(X), 1)])
    return out


def _rarity(shares: np.ndarray, floor: float) -> np.ndarray:
    """How far beyond the edge of normal a category carried by ``shares`` of the training packets
    lies, in the scaled features' units (about standard deviations): the normal quantile of its
    rarity minus that of the 1 % edge, so a value just past a magnitude's 99 % point and a flag
    set on just under 1 % of packets rank alike; 0 when not rarer than the edge. ``floor``
    stands in for a share of 0 (never seen in training)."""
    z = [NormalDist().inv_cdf(1 - min(max(s, floor), 0.5)) - _EDGE_Z for s in np.asarray(shares).tolist()]
    return np.maximum(np.array(z, np.float64), 0.0)


def _contexts(records: np.ndarray, cols: PacketColumns | None = None) -> list[dict[str, Any]]:
    """Per record, what explanation templates may name: ``src``, ``dst``, ``sport``, ``dport``,
    ``proto``, ``client`` (the end that started the conversation) and ``service`` (the other end:
    ``host:port/proto``, or the host when the protocol has no ports)."""
    from capture.records import PacketColumns, mac_to_text  # the text columns stored with packets

    if cols is None:
        cols = PacketColumns.of(records)

    def named(ips: list[str | None], macs: np.ndarray, unknown: str) -> list[str]:
        return [ip or mac_to_text(mac) or unknown for ip, mac in zip(ips, macs.tolist(), strict=True)]

    src = named(cols.src_ip, records["src_mac"], "the source")
    dst = named(cols.dst_ip, records["dst_mac"], "the destination")
    sports, dports = records["sport"].tolist(), records["dport"].tolist()
    ported = ((records["ip_version"] > 0) & np.isin(records["proto"], (6, 17))).tolist()
    out = []
    for s, d, sp, dp, pr, cis, has_ports in zip(
        src, dst, sports, dports, cols.protocol, client_side(records).tolist(), ported, strict=True
    ):
        server, port = (d, dp) if cis else (s, sp)
        service = f"{server}:{port}/{pr.lower()}" if has_ports else server
        out.append(
            {
                "src": s,
                "dst": d,
                "sport": sp,
                "dport": dp,
                "proto": pr,
                "client": s if cis else d,
                "service": service,
            }
        )
    return out


def _endpoints(record: np.ndarray | np.void | None) -> dict[str, Any]:
    if record is None:
        return {
            "src": "the source",
            "dst": "the destination",
            "sport": "?",
            "dport": "?",
            "proto": "?",
            "client": "the client",
            "service": "the service",
        }
    return _contexts(np.asarray(record).reshape(-1)[:1])[0]


def _time_scales(family: list[str]) -> tuple[int, int, int] | None:
    """Where the columns that repeat one statistic at several time scales lie: (first column,
    end, number of scales) when, as ``feature_specs`` lays them out, they form one block of the
    same statistics in the same order per time scale; None when no statistic repeats."""
    seen: dict[str, list[int]] = {}
    for j, name in enumerate(family):
        seen.setdefault(name, []).append(j)
    repeated = sorted(j for cols in seen.values() if len(cols) > 1 for j in cols)
    if not repeated:
        return None
    start, stop = repeated[0], repeated[-1] + 1
    width = len({family[j] for j in repeated})
    block = family[start:stop]
    if (
        len(repeated) != stop - start
        or (stop - start) % width
        or block != block[:width] * ((stop - start) // width)
    ):
        return None  # another layout: each scale is cited on its own
    return start, stop, (stop - start) // width


class _Wording:
    """Chooses and words the reasons of one model's flagged rows, remembering what does not change
    between rows: each feature's spec, training range and rarities, and each value's words."""

    def __init__(self, model: AnomalyModel) -> None:
        self.model = model
        names = model.feature_names
        self.specs = [describe(name) for name in names]
        stats = model.stats
        kinds = [spec.kind for spec in self.specs]
        d = len(names)
        floor = 0.5 / max(model.trained_samples, 1)  # a share of 0: rarer than anything seen
        self.flags = np.array([j for j in range(d) if kinds[j] == "flag"], np.int64)
        self.flag_set = _rarity(stats["mean"][self.flags], floor)  # the distance of a set flag
        # Per code feature: seen values, their shares and distances. A model trained before the
        # shares were kept words its codes as magnitudes.
        self.codes: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for j, name in enumerate(names):
            if kinds[j] == "code" and _CODES + name in stats:
                values, shares = stats[_CODES + name]
                self.codes[j] = (values, shares, _rarity(shares, floor))
        self.unseen = float(_rarity(np.zeros(1), floor)[0])
        self.magnitude = np.ones(d, bool)
        self.magnitude[self.flags] = False
        self.magnitude[list(self.codes)] = False
        # Distances in the scaler's own log units (its per-feature unit), over its spread.
        self.log = model.scaler.log
        self.lo, self.mid, self.hi = (self.log(stats[k]) for k in ("p01", "p50", "p99"))
        self.scale = np.asarray(model.scaler.scale, np.float64)
        self.tiebreak = np.arange(d) * 1e-9  # equal distances: the earlier feature first
        # One reason per family: a statistic at several time scales (advanced level) is cited once.
        family = [
            spec.name.rsplit("_", 1)[0] if spec.level == FeatureLevel.ADVANCED else spec.name
            for spec in self.specs
        ]
        self.scales = _time_scales(family)
        self.p01, self.p99 = stats["p01"].tolist(), stats["p99"].tolist()
        self.limits: dict[tuple[int, bool], tuple[str, float, str]] = {}
        self.words: dict[tuple[int, float], tuple[str, str]] = {}  # (feature, value): its words

    # -- choosing

    def distances(self, X: np.ndarray) -> np.ndarray:
        """How far each value lies outside what training saw (> 0: outside), in scaled units:
        a magnitude's distance beyond its 1 % / 99 % point in the scaler's log units over the
        feature's spread; a set flag's or a code's rarity (``_rarity``). A flag that is not set
        is never a reason: the flag that is set instead says it ("the packet is UDP")."""
        L = self.log(X)
        D = np.maximum(L - self.hi, self.lo - L)
        D /= self.scale
        if len(self.flags):
            D[:, self.flags] = np.where(X[:, self.flags] >= 0.5, self.flag_set, 0.0)
        for j, (values, _, far) in self.codes.items():
            x = X[:, j]
            pos = np.minimum(np.searchsorted(values, x), len(values) - 1)
            D[:, j] = np.where(values[pos] == x, far[pos], self.unseen)
        return D

    def reasons(
        self, X: np.ndarray, order: np.ndarray, top: int, present: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per row of ``X``, up to ``top`` reasons: indices of features whose values lie outside
        the training range, those among the model's top ``_POOL`` contributors (``order``: feature
        indices by contribution) first, each group by distance, one per family; -1 pads. And
        per row without any, the in-range value closest to its range's edge among those top
        contributors (-1: none). ``present``: which values ``X`` holds (all when None)."""
        n = len(X)
        rows = np.arange(n)[:, None]
        key = self.distances(X)
        key[key <= 0] = -1.0
        if present is not None:
            key[~present] = -1.0
        pool = order[:, :_POOL]
        first = key[rows, pool]
        key[rows, pool] = np.where(first > 0, first + _FIRST, first)
        key -= self.tiebreak
        if self.scales is not None:
            start, stop, scales = self.scales
            block = key[:, start:stop].reshape(n, scales, -1)  # a view: (rows, time scale, statistic)
            block[block < block.max(axis=1, keepdims=True)] = -1.0
        R = np.argsort(-key, axis=1, kind="stable")[:, :top]
        R[key[rows, R] <= 0] = -1
        edge = np.full(n, -1, np.int64)
        none = np.flatnonzero(R[:, 0] < 0) if top > 0 else np.arange(0)
        if len(none) and pool.shape[1]:
            edge[none] = self._closest_to_edge(X[none], pool[none])
        return R, edge

    def _closest_to_edge(self, X: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """Per row, the magnitude among ``pool``'s features whose value lies nearest an edge of its
        range (0 at the median, 1 at the 1 % or 99 % point), or -1."""
        rows = np.arange(len(X))[:, None]
        L = _slog(X[rows, pool].astype(np.float64), self.model.scaler.unit[pool])
        lo, mid, hi = self.lo[pool], self.mid[pool], self.hi[pool]
        with np.errstate(divide="ignore", invalid="ignore"):
            near = np.maximum((L - mid) / (hi - mid), (mid - L) / (mid - lo))
        near = np.where(np.isfinite(near) & self.magnitude[pool], near, 0.0)
        best = np.argmax(near, axis=1)
        return np.where(near[rows[:, 0], best] > 0, pool[rows[:, 0], best], -1)

    # -- wording

    def _render(self, j: int, value: float, digits: int = 3) -> str:
        return format_value(value, self.specs[j].unit, digits)

    def _range(self, j: int) -> tuple[float, float]:
        """The training 1 % and 99 % points; for whole counts the whole numbers in between."""
        p01, p99 = self.p01[j], self.p99[j]
        if self.specs[j].unit == Unit.COUNT:
            return math.ceil(p01), math.floor(p99)
        return p01, p99

    @staticmethod
    def _rare(share: float) -> str:
        if share <= 0:
            return "never seen in training"
        return f"only {format_value(share, Unit.SHARE, 2)} of normal packets are like that"

    def _limit(self, j: int, above: bool) -> tuple[str, float, str]:
        """For a value of ``j`` above (or below) the training range: "under" ("over"), the bound
        and its words; ("", bound, words) when training saw one value only. Kept per feature."""
        limit = self.limits.get((j, above))
        if limit is None:
            lo, hi = self._range(j)
            count = self.specs[j].unit == Unit.COUNT
            if lo >= hi:
                limit = ("", hi, self._render(j, hi))
            elif above:  # "under" the smallest whole count over the range
                limit = ("under", hi + count, self._render(j, hi + count))
            else:
                limit = ("over", lo - count, self._render(j, lo - count))
            self.limits[(j, above)] = limit
        return limit

    def _words(self, j: int, v: float) -> tuple[str, str]:
        """The value and the "normally ..." phrase of reason ``j`` at value ``v``."""
        spec = self.specs[j]
        if spec.kind == "flag":
            return "", self._rare(float(self.model.stats["mean"][j]))
        if j in self.codes:
            values, shares, _ = self.codes[j]
            pos = min(int(np.searchsorted(values, v)), len(values) - 1)
            return self._render(j, v), self._rare(float(shares[pos]) if values[pos] == v else 0.0)
        word, bound, limit = self._limit(j, v > self.p99[j])
        value = self._render(j, v)
        if not word:
            return value, f"normally {limit}"
        for digits in (4, 5, 6):  # more digits until the value and the bound read differently
            if value != limit:
                break
            value, limit = self._render(j, v, digits), self._render(j, bound, digits)
        return value, f"normally {word} {limit}"

    @staticmethod
    def _sentence(spec: FeatureSpec, ctx: dict[str, Any]) -> str:
        """``spec``'s sentence for the packet of ``ctx`` (whose "value" holds the value's words)."""
        try:
            return spec.text.format_map(ctx)
        except (KeyError, ValueError, IndexError):
            return f"{spec.name} = {ctx['value']}"

    def _combination(self, j: int, v: float, ctx: dict[str, Any]) -> str:
        said = "an unusual combination of otherwise normal values"
        if j < 0:
            return said
        lo, hi = (self._render(j, bound) for bound in self._range(j))
        normal = f"normally {lo}" if lo == hi else f"normally {lo} to {hi}"
        ctx["value"] = self._render(j, v)
        return f"{said} (closest to the edge: {self._sentence(self.specs[j], ctx)}; {normal})"

    def texts(
        self, contexts: list[dict[str, Any]], X: np.ndarray, R: np.ndarray, edge: np.ndarray
    ) -> list[str]:
        """The explanation of every row of ``X``, from its reasons ``R`` and ``edge`` (``reasons``)
        and its context (``_contexts``, given "value" here): "<what>; normally <what is normal>. ..."."""
        n = len(X)
        V = X[np.arange(n)[:, None], np.maximum(R, 0)].tolist()
        E = X[np.arange(n), np.maximum(edge, 0)].tolist() if n else []
        specs, words, sentence = self.specs, self.words, self._sentence
        out = []
        for ctx, js, vs, e, ve in zip(contexts, R.tolist(), V, edge.tolist(), E, strict=True):
            parts = []
            for j, v in zip(js, vs, strict=True):
                if j < 0:
                    break
                said = words.get((j, v))
                if said is None:
                    said = words[(j, v)] = self._words(j, v)
                ctx["value"] = said[0]
                parts.append(f"{sentence(specs[j], ctx)}; {said[1]}")
            if not parts:
                parts.append(self._combination(e, ve, ctx))
            out.append(". ".join(p[0].upper() + p[1:] for p in parts) + ".")
        return out


def explain_text(
    model: AnomalyModel,
    record: np.ndarray | np.void | None,
    contributions: Sequence[Contribution],
    max_items: int = 3,
    row: np.ndarray | None = None,
) -> str:
    """Readable sentences for one packet: up to ``max_items`` values outside the training range,
    farthest first, each with what is normal; or, when none is, that the combination is unusual.

    e.g. "10.0.0.5 contacted 480 distinct ports in 2 s; normally under 6". With ``row`` (the
    packet's feature values) the reasons are chosen among all its features, as
    ``explain_records`` does (``contributions`` is then not needed); without it, among
    ``contributions`` (the model's top contributors, e.g. from ``explain``).
    """
    wording = _Wording(model)
    ctx = [_endpoints(record)]
    if row is not None:
        X, _, _, order = model._contributors(row)
        return wording.texts(ctx, X, *wording.reasons(X, order, max_items))[0]
    order = np.array([[c.index for c in contributions]], np.int64).reshape(1, -1)
    X = np.zeros((1, len(model.feature_names)))
    X[0, order[0]] = [c.value for c in contributions]
    present = np.zeros(X.shape, bool)
    present[0, order[0]] = True
    return wording.texts(ctx, X, *wording.reasons(X, order, max_items, present))[0]


def contributions_as_dicts(contributions: Sequence[Contribution]) -> list[dict[str, Any]]:
    """JSON-friendly form of contributions (for storing with an anomaly)."""
    # Built by hand: dataclasses.asdict deep-copies every field, which costs more than the scoring.
    return [
        {"feature": c.feature, "index": c.index, "contribution": c.contribution, "value": c.value,
         "scaled": c.scaled}
        for c in contributions
    ]  # fmt: skip
