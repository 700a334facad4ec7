"""Coefficient tables with tests: lmerTest's for LMMs, lme4's Wald z tests for GLMMs."""

from __future__ import annotations

import pandas as pd

from .ddf import DDF_METHODS, ttest_table
from .lmer_anova import check_ddf

__all__ = ["coef_table"]


def coef_table(fit, ddf: str) -> pd.DataFrame:
    """Estimate, Std. Error, (df,) t/z value (and p) per fixed effect, indexed by term."""
    check_ddf(ddf, DDF_METHODS)
    index = pd.Index(list(fit.design.fixed_names), dtype=object)
    if getattr(fit, "is_glmm", False) or ddf == "lme4":
        return fit.coefficients()       # lme4's table (GLMMs: Wald z tests)
    est, se, df, t, p = ttest_table(fit, ddf)
    return pd.DataFrame({"Estimate": est, "Std. Error": se, "df": df, "t value": t,
                         "Pr(>|t|)": p}, index=index)
