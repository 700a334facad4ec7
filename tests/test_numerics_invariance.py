"""A fit does not depend on where the response's or a covariate's origin is, or on their units.

The likelihood of y + a is that of y with the intercept moved by a; that of c y is that of y
with beta, b, sigma scaled by c and the criteria moved by constants (REML: (n - p) log c^2;
ML: n log c^2). Scaling a covariate by c scales its coefficient by 1/c and moves the REML
criterion by 2 log|c| (log|RX|^2), shifting it moves the intercept. Every reported number is
checked, over shifts up to 1e12 and scales from 1e-12 to 1e12.

Tolerances. The fit on standardized data sees the same numbers up to the rounding of the
transformed data: y + a carries an absolute rounding of eps |a|, i.e. a relative perturbation
of eps |a| / sd(y) of the data's information (sd(Reaction) ~ 56), which no method can undo
(lme4's own fit moves by as much); the tolerance is 1e-7 plus 1e3 times that. Scaling by a
power of ten rounds every value once (~1e-16), so the fits agree to ~1e-7 (the optimizer's
stopping rule on slightly different rounding).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

import mixedfit

from _reference import load_data

EPS = np.finfo(float).eps
FORMULA = "Reaction ~ Days + (Days | Subject)"


def _fit(df, formula=FORMULA, reml=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mixedfit.lmer(formula, df, reml=reml)


@pytest.fixture(scope="module")
def sleep():
    return load_data("lmm", "sleepstudy")


@pytest.fixture(scope="module", params=[True, False], ids=["REML", "ML"])
def base(request, sleep):
    return request.param, _fit(sleep, reml=request.param)


def _shift_rtol(shift, y):
    return 1e-7 + 1e3 * EPS * abs(shift) / float(np.std(y))


def _ranef(fit):
    return fit.ranef()["Subject"].to_numpy()


@pytest.mark.parametrize("shift", [-1e12, -1e8, -1e3, 1e-12, 1.0, 1e4, 1e6, 1e8, 1e10, 1e12])
def test_shifting_the_response(base, sleep, shift):
    reml, f0 = base
    df = sleep.assign(Reaction=sleep.Reaction + shift)
    f1 = _fit(df, reml=reml)
    rtol = _shift_rtol(shift, sleep.Reaction)
    atol_y = rtol * float(np.std(sleep.Reaction))  # on the response's scale
    assert f1.converged
    np.testing.assert_allclose(f1.theta, f0.theta, rtol=rtol, atol=rtol)
    assert f1.sigma == pytest.approx(f0.sigma, rel=rtol)
    beta0 = f0.beta + np.array([shift, 0.0])
    np.testing.assert_allclose(f1.beta, beta0, rtol=rtol, atol=atol_y)
    np.testing.assert_allclose(f1.vcov.to_numpy(), f0.vcov.to_numpy(), rtol=rtol)
    assert f1.loglik == pytest.approx(f0.loglik, rel=rtol)
    assert f1.deviance == pytest.approx(f0.deviance, rel=rtol)
    if reml:
        assert f1.reml_criterion == pytest.approx(f0.reml_criterion, rel=rtol)
    for key in ("ldL2", "ldRX2", "pwrss", "wrss", "ussq"):
        assert f1.devcomp[key] == pytest.approx(f0.devcomp[key], rel=10 * rtol), key
    np.testing.assert_allclose(f1.residuals().to_numpy(), f0.residuals().to_numpy(),
                               atol=atol_y)
    np.testing.assert_allclose(f1.fitted().to_numpy() - shift, f0.fitted().to_numpy(),
                               atol=atol_y + EPS * abs(shift) * 4)
    np.testing.assert_allclose(_ranef(f1), _ranef(f0), atol=atol_y)
    assert not f1.is_singular()


@pytest.mark.parametrize("scale", [1e-12, 1e-8, 1e-3, 0.5, 7.0, 1e3, 1e8, 1e12, -1e-6])
def test_scaling_the_response(base, sleep, scale):
    reml, f0 = base
    f1 = _fit(sleep.assign(Reaction=sleep.Reaction * scale), reml=reml)
    rtol = 1e-7
    c, c2 = abs(scale), scale * scale
    n, p = f0.nobs, len(f0.beta)
    np.testing.assert_allclose(f1.theta, f0.theta, rtol=rtol, atol=rtol)
    assert f1.sigma == pytest.approx(c * f0.sigma, rel=rtol)
    np.testing.assert_allclose(f1.beta, scale * f0.beta, rtol=rtol)
    np.testing.assert_allclose(f1.vcov.to_numpy(), c2 * f0.vcov.to_numpy(), rtol=rtol)
    log_c2 = math.log(c2)
    # -2 logLik moves by n log c^2 (ML) or (n - p) log c^2 (REML).
    dof = n - p if reml else n
    assert -2 * f1.loglik == pytest.approx(-2 * f0.loglik + dof * log_c2, abs=1e-6)
    assert f1.deviance == pytest.approx(f0.deviance + n * log_c2, abs=1e-6)
    if reml:
        assert f1.reml_criterion == pytest.approx(f0.reml_criterion + dof * log_c2, abs=1e-6)
    for key in ("pwrss", "wrss", "ussq"):
        assert f1.devcomp[key] == pytest.approx(c2 * f0.devcomp[key], rel=rtol), key
    for key in ("ldL2", "ldRX2"):
        assert f1.devcomp[key] == pytest.approx(f0.devcomp[key], rel=rtol, abs=1e-7), key
    np.testing.assert_allclose(f1.fitted().to_numpy(), scale * f0.fitted().to_numpy(), rtol=rtol)
    np.testing.assert_allclose(f1.residuals().to_numpy(), scale * f0.residuals().to_numpy(),
                               rtol=1e-6, atol=1e-7 * c * float(np.std(sleep.Reaction)))
    np.testing.assert_allclose(_ranef(f1), scale * _ranef(f0), rtol=1e-6,
                               atol=1e-7 * c * f0.sigma)


COVARIATE_FORMULA = "Reaction ~ Days + (1 | Subject)"


@pytest.fixture(scope="module")
def covariate_base(sleep):
    return _fit(sleep, COVARIATE_FORMULA)


@pytest.mark.parametrize("shift", [-1e5, -10.0, 1e3, 1e5])
def test_shifting_a_covariate(covariate_base, sleep, shift):
    # Shifts far beyond 1e5 make Days + shift numerically collinear with the intercept (the
    # rank check, as lme4's, drops the column), so that is where this invariance ends.
    f0 = covariate_base
    f1 = _fit(sleep.assign(Days=sleep.Days + shift), COVARIATE_FORMULA)
    rtol = 1e-7 + 1e3 * EPS * abs(shift) / float(np.std(sleep.Days))
    np.testing.assert_allclose(f1.theta, f0.theta, rtol=rtol)
    assert f1.sigma == pytest.approx(f0.sigma, rel=rtol)
    slope = f0.beta[1]
    assert f1.beta[1] == pytest.approx(slope, rel=rtol)
    assert f1.beta[0] == pytest.approx(f0.beta[0] - shift * slope, rel=rtol, abs=rtol * 100)
    assert f1.vcov.iloc[1, 1] == pytest.approx(f0.vcov.iloc[1, 1], rel=rtol)
    assert f1.reml_criterion == pytest.approx(f0.reml_criterion, rel=rtol)
    np.testing.assert_allclose(f1.fitted().to_numpy(), f0.fitted().to_numpy(), rtol=rtol)
    np.testing.assert_allclose(_ranef(f1), _ranef(f0), rtol=1e-6, atol=rtol * f0.sigma)


@pytest.mark.parametrize("scale", [1e-12, 1e-6, 1e6, 1e12])
def test_scaling_a_covariate(covariate_base, sleep, scale):
    f0 = covariate_base
    f1 = _fit(sleep.assign(Days=sleep.Days * scale), COVARIATE_FORMULA)
    rtol = 1e-7
    np.testing.assert_allclose(f1.theta, f0.theta, rtol=rtol)
    assert f1.sigma == pytest.approx(f0.sigma, rel=rtol)
    np.testing.assert_allclose(f1.beta, f0.beta / np.array([1.0, scale]), rtol=rtol)
    assert f1.vcov.iloc[1, 1] == pytest.approx(f0.vcov.iloc[1, 1] / scale**2, rel=rtol)
    # log|RX|^2 gains 2 log|scale|: REML criterion moves by that, the ML deviance does not.
    assert f1.reml_criterion == pytest.approx(f0.reml_criterion + 2 * math.log(scale), abs=1e-6)
    assert f1.deviance == pytest.approx(f0.deviance, abs=1e-6)
    np.testing.assert_allclose(f1.fitted().to_numpy(), f0.fitted().to_numpy(), rtol=rtol)


def test_tiny_response_is_not_constant(sleep):
    # An absolute threshold called y * 1e-12 constant.
    fit = _fit(sleep.assign(Reaction=sleep.Reaction * 1e-12))
    assert fit.sigma == pytest.approx(25.5918e-12, rel=1e-5)


@pytest.mark.parametrize("value", [0.0, 1e-300, 5.0, 1e12])
def test_constant_response_is_refused(sleep, value):
    with pytest.raises(mixedfit.DataError, match="Reaction.*constant"):
        mixedfit.lmer(FORMULA, sleep.assign(Reaction=value))


def test_response_fitted_exactly_by_the_fixed_effects_is_refused(sleep):
    df = sleep.assign(Reaction=1e8 + 3.0 * sleep.Days)
    with pytest.raises(mixedfit.DataError, match="fitted exactly"):
        mixedfit.lmer(FORMULA, df)


def test_weighted_fit_is_invariant(sleep):
    rng = np.random.default_rng(3)
    df = sleep.assign(w=rng.uniform(0.2, 5.0, len(sleep)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f0 = mixedfit.lmer(FORMULA, df, weights="w")
        f1 = mixedfit.lmer(FORMULA, df.assign(Reaction=df.Reaction * 1e-9 + 1e-3), weights="w")
    np.testing.assert_allclose(f1.theta, f0.theta, rtol=1e-6)
    assert f1.sigma == pytest.approx(1e-9 * f0.sigma, rel=1e-6)
    assert f1.beta[1] == pytest.approx(1e-9 * f0.beta[1], rel=1e-6)


@pytest.mark.parametrize("shift, scale", [(1e8, 1.0), (0.0, 1e-12), (-1e10, 1e3)])
def test_crossed_model_is_invariant(shift, scale):
    # Two crossed terms: the dense "rest" block of the core carries the second term, X and y.
    pen = load_data("lmm", "Penicillin")
    f0 = _fit(pen, "diameter ~ 1 + (1 | plate) + (1 | sample)")
    f1 = _fit(pen.assign(diameter=shift + scale * pen.diameter),
              "diameter ~ 1 + (1 | plate) + (1 | sample)")
    rtol = 1e-7 + 1e3 * EPS * abs(shift) / (abs(scale) * float(np.std(pen.diameter)))
    np.testing.assert_allclose(f1.theta, f0.theta, rtol=rtol)
    assert f1.sigma == pytest.approx(abs(scale) * f0.sigma, rel=rtol)
    assert f1.beta[0] == pytest.approx(shift + scale * f0.beta[0], rel=rtol)
    n_minus_p = f0.nobs - 1
    assert f1.reml_criterion == pytest.approx(
        f0.reml_criterion + n_minus_p * math.log(scale * scale), abs=1e-6 + rtol * 1e3)


def test_standardized_problem_pickles_and_copies(sleep):
    # The core object cannot be pickled; the standardized arrays can, and rebuild it.
    import copy
    import pickle

    fit = _fit(sleep.assign(Reaction=sleep.Reaction + 1e8))
    for prob in (pickle.loads(pickle.dumps(fit._problem)), copy.deepcopy(fit._problem)):
        assert prob.core is not fit._problem.core
        assert prob.objective(fit.theta, True) == fit.reml_criterion
        np.testing.assert_array_equal(prob.solution(fit.theta)["beta"], fit.beta)
    again = pickle.loads(pickle.dumps(fit))
    assert again.objective(fit.theta * 1.1) == fit.objective(fit.theta * 1.1)
