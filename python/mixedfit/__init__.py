"""mixedfit: linear and generalized linear mixed-effects models with a C++/Eigen core.

>>> import mixedfit
>>> fit = mixedfit.lmer("Reaction ~ Days + (Days | Subject)", df)   # doctest: +SKIP
>>> print(fit.summary())                                             # doctest: +SKIP
"""

from . import plot, shrinkage, simulate
from ._errors import ConvergenceError, DataError, FormulaError, MixedfitError, NumericalError
from .anova import anova
from .glmm import GlmerResult, glmer
from .lmm import lmer
from .options import Control
from .results import LmerResult, VarCorr

__version__ = "0.1.0"

__all__ = [
    "lmer",
    "glmer",
    "GlmerResult",
    "anova",
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
]
