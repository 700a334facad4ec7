"""Exact quantiles of a Dask Series in three passes, O(bins) on the client.

1. count, min and max; 2. a histogram of BINS equal bins over [min, max]; 3. the values of
the few bins that hold the order statistics asked for, sorted on the client. The quantiles
are numpy's default (linear interpolation between order statistics), as the in-memory
summary computes them.
"""

from __future__ import annotations

import numpy as np

from ._passes import reduce_partitions

__all__ = ["exact_quantiles"]

BINS = 16384


def _range(part) -> tuple:
    v = np.asarray(part, dtype=float)
    if v.size == 0:
        return (0, np.inf, -np.inf)
    return (v.size, float(v.min()), float(v.max()))


def _merge_ranges(*parts) -> tuple:
    return (sum(p[0] for p in parts), min(p[1] for p in parts), max(p[2] for p in parts))


def _bin_of(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    width = hi - lo
    if width <= 0:
        return np.zeros(v.size, dtype=np.int64)
    return np.clip(((v - lo) / width * BINS).astype(np.int64), 0, BINS - 1)


def _histogram(part, lo, hi) -> np.ndarray:
    return np.bincount(_bin_of(np.asarray(part, dtype=float), lo, hi), minlength=BINS)


def _add(*parts):
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def _values_in(part, lo, hi, bins) -> np.ndarray:
    v = np.asarray(part, dtype=float)
    return v[np.isin(_bin_of(v, lo, hi), bins)]


def _concat(*parts) -> np.ndarray:
    return np.concatenate(parts)


def exact_quantiles(series, probs, progress: bool = False) -> np.ndarray:
    n, lo, hi = reduce_partitions(series, _range, _merge_ranges, progress=progress)
    if n == 0:
        return np.full(len(probs), np.nan)
    positions = (n - 1) * np.asarray(probs, dtype=float)
    ranks = np.unique(np.concatenate([np.floor(positions), np.ceil(positions)]).astype(np.int64))
    counts = reduce_partitions(series, _histogram, _add, lo, hi, progress=progress)
    before = np.concatenate([[0], np.cumsum(counts)])
    bin_of_rank = np.searchsorted(before, ranks, side="right") - 1
    bins = np.unique(bin_of_rank)
    values = np.sort(reduce_partitions(series, _values_in, _concat, lo, hi, bins,
                                       progress=progress))
    # The gathered values are the bins' in order, so rank r sits at r - (rows before its bin)
    # plus the sizes of the gathered bins before it.
    gathered_before = {b: int(np.sum(counts[bins[bins < b]])) for b in bins}
    order_stat = {int(r): values[r - before[b] + gathered_before[b]]
                  for r, b in zip(ranks, bin_of_rank)}
    lower = np.floor(positions).astype(np.int64)
    upper = np.ceil(positions).astype(np.int64)
    frac = positions - lower
    return np.array([order_stat[lo_] + (order_stat[up] - order_stat[lo_]) * f
                     for lo_, up, f in zip(lower, upper, frac)])
