"""``lmer``: a recipe of parse, design, problem, optimize, result. No arithmetic here."""

from __future__ import annotations

import warnings

import numpy as np

from . import _core
from ._design import build_design
from ._errors import ConvergenceError, NumericalError, numerical_failures_explained
from ._standardize import ScaledLmmProblem, check_predictor_scales
from .optimize import (bobyqa, minimize_theta, report_convergence, snap_to_boundary,
                       theta_lower, theta_start)
from .dask import is_dask_frame
from .options import Control, check_bool, start_vector
from .results import LmerResult

__all__ = ["lmer", "make_problem"]


def make_problem(design, y=None, weights=None) -> "_core.LmmProblem":
    """The core problem for a design (arrays passed without copies)."""
    terms = [(t.codes, t.nlevels, t.Z) for t in design.terms]
    prob = _core.LmmProblem(design.X, terms)
    if y is not None:
        prob.set_response(y, weights)
    return prob


def _use_gradient(design, control) -> bool:
    """The gradient path pays when a gradient is cheap or an evaluation expensive (see
    Control.optimizer). A one-term model's exact gradient comes from A's per-level blocks at
    about the cost of an evaluation, and Newton needs ~3x fewer evaluations than BOBYQA (and
    NLopt's own arithmetic is a third of a small fit's BOBYQA): always. Otherwise an LMM
    evaluation never touches the n rows: its cost is the dense rest block's factorization
    (m^3 / 3, m = random effects outside the first term + p + 1) and the coupling downdate
    (at most q_0 m); below ~2e6 flops it takes microseconds, and BOBYQA's extra evaluations
    cost less than the row-wise gradient."""
    if control.optimizer != "auto":
        return control.optimizer == "gradient"
    if len(design.terms) == 1:
        # Newton stops closer to the optimum than BOBYQA's ftol_abs: a last printed digit can
        # differ from lme4's, and lme4's criterion is then lower at our theta than at its own
        # (tests/reference/check_lmm_optimum.R); control={"optimizer": "bobyqa"} takes
        # lme4's steps exactly.
        return True
    q0 = design.terms[0].nlevels * design.terms[0].p
    m = sum(t.nlevels * t.p for t in design.terms[1:]) + design.p + 1
    return m**3 / 3.0 + q0 * m >= 2.0e6


def lmer(formula: str, data, *, reml: bool = True, weights=None, offset=None, control=None,
         data_name: str | None = None, progress: bool = True) -> LmerResult:
    """Fit a linear mixed model with lme4's formula syntax.

    Parameters
    ----------
    formula : str
        e.g. ``"Reaction ~ Days + (Days | Subject)"``; bar terms ``(x | g)``, ``(0 + x | g)``,
        ``(x || g)``, ``(1 | a/b)``, ``(1 | a:b)``; ``offset(z)``; the rest is formulaic's syntax.
    data : pandas or polars DataFrame (not modified).
    reml : REML (default) or maximum likelihood.
    weights : column name or vector of positive prior weights, shape (n,).
    offset : column name or vector, shape (n,), added to the linear predictor.
    control : :class:`mixedfit.Control` or dict of its fields.
    progress : for a Dask DataFrame (fitted where it lies, see :mod:`mixedfit.dask`), show a
        progress bar over the passes.
    """
    if is_dask_frame(data):
        from .dask import lmer_dask

        return lmer_dask(formula, data, reml=reml, weights=weights, offset=offset,
                         control=control, data_name=data_name, progress=progress)
    control = Control.coerce(control)
    reml = check_bool(reml, "reml")
    call = dict(formula=formula, data=data, weights=weights, offset=offset, control=control,
                data_name=data_name)
    design = build_design(formula, data, weights=weights, offset=offset, lmm=True)
    if design.n_dropped_na:
        warnings.warn(f"dropped {design.n_dropped_na} row(s) with missing values", stacklevel=2)
    if design.p == 0:
        reml = False  # no fixed effects: the REML criterion is the ML deviance; lme4 reports ML
    y = design.y if design.offset is None else np.ascontiguousarray(design.y - design.offset)
    check_predictor_scales(design.X, stacklevel=2)
    prob = ScaledLmmProblem(design, y, design.weights, design.parsed.response)
    opt, sol = fit_problem(prob, design, reml, control)
    report_convergence(opt, [t.p for t in design.terms], control, stacklevel=2)
    return LmerResult(design, prob, reml, opt.x, opt, sol, control,
                      data_name if data_name is not None else "data", call)


def fit_problem(prob, design, reml, control):
    """(optimizer result, solution at its theta) for a standardized LMM problem, from the
    control's start or lme4's."""
    ps = [t.p for t in design.terms]
    x0 = start_vector(control, theta_lower(ps).size, "theta")
    x0 = theta_start(ps) if x0 is None else x0
    with numerical_failures_explained(_NUMERICAL_ADVICE):
        opt = _optimize(prob, design, ps, x0, reml, control)
        sol = prob.solution(opt.x)
    return opt, sol


def _optimize(prob, design, ps, x0, reml, control):
    """Minimize the criterion over theta on the standardized problem (the same numbers for
    y, a + c y and any reparametrization of X), then report it in the data's units."""
    core, reml = prob.core, bool(reml)  # the optimizers call the core's methods directly

    def f(th):
        try:
            return core.objective(th, reml)
        except NumericalError:  # a point the factorization cannot take: not a minimum
            return np.inf

    # A sparse rest block (several large grouping factors) has no gradient: lme4's BOBYQA path.
    if _use_gradient(design, control) and not core.rest_sparse:
        opt = minimize_theta(lambda th: core.objective_grad(th, reml), f, x0, ps, control,
                             newton_run=lambda start: core.newton(start, reml))
        if len(ps) == 1:
            # A one-term model's gradient path computes the criterion from A's per-level
            # blocks, not from the factor as `objective` does (several terms share that one
            # computation): report objective's value, which a copy of the fit answers too.
            at_optimum = f(opt.x)
            if np.isfinite(at_optimum):
                opt.fun = at_optimum
    else:  # the core runs BOBYQA itself (or NLopt calls the core's method through one closure)
        opt = bobyqa(core.objective, x0, theta_lower(ps), control, args=(reml,),
                     failures=(NumericalError,), in_core=core.bobyqa)
    snap_to_boundary(f, opt, ps)
    if not np.isfinite(opt.fun):
        raise ConvergenceError("the criterion could not be evaluated at any theta the "
                               f"optimizer tried; {_NUMERICAL_ADVICE}")
    opt.fun += prob.offset(reml)
    return opt


_NUMERICAL_ADVICE = ("check the fixed effects for collinear columns, try a simpler "
                     "random-effects structure, or control={'optimizer': 'bobyqa'}")
