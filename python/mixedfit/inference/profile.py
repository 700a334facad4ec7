"""Likelihood profiles and confidence intervals (lme4's ``profile.merMod`` / ``confint``).

The profile of a parameter x is zeta(x) = sign(x - x_hat) sqrt(D(x) - D_min), D(x) the
deviance minimized over every other parameter with x held fixed. As lme4 does, LMMs are
profiled on the maximum-likelihood deviance (a REML fit is refitted by ML first), the variance
parameters on the sd/correlation scale (``.sig01, ...``, ``.sigma``), and for GLMMs on the
Laplace deviance over (sd, fixed effects). A profile interval's ends are the roots of
zeta(x) = -/+ z_{(1 + level)/2}; they are found by bracketing and Brent's method on the exact
profile (lme4 interpolates a spline through profile points instead, which is why the two agree
to a small fraction of the interval's width and not to every digit).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.stats import chi2, norm

from .. import _core
from .._errors import NumericalError
from .._standardize import ScaledLmmProblem
from ..optimize import bobyqa, theta_lower
from .params import (has_residual_scale, is_sd_position, sdcor_names, sdcor_to_theta,
                     sdcor_values, term_sizes)

__all__ = ["confint", "profile", "Profile", "wald_intervals", "level_columns", "check_level"]

MAX_EXPANSIONS = 40     # doublings of the step while bracketing a profile end
CORR_BOUND = 1 - 1e-8   # a correlation's profile stops here (at +-1 the factor is singular)


def check_level(level) -> float:
    try:
        lv = float(level)
    except (TypeError, ValueError):
        raise ValueError(f"level must be a number in (0, 1), got {level!r}") from None
    if not 0.0 < lv < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
    return lv


def level_columns(level: float) -> list[str]:
    """R's column names for the interval ends, e.g. ``2.5 %`` and ``97.5 %``."""
    a = (1 - level) / 2
    return [f"{_fmt_pct(100 * a)} %", f"{_fmt_pct(100 * (1 - a))} %"]


def _fmt_pct(x: float) -> str:
    return f"{x:.3g}"


def parameter_names(fit) -> list[str]:
    return sdcor_names(fit) + list(fit.design.fixed_names)


def select_parm(fit, parm) -> list[str]:
    """The parameters asked for: None = all; names; integer positions; or lme4's
    ``"theta_"`` (the variance parameters) and ``"beta_"`` (the fixed effects)."""
    names = parameter_names(fit)
    if parm is None:
        return names
    items = [parm] if isinstance(parm, (str, int, np.integer)) else list(parm)
    out: list[str] = []
    for it in items:
        if isinstance(it, str) and it == "theta_":
            out += sdcor_names(fit)
        elif isinstance(it, str) and it == "beta_":
            out += list(fit.design.fixed_names)
        elif isinstance(it, str) and it in names:
            out.append(it)
        elif isinstance(it, (int, np.integer)) and not isinstance(it, bool) and 0 <= it < len(names):
            out.append(names[it])
        else:
            raise ValueError(f"parm {it!r} names no parameter; choose from {names}, "
                             "'theta_' or 'beta_'")
    if not out:
        raise ValueError("parm selects no parameter")
    return list(dict.fromkeys(out))


# ---- Wald ----------------------------------------------------------------------------------
def wald_intervals(fit, names: list[str], level: float) -> pd.DataFrame:
    """Estimate -/+ z SE for fixed effects; NaN for variance parameters (as lme4)."""
    z = norm.ppf((1 + level) / 2)
    se = pd.Series(np.sqrt(np.diag(fit.vcov.to_numpy())), index=fit.design.fixed_names)
    rows = []
    for nm in names:
        if nm in se.index:
            est = fit.fixef[nm]
            rows.append((est - z * se[nm], est + z * se[nm]))
        else:
            rows.append((np.nan, np.nan))
    return pd.DataFrame(rows, index=names, columns=level_columns(level))


# ---- profiled deviance functions -----------------------------------------------------------
@dataclass
class _Scale:
    """One parameter of a profile: its estimate, bounds and a step for bracketing."""
    name: str
    estimate: float
    lower: float
    upper: float
    step: float


