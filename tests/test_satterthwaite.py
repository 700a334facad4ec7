"""Degrees of freedom, t/F tests and random-effects LRTs against lmerTest and pbkrtest.

References: ``tests/reference/lmertest.json`` made by ``make_lmertest_reference.R``
(lmerTest 3.1-3, pbkrtest 0.5.2) on the data sets of ``make_reference.R``.

Tolerances, and why:

- ``FIXEF_RTOL``, ``SE_RTOL`` (1e-4): as the lme4 reference tests; mixedfit's optimizer
  stops within ~1e-4 of lme4's theta.
- ``DF_RTOL`` (5e-4): df is a smooth function of theta; at the two optima the measured
  differences are at most 1e-4 (Penicillin).
- ``NUMDERIV_RTOL`` (2e-6): at lme4's own theta and sigma only lmerTest's numerical
  derivatives differ from the analytic ones. Measured against Richardson extrapolation (see
  ``test_analytic_derivatives_match_richardson``), lmerTest's Jacobian of vcov(beta) is off by
  up to 1.5e-7 and its covariance of (theta, sigma) by up to 5e-8 relative; the analytic ones
  by < 1e-9. df = 2 v^2 / (g' A g) inherits about twice the Jacobian's error.
- p-values: the tolerance on log(p) is what the tolerances on the statistic and df allow
  (the change in log p when each moves by its tolerance), so tiny p-values are judged on
  the scale their inputs justify.
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mixedfit
from mixedfit.inference._marginal import block_quadratic, marginal_of
from mixedfit.inference.ddf import Satterthwaite, _theta_derivatives

from _reference import REFERENCE_DIR, load_data

FIXEF_RTOL = 1e-4
SE_RTOL = 1e-4
DF_RTOL = 5e-4
STAT_RTOL = 2e-4          # t = estimate / SE, F: both tolerances above
LOGLIK_RTOL = 1e-6        # as CRITERION_RTOL of the lme4 reference tests
NUMDERIV_RTOL = 2e-6
NUMDERIV_BOUNDARY_RTOL = 5e-5   # at theta = 0 numDeriv's steps are absolute (1e-4): measured 1.2e-5


@lru_cache(maxsize=None)
def _refs() -> dict:
    with open(REFERENCE_DIR / "lmertest.json", encoding="utf-8") as fh:
        return json.load(fh)["models"]


def ref(model_id: str) -> dict:
    return _refs()[model_id]


def ids(pred=lambda r: True) -> list[str]:
    return [k for k, r in _refs().items() if pred(r)]


def _data(r: dict) -> pd.DataFrame:
    df = load_data("lmm", r["data"])
    every = r.get("drop_every")
    if every:  # the R script drops rows whose 1-based number is 2 modulo `every`
        df = df[(np.arange(1, len(df) + 1) % every) != 2].reset_index(drop=True)
    return df


@lru_cache(maxsize=None)
def fit_of(model_id: str):
    r = ref(model_id)
    df = _data(r)
    weights = df[r["weights"]].to_numpy() if r.get("weights") else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mixedfit.lmer(r["formula"], df, reml=r["REML"], weights=weights)


def table(t: dict) -> pd.DataFrame:
    return pd.DataFrame(t["columns"], index=pd.Index(t["rownames"], dtype=object), dtype=float)


def logp_tolerance(sf, stat, df, stat_rtol, df_rtol):
    """How far log(p) moves when the statistic and the df move by their tolerances."""
    stat, df = np.asarray(stat, float), np.asarray(df, float)
    base = np.log(sf(stat, df))
    d_stat = np.abs(np.log(sf(stat * (1 + stat_rtol), df)) - base)
    d_df = np.abs(np.log(sf(stat, df * (1 + df_rtol))) - base)
    return 2 * (d_stat + d_df) + 1e-10


def _t_sf(t, df):
    return 2 * stats.t.sf(np.abs(t), df)


def check_coef_table(got: pd.DataFrame, want: pd.DataFrame, model_id: str):
    assert list(got.columns) == ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
    assert list(got.index) == list(want.index), model_id
    scale = np.maximum(want["Estimate"].abs(), want["Std. Error"])
    assert np.all(np.abs(got["Estimate"] - want["Estimate"]) <= FIXEF_RTOL * scale), model_id
    np.testing.assert_allclose(got["Std. Error"], want["Std. Error"], rtol=SE_RTOL, err_msg=model_id)
    np.testing.assert_allclose(got["df"], want["df"], rtol=DF_RTOL, err_msg=model_id)
    t_tol = STAT_RTOL * scale / want["Std. Error"]
    assert np.all(np.abs(got["t value"] - want["t value"]) <= t_tol * np.abs(want["t value"]) + t_tol), model_id
    tol = logp_tolerance(_t_sf, want["t value"], want["df"], STAT_RTOL * scale / want["Estimate"].abs().clip(lower=1e-300), DF_RTOL)
    err = np.abs(np.log(got["Pr(>|t|)"].to_numpy()) - np.log(want["Pr(>|t|)"].to_numpy()))
    assert np.all(err <= tol), (model_id, err, tol)


# ---------------------------------------------------------------- coefficient tables

NUMERIC_NAMES = ids(lambda r: "temperature" not in r["formula"])  # R names ordered-factor
# coefficients by polynomial contrasts (.L, .Q); only its F tests are comparable


@pytest.mark.parametrize("model_id", NUMERIC_NAMES)
def test_coef_table_satterthwaite_matches_lmertest(model_id):
    fit = fit_of(model_id)
    check_coef_table(fit.coef_table("Satterthwaite"), table(ref(model_id)["coef_satterthwaite"]),
                     model_id)


@pytest.mark.parametrize("model_id", [m for m in NUMERIC_NAMES if "coef_kenward_roger" in ref(m)])
def test_coef_table_kenward_roger_matches_pbkrtest(model_id):
    fit = fit_of(model_id)
    check_coef_table(fit.coef_table("Kenward-Roger"), table(ref(model_id)["coef_kenward_roger"]),
                     model_id)


@pytest.mark.parametrize("model_id", NUMERIC_NAMES)
def test_df_at_lme4_optimum_equals_lmertest_up_to_numderiv(model_id):
    """At lme4's own (theta, sigma) only the derivatives differ: analytic here, numDeriv in
    lmerTest. This isolates that difference from the optimizers'."""
    r = ref(model_id)
    fit = fit_of(model_id)
    engine = Satterthwaite(fit, marginal_of(fit, np.array(r["theta"]), r["sigma"]))
    rtol = NUMDERIV_BOUNDARY_RTOL if np.any(np.array(r["theta"]) == 0) else NUMDERIV_RTOL
    df = [engine.contrast_df(row) for row in np.eye(len(fit.beta))]
    np.testing.assert_allclose(df, table(r["coef_satterthwaite"])["df"], rtol=rtol)
    np.testing.assert_allclose(engine.vcov_varpar, np.array(r["vcov_varpar"]),
                               rtol=0, atol=rtol * np.abs(r["vcov_varpar"]).max())
    for got, want in zip(engine.jacobian, r["jacobian"]):
        want = np.array(want, dtype=float).reshape(got.shape)
        np.testing.assert_allclose(got, want, rtol=0, atol=rtol * np.abs(want).max())


