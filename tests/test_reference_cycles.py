"""A fit leaves no reference cycles behind.

Garbage that only Python's cyclic collector can free makes the collector run while fits are
made in a loop, and its full passes walk every object pandas, formulaic and SciPy keep
loaded: for a sub-millisecond fit that cost more than the fit's arithmetic (a stage-2
objective that referred to itself made cbpp fits ~20% slower). Each fitting path is run with
the collector off; of what the collector then finds unreachable, nothing may be mixedfit's
(an object of a mixedfit class, or a function, frame or generator of mixedfit's code, which
a cycle made by mixedfit's code almost always holds). Garbage of other libraries' threads, such as a Dask client
left running by another test, is not the fit's and is not counted.
"""

from __future__ import annotations

import gc
import os

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


def _is_mixedfits(obj) -> bool:
    if (getattr(type(obj), "__module__", None) or "").startswith("mixedfit"):
        return True
    code = (getattr(obj, "__code__", None) or getattr(obj, "f_code", None)
            or getattr(obj, "gi_code", None))
    return code is not None and f"{os.sep}mixedfit{os.sep}" in code.co_filename


def _cyclic_garbage_of(run) -> list:
    """Objects of mixedfit's that only the cyclic collector would have freed after run()."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds goes to gc.garbage
    try:
        run()
        gc.collect()
        return [o for o in gc.garbage if _is_mixedfits(o)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.parametrize("fit", list(FITS.values()), ids=list(FITS))
def test_a_fit_leaves_no_cyclic_garbage(fit):
    fit()  # first-use caches (parsed formulas, datasets) are filled, not garbage

    def three_fits():
        for _ in range(3):
            fit()

    assert _cyclic_garbage_of(three_fits) == []


def test_the_check_finds_a_cycle_through_a_mixedfit_object():
    def leak():
        obj = mixedfit.DataError("unused")  # an instance of a mixedfit class
        holder = [obj]
        holder.append(holder)  # a cycle that holds it

    assert len(_cyclic_garbage_of(leak)) == 1
