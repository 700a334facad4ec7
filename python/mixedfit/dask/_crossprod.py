"""The per-partition mathematics of a Dask LMM fit, and its partials' sums.

Scaling pass: a partition returns the R factors of its ``X`` (for the aliased-column check)
and of ``sqrt(w) [X y]`` (for the standardization), p x p each -- TSQR: stacking the R
factors of row blocks and factoring again gives the R of all rows (up to row signs), with
QR's accuracy rather than the squared condition number of the normal equations.

Cross-product pass: a partition returns the lower triangle of its part of
``A = [Z Xs ys]' W [Z Xs ys]`` (sparse, over u's order, then the standardized X and y), the
level pairs of the first term with each later term that occur in its rows, and sum log w.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import qr, solve_triangular

from ._spec import partition_arrays

__all__ = ["scaling_partition", "combine_scaling", "Standardization", "crossprod_partition",
           "combine_crossprod", "Layout"]


def _r_factor(M: np.ndarray) -> np.ndarray:
    if M.shape[0] == 0:
        return np.zeros((0, M.shape[1]))
    return qr(M, mode="r", check_finite=False)[0][: min(M.shape), :]


def _column_moments(X: np.ndarray) -> dict:
    n = X.shape[0]
    mean = X.mean(axis=0)
    return {"n": n, "mean": mean, "m2": ((X - mean) ** 2).sum(axis=0),
            "binary": np.all((X == 0) | (X == 1), axis=0)}


def _merge_moments(a: dict, b: dict) -> dict:
    """Chan et al.'s pairwise update of column means and sums of squared deviations."""
    n = a["n"] + b["n"]
    delta = b["mean"] - a["mean"]
    return {"n": n, "mean": a["mean"] + delta * (b["n"] / n),
            "m2": a["m2"] + b["m2"] + delta**2 * (a["n"] * b["n"] / n),
            "binary": a["binary"] & b["binary"]}


def scaling_partition(df, spec):
    a = partition_arrays(df, spec)
    if a is None:
        return None
    sw = np.ones(a.n) if a.weights is None else np.sqrt(a.weights)
    Xy = np.column_stack([a.X, a.y]) * sw[:, None]
    return {"R": _r_factor(a.X), "Rw": _r_factor(Xy), "moments": _column_moments(a.X),
            "ymax": float(np.max(np.abs(a.y)))}


def combine_scaling(*parts):
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    moments = parts[0]["moments"]
    for p in parts[1:]:
        moments = _merge_moments(moments, p["moments"])
    return {"R": _r_factor(np.vstack([p["R"] for p in parts])),
            "Rw": _r_factor(np.vstack([p["Rw"] for p in parts])), "moments": moments,
            "ymax": max(p["ymax"] for p in parts)}


@dataclass(frozen=True)
class Standardization:
    """``X = Xs T`` with ``Xs' W Xs = n I`` and ``y = X b0 + s ys`` (see _standardize.py),
    from the R factor of ``sqrt(w) [X y]`` over the kept columns."""

    T: np.ndarray
    b0: np.ndarray
    scale: float

    @classmethod
    def from_r(cls, Rw: np.ndarray, keep: np.ndarray, n: int) -> "Standardization":
        p_all = keep.size
        cols = np.r_[np.flatnonzero(keep), p_all]
        R = _r_factor(Rw[:, cols])
        p = cols.size - 1
        root_n = math.sqrt(n)
        Rxx, rxy = R[:p, :p], R[:p, p]
        b0 = solve_triangular(Rxx, rxy, lower=False) if p else np.zeros(0)
        return cls(Rxx / root_n, b0, abs(float(R[p, p])) / root_n)

    @property
    def beta_scaled(self) -> np.ndarray:
        """The least-squares fit's coefficients of Xs (T b0)."""
        return self.T @ self.b0

    def rows(self, X: np.ndarray, y: np.ndarray):
        """(Xs, ys) of a block of rows."""
        if self.T.size:
            Xs = solve_triangular(self.T, X.T, trans="T", lower=False).T
            resid = y - Xs @ self.beta_scaled
        else:
            Xs, resid = np.zeros((X.shape[0], 0)), y
        return Xs, resid / self.scale


