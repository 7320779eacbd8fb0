"""The compiled top features of the combined model rank exactly as the NumPy contributions do."""

from __future__ import annotations

import numpy as np
import pytest

from detection.ml import AnomalyModel, CombinedModel
from detection.ranking import _pairwise_sum


def _model(n_features: int, rng: np.random.Generator) -> CombinedModel:
    model = CombinedModel([f"f{j}" for j in range(n_features)])
    z_lo = -rng.uniform(0.5, 3.0, n_features)
    z_lo[:3] = 0.0  # constant in training: any scaled value but 0 is outside
    model.stats = {"z_lo": z_lo, "z_hi": rng.uniform(0.5, 3.0, n_features)}
    model.forest.stats = model.autoencoder.stats = model.stats
    return model


def _chunk(n: int, n_features: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple]:
    """Scaled rows and the parts scoring makes of them: some rows inside the training range
    everywhere, many ties (values on a grid, rows repeated), and some contributions not finite."""
    Z = (rng.integers(-40, 41, (n, n_features)) / 8).astype(np.float32)
    Z[: n // 4] *= np.float32(0.1)  # mostly inside the range
    Z[n // 4 : n // 4 + 20] = 0.0  # inside everywhere: every forest contribution is 0
    Z[-30:] = Z[-60:-30]  # repeated rows
    errors = np.square(rng.integers(0, 6, (n, n_features)) / np.float32(4)).astype(np.float32)
    errors[: n // 8] = rng.random((n // 8, n_features)).astype(np.float32)
    errors[n // 4 + 10 : n // 4 + 20] = 0.0  # every autoencoder contribution 0 as well
    rf = rng.uniform(0.5, 2.0, n)
    ra = rng.uniform(0.5, 50.0, n)
    ra[5] = np.inf  # an overflowing ratio: its contributions are not finite
    errors[7, -1] = np.nan
    Z[9, 0] = np.nan
    return Z, (rf, ra, errors)


@pytest.mark.parametrize("n_features", [164, 1, 3, 12, 129, 300])
@pytest.mark.parametrize("top", [1, 3, 5])
def test_compiled_top_features_equal_numpy_ones(n_features, top):
    rng = np.random.default_rng(n_features * 10 + top)
    model = _model(n_features, rng)
    Z, parts = _chunk(700, n_features, rng)
    rows = np.sort(rng.choice(len(Z), 500, replace=False))
    rows = np.union1d(rows, [5, 7, 9, *range(len(Z) // 4, len(Z) // 4 + 20)])

    compiled = model._top_from_parts(Z, parts, rows, top)

    assert np.array_equal(compiled, AnomalyModel._top_from_parts(model, Z, parts, rows, top))
    assert compiled.shape == (len(rows), min(top, n_features))
    assert model._top_from_parts(Z, parts, rows[:0], top).shape == (0, min(top, n_features))


def test_pairwise_sum_adds_as_numpy_does():
    """The shares' denominators are NumPy's sums to the last bit, so the ranking is too."""
    rng = np.random.default_rng(3)
    stack, sums = np.empty((64, 2), np.int64), np.empty(64)
    for n in [*range(0, 40), 127, 128, 129, 136, 164, 255, 256, 257, 1000, 4099]:
        for _ in range(5):
            row = rng.random(n) * 10.0 ** rng.integers(-12, 12, n)
            assert _pairwise_sum(row, n, stack, sums) == row[None, :].sum(axis=1)[0]
