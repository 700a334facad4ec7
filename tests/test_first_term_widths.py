"""The core against the dense twin for every width of the first term's blocks.

The core factors the first term's p0 x p0 blocks with kernels specialized for p0 = 1..4 and a
run-time-size fallback above (cpp/include/mixedfit/block_kernels.hpp), and forms A in one pass
over the rows for p0 <= 4. The hypothesis designs of test_core_twin.py draw widths up to 3;
here every width 1..6 is run alone, crossed with a scalar term (dense and block-sparse
coupling), and with a vector second term, with and without weights. Tolerance as in
test_core_twin.py (1e-10 relative: both sides are backward-stable factorizations of
well-conditioned matrices).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from test_core_twin import compare, fixed_x, make_problem, term, term_z  # noqa: E402


def theta_for(rng, ps):
    out = []
    for p in ps:
        for j in range(p):
            for i in range(j, p):
                out.append(rng.uniform(0.2, 1.5) if i == j else rng.uniform(-0.8, 0.8))
    return np.array(out)


@pytest.mark.parametrize("second", [None, "scalar_few", "scalar_many", "vector"])
@pytest.mark.parametrize("p0", [1, 2, 3, 4, 5, 6])
def test_first_term_of_every_width_matches_twin(p0, second):
    rng = np.random.default_rng(100 * p0 + (0 if second is None else len(second)))
    n, L0 = 150, 20
    terms = [term(rng.integers(0, L0, n), L0, term_z(rng, n, p0))]
    if second == "scalar_few":  # every level of the first term meets most of these: dense
        terms.append(term(rng.integers(0, 4, n), 4, term_z(rng, n, 1)))
    elif second == "scalar_many":  # few co-occurrences per level: block-sparse coupling
        terms.append(term(rng.integers(0, 40, n), 40, term_z(rng, n, 1)))
    elif second == "vector":
        terms.append(term(rng.integers(0, 6, n), 6, term_z(rng, n, 2)))
    X = fixed_x(rng, n, 2)
    y = np.ascontiguousarray(X @ [1.0, -0.5] + rng.normal(size=n))
    for codes, L, Z in terms:
        y += np.sum(Z * rng.normal(size=(L, Z.shape[1]))[codes], axis=1)
    theta = theta_for(rng, [t[2].shape[1] for t in terms])
    for w in (None, np.ascontiguousarray(rng.uniform(0.3, 3.0, n))):
        prob = make_problem(X, terms, y, w)
        if second in ("scalar_few", "scalar_many"):
            assert prob.rest_dense == (second == "scalar_few")
        compare(prob, X, y, w, terms, theta)


@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.parametrize("p0", [1, 2, 3, 4, 5])
def test_single_term_gradient_of_every_width(p0, reml):
    """objective_grad for one term (fixed-size leverages for widths 1-4, the general path
    for 5) against central differences of the objective: step 1e-5 leaves a truncation
    error ~1e-10 and rounding ~1e-11 relative to the O(n) objective, far inside 1e-5."""
    rng = np.random.default_rng(7 + p0)
    n, L0 = 150, 20
    terms = [term(rng.integers(0, L0, n), L0, term_z(rng, n, p0))]
    X = fixed_x(rng, n, 2)
    y = np.ascontiguousarray(X @ [1.0, -0.5] + rng.normal(size=n))
    y += np.sum(terms[0][2] * rng.normal(size=(L0, p0))[terms[0][0]], axis=1)
    theta = theta_for(rng, [p0])
    w = np.ascontiguousarray(rng.uniform(0.3, 3.0, n))
    prob = make_problem(X, terms, y, w)
    _, grad = prob.objective_grad(theta, reml)
    h = 1e-5
    for k in range(theta.size):
        e = np.zeros(theta.size)
        e[k] = h
        fd = (prob.objective(theta + e, reml) - prob.objective(theta - e, reml)) / (2 * h)
        assert abs(grad[k] - fd) <= 1e-5 * max(1.0, abs(fd)), (k, grad[k], fd)
