"""Transformations of the data with known effects on the model, checked as exact relations.

Each relation is checked twice:
- at fixed theta, where it holds exactly (up to rounding): the profiled criterion and the
  conditional solution (beta, b, pwrss, log-determinants) transform as the algebra says;
- at the fitted optimum, where it holds up to the optimizer's convergence tolerance.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import mixedfit

# At fixed theta the transformed problem is the same matrix algebra on rescaled or reordered
# numbers: agreement to rounding error of well-conditioned (cond < 1e4) O(n) sums.
ARITH_RTOL = 1e-10
# Two optimizer runs that see the same function up to rounding (permuted rows, relabelled
# levels, a response multiplied by c) follow the same BOBYQA path and stop at the same theta up
# to rounding amplified by the path: far below this.
SAME_PATH_TOL = 1e-6
# Runs that see an equivalent but reparameterized function (theta / sqrt(c)) take different
# paths and stop anywhere BOBYQA's ftol_abs = 1e-8 allows: the criteria agree to ~1e-8 and
# theta to the flatness of the criterion around an interior optimum.
OTHER_PATH_CRIT_TOL = 1e-6
# Fits that compare optima reached along different paths use the gradient optimizer: it
# converges to the optimum itself, where BOBYQA's stopping rule can leave a few 1e-6 of
# criterion on the table (as lme4's does).
CTRL = {"optimizer": "gradient"}
OTHER_PATH_THETA_RTOL = 5e-3


def simulate(seed: int, G: int = 12, H: int = 4, n: int = 96) -> pd.DataFrame:
    """Clear, interior random effects: (1 + x | g) with correlation, plus (1 | h)."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, n)
    h = rng.integers(0, H, n)
    x = rng.normal(size=n)
    b0 = rng.normal(size=G) * 1.2
    b1 = 0.6 * (0.5 * b0 / 1.2 + rng.normal(size=G))
    c0 = rng.normal(size=H) * 0.9
    y = 2.0 + 0.7 * x + b0[g] + b1[g] * x + c0[h] + rng.normal(size=n) * 0.8
    return pd.DataFrame({"y": y, "x": x, "g": g, "h": h, "w": rng.uniform(0.5, 2.0, n)})


MODELS = [
    ("y ~ x + (1 | g)", None),
    ("y ~ x + (x | g) + (1 | h)", "w"),
]
SEEDS = [1, 2]


def solution_at(fit, theta):
    """The core's conditional solution for the fit's data at a fixed theta."""
    return fit._problem.solution(np.asarray(theta, dtype=float))


def criteria(fit, theta):
    theta = np.asarray(theta, dtype=float)
    return (float(fit._problem.objective(theta, False)), float(fit._problem.objective(theta, True)))


def probe_thetas(fit, rng, k=3):
    """The fitted theta and a few others around it (negative off-diagonals included)."""
    out = [fit.theta.copy()]
    lower = fit._theta_lower
    for _ in range(k):
        th = fit.theta * rng.uniform(0.5, 1.5, fit.theta.size)
        th = np.where(lower == 0, np.abs(th) + 0.05, th - 0.3)
        out.append(th)
    return out


def ranef_by_label(fit, group):
    re = fit.ranef()[group]
    return {str(k): row.to_numpy() for k, row in re.iterrows()}


def assert_rel(a, b, rtol, what):
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-300)
    err = float(np.max(np.abs(a - b))) if b.size else 0.0
    assert err <= rtol * scale, f"{what}: error {err:.3e} > {rtol:g} * {scale:.3e}"


@pytest.fixture(params=[(f, w, s) for f, w in MODELS for s in SEEDS],
                ids=[f"{f}|seed{s}" for f, _ in MODELS for s in SEEDS])
def case(request):
    formula, weights, seed = request.param
    df = simulate(seed)
    fit = mixedfit.lmer(formula, df, weights=weights, control=CTRL)
    return formula, weights, df, fit, np.random.default_rng(seed + 100)


# ---- row order --------------------------------------------------------------------------------


