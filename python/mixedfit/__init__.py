"""mixedfit: linear and generalized linear mixed-effects models with a C++/Eigen core.

>>> import mixedfit
>>> fit = mixedfit.lmer("Reaction ~ Days + (Days | Subject)", df)   # doctest: +SKIP
>>> print(fit.summary())                                             # doctest: +SKIP
"""

import importlib
import operator

from . import _core
from ._errors import (ConvergenceError, ConvergenceWarning, DataError, FormulaError,
                      MixedfitError, NumericalError, SingularFitWarning)
from .anova import anova
from .options import Control

__version__ = "0.1.0"

# The modeling API is imported on first use, so ``import mixedfit`` does not pay for pandas,
# formulaic, SciPy or matplotlib (PEP 562 module __getattr__). Name -> (module, attribute);
# attribute None means the submodule itself. (``anova`` is imported eagerly: its module has the
# same name, and a lazy import of the module would shadow the function.)
_LAZY = {
    "lmer": (".lmm", "lmer"),
    "glmer": (".glmm", "glmer"),
    "GlmerResult": (".glmm", "GlmerResult"),
    "LmerResult": (".results", "LmerResult"),
    "VarCorr": (".results", "VarCorr"),
    "datasets": (".datasets", None),
    "bayes": (".bayesian", "bayes"),
    "BayesResult": (".bayesian", "BayesResult"),
    "BayesConvergenceWarning": (".bayesian", "BayesConvergenceWarning"),
    "bayesian": (".bayesian", None),
    "families": (".families", None),
    "glmer_nb": (".negbin", "glmer_nb"),
    "bootstrap": (".inference.bootstrap", "bootstrap"),
    "ranova": (".inference.ranova", "ranova"),
    "plot": (".plot", None),
    "shrinkage": (".shrinkage", None),
    "simulate": (".simulate", None),
}


def __getattr__(name: str):
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'mixedfit' has no attribute {name!r}") from None
    module = importlib.import_module(module_name, __name__)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


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
    "glmer_nb",
    "GlmerResult",
    "anova",
    "bootstrap",
    "ranova",
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
    "ConvergenceWarning",
    "SingularFitWarning",
    "simulate",
    "shrinkage",
    "families",
    "plot",
    "set_num_threads",
    "get_num_threads",
    "datasets",
]
