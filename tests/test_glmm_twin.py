"""The GLMM core against the dense twin (_glmm_twin.py), at fixed parameters.

Hypothesis draws small problems (n 20..120): binomial (logit, probit, cloglog; 0/1 data, integer
prior weights, or proportions of several trials), poisson (log, sqrt), Gamma (log, inverse),
inverse.gaussian (1/mu^2, log); one scalar term (intercept or a covariate), a vector term, or two
crossed terms; with and without offsets and prior weights; theta components exactly 0 or not.
The core's PIRLS (stage 2 and the nAGQ = 0 stage), its Laplace and adaptive Gauss-Hermite
objectives and the state it reports are compared with the twin's, which are computed densely
with the mode found to ~1e-12. Then the objective of fitted ``glmer`` models, their optimum and
their Hessian-based standard errors are checked against the twin.
"""

from __future__ import annotations

import math
import os
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))

import mixedfit  # noqa: E402
from mixedfit import NumericalError, _core  # noqa: E402

from _glmm_twin import (  # noqa: E402
    GlmmFamily,
    agq_exact_objective,
    agq_objective,
    conditional_mode,
    joint_mode,
)

# The core's PIRLS converges to rel 1e-10 in the penalized deviance pdev and, in the same
# iteration, to a step in u below ~1e-11 relative. pdev alone would not do: it is stationary at
# the mode, so a 1e-10 change in pdev leaves u off by up to ~sqrt(1e-10), and the Laplace
# objective is not stationary in u (log|L|^2 and, for Gamma / inverse Gaussian, the aic move
# first-order with u): objectives of non-canonical links would then be off by ~1e-7 relative.
# With the step test the mode is good to ~1e-11 and objectives of size O(n) agree to ~1e-12
# relative; 1e-8 leaves room for conditioning and still catches a mode that is not converged.
LAPLACE_RTOL = 1e-8
# The mode u (and eta = X beta + Z Lambda u + offset), relative to max(1, max |u|).
MODE_ATOL = 1e-6
# Pieces that move first-order with the mode (devsum, aic, log|L|^2; conditional variances and
# the unscaled vcov, through the working weights), relative to their own size (at least 1).
PIECE_RTOL = 1e-7
# Adaptive Gauss-Hermite: the same mode, the same nodes, a sum of smooth terms.
AGQ_RTOL = 1e-8
# The nAGQ = 0 stage: the joint mode of (beta, u) by the same PIRLS.
STAGE1_RTOL = 1e-8

