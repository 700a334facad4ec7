"""Fit on standardized data, answer in the data's units.

A response whose mean is large next to its spread (``y + 1e8``), or tiny in absolute terms
(``y * 1e-12``), and covariates far from their origin (``x + 1e6``) make the one-pass cross
products ``[Z X y]' W [Z X y]`` lose digits to cancellation. The likelihood does not care
where the origin is or what the units are, so the core is handed a well-scaled copy:

* ``X = Xs R / sqrt(n)`` with ``Xs' W Xs = n I`` (a weighted QR factorization), so the fixed
  effects are orthogonal columns of unit root-mean-square;
* ``y = X b0 + s ys``: ``b0`` the weighted least-squares fit, ``s`` the root-mean-square of its
  residuals, so ``ys`` is centred on the fixed effects and of unit size.

With ``beta = b0 + s R^{-1} sqrt(n) beta_s``, ``b = s b_s`` and ``sigma = s sigma_s`` the model
is the same; theta does not change. The criteria differ by constants of the data:
``log|RX|^2`` by ``2 log|det R / sqrt(n)^p|`` and the residual sum of squares by ``s^2``.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np

from . import _core
from ._errors import DataError

__all__ = ["FixedScaling", "ScaledLmmProblem", "check_predictor_scales", "fixed_scaling"]

# lme4's check.scaleX tolerance: standard deviations beyond a factor 1e3 (from 1 or each other).
SCALE_TOL = 1e3


def check_predictor_scales(X: np.ndarray, stacklevel: int = 2) -> None:
    """lme4's warning for fixed-effect columns on very different scales (not 0/1 columns):
    some standard deviation beyond a factor SCALE_TOL from 1 or from another's. The fit
    itself does not need it -- the core works on scaled columns -- but estimates in such
    units are hard to read and lme4 users expect the hint."""
    if X.shape[1] and _core.predictor_scales_differ(X, SCALE_TOL):
        warnings.warn("Some predictor variables are on very different scales: consider "
                      "rescaling", stacklevel=stacklevel + 1)

# Residuals smaller than this many units in the last place of the response are rounding.
_ROUNDING_ULPS = 64.0


class FixedScaling:
    """``X = Xs T`` with ``Xs' W Xs = n I``; ``T = R / sqrt(n)`` upper triangular (p x p)."""

    def __init__(self, Xs: np.ndarray, T: np.ndarray, T_inv: np.ndarray | None = None):
        self.Xs = Xs
        self.T = T
        p = T.shape[0]
        # T^{-1}: a fit maps its coefficients and their covariance back with it (the core's
        # fixed_qr gives it with T)
        self._T_inv = T_inv if T_inv is not None else np.linalg.solve(T, np.eye(p))

    @functools.cached_property
    def log_abs_det(self) -> float:
        """log |det T| (the LMM criteria's constant; GLMM fits never ask)."""
        return float(np.sum(np.log(np.abs(np.diag(self.T))))) if self.T.shape[0] else 0.0

    def to_scaled(self, beta: np.ndarray) -> np.ndarray:
        """Coefficients of Xs for coefficients ``beta`` of X."""
        return self.T @ np.asarray(beta, dtype=float)

    def from_scaled(self, beta_s: np.ndarray) -> np.ndarray:
        """Coefficients of X for coefficients ``beta_s`` of Xs."""
        if self.T.size == 0:
            return np.zeros(0)
        return self._T_inv @ np.asarray(beta_s, dtype=float)

    def cov_from_scaled(self, V_s: np.ndarray) -> np.ndarray:
        """Covariance of beta from that of beta_s: T^{-1} V_s T^{-T}."""
        if self.T.size == 0:
            return np.zeros((0, 0))
        return self._T_inv @ np.asarray(V_s, dtype=float) @ self._T_inv.T


def fixed_scaling(X: np.ndarray, weights: np.ndarray | None = None,
                  qr: tuple | None = None) -> FixedScaling:
    """The weighted QR scaling of the fixed-effects matrix (Xs column-major, as the core reads).
    ``qr``: the unweighted scaling (Xs, T, T^-1) of this X when already computed."""
    n, p = X.shape
    if p == 0:
        return FixedScaling(np.asfortranarray(X), np.zeros((0, 0)))
    if qr is not None and weights is None:
        return FixedScaling(*qr)
    _, Xs, T, T_inv = _core.fixed_qr(X, weights, 0.0)
    return FixedScaling(Xs, T, T_inv)


