"""The compiled next occurrences of the distinct counts are those a stable sort finds."""

from __future__ import annotations

import numpy as np
import pytest

from detection.repeats import next_equal


def _by_stable_sort(keys: np.ndarray) -> np.ndarray:
    """What ``FeatureExtractor._standard`` computed before: equal keys side by side in order."""
    n = len(keys)
    o = np.argsort(keys, kind="stable")
    same = keys[o][1:] == keys[o][:-1]
    nxt = np.full(n, n, np.int64)
    nxt[o[:-1][same]] = o[1:][same]
    return nxt


@pytest.mark.parametrize("distinct", [1, 3, 50, 5_000, 100_000])
def test_next_equal_finds_what_a_stable_sort_finds(distinct):
    rng = np.random.default_rng(distinct)
    pool = rng.integers(0, 2**64, distinct, dtype=np.uint64)
    for n in (0, 1, 2, 17, 20_000):
        keys = pool[rng.integers(0, distinct, n)]
        assert np.array_equal(next_equal(keys), _by_stable_sort(keys))


def test_keys_sharing_their_low_bits_are_told_apart():
    """Keys a sender chose to collide in a plain table (equal low bits) still find their own next."""
    rng = np.random.default_rng(5)
    keys = (rng.integers(0, 2**20, 30_000, dtype=np.uint64) << np.uint64(40)) | np.uint64(7)
    assert np.array_equal(next_equal(keys), _by_stable_sort(keys))
