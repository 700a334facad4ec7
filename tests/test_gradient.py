"""Exact gradients of the profiled objectives and the optimizer that uses them.

LMM: the profiled deviance / REML criterion in theta (all-scalar terms take a shortcut
through the diagonal of the inverse; other terms the per-observation selected inverse).
GLMM: the Laplace objective, differentiated through the PIRLS mode (canonical links).
Both are checked against central differences of the objective itself, on scalar, vector and
crossed random effects, with and without weights. The gradient-based optimizer ("auto") must
reach the same optimum as lme4's derivative-free path ("bobyqa") or a better one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import special

import mixedfit
from mixedfit._design import build_design
from mixedfit.lmm import make_problem
from mixedfit.optimize import positive_diagonal

NONE = np.zeros(0)


def simulate(seed: int, family: str, n: int = 500, G: int = 25, H: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, n)
    h = rng.integers(0, H, n)
    x = rng.normal(size=n)
    z = rng.normal(size=n)
    eta = 0.2 + 0.5 * x + rng.normal(0, 0.6, G)[g] + rng.normal(0, 0.3, G)[g] * x \
        + rng.normal(0, 0.5, H)[h]
    y = rng.poisson(np.exp(eta)) if family == "poisson" else rng.binomial(1, special.expit(eta))
    return pd.DataFrame({"y": y, "x": x, "z": z, "g": [f"g{i}" for i in g],
                         "h": [f"h{i}" for i in h]})


CASES = [
    ("binomial", "y ~ x + (1 | g)", 1),
    ("binomial", "y ~ x + z + (1 | g) + (1 | h)", 2),
    ("poisson", "y ~ x + (x | g) + (1 | h)", 3),
    ("poisson", "y ~ x + (x || g)", 4),
    ("binomial", "y ~ x + (x | g) + (z | h)", 5),
]


def central(f, x, d=1e-5):
    out = np.empty(x.size)
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = d
        out[i] = (f(x + e) - f(x - e)) / (2 * d)
    return out


@pytest.mark.parametrize("family,formula,seed", CASES)
def test_gradient_matches_differences(family, formula, seed):
    df = simulate(seed, family)
    fit = mixedfit.glmer(formula, df, family=family)
    prob = fit._prob
    nt = fit.theta.size
    assert prob.has_gradient
    # Away from the optimum, where the gradient is far from zero.
    x = np.r_[fit.theta * 1.15 + 0.05, fit.beta + 0.1]
    val, grad = prob.stage2_grad(x[:nt], x[nt:])
    fd = central(lambda v: prob.stage2(v[:nt], v[nt:], None, 1, NONE, NONE), x)
    assert np.max(np.abs(grad - fd)) <= 1e-5 * max(1.0, np.max(np.abs(fd)))
    assert val == pytest.approx(prob.stage2(x[:nt], x[nt:], None, 1, NONE, NONE), rel=1e-12)
    th = x[:nt]
    _, g1 = prob.stage1_grad(th)
    fd1 = central(lambda v: prob.stage1(v, None), th)
    assert np.max(np.abs(g1 - fd1)) <= 1e-5 * max(1.0, np.max(np.abs(fd1)))


def test_objective_even_in_template_columns():
    df = simulate(3, "poisson")
    fit = mixedfit.glmer("y ~ x + (x | g) + (1 | h)", df, family="poisson")
    prob = fit._prob
    th = fit.theta.copy()
    flipped = th.copy()
    flipped[0:2] *= -1       # first column of the (x | g) template
    flipped[3] *= -1         # the (1 | h) scalar
    assert np.allclose(positive_diagonal(flipped, [2, 1]), th)
    f0 = prob.stage2(th, fit.beta, None, 1, NONE, NONE)
    f1 = prob.stage2(flipped, fit.beta, None, 1, NONE, NONE)
    assert f1 == pytest.approx(f0, rel=1e-12)


def test_no_gradient_for_noncanonical_links():
    df = simulate(1, "binomial")
    fit = mixedfit.glmer("y ~ x + (1 | g)", df, family="binomial", link="probit")
    assert not fit._prob.has_gradient
    with pytest.raises(ValueError, match="gradient"):
        fit._prob.stage2_grad(fit.theta, fit.beta)
    # ... and the fit took the derivative-free path.
    assert "Newton" not in fit.optinfo.message


@pytest.mark.parametrize("family,formula,seed", CASES + [
    # Near-singular: a grouping factor with almost no variance.
    ("binomial", "y ~ x + (1 | h)", 11),
])
def test_auto_matches_bobyqa(family, formula, seed):
    df = simulate(seed, family)
    auto = mixedfit.glmer(formula, df, family=family)
    ref = mixedfit.glmer(formula, df, family=family, control={"optimizer": "bobyqa"})
    # Same optimum; the gradient path never ends worse than the derivative-free one.
    assert auto.optinfo.fun <= ref.optinfo.fun + 1e-7 * abs(ref.optinfo.fun)
    assert auto.optinfo.fun == pytest.approx(ref.optinfo.fun, rel=1e-8)
    np.testing.assert_allclose(auto.beta, ref.beta, atol=2e-4)
    # Standard errors from the Hessian: both central differences at (nearly) the same point.
    se_a = np.sqrt(np.diag(auto.vcov.to_numpy()))
    se_r = np.sqrt(np.diag(ref.vcov.to_numpy()))
    np.testing.assert_allclose(se_a, se_r, rtol=2e-3)
    assert auto.optinfo_stage1.fun <= ref.optinfo_stage1.fun + 1e-6 * abs(ref.optinfo_stage1.fun)
    assert np.all(auto.theta[np.isfinite(mixedfit.optimize.theta_lower(
        [t.p for t in auto.design.terms]))] >= 0)


def test_first_step_onto_zero_is_not_taken_for_an_optimum():
    """From theta = 1 a unit first step lands exactly on 0, a stationary point by symmetry:
    the fit must still find the interior optimum (as lme4's path does)."""
    rng = np.random.default_rng(1)
    G, m = 30, 8
    g = np.repeat(np.arange(G), m)
    x = rng.normal(size=G * m)
    z = rng.uniform(-1, 1, G * m)
    y = rng.binomial(1, special.expit(-0.2 + 0.7 * x - 0.5 * z + 0.7 * rng.normal(size=G)[g]))
    df = pd.DataFrame({"y": y, "x": x, "z": z, "g": [f"s{i:02d}" for i in g]})
    auto = mixedfit.glmer("y ~ x + z + (1 | g)", df, family="binomial")
    ref = mixedfit.glmer("y ~ x + z + (1 | g)", df, family="binomial",
                         control={"optimizer": "bobyqa"})
    assert auto.theta[0] == pytest.approx(ref.theta[0], rel=1e-4)
    assert auto.theta[0] > 0.1


LMM_CASES = [
    ("y ~ x + (1 | g)", None),
    ("y ~ x + (1 | g) + (1 | h)", None),
    ("y ~ x + (1 | g) + (1 | h)", "w"),
    ("y ~ x + (x | g) + (1 | h)", None),
    ("y ~ x + (x || g)", "w"),
    ("y ~ x + (x | g) + (x | h)", "w"),
]


def lmm_frame(seed: int = 0, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 20, n)
    h = rng.integers(0, 6, n)
    x = rng.normal(size=n)
    y = rng.normal(size=n) + rng.normal(size=20)[g] + 0.5 * x * rng.normal(size=20)[g] \
        + rng.normal(size=6)[h]
    return pd.DataFrame({"y": y, "x": x, "g": g.astype(str), "h": h.astype(str),
                         "w": rng.random(n) + 0.5})


@pytest.mark.parametrize("formula,weights", LMM_CASES)
@pytest.mark.parametrize("reml", [True, False])
def test_lmm_gradient_matches_differences(formula, weights, reml):
    df = lmm_frame()
    d = build_design(formula, df, weights=weights, offset=None, lmm=True)
    prob = make_problem(d, d.y, d.weights)
    for th in (np.linspace(0.3, 0.9, prob.ntheta), np.linspace(1.2, -0.4, prob.ntheta)):
        val, grad = prob.objective_grad(th, reml)
        # one-term models compute the value with the gradient from A's per-level blocks,
        # summing in another order than the factorization: equal to rounding
        assert val == pytest.approx(prob.objective(th, reml), rel=1e-12, abs=0)
        fd = central(lambda t: prob.objective(t, reml), th, d=1e-6)
        assert np.max(np.abs(grad - fd)) <= 1e-6 * max(1.0, np.max(np.abs(fd)))


@pytest.mark.parametrize("formula,weights", LMM_CASES)
@pytest.mark.parametrize("reml", [True, False])
def test_lmm_core_newton_follows_the_python_newton(formula, weights, reml):
    """LmmProblem.newton runs optimize.newton's rules in the core: the same steps, so the same
    point (to the rounding of the two eigensolvers), value and evaluation count."""
    from mixedfit.optimize import newton, theta_start

    df = lmm_frame(2)
    d = build_design(formula, df, weights=weights, offset=None, lmm=True)
    prob = make_problem(d, d.y, d.weights)
    x0 = theta_start([t.p for t in d.terms])
    py = newton(lambda th: prob.objective_grad(th, reml), x0, np.full(x0.size, -np.inf))
    x, f, nevals, converged = prob.newton(x0, reml)
    assert converged and py is not None
    np.testing.assert_allclose(x, py[0], rtol=1e-8, atol=1e-10)
    assert f == pytest.approx(py[1], rel=1e-13)
    assert nevals == py[2]


@pytest.mark.parametrize("formula,weights", LMM_CASES)
def test_lmm_auto_matches_bobyqa(formula, weights):
    df = lmm_frame(1)
    w = None if weights is None else df[weights].to_numpy()
    auto = mixedfit.lmer(formula, df, weights=w, control={"optimizer": "gradient"})
    ref = mixedfit.lmer(formula, df, weights=w, control={"optimizer": "bobyqa"})
    assert auto.optinfo.fun <= ref.optinfo.fun + 1e-8 * abs(ref.optinfo.fun)
    np.testing.assert_allclose(auto.fixef, ref.fixef, rtol=1e-4, atol=1e-5)


def test_lmm_singular_fit_reports_zero():
    """A variance whose optimum is on the boundary is reported as exactly 0, as lme4 does."""
    rng = np.random.default_rng(3)
    n = 200
    df = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n),
                       "g": rng.integers(0, 10, n).astype(str)})
    fit = mixedfit.lmer("y ~ x + (1 | g)", df, control={"optimizer": "gradient"})
    ref = mixedfit.lmer("y ~ x + (1 | g)", df, control={"optimizer": "bobyqa"})
    if ref.theta[0] == 0.0:
        assert fit.theta[0] == 0.0
    assert fit.optinfo.fun <= ref.optinfo.fun + 1e-9 * abs(ref.optinfo.fun)


