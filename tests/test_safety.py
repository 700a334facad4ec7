"""No call into the compiled core crashes the process.

Every case of tests/_crash_cases.py misuses the private core objects (wrong call order, wrong
shapes, dtypes, codes, NaN, uninitialized objects, exceptions on helper threads) and must
raise a Python exception. They run in a subprocess so that a regression -- a segfault, an
abort from std::terminate -- fails this test instead of killing pytest. Before these checks,
``GlmmProblem.state(True)`` without a prior evaluation was a segfault (exit status 139).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mixedfit import _core

HERE = Path(__file__).resolve().parent

# The exception class each case must raise. Wrong values and call order: ValueError; wrong
# types: TypeError; numerical failures: the core's NumericalError; an exception on a thread:
# the exception itself (RuntimeError from the test hooks).
EXPECTED = {
    "lmm components before anything": "none",  # zeros, not an error
    "lmm theta text": "TypeError",
    "lmm X int": "TypeError",
    "lmm X big-endian": "TypeError",
    "lmm codes int64": "TypeError",
    "lmm nlevels text": "TypeError",
    "lmm y float32": "TypeError",
    "lmm uninitialized object": "TypeError",
    "lmm uninitialized property": "TypeError",
    "lmm setstate on a live object": "none",
    "glmm uninitialized object": "TypeError",
    "glmm uninitialized property": "TypeError",
    "glmm stage1 warm before any": "NumericalError",
    "glmm stage1_grad before any": "NumericalError",
    # Newton reports a run that could not start (no mode to warm-start from, or a NaN start)
    # as not converged, for the caller to take another method
    "glmm newton before any": "none",
    "glmm newton x0 NaN": "none",
    "glmm eta_start NaN": "NumericalError",
    "cholesky int": "TypeError",
    "cholesky NaN": "NumericalError",
    "cholesky exception on a helper thread": "RuntimeError",
    "run_pair helper throws": "RuntimeError",
    "run_pair caller throws": "RuntimeError",
}


@pytest.fixture(scope="module")
def outcomes() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(_core.__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(HERE / "_crash_cases.py")], capture_output=True,
                          text=True, env=env, timeout=300)
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    started = [x["start"] for x in lines if "start" in x]
    assert proc.returncode == 0 and lines and lines[-1] == {"done": True}, (
        f"the process died (exit status {proc.returncode}) in case {started[-1] if started else None!r}:"
        f"\n{proc.stderr[-2000:]}")
    return {x["case"]: x["raised"] for x in lines if "case" in x}


def _case_names() -> list[str]:
    sys.path.insert(0, str(HERE))
    try:
        import _crash_cases
    finally:
        sys.path.pop(0)
    return list(_crash_cases.CASES)


@pytest.mark.parametrize("case", _case_names())
def test_misuse_raises(outcomes, case):
    assert outcomes[case] == EXPECTED.get(case, "ValueError"), case


def test_state_after_a_stage1_fit_has_b_from_theta():
    """nAGQ = 0 (stage 1 only): b = Lambda(theta) u, not u (the u-only problem's Lambda was
    never set)."""
    rng = np.random.default_rng(0)
    n, G = 60, 6
    X = np.asfortranarray(np.ones((n, 1)))
    y = np.ascontiguousarray(rng.integers(0, 2, n).astype(float))
    g = np.ascontiguousarray(np.arange(n) % G, dtype=np.int32)
    prob = _core.GlmmProblem(X, y, np.ones(n), None, [(g, G, np.asfortranarray(np.ones((n, 1))))],
                             0, 2)
    theta = np.array([0.7])
    prob.stage1(theta, np.zeros(n))
    st = prob.state_at(theta)
    np.testing.assert_allclose(st["b"], 0.7 * np.asarray(st["u"]), rtol=1e-15)
    assert np.any(np.abs(st["u"]) > 1e-3)


def test_pirls_falls_back_from_an_invalid_start():
    """Poisson with the sqrt link: from u_start with Z Lambda u < -X beta the mean is invalid
    at once (eta < 0); PIRLS must start again from u = 0, not fail."""
    rng = np.random.default_rng(1)
    n, G = 40, 5
    X = np.asfortranarray(np.ones((n, 1)))
    y = np.ascontiguousarray(rng.poisson(1.5, n).astype(float))
    g = np.ascontiguousarray(np.arange(n) % G, dtype=np.int32)
    prob = _core.GlmmProblem(X, y, np.ones(n), None, [(g, G, np.asfortranarray(np.ones((n, 1))))],
                             1, 7)
    theta, beta = np.array([1.5]), np.array([1.2])
    lap = (1, np.zeros(1), np.ones(1))
    from_zero = prob.stage2(theta, beta, np.zeros(G), *lap)
    u_zero = np.asarray(prob.state()["u"]).copy()
    from_far = prob.stage2(theta, beta, np.full(G, -1.5), *lap)
    assert from_far == pytest.approx(from_zero, rel=1e-10)
    np.testing.assert_allclose(prob.state()["u"], u_zero, atol=1e-8)


def _inverse_gaussian_problem(seed=86, n=60, G=6):
    """Inverse Gaussian with the 1/mu^2 link and an offset; with this seed PIRLS from the GLM
    starting eta (1 / y^2) took a first step to an invalid mean and could only halve toward
    (beta, u) = 0, where eta = offset is partly negative: "step-halving exhausted"."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n)
    X = np.asfortranarray(np.column_stack([np.ones(n), x]))
    codes = np.ascontiguousarray(rng.integers(0, G, n), dtype=np.int32)
    off = rng.normal(0, 0.2, n)
    eta = X @ np.array([2.0, 0.4]) + off + 0.3 * rng.normal(size=G)[codes]
    y = np.ascontiguousarray(rng.wald(eta**-0.5, 4.0))
    prob = _core.GlmmProblem(X, y, np.ones(n), off, [(codes, G, np.asfortranarray(np.ones((n, 1))))],
                             3, 8)
    return prob, np.ascontiguousarray(y**-2.0)


