"""The outer optimizers: NLopt's BOBYQA with lme4's settings, and for objectives with an
exact gradient modified Newton steps (SciPy's L-BFGS-B as their fallback). The core runs both
loops itself where it can (LmmProblem.bobyqa and .newton, GlmmProblem.newton); the Python
versions here are the same rules, for the objectives that live in Python."""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import nlopt
import numpy as np

from . import _core
from ._errors import ConvergenceWarning, SingularFitWarning
from .options import Control

__all__ = ["OptResult", "bobyqa", "report_convergence", "lbfgsb", "minimize_theta",
           "nlopt_in_core", "newton", "on_bound", "positive_diagonal", "snap_to_boundary",
           "theta_lower", "theta_start"]


@dataclass
class OptResult:
    """What an optimizer run ended with. ``method``: the optimizer whose point was kept
    (``"nloptwrap"`` is NLopt's BOBYQA with lme4's settings, as lme4 names it); ``code``:
    0 when it converged, otherwise the optimizer's own code (NLopt's, e.g. 5 for maxeval)."""
    x: np.ndarray
    fun: float
    nevals: int
    message: str
    converged: bool
    method: str = "nloptwrap"
    code: int = 0


def theta_lower(ps: list[int]) -> np.ndarray:
    """Lower bounds: 0 on the diagonal of each lambda template, -inf off it (lme4's order)."""
    return _template_entries(tuple(ps), 0.0, -np.inf).copy()


@functools.lru_cache(maxsize=64)
def _template_entries(ps: tuple, diagonal: float, off_diagonal: float) -> np.ndarray:
    """One value per theta entry: ``diagonal`` on the templates' diagonals, ``off_diagonal``
    below them (lme4's order, column by column); built once per shape (callers copy)."""
    return np.array([diagonal if i == j else off_diagonal
                     for p in ps for j in range(p) for i in range(j, p)], dtype=float)


def lambda_blocks(theta: np.ndarray, ps: list[int]) -> list[np.ndarray]:
    """Each term's lower-triangular relative factor Lambda_k (p_k x p_k) from theta, whose
    entries run down each column of the lower triangle in turn (lme4's order)."""
    out, pos = [], 0
    for p in ps:
        cols, rows = np.triu_indices(p)       # (column, row) pairs ordered column by column
        lam = np.zeros((p, p))
        lam[rows, cols] = theta[pos:pos + rows.size]
        out.append(lam)
        pos += rows.size
    return out


def theta_start(ps: list[int]) -> np.ndarray:
    """Start: 1 on the diagonal, 0 off it."""
    return _template_entries(tuple(ps), 1.0, 0.0).copy()


_RESULTS = {
    nlopt.SUCCESS: "success",
    nlopt.STOPVAL_REACHED: "stopval reached",
    nlopt.FTOL_REACHED: "ftol reached",
    nlopt.XTOL_REACHED: "xtol reached",
    # lme4 passes on the text of R's nloptr for a run that stopped early.
    nlopt.MAXEVAL_REACHED: ("NLOPT_MAXEVAL_REACHED: Optimization stopped because maxeval "
                            "(above) was reached."),
    nlopt.MAXTIME_REACHED: ("NLOPT_MAXTIME_REACHED: Optimization stopped because maxtime "
                            "(above) was reached."),
}


