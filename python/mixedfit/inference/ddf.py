"""Denominator degrees of freedom for t and F tests of fixed effects in an LMM.

Satterthwaite (as lmerTest): the variance parameters are ``varpar = (theta, sigma)``. Their
asymptotic covariance is ``2 H^-1`` with H the Hessian of the REML (or ML) deviance in varpar
(lmerTest's ``devfun_vp``), and the variance of a contrast ``L beta`` changes with varpar
through the Jacobian of ``vcov(beta)``. lmerTest differentiates both numerically (numDeriv,
Richardson extrapolation); here both are analytic, from the q-space pieces of
:mod:`._marginal`:

- ``d vcov / d theta_i = vcov X'V^-1 (dV/dtheta_i) V^-1 X vcov``, ``d vcov / d sigma = 2 vcov / sigma``;
- the Hessian from the standard second derivatives of ``log|V| (+ log|X'V^-1X|) + y'Py``
  (Harville 1977), with ``V = sigma^2 (W^-1 + Z Lambda Lambda' Z')``.

Kenward-Roger (as pbkrtest's ``vcovAdj`` and ``Lb_ddf``, which lmerTest calls): the
covariance of beta adjusted for the uncertainty of the variance components, and its df.
pbkrtest parametrizes Sigma linearly by the elements of each term's covariance matrix plus
sigma^2, and so does this module.
"""

from __future__ import annotations

import warnings
from functools import cached_property

import numpy as np
from scipy import stats

from ._marginal import Marginal, TermBlock, block_apply, block_quadratic, marginal_of

__all__ = ["Satterthwaite", "KenwardRoger", "ttest_table", "DDF_METHODS"]

DDF_METHODS = ("Satterthwaite", "Kenward-Roger", "lme4")


def _theta_derivatives(blocks: list[TermBlock]):
    """(term, E_i = dT/dtheta_i, D_i = d(T T')/dtheta_i) for each theta_i, in lme4's order."""
    out = []
    for blk in blocks:
        for (a, b) in blk.theta_positions():
            E = np.zeros((blk.p, blk.p))
            E[a, b] = 1.0
            out.append((blk, E, E @ blk.T.T + blk.T @ E.T))
    return out


