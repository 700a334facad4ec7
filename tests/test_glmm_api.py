"""glmer's results API (lme4's accessors for a glmerMod) and its handling of bad input.

Every failing call must raise one of mixedfit's own errors (DataError / FormulaError, which are
ValueErrors) or a ValueError for a bad option, with a message naming the value or column at
fault, and must leave the caller's DataFrame exactly as it was.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import mixedfit
from mixedfit import ConvergenceError, DataError, MixedfitError, NumericalError, glmer

# Two fits of the same likelihood that differ only by a constant (or not at all): BOBYQA follows
# the same path up to rounding, so the estimates agree far inside the optimizer's tolerance.
SAME_FIT_ATOL = 1e-6


def grouped(seed: int = 1, G: int = 30, m: int = 8, sd: float = 0.7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(G), m)
    n = G * m
    x = rng.normal(size=n)
    z = rng.uniform(-1, 1, n)
    eta = -0.2 + 0.7 * x - 0.5 * z + sd * rng.normal(size=G)[g]
    y = rng.binomial(1, special.expit(eta))
    return pd.DataFrame({"y": y, "x": x, "z": z, "g": [f"s{i:02d}" for i in g],
                         "h": rng.integers(0, 5, n)})


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return grouped()


@pytest.fixture(scope="module")
def fit(df):
    with warnings.catch_warnings():
        warnings.simplefilter("error")                             # a clean fit warns of nothing
        return glmer("y ~ x + z + (1 | g)", df, family="binomial")


def glmer_untouched(formula, data, **kw):
    """glmer on ``data``, asserting afterwards (returned or raised) that the frame and any
    array arguments are exactly as before the call."""
    snapshot = copy.deepcopy(data)
    kw_snapshot = {k: copy.deepcopy(v) for k, v in kw.items()}
    try:
        return glmer(formula, data, **kw)
    finally:
        pd.testing.assert_frame_equal(data, snapshot, check_exact=True)
        for k, v in kw.items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(v, kw_snapshot[k])


def assert_pd(M: pd.DataFrame, names):
    assert list(M.index) == names and list(M.columns) == names
    A = M.to_numpy()
    assert np.all(np.isfinite(A))
    np.testing.assert_allclose(A, A.T, rtol=1e-12, atol=0)
    assert np.all(np.linalg.eigvalsh(A) > 0)


# --------------------------------------------------------------------------------------------
# Results


def test_fixef_and_both_vcovs(fit):
    names = ["(Intercept)", "x", "z"]
    assert list(fit.fixef.index) == names
    assert np.all(np.isfinite(fit.fixef.to_numpy()))
    assert fit.vcov_hessian is not None
    assert_pd(fit.vcov_hessian, names)
    assert_pd(fit.vcov_factor, names)
    # lme4's default: standard errors from the Hessian of the stage-2 objective.
    pd.testing.assert_frame_equal(fit.vcov, fit.vcov_hessian)
    # Both estimate the same sampling variances (the Hessian's with theta's uncertainty and
    # its correlation with beta): close, not equal, in a well-identified model.
    ratio = np.diag(fit.vcov_hessian.to_numpy()) / np.diag(fit.vcov_factor.to_numpy())
    assert np.all((ratio > 0.8) & (ratio < 1.5)), ratio


def test_vcov_method_factor(df, fit):
    f2 = glmer("y ~ x + z + (1 | g)", df, vcov_method="factor")
    pd.testing.assert_frame_equal(f2.vcov, f2.vcov_factor)
    np.testing.assert_allclose(f2.fixef, fit.fixef, rtol=0, atol=SAME_FIT_ATOL)


def test_ranef_condvar_and_coef(df, fit):
    re = fit.ranef(condvar=True)
    assert list(re) == ["g"]
    r = re["g"]
    assert list(r.columns) == ["(Intercept)", "condsd_(Intercept)"]
    assert list(r.index) == sorted(df["g"].unique())
    sd = r["condsd_(Intercept)"].to_numpy()
    assert np.all(sd > 0)
    # Conditional SDs are below the random-effect SD (the data are informative about each level).
    assert np.all(sd < fit.theta[0])
    np.testing.assert_allclose(sd**2, fit.condvar("g")[:, 0, 0], rtol=1e-12)
    np.testing.assert_allclose(r["(Intercept)"].to_numpy(), fit.b, rtol=0, atol=0)
    co = fit.coef()["g"]
    assert list(co.columns) == ["(Intercept)", "x", "z"]
    np.testing.assert_allclose(co["(Intercept)"], fit.fixef["(Intercept)"] + r["(Intercept)"], rtol=1e-14)
    assert np.all(co["x"] == fit.fixef["x"]) and np.all(co["z"] == fit.fixef["z"])


def test_fitted_and_predict(df, fit):
    mu = fit.fitted()
    assert list(mu.index) == list(df.index)
    assert np.all((mu > 0) & (mu < 1))
    np.testing.assert_allclose(fit.predict(type="response"), mu, rtol=1e-14)
    eta = fit.predict(type="link")
    np.testing.assert_allclose(special.expit(eta), mu, rtol=1e-12)
    # The linear predictor itself: X beta + b[g].
    X = np.column_stack([np.ones(len(df)), df["x"], df["z"]])
    b = fit.ranef()["g"]["(Intercept)"]
    np.testing.assert_allclose(eta, X @ fit.fixef.to_numpy() + b[df["g"]].to_numpy(), rtol=1e-12, atol=1e-12)
    # Population level (re_form NA): X beta.
    np.testing.assert_allclose(fit.predict(re_form="NA", type="link"), X @ fit.fixef.to_numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="type"):
        fit.predict(type="probability")


def test_predict_newdata_with_new_levels(df, fit):
    nd = pd.DataFrame({"x": [0.5, -1.0, 0.2], "z": [0.1, 0.3, -0.7], "g": ["s03", "brand_new", "s07"]})
    snapshot = nd.copy()
    with pytest.raises(DataError, match="brand_new"):
        fit.predict(newdata=nd)
    pd.testing.assert_frame_equal(nd, snapshot)
    p = fit.predict(newdata=nd, allow_new_levels=True, type="link")
    fe = fit.fixef
    pop = fe["(Intercept)"] + fe["x"] * nd["x"] + fe["z"] * nd["z"]
    b = fit.ranef()["g"]["(Intercept)"]
    np.testing.assert_allclose(p, pop + np.array([b["s03"], 0.0, b["s07"]]), rtol=1e-12)
    pr = fit.predict(newdata=nd, allow_new_levels=True)
    np.testing.assert_allclose(pr, special.expit(p), rtol=1e-12)
    # Known rows of the data predict their fitted values.
    rows = df.iloc[[0, 50, 100]]
    np.testing.assert_allclose(fit.predict(newdata=rows), fit.fitted().iloc[[0, 50, 100]], rtol=1e-12)


def test_residuals(df, fit):
    y = df["y"].to_numpy(dtype=float)
    mu = fit.fitted().to_numpy()
    dev = fit.residuals(type="deviance")
    pd.testing.assert_series_equal(fit.residuals(), dev)          # lme4's default type
    assert math.isclose(float(np.sum(dev**2)), fit.deviance, rel_tol=1e-12)
    unit = -2 * (y * np.log(mu) + (1 - y) * np.log1p(-mu))
    np.testing.assert_allclose(dev**2, unit, rtol=1e-10)
    assert np.all(np.sign(dev) == np.sign(y - mu))
    np.testing.assert_allclose(fit.residuals(type="response"), y - mu, rtol=1e-14)
    np.testing.assert_allclose(fit.residuals(type="pearson"), (y - mu) / np.sqrt(mu * (1 - mu)), rtol=1e-12)
    np.testing.assert_allclose(fit.residuals(type="working"), (y - mu) / (mu * (1 - mu)), rtol=1e-10)
    with pytest.raises(ValueError, match="raw"):
        fit.residuals(type="raw")


def test_loglik_aic_bic(fit):
    assert fit.df == 4                                             # 3 fixed + 1 theta
    assert math.isclose(fit.aic, -2 * fit.loglik + 2 * 4, rel_tol=1e-14)
    assert math.isclose(fit.bic, -2 * fit.loglik + 4 * math.log(fit.nobs), rel_tol=1e-14)
    # Binomial 0/1: -2 log L (Laplace) = deviance + ||u||^2 + log|L|^2.
    dc = fit.devcomp
    assert math.isclose(-2 * fit.loglik, dc["drsum"] + dc["ussq"] + dc["ldL2"], rel_tol=1e-10)


def test_tidy(fit):
    t = fit.tidy()
    assert list(t.columns) == ["effect", "group", "term", "estimate", "std_error", "statistic",
                               "df", "p_value"]
    fx = t[t["effect"] == "fixed"]
    assert list(fx["term"]) == ["(Intercept)", "x", "z"]
    np.testing.assert_allclose(fx["estimate"], fit.fixef, rtol=0)
    se = np.sqrt(np.diag(fit.vcov.to_numpy()))
    np.testing.assert_allclose(fx["std_error"], se, rtol=1e-14)
    np.testing.assert_allclose(fx["statistic"], fit.fixef.to_numpy() / se, rtol=1e-14)
    rp = t[t["effect"] == "ran_pars"]
    assert list(rp["term"]) == ["sd__(Intercept)"] and list(rp["group"]) == ["g"]
    assert math.isclose(float(rp["estimate"].iloc[0]), fit.theta[0], rel_tol=1e-14)  # sigma = 1
    assert "Residual" not in set(rp["group"])


def test_summary_sections(fit):
    text = str(fit.summary())
    assert "Generalized linear mixed model fit by maximum likelihood (Laplace" in text
    assert " Family: binomial  ( logit )" in text
    assert "Pr(>|z|)" in text and "z value" in text
    for section in ("AIC", "BIC", "logLik", "Random effects:", "Fixed effects:", "Number of obs: 240"):
        assert section in text
    assert "Residual" not in text                                  # no residual row for binomial


def test_summary_agq_title(df):
    f5 = glmer("y ~ x + (1 | g)", df, nagq=5)
    text = " ".join(str(f5.summary()).split())   # lme4 wraps the long title line
    assert "fit by maximum likelihood (Adaptive Gauss-Hermite Quadrature, nAGQ = 5)" in text


def test_anova_lrt(df, fit):
    small = glmer("y ~ x + (1 | g)", df)
    tab = mixedfit.anova(small, fit)
    assert list(tab["npar"]) == [3, 4]
    chisq = 2 * (fit.loglik - small.loglik)
    assert chisq > 0
    last = tab.iloc[1]
    assert last["Df"] == 1
    assert math.isclose(last["Chisq"], chisq, rel_tol=1e-12)
    assert math.isclose(last["Pr(>Chisq)"], stats.chi2.sf(chisq, 1), rel_tol=1e-12)
    # Order of the arguments does not matter (rows sorted by npar).
    tab2 = mixedfit.anova(fit, small)
    np.testing.assert_allclose(tab2["Chisq"].iloc[1], last["Chisq"], rtol=1e-14)


def test_fast_equals_nagq0(df):
    a = glmer("y ~ x + (1 | g)", df, fast=True)
    b = glmer("y ~ x + (1 | g)", df, nagq=0)
    assert a.nagq == b.nagq == 0
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.fixef, b.fixef)
    assert a.loglik == b.loglik


def no_cluster_variance(seed: int = 4, G: int = 20) -> pd.DataFrame:
    """Clusters that do not differ at all (each holds the same rows in its own order): the
    between-cluster variance estimate is exactly 0."""
    rng = np.random.default_rng(seed)
    m = 10
    x = rng.normal(size=m)
    y = rng.binomial(1, special.expit(0.3 + 0.8 * x))
    parts = [pd.DataFrame({"x": x, "y": y, "g": f"c{j}"}).iloc[rng.permutation(m)] for j in range(G)]
    return pd.concat(parts, ignore_index=True)


def test_is_singular():
    d = no_cluster_variance()
    f = glmer("y ~ x + (1 | g)", d)
    assert f.theta[0] < 1e-4
    assert f.is_singular()
    assert not glmer("y ~ x + (1 | g)", grouped(seed=2, sd=1.0)).is_singular()


@pytest.mark.parametrize("seed", range(5))
def test_singular_fits_of_data_without_cluster_variance(seed):
    """Bernoulli data simulated with no cluster effect: the variance estimate often lands on
    its boundary (theta = 0), a legitimate optimum that must come back as a fit (with
    is_singular() true), not an error."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(20), 10)
    x = np.random.default_rng(0).normal(size=200)
    d = pd.DataFrame({"y": rng.binomial(1, special.expit(0.3 + 0.5 * x)), "x": x, "g": g})
    f = glmer("y ~ x + (1 | g)", d)
    assert f.is_singular() == (f.theta[0] < 1e-4)
    assert np.all(np.isfinite(f.fixef)) and np.all(np.diag(f.vcov.to_numpy()) > 0)


