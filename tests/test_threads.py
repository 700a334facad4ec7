"""Fits are safe to use from several threads.

The core releases the GIL while it computes. Before each core object had a lock, two threads
evaluating one fit's objective interleaved their updates of the object's workspace and got
wrong values or failures ("not positive definite ... collinear?"). Here several threads fit
at once, and several threads evaluate one fit at once; every result must equal the serial
one exactly (the same arithmetic runs either way).
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from _reference import load_data

import mixedfit as mf

THREADS = 4


def _crossed_frame(seed=0, n=4000, n_s=300, n_i=400):
    # A dense rest block of ~300 makes one evaluation long enough (milliseconds) for the
    # threads to overlap inside the core: without the locks these sizes failed every time.
    rng = np.random.default_rng(seed)
    s = rng.integers(0, n_s, n)
    i = rng.integers(0, n_i, n)
    x = rng.normal(size=n)
    y = 1 + x + rng.normal(0, 1, n_s)[s] + rng.normal(0, 0.7, n_i)[i] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "yb": (y > np.median(y)).astype(int), "x": x,
                         "s": pd.Categorical(s), "i": pd.Categorical(i)})


def _fit_lmm(df):
    return mf.lmer("y ~ x + (1 | s) + (1 | i)", df)


def _fit_glmm(df):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mf.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", df,
                        family="binomial")


@pytest.fixture(scope="module")
def crossed():
    return _crossed_frame()


@pytest.fixture(scope="module")
def cbpp():
    return load_data("glmm", "cbpp")


def _thetas(fit, k=12):
    rng = np.random.default_rng(5)
    return [fit.theta * rng.uniform(0.5, 1.5, fit.theta.size) for _ in range(k)]


def test_one_lmm_fit_from_several_threads(crossed):
    fit = _fit_lmm(crossed)
    thetas = _thetas(fit) * 4
    serial = [fit.objective(t) for t in thetas]
    with ThreadPoolExecutor(THREADS) as pool:
        parallel = list(pool.map(fit.objective, thetas))
    assert parallel == serial


def test_one_glmm_fit_from_several_threads(crossed):
    fit = mf.glmer("yb ~ x + (1 | s) + (1 | i)", crossed, family="binomial")
    rng = np.random.default_rng(6)
    pars = [np.r_[fit.theta, fit.beta] + rng.normal(0, 0.05, fit.theta.size + fit.beta.size)
            for _ in range(24)]
    serial = [fit.objective(p) for p in pars]
    with ThreadPoolExecutor(THREADS) as pool:
        parallel = list(pool.map(fit.objective, pars))
    np.testing.assert_allclose(parallel, serial, rtol=1e-12)


def test_concurrent_fits_equal_serial_fits(crossed, cbpp):
    jobs = [(_fit_lmm, crossed), (_fit_glmm, cbpp)] * 2
    serial = [f(d) for f, d in jobs]
    with ThreadPoolExecutor(THREADS) as pool:
        parallel = list(pool.map(lambda job: job[0](job[1]), jobs))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a.theta, b.theta)
        np.testing.assert_array_equal(a.beta, b.beta)
        np.testing.assert_array_equal(a.b, b.b)
