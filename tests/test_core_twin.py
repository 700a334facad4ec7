"""The blocked-Cholesky core against the dense twin, at fixed theta.

Designs are drawn by hypothesis (structure and theta) with the continuous data generated from a
drawn seed, so that conditioning stays under control while every structural case is reached:
scalar and vector terms, two and three crossed factors, nested factors, a factor used by two
terms, unused levels, weights, theta components exactly 0 and negative off-diagonals, and every
order of the terms (the core treats its first term specially, whatever its size).
"""

from __future__ import annotations

import math
import os
import sys
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))

from _dense_twin import marginal_objective, theta_length, twin  # noqa: E402

from mixedfit import _core  # noqa: E402

# The core and the twin compute the same quantities by different but backward-stable
# factorizations of matrices whose condition numbers the generators below keep modest
# (standard-normal covariates, theta <= 2.5, weights in [0.3, 3]); both are then accurate to a
# small multiple of cond * machine epsilon, far inside 1e-10. Quantities that can be zero or
# cancel (log-determinants, b, u, conditional variances) are compared relative to the size of the
# whole quantity (max-norm over the vector / matrix, and at least 1 for the additive
# log-determinant terms of the objective, which is O(n)), not entry by entry.
RTOL = 1e-10


def assert_close(actual, expected, what, rtol=RTOL, floor=0.0):
    a = np.asarray(actual, dtype=float)
    e = np.asarray(expected, dtype=float)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    if a.size:
        err = float(np.max(np.abs(a - e)))
        scale = max(float(np.max(np.abs(e))), floor)
        assert err <= rtol * scale, f"{what}: max abs error {err:.3e} > {rtol:g} * {scale:.3e}"


# --------------------------------------------------------------------------------------------
# Building problems


def fcol(a) -> np.ndarray:
    return np.asfortranarray(np.asarray(a, dtype=np.float64))


def term(codes, nlev, Z):
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim == 1:
        Z = Z[:, None]
    return (np.ascontiguousarray(codes, dtype=np.int32), int(nlev), np.asfortranarray(Z))


def term_z(rng, n, p, intercept=True):
    """p columns: an intercept (unless not wanted) and standard-normal covariates."""
    cols = []
    if intercept:
        cols.append(np.ones(n))
    while len(cols) < p:
        cols.append(rng.normal(size=n))
    return np.column_stack(cols)


def fixed_x(rng, n, p):
    if p == 0:
        return np.zeros((n, 0), order="F")
    cols = [np.ones(n)] + [rng.normal(size=n) for _ in range(p - 1)]
    return fcol(np.column_stack(cols))


def make_problem(X, terms, y, w):
    prob = _core.LmmProblem(X, terms)
    prob.set_response(y, w)
    return prob


def compare(prob, X, y, w, terms, theta):
    """Every number the core reports at theta against the twin."""
    theta = np.asarray(theta, dtype=float)
    tw = twin(X, y, w, terms, theta)
    n = X.shape[0]
    for reml in (False, True):
        got = prob.objective(theta, reml)
        want = tw.objective(reml)
        assert math.isclose(got, want, rel_tol=RTOL, abs_tol=0.0), (
            f"objective(reml={reml}): core {got!r} twin {want!r}"
        )
    sol = prob.solution(theta)
    # Floors for vectors that can be (mathematically) zero, e.g. a term aliased with the
    # intercept: ||u|| <= sqrt(pwrss), so sqrt(pwrss) is u's natural scale, max|theta| times that
    # is b's, and beta's is its standard error on the unscaled-vcov scale.
    root = math.sqrt(tw.pwrss)
    se = root * math.sqrt(float(np.max(np.diag(tw.unscaled_vcov)))) if tw.p else 0.0
    assert_close(sol["beta"], tw.beta, "beta", floor=se)
    assert_close(sol["u"], tw.u, "u", floor=root)
    assert_close(sol["b"], tw.b, "b", floor=root * float(np.max(np.abs(theta), initial=0.0)))
    assert_close(sol["unscaled_vcov"], tw.unscaled_vcov, "unscaled_vcov")
    assert len(sol["unscaled_condvar"]) == len(terms)
    for k, (got, want) in enumerate(zip(sol["unscaled_condvar"], tw.unscaled_condvar)):
        assert_close(got, want, f"unscaled_condvar[{k}]")
    # Log-determinants enter the O(n) objective additively: their absolute error is what counts.
    assert_close(sol["ldL2"], tw.ldL2, "ldL2", floor=1.0)
    assert_close(sol["ldRX2"], tw.ldRX2, "ldRX2", floor=1.0)
    assert_close(sol["ldW"], tw.ldW, "ldW", floor=1.0)
    assert_close(sol["pwrss"], tw.pwrss, "pwrss")
    assert_close(sol["ussq"], tw.ussq, "ussq", floor=tw.pwrss)
    assert_close(sol["wrss"], tw.wrss, "wrss", floor=tw.pwrss)
    # Relations between the components that the core reports.
    assert math.isclose(sol["wrss"], sol["pwrss"] - sol["ussq"], rel_tol=0, abs_tol=1e-12 * tw.pwrss)
    fitted = prob.linear_predictor(sol["beta"], sol["b"])
    wts = np.ones(n) if w is None else w
    assert math.isclose(float(np.sum(wts * (y - fitted) ** 2)), tw.wrss, rel_tol=1e-9)
    return tw