def test_stage1_falls_back_from_the_glm_start():
    theta = np.array([1.0])
    prob, eta0 = _inverse_gaussian_problem()
    cold = prob.stage1(theta, eta0)
    # The same objective reached along another path: from the fixed-effects-only fit
    # (theta = 0), warm from mode to mode in steps of 0.25.
    other, eta0 = _inverse_gaussian_problem()
    other.stage1(np.array([0.0]), eta0)
    for t in (0.25, 0.5, 0.75, 1.0):
        warm = other.stage1(np.array([t]), None)
    assert cold == pytest.approx(warm, rel=1e-9)


def test_stage1_from_a_bare_eta_damps_an_invalid_first_step():
    """Inverse Gaussian, 1/mu^2 link, no offset: with this seed the first PIRLS step from the
    GLM start 1 / y^2 leaves eta > 0 for some rows, and halving toward (beta, u) = 0 (eta = 0)
    never returns to valid means. PIRLS must move eta only part of the way instead."""
    rng = np.random.default_rng(161)
    n, G = 20, 4
    x = rng.uniform(-1, 1, n)
    X = np.asfortranarray(np.column_stack([np.ones(n), x]))
    codes = np.ascontiguousarray(rng.integers(0, G, n), dtype=np.int32)
    eta = X @ np.array([2.0, 0.4]) + 0.3 * rng.normal(size=G)[codes]
    y = np.ascontiguousarray(rng.wald(eta**-0.5, 4.0))
    Z = np.asfortranarray(np.ones((n, 1)))

    def problem():
        return _core.GlmmProblem(X, y, np.ones(n), None, [(codes, G, Z)], 3, 8)

    for theta in (0.0, 0.5):
        cold = problem().stage1(np.array([theta]), np.ascontiguousarray(y**-2.0))
        # Another path to the same mode: from the GLM start at theta = 1, then warm.
        other = problem()
        other.stage1(np.array([1.0]), np.ascontiguousarray(y**-2.0))
        warm = other.stage1(np.array([theta]), None)
        assert cold == pytest.approx(warm, rel=1e-9), theta
