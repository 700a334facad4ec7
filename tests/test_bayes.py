"""mixedfit.bayes: MCMC fits of the lme4 formula against the frequentist fits, priors,
diagnostics and the shrinkage comparison.

Fits here are small and short (2 chains, a few hundred draws, fixed seeds): the point is that
posterior means agree with the mixed model's estimates where they must (many groups, weak
priors), not to produce publication-grade posteriors; Monte Carlo error of a posterior mean is
about posterior SD / sqrt(ESS) ~ SD / 15 here, and each tolerance below says what else it
allows for.
"""

import copy
import warnings

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("numpyro")

import mixedfit  # noqa: E402
from mixedfit import plot, shrinkage, simulate  # noqa: E402
from mixedfit.bayesian import (  # noqa: E402
    BayesConvergenceWarning,
    _convergence_problems,
    _warn_if_unconverged,
    bayes,
    default_priors,
)


def _fit_quietly(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BayesConvergenceWarning)
        return bayes(*args, progress=False, **kwargs)


@pytest.fixture(scope="module")
def bernoulli():
    df = simulate.bernoulli_groups(n_groups=60, n_trials=20, p0=0.7, sd_logit=1.0, seed=5)
    freq = mixedfit.glmer("result ~ (1 | subject)", df, family="binomial")
    post = _fit_quietly("result ~ (1 | subject)", df, family="binomial", chains=2, draws=300,
                        tune=300, seed=11)
    return df, freq, post


@pytest.fixture(scope="module")
def slopes():
    df = simulate.clustered(n_cluster=60, obs_per_cluster=10, sd_int=0.6, sd_slope=0.5, seed=3)
    freq = mixedfit.lmer("y ~ x + (x | cluster)", df)
    post = _fit_quietly("y ~ x + (x | cluster)", df, chains=2, draws=300, tune=300, seed=12)
    return df, freq, post


# ---------------------------------------------------------------------------------------------
# agreement with the frequentist fits
# ---------------------------------------------------------------------------------------------
def test_bernoulli_posterior_means_agree_with_glmer(bernoulli):
    _, freq, post = bernoulli
    # 60 groups of 20 trials: the posterior of the intercept is nearly normal around glmer's
    # estimate; allow 1.5 posterior SDs (~0.2) for the mean-vs-mode difference and MC error.
    sd_b0 = post.summary().loc["(Intercept)", "sd"]
    assert abs(post.fixef["(Intercept)"] - freq.fixef["(Intercept)"]) < 1.5 * sd_b0
    re_f = freq.ranef()["subject"]
    re_b = post.ranef()["subject"]
    assert re_b.index.equals(re_f.index) and list(re_b.columns) == list(re_f.columns)
    # group effects: posterior means vs conditional modes. They differ by the skewness of each
    # group's posterior and by averaging over the SD; both are small next to the spread.
    a, b = re_f["(Intercept)"].to_numpy(), re_b["(Intercept)"].to_numpy()
    assert np.corrcoef(a, b)[0, 1] > 0.99
    assert np.max(np.abs(a - b)) < 0.25 and np.std(a - b) < 0.1 * np.std(a) + 0.05
    # the random-effect SD: glmer's estimate inside the central 95% of the posterior
    vc = post.varcorr.set_index("grp")
    sd_f = freq.varcorr.to_frame()["sdcor"].iloc[0]
    assert vc.loc["subject", "q2.5"] < sd_f < vc.loc["subject", "q97.5"]


def test_random_slopes_posterior_means_agree_with_lmer(slopes):
    _, freq, post = slopes
    summ = post.summary()
    for name in ("(Intercept)", "x"):
        assert abs(post.fixef[name] - freq.fixef[name]) < 1.5 * summ.loc[name, "sd"]
    assert abs(post.sigma - freq.sigma) < 2 * summ.loc["sigma", "sd"]
    cf, cb = freq.coef()["cluster"], post.coef()["cluster"]
    assert cb.index.equals(cf.index) and list(cb.columns) == list(cf.columns)
    for c in ("(Intercept)", "x"):
        assert np.corrcoef(cf[c], cb[c])[0, 1] > 0.97, c
    # VarCorr's rows, in lme4's order, with lmer's estimates inside the 95% intervals
    vf = freq.varcorr.to_frame()
    vb = post.varcorr
    assert list(vb["grp"]) == list(vf["grp"])
    assert [str(v) for v in vb["var1"]] == [str(v) for v in vf["var1"]]
    assert ((vb["q2.5"] < vf["sdcor"]) & (vf["sdcor"] < vb["q97.5"])).all()


