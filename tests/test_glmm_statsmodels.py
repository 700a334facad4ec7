"""glmer against statsmodels, where the two compute comparable things.

1. statsmodels' ``BinomialBayesMixedGLM`` / ``PoissonBayesMixedGLM`` (``fit_vb``) maximize a
   variational lower bound with priors, not the Laplace likelihood: their fixed effects are
   posterior means of a Gaussian approximation, their random-effect variance is a posterior
   summary on the log scale. Only the fixed effects (and the predicted random effects) of
   well-identified models are comparable, and only approximately (tolerances below).
2. With no cluster effects at all, glmer's variance estimate sits on its boundary (theta = 0),
   where the Laplace objective is the GLM's -2 log-likelihood: fixed effects, their
   conditional covariance and the log-likelihood must then be statsmodels' GLM's.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM, PoissonBayesMixedGLM

import mixedfit

# Fixed effects, absolute on the link scale. A different criterion: the variational posterior
# mean under a N(0, 2^2) prior vs the Laplace maximum likelihood estimate. With ~80 clusters
# of 10 and a moderate random-effect SD (0.5) both are within a small fraction of a standard
# error (SE ~ 0.05-0.1 here) of each other; observed differences are < 0.01, so 0.05 is loose
# enough for any seed and tight enough to catch a wrong sign, scale or link.
VB_FIXEF_ATOL = 0.05
# Predicted random effects: VB posterior means vs conditional modes, both shrunken estimates
# of the same cluster effects; they move together (correlation) and differ by a shrinkage
# factor that depends on the two variance estimates (absolute tolerance, SD 0.5 effects).
VB_RANEF_CORR = 0.99
VB_RANEF_ATOL = 0.1
# At theta = 0 both programs minimize the same GLM deviance: ours by BOBYQA over (theta, beta)
# to ~1e-8 in the objective, so beta to ~1e-4 standard errors; statsmodels by IRLS to 1e-8.
GLM_BETA_SE = 1e-3
# -2 log L at the optimum: stationary, so second order in the optimizer's error.
GLM_LOGLIK_RTOL = 1e-8
# vcov from the final weighted factor at theta = 0 is (X'WX)^-1 at our beta: first order in
# the difference of the betas (~1e-4 SE), relative.
GLM_VCOV_RTOL = 1e-3


def clustered(seed: int, family: str, G: int = 80, m: int = 10, sd: float = 0.5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(G), m)
    x = rng.normal(size=G * m)
    z = rng.uniform(-1, 1, G * m)
    b = sd * rng.normal(size=G)
    if family == "binomial":
        eta = -0.3 + 0.6 * x - 0.4 * z + b[g]
        y = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    else:
        eta = 0.5 + 0.3 * x - 0.2 * z + b[g]
        y = rng.poisson(np.exp(eta))
    return pd.DataFrame({"y": y, "x": x, "z": z, "g": [f"c{i:03d}" for i in g]})


@pytest.mark.parametrize("family,vb", [("binomial", BinomialBayesMixedGLM),
                                       ("poisson", PoissonBayesMixedGLM)])
def test_fixed_effects_close_to_variational_bayes(family, vb):
    df = clustered(5, family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # statsmodels' optimizer chatter
        res = vb.from_formula("y ~ x + z", {"g": "0 + C(g)"}, df).fit_vb()
    fit = mixedfit.glmer("y ~ x + z + (1 | g)", df, family=family)
    assert list(fit.fixef.index) == ["(Intercept)", "x", "z"]
    np.testing.assert_allclose(fit.fixef.to_numpy(), res.fe_mean, rtol=0, atol=VB_FIXEF_ATOL)
    # Random effects: statsmodels orders C(g)'s columns by sorted level, as our ranef index.
    re = fit.ranef()["g"]["(Intercept)"]
    assert list(re.index) == sorted(df["g"].unique())
    vb_re = np.asarray(res.vc_mean)
    assert np.corrcoef(re.to_numpy(), vb_re)[0, 1] >= VB_RANEF_CORR
    np.testing.assert_allclose(re.to_numpy(), vb_re, rtol=0, atol=VB_RANEF_ATOL)


def no_cluster_effect(family: str, G: int = 30, seed: int = 2) -> pd.DataFrame:
    """Every cluster holds the same rows (x, offset, weight, y) in its own order: the clusters do
    not differ at all, so the between-cluster variance estimate is exactly 0 (at theta = 0 the
    score for the variance is minus the clusters' total information)."""
    rng = np.random.default_rng(seed)
    m = 12
    x = rng.normal(size=m)
    off = rng.normal(0, 0.3, m)
    if family == "binomial":
        trials = rng.integers(1, 6, m)
        s = rng.binomial(trials, 1 / (1 + np.exp(-(0.2 + 0.7 * x + off))))
        base = pd.DataFrame({"x": x, "off": off, "s": s, "f": trials - s})
    else:
        w = rng.uniform(0.5, 2.0, m)
        base = pd.DataFrame({"x": x, "off": off, "w": w, "y": rng.poisson(np.exp(0.8 + 0.4 * x + off))})
    parts = []
    for j in range(G):
        part = base.iloc[rng.permutation(m)].copy()
        part["g"] = f"g{j:02d}"
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_no_cluster_variance_gives_the_glm(family):
    df = no_cluster_effect(family)
    X = np.column_stack([np.ones(len(df)), df["x"].to_numpy()])
    if family == "binomial":
        glm = sm.GLM(df[["s", "f"]].to_numpy(), X, family=sm.families.Binomial(),
                     offset=df["off"].to_numpy()).fit(tol=1e-12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # a boundary (singular) fit may be announced
            fit = mixedfit.glmer("cbind(s, f) ~ x + offset(off) + (1 | g)", df)
    else:
        # Prior weights multiply each observation's log-likelihood (R's glm weights):
        # statsmodels' freq_weights.
        glm = sm.GLM(df["y"].to_numpy(), X, family=sm.families.Poisson(),
                     offset=df["off"].to_numpy(), freq_weights=df["w"].to_numpy()).fit(tol=1e-12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = mixedfit.glmer("y ~ x + (1 | g)", df, family="poisson", offset="off", weights="w")
    assert fit.theta[0] < 1e-4 and fit.is_singular()
    se = np.sqrt(np.diag(glm.cov_params()))
    np.testing.assert_allclose(fit.fixef.to_numpy(), glm.params, rtol=0, atol=GLM_BETA_SE * se.min())
    assert abs(fit.loglik - glm.llf) <= GLM_LOGLIK_RTOL * abs(glm.llf)
    np.testing.assert_allclose(fit.vcov_factor.to_numpy(), glm.cov_params(), rtol=GLM_VCOV_RTOL)
    # lme4's deviance() for a GLMM: the sum of squared deviance residuals, here the GLM's.
    assert abs(fit.deviance - glm.deviance) <= 1e-6 * glm.deviance
