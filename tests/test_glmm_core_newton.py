"""The GLMM's Newton loop and its Hessian run inside the core (GlmmProblem.newton,
GlmmProblem.stage2_hessian) with the same rules as the Python reference implementation
(optimize.newton, central differences of the exact gradient): same path, same point, same
number of evaluations, to rounding."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mixedfit
from mixedfit.optimize import newton

from test_gradient import simulate

NONE = np.zeros(0)

MODELS = [
    ("binomial", "y ~ x + (1 | g)", 1),
    ("binomial", "y ~ x + z + (1 | g) + (1 | h)", 2),
    ("poisson", "y ~ x + (x | g) + (1 | h)", 3),
]


def _fit(family, formula, seed):
    return mixedfit.glmer(formula, simulate(seed, family), family=family)


@pytest.mark.parametrize("family,formula,seed", MODELS)
def test_core_newton_follows_the_python_newton(family, formula, seed):
    fit = _fit(family, formula, seed)
    prob, nt = fit._prob, fit.theta.size
    # From away from the optimum, so that the run takes several steps.
    x0 = np.r_[fit.theta * 0.6 + 0.1, fit._beta_scaled - 0.2]
    u0 = np.zeros_like(fit.u)

    def seed_stage2():  # the same warm start for both runs
        prob.stage2(x0[:nt], x0[nt:], u0, 1, NONE, NONE)

    seed_stage2()
    py = newton(lambda v: prob.stage2_grad(v[:nt], v[nt:]), x0, np.full(x0.size, -np.inf))
    seed_stage2()
    x, f, nevals, converged = prob.newton(2, x0)
    assert py is not None and converged
    np.testing.assert_allclose(x, py[0], rtol=1e-7, atol=1e-9)
    assert f == pytest.approx(py[1], rel=1e-12)
    assert nevals == py[2]

    th0 = fit.theta * 1.5 + 0.2
    prob.stage1(th0, np.zeros(fit.design.n))
    py1 = newton(prob.stage1_grad, th0, np.full(nt, -np.inf))
    prob.stage1(th0, np.zeros(fit.design.n))
    x1, f1, nevals1, converged1 = prob.newton(1, th0)
    assert py1 is not None and converged1
    np.testing.assert_allclose(x1, py1[0], rtol=1e-7, atol=1e-9)
    assert f1 == pytest.approx(py1[1], rel=1e-12)
    assert nevals1 == py1[2]


@pytest.mark.parametrize("family,formula,seed", MODELS)
def test_core_hessian_is_central_differences_of_the_gradient(family, formula, seed):
    fit = _fit(family, formula, seed)
    prob, nt = fit._prob, fit.theta.size
    x = np.r_[fit.theta, fit._beta_scaled]
    f, g, H = prob.stage2_hessian(x)
    delta = 1e-4
    ref = np.empty((x.size, x.size))
    for j in range(x.size):
        e = np.zeros(x.size)
        e[j] = delta
        gp = prob.stage2_grad((x + e)[:nt], (x + e)[nt:])[1]
        gm = prob.stage2_grad((x - e)[:nt], (x - e)[nt:])[1]
        ref[:, j] = (gp - gm) / (2 * delta)
    ref = 0.5 * (ref + ref.T)
    np.testing.assert_allclose(H, ref, rtol=1e-7, atol=1e-7 * np.abs(ref).max())
    f0, g0 = prob.stage2_grad(x[:nt], x[nt:])
    assert f == pytest.approx(f0, rel=1e-12)
    np.testing.assert_allclose(g, g0, atol=1e-7 * max(1.0, np.abs(g0).max()))


def test_core_newton_gives_up_without_a_starting_mode():
    """Stage 1 warm-starts from the last stage-1 mode: before any there is nothing to start
    from, and the run reports that it did not converge (the caller then takes L-BFGS-B)."""
    fit = _fit("binomial", "y ~ x + (1 | g)", 1)
    fresh = mixedfit._core.GlmmProblem(*fit._prob.__getstate__()[0])
    x, f, nevals, converged = fresh.newton(1, fit.theta)
    assert not converged and nevals == 0 and np.isnan(f)
    np.testing.assert_array_equal(x, fit.theta)


GLMM_CHILD = """
import numpy as np, pandas as pd
import mixedfit as mf

