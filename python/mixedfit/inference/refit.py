"""The same model fitted to a new response (lme4's ``refit``), reusing the design (X, Z,
level codes) and, for an LMM, the core problem and its symbolic analysis: a new response
changes only the y parts of A = [Z X y]' W [Z X y]. Each refit starts at the original
estimates, which is where a response simulated from the fit puts the optimum near."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd

from .. import _core
from .._errors import ConvergenceError, DataError, NumericalError
from ..families import check_response
from ..optimize import OptResult, bobyqa, theta_lower

__all__ = ["LmmRefitter", "GlmmRefitter", "refitter_for", "refit", "check_new_response"]


def check_new_response(fit, newresp) -> np.ndarray:
    """The new response as a float vector of the fit's length (a Series, array, or a
    one-column DataFrame such as ``fit.simulate()``)."""
    if isinstance(newresp, pd.DataFrame):
        if newresp.shape[1] != 1:
            raise ValueError(f"newresp must be one response; got a frame with {newresp.shape[1]} columns")
        newresp = newresp.iloc[:, 0]
    y = np.asarray(newresp, dtype=float).reshape(-1) if np.ndim(newresp) else np.array([newresp], float)
    if y.size != fit.design.n:
        raise ValueError(f"newresp must have {fit.design.n} values (the fitted rows), got {y.size}")
    if not np.all(np.isfinite(y)):
        raise DataError("newresp has non-finite values")
    return np.ascontiguousarray(y)


class LmmRefitter:
    """An LMM problem of the fit's design that takes one new response after another."""

    def __init__(self, fit):
        from ..lmm import make_problem

        self.fit = fit
        self.design = fit.design
        self.prob = make_problem(fit.design)
        self.lower = theta_lower([t.p for t in fit.design.terms])
        # Start each search at the original estimate with a trust region a tenth of lme4's.
        self.step = np.full(fit.theta.size, 0.1)
        self.y = np.empty(fit.design.n)

    def optimize(self, y: np.ndarray) -> tuple[OptResult, dict]:
        # One response buffer for the problem's life: the core keeps a reference to each
        # array it is given, so a new array per response would accumulate.
        np.subtract(y, 0.0 if self.design.offset is None else self.design.offset, out=self.y)
        self.prob.set_response(self.y, self.design.weights)
        reml, prob = self.fit.reml, self.prob
        start = np.maximum(self.fit.theta, self.lower)
        opt = bobyqa(lambda th: prob.objective(th, reml), start, self.lower, self.fit.control,
                     initial_step=self.step)
        return opt, prob.solution(opt.x)

    def estimates(self, y: np.ndarray):
        """(theta, beta, sigma, converged) for response y (the bootstrap's fast path)."""
        opt, sol = self.optimize(y)
        d = self.design
        dof = d.n - d.p if self.fit.reml else d.n
        sigma = float(np.sqrt(sol["pwrss"] / dof))
        return opt.x, np.asarray(sol["beta"]), sigma, opt.converged

    def refit(self, y: np.ndarray):
        """A full LmerResult for response y (the refitter's problem then belongs to it)."""
        from ..results import LmerResult

        opt, sol = self.optimize(y)
        fit = self.fit
        if not opt.converged:
            warnings.warn(f"optimizer did not converge: {opt.message}", stacklevel=3)
        design = _design_with_response(self.design, y)
        return LmerResult(design, self.prob, fit.reml, opt.x, opt, sol, fit.control,
                          fit.data_name, fit._call)


class GlmmRefitter:
    """A GLMM fit's recipe (PIRLS problem, stage 2 from the original estimates) for new
    responses. The PIRLS problem is built per response: the core takes y at construction."""

    def __init__(self, fit, vcov_method: str | None = None):
        self.fit = fit
        self.vcov_method = vcov_method or fit._call.get("vcov_method", "hessian")

    def _fit_parts(self, y: np.ndarray):
        from ..glmm import _stage1, _stage2

        fit, d, fam = self.fit, self.fit.design, self.fit._fam
        check_response(fam, y * (fit._pw if fam.name == "binomial" else 1.0), fit.response_name)
        terms = [(t.codes, t.nlevels, t.Z) for t in d.terms]
        # The fit's core works on the scaled fixed-effect columns (fit._fixed); so does this one.
        prob = _core.GlmmProblem(fit._fixed.Xs, y, fit._pw, d.offset, terms, *fam.core_args)
        prob.set_pirls_control(fit.control.pirls_tol, fit.control.pirls_maxiter)
        failures: list[str] = []
        ps = [t.p for t in d.terms]
        _, ghz, ghw = fit._stage2_args
        if fit.nagq == 0:
            control = dataclasses.replace(fit.control, start=tuple(fit.theta))
            opt1, eta0 = _stage1(prob, fam, d, y, fit._pw, 0, control, failures)
            st = prob.state_at(opt1.x)
            obj = prob.stage1(opt1.x, eta0)
            return prob, opt1, opt1, st, obj, None, np.ascontiguousarray(st["u"])
        eta0 = np.ascontiguousarray(fam.linkfun(fam.mustart(y, fit._pw)))
        opt1 = OptResult(x=fit.theta.copy(), fun=np.nan, nevals=0, message="original estimates",
                         converged=True)
        control = dataclasses.replace(fit.control, start=tuple(np.r_[fit.theta, fit.beta]))
        opt, st, obj, hess, u0 = _stage2(prob, fam, ps, opt1, eta0, y, fit.nagq, ghz, ghw,
                                         control, self.vcov_method, failures, fit._fixed)
        return prob, opt1, opt, st, obj, hess, u0

    def estimates(self, y: np.ndarray):
        prob, _, opt, st, _, _, _ = self._fit_parts(y)
        nt = self.fit.theta.size
        theta = opt.x[:nt]
        beta_s = opt.x[nt:] if opt.x.size > nt else np.asarray(st["beta"])
        beta = self.fit._fixed.from_scaled(beta_s)
        sigma = (float(np.sqrt((st["pearson"] + st["ussq"]) / self.fit.design.n))
                 if self.fit.has_scale else 1.0)
        return theta, beta, sigma, opt.converged

    def refit(self, y: np.ndarray):
        from ..glmm import GlmerResult

        fit = self.fit
        prob, opt1, opt, st, obj, hess, u0 = self._fit_parts(y)
        nt = fit.theta.size
        beta = opt.x[nt:] if opt.x.size > nt else np.asarray(st["beta"])
        if not opt.converged:
            warnings.warn(f"optimizer did not converge: {opt.message}", stacklevel=3)
        _, ghz, ghw = fit._stage2_args
        design = _design_with_response(fit.design, y)
        return GlmerResult(design, prob, fit._fam, fit.nagq, opt.x[:nt], beta, obj, st, hess,
                           opt, opt1, fit.control, fit.data_name, fit._call, y, fit._pw,
                           (u0, ghz, ghw), fit._fixed)


def _design_with_response(design, y: np.ndarray):
    response = pd.Series(y, index=design.index, name=design.parsed.response)
    return dataclasses.replace(design, y=y, response=response)


def refitter_for(fit, **kwargs):
    return GlmmRefitter(fit, **kwargs) if getattr(fit, "is_glmm", False) else LmmRefitter(fit)


def refit(fit, newresp):
    """``fit`` refitted to the response ``newresp`` (same rows; binomial: proportions of the
    fit's trials, as ``fit.simulate()`` gives them)."""
    y = check_new_response(fit, newresp)
    try:
        return refitter_for(fit).refit(y)
    except NumericalError as exc:
        raise ConvergenceError(f"refit failed: {exc}") from exc
