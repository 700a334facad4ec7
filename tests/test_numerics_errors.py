"""Bad arguments are refused up front, naming the argument; numerical failures are
NumericalError/ConvergenceError with advice, never a bare ValueError or a misleading message."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedfit
from mixedfit import DataError, NumericalError

from _reference import load_data


@pytest.fixture(scope="module")
def sleep():
    return load_data("lmm", "sleepstudy")


@pytest.fixture(scope="module")
def cbpp():
    return load_data("glmm", "cbpp")


CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


# ---- booleans ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["no", "FALSE", 0, 1, None, 0.0, [False]])
def test_reml_must_be_a_boolean(sleep, value):
    # bool("no") is True: this used to fit REML silently.
    with pytest.raises(DataError, match="reml must be True or False"):
        mixedfit.lmer("Reaction ~ Days + (1 | Subject)", sleep, reml=value)


def test_numpy_booleans_are_booleans(sleep):
    fit = mixedfit.lmer("Reaction ~ Days + (1 | Subject)", sleep, reml=np.False_)
    assert fit.reml is False and fit.reml_criterion is None


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_fast_must_be_a_boolean(cbpp, value):
    with pytest.raises(DataError, match="fast must be True or False"):
        mixedfit.glmer(CBPP, cbpp, family="binomial", fast=value)


@pytest.mark.parametrize("field, value", [("maxeval", True), ("pirls_maxiter", 2.5),
                                          ("ftol_abs", True), ("xtol_abs", "1e-8")])
def test_control_numbers_are_numbers(field, value):
    with pytest.raises(ValueError, match=f"control.{field}"):
        mixedfit.Control(**{field: value})


# ---- nagq ----------------------------------------------------------------------------------

@pytest.mark.parametrize("nagq", [26, 1000, -1])
def test_nagq_outside_lme4s_range_is_refused_up_front(cbpp, nagq):
    with pytest.raises(DataError, match=r"nagq must be an integer from 0 to 25.*" + str(nagq)):
        mixedfit.glmer(CBPP, cbpp, family="binomial", nagq=nagq)


@pytest.mark.parametrize("nagq", [True, 2.0, "5"])
def test_nagq_must_be_an_integer(cbpp, nagq):
    with pytest.raises(DataError, match="nagq must be an integer"):
        mixedfit.glmer(CBPP, cbpp, family="binomial", nagq=nagq)


def test_nagq_25_is_allowed(cbpp):
    fit = mixedfit.glmer(CBPP, cbpp, family="binomial", nagq=25)
    assert fit.nagq == 25


def test_quadrature_needs_one_scalar_term(cbpp):
    df = cbpp.assign(h2=(cbpp.herd.cat.codes % 3).astype(str))
    with pytest.raises(DataError, match="nagq = 5.*single scalar"):
        mixedfit.glmer(CBPP + " + (1 | h2)", df, family="binomial", nagq=5)


# ---- control.start -------------------------------------------------------------------------

@pytest.mark.parametrize("start, match", [
    ((1.0, float("nan"), 0.5), r"control.start\[1\] is nan"),
    ((1.0, float("inf"), 0.5), r"control.start\[1\] is inf"),
    ("one", "control.start must be numbers, got the text 'one'"),
    ((1.0, "x", 0.5), "control.start must be numbers"),
    ({"theta": 1}, "control.start must be numbers"),
])
def test_bad_start_is_named(sleep, start, match):
    with pytest.raises(DataError, match=match):
        mixedfit.lmer("Reaction ~ Days + (Days | Subject)", sleep, control={"start": start})


def test_start_of_the_wrong_length_is_named(sleep, cbpp):
    with pytest.raises(DataError, match="control.start must have length 3"):
        mixedfit.lmer("Reaction ~ Days + (Days | Subject)", sleep, control={"start": (1.0,)})
    with pytest.raises(DataError, match="control.start must have length 5"):
        mixedfit.glmer(CBPP, cbpp, family="binomial", control={"start": (1.0, 0.0)})


def test_glmm_start_is_in_the_data_units(cbpp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mixedfit.glmer(CBPP, cbpp, family="binomial")
        again = mixedfit.glmer(CBPP, cbpp, family="binomial",
                               control={"start": tuple(np.r_[fit.theta, fit.beta])})
    np.testing.assert_allclose(again.beta, fit.beta, rtol=1e-5, atol=1e-6)


# ---- constant responses --------------------------------------------------------------------

@pytest.mark.parametrize("family, value", [("binomial", 0), ("binomial", 1), ("poisson", 0),
                                           ("poisson", 3)])
def test_constant_glmm_response(cbpp, family, value):
    # Used to blame "collinear" fixed-effect columns.
    df = cbpp.assign(y=value)
    with pytest.raises(DataError, match=f"Response is constant: every value of 'y' is {value}"):
        mixedfit.glmer("y ~ period + (1 | herd)", df, family=family)


def test_constant_cbind_response(cbpp):
    df = cbpp.assign(incidence=0)
    with pytest.raises(DataError, match="Response is constant"):
        mixedfit.glmer(CBPP, df, family="binomial")


# ---- numerical failures --------------------------------------------------------------------

def test_core_value_errors_become_numerical_errors():
    from mixedfit._errors import numerical_failures_explained

    with pytest.raises(NumericalError, match="non-finite value.*try rescaling"):
        with numerical_failures_explained("try rescaling"):
            raise ValueError("PIRLS (Laplace/AGQ stage): non-finite value in the parameters")
    with pytest.raises(DataError):  # mixedfit's own errors pass as they are
        with numerical_failures_explained("try rescaling"):
            raise DataError("bad column 'x'")


def test_covariate_with_a_huge_offset_fits_a_glmm():
    # x + 1e5 next to an intercept: PIRLS on the raw columns loses the digits of the slope.
    rng = np.random.default_rng(4)
    n, G = 400, 25
    g = rng.integers(0, G, n)
    x = rng.normal(size=n)
    eta = -0.3 + 0.8 * x + rng.normal(0, 0.7, G)[g]
    y = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    df = pd.DataFrame({"y": y, "x": x, "g": g.astype(str)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f0 = mixedfit.glmer("y ~ x + (1 | g)", df, family="binomial")
        f1 = mixedfit.glmer("y ~ x + (1 | g)", df.assign(x=df.x + 1e5), family="binomial")
        f2 = mixedfit.glmer("y ~ x + (1 | g)", df.assign(x=df.x * 1e-6), family="binomial")
        f3 = mixedfit.glmer("y ~ x + (1 | g)", df.assign(x=df.x * 1e9), family="binomial")
        f4 = mixedfit.glmer("y ~ x + (1 | g)", df.assign(x=df.x * 1e-12), family="binomial")
    # Tolerances: the Laplace optimum is found to ~1e-7 in the parameters; x + 1e5 rounds x
    # to ~1e-11 absolute.
    for f, slope_factor in ((f1, 1.0), (f2, 1e6), (f3, 1e-9), (f4, 1e12)):
        assert f.loglik == pytest.approx(f0.loglik, abs=1e-6)
        np.testing.assert_allclose(f.theta, f0.theta, rtol=1e-4)
        assert f.beta[1] == pytest.approx(f0.beta[1] * slope_factor, rel=1e-4)
        se0, se = np.sqrt(f0.vcov.iloc[1, 1]), np.sqrt(f.vcov.iloc[1, 1])
        assert se == pytest.approx(se0 * slope_factor, rel=1e-3)
    assert f1.beta[0] == pytest.approx(f0.beta[0] - 1e5 * f0.beta[1], rel=1e-4)


# ---- lme4's hint on predictor scales -------------------------------------------------------

@pytest.mark.parametrize("scale, warns", [(1.0, False), (1e2, False), (1e4, True), (1e-4, True)])
def test_predictors_on_very_different_scales_warn_as_lme4(sleep, scale, warns):
    # lme4: Days * 1e6 -> "Some predictor variables are on very different scales: consider
    # rescaling" (a column's SD beyond 1e3, or two SDs a factor 1e3 apart; 0/1 columns aside).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixedfit.lmer("Reaction ~ Days + (1 | Subject)", sleep.assign(Days=sleep.Days * scale))
    texts = [str(w.message) for w in caught]
    hint = "Some predictor variables are on very different scales: consider rescaling"
    assert (hint in texts) == warns
    if warns:
        assert [w.filename for w in caught if str(w.message) == hint] == [__file__]
