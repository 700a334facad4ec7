"""mixedfit.lmer against frozen lme4 1.1-31 values (tests/reference/lme4_lmm.json).

Each model in the reference file is fitted once; every test below runs for every model.
The tolerances are named here with the reason for each; tests/reference/README.md has the
measurements behind them.
"""

from __future__ import annotations

import numpy as np
import pytest

from _reference import (
    assert_close,
    check_ngroups,
    check_ranef,
    check_varcorr,
    fixef_tolerance,
    get_fit,
    matrix_in_order,
    model_ids,
    model_ref,
    need,
    series_in_order,
)

KIND = "lmm"

# The profiled criterion at a fixed theta is the same arithmetic in both programs: only
# floating-point rounding separates them.
OBJECTIVE_RTOL = 1e-8
# REML criterion / deviance at the optimum: both optimizers stop within ~1e-8 of the minimum
# of a smooth function, so the minima agree far more closely than the arguments do.
CRITERION_RTOL = 1e-6
# Fixed effects, relative to max(|estimate|, SE): they move with theta, which two optimizers
# leave at slightly different points (another lme4 optimizer moves them by < 1e-6).
FIXEF_RTOL = 1e-4
# Standard errors (vcov entries: twice this, relative to sqrt(V_ii V_jj)): as fixef.
SE_RTOL = 1e-4
# Residual standard deviation: same reason as fixef.
SIGMA_RTOL = 1e-4
# Theta: the optimizer's stopping rule (xtol/ftol ~1e-8 on a flat minimum) leaves theta
# itself uncertain at ~1e-4 (measured across lme4's own optimizers).
THETA_ATOL = 1e-3
# VarCorr: standard deviations relative, with a floor of THETA_ATOL in units of the residual
# SD (a standard deviation is sigma times a function of theta); correlations absolute.
VARCORR_RTOL = 1e-3
CORR_ATOL = 2e-3
# Conditional modes and SDs, absolute in units of max(1, sigma): they are on the response
# scale and follow theta, whose tolerance is in units of sigma.
RANEF_ATOL = 1e-3
# Deviance components at the optimum: functions of theta, evaluated where each optimizer
# stopped; same reason as fixef.
DEVCOMP_RTOL = 1e-4

IDS = model_ids(KIND)


@pytest.fixture(params=IDS)
def case(request):
    """(model id, lme4 reference record, mixedfit fit)."""
    mid = request.param
    return mid, model_ref(KIND, mid), get_fit(KIND, mid)


def test_nobs_and_ngroups(case):
    mid, ref, fit = case
    check_ngroups(fit, ref, mid)


def test_objective_at_fixed_theta(case):
    """The profiled REML/ML criterion at given theta vectors, independent of the optimizer:
    lme4's start, its optimum, a perturbed point and theta = 0 (no random effects)."""
    mid, ref, fit = case
    objective = need(fit, "objective", mid)
    for point in ref["objective_at_theta"]:
        value = objective(np.asarray(point["theta"], dtype=float))
        assert_close(value, point["value"], rtol=OBJECTIVE_RTOL,
                     what=f"objective at theta '{point['label']}' {point['theta']}", model_id=mid)


def test_criterion_at_optimum(case):
    mid, ref, fit = case
    if ref["REML"]:
        value = need(fit, "reml_criterion", mid)
        assert_close(value, ref["REMLcrit"], rtol=CRITERION_RTOL, what="REML criterion",
                     model_id=mid)
    else:
        value = need(fit, "deviance", mid)
        assert_close(value, ref["deviance"], rtol=CRITERION_RTOL, what="deviance (-2 logLik)",
                     model_id=mid)


def test_loglik_aic_bic(case):
    mid, ref, fit = case
    for attr, key in (("loglik", "logLik"), ("aic", "AIC"), ("bic", "BIC")):
        assert_close(need(fit, attr, mid), ref[key], rtol=CRITERION_RTOL, what=attr,
                     model_id=mid)


def test_fixef(case):
    mid, ref, fit = case
    names = list(ref["fixef"])
    got = series_in_order(need(fit, "fixef", mid), names, "fixef", mid)
    tol = fixef_tolerance(list(ref["fixef"].values()), list(ref["se"].values()), FIXEF_RTOL)
    assert_close(got, list(ref["fixef"].values()), atol=tol, what="fixed effects",
                 model_id=mid, names=names)


def test_standard_errors_and_vcov(case):
    mid, ref, fit = case
    names = ref["vcov"]["names"]
    V = matrix_in_order(need(fit, "vcov", mid), names, "vcov", mid)
    Vref = np.asarray(ref["vcov"]["matrix"], dtype=float)
    assert_close(np.sqrt(np.diag(V)), list(ref["se"].values()), rtol=SE_RTOL,
                 what="standard errors", model_id=mid, names=names)
    scale = np.sqrt(np.outer(np.diag(Vref), np.diag(Vref)))
    # a variance is a squared SE: twice the SE's relative tolerance
    assert_close(V.ravel(), Vref.ravel(), atol=(2 * SE_RTOL * scale).ravel(), what="vcov",
                 model_id=mid, names=[f"{a},{b}" for a in names for b in names])


def test_theta(case):
    mid, ref, fit = case
    theta = np.atleast_1d(np.asarray(need(fit, "theta", mid), dtype=float))
    assert_close(theta, list(ref["theta"].values()), atol=THETA_ATOL,
                 what="theta (lme4 order)", model_id=mid, names=list(ref["theta"]))


def test_sigma(case):
    mid, ref, fit = case
    assert_close(need(fit, "sigma", mid), ref["sigma"], rtol=SIGMA_RTOL, what="sigma",
                 model_id=mid)


def test_varcorr(case):
    mid, ref, fit = case
    check_varcorr(fit, ref["varcorr"], ref["sigma"], rtol=VARCORR_RTOL, sd_atol=THETA_ATOL,
                  corr_atol=CORR_ATOL, model_id=mid)


def test_ranef_and_condsd(case):
    mid, ref, fit = case
    check_ranef(fit, ref["ranef"], atol=RANEF_ATOL * max(1.0, ref["sigma"]), model_id=mid)


def test_devcomp(case):
    mid, ref, fit = case
    dc = need(fit, "devcomp", mid)
    cmp = ref["devcomp"]
    for key in ("ldL2", "ldRX2", "pwrss", "wrss", "ussq"):
        assert key in dc, f"{mid}: devcomp lacks {key!r} (has {sorted(dc)})"
        # ussq is exactly 0 at a singular fit: give it a floor on the scale of pwrss
        assert_close(dc[key], cmp[key], rtol=DEVCOMP_RTOL, atol=DEVCOMP_RTOL * 1e-2 * cmp["pwrss"],
                     what=f"devcomp {key}", model_id=mid)


def test_is_singular(case):
    mid, ref, fit = case
    got = need(fit, "is_singular", mid)()
    assert bool(got) is ref["is_singular"], \
        f"{mid}: is_singular() is {got}, lme4's isSingular() is {ref['is_singular']}"