# --------------------------------------------------------------------------------------------
# Binomial response forms


def aggregated(df: pd.DataFrame) -> pd.DataFrame:
    """Successes and trials per (g, h) cell with the cell's covariate h."""
    a = df.groupby(["g", "h"], as_index=False).agg(s=("y", "sum"), n=("y", "size"))
    a["f"] = a["n"] - a["s"]
    a["p"] = a["s"] / a["n"]
    return a


def test_binomial_response_forms(df):
    base = glmer("y ~ h + (1 | g)", df)
    d2 = df.assign(yb=df["y"].astype(bool), ys=np.where(df["y"] == 1, "yes", "no"))
    for formula in ("yb ~ h + (1 | g)", "ys ~ h + (1 | g)"):
        other = glmer(formula, d2)
        np.testing.assert_allclose(other.fixef, base.fixef, rtol=0, atol=SAME_FIT_ATOL)
        np.testing.assert_allclose(other.theta, base.theta, rtol=0, atol=SAME_FIT_ATOL)
        assert math.isclose(other.loglik, base.loglik, rel_tol=1e-10)
    # A factor's first level is the failure: make "yes" first and the fit mirrors.
    d3 = d2.assign(ys=pd.Categorical(d2["ys"], categories=["yes", "no"]))
    flipped = glmer("ys ~ h + (1 | g)", d3)
    np.testing.assert_allclose(flipped.fixef, -base.fixef, rtol=0, atol=1e-5)
    np.testing.assert_allclose(flipped.theta, base.theta, rtol=0, atol=1e-5)

    a = aggregated(df)
    prop = glmer("p ~ h + (1 | g)", a, weights="n")
    cb = glmer("cbind(s, f) ~ h + (1 | g)", a)
    for other in (prop, cb):
        np.testing.assert_allclose(other.fixef, base.fixef, rtol=0, atol=1e-5)
        np.testing.assert_allclose(other.theta, base.theta, rtol=0, atol=1e-5)
    np.testing.assert_allclose(cb.fixef, prop.fixef, rtol=0, atol=SAME_FIT_ATOL)
    assert math.isclose(cb.loglik, prop.loglik, rel_tol=1e-10)
    # Aggregated binomial log-likelihoods add the log binomial coefficients of each cell.
    logchoose = float(np.sum(special.gammaln(a["n"] + 1) - special.gammaln(a["s"] + 1)
                             - special.gammaln(a["f"] + 1)))
    assert math.isclose(cb.loglik, base.loglik + logchoose, rel_tol=1e-7)
    assert cb.nobs == len(a)


