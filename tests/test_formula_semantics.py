"""R's meaning of what users type in formulas, checked against lme4.

The reference values (column names, fixed effects, SEs, theta, sigma, criterion) are frozen by
``tests/reference/make_formula_reference.R`` in ``tests/reference/lme4_formulas.json``.
Tolerances are those of the main reference tests (``test_reference_lmm.py``): the fits are
the same arithmetic, only optimizer stopping differs.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import mixedfit
from mixedfit import DataError, FormulaError
from _reference import REFERENCE_DIR, load_data

CRITERION_RTOL = 1e-6   # the value of a smooth minimum: insensitive to where the optimizer stops
FIXEF_RTOL = 1e-4       # relative to max(|estimate|, SE): optimizer stopping differences
SE_RTOL = 1e-4          # lmer SEs
THETA_ATOL = 1e-3       # flat minimum, stopping rule
# glmer: lme4's PIRLS stops at a relative tolerance, so its reported -2 log L is off by a few
# 1e-6 and its optimum moves (cbpp with a log offset: mixedfit's -2 log L is 9e-4 lower, the
# fixed effects differ by 3.4e-3 SE); mixedfit must be at least as good as lme4's optimum.
GLMM_CRITERION_RTOL = 2e-5
GLMM_FIXEF_RTOL = 1e-2
# lme4's GLMM SEs come from a finite-difference Hessian of that inexact objective (measured
# here: 1.4e-2 relative; the main GLMM references measure up to 1.3e-2).
GLMM_SE_RTOL = 3e-2

with open(REFERENCE_DIR / "lme4_formulas.json", encoding="utf-8") as fh:
    REFERENCE = json.load(fh)


def load(name: str) -> pd.DataFrame:
    if name in ("sleepstudy", "cake"):
        return load_data("lmm", name)
    if name == "cbpp":
        return load_data("glmm", name)
    assert name == "sleepstudy_na"
    df = pd.read_csv(REFERENCE_DIR / "data" / "sleepstudy_na.csv")
    levels = list(load_data("lmm", "sleepstudy")["Subject"].cat.categories)
    df["Subject"] = pd.Categorical(df["Subject"].astype(str), categories=levels)
    return df


def fit_reference(ref: dict):
    df = load(ref["data"])
    if ref["rows_dropped_before_fit"]:
        df = df[df["Days"].notna()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ref["family"] is None:
            return mixedfit.lmer(ref["formula"], df)
        return mixedfit.glmer(ref["formula"], df, family=ref["family"])


@pytest.mark.parametrize("model_id", list(REFERENCE["models"]))
def test_matches_lme4(model_id):
    ref = REFERENCE["models"][model_id]
    fit = fit_reference(ref)
    assert fit.design.fixed_names == ref["fixef_names"]
    assert fit.design.n == ref["nobs"]
    ranef_columns = [t.columns for t in fit.design.terms]
    expected_columns = [c if isinstance(c, list) else [c] for c in ref["ranef_columns"]]
    assert ranef_columns == expected_columns
    glmm = ref["family"] is not None
    ref_beta, ref_se = np.array(ref["fixef"]), np.array(ref["se"])
    tol = (GLMM_FIXEF_RTOL if glmm else FIXEF_RTOL) * np.maximum(np.abs(ref_beta), ref_se)
    np.testing.assert_array_less(np.abs(fit.beta - ref_beta), tol + 1e-12)
    se = np.sqrt(np.diag(fit.vcov.to_numpy()))
    np.testing.assert_allclose(se, ref_se, rtol=GLMM_SE_RTOL if glmm else SE_RTOL)
    np.testing.assert_allclose(fit.theta, ref["theta"], atol=THETA_ATOL)
    criterion = fit.reml_criterion if ref["reml"] else -2 * fit.loglik
    np.testing.assert_allclose(criterion, ref["criterion"],
                               rtol=GLMM_CRITERION_RTOL if glmm else CRITERION_RTOL)
    if glmm:
        assert criterion <= ref["criterion"] * (1 + 1e-9)


def sleepstudy():
    return load_data("lmm", "sleepstudy")


def test_power_inside_I_is_a_power_on_integer_and_float_columns():
    df = sleepstudy()
    as_int = mixedfit.lmer("Reaction ~ Days + I(Days^2) + (1 | Subject)", df)
    as_float = mixedfit.lmer("Reaction ~ Days + I(Days^2) + (1 | Subject)",
                             df.assign(Days=df["Days"].astype(float)))
    ref = REFERENCE["models"]["I_power"]["fixef"][2]  # lme4: 0.337 (XOR gave 1.536)
    assert as_int.beta[2] == pytest.approx(ref, rel=1e-4)
    assert as_float.beta[2] == pytest.approx(ref, rel=1e-4)


def test_power_outside_I_expands_interactions():
    df = load_data("lmm", "cake")
    fit = mixedfit.lmer("angle ~ (recipe + temp)^2 + (1 | replicate)", df)
    assert fit.design.fixed_names == ["(Intercept)", "recipeB", "recipeC", "temp",
                                      "recipeB:temp", "recipeC:temp"]


def test_power_in_response_and_offset():
    df = sleepstudy()
    fit = mixedfit.lmer("I(Reaction^0.5) ~ Days + offset(Days^2 / 100) + (1 | Subject)", df)
    direct = mixedfit.lmer("y ~ Days + offset(o) + (1 | Subject)",
                           df.assign(y=np.sqrt(df["Reaction"]), o=df["Days"] ** 2 / 100))
    np.testing.assert_allclose(fit.beta, direct.beta, rtol=1e-10)


def test_unseen_fixed_effect_level_in_newdata_is_named():
    df = sleepstudy()
    fit = mixedfit.lmer("Reaction ~ factor(Days) + (1 | Subject)", df)
    new = df.iloc[:2].assign(Days=[3, 12])
    with pytest.raises(DataError, match="12"):
        fit.predict(newdata=new)
    np.testing.assert_allclose(fit.predict(newdata=df.iloc[:5]), fit.fitted().iloc[:5])


def test_unseen_level_of_a_factor_column_in_newdata():
    df = load_data("lmm", "cake")
    fit = mixedfit.lmer("angle ~ recipe + (1 | replicate)", df)
    new = df.iloc[:2].astype({"recipe": str}).assign(recipe=["A", "Z"])
    with pytest.raises(DataError, match="'Z'"):
        fit.predict(newdata=new)


def test_ordered_factor_newdata_prediction_matches_fitted():
    df = load_data("lmm", "cake")
    fit = mixedfit.lmer("angle ~ recipe * temperature + (1 | recipe:replicate)", df)
    np.testing.assert_allclose(fit.predict(newdata=df.iloc[::7]), fit.fitted().iloc[::7])


def test_scale_uses_every_nonmissing_value_as_R_does():
    """R scales Days over the 178 rows with Days before dropping the rows missing Reaction;
    scaling the 153 complete rows instead gives another coefficient."""
    df = load("sleepstudy_na")
    with pytest.warns(UserWarning, match="dropped 27 row"):
        fit = mixedfit.lmer("Reaction ~ scale(Days) + (1 | Subject)", df)
    complete = df.dropna()
    on_complete = (complete["Days"] - complete["Days"].mean()) / complete["Days"].std()
    other = mixedfit.lmer("Reaction ~ z + (1 | Subject)", complete.assign(z=on_complete))
    ref = REFERENCE["models"]["scale_with_missing"]["fixef"][1]
    assert fit.beta[1] == pytest.approx(ref, rel=1e-6)
    assert abs(other.beta[1] - ref) > 1e-3 * ref
    np.testing.assert_allclose(fit.predict(newdata=complete.iloc[:4]), fit.fitted().iloc[:4])


def test_factor_levels_of_dropped_rows_are_dropped():
    """R drops the levels that only incomplete rows have (drop.unused.levels)."""
    df = load_data("lmm", "cake").astype({"recipe": str})
    df.loc[df["recipe"] == "C", "angle"] = np.nan
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*rank deficient")
        with pytest.warns(UserWarning, match="dropped 90 row"):
            fit = mixedfit.lmer("angle ~ recipe + scale(temp) + (1 | replicate)", df)
    assert fit.design.fixed_names == ["(Intercept)", "recipeB", "scale(temp)"]


@pytest.mark.parametrize("formula, names", [
    ("Reaction ~ log(Days + 1) + (1 | Subject)", ["(Intercept)", "log(Days + 1)"]),
    ("Reaction ~ I(Days * 2) + (1 | Subject)", ["(Intercept)", "I(Days * 2)"]),
    ("Reaction ~ I((Days + 1)^2) + (1 | Subject)", ["(Intercept)", "I((Days + 1)^2)"]),
    ("Reaction ~ as.numeric(Days) + (1 | Subject)", ["(Intercept)", "as.numeric(Days)"]),
    ("Reaction ~ 0 + Days + (1 | Subject)", ["Days"]),
    ("Reaction ~ np.log1p(Days) + (1 | Subject)", ["(Intercept)", "log1p(Days)"]),
])
def test_column_names_as_lme4_prints_them(formula, names):
    assert mixedfit.lmer(formula, sleepstudy()).design.fixed_names == names


@pytest.mark.parametrize("formula, must_name", [
    ("Reaction ~ ns(Days, 3) + (1 | Subject)", "ns()"),
    ("Reaction ~ foo(Days) + (1 | Subject)", "foo()"),
    ("Reaction ~ Days + (1 | Subject) + offset(bar(Days))", "bar()"),
    ("Reaction ~ log(Subject) + (1 | Subject)", "log(Subject)"),
    ("Reaction ~ bs(Days, df = 1) + (1 | Subject)", "bs(Days, df = 1)"),
    ("Reaction ~ I(Days %o% Days) + (1 | Subject)", "%o%"),
])
def test_terms_that_cannot_be_evaluated_are_named(formula, must_name):
    with pytest.raises(FormulaError) as info:
        mixedfit.lmer(formula, sleepstudy())
    assert must_name in str(info.value)


def test_poly_degree_beyond_the_distinct_values_is_named():
    with pytest.raises(DataError, match=r"poly\(Days, 10\).*|degree 10"):
        mixedfit.lmer("Reaction ~ poly(Days, 10) + (1 | Subject)", sleepstudy())


def test_no_fixed_effects_fit_prints_and_summarizes():
    fit = mixedfit.lmer("Reaction ~ 0 + (1 | Subject)", sleepstudy())
    assert len(fit.beta) == 0
    assert "No fixed effect coefficients" in str(fit)
    text = str(fit.summary())
    assert "Random effects:" in text and "Fixed effects:" not in text


def test_logicals_are_factors_as_in_R():
    """R's model frame makes a logical a factor: columns ``bTRUE``, ``I(x > 2)TRUE``."""
    df = sleepstudy().assign(late=lambda d: d["Days"] > 4)
    fit = mixedfit.lmer("Reaction ~ late + I(Days > 7) + (1 | Subject)", df)
    assert fit.design.fixed_names == ["(Intercept)", "lateTRUE", "I(Days > 7)TRUE"]
    np.testing.assert_allclose(fit.predict(newdata=df.iloc[::9]), fit.fitted().iloc[::9])
    no_intercept = mixedfit.lmer("Reaction ~ 0 + late + (1 | Subject)", df)
    assert no_intercept.design.fixed_names == ["lateFALSE", "lateTRUE"]


