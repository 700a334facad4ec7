"""R expressions: translation to Python, R's printing (checked against R's ``deparse``), and
evaluation without ``eval``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mixedfit import DataError, FormulaError
from mixedfit._rexpr import deparse, evaluate, to_python

# (as typed, as R's deparse prints it) -- the right column is R 4.2's output
R_PRINTS = [
    ("I(x - 1)", "I(x - 1)"),
    ("I(-x)", "I(-x)"),
    ("log(x, 2)", "log(x, 2)"),
    ("I(x/2 + 1)", "I(x/2 + 1)"),
    ("exp(-x)", "exp(-x)"),
    ("I(x^-1)", "I(x^-1)"),
    ("I((x + 1)^2)", "I((x + 1)^2)"),
    ("I(x * (y + 1))", "I(x * (y + 1))"),
    ("I(-(x + 1))", "I(-(x + 1))"),
    ("I(x == 1 & y < 2)", "I(x == 1 & y < 2)"),
    ("I(2^x^2)", "I(2^x^2)"),
    ("I((2^x)^2)", "I((2^x)^2)"),
    ("I(x - (y - 1))", "I(x - (y - 1))"),
    ("I(x/(y * 2))", "I(x/(y * 2))"),
    ("I(x %% 2)", "I(x%%2)"),
    ("I(!x)", "I(!x)"),
    ("I(1e-3 * x)", "I(0.001 * x)"),
    ("log(x, base = 10)", "log(x, base = 10)"),
    ("I(x - -1)", "I(x - -1)"),
]


@pytest.mark.parametrize("typed, printed", R_PRINTS)
def test_deparse_prints_as_R(typed, printed):
    assert deparse(to_python(typed)) == printed


@pytest.fixture
def frame():
    return pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0.5, 1.5, 2.5, 3.5],
                         "s": ["a", "b", "a", "b"], "a.b": [1, 2, 3, 4]})


def test_evaluate_follows_R_precedence(frame):
    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    np.testing.assert_allclose(evaluate("-x^2", frame), -(x**2))
    np.testing.assert_allclose(evaluate("2^x^2", frame), 2 ** (x**2))
    np.testing.assert_array_equal(evaluate("x > 1 & y < 3", frame), (x > 1) & (y < 3))
    np.testing.assert_array_equal(evaluate("!x == 2", frame), ~(x == 2))
    np.testing.assert_allclose(evaluate("x %% 3 + x %/% 3", frame), x % 3 + x // 3)
    np.testing.assert_allclose(evaluate("log(x, 2) + `a.b`", frame), np.log2(x) + [1, 2, 3, 4])
    np.testing.assert_allclose(evaluate("a.b * 2", frame), [2, 4, 6, 8])
    np.testing.assert_array_equal(evaluate('s == "a"', frame), [True, False, True, False])


@pytest.mark.parametrize("text, exc, name", [
    ("s + 1", DataError, "'s'"),
    ("log(s)", DataError, "'s'"),
    ("zz + 1", FormulaError, "'zz'"),
    ("x.__class__", FormulaError, "x.__class__"),
    ("open('f')", FormulaError, "open()"),
    ("x[1]", FormulaError, "'['"),
    ("2^2^2^2^2", FormulaError, "too large"),
])
def test_evaluate_refuses(frame, text, exc, name):
    with pytest.raises(exc) as info:
        evaluate(text, frame)
    assert name in str(info.value)
