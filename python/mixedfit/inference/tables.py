"""Coefficient tables with tests: lmerTest's for LMMs, lme4's Wald z tests for GLMMs."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .ddf import DDF_METHODS, ttest_table
from .lmer_anova import check_ddf

__all__ = ["coef_table"]


def _wald(fit):
    est = np.asarray(fit.beta, dtype=float)
    se = np.sqrt(np.diag(fit.vcov.to_numpy()))
    return est, se, est / se


def coef_table(fit, ddf: str) -> pd.DataFrame:
    """Estimate, Std. Error, (df,) t/z value (and p) per fixed effect, indexed by term."""
    check_ddf(ddf, DDF_METHODS)
    index = pd.Index(list(fit.design.fixed_names), dtype=object)
    if getattr(fit, "is_glmm", False):
        est, se, stat = _wald(fit)
        z = not getattr(fit, "has_scale", False)
        return pd.DataFrame({"Estimate": est, "Std. Error": se,
                             "z value" if z else "t value": stat,
                             "Pr(>|z|)": 2.0 * stats.norm.sf(np.abs(stat))}, index=index)
    if ddf == "lme4":
        est, se, stat = _wald(fit)
        return pd.DataFrame({"Estimate": est, "Std. Error": se, "t value": stat}, index=index)
    est, se, df, t, p = ttest_table(fit, ddf)
    return pd.DataFrame({"Estimate": est, "Std. Error": se, "df": df, "t value": t,
                         "Pr(>|t|)": p}, index=index)