class _VarianceProfiler:
    """D(x): the deviance with parameter i fixed at x, minimized over the other entries of a
    parameter vector by BOBYQA, warm-started from the last solution."""

    def __init__(self, devfun, estimates: np.ndarray, lower: np.ndarray, i: int, control):
        self.devfun = devfun
        self.i = i
        self.others = np.array([j for j in range(estimates.size) if j != i], dtype=int)
        self.solutions = {float(estimates[i]): estimates[self.others].copy()}
        self.estimates = estimates
        self.lower = lower[self.others]
        self.control = control

    def __call__(self, x: float) -> float:
        full = self.estimates.copy()
        full[self.i] = x

        def f(rest):
            full[self.others] = rest
            return self.devfun(full)

        if self.others.size == 0:
            return float(f(np.empty(0)))
        start = _nearest(self.solutions, x)
        opt = _inner_bobyqa(f, start, self.lower, self.control)
        if np.isfinite(opt.fun):
            self.solutions[float(x)] = opt.x.copy()
        return float(opt.fun)


def _inner_bobyqa(f, start, lower, control):
    """BOBYQA from a warm start with initial steps scaled to each coordinate (NLopt's default
    steps let a warm start stop early along a flat direction)."""
    step = np.maximum(0.05 * np.abs(start), 0.02)
    return bobyqa(f, start, lower, control, initial_step=step)


def _nearest(solutions: dict, x: float) -> np.ndarray:
    """The solution at the evaluated point nearest x (the warm start for x)."""
    return solutions[min(solutions, key=lambda v: abs(v - x))]


class _LmmFixedProfiler:
    """D(b) for fixed effect j of an LMM: the ML deviance of the model with X_j b as an
    offset, minimized over theta (beta_-j and sigma profiled out exactly by the core)."""

    def __init__(self, fit, j: int):
        d = fit.design
        self.fit = fit
        keep = [k for k in range(d.p) if k != j]
        X = np.asfortranarray(d.X[:, keep]) if keep else np.zeros((d.n, 0), order="F")
        self.xj = d.X[:, j]
        self.y0 = d.y if d.offset is None else d.y - d.offset
        self.y = np.empty(d.n)
        self.prob = _core.LmmProblem(X, [(t.codes, t.nlevels, t.Z) for t in d.terms])
        self.lower = theta_lower(term_sizes(fit))
        self.solutions = {float(fit.beta[j]): fit.theta.copy()}

    def __call__(self, b: float) -> float:
        np.subtract(self.y0, self.xj * b, out=self.y)   # one buffer: the core keeps a reference
        self.prob.set_response(self.y, self.fit.design.weights)
        prob = self.prob
        opt = _inner_bobyqa(lambda th: prob.objective(th, False),
                                _nearest(self.solutions, b), self.lower, self.fit.control)
        self.solutions[float(b)] = opt.x.copy()
        return float(opt.fun)


def _lmm_ml_devfun(fit):
    """lme4's devfun2 for an LMM: ML deviance at (sd/cor..., sigma), beta profiled."""
    d = fit.design
    y = d.y if d.offset is None else np.ascontiguousarray(d.y - d.offset)
    # the fit's own formulation (standardized data, answers in the data's units): a response
    # far from its origin costs the profile no digits either
    prob = ScaledLmmProblem(d, y, d.weights, d.parsed.response)
    ps = term_sizes(fit)
    n = d.n

    core, s2 = prob.core, prob.scale**2   # the core's pwrss is in the standardized units

    def dev(par):
        sigma = par[-1]
        if not sigma > 0:
            return np.inf
        theta = sdcor_to_theta(par[:-1], sigma, ps)
        if theta is None:
            return np.inf
        try:
            core.objective(theta, False)
        except NumericalError:
            return np.inf
        c = core.components()
        return (c["ldL2"] - c["ldW"] + s2 * c["pwrss"] / sigma**2
                + n * math.log(2 * math.pi * sigma**2))

    dev.keep = (prob, y)
    return dev


def _glmm_devfun(fit):
    """The Laplace deviance at (sd..., fixed effects) for a GLMM without a scale."""
    d, fam = fit.design, fit._fam
    # as the fit: the core works on the scaled fixed-effect columns (fit._fixed)
    fixed = fit._fixed
    prob = _core.GlmmProblem(fixed.Xs, fit._y, fit._pw, d.offset,
                             [(t.codes, t.nlevels, t.Z) for t in d.terms], *fam.core_args)
    prob.set_pirls_control(fit.control.pirls_tol, fit.control.pirls_maxiter)
    ps = term_sizes(fit)
    nt = fit.theta.size
    u0, ghz, ghw = fit._stage2_args
    k = max(fit.nagq, 1)
    prob.stage2(fit.theta, fixed.to_scaled(fit.beta), u0, k, ghz, ghw)

    def dev(par):
        theta = sdcor_to_theta(par[:nt], 1.0, ps)
        if theta is None:
            return np.inf
        try:
            return float(prob.stage2(theta, fixed.to_scaled(par[nt:]), None, k, ghz, ghw))
        except NumericalError:
            return np.inf

    dev.keep = prob
    return dev


