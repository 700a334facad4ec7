"""Likelihood-ratio tests of nested fits, as lme4's ``anova(fit1, fit2, ...)``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["anova"]


def anova(*fits, refit: bool = True, type=3, ddf: str = "Satterthwaite") -> pd.DataFrame:
    """Compare nested models by likelihood-ratio tests.

    With a single LMM fit: lmerTest's F tests of its fixed-effects terms (``type`` 1, 2 or 3,
    ``ddf`` "Satterthwaite" or "Kenward-Roger"); see :mod:`mixedfit.inference.lmer_anova`.

    REML fits of linear mixed models are refitted by ML first (as lme4 does, with a message),
    since REML criteria of models with different fixed effects are not comparable. Rows are
    sorted by number of parameters. Returns columns npar, AIC, BIC, logLik, deviance, Chisq,
    Df, Pr(>Chisq).
    """
    if len(fits) == 1:
        from .inference.lmer_anova import single_fit_anova

        return single_fit_anova(fits[0], type=type, ddf=ddf)
    if len(fits) < 2:
        raise ValueError("anova() needs at least one fitted model")
    nobs = {f.nobs for f in fits}
    if len(nobs) > 1:
        raise ValueError(f"models were not all fitted to the same number of observations: {sorted(nobs)}")
    work = []
    for f in fits:
        if getattr(f, "reml", False) and refit:
            f = f.refit_ml()
        work.append(f)
    npar = [f.df for f in work]
    order = np.argsort(npar, kind="stable")
    rows = []
    prev = None
    for i in order:
        f = work[i]
        dev = -2.0 * f.loglik
        row = {"npar": f.df, "AIC": f.aic, "BIC": f.bic, "logLik": f.loglik, "deviance": dev,
               "Chisq": np.nan, "Df": np.nan, "Pr(>Chisq)": np.nan}
        if prev is not None:
            chisq = max(prev["deviance"] - dev, 0.0)
            df = f.df - prev["npar"]
            row["Chisq"] = chisq
            row["Df"] = df
            row["Pr(>Chisq)"] = float(stats.chi2.sf(chisq, df)) if df > 0 else np.nan
        rows.append(row)
        prev = row
    names = [f"model{i + 1}" for i in order]
    return pd.DataFrame(rows, index=names)
