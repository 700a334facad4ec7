"""Property tests against statsmodels' MixedLM, an independent implementation of the same
likelihoods (random intercepts and random slopes, ML and REML).

statsmodels reports the covariance of the random effects ``cov_re`` and the residual variance
``scale``; in our parameterization theta is the lower Cholesky factor of ``cov_re / scale`` in
lme4's order. Two properties:
1. our profiled criterion at statsmodels' estimates is -2 x statsmodels' log-likelihood (ML) or
   restricted log-likelihood (REML), and our conditional beta and sigma^2 there are theirs;
2. our optimum is never worse than statsmodels' (criterion <= theirs + a relative 1e-6).
"""

from __future__ import annotations

import math
import os
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as sm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))

import mixedfit

from _dense_twin import marginal_objective

# statsmodels evaluates the same Gaussian likelihood through different algebra (Woodbury
# identities, group by group); both are accurate to ~1e-13 relative on these well-conditioned
# designs. Their estimates are only as good as their optimizer's convergence, which does not
# matter for property 1 (same point in both) and is what property 2 allows for.
LIKELIHOOD_RTOL = 1e-9
# beta and sigma^2 at their estimates: their GLS solution vs ours, same rounding argument.
ESTIMATE_RTOL = 1e-7
# "Never worse": our criterion may exceed theirs by at most this relative amount.
OPTIMUM_RTOL = 1e-6
# statsmodels' log-likelihood near a singular cov_re: relative error up to ~ eps * cond(cov_re).
STATSMODELS_INV_EPS = 1e-15