def _response_shift(fs: FixedScaling, y: np.ndarray, weights, name: str):
    """(b0, s, ys): the weighted least-squares fit of y on X, the root-mean-square of its
    residuals, and the standardized residuals. A response the fixed effects fit to rounding
    (e.g. a constant) has no residual variance to estimate: DataError."""
    b0, s, ys, max_abs_y = _core.response_shift(fs.Xs, fs.T, y, weights)
    if not s > _ROUNDING_ULPS * np.finfo(float).eps * max_abs_y:
        raise DataError(
            f"response {name!r} is fitted exactly by the fixed effects (e.g. it is constant): "
            "there is no residual variation for a linear mixed model"
        )
    return b0, s, ys


class ScaledLmmProblem:
    """The core LMM problem on standardized data, with the core's interface in data units.

    ``objective``, ``objective_grad``, ``solution`` and ``linear_predictor`` answer exactly as
    the core would for the original data, without its cancellation. The optimizer works on
    ``scaled_objective`` (the same function less a constant), which is the same for ``y``,
    ``a + c y`` and any reparametrization of the fixed effects.
    """

    def __init__(self, design, y: np.ndarray, weights: np.ndarray | None, name: str = "y"):
        self.n, self.p = design.n, design.p
        qr = design.take_x_qr(design.X)  # taken either way: the design need not hold Xs
        self.fixed = fixed_scaling(design.X, weights, qr)
        self.b0, self.scale, self.y_scaled = _response_shift(self.fixed, y, weights, name)
        self._terms = [(t.codes, t.nlevels, t.Z) for t in design.terms]
        self._weights = weights
        self._build_core()

    def _build_core(self) -> None:
        """The core object over the standardized arrays (held here, so they outlive it)."""
        self.core = _core.LmmProblem(self.fixed.Xs, self._terms)
        self.core.set_response(self.y_scaled, self._weights)
        self.q = self.core.q
        self.ntheta = self.core.ntheta
        self.rest_dense = self.core.rest_dense

    # ---- copies and pickles: the arrays travel, the core object is rebuilt from them --------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["core"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._build_core()

    # ---- the constants between the scaled and the original criteria ------------------------
    def offset(self, reml: bool) -> float:
        """objective(theta) - scaled_objective(theta), the same for every theta."""
        log_s2 = 2.0 * math.log(self.scale)
        if reml:
            return (self.n - self.p) * log_s2 + 2.0 * self.fixed.log_abs_det
        return self.n * log_s2

    # ---- the core's interface ----------------------------------------------------------------
    def scaled_objective(self, theta, reml: bool) -> float:
        return float(self.core.objective(np.asarray(theta, dtype=float), bool(reml)))

    def scaled_objective_grad(self, theta, reml: bool):
        return self.core.objective_grad(np.asarray(theta, dtype=float), bool(reml))

    def objective(self, theta, reml: bool) -> float:
        return self.scaled_objective(theta, reml) + self.offset(reml)

    def objective_grad(self, theta, reml: bool):
        val, grad = self.scaled_objective_grad(theta, reml)
        return float(val) + self.offset(reml), grad

    def solution(self, theta) -> dict:
        """The core's solution at theta, mapped back to the data's units."""
        sol = dict(self.core.solution(np.asarray(theta, dtype=float)))
        s, s2 = self.scale, self.scale**2
        sol["beta"] = self.b0 + s * self.fixed.from_scaled(sol["beta"])
        for key in ("u", "b"):
            sol[key] = s * np.asarray(sol[key])
        for key in ("pwrss", "wrss", "ussq"):
            sol[key] = s2 * float(sol[key])
        sol["ldRX2"] = float(sol["ldRX2"]) + 2.0 * self.fixed.log_abs_det
        sol["unscaled_vcov"] = self.fixed.cov_from_scaled(sol["unscaled_vcov"])
        return sol

    def components(self) -> dict:
        """The core's criterion components at the last theta evaluated, in the data's units."""
        comps = dict(self.core.components())
        comps["pwrss"] = self.scale**2 * float(comps["pwrss"])
        comps["ldRX2"] = float(comps["ldRX2"]) + 2.0 * self.fixed.log_abs_det
        return comps

    def linear_predictor(self, beta, b) -> np.ndarray:
        """X beta + Z b in the data's units (X beta = Xs (T beta)), in one pass."""
        return self.core.linear_predictor(self.fixed.to_scaled(beta), np.asarray(b, dtype=float))

    def input_addresses(self) -> list:
        return self.core.input_addresses()