def test_logical_operators_bind_as_in_R():
    """In R ``Days > 2 & Days < 6`` is ``(Days > 2) & (Days < 6)``; Python's ``&`` would bind
    first (``Days > (2 & Days) < 6``)."""
    df = sleepstudy()
    fit = mixedfit.lmer("Reaction ~ I(Days > 2 & Days < 6) + offset(!(Days == 3) & Days > 1)"
                        " + (1 | Subject)", df)
    assert fit.design.fixed_names == ["(Intercept)", "I(Days > 2 & Days < 6)TRUE"]
    days = df["Days"].to_numpy()
    np.testing.assert_array_equal(fit.design.X[:, 1], (days > 2) & (days < 6))
    np.testing.assert_array_equal(fit.design.offset, ~(days == 3) & (days > 1))


def test_level_labels_with_parentheses_and_colons():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"y": rng.normal(size=40), "x": rng.normal(size=40),
                       "g": np.arange(40) % 8, "s": ["a(", "b:c)"] * 20})
    names = mixedfit.lmer("y ~ x * s + (1 | g)", df).design.fixed_names
    assert names == ["(Intercept)", "x", "sb:c)", "x:sb:c)"]  # R's model.matrix names


def test_factor_of_an_ordered_factor_keeps_polynomial_contrasts():
    """R's factor() keeps an ordered factor ordered (factor(o) is o, with contr.poly): lme4
    names the columns factor(temperature).L, .Q, ... with the same values as temperature.L, ...
    (treatment contrasts here would be another parametrization, silently)."""
    df = load_data("lmm", "cake")
    plain = mixedfit.lmer("angle ~ recipe + temperature + (1 | replicate)", df)
    wrapped = mixedfit.lmer("angle ~ recipe + factor(temperature) + (1 | replicate)", df)
    want = [n.replace("temperature", "factor(temperature)") for n in plain.fixef.index]
    assert list(wrapped.fixef.index) == want
    assert "factor(temperature).L" in want
    np.testing.assert_allclose(wrapped.beta, plain.beta, rtol=1e-10)
    np.testing.assert_allclose(wrapped.predict(newdata=df.iloc[::9]), wrapped.fitted().iloc[::9])
