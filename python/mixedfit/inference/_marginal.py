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
from functools import cached_property

import os

import numpy as np
import scipy.sparse as sp

from .._errors import NumericalError
from ..optimize import lambda_blocks

__all__ = ["TermBlock", "Marginal", "marginal_of", "theta_blocks", "block_apply", "block_quadratic"]


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
    lams = lambda_blocks(np.asarray(theta, dtype=float), [t.p for t in design.terms])
    for t, T in zip(design.terms, lams):
        blk = TermBlock(start, t.nlevels, t.p, pos, T)
        out.append(blk)
        start += t.nlevels * t.p
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


class Marginal:
    """q-space pieces of the marginal model at (theta, sigma); every ``B`` is ``a' V0^-1 b``.

    ``Bzz_op`` (Z' V0^-1 Z) and ``S0_op`` (Z' P0 Z, P0 = V0^-1 - V0^-1 X Bxx^-1 X' V0^-1)
    are :mod:`._qmatrix` operators; ``Bzz`` and ``S0`` their dense forms (built on demand).
    """

    def __init__(self, blocks, sigma, n, Bzz_op, Bzx, bzy, Bxx, bxy, yy):
        from ._qmatrix import BlockLowRankQ, DenseQ

        self.blocks, self.sigma, self.n = blocks, float(sigma), int(n)
        self.Bzz_op, self.Bzx, self.Bxx = Bzz_op, Bzx, Bxx
        self.p = Bxx.shape[0]
        self.beta = np.linalg.solve(Bxx, bxy)                  # GLS estimate at theta
        self.pwrss = float(yy - bxy @ self.beta)               # r' V0^-1 r, r = y - X beta
        self.s0 = bzy - Bzx @ self.beta                        # Z' V0^-1 r = Z' P0 y
        Bxx_inv = np.linalg.inv(Bxx)
        if isinstance(Bzz_op, BlockLowRankQ):
            self.S0_op = BlockLowRankQ(Bzz_op.B, Bzx, (Bxx_inv + Bxx_inv.T) / 2)
        else:
            S0 = Bzz_op.dense() - Bzx @ Bxx_inv @ Bzx.T
            self.S0_op = DenseQ((S0 + S0.T) / 2)

    @property
    def q(self) -> int:
        return self.blocks[-1].stop if self.blocks else 0

    @cached_property
    def Bzz(self) -> np.ndarray:
        return self.Bzz_op.dense()

    @cached_property
    def S0(self) -> np.ndarray:
        return self.S0_op.dense()

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
    XY = np.column_stack([X, y])
    return _general_forms(blocks, (Z.T @ WZ).toarray(), WZ.T @ XY, XY.T @ (XY * w[:, None]))


def _general_forms(blocks, ZtWZ, ZtWxy, xy_wxy):
    """_quadratic_forms_general from the cross products Z'WZ (dense), Z'W[X | y] and
    [X | y]'W[X | y]."""
    rhs = np.column_stack([ZtWZ, ZtWxy])                        # Z'W [Z | X | y]
    U = _lambda_t(rhs, blocks)                                  # Lambda' Z'W [Z | X | y]
    q = ZtWZ.shape[0]
    A = np.eye(q) + _lambda_t(U[:, :q].T.copy(), blocks)        # I + Lambda' Z'WZ Lambda
    K = np.linalg.solve(A, U)                                   # A is SPD, well conditioned (>= I)
    from ._qmatrix import DenseQ

    Bzz = DenseQ(ZtWZ - U[:, :q].T @ K[:, :q])
    Bz_xy = rhs[:, q:] - U[:, :q].T @ K[:, q:]
    Bxy_xy = xy_wxy - U[:, q:].T @ K[:, q:]
    return Bzz, Bz_xy, Bxy_xy


def _physical_memory() -> float:
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return 16.0e9


