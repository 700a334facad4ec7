"""The outer optimizers: NLopt's BOBYQA with lme4's settings, and SciPy's L-BFGS-B for
objectives with an exact gradient."""

from __future__ import annotations

from dataclasses import dataclass

import nlopt
import numpy as np
from scipy.optimize import minimize

from .options import Control

__all__ = ["OptResult", "bobyqa", "lbfgsb", "theta_lower", "theta_start"]


@dataclass
class OptResult:
    x: np.ndarray
    fun: float
    nevals: int
    message: str
    converged: bool


def theta_lower(ps: list[int]) -> np.ndarray:
    """Lower bounds: 0 on the diagonal of each lambda template, -inf off it (lme4's order)."""
    lb = []
    for p in ps:
        for j in range(p):
            for i in range(j, p):
                lb.append(0.0 if i == j else -np.inf)
    return np.array(lb)


def theta_start(ps: list[int]) -> np.ndarray:
    """Start: 1 on the diagonal, 0 off it."""
    st = []
    for p in ps:
        for j in range(p):
            for i in range(j, p):
                st.append(1.0 if i == j else 0.0)
    return np.array(st)


_RESULTS = {
    nlopt.SUCCESS: "success",
    nlopt.STOPVAL_REACHED: "stopval reached",
    nlopt.FTOL_REACHED: "ftol reached",
    nlopt.XTOL_REACHED: "xtol reached",
    nlopt.MAXEVAL_REACHED: "maximum number of evaluations reached",
    nlopt.MAXTIME_REACHED: "maximum time reached",
}


def bobyqa(fun, x0: np.ndarray, lower: np.ndarray, control: Control,
           initial_step: np.ndarray | None = None) -> OptResult:
    """Minimize ``fun`` from ``x0`` within box bounds ``lower`` (upper unbounded).

    ``initial_step``: per-parameter initial trust-region steps (NLopt's default otherwise).
    """
    x0 = np.asarray(x0, dtype=float)
    k = x0.size
    count = [0]
    best = [np.inf, x0.copy()]

    def f(x, grad):
        count[0] += 1
        v = float(fun(x))
        if not np.isfinite(v):
            v = np.inf
        if v < best[0]:
            best[0] = v
            best[1] = x.copy()
        return v

    opt = nlopt.opt(nlopt.LN_BOBYQA, k)
    opt.set_min_objective(f)
    lb = np.where(np.isfinite(lower), lower, -np.inf)
    opt.set_lower_bounds(lb)
    opt.set_ftol_abs(control.ftol_abs)
    opt.set_xtol_abs(control.xtol_abs)
    opt.set_maxeval(control.maxeval)
    if initial_step is not None:
        opt.set_initial_step(np.asarray(initial_step, dtype=float))
    try:
        x = opt.optimize(np.maximum(x0, lb))
        res = opt.last_optimize_result()
        msg = _RESULTS.get(res, f"nlopt code {res}")
        fx = opt.last_optimum_value()
        conv = res > 0 and res != nlopt.MAXEVAL_REACHED
    except nlopt.RoundoffLimited:
        x, fx, msg, conv = best[1], best[0], "roundoff limited", True
    if best[0] < fx:
        x, fx = best[1], best[0]
    return OptResult(x=np.asarray(x), fun=float(fx), nevals=count[0], message=msg, converged=conv)



class _Abort(Exception):
    """Raised inside L-BFGS-B's callback when the objective cannot be evaluated."""


def lbfgsb(fun_grad, x0: np.ndarray, lower: np.ndarray, control: Control) -> OptResult:
    """Minimize ``fun_grad(x) -> (value, gradient)`` from ``x0`` within the lower bounds.

    Stops when the relative decrease falls below ~1e-15 or the projected gradient below 1e-8
    (relative to the objective's size). An evaluation that fails (``fun_grad`` raising, or a
    non-finite value) ends the run: ``converged`` is then False and ``x`` is the best point
    seen, for the caller to continue from with a derivative-free method.
    """
    x0 = np.asarray(x0, dtype=float)
    count = [0]
    best = [np.inf, x0.copy(), None]

    def fg(x):
        count[0] += 1
        try:
            v, g = fun_grad(x)
        except Exception as exc:  # a PIRLS failure far from the optimum
            raise _Abort(str(exc)) from None
        v = float(v)
        g = np.asarray(g, dtype=float)
        if not (np.isfinite(v) and np.all(np.isfinite(g))):
            raise _Abort("non-finite objective or gradient")
        if v < best[0]:
            best[0], best[1], best[2] = v, x.copy(), g.copy()
        return v, g

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    x_start = np.maximum(x0, np.where(np.isfinite(lower), lower, -np.inf))
    try:
        f0, _ = fg(x_start)
        res = minimize(fg, x_start, jac=True, method="L-BFGS-B", bounds=bounds,
                       options=dict(maxiter=control.maxeval, maxfun=control.maxeval,
                                    ftol=1e-15, gtol=1e-8 * max(1.0, abs(f0)), maxcor=20))
        msg = str(res.message)
        conv = bool(res.success)
        if not conv and "ABNORMAL" in msg.upper() and best[2] is not None:
            # The line search gave up: at the optimum, rounding in the objective does that.
            conv = _projected_gradient_small(best[1], best[2], lower, best[0])
    except _Abort as exc:
        msg, conv = f"evaluation failed: {exc}", False
    return OptResult(x=best[1], fun=float(best[0]), nevals=count[0], message=msg, converged=conv)


def _projected_gradient_small(x, g, lower, f) -> bool:
    """Stationary to rounding: L-BFGS-B's line search can fail there without being wrong."""
    pg = np.where((x <= lower) & (g > 0), 0.0, g)
    return bool(np.max(np.abs(pg)) <= 1e-5 * max(1.0, abs(f)) ** 0.5)