SETTINGS = dict(deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FAMILY_CODE = {"binomial": 0, "poisson": 1, "Gamma": 2, "inverse.gaussian": 3}
LINK_CODE = {"identity": 0, "log": 1, "logit": 2, "probit": 3, "cloglog": 4, "cauchit": 5,
             "inverse": 6, "sqrt": 7, "1/mu^2": 8}

CASES = [("binomial", "logit"), ("binomial", "probit"), ("binomial", "cloglog"),
         ("poisson", "log"), ("poisson", "sqrt"), ("Gamma", "log"), ("Gamma", "inverse"),
         ("inverse.gaussian", "1/mu^2"), ("inverse.gaussian", "log")]
# (intercept, slope) on the link scale: means well inside the family's range for x in [-1, 1]
# and random effects of a few tenths.
LINEAR = {("binomial", "logit"): (0.3, 0.8), ("binomial", "probit"): (0.2, 0.5),
          ("binomial", "cloglog"): (-0.6, 0.5), ("poisson", "log"): (1.0, 0.4),
          ("poisson", "sqrt"): (2.0, 0.4), ("Gamma", "log"): (0.5, 0.4),
          ("Gamma", "inverse"): (2.0, 0.4), ("inverse.gaussian", "1/mu^2"): (2.0, 0.4),
          ("inverse.gaussian", "log"): (0.0, 0.4)}


def rel_err(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1.0)


def assert_vec(actual, expected, atol, what):
    a = np.asarray(actual, dtype=float)
    e = np.asarray(expected, dtype=float)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    if a.size:
        err = float(np.max(np.abs(a - e)))
        assert err <= atol, f"{what}: max abs error {err:.3e} > {atol:.3e}"


def gh(k: int):
    z, w = np.polynomial.hermite_e.hermegauss(k)
    return np.ascontiguousarray(z), np.ascontiguousarray(w / w.sum())


# --------------------------------------------------------------------------------------------
# Problems


def term(codes, nlev, Z):
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim == 1:
        Z = Z[:, None]
    return (np.ascontiguousarray(codes, dtype=np.int32), int(nlev), np.asfortranarray(Z))


@st.composite
def problems(draw, kinds=("scalar", "vector", "crossed"), cases=tuple(CASES)):
    fam, link = draw(st.sampled_from(cases))
    kind = draw(st.sampled_from(kinds))
    n = draw(st.integers(20, 120))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    G = draw(st.integers(3, max(3, min(12, n // 4))))
    x = rng.uniform(-1, 1, n)
    X = np.asfortranarray(np.column_stack([np.ones(n), x]))
    codes = rng.integers(0, G, n)
    diag = st.one_of(st.just(0.0), st.floats(0.05, 1.5))
    if kind == "scalar":
        Z = np.ones(n) if draw(st.booleans()) else rng.uniform(-1, 1, n)
        terms = [term(codes, G, Z)]
        theta = [draw(diag)]
    elif kind == "vector":
        terms = [term(codes, G, np.column_stack([np.ones(n), rng.uniform(-1, 1, n)]))]
        theta = [draw(diag), draw(st.floats(-0.5, 0.5)), draw(diag)]
    else:
        H = draw(st.integers(2, 8))
        terms = [term(codes, G, np.ones(n)), term(rng.integers(0, H, n), H, np.ones(n))]
        theta = [draw(diag), draw(diag)]
    offset = rng.normal(0, 0.2, n) if draw(st.booleans()) else None
    weighted = draw(st.booleans())
    a, s = LINEAR[(fam, link)]
    beta = np.array([a, s])
    eta = X @ beta + (0 if offset is None else offset)
    for codes_k, nlev, Zk in terms:
        eta = eta + 0.3 * Zk[:, 0] * rng.normal(size=nlev)[codes_k]
    mu = GlmmFamily(fam, link).linkinv(eta)
    trials = None
    pw = np.ones(n)
    if fam == "binomial":
        if draw(st.booleans()):                        # proportions of several trials
            m = rng.integers(1, 9, n)
            y = rng.binomial(m, mu) / m
            pw, trials = m.astype(float), m.astype(float)
        else:                                          # 0/1, perhaps integer prior weights
            y = rng.binomial(1, mu).astype(float)
            if weighted:
                pw = rng.integers(1, 4, n).astype(float)
    else:
        if fam == "poisson":
            y = rng.poisson(mu).astype(float)
        elif fam == "Gamma":
            y = rng.gamma(3.0, mu / 3.0)
        else:
            y = rng.wald(mu, 4.0)
        if weighted:
            pw = rng.uniform(0.5, 2.0, n)
    return dict(fam=fam, link=link, kind=kind, X=X, y=np.ascontiguousarray(y),
                pw=np.ascontiguousarray(pw), offset=offset, terms=terms,
                theta=np.array(theta, dtype=float), beta=beta, trials=trials)


def core_problem(pr):
    return _core.GlmmProblem(pr["X"], pr["y"], pr["pw"], pr["offset"], pr["terms"],
                             FAMILY_CODE[pr["fam"]], LINK_CODE[pr["link"]])


def twin_args(pr):
    return (pr["X"], pr["y"], pr["pw"], pr["offset"], pr["terms"], pr["fam"], pr["link"])


def q_of(pr) -> int:
    return sum(nlev * Z.shape[1] for _, nlev, Z in pr["terms"])


def eta_start(pr) -> np.ndarray:
    """glmer's start: the link of (w y + 1/2) / (w + 1) (binomial), y + 0.1 (Poisson), y."""
    y, w = pr["y"], pr["pw"]
    mu = {"binomial": (w * y + 0.5) / (w + 1), "poisson": y + 0.1}.get(pr["fam"], y)
    link = pr["link"]
    with np.errstate(all="ignore"):
        eta = {"logit": np.log(mu / (1 - mu)), "probit": _ndtri(mu), "cloglog": np.log(-np.log1p(-mu)),
               "log": np.log(mu), "sqrt": np.sqrt(mu), "inverse": 1 / mu, "1/mu^2": mu**-2.0}[link]
    return np.ascontiguousarray(eta)


def _ndtri(p):
    from scipy.special import ndtri

    return ndtri(p)


# --------------------------------------------------------------------------------------------
# The twin itself


@settings(max_examples=25, **SETTINGS)
@given(problems(kinds=("scalar",), cases=(("binomial", "logit"), ("binomial", "cloglog"),
                                          ("poisson", "log"), ("Gamma", "log"))))
def test_twin_agq_identities(pr):
    """One node is the Laplace approximation (unit-deviance scale); many nodes converge to the
    integral itself, computed by adaptive quadrature level by level."""
    args = twin_args(pr)
    th, be, tr = pr["theta"], pr["beta"], pr["trials"]
    md = conditional_mode(*args, th, be, trials=tr)
    one = agq_objective(*args, th, be, 1, trials=tr)
    assert math.isclose(one, md.laplace_unit, rel_tol=1e-13, abs_tol=1e-11)
    exact = agq_exact_objective(*args, th, be, trials=tr)
    many = agq_objective(*args, th, be, 40, trials=tr)
    # A 40-point rule on a smooth unit-scale bump: error far below the quadrature's 1e-12.
    assert rel_err(many, exact) <= 1e-9, (many, exact)
    if th[0] == 0:
        assert math.isclose(exact, md.laplace_unit, rel_tol=1e-12, abs_tol=1e-10)


@settings(max_examples=30, **SETTINGS)
@given(problems(cases=(("binomial", "logit"), ("binomial", "probit"), ("poisson", "log"),
                       ("Gamma", "log"), ("inverse.gaussian", "log"))))
def test_twin_normalizing_constants_match_statsmodels_glm(pr):
    """With theta = 0 the Laplace objective is the GLM's -2 log-likelihood at beta (plus 2 for a
    dispersion family, R's convention, at R's dispersion estimate dev / sum(w)): statsmodels'
    GLM log-likelihood is an independent implementation of the normalizing constants."""
    fam, link = pr["fam"], pr["link"]
    theta0 = np.zeros_like(pr["theta"])
    md = conditional_mode(*twin_args(pr), theta0, pr["beta"], trials=pr["trials"])
    assert md.ussq == 0 and md.ldL2 == 0
    X, y, pw = pr["X"], pr["y"], pr["pw"]
    lk = {"logit": sm.families.links.Logit(), "probit": sm.families.links.Probit(),
          "log": sm.families.links.Log()}[link]
    off = pr["offset"]
    if fam == "binomial":
        k = np.round(y * pw)
        model = sm.GLM(np.column_stack([k, pw - k]), X, family=sm.families.Binomial(lk), offset=off)
        ll = model.loglike(pr["beta"])
        extra = 0.0
    else:
        f = {"poisson": sm.families.Poisson, "Gamma": sm.families.Gamma,
             "inverse.gaussian": sm.families.InverseGaussian}[fam](lk)
        # R's aic multiplies each log-density by its prior weight: statsmodels' freq_weights.
        model = sm.GLM(y, X, family=f, offset=off, freq_weights=pw)
        scale = md.devsum / np.sum(pw) if fam != "poisson" else 1.0
        ll = model.loglike(pr["beta"], scale=scale)
        extra = 0.0 if fam == "poisson" else 2.0
    assert math.isclose(md.laplace, -2 * ll + extra, rel_tol=1e-11), (md.laplace, -2 * ll + extra)


# --------------------------------------------------------------------------------------------
# The core at fixed parameters


@settings(max_examples=200, **SETTINGS)
@given(problems())
def test_laplace_matches_twin(pr):
    prob = core_problem(pr)
    th, be = pr["theta"], pr["beta"]
    obj = prob.stage2(th, be, np.zeros(q_of(pr)), 1, np.zeros(1), np.ones(1))
    st_ = prob.state(False)
    md = conditional_mode(*twin_args(pr), th, be, trials=pr["trials"])
    what = f"{pr['fam']}/{pr['link']} {pr['kind']}"
    assert rel_err(obj, md.laplace) <= LAPLACE_RTOL, (what, obj, md.laplace)
    unit = st_["devsum"] + st_["ussq"] + st_["ldL2"]
    assert rel_err(unit, md.laplace_unit) <= LAPLACE_RTOL, (what, unit, md.laplace_unit)
    usc = max(1.0, float(np.max(np.abs(md.u))))
    assert_vec(st_["u"], md.u, MODE_ATOL * usc, f"{what}: u")
    # |Z| <= 1, theta <= 1.5 and at most two columns / terms per row: |d eta| <= 3 |d u|.
    assert_vec(st_["eta"], md.eta, 3 * MODE_ATOL * usc, f"{what}: eta")
    me = np.abs(GlmmFamily(pr["fam"], pr["link"]).mu_eta(md.eta))
    assert_vec(st_["mu"], md.mu, 3 * MODE_ATOL * usc * 2 * float(np.max(me)), f"{what}: mu")
    for key, want in (("devsum", md.devsum), ("aic", md.aic), ("ldL2", md.ldL2), ("ussq", md.ussq)):
        assert abs(st_[key] - want) <= PIECE_RTOL * max(abs(want), 1.0), (what, key, st_[key], want)
    if np.all(th > 0):  # theta with zeros: test_state_at_with_a_zero_theta below
        check_variances(prob.state_at(th), md, what)


def check_variances(st_, md, what):
    """Conditional variances (unscaled) and the unscaled vcov of beta at the mode's weights."""
    assert len(st_["unscaled_condvar"]) == len(md.unscaled_condvar)
    for k, (got, want) in enumerate(zip(st_["unscaled_condvar"], md.unscaled_condvar)):
        assert_vec(got, want, PIECE_RTOL * max(1.0, float(np.max(np.abs(want)))), f"{what}: condvar[{k}]")
    V = md.unscaled_vcov
    assert_vec(st_["unscaled_vcov"], V, PIECE_RTOL * float(np.max(np.abs(V))), f"{what}: unscaled vcov")


@pytest.mark.parametrize("theta", [0.0, 1e-6])
def test_state_at_with_a_zero_theta(theta):
    """A variance parameter at (or next to) its boundary is a legitimate optimum (a singular
    fit); the state there, variances included, must be available as anywhere else."""
    rng = np.random.default_rng(1)
    n, G = 20, 3
    X = np.asfortranarray(np.column_stack([np.ones(n), rng.uniform(-1, 1, n)]))
    pr = dict(fam="binomial", link="logit", X=X, y=rng.binomial(1, 0.5, n).astype(float),
              pw=np.ones(n), offset=None,
              terms=[term(rng.integers(0, G, n), G, np.ones(n))],
              theta=np.array([theta]), beta=np.array([0.3, 0.8]), trials=None)
    prob = core_problem(pr)
    prob.stage2(pr["theta"], pr["beta"], np.zeros(G), 1, np.zeros(1), np.ones(1))
    md = conditional_mode(*twin_args(pr), pr["theta"], pr["beta"])
    check_variances(prob.state_at(pr["theta"]), md, f"theta = {theta}")


@settings(max_examples=150, **SETTINGS)
@given(problems(kinds=("scalar",), cases=tuple(c for c in CASES if c[1] != "sqrt")),
       st.sampled_from((2, 5, 25)))
def test_agq_matches_twin(pr, nagq):
    """Adaptive Gauss-Hermite on lme4's unit-deviance scale. Where a node's mean leaves the
    family's range (inverse links far in the tails) the objective is undefined: the core must
    then raise NumericalError, never return a number. (The sqrt link has its own test below.)"""
    prob = core_problem(pr)
    th, be = pr["theta"], pr["beta"]
    z, w = gh(nagq)
    try:
        want = agq_objective(*twin_args(pr), th, be, nagq, trials=pr["trials"])
    except FloatingPointError:
        with pytest.raises(NumericalError):
            prob.stage2(th, be, np.zeros(q_of(pr)), nagq, z, w)
        return
    got = prob.stage2(th, be, np.zeros(q_of(pr)), nagq, z, w)
    assert rel_err(got, want) <= AGQ_RTOL, (pr["fam"], pr["link"], nagq, got, want)


def test_agq_sqrt_link_nodes_below_zero():
    """Poisson with the sqrt link: the mean eta^2 is defined for every eta, so a quadrature node
    with eta < 0 has a perfectly good conditional density (lme4 evaluates it the same way).
    Thirteen levels of three observations each give wide nodes at nAGQ = 25."""
    rng = np.random.default_rng(7)
    G, m = 13, 3
    n = G * m
    codes = np.repeat(np.arange(G), m)
    X = np.asfortranarray(np.ones((n, 1)))
    y = rng.poisson(1.5, n).astype(float)
    pr = dict(fam="poisson", link="sqrt", X=X, y=y, pw=np.ones(n), offset=None,
              terms=[term(codes, G, np.ones(n))], theta=np.array([0.8]), beta=np.array([1.2]),
              trials=None)
    z, w = gh(25)
    want = agq_objective(*twin_args(pr), pr["theta"], pr["beta"], 25)
    got = core_problem(pr).stage2(pr["theta"], pr["beta"], np.zeros(G), 25, z, w)
    assert rel_err(got, want) <= AGQ_RTOL, (got, want)


@settings(max_examples=150, **SETTINGS)
@given(problems())
def test_stage1_matches_twin(pr):
    """nAGQ = 0: PIRLS over (beta, u) jointly from glmer's starting eta."""
    prob = core_problem(pr)
    th = pr["theta"]
    obj = prob.stage1(th, eta_start(pr))
    st_ = prob.state(False)
    md = joint_mode(*twin_args(pr), th, pr["beta"], trials=pr["trials"])
    what = f"{pr['fam']}/{pr['link']} {pr['kind']}"
    assert rel_err(obj, md.laplace) <= STAGE1_RTOL, (what, obj, md.laplace)
    sc = max(1.0, float(np.max(np.abs(np.r_[md.u, md.beta]))))
    assert_vec(st_["beta"], md.beta, MODE_ATOL * sc, f"{what}: beta")
    assert_vec(st_["u"], md.u, MODE_ATOL * sc, f"{what}: u")


@settings(max_examples=40, **SETTINGS)
@given(problems(kinds=("scalar", "vector", "crossed")), st.floats(0.5, 1.5))
def test_objective_does_not_depend_on_the_start(pr, spread):
    """The objectives are functions of the parameters alone: PIRLS from u = 0, from a far
    start, and from the previous evaluation's mode (start None) agree, for stage 2 and for
    the nAGQ = 0 stage (from glmer's starting eta or from the previous mode)."""
    prob = core_problem(pr)
    th, be = pr["theta"], pr["beta"]
    q = q_of(pr)
    lap = (1, np.zeros(1), np.ones(1))
    a = prob.stage2(th, be, np.zeros(q), *lap)
    ua = np.asarray(prob.state(False)["u"]).copy()
    b = prob.stage2(th, be, np.ascontiguousarray(spread * np.cos(np.arange(q))), *lap)
    ub = np.asarray(prob.state(False)["u"]).copy()
    tol = 2 * MODE_ATOL * max(1.0, float(np.max(np.abs(ua))))
    assert rel_err(b, a) <= LAPLACE_RTOL
    assert_vec(ub, ua, tol, "u from a far start")
    # Elsewhere, warm from the mode just found vs cold.
    th2, be2 = th * 0.8 + 0.1, be + 0.05
    warm = prob.stage2(th2, be2, None, *lap)
    uw = np.asarray(prob.state(False)["u"]).copy()
    cold = prob.stage2(th2, be2, np.zeros(q), *lap)
    uc = np.asarray(prob.state(False)["u"]).copy()
    assert rel_err(warm, cold) <= LAPLACE_RTOL
    assert_vec(uw, uc, tol, "u warm vs cold")
    s_cold = prob.stage1(th2, eta_start(pr))
    s_warm = prob.stage1(th, None)
    s_back = prob.stage1(th, eta_start(pr))
    assert rel_err(s_warm, s_back) <= STAGE1_RTOL
    assert rel_err(prob.stage1(th2, None), s_cold) <= STAGE1_RTOL


# --------------------------------------------------------------------------------------------
# Fitted models


def _grouped(seed, fam, link, G=25, m=8, sd=0.6, crossed=False):
    rng = np.random.default_rng(seed)
    n = G * m
    g = np.repeat(np.arange(G), m)
    h = rng.integers(0, 6, n)
    x = rng.uniform(-1, 1, n)
    a, s = LINEAR[(fam, link)]
    eta = a + s * x + sd * rng.normal(size=G)[g]
    if crossed:
        eta = eta + 0.4 * rng.normal(size=6)[h]
    off = rng.normal(0, 0.2, n)
    eta = eta + off
    mu = GlmmFamily(fam, link).linkinv(eta)
    if fam == "binomial":
        y = rng.binomial(1, mu).astype(float)
    elif fam == "poisson":
        y = rng.poisson(mu).astype(float)
    else:
        y = rng.gamma(3.0, mu / 3.0)
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{i:02d}" for i in g], "h": h, "off": off})


FITS = [
    ("binomial", "logit", "y ~ x + (1 | g)", 1),
    ("binomial", "logit", "y ~ x + (1 | g)", 5),
    ("poisson", "log", "y ~ x + (1 | g) + (1 | h) + offset(off)", 1),
    ("Gamma", "log", "y ~ x + (1 | g)", 1),
]


def central_hessian(f, x, delta):
    """Central second differences (lme4's deriv12 layout) with step ``delta``."""
    k = x.size
    E = np.eye(k) * delta
    f0 = f(x)
    H = np.empty((k, k))
    for i in range(k):
        H[i, i] = (f(x + E[i]) - 2 * f0 + f(x - E[i])) / delta**2
        for j in range(i):
            H[i, j] = H[j, i] = (f(x + E[i] + E[j]) - f(x + E[i] - E[j]) - f(x - E[i] + E[j])
                                 + f(x - E[i] - E[j])) / (4 * delta**2)
    return H


def _twin_objective(fit, par, nagq):
    d = fit.design
    terms = [(t.codes, t.nlevels, t.Z) for t in d.terms]
    nt = len(fit.theta)
    args = (d.X, fit._y, fit._pw, d.offset, terms, fit.family, fit.link, par[:nt], par[nt:])
    if nagq > 1:
        return agq_objective(*args, nagq)
    return conditional_mode(*args).laplace


@pytest.mark.parametrize("fam,link,formula,nagq", FITS)
def test_fitted_objective_matches_twin(fam, link, formula, nagq):
    """``fit.objective`` at the optimum and at nearby points is the twin's objective, and the
    optimum is a minimum of the twin's objective (no coordinate step of 1e-3 lowers it by more
    than the optimizer's tolerance allows)."""
    df = _grouped(11, fam, link, crossed="(1 | h)" in formula)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = mixedfit.glmer(formula, df, family=fam, link=link, nagq=nagq)
    par = np.r_[fit.theta, fit.beta]
    f0 = _twin_objective(fit, par, nagq)
    assert rel_err(fit.objective(par), f0) <= LAPLACE_RTOL
    rng = np.random.default_rng(3)
    for _ in range(2):
        p = par + rng.uniform(-0.05, 0.05, par.size)
        p[: len(fit.theta)] = np.abs(p[: len(fit.theta)])
        assert rel_err(fit.objective(p), _twin_objective(fit, p, nagq)) <= LAPLACE_RTOL
    # The optimum: BOBYQA stops within ~1e-4 of it in these well-determined problems, so a step
    # of 1e-3 can lower a quadratic by at most H (1e-4 * 1e-3) ~ 1e-6 for curvatures H ~ 10.
    h = 1e-3
    for i in range(par.size):
        for sgn in (1, -1):
            p = par.copy()
            p[i] += sgn * h
            if i < len(fit.theta) and p[i] < 0:
                continue
            assert _twin_objective(fit, p, nagq) >= f0 - 1e-5, (i, sgn)


def test_hessian_standard_errors_match_twin():
    """Gamma with a log link: the standard errors from the finite-difference Hessian of the
    stage-2 objective (step 1e-4, as lme4) equal those from the same finite differences of the
    twin's objective. With the objective noisy at the 1e-7 level (a mode not converged to
    well below the step), second differences over 1e-4 are wrong by ~1e-7 / 1e-8 = O(10)."""
    df = _grouped(3, "Gamma", "log", G=30, m=10, sd=0.4)
    fit = mixedfit.glmer("y ~ x + (1 | g)", df, family="Gamma", link="log")
    par = np.r_[fit.theta, fit.beta]
    nt = len(fit.theta)
    H = central_hessian(lambda p: _twin_objective(fit, p, 1), par, 1e-4)
    V = 2 * np.linalg.inv(H)[nt:, nt:]
    se_twin = np.sqrt(np.diag(V))
    se_fit = np.sqrt(np.diag(fit.vcov.to_numpy()))
    # Same formula at the same point: only the objective's noise separates them; 1% is what a
    # visible change of a printed standard error would take.
    np.testing.assert_allclose(se_fit, se_twin, rtol=1e-2)