def test_auto_chooses_by_evaluation_cost():
    from mixedfit.lmm import _use_gradient
    rng = np.random.default_rng(0)
    # One term: its gradient comes from A's per-level blocks, about one evaluation's cost;
    # it pays on few levels and on many.
    few = build_design("y ~ x + (1 | g)", lmm_frame(), weights=None, offset=None, lmm=True)
    df = lmm_frame(n=6000).assign(g=np.repeat(np.arange(1200), 5).astype(str))
    one_term = build_design("y ~ x + (1 | g)", df, weights=None, offset=None, lmm=True)
    assert _use_gradient(few, mixedfit.Control())
    # Two small crossed terms: an evaluation takes microseconds, the row-wise gradient more.
    df = lmm_frame(n=400).assign(a=rng.integers(0, 20, 400).astype(str),
                                 b=rng.integers(0, 10, 400).astype(str))
    small = build_design("y ~ x + (1 | a) + (1 | b)", df, weights=None, offset=None, lmm=True)
    # Two large crossed factors: the second forms a dense block of 250.
    df = lmm_frame(n=5000).assign(a=rng.integers(0, 300, 5000).astype(str),
                                  b=rng.integers(0, 250, 5000).astype(str))
    big = build_design("y ~ x + (1 | a) + (1 | b)", df, weights=None, offset=None, lmm=True)
    auto = mixedfit.Control()
    assert _use_gradient(one_term, auto) and not _use_gradient(small, auto)
    assert _use_gradient(big, auto)
    assert _use_gradient(small, mixedfit.Control(optimizer="gradient"))
    assert not _use_gradient(big, mixedfit.Control(optimizer="bobyqa"))
    assert not _use_gradient(one_term, mixedfit.Control(optimizer="bobyqa"))