# ---------------------------------------------------------------- exactness of the derivatives

def _richardson(estimate, h0: float, levels: int = 5):
    """Richardson extrapolation of a central difference whose error is a series in h^2."""
    table_ = [estimate(h0 / 2**k) for k in range(levels)]
    for m in range(1, levels):
        table_ = [(4**m * table_[k + 1] - table_[k]) / (4**m - 1) for k in range(len(table_) - 1)]
    return table_[0]


def _deviance(fit, x):
    """lmerTest's devfun_vp: the REML/ML deviance at varpar x = (theta, sigma)."""
    fit._problem.objective(x[:-1], fit.reml)
    c = fit._problem.components()
    s2 = x[-1] ** 2
    dev = c["ldL2"] + c["pwrss"] / s2 + fit.nobs * np.log(2 * np.pi * s2)
    if fit.reml:
        dev += c["ldRX2"] - len(fit.beta) * np.log(2 * np.pi * s2)
    return dev


def _gradient(fit, x):
    """The deviance's gradient in varpar (first derivatives of the Hessian's formulas)."""
    m = marginal_of(fit, x[:-1], x[-1])
    s2 = x[-1] ** 2
    T = m.S0_op if fit.reml else m.Bzz_op
    g = [np.sum(D * T.diag_sum(blk).T) - block_quadratic(m.s0[:, None], blk, D)[0, 0] / s2
         for blk, _, D in _theta_derivatives(m.blocks)]
    nu = m.n - m.p if fit.reml else m.n
    return np.array(g + [2 * nu / x[-1] - 2 * m.pwrss / x[-1] ** 3])