def _variance_scales(fit, names, values) -> list[_Scale]:
    ps = term_sizes(fit)
    sd_pos = is_sd_position(ps)
    scale = fit.sigma if has_residual_scale(fit) else 1.0
    out = []
    for k, (nm, v) in enumerate(zip(names, values)):
        if nm == ".sigma":
            out.append(_Scale(nm, v, 0.0, np.inf, 0.1 * v))
        elif sd_pos[k]:
            out.append(_Scale(nm, v, 0.0, np.inf, max(0.25 * v, 0.05 * scale)))
        else:
            out.append(_Scale(nm, v, -CORR_BOUND, CORR_BOUND, 0.25))
    return out


# ---- the profile of one parameter -----------------------------------------------------------
class _Zeta:
    """zeta(x) of one parameter, remembering every point evaluated."""

    def __init__(self, scale: _Scale, profiled, base: float):
        self.scale = scale
        self.profiled = profiled
        self.base = base
        self.points: dict[float, float] = {scale.estimate: 0.0}

    def __call__(self, x: float) -> float:
        if x in self.points:
            return self.points[x]
        d = self.profiled(x)
        z = math.copysign(math.sqrt(max(d - self.base, 0.0)), x - self.scale.estimate)
        if not np.isfinite(d):
            z = math.nan
        self.points[x] = z
        return z

    def end(self, target: float, side: int) -> tuple[float, str | None]:
        """The x with zeta(x) = side * target beyond the estimate on ``side`` (+1 / -1), or
        NaN and the reason."""
        s = self.scale
        bound = s.upper if side > 0 else s.lower
        if s.estimate == bound:
            return bound, None                       # estimate on the boundary (lme4: the bound)
        prev, step = s.estimate, s.step
        for _ in range(MAX_EXPANSIONS):
            x = s.estimate + side * step
            at_bound = (x >= bound) if side > 0 else (x <= bound)
            if at_bound:
                x = bound
            z = self(x)
            if math.isnan(z):
                return math.nan, f"the deviance could not be evaluated at {x:.4g}"
            if side * z >= target:
                root = brentq(lambda v: self(v) - side * target, min(prev, x), max(prev, x),
                              xtol=1e-6 * max(abs(s.step), 1e-8), rtol=1e-8)
                return float(root), None
            if at_bound:
                return math.nan, f"the profile reaches the boundary {bound:g} before the level"
            prev, step = x, 2 * step
        return math.nan, "the likelihood is flat (the profile does not reach the level)"


@dataclass
class _ProfileSetup:
    fit: object                      # the fit profiled (an ML refit of a REML LMM)
    base: float                      # the minimal deviance
    scales: dict = field(default_factory=dict)
    make: object = None              # name -> profiled deviance function


def _setup(fit) -> _ProfileSetup:
    if getattr(fit, "is_glmm", False):
        if fit.has_scale:
            raise ValueError(f"profile intervals are available for LMMs and for GLMM families "
                             f"without a scale parameter; family {fit.family!r} has one: use "
                             "method='Wald' or method='boot'")
        return _setup_glmm(fit)
    return _setup_lmm(fit.refit_ml() if fit.reml else fit)


def _setup_lmm(ml) -> _ProfileSetup:
    names = sdcor_names(ml)
    values = sdcor_values(ml)
    devfun = _lmm_ml_devfun(ml)
    ps = term_sizes(ml)
    lower = np.r_[np.where(is_sd_position(ps), 0.0, -1.0), 1e-10]
    se = np.sqrt(np.diag(ml.vcov.to_numpy()))
    scales = {s.name: s for s in _variance_scales(ml, names, values)}
    for j, nm in enumerate(ml.design.fixed_names):
        scales[nm] = _Scale(nm, float(ml.beta[j]), -np.inf, np.inf, float(se[j]))

    def make(name):
        if name in names:
            return _VarianceProfiler(devfun, values, lower, names.index(name), ml.control)
        return _LmmFixedProfiler(ml, ml.design.fixed_names.index(name))

    return _ProfileSetup(ml, -2.0 * ml.loglik, scales, make)


