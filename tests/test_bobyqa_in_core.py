"""BOBYQA run inside the core (``LmmProblem.bobyqa``) is NLopt's BOBYQA driven from Python,
without the Python call per evaluation: the same algorithm with the same settings and the same
objective, hence exactly the same points, values, evaluation counts and messages."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pandas as pd
import pytest

import mixedfit as mf
from mixedfit import _core
from mixedfit._design import build_design
from mixedfit._errors import NumericalError
from mixedfit._standardize import ScaledLmmProblem
from mixedfit.datasets import load
from mixedfit.options import Control
from mixedfit.optimize import bobyqa, nlopt_in_core, theta_lower, theta_start


@pytest.fixture(autouse=True, scope="module")
def _nlopt_loaded():
    """The core's BOBYQA needs NLopt's C API, which the optimizer layer loads on first use;
    these tests call the core directly, whatever ran before them."""
    assert nlopt_in_core()


def _problem(formula, df, weights=None):
    design = build_design(formula, df, weights=weights)
    prob = ScaledLmmProblem(design, design.y, design.weights)
    return prob.core, [t.p for t in design.terms]


def _crossed(seed=3, n=400):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 15, n), rng.integers(0, 9, n)
    x = rng.normal(size=n)
    y = 1 + x + rng.normal(size=15)[a] + 0.01 * rng.normal(size=9)[b] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "a": a.astype(str), "b": b.astype(str),
                         "w": rng.uniform(0.5, 2, n)})


CASES = [
    ("Reaction ~ Days + (Days | Subject)", "sleepstudy", None),
    ("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", "sleepstudy", None),
    ("y ~ x + (x | a) + (1 | b)", "crossed", None),   # b's variance near the boundary
    ("y ~ x + (1 | a) + (1 | b)", "crossed", "w"),
]


def test_the_core_can_load_nlopts_c_api():
    # The `nlopt` wheel exports NLopt's C API; if a release stops doing so, fits fall back to
    # the Python-driven loop (same numbers, slower) and this test says so.
    assert nlopt_in_core()
    assert _core.nlopt_loaded()


@pytest.mark.parametrize("formula,data,weights", CASES)
@pytest.mark.parametrize("reml", [True, False])
def test_in_core_bobyqa_takes_the_python_loops_steps(formula, data, weights, reml):
    df = load("sleepstudy") if data == "sleepstudy" else _crossed()
    core, ps = _problem(formula, df, weights)
    x0, lb, control = theta_start(ps), theta_lower(ps), Control()
    looped = bobyqa(core.objective, x0, lb, control, args=(reml,), failures=(NumericalError,))
    in_core = bobyqa(core.objective, x0, lb, control, args=(reml,), failures=(NumericalError,),
                     in_core=core.bobyqa)
    np.testing.assert_array_equal(in_core.x, looped.x)
    assert in_core.fun == looped.fun
    assert (in_core.nevals, in_core.message, in_core.converged, in_core.code) == \
        (looped.nevals, looped.message, looped.converged, looped.code)


def test_initial_step_and_maxeval_reach_nlopt():
    core, ps = _problem("Reaction ~ Days + (Days | Subject)", load("sleepstudy"))
    x0, lb = theta_start(ps), theta_lower(ps)
    control = Control(maxeval=9)
    step = np.array([0.3, 0.2, 0.1])
    runs = [bobyqa(core.objective, x0, lb, control, initial_step=step, args=(True,),
                   failures=(NumericalError,), in_core=ic) for ic in (None, core.bobyqa)]
    np.testing.assert_array_equal(runs[0].x, runs[1].x)
    assert runs[1].nevals == 9 and not runs[1].converged and runs[1].code == 5
    assert runs[1].message.startswith("NLOPT_MAXEVAL_REACHED")


@pytest.mark.filterwarnings("ignore:boundary .singular. fit")
def test_lmer_fits_are_unchanged_by_the_in_core_loop(monkeypatch):
    df = _crossed(seed=8)
    fast = mf.lmer("y ~ x + (x | a) + (1 | b)", df)
    import mixedfit.optimize as optimize
    monkeypatch.setattr(optimize, "nlopt_in_core", lambda: False)
    slow = mf.lmer("y ~ x + (x | a) + (1 | b)", df)
    np.testing.assert_array_equal(fast.theta, slow.theta)
    np.testing.assert_array_equal(fast.fixef.to_numpy(), slow.fixef.to_numpy())
    assert fast.optinfo.nevals == slow.optinfo.nevals


def test_bad_arguments_raise_value_errors():
    core, ps = _problem("Reaction ~ Days + (Days | Subject)", load("sleepstudy"))
    lb = theta_lower(ps)
    with pytest.raises(ValueError, match="length 3"):
        core.bobyqa(np.ones(2), lb, True, 1e-8, 1e-8, 100)
    with pytest.raises(ValueError, match="lower"):
        core.bobyqa(np.ones(3), lb[:2], True, 1e-8, 1e-8, 100)
    with pytest.raises(ValueError, match="initial_step"):
        core.bobyqa(np.ones(3), lb, True, 1e-8, 1e-8, 100, np.ones(4))
    with pytest.raises(ValueError, match="non-finite"):
        core.bobyqa(np.array([1.0, np.nan, 1.0]), lb, True, 1e-8, 1e-8, 100)


def test_threads_share_one_problem_and_a_pickled_copy_optimizes_alike():
    core, ps = _problem("Reaction ~ Days + (Days | Subject)", load("sleepstudy"))
    args = (theta_start(ps), theta_lower(ps), True, 1e-8, 1e-8, 1000)
    expected = core.bobyqa(*args)
    results = [None] * 6

    def run(k):
        results[k] = core.bobyqa(*args)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results + [pickle.loads(pickle.dumps(core)).bobyqa(*args)]:
        np.testing.assert_array_equal(r[0], expected[0])
        assert r[1:] == expected[1:]
