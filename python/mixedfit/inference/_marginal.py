"""The marginal model of a fitted LMM in the space of the random effects.

With relative covariance factor Lambda(theta), the response has covariance
``sigma^2 V0`` where ``V0 = W^-1 + Z Lambda Lambda' Z'``. Everything the degrees-of-freedom
methods need reduces to products ``a' V0^-1 b`` for a, b among Z, X and y, which Woodbury's
identity gives from q x q quantities (q = number of random effects) without forming any
n x n matrix: ``a' V0^-1 b = a'Wb - (Lambda'Z'Wa)' A^-1 (Lambda'Z'Wb)`` with
``A = I + Lambda'Z'WZ Lambda`` (the matrix lme4 factors as L L').

Random effects are ordered term by term, and within a term level by level (each level's
``p_k`` coefficients together), so per-term operators are ``I_levels (x) D`` for a small
``p_k x p_k`` matrix D.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["TermBlock", "Marginal", "marginal_of", "theta_blocks"]


@dataclass(frozen=True)
class TermBlock:
    """Where one random-effects term sits: its rows among the q random effects, and its
    relative covariance factor T (lower triangular, p x p) filled from ``theta``."""

    start: int
    nlevels: int
    p: int
    theta_start: int
    T: np.ndarray

    @property
    def stop(self) -> int:
        return self.start + self.nlevels * self.p

    @property
    def ntheta(self) -> int:
        return self.p * (self.p + 1) // 2

    def theta_positions(self) -> list[tuple[int, int]]:
        """(row, column) of T for each of this term's theta entries, in lme4's order."""
        return [(i, j) for j in range(self.p) for i in range(j, self.p)]


def theta_blocks(design, theta: np.ndarray) -> list[TermBlock]:
    out, start, pos = [], 0, 0
    for t in design.terms:
        p = t.p
        T = np.zeros((p, p))
        blk = TermBlock(start, t.nlevels, p, pos, T)
        for (i, j), th in zip(blk.theta_positions(), theta[pos : pos + blk.ntheta]):
            T[i, j] = th
        out.append(blk)
        start += t.nlevels * p
        pos += blk.ntheta
    return out


def block_apply(M: np.ndarray, blk: TermBlock, D: np.ndarray) -> np.ndarray:
    """(I_levels (x) D) M restricted to the term's rows: shape (nlevels * p, ncol)."""
    rows = M[blk.start : blk.stop].reshape(blk.nlevels, blk.p, -1)
    return np.einsum("ab,lbc->lac", D, rows).reshape(blk.nlevels * blk.p, -1)


def block_quadratic(M: np.ndarray, blk: TermBlock, D: np.ndarray, N: np.ndarray | None = None):
    """M' (I (x) D) N over the term's rows (M, N with q rows; N defaults to M)."""
    N = M if N is None else N
    return M[blk.start : blk.stop].T @ block_apply(N, blk, D)


def block_trace(S: np.ndarray, blk: TermBlock, D: np.ndarray) -> float:
    """tr((I (x) D) S) for a q x q matrix S: only the term's diagonal blocks matter."""
    diag = S[blk.start : blk.stop, blk.start : blk.stop]
    d = diag.reshape(blk.nlevels, blk.p, blk.nlevels, blk.p)
    summed = np.einsum("lalb->ab", d)
    return float(np.sum(D * summed.T))


def _sparse_z(design) -> sp.csr_matrix:
    rows, cols, vals = [], [], []
    start = 0
    n = design.n
    for t in design.terms:
        for j in range(t.p):
            rows.append(np.arange(n))
            cols.append(start + t.codes.astype(np.int64) * t.p + j)
            vals.append(np.asarray(t.Z[:, j], dtype=float))
        start += t.nlevels * t.p
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n, start))


def _lambda_t(M: np.ndarray, blocks: list[TermBlock]) -> np.ndarray:
    """Lambda' M, term by term."""
    out = np.empty_like(M)
    for blk in blocks:
        out[blk.start : blk.stop] = block_apply(M, blk, blk.T.T)
    return out


@dataclass
class Marginal:
    """q-space pieces of the marginal model at (theta, sigma); every ``B`` is ``a' V0^-1 b``."""

    blocks: list[TermBlock]
    sigma: float
    n: int
    p: int
    Bzz: np.ndarray      # Z' V0^-1 Z        (q, q)
    Bzx: np.ndarray      # Z' V0^-1 X        (q, p)
    Bxx: np.ndarray      # X' V0^-1 X        (p, p)
    beta: np.ndarray     # GLS estimate at theta
    pwrss: float         # r' V0^-1 r, r = y - X beta
    S0: np.ndarray       # Z' P0 Z, P0 = V0^-1 - V0^-1 X Bxx^-1 X' V0^-1
    s0: np.ndarray       # Z' V0^-1 r = Z' P0 y

    @property
    def q(self) -> int:
        return self.Bzz.shape[0]

    @property
    def vcov_beta(self) -> np.ndarray:
        return self.sigma**2 * np.linalg.inv(self.Bxx)

    def psi_apply(self, M: np.ndarray) -> np.ndarray:
        """(Lambda Lambda') M."""
        out = np.empty_like(M)
        for blk in self.blocks:
            out[blk.start : blk.stop] = block_apply(M, blk, blk.T @ blk.T.T)
        return out