def _check_dense_fits(design) -> None:
    """The general Woodbury path holds about five dense q x q matrices; refuse before
    allocating when they would not fit in memory (a model large enough for the core's sparse
    rest block)."""
    q = sum(t.nlevels * t.p for t in design.terms)
    need = 5 * 8.0 * q * q
    if need > _physical_memory():
        levels = ", ".join(str(t.nlevels) for t in design.terms)
        raise NumericalError(
            f"Satterthwaite and Kenward-Roger degrees of freedom need dense q x q matrices for "
            f"a model with several random-effects terms: q = {q} random effects (terms with "
            f"{levels} levels) would need {need / 1e9:.1f} GB; use ddf='lme4' for this model")


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
    codes, Zt, nl = term.codes.astype(np.intp), term.Z, blk.nlevels
    XY = np.column_stack([X, y])
    ZZ = _level_sums(codes, nl, Zt * w[:, None], Zt)                 # Z'WZ blocks
    ZXY = _level_sums(codes, nl, Zt * w[:, None], XY)                # Z'W [X | y] by level
    return _one_term_forms(blk, ZZ, ZXY, XY.T @ (XY * w[:, None]))


def _one_term_forms(blk, ZZ, ZXY, xy_wxy):
    """_quadratic_forms_one_term from the per-level blocks of Z'WZ (levels, p, p) and of
    Z'W[X | y] (levels, p, p + 1), and [X | y]'W[X | y]."""
    nl, pk = blk.nlevels, blk.p
    T = blk.T
    Uz = np.einsum("ba,lbc->lac", T, ZZ)                             # T' Z'WZ_l
    Uxy = np.einsum("ba,lbc->lac", T, ZXY)
    A = np.einsum("lab,bc->lac", Uz, T) + np.eye(pk)                 # I + T' Z'WZ_l T
    Kz, Kxy = np.linalg.solve(A, Uz), np.linalg.solve(A, Uxy)
    from ._qmatrix import BlockLowRankQ

    Bzz = BlockLowRankQ(ZZ - np.einsum("lba,lbc->lac", Uz, Kz))
    Bz_xy = (ZXY - np.einsum("lba,lbc->lac", Uz, Kxy)).reshape(nl * pk, ZXY.shape[2])
    Bxy_xy = xy_wxy - np.einsum("lba,lbc->ac", Uxy, Kxy)
    return Bzz, Bz_xy, Bxy_xy


def _forms_from_crossproducts(blocks, ZtWZ, ZtWxy, xy_wxy):
    """The forms from Z'WZ (sparse), Z'W[X | y] and [X | y]'W[X | y] alone."""
    if len(blocks) == 1:
        blk = blocks[0]
        nl, pk = blk.nlevels, blk.p
        base = np.arange(nl) * pk
        ZZ = np.empty((nl, pk, pk))
        for a in range(pk):
            for b in range(pk):
                ZZ[:, a, b] = np.asarray(ZtWZ[base + a, base + b]).ravel()
        return _one_term_forms(blk, ZZ, ZtWxy.reshape(nl, pk, -1), xy_wxy)
    return _general_forms(blocks, ZtWZ.toarray(), ZtWxy, xy_wxy)


def marginal_of(fit, theta: np.ndarray | None = None, sigma: float | None = None) -> Marginal:
    """The q-space pieces of an LMM fit (at its estimates unless theta/sigma are given)."""
    design = fit.design
    theta = fit.theta if theta is None else np.asarray(theta, dtype=float)
    sigma = fit.sigma if sigma is None else float(sigma)
    blocks = theta_blocks(design, theta)
    if hasattr(fit, "crossproducts"):  # no rows here (a Dask fit): its cross products
        Bzz, Bz_xy, Bxy_xy = _forms_from_crossproducts(blocks, *fit.crossproducts())
    else:
        X = design.X
        y = design.y if design.offset is None else design.y - design.offset
        w = np.ones(design.n) if design.weights is None else np.asarray(design.weights, float)
        if len(blocks) == 1:
            Bzz, Bz_xy, Bxy_xy = _quadratic_forms_one_term(design, blocks[0], X, y, w)
        else:
            _check_dense_fits(design)
            Bzz, Bz_xy, Bxy_xy = _quadratic_forms_general(design, blocks, X, y, w)
    p = design.p
    return Marginal(blocks, sigma, design.n, Bzz, Bzx=Bz_xy[:, :p], bzy=Bz_xy[:, p],
                    Bxx=Bxy_xy[:p, :p], bxy=Bxy_xy[:p, p], yy=Bxy_xy[p, p])