def _pos_inverse(h: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """Inverse over the eigenvalues above tol, with lmerTest's warnings when the Hessian of
    the deviance is not positive definite (lmerTest's treatment of a singular Hessian)."""
    vals, vecs = np.linalg.eigh((h + h.T) / 2)
    for bad, what in ((vals < -tol, "failed to converge with {n} negative eigenvalue(s)"),
                      (np.abs(vals) <= tol, "may not have converged with {n} eigenvalue(s) "
                                            "close to zero")):
        if bad.any():
            values = " ".join(f"{v:.1e}" for v in vals[bad])
            warnings.warn(f"Hessian of the deviance in (theta, sigma): model "
                          f"{what.format(n=int(bad.sum()))}: {values}; the Satterthwaite df "
                          "use the positive eigenvalues only", stacklevel=4)
    keep = vals > tol
    return (vecs[:, keep] / vals[keep]) @ vecs[:, keep].T


class Satterthwaite:
    """lmerTest's Satterthwaite machinery for one LMM fit."""

    def __init__(self, fit, marginal: Marginal | None = None):
        self.fit = fit
        self.m = marginal_of(fit) if marginal is None else marginal
        self.reml = bool(fit.reml)

    @cached_property
    def vcov_beta(self) -> np.ndarray:
        return self.m.vcov_beta

    @cached_property
    def jacobian(self) -> list[np.ndarray]:
        """d vcov(beta) / d varpar: one p x p matrix per theta, then one for sigma."""
        m, C = self.m, self.vcov_beta
        out = []
        for blk, _, D in _theta_derivatives(m.blocks):
            middle = block_quadratic(m.Bzx, blk, D)          # X'V0^-1 Z G_i Z' V0^-1 X
            out.append(C @ middle @ C / m.sigma**2)
        out.append(2.0 * C / m.sigma)
        return out

    @cached_property
    def hessian(self) -> np.ndarray:
        """Hessian of the deviance (REML or ML, as the fit) in varpar = (theta, sigma):
        tr(P V_ij) - tr(P V_i P V_j) + 2 y'P V_i P V_j P y - y'P V_ij P y (REML; ML has V^-1
        in the traces), written in q-space (see the module docstring)."""
        m = self.m
        s2 = m.sigma**2
        derivs = _theta_derivatives(m.blocks)
        k = len(derivs)
        trace_op = m.S0_op if self.reml else m.Bzz_op   # P0 (REML) or V0^-1 (ML) in q-space
        Gs = np.zeros((m.q, k))                          # G_i s0, column by column
        for i, (blk, _, D) in enumerate(derivs):
            Gs[blk.start : blk.stop, i] = block_apply(m.s0[:, None], blk, D)[:, 0]
        SGs = m.S0_op.matmul(Gs)
        H = np.zeros((k + 1, k + 1))
        for i, (bi, Ei, Di) in enumerate(derivs):
            for j in range(i, k):
                bj, Ej, Dj = derivs[j]
                h = -trace_op.pair_trace(bi, Di, bj, Dj) + 2.0 * float(Gs[:, i] @ SGs[:, j]) / s2
                if bi is bj:
                    Dij = Ei @ Ej.T + Ej @ Ei.T          # second derivative of T T'
                    s_blk = m.s0[bi.start : bi.stop].reshape(bi.nlevels, bi.p)
                    h += float(np.sum(Dij * trace_op.diag_sum(bi).T))
                    h -= float(np.einsum("la,ab,lb->", s_blk, Dij, s_blk)) / s2
                H[i, j] = H[j, i] = h
            H[i, k] = H[k, i] = 2.0 * float(m.s0 @ Gs[:, i]) / m.sigma**3
        nu = m.n - m.p if self.reml else m.n
        H[k, k] = -2.0 * nu / s2 + 6.0 * m.pwrss / s2**2
        return H

    @cached_property
    def vcov_varpar(self) -> np.ndarray:
        return 2.0 * _pos_inverse(self.hessian)

    def contrast_df(self, L: np.ndarray) -> float:
        """Satterthwaite df of the single contrast L beta."""
        L = np.asarray(L, dtype=float)
        var = float(L @ self.vcov_beta @ L)
        grad = np.array([L @ J @ L for J in self.jacobian])
        return 2.0 * var**2 / float(grad @ self.vcov_varpar @ grad)

    def ttest(self, L: np.ndarray):
        """(estimate, SE, df) of L beta."""
        L = np.asarray(L, dtype=float)
        return float(L @ self.fit.beta), float(np.sqrt(L @ self.vcov_beta @ L)), self.contrast_df(L)

    def ftest(self, L: np.ndarray, eps: float = np.sqrt(np.finfo(float).eps)):
        """lmerTest's contestMD: (F, numDF, denDF) for H0: L beta = 0 (rows of L)."""
        L = np.atleast_2d(np.asarray(L, dtype=float))
        VL = L @ self.vcov_beta @ L.T
        d, P = np.linalg.eigh((VL + VL.T) / 2)
        d, P = d[::-1], P[:, ::-1]
        q = int(np.sum(d > max(eps * d[0], 0.0)))
        if q == 0:
            return np.nan, 0, np.nan
        PtL = P[:, :q].T @ L
        t2 = (PtL @ self.fit.beta) ** 2 / d[:q]
        nu = np.array([self.contrast_df(row) for row in PtL])
        return float(t2.sum() / q), q, fstat_ddf(nu)


def fstat_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """lmerTest's get_Fstat_ddf: one df for an F statistic from its q eigen-contrasts' df."""
    nu = np.asarray(nu, dtype=float)
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(nu.mean())
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2)))
    return 2.0 * E / (E - nu.size)


