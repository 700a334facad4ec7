"""A fit leaves no reference cycles behind.

Garbage that only Python's cyclic collector can free makes the collector run while fits are
made in a loop, and its full passes walk every object pandas, formulaic and SciPy keep
loaded: for a sub-millisecond fit that cost more than the fit's arithmetic (a stage-2
objective that referred to itself made cbpp fits ~20% slower). Each fitting path is run with
the collector off, and nothing unreachable may be left.
"""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd
import pytest

import mixedfit
from mixedfit import datasets


def _bernoulli() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(30), 10)
    x = rng.normal(size=g.size)
    eta = -0.3 + 0.7 * x + rng.normal(size=30)[g]
    return pd.DataFrame({"y": (rng.random(g.size) < 1 / (1 + np.exp(-eta))).astype(float),
                         "x": x, "g": g.astype(str)})


FITS = {
    "lmer, one term (Newton)": lambda: mixedfit.lmer("Reaction ~ Days + (Days | Subject)",
                                                     datasets.load("sleepstudy")),
    "lmer, crossed (BOBYQA)": lambda: mixedfit.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)",
                                                    datasets.load("Penicillin")),
    "glmer, binomial counts": lambda: mixedfit.glmer(
        "cbind(incidence, size - incidence) ~ period + (1 | herd)", datasets.load("cbpp"),
        family="binomial"),
    "glmer, Bernoulli": lambda d=_bernoulli(): mixedfit.glmer("y ~ x + (1 | g)", d,
                                                              family="binomial"),
}


@pytest.mark.parametrize("fit", list(FITS.values()), ids=list(FITS))
def test_a_fit_leaves_no_cyclic_garbage(fit):
    fit()  # first-use caches (parsed formulas, datasets) are filled, not garbage
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            result = fit()
            del result
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert unreachable == 0
