"""Exception classes a user can catch. Every message names the column, term or value at fault."""

from __future__ import annotations

import numpy as np

from ._core import NumericalError

__all__ = ["MixedfitError", "FormulaError", "DataError", "NumericalError", "ConvergenceError",
           "ConvergenceWarning", "SingularFitWarning"]


class MixedfitError(ValueError):
    """Base class for mixedfit's input errors."""


class FormulaError(MixedfitError):
    """The formula cannot be parsed or refers to something that is not there."""


class DataError(MixedfitError):
    """The data cannot be used for the requested model (names the column or value)."""


class ConvergenceError(RuntimeError):
    """An iterative algorithm (PIRLS, the optimizer) did not converge; the message says what to try."""


class ConvergenceWarning(UserWarning):
    """The optimizer stopped without converging (e.g. it reached ``maxeval``); the fit's
    ``converged`` is False and ``optinfo`` says which optimizer stopped and why."""


class SingularFitWarning(UserWarning):
    """A variance parameter is on its boundary (lme4's "boundary (singular) fit")."""


class numerical_failures_explained:
    """A failure of the core's arithmetic (a non-finite value, a factor that is not positive
    definite) reaches the user as a NumericalError ending in ``advice``, never as a bare
    ValueError; mixedfit's own errors pass through as they are. (A class: contextlib's
    generator-based managers cost several times more to enter and leave.)"""

    def __init__(self, advice: str):
        self.advice = advice

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or isinstance(exc, (MixedfitError, ConvergenceError)):
            return False
        if isinstance(exc, (NumericalError, ValueError, np.linalg.LinAlgError)):
            raise NumericalError(f"{exc}; {self.advice}") from exc
        return False
