"""Fuzzing the formula parser and the data checks: random recombinations of formula tokens
over random frames must end in a fit or in mixedfit's FormulaError / DataError, and never
modify the caller's frame.

The default tier runs a few dozen examples; ``pytest -m slow`` runs thousands.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mixedfit
from mixedfit import ConvergenceError, DataError, FormulaError, NumericalError

COLUMNS = ["y", "x", "z", "g", "h", "s", "b", "k", "gé", "a.b"]
NAMES = COLUMNS + ["zz", "Intercept", "np", "exec", "__import__", "__builtins__", "T"]
FUNCTIONS = ["I", "log", "exp", "sqrt", "factor", "as.numeric", "poly", "scale", "center",
             "offset", "cbind", "C", "bs", "np.log", "ns", "exec", "eval", "getattr", "lambda",
             "np.__builtins__", "x.__class__", "abs", "round"]
OPERATORS = ["+", "-", "*", "/", ":", "^", "**", "%in%", "%%", "|", "||", "~", "(", ")", ",",
             "[", "]", "{", "}", "$", "==", ">", "!", "=", "'", '"', "`", ".", ";", "\\", " "]
NUMBERS = ["0", "1", "2", "-1", "0.5", "1e308", "3L", "10**10", "1e-320"]

token = st.one_of(st.sampled_from(NAMES), st.sampled_from(OPERATORS),
                  st.sampled_from(NUMBERS), st.sampled_from([f + "(" for f in FUNCTIONS]))


VALID_FUNCTIONS = ["I", "log", "exp", "sqrt", "factor", "as.numeric", "poly", "scale",
                   "center", "C", "bs", "np.log", "abs"]


@st.composite
def expression(draw, depth=0):
    """A plausible R expression: mostly valid, sometimes hostile or broken."""
    kind = draw(st.sampled_from([0, 0, 0, 1, 2, 2, 2, 3, 3, 4, 5] if depth < 2 else [0, 0, 1]))
    if kind == 0:
        return draw(st.sampled_from(COLUMNS[:8] if draw(st.integers(0, 5)) else NAMES))
    if kind == 1:
        return draw(st.sampled_from(NUMBERS))
    if kind == 2:
        f = draw(st.sampled_from(VALID_FUNCTIONS if draw(st.integers(0, 4)) else FUNCTIONS))
        args = draw(st.lists(expression(depth + 1), min_size=1, max_size=2))
        return f"{f}({', '.join(args)})"
    if kind == 3:
        op = draw(st.sampled_from(["+", "-", "*", "/", ":", "^", "%in%", "|", "||"]))
        return f"{draw(expression(depth + 1))} {op} {draw(expression(depth + 1))}"
    if kind == 4:
        return f"({draw(expression(depth + 1))})"
    return "".join(draw(st.lists(token, min_size=1, max_size=6)))


@st.composite
def sane_formula(draw):
    """A formula that should usually fit, so that the data checks and fits get exercised."""
    term = st.sampled_from(["x", "z", "k", "s", "b", "a.b", "I(x^2)", "log(abs(x) + 1)",
                            "factor(k)", "poly(x, 2)", "scale(z)", "x:s", "x*z", "as.numeric(s)",
                            "offset(x)", "0", "-1", "exp(z/10)", "C(s)", "factor(h)"])
    fixed = draw(st.lists(term, min_size=0, max_size=3))
    lhs = draw(st.sampled_from(["1", "1", "x", "0 + x", "z || g", "1 | h"]))
    grp = draw(st.sampled_from(["g", "g", "h", "gé", "g:h", "g/h", "s"]))
    resp = draw(st.sampled_from(["y", "y", "y", "log(abs(y) + 1)", "b", "cbind(k, 3 - k)"]))
    bar = f"({lhs} | {grp})" if "|" not in lhs else f"({lhs})"
    return f"{resp} ~ {' + '.join([*fixed, bar])}"


@st.composite
def formula(draw):
    if draw(st.booleans()):
        return draw(sane_formula())
    if draw(st.integers(0, 9)) == 0:  # pure token soup
        return "".join(draw(st.lists(token, min_size=0, max_size=14)))
    response = draw(st.sampled_from(["y", "y", "y", "b", "cbind(k, 3 - k)"])
                    if draw(st.integers(0, 4)) else expression())
    fixed = draw(st.lists(expression(), min_size=0, max_size=3))
    group = st.sampled_from(["g", "g", "h", "gé", "g:h", "g/h", "s"])
    lhs = st.sampled_from(["1", "1", "x", "0 + x", "1 + z", "s"])
    bars = draw(st.lists(
        st.tuples(st.one_of(lhs, expression()) if draw(st.booleans()) else lhs,
                  st.sampled_from(["|", "|", "||"]),
                  group if draw(st.integers(0, 5)) else st.one_of(group, expression())),
        min_size=0 if draw(st.integers(0, 9)) == 0 else 1, max_size=2))
    rhs = [*fixed, *(f"({lhs} {bar} {grp})" for lhs, bar, grp in bars)]
    return f"{response} ~ {' + '.join(rhs)}"


def _column(draw, name: str, n: int, rng: np.random.Generator):
    kind = draw(st.sampled_from(["float"] * 6 + ["int", "Int64", "str", "cat", "ordered",
                                                  "bool", "const", "nan", "inf", "arrow"]))
    levels = draw(st.integers(1, 5))
    codes = rng.integers(0, levels, n)
    if kind == "float":
        return rng.normal(size=n) * draw(st.sampled_from([1.0, 1e-8, 1e8]))
    if kind == "int":
        return codes
    if kind == "Int64":
        return pd.array(np.where(rng.random(n) < 0.1, None, codes), dtype="Int64")
    if kind in ("str", "cat", "ordered"):
        labels = np.array(list("abcde"))[codes]
        if kind == "str":
            return labels
        return pd.Categorical(labels, ordered=kind == "ordered")
    if kind == "bool":
        return codes % 2 == 0
    if kind == "const":
        return np.ones(n)
    if kind == "nan":
        return np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n))
    if kind == "inf":
        return np.where(rng.random(n) < 0.1, np.inf, rng.normal(size=n))
    return pd.array(np.where(rng.random(n) < 0.1, None, codes), dtype="int64[pyarrow]")


@st.composite
def frame(draw):
    n = draw(st.sampled_from([0, 1, 3, 12] + [40] * 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    cols = {c: _column(draw, c, n, rng) for c in COLUMNS}
    cols["y"] = rng.normal(size=n) if draw(st.integers(0, 3)) else cols["y"]
    for g, levels in (("g", 4), ("h", 3)):
        if draw(st.integers(0, 3)):
            cols[g] = rng.permutation(np.arange(n) % levels)
    df = pd.DataFrame(cols)
    if draw(st.integers(0, 9)) == 0:
        df.columns = [*df.columns[:-1], "x"]  # a duplicated column name
    if draw(st.integers(0, 9)) == 0:
        df.index = np.zeros(n, dtype=int)  # a non-unique index
    return df


# Bad formulas and data must end in FormulaError / DataError. Random data can also be
# numerically hopeless (a 1e8-scaled slope, 3 rows of a Poisson GLMM): mixedfit's numerical
# failures are NumericalError / ConvergenceError, the other documented outcome. Anything
# else (a plain ValueError, KeyError, LinAlgError, SyntaxError, ...) fails the test.
ALLOWED = (FormulaError, DataError, NumericalError, ConvergenceError)


def check_outcome(f: str, df: pd.DataFrame, family: str | None):
    before = copy.deepcopy(df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = (mixedfit.lmer(f, df) if family is None
                   else mixedfit.glmer(f, df, family=family))
        except ALLOWED as exc:
            assert "\x1b[" not in str(exc), f"terminal colour codes in {exc!r}"
            assert type(exc).__module__.startswith("mixedfit"), f"{type(exc)} is not mixedfit's"
            fit = None
        if fit is not None:
            str(fit)
            str(fit.summary())
    pd.testing.assert_frame_equal(df, before)


def _run(f, df, family):
    try:
        check_outcome(f, df, family)
    except AssertionError:
        raise
    except Exception as exc:  # anything else escaping is the bug this test looks for
        raise AssertionError(f"{type(exc).__name__} escaped for {f!r}: {exc}") from exc


FAMILY = st.sampled_from([None, None, None, "binomial", "poisson"])
_SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck))


@settings(max_examples=15, derandomize=True, **_SETTINGS)
@given(formula(), frame(), FAMILY)
def test_fuzz_quick(f, df, family):
    _run(f, df, family)


@pytest.mark.slow
@settings(max_examples=5000, **_SETTINGS)
@given(formula(), frame(), FAMILY)
def test_fuzz_many(f, df, family):
    _run(f, df, family)