def test_row_permutation(case):
    formula, weights, df, fit, rng = case
    perm = rng.permutation(len(df))
    dp = df.iloc[perm]
    fp = mixedfit.lmer(formula, dp, weights=weights, control=CTRL)
    for th in probe_thetas(fit, rng):
        for a, b in zip(criteria(fp, th), criteria(fit, th)):
            assert math.isclose(a, b, rel_tol=ARITH_RTOL)
        sa, sb = solution_at(fp, th), solution_at(fit, th)
        # same level order (sorted labels), so b is elementwise the same
        for key in ("beta", "b", "unscaled_vcov"):
            assert_rel(sa[key], sb[key], ARITH_RTOL, key)
        for key in ("ldL2", "ldRX2", "pwrss", "ussq"):
            assert math.isclose(sa[key], sb[key], rel_tol=ARITH_RTOL, abs_tol=ARITH_RTOL)
    assert_rel(fp.theta, fit.theta, SAME_PATH_TOL, "theta")
    assert_rel(fp.beta, fit.beta, SAME_PATH_TOL, "beta")
    assert math.isclose(fp.sigma, fit.sigma, rel_tol=SAME_PATH_TOL)
    assert math.isclose(fp.optinfo.fun, fit.optinfo.fun, rel_tol=ARITH_RTOL)
    # fitted values and residuals follow their rows (matched by index label)
    fitted = fp.fitted()
    assert list(fitted.index) == list(df.index[perm])
    assert_rel(fitted.reindex(df.index).to_numpy(), fit.fitted().to_numpy(), SAME_PATH_TOL, "fitted")
    assert_rel(fp.residuals().reindex(df.index).to_numpy(), fit.residuals().to_numpy(),
               SAME_PATH_TOL, "residuals")
    for g in fit.ranef():
        ra, rb = ranef_by_label(fp, g), ranef_by_label(fit, g)
        assert ra.keys() == rb.keys()
        for k in ra:
            assert_rel(ra[k], rb[k], SAME_PATH_TOL, f"ranef {g}[{k}]")