rng = np.random.default_rng(1)
n, S, I = 400000, 4000, 1500
s, i = rng.integers(0, S, n), rng.integers(0, I, n)
x = rng.normal(size=n)
eta = 0.2 + x + rng.normal(0, 1, S)[s] + rng.normal(0, 0.5, S)[s] * x + rng.normal(0, 1, I)[i]
y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
df = pd.DataFrame({"y": y, "x": x, "s": pd.Categorical(s), "i": pd.Categorical(i)})
print("start", flush=True)
try:
    mf.glmer("y ~ x + (x | s) + (1 | i)", df, family="binomial")
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@pytest.mark.slow  # a child process that fits a GLMM for many seconds
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_sigint_stops_the_core_newton_loop():
    """Ctrl-C while the core runs a whole Newton stage ends the fit with KeyboardInterrupt
    (the loop stops at the next evaluation and the binding raises the pending interrupt)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(mixedfit.__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, "-c", GLMM_CHILD], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "start"
        time.sleep(3.0)  # inside the fit's first stage (it takes tens of seconds)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert out.split() == ["interrupted"], (out, err[-2000:])
    assert proc.returncode == 0


@pytest.mark.parametrize("family,formula,seed", MODELS)
def test_stage2_from_stage1_curvature_reaches_the_same_fit(family, formula, seed, monkeypatch):
    """Stage 2's Newton starts its curvature model from stage 1's (no forward differences);
    after the exact-Hessian polishing step the fit is the one from a differenced start, with
    fewer evaluations."""
    import mixedfit.glmm as glmm_mod

    df = simulate(seed, family)
    seeded = mixedfit.glmer(formula, df, family=family)
    core_newton = glmm_mod._core_newton
    monkeypatch.setattr(glmm_mod, "_core_newton",
                        lambda prob, stage, x0, u_start=None, curvature_from_stage1=False:
                        core_newton(prob, stage, x0, u_start, False))
    differenced = mixedfit.glmer(formula, df, family=family)
    assert seeded.optinfo.method == differenced.optinfo.method == "Newton"
    assert seeded.optinfo.nevals < differenced.optinfo.nevals
    assert seeded.loglik == pytest.approx(differenced.loglik, abs=1e-9)
    np.testing.assert_allclose(seeded.beta, differenced.beta, rtol=0, atol=1e-7)
    np.testing.assert_allclose(seeded.theta, differenced.theta, rtol=0, atol=1e-7)
    # The Hessian is taken at the optimizer's point, which either start leaves within Newton's
    # stopping tolerance of the optimum (decrement 1e-9: |dx| ~ 1e-5), and it moves with that
    # point: the covariances agree to ~1e-5 of their scale, far below the printed digits.
    V1, V2 = seeded.vcov.to_numpy(), differenced.vcov.to_numpy()
    np.testing.assert_allclose(V1, V2, rtol=0, atol=1e-4 * np.abs(np.diag(V2)).max())


def test_python_newton_takes_a_starting_curvature_and_hands_back_its_last():
    """optimize.newton (the Dask GLMM's loop) with ``start_hessian`` skips the forward
    differences, as the core's newton_minimize does, and returns its final curvature model:
    on a quadratic the exact Hessian, kept by the BFGS updates."""
    from mixedfit.optimize import newton

    A = np.array([[3.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 1.0]])
    b = np.array([1.0, -2.0, 0.5])

    def fg(x):
        return 0.5 * x @ A @ x - b @ x, A @ x - b

    x0 = np.zeros(3)
    free = np.full(3, -np.inf)
    differenced = newton(fg, x0, free)
    curvature: list = []
    seeded = newton(fg, x0, free, start_hessian=A, curvature=curvature)
    np.testing.assert_allclose(seeded[0], np.linalg.solve(A, b), rtol=1e-10)
    np.testing.assert_allclose(differenced[0], seeded[0], rtol=1e-8)
    assert seeded[2] == differenced[2] - 3  # no forward differences
    np.testing.assert_allclose(curvature[0], A, rtol=0, atol=1e-12)
