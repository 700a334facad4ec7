"""lme4's variance parameters on the standard-deviation / correlation scale.

theta holds, per random-effects term, the lower triangle of the relative Cholesky factor
Lambda column by column. The same positions on the sd/cor scale hold the standard deviation
(diagonal) or the correlation (off the diagonal) of that term's random effects; lme4 names
them ``.sig01, .sig02, ...`` in this order (``oldNames = TRUE``) and adds ``.sigma`` for a
model with a residual scale.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sdcor_names", "theta_to_sdcor", "theta_to_sdcor_rows", "sdcor_to_theta", "sdcor_values", "is_sd_position",
           "term_sizes"]


def term_sizes(fit) -> list[int]:
    return [t.p for t in fit.design.terms]


def has_residual_scale(fit) -> bool:
    return not getattr(fit, "is_glmm", False) or fit.has_scale


def sdcor_names(fit) -> list[str]:
    """``.sig01, ...`` (one per theta entry) and ``.sigma`` when the model has a scale."""
    k = sum(p * (p + 1) // 2 for p in term_sizes(fit))
    width = max(2, len(str(k)))
    names = [f".sig{i + 1:0{width}d}" for i in range(k)]
    return names + ([".sigma"] if has_residual_scale(fit) else [])


def is_sd_position(ps: list[int]) -> np.ndarray:
    """True where a theta position is a diagonal entry (an SD), False for a correlation."""
    out = []
    for p in ps:
        for j in range(p):
            out.extend([True] + [False] * (p - j - 1))
    return np.array(out, dtype=bool)


def theta_to_sdcor(theta: np.ndarray, sigma: float, ps: list[int]) -> np.ndarray:
    """SDs and correlations (lme4's order) of the random effects for relative factor theta."""
    return theta_to_sdcor_rows(np.asarray(theta, dtype=float)[None, :], np.array([sigma]), ps)[0]


def theta_to_sdcor_rows(thetas: np.ndarray, sigmas: np.ndarray, ps: list[int]) -> np.ndarray:
    """``theta_to_sdcor`` for many rows at once: thetas (m, k), sigmas (m,) -> (m, k)."""
    out = np.empty_like(thetas)
    pos = 0
    for p in ps:
        size = p * (p + 1) // 2
        rows, cols = _lower_positions(p)
        lam = np.zeros((thetas.shape[0], p, p))
        lam[:, rows, cols] = thetas[:, pos:pos + size]
        cov = sigmas[:, None, None] ** 2 * (lam @ lam.transpose(0, 2, 1))
        sd = np.sqrt(np.einsum("mii->mi", cov))
        sdsd = sd[:, :, None] * sd[:, None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            cor = np.where(sdsd > 0, cov / sdsd, 0.0)
        idx = np.arange(p)
        cor[:, idx, idx] = sd
        out[:, pos:pos + size] = cor[:, rows, cols]
        pos += size
    return out


def _lower_positions(p: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the lower triangle, column by column (theta's order)."""
    cols, rows = np.triu_indices(p)       # as optimize.lambda_blocks lays theta out
    return rows, cols


def sdcor_to_theta(sdcor: np.ndarray, sigma: float, ps: list[int]) -> np.ndarray | None:
    """The relative factor theta for SDs/correlations (lme4's order); None when a term's
    correlations do not form a positive-definite matrix or an SD is negative.

    Written with Python floats: profiles call it thousands of times on tiny terms, where
    NumPy's per-call overhead would dominate."""
    vals = [float(v) for v in sdcor]
    out: list[float] = []
    pos = 0
    for p in ps:
        if p <= 2:  # closed forms of the common terms: (1 | g) and (x | g)
            term = _small_term_theta(vals[pos:pos + p * (p + 1) // 2], sigma)
            if term is None:
                return None
            out.extend(term)
            pos += p * (p + 1) // 2
            continue
        cor = [[0.0] * p for _ in range(p)]
        for j in range(p):
            for i in range(j, p):
                cor[i][j] = vals[pos]
                pos += 1
        sd = [cor[i][i] for i in range(p)]
        if min(sd) < 0:
            return None
        chol = _correlation_cholesky(cor, p)
        if chol is None:
            return None
        out.extend(sd[i] * chol[i][j] / sigma for j in range(p) for i in range(j, p))
    return np.array(out)


def _small_term_theta(vals: list, sigma: float) -> list | None:
    """theta of a term of one column (sd) or two (sd_1, cor, sd_2): the Cholesky factor of
    [[1, r], [r, 1]] is [[1, 0], [r, sqrt(1 - r^2)]]."""
    if len(vals) == 1:
        return None if vals[0] < 0 else [vals[0] / sigma]
    sd1, r, sd2 = vals
    if sd1 < 0 or sd2 < 0 or not 1.0 - r * r > 0.0:
        return None
    return [sd1 / sigma, sd2 * r / sigma, sd2 * (1.0 - r * r) ** 0.5 / sigma]


def _correlation_cholesky(cor: list, p: int) -> list | None:
    """Lower Cholesky factor of the correlation matrix with unit diagonal and the strict lower
    triangle of ``cor``; None when it is not positive definite."""
    L = [[0.0] * p for _ in range(p)]
    for j in range(p):
        d = 1.0 - sum(L[j][k] ** 2 for k in range(j))
        if d <= 0.0:
            return None
        L[j][j] = d**0.5
        for i in range(j + 1, p):
            L[i][j] = (cor[i][j] - sum(L[i][k] * L[j][k] for k in range(j))) / L[j][j]
    return L


def sdcor_values(fit) -> np.ndarray:
    """The fit's parameters on lme4's sd/cor scale (``.sig01, ...``, then ``.sigma``)."""
    scale = fit.sigma if has_residual_scale(fit) else 1.0
    vals = theta_to_sdcor(fit.theta, scale, term_sizes(fit))
    return np.r_[vals, [fit.sigma]] if has_residual_scale(fit) else vals
