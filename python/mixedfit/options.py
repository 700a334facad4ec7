"""Options: one keyword-only control object, validated in one place."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ._errors import DataError

__all__ = ["Control", "check_bool", "start_vector"]


def check_bool(value, name: str) -> bool:
    """``value`` if it is a boolean (Python's or NumPy's); anything else -- ``"no"``, 0, None --
    is refused, since ``bool("no")`` is True and a silent REML fit is not what was asked."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise DataError(f"{name} must be True or False, got {value!r}")


def start_vector(control: "Control", size: int, what: str) -> np.ndarray | None:
    """``control.start`` as a float vector of ``size`` entries, or None when not given."""
    if control.start is None:
        return None
    x0 = np.asarray(control.start, dtype=float)
    if x0.shape != (size,):
        raise DataError(f"control.start must have length {size} ({what}), got {x0.size}")
    return x0


@dataclass(frozen=True)
class Control:
    """Optimizer and algorithm settings (lme4's defaults).

    optimizer : ``"auto"`` (default), ``"gradient"`` or ``"bobyqa"``. ``"gradient"`` uses the
        objective's exact gradient where the core has it -- every LMM, and GLMMs with a
        canonical link (binomial-logit, Poisson-log) fitted by Laplace or nAGQ = 0: modified
        Newton steps on a Hessian from differences of gradients (L-BFGS-B as a fallback), and
        for a GLMM the standard errors' Hessian by central differences of gradients. Same
        optimum as lme4's path (or a better one where lme4 stops early), far fewer
        evaluations. ``"bobyqa"`` is lme4's derivative-free path (NLopt's LN_BOBYQA, as lme4's
        default ``nloptwrap``) everywhere, and the fallback when the gradient path fails or
        ends on a boundary. ``"auto"`` takes the gradient path for GLMMs (where every
        evaluation runs PIRLS), for LMMs with one random-effects term (their exact gradient
        costs about one evaluation) and for LMMs whose evaluation is expensive (a dense block
        of ~180 or more random effects outside the first term, or a large coupling to it); an
        LMM evaluation never touches the rows, so for the others it costs microseconds and
        BOBYQA's extra evaluations cost less than the row-wise gradient.
    ftol_abs, xtol_abs : absolute tolerances on the objective and on theta (lme4: 1e-8 each).
    maxeval : maximum number of objective evaluations (lme4: 1e5).
    singular_tol : a theta diagonal below this counts as singular (lme4's isSingular: 1e-4).
    pirls_tol, pirls_maxiter : GLMM inner loop convergence (relative change of the penalized
        deviance; PIRLS also requires its step to fall below 1e-11 relative, so the Laplace
        objective is exact to rounding) and iteration limit (Fisher scoring for non-canonical
        links can need ~100 steps).
    start : optional starting theta (LMM) or (theta, beta) (GLMM stage 2; beta in the data's
        units), finite numbers (checked here, the bad entry named).
    """

    optimizer: Literal["auto", "gradient", "bobyqa"] = "auto"
    ftol_abs: float = 1e-8
    xtol_abs: float = 1e-8
    maxeval: int = 100_000
    singular_tol: float = 1e-4
    pirls_tol: float = 1e-10
    pirls_maxiter: int = 300
    start: tuple | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.optimizer not in ("auto", "gradient", "bobyqa"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; "
                             "use 'auto', 'gradient' or 'bobyqa'")
        for name in ("ftol_abs", "xtol_abs", "singular_tol", "pirls_tol"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0):
                raise ValueError(f"control.{name} must be a non-negative number, got {v!r}")
        for name in ("maxeval", "pirls_maxiter"):
            v = getattr(self, name)
            if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0):
                raise ValueError(f"control.{name} must be a positive integer, got {v!r}")
        if self.start is not None:
            object.__setattr__(self, "start", _checked_start(self.start))

    @classmethod
    def coerce(cls, control) -> "Control":
        if control is None:
            return _default_control(cls)
        if isinstance(control, cls):
            return control
        if isinstance(control, dict):
            try:
                return cls(**control)
            except TypeError as exc:
                raise ValueError(f"bad control setting: {exc}") from None
        raise TypeError(f"control must be a mixedfit.Control or a dict, got {type(control).__name__}")


@functools.lru_cache(maxsize=None)
def _default_control(cls) -> "Control":
    """The default settings, built (and validated) once: Control is frozen, so one instance
    serves every fit."""
    return cls()


def _checked_start(start) -> tuple:
    """control.start as a tuple of finite floats, or a DataError naming the bad entry."""
    if isinstance(start, (str, bytes)):
        raise DataError(f"control.start must be numbers, got the text {start!r}")
    try:
        values = np.asarray(start, dtype=float).ravel()
    except (TypeError, ValueError):
        raise DataError(f"control.start must be numbers, got {start!r}") from None
    bad = [i for i, v in enumerate(values) if not np.isfinite(v)]
    if bad:
        value = float(values[bad[0]])
        raise DataError(f"control.start[{bad[0]}] is {value!r}: every entry must be a finite "
                        "number")
    return tuple(float(v) for v in values)