# --------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("value", [2.0, -1.0])
def test_binomial_response_outside_unit_interval(df, value):
    d = df.astype({"y": float})
    d.loc[7, "y"] = value
    with pytest.raises(DataError, match=r"'y'.*\[0, 1\]") as exc:
        glmer_untouched("y ~ x + (1 | g)", d)
    assert repr(value) in str(exc.value)


def test_binomial_non_integer_successes(df):
    d = df.astype({"y": float}).assign(w=3.0)
    d.loc[5, "y"] = 0.5                                            # 1.5 successes of 3
    with pytest.raises(DataError, match="non-integer") as exc:
        glmer_untouched("y ~ x + (1 | g)", d, weights="w")
    assert "'y'" in str(exc.value) and "0.5" in str(exc.value)


@pytest.mark.parametrize("value,what", [(-1, "negative"), (1.5, "non-integer")])
def test_poisson_bad_counts(df, value, what):
    d = df.assign(c=df["h"].astype(float))
    d.loc[3, "c"] = value
    with pytest.raises(DataError, match=what) as exc:
        glmer_untouched("c ~ x + (1 | g)", d, family="poisson")
    assert "'c'" in str(exc.value) and repr(float(value)) in str(exc.value)


@pytest.mark.parametrize("value", [0.0, -2.0])
def test_gamma_non_positive(df, value):
    d = df.assign(r=np.exp(df["x"]))
    d.loc[9, "r"] = value
    with pytest.raises(DataError, match="positive") as exc:
        glmer_untouched("r ~ x + (1 | g)", d, family="Gamma", link="log")
    assert "'r'" in str(exc.value) and repr(value) in str(exc.value)