def test_summary_and_diagnostics_tables(slopes):
    _, _, post = slopes
    summ = post.summary()
    assert list(summ.columns) == ["mean", "sd", "q2.5", "q97.5", "r_hat", "ess_bulk"]
    assert list(summ.index) == ["(Intercept)", "x", "sd (Intercept) | cluster", "sd x | cluster",
                                "cor (Intercept),x | cluster", "sigma"]
    assert (summ["q2.5"] < summ["mean"]).all() and (summ["mean"] < summ["q97.5"]).all()
    diag = post.diagnostics()
    assert list(diag.columns) == ["r_hat", "ess_bulk", "ess_tail"]
    assert len(diag) == 6 + 60 * 2                     # every random effect too
    assert "ranef x | cluster[7]" in diag.index
    assert np.isfinite(diag.to_numpy()).all()
    assert diag.attrs["divergences"] == post.divergences >= 0
    # the draws behind ranef(): chains x draws x levels x terms
    draws = post.ranef_draws()["cluster"]
    assert draws.shape == (2, 300, 60, 2)
    np.testing.assert_allclose(draws.mean(("chain", "draw")).to_numpy(),
                               post.ranef()["cluster"].to_numpy(), rtol=1e-6)
    assert "posterior" in post.idata.groups() and "sample_stats" in post.idata.groups()
    assert "Bayesian mixed model" in str(post) and "sd x | cluster" in str(post)


def test_diagnostics_are_computed_from_the_chains(slopes):
    """Chains made to disagree must show in R-hat and raise the warning; divergences too."""
    _, _, post = slopes
    broken = copy.copy(post)
    broken.idata = post.idata.copy()
    fixef = broken.idata.posterior["fixef"]
    fixef.loc[{"chain": 1}] = fixef.sel(chain=1) + 1.0       # one chain somewhere else
    diag = broken.diagnostics()
    assert diag.loc["(Intercept)", "r_hat"] > 1.5 and diag.loc["x", "r_hat"] > 1.5
    assert diag.loc["sigma", "r_hat"] == pytest.approx(post.diagnostics().loc["sigma", "r_hat"])
    problems = _convergence_problems(broken)
    assert any("R-hat" in p for p in problems)
    broken.divergences = 7
    with pytest.warns(BayesConvergenceWarning, match="7 divergent transitions.*target_accept"):
        _warn_if_unconverged(broken)


def test_a_run_without_warm_up_is_reported():
    df = simulate.bernoulli_groups(n_groups=12, n_trials=5, seed=2)
    with pytest.warns(BayesConvergenceWarning, match="effective sample size|R-hat"):
        bayes("result ~ (1 | subject)", df, family="binomial", chains=2, draws=20, tune=0,
              seed=1, progress=False)


# ---------------------------------------------------------------------------------------------
# priors
# ---------------------------------------------------------------------------------------------
def test_default_priors_scale_with_the_data():
    df = simulate.clustered(n_cluster=20, seed=1)
    base = default_priors("y ~ x + (x | cluster)", df)
    big = df.assign(y=df["y"] * 100.0)
    scaled = default_priors("y ~ x + (x | cluster)", big)
    assert list(base.index) == ["(Intercept)", "x", "sd (Intercept) | cluster", "sd x | cluster",
                                "cor | cluster", "sigma"]
    assert base.loc["cor | cluster", "distribution"] == "LKJ"
    assert base.loc["sigma", "distribution"] == "HalfNormal"

    def number(frame, row):
        return float(frame.loc[row, "parameters"].split()[-1])

    for row in ("x", "sd x | cluster", "sigma"):
        assert number(scaled, row) == pytest.approx(100 * number(base, row), rel=1e-3)
    # binomial: unit scale on the logit scale
    bern = simulate.bernoulli_groups(seed=1)
    pri = default_priors("result ~ (1 | subject)", bern, family="binomial")
    assert number(pri, "sd (Intercept) | subject") == pytest.approx(2.5)
    assert "sigma" not in pri.index


def test_poisson_fit_and_a_prior_override():
    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(25), 8)
    x = rng.standard_normal(g.size)
    y = rng.poisson(np.exp(0.5 + 0.3 * x + 0.4 * rng.standard_normal(25)[g]))
    df = pd.DataFrame({"y": y, "x": x, "g": g})
    freq = mixedfit.glmer("y ~ x + (1 | g)", df, family="poisson")
    # A very tight prior pins the slope (here at glmer's estimate, so that the rest of the
    # posterior is comparable); the intercept is still learned from the data and, the Poisson
    # log-likelihood being close to quadratic here, agrees with glmer's to 1.5 posterior SDs.
    x_hat = float(freq.fixef["x"])
    post = _fit_quietly("y ~ x + (1 | g)", df, family="poisson", chains=2, draws=250, tune=250,
                        seed=3, priors={"fixef": {"x": (x_hat, 0.001)}, "sd": {"g": 1.0},
                                        "sd_family": "half-t"})
    assert post.fixef["x"] == pytest.approx(x_hat, abs=0.01)
    assert post.priors.loc["x", "parameters"] == f"mean {x_hat:.4g}, sd 0.001"
    assert post.priors.loc["sd (Intercept) | g", "distribution"] == "Half-t(3)"
    assert post.priors.loc["sd (Intercept) | g", "parameters"] == "scale 1"
    sd_b0 = post.summary().loc["(Intercept)", "sd"]
    assert abs(post.fixef["(Intercept)"] - freq.fixef["(Intercept)"]) < 1.5 * sd_b0


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(family="Gamma"), ValueError, "families gaussian, binomial, poisson"),
    (dict(priors={"slope": 1}), ValueError, "unknown prior key"),
    (dict(priors={"fixef": {"z": (0, 1)}}), ValueError, "'z', not a fixed effect"),
    (dict(priors={"fixef": {"x": (0, -1)}}), ValueError, "positive"),
    (dict(priors={"sd": {"nope": 1.0}}), ValueError, "grouping factor 'nope'"),
    (dict(priors={"sd_family": "cauchy"}), ValueError, "half-normal"),
    (dict(priors={"sigma": 1.0}, family="poisson"), ValueError, "Gaussian family only"),
    (dict(chains=0), ValueError, "chains"),
    (dict(draws=1), ValueError, "draws"),
    (dict(target_accept=1.5), ValueError, "target_accept"),
])
def test_bad_arguments_are_rejected_before_sampling(kwargs, error, message):
    df = pd.DataFrame({"y": [1, 0, 2, 3, 1, 0, 4, 2], "x": np.arange(8.0),
                       "g": [1, 1, 2, 2, 3, 3, 4, 4]})
    with pytest.raises(error, match=message):
        bayes("y ~ x + (1 | g)", df, progress=False, **kwargs)


