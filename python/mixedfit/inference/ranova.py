"""lmerTest's ``ranova(fit)``: likelihood-ratio tests of each random-effects term.

Each term ``(lhs | g)`` is reduced as lmerTest does: when its left side has terms (``Days``
in ``(Days | Subject)``), each droppable one is removed in turn (the last one leaves
``(1 | g)``), giving a row "Days in (Days | Subject)"; a term with only an intercept,
``(1 | g)``, is removed, giving a row "(1 | g)". The reduced models are refitted with the
same criterion (REML or ML); without random effects left, a linear model (its REML or ML
log-likelihood, as R's ``logLik.lm``).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from scipy import stats

from .._formula import _group_terms

__all__ = ["ranova"]

_INTERCEPT_MARKERS = {"1", "0", "-1", "+1"}


def _lhs_terms(lhs: str) -> tuple[list[str], bool]:
    """The left side's terms (intercept markers removed) and whether it drops the intercept."""
    parts = [p.strip() for p in lhs.replace("-1", "+ -1").split("+") if p.strip()]
    no_intercept = any(p in ("0", "-1") for p in parts)
    return [p for p in parts if p not in _INTERCEPT_MARKERS], no_intercept


def _droppable(terms: list[str]) -> list[str]:
    """R's drop.scope: terms not contained in a higher-order term."""
    sets = {t: set(x.strip() for x in t.split(":")) for t in terms}
    return [t for t in terms if not any(sets[t] < sets[o] for o in terms if o != t)]


def _bar(lhs: str, group: str) -> str:
    terms, no_int = _lhs_terms(lhs)
    if not terms:
        return f"1 | {group}" if not no_int else f"0 | {group}"
    return " + ".join((["0"] if no_int else []) + terms) + f" | {group}"


def _slash_expansions(text: str) -> list[list[str]]:
    """Group names that nested bars ``(lhs | a/b/c)`` expand to: a, b:a, c:(b:a)."""
    out = []
    for rhs in re.findall(r"\|\s*([^()|]+?)\s*\)", text):
        if "/" in rhs:
            out.append([name for _, name in _group_terms(rhs)])
    return out


def _lme4_order(parsed) -> list[tuple[str, str]]:
    """The bar terms in lme4's findbars order, where a nested ``(1 | a/b)`` lists ``b:a``
    before ``a`` (mixedfit's parser lists them outermost first)."""
    bars = [(t.lhs, t.name) for t in parsed.re_terms]
    for names in _slash_expansions(parsed.text):
        for start in range(len(bars) - len(names) + 1):
            run = bars[start : start + len(names)]
            if [g for _, g in run] == names and len({lhs for lhs, _ in run}) == 1:
                bars[start : start + len(names)] = run[::-1]
                break
    return bars


def _reductions(bars: list[tuple[str, str]]):
    """(row name, list of bar strings of the reduced model) for each reduction."""
    full = [_bar(lhs, g) for lhs, g in bars]
    for k, (lhs, g) in enumerate(bars):
        terms, no_int = _lhs_terms(lhs)
        scope = _droppable(terms)
        if not terms or not scope:
            yield f"({full[k]})", full[:k] + full[k + 1 :]
            continue
        for scp in scope:
            rest = [t for t in terms if t != scp]
            new_lhs = "1" if not rest else " + ".join((["0"] if no_int else []) + rest)
            reduced = full[:k] + full[k + 1 :] + [f"{new_lhs} | {g}"]
            # R's formula algebra keeps one copy of a repeated term
            yield f"{scp} in ({full[k]})", list(dict.fromkeys(reduced))


def _lm_loglik(fit) -> tuple[float, int]:
    """R's logLik.lm (REML when the fit is REML) of the fixed-effects-only model."""
    d = fit.design
    y = d.y if d.offset is None else d.y - d.offset
    w = np.ones(d.n) if d.weights is None else np.asarray(d.weights, dtype=float)
    sw = np.sqrt(w)
    Q, R = np.linalg.qr(d.X * sw[:, None])
    resid = y * sw - Q @ (Q.T @ (y * sw))
    p = d.p
    N = d.n - p if fit.reml else d.n
    val = 0.5 * (np.sum(np.log(w)) - N * (math.log(2 * math.pi) + 1 - math.log(N)
                                          + math.log(float(resid @ resid))))
    if fit.reml:
        val -= float(np.sum(np.log(np.abs(np.diag(R)))))
    return val, p + 1


def _fixed_rhs(parsed) -> str:
    return " + ".join([parsed.fixed] + [f"offset({o})" for o in parsed.offsets])


def _model_text(parsed, bars) -> str:
    """The full model as lmerTest's heading shows it (no "1 +" before the bar terms)."""
    fixed = _fixed_rhs(parsed)
    parts = ([] if fixed.strip() == "1" else [fixed]) + [f"({_bar(lhs, g)})" for lhs, g in bars]
    return f"{parsed.response} ~ " + " + ".join(parts)


def ranova(fit) -> pd.DataFrame:
    """Likelihood-ratio tests of each random-effects term of an LMM fit (lmerTest's
    ``ranova``): columns npar, logLik, AIC, LRT, Df, Pr(>Chisq); first row ``<none>``."""
    from ..lmm import lmer

    if getattr(fit, "is_glmm", False) or not hasattr(fit, "reml"):
        raise ValueError("ranova() needs a linear mixed model fit (lmer)")
    parsed = fit.design.parsed
    bars = _lme4_order(parsed)
    call = dict(fit._call)
    rows, names = [(fit.loglik, fit.df)], ["<none>"]
    for name, reduced in _reductions(bars):
        if reduced:
            formula = f"{parsed.response} ~ {_fixed_rhs(parsed)} + " + " + ".join(f"({b})" for b in reduced)
            call.update(formula=formula, reml=fit.reml)
            refit = lmer(**call)
            if refit.nobs != fit.nobs:
                raise ValueError("number of rows in use has changed: remove missing values?")
            rows.append((refit.loglik, refit.df))
        else:
            rows.append(_lm_loglik(fit))
        names.append(name)
    ll = np.array([r[0] for r in rows], dtype=float)
    npar = np.array([r[1] for r in rows], dtype=float)
    lrt = np.r_[np.nan, 2.0 * (ll[0] - ll[1:])]
    df = np.r_[np.nan, npar[0] - npar[1:]]
    with np.errstate(invalid="ignore"):
        p = np.where(df > 0, stats.chi2.sf(lrt, np.where(df > 0, df, 1)), np.nan)
    table = pd.DataFrame({"npar": npar.astype(int), "logLik": ll, "AIC": -2 * ll + 2 * npar,
                          "LRT": lrt, "Df": df, "Pr(>Chisq)": p},
                         index=pd.Index(names, dtype=object))
    model = _model_text(parsed, bars)
    table.attrs["heading"] = ("ANOVA-like table for random-effects: Single term deletions\n\n"
                              f"Model:\n{model}")
    return table
