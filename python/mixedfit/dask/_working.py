"""The per-partition mathematics of a Dask GLMM fit: one PIRLS step's pass over the rows.

With beta and b = Lambda(theta) u broadcast, a partition forms its rows' linear predictor
``eta = Xs beta + Z b + offset``, the mean, the working weights ``pw mu_eta^2 / V(mu)`` and
working response ``eta - base + (y - mu) / mu_eta`` (``base`` is the part of eta PIRLS does
not solve for: the offset when beta is solved for too, ``Xs beta + offset`` when it is held),
the deviance and Pearson sums, and the lower triangle of ``[Z Xs z]' W [Z Xs z]`` -- the
cross products the core's crossproduct problem factors (see _crossprod.py). The family's
functions are those of :mod:`mixedfit.families`.

The scan pass of a GLMM adds, per partition, the family's log-likelihood constant
(``aic(mu) - deviance(mu)``, the same at every mean for the binomial and Poisson families)
and the range of the observed responses (lme4's "Response is constant").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_triangular

from .._design import _parse_cached, _weights
from ._crossprod import Layout, _level_pairs, _partial_crossprod
from ._spec import _complete, family_response, partition_arrays, scan_partition, combine_scans

__all__ = ["WorkingPoint", "glmm_rows", "working_rows_partition", "working_partition", "combine_working", "glmm_scan_partition",
           "combine_glmm_scans", "loglik_constant"]


# ---- the scan pass -----------------------------------------------------------------------
def loglik_constant(fam, y: np.ndarray, pw: np.ndarray) -> float:
    """``-2 log L(mu) - deviance(mu)`` of these rows, which for the binomial and Poisson
    families does not depend on mu (evaluated at the mean the core uses: 1/2, max(y, 1)).
    Binomial weights count trials as lme4's aic does: m = round(pw), k = round(m y), each
    row's log-likelihood weighted by pw / m."""
    ref = np.full_like(y, 0.5) if fam.name == "binomial" else np.maximum(y, 1.0)
    return fam.aic(y, ref, pw) - float(fam.dev_resids(y, ref, pw).sum())


def glmm_scan_partition(df, scan) -> dict:
    """scan_partition's counts and levels, with the response checked by the family and the
    log-likelihood constant and observed response range of the complete rows."""
    out = scan_partition(df, scan)
    frame = _complete(df, scan)
    out["loglik_constant"], out["yrange"] = 0.0, None
    if frame.shape[0]:
        parsed = _parse_cached(scan.formula)
        w = _weights(scan.weights, frame, np.arange(frame.shape[0]), frame.shape[0])
        y, pw = family_response(scan.family, parsed, frame, scan.formula, w)
        out["loglik_constant"] = loglik_constant(scan.family, y, pw)
        observed = y[pw > 0]
        if observed.size:
            out["yrange"] = (float(observed.min()), float(observed.max()))
    return out


