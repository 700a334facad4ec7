"""The sparse rest block (several large grouping factors) against the dense one.

``_core.set_rest_storage`` forces either storage for the problems built afterwards, so the
same small models can be fitted both ways. At fixed theta both paths factor the same matrix by
backward-stable Cholesky factorizations of well-conditioned blocks (Omega >= I), so the
objective and the solution agree to rounding: 1e-10 relative. Whole fits run the same BOBYQA
path on objectives equal to ~1e-12, so they end at the same optimum to the optimizer's
tolerance; 1e-6 on theta and 1e-6 relative on the other estimates leaves room for that.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedfit
from mixedfit import NumericalError, _core

RTOL_FIXED = 1e-10
TOL_FIT = 1e-6


@pytest.fixture
def storage():
    """Sets the rest storage for the problems built in the test; restores 'auto' after."""
    yield _core.set_rest_storage
    _core.set_rest_storage("auto")


def nested_frame(students=60, per=3, seed=1):
    """Students in classes (4 each) in schools (5 classes each), 15% of students with rows in a
    second class of their school: students are not nested in classes, classes are in schools."""
    rng = np.random.default_rng(seed)
    student = np.repeat(np.arange(students), per)
    home = student // 4
    other = (home // 5) * 5 + (home + 1) % 5
    moved = (rng.random(students) < 0.15)[student] & (rng.random(student.size) < 0.5)
    klass = np.where(moved, other, home)
    school = klass // 5
    x = rng.standard_normal(student.size)
    y = (1 + 0.5 * x + rng.standard_normal(students)[student]
         + 0.7 * rng.standard_normal(klass.max() + 1)[klass]
         + 0.5 * rng.standard_normal(school.max() + 1)[school] + rng.standard_normal(student.size))
    return pd.DataFrame({"y": y, "x": x, "student": pd.Categorical(student),
                         "class": pd.Categorical(klass), "school": pd.Categorical(school)})


def crossed_frame(n=3000, seed=2):
    rng = np.random.default_rng(seed)
    a, b, c = rng.integers(0, 300, n), rng.integers(0, 40, n), rng.integers(0, 12, n)
    x = rng.standard_normal(n)
    y = (1 + 0.5 * x + rng.standard_normal(300)[a] + 0.8 * rng.standard_normal(40)[b]
         + (0.5 + 0.3 * rng.standard_normal(12))[c] * x + rng.standard_normal(n))
    return pd.DataFrame({"y": y, "x": x, "a": pd.Categorical(a), "b": pd.Categorical(b),
                         "c": pd.Categorical(c)})


def problem_terms(df, spec):
    """(codes, nlevels, Z) per term for spec [(column, with_slope)], X = [1, x]."""
    n = len(df)
    terms = []
    for col, slope in spec:
        codes = df[col].cat.codes.to_numpy().astype(np.int32)
        Z = np.ones((n, 1)) if not slope else np.column_stack([np.ones(n), df["x"].to_numpy()])
        terms.append((codes, int(codes.max()) + 1, np.asfortranarray(Z)))
    X = np.asfortranarray(np.column_stack([np.ones(n), df["x"].to_numpy()]))
    return X, terms


CASES = [
    (nested_frame, [("student", False), ("class", False), ("school", False)], [0.9, 0.6, 0.4]),
    (crossed_frame, [("a", False), ("b", False), ("c", True)], [0.9, 0.7, 0.4, 0.1, 0.3]),
    (crossed_frame, [("a", True), ("b", True)], [0.9, 0.2, 0.3, 0.7, -0.1, 0.4]),
]


@pytest.mark.parametrize("make, spec, theta", CASES)
def test_fixed_theta_matches_dense(storage, make, spec, theta):
    df = make()
    X, terms = problem_terms(df, spec)
    y = df["y"].to_numpy()
    w = np.random.default_rng(5).uniform(0.5, 2.0, len(df))
    out = {}
    for mode in ("dense", "sparse"):
        storage(mode)
        prob = _core.LmmProblem(X, terms)
        assert prob.rest_sparse == (mode == "sparse")
        prob.set_response(y, w)
        th = np.array(theta)
        out[mode] = (prob.objective(th, True), prob.objective(th, False), prob.solution(th))
    (reml_d, ml_d, sol_d), (reml_s, ml_s, sol_s) = out["dense"], out["sparse"]
    assert reml_s == pytest.approx(reml_d, rel=RTOL_FIXED)
    assert ml_s == pytest.approx(ml_d, rel=RTOL_FIXED)
    for key in ("beta", "u", "b", "unscaled_vcov", "ldL2", "ldRX2", "pwrss"):
        d, s = np.asarray(sol_d[key]), np.asarray(sol_s[key])
        assert np.max(np.abs(s - d)) <= RTOL_FIXED * max(1.0, np.max(np.abs(d))), key
    for d, s in zip(sol_d["unscaled_condvar"], sol_s["unscaled_condvar"]):
        assert np.max(np.abs(s - d)) <= RTOL_FIXED * max(1.0, np.max(np.abs(d)))


def fit_both(storage, formula, df, **kw):
    fits = {}
    for mode in ("dense", "sparse"):
        storage(mode)
        fits[mode] = mixedfit.lmer(formula, df, control={"optimizer": "bobyqa"}, **kw)
        assert fits[mode]._problem.core.rest_sparse == (mode == "sparse")
    return fits["dense"], fits["sparse"]


@pytest.mark.parametrize("make, formula", [
    (nested_frame, "y ~ x + (1 | student) + (1 | class) + (1 | school)"),
    (crossed_frame, "y ~ x + (1 | a) + (1 | b) + (0 + x | c)"),
    # no fixed effects (an empty border besides y), and one factor in two terms
    (crossed_frame, "y ~ 0 + (1 | a) + (1 | b) + (0 + x | b)"),
])
def test_fit_matches_dense(storage, make, formula):
    df = make()
    dense, sparse = fit_both(storage, formula, df)
    np.testing.assert_allclose(sparse.theta, dense.theta, atol=TOL_FIT)
    np.testing.assert_allclose(sparse.fixef, dense.fixef, rtol=TOL_FIT, atol=TOL_FIT)
    assert sparse.sigma == pytest.approx(dense.sigma, rel=TOL_FIT)
    assert sparse.optinfo.fun == pytest.approx(dense.optinfo.fun, rel=1e-10, abs=1e-8)
    np.testing.assert_allclose(sparse.vcov, dense.vcov, rtol=TOL_FIT, atol=1e-12)
    re_d, re_s = dense.ranef(condvar=True), sparse.ranef(condvar=True)
    for g in re_d:
        np.testing.assert_allclose(re_s[g].to_numpy(), re_d[g].to_numpy(), atol=TOL_FIT)
    assert "Random effects" in str(sparse.summary())


def test_gradient_path_falls_back_to_bobyqa(storage):
    """No gradient on the sparse path: the core says so, and lmer's gradient optimizer falls
    back to BOBYQA instead of failing."""
    df = nested_frame()
    storage("sparse")
    X, terms = problem_terms(df, [("student", False), ("class", False), ("school", False)])
    prob = _core.LmmProblem(X, terms)
    prob.set_response(df["y"].to_numpy())
    with pytest.raises(NumericalError, match="sparse"):
        prob.objective_grad(np.array([0.9, 0.6, 0.4]), True)
    fit = mixedfit.lmer("y ~ x + (1 | student) + (1 | class) + (1 | school)", df,
                        control={"optimizer": "gradient"})
    assert fit.optinfo.converged


def test_glmm_sparse_matches_dense(storage):
    df = nested_frame(students=80, per=4, seed=3)
    df["yb"] = (df["y"] > df["y"].median()).astype(int)
    fits = {}
    for mode in ("dense", "sparse"):
        storage(mode)
        fits[mode] = mixedfit.glmer("yb ~ x + (1 | student) + (1 | class) + (1 | school)", df,
                                    family="binomial")
    np.testing.assert_allclose(fits["sparse"].theta, fits["dense"].theta, atol=1e-5)
    np.testing.assert_allclose(fits["sparse"].fixef, fits["dense"].fixef, atol=1e-5)


def test_size_guard_names_sizes(storage):
    """A dense rest block of order 400,003 (2.6 TB) is refused at construction, naming the
    levels, the block's order and the memory, without trying to allocate it."""
    storage("dense")
    n = 600_000
    codes = np.arange(n, dtype=np.int32)
    ones = np.ones((n, 1), order="F")
    terms = [(codes, 600_000, ones), (codes % 400_000, 400_000, ones)]
    X = np.asfortranarray(np.column_stack([np.ones(n), np.arange(n, dtype=float)]))
    with pytest.raises(NumericalError, match=r"600000, 400000 levels.*order 400003.*TB"):
        _core.LmmProblem(X, terms)


def test_rest_storage_setting(storage):
    with pytest.raises(ValueError, match="rest_storage"):
        storage("fast")
    storage("sparse")
    assert _core.rest_storage() == "sparse"
