"""Symmetric q x q matrices of the marginal model (q = number of random effects), stored
either densely or, for a single random-effects term, as ``B - F C F'`` with B block diagonal
(one p x p block per level) and F of rank p (the number of fixed effects). The
Satterthwaite Hessian needs only the three operations below, which the structured form does
in O(q p^2) time and memory instead of O(q^2) memory and up to O(q^3) time.

``(I (x) D)`` below is a term's derivative operator: D (p_k x p_k) on each level's block.
"""

from __future__ import annotations

import numpy as np

from ._marginal import TermBlock, block_apply

__all__ = ["DenseQ", "BlockLowRankQ"]


class DenseQ:
    def __init__(self, T: np.ndarray):
        self.T = T

    def dense(self) -> np.ndarray:
        return self.T

    def matmul(self, M: np.ndarray) -> np.ndarray:
        return self.T @ M

    def diag_sum(self, blk: TermBlock) -> np.ndarray:
        """sum over levels of the term's diagonal p x p blocks."""
        d = self.T[blk.start : blk.stop, blk.start : blk.stop]
        return np.einsum("lalb->ab", d.reshape(blk.nlevels, blk.p, blk.nlevels, blk.p))

    def pair_trace(self, bi: TermBlock, Di: np.ndarray, bj: TermBlock, Dj: np.ndarray) -> float:
        """tr((I (x) Di) T (I (x) Dj) T), Di acting on term bi's rows, Dj on bj's."""
        GTi = block_apply(self.T, bi, Di)            # term bi's rows of (I (x) Di) T
        GTj = block_apply(self.T, bj, Dj)
        return float(np.sum(GTi[:, bj.start : bj.stop] * GTj[:, bi.start : bi.stop].T))


    def sandwich_diag_sum(self, blk: TermBlock, psi) -> np.ndarray:
        """sum over levels of the term's diagonal blocks of T Psi T, Psi = blockdiag over
        terms of (I (x) P_k) given as [(block, P_k)]."""
        M = np.zeros_like(self.T)
        for b, Pk in psi:
            M[b.start : b.stop] = block_apply(self.T, b, Pk)         # Psi T
        q = self.T.shape[0]
        T_rows = self.T[blk.start : blk.stop].reshape(blk.nlevels, blk.p, q)
        M_cols = M[:, blk.start : blk.stop].reshape(q, blk.nlevels, blk.p)
        return np.einsum("lai,ilb->ab", T_rows, M_cols)


class BlockLowRankQ:
    """B - F C F' for one term: B as (levels, p, p) blocks, F (q, r), C (r, r) symmetric."""

    def __init__(self, blocks: np.ndarray, F: np.ndarray | None = None, C: np.ndarray | None = None):
        self.B = blocks
        self.F = F
        self.C = C

    def _b_matmul(self, M: np.ndarray) -> np.ndarray:
        nl, pk, _ = self.B.shape
        return np.einsum("lab,lbc->lac", self.B, M.reshape(nl, pk, -1)).reshape(nl * pk, -1)

    def dense(self) -> np.ndarray:
        nl, pk, _ = self.B.shape
        out = np.zeros((nl, pk, nl, pk))
        out[np.arange(nl), :, np.arange(nl), :] = self.B
        out = out.reshape(nl * pk, nl * pk)
        if self.F is not None:
            out -= self.F @ self.C @ self.F.T
        return out

    def matmul(self, M: np.ndarray) -> np.ndarray:
        out = self._b_matmul(M)
        if self.F is not None:
            out -= self.F @ (self.C @ (self.F.T @ M))
        return out

    def diag_sum(self, blk: TermBlock) -> np.ndarray:
        out = self.B.sum(axis=0)
        if self.F is not None:
            F3 = self.F.reshape(self.B.shape[0], self.B.shape[1], -1)
            out = out - np.einsum("lai,ij,lbj->ab", F3, self.C, F3)
        return out

    def sandwich_diag_sum(self, blk: TermBlock, psi) -> np.ndarray:
        """sum_l (T Psi T)_ll with T = B - F C F' and Psi = I (x) P (the one term)."""
        (_, P), = psi
        B = self.B
        out = np.einsum("lab,bc,lcd->ad", B, P, B)
        if self.F is None:
            return out
        nl, pk, _ = B.shape
        F3 = self.F.reshape(nl, pk, -1)
        C = self.C
        BPF = np.einsum("lab,bc,lci->lai", B, P, F3)                  # B_l P F_l
        cross = np.einsum("lai,ij,lbj->ab", BPF, C, F3)              # sum_l B_l P F_l C F_l'
        FtPF = np.einsum("lai,ab,lbj->ij", F3, P, F3)                # F' Psi F
        inner = C @ FtPF @ C
        return out - cross - cross.T + np.einsum("lai,ij,lbj->ab", F3, inner, F3)

    def pair_trace(self, bi: TermBlock, Di: np.ndarray, bj: TermBlock, Dj: np.ndarray) -> float:
        """tr(Gi T Gj T) = tr(Gi B Gj B) - tr(C F'Gi B Gj F) - tr(C F'Gj B Gi F)
        + tr(C F'Gi F C F'Gj F), for symmetric Di, Dj (derivatives of T T')."""
        B = self.B
        total = float(np.einsum("ab,lbc,cd,lda->", Di, B, Dj, B))
        if self.F is None:
            return total
        GiF, GjF = block_apply(self.F, bi, Di), block_apply(self.F, bj, Dj)
        FGiBGjF = GiF.T @ self._b_matmul(GjF)
        FGjBGiF = GjF.T @ self._b_matmul(GiF)
        C = self.C
        total -= float(np.sum(C * FGiBGjF.T) + np.sum(C * FGjBGiF.T))
        total += float(np.sum((C @ (self.F.T @ GiF)) * (C @ (self.F.T @ GjF)).T))
        return total