def test_unknown_family(df):
    with pytest.raises(ValueError, match="binomal"):
        glmer_untouched("y ~ x + (1 | g)", df, family="binomal")


def test_link_not_allowed(df):
    with pytest.raises(ValueError, match="'logit'.*'poisson'"):
        glmer_untouched("h ~ x + (1 | g)", df, family="poisson", link="logit")


@pytest.mark.parametrize("formula", ["y ~ x + (1 + x | g)", "y ~ x + (1 | g) + (1 | h)"])
def test_agq_needs_one_scalar_term(df, formula):
    with pytest.raises(ValueError, match="nagq") as exc:
        glmer_untouched(formula, df, nagq=5)
    assert "(1 | g)" in str(exc.value)


@pytest.mark.parametrize("nagq", [-1, 2.5])
def test_bad_nagq(df, nagq):
    with pytest.raises(ValueError, match=f"nagq.*{nagq}"):
        glmer_untouched("y ~ x + (1 | g)", df, nagq=nagq)


def test_cbind_needs_binomial(df):
    a = aggregated(df)
    with pytest.raises(DataError, match="cbind"):
        glmer_untouched("cbind(s, f) ~ h + (1 | g)", a, family="poisson")


def test_errors_are_mixedfit_errors():
    assert issubclass(DataError, MixedfitError) and issubclass(DataError, ValueError)
    assert issubclass(mixedfit.FormulaError, MixedfitError)


