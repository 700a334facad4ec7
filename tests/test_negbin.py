"""Negative binomial GLMMs (``glmer_nb``, ``family=NegativeBinomial(theta)``) against lme4 1.1-31's
``glmer.nb`` and glmmTMB's ``nbinom2``, frozen in tests/reference/lme4_negbin.json by
tests/reference/make_negbin_reference.R (MASS's epil, lme4's grouseticks, simulated crossed
over-dispersed counts).

Which one mixedfit matches: lme4. Both packages maximize the Laplace approximation, but lme4's
(and mixedfit's) log|L|^2 term is built from PIRLS's *expected* (Fisher) weights
mu_eta^2 / V(mu), while glmmTMB's uses the *observed* Hessian of the negative log-likelihood in
the random effects. For the canonical links of the binomial and Poisson families the two agree;
the NB2 log link is not canonical (its canonical link is log(mu / (mu + theta))), so they
differ by the factor (y + theta) / (mu + theta) in each weight. The two Laplace likelihoods,
and hence their optima, differ: on these data by 0.004 to 0.07 in log-likelihood, up to ~0.2
standard errors in the intercept and ~0.01 standard errors in the slopes, ~0.5% in theta
(see test_glmmtmb_differs_only_by_the_laplace_hessian). Against lme4 the objective is the same
function: at lme4's own parameters mixedfit's -2 log L equals lme4's deviance function (with
PIRLS converged tightly, tolPwrss = 1e-12) to ~2e-9 relative. lme4's default tolPwrss = 1e-7 stops
PIRLS early for this non-canonical link, which leaves lme4's reported values ~1e-4 above the
Laplace value at the exact mode; mixedfit's PIRLS converges to ~1e-10.

Tolerances, and why:
- same function at the same point (fixed theta, lme4's parameters): 1e-8 relative in -2 log L
  (both PIRLS converged tightly, yet they stop at different points of the last step).
- estimated theta: mixedfit optimizes (log theta, the rest) jointly to glmer's tolerances, lme4's
  glmer.nb stops its alternation of theta and refits at a loose tolerance, so theta and the
  other estimates agree to lme4's precision only: 2e-3 relative in theta, 2e-3 of a
  standard error in beta; the log-likelihood must never be below lme4's (by more than 1e-6)
  and no more than 1e-3 above it.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedfit
from mixedfit import DataError
from mixedfit.families import NegativeBinomial

from _reference import load_data

REF = json.loads((Path(__file__).parent / "reference" / "lme4_negbin.json").read_text())
DATA = Path(__file__).parent / "reference" / "data"


def _data(case: str) -> pd.DataFrame:
    if case == "grouseticks":
        return load_data("glmm", "grouseticks")
    d = pd.read_csv(DATA / REF[case]["data"])
    factors = ["subject"] if case == "epil" else ["A", "B"]
    for v in factors:  # R's factor(): levels in numeric order
        d[v] = pd.Categorical(d[v], categories=sorted(d[v].unique()))
    return d


_FITS: dict = {}


def _fit(case: str):
    if case not in _FITS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # grouseticks' LOCATION variance is on the boundary
            _FITS[case] = mixedfit.glmer_nb(REF[case]["formula"], _data(case))
    return _FITS[case]


CASES = [pytest.param("epil"),
         pytest.param("grouseticks", marks=pytest.mark.slow),
         pytest.param("sim_crossed", marks=pytest.mark.slow)]


@pytest.mark.parametrize("case", CASES)
def test_glmer_nb_reaches_lme4s_optimum_or_better(case):
    ref = REF[case]["glmer_nb"]
    fit = _fit(case)
    assert fit.loglik >= ref["loglik"] - 1e-6
    assert fit.loglik <= ref["loglik"] + 1e-3
    assert fit.nb_theta == pytest.approx(ref["nb_theta"], rel=2e-3)
    se = np.asarray(ref["se"])
    assert np.all(np.abs(fit.beta - np.asarray(ref["beta"])) <= 2e-3 * se + 1e-6)
    assert np.allclose(fit.theta, ref["theta"], atol=2e-3)
    assert fit.df == ref["df"]
    assert fit.aic == pytest.approx(ref["aic"], abs=2e-3)
    assert np.allclose(fit.vcov.to_numpy().diagonal() ** 0.5, se, rtol=5e-3)


@pytest.mark.parametrize("case", CASES)
def test_fixed_theta_is_lme4s_objective(case):
    """glmer with NegativeBinomial(theta) at lme4's theta: the same optimum, and the same value
    of the objective at lme4's own parameters."""
    ref = REF[case]["fixed_theta"]
    data = _data(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mixedfit.glmer(REF[case]["formula"], data, family=NegativeBinomial(ref["nb_theta"]))
    at_lme4 = fit.objective(np.r_[ref["theta"], ref["beta"]])
    assert at_lme4 == pytest.approx(ref["deviance_tight_at_optimum"], rel=1e-8)
    # mixedfit's optimum is at least as good as lme4's on lme4's (tightly evaluated) objective;
    # lme4's reported logLik is off by its early PIRLS stop either way, by up to ~2e-3 here.
    assert fit.loglik >= -0.5 * ref["deviance_tight_at_optimum"] - 1e-7
    assert fit.loglik == pytest.approx(ref["loglik"], abs=3e-3)


@pytest.mark.parametrize("case", CASES)
def test_glmmtmb_differs_only_by_the_laplace_hessian(case):
    """glmmTMB's nbinom2 fit (exact Laplace Hessian) is close to, not equal to, lme4's."""
    tmb, ref = REF[case]["glmmTMB"], REF[case]["glmer_nb"]
    fit = _fit(case)
    se = np.asarray(tmb["se"])
    assert np.all(np.abs(fit.beta - np.asarray(tmb["beta"])) <= 0.25 * se)
    assert fit.nb_theta == pytest.approx(tmb["nb_theta"], rel=0.05)
    assert abs(fit.loglik - tmb["loglik"]) < 0.1
    assert abs(fit.loglik - ref["loglik"]) < abs(fit.loglik - tmb["loglik"]) + 1e-9


def test_summary_in_lme4s_layout():
    fit = _fit("epil")
    text = str(fit.summary())
    # lme4 prints "Negative Binomial(7.4167)": theta rounded to 4 decimals. mixedfit's theta
    # (a slightly better optimum) differs from lme4's in the 5th digit.
    assert REF["epil"]["glmer_nb"]["family"] == "Negative Binomial(7.4167)"
    assert f" Family: Negative Binomial({round(fit.nb_theta, 4):.7g})  ( log )\n" in text
    assert " Family: Negative Binomial(7.41" in text
    assert "Generalized linear mixed model fit by maximum likelihood (Laplace" in text


def test_ranef_condvar_and_predict():
    fit, ref = _fit("epil"), REF["epil"]["glmer_nb"]
    re = fit.ranef(condvar=True)["subject"]
    assert np.allclose(re["(Intercept)"].to_numpy(), ref["ranef1"], atol=2e-3)
    assert np.allclose(re["condsd_(Intercept)"].to_numpy(), ref["condsd1"], rtol=5e-3)
    # the Python family's deviance residuals agree with the core's deviance
    assert np.sum(fit.residuals() ** 2) == pytest.approx(fit.deviance, rel=1e-12)
    data = _data("epil")
    mu = fit.predict(data, type="response")
    assert np.allclose(np.asarray(mu), fit.fitted().to_numpy())


def test_lrt_against_poisson():
    fit, ref = _fit("epil"), REF["epil"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pois = mixedfit.glmer(ref["formula"], _data("epil"), family="poisson")
    assert ref["poisson"]["loglik"] - 1e-6 <= pois.loglik <= ref["poisson"]["loglik"] + 1e-3
    table = mixedfit.anova(pois, fit)
    assert table["Df"].iloc[1] == 1
    assert table["Chisq"].iloc[1] == pytest.approx(2 * (fit.loglik - pois.loglik))


def test_no_overdispersion_gives_the_poisson_fit():
    # binomial counts: less variable than Poisson, so the NB likelihood increases with theta
    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(20), 15)
    y = rng.binomial(20, 0.2 * np.exp(rng.normal(0, 0.3, 20))[g])
    d = pd.DataFrame({"y": y, "g": pd.Categorical(g.astype(str))})
    with pytest.warns(UserWarning, match="no over-dispersion"):
        fit = mixedfit.glmer_nb("y ~ 1 + (1 | g)", d)
    pois = mixedfit.glmer("y ~ 1 + (1 | g)", d, family="poisson")
    assert math.isinf(fit.nb_theta)
    assert fit.loglik == pytest.approx(pois.loglik)


def test_agq_for_a_single_scalar_term():
    d = _data("epil")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agq = mixedfit.glmer_nb(REF["epil"]["formula"], d, nagq=7)
    lap = _fit("epil")
    assert agq.nagq == 7
    assert agq.nb_theta == pytest.approx(lap.nb_theta, rel=0.05)
    assert abs(agq.loglik - lap.loglik) < 1.0


@pytest.mark.parametrize("bad, match", [
    (-1, "negative values"), (1.5, "non-integer values")])
def test_bad_counts(bad, match):
    d = _data("epil").copy()
    d["y"] = d["y"].astype(float)
    d.loc[3, "y"] = bad
    with pytest.raises(DataError, match=match):
        mixedfit.glmer_nb(REF["epil"]["formula"], d)
    with pytest.raises(DataError, match=match):
        mixedfit.glmer(REF["epil"]["formula"], d, family=NegativeBinomial(2.0))


@pytest.mark.parametrize("theta", [0, -1.0, float("nan"), float("inf"), "2", True])
def test_bad_theta(theta):
    with pytest.raises(DataError, match="theta"):
        NegativeBinomial(theta)
    with pytest.raises(DataError, match="theta"):
        mixedfit.glmer_nb(REF["epil"]["formula"], _data("epil"), init_theta=theta)


def test_family_name_without_theta_is_refused():
    with pytest.raises(ValueError, match="needs its theta"):
        mixedfit.glmer(REF["epil"]["formula"], _data("epil"), family="negative.binomial")


def test_links():
    assert NegativeBinomial(2.0).link == "log"
    assert NegativeBinomial(2.0, "sqrt").link == "sqrt"
    with pytest.raises(ValueError, match="link 'logit'"):
        NegativeBinomial(2.0, "logit")
    with pytest.raises(ValueError, match="link 'logit' is not available for family 'negative"):
        mixedfit.glmer_nb(REF["epil"]["formula"], _data("epil"), link="logit")


def test_glmer_start_seeds_the_first_stage():
    """control.start's theta starts lme4's first stage too (as lme4's start$theta does), so the
    refit at glmer_nb's theta does not search the first stage from scratch."""
    d, formula = _data("epil"), REF["epil"]["formula"]
    fam = NegativeBinomial(7.4)
    cold = mixedfit.glmer(formula, d, family=fam)
    warm = mixedfit.glmer(formula, d, family=fam,
                          control={"start": tuple(np.r_[cold.theta, cold.beta])})
    assert warm.optinfo_stage1.nevals < cold.optinfo_stage1.nevals
    assert warm.loglik == pytest.approx(cold.loglik, abs=1e-6)


def test_pooling_table_uses_the_fitted_family():
    """The shrinkage tools take the family from the fit (its printed name carries a rounded
    theta and is not a family name)."""
    table = mixedfit.shrinkage.pooling_table(_fit("epil"))
    assert len(table) == 59
    estimable = table["nopool_note"] == ""
    assert estimable.sum() >= 55  # a subject with only zero counts has no no-pooling estimate
    assert np.all(np.isfinite(table.loc[estimable, "shrinkage"]))