@dataclass(frozen=True)
class Layout:
    """Where the random effects sit in u: per term its first position, levels and columns."""

    nlevels: tuple[int, ...]
    p: tuple[int, ...]

    @property
    def starts(self) -> np.ndarray:
        sizes = np.array(self.nlevels, dtype=np.int64) * np.array(self.p, dtype=np.int64)
        return np.concatenate([[0], np.cumsum(sizes)])

    @property
    def q(self) -> int:
        return int(self.starts[-1])


def _keyed_sums(keys: np.ndarray):
    """(distinct keys, inverse) for summing row values by key with np.bincount."""
    return np.unique(keys, return_inverse=True)


def _partial_crossprod(codes, Z, D: np.ndarray, w, layout: Layout) -> sp.csr_matrix:
    """The lower triangle of [Z D]' W [Z D] for a block of rows (D = [Xs ys]), sparse over
    u's order then D's columns, by sums per level (and per pair of levels of two terms):
    O(n) per nonzero kind, no n x q matrix is formed."""
    n = D.shape[0]
    starts, q = layout.starts, layout.q
    wv = np.ones(n) if w is None else np.asarray(w, dtype=float)
    rows, cols, vals = [], [], []
    for k, (g, Zk) in enumerate(zip(codes, Z)):
        pk, WZk = layout.p[k], Zk * wv[:, None]
        lev, inv = _keyed_sums(g)
        first = starts[k] + lev * pk
        for a in range(pk):
            for b in range(a + 1):                       # within a level of term k
                rows.append(first + a)
                cols.append(first + b)
                vals.append(np.bincount(inv, WZk[:, a] * Zk[:, b]))
            for j in range(D.shape[1]):                  # D's columns with term k
                rows.append(np.full(lev.size, q + j))
                cols.append(first + a)
                vals.append(np.bincount(inv, WZk[:, a] * D[:, j]))
        for k2 in range(k):                              # term k with an earlier term k2
            nlev = layout.nlevels[k]
            pairs, pinv = _keyed_sums(codes[k2] * nlev + g)
            row0 = starts[k] + (pairs % nlev) * pk
            col0 = starts[k2] + (pairs // nlev) * layout.p[k2]
            for a in range(pk):
                for b in range(layout.p[k2]):
                    rows.append(row0 + a)
                    cols.append(col0 + b)
                    vals.append(np.bincount(pinv, WZk[:, a] * Z[k2][:, b]))
    DWD = (D * wv[:, None]).T @ D
    jj, ii = np.triu_indices(D.shape[1])
    rows.append(q + ii)
    cols.append(q + jj)
    vals.append(DWD[ii, jj])
    dim = q + D.shape[1]
    return sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(dim, dim)).tocsr()


def _level_pairs(codes, layout: Layout) -> list[np.ndarray]:
    """Per term after the first: the distinct keys level0 * nlevels_k + level_k."""
    return [np.unique(codes[0] * layout.nlevels[k] + codes[k]) for k in range(1, len(codes))]


def crossprod_partition(df, spec, std: Standardization, layout: Layout):
    a = partition_arrays(df, spec)
    if a is None:
        return None
    Xs, ys = std.rows(a.X, a.y)
    A = _partial_crossprod(a.codes, a.Z, np.column_stack([Xs, ys]), a.weights, layout)
    return {"A": A, "pairs": _level_pairs(a.codes, layout), "n": a.n,
            "sum_log_w": 0.0 if a.weights is None else float(np.sum(np.log(a.weights)))}


def combine_crossprod(*parts):
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    A = parts[0]["A"]
    for p in parts[1:]:
        A = A + p["A"]
    pairs = [np.unique(np.concatenate(keys)) for keys in zip(*[p["pairs"] for p in parts])]
    return {"A": A, "pairs": pairs, "n": sum(p["n"] for p in parts),
            "sum_log_w": sum(p["sum_log_w"] for p in parts)}


def cooccurrence(pairs: list[np.ndarray], layout: Layout) -> list[np.ndarray]:
    """The core's flattened (level of term 0, level of term k) pairs from the keys."""
    out = []
    for k, keys in enumerate(pairs, start=1):
        c, lev = np.divmod(keys, layout.nlevels[k])
        out.append(np.column_stack([c, lev]).ravel().astype(np.int64))
    return out
