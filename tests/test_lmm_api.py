"""The lmer result API: accessors, predictions, tables and tests, checked against identities
and against the frozen lme4 values where lme4 defines the number."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedfit
from _reference import load_data, model_ref

REL = 1e-8  # identities between quantities of one fit: only rounding separates them


@pytest.fixture(scope="module")
def sleep():
    return load_data("lmm", "sleepstudy")


@pytest.fixture(scope="module")
def fit(sleep):
    return mixedfit.lmer("Reaction ~ Days + (Days | Subject)", sleep)


def test_fitted_is_fixed_plus_random(fit, sleep):
    re = fit.ranef()["Subject"]
    b = re.loc[sleep["Subject"].astype(str).to_numpy()] if re.index.dtype == object else re.loc[sleep["Subject"]]
    manual = fit.fixef["(Intercept)"] + b["(Intercept)"].to_numpy() + (
        fit.fixef["Days"] + b["Days"].to_numpy()) * sleep["Days"].to_numpy()
    np.testing.assert_allclose(fit.fitted().to_numpy(), manual, rtol=REL)
    np.testing.assert_allclose(fit.residuals().to_numpy(),
                               sleep["Reaction"].to_numpy() - manual, rtol=1e-7, atol=1e-9)


def test_coef_is_fixef_plus_ranef(fit):
    co, re = fit.coef()["Subject"], fit.ranef()["Subject"]
    np.testing.assert_allclose(co["Days"], fit.fixef["Days"] + re["Days"], rtol=REL)
    assert list(co.columns) == ["(Intercept)", "Days"]


def test_predict_population_and_new_levels(fit, sleep):
    np.testing.assert_allclose(fit.predict(sleep), fit.fitted().to_numpy(), rtol=REL)
    nd = pd.DataFrame({"Days": [0.0, 5.0], "Subject": pd.Categorical(["308", "nobody"])})
    with pytest.raises(mixedfit.DataError, match="nobody"):
        fit.predict(nd)
    pred = fit.predict(nd, allow_new_levels=True)
    b0 = fit.fixef["(Intercept)"]
    assert pred[1] == pytest.approx(b0 + 5 * fit.fixef["Days"], rel=REL)
    assert pred[0] == pytest.approx(fit.coef()["Subject"].loc["308", "(Intercept)"], rel=REL)
    pop = fit.predict(nd, re_form="~0")
    np.testing.assert_allclose(pop, b0 + nd["Days"] * fit.fixef["Days"], rtol=REL)
    np.testing.assert_allclose(fit.predict(nd, re_form=np.nan), pop, rtol=REL)


def test_residual_types_and_scaling(fit):
    r = fit.residuals()
    np.testing.assert_allclose(fit.residuals(type="pearson"), r, rtol=REL)   # unweighted
    np.testing.assert_allclose(fit.residuals(scaled=True), r / fit.sigma, rtol=REL)
    with pytest.raises(ValueError, match="unknown residual type"):
        fit.residuals(type="bogus")


def test_vcov_and_sigma_relations(fit):
    ref = model_ref("lmm", "sleepstudy_reml")
    d = fit.devcomp
    n, p = fit.nobs, len(fit.fixef)
    assert fit.sigma == pytest.approx(np.sqrt(d["pwrss"] / (n - p)), rel=REL)
    assert d["wrss"] + d["ussq"] == pytest.approx(d["pwrss"], rel=REL)
    assert fit.reml_criterion == pytest.approx(-2 * fit.loglik, rel=REL)
    assert fit.aic == pytest.approx(ref["AIC"], rel=1e-6)
    assert fit.bic == pytest.approx(ref["BIC"], rel=1e-6)
    V = fit.vcov.to_numpy()
    assert np.all(np.linalg.eigvalsh(V) > 0)


def test_tidy_table(fit):
    t = fit.tidy()
    assert list(t.columns) == ["effect", "group", "term", "estimate", "std_error", "statistic",
                               "df", "p_value"]
    fixed = t[t.effect == "fixed"].set_index("term")
    np.testing.assert_allclose(fixed["estimate"], fit.fixef, rtol=REL)
    np.testing.assert_allclose(fixed["statistic"], fit.fixef / np.sqrt(np.diag(fit.vcov)), rtol=REL)
    rp = t[t.effect == "ran_pars"].set_index("term")
    assert rp.loc["sd__Observation", "estimate"] == pytest.approx(fit.sigma, rel=REL)
    vc = fit.varcorr.to_frame()
    cor = vc[vc.var2.notna()]["sdcor"].iloc[0]
    assert rp.loc["cor__(Intercept).Days", "estimate"] == pytest.approx(cor, rel=REL)


def test_anova_refits_reml_with_ml(sleep):
    small = mixedfit.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    big = mixedfit.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    tab = mixedfit.anova(small, big)
    ml_small = mixedfit.lmer("Reaction ~ Days + (1 | Subject)", sleep, reml=False)
    ml_big = mixedfit.lmer("Reaction ~ Days + (Days | Subject)", sleep, reml=False)
    assert list(tab["npar"]) == [4, 6]
    chisq = ml_small.deviance - ml_big.deviance
    assert tab["Chisq"].iloc[1] == pytest.approx(chisq, rel=1e-6)
    assert tab["Df"].iloc[1] == 2
    from scipy.stats import chi2

    assert tab["Pr(>Chisq)"].iloc[1] == pytest.approx(chi2.sf(chisq, 2), rel=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        mixedfit.anova()


def test_singular_fit_flagged():
    ref = model_ref("lmm", "dyestuff2")
    df = load_data("lmm", ref["data"])
    fit = mixedfit.lmer(ref["formula"], df)
    assert fit.is_singular() is True
    assert "boundary (singular) fit" in str(fit.summary())


def test_rank_deficient_fixed_effects_dropped_with_warning(sleep):
    df = sleep.copy()
    df["Days2"] = 2.0 * df["Days"]
    with pytest.warns(UserWarning, match="rank deficient so dropping 1 column.*Days2"):
        fit = mixedfit.lmer("Reaction ~ Days + Days2 + (1 | Subject)", df)
    assert list(fit.fixef.index) == ["(Intercept)", "Days"]
    ref = mixedfit.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    assert fit.reml_criterion == pytest.approx(ref.reml_criterion, rel=1e-10)


def test_missing_rows_dropped_and_counted(sleep):
    df = sleep.copy()
    df.loc[[0, 5, 7], "Reaction"] = np.nan
    with pytest.warns(UserWarning, match="dropped 3 row"):
        fit = mixedfit.lmer("Reaction ~ Days + (1 | Subject)", df)
    assert fit.nobs == len(df) - 3
    ref = mixedfit.lmer("Reaction ~ Days + (1 | Subject)", df.dropna())
    assert fit.reml_criterion == pytest.approx(ref.reml_criterion, rel=1e-12)
    assert len(fit.fitted()) == fit.nobs and 0 not in fit.fitted().index


def test_control_and_objective(fit, sleep):
    f2 = mixedfit.lmer("Reaction ~ Days + (Days | Subject)", sleep,
                       control=mixedfit.Control(start=tuple(fit.theta)))
    assert f2.reml_criterion == pytest.approx(fit.reml_criterion, rel=1e-10)
    assert fit.objective(fit.theta) == pytest.approx(fit.reml_criterion, rel=1e-12)
    with pytest.raises(ValueError, match="maxeval"):
        mixedfit.Control(maxeval=0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        mixedfit.Control(optimizer="nelder")
    with pytest.raises(ValueError, match="length 3"):
        mixedfit.lmer("Reaction ~ Days + (Days | Subject)", sleep, control={"start": (1.0,)})


def test_nested_and_interaction_grouping_names():
    ref = model_ref("lmm", "pastes")
    df = load_data("lmm", ref["data"])
    fit = mixedfit.lmer("strength ~ 1 + (1 | batch/cask)", df)
    assert fit.ngroups == {"cask:batch": 30, "batch": 10}
    same = mixedfit.lmer("strength ~ 1 + (1 | batch) + (1 | cask:batch)", df)
    assert same.reml_criterion == pytest.approx(fit.reml_criterion, rel=1e-10)
    assert set(fit.ranef()["cask:batch"].index) == set(same.ranef()["cask:batch"].index)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        str(fit.summary())


def test_response_without_residual_variation_is_a_clear_error(sleep):
    df = sleep.copy()
    df["const"] = 5.0
    df["line"] = 2.0 * df["Days"] + 1.0
    for resp in ("const", "line"):
        with pytest.raises(mixedfit.DataError, match=f"'{resp}' is fitted exactly"):
            mixedfit.lmer(f"{resp} ~ Days + (1 | Subject)", df)


def test_formula_offset_in_fit_and_prediction(sleep):
    df = sleep.copy()
    df["o"] = np.sqrt(df["Days"])
    fit = mixedfit.lmer("Reaction ~ Days + offset(3 * o) + (1 | Subject)", df)
    same = mixedfit.lmer("Reaction ~ Days + (1 | Subject)", df, offset=3 * df["o"].to_numpy())
    assert fit.reml_criterion == pytest.approx(same.reml_criterion, rel=1e-12)
    np.testing.assert_allclose(fit.predict(df), fit.fitted().to_numpy(), rtol=REL)
    shifted = mixedfit.lmer("I(Reaction - 3 * o) ~ Days + (1 | Subject)", df)
    np.testing.assert_allclose(fit.fixef, shifted.fixef, rtol=1e-6)


def test_model_without_fixed_effects_is_an_ml_fit():
    """lme4 reports ``y ~ 0 + (1 | g)`` as a maximum-likelihood fit (with p = 0 the REML
    criterion is the ML deviance): deviance 1985.6797 on sleepstudy (lme4 1.1-31)."""
    from mixedfit import datasets

    fit = mixedfit.lmer("Reaction ~ 0 + (1 | Subject)", datasets.load("sleepstudy"))
    assert not fit.reml
    assert str(fit).startswith("Linear mixed model fit by maximum likelihood")
    assert fit.deviance == pytest.approx(1985.6797, abs=1e-4)
