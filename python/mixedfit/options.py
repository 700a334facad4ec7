"""Options: one keyword-only control object, validated in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Control"]


@dataclass(frozen=True)
class Control:
    """Optimizer and algorithm settings (lme4's defaults).

    optimizer : ``"auto"`` (default) or ``"bobyqa"``. Both use NLopt's LN_BOBYQA (lme4's
        default ``nloptwrap``) for LMMs. For GLMMs with a canonical link (binomial-logit,
        Poisson-log) fitted by Laplace or nAGQ = 0, ``"auto"`` uses the objective's exact
        gradient instead: L-BFGS-B in both stages and the Hessian by differences of gradients
        (the same optimum and standard errors, with far fewer PIRLS runs); ``"bobyqa"`` keeps
        lme4's derivative-free path there too.
    ftol_abs, xtol_abs : absolute tolerances on the objective and on theta (lme4: 1e-8 each).
    maxeval : maximum number of objective evaluations (lme4: 1e5).
    singular_tol : a theta diagonal below this counts as singular (lme4's isSingular: 1e-4).
    pirls_tol, pirls_maxiter : GLMM inner loop convergence (relative change of the penalized
        deviance; PIRLS also requires its step to fall below 1e-11 relative, so the Laplace
        objective is exact to rounding) and iteration limit (Fisher scoring for non-canonical
        links can need ~100 steps).
    start : optional starting theta (LMM) or (theta, beta) (GLMM stage 2).
    """

    optimizer: Literal["auto", "bobyqa"] = "auto"
    ftol_abs: float = 1e-8
    xtol_abs: float = 1e-8
    maxeval: int = 100_000
    singular_tol: float = 1e-4
    pirls_tol: float = 1e-10
    pirls_maxiter: int = 300
    start: tuple | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.optimizer not in ("auto", "bobyqa"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; use 'auto' or 'bobyqa'")
        for name in ("ftol_abs", "xtol_abs", "singular_tol", "pirls_tol"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0):
                raise ValueError(f"control.{name} must be a non-negative number, got {v!r}")
        for name in ("maxeval", "pirls_maxiter"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v > 0):
                raise ValueError(f"control.{name} must be a positive integer, got {v!r}")

    @classmethod
    def coerce(cls, control) -> "Control":
        if control is None:
            return cls()
        if isinstance(control, cls):
            return control
        if isinstance(control, dict):
            try:
                return cls(**control)
            except TypeError as exc:
                raise ValueError(f"bad control setting: {exc}") from None
        raise TypeError(f"control must be a mixedfit.Control or a dict, got {type(control).__name__}")