def test_fallbacks_when_newton_cannot_go_on(monkeypatch):
    """Newton giving up (no positive curvature, a failed search) hands over to L-BFGS-B and,
    if that fails or ends on a bound, to lme4's BOBYQA path: same optimum either way."""
    import mixedfit.glmm as glmm_mod
    import mixedfit.optimize as opt_mod

    df = simulate(2, "binomial")
    formula = "y ~ x + z + (1 | g) + (1 | h)"
    ref = mixedfit.glmer(formula, df, family="binomial", control={"optimizer": "bobyqa"})
    monkeypatch.setattr(opt_mod, "newton", lambda *a, **k: None)
    # the GLMM's Newton runs in the core: make it give up there too
    monkeypatch.setattr(glmm_mod, "_core_newton",
                        lambda prob, stage, x0, *args: (x0, np.inf, 0, False))
    fit = mixedfit.glmer(formula, df, family="binomial")
    assert "Newton" not in fit.optinfo.message
    assert fit.optinfo.fun <= ref.optinfo.fun + 1e-7 * abs(ref.optinfo.fun)
    np.testing.assert_allclose(fit.beta, ref.beta, atol=2e-4)
    lm = mixedfit.lmer("y ~ x + (x | g)", lmm_frame(), control={"optimizer": "gradient"})
    lm_ref = mixedfit.lmer("y ~ x + (x | g)", lmm_frame(), control={"optimizer": "bobyqa"})
    assert lm.optinfo.fun <= lm_ref.optinfo.fun + 1e-8 * abs(lm_ref.optinfo.fun)


