"""The flagged rows' top features of the combined model, compiled with Numba: one pass per row.

A flood flags most of its packets, and in NumPy each flagged row's top features (``score_top``)
cost a dozen passes over float64 temporaries of the row's ~160 contributions: the forest's
distances outside the training range, both models' sums and shares, then three argmax passes. That
was ~3 us a flagged row, most of what scoring an attack cost beyond scoring benign traffic.
``combined_top`` computes the same contributions row by row in registers and a small buffer, with
the same operations in the same order (NumPy's pairwise summation included), so the ranking is the
same to the last tie; tests/detection/test_ranking.py holds it to that. Rows whose contributions
are not all finite are left to the NumPy ranking (a stable sort), as ``ml._top_indices`` does.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_PAIRWISE_BLOCK = 128  # NumPy's PW_BLOCKSIZE: sums of up to this many terms are not split


@njit(cache=True, nogil=True)
def _pairwise_sum(a: np.ndarray, n: int, stack: np.ndarray, sums: np.ndarray) -> float:  # pragma: no cover
    """``a[:n].sum()`` as NumPy adds a contiguous float64 row (its ``pairwise_sum``): eight running
    sums per run of up to 128 terms, a longer run split in two halves (at a multiple of 8) whose
    sums are added. Without recursion (Numba's cache crashes on loading a recursive function):
    ``stack`` holds the runs still to sum as (start, length) rows, a length of -1 standing for
    "add the last two sums", and ``sums`` the sums made; 64 rows of each are plenty."""
    stack[0, 0], stack[0, 1] = 0, n
    top, made = 1, 0
    while top:
        top -= 1
        lo, m = stack[top, 0], stack[top, 1]
        if m < 0:
            made -= 1
            sums[made - 1] += sums[made]
        elif m < 8:
            res = 0.0
            for i in range(lo, lo + m):
                res += a[i]
            sums[made] = res
            made += 1
        elif m <= _PAIRWISE_BLOCK:
            r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
            r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
            i = lo + 8
            whole = lo + m - m % 8
            while i < whole:
                r0 += a[i]
                r1 += a[i + 1]
                r2 += a[i + 2]
                r3 += a[i + 3]
                r4 += a[i + 4]
                r5 += a[i + 5]
                r6 += a[i + 6]
                r7 += a[i + 7]
                i += 8
            res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
            for k in range(i, lo + m):
                res += a[k]
            sums[made] = res
            made += 1
        else:
            half = m // 2
            half -= half % 8
            # popped in reverse: the first half is summed first, then the second, then both added
            stack[top, 0], stack[top, 1] = 0, -1
            stack[top + 1, 0], stack[top + 1, 1] = lo + half, m - half
            stack[top + 2, 0], stack[top + 2, 1] = lo, half
            top += 3
    return sums[0]


@njit(cache=True, nogil=True)
def _maximum(a: float, b: float) -> float:  # pragma: no cover - compiled
    """``np.maximum``: NaN if either is (Python's ``max`` may return the other)."""
    if a != a or b != b:
        return np.nan
    return a if a >= b else b


@njit(cache=True, nogil=True)
def _combined_top(
    Z: np.ndarray,
    errors: np.ndarray,
    rf: np.ndarray,
    ra: np.ndarray,
    z_lo: np.ndarray,
    z_hi: np.ndarray,
    rows: np.ndarray,
    out: np.ndarray,
    ok: np.ndarray,
) -> None:  # pragma: no cover - compiled
    n_features = Z.shape[1]
    top = out.shape[1]
    forest = np.empty(n_features)
    autoencoder = np.empty(n_features)
    C = np.empty(n_features)
    best = np.empty(top)  # the values of out[r]
    stack = np.empty((64, 2), np.int64)
    sums = np.empty(64)
    tenth_percent = np.float32(1e-3)
    for r in range(rows.shape[0]):
        i = rows[r]
        # The forest's contributions (``AnomalyModel._outside_range``): how far each scaled value
        # lies outside the training range; inside it everywhere, a thousandth of its distance from
        # the median, in float32 as NumPy multiplies a float32 row by a Python float.
        outside = False
        for j in range(n_features):
            z = np.float64(Z[i, j])
            e = _maximum(_maximum(z - z_hi[j], z_lo[j] - z), 0.0)
            forest[j] = e
            outside |= e > 0.0
        if not outside:
            for j in range(n_features):
                forest[j] = np.float64(np.float32(abs(Z[i, j])) * tenth_percent)
        for j in range(n_features):
            autoencoder[j] = np.float64(errors[i, j])
        # Each model's contributions as shares of their sum, weighted by its ratio (``_shares``).
        sf = _maximum(_pairwise_sum(forest, n_features, stack, sums), 1e-12)
        sa = _maximum(_pairwise_sum(autoencoder, n_features, stack, sums), 1e-12)
        a, b = rf[i], ra[i]
        for j in range(n_features):
            C[j] = a * forest[j] / sf + b * autoencoder[j] / sa
        finite = True
        for j in range(n_features):
            finite &= np.isfinite(C[j])
        ok[r] = finite
        if not finite:
            continue
        # The ``top`` largest, largest first, of equal ones the lower index (as a stable sort, and
        # ``ml._top_indices``): one pass, each value against the smallest kept so far.
        kept = 0
        for j in range(n_features):
            c = C[j]
            if kept == top and not c > best[top - 1]:
                continue
            k = kept if kept < top else top - 1
            while k > 0 and c > best[k - 1]:
                best[k], out[r, k] = best[k - 1], out[r, k - 1]
                k -= 1
            best[k], out[r, k] = c, j
            kept = min(kept + 1, top)


def combined_top(
    Z: np.ndarray,
    errors: np.ndarray,
    rf: np.ndarray,
    ra: np.ndarray,
    z_lo: np.ndarray,
    z_hi: np.ndarray,
    rows: np.ndarray,
    top: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``rows`` (indices into the chunk), the indices of the ``top`` features by
    ``CombinedModel``'s contributions, largest first, and whether they were all finite (where not,
    that row's indices are unset: the caller ranks it in NumPy).

    ``Z``: the chunk's scaled rows (float32, as ``RobustScaler.transform`` makes them); ``errors``:
    the autoencoder's squared errors of them; ``rf``, ``ra``: each model's score over its
    threshold; ``z_lo``, ``z_hi``: the training range of the scaled values (``stats``)."""
    if Z.dtype != np.float32:
        raise TypeError(f"scaled rows are float32, got {Z.dtype}")
    top = min(top, Z.shape[1])
    out = np.empty((len(rows), top), np.intp)
    ok = np.empty(len(rows), np.bool_)
    if top:  # even without rows: the first call loads the compiled code (``scoring.warm_up``)
        _combined_top(
            np.ascontiguousarray(Z),
            np.ascontiguousarray(errors),
            np.ascontiguousarray(rf, np.float64),
            np.ascontiguousarray(ra, np.float64),
            np.ascontiguousarray(z_lo, np.float64),
            np.ascontiguousarray(z_hi, np.float64),
            np.ascontiguousarray(rows, np.intp),
            out,
            ok,
        )
    return out, ok