def simulate_counts(seed: int, G: int = 15, H: int = 6, n: int = 240) -> pd.DataFrame:
    """Binomial counts with trials, an offset and crossed (1 + x | g) and (1 | h), rows in
    no particular order of either factor."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, n)
    h = rng.integers(0, H, n)
    x = rng.normal(size=n)
    off = rng.normal(size=n) * 0.2
    eta = -0.4 + 0.6 * x + off + rng.normal(size=G)[g] * 0.8 + rng.normal(size=G)[g] * 0.3 * x \
        + rng.normal(size=H)[h] * 0.5
    size = rng.integers(1, 8, n)
    k = rng.binomial(size, 1 / (1 + np.exp(-eta)))
    return pd.DataFrame({"k": k, "size": size, "x": x, "off": off, "g": g, "h": h})


@pytest.mark.parametrize("seed", [3, 4])
def test_glmm_row_permutation(seed):
    """The core groups a GLMM's rows by the first term's levels: the fit must not depend on the
    order the rows come in, and every per-row result must follow its row."""
    df = simulate_counts(seed)
    rng = np.random.default_rng(seed)
    formula = "cbind(k, size - k) ~ x + (1 + x | g) + (1 | h)"
    fits = [mixedfit.glmer(formula, d, offset="off", control=CTRL)
            for d in (df, df.iloc[rng.permutation(len(df))], df.sort_values(["g", "h"]))]
    base = fits[0]
    for f in fits[1:]:
        assert math.isclose(f.deviance, base.deviance, rel_tol=1e-9)
        assert_rel(f.theta, base.theta, 1e-5, "theta")
        assert_rel(f.fixef.to_numpy(), base.fixef.to_numpy(), 1e-5, "fixef")
        assert_rel(f.fitted().reindex(df.index).to_numpy(), base.fitted().to_numpy(), 1e-5,
                   "fitted")
        for kind in ("deviance", "pearson", "response", "working"):
            assert_rel(f.residuals(kind).reindex(df.index).to_numpy(),
                       base.residuals(kind).to_numpy(), 1e-5, f"{kind} residuals")
        for g in base.ranef():
            ra, rb = ranef_by_label(f, g), ranef_by_label(base, g)
            for k in rb:
                assert_rel(ra[k], rb[k], 1e-5, f"ranef {g}[{k}]")


# ---- level labels ---------------------------------------------------------------------------


def test_relabelled_levels(case):
    """Integer levels -> strings that sort differently ("10" < "2"), a renamed grouping column,
    and a categorical with shuffled categories: the same model, level by level."""
    formula, weights, df, fit, rng = case
    G = df["g"].max() + 1
    names = {k: str(k + 1) for k in range(G)}               # "1".."12": "10" sorts before "2"
    shuffled = [f"lvl_{k}" for k in rng.permutation(4)]
    d2 = df.rename(columns={"g": "Subject", "h": "Batch"}).assign(
        Subject=df["g"].map(names),
        Batch=pd.Categorical(df["h"].map(lambda k: f"lvl_{k}"), categories=shuffled),
    )
    f2 = formula.replace("| g)", "| Subject)").replace("| h)", "| Batch)")
    fr = mixedfit.lmer(f2, d2, weights=weights, control=CTRL)
    assert fr.ngroups == {("Subject" if k == "g" else "Batch"): v for k, v in fit.ngroups.items()}
    assert list(fr.ranef()["Subject"].index) == sorted(names.values())
    if "Batch" in fr.ngroups:
        assert list(fr.ranef()["Batch"].index) == shuffled
    for th in probe_thetas(fit, rng):
        for a, b in zip(criteria(fr, th), criteria(fit, th)):
            assert math.isclose(a, b, rel_tol=ARITH_RTOL)
        assert_rel(solution_at(fr, th)["beta"], solution_at(fit, th)["beta"], ARITH_RTOL, "beta")
    assert_rel(fr.theta, fit.theta, SAME_PATH_TOL, "theta")
    assert_rel(fr.beta, fit.beta, SAME_PATH_TOL, "beta")
    ra, rb = ranef_by_label(fr, "Subject"), ranef_by_label(fit, "g")
    for k, lab in names.items():
        assert_rel(ra[lab], rb[str(k)], SAME_PATH_TOL, f"ranef Subject[{lab}]")
    if "Batch" in fr.ngroups:
        ra, rb = ranef_by_label(fr, "Batch"), ranef_by_label(fit, "h")
        for k in range(4):
            assert_rel(ra[f"lvl_{k}"], rb[str(k)], SAME_PATH_TOL, f"ranef Batch[{k}]")
    # condvar follows the labels too
    cva = fr.ranef(condvar=True)["Subject"]
    cvb = fit.ranef(condvar=True)["g"]
    for k, lab in names.items():
        assert_rel(cva.loc[lab].to_numpy(), cvb.loc[k].to_numpy(), SAME_PATH_TOL, "condsd")


# ---- response scale -------------------------------------------------------------------------


@pytest.mark.parametrize("c", [1e-3, -2.0, 7.5, 1e4])
def test_rescaled_response(case, c):
    """y -> c y: theta unchanged; beta, b, sigma scale by c (|c|); pwrss by c^2; the ML
    criterion shifts by 2 n log|c| and the REML criterion by 2 (n - p) log|c|."""
    formula, weights, df, fit, rng = case
    fc = mixedfit.lmer(formula, df.assign(y=df["y"] * c), weights=weights, control=CTRL)
    n, p = fit.nobs, len(fit.beta)
    shift_ml = 2 * n * math.log(abs(c))
    shift_reml = 2 * (n - p) * math.log(abs(c))
    for th in probe_thetas(fit, rng):
        (ml_c, reml_c), (ml, reml) = criteria(fc, th), criteria(fit, th)
        assert math.isclose(ml_c, ml + shift_ml, rel_tol=ARITH_RTOL)
        assert math.isclose(reml_c, reml + shift_reml, rel_tol=ARITH_RTOL)
        sc, s = solution_at(fc, th), solution_at(fit, th)
        assert_rel(sc["beta"], c * s["beta"], ARITH_RTOL, "beta")
        assert_rel(sc["b"], c * s["b"], ARITH_RTOL, "b")
        assert_rel(sc["unscaled_vcov"], s["unscaled_vcov"], ARITH_RTOL, "unscaled vcov")
        assert math.isclose(sc["pwrss"], c * c * s["pwrss"], rel_tol=ARITH_RTOL)
        assert math.isclose(sc["ldL2"], s["ldL2"], rel_tol=ARITH_RTOL, abs_tol=ARITH_RTOL)
        assert math.isclose(sc["ldRX2"], s["ldRX2"], rel_tol=ARITH_RTOL, abs_tol=ARITH_RTOL)
    # fitted
    assert_rel(fc.theta, fit.theta, SAME_PATH_TOL, "theta")
    assert_rel(fc.beta, c * fit.beta, SAME_PATH_TOL, "beta")
    assert math.isclose(fc.sigma, abs(c) * fit.sigma, rel_tol=SAME_PATH_TOL)
    assert math.isclose(fc.optinfo.fun, fit.optinfo.fun + shift_reml, rel_tol=ARITH_RTOL,
                        abs_tol=OTHER_PATH_CRIT_TOL)
    assert_rel(fc.vcov.to_numpy(), c * c * fit.vcov.to_numpy(), SAME_PATH_TOL, "vcov")
    for g in fit.ranef():
        assert_rel(fc.ranef()[g].to_numpy(), c * fit.ranef()[g].to_numpy(), SAME_PATH_TOL, "ranef")
    vc, v = fc.varcorr.to_frame(), fit.varcorr.to_frame()
    assert_rel(vc["vcov"].to_numpy(), c * c * v["vcov"].to_numpy(), SAME_PATH_TOL, "VarCorr")


def test_rescaled_response_ml(case):
    formula, weights, df, fit, rng = case
    c = 3.0
    a = mixedfit.lmer(formula, df, weights=weights, reml=False, control=CTRL)
    b = mixedfit.lmer(formula, df.assign(y=df["y"] * c), weights=weights, reml=False, control=CTRL)
    assert_rel(b.theta, a.theta, SAME_PATH_TOL, "theta")
    assert math.isclose(b.sigma, c * a.sigma, rel_tol=SAME_PATH_TOL)
    assert math.isclose(b.loglik, a.loglik - a.nobs * math.log(c), rel_tol=ARITH_RTOL,
                        abs_tol=OTHER_PATH_CRIT_TOL)
    assert math.isclose(b.aic - a.aic, 2 * a.nobs * math.log(c), rel_tol=1e-9)


@pytest.mark.parametrize("c", [-50.0, 10.0])
def test_shifted_response(case, c):
    """y -> y + c with an intercept: only the intercept moves (by c)."""
    formula, weights, df, fit, rng = case
    fc = mixedfit.lmer(formula, df.assign(y=df["y"] + c), weights=weights, control=CTRL)
    for th in probe_thetas(fit, rng):
        for a, b in zip(criteria(fc, th), criteria(fit, th)):
            # y'Wy grows by ~n c^2 while pwrss does not: rounding scales with (|c| / sd(y))^2
            assert math.isclose(a, b, rel_tol=ARITH_RTOL * (1 + c * c))
        sc, s = solution_at(fc, th), solution_at(fit, th)
        assert_rel(sc["beta"], s["beta"] + np.r_[c, np.zeros(len(s["beta"]) - 1)],
                   ARITH_RTOL * (1 + c * c), "beta")
        assert_rel(sc["b"], s["b"], ARITH_RTOL * (1 + c * c), "b")
    assert_rel(fc.theta, fit.theta, OTHER_PATH_THETA_RTOL, "theta")
    assert math.isclose(fc.optinfo.fun, fit.optinfo.fun, abs_tol=OTHER_PATH_CRIT_TOL)


# ---- weights and covariate scale ---------------------------------------------------------------


@pytest.mark.parametrize("c", [0.01, 4.0])
def test_rescaled_weights(case, c):
    """w -> c w is sigma^2 -> c sigma^2 with Lambda -> Lambda / sqrt(c): the criteria at
    theta / sqrt(c) are unchanged (the -log|W| term absorbs the n log c), beta and b are
    unchanged, and sigma scales by sqrt(c)."""
    formula, weights, df, fit, rng = case
    w = df["w"].to_numpy() if weights else np.ones(len(df))
    fc = mixedfit.lmer(formula, df, weights=c * w, control=CTRL)
    for th in probe_thetas(fit, rng):
        thc = th / math.sqrt(c)
        for a, b in zip(criteria(fc, thc), criteria(fit, th)):
            assert math.isclose(a, b, rel_tol=ARITH_RTOL)
        sc, s = solution_at(fc, thc), solution_at(fit, th)
        assert_rel(sc["beta"], s["beta"], ARITH_RTOL, "beta")
        assert_rel(sc["b"], s["b"], ARITH_RTOL, "b")
        assert math.isclose(sc["pwrss"], c * s["pwrss"], rel_tol=ARITH_RTOL)
    # different optimizer paths: equal optima in value, close in theta
    assert fc.optinfo.fun <= fc.objective(fit.theta / math.sqrt(c)) + OTHER_PATH_CRIT_TOL
    assert fit.optinfo.fun <= fit.objective(fc.theta * math.sqrt(c)) + OTHER_PATH_CRIT_TOL
    assert math.isclose(fc.optinfo.fun, fit.optinfo.fun, abs_tol=OTHER_PATH_CRIT_TOL)
    assert_rel(fc.theta * math.sqrt(c), fit.theta, OTHER_PATH_THETA_RTOL, "theta")
    assert math.isclose(fc.sigma, math.sqrt(c) * fit.sigma, rel_tol=OTHER_PATH_THETA_RTOL)


@pytest.mark.parametrize("c", [0.2, -4.0])
def test_rescaled_covariate(case, c):
    """x -> c x: the coefficient of x (fixed and random) scales by 1/c. For (x | g) the template
    becomes diag(1, 1/c) lambda, i.e. theta = [T11, T21 / c, T22 / |c|] (the diagonal stays
    non-negative by flipping the sign of the slope's random effect). The ML criterion is
    unchanged; the REML criterion gains log|X'V^-1 X| = 2 log|c|."""
    formula, weights, df, fit, rng = case
    fc = mixedfit.lmer(formula, df.assign(x=df["x"] * c), weights=weights, control=CTRL)
    slope = "(x | g)" in formula

    def mapped(th):
        th = np.array(th, dtype=float)
        if slope:
            th[1] /= c
            th[2] /= abs(c)
        return th

    for th in probe_thetas(fit, rng):
        (ml_c, reml_c), (ml, reml) = criteria(fc, mapped(th)), criteria(fit, th)
        assert math.isclose(ml_c, ml, rel_tol=ARITH_RTOL)
        assert math.isclose(reml_c, reml + 2 * math.log(abs(c)), rel_tol=ARITH_RTOL)
        sc, s = solution_at(fc, mapped(th)), solution_at(fit, th)
        assert_rel(sc["beta"], s["beta"] / np.r_[1.0, c], ARITH_RTOL, "beta")
    assert fc.optinfo.fun <= fc.objective(mapped(fit.theta)) + OTHER_PATH_CRIT_TOL
    assert fit.optinfo.fun + 2 * math.log(abs(c)) <= fc.objective(mapped(fit.theta)) + OTHER_PATH_CRIT_TOL
    assert_rel(fc.theta, mapped(fit.theta), OTHER_PATH_THETA_RTOL, "theta")
    assert_rel(fc.fixef.to_numpy() * np.r_[1.0, c], fit.fixef.to_numpy(), OTHER_PATH_THETA_RTOL, "fixef")


# ---- order of terms in the formula --------------------------------------------------------------


def test_order_of_bar_terms_in_the_formula():
    """(1 | h) + (x | g) and (x | g) + (1 | h) are the same model (lme4 orders terms by
    decreasing number of levels); with equally many levels the formula order decides the theta
    order, and the criterion is the same at the correspondingly permuted theta."""
    df = simulate(5)
    a = mixedfit.lmer("y ~ x + (x | g) + (1 | h)", df, control=CTRL)
    b = mixedfit.lmer("y ~ x + (1 | h) + (x | g)", df, control=CTRL)
    np.testing.assert_array_equal(a.theta, b.theta)
    assert a.optinfo.fun == b.optinfo.fun
    # equal level counts: g2 is g relabelled, so both terms have 12 levels
    d = df.assign(g2=(df["g"] * 5) % 12)
    c = mixedfit.lmer("y ~ x + (1 | g2) + (x | g)", d, control=CTRL)
    e = mixedfit.lmer("y ~ x + (x | g) + (1 | g2)", d, control=CTRL)
    assert [t[0] for t in c.re_terms] == ["g2", "g"]
    assert [t[0] for t in e.re_terms] == ["g", "g2"]
    th = np.array([0.9, -0.2, 0.4, 0.6])       # (x | g): 3 components, (1 | g2): 1
    assert math.isclose(e.objective(th), c.objective(np.r_[th[3], th[:3]]), rel_tol=ARITH_RTOL)
    assert math.isclose(e.optinfo.fun, c.optinfo.fun, abs_tol=OTHER_PATH_CRIT_TOL)