# --------------------------------------------------------------------------------------------
# Hypothesis strategies


KINDS = ("scalar", "vector", "crossed2", "crossed3", "nested", "repeated")


@st.composite
def theta_for(draw, ps):
    """Diagonals exactly 0 or in [0.05, 2.5]; off-diagonals in [-1.5, 1], mostly negative."""
    diag = st.one_of(st.just(0.0), st.floats(0.05, 2.5))
    offd = st.one_of(st.just(0.0), st.floats(-1.5, -0.01), st.floats(-1.5, 1.0))
    out = []
    for p in ps:
        for j in range(p):
            for i in range(j, p):
                out.append(draw(diag) if i == j else draw(offd))
    return np.array(out)


@st.composite
def designs(draw, nmax: int = 80, levmax: int = 30):
    n = draw(st.integers(10, nmax))
    kind = draw(st.sampled_from(KINDS))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    pfix = draw(st.integers(0, 3))
    maxlev = max(2, min(n // 2, levmax))
    nlev = lambda: draw(st.integers(2, maxlev))  # noqa: E731
    pk = lambda: draw(st.sampled_from((1, 1, 2, 3)))  # noqa: E731

    specs = []  # (codes, nlevels, p, intercept)
    if kind in ("scalar", "vector"):
        L = nlev()
        codes = rng.integers(0, L, n)
        p = 1 if kind == "scalar" else draw(st.integers(2, 3))
        specs.append((codes, L, p, draw(st.booleans()) or p > 1))
    elif kind in ("crossed2", "crossed3"):
        for _ in range(2 if kind == "crossed2" else 3):
            L = nlev()
            specs.append((rng.integers(0, L, n), L, pk(), True))
    elif kind == "nested":
        Lin = draw(st.integers(2, maxlev))
        Lout = draw(st.integers(1, max(1, Lin // 2)))
        inner = rng.integers(0, Lin, n)
        parent = rng.integers(0, Lout, Lin)  # each inner level sits in one outer level
        specs.append((inner, Lin, pk(), True))
        specs.append((parent[inner], Lout, pk(), True))
    else:  # repeated: (1 | g) + (0 + x | g) [+ (1 | h)]
        L = nlev()
        codes = rng.integers(0, L, n)
        specs.append((codes, L, 1, True))
        specs.append((codes, L, draw(st.integers(1, 2)), False))
        if draw(st.booleans()):
            L2 = nlev()
            specs.append((rng.integers(0, L2, n), L2, 1, True))
    order = draw(st.permutations(range(len(specs))))
    terms = []
    for i in order:
        codes, L, p, icpt = specs[i]
        terms.append(term(codes, L, term_z(rng, n, p, icpt)))
    X = fixed_x(rng, n, pfix)
    y = np.ascontiguousarray(X @ rng.normal(size=pfix) + rng.normal(size=n) * 1.5)
    for codes, L, Z in terms:
        y += np.sum(Z * rng.normal(size=(L, Z.shape[1]))[codes], axis=1)
    w = None
    if draw(st.booleans()):
        w = np.ascontiguousarray(rng.uniform(0.3, 3.0, n))
    theta = draw(theta_for([t[2].shape[1] for t in terms]))
    return dict(kind=kind, X=X, y=y, w=w, terms=terms, theta=theta)


# --------------------------------------------------------------------------------------------
# The twin itself


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs())
def test_twin_agrees_with_marginal_likelihood(d):
    """The twin's profiled criteria equal -2 log L (ML) and -2 log L_R (REML) of the marginal
    Gaussian model with beta and sigma^2 at their profiled values: the twin is right."""
    tw = twin(d["X"], d["y"], d["w"], d["terms"], d["theta"])
    for reml in (False, True):
        want = marginal_objective(d["X"], d["y"], d["w"], d["terms"], d["theta"], reml)
        assert math.isclose(tw.objective(reml), want, rel_tol=1e-9)


def test_twin_hand_example():
    """A one-way layout small enough to do by hand: two groups, two observations each,
    no fixed effects, theta = 1. Omega_ZZ = diag(3, 3); the conditional modes shrink the group
    means by 2/3."""
    codes = np.array([0, 0, 1, 1], dtype=np.int32)
    y = np.array([1.0, 3.0, -2.0, 0.0])
    X = np.zeros((4, 0), order="F")
    terms = [term(codes, 2, np.ones(4))]
    tw = twin(X, y, None, terms, [1.0])
    np.testing.assert_allclose(tw.u, [4.0 / 3.0, -2.0 / 3.0], rtol=1e-14)
    # pwrss = sum (y - u_g)^2 + |u|^2
    pw = (1 - 4 / 3) ** 2 + (3 - 4 / 3) ** 2 + (-2 + 2 / 3) ** 2 + (0 + 2 / 3) ** 2 + 16 / 9 + 4 / 9
    assert math.isclose(tw.pwrss, pw, rel_tol=1e-14)
    assert math.isclose(tw.ldL2, 2 * math.log(3.0), rel_tol=1e-14)
    np.testing.assert_allclose(tw.unscaled_condvar[0], [[1 / 3, 1 / 3]], rtol=1e-14)


# --------------------------------------------------------------------------------------------
# Core against twin


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs())
def test_core_matches_twin(d):
    prob = make_problem(d["X"], d["terms"], d["y"], d["w"])
    assert prob.ntheta == theta_length([t[2].shape[1] for t in d["terms"]])
    assert prob.q == sum(t[1] * t[2].shape[1] for t in d["terms"])
    event(f"kind={d['kind']}")
    if len(d["terms"]) > 1:
        event(f"rest_dense={prob.rest_dense}")
    compare(prob, d["X"], d["y"], d["w"], d["terms"], d["theta"])


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(nmax=400, levmax=150))
def test_core_matches_twin_larger_designs(d):
    prob = make_problem(d["X"], d["terms"], d["y"], d["w"])
    compare(prob, d["X"], d["y"], d["w"], d["terms"], d["theta"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(), st.data())
def test_core_refactors_at_new_theta(d, data):
    """The problem is analysed once and refactored per theta: evaluating other thetas first
    (including theta = 0) must not change what the core reports at the drawn theta."""
    prob = make_problem(d["X"], d["terms"], d["y"], d["w"])
    ps = [t[2].shape[1] for t in d["terms"]]
    for _ in range(2):
        other = data.draw(theta_for(ps))
        prob.objective(other, True)
    prob.objective(np.zeros(prob.ntheta), False)
    compare(prob, d["X"], d["y"], d["w"], d["terms"], d["theta"])


@settings(max_examples=20, deadline=None)
@given(designs(), st.integers(0, 2**32 - 1))
def test_set_response_replaces_the_response(d, seed):
    """A second set_response (new y, new or no weights) replaces A entirely."""
    prob = make_problem(d["X"], d["terms"], d["y"], d["w"])
    prob.objective(d["theta"], True)
    rng = np.random.default_rng(seed)
    n = d["X"].shape[0]
    y2 = np.ascontiguousarray(rng.normal(size=n) * 3.0)
    w2 = None if d["w"] is not None else np.ascontiguousarray(rng.uniform(0.3, 3.0, n))
    prob.set_response(y2, w2)
    compare(prob, d["X"], y2, w2, d["terms"], d["theta"])


# --------------------------------------------------------------------------------------------
# Storage modes of the off-diagonal block, forced by construction


def _storage_case(name, rng):
    """Designs whose off-diagonal block is dense or sparse by construction, far from any
    sensible crossover between the two storage modes. Returns (X, terms, y, w, rest_dense)."""
    first_p, rest_p, mode = name.split("-")
    p0 = 1 if first_p == "s0" else 2
    pr = 1 if rest_p == "sR" else 2
    n = 80 if mode == "dense" else 160
    X = fixed_x(rng, n, 2)
    y = np.ascontiguousarray(rng.normal(size=n))
    w = np.ascontiguousarray(rng.uniform(0.5, 2.0, n))
    i = np.arange(n)
    if mode == "dense":
        # few levels, fully crossed: every level of term 0 meets every later level
        g0 = i % 6
        g1 = (i // 6) % 3
        g2 = (i // 3) % 2
        terms = [term(g0, 6, term_z(rng, n, p0)), term(g1, 3, term_z(rng, n, pr)),
                 term(g2, 2, np.ones(n))]
        return X, terms, y, w, True
    # term 0 has many levels, each meeting at most 3 of the 40 + 32 levels of later terms
    g0 = i // 2                       # 80 levels, two observations each
    g1 = (i // 4) % 40                # nested: each level of g0 lies in one level of g1
    g2 = rng.permutation(i % 32)      # crossed, but each g0 level meets at most two levels
    terms = [term(g0, 80, term_z(rng, n, p0)), term(g1, 40, term_z(rng, n, pr)),
             term(g2, 32, np.ones(n))]
    return X, terms, y, w, False


STORAGE_CASES = [f"{a}-{b}-{c}" for a in ("s0", "v0") for b in ("sR", "vR") for c in ("dense", "sparse")]


@pytest.mark.parametrize("name", STORAGE_CASES)
def test_storage_modes(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    X, terms, y, w, dense = _storage_case(name, rng)
    prob = make_problem(X, terms, y, w)
    assert prob.rest_dense is dense
    ps = [t[2].shape[1] for t in terms]
    for trial in range(4):
        theta = []
        for p in ps:
            for j in range(p):
                for k in range(j, p):
                    theta.append(rng.uniform(0.1, 2.0) if j == k else -rng.uniform(0.05, 1.0))
        theta = np.array(theta)
        if trial == 1:
            theta[0] = 0.0            # term 0 switched off
        if trial == 2:
            theta[-1] = 0.0           # last term switched off
        compare(prob, X, y, w, terms, theta)


@pytest.mark.parametrize("name", ["dense", "sparse"])
def test_order_of_terms_does_not_change_the_objective(name):
    """Same model, every order of its terms (including the first term having the fewest
    levels): the objective is the same, and b comes back in the order given."""
    import itertools

    rng = np.random.default_rng(7 if name == "dense" else 8)
    X, terms, y, w, _ = _storage_case(f"v0-sR-{name}", rng)
    ps = [t[2].shape[1] for t in terms]
    theta_by_term = []
    for p in ps:
        lam = []
        for j in range(p):
            for k in range(j, p):
                lam.append(rng.uniform(0.2, 1.5) if j == k else -0.4)
        theta_by_term.append(lam)
    ref = None
    for perm in itertools.permutations(range(len(terms))):
        tt = [terms[k] for k in perm]
        th = np.concatenate([theta_by_term[k] for k in perm])
        prob = make_problem(X, tt, y, w)
        tw = compare(prob, X, y, w, tt, th)
        objs = (prob.objective(th, False), prob.objective(th, True))
        if ref is None:
            ref = objs
        else:
            assert math.isclose(objs[0], ref[0], rel_tol=RTOL)
            assert math.isclose(objs[1], ref[1], rel_tol=RTOL)
        assert tw.b.size == prob.q


def test_single_term_and_no_fixed_effects():
    rng = np.random.default_rng(3)
    n = 30
    g = rng.integers(0, 5, n)
    terms = [term(g, 5, term_z(rng, n, 2))]
    y = np.ascontiguousarray(rng.normal(size=n))
    X = np.zeros((n, 0), order="F")
    prob = make_problem(X, terms, y, None)
    assert prob.p == 0
    tw = compare(prob, X, y, None, terms, [0.8, -0.3, 0.5])
    assert tw.ldRX2 == 0.0
    sol = prob.solution(np.array([0.8, -0.3, 0.5]))
    assert sol["ldRX2"] == 0.0 and sol["beta"].shape == (0,) and sol["unscaled_vcov"].shape == (0, 0)


def test_all_theta_zero_is_the_linear_model():
    """theta = 0: b = 0, ldL2 = 0, pwrss = the weighted least-squares RSS, and the
    REML criterion is that of the weighted linear model."""
    rng = np.random.default_rng(11)
    n = 50
    X = fixed_x(rng, n, 3)
    y = np.ascontiguousarray(rng.normal(size=n))
    w = np.ascontiguousarray(rng.uniform(0.5, 2.0, n))
    terms = [term(rng.integers(0, 7, n), 7, term_z(rng, n, 2)), term(rng.integers(0, 3, n), 3, np.ones(n))]
    prob = make_problem(X, terms, y, w)
    theta = np.zeros(prob.ntheta)
    sol = prob.solution(theta)
    sw = np.sqrt(w)
    beta, *_ = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)
    rss = float(np.sum(w * (y - X @ beta) ** 2))
    assert sol["ldL2"] == 0.0
    assert np.all(sol["b"] == 0.0)
    assert_close(sol["beta"], beta, "beta")
    assert math.isclose(sol["pwrss"], rss, rel_tol=RTOL)
    _, ld = np.linalg.slogdet(X.T @ (w[:, None] * X))
    assert math.isclose(sol["ldRX2"], ld, rel_tol=RTOL)
    compare(prob, X, y, w, terms, theta)


# --------------------------------------------------------------------------------------------
# Arrays reach the core without copies; anything that would need a copy is refused


def _simple_inputs(n=20):
    rng = np.random.default_rng(5)
    X = fixed_x(rng, n, 2)
    g0 = np.ascontiguousarray(rng.integers(0, 4, n), dtype=np.int32)
    Z0 = fcol(term_z(rng, n, 2))
    g1 = np.ascontiguousarray(rng.integers(0, 3, n), dtype=np.int32)
    Z1 = fcol(np.ones((n, 1)))
    y = np.ascontiguousarray(rng.normal(size=n))
    w = np.ascontiguousarray(rng.uniform(0.5, 2, n))
    return X, g0, Z0, g1, Z1, y, w


def test_inputs_are_not_copied():
    X, g0, Z0, g1, Z1, y, w = _simple_inputs()
    prob = _core.LmmProblem(X, [(g0, 4, Z0), (g1, 3, Z1)])
    prob.set_response(y, w)
    want = [a.ctypes.data for a in (X, g0, Z0, g1, Z1, y, w)]
    assert list(prob.input_addresses()) == want
    # The buffers really are the ones used: changing y in place and re-forming A changes the result.
    th = np.array([1.0, 0.0, 1.0, 1.0])
    before = prob.objective(th, True)
    y *= 2.0
    prob.set_response(y, w)
    assert prob.objective(th, True) != before
    compare(prob, X, y, w, [(g0, 4, Z0), (g1, 3, Z1)], th)


def test_lmer_passes_its_arrays_without_copies():
    import pandas as pd

    import mixedfit

    rng = np.random.default_rng(2)
    n = 60
    df = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n),
                       "g": rng.integers(0, 6, n), "h": rng.integers(0, 4, n),
                       "w": rng.uniform(0.5, 2, n)})
    fit = mixedfit.lmer("y ~ x + (x | g) + (1 | h)", df, weights="w")
    d = fit.design
    # X and y reach the core standardized (one copy each, see mixedfit._standardize); the
    # random-effects arrays and the weights are the design's own.
    want = [fit._problem.fixed.Xs.ctypes.data]
    for t in d.terms:
        want += [t.codes.ctypes.data, t.Z.ctypes.data]
    want += [fit._problem.y_scaled.ctypes.data, d.weights.ctypes.data]
    assert list(fit._problem.input_addresses()) == want


@pytest.mark.parametrize(
    "what, exc",
    [
        ("X C-ordered", ValueError),
        ("X float32", TypeError),
        ("X int64", TypeError),
        ("codes int64", TypeError),
        ("codes float64", TypeError),
        ("codes strided", ValueError),
        ("Z C-ordered", ValueError),
        ("Z float32", TypeError),
        ("y float32", TypeError),
        ("y strided", ValueError),
        ("w float32", TypeError),
        ("w int64", TypeError),
        ("y wrong length", ValueError),
        ("codes out of range", ValueError),
    ],
)
def test_inputs_needing_a_copy_are_refused(what, exc):
    X, g0, Z0, g1, Z1, y, w = _simple_inputs()
    n = X.shape[0]
    if what == "X C-ordered":
        X = np.ascontiguousarray(X)
    elif what == "X float32":
        X = np.asfortranarray(X, dtype=np.float32)
    elif what == "X int64":
        X = np.asfortranarray(X, dtype=np.int64)
    elif what == "codes int64":
        g0 = g0.astype(np.int64)
    elif what == "codes float64":
        g0 = g0.astype(np.float64)
    elif what == "codes strided":
        g0 = np.repeat(g0, 2)[::2]
    elif what == "Z C-ordered":
        Z0 = np.ascontiguousarray(Z0)
    elif what == "Z float32":
        Z0 = np.asfortranarray(Z0, dtype=np.float32)
    elif what == "codes out of range":
        g0 = g0.copy()
        g0[3] = 4
    if what.startswith(("X", "codes", "Z")):
        with pytest.raises(exc):
            _core.LmmProblem(X, [(g0, 4, Z0), (g1, 3, Z1)])
        return
    prob = _core.LmmProblem(X, [(g0, 4, Z0), (g1, 3, Z1)])
    if what == "y float32":
        y = y.astype(np.float32)
    elif what == "y strided":
        y = np.repeat(y, 2)[::2]
    elif what == "w float32":
        w = w.astype(np.float32)
    elif what == "w int64":
        w = np.ones(n, dtype=np.int64)
    elif what == "y wrong length":
        y = np.ascontiguousarray(y[:-1])
    with pytest.raises(exc):
        prob.set_response(y, w)


@pytest.mark.parametrize("which", ["X", "Z"])
def test_strided_single_column_is_refused(which):
    """A (n, 1) column view of a wider C-ordered array is not column-major contiguous (its rows
    are 24 bytes apart): the core must refuse it rather than read it as if contiguous."""
    X, g0, Z0, g1, Z1, y, w = _simple_inputs()
    n = X.shape[0]
    wide = np.random.default_rng(1).normal(size=(n, 3))   # C-ordered: wide[:, :1] has stride 24
    one_col = wide[:, :1]
    assert not one_col.flags["F_CONTIGUOUS"]
    terms = [(g0, 4, Z0), (g1, 3, Z1)]
    if which == "X":
        X = one_col
    else:
        terms = [(g0, 4, Z0), (g1, 3, one_col)]
    with pytest.raises(ValueError, match="contiguous"):
        _core.LmmProblem(X, terms)
    # the same values, contiguous, are accepted and computed with
    fixed = np.asfortranarray(one_col)
    if which == "X":
        X = fixed
    else:
        terms = [(g0, 4, Z0), (g1, 3, fixed)]
    prob = make_problem(X, terms, y, w)
    compare(prob, X, y, w, terms, np.full(prob.ntheta, 0.7))


@pytest.mark.parametrize("p", [3, 7, 15, 16, 20])
def test_wide_fixed_effects_every_accumulation_path(p):
    """set_response reads [x y] as padded rows of width 4, 8 or 16 for scalar terms and falls
    back to term-by-term accumulation beyond 15 columns: every width against the twin."""
    rng = np.random.default_rng(100 + p)
    n = 150
    X = fixed_x(rng, n, p)
    g = rng.integers(0, 12, n)
    h = rng.integers(0, 5, n)
    terms = [term(g, 12, term_z(rng, n, 1)), term(h, 5, term_z(rng, n, 1))]
    y = rng.normal(size=n) + g * 0.1
    w = rng.uniform(0.5, 2.0, n)
    compare(make_problem(X, terms, y, w), X, y, w, terms, [0.8, 0.5])
