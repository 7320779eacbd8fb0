"""The compiled isolation forest gives exactly scikit-learn's scores, for every way a forest is fitted."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from detection.forest import FlatForest
from detection.ml import IsolationForestModel


def _data(seed: int, n: int, d: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    X[:, 3] = rng.integers(0, 4, n)  # a discrete column: many equal values on each side of a split
    return X


@pytest.mark.parametrize(
    "params",
    [
        {"n_estimators": 100, "max_samples": 1024},
        {"n_estimators": 7, "max_samples": 64, "max_features": 0.5},  # per-tree column subsets
        {"n_estimators": 20, "max_samples": 256, "bootstrap": True},
    ],
)
def test_scores_equal_scikit_learn_bit_for_bit(params):
    forest = IsolationForest(random_state=3, **params).fit(_data(1, 5_000))
    flat = FlatForest(forest)
    X = _data(2, 3_001) * 2.0  # outliers too; not a multiple of the row block
    X[:50] = _data(1, 5_000)[:50]  # rows seen in training
    assert np.array_equal(flat.score_samples(X), forest.score_samples(X))
    assert np.array_equal(flat.score_samples(X[:1]), forest.score_samples(X[:1]))
    assert flat.score_samples(X[:0]).shape == (0,)


def test_forest_of_one_sample_scores_like_scikit_learn():
    forest = IsolationForest(random_state=0, n_estimators=3).fit(np.ones((1, 4), np.float32))
    X = _data(5, 10, d=4)
    assert np.array_equal(FlatForest(forest).score_samples(X), forest.score_samples(X))


def test_wrong_width_is_refused():
    flat = FlatForest(IsolationForest(random_state=0, n_estimators=2).fit(_data(1, 100)))
    with pytest.raises(ValueError, match="expected rows of 12 features"):
        flat.score_samples(np.zeros((3, 11), np.float32))


def test_model_uses_the_compiled_forest_and_rebuilds_it_after_refit(tmp_path):
    names = [f"f{i}" for i in range(12)]
    model = IsolationForestModel(names, n_estimators=30, max_samples=256).fit(_data(1, 5_000))
    Z = model.scaler.transform(_data(2, 500))
    expected = -model.forest.score_samples(model._project(Z))
    assert np.array_equal(model._score_scaled(Z), expected)
    assert model._flat is not None and model._flat.source is model.forest

    model.fit(_data(9, 5_000) + 1.0)  # a new forest: the flat copy must follow it
    assert np.array_equal(model._score_scaled(Z), -model.forest.score_samples(model._project(Z)))

    loaded = type(model)._from_meta(model.save(tmp_path / "m"), model._meta())
    assert np.array_equal(loaded._score_scaled(Z), model._score_scaled(Z))