def bobyqa(fun, x0: np.ndarray, lower: np.ndarray, control: Control,
           initial_step: np.ndarray | None = None, args: tuple = (),
           failures: tuple = (), in_core=None) -> OptResult:
    """Minimize ``fun(x, *args)`` from ``x0`` within box bounds ``lower`` (upper unbounded).

    ``initial_step``: per-parameter initial trust-region steps (NLopt's default otherwise).
    ``failures``: exception classes that mean "no value here" (the point counts as +inf).
    ``in_core``: the core's method that runs this same BOBYQA on ``fun`` without calling
    back into Python (``LmmProblem.bobyqa``), used when NLopt's C API could be loaded into the
    core (:func:`nlopt_in_core`); same algorithm and settings, so the same steps and result.
    Otherwise NLopt calls one closure per evaluation, which calls ``fun`` (a core method can be
    passed as it is).
    """
    x0 = np.asarray(x0, dtype=float)
    lb = np.where(np.isfinite(lower), lower, -np.inf)
    step = None if initial_step is None else np.asarray(initial_step, dtype=float)
    if in_core is not None and nlopt_in_core():
        x, fx, nevals, res = in_core(np.maximum(x0, lb), lb, *args, control.ftol_abs,
                                     control.xtol_abs, control.maxeval, step)
        return _bobyqa_result(np.asarray(x), float(fx), int(nevals), int(res))
    best = [np.inf, np.maximum(x0, lb)]
    inf = np.inf

    def f(x, grad):
        try:
            v = fun(x, *args)
        except failures:
            return inf
        if not -inf < v < inf:  # NaN and -inf are no minimum either
            return inf
        if v < best[0]:
            best[0] = v
            best[1] = x.copy()
        return v

    opt = nlopt.opt(nlopt.LN_BOBYQA, x0.size)
    opt.set_min_objective(f)
    opt.set_lower_bounds(lb)
    opt.set_ftol_abs(control.ftol_abs)
    opt.set_xtol_abs(control.xtol_abs)
    opt.set_maxeval(control.maxeval)
    if step is not None:
        opt.set_initial_step(step)
    try:
        x = opt.optimize(np.maximum(x0, lb))
        fx, res = opt.last_optimum_value(), opt.last_optimize_result()
    except nlopt.RoundoffLimited:
        x, fx, res = best[1], best[0], nlopt.ROUNDOFF_LIMITED
    if best[0] < fx:
        x, fx = best[1], best[0]
    return _bobyqa_result(np.asarray(x), float(fx), opt.get_numevals(), res)


def _bobyqa_result(x: np.ndarray, fx: float, nevals: int, res: int) -> OptResult:
    """The OptResult of a BOBYQA run that ended with NLopt's result code ``res`` at the best
    point ``x`` (value ``fx``). Stopping on rounding counts as converged, as in lme4."""
    if res == nlopt.ROUNDOFF_LIMITED:
        msg, conv = "roundoff limited", True
    else:
        msg = _RESULTS.get(res, f"nlopt code {res}")
        conv = res > 0 and res not in (nlopt.MAXEVAL_REACHED, nlopt.MAXTIME_REACHED)
    return OptResult(x=x, fun=fx, nevals=nevals, message=msg, converged=conv,
                     method="nloptwrap", code=0 if conv else int(res))


@functools.lru_cache(maxsize=1)
def nlopt_in_core() -> bool:
    """Whether the core can run NLopt's BOBYQA itself: the ``nlopt`` package's extension
    exports NLopt's C API, which the core then resolves by name (once per process)."""
    try:
        _core.load_nlopt(nlopt._nlopt.__file__, int(nlopt.LN_BOBYQA))
    except (ImportError, AttributeError, OSError):
        return False
    return True


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

    from scipy.optimize import minimize  # imported on first use: most fits never need it

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
    return OptResult(x=best[1], fun=float(best[0]), nevals=count[0], message=msg,
                     converged=conv, method="L-BFGS-B", code=0 if conv else 1)


def _projected_gradient_small(x, g, lower, f) -> bool:
    """Stationary to rounding: L-BFGS-B's line search can fail there without being wrong."""
    pg = np.where((x <= lower) & (g > 0), 0.0, g)
    return bool(np.max(np.abs(pg)) <= 1e-5 * max(1.0, abs(f)) ** 0.5)


def on_bound(x: np.ndarray, lower: np.ndarray) -> bool:
    """Some bounded entry sits exactly on its bound."""
    fin = np.isfinite(lower)
    return bool((x[fin] <= lower[fin]).any())