def _numeric_jacobian(f, x):
    cols = []
    for i in range(len(x)):
        def central(h, i=i):
            e = np.zeros(len(x))
            e[i] = h * max(abs(x[i]), 1e-2)
            return (f(x + e) - f(x - e)) / (2 * e[i])
        cols.append(_richardson(central, 0.05))
    return cols


@pytest.mark.parametrize("model_id", ["sleepstudy_reml", "sleepstudy_ml", "penicillin", "cake",
                                      "sleepstudy_weights", "dyestuff2_singular", "pastes"])
def test_analytic_derivatives_match_richardson(model_id):
    fit = fit_of(model_id)
    x = np.r_[fit.theta, fit.sigma]
    engine = Satterthwaite(fit)
    # the gradient against the deviance itself (second differences of a deviance of ~1e3
    # lose ~8 digits, first differences far fewer)
    grad = _gradient(fit, x)
    numeric = np.array(_numeric_jacobian(lambda v: np.array([_deviance(fit, v)]), x))[:, 0]
    np.testing.assert_allclose(grad, numeric, rtol=0, atol=1e-9 * abs(_deviance(fit, x)))
    # the Hessian against the gradient's Richardson Jacobian: measured agreement < 1e-10
    H = np.column_stack(_numeric_jacobian(lambda v: _gradient(fit, v), x))
    np.testing.assert_allclose(engine.hessian, H, rtol=0, atol=1e-9 * np.abs(H).max())
    # the Jacobian of vcov(beta): measured agreement < 1e-9
    J = _numeric_jacobian(lambda v: marginal_of(fit, v[:-1], v[-1]).vcov_beta, x)
    for got, want in zip(engine.jacobian, J):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-8 * np.abs(want).max())


# ---------------------------------------------------------------- anova

ANOVA_CASES = [(m, t, ddf) for m in ids() for ddf in ("Satterthwaite", "Kenward-Roger")
               for t in (1, 2, 3)
               if f"anova_{'satterthwaite' if ddf == 'Satterthwaite' else 'kenward_roger'}" in ref(m)]


@pytest.mark.parametrize("model_id,type_,ddf", ANOVA_CASES)
def test_anova_matches_lmertest(model_id, type_, ddf):
    r = ref(model_id)
    want_raw = r[f"anova_{'satterthwaite' if ddf == 'Satterthwaite' else 'kenward_roger'}"][str(type_)]
    want = table(want_raw)
    got = mixedfit.anova(fit_of(model_id), type=type_, ddf=ddf)
    assert list(got.columns) == ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]
    assert list(got.index) == list(want.index)
    assert got.attrs["heading"] == want_raw["heading"]
    if not len(want):
        return
    np.testing.assert_array_equal(got["NumDF"], want["NumDF"])
    np.testing.assert_allclose(got["DenDF"], want["DenDF"], rtol=DF_RTOL)
    np.testing.assert_allclose(got["F value"], want["F value"], rtol=2 * STAT_RTOL)
    np.testing.assert_allclose(got["Sum Sq"], want["Sum Sq"], rtol=4 * STAT_RTOL)
    np.testing.assert_allclose(got["Mean Sq"], want["Mean Sq"], rtol=4 * STAT_RTOL)
    sf = lambda f, d, k=want["NumDF"].to_numpy(): stats.f.sf(f, k, d)  # noqa: E731
    tol = logp_tolerance(sf, want["F value"], want["DenDF"], 2 * STAT_RTOL, DF_RTOL)
    err = np.abs(np.log(got["Pr(>F)"].to_numpy()) - np.log(want["Pr(>F)"].to_numpy()))
    assert np.all(err <= tol), (err, tol)


