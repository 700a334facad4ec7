"""``glmer``: generalized linear mixed models by PIRLS (C++), Laplace or adaptive Gauss-Hermite,
optimized in two stages as lme4 does."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pandas as pd

from . import _core
from ._design import BinomialCounts, build_design
from ._errors import (ConvergenceError, ConvergenceWarning, DataError, NumericalError,
                      numerical_failures_explained)
from ._standardize import check_predictor_scales, fixed_scaling
from .dask import is_dask_frame
from .families import binomial_response, check_response, resolve_family
from .optimize import (bobyqa, minimize_theta, report_convergence, snap_to_boundary,
                       theta_lower, theta_start)
from .options import Control, check_bool, start_vector
from .results import MixedResult, VarCorr, _varcorr_terms

__all__ = ["glmer", "GlmerResult"]


def _gauss_hermite(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite nodes and weights normalized to sum to 1."""
    z, w = np.polynomial.hermite_e.hermegauss(k)
    return np.ascontiguousarray(z), np.ascontiguousarray(w / w.sum())


def _derivs(f, x: np.ndarray, delta: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Central finite-difference gradient and Hessian (lme4's deriv12 step)."""
    k = x.size
    H = np.empty((k, k))
    f0 = f(x)
    E = np.eye(k) * delta
    fp = np.array([f(x + E[i]) for i in range(k)])
    fm = np.array([f(x - E[i]) for i in range(k)])
    g = (fp - fm) / (2 * delta)
    for i in range(k):
        H[i, i] = (fp[i] - 2 * f0 + fm[i]) / delta**2
        for j in range(i):
            v = (f(x + E[i] + E[j]) - f(x + E[i] - E[j]) - f(x - E[i] + E[j]) + f(x - E[i] - E[j]))
            H[i, j] = H[j, i] = v / (4 * delta**2)
    return g, H


# What one evaluation of the objective can raise far from the optimum: the core's
# NumericalError, or its ValueError for a non-finite value met inside PIRLS.
_EVALUATION_FAILURES = (NumericalError, ValueError)


def _use_gradient(prob, nagq: int, control) -> bool:
    return control.optimizer in ("auto", "gradient") and nagq <= 1 and prob.has_gradient


def _separated_columns(design, y: np.ndarray, pw: np.ndarray) -> list[tuple[str, str]]:
    """Indicator columns of X whose rows all have 0 (or all 1) responses."""
    out = []
    for j, name in enumerate(design.fixed_names):
        col = design.X[:, j]
        if name == "(Intercept)" or not np.all((col == 0) | (col == 1)):
            continue
        rows = col == 1
        succ, trials = np.sum(y[rows] * pw[rows]), np.sum(pw[rows])
        if trials > 0 and succ == 0:
            out.append((name, "0"))
        elif trials > 0 and succ == trials:
            out.append((name, "1"))
    return out


def glmer(formula: str, data, *, family="binomial", link=None, nagq: int = 1, weights=None,
          offset=None, control=None, fast: bool = False, vcov_method: str = "hessian",
          data_name: str | None = None, progress: bool = True) -> "GlmerResult":
    """Fit a generalized linear mixed model with lme4's formula syntax.

    family : "binomial" (links logit, probit, cloglog, cauchit, log), "poisson" (log, sqrt,
        identity), "Gamma" (inverse, log, identity), "inverse.gaussian" (1/mu^2, inverse, log,
        identity) or "gaussian" with a non-identity link.
    Binomial responses: 0/1 (numeric or bool), a factor whose first level is failure,
    proportions with ``weights`` = number of trials, or ``cbind(successes, failures) ~ ...``.
    nagq : 1 = Laplace (default); k > 1 adaptive Gauss-Hermite with k nodes (one scalar
        random-effects term only); 0 = stop after the first stage (beta inside PIRLS), as
        ``fast=True``.
    vcov_method : "hessian" (lme4's default: finite-difference Hessian of the stage-2
        objective) or "factor" (from the final weighted Cholesky factor, lme4's use.hessian=FALSE).
    data : a pandas, polars or Dask DataFrame; a Dask frame is fitted where it lies
        (:mod:`mixedfit.dask`; ``progress=False`` turns its progress bar off).
    """
    if is_dask_frame(data):
        from .dask import glmer_dask

        return glmer_dask(formula, data, family=family, link=link, nagq=nagq, weights=weights,
                          offset=offset, control=control, fast=fast, vcov_method=vcov_method,
                          data_name=data_name, progress=progress)
    control = Control.coerce(control)
    fam = resolve_family(family, link)
    nagq = 0 if check_bool(fast, "fast") else _checked_nagq(nagq)
    if vcov_method not in ("hessian", "factor"):
        raise ValueError(f"vcov_method must be 'hessian' or 'factor', got {vcov_method!r}")
    call = dict(formula=formula, data=data, family=fam if fam.nb_theta else fam.name,
                link=fam.link, nagq=nagq, weights=weights, offset=offset, control=control,
                vcov_method=vcov_method, data_name=data_name)
    design = build_design(formula, data, weights=weights, offset=offset, lmm=False,
                          response_kind="raw")
    if design.n_dropped_na:
        warnings.warn(f"dropped {design.n_dropped_na} row(s) with missing values", stacklevel=2)
    y, pw = _response(fam, design)
    if nagq > 1 and (len(design.terms) != 1 or design.terms[0].p != 1):
        raise DataError(
            f"nagq = {nagq} (adaptive Gauss-Hermite) is only available for a single scalar "
            "random-effects term such as (1 | g); use nagq=1 (Laplace) for this model"
        )
    terms = [(t.codes, t.nlevels, t.Z) for t in design.terms]
    # The core works on orthogonal fixed-effect columns of unit size (X = Xs T): far-off
    # origins and mixed units of covariates cost PIRLS no digits; beta is mapped back.
    check_predictor_scales(design.X, stacklevel=2)
    fixed = fixed_scaling(design.X, qr=design.take_x_qr(design.X))
    prob = _core.GlmmProblem(fixed.Xs, y, pw, design.offset, terms, *fam.core_args)
    prob.set_pirls_control(control.pirls_tol, control.pirls_maxiter)
    ghz, ghw = _gauss_hermite(nagq) if nagq > 1 else (np.zeros(1), np.ones(1))
    with numerical_failures_explained(_NUMERICAL_ADVICE):
        opt, opt1, st, obj, hess, u0 = _optimize(prob, fam, design, y, pw, nagq, ghz, ghw,
                                                 control, vcov_method, fixed)
    nt = len(opt1.x)
    theta = opt.x[:nt]
    beta = opt.x[nt:] if nagq >= 1 else np.asarray(st["beta"])
    report_convergence(opt, [t.p for t in design.terms], control, stacklevel=2)
    return GlmerResult(design, prob, fam, nagq, theta, np.asarray(beta), obj, st, hess, opt,
                       opt1, control, data_name if data_name is not None else "data", call,
                       y, pw, (u0, ghz, ghw), fixed)


def _optimize(prob, fam, design, y, pw, nagq, ghz, ghw, control, vcov_method, fixed):
    """Stage 1, then (nagq >= 1) stage 2: (opt, opt1, state, objective, Hessian, u0), beta
    in the core's scaled units."""
    failures: list[str] = []
    opt1, eta0 = _stage1(prob, fam, design, y, pw, nagq, control, failures)
    if nagq >= 1:
        ps = [t.p for t in design.terms]
        opt, st, obj, hess, u0 = _stage2(prob, fam, ps, opt1, eta0, y, nagq, ghz, ghw, control,
                                         vcov_method, failures, fixed)
        return opt, opt1, st, obj, hess, u0
    obj = prob.stage1(opt1.x, eta0)
    st = prob.state_at(opt1.x)
    return opt1, opt1, st, obj, None, np.ascontiguousarray(st["u"])


_NUMERICAL_ADVICE = ("try rescaling the predictors, a simpler random-effects structure, "
                     "control={'optimizer': 'bobyqa'}, or check the response for complete "
                     "separation")


# lme4 refuses more quadrature nodes than this (nAGQ <= 25).
MAX_NAGQ = 25


def _checked_nagq(nagq) -> int:
    """nagq as an int in 0..25 (lme4's range), or a DataError naming the value."""
    if isinstance(nagq, (bool, np.bool_)) or not isinstance(nagq, (int, np.integer)):
        raise DataError(f"nagq must be an integer from 0 to {MAX_NAGQ}, got {nagq!r}")
    if not 0 <= nagq <= MAX_NAGQ:
        raise DataError(f"nagq must be an integer from 0 to {MAX_NAGQ} (lme4's limit: more "
                        f"quadrature nodes add nothing), got {nagq!r}")
    return int(nagq)


def _response(fam, design) -> tuple[np.ndarray, np.ndarray]:
    """The response and prior weights the core takes (binomial: proportions and trials)."""
    name = design.parsed.response
    if fam.name == "binomial":
        y, pw = binomial_response(design.response, design.weights, name)
    else:
        if isinstance(design.response, BinomialCounts):
            raise DataError("cbind(...) responses are only for the binomial family")
        if design.response.dtype.kind not in "biuf":
            raise DataError(f"response {name!r} must be numeric for family {fam.name!r}, "
                            f"got dtype {design.response.dtype}")
        y = design.response.to_numpy(dtype=float)
        check_response(fam, y, name)
        pw = np.ones_like(y) if design.weights is None else design.weights
    _check_not_constant(y, pw, name)
    return np.ascontiguousarray(y, dtype=float), np.ascontiguousarray(pw, dtype=float)


def _check_not_constant(y: np.ndarray, pw: np.ndarray, name: str) -> None:
    """lme4's "Response is constant": an all-0 or all-1 binomial response or an all-0
    Poisson response has its fixed effects at infinity, no matter the model."""
    observed = y[np.asarray(pw) > 0]
    if observed.size and observed.min() == observed.max():
        raise DataError(f"Response is constant: every value of {name!r} is {observed[0]:g}; "
                        "a GLMM needs variation in the response")


def _stage1(prob, fam, design, y, pw, nagq, control, failures):
    """lme4's first stage: theta by BOBYQA with beta inside PIRLS (the nAGQ = 0 objective)."""
    eta0 = np.ascontiguousarray(fam.linkfun(fam.mustart(y, pw)))
    if not np.isfinite(eta0).all():
        raise DataError(f"cannot find valid starting values for family {fam.name!r} with link {fam.link!r}")
    ps = [t.p for t in design.terms]
    start = theta_start(ps)
    if control.start is not None:
        # lme4's start$theta seeds the first stage too (for nagq >= 1 control.start is
        # (theta, beta), checked in the second stage)
        start = np.asarray(control.start, dtype=float)[:len(start)]
    seeded = [False]

    def f1(th):
        # The first evaluation starts PIRLS from the GLM starting values, later ones from
        # the previous mode (converged to ~1e-12: the value does not depend on the start).
        try:
            val = prob.stage1(th, None if seeded[0] else eta0)
            seeded[0] = True
            return val
        except _EVALUATION_FAILURES as exc:
            failures.append(str(exc))
            return np.inf

    opt1 = None
    if _use_gradient(prob, nagq, control):
        try:
            prob.stage1(start, eta0)
            seeded[0] = True
            opt1 = _minimize_in_core(prob, 1, prob.stage1_grad, f1, start, ps, control)
        except _EVALUATION_FAILURES as exc:
            failures.append(str(exc))
    if opt1 is None:
        opt1 = bobyqa(f1, start, theta_lower(ps), control)
        snap_to_boundary(f1, opt1, ps)
    if not np.isfinite(opt1.fun):
        sep = _separated_columns(design, y, pw) if fam.name == "binomial" else []
        if sep:
            col, side = sep[0]
            raise ConvergenceError(
                f"complete separation: every response is {side} where fixed-effect column "
                f"{col!r} is 1, so its estimate is infinite (PIRLS cannot converge); merge or "
                "drop that level, or remove the term"
            )
        raise ConvergenceError(
            "PIRLS failed at every starting value"
            + (f" ({failures[-1]})" if failures else "")
            + "; try rescaling predictors, a simpler random-effects structure, or check the "
            "response for complete separation"
        )
    return opt1, eta0


def _core_newton(prob, stage, start, u_start=None, curvature_from_stage1=False):
    """The core's Newton run on a stage: (x, f, nevals, converged)."""
    return prob.newton(stage, start, u_start, curvature_from_stage1)


def _minimize_in_core(prob, stage, fun_grad, fun, start, ps, control, initial_step=None,
                      u_start=None, curvature_from_stage1=False):
    """optimize.minimize_theta with its Newton loop run by the core (one call, the same rules
    and so the same numbers). ``initial_step``: a function giving BOBYQA's initial steps,
    called only if BOBYQA runs; ``u_start``: stage 2's first PIRLS start;
    ``curvature_from_stage1``: stage 2's curvature model starts from stage 1's (the caller
    polishes with an exact Hessian)."""
    return minimize_theta(
        fun_grad, fun, start, ps, control, initial_step=initial_step,
        newton_run=lambda x0: _core_newton(prob, stage, x0, u_start, curvature_from_stage1))


def _stage2(prob, fam, ps, opt1, eta0, y, nagq, ghz, ghw, control, vcov_method, failures,
            fixed):
    """lme4's second stage: (theta, beta) jointly on the Laplace / AGQ objective, then the
    Hessian for the standard errors and one Newton step to polish the optimum."""
    theta1 = opt1.x
    nt = len(theta1)
    gradient = _use_gradient(prob, nagq, control)
    st1 = _stage1_mode(prob, theta1, eta0, with_variances=not gradient)
    beta1 = np.asarray(st1["beta"])
    u0 = np.ascontiguousarray(st1["u"])
    k = max(nagq, 1)
    f2 = _Stage2Objective(prob, nt, k, ghz, ghw, failures)

    def step2():
        # Initial steps as lme4 scales its second stage: 0.02 for theta, 0.2 standard errors
        # (from the stage-1 factor) for beta. Fewer evaluations, same or better optimum.
        st = st1 if "unscaled_vcov" in st1 else _stage1_mode(prob, theta1, eta0, True)
        scale1 = (st["pearson"] + st["ussq"]) / len(y) if fam.has_scale else 1.0
        se1 = np.sqrt(np.maximum(np.diag(np.asarray(st["unscaled_vcov"])) * scale1, 0.0))
        return np.r_[np.full(nt, 0.02), np.where(se1 > 0, 0.2 * se1, 0.02)]

    x0 = np.concatenate([theta1, beta1])
    start = start_vector(control, x0.size, "theta, beta")
    if start is not None:  # given in the data's units
        x0 = np.concatenate([start[:nt], fixed.to_scaled(start[nt:])])
    lower = np.concatenate([theta_lower(ps), np.full(len(beta1), -np.inf)])
    if gradient:  # Newton's first evaluation starts PIRLS from u0
        opt, hess = _stage2_gradient(prob, x0, nt, ps, lower, step2, f2, control, vcov_method,
                                     failures, u0)
    else:
        try:
            prob.stage2(x0[:nt], x0[nt:], u0, k, ghz, ghw)
        except _EVALUATION_FAILURES:
            pass
        opt, hess = _stage2_bobyqa(x0, ps, lower, step2(), f2, control, vcov_method, failures)
    snap_to_boundary(f2, opt, ps)  # after the polishing step, which can leave 0 by a hair
    obj = _objective_at(prob, opt.x, f2, nt, k, ghz, ghw)
    st = prob.state_at(opt.x[:nt])
    return opt, st, obj, hess, u0


class _Stage2Objective:
    """The stage-2 objective of ``par = (theta, beta)`` for the optimizers: an evaluation
    that fails is recorded in ``failures`` and answered with inf. PIRLS starts from the
    previous evaluation's mode (converged to ~1e-12, so the value does not depend on the
    start); the first evaluation starts from stage 1's.

    ``last``: (point, value) of the last successful call while it is the core's last
    evaluation (reset where the core evaluates elsewhere after these calls). (A class, not a
    closure that refers to itself: such a closure is a reference cycle, garbage that only
    the cyclic collector frees, and collections over everything a process has loaded cost
    a small fit more than its arithmetic.)"""

    def __init__(self, prob, nt, k, ghz, ghw, failures):
        self.prob, self.nt, self.k, self.ghz, self.ghw = prob, nt, k, ghz, ghw
        self.failures = failures
        self.last = None

    def __call__(self, par):
        nt = self.nt
        try:
            val = self.prob.stage2(par[:nt], par[nt:], None, self.k, self.ghz, self.ghw)
        except _EVALUATION_FAILURES as exc:
            self.failures.append(str(exc))
            return np.inf
        self.last = (par.copy(), val)
        return val


def _objective_at(prob, x, f2, nt, k, ghz, ghw):
    """The stage-2 objective at x, leaving the core's state there: f2's last value when the
    core's last evaluation was that call at x (e.g. an accepted polishing step), else a new
    evaluation."""
    if f2.last is not None and _same_point(f2.last[0], x):
        return f2.last[1]
    return prob.stage2(x[:nt], x[nt:], None, k, ghz, ghw)


def _same_point(a: np.ndarray, b: np.ndarray) -> bool:
    """``np.array_equal`` of two parameter vectors, without its wrapper's checks (it runs
    on every fit; both are float arrays)."""
    return a.shape == b.shape and bool((a == b).all())


def _stage1_mode(prob, theta1, eta0, with_variances):
    """The core's state at the stage-1 mode at theta1: PIRLS from the GLM starting values,
    unless (without the variances) the last evaluation was there already."""
    if not with_variances:
        try:
            st = prob.state(False)
            if st["stage"] == 1 and _same_point(st["theta"], theta1):
                return st
        except _EVALUATION_FAILURES:  # no successful evaluation yet
            pass
    prob.stage1(theta1, eta0)
    return prob.state_at(theta1) if with_variances else prob.state(False)


def _stage2_bobyqa(x0, ps, lower, step2, f2, control, vcov_method, failures):
    """Stage 2 derivative-free (lme4's BOBYQA), then the Hessian from finite differences of
    the objective: (opt, Hessian or None)."""
    opt = bobyqa(f2, x0, lower, control, initial_step=step2)
    if not np.isfinite(opt.fun):
        raise ConvergenceError("PIRLS failed in the Laplace/AGQ stage"
                               + (f" ({failures[-1]})" if failures else "")
                               + "; " + _NUMERICAL_ADVICE)
    hess = None
    if vcov_method == "hessian":
        g, hess = _derivs(f2, opt.x)
        # BOBYQA's ftol test can stop early along flat directions (fixed effects with large
        # standard errors): one Newton step on the smooth objective, kept only if it lowers
        # it (the Hessian, and so the standard errors, stay those at the optimizer's point).
        try:
            xn = opt.x - np.linalg.solve(hess, g)
            if np.all(xn >= lower) and np.all(np.isfinite(xn)):
                fn = f2(xn)
                if fn < opt.fun:
                    opt.x, opt.fun = xn, fn
        except np.linalg.LinAlgError:
            pass
    else:
        # Without a Hessian, restart once with a trust region a tenth of the first.
        again = bobyqa(f2, opt.x, lower, control, initial_step=0.1 * step2)
        if again.fun < opt.fun:
            again.nevals += opt.nevals
            opt = again
        else:
            opt.nevals += again.nevals
    return opt, hess


def _stage2_gradient(prob, x0, nt, ps, lower, step2, f2, control, vcov_method, failures, u0):
    """Stage 2 with the exact gradient (as stage 1: Newton in the core, L-BFGS-B, then lme4's
    BOBYQA path), then for the standard errors the Hessian from central differences of
    gradients (in the core) and one Newton step on the smooth objective: (opt, Hessian or
    None)."""
    def fg(par):
        return prob.stage2_grad(par[:nt], par[nt:])

    # With the Hessian and its polishing Newton step to follow, Newton may start from stage
    # 1's curvature instead of spending an evaluation per parameter on differences.
    opt = _minimize_in_core(prob, 2, fg, f2, x0, ps, control, initial_step=step2, u_start=u0,
                            curvature_from_stage1=vcov_method == "hessian")
    if not np.isfinite(opt.fun):
        raise ConvergenceError("PIRLS failed in the Laplace stage"
                               + (f" ({failures[-1]})" if failures else "")
                               + "; " + _NUMERICAL_ADVICE)
    hess = None
    if vcov_method != "hessian":
        return opt, hess
    try:
        f2.last = None  # the Hessian's evaluations come after f2's
        fx, g, hess = prob.stage2_hessian(opt.x)
        opt.nevals += 1 + 2 * opt.x.size
        xn = opt.x - np.linalg.solve(hess, g)
        if (xn >= lower).all() and np.isfinite(xn).all():
            fn = f2(xn)
            opt.nevals += 1
            if fn < fx:
                opt.x, opt.fun = xn, fn
    except (*_EVALUATION_FAILURES, np.linalg.LinAlgError) as exc:
        failures.append(str(exc))
        if hess is None:
            _, hess = _derivs(f2, opt.x)
    return opt, hess


def _hessian_in_data_units(hess: np.ndarray, nt: int, fixed) -> np.ndarray:
    """The Hessian in (theta, beta) from that in (theta, beta_s), beta_s = T beta: J' H J with
    J = diag(I, T)."""
    J = np.eye(hess.shape[0])
    J[nt:, nt:] = fixed.T
    return J.T @ hess @ J


# lme4's check.conv.hess tolerance.
HESSIAN_TOL = 1e-6


def check_hessian(hess: np.ndarray) -> list[str]:
    """lme4's checks of the Hessian at the optimum, with its texts: a model nearly
    unidentifiable in these units (very large eigenvalue, or a large eigenvalue ratio) warns
    to rescale variables; negative eigenvalues mean the optimizer did not reach a minimum."""
    try:
        ev = np.linalg.eigvalsh(0.5 * (hess + hess.T)).tolist()  # ascending; a few: as floats
    except np.linalg.LinAlgError:
        return []
    if not all(math.isfinite(v) for v in ev):
        return []
    tol = HESSIAN_TOL
    negative = sum(v < -tol for v in ev)
    if negative:
        messages = [f"Model failed to converge: degenerate  Hessian with {negative} negative "
                    "eigenvalues"]
    elif any(abs(v) < tol for v in ev):
        messages = ["Hessian is numerically singular: parameters are not uniquely determined"]
    else:
        messages = []
        if ev[-1] * tol > 1:
            messages.append("Model is nearly unidentifiable: very large eigenvalue\n"
                            " - Rescale variables?")
        if ev[0] / ev[-1] < tol:
            messages.append("Model is nearly unidentifiable: large eigenvalue ratio\n"
                            " - Rescale variables?")
    for msg in messages:
        warnings.warn(ConvergenceWarning(msg), stacklevel=4)
    return messages


class GlmerResult(MixedResult):
    """A fitted generalized linear mixed model (lme4's ``glmerMod``).

    Scales: ``loglik``, ``aic``, ``bic`` and ``deviance_table_value`` (= -2 logLik) include the
    family's normalizing constants, as lme4's logLik/AIC/BIC for Laplace fits. For nAGQ > 1,
    lme4 1.1-31 minimizes and reports a criterion on the unit-deviance scale
    (``lme4_criterion``); our ``loglik`` adds back the constant so it stays comparable with
    Laplace fits. ``objective_unit`` is the Laplace objective on the unit-deviance scale
    (sum of deviance residuals + ||u||^2 + log|L|^2). ``deviance`` is lme4's ``deviance()``
    for GLMMs: the sum of squared deviance residuals at the mode.
    """

    is_glmm = True
    has_pvalues = True
    reml = False

    def __init__(self, design, prob, fam, nagq, theta, beta, obj, st, hess, opt, opt1, control,
                 data_name, call, y, pw, stage2_args, fixed):
        self.design = design
        self._prob = prob
        self._fixed = fixed  # the core's beta is fixed.to_scaled(beta)
        self.convergence_messages: list[str] = []  # lme4's checks of the optimum, as it words them
        self._fam = fam
        self.family = fam.display_name  # R's family()$family
        self.nb_theta = fam.nb_theta  # the negative binomial's shape, else None
        self.link = fam.link
        self.nagq = nagq
        self.theta = np.asarray(theta, dtype=float)
        self._beta_scaled = np.asarray(beta, dtype=float)
        self.beta = fixed.from_scaled(beta)
        self.optinfo = opt
        self.optinfo_stage1 = opt1
        self.control = control
        self.data_name = data_name
        self._call = call
        self._y = y
        self._pw = pw
        self._stage2_args = stage2_args
        self.u = np.asarray(st["u"])
        self.b = np.asarray(st["b"])
        self._eta = np.asarray(st["eta"])
        self._mu = np.asarray(st["mu"])
        n, p = design.n, design.p
        devsum, aic_full, ussq, ldL2 = st["devsum"], st["aic"], st["ussq"], st["ldL2"]
        self.devcomp = {"ldL2": ldL2, "ussq": ussq, "drsum": devsum, "wrss": st["pearson"],
                        "pwrss": st["pearson"] + ussq, "aic": aic_full}
        self.objective_unit = devsum + ussq + ldL2
        if nagq > 1:
            self.lme4_criterion = float(obj)
            m2ll = float(obj) + (aic_full - devsum)
        else:
            self.lme4_criterion = float(obj)
            m2ll = float(obj)
        self.loglik = -0.5 * m2ll
        self.deviance_table_value = m2ll
        self.deviance = float(devsum)
        self.df = p + len(self.theta) + (1 if fam.has_scale else 0)
        self.aic = m2ll + 2 * self.df
        self.bic = m2ll + self.df * math.log(n)
        self.sigma = math.sqrt((st["pearson"] + ussq) / n) if fam.has_scale else 1.0
        self._unscaled_condvar = st["unscaled_condvar"]  # scaled on first use
        self._unscaled_vcov = st["unscaled_vcov"]
        self._vcov_hessian = None
        nt = len(self.theta)
        if hess is not None:
            hess = _hessian_in_data_units(hess, nt, fixed)
            self.convergence_messages = check_hessian(hess)
        self.hessian = hess
        if hess is not None:
            try:
                Hinv = np.linalg.inv(hess)
                V = Hinv[nt:, nt:]
                V = V + V.T
                if np.isfinite(V).all() and (V.size == 0 or np.linalg.eigvalsh(V).min() > 0):
                    self._vcov_hessian = V
                else:
                    warnings.warn("finite-difference Hessian is not positive definite; "
                                  "standard errors from the final weighted factor", stacklevel=3)
            except np.linalg.LinAlgError:
                warnings.warn("finite-difference Hessian is singular; standard errors from the "
                              "final weighted factor", stacklevel=3)
        self._theta_lower = theta_lower([t.p for t in design.terms])
        if fam.name == "binomial":
            extreme = (self._mu < 1e-8) | (self._mu > 1 - 1e-8)
            if extreme.any():
                warnings.warn(
                    f"fitted probabilities numerically 0 or 1 occurred for {int(extreme.sum())} "
                    "observation(s): possible complete separation; estimates of the affected "
                    "fixed effects are unreliable", stacklevel=3)

    # The covariances from the final weighted factor, built on first use: with a
    # positive-definite Hessian most fits never read them.
    @functools.cached_property
    def _condvar(self) -> list[np.ndarray]:
        return [self.sigma**2 * np.asarray(m) for m in self._unscaled_condvar]

    @functools.cached_property
    def _vcov_factor(self) -> np.ndarray:
        return self.sigma**2 * self._fixed.cov_from_scaled(self._unscaled_vcov)

    @property
    def _vcov_array(self) -> np.ndarray:
        return self._vcov_factor if self._vcov_hessian is None else self._vcov_hessian

    @functools.cached_property
    def vcov_factor(self) -> pd.DataFrame:
        """The fixed effects' covariance from the final weighted Cholesky factor."""
        return self._labelled(self._vcov_factor)

    @functools.cached_property
    def vcov_hessian(self) -> pd.DataFrame | None:
        """The fixed effects' covariance from the Hessian of the stage-2 objective (None
        without one, or when it is not positive definite)."""
        return None if self._vcov_hessian is None else self._labelled(self._vcov_hessian)

    @functools.cached_property
    def varcorr(self) -> VarCorr:
        return VarCorr(_varcorr_terms(self.design, self.theta, self.sigma**2),
                       self.sigma if self._fam.has_scale else None)

    def _labelled(self, V: np.ndarray) -> pd.DataFrame:
        names = self.design.fixed_names
        return pd.DataFrame(V, index=names, columns=names)

    @property
    def has_scale(self) -> bool:
        return self._fam.has_scale

    def objective(self, par) -> float:
        """The stage-2 objective at fixed ``(theta, beta)`` (lme4's devfun scale: Laplace on the
        aic scale, AGQ on the unit-deviance scale)."""
        par = np.asarray(par, dtype=float)
        nt = len(self.theta)
        u0, ghz, ghw = self._stage2_args
        beta_s = self._fixed.to_scaled(par[nt:])
        val = self._prob.stage2(par[:nt], beta_s, u0, max(self.nagq, 1), ghz, ghw)
        # restore the state at the optimum for later accessors
        self._prob.stage2(self.theta, self._beta_scaled, u0, max(self.nagq, 1), ghz, ghw)
        return float(val)

    def _inverse_link(self, eta):
        return self._fam.linkinv(np.asarray(eta))

    def fitted(self) -> pd.Series:
        """Fitted means (response scale)."""
        return pd.Series(self._mu, index=self.design.index, name="fitted")

    def residuals(self, type: str = "deviance", scaled: bool = False) -> pd.Series:
        """``type``: "deviance" (default, as lme4), "pearson", "response" or "working"."""
        y, mu, pw = self._y, self._mu, self._pw
        if type == "response":
            r = y - mu
        elif type == "pearson":
            r = (y - mu) * np.sqrt(pw / self._fam.variance(mu))
        elif type == "deviance":
            d = self._fam.dev_resids(y, mu, pw)
            r = np.sign(y - mu) * np.sqrt(np.maximum(d, 0))
        elif type == "working":
            r = (y - mu) / self._fam.mu_eta(self._eta)
        else:
            raise ValueError(f"unknown residual type {type!r}; use deviance, pearson, response or working")
        if scaled:
            r = r / self.sigma
        return pd.Series(r, index=self.design.index, name="residuals")

    def refit_ml(self):
        return self