SETTINGS = dict(max_examples=12, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def psd_cholesky(C: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor with a non-negative diagonal, also for a singular PSD matrix
    (a boundary estimate)."""
    p = C.shape[0]
    L = np.zeros_like(C)
    for j in range(p):
        d = C[j, j] - L[j, :j] @ L[j, :j]
        L[j, j] = math.sqrt(max(d, 0.0))
        for i in range(j + 1, p):
            s = C[i, j] - L[i, :j] @ L[j, :j]
            L[i, j] = s / L[j, j] if L[j, j] > 0 else 0.0
    return L


def theta_from_statsmodels(res) -> np.ndarray:
    C = np.asarray(res.cov_re, dtype=float) / float(res.scale)
    L = psd_cholesky(C)
    p = L.shape[0]
    return np.array([L[i, j] for j in range(p) for i in range(j, p)])


def simulate_grouped(seed: int, G: int, sd0: float, sd1: float | None, rho: float) -> pd.DataFrame:
    """Unbalanced grouped data (3 to 10 observations per group): y = 1 + 0.5 x - 0.3 z + b0[g]
    (+ b1[g] x when sd1 is given, correlation rho) + N(0, 1)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 11, G)
    g = np.repeat(np.arange(G), sizes)
    n = g.size
    x = rng.normal(size=n)
    z = rng.uniform(-1, 1, n)
    b0 = rng.normal(size=G) * sd0
    y = 1.0 + 0.5 * x - 0.3 * z + b0[g] + rng.normal(size=n)
    if sd1 is not None:
        b1 = sd1 * (rho * b0 / sd0 + math.sqrt(1 - rho * rho) * rng.normal(size=G))
        y = y + b1[g] * x
    labels = np.array([f"G{k:02d}" for k in range(G)])
    return pd.DataFrame({"y": y, "x": x, "z": z, "g": labels[g]})


@st.composite
def grouped_data(draw, slope: bool):
    return simulate_grouped(
        seed=draw(st.integers(0, 2**31 - 1)),
        G=draw(st.integers(6, 16)),
        sd0=draw(st.floats(0.5, 2.0)),
        sd1=draw(st.floats(0.3, 1.2)) if slope else None,
        rho=draw(st.floats(-0.8, 0.8)) if slope else 0.0,
    )


def statsmodels_fit(df, slope: bool, reml: bool):
    model = sm.mixedlm("y ~ x + z", df, groups="g", re_formula="~x" if slope else "~1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # convergence chatter; property 2 covers bad optima
        return model.fit(reml=reml)


def twin_criterion(fit, theta, reml):
    d = fit.design
    terms = [(t.codes, t.nlevels, t.Z) for t in d.terms]
    return marginal_objective(d.X, d.y, d.weights, terms, theta, reml)


def check(df, slope: bool):
    formula = "y ~ x + z + (x | g)" if slope else "y ~ x + z + (1 | g)"
    for reml in (False, True):
        res = statsmodels_fit(df, slope, reml)
        fit = mixedfit.lmer(formula, df, reml=reml)
        assert list(fit.fixef.index) == ["(Intercept)", "x", "z"]
        theta = theta_from_statsmodels(res)
        theirs = -2.0 * float(res.llf)
        ours_at_theirs = fit.objective(theta)
        # 1. same likelihood at the same parameters. statsmodels inverts cov_re, so near a
        #    boundary its log-likelihood loses digits in proportion to cond(cov_re); the dense
        #    twin pins ours down tightly whatever the conditioning.
        assert math.isclose(ours_at_theirs, twin_criterion(fit, theta, reml), rel_tol=1e-10)
        cond = float(np.linalg.cond(np.atleast_2d(np.asarray(res.cov_re, dtype=float))))
        rtol = LIKELIHOOD_RTOL + STATSMODELS_INV_EPS * cond
        assert math.isclose(ours_at_theirs, theirs, rel_tol=rtol), (
            f"reml={reml}: our criterion {ours_at_theirs!r} at their theta {theta}, "
            f"-2 logLik {theirs!r} (cond(cov_re) = {cond:.3g})"
        )
        sol = fit._problem.solution(theta)
        n, p = fit.nobs, len(fit.beta)
        np.testing.assert_allclose(sol["beta"], np.asarray(res.fe_params), rtol=ESTIMATE_RTOL,
                                   atol=ESTIMATE_RTOL * float(np.max(np.abs(res.fe_params))))
        assert math.isclose(sol["pwrss"] / (n - p if reml else n), float(res.scale),
                            rel_tol=ESTIMATE_RTOL)
        # 2. our optimum is at least as good ...
        ours = fit.objective(fit.theta)
        assert ours == pytest.approx(float(fit.optinfo.fun), rel=1e-12)
        if reml:
            assert math.isclose(fit.reml_criterion, ours, rel_tol=1e-12)
        else:
            assert math.isclose(-2 * fit.loglik, ours, rel_tol=1e-12)
        if ours <= theirs + OPTIMUM_RTOL * abs(theirs):
            continue
        # ... except where lme4's own algorithm stops on the boundary: from lme4's start
        # (theta = [1, 0, 1]) BOBYQA can settle on a singular local optimum, exactly as lme4
        # does (see test_boundary_local_optimum_as_lme4). Then the fit must be singular, and
        # the same optimizer started from statsmodels' estimate must match or beat it.
        assert fit.is_singular(), (
            f"reml={reml}: our interior optimum {ours!r} is worse than statsmodels' {theirs!r}"
        )
        again = mixedfit.lmer(formula, df, reml=reml, control={"start": tuple(theta)})
        assert again.optinfo.fun <= theirs + OPTIMUM_RTOL * abs(theirs)


@settings(**SETTINGS)
@given(grouped_data(slope=False))
def test_random_intercept(df):
    check(df, slope=False)


@settings(**SETTINGS)
@given(grouped_data(slope=True))
def test_random_slope(df):
    check(df, slope=True)


def test_theta_conversion_round_trip():
    """theta -> lambda -> lambda lambda' -> psd_cholesky gives theta back, also on the boundary."""
    for theta in ([1.3, -0.4, 0.7], [0.9, 0.5, 0.0], [0.0, 0.0, 0.8]):
        t = np.array(theta)
        lam = np.array([[t[0], 0.0], [t[1], t[2]]])
        L = psd_cholesky(lam @ lam.T)
        got = np.array([L[0, 0], L[1, 0], L[1, 1]])
        if t[0] == 0.0:      # lambda = [[0, 0], [a, b]]: only a^2 + b^2 is identified
            assert math.isclose(got[2] ** 2, t[1] ** 2 + t[2] ** 2)
        else:
            np.testing.assert_allclose(got, t, rtol=1e-12, atol=1e-15)


# lme4 1.1-31 on simulate_grouped(56, G=6, sd0=1, sd1=0.8, rho=-0.5), y ~ x + z + (x | g):
#   ML:   theta = (0, -0.2453378689, 0.3837461698), deviance 120.7390340567, 29 evaluations
#   REML: theta = (0, -0.2429431077, 0.4918847394), REML criterion 123.8112058579, 28 evaluations
# (lmer(..., REML = FALSE / TRUE) on the same 42 rows written out with 17 significant digits.)
LME4_BOUNDARY_CASE = {
    False: ((0.0, -0.2453378689, 0.3837461698), 120.7390340567),
    True: ((0.0, -0.2429431077, 0.4918847394), 123.8112058579),
}
# lme4 prints to 10 decimals; the optimizer paths are identical, so agreement is to ~1e-9.
LME4_TOL = 1e-8


def test_boundary_local_optimum_as_lme4():
    """From theta = [1, 0, 1] lme4's BOBYQA stops on the boundary (random-intercept SD 0) at
    a local optimum. On lme4's path (optimizer="bobyqa", the default for a model this small)
    we reproduce lme4's answer; statsmodels (ML) finds a better interior point, and so do our
    gradient-based path and BOBYQA from another start."""
    df = simulate_grouped(56, G=6, sd0=1.0, sd1=0.8, rho=-0.5)
    # the data lme4 saw (guards against a change in numpy's random streams)
    assert len(df) == 42
    assert math.isclose(float(df["y"].sum()), 45.704485468012, abs_tol=1e-9)
    assert math.isclose(float(df["x"].sum()), 10.520045802624, abs_tol=1e-9)
    for reml, (theta, crit) in LME4_BOUNDARY_CASE.items():
        fit = mixedfit.lmer("y ~ x + z + (x | g)", df, reml=reml, control={"optimizer": "bobyqa"})
        assert fit.is_singular()
        np.testing.assert_allclose(fit.theta, theta, atol=LME4_TOL)
        assert math.isclose(fit.optinfo.fun, crit, abs_tol=LME4_TOL)
        grad = mixedfit.lmer("y ~ x + z + (x | g)", df, reml=reml,
                             control={"optimizer": "gradient"})
        assert grad.optinfo.fun < crit - 0.5
    ml = mixedfit.lmer("y ~ x + z + (x | g)", df, reml=False, control={"optimizer": "gradient"})
    theirs = -2.0 * float(statsmodels_fit(df, True, False).llf)
    assert ml.optinfo.fun <= theirs
    better = mixedfit.lmer("y ~ x + z + (x | g)", df, reml=False,
                           control={"start": (0.5, 0.0, 0.5), "optimizer": "bobyqa"})
    assert better.optinfo.fun <= theirs
    assert not better.is_singular() or better.theta[0] > 0.1
