"""A slow, obviously-correct dense implementation of the profiled LMM objective.

Tests only. Everything is built as full dense matrices and computed with numpy / scipy, following
the mathematics of the blocked-Cholesky core one formula at a time, so that the core can be
compared with something that has no structure to get wrong:

    Omega = [Lambda'Z'WZ Lambda + I   Lambda'Z'WX   Lambda'Z'Wy]
            [X'WZ Lambda              X'WX          X'Wy       ]
            [y'WZ Lambda              y'WX          y'Wy       ]

with L = chol(Omega) (lower), ldL2 = log|L_ZZ|^2, ldRX2 = log|L_XX|^2, pwrss = L[-1, -1]^2 and

    ML:    ldL2         + n     (1 + log(2 pi pwrss / n))     - log|W|
    REML:  ldL2 + ldRX2 + (n-p) (1 + log(2 pi pwrss / (n-p))) - log|W|

Terms are ``(codes, nlevels, Z_k)`` in any order; theta holds, term after term, the lower
triangle of each template lambda_k column by column (lme4's order). Random effects ``u`` and
``b`` are ordered term by term, level by level, column within level.

``marginal_objective`` computes the same criteria from the marginal Gaussian likelihood
(no Cholesky blocks, no profiling algebra) as an independent check of the twin itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg

__all__ = [
    "TwinSolution",
    "dense_z",
    "lambda_matrix",
    "template",
    "twin",
    "marginal_objective",
    "theta_length",
]


def theta_length(ps) -> int:
    return sum(p * (p + 1) // 2 for p in ps)


def template(theta_k, p: int) -> np.ndarray:
    """lambda_k (p x p lower triangular) filled column by column from theta_k."""
    lam = np.zeros((p, p))
    pos = 0
    for j in range(p):
        for i in range(j, p):
            lam[i, j] = theta_k[pos]
            pos += 1
    return lam


def dense_z(terms, n: int) -> np.ndarray:
    """Z (n x q): for term k, row i has Z_k[i, a] in column offset_k + codes[i] * p_k + a."""
    blocks = []
    for codes, nlev, Zk in terms:
        Zk = np.asarray(Zk, dtype=float).reshape(n, -1)
        p = Zk.shape[1]
        B = np.zeros((n, nlev * p))
        for i in range(n):
            for a in range(p):
                B[i, int(codes[i]) * p + a] = Zk[i, a]
        blocks.append(B)
    return np.hstack(blocks)


def lambda_matrix(terms, theta) -> np.ndarray:
    """Lambda = blockdiag_k (I_{l_k} kron lambda_k)."""
    theta = np.asarray(theta, dtype=float)
    blocks = []
    pos = 0
    for codes, nlev, Zk in terms:
        p = np.asarray(Zk).reshape(len(codes), -1).shape[1]
        m = p * (p + 1) // 2
        lam = template(theta[pos : pos + m], p)
        pos += m
        blocks.append(np.kron(np.eye(nlev), lam))
    if pos != theta.size:
        raise ValueError(f"theta has length {theta.size}, the terms need {pos}")
    return scipy.linalg.block_diag(*blocks)


@dataclass
class TwinSolution:
    n: int
    p: int
    ldL2: float
    ldRX2: float
    pwrss: float
    ussq: float
    wrss: float
    ldW: float
    beta: np.ndarray
    u: np.ndarray
    b: np.ndarray
    unscaled_vcov: np.ndarray       # (L_XX L_XX')^-1
    unscaled_condvar: list          # per term (p_k, p_k * l_k), the core's layout
    condvar_full: np.ndarray        # Lambda (Lambda'Z'WZ Lambda + I)^-1 Lambda', q x q

    def objective(self, reml: bool) -> float:
        n, p = self.n, self.p
        if reml:
            nmp = n - p
            return (self.ldL2 + self.ldRX2 + nmp * (1.0 + math.log(2 * math.pi * self.pwrss / nmp))
                    - self.ldW)
        return self.ldL2 + n * (1.0 + math.log(2 * math.pi * self.pwrss / n)) - self.ldW

    def sigma(self, reml: bool) -> float:
        return math.sqrt(self.pwrss / ((self.n - self.p) if reml else self.n))

    def vcov(self, reml: bool) -> np.ndarray:
        return self.sigma(reml) ** 2 * self.unscaled_vcov

    def condvar(self, reml: bool) -> list:
        s2 = self.sigma(reml) ** 2
        return [s2 * M for M in self.unscaled_condvar]


def level_blocks(C: np.ndarray, terms, n: int) -> list[np.ndarray]:
    """Per term, the per-level diagonal p_k x p_k blocks of C side by side, (p_k, p_k * nlev):
    the layout in which the core reports conditional variances."""
    out, off = [], 0
    for codes, nlev, Zk in terms:
        pk = np.asarray(Zk).reshape(n, -1).shape[1]
        blk = np.zeros((pk, pk * nlev))
        for j in range(nlev):
            a = off + j * pk
            blk[:, j * pk : (j + 1) * pk] = C[a : a + pk, a : a + pk]
        out.append(blk)
        off += pk * nlev
    return out


def twin(X, y, weights, terms, theta) -> TwinSolution:
    """Everything the core reports at theta, computed densely."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n, p = X.shape
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    Z = dense_z(terms, n)
    Lam = lambda_matrix(terms, theta)
    q = Z.shape[1]
    ZL = Z @ Lam
    M = np.hstack([ZL, X, y[:, None]])            # [Z Lambda, X, y]
    Omega = M.T @ (w[:, None] * M)
    Omega[:q, :q] += np.eye(q)
    L = np.linalg.cholesky(Omega)
    d = np.diag(L)
    ldL2 = 2.0 * np.sum(np.log(d[:q]))
    ldRX2 = 2.0 * np.sum(np.log(d[q : q + p]))
    r = d[q + p]
    pwrss = r * r

    # Conditional solution: the upper-triangular system L[:q+p, :q+p]' [u; beta] = L[-1, :q+p]'.
    Lzx = L[: q + p, : q + p]
    rhs = L[q + p, : q + p]
    sol = scipy.linalg.solve_triangular(Lzx.T, rhs, lower=False)
    u = sol[:q]
    beta = sol[q:]
    b = Lam @ u
    ussq = float(u @ u)

    LXX = L[q : q + p, q : q + p]
    unscaled_vcov = np.linalg.inv(LXX @ LXX.T) if p else np.zeros((0, 0))

    OmegaZZ = ZL.T @ (w[:, None] * ZL) + np.eye(q)
    Cfull = Lam @ np.linalg.inv(OmegaZZ) @ Lam.T
    cv = level_blocks(Cfull, terms, n)

    return TwinSolution(
        n=n, p=p, ldL2=float(ldL2), ldRX2=float(ldRX2), pwrss=float(pwrss), ussq=ussq,
        wrss=float(pwrss - ussq), ldW=float(np.sum(np.log(w))), beta=beta, u=u, b=b,
        unscaled_vcov=unscaled_vcov, unscaled_condvar=cv, condvar_full=Cfull,
    )


def marginal_objective(X, y, weights, terms, theta, reml: bool) -> float:
    """The same criterion from the marginal likelihood y ~ N(X beta, sigma^2 V), with
    V = W^-1 + Z Lambda Lambda' Z', beta and sigma^2 profiled out by generalized least squares."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n, p = X.shape
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    Z = dense_z(terms, n)
    Lam = lambda_matrix(terms, theta)
    V = np.diag(1.0 / w) + Z @ Lam @ Lam.T @ Z.T
    Vinv = np.linalg.inv(V)
    _, logdetV = np.linalg.slogdet(V)
    if p:
        XtVX = X.T @ Vinv @ X
        beta = np.linalg.solve(XtVX, X.T @ Vinv @ y)
        _, logdetXVX = np.linalg.slogdet(XtVX)
    else:
        beta = np.zeros(0)
        logdetXVX = 0.0
    res = y - X @ beta
    rss = float(res @ Vinv @ res)
    if reml:
        s2 = rss / (n - p)
        return (n - p) * math.log(2 * math.pi * s2) + logdetV + logdetXVX + rss / s2
    s2 = rss / n
    return n * math.log(2 * math.pi * s2) + logdetV + rss / s2