def _quadratic_forms_general(design, blocks, X, y, w) -> np.ndarray:
    """[Z | X | y]' V0^-1 [Z | X | y] by Woodbury with a dense q x q A (any design)."""
    Z = _sparse_z(design)
    WZ = Z.multiply(w[:, None]).tocsr()
    ZtWZ = (Z.T @ WZ).toarray()
    rhs = np.column_stack([ZtWZ, WZ.T @ X, WZ.T @ y])          # Z'W [Z | X | y]
    U = _lambda_t(rhs, blocks)                                  # Lambda' Z'W [Z | X | y]
    q = ZtWZ.shape[0]
    A = np.eye(q) + _lambda_t(U[:, :q].T.copy(), blocks)        # I + Lambda' Z'WZ Lambda
    K = np.linalg.solve(A, U)                                   # A is SPD, well conditioned (>= I)
    XY = np.column_stack([X, y])
    full = np.zeros((q + XY.shape[1], q + XY.shape[1]))
    full[:q] = rhs
    full[q:, q:] = XY.T @ (XY * w[:, None])
    full[q:, :q] = rhs[:, q:].T
    return full - U.T @ K


def _level_sums(codes, nlevels, left, right) -> np.ndarray:
    """Per level l: sum over its rows of left_i right_i' -> (nlevels, left cols, right cols)."""
    out = np.empty((nlevels, left.shape[1], right.shape[1]))
    for a in range(left.shape[1]):
        for c in range(right.shape[1]):
            out[:, a, c] = np.bincount(codes, weights=left[:, a] * right[:, c], minlength=nlevels)
    return out


def _quadratic_forms_one_term(design, blk, X, y, w) -> np.ndarray:
    """The same for a single random-effects term: A is block diagonal (one p x p block per
    level), so every solve is per level and the cost is O(n p^2 + q p^2) plus the output."""
    term = design.terms[0]
    codes, Zt, nl, pk = term.codes.astype(np.intp), term.Z, blk.nlevels, blk.p
    XY = np.column_stack([X, y])
    ZZ = _level_sums(codes, nl, Zt * w[:, None], Zt)                 # Z'WZ blocks
    ZXY = _level_sums(codes, nl, Zt * w[:, None], XY)                # Z'W [X | y] by level
    T = blk.T
    Uz = np.einsum("ba,lbc->lac", T, ZZ)                             # T' Z'WZ_l
    Uxy = np.einsum("ba,lbc->lac", T, ZXY)
    A = np.einsum("lab,bc->lac", Uz, T) + np.eye(pk)                 # I + T' Z'WZ_l T
    Kz, Kxy = np.linalg.solve(A, Uz), np.linalg.solve(A, Uxy)
    q, m = nl * pk, XY.shape[1]
    full = np.zeros((q + m, q + m))
    diag = ZZ - np.einsum("lba,lbc->lac", Uz, Kz)
    Bzz = full[:q, :q].reshape(nl, pk, nl, pk)
    Bzz[np.arange(nl), :, np.arange(nl), :] = diag
    full[:q, q:] = (ZXY - np.einsum("lba,lbc->lac", Uz, Kxy)).reshape(q, m)
    full[q:, :q] = full[:q, q:].T
    full[q:, q:] = XY.T @ (XY * w[:, None]) - np.einsum("lba,lbc->ac", Uxy, Kxy)
    return full


def marginal_of(fit, theta: np.ndarray | None = None, sigma: float | None = None) -> Marginal:
    """The q-space pieces of an LMM fit (at its estimates unless theta/sigma are given)."""
    design = fit.design
    theta = fit.theta if theta is None else np.asarray(theta, dtype=float)
    sigma = fit.sigma if sigma is None else float(sigma)
    blocks = theta_blocks(design, theta)
    X = design.X
    y = design.y if design.offset is None else design.y - design.offset
    w = np.ones(design.n) if design.weights is None else np.asarray(design.weights, float)
    if len(blocks) == 1:
        B = _quadratic_forms_one_term(design, blocks[0], X, y, w)
    else:
        B = _quadratic_forms_general(design, blocks, X, y, w)
    q, p = blocks[-1].stop, X.shape[1]
    Bzz, Bzx, bzy = B[:q, :q], B[:q, q : q + p], B[:q, q + p]
    Bxx, bxy, yy = B[q : q + p, q : q + p], B[q : q + p, q + p], B[q + p, q + p]
    beta = np.linalg.solve(Bxx, bxy)
    S0 = Bzz - Bzx @ np.linalg.solve(Bxx, Bzx.T)
    return Marginal(blocks=blocks, sigma=sigma, n=design.n, p=p, Bzz=Bzz, Bzx=Bzx, Bxx=Bxx,
                    beta=beta, pwrss=float(yy - bxy @ beta), S0=(S0 + S0.T) / 2,
                    s0=bzy - Bzx @ beta)
