"""``anova``: likelihood-ratio tests of nested fits, as lme4's ``anova(fit1, fit2, ...)``, or with
one fit lmerTest's F tests of its fixed effects."""

from __future__ import annotations

import warnings

__all__ = ["anova", "compare_fits"]

REFIT_NOTE = "refitting model(s) with ML (instead of REML)"


def anova(*fits, refit: bool = True, names=None, type=3, ddf: str = "Satterthwaite"):
    """With several fits: likelihood-ratio tests of nested models (see :func:`compare_fits`).
    With a single LMM fit: lmerTest's F tests of its fixed-effects terms (``type`` 1, 2 or 3,
    ``ddf`` "Satterthwaite" or "Kenward-Roger"); see :mod:`mixedfit.inference.lmer_anova`."""
    if not fits:
        raise ValueError("anova() needs at least one fitted model")
    if len(fits) == 1:
        from .inference.lmer_anova import single_fit_anova

        return single_fit_anova(fits[0], type=type, ddf=ddf)
    return compare_fits(*fits, refit=refit, names=names)


def compare_fits(*fits, refit: bool = True, names=None):
    """Compare nested models by likelihood-ratio tests, as lme4's ``anova(m1, m2, ...)``.

    The fits must be of the same kind (all ``lmer`` or all ``glmer`` of one family), of the same
    response, to the same rows of the same data; otherwise a ``DataError`` says which differ.
    REML fits of linear mixed models are refitted by ML first, with lme4's note as a warning,
    since REML criteria of models with different fixed effects are not comparable. Rows are
    named by the fits' formulas (lme4 uses the objects' names; pass ``names=`` for those) and
    sorted by number of parameters. Returns columns npar, AIC, BIC, logLik, deviance, Chisq, Df,
    Pr(>Chisq); ``attrs["heading"]`` holds lme4's heading lines, and ``print()`` shows the
    table as lme4 prints it.
    """
    if len(fits) < 2:
        raise ValueError("comparing models needs at least two fitted models")
    labels = _row_labels(fits, names)
    _check_comparable(fits, labels)
    if refit and any(getattr(f, "reml", False) for f in fits):
        warnings.warn(REFIT_NOTE, UserWarning, stacklevel=3)
        fits = [f.refit_ml() if getattr(f, "reml", False) else f for f in fits]
    return _lrt_table(fits, labels)


def _row_labels(fits, names) -> list[str]:
    if names is None:
        labels = [f.formula for f in fits]
    else:
        labels = [str(n) for n in names]
        if len(labels) != len(fits):
            raise ValueError(f"names has {len(labels)} entries for {len(fits)} fits")
    if len(set(labels)) < len(labels):
        if names is not None:
            dup = sorted({lab for lab in labels if labels.count(lab) > 1})
            raise ValueError(f"two fits have the same name {dup[0]!r}; pass distinct names")
        # the same formula twice (e.g. different nagq): number the repeats
        labels = [lab if labels.count(lab) == 1 else f"{lab} [{i + 1}]" for i, lab in enumerate(labels)]
    return labels


def _fit_kind(fit) -> str:
    """What kind of likelihood a fit has. Poisson and negative binomial fits are one kind:
    the Poisson is the negative binomial's limit (theta -> infinity), so their LRT is a test
    of over-dispersion (on the boundary: the p-value is conservative)."""
    if getattr(fit, "is_glmm", False):
        name = fit._fam.name
        return "glmer (count) fit" if name in ("poisson", "negative.binomial") else f"glmer ({name}) fit"
    return "lmer fit"


def _check_comparable(fits, labels) -> None:
    """Refuse comparisons whose likelihoods are not of the same data: lme4 does for different
    numbers of observations; a likelihood-ratio test across responses, data or model kinds
    would print a meaningless Chisq."""
    from ._errors import DataError

    first, first_label = fits[0], labels[0]
    for fit, label in zip(fits[1:], labels[1:]):
        pair = f"{first_label!r} and {label!r}"
        if _fit_kind(fit) != _fit_kind(first):
            raise DataError(f"cannot compare a {_fit_kind(first)} with a {_fit_kind(fit)} ({pair}): "
                            "their likelihoods are of different models for the data")
        if fit.response_name != first.response_name:
            raise DataError(f"models have different responses ({first.response_name!r} vs "
                            f"{fit.response_name!r}: {pair}); likelihoods of different responses "
                            "cannot be compared")
        if fit.nobs != first.nobs:
            raise DataError(f"models were not all fitted to the same size of dataset ({pair}: "
                            f"{first.nobs} vs {fit.nobs} observations)")
        differing = _differing_data(first, fit)
        if differing:
            raise DataError(f"models were fitted to different data ({pair}): {differing}")


def _differing_data(a, b) -> str | None:
    """Why two fits' rows differ (None when they use the same rows of the same values)."""
    import numpy as np

    if a._call.get("data") is b._call.get("data"):
        return None
    if not a.design.index.equals(b.design.index):
        return "they use different rows"
    if not np.array_equal(np.asarray(a.design.response), np.asarray(b.design.response)):
        return f"the response {a.response_name!r} has different values"
    shared = [c for c in a.design.used if c in set(b.design.used)]
    for col in shared:
        if not a.design.columns[col].equals(b.design.columns[col]):
            return f"column {col!r} has different values"
    return None


def _lrt_table(fits, labels):
    import numpy as np

    from ._repr import AnovaTable

    order = np.argsort([f.df for f in fits], kind="stable")
    rows = []
    prev = None
    for i in order:
        row = _lrt_row(fits[i], prev)
        rows.append(row)
        prev = row
    table = AnovaTable(rows, index=[labels[i] for i in order])
    table.attrs["heading"] = _heading(fits, labels, order)
    return table


def _lrt_row(fit, prev: dict | None) -> dict:
    import numpy as np

    deviance = -2.0 * fit.loglik
    row = {"npar": fit.df, "AIC": fit.aic, "BIC": fit.bic, "logLik": fit.loglik,
           "deviance": deviance, "Chisq": np.nan, "Df": np.nan, "Pr(>Chisq)": np.nan}
    if prev is not None:
        chisq = max(prev["deviance"] - deviance, 0.0)
        df = fit.df - prev["npar"]
        row["Chisq"] = chisq
        row["Df"] = df
        row["Pr(>Chisq)"] = _chi2_sf(chisq, df) if df > 0 else np.nan
    return row


def _chi2_sf(x: float, df: int) -> float:
    """Upper tail of the chi-squared distribution."""
    from scipy.special import chdtrc

    return float(chdtrc(df, x))


def _heading(fits, labels, order) -> list[str]:
    data_names = {getattr(f, "data_name", None) for f in fits}
    data_line = f"Data: {data_names.pop()}" if len(data_names) == 1 else "Data: (several)"
    models = [labels[i] if labels[i] == fits[i].formula else f"{labels[i]}: {fits[i].formula}"
              for i in order]
    return [data_line, "Models:"] + models