def test_anova_of_intercept_only_model_is_empty():
    got = mixedfit.anova(fit_of("penicillin"))
    assert got.shape == (0, 6)


def test_anova_type_spellings_agree():
    fit = fit_of("cake")
    pd.testing.assert_frame_equal(mixedfit.anova(fit, type="III"), mixedfit.anova(fit))
    pd.testing.assert_frame_equal(mixedfit.anova(fit, type="I"), mixedfit.anova(fit, type=1))


# ---------------------------------------------------------------- ranova

@pytest.mark.parametrize("model_id", ids())
def test_ranova_matches_lmertest(model_id):
    r = ref(model_id)
    want = table(r["ranova"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = mixedfit.ranova(fit_of(model_id))
    assert list(got.index) == list(want.index)
    assert list(got.columns) == ["npar", "logLik", "AIC", "LRT", "Df", "Pr(>Chisq)"]
    np.testing.assert_array_equal(got["npar"], want["npar"])
    np.testing.assert_array_equal(got["Df"], want["Df"])
    scale = np.abs(want["logLik"]).max()
    if model_id in NUMERIC_NAMES:
        np.testing.assert_allclose(got["logLik"], want["logLik"], rtol=LOGLIK_RTOL)
        np.testing.assert_allclose(got["AIC"], want["AIC"], rtol=LOGLIK_RTOL)
    # else R codes the ordered factor by polynomial contrasts: the REML log-likelihood
    # changes by a constant (log|X'V^-1 X| depends on X's coding), its differences do not
    np.testing.assert_allclose(got["LRT"], want["LRT"], rtol=0, atol=4 * LOGLIK_RTOL * scale)
    rows = want["Df"].notna().to_numpy()
    lrt = want["LRT"].to_numpy()[rows]
    dfs = want["Df"].to_numpy()[rows]
    tol = logp_tolerance(lambda x, d: stats.chi2.sf(x, d), lrt, dfs,
                         4 * LOGLIK_RTOL * scale / np.maximum(lrt, 1e-12), 0.0)
    err = np.abs(np.log(got["Pr(>Chisq)"].to_numpy()[rows]) - np.log(want["Pr(>Chisq)"].to_numpy()[rows]))
    assert np.all(err <= tol), (err, tol)
    assert got.attrs["heading"].startswith(r["ranova"]["heading"][0])


# ---------------------------------------------------------------- printing

def _last_digit(token: str) -> float:
    """One unit in the last printed digit of a number as printed."""
    mantissa = token.split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    exponent = int(token.split("e")[1]) if "e" in token else 0
    return 10.0 ** (exponent - decimals)


def assert_text_close(want: str, got: str, rtol: float):
    """Line by line and token by token: same widths and words; numbers equal within rtol
    plus one unit of their last printed digit (the fits stop at slightly different optima)."""
    w_lines, g_lines = want.splitlines(), got.rstrip("\n").splitlines()
    assert len(w_lines) == len(g_lines), (want, got)
    for w, g in zip(w_lines, g_lines):
        wt, gt = w.split(), g.split()
        assert len(wt) == len(gt) and len(w) == len(g), (w, g)
        for a, b in zip(wt, gt):
            try:
                x, y = float(a), float(b)
            except ValueError:
                assert a == b, (w, g)
                continue
            assert abs(x - y) <= rtol * abs(x) + _last_digit(a) * 1.0001, (w, g)


@pytest.mark.parametrize("model_id,ddf", [(m, "Satterthwaite") for m in
                                         ("cake", "sleepstudy_reml", "sleepstudy_ml", "pastes")]
                         + [(m, "Kenward-Roger") for m in ("cake", "sleepstudy_reml")])
def test_summary_prints_lmertest_layout(model_id, ddf):
    """lmerTest's text (the Formula/Data lines name R's call, so they are left out)."""
    skip = ("Formula:", "   Data:")
    keep = lambda text: "\n".join(ln for ln in text.splitlines() if not ln.startswith(skip))  # noqa: E731
    key = "summary_satterthwaite_text" if ddf == "Satterthwaite" else "summary_kenward_roger_text"
    want = ref(model_id)[key]
    got = str(fit_of(model_id).summary(ddf=ddf))
    assert_text_close(keep(want), keep(got), DF_RTOL)


def test_summary_lme4_layout_is_unchanged():
    fit = fit_of("sleepstudy_reml")
    assert str(fit.summary(ddf="lme4")) == str(fit.summary())
    assert "['lmerMod']" in str(fit.summary()) and " df " not in str(fit.summary())


def test_summary_coefficients_follow_ddf():
    fit = fit_of("cake")
    pd.testing.assert_frame_equal(fit.summary(ddf="Kenward-Roger").coefficients,
                                  fit.coef_table("Kenward-Roger"))
    assert list(fit.summary().coefficients.columns) == ["Estimate", "Std. Error", "t value"]


# ---------------------------------------------------------------- tidy and GLMMs

def test_tidy_has_df_and_p_values():
    fit = fit_of("cake")
    tab = fit.tidy()
    fixed = tab[tab.effect == "fixed"].set_index("term")
    ct = fit.coef_table()
    np.testing.assert_array_equal(fixed["df"], ct["df"])
    np.testing.assert_array_equal(fixed["p_value"], ct["Pr(>|t|)"])
    assert tab.loc[tab.effect == "ran_pars", ["df", "p_value"]].isna().all().all()
    kr = fit.tidy(ddf="Kenward-Roger")
    np.testing.assert_array_equal(kr[kr.effect == "fixed"]["df"], fit.coef_table("Kenward-Roger")["df"])
    assert fit.tidy(ddf="lme4")[["df", "p_value"]].isna().all().all()


def test_glmm_coef_table_is_wald_z():
    df = load_data("glmm", "cbpp")
    fit = mixedfit.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", df,
                         family="binomial")
    ct = fit.coef_table()
    assert list(ct.columns) == ["Estimate", "Std. Error", "z value", "Pr(>|z|)"]
    se = np.sqrt(np.diag(fit.vcov.to_numpy()))
    np.testing.assert_allclose(ct["z value"], fit.beta / se, rtol=1e-14)
    np.testing.assert_allclose(ct["Pr(>|z|)"], 2 * stats.norm.sf(np.abs(fit.beta / se)), rtol=1e-14)
    tab = fit.tidy()
    np.testing.assert_array_equal(tab[tab.effect == "fixed"]["p_value"], ct["Pr(>|z|)"])
    with pytest.raises(ValueError, match="linear mixed model"):
        mixedfit.anova(fit)
    with pytest.raises(ValueError, match="linear mixed model"):
        mixedfit.ranova(fit)


# ---------------------------------------------------------------- bad input

def test_unknown_ddf_and_type_are_refused():
    fit = fit_of("sleepstudy_reml")
    for call in (lambda: fit.coef_table("satterthwaite"), lambda: fit.summary(ddf="KR"),
                 lambda: fit.tidy(ddf=None), lambda: mixedfit.anova(fit, ddf="lme4")):
        with pytest.raises(ValueError, match=r"ddf must be one of .*'Satterthwaite'"):
            call()
    for bad in (4, "IV", 0, None):
        with pytest.raises(ValueError, match=r"type must be one of 1, 2, 3"):
            mixedfit.anova(fit, type=bad)


def test_kenward_roger_needs_reml_and_no_weights():
    with pytest.raises(ValueError, match="REML"):
        fit_of("sleepstudy_ml").coef_table("Kenward-Roger")
    with pytest.raises(ValueError, match="weights"):
        fit_of("sleepstudy_weights").coef_table("Kenward-Roger")


def test_inputs_are_not_modified():
    fit = fit_of("cake")
    beta, vcov = fit.beta.copy(), fit.vcov.copy()
    fit.coef_table()
    mixedfit.anova(fit, type=2, ddf="Kenward-Roger")
    np.testing.assert_array_equal(fit.beta, beta)
    pd.testing.assert_frame_equal(fit.vcov, vcov)


# ---------------------------------------------------------------- structured q-space algebra

def test_block_low_rank_operations_equal_dense():
    """The one-term form B - F C F' gives the dense form's traces and products."""
    from mixedfit.inference._marginal import TermBlock
    from mixedfit.inference._qmatrix import BlockLowRankQ, DenseQ

    rng = np.random.default_rng(3)
    nl, pk, r = 7, 2, 3
    B = rng.normal(size=(nl, pk, pk))
    B = B @ B.transpose(0, 2, 1)
    F = rng.normal(size=(nl * pk, r))
    C = rng.normal(size=(r, r))
    C = C @ C.T
    op = BlockLowRankQ(B, F, C)
    dense = DenseQ(op.dense())
    blk = TermBlock(0, nl, pk, 0, np.eye(pk))
    Di, Dj = rng.normal(size=(pk, pk)), rng.normal(size=(pk, pk))
    Di, Dj = Di + Di.T, Dj + Dj.T        # derivatives of T T' are symmetric
    M = rng.normal(size=(nl * pk, 4))
    np.testing.assert_allclose(op.matmul(M), dense.matmul(M), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(op.diag_sum(blk), dense.diag_sum(blk), rtol=1e-12, atol=1e-12)
    assert op.pair_trace(blk, Di, blk, Dj) == pytest.approx(dense.pair_trace(blk, Di, blk, Dj),
                                                            rel=1e-12)
    np.testing.assert_allclose(op.sandwich_diag_sum(blk, [(blk, Di)]),
                               dense.sandwich_diag_sum(blk, [(blk, Di)]), rtol=1e-11, atol=1e-11)


def test_one_term_path_equals_general_path():
    """A one-term model through the per-level path and through the dense general path."""
    from mixedfit.inference import _marginal

    fit = fit_of("sleepstudy_unbalanced")
    d = fit.design
    w = np.ones(d.n)
    fast = _marginal._quadratic_forms_one_term(d, _marginal.theta_blocks(d, fit.theta)[0], d.X, d.y, w)
    slow = _marginal._quadratic_forms_general(d, _marginal.theta_blocks(d, fit.theta), d.X, d.y, w)
    np.testing.assert_allclose(fast[0].dense(), slow[0].dense(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fast[1], slow[1], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fast[2], slow[2], rtol=1e-10)


def test_type3_with_sum_contrasts_equals_lmertest():
    """lmerTest defines type 3 hypotheses on the treatment-coded design and maps them to the
    coding in use, so sum-to-zero coding must give the reference table of the
    treatment-coded fit (R's)."""
    df = load_data("lmm", "cake")
    fit = mixedfit.lmer("angle ~ C(recipe, contr.sum) * temp + (1 | recipe:replicate)", df)
    got = mixedfit.anova(fit, type=3)
    want = table(ref("cake")["anova_satterthwaite"]["3"])
    assert list(got.index) == ["C(recipe, contr.sum)", "temp", "C(recipe, contr.sum):temp"]
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=DF_RTOL)


def test_indefinite_hessian_warns_as_lmertest():
    from mixedfit.inference.ddf import _pos_inverse

    with pytest.warns(UserWarning, match="1 negative eigenvalue"):
        inv = _pos_inverse(np.diag([2.0, -1.0]))
    np.testing.assert_allclose(inv, np.diag([0.5, 0.0]))
    with pytest.warns(UserWarning, match="close to zero"):
        _pos_inverse(np.diag([2.0, 1e-12]))
