"""``glmer_nb``: negative binomial GLMMs with the shape theta estimated, as lme4's ``glmer.nb``.

The model is lme4's: NB2 counts (variance mu + mu^2 / theta, MASS's ``negative.binomial``),
the Laplace approximation (or adaptive Gauss-Hermite, nagq > 1) built on PIRLS with its expected
(Fisher scoring) weights, and -2 log L including the family's normalizing constants. For a
fixed theta this is ``glmer(..., family=NegativeBinomial(theta))``.

How theta is found differs from lme4, on purpose. lme4 alternates: a Poisson fit, MASS's
``theta.ml`` on its fitted means, then a 1-D search in theta in which every step is a complete
``glmer`` refit with loose tolerances, and it often stops with convergence warnings. Here:

1. the profile of lme4's cheap first-stage objective (beta inside PIRLS, BOBYQA over the
   variance parameters at each theta) is minimized over log(theta) by Brent's method to 1e-2,
   which locates theta;
2. from that point, BOBYQA minimizes the Laplace (or AGQ) -2 log L jointly over (log theta,
   variance parameters, beta), to the same tolerances as glmer's second stage (one search in
   2 + p dimensions costs fewer PIRLS runs than a 1-D search over re-optimized profiles);
3. the model is refitted at that theta by ``glmer``, so the standard errors are, as lme4's,
   those of the fit at the estimated theta (theta treated as known).

The joint minimum is the maximum of the same likelihood lme4 maximizes: on the reference data
the log-likelihood is never below the one lme4 reports, and on lme4's own deviance function
(evaluated with tightly converged PIRLS) the two optima agree to ~1e-7 (tests/test_negbin.py,
README).

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
# Brent's tolerance on log(theta) when locating theta on the first-stage profile.
LOG_THETA_TOL_FIRST_STAGE = 1e-2


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
    # variance parameters only), then minimize the Laplace deviance jointly from there.
    rough = _Profile(pois, link, nagq, control)
    first = _minimize_log_theta(rough, math.log(start), upper, step=0.5,
                                tol=LOG_THETA_TOL_FIRST_STAGE)
    search, joint = _joint_laplace(rough, rough.nearest(first.x), first.x, upper)
    if _at_poisson_limit(search, theta_max):
        # theta -> infinity, unless the Poisson fit is no better than the best NB found
        pois = glmer(formula, data, family="poisson", link=link, nagq=nagq, **common)
        if pois.deviance_table_value <= search.deviance + 1e-9 * abs(search.deviance):
            return _poisson_limit(pois, math.exp(search.log_theta))
    nb_theta = math.exp(search.log_theta)
    nt = len(pois.theta)
    start_par = np.r_[search.par[:nt], pois._fixed.from_scaled(search.par[nt:])]
    fit = glmer(formula, data, family=NegativeBinomial(nb_theta, link), nagq=nagq,
                **{**common, "control": replace(control, start=tuple(start_par))})
    _count_theta(fit, nb_theta, len(rough.history), joint)
    return fit


def _at_poisson_limit(search, theta_max: float) -> bool:
    """The search ran to its cap, or so far out (1e-3 of the cap) that the profile is flat to
    rounding there and the search may have stopped anywhere: compare with the Poisson fit."""
    return search.log_theta >= math.log(theta_max) + math.log(1e-3)


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
    """d1(log theta): lme4's first-stage objective (beta inside PIRLS) minimized over the
    variance parameters at that theta, warm-started from the nearest theta seen (else from the
    Poisson fit); also holds what the joint Laplace search needs (bounds, steps, terms)."""
    pois: GlmerResult
    link: str
    nagq: int
    control: Control
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
        if near is None:
            near = _Point(log_theta, np.inf, np.r_[p.theta, p._beta_scaled], p.u, p._eta)
        fam = NegativeBinomial(math.exp(log_theta), self.link)
        prob = _core.GlmmProblem(p._fixed.Xs, p._y, p._pw, p.design.offset, self.terms,
                                 *fam.core_args)
        prob.set_pirls_control(self.control.pirls_tol, self.control.pirls_maxiter)
        point = self._first_stage(prob, near, shrink)
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


def _joint_laplace(profile: _Profile, seed: _Point, log_theta0: float, upper: float):
    """BOBYQA over (log theta, variance parameters, beta) on the Laplace / AGQ deviance, from
    the first-stage point: one 2 + p dimensional search costs fewer PIRLS runs than a 1-D
    search over re-optimized profiles. log theta above ``upper`` is evaluated at ``upper``
    plus a slope."""
    p, nt, k = profile.pois, profile.nt, profile.k
    u0 = np.ascontiguousarray(seed.u)
    count = [0]

    def f(z):
        lt = min(z[0], upper)
        fam = NegativeBinomial(math.exp(lt), profile.link)
        prob = _core.GlmmProblem(p._fixed.Xs, p._y, p._pw, p.design.offset, profile.terms,
                                 *fam.core_args)
        prob.set_pirls_control(profile.control.pirls_tol, profile.control.pirls_maxiter)
        count[0] += 1
        try:
            dev = prob.stage2(z[1:1 + nt], z[1 + nt:], u0, k, profile.ghz, profile.ghw)
            if k > 1:
                st = prob.state_at(z[1:1 + nt])
                dev += st["aic"] - st["devsum"]
        except (NumericalError, ValueError):
            return np.inf
        return dev + max(z[0] - upper, 0.0)

    z0 = np.r_[min(log_theta0, upper), seed.par]
    lower = np.r_[math.log(THETA_MIN), profile.lower]
    step = np.r_[0.05, 0.25 * profile.step]
    opt = bobyqa(f, z0, lower, profile.control, initial_step=step)
    if not np.isfinite(opt.fun):
        raise ConvergenceError("the negative binomial fit failed at every theta tried; "
                               "try a simpler random-effects structure or init_theta=")
    best = _Point(min(opt.x[0], upper), opt.fun, opt.x[1:], u0, seed.eta)
    return best, opt


def _count_theta(fit: GlmerResult, nb_theta: float, first_stage_points: int, joint) -> None:
    """The estimated theta is a parameter: lme4's logLik(glmer.nb fit) has df + 1."""
    fit.nb_theta = nb_theta
    fit.nb_theta_search = {"first_stage_points": first_stage_points,
                           "joint_evaluations": joint.nevals, "converged": joint.converged,
                           "message": joint.message}
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