@pytest.mark.parametrize("n,l0,l1", [(20000, 1000, 450), (60000, 300, 450)])
def test_threaded_paths_match_one_thread(n, l0, l1):
    """Designs large enough for every two-thread path (R^{-1} by block columns, the level
    sums, the dense coupling downdate in the second case): same objective and gradient as
    with one thread, to rounding."""
    rng = np.random.default_rng(7)
    g = rng.integers(0, l0, n)
    h = rng.integers(0, l1, n)
    x = rng.normal(size=n)
    df = pd.DataFrame({"y": x + rng.normal(size=l0)[g] + rng.normal(size=l1)[h] + rng.normal(size=n),
                       "x": x, "g": g, "h": h})
    d = build_design("y ~ x + (1 | g) + (1 | h)", df, weights=None, offset=None, lmm=True)
    prob = make_problem(d, d.y, None)
    th = np.array([0.7, 0.4])
    before = mixedfit.get_num_threads()
    try:
        out = {}
        for k in (1, 2):
            mixedfit.set_num_threads(k)
            out[k] = (prob.objective_grad(th, True), prob.solution(th)["unscaled_condvar"])
    finally:
        mixedfit.set_num_threads(before)
    (v1, g1), cv1 = out[1]
    (v2, g2), cv2 = out[2]
    assert v2 == pytest.approx(v1, rel=1e-12)
    np.testing.assert_allclose(g2, g1, rtol=1e-9, atol=1e-9)
    for a, b in zip(cv1, cv2):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_gradient_two_crossed_factors_sparse_path():
    """Two crossed scalar terms with a sparse coupling block and a rest block of >= 64 levels
    take the core's shortcut (no dense S22): same checks as above."""
    rng = np.random.default_rng(5)
    n = 6000
    g = rng.integers(0, 300, n)
    h = rng.integers(0, 120, n)
    x = rng.normal(size=n)
    eta = 0.2 + 0.5 * x + rng.normal(0, 0.6, 300)[g] + rng.normal(0, 0.5, 120)[h]
    df = pd.DataFrame({"y": rng.binomial(1, special.expit(eta)), "x": x, "g": g, "h": h})
    d = build_design("y ~ x + (1 | g) + (1 | h)", df, weights=None, offset=None, lmm=True)
    assert not make_problem(d, d.y.astype(float), None).rest_dense
    fit = mixedfit.glmer("y ~ x + (1 | g) + (1 | h)", df, family="binomial")
    prob, nt = fit._prob, 2
    x0 = np.r_[fit.theta * 1.1 + 0.05, fit.beta + 0.05]
    _, grad = prob.stage2_grad(x0[:nt], x0[nt:])
    fd = central(lambda v: prob.stage2(v[:nt], v[nt:], None, 1, NONE, NONE), x0)
    assert np.max(np.abs(grad - fd)) <= 1e-5 * max(1.0, np.max(np.abs(fd)))
    _, g1 = prob.stage1_grad(x0[:nt])
    fd1 = central(lambda v: prob.stage1(v, None), x0[:nt])
    assert np.max(np.abs(g1 - fd1)) <= 1e-5 * max(1.0, np.max(np.abs(fd1)))
