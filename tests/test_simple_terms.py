"""The direct design path for simple formulas builds exactly what formulaic's path builds.

Random frames (numeric, integer, categorical, string and logical columns, missing values,
unused categories) and random simple formulas (main effects, ``a:b``, ``a*b``, with and
without intercept, bar terms over plain and interacted/nested grouping factors) go through
``build_design`` twice: as it runs, and with the direct path switched off. Everything the
fit and ``predict`` use must be identical.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mixedfit as mf
from mixedfit import _design
from mixedfit._design import build_design
from mixedfit._errors import MixedfitError
from mixedfit._formula import parse_formula
from mixedfit._simple_terms import simple_model_matrices
from mixedfit._terms import newdata_matrix

NUMERIC = ["x", "z", "k"]
FACTORS = ["f", "s", "b", "c"]
ATOMS = NUMERIC + FACTORS


def _frame(seed: int, n: int, missing: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cats = ["lo", "mid", "hi", "zz"]
    df = pd.DataFrame({
        "y": rng.standard_normal(n),
        "x": rng.standard_normal(n),
        "z": rng.uniform(-2, 5, n).round(2),
        "k": rng.integers(-3, 4, n),
        # a categorical with a category no row has, in a non-alphabetical order
        "f": pd.Categorical(rng.choice(cats[:3], n), categories=cats[::-1]),
        "s": pd.Series(rng.choice(["b", "a", "C", "a b", "x:y"], n), dtype="str"),
        "b": rng.random(n) < 0.4,
        "c": pd.Series(rng.choice(["p", "q", "(r"], n), dtype=object),
        "g": pd.Categorical(rng.choice([f"g{i}" for i in range(6)], n)),
        "h": rng.choice(["u", "v", "w"], n),
    })
    if missing:
        df.loc[rng.random(n) < 0.1, "x"] = np.nan
        f = df["f"].copy()
        f[rng.random(n) < 0.1] = np.nan
        df["f"] = f
    return df


def _term(draw) -> str:
    kind = draw(st.sampled_from(["atom", ":", "*"]))
    if kind == "atom":
        return draw(st.sampled_from(ATOMS))
    a, b = draw(st.lists(st.sampled_from(ATOMS), min_size=2, max_size=2, unique=True))
    return f"{a}{kind}{b}"


@st.composite
def formulas(draw) -> str:
    terms = [_term(draw) for _ in range(draw(st.integers(0, 3)))]
    intercept = draw(st.sampled_from(["", "0 + ", "1 + ", "-1 + "])) if terms else "1 + "
    fixed = intercept + (" + ".join(terms) if terms else "")
    fixed = fixed.rstrip(" +") or "1"
    bars = []
    for _ in range(draw(st.integers(1, 2))):
        lhs = draw(st.sampled_from(["1", "x", "0 + x", "x + z", "c", "0 + c", "k:c"]))
        group = draw(st.sampled_from(["g", "h", "g:h", "g/h"]))
        bars.append(f"({lhs} | {group})")
    return f"y ~ {fixed} + {' + '.join(bars)}"


def _both(formula: str, df: pd.DataFrame, monkeypatch):
    """build_design's result (or error) on the direct path and on formulaic's."""
    out = []
    for direct in (True, False):
        with monkeypatch.context() as m:
            if not direct:
                m.setattr(_design, "simple_model_matrices", lambda *a, **k: None)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    d = build_design(formula, df, lmm=True)
                except MixedfitError as exc:
                    d = exc
            out.append((d, [str(w.message) for w in caught]))
    return out


def _assert_same_design(fast, slow, df: pd.DataFrame) -> None:
    np.testing.assert_array_equal(fast.X, slow.X)
    assert fast.X.flags.f_contiguous
    assert fast.fixed_names == slow.fixed_names
    assert fast.dropped_fixed == slow.dropped_fixed
    np.testing.assert_array_equal(fast.keep_fixed, slow.keep_fixed)
    assert fast.n_dropped_na == slow.n_dropped_na
    assert fast.index.equals(slow.index)
    np.testing.assert_array_equal(fast.y, slow.y)
    assert len(fast.terms) == len(slow.terms)
    assert fast.term_order == slow.term_order
    for a, b in zip(fast.terms, slow.terms):
        assert (a.group, a.columns, a.lhs, a.group_cols) == (b.group, b.columns, b.lhs, b.group_cols)
        assert a.levels.equals(b.levels)
        np.testing.assert_array_equal(a.codes, b.codes)
        np.testing.assert_array_equal(a.Z, b.Z)
        assert a.Z.flags.f_contiguous
    # the specs predict(newdata) evaluates: built lazily on the direct path, the same columns
    assert fast.fixed_spec.column_names == slow.fixed_spec.column_names
    for a, b in zip(fast.term_specs, slow.term_specs):
        assert a.column_names == b.column_names
    new = df.dropna().head(7)
    np.testing.assert_array_equal(newdata_matrix(fast.fixed_spec, new, "f"),
                                  newdata_matrix(slow.fixed_spec, new, "f"))


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(formula=formulas(), seed=st.integers(0, 2**16), n=st.integers(40, 120),
       missing=st.booleans())
def test_direct_design_equals_formulaic(formula, seed, n, missing, monkeypatch):
    _check(formula, seed, n, missing, monkeypatch)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(formula=formulas(), seed=st.integers(0, 2**16), n=st.integers(12, 200),
       missing=st.booleans())
def test_direct_design_equals_formulaic_many(formula, seed, n, missing, monkeypatch):
    _check(formula, seed, n, missing, monkeypatch)


def _check(formula, seed, n, missing, monkeypatch):
    df = _frame(seed, n, missing)
    (fast, fast_warn), (slow, slow_warn) = _both(formula, df, monkeypatch)
    assert fast_warn == slow_warn
    if isinstance(slow, Exception):
        assert type(fast) is type(slow) and str(fast) == str(slow)
        return
    assert not isinstance(fast, Exception), fast
    assert fast.specs is None, "the direct path was not taken"
    _assert_same_design(fast, slow, df)


@pytest.mark.parametrize("formula", [
    "y ~ log(z + 10) + (1 | g)",           # a function call
    "y ~ I(x^2) + (1 | g)",                # I()
    "y ~ x + offset(z) + (1 | g)",         # an offset in the formula
    "y ~ poly(x, 2) + (1 | g)",            # a stateful transform
    "y ~ x + (log(z + 10) | g)",           # a call in a bar term
    "y ~ o + (1 | g)",                     # an ordered factor (polynomial contrasts)
    "y ~ fi + (1 | g)",                    # a categorical with integer categories
])
def test_other_formulas_take_formulaics_path(formula):
    df = _frame(3, 60, False)
    df["o"] = pd.Categorical(df["s"], categories=["c", "a", "b"], ordered=True)
    df["fi"] = pd.Categorical(df["k"])
    assert simple_model_matrices(parse_formula(formula), df, len(df), frozenset({"o"})) is None
    d = build_design(formula, df, lmm=True)
    assert d.specs is not None


def test_fit_does_not_know_its_path_and_predicts(monkeypatch):
    df = _frame(11, 150, True)
    formula = "y ~ x * s + b + (x | g) + (1 | g:h)"
    fast = mf.lmer(formula, df)
    with monkeypatch.context() as m:
        m.setattr(_design, "simple_model_matrices", lambda *a, **k: None)
        slow = mf.lmer(formula, df)
    assert type(fast) is type(slow) and type(fast.design) is type(slow.design)
    np.testing.assert_array_equal(fast.theta, slow.theta)
    np.testing.assert_array_equal(fast.beta, slow.beta)
    new = df.dropna().head(20)
    np.testing.assert_array_equal(fast.predict(new), slow.predict(new))
    unseen = new.assign(g=pd.Categorical(["new"] * len(new)))
    with pytest.raises(mf.DataError, match="new level"):
        fast.predict(unseen)
    pop = fast.predict(unseen, allow_new_levels=True)
    np.testing.assert_array_equal(pop, slow.predict(unseen, allow_new_levels=True))
    bad = new.assign(s=pd.Series(["nope"] * len(new), dtype="str", index=new.index))
    with pytest.raises(mf.DataError, match="nope"):
        fast.predict(bad)


def test_specs_built_later_do_not_see_the_callers_later_changes():
    df = _frame(5, 90, False)
    fit = mf.lmer("y ~ x + f + (1 | g)", df)
    assert fit.design.specs is None
    new = df.head(10).copy()
    expected = mf.lmer("y ~ x + f + (1 | g)", df.copy()).predict(new)
    df["f"] = pd.Categorical(["lo"] * len(df))  # the caller reuses its frame after the fit
    np.testing.assert_array_equal(fit.predict(new), expected)


@pytest.mark.parametrize("formula", [
    "y ~ x + f + (1 | g)", "y ~ 0 + f + (1 | g)", "y ~ x:s + (1 | g)", "y ~ b + x + (1 | g)",
    "y ~ 0 + b:x + (c | g)", "y ~ x + (0 + s | g)",
])
def test_factors_with_a_single_level_left(formula, monkeypatch):
    """Factors that keep one level on the rows used (a category, a string, a logical)."""
    df = _frame(8, 60, False).assign(
        f=pd.Categorical(["mid"] * 60, categories=["hi", "mid"]),
        s=pd.Series(["k"] * 60, dtype="str"), b=True)
    (fast, fast_warn), (slow, slow_warn) = _both(formula, df, monkeypatch)
    assert fast_warn == slow_warn
    assert fast.specs is None
    _assert_same_design(fast, slow, df)
