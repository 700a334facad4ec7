"""Responses simulated from a fitted model (lme4's ``simulate.merMod``).

``re_form`` (which random effects to condition on), as lme4's ``re.form``:

===========================================  ===========================================
mixedfit                                     lme4
===========================================  ===========================================
``None`` (default), ``"~0"``, ``"NA"``       ``re.form = NA`` (default; ``use.u = FALSE``):
                                             new random effects for every term
``"all"``                                    ``re.form = NULL`` (``use.u = TRUE``): the
                                             estimated (conditional-mode) random effects
a formula of bar terms, ``"~(1 | g)"``       the same formula: the estimated random effects
                                             of those terms, new ones for the others
===========================================  ===========================================

Responses by family, with ``mu`` the mean at the simulated linear predictor, ``w`` the prior
weights and ``sigma`` the fit's residual scale: gaussian ``N(mu, sigma^2 / w)``; binomial
``Binomial(w, mu) / w`` (a proportion, with ``w`` trials: the scale ``refit`` takes);
Poisson ``Poisson(mu)``; Gamma with mean ``mu`` and variance ``sigma^2 mu^2 / w``;
inverse Gaussian with mean ``mu`` and variance ``sigma^2 mu^3 / w``. (The last two are the
model's variances; lme4 1.1-31's simulation functions use ``sigma`` for ``1 / sigma^2``.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._errors import DataError
from ..optimize import lambda_blocks

__all__ = ["simulate", "SimulationFrame", "simulation_frame", "simulate_responses"]


@dataclass
class SimulationFrame:
    """Everything a simulation needs, computed once: the fixed part of the linear predictor,
    per term the rows' level codes and Z, the estimated random effects and Lambda, and which
    terms get new draws."""
    eta_fixed: np.ndarray          # X beta + offset + estimated random effects kept
    terms: list                    # (codes, Z, nlevels, chol) for terms with new draws
    scale: float                   # sigma for LMMs and scaled families, else 1
    weights: np.ndarray            # prior weights (binomial: trials)
    index: pd.Index


def _check_nsim(nsim) -> int:
    if isinstance(nsim, bool) or not isinstance(nsim, (int, np.integer)) or nsim < 1:
        raise ValueError(f"nsim must be a positive integer, got {nsim!r}")
    return int(nsim)


def _conditioned_terms(fit, re_form) -> set:
    """Indices of the random-effects terms whose estimated random effects are kept (the rest
    are drawn anew). A term is kept or drawn whole: ``re_form`` may not split its columns."""
    if re_form is None:
        return set()
    if isinstance(re_form, str) and re_form.strip().lower() in ("all", "null"):
        return set(range(len(fit.design.terms)))
    selected = fit._re_columns_for(re_form)
    for k, mask in selected.items():
        if not mask.all():
            raise ValueError(f"re_form={re_form!r} keeps only some columns of the term for "
                             f"{fit.design.terms[k].group!r}; simulate keeps or redraws whole "
                             "random-effects terms")
    return set(selected)


def _fitted_parts(fit):
    d = fit.design
    parts = [(t.codes, t.Z, None) for t in d.terms]
    weights = _prior_weights(fit)
    return d.X, d.offset, parts, weights, d.index


def _prior_weights(fit) -> np.ndarray:
    if getattr(fit, "is_glmm", False):
        return np.asarray(fit._pw, dtype=float)
    w = fit.design.weights
    return np.ones(fit.design.n) if w is None else np.asarray(w, dtype=float)


def _newdata_parts(fit, newdata):
    X, offset, parts, labels = fit._newdata_parts(newdata, None, allow_new_levels=True)
    n = X.shape[0]
    if getattr(fit, "is_glmm", False) and fit.family == "binomial" and np.any(fit._pw != 1):
        raise DataError("newdata cannot give the number of binomial trials: simulate at the "
                        "fitted rows (newdata=None) for a model with trials")
    if fit.design.weights is not None and not getattr(fit, "is_glmm", False):
        raise DataError("newdata cannot give prior weights: simulate at the fitted rows "
                        "(newdata=None) for a weighted model")
    out = [(codes, Z, lab) for (codes, Z), lab in zip(parts, labels)]
    index = newdata.index if hasattr(newdata, "index") else pd.RangeIndex(n)
    return X, offset, out, np.ones(n), index


def simulation_frame(fit, re_form=None, newdata=None) -> SimulationFrame:
    """Precompute the parts of a simulation (one per fit; reused for every draw)."""
    keep = _conditioned_terms(fit, re_form)
    if newdata is None:
        X, offset, parts, weights, index = _fitted_parts(fit)
    else:
        X, offset, parts, weights, index = _newdata_parts(fit, newdata)
    eta = X @ fit.beta
    if offset is not None:
        eta = eta + offset
    terms = []
    for (k, t, B), lam, (codes, Z, labels) in zip(fit._term_blocks(), lambda_blocks(fit.theta, [t.p for t in fit.design.terms]), parts):
        if k in keep:
            if np.any(codes < 0):
                raise DataError(f"newdata has level(s) of {t.group!r} the fit has not seen; "
                                "their random effects can only be drawn anew (leave that term "
                                "out of re_form)")
            eta = eta + np.einsum("ij,ij->i", Z, B[codes])
            continue
        if labels is None:      # the fitted rows: every level of the term
            terms.append((codes.astype(np.intp), Z, t.nlevels, lam))
            continue
        # newdata: fresh draws per level present (fitted levels and any new ones).
        _, draw_codes = np.unique(labels.astype(str), return_inverse=True)
        terms.append((draw_codes.astype(np.intp), Z, int(draw_codes.max()) + 1, lam))
    scale = fit.sigma if (not getattr(fit, "is_glmm", False) or fit.has_scale) else 1.0
    return SimulationFrame(eta, terms, float(scale), weights, index)


def simulate_eta(frame: SimulationFrame, nsim: int, rng: np.random.Generator) -> np.ndarray:
    """(nsim, n) linear predictors with new random effects b = scale * Lambda u, u ~ N(0, I)."""
    eta = np.broadcast_to(frame.eta_fixed, (nsim, frame.eta_fixed.size)).copy()
    for codes, Z, nlev, lam in frame.terms:
        u = rng.standard_normal((nsim, nlev, lam.shape[0]))
        b = frame.scale * (u @ lam.T)                          # (nsim, nlev, p)
        eta += np.einsum("ij,sij->si", Z, b[:, codes, :])
    return eta


def draw_responses(fit, mu: np.ndarray, frame: SimulationFrame,
                   rng: np.random.Generator) -> np.ndarray:
    """Responses around means ``mu`` (nsim, n) from the fit's family."""
    w, s = frame.weights, frame.scale
    family = fit._fam.name if getattr(fit, "is_glmm", False) else "gaussian"
    if family == "gaussian":
        return mu + (s / np.sqrt(w)) * rng.standard_normal(mu.shape)
    if family == "binomial":
        trials = np.rint(w).astype(np.int64)
        if np.any(np.abs(w - trials) > 1e-8):
            raise DataError("cannot simulate a binomial response with non-integer trials (weights)")
        return rng.binomial(trials, np.clip(mu, 0.0, 1.0)) / w
    if family == "poisson":
        return rng.poisson(mu).astype(float)
    if family == "Gamma":
        shape = w / s**2
        return rng.gamma(shape, mu / shape)
    if family == "inverse.gaussian":
        return rng.wald(mu, w / s**2)
    if family == "negative.binomial":
        # NB2 with mean mu and variance mu + mu^2 / theta (MASS's rnegbin: size theta)
        theta = fit._fam.nb_theta
        return rng.negative_binomial(theta, theta / (theta + mu)).astype(float)
    raise ValueError(f"cannot simulate family {family!r}")


def simulate_responses(fit, frame: SimulationFrame, nsim: int, rng) -> np.ndarray:
    """(nsim, n) simulated responses."""
    eta = simulate_eta(frame, nsim, rng)
    mu = fit._inverse_link(eta)
    return draw_responses(fit, mu, frame, rng)


def simulate(fit, nsim: int = 1, seed=None, re_form=None, newdata=None) -> pd.DataFrame:
    """``nsim`` responses simulated from ``fit``: a DataFrame with columns ``sim_1..sim_nsim``
    indexed as the fitted rows (or ``newdata``). See the module docstring for ``re_form``."""
    nsim = _check_nsim(nsim)
    rng = np.random.default_rng(seed)
    frame = simulation_frame(fit, re_form, newdata)
    y = simulate_responses(fit, frame, nsim, rng)
    return pd.DataFrame(y.T, index=frame.index, columns=[f"sim_{i + 1}" for i in range(nsim)])