def positive_diagonal(par: np.ndarray, ps: list[int]) -> np.ndarray:
    """Flip the sign of every template column whose diagonal entry is negative (theta first
    in ``par``, lme4's order): Lambda -> Lambda D with D = diag(+-1) leaves the model as it is."""
    out = np.array(par, dtype=float)
    pos = 0
    for p in ps:
        for j in range(p):
            ncol = p - j
            if out[pos] < 0:
                out[pos:pos + ncol] = -out[pos:pos + ncol]
            pos += ncol
    return out


def newton(fg, x0: np.ndarray, lower: np.ndarray, maxit: int = 100, max_step: float = 0.25,
           start_hessian: np.ndarray | None = None, curvature: list | None = None):
    """Minimize a smooth objective with an exact gradient from a reasonable start: Newton
    steps on a Hessian from forward differences of the exact gradient (or ``start_hessian``),
    kept current by BFGS updates, with a backtracking line search. Returns (x, f, nevals) or
    None when it cannot go on (no positive curvature, a step into a bound, a failed search);
    the caller then takes the general path. On convergence the final curvature model is
    appended to ``curvature`` if given. (The core's newton_minimize follows the same rules.)"""
    k = x0.size
    f, g = fg(x0)
    nev = 1
    x = x0.copy()
    if start_hessian is not None:
        H = np.array(start_hessian, dtype=float)
    else:
        H = np.empty((k, k))
        delta = 1e-4
        for j in range(k):
            e = np.zeros(k)
            e[j] = delta
            H[:, j] = (fg(x + e)[1] - g) / delta
        nev += k
        H = 0.5 * (H + H.T)
    for _ in range(maxit):
        # Modified Newton: negative curvature (far from the optimum, e.g. at the start of
        # stage 1) is turned positive, so the step is always a descent direction.
        lam, V = np.linalg.eigh(H)
        # (ndarray methods: numpy's function wrappers cost more than these tiny reductions)
        big = np.abs(lam).max() if lam.size else 0.0
        if not np.isfinite(lam).all() or not big > 0:
            return None
        lam = np.maximum(np.abs(lam), 1e-8 * big)
        p = -(V @ ((V.T @ g) / lam))
        # A step far beyond the start's scale comes from a poor curvature model (the
        # objective is not convex far from its minimum): cap it.
        cap = max_step * max(1.0, float(np.abs(x).max()))
        pmax = float(np.abs(p).max())
        if pmax > cap:
            p = p * (cap / pmax)
        dec = -float(g @ p)  # Newton decrement squared: ~2 (f - min f)
        if dec < max(1e-9, 1e-13 * abs(f)):
            if curvature is not None:
                curvature.append(H)
            return x, f, nev
        t = 1.0
        while True:
            xn = x + t * p
            if (xn < lower).any():
                return None
            fn, gn = fg(xn)
            nev += 1
            # Armijo, or (close to the optimum, where f's rounding hides the decrease) a
            # step the quadratic model trusts that does not increase f beyond rounding.
            if fn <= f + 1e-4 * t * float(g @ p) or (
                    t == 1.0 and dec < 1e-4 and fn <= f + 1e-9 * max(1.0, abs(f))):
                break
            t *= 0.5
            if t < 1e-6:
                return None
        sv, yv = xn - x, gn - g
        sy = float(sv @ yv)
        if sy > 0:
            Hs = H @ sv
            H = H - np.outer(Hs, Hs) / float(sv @ Hs) + np.outer(yv, yv) / sy
        x, f, g = xn, fn, gn
    return None


def snap_to_boundary(fun, opt: OptResult, ps: list[int], tiny: float = 1e-4) -> None:
    """A gradient search approaches a minimum on the boundary (a variance of 0) only
    asymptotically; put tiny diagonal entries on 0, as lme4 reports them, where that does not
    raise the objective beyond rounding. Changes ``opt`` in place (theta first in ``opt.x``)."""
    diag = []
    pos = 0
    for p in ps:
        for j in range(p):
            diag.append(pos)
            pos += p - j
    small = [i for i in diag if 0 < opt.x[i] < tiny]
    if not small:
        return
    x = opt.x.copy()
    x[small] = 0.0
    try:
        f0 = float(fun(x))
    except Exception:  # noqa: BLE001 - keep the interior point
        return
    opt.nevals += 1
    if np.isfinite(f0) and f0 <= opt.fun + 1e-10 * max(1.0, abs(opt.fun)):
        opt.x, opt.fun = x, min(f0, opt.fun)


