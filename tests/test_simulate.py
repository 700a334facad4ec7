"""Simulators of the shrinkage demonstration: shapes, reproducibility, the model they follow and
the errors for bad arguments."""

import math

import numpy as np
import pandas as pd
import pytest

from mixedfit import simulate


def test_clustered_default_shape_and_columns():
    df = simulate.clustered()
    assert list(df.columns) == ["x", "y", "cluster"]
    assert len(df) == 1000
    assert df["cluster"].nunique() == 100
    assert (df.groupby("cluster").size() == 10).all()
    assert df["cluster"].min() == 1 and df["cluster"].max() == 100
    assert df["cluster"].is_monotonic_increasing
    assert df["x"].dtype == float and df["y"].dtype == float


def test_clustered_is_reproducible_and_seed_dependent():
    a = simulate.clustered(seed=1)
    b = simulate.clustered(seed=1)
    c = simulate.clustered(seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["y"], c["y"])
    # a Generator is accepted as seed too
    g = simulate.clustered(seed=np.random.default_rng(5))
    assert len(g) == 1000


def test_clustered_follows_the_model_exactly_without_noise():
    df, eff = simulate.clustered(n_cluster=7, obs_per_cluster=5, sigma=0, intercept=2.0,
                                 beta=-1.0, return_effects=True, seed=3)
    e = eff.loc[df["cluster"]].to_numpy()
    expected = (2.0 + e[:, 0]) + (-1.0 + e[:, 1]) * df["x"].to_numpy()
    np.testing.assert_allclose(df["y"], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(eff["intercept"], 2.0 + eff["re_intercept"])
    np.testing.assert_allclose(eff["slope"], -1.0 + eff["re_slope"])
    assert list(eff.index) == list(range(1, 8))


def test_clustered_random_effect_covariance_has_cor_off_diagonal():
    # cor is a covariance (as the original demonstration writes it)
    _, eff = simulate.clustered(n_cluster=40000, obs_per_cluster=1, sd_int=0.5, sd_slope=0.4,
                                cor=0.1, return_effects=True, seed=11)
    cov = np.cov(eff["re_intercept"], eff["re_slope"])
    np.testing.assert_allclose(cov, [[0.25, 0.1], [0.1, 0.16]], atol=0.01)


def test_clustered_x_is_standard_normal():
    df = simulate.clustered(n_cluster=2000, obs_per_cluster=10, seed=4)
    assert abs(df["x"].mean()) < 0.03
    assert abs(df["x"].std() - 1) < 0.03


def test_clustered_boundary_cor_gives_perfectly_correlated_effects():
    _, eff = simulate.clustered(sd_int=0.5, sd_slope=0.25, cor=0.125, return_effects=True)
    np.testing.assert_allclose(eff["re_slope"], 0.5 * eff["re_intercept"], atol=1e-12)
    _, eff = simulate.clustered(sd_int=0.0, sd_slope=0.25, cor=0.0, return_effects=True)
    assert np.all(eff["re_intercept"] == 0) and eff["re_slope"].std() > 0


@pytest.mark.parametrize("cor", [0.2, -0.13, 1.0])
def test_clustered_rejects_cor_that_is_not_positive_semidefinite(cor):
    with pytest.raises(ValueError, match=rf"cor={cor!r}.*not positive semi-definite"):
        simulate.clustered(sd_int=0.5, sd_slope=0.25, cor=cor)


def test_clustered_balanced_keeps_that_fraction_of_rows():
    full = simulate.clustered(seed=9)
    half = simulate.clustered(balanced=0.5, seed=9)
    assert len(half) == 500
    sizes = half.groupby("cluster").size()
    assert sizes.nunique() > 1                      # clusters now differ in size
    assert half["cluster"].is_monotonic_increasing
    # the kept rows are rows of the full data (same x for the same seed's draws)
    assert set(np.round(half["x"], 12)) <= set(np.round(full["x"], 12))
    assert len(simulate.clustered(balanced=0.0)) == 0
    assert len(simulate.clustered(balanced=1)) == 1000


@pytest.mark.parametrize("balanced", [-0.1, 1.5, 2])
def test_clustered_balanced_outside_unit_interval_is_an_error(balanced):
    with pytest.raises(ValueError, match=rf"balanced.*{balanced!r}"):
        simulate.clustered(balanced=balanced)


@pytest.mark.parametrize(
    "kwargs, exc, text",
    [
        ({"obs_per_cluster": 0}, ValueError, "obs_per_cluster"),
        ({"n_cluster": -3}, ValueError, "n_cluster"),
        ({"n_cluster": 2.5}, TypeError, "n_cluster"),
        ({"obs_per_cluster": "10"}, TypeError, "obs_per_cluster"),
        ({"sigma": -1}, ValueError, "sigma"),
        ({"sd_int": -0.5}, ValueError, "sd_int"),
        ({"sd_slope": math.nan}, ValueError, "sd_slope"),
        ({"beta": math.inf}, ValueError, "beta"),
        ({"balanced": True}, TypeError, "balanced"),
    ],
)
def test_clustered_bad_arguments_name_the_value(kwargs, exc, text):
    with pytest.raises(exc, match=text):
        simulate.clustered(**kwargs)


def test_clustered_accepts_integral_floats():
    assert len(simulate.clustered(obs_per_cluster=3.0, n_cluster=4.0)) == 12


def test_bernoulli_groups_shape_and_values():
    df = simulate.bernoulli_groups()
    assert list(df.columns) == ["subject", "result"]
    assert len(df) == 300
    assert (df.groupby("subject").size() == 10).all()
    assert set(df["result"].unique()) <= {0, 1}
    pd.testing.assert_frame_equal(df, simulate.bernoulli_groups())
    assert not df.equals(simulate.bernoulli_groups(seed=1))


def test_bernoulli_groups_probabilities_follow_logit_normal():
    df, eff = simulate.bernoulli_groups(n_groups=4000, n_trials=5, p0=0.7, sd_logit=1.0,
                                        return_effects=True, seed=2)
    logit = eff["logit_theta"]
    assert abs(logit.mean() - math.log(0.7 / 0.3)) < 0.05
    assert abs(logit.std() - 1.0) < 0.05
    np.testing.assert_allclose(eff["theta"], 1 / (1 + np.exp(-logit)))
    # results agree with the group probabilities on average
    props = df.groupby("subject")["result"].mean()
    assert abs(props.mean() - eff["theta"].mean()) < 0.02


def test_bernoulli_groups_without_group_variation():
    df, eff = simulate.bernoulli_groups(n_groups=200, n_trials=50, p0=0.3, sd_logit=0.0,
                                        return_effects=True, seed=5)
    np.testing.assert_allclose(eff["theta"], 0.3)
    assert abs(df["result"].mean() - 0.3) < 0.02


@pytest.mark.parametrize(
    "kwargs, exc, text",
    [
        ({"p0": 1.0}, ValueError, "p0"),
        ({"p0": 0}, ValueError, "p0"),
        ({"sd_logit": -1}, ValueError, "sd_logit"),
        ({"n_groups": 0}, ValueError, "n_groups"),
        ({"n_trials": 1.5}, TypeError, "n_trials"),
    ],
)
def test_bernoulli_groups_bad_arguments(kwargs, exc, text):
    with pytest.raises(exc, match=text):
        simulate.bernoulli_groups(**kwargs)