def test_a_formula_without_random_effects_is_a_formula_error():
    df = pd.DataFrame({"y": [1.0, 2.0, 3.0, 4.0], "x": [0.0, 1.0, 0.0, 1.0]})
    with pytest.raises(mixedfit.FormulaError, match="no random-effects terms"):
        bayes("y ~ x", df, progress=False)


# ---------------------------------------------------------------------------------------------
# the shrinkage comparison
# ---------------------------------------------------------------------------------------------
def test_compare_bayes_on_the_probability_scale(bernoulli):
    df, freq, post = bernoulli
    table = shrinkage.compare_bayes(freq, post)
    assert table.attrs["scale"] == "response"
    observed = df.groupby("subject")["result"].mean()
    np.testing.assert_allclose(table["nopool_(Intercept)"], observed.reindex(table.index))
    # the posterior mean of each group's probability, straight from the draws
    probs = post.group_draws(scale="response").mean(axis=0)
    np.testing.assert_allclose(table["bayes_(Intercept)"], probs.reindex(table.index))
    # both frameworks shrink: estimates sit between the observed proportion and the population
    assert np.max(np.abs(table["bayes_(Intercept)"] - table["partial_(Intercept)"])) < 0.05
    moved = table["bayes_shrinkage_(Intercept)"].dropna()
    assert (moved.median() > 0.05) and (moved.between(-0.05, 1.05).mean() > 0.95)
    pop = table.attrs["bayes_population"]["(Intercept)"]
    assert abs(pop - table.attrs["population"]["(Intercept)"]) < 0.05


def test_compare_bayes_checks_the_fits_match(bernoulli, slopes):
    with pytest.raises(ValueError, match="different formulas"):
        shrinkage.compare_bayes(bernoulli[1], slopes[2])


def test_comparison_plots(slopes, bernoulli):
    _, freq, post = slopes
    table = shrinkage.compare_bayes(freq, post)
    assert {"bayes_(Intercept)", "bayes_x", "bayes_shrinkage_x"} <= set(table.columns)
    fig = plot.bayes_shrinkage_plot(table, sd=(0.6, 0.5))
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "Bayesian posterior mean" in labels and "partial pooling (mixed model)" in labels
    # the seed's figure: one panel per number of trials
    df, gfit, bfit = bernoulli
    t1 = shrinkage.compare_bayes(gfit, bfit)
    long = pd.concat([pd.DataFrame({"n_trials": j, "observed": t1["nopool_(Intercept)"],
                                    "glmer": t1["partial_(Intercept)"],
                                    "bayes": t1["bayes_(Intercept)"],
                                    "overall": df["result"].mean()}) for j in (20, 40)])
    fig = plot.bayes_proportion_panels(long)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["J = 20 trials per group", "J = 40 trials per group"]
    assert len(visible[0].collections) == 2 and len(visible[0].lines) == 2
    with pytest.raises(ValueError, match="bernoulli_by_trials"):
        plot.bayes_proportion_panels(long.drop(columns="bayes"))


@pytest.mark.slow
def test_the_seed_figure_shrinkage_in_both_frameworks(tmp_path):
    table = shrinkage.bernoulli_by_trials()       # 4 chains x 1000 draws per J
    assert sorted(table["n_trials"].unique()) == list(shrinkage.SEED_TRIALS)
    gaps = []
    for j, d in table.groupby("n_trials"):
        centred = d["observed"] - d["overall"]
        for est in ("glmer", "bayes"):
            slope = np.polyfit(centred, d[est] - d["overall"], 1)[0]
            assert 0 < slope < 1, (j, est)             # pulled toward the overall proportion
        assert np.corrcoef(d["glmer"], d["bayes"])[0, 1] > 0.98
        gaps.append(np.mean(np.abs(d["observed"] - d["bayes"])))
    assert gaps[-1] < gaps[0]                          # more trials, less shrinkage
    fig = plot.bayes_proportion_panels(table)
    fig.savefig(tmp_path / "seed.png")
    assert (tmp_path / "seed.png").stat().st_size > 10_000
