"""``glmer_nb``: negative binomial GLMMs with the shape theta estimated, as lme4's ``glmer.nb``.

The model is lme4's: NB2 counts (variance mu + mu^2 / theta, MASS's ``negative.binomial``),
the Laplace approximation (or adaptive Gauss-Hermite, nagq > 1) built on PIRLS with its expected
(Fisher scoring) weights, and -2 log L including the family's normalizing constants. For a
fixed theta this is ``glmer(..., family=NegativeBinomial(theta))``.

How theta is found differs from lme4, on purpose. lme4 alternates: a Poisson fit, MASS's
``theta.ml`` on its fitted means, then a 1-D search in theta in which every step is a complete
``glmer`` refit with loose tolerances, and it often stops with convergence warnings. Here the
Laplace deviance is profiled,

    d(theta) = min over (variance parameters, beta) of -2 log L(theta, variance parameters, beta),

and minimized over log(theta) by Brent's method to a tight tolerance; each evaluation of d
re-optimizes the other parameters by BOBYQA on the core's Laplace objective, warm-started from
the nearest theta already seen. The search starts where the same profile of lme4's cheaper
first-stage objective (beta inside PIRLS) has its minimum, found to 1e-2 in log(theta).
The minimum of d is the joint maximum of the same likelihood, so the log-likelihood is never
below lme4's (tests/test_negbin.py checks this against lme4 and glmmTMB references). The
result is then refitted at that theta by ``glmer``, so the standard errors are, as lme4's,
those of the fit at the estimated theta (theta treated as known).

No over-dispersion: when the profile keeps decreasing up to ``THETA_MAX_PER_MEAN`` x the mean
response, or the Poisson fit is at least as likely as the best negative binomial found, the
maximum is at the negative binomial's limit theta -> infinity, the Poisson GLMM; that fit is
returned (``nb_theta = inf``) with a warning rather than an overflowing negative binomial.

Testing theta = infinity (Poisson) against the negative binomial: ``mixedfit.anova(poisson_fit,
nb_fit)`` reports a 1-df likelihood-ratio test. The null value lies on the boundary of the
parameter space (1/theta = 0), where the statistic is a 50:50 mixture of chi^2_0 and chi^2_1,
so the tabulated p-value is conservative; halve it for the boundary-corrected test.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import optimize as sciopt

from . import _core
from ._errors import ConvergenceError, NumericalError
from .families import NegativeBinomial
from .glmm import GlmerResult, _gauss_hermite, glmer
from .optimize import bobyqa, theta_lower
from .options import Control

__all__ = ["glmer_nb"]

# The search for theta stops here (per unit of mean response): beyond, mu^2 / theta is below
# 1e-5 mu and the fit is the Poisson one to every printed digit.
THETA_MAX_PER_MEAN = 1e5
THETA_MIN = 1e-4
# Brent's tolerance on log(theta), relative: theta to ~1e-4 (lme4 gets ~1e-4), where the
# log-likelihood is flat to ~1e-8.
LOG_THETA_TOL = 1e-4


def glmer_nb(formula: str, data, *, link: str = "log", nagq: int = 1, weights=None,
             offset=None, control=None, init_theta: float | None = None,
             data_name: str | None = None) -> GlmerResult:
    """Fit a negative binomial GLMM with the shape theta estimated (lme4's ``glmer.nb``).

    Counts with variance mu + mu^2 / theta; ``link`` "log" (default), "sqrt" or "identity".
    Other arguments as :func:`mixedfit.glmer`. ``init_theta`` starts the search for theta
    (default: a moment estimate from the Poisson fit). Returns a :class:`GlmerResult` with
    ``nb_theta`` (lme4's ``getME(fit, "glmer.nb.theta")``) and ``nb_theta_search`` (the
    profile's evaluations); its ``df``, AIC and BIC count theta, as lme4's ``logLik`` does.
    """
    control = Control.coerce(control)
    NegativeBinomial(1.0, link)  # validates the link
    if init_theta is not None:
        NegativeBinomial(init_theta)  # validates: positive and finite
    name = data_name if data_name is not None else "data"
    common = dict(weights=weights, offset=offset, control=control, data_name=name)
    # Starting values from the Poisson model's first stage (beta inside PIRLS): close enough,
    # and without the second stage's optimization and Hessian.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pois = glmer(formula, data, family="poisson", link=link, fast=True, **common)
    y, mu = pois._y, pois._mu
    theta_max = THETA_MAX_PER_MEAN * max(1.0, float(np.mean(y)))
    start = init_theta if init_theta is not None else _moment_theta(y, mu, theta_max)
    upper = math.log(theta_max)
    # Locate theta on the cheap first-stage objective (beta inside PIRLS, BOBYQA over the
    # variance parameters only), then minimize the Laplace profile from there.
    rough = _Profile(pois, link, nagq, control, stage=1)
    first = _minimize_log_theta(rough, math.log(start), upper, step=0.5, tol=1e-2)
    profile = _Profile(pois, link, nagq, control, stage=2, seed=rough)
    search = _minimize_log_theta(profile, first.x, upper, step=0.05, tol=LOG_THETA_TOL)
    if _at_poisson_limit(search, theta_max):
        # theta -> infinity, unless the Poisson fit is no better than the best NB found
        pois = glmer(formula, data, family="poisson", link=link, nagq=nagq, **common)
        if pois.deviance_table_value <= search.fun + 1e-9 * abs(search.fun):
            return _poisson_limit(pois, math.exp(search.x))
    nb_theta = math.exp(search.x)
    best = profile.nearest(search.x)
    nt = len(pois.theta)
    start_par = np.r_[best.par[:nt], pois._fixed.from_scaled(best.par[nt:])]
    fit = glmer(formula, data, family=NegativeBinomial(nb_theta, link), nagq=nagq,
                **{**common, "control": replace(control, start=tuple(start_par))})
    _count_theta(fit, nb_theta, rough.history + profile.history, search)
    return fit


def _at_poisson_limit(search, theta_max: float) -> bool:
    """The search ran to its cap, or so far out (1e-3 of the cap) that the profile is flat to
    rounding there and the search may have stopped anywhere: compare with the Poisson fit."""
    return search.x >= math.log(theta_max) + math.log(1e-3)


def _moment_theta(y: np.ndarray, mu: np.ndarray, theta_max: float) -> float:
    """Moment estimate from the Poisson fit: sum (y - mu)^2 - mu = sum mu^2 / theta."""
    excess = float(np.sum((y - mu) ** 2 - mu))
    if excess <= 0:
        return min(100.0, theta_max / 10)
    return float(np.clip(np.sum(mu**2) / excess, 1e-2, theta_max / 10))


@dataclass
class _Point:
    log_theta: float
    deviance: float    # -2 log L at the optimum of the other parameters
    par: np.ndarray    # (variance parameters, beta in the core's scaled units)
    u: np.ndarray      # spherical random effects at the mode
    eta: np.ndarray    # linear predictor at the mode


@dataclass
class _Profile:
    """d(log theta): -2 log L minimized over (variance parameters, beta) at that theta
    (stage 2: the Laplace / AGQ objective), or lme4's first-stage objective minimized over the
    variance parameters with beta inside PIRLS (stage 1: cheaper, a little different).
    Warm starts from the nearest theta seen, else from ``seed``'s, else the Poisson fit's."""
    pois: GlmerResult
    link: str
    nagq: int
    control: Control
    stage: int = 2
    seed: "_Profile | None" = None
    history: list = field(default_factory=list)

    def __post_init__(self):
        p = self.pois
        nt = len(p.theta)
        self.nt = nt
        self.lower = np.r_[theta_lower([t.p for t in p.design.terms]),
                           np.full(len(p.beta), -np.inf)]
        T = p._fixed.T
        se = np.sqrt(np.maximum(np.diag(T @ p.vcov.to_numpy() @ T.T), 0.0))
        # lme4's second-stage initial steps, a fifth of them: the start is already close.
        self.step = 0.2 * np.r_[np.full(nt, 0.02), np.where(se > 0, 0.2 * se, 0.02)]
        self.k = max(self.nagq, 1)
        self.ghz, self.ghw = _gauss_hermite(self.k) if self.k > 1 else (np.zeros(1), np.ones(1))
        self.terms = [(t.codes, t.nlevels, t.Z) for t in p.design.terms]

    def nearest(self, log_theta: float) -> _Point | None:
        if not self.history:
            return None
        return min(self.history, key=lambda pt: abs(pt.log_theta - log_theta))

    def __call__(self, log_theta: float) -> float:
        p = self.pois
        near = self.nearest(log_theta)
        # BOBYQA's first trust region shrinks with the distance to the nearest theta seen:
        # the optimum moves about as far.
        shrink = 1.0 if near is None else min(1.0, max(abs(log_theta - near.log_theta), 0.01))
        if near is None and self.seed is not None:
            near = self.seed.nearest(log_theta)
        if near is None:
            near = _Point(log_theta, np.inf, np.r_[p.theta, p._beta_scaled], p.u, p._eta)
        fam = NegativeBinomial(math.exp(log_theta), self.link)
        prob = _core.GlmmProblem(p._fixed.Xs, p._y, p._pw, p.design.offset, self.terms,
                                 *fam.core_args)
        prob.set_pirls_control(self.control.pirls_tol, self.control.pirls_maxiter)
        if self.stage == 1:
            point = self._first_stage(prob, near, shrink)
        else:
            point = self._laplace(prob, near, shrink)
        if point is None:
            return np.inf
        point.log_theta = log_theta
        self.history.append(point)
        return point.deviance

    def _first_stage(self, prob, near: _Point, shrink: float) -> _Point | None:
        nt = self.nt

        def f1(th):
            try:
                return prob.stage1(th, None)
            except (NumericalError, ValueError):
                return np.inf

        try:
            prob.stage1(near.par[:nt], np.ascontiguousarray(near.eta))
        except (NumericalError, ValueError):
            return None
        opt = bobyqa(f1, near.par[:nt], self.lower[:nt], self.control,
                     initial_step=shrink * self.step[:nt])
        if not np.isfinite(opt.fun):
            return None
        prob.stage1(opt.x, None)
        st = prob.state_at(opt.x)
        return _Point(0.0, float(opt.fun), np.r_[opt.x, st["beta"]],
                      np.ascontiguousarray(st["u"]), np.ascontiguousarray(st["eta"]))

    def _laplace(self, prob, near: _Point, shrink: float) -> _Point | None:
        nt, k = self.nt, self.k
        x0, u0 = near.par, near.u

        def f2(par):
            try:
                return prob.stage2(par[:nt], par[nt:], None, k, self.ghz, self.ghw)
            except (NumericalError, ValueError):
                return np.inf

        try:
            prob.stage2(x0[:nt], x0[nt:], np.ascontiguousarray(u0), k, self.ghz, self.ghw)
        except (NumericalError, ValueError):
            pass
        opt = bobyqa(f2, x0, self.lower, self.control, initial_step=shrink * self.step)
        if not np.isfinite(opt.fun):
            return None
        prob.stage2(opt.x[:nt], opt.x[nt:], None, k, self.ghz, self.ghw)
        st = prob.state_at(opt.x[:nt])
        # AGQ's criterion is on the unit-deviance scale, whose offset from -2 log L depends
        # on theta: add it back so that values at different theta compare.
        dev = opt.fun + (st["aic"] - st["devsum"] if k > 1 else 0.0)
        return _Point(0.0, float(dev), opt.x.copy(), np.ascontiguousarray(st["u"]),
                      np.ascontiguousarray(st["eta"]))


def _minimize_log_theta(profile: _Profile, start: float, upper: float, step: float,
                        tol: float):
    """Brent's method on log(theta), kept inside [log THETA_MIN, upper] by evaluating at the
    nearest bound plus a slope outside (so the minimum of a monotone profile is the bound)."""
    lower = math.log(THETA_MIN)

    seen: dict[float, float] = {}

    def capped(lt):
        lt = float(lt)
        if lt not in seen:
            inside = min(max(lt, lower), upper)
            seen[lt] = profile(inside) + abs(lt - inside)
        return seen[lt]

    a = min(max(start, lower), upper - step)
    # Bracketing jumps at most twice the last step: each evaluation re-optimizes from the
    # nearest theta seen, so one long jump costs more than a few short ones.
    bracket = sciopt.bracket(capped, a, a + step, grow_limit=2.0)[:3]
    res = sciopt.minimize_scalar(capped, bracket=bracket, method="brent",
                                 options={"xtol": tol})
    if not np.isfinite(res.fun):
        raise ConvergenceError("the negative binomial fit failed at every theta tried; "
                               "try a simpler random-effects structure or init_theta=")
    res.x = min(max(float(res.x), lower), upper)
    return res


def _count_theta(fit: GlmerResult, nb_theta: float, history: list, search) -> None:
    """The estimated theta is a parameter: lme4's logLik(glmer.nb fit) has df + 1."""
    fit.nb_theta = nb_theta
    fit.nb_theta_search = {"evaluations": len(history), "log_theta_tol": LOG_THETA_TOL,
                           "converged": bool(getattr(search, "success", True))}
    fit.df += 1
    fit.aic = fit.deviance_table_value + 2 * fit.df
    fit.bic = fit.deviance_table_value + fit.df * math.log(fit.design.n)


def _poisson_limit(pois: GlmerResult, theta_seen: float) -> GlmerResult:
    warnings.warn(
        "no over-dispersion: the negative binomial likelihood increases up to theta = "
        f"{theta_seen:.3g} and no finite theta beats the Poisson fit (theta -> infinity); "
        "returning the Poisson GLMM fit with nb_theta = inf", stacklevel=3)
    pois.nb_theta = math.inf
    return pois