class KenwardRoger:
    """pbkrtest's adjusted covariance of beta (vcovAdj) and Kenward-Roger df (Lb_ddf)."""

    def __init__(self, fit, marginal: Marginal | None = None):
        if not fit.reml:
            raise ValueError("ddf='Kenward-Roger' needs a REML fit (as lmerTest); refit with reml=True")
        if fit.design.weights is not None:
            raise ValueError("ddf='Kenward-Roger' is not available for fits with prior weights "
                             "(pbkrtest ignores them); use ddf='Satterthwaite'")
        self.fit = fit
        self.m = marginal_of(fit) if marginal is None else marginal
        self.phi = self.m.vcov_beta
        self._build()

    def _component_blocks(self):
        """pbkrtest's variance components: each element of each term's covariance matrix
        (a symmetric 0/1 pattern F on every level's block), then sigma^2 (last, implicit)."""
        comps = []
        for blk in self.m.blocks:
            for (a, b) in blk.theta_positions():      # lower triangle, each element once
                F = np.zeros((blk.p, blk.p))
                F[a, b] = F[b, a] = 1.0
                comps.append((blk, F))
        return comps

    def _embedded(self, blk, F, M):
        """(I (x) F) M on the term's rows, zero elsewhere (q rows)."""
        out = np.zeros_like(M)
        out[blk.start : blk.stop] = block_apply(M, blk, F)
        return out

    def _components(self, comps):
        """P_i = -X'S^-1 G_i S^-1 X and Q_ij = X'S^-1 G_i S^-1 G_j S^-1 X (S = sigma^2 V0);
        for sigma^2, G = I and V0^-2, V0^-3 come from V0 = I + Z Psi Z'."""
        m = self.m
        s2 = m.sigma**2
        s4, s6 = s2 * s2, s2 * s2 * s2
        psiBzx = m.psi_apply(m.Bzx)
        ZV2X = m.Bzx - m.Bzz_op.matmul(psiBzx)                 # Z' V0^-2 X
        XV2X = m.Bxx - m.Bzx.T @ psiBzx
        XV3X = XV2X - m.Bzx.T @ m.psi_apply(ZV2X)
        k = len(comps) + 1
        P = [-block_quadratic(m.Bzx, blk, F) / s4 for blk, F in comps] + [-XV2X / s4]
        GB = [self._embedded(blk, F, m.Bzx) for blk, F in comps]   # G_i Z'V0^-1 X
        BGB = [m.Bzz_op.matmul(g) for g in GB]                      # Z'V0^-1 Z G_i Z'V0^-1 X
        Q = {}
        for i in range(len(comps)):
            for j in range(i, len(comps)):
                Q[i, j] = GB[i].T @ BGB[j] / s6
            Q[i, k - 1] = GB[i].T @ ZV2X / s6
        Q[k - 1, k - 1] = XV3X / s6
        return P, Q

    def _information(self, comps):
        """tr(P G_i P G_j) (REML P), i.e. pbkrtest's IE2. With V0 = I + Z Psi Z', the
        sigma^2 component needs Z'P0^2 Z = S0 - S0 Psi S0 and tr(P0^2) = tr(P0) -
        tr(Psi Z'P0^2 Z), where tr(P0) = n - p - tr(Psi S0)."""
        m = self.m
        S = m.S0_op
        psi = [(blk, blk.T @ blk.T.T) for blk in m.blocks]
        k = len(comps) + 1
        info = np.zeros((k, k))
        for i, (bi, Fi) in enumerate(comps):
            for j in range(i, len(comps)):
                bj, Fj = comps[j]
                info[i, j] = info[j, i] = S.pair_trace(bi, Fi, bj, Fj)
            zp2z = S.diag_sum(bi) - S.sandwich_diag_sum(bi, psi)
            info[i, k - 1] = info[k - 1, i] = float(np.sum(Fi * zp2z.T))
        tr_psiS = sum(float(np.sum(Pk * S.diag_sum(blk).T)) for blk, Pk in psi)
        tr_psiSpsiS = sum(S.pair_trace(bk, Pk, bl, Pl) for bk, Pk in psi for bl, Pl in psi)
        tr_p0 = (m.n - m.p) - tr_psiS
        info[k - 1, k - 1] = tr_p0 - (tr_psiS - tr_psiSpsiS)
        return info / m.sigma**4

    def _build(self):
        comps = self._component_blocks()
        P, Q = self._components(comps)
        info = self._information(comps)
        k = len(P)
        cond = np.min(np.abs(np.linalg.eigvalsh(info)))
        W = 2.0 * (np.linalg.inv(info) if cond > 1e-10 else np.linalg.pinv(info))
        W = (W + W.T) / 2
        phi = self.phi
        U = np.zeros_like(phi)
        for i in range(k):
            for j in range(i, k):
                term = W[i, j] * (Q[i, j] - P[i] @ phi @ P[j])
                U += term if i == j else term + term.T
        self.P, self.W = P, W
        self.vcov_adjusted = phi + 2.0 * phi @ U @ phi

    def _a1_a2(self, theta: np.ndarray):
        A1 = A2 = 0.0
        k = len(self.P)
        us = [theta @ self.phi @ Pi @ self.phi for Pi in self.P]
        for i in range(k):
            for j in range(i, k):
                e = 1.0 if i == j else 2.0
                A1 += e * self.W[i, j] * np.trace(us[i]) * np.trace(us[j])
                A2 += e * self.W[i, j] * np.sum(us[i] * us[j].T)
        return A1, A2

    def _kr_terms(self, L: np.ndarray):
        """(q, ddf, F scaling) of pbkrtest's .KR_adjust for the rows of L."""
        theta = L.T @ np.linalg.solve(L @ self.phi @ L.T, L)
        A1, A2 = self._a1_a2(theta)
        q = np.linalg.matrix_rank(L)
        B = (A1 + 6 * A2) / (2 * q)
        g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
        denom = 3 * q + 2 * (1 - g)
        c1, c2, c3 = g / denom, (q - g) / denom, (q + 2 - g) / denom
        V0 = 1 + c1 * B
        V0 = 0.0 if abs(V0) < 1e-10 else V0
        V1, V2 = 1 - c2 * B, 1 - c3 * B
        x, y = 1 - A2 / q, V1
        ratio = 1.0 if (abs(x) < 1e-14 and abs(y) < 1e-14) else x / y
        rho = ratio**2 * V0 / V2 / q
        df2 = 4 + (q + 2) / (q * rho - 1)
        scaling = 1.0 if abs(df2 - 2) < 1e-2 else df2 * (1 - A2 / q) / (df2 - 2)
        return q, df2, scaling

    def ttest(self, L: np.ndarray):
        """(estimate, adjusted SE, KR df) of L beta."""
        L = np.asarray(L, dtype=float)
        _, df, _ = self._kr_terms(L[None, :])
        return float(L @ self.fit.beta), float(np.sqrt(L @ self.vcov_adjusted @ L)), df

    def ftest(self, L: np.ndarray):
        """(unscaled F, numDF, denDF, F scaling) as lmerTest reports pbkrtest's KRmodcomp."""
        L = np.atleast_2d(np.asarray(L, dtype=float))
        q, df2, scaling = self._kr_terms(L)
        Lb = L @ self.fit.beta
        wald = float(Lb @ np.linalg.solve(L @ self.vcov_adjusted @ L.T, Lb))
        return wald / q, q, df2, scaling


def ttest_table(fit, method: str):
    """Estimate, SE, df, t and p for each fixed effect (lmerTest's summary coefficients)."""
    engine = Satterthwaite(fit) if method == "Satterthwaite" else KenwardRoger(fit)
    rows = np.array([engine.ttest(row) for row in np.eye(len(fit.beta))], dtype=float)
    est, se, df = rows.reshape(-1, 3).T
    t = est / se
    p = 2.0 * stats.t.sf(np.abs(t), df)
    return est, se, df, t, p
