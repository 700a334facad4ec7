"""Pooling tables: no pooling against per-cluster regressions computed one by one, partial
pooling against fit.coef(), and shrinkage against the theory of the random-intercept model."""

import contextlib
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mixedfit
from mixedfit import shrinkage, simulate


@contextlib.contextmanager
def _quiet():
    """Silence fit warnings (singular fits of small random data sets are expected)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------------------------
# theory functions
# ---------------------------------------------------------------------------------------------
def test_precision_weighted_formula_and_limits():
    # (n/s2 * ybar + 1/t2 * mu) / (n/s2 + 1/t2) written out
    n, s, t, ybar, mu = 4, 2.0, 0.5, 3.0, 1.0
    expected = (n / s**2 * ybar + mu / t**2) / (n / s**2 + 1 / t**2)
    assert shrinkage.precision_weighted(ybar, n, s, t, mu) == pytest.approx(expected)
    assert shrinkage.precision_weighted(ybar, n, s, 0.0, mu) == mu      # no cluster variance
    assert shrinkage.precision_weighted(ybar, n, 0.0, t, mu) == ybar    # no noise
    assert shrinkage.precision_weighted(ybar, 0, s, t, mu) == mu        # no data
    out = shrinkage.precision_weighted(np.array([1.0, 2.0]), np.array([1, 10]), 1.0, 1.0, 0.0)
    np.testing.assert_allclose(out, [0.5, 2.0 * 10 / 11])


def test_expected_intercept_shrinkage():
    assert shrinkage.expected_intercept_shrinkage(10, 1.0, 0.5) == pytest.approx(1 / (1 + 2.5))
    assert shrinkage.expected_intercept_shrinkage(10, 1.0, 0.0) == 1.0
    assert shrinkage.expected_intercept_shrinkage(10, 0.0, 0.5) == 0.0
    s = shrinkage.expected_intercept_shrinkage(np.arange(1, 50), 1.0, 0.3)
    assert np.all(np.diff(s) < 0)                       # more data, less shrinkage
    assert (shrinkage.expected_intercept_shrinkage(5, 1.0, 0.2)
            > shrinkage.expected_intercept_shrinkage(5, 1.0, 0.8))   # less variance, more
    with pytest.raises(ValueError, match="non-negative"):
        shrinkage.expected_intercept_shrinkage(-1, 1.0, 1.0)


def _henderson_blup(y, X, codes, m, sigma, tau):
    """Mixed-model equations of the random-intercept model with known variances (dense)."""
    Z = np.zeros((len(y), m))
    Z[np.arange(len(y)), codes] = 1.0
    lam = sigma**2 / tau**2
    top = np.hstack([X.T @ X, X.T @ Z])
    bot = np.hstack([Z.T @ X, Z.T @ Z + lam * np.eye(m)])
    sol = np.linalg.solve(np.vstack([top, bot]), np.r_[X.T @ y, Z.T @ y])
    return sol[: X.shape[1]], sol[X.shape[1]:]


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=3, max_size=15),
    sigma=st.floats(0.2, 3.0),
    tau=st.floats(0.1, 3.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_known_variances_partial_pooling_is_precision_weighted_average(sizes, sigma, tau, seed):
    # Independent of the package: the BLUP from Henderson's equations equals the
    # precision-weighted average of the covariate-adjusted cluster mean and the population mean.
    rng = np.random.default_rng(seed)
    m = len(sizes)
    codes = np.repeat(np.arange(m), sizes)
    x = rng.normal(size=codes.size)
    y = 1.0 + 0.5 * x + rng.normal(0, tau, m)[codes] + rng.normal(0, sigma, codes.size)
    X = np.column_stack([np.ones_like(x), x])
    beta, b = _henderson_blup(y, X, codes, m, sigma, tau)
    ybar_adj = np.bincount(codes, y - x * beta[1]) / np.bincount(codes)
    expected = shrinkage.precision_weighted(ybar_adj, np.array(sizes), sigma, tau, beta[0])
    np.testing.assert_allclose(beta[0] + b, expected, rtol=1e-9, atol=1e-9)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 15), min_size=6, max_size=25),
    sigma=st.floats(0.3, 2.0),
    tau=st.floats(0.3, 2.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_fitted_random_intercept_model_matches_theory(sizes, sigma, tau, seed):
    # At the fitted variances, the table's partial pooling is the precision-weighted average of
    # its no-pooling estimate and the fixed intercept; the shrinkage is sigma^2/(sigma^2+n tau^2).
    rng = np.random.default_rng(seed)
    m = len(sizes)
    codes = np.repeat(np.arange(m), sizes)
    x = rng.normal(size=codes.size)
    y = 1.0 + 0.5 * x + rng.normal(0, tau, m)[codes] + rng.normal(0, sigma, codes.size)
    df = pd.DataFrame({"y": y, "x": x, "g": [f"c{k}" for k in codes]})
    if codes.size <= m + 2:
        return
    with _quiet():
        fit = mixedfit.lmer("y ~ x + (1 | g)", df)
    tab = shrinkage.pooling_table(fit)
    s_hat = fit.sigma
    t_hat = float(fit.varcorr.to_frame()["sdcor"].iloc[0])
    mu = float(fit.fixef["(Intercept)"])
    n = tab["n"].to_numpy()
    pw = shrinkage.precision_weighted(tab["nopool_(Intercept)"], n, s_hat, t_hat, mu)
    np.testing.assert_allclose(tab["partial_(Intercept)"], pw, rtol=1e-7, atol=1e-7)
    # the no-pooling estimate is the covariate-adjusted cluster mean
    adj = pd.Series(y - x * fit.fixef["x"]).groupby(df["g"]).mean()
    np.testing.assert_allclose(tab["nopool_(Intercept)"], adj.reindex(tab.index), rtol=1e-9, atol=1e-9)
    if t_hat > 1e-6:
        expected = shrinkage.expected_intercept_shrinkage(n, s_hat, t_hat)
        moved = np.abs(tab["nopool_(Intercept)"] - mu) > 1e-6
        np.testing.assert_allclose(tab["shrinkage_(Intercept)"][moved], expected[moved], rtol=1e-6, atol=1e-6)
        # larger clusters are shrunk less
        order = np.argsort(n)
        assert np.all(np.diff(expected[order]) <= 1e-12)
    else:  # variance estimated at zero: everything pooled completely
        np.testing.assert_allclose(tab["partial_(Intercept)"], mu, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# the table for the seed's model
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def baseline():
    df = simulate.clustered(n_cluster=60, seed=21)
    fit = mixedfit.lmer("y ~ x + (x | cluster)", df)
    return df, fit, shrinkage.pooling_table(fit)


def test_table_columns_and_attrs(baseline):
    df, fit, tab = baseline
    assert list(tab.columns) == [
        "n", "nopool_(Intercept)", "nopool_x", "partial_(Intercept)", "partial_x",
        "complete_(Intercept)", "complete_x", "shrinkage_(Intercept)", "shrinkage_x",
        "shrinkage", "nopool_note",
    ]
    assert tab.index.name == "cluster"
    assert list(tab.index) == list(fit.ranef()["cluster"].index)
    assert tab.attrs["params"] == ["(Intercept)", "x"]
    assert tab.attrs["scale"] == "identity"
    assert tab.attrs["population"] == pytest.approx(fit.fixef.to_dict())
    vc = fit.varcorr.to_frame()
    assert tab.attrs["re_sd"]["x"] == pytest.approx(vc["sdcor"].iloc[1])
    assert tab.attrs["re_cov"][0][1] == pytest.approx(vc["vcov"].iloc[2])
    assert (tab["n"] == 10).all()
    assert (tab["nopool_note"] == "").all()


def test_no_pooling_is_a_regression_per_cluster(baseline):
    df, fit, tab = baseline
    for lv, d in df.groupby("cluster"):
        slope, icept = np.polyfit(d["x"], d["y"], 1)
        assert tab.loc[lv, "nopool_(Intercept)"] == pytest.approx(icept, abs=1e-10)
        assert tab.loc[lv, "nopool_x"] == pytest.approx(slope, abs=1e-10)


def test_partial_and_complete_pooling(baseline):
    df, fit, tab = baseline
    coef = fit.coef()["cluster"]
    np.testing.assert_allclose(tab["partial_(Intercept)"], coef["(Intercept)"])
    np.testing.assert_allclose(tab["partial_x"], coef["x"])
    slope, icept = np.polyfit(df["x"], df["y"], 1)
    np.testing.assert_allclose(tab["complete_(Intercept)"], icept)
    np.testing.assert_allclose(tab["complete_x"], slope)


def test_shrinkage_definition(baseline):
    _, fit, tab = baseline
    for p in ("(Intercept)", "x"):
        pop = fit.fixef[p]
        expected = (tab[f"nopool_{p}"] - tab[f"partial_{p}"]) / (tab[f"nopool_{p}"] - pop)
        np.testing.assert_allclose(tab[f"shrinkage_{p}"], expected)
    # overall: fraction of the (standardized) distance to the population removed
    sd = np.array([tab["nopool_(Intercept)"].std(ddof=0), tab["nopool_x"].std(ddof=0)])
    pop = fit.fixef[["(Intercept)", "x"]].to_numpy()
    d0 = np.linalg.norm((tab[["nopool_(Intercept)", "nopool_x"]].to_numpy() - pop) / sd, axis=1)
    d1 = np.linalg.norm((tab[["partial_(Intercept)", "partial_x"]].to_numpy() - pop) / sd, axis=1)
    np.testing.assert_allclose(tab["shrinkage"], 1 - d1 / d0)
    # the mixed-model estimates lie closer to the population than the cluster regressions
    assert (tab["shrinkage"] > 0).mean() > 0.9
    assert tab["partial_x"].std() < tab["nopool_x"].std()


def test_the_fit_data_is_not_modified(baseline):
    df, fit, _ = baseline
    before = fit.data.copy()
    df_before = df.copy()
    shrinkage.pooling_tables(fit)
    pd.testing.assert_frame_equal(fit.data, before)
    pd.testing.assert_frame_equal(df, df_before)


def test_describe(baseline):
    _, _, tab = baseline
    d = shrinkage.describe(tab)
    assert d["clusters"] == 60 and d["median_n"] == 10 and d["no_estimate"] == 0
    assert d["median_shrinkage_x"] == pytest.approx(np.median(tab["shrinkage_x"]))
    assert d["spread_reduction_x"] == pytest.approx(1 - tab["partial_x"].std(ddof=0) / tab["nopool_x"].std(ddof=0))


# ---------------------------------------------------------------------------------------------
# clusters that cannot identify their parameters
# ---------------------------------------------------------------------------------------------
def test_unidentifiable_clusters_get_nan_and_a_reason():
    df = simulate.clustered(n_cluster=40, obs_per_cluster=6, seed=5)
    df = df[~((df["cluster"] == 3) & (df.index % 6 != 0))]          # cluster 3: one row
    df = df.copy()
    df.loc[df["cluster"] == 7, "x"] = 0.25                            # cluster 7: x constant
    fit = mixedfit.lmer("y ~ x + (x | cluster)", df)
    tab = shrinkage.pooling_table(fit)
    assert tab.loc[3, "n"] == 1
    assert np.isnan(tab.loc[3, "nopool_x"]) and np.isnan(tab.loc[3, "nopool_(Intercept)"])
    assert tab.loc[3, "nopool_note"] == "1 observation for 2 parameters"
    assert np.isnan(tab.loc[7, "nopool_x"])
    assert "x constant" in tab.loc[7, "nopool_note"]
    assert np.isnan(tab.loc[[3, 7], "shrinkage"]).all()
    # partial pooling still gives every cluster an estimate
    assert tab[["partial_(Intercept)", "partial_x"]].notna().all().all()
    others = tab.drop(index=[3, 7])
    assert (others["nopool_note"] == "").all() and others["nopool_x"].notna().all()
    assert shrinkage.describe(tab)["no_estimate"] == 2


def test_random_intercept_only_one_observation_is_fine():
    df = simulate.clustered(n_cluster=50, obs_per_cluster=4, balanced=0.4, seed=8)
    fit = mixedfit.lmer("y ~ x + (1 | cluster)", df)
    tab = shrinkage.pooling_table(fit)
    assert (tab["n"] == 1).any()
    assert tab["nopool_(Intercept)"].notna().all()


# ---------------------------------------------------------------------------------------------
# how much shrinkage: the seed's comparisons
# ---------------------------------------------------------------------------------------------
def _median_intercept_shrinkage(**kw):
    df = simulate.clustered(n_cluster=80, sd_slope=0.0, seed=31, **kw)
    fit = mixedfit.lmer("y ~ x + (1 | cluster)", df)
    return shrinkage.describe(shrinkage.pooling_table(fit))["median_shrinkage_(Intercept)"]


def test_fewer_observations_per_cluster_mean_more_shrinkage():
    few = _median_intercept_shrinkage(obs_per_cluster=3)
    some = _median_intercept_shrinkage(obs_per_cluster=10)
    many = _median_intercept_shrinkage(obs_per_cluster=60)
    assert few > some > many
    assert many < 0.15 and few > 0.3


def test_smaller_cluster_variance_means_more_shrinkage():
    small = _median_intercept_shrinkage(sd_int=0.25)
    large = _median_intercept_shrinkage(sd_int=1.5)
    assert small > large + 0.2


def test_within_an_unbalanced_fit_small_clusters_shrink_more():
    df = simulate.clustered(n_cluster=100, obs_per_cluster=12, balanced=0.5, sd_slope=0.0, seed=2)
    fit = mixedfit.lmer("y ~ x + (1 | cluster)", df)
    tab = shrinkage.pooling_table(fit)
    by_n = tab.groupby("n")["shrinkage_(Intercept)"].mean()
    assert by_n.is_monotonic_decreasing and len(by_n) > 3


def test_slopes_with_small_variance_shrink_more_than_intercepts(baseline):
    d = shrinkage.describe(baseline[2])
    assert d["median_shrinkage_x"] > d["median_shrinkage_(Intercept)"]


# ---------------------------------------------------------------------------------------------
# other model shapes
# ---------------------------------------------------------------------------------------------
def test_several_grouping_factors():
    df = simulate.clustered(n_cluster=30, obs_per_cluster=8, seed=4)
    df["site"] = np.arange(len(df)) % 5
    fit = mixedfit.lmer("y ~ x + (x || cluster) + (1 | site)", df)
    tabs = shrinkage.pooling_tables(fit)
    assert set(tabs) == {"cluster", "site"}
    assert tabs["cluster"].attrs["params"] == ["(Intercept)", "x"]
    cov = np.array(tabs["cluster"].attrs["re_cov"])
    assert cov[0, 1] == 0 and cov[0, 0] > 0 and cov[1, 1] >= 0
    # no pooling for "cluster" holds the site effects at their estimates
    site_b = fit.ranef()["site"]["(Intercept)"]
    r = df["y"] - site_b.reindex(df["site"]).to_numpy()
    d = df.assign(r=r)[df["cluster"] == 1]
    slope, icept = np.polyfit(d["x"], d["r"], 1)
    assert tabs["cluster"].loc[1, "nopool_x"] == pytest.approx(slope, abs=1e-8)
    assert tabs["cluster"].loc[1, "nopool_(Intercept)"] == pytest.approx(icept, abs=1e-8)
    with pytest.raises(ValueError, match="pass group="):
        shrinkage.pooling_table(fit)
    with pytest.raises(KeyError, match="'nope'"):
        shrinkage.pooling_table(fit, "nope")
    with pytest.raises(ValueError, match="scale"):
        shrinkage.pooling_table(fit, "site", scale="logit")


@pytest.fixture(scope="module")
def bernoulli():
    df = simulate.bernoulli_groups(n_groups=30, n_trials=10, seed=3)
    df.loc[df["subject"] == 4, "result"] = 1     # a group with every trial a success
    fit = mixedfit.glmer("result ~ (1 | subject)", df, family="binomial")
    return df, fit


def test_bernoulli_table_is_on_the_probability_scale(bernoulli):
    df, fit = bernoulli
    tab = shrinkage.pooling_table(fit)
    assert tab.attrs["scale"] == "response"
    props = df.groupby("subject")["result"].mean()
    np.testing.assert_allclose(tab["nopool_(Intercept)"], props.reindex(tab.index))
    expit = 1 / (1 + np.exp(-fit.coef()["subject"]["(Intercept)"]))
    np.testing.assert_allclose(tab["partial_(Intercept)"], expit.reindex(tab.index))
    assert tab.attrs["population"]["(Intercept)"] == pytest.approx(1 / (1 + np.exp(-fit.fixef.iloc[0])))
    assert tab["complete_(Intercept)"].iloc[0] == pytest.approx(df["result"].mean())
    assert tab.loc[4, "nopool_(Intercept)"] == 1.0 and tab.loc[4, "nopool_note"] == ""
    assert (tab["n_trials"] == 10).all()
    # small proportions are pulled up, large ones down (the second seed's picture)
    pop = tab.attrs["population"]["(Intercept)"]
    low = tab["nopool_(Intercept)"] < pop - 0.05
    high = tab["nopool_(Intercept)"] > pop + 0.05
    assert (tab.loc[low, "partial_(Intercept)"] > tab.loc[low, "nopool_(Intercept)"]).all()
    assert (tab.loc[high, "partial_(Intercept)"] < tab.loc[high, "nopool_(Intercept)"]).all()
    s = tab["shrinkage_(Intercept)"].dropna()
    assert ((s > 0) & (s < 1)).all()


def test_bernoulli_table_on_the_logit_scale(bernoulli):
    df, fit = bernoulli
    tab = shrinkage.pooling_table(fit, scale="link")
    assert tab.attrs["scale"] == "link"
    props = df.groupby("subject")["result"].mean().reindex(tab.index)
    inner = (props > 0) & (props < 1)
    np.testing.assert_allclose(tab.loc[inner, "nopool_(Intercept)"],
                               np.log(props[inner] / (1 - props[inner])), atol=1e-7)
    assert np.isnan(tab.loc[4, "nopool_(Intercept)"])
    assert tab.loc[4, "nopool_note"] == "no finite estimate (all responses 1)"
    np.testing.assert_allclose(tab["partial_(Intercept)"], fit.coef()["subject"]["(Intercept)"])


def test_glmm_with_a_slope_uses_per_cluster_glms():
    import statsmodels.api as sm
    df = simulate.clustered(n_cluster=25, obs_per_cluster=30, seed=12)
    df["hit"] = (df["y"] > 1.0).astype(int)
    with _quiet():
        fit = mixedfit.glmer("hit ~ x + (x | cluster)", df, family="binomial")
    tab = shrinkage.pooling_table(fit)
    assert tab.attrs["scale"] == "link" and tab.attrs["link"] == "logit"
    checked = 0
    for lv, d in df.groupby("cluster"):
        if tab.loc[lv, "nopool_note"]:
            continue
        r = sm.GLM(d["hit"], sm.add_constant(d["x"]), family=sm.families.Binomial()).fit()
        np.testing.assert_allclose(tab.loc[lv, ["nopool_(Intercept)", "nopool_x"]].to_numpy(float),
                                   r.params.to_numpy(), rtol=1e-6, atol=1e-6)
        checked += 1
    assert checked >= 20
    full = sm.GLM(df["hit"], sm.add_constant(df["x"]), family=sm.families.Binomial()).fit()
    assert tab["complete_x"].iloc[0] == pytest.approx(full.params["x"], rel=1e-6)
    with pytest.raises(ValueError, match="scale='response'"):
        shrinkage.pooling_table(fit, scale="response")


def test_poisson_intercept_model_reports_mean_counts():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(20), 6)
    lam = np.exp(1.0 + rng.normal(0, 0.5, 20))[g]
    df = pd.DataFrame({"count": rng.poisson(lam), "g": g})
    fit = mixedfit.glmer("count ~ 1 + (1 | g)", df, family="poisson")
    tab = shrinkage.pooling_table(fit)
    assert tab.attrs["scale"] == "response"
    np.testing.assert_allclose(tab["nopool_(Intercept)"], df.groupby("g")["count"].mean().reindex(tab.index))
    np.testing.assert_allclose(tab["partial_(Intercept)"], np.exp(fit.coef()["g"]["(Intercept)"]))
    assert "n_trials" not in tab.columns


def test_many_clusters_are_handled_without_a_python_loop():
    df = simulate.clustered(n_cluster=20000, obs_per_cluster=4, balanced=0.8, seed=1)
    fit = mixedfit.lmer("y ~ x + (x | cluster)", df)
    t0 = time.perf_counter()
    tab = shrinkage.pooling_table(fit)
    elapsed = time.perf_counter() - t0
    assert len(tab) > 19000
    assert elapsed < 0.5, f"pooling table for 20000 clusters took {elapsed:.2f} s"
    # spot-check a few clusters against one-by-one regressions
    for lv in tab.index[tab["n"] >= 3][:5]:
        d = df[df["cluster"] == lv]
        slope, icept = np.polyfit(d["x"], d["y"], 1)
        assert tab.loc[lv, "nopool_x"] == pytest.approx(slope, abs=1e-9)