def test_complete_separation_raises_a_clear_error(df):
    """A fixed-effect factor level whose outcomes are all 0: its coefficient has no finite
    maximum likelihood estimate. glmer stops with a ConvergenceError that says so (it does not
    return meaningless finite estimates)."""
    d = df.assign(f=np.array(["a", "b", "c"])[np.arange(len(df)) % 3])
    d.loc[d["f"] == "c", "y"] = 0
    with pytest.raises(ConvergenceError, match="separation") as exc:
        glmer_untouched("y ~ x + f + (1 | g)", d)
    assert "'fc'" in str(exc.value)                               # the column at fault


def test_pirls_failure_is_an_error_not_a_crash():
    """Poisson with the identity link where the best fit would need negative means."""
    G, m = 10, 6
    x = np.tile(np.linspace(0, 1, m), G)
    rng = np.random.default_rng(0)
    d = pd.DataFrame({"y": rng.poisson(np.maximum(4 - 6 * x, 0.05)), "x": x,
                      "g": np.repeat(np.arange(G), m)})
    with pytest.raises((ConvergenceError, NumericalError)) as exc:
        glmer_untouched("y ~ x + (1 | g)", d, family="poisson", link="identity")
    assert "PIRLS" in str(exc.value)


def test_inverse_gaussian_log_link_fits_with_default_control():
    """Ordinary inverse-Gaussian data with a log link. Fisher scoring (PIRLS for a non-canonical
    link) converges only linearly here, and needs ~40-60 iterations from the stage-1 mode: the
    default PIRLS iteration limit must allow a fit of such data."""
    rng = np.random.default_rng(0)
    G, n = 30, 300
    g = rng.integers(0, G, n)
    x = rng.normal(size=n)
    mu = np.exp(0.5 + 0.3 * x + 0.4 * rng.normal(size=G)[g])
    d = pd.DataFrame({"y": rng.wald(mu, 3.0), "x": x, "g": g})
    f = glmer_untouched("y ~ x + (1 | g)", d, family="inverse.gaussian", link="log")
    se = np.sqrt(np.diag(f.vcov.to_numpy()))
    assert np.all(np.abs(f.fixef.to_numpy() - [0.5, 0.3]) < 4 * se)
