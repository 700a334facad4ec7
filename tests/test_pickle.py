"""Fits pickle and deep-copy (so they go through multiprocessing, joblib and caches).

The compiled problem a fit holds pickles as the arrays it was built from and is rebuilt on
load; everything else in a fit is plain Python. An unpickled fit must print, predict and
evaluate its objective exactly as the original. Before, pickling raised ``cannot pickle
'mixedfit._core.LmmProblem' object``.
"""

from __future__ import annotations

import copy
import multiprocessing
import pickle
import warnings

import numpy as np
import pytest

from _reference import load_data

import mixedfit as mf
from mixedfit import _core


def _lmm():
    return mf.lmer("Reaction ~ Days + (Days | Subject)", load_data("lmm", "sleepstudy"))


def _glmm(nagq=1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mf.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
                        load_data("glmm", "cbpp"), family="binomial", nagq=nagq)


def _negbin():
    # a known theta: the core object must carry the family's parameter through the pickle
    fam = mf.families.NegativeBinomial(3.0)
    return mf.glmer("TICKS ~ YEAR + (1 | BROOD)", mf.datasets.load("grouseticks"), family=fam)


FITS = {"lmer": _lmm, "glmer": _glmm, "glmer_nagq0": lambda: _glmm(0),
        "glmer_agq": lambda: _glmm(9), "glmer_negbin": _negbin}


def _core_of(fit):
    return fit._prob if getattr(fit, 'is_glmm', False) else fit._problem


def _objective_args(fit):
    if getattr(fit, 'is_glmm', False):
        base = np.r_[fit.theta, fit.beta]
    else:
        base = fit.theta
    return [base, base * 1.1]


def _assert_same(a, b):
    assert str(a.summary()) == str(b.summary())
    for g, df in a.ranef(condvar=True).items():
        np.testing.assert_array_equal(df.to_numpy(), b.ranef(condvar=True)[g].to_numpy())
    np.testing.assert_array_equal(a.predict(), b.predict())
    frame = a.data
    np.testing.assert_array_equal(a.predict(newdata=frame), b.predict(newdata=frame))
    for par in _objective_args(a):
        assert a.objective(par) == b.objective(par)


@pytest.fixture(scope="module", params=list(FITS))
def fit(request):
    return FITS[request.param]()


def test_pickle_round_trip(fit):
    again = pickle.loads(pickle.dumps(fit))
    _assert_same(fit, again)


def test_deepcopy(fit):
    again = copy.deepcopy(fit)
    _assert_same(fit, again)
    # Independent objects: evaluating the copy leaves the original's core alone.
    assert _core_of(again) is not _core_of(fit)


def test_core_problems_pickle():
    rng = np.random.default_rng(0)
    n = 30
    X = np.asfortranarray(np.column_stack([np.ones(n), rng.normal(size=n)]))
    g = np.ascontiguousarray(np.arange(n) % 5, dtype=np.int32)
    Z = np.asfortranarray(np.ones((n, 1)))
    y = np.ascontiguousarray(rng.normal(size=n))
    lmm = _core.LmmProblem(X, [(g, 5, Z)])
    lmm.set_response(y, None)
    lmm2 = pickle.loads(pickle.dumps(lmm))
    assert lmm2.objective(np.array([0.8]), True) == lmm.objective(np.array([0.8]), True)
    # A problem pickled before its response is set loads without one.
    bare = pickle.loads(pickle.dumps(_core.LmmProblem(X, [(g, 5, Z)])))
    with pytest.raises(ValueError, match="set_response"):
        bare.objective(np.array([0.8]), True)
    yb = np.ascontiguousarray((y > 0).astype(float))
    glmm = _core.GlmmProblem(X, yb, np.ones(n), None, [(g, 5, Z)], 0, 2)
    glmm.set_pirls_control(1e-9, 50)
    glmm2 = pickle.loads(pickle.dumps(glmm))
    args = (np.array([0.8]), np.array([0.1, 0.2]), np.zeros(5), 1, np.zeros(1), np.ones(1))
    assert glmm2.stage2(*args) == glmm.stage2(*args)


def _objective_in_child(fit_bytes):
    fit = pickle.loads(fit_bytes)
    return fit.objective(fit.theta if not getattr(fit, 'is_glmm', False) else np.r_[fit.theta, fit.beta])


@pytest.mark.slow
def test_fit_through_a_process_pool():
    fit = _lmm()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        got = pool.map(_objective_in_child, [pickle.dumps(fit)])[0]
    assert got == fit.objective(fit.theta)
