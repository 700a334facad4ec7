"""A fit reports what really happened: which optimizer produced the estimates, whether it
converged, and whether the fit is singular -- at fit time (warnings, as lme4) and in print()."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedfit
from mixedfit import ConvergenceWarning, SingularFitWarning

from _reference import load_data

REFERENCE = Path(__file__).resolve().parent / "reference" / "lme4_numerics.json"


def _record(fn, *args, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fn(*args, **kw)
    return fit, caught


def _singular_data(seed=1):
    """Clusters that carry no variance at all: the ML/REML estimate is exactly 0."""
    rng = np.random.default_rng(seed)
    n, G = 200, 20
    g = np.repeat(np.arange(G), n // G)
    y = 0.5 * rng.normal(size=n)
    y = y - pd.Series(y).groupby(g).transform("mean").to_numpy() + 1.0  # equal cluster means
    return pd.DataFrame({"y": y, "x": rng.normal(size=n), "g": g.astype(str)})


# ---- maxeval ----------------------------------------------------------------------------

def test_lmer_that_hits_maxeval_says_so():
    sleep = load_data("lmm", "sleepstudy")
    fit, caught = _record(mixedfit.lmer, "Reaction ~ Days + (Days | Subject)", sleep,
                          control={"optimizer": "bobyqa", "maxeval": 5})
    conv = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert conv and "convergence code 5 from nloptwrap" in str(conv[0].message)
    assert "maxeval" in str(conv[0].message)
    assert not fit.converged
    assert fit.optinfo.method == "nloptwrap" and fit.optinfo.code == 5
    summary = str(fit.summary())
    assert ("optimizer (nloptwrap) convergence code: 5 (NLOPT_MAXEVAL_REACHED: Optimization "
            "stopped because maxeval (above) was reached.)") in summary
    assert "; 1 optimizer warnings; 0 lme4 warnings" in str(fit)


def test_converged_fit_prints_no_convergence_line():
    sleep = load_data("lmm", "sleepstudy")
    fit, caught = _record(mixedfit.lmer, "Reaction ~ Days + (Days | Subject)", sleep)
    assert fit.converged and not caught
    assert "convergence code" not in str(fit.summary())


def test_glmer_that_hits_maxeval_says_so():
    cbpp = load_data("glmm", "cbpp")
    fit, caught = _record(mixedfit.glmer, "cbind(incidence, size - incidence) ~ period + (1 | herd)",
                          cbpp, family="binomial", control={"optimizer": "bobyqa", "maxeval": 8})
    assert any(issubclass(w.category, ConvergenceWarning) for w in caught)
    assert not fit.converged
    assert "convergence code: 5" in str(fit.summary())


# ---- the optimizer's name ----------------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["gradient", "bobyqa"])
def test_the_printed_optimizer_is_the_one_that_ran(optimizer):
    df = _singular_data()
    fit, _ = _record(mixedfit.lmer, "y ~ x + (1 | g)", df, control={"optimizer": optimizer})
    assert fit.optinfo.method in ("Newton", "L-BFGS-B", "nloptwrap")
    if optimizer == "bobyqa":
        assert fit.optinfo.method == "nloptwrap"
    assert f"optimizer ({fit.optinfo.method}) convergence code: 0 (OK)" in str(fit.summary())


# ---- singular fits -------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["auto", "gradient", "bobyqa"])
def test_singular_lmm_is_exactly_zero_and_warns(optimizer):
    df = _singular_data()
    fit, caught = _record(mixedfit.lmer, "y ~ x + (1 | g)", df, control={"optimizer": optimizer})
    assert fit.theta[0] == 0.0
    assert fit.varcorr.to_frame().loc[0, "vcov"] == 0.0
    sing = [w for w in caught if issubclass(w.category, SingularFitWarning)]
    assert len(sing) == 1 and str(sing[0].message) == "boundary (singular) fit: see help('isSingular')"
    assert sing[0].filename == __file__  # points at the caller's line, as a warning should
    assert "boundary (singular) fit: see help('isSingular')" in str(fit.summary())


def test_singular_glmm_is_exactly_zero():
    ref = json.loads(REFERENCE.read_text())["grouseticks_unscaled"]
    ticks = _grouseticks()
    fit, caught = _record(mixedfit.glmer, ref["formula"], ticks, family="poisson")
    assert fit.theta[2] == 0.0  # LOCATION: lme4 stops at ~1e-4 without converging there
    assert any(issubclass(w.category, SingularFitWarning) for w in caught)


# ---- grouseticks with unscaled covariates ---------------------------------------------------

def _grouseticks():
    d = load_data("glmm", "grouseticks")
    d["YEAR"] = pd.to_numeric(d["YEAR"].astype(str))
    return d


@pytest.mark.parametrize("optimizer", ["auto", "bobyqa"])
def test_unscaled_grouseticks_fits_as_lme4_with_its_warning(optimizer):
    # Before: PIRLS failed on the default path with "non-finite value" / "collinear".
    ref = json.loads(REFERENCE.read_text())["grouseticks_unscaled"]
    fit, caught = _record(mixedfit.glmer, ref["formula"], _grouseticks(), family="poisson",
                          control={"optimizer": optimizer})
    texts = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert any("Rescale variables?" in t for t in texts)
    assert fit.convergence_messages and "Rescale variables?" in str(fit.summary())
    lme4 = ref["default"]
    # lme4 stopped short of the optimum (its max|grad| check fails); ours is at least as good
    # (to the objective's rounding, ~1e-9) and close to lme4's point: within 2% of a standard
    # error for beta, 1e-3 relative for the two clearly positive theta.
    assert fit.loglik >= lme4["loglik"] - 1e-7
    assert np.all(np.abs(fit.beta - lme4["beta"]) <= 0.02 * np.asarray(lme4["se"]))
    np.testing.assert_allclose(fit.theta[:2], lme4["theta"][:2], rtol=1e-3)
    # lme4's standard errors come from a finite-difference Hessian with steps of 1e-4 in the
    # units of beta -- 0.03 standard errors for HEIGHT -- and are off by ~2% here; ours are
    # those of the same model with centred and scaled covariates, mapped back (below).
    se = np.sqrt(np.diag(fit.vcov.to_numpy()))
    np.testing.assert_allclose(se, lme4["se"], rtol=0.03)
    d = _grouseticks()
    sd_height = float(d.HEIGHT.std())
    d = d.assign(cYEAR=d.YEAR - 96, cHEIGHT=(d.HEIGHT - d.HEIGHT.mean()) / sd_height)
    scaled, _ = _record(mixedfit.glmer, ref["formula"].replace("YEAR", "cYEAR")
                        .replace("HEIGHT", "cHEIGHT"), d, family="poisson",
                        control={"optimizer": optimizer})
    se_scaled = np.sqrt(np.diag(scaled.vcov.to_numpy()))
    np.testing.assert_allclose(se[1:], se_scaled[1:] / np.array([1.0, sd_height]), rtol=1e-4)
    assert fit.loglik == pytest.approx(scaled.loglik, abs=1e-6)


def test_lmm_response_shifts_match_lme4():
    # lme4 fits y + 1e6, y + 1e8, y * 1e-12 and y * 1e12 (and stops short at y + 1e12: its
    # convergence check fails there); ours agrees with lme4's converged fits to 1e-5 (lme4's
    # own drift with the shift: ~1e-5 on the small theta at y + 1e8).
    sleep = load_data("lmm", "sleepstudy")
    for case in json.loads(REFERENCE.read_text())["sleepstudy_response"]:
        if case["messages"]:
            continue
        df = sleep.assign(Reaction=case["shift"] + case["scale"] * sleep.Reaction)
        fit = mixedfit.lmer("Reaction ~ Days + (Days | Subject)", df)
        np.testing.assert_allclose(fit.theta, case["theta"], rtol=1e-5, atol=1e-6)
        assert fit.sigma == pytest.approx(case["sigma"], rel=1e-5)
        np.testing.assert_allclose(fit.beta, case["beta"], rtol=1e-5)
        assert fit.reml_criterion == pytest.approx(case["reml_criterion"], abs=1e-5)