def combine_glmm_scans(*scans: dict) -> dict:
    out = combine_scans(*scans)
    out["loglik_constant"] = sum(s["loglik_constant"] for s in scans)
    ranges = [s["yrange"] for s in scans if s["yrange"] is not None]
    out["yrange"] = (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None
    return out


# ---- the working pass ----------------------------------------------------------------------
@dataclass(frozen=True)
class WorkingPoint:
    """Where a pass evaluates: ``beta_s`` (coefficients of Xs), each term's random effects
    ``b_terms`` (levels x columns), whether beta is solved for (``with_beta``: base = offset)
    or held (base = Xs beta + offset); ``glm_start``: eta from the family's starting means
    instead (PIRLS's first stage-1 step); ``with_pairs``: also return the level pairs;
    ``leverage``: also return the row sums the exact gradient takes (gradient_sums)."""

    beta_s: np.ndarray
    b_terms: tuple
    with_beta: bool
    glm_start: bool = False
    with_pairs: bool = False
    leverage: np.ndarray | None = None   # one term: Lambda S_c Lambda' per level (gradient)


def working_rows(fam, eta, base, y, pw):
    """(mu, working weights, working response, deviance, Pearson sum) of rows at eta, or
    None where a mean is invalid (off the family's range or not finite): the core's PIRLS
    rows (``Family.irls_rows``), so each partition computes what the in-memory fit does."""
    mu, mu_eta, weights, z, dev = fam.irls_rows(eta, base, y, pw)
    if not np.isfinite(dev):
        return None
    with np.errstate(all="ignore"):
        r = (y - mu) / mu_eta
        pearson = float(np.dot(weights, r * r))  # pw (y - mu)^2 / V(mu)
    if not (np.isfinite(pearson) and np.all(np.isfinite(weights)) and np.all(np.isfinite(z))):
        return None
    return mu, weights, z, dev, pearson


def _scaled_columns(X: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Xs = X T^-1 (T upper triangular)."""
    if T.size == 0:
        return np.zeros((X.shape[0], 0))
    return solve_triangular(T, X.T, trans="T", lower=False).T


def glmm_rows(df, spec, T: np.ndarray):
    """A partition's design rows for the working passes (X already as Xs), or None."""
    a = partition_arrays(df, spec)
    if a is not None:
        a.X = _scaled_columns(a.X, T)
    return a


def working_rows_partition(a, fam, layout: Layout, point: WorkingPoint):
    """A partition's part of one PIRLS step from its rows (glmm_rows; None: no rows)."""
    if a is None:
        return None
    offset = np.zeros(a.n) if a.offset is None else a.offset
    fixed = a.X @ point.beta_s + offset
    if point.glm_start:
        eta = fam.linkfun(fam.mustart(a.y, a.weights))
    else:
        eta = fixed.copy()
        for codes, Z, B in zip(a.codes, a.Z, point.b_terms):
            eta += np.einsum("ij,ij->i", Z, B[codes])
    rows = working_rows(fam, eta, offset if point.with_beta else fixed, a.y, a.weights)
    out = {"valid": rows is not None, "n": a.n}
    if rows is not None:
        mu, weights, z, dev, pearson = rows
        out.update(dev=dev, pearson=pearson,
                   A=_partial_crossprod(a.codes, a.Z, np.column_stack([a.X, z]), weights,
                                        layout),
                   extreme=int(np.sum((mu < 1e-8) | (mu > 1 - 1e-8))) if fam.name == "binomial"
                   else 0)
        if point.leverage is not None:
            out["grad"] = gradient_sums(a, fam, mu, weights, point.leverage, layout)
    if point.with_pairs:
        out["pairs"] = _level_pairs(a.codes, layout)
    return out


def gradient_sums(a, fam, mu, weights, leverage: np.ndarray, layout: Layout) -> dict:
    """The row sums of the Laplace objective's exact gradient for one random-effects term
    (binomial-logit, Poisson-log), as the core's Glmm::gradient forms them: with the score
    r = pw (y - mu), the weights' derivative Wd = dW/deta (W (1 - 2 mu), or W) and the
    leverage h_i = Z_i Lambda S_c Lambda' Z_i' of row i in level c: per level Z'r and
    sum Wd h Z, and X'r, sum Wd h X (everything else comes from the cross products)."""
    Z, codes = a.Z[0], a.codes[0]
    r = a.weights * (a.y - mu)
    wd = weights * (1.0 - 2.0 * mu) if fam.name == "binomial" else weights
    h = np.einsum("ij,ijk,ik->i", Z, leverage[codes], Z)
    nlev = layout.nlevels[0]

    def per_level(v):
        return np.column_stack([np.bincount(codes, v * Z[:, j], minlength=nlev)
                                for j in range(Z.shape[1])])

    return {"Zr": per_level(r), "s": per_level(wd * h), "Xr": a.X.T @ r,
            "xs": a.X.T @ (wd * h)}


def working_partition(df, spec, T: np.ndarray, layout: Layout, point: WorkingPoint):
    """working_rows_partition of a partition read afresh (no Client to keep the rows)."""
    return working_rows_partition(glmm_rows(df, spec, T), spec.scan.family, layout, point)


def combine_working(*parts):
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    out = {"valid": all(p["valid"] for p in parts), "n": sum(p["n"] for p in parts)}
    if out["valid"]:
        A = parts[0]["A"]
        for p in parts[1:]:
            A = A + p["A"]
        out.update(A=A, dev=sum(p["dev"] for p in parts),
                   pearson=sum(p["pearson"] for p in parts),
                   extreme=sum(p["extreme"] for p in parts))
        if "grad" in parts[0]:
            out["grad"] = {k: sum(p["grad"][k] for p in parts) for k in parts[0]["grad"]}
    if "pairs" in parts[0]:
        out["pairs"] = [np.unique(np.concatenate(keys))
                        for keys in zip(*[p["pairs"] for p in parts])]
    return out
