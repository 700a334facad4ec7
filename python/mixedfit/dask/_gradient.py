"""The exact gradient of a one-term GLMM's Laplace (and nAGQ = 0) objective, from cross
products and a few row sums: the in-memory core's Glmm::gradient, for data on a cluster.

With G = Lambda' Z'WZ Lambda + I (block diagonal for one term: G_c per level c, S_c its
inverse), the score r = pw (y - mu), the weights' derivative Wd and the leverages
h_i = Z_i Lambda S_c Lambda' Z_i', the core's formula for a parameter phi whose
d eta / d phi at fixed mode is g (theta_k: Z dLambda_k u; beta_j: X_j) is

    dF/dphi = -2 g'r + 2 sum_i W_i T_i,phi [theta only] + sum_i Wd_i h_i D_i,phi,
    T_ik = Z_i dLambda_k S_c Lambda' Z_i',   D = g + Z Lambda du (+ X dbeta at stage 1),

where the mode's sensitivity (du, dbeta) solves the system PIRLS factors with right-hand
side [dLambda_k' Z'r - Lambda' Z'W g ; -X'W g]. Every piece is a per-level block of the cross
products (Z_c'WZ_c, Z_c'WX, X'WX) or a row sum the pass forms (_working.gradient_sums:
Z_c'r, X'r, sum Wd h Z_c, sum Wd h X) -- so the gradient costs no pass of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..optimize import lambda_blocks

__all__ = ["LevelBlocks", "leverage_blocks", "laplace_gradient"]


@dataclass
class LevelBlocks:
    """Per-level blocks of [Z Xs z]' W [Z Xs z] for one term of p0 columns."""

    ZWZ: np.ndarray      # (levels, p0, p0)
    ZWX: np.ndarray      # (levels, p0, p)
    XWX: np.ndarray      # (p, p)

    @classmethod
    def from_crossprod(cls, A: sp.csr_matrix, nlev: int, p0: int, p: int) -> "LevelBlocks":
        q = nlev * p0
        lower = A.tocoo()
        full = sp.coo_matrix((np.r_[lower.data, lower.data[lower.row != lower.col]],
                              (np.r_[lower.row, lower.col[lower.row != lower.col]],
                               np.r_[lower.col, lower.row[lower.row != lower.col]])),
                             shape=A.shape).tocsr()
        zz = full[:q, :q].tocoo()
        ZWZ = np.zeros((nlev, p0, p0))
        np.add.at(ZWZ, (zz.row // p0, zz.row % p0, zz.col % p0), zz.data)
        ZWX = np.asarray(full[:q, q:q + p].toarray()).reshape(nlev, p0, p)
        XWX = np.asarray(full[q:q + p, q:q + p].toarray())
        return cls(ZWZ, ZWX, XWX)


def leverage_blocks(blocks: LevelBlocks, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S_c = G_c^-1, Lambda S_c Lambda') per level."""
    p0 = lam.shape[0]
    G = np.einsum("ba,cbd,de->cae", lam, blocks.ZWZ, lam) + np.eye(p0)
    S = np.linalg.inv(G)
    return S, np.einsum("ab,cbd,ed->cae", lam, S, lam)


def laplace_gradient(theta, U: np.ndarray, blocks: LevelBlocks, S: np.ndarray, sums: dict,
                     stage1: bool) -> tuple[np.ndarray, np.ndarray]:
    """(gradient, sensitivity of the mode): in theta (stage 1, beta inside the mode) or in
    (theta, beta) (stage 2). U: the mode's u per level (levels x p0); S: G_c^-1 of the
    factor PIRLS last used; sums: the mode's row sums (gradient_sums). The sensitivity has
    rows u (level-major) then, at stage 1, beta."""
    p0 = U.shape[1]
    nt = len(theta)
    lam = lambda_blocks(np.asarray(theta, float), [p0])[0]
    dlams = [lambda_blocks(np.eye(nt)[k], [p0])[0] for k in range(nt)]
    p = blocks.XWX.shape[0]
    Zr, s = sums["Zr"], sums["s"]
    # g for theta_k per level: dLambda_k u_c; its Z'W g = Z_c'WZ_c dLambda_k u_c
    gU = [U @ dl.T for dl in dlams]                                  # (levels, p0) each
    ZWg = [np.einsum("cab,cb->ca", blocks.ZWZ, g) for g in gU]
    grad_theta = np.array([-2.0 * np.sum(Zr * g) for g in gU])
    SLt = np.einsum("cab,db->cad", S, lam)                          # S_c Lambda'
    grad_theta += np.array([2.0 * np.einsum("ab,cbd,cda->", dl, SLt, blocks.ZWZ)
                            for dl in dlams])
    rhs_u = [Zr @ dl - ZWg[k] @ lam for k, dl in enumerate(dlams)]  # dLambda'Z'r - Lambda'Z'Wg
    if stage1:
        rhs_x = [-np.einsum("cap,ca->p", blocks.ZWX, g) for g in gU]
        du, dbeta = _solve_joint(blocks, S, lam, np.stack(rhs_u, -1), np.stack(rhs_x, -1))
        D_part = np.array([np.sum(s * g) for g in gU])
        D_part += np.einsum("ca,cak->k", s, np.einsum("ab,cbk->cak", lam, du))
        D_part += sums["xs"] @ dbeta
        sens = np.vstack([du.reshape(-1, nt), dbeta])
        return grad_theta + D_part, sens
    # stage 2: theta then beta; beta_j's g is X_j, its Z'W g = Z_c'WX_c[:, j]
    rhs_b = -np.einsum("ba,cbp->cap", lam, blocks.ZWX)               # -Lambda' Z_c'WX
    rhs = np.concatenate([np.stack(rhs_u, -1), rhs_b], axis=-1)      # (levels, p0, nt + p)
    du = np.einsum("cab,cbk->cak", S, rhs)
    grad_beta = -2.0 * sums["Xr"] + sums["xs"]
    D_part = np.einsum("ca,cak->k", s, np.einsum("ab,cbk->cak", lam, du))
    D_part[:nt] += np.array([np.sum(s * g) for g in gU])
    grad = np.r_[grad_theta, grad_beta] + D_part
    return grad, du.reshape(-1, nt + p)


def _solve_joint(blocks: LevelBlocks, S, lam, rhs_u, rhs_x):
    """(du, dbeta) of [[G, B], [B', X'WX]] [du; dbeta] = [rhs_u; rhs_x], B_c = Lambda'Z_c'WX,
    by the Schur complement of the block-diagonal G."""
    B = np.einsum("ba,cbp->cap", lam, blocks.ZWX)                    # (levels, p0, p)
    SB = np.einsum("cab,cbp->cap", S, B)
    schur = blocks.XWX - np.einsum("cap,caq->pq", B, SB)
    Srhs = np.einsum("cab,cbk->cak", S, rhs_u)
    dbeta = np.linalg.solve(schur, rhs_x - np.einsum("cap,cak->pk", B, Srhs))
    du = Srhs - np.einsum("cap,pk->cak", SB, dbeta)
    return du, dbeta
