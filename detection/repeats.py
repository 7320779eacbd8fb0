"""Where each hashed key comes next in an array, compiled with Numba: one pass, no sort.

The standard level's distinct counts (``FeatureExtractor._standard``: distinct ports, servers,
clients... of a key in its window) need, for each packet, the next packet with the same (key,
value) pair. A stable sort of the pairs' hashes found it; NumPy's stable sort is a timsort, fast on
benign traffic's few pairs repeated in runs and three times as slow on a scan's thousands of
distinct ones, which made a scan cost more to featurise than benign traffic. A hash table walked
from the end finds the same positions in one pass whatever the keys.
"""

from __future__ import annotations

import secrets

import numpy as np
from numba import njit

# Slots are picked by a hash of the key salted per process: the keys hash packet fields that a
# sender chooses, and keys crafted to share their slot would make the walk quadratic.
_SALT = np.uint64(secrets.randbits(64))


@njit(cache=True, nogil=True)
def _next_equal(keys: np.ndarray, salt: np.uint64, out: np.ndarray) -> None:  # pragma: no cover
    n = keys.shape[0]
    size = 16
    while size < 2 * n:
        size *= 2
    mask = np.uint64(size - 1)
    slot_key = np.empty(size, np.uint64)
    slot_at = np.full(size, -1, np.int64)  # the latest position seen of the slot's key; -1: empty
    for i in range(n - 1, -1, -1):
        key = keys[i]
        s = key ^ salt  # splitmix64's finaliser
        s = (s ^ (s >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        s = (s ^ (s >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        s = (s ^ (s >> np.uint64(31))) & mask
        while slot_at[s] >= 0 and slot_key[s] != key:
            s = (s + np.uint64(1)) & mask
        if slot_at[s] >= 0:
            out[i] = slot_at[s]
        else:
            slot_key[s] = key
            out[i] = n
        slot_at[s] = i


def next_equal(keys: np.ndarray) -> np.ndarray:
    """Per position ``i`` of a 1-d uint64 array, the smallest ``j > i`` with ``keys[j] == keys[i]``,
    or ``len(keys)`` if none (int64)."""
    if keys.dtype != np.uint64 or keys.ndim != 1:
        raise TypeError(f"expected a 1-d array of uint64 keys, got {keys.dtype} of shape {keys.shape}")
    out = np.empty(len(keys), np.int64)
    _next_equal(np.ascontiguousarray(keys), _SALT, out)
    return out
