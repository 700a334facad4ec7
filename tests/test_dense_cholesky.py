"""The core's dense Cholesky (blocked, multi-threaded for large blocks) against numpy, its
failure modes, and the thread-count setting."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import mixedfit
from mixedfit import _core


def spd(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    b = rng.normal(size=(n, n))
    return b @ b.T / n + np.eye(n)


@pytest.fixture
def restore_threads():
    old = mixedfit.get_num_threads()
    yield
    mixedfit.set_num_threads(old)


@pytest.mark.parametrize("n", [1, 2, 7, 63, 64, 65, 200, 300, 517])
@pytest.mark.parametrize("block", [16, 32, 0])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_matches_numpy(n, block, threads):
    a = spd(n, seed=n)
    want = np.linalg.cholesky(a)
    # Only the lower triangle is read: garbage above the diagonal must not matter.
    a_in = a.copy()
    a_in[np.triu_indices(n, 1)] = np.nan
    got = _core.dense_cholesky(a_in, threads, block)
    assert got.shape == (n, n)
    assert np.all(np.triu(got, 1) == 0.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_c_ordered_and_strided_input():
    a = spd(130, seed=1)
    want = np.linalg.cholesky(a)
    for view in (np.ascontiguousarray(a), np.asfortranarray(a), np.kron(a, np.ones((2, 2)))[::2, ::2]):
        got = _core.dense_cholesky(view, 2, 32)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("block", [16, 0])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("where", [0, 5, 40, 150, 299])
def test_not_positive_definite_raises(block, threads, where):
    n = 300
    a = spd(n, seed=3)
    # The pivot at `where` is a_ww minus a sum of squares: negative.
    a[where, where] = -1.0
    with pytest.raises(mixedfit.NumericalError, match="not positive definite"):
        _core.dense_cholesky(a, threads, block)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("block", [16, 0])
def test_non_finite_raises(bad, block):
    a = spd(300, seed=4)
    a[200, 100] = bad
    with pytest.raises(mixedfit.NumericalError):
        _core.dense_cholesky(a, 2, block)


def test_singular_raises():
    rng = np.random.default_rng(5)
    b = rng.normal(size=(300, 150))
    with pytest.raises(mixedfit.NumericalError):
        _core.dense_cholesky(b @ b.T, 2, 32)


def test_bad_arguments():
    with pytest.raises(ValueError, match="square"):
        _core.dense_cholesky(np.ones((3, 4)), 2)
    with pytest.raises(ValueError, match="square"):
        _core.dense_cholesky(np.ones(3), 2)
    with pytest.raises(TypeError, match="float64"):
        _core.dense_cholesky(np.eye(3, dtype=np.float32), 2)
    with pytest.raises(ValueError, match="threads"):
        _core.dense_cholesky(np.eye(3), 0)
    with pytest.raises(ValueError, match="block"):
        _core.dense_cholesky(np.eye(3), 1, -1)
    assert _core.dense_cholesky(np.zeros((0, 0)), 2).shape == (0, 0)


def test_thread_setting_round_trips(restore_threads):
    assert mixedfit.get_num_threads() >= 1
    for n in (1, 2, 5):
        mixedfit.set_num_threads(n)
        assert mixedfit.get_num_threads() == n
        assert _core.get_num_threads() == n
    for bad in (0, -3):
        with pytest.raises(ValueError, match="at least 1"):
            mixedfit.set_num_threads(bad)
        with pytest.raises(ValueError, match="at least 1"):
            _core.set_num_threads(bad)
    assert mixedfit.get_num_threads() == 5
    with pytest.raises(TypeError):
        mixedfit.set_num_threads(1.5)


def test_fit_does_not_depend_on_threads(restore_threads):
    # A crossed design whose dense rest block (300 levels + X + y) takes the blocked path.
    rng = np.random.default_rng(6)
    n = 2000
    g = rng.integers(0, 400, n)
    h = rng.integers(0, 300, n)
    y = rng.normal(size=n) + rng.normal(size=400)[g] + 0.5 * rng.normal(size=300)[h]
    df = pd.DataFrame({"y": y, "x": rng.normal(size=n), "g": g.astype(str), "h": h.astype(str)})
    mixedfit.set_num_threads(2)
    fit = mixedfit.lmer("y ~ x + (1 | g) + (1 | h)", df)
    prob = fit._problem
    assert prob.q - df.g.nunique() >= 290  # rest block: the levels of h, then X and y
    objs = []
    for t in (1, 2, 3):
        mixedfit.set_num_threads(t)
        objs.append([prob.objective(fit.theta * s, True) for s in (1.0, 0.5, 2.0)])
    np.testing.assert_allclose(objs[1], objs[0], rtol=1e-12)
    np.testing.assert_allclose(objs[2], objs[0], rtol=1e-12)
    np.testing.assert_allclose(objs[1][0], fit.reml_criterion, rtol=1e-12)


@pytest.mark.parametrize("env, want", [("3", 3), ("1", 1), ("0", None), ("two", None)])
def test_environment_variable(env, want):
    # A fresh process loads the extension alone (not the package: faster), with the variable set.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('mixedfit._core', {_core.__file__!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(m.get_num_threads())\n"
    )
    env_vars = {**os.environ, "MIXEDFIT_NUM_THREADS": env}
    out = subprocess.run([sys.executable, "-c", code], env=env_vars, capture_output=True,
                         text=True, check=True).stdout
    got = int(out)
    if want is None:  # ignored: the default, at least 1
        assert got >= 1
    else:
        assert got == want
