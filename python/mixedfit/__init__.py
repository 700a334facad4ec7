"""mixedfit: linear and generalized linear mixed-effects models with a C++/Eigen core.

>>> import mixedfit
>>> fit = mixedfit.lmer("Reaction ~ Days + (Days | Subject)", df)   # doctest: +SKIP
>>> print(fit.summary())                                             # doctest: +SKIP
"""

import operator

from . import _core, plot, shrinkage, simulate
from ._errors import ConvergenceError, DataError, FormulaError, MixedfitError, NumericalError
from .anova import anova
from .bayes import BayesConvergenceWarning, BayesResult, bayes
from .glmm import GlmerResult, glmer
from .lmm import lmer
from .options import Control
from .results import LmerResult, VarCorr

__version__ = "0.1.0"


def set_num_threads(n: int) -> None:
    """Set how many threads the numerical core may use (n >= 1).

    Only the dense Cholesky factorization of large models (the rest block of crossed designs,
    a few hundred rows and more) is split across threads; the threads exist only while it runs.
    The default is the number of hardware threads, capped at 8, or the value of the
    environment variable ``MIXEDFIT_NUM_THREADS`` when that is a positive integer. Use
    ``set_num_threads(1)`` when running several fits in parallel processes.

    Raises ValueError when n < 1.
    """
    _core.set_num_threads(operator.index(n))


def get_num_threads() -> int:
    """The number of threads the numerical core may use (see :func:`set_num_threads`)."""
    return _core.get_num_threads()


__all__ = [
    "lmer",
    "glmer",
    "GlmerResult",
    "anova",
    "bayes",
    "BayesResult",
    "BayesConvergenceWarning",
    "Control",
    "LmerResult",
    "VarCorr",
    "MixedfitError",
    "FormulaError",
    "DataError",
    "NumericalError",
    "ConvergenceError",
    "simulate",
    "shrinkage",
    "plot",
    "set_num_threads",
    "get_num_threads",
]
