"""Confidence intervals (fit.confint, fit.profile) against lme4's confint()."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest

import mixedfit
from tests._confint_reference import confint_reference, reference_fit
from tests._reference import load_data

# Profile ends: lme4 interpolates a spline through profile points and inverts it; we find the
# roots of the exact profile. Measured gaps are <= 3e-4 of the interval's width (Dyestuff2's
# boundary case; the others <= 4e-5); the tolerance leaves room for optimizer stopping.
PROFILE_WIDTH_TOL = 2e-3
# Wald ends are estimate -/+ z SE: for LMMs the same arithmetic, limited by how closely the
# fits agree (SE_RTOL 1e-4 in test_reference_lmm); measured gaps <= 1.5e-5 of the width.
WALD_LMM_WIDTH_TOL = 1e-4
# GLMM SEs: lme4's come from its inexactly converged PIRLS (up to 1.3% off the exact
# optimum's, see tests/reference/README.md); mixedfit's from the exact optimum. Measured
# gap 6.7e-3 of the width (cbpp).
WALD_GLMM_WIDTH_TOL = 1.5e-2

FAST = [("sleepstudy_reml", "0.95"), ("dyestuff", "0.95"), ("dyestuff2", "0.95")]
SLOW = [(m, lev) for m, rec in confint_reference()["models"].items()
        for lev in rec["profile"] if (m, lev) not in FAST]


def _check_intervals(ours: pd.DataFrame, ref: list, tol: float) -> None:
    assert list(ours.index) == [r["parm"] for r in ref]
    for r in ref:
        lo, hi = ours.loc[r["parm"]]
        if r["lower"] is None:
            assert math.isnan(lo) and math.isnan(hi), r["parm"]
            continue
        width = r["upper"] - r["lower"]
        assert abs(lo - r["lower"]) <= tol * width, (r["parm"], lo, r["lower"])
        assert abs(hi - r["upper"]) <= tol * width, (r["parm"], hi, r["upper"])


def _profile_case(model_id, level):
    fit = reference_fit(model_id)
    ref = confint_reference()["models"][model_id]["profile"][level]
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # lme4 warned about none of these
        ours = fit.confint(level=float(level))
    _check_intervals(ours, ref["intervals"], PROFILE_WIDTH_TOL)


@pytest.mark.parametrize("model_id,level", FAST)
def test_profile_intervals_equal_lme4(model_id, level):
    _profile_case(model_id, level)


@pytest.mark.slow
@pytest.mark.parametrize("model_id,level", SLOW)
def test_profile_intervals_equal_lme4_slow(model_id, level):
    _profile_case(model_id, level)


@pytest.mark.parametrize("model_id", list(confint_reference()["models"]))
def test_wald_intervals_equal_lme4(model_id):
    fit = reference_fit(model_id)
    tol = WALD_GLMM_WIDTH_TOL if getattr(fit, "is_glmm", False) else WALD_LMM_WIDTH_TOL
    for level, ref in confint_reference()["models"][model_id]["wald"].items():
        _check_intervals(fit.confint(method="Wald", level=float(level)), ref, tol)


def test_columns_are_named_from_the_level():
    fit = reference_fit("dyestuff")
    assert list(fit.confint(method="Wald").columns) == ["2.5 %", "97.5 %"]
    assert list(fit.confint(method="Wald", level=0.8).columns) == ["10 %", "90 %"]
    assert list(fit.confint(method="Wald", level=0.99).columns) == ["0.5 %", "99.5 %"]


def test_parm_selects_rows_in_the_order_asked():
    fit = reference_fit("sleepstudy_reml")
    ci = fit.confint(parm=["Days", ".sig01"], method="Wald")
    assert list(ci.index) == ["Days", ".sig01"]
    assert list(fit.confint(parm="beta_", method="Wald").index) == ["(Intercept)", "Days"]
    assert list(fit.confint(parm="theta_", method="Wald").index) == [
        ".sig01", ".sig02", ".sig03", ".sigma"]


def test_boundary_estimate_gives_the_boundary_as_its_end():
    # Dyestuff2: the between-batch SD is estimated as 0; lme4 reports 0 as the lower end.
    ci = reference_fit("dyestuff2").confint(parm=".sig01")
    assert ci.iloc[0, 0] == 0.0


def test_profile_that_cannot_reach_the_level_gives_nan_and_says_which():
    # sleepstudy's correlation: at a 99.99% level its profile reaches +1 first.
    fit = reference_fit("sleepstudy_ml")
    with pytest.warns(UserWarning, match=r"\.sig02 upper: .*boundary"):
        ci = fit.confint(parm=".sig02", level=0.9999)
    assert math.isnan(ci.iloc[0, 1]) and -1 < ci.iloc[0, 0] < 0


def test_profile_frame_has_zeta_curves_through_zero():
    fit = reference_fit("dyestuff")
    prof = fit.profile()
    assert set(prof.frame[".par"]) == {".sig01", ".sigma", "(Intercept)"}
    for name, est in prof.estimates.items():
        z = prof.zeta(name)
        assert np.all(np.diff(z[".zeta"].to_numpy()) > 0), name    # increasing in the value
        at = z.loc[z["value"] == est, ".zeta"]
        assert len(at) == 1 and at.iloc[0] == 0.0


def test_profile_plot_draws_one_panel_per_parameter():
    import matplotlib

    matplotlib.use("Agg")
    prof = reference_fit("dyestuff").profile()
    fig = mixedfit.plot.profile_plot(prof)
    assert len([a for a in fig.axes if a.has_data()]) == 3


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="bootstrap"), "method"),
    (dict(level=1.0), "level"),
    (dict(level=0), "level"),
    (dict(level="high"), "level"),
    (dict(parm="nope"), "parm"),
    (dict(parm=[99]), "parm"),
])
def test_bad_arguments_raise_value_errors_naming_them(kwargs, match):
    fit = reference_fit("dyestuff")
    with pytest.raises(ValueError, match=match):
        fit.confint(**kwargs)


def test_gamma_profile_is_refused_with_a_reason():
    d = load_data("glmm", "sim_gamma")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mixedfit.glmer("y ~ x + (1 | g)", d, family="Gamma", link="log")
    with pytest.raises(ValueError, match="scale parameter"):
        fit.confint()
    assert np.all(np.isfinite(fit.confint(method="Wald").loc[["(Intercept)", "x"]]))


def test_variance_profiles_do_not_depend_on_the_response_origin():
    """The profile of the variance parameters runs on the fit's standardized formulation: a
    response shifted by 1e8 gives the same intervals (measured 8e-11 of the width; on raw
    cross products the shift moved them by 20% of the width)."""
    data = mixedfit.datasets.load("sleepstudy")
    parm = [".sig01", ".sig02", ".sig03", ".sigma"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = mixedfit.lmer("Reaction ~ Days + (Days | Subject)", data, reml=False).confint(parm=parm)
        shifted = data.assign(Reaction=data["Reaction"] + 1e8)
        b = mixedfit.lmer("Reaction ~ Days + (Days | Subject)", shifted, reml=False).confint(parm=parm)
    width = (a["97.5 %"] - a["2.5 %"]).to_numpy()[:, None]
    assert np.max(np.abs((b - a).to_numpy()) / width) < 1e-6


def test_sdcor_to_theta_closed_forms_equal_the_cholesky():
    """Terms of one and two columns take closed forms; they equal the general Cholesky path
    (a three-column term), and out-of-range values give None."""
    from mixedfit.inference.params import _correlation_cholesky, sdcor_to_theta

    rng = np.random.default_rng(7)
    for _ in range(200):
        sd1, sd2, sd3 = np.abs(rng.normal(size=3)) + 0.01
        r = rng.uniform(-0.99, 0.99)
        sigma = rng.uniform(0.5, 3.0)
        got = sdcor_to_theta([sd1, r, sd2, sd3], sigma, [2, 1])
        L = _correlation_cholesky([[1.0, 0.0], [r, 1.0]], 2)
        want = [sd1 * L[0][0] / sigma, sd2 * L[1][0] / sigma, sd2 * L[1][1] / sigma, sd3 / sigma]
        np.testing.assert_allclose(got, want, rtol=1e-14)
        # a 3-column term with the same first two columns and no correlation with the third
        three = sdcor_to_theta([sd1, r, 0.0, sd2, 0.0, sd3], sigma, [3])
        np.testing.assert_allclose(three[[0, 1, 3]], want[:3], rtol=1e-14)
    assert sdcor_to_theta([-1.0], 1.0, [1]) is None
    assert sdcor_to_theta([1.0, 1.0, 1.0], 1.0, [2]) is None      # |cor| = 1
    assert sdcor_to_theta([1.0, 0.5, -0.1], 1.0, [2]) is None     # negative sd