def _setup_glmm(fit) -> _ProfileSetup:
    names = sdcor_names(fit)
    values = np.r_[sdcor_values(fit), fit.beta]
    devfun = _glmm_devfun(fit)
    ps = term_sizes(fit)
    lower = np.r_[np.where(is_sd_position(ps), 0.0, -1.0), np.full(fit.beta.size, -np.inf)]
    se = np.sqrt(np.diag(fit.vcov.to_numpy()))
    scales = {s.name: s for s in _variance_scales(fit, names, values[: len(names)])}
    for j, nm in enumerate(fit.design.fixed_names):
        scales[nm] = _Scale(nm, float(fit.beta[j]), -np.inf, np.inf, float(se[j]))
    all_names = names + list(fit.design.fixed_names)
    base = devfun(values)

    def make(name):
        return _VarianceProfiler(devfun, values, lower, all_names.index(name), fit.control)

    return _ProfileSetup(fit, base, scales, make)


def _profile_intervals(fit, names: list[str], level: float) -> pd.DataFrame:
    setup = _setup(fit)
    target = norm.ppf((1 + level) / 2)
    rows, problems = [], []
    for nm in names:
        zeta = _Zeta(setup.scales[nm], setup.make(nm), setup.base)
        lo, why_lo = zeta.end(target, -1)
        hi, why_hi = zeta.end(target, +1)
        rows.append((lo, hi))
        problems += [f"{nm} lower: {w}" for w in (why_lo,) if w]
        problems += [f"{nm} upper: {w}" for w in (why_hi,) if w]
    if problems:
        warnings.warn("profile interval end(s) set to NaN: " + "; ".join(problems), stacklevel=4)
    return pd.DataFrame(rows, index=names, columns=level_columns(level))


# ---- the public functions --------------------------------------------------------------------
METHODS = ("profile", "Wald", "boot")


def confint(fit, parm=None, level: float = 0.95, method: str = "profile", nsim: int = 500,
            seed=None, boot_type: str = "perc", **boot_kwargs) -> pd.DataFrame:
    """Confidence intervals for ``fit``'s parameters: see :meth:`MixedResult.confint`."""
    level = check_level(level)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    names = select_parm(fit, parm)
    if method == "Wald":
        return wald_intervals(fit, names, level)
    if method == "profile":
        return _profile_intervals(fit, names, level)
    from .bootstrap import bootstrap

    boot = bootstrap(fit, nsim=nsim, seed=seed, **boot_kwargs)
    return boot.confint(type=boot_type, level=level).loc[names]


@dataclass
class Profile:
    """lme4's profile: ``frame`` has one row per profile point (columns ``.par``, ``value``,
    ``.zeta``), ``estimates`` the parameters at the optimum."""
    frame: pd.DataFrame
    estimates: pd.Series

    def zeta(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame[".par"] == name].sort_values("value")

    def plot(self, **kwargs):
        from ..plot import profile_plot

        return profile_plot(self, **kwargs)


def profile(fit, which=None, alphamax: float = 0.01, npoints: int = 8) -> Profile:
    """The profile of each parameter out to lme4's default cutoff
    sqrt(qchisq(1 - alphamax, number of parameters)), ``npoints`` evaluations on each side."""
    alphamax = check_level(alphamax)
    names = select_parm(fit, which)
    setup = _setup(fit)
    cutoff = math.sqrt(chi2.ppf(1 - alphamax, len(parameter_names(fit))))
    rows, est, problems = [], {}, []
    for nm in names:
        sc = setup.scales[nm]
        zeta = _Zeta(sc, setup.make(nm), setup.base)
        est[nm] = sc.estimate
        for side in (-1, 1):
            end, why = zeta.end(cutoff, side)
            if why:
                # Stopping at a parameter's boundary is what lme4's profile does too; only a
                # flat or failed profile is worth a warning.
                if "boundary" not in why:
                    problems.append(f"{nm}: {why}")
                end = max(x for x in zeta.points) if side > 0 else min(x for x in zeta.points)
            for x in np.linspace(sc.estimate, end, npoints + 1)[1:]:
                zeta(float(x))
        rows += [(nm, x, z) for x, z in sorted(zeta.points.items()) if np.isfinite(z)]
    if problems:
        warnings.warn("profile truncated: " + "; ".join(problems), stacklevel=3)
    frame = pd.DataFrame(rows, columns=[".par", "value", ".zeta"])
    return Profile(frame, pd.Series(est))
