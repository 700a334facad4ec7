"""The family maths that Python uses (mixedfit.families.Family) is the core's, the same PIRLS
uses; here it is checked against independent formulas (SciPy's distributions and special
functions) for every family and link."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from mixedfit.families import FAMILIES, NegativeBinomial, resolve_family

RTOL = 1e-13  # elementwise maths: a few units of rounding

# Independent link functions (mu -> eta), the inverse, and d mu / d eta.
LINKS = {
    "identity": (lambda m: m, lambda e: e, lambda e: np.ones_like(e)),
    "log": (np.log, np.exp, np.exp),
    "logit": (special.logit, special.expit, lambda e: special.expit(e) * special.expit(-e)),
    "probit": (special.ndtri, special.ndtr, stats.norm.pdf),
    "cloglog": (lambda m: np.log(-np.log1p(-m)), lambda e: -np.expm1(-np.exp(e)),
                lambda e: np.exp(e - np.exp(e))),
    "cauchit": (lambda m: np.tan(np.pi * (m - 0.5)), lambda e: 0.5 + np.arctan(e) / np.pi,
                lambda e: 1.0 / (np.pi * (1.0 + e * e))),
    "inverse": (lambda m: 1.0 / m, lambda e: 1.0 / e, lambda e: -1.0 / e**2),
    "sqrt": (np.sqrt, np.square, lambda e: 2.0 * e),
    "1/mu^2": (lambda m: m**-2.0, lambda e: e**-0.5, lambda e: -0.5 * e**-1.5),
}
CASES = [(name, link) for name, spec in FAMILIES.items() for link in spec[2]]


def _family(name, link):
    return NegativeBinomial(2.5, link) if name == "negative.binomial" else resolve_family(name, link)


def _means(name):
    """Means inside the family's range, away from the links' clamps."""
    return np.linspace(0.03, 0.97, 25) if name == "binomial" else np.linspace(0.2, 9.0, 25)


@pytest.mark.parametrize("name,link", CASES)
def test_links_match_independent_formulas(name, link):
    fam = _family(name, link)
    mu = _means(name)
    fun, inv, deriv = LINKS[link]
    eta = fam.linkfun(mu)
    np.testing.assert_allclose(eta, fun(mu), rtol=RTOL, atol=1e-15)
    np.testing.assert_allclose(fam.linkinv(eta), inv(eta), rtol=RTOL)
    np.testing.assert_allclose(fam.linkinv(eta), mu, rtol=1e-12)
    np.testing.assert_allclose(fam.mu_eta(eta), deriv(eta), rtol=RTOL)


def test_probit_quantile_to_working_precision_in_both_tails():
    fam = resolve_family("binomial", "probit")
    p = np.concatenate([10.0 ** -np.arange(1, 300, 7), [0.02425, 0.3, 0.5, 0.7, 0.97575],
                        1 - 10.0 ** -np.arange(1, 16)])
    np.testing.assert_allclose(fam.linkfun(p), special.ndtri(p), rtol=4e-15, atol=1e-15)
    assert list(fam.linkfun(np.array([0.0, 1.0]))) == [-np.inf, np.inf]
    tiny = np.array([5e-324, 1e-310])  # subnormal: finite, below every normal's quantile
    assert np.all(np.isfinite(fam.linkfun(tiny))) and np.all(fam.linkfun(tiny) < -37.5)
    assert np.isnan(fam.linkfun(np.array([-0.1, 1.1, np.nan]))).all()


@pytest.mark.parametrize("name,link", CASES)
def test_variance_and_deviance(name, link):
    fam = _family(name, link)
    mu = _means(name)
    rng = np.random.default_rng(7)
    wt = rng.uniform(0.5, 3.0, mu.size)
    if name == "binomial":
        y = rng.integers(0, 2, mu.size).astype(float)
        var = mu * (1 - mu)
        dev = -2 * wt * (y * np.log(mu) + (1 - y) * np.log1p(-mu))
    elif name in ("poisson", "negative.binomial"):
        y = rng.poisson(mu).astype(float)
        ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0.0)
        if name == "poisson":
            var, dev = mu, 2 * wt * (ylogy - (y - mu))
        else:
            t = 2.5
            var = mu + mu**2 / t
            dev = 2 * wt * (ylogy - (y + t) * np.log((y + t) / (mu + t)))
    else:
        y = mu * rng.uniform(0.5, 1.5, mu.size)
        var = {"Gamma": mu**2, "inverse.gaussian": mu**3, "gaussian": np.ones_like(mu)}[name]
        dev = {"Gamma": -2 * wt * (np.log(y / mu) - (y - mu) / mu),
               "inverse.gaussian": wt * (y - mu) ** 2 / (y * mu**2),
               "gaussian": wt * (y - mu) ** 2}[name]
    np.testing.assert_allclose(fam.variance(mu), var, rtol=RTOL)
    np.testing.assert_allclose(fam.dev_resids(y, mu, wt), dev, rtol=1e-12, atol=1e-14)


def test_starting_means_and_aic():
    rng = np.random.default_rng(3)
    trials = rng.integers(1, 9, 30).astype(float)
    succ = rng.binomial(trials.astype(int), 0.4)
    y = succ / trials
    binom = resolve_family("binomial")
    np.testing.assert_allclose(binom.mustart(y, trials), (trials * y + 0.5) / (trials + 1))
    mu = np.full(30, 0.37)
    np.testing.assert_allclose(binom.aic(y, mu, trials),
                               -2 * stats.binom.logpmf(succ, trials.astype(int), mu).sum(),
                               rtol=1e-12)
    counts = rng.poisson(3.0, 30).astype(float)
    pois = resolve_family("poisson")
    np.testing.assert_allclose(pois.mustart(counts, np.ones(30)), counts + 0.1)
    np.testing.assert_allclose(pois.aic(counts, np.full(30, 2.5), np.ones(30)),
                               -2 * stats.poisson.logpmf(counts, 2.5).sum(), rtol=1e-12)
    nb = NegativeBinomial(1.7)
    np.testing.assert_allclose(nb.mustart(counts, np.ones(30)), counts + (counts == 0) / 6)


def test_shapes_and_scalars_pass_through():
    fam = resolve_family("binomial")
    assert fam.linkinv(0.0).shape == ()
    assert float(fam.linkinv(0.0)) == 0.5
    grid = np.zeros((2, 3))
    assert fam.mu_eta(grid).shape == (2, 3)
    np.testing.assert_allclose(fam.dev_resids(np.array([1.0, 0.0]), 0.5, 1.0), 2 * np.log(2.0))


@pytest.mark.parametrize("name,link", [("binomial", "logit"), ("poisson", "log"),
                                       ("binomial", "probit"), ("Gamma", "log")])
def test_irls_rows_are_one_pirls_step(name, link):
    """The fused pass PIRLS runs (vectorized for the canonical binomial and Poisson models)
    gives what the elementwise functions give."""
    fam = resolve_family(name, link)
    rng = np.random.default_rng(11)
    n = 700  # crosses the fused pass's chunk boundaries
    eta = rng.normal(scale=1.5, size=n) + (1.0 if name != "binomial" else 0.0)
    base = rng.normal(scale=0.1, size=n)
    pw = rng.uniform(0.5, 2.0, n)
    mu_true = fam.linkinv(eta)
    y = (rng.random(n) < mu_true).astype(float) if name == "binomial" else \
        rng.poisson(mu_true).astype(float) + (0.5 if name == "Gamma" else 0.0)
    mu, mu_eta, weights, z, dev = fam.irls_rows(eta, base, y, pw)
    np.testing.assert_allclose(mu, fam.linkinv(eta), rtol=1e-13)
    np.testing.assert_allclose(mu_eta, fam.mu_eta(eta), rtol=1e-13)
    np.testing.assert_allclose(weights, pw * fam.mu_eta(eta) ** 2 / fam.variance(mu),
                               rtol=1e-12)
    np.testing.assert_allclose(z, eta - base + (y - mu) / mu_eta, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dev, fam.dev_resids(y, mu, pw).sum(), rtol=1e-12)


def test_irls_rows_flags_an_invalid_mean():
    fam = resolve_family("Gamma", "inverse")  # a negative eta is a negative mean
    eta = np.array([1.0, -2.0, 0.5])
    out = fam.irls_rows(eta, np.zeros(3), np.ones(3), np.ones(3))
    assert np.isnan(out[-1])