def minimize_theta(fun_grad, fun, start: np.ndarray, ps: list[int], control: Control,
                   initial_step=None, newton_run=None) -> OptResult:
    """Minimize a profiled objective over theta -- or (theta, beta), theta first, beta
    unbounded -- with its exact gradient.

    The search runs unbounded: the objective is even in each column of a term's template
    (Lambda -> Lambda D, D = diag(+-1)), so a diagonal entry may cross 0 and is mapped back to
    >= 0 afterwards. (With a bound the search would stop on it, where the gradient of that
    entry vanishes by the same symmetry whether or not 0 is the minimum.) Modified Newton
    first, L-BFGS-B if Newton cannot go on; a run that fails, or ends exactly on 0, is
    replaced by lme4's derivative-free path (BOBYQA on ``fun`` from ``start``, with
    ``initial_step`` if given: the steps, or a function giving them, called only then).
    ``newton_run(start) -> (x, f, nevals, converged)`` runs the Newton stage instead of
    :func:`newton` on ``fun_grad`` (the core's own loop, with the same rules).
    """
    start = np.asarray(start, dtype=float)
    free = np.full(start.size, -np.inf)
    if newton_run is not None:
        x, f, nevals, converged = newton_run(start)
        res = (x, f, nevals) if converged else None
    else:
        try:
            res = newton(fun_grad, start, free)
        except Exception:  # a failed evaluation far from the optimum: try the other methods
            res = None
    if res is not None:
        opt = OptResult(x=res[0], fun=float(res[1]), nevals=res[2], message="Newton converged",
                        converged=True, method="Newton")
    else:
        opt = lbfgsb(fun_grad, start, free, control)
    opt.x = positive_diagonal(opt.x, ps)
    lower = theta_lower(ps)  # beta, after theta, is unbounded
    if not opt.converged or on_bound(opt.x[:lower.size], lower):
        # Failed, or stopped exactly on 0 (where that entry's gradient vanishes whatever
        # the curvature): lme4's path decides.
        steps = initial_step() if callable(initial_step) else initial_step
        lower = np.concatenate([lower, free[lower.size:]])
        again = bobyqa(fun, start, lower, control, initial_step=steps)
        again.nevals += opt.nevals
        if again.fun <= opt.fun or not opt.converged:
            opt = again
    snap_to_boundary(fun, opt, ps)
    return opt


def singular_entries(theta: np.ndarray, ps: list[int], tol: float) -> np.ndarray:
    """Mask of the theta entries (theta first in the vector) that are variance parameters
    within ``tol`` of their bound 0 (lme4's isSingular)."""
    lower = theta_lower(ps)
    return (lower == 0) & (np.asarray(theta, dtype=float)[: lower.size] < tol)


def report_convergence(opt: OptResult, ps: list[int], control: Control,
                       stacklevel: int = 2) -> None:
    """Warn at fit time as lme4 does: a run that stopped before converging (with the
    optimizer's code and message) and a fit on the boundary of the parameter space."""
    if not opt.converged:
        warnings.warn(ConvergenceWarning(
            f"convergence code {opt.code} from {opt.method}: {opt.message}; the estimates are "
            "where the optimizer stopped, not a verified optimum (raise control maxeval, or "
            "rescale the predictors)"), stacklevel=stacklevel + 1)
    if singular_entries(opt.x, ps, control.singular_tol).any():
        warnings.warn(SingularFitWarning("boundary (singular) fit: see help('isSingular')"),
                      stacklevel=stacklevel + 1)
