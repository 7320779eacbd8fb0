"""The scaler's per-feature unit for small values (issue 12): times in seconds and shares keep
their resolution, explanations measure in the same units, and older artifacts score as before."""

from __future__ import annotations

import numpy as np
import pytest

from capture.demo import DemoTraffic
from detection.features import FeatureExtractor
from detection.ml import Z_CLIP, IsolationForestModel, RobustScaler, _Wording, load_model


@pytest.fixture(scope="module")
def rows():
    fx = FeatureExtractor("standard")
    return fx.names, fx.transform(DemoTraffic(31).records(6000))


@pytest.fixture(scope="module")
def model(rows):
    names, X = rows
    return IsolationForestModel(names, level="standard", n_estimators=20).fit(X)


def test_a_time_far_below_its_benign_milliseconds_scales_far_from_them():
    rng = np.random.default_rng(0)
    gaps = np.clip(rng.normal(0.030, 0.006, 5000), 0.010, 0.050)  # 10..50 ms between packets
    sizes = rng.integers(40, 1500, 5000).astype(np.float64)  # a column of large values beside it
    scaler = RobustScaler().fit(np.stack([gaps, sizes], axis=1))

    z = scaler.transform(np.array([[0.0003, 500.0]]))  # a flood: 0.3 ms between packets

    assert abs(z[0, 0]) > 4
    assert scaler.unit[1] == 1.0  # values over 1 keep the plain signed log1p


def test_explanation_distances_are_in_the_scalers_units(model, rows):
    """How far a value lies beyond its training 99 % point, in the wording, is the distance the
    scaler puts between them (the same unit, centre and spread)."""
    names, X = rows
    j = names.index("client_iat_mean")
    assert model.scaler.unit[j] < 1  # seconds: a unit of its own
    p01, p99 = model.stats["p01"][j], model.stats["p99"][j]
    row = np.tile(X[:1], (2, 1)).astype(np.float64)
    row[:, j] = [p99 * 1.5, p01 / 3]
    Z = model.scaler.transform(row).astype(np.float64)
    edges = np.tile(X[:1], (2, 1)).astype(np.float64)
    edges[:, j] = [p99, p01]
    Ze = model.scaler.transform(edges).astype(np.float64)
    assert np.all(np.abs(Z[:, j]) < Z_CLIP)  # not clipped: the distances compare

    D = _Wording(model).distances(row)

    np.testing.assert_allclose(D[:, j], np.abs(Z[:, j] - Ze[:, j]), rtol=1e-4)


def test_a_model_saved_before_units_loads_with_ones_and_scores_as_before(model, rows, tmp_path):
    names, X = rows
    path = model.save(tmp_path / "old")
    with np.load(path / "scaler.npz") as z:
        center, scale = z["center"], z["scale"]
    np.savez(path / "scaler.npz", center=center, scale=scale)  # what older code wrote

    loaded = load_model(path)

    np.testing.assert_array_equal(loaded.scaler.unit, np.ones(len(names)))
    x = X.astype(np.float64)
    old = np.clip((np.sign(x) * np.log1p(np.abs(x)) - center) / scale, -Z_CLIP, Z_CLIP)
    np.testing.assert_array_equal(loaded.scaler.transform(X), old.astype(np.float32))
    assert np.isfinite(loaded.score(X)).all()


def test_a_saved_model_keeps_its_units(model, rows, tmp_path):
    _, X = rows
    loaded = load_model(model.save(tmp_path / "new"))

    np.testing.assert_array_equal(loaded.scaler.unit, model.scaler.unit)
    np.testing.assert_array_equal(loaded.score(X), model.score(X))
