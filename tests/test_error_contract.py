"""The error contract: whatever goes wrong in a formula or its data ends in mixedfit's own
FormulaError / DataError naming the fault (no formulaic, numpy or pandas exception, no
terminal colour codes); and a formula cannot run Python code."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedfit
from mixedfit import DataError, FormulaError, glmer, lmer

N = 40


@pytest.fixture
def df() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(8), 5)
    return pd.DataFrame({
        "y": rng.normal(size=N) + rng.normal(size=8)[g],
        "x": rng.normal(size=N),
        "g": g,
        "i": np.arange(N),
        "k": rng.integers(0, 4, N),
        **{f"x{j}": rng.normal(size=N) for j in range(1, 7)},
    })


def raises(exc, call, *names):
    with pytest.raises(exc) as info:
        call()
    assert type(info.value) is exc, f"{type(info.value)} instead of {exc}"
    msg = str(info.value)
    assert "\x1b[" not in msg, f"terminal colour codes in {msg!r}"
    for name in names:
        assert name in msg, f"{msg!r} does not name {name!r}"
    return msg


@pytest.mark.parametrize("formula, name", [
    ("y ~ x * * x1 + (1 | g)", "x * * x1"),
    ("y ~ x + (1 | g) + ", "x +"),
    ("y ~ x + I(x +) + (1 | g)", "I(x +)"),
    ("y ~ x + offset(x +) + (1 | g)", "x +"),
    ("y + ~ x + (1 | g)", "y +"),
    ("y ~ x + :x1 + (1 | g)", ":x1"),
    ("y ~ x + {x ** 2} + (1 | g)", "{"),
    ("y ~ x[1] + (1 | g)", "["),
    ("y ~ x %o% x1 + (1 | g)", "%o%"),
    ("y ~ 'x' + (1 | g)", "'x'"),
])
def test_syntax_errors_are_formula_errors(df, formula, name):
    raises(FormulaError, lambda: lmer(formula, df), name)


def test_cbind_response_in_lmer(df):
    raises(FormulaError, lambda: lmer("cbind(k, 4 - k) ~ x + (1 | g)", df), "cbind", "glmer")


def test_cbind_of_text_is_named(df):
    d = df.assign(t=np.where(df["k"] > 1, "a", "b"))
    raises(DataError, lambda: glmer("cbind(t, 4 - k) ~ x + (1 | g)", d), "'t'", "numeric")


def test_duplicated_column_names(df):
    d = pd.concat([df, df[["x"]]], axis=1)
    raises(DataError, lambda: lmer("y ~ x + (1 | g)", d), "'x'", "more than once")
    d = pd.concat([df, df[["g"]]], axis=1)
    raises(DataError, lambda: lmer("y ~ x + (1 | g)", d), "'g'", "more than once")


def test_duplicated_unused_column_names_are_fine(df):
    d = pd.concat([df, df[["x6"]]], axis=1)
    assert lmer("y ~ x + (1 | g)", d).design.n == N


def test_non_unique_index_with_missing_values(df):
    d = df.set_axis(np.zeros(N, dtype=int)).assign(x=df["x"].where(df.index != 3).to_numpy())
    with pytest.warns(UserWarning, match="1 row"):
        fit = lmer("y ~ x + (1 | g)", d)
    assert fit.design.n == N - 1
    assert np.isfinite(fit.predict(newdata=d.iloc[:2])).all()


def test_more_fixed_effects_than_rows(df):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the rank-deficiency warning comes first
        raises(DataError, lambda: lmer("y ~ x1 * x2 * x3 * x4 * x5 * x6 + (1 | g)", df),
               "fixed-effect columns", f"{N} observations")
    raises(DataError, lambda: lmer("y ~ factor(i) + (1 | g)", df), "fixed-effect columns")
    raises(DataError, lambda: lmer("y ~ poly(x, 50) + (1 | g)", df), "poly(x, 50)", "distinct")


@pytest.mark.parametrize("dtype", ["Int64", "int64[pyarrow]", "float64[pyarrow]"])
def test_missing_value_in_an_integer_grouping_column_is_dropped(df, dtype):
    g = pd.array(np.where(np.arange(N) == 2, None, df["g"].to_numpy()).tolist(), dtype=dtype)
    with pytest.warns(UserWarning, match="1 row"):
        fit = lmer("y ~ x + (1 | g)", df.assign(g=g))
    ref = lmer("y ~ x + (1 | g)", df.drop(index=2))
    np.testing.assert_allclose(fit.beta, ref.beta, rtol=1e-8)
    assert fit.design.terms[0].nlevels == 8


def test_missing_value_in_a_nullable_integer_covariate_is_dropped(df):
    k = pd.array(np.where(np.arange(N) == 5, None, df["k"].to_numpy()).tolist(), dtype="Int64")
    with pytest.warns(UserWarning, match="1 row"):
        fit = lmer("y ~ k + (1 | g)", df.assign(k=k))
    assert fit.design.n == N - 1


def test_non_ascii_grouping_column(df):
    d = df.rename(columns={"g": "gé", "x": "âge"})
    fit = lmer("y ~ âge + (1 | gé)", d)
    assert fit.design.fixed_names == ["(Intercept)", "âge"]
    assert fit.design.terms[0].group == "gé"
    fit2 = lmer("y ~ âge + (1 | gé:k)", d)
    assert fit2.design.terms[0].group == "gé:k"


def test_unknown_function_names_the_term(df):
    raises(FormulaError, lambda: lmer("y ~ foo(x) + (1 | g)", df), "foo()")
    raises(FormulaError, lambda: lmer("y ~ x + (ns(x, 2) | g)", df), "ns()")


# ---- security: a formula cannot execute code ---------------------------------------------------

def attacks(path: str) -> list[str]:
    """Formulas that would create ``path`` if any part of them were handed to ``eval`` (the
    first two did, through the old restricted ``eval`` of offsets)."""
    touch = f"__import__('pathlib').Path({path!r}).touch()"
    code = repr(touch)
    return [
        f"y ~ x + offset(np.__builtins__['exec']({code}, np.__builtins__)) + (1 | g)",
        f"y ~ x + offset(np.__builtins__['__import__']('pathlib').Path({path!r}).touch()) + (1 | g)",
        f"y ~ x + offset(exec({code})) + (1 | g)",
        f"exec({code}) ~ x + (1 | g)",
        f"I(exec({code})) ~ x + (1 | g)",
        f"cbind(k, exec({code})) ~ x + (1 | g)",
        f"y ~ exec({code}) + (1 | g)",
        f"y ~ I(exec({code})) + (1 | g)",
        f"y ~ log(x.__class__.__mro__) + (1 | g)",
        f"y ~ C(k, levels=exec({code})) + (1 | g)",
        f"y ~ poly(x, eval({code})) + (1 | g)",
        f"y ~ x + (exec({code}) | g)",
        f"y ~ `exec`({code}) + (1 | g)",
        f"y ~ I((lambda: exec({code}))()) + (1 | g)",
        f"y ~ I([exec({code}) for _ in k]) + (1 | g)",
        f"y ~ I(getattr(np, 'exec')({code})) + (1 | g)",
        f"y ~ I(np.log.__call__(x)) + (1 | g)",
        f"y ~ I(log.__globals__) + (1 | g)",
        f"y ~ {{exec({code})}} + (1 | g)",
        f"y ~ I(10^10^10) + (1 | g)",
    ]


@pytest.mark.parametrize("k", range(len(attacks("p"))))
def test_formulas_cannot_run_code(df, tmp_path, k):
    target = tmp_path / "pwned"
    formula = attacks(str(target))[k]
    family = "poisson" if formula.startswith("cbind") else None
    with pytest.raises(FormulaError):
        if family:
            glmer(formula, df.assign(k=df["k"]), family="binomial")
        else:
            lmer(formula, df)
    assert not target.exists(), f"{formula!r} ran code"


def test_predict_does_not_evaluate_new_offsets(df, tmp_path):
    fit = lmer("y ~ x + offset(log(x1 ** 2 + 1)) + (1 | g)", df)
    new = df.iloc[:3]
    np.testing.assert_allclose(fit.predict(newdata=new), fit.fitted().iloc[:3])


def test_allowed_expressions_still_work(df):
    fit = lmer("I(y * 2) ~ np.sqrt(abs(x)) + log(x1^2 + 1) + (1 | g) + offset(-x2 / 10)", df)
    assert fit.design.fixed_names == ["(Intercept)", "sqrt(abs(x))", "log(x1^2 + 1)"]
    d = df.assign(y2=df["y"] * 2, a=np.sqrt(np.abs(df["x"])), b=np.log(df["x1"] ** 2 + 1),
                  o=-df["x2"] / 10)
    ref = lmer("y2 ~ a + b + offset(o) + (1 | g)", d)
    np.testing.assert_allclose(fit.beta, ref.beta, rtol=1e-9)
    assert mixedfit.FormulaError is FormulaError


def test_interaction_levels_that_print_alike(df):
    d = df.assign(a=np.where(df.index % 2, "a:b", "a"), c=np.where(df.index % 2, "c", "b:c"))
    raises(DataError, lambda: lmer("y ~ x + (1 | g) + (1 | a:c)", d), "'a:b:c'", "a:c")


@pytest.mark.parametrize("change, names", [
    (lambda nd: nd.drop(columns="x"), ["no column 'x'"]),
    (lambda nd: pd.concat([nd, nd[["x"]]], axis=1), ["'x'", "more than once"]),
    (lambda nd: nd.assign(x=[1.0, np.nan, 2.0]), ["missing values", "'x'"]),
    (lambda nd: nd.assign(x=["a", "b", "c"]), ["newdata"]),
])
def test_bad_newdata_is_a_data_error(df, change, names):
    fit = lmer("y ~ x + (1 | g)", df)
    raises(DataError, lambda: fit.predict(newdata=change(df.iloc[:3].copy())), *names)


def test_offset_of_text_is_named(df):
    d = df.assign(t=np.where(df["k"] > 1, "a", "b"))
    raises(DataError, lambda: lmer("y ~ x + offset(t) + (1 | g)", d), "offset", "'t'", "numeric")


def test_arithmetic_on_a_text_column_is_named(df):
    """Found by the fuzz test: pyarrow's ArrowNotImplementedError escaped."""
    d = df.assign(t=pd.Series(np.where(df["k"] > 1, "a", "b"), dtype="str"))
    raises(DataError, lambda: lmer("log(abs(t) + 1) ~ x + (1 | g)", d), "'t'", "not numeric")
    raises(DataError, lambda: lmer("y ~ x + offset(t * 2) + (1 | g)", d), "'t'")
