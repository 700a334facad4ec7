"""Malformed formulas and unusable data raise mixedfit's own errors, naming what is at fault;
the caller's frame is never modified; missing values are dropped with a warning; polars works."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import polars as pl
import polars.testing
import pytest

import mixedfit
from mixedfit import DataError, FormulaError, MixedfitError, lmer

N = 40


def make_frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(8), 5)
    return pd.DataFrame(
        {
            "y": rng.normal(size=N) + rng.normal(size=8)[g],
            "x": rng.normal(size=N),
            "g": g,
            "h": rng.integers(0, 3, N),
            "s": ["a", "b"] * (N // 2),
            "w": rng.uniform(0.5, 2.0, N),
            "c": pd.Categorical(np.array(["u", "v", "z"])[rng.integers(0, 3, N)],
                                categories=["z", "v", "u", "unused"]),
        }
    )


@pytest.fixture
def df() -> pd.DataFrame:
    return make_frame()


def fit_untouched(formula, data, **kw):
    """lmer on ``data``, asserting afterwards that ``data`` (and any array arguments) are
    exactly as before the call, whether the call succeeded or raised."""
    snapshot = data.clone() if isinstance(data, pl.DataFrame) else copy.deepcopy(data)
    kw_snapshot = {k: copy.deepcopy(v) for k, v in kw.items()}
    try:
        return lmer(formula, data, **kw)
    finally:
        if isinstance(data, pd.DataFrame):
            pd.testing.assert_frame_equal(data, snapshot, check_exact=True)
        elif isinstance(data, pl.DataFrame):
            polars.testing.assert_frame_equal(data, snapshot)
        elif isinstance(data, pd.Series):
            pd.testing.assert_series_equal(data, snapshot, check_exact=True)
        elif isinstance(data, np.ndarray):
            np.testing.assert_array_equal(data, snapshot)
        else:
            assert data == snapshot
        for k, v in kw.items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(v, kw_snapshot[k])


def raises(exc, formula, data, must_name, **kw):
    """The call raises ``exc`` (a MixedfitError subclass) whose message contains every string
    in ``must_name``."""
    assert issubclass(exc, MixedfitError) and issubclass(exc, ValueError)
    with pytest.raises(exc) as info:
        fit_untouched(formula, data, **kw)
    msg = str(info.value)
    for s in must_name:
        assert s in msg, f"message {msg!r} does not name {s!r}"
    return msg


def test_error_hierarchy():
    assert issubclass(FormulaError, MixedfitError)
    assert issubclass(DataError, MixedfitError)
    assert issubclass(MixedfitError, ValueError)
    assert mixedfit.FormulaError is FormulaError and mixedfit.DataError is DataError


# ---- formulas -----------------------------------------------------------------------------

FORMULA_CASES = [
    # (id, formula, strings the message must contain)
    ("no tilde", "y x + (1 | g)", ["'~'", "y x + (1 | g)"]),
    ("two tildes", "y ~ x ~ (1 | g)", ["'~'"]),
    ("nothing on the right", "y ~ ", ["right of '~'"]),
    ("nothing on the left", " ~ x + (1 | g)", ["no response"]),
    ("unbalanced open", "y ~ x + (1 | g", ["unbalanced parentheses", "(1 | g"]),
    ("unbalanced close", "y ~ x + 1 | g)", ["unbalanced parentheses", "1 | g)"]),
    ("bar outside parentheses", "y ~ x + 1 | g", ["'|'", "1 | g"]),
    ("bar inside a function", "y ~ x + I(1 | g) + (1 | h)", ["'|'", "I(1 | g)"]),
    ("no random-effects term", "y ~ x", ["no random-effects terms", "y ~ x"]),
    ("empty group", "y ~ x + (1 | )", ["no grouping factor"]),
    ("empty group after ||", "y ~ x + (x || )", ["no grouping factor"]),
    ("empty nested part", "y ~ x + (1 | g/)", ["g/"]),
    ("nothing left of bar", "y ~ x + ( | g)", ["nothing left of '|'", "( | g)"]),
    ("group is an expression", "y ~ x + (1 | log(g))", ["log(g)"]),
    ("subtracted random term", "y ~ x - (1 | g)", ["subtract", "(1 | g)"]),
]


@pytest.mark.parametrize("formula, must_name", [c[1:] for c in FORMULA_CASES],
                         ids=[c[0] for c in FORMULA_CASES])
def test_malformed_formula(df, formula, must_name):
    raises(FormulaError, formula, df, must_name)


def test_formula_not_a_string(df):
    raises(FormulaError, 3, df, ["string", "int"])


UNKNOWN_COLUMN_CASES = [
    ("fixed part", "y ~ zz + (1 | g)", "zz"),
    ("inside a function", "y ~ log(zz) + (1 | g)", "zz"),
    ("bar term's left side", "y ~ x + (zz | g)", "zz"),
    ("left side of ||", "y ~ x + (1 + zz || g)", "zz"),
    ("grouping factor", "y ~ x + (1 | zz)", "zz"),
    ("interaction grouping factor", "y ~ x + (1 | g:zz)", "zz"),
    ("nested grouping factor", "y ~ x + (1 | zz/g)", "zz"),
    ("response", "yy ~ x + (1 | g)", "yy"),
    ("offset() term", "y ~ x + offset(zz) + (1 | g)", "zz"),
]


@pytest.mark.parametrize("formula, col", [c[1:] for c in UNKNOWN_COLUMN_CASES],
                         ids=[c[0] for c in UNKNOWN_COLUMN_CASES])
def test_unknown_column(df, formula, col):
    msg = raises(FormulaError, formula, df, [f"'{col}'"])
    assert "column" in msg or "grouping factor" in msg


def test_unknown_grouping_factor_names_the_term(df):
    raises(FormulaError, "y ~ x + (x | subject)", df, ["'subject'", "(x | subject)", "not a column"])


# ---- data ---------------------------------------------------------------------------------


def test_non_numeric_response(df):
    raises(DataError, "s ~ x + (1 | g)", df, ["response", "'s'", "numeric"])


def test_categorical_response(df):
    raises(DataError, "c ~ x + (1 | g)", df, ["response", "'c'", "numeric"])


def test_non_finite_response(df):
    d = df.assign(y=np.where(np.arange(N) == 4, np.inf, df["y"]))
    raises(DataError, "y ~ x + (1 | g)", d, ["response", "'y'", "non-finite"])


def test_grouping_factor_with_one_level(df):
    d = df.assign(one="only")
    raises(DataError, "y ~ x + (1 | one)", d, ["'one'", "1 level"])


def test_grouping_factor_with_one_level_after_dropping_unused_categories(df):
    d = df.assign(k=pd.Categorical(["p"] * N, categories=["p", "q"]))
    raises(DataError, "y ~ x + (1 | k)", d, ["'k'", "1 level"])


def test_grouping_factor_with_a_level_per_observation(df):
    d = df.assign(obs=np.arange(N))
    raises(DataError, "y ~ x + (1 | obs)", d, ["'obs'", f"{N} levels", f"{N} observations"])


def test_more_random_effects_than_observations(df):
    d = df.assign(pair=np.arange(N) // 2)    # 20 levels x 2 columns = 40 random effects = n
    raises(DataError, "y ~ x + (x | pair)", d, ["(x | pair)", "number of observations"])


def test_non_finite_grouping_factor(df):
    d = df.assign(gf=np.where(np.arange(N) == 2, np.inf, df["g"].astype(float)))
    raises(DataError, "y ~ x + (1 | gf)", d, ["'gf'", "non-finite"])


def test_empty_frame(df):
    raises(DataError, "y ~ x + (1 | g)", df.iloc[:0], ["no rows"])


def test_no_rows_left_after_dropping_missing(df):
    raises(DataError, "y ~ x + (1 | g)", df.assign(x=np.nan), ["no rows left", "missing"])


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda d: d.to_dict("list"), "dict"),
        (lambda d: d.to_dict("records"), "list"),
        (lambda d: d.select_dtypes("number").to_numpy(), "ndarray"),
        (lambda d: d["y"], "Series"),
        (lambda d: None, "NoneType"),
    ],
    ids=["dict", "list", "numpy array", "Series", "None"],
)
def test_data_that_is_not_a_frame(df, make, name):
    raises(DataError, "y ~ x + (1 | g)", make(df), ["DataFrame", name])


# ---- weights and offsets --------------------------------------------------------------------


def _with(values, at, value):
    v = np.array(values, dtype=float)
    v[at] = value
    return v


@pytest.mark.parametrize(
    "make_w, must_name",
    [
        (lambda d: -d["w"].to_numpy(), ["positive", "row 0", repr(-float(make_frame()["w"][0]))]),
        (lambda d: _with(d["w"], 7, 0.0), ["positive", "row 7", "0.0"]),
        (lambda d: _with(d["w"], 3, -2.5), ["positive", "row 3", "-2.5"]),
        (lambda d: _with(d["w"], 9, np.inf), ["finite", "row 9", "inf"]),
        (lambda d: np.ones(N - 1), ["weights", f"length {N}", f"({N - 1},)"]),
        (lambda d: np.ones((N, 1)), ["weights", f"length {N}", f"({N}, 1)"]),
        (lambda d: 2.0, ["weights", f"length {N}"]),
        (lambda d: np.array(["a"] * N), ["weights", "numeric"]),
        (lambda d: "s", ["weights", "'s'", "numeric"]),
        (lambda d: "nope", ["weights", "'nope'", "not in the data"]),
    ],
    ids=["negative", "zero", "one negative", "infinite", "too short", "2-d", "scalar",
         "strings", "string column", "unknown column"],
)
def test_bad_weights(df, make_w, must_name):
    raises(DataError, "y ~ x + (1 | g)", df, must_name, weights=make_w(df))


def test_weights_column_with_a_bad_value_names_the_row_label(df):
    d = df.assign(w=_with(df["w"], 11, -1.0))
    d.index = d.index + 100
    raises(DataError, "y ~ x + (1 | g)", d, ["row 111", "-1.0"], weights="w")


def test_nan_weights_drop_their_rows(df):
    """A missing weight makes its row incomplete: as lme4 (model.frame with na.omit), the row is
    dropped with a warning, and the fit is the fit without that row."""
    w = _with(df["w"], [2, 30], np.nan)
    with pytest.warns(UserWarning, match=r"dropped 2 row\(s\) with missing values"):
        fit = fit_untouched("y ~ x + (1 | g)", df, weights=w)
    keep = ~np.isnan(w)
    ref = lmer("y ~ x + (1 | g)", df[keep], weights=w[keep])
    assert fit.nobs == N - 2
    np.testing.assert_array_equal(fit.theta, ref.theta)
    np.testing.assert_array_equal(fit.beta, ref.beta)


@pytest.mark.parametrize(
    "make_o, must_name",
    [
        (lambda d: np.zeros(N - 1), ["offset", f"length {N}", f"({N - 1},)"]),
        (lambda d: np.zeros(N + 3), ["offset", f"length {N}", f"({N + 3},)"]),
        (lambda d: "s", ["offset", "'s'", "numeric"]),
        (lambda d: "nope", ["offset", "'nope'", "not in the data"]),
        (lambda d: _with(np.zeros(N), 5, np.inf), ["offset", "non-finite"]),
    ],
    ids=["too short", "too long", "string column", "unknown column", "infinite"],
)
def test_bad_offset(df, make_o, must_name):
    raises(DataError, "y ~ x + (1 | g)", df, must_name, offset=make_o(df))


# ---- missing values -----------------------------------------------------------------------


def test_rows_with_missing_values_are_dropped_with_a_warning(df):
    d = df.copy()
    d.loc[3, "x"] = np.nan
    d.loc[17, "y"] = np.nan
    d.loc[25, "g"] = np.nan
    with pytest.warns(UserWarning, match=r"dropped 3 row\(s\) with missing values"):
        fit = fit_untouched("y ~ x + (1 | g)", d)
    assert fit.nobs == N - 3
    ref = lmer("y ~ x + (1 | g)", d.dropna(subset=["y", "x", "g"]))
    np.testing.assert_array_equal(fit.theta, ref.theta)
    np.testing.assert_array_equal(fit.beta, ref.beta)
    assert list(fit.fitted().index) == [i for i in range(N) if i not in (3, 17, 25)]


def test_missing_values_in_unused_columns_are_ignored(df):
    d = df.assign(unused=np.nan, label=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_untouched("y ~ x + (1 | g)", d)
    assert fit.nobs == N


def test_missing_level_in_a_string_grouping_factor(df):
    d = df.assign(sg=[None] + [f"l{i}" for i in df["g"][1:]])
    with pytest.warns(UserWarning, match=r"dropped 1 row\(s\)"):
        fit = fit_untouched("y ~ x + (1 | sg)", d)
    assert fit.nobs == N - 1


# ---- the caller's frame is not modified by successful fits ----------------------------------


@pytest.mark.parametrize(
    "formula, kw",
    [
        ("y ~ x + (1 | g)", {}),
        ("y ~ x + (x | g) + (1 | h)", {}),
        ("y ~ x + s + (1 | c)", {}),
        ("y ~ x + (1 | g/h)", {}),
        ("y ~ x + (x || g)", {"weights": "w"}),
        ("y ~ x + offset(0.5 * w) + (1 | g)", {"reml": False}),
        ("log(w) ~ x + (1 | s) + (1 | g)", {"offset": "x"}),
    ],
)
def test_successful_fits_leave_the_frame_unchanged(df, formula, kw):
    fit = fit_untouched(formula, df, **kw)
    # and so do the accessors that read data
    snap = copy.deepcopy(df)
    fit.predict(df)
    fit.ranef(condvar=True)
    fit.fitted()
    fit.residuals()
    pd.testing.assert_frame_equal(df, snap, check_exact=True)


def test_frame_with_non_default_index_and_column_order_unchanged(df):
    d = df[["c", "w", "s", "h", "g", "x", "y"]].copy()
    d.index = pd.Index([f"r{i}" for i in range(N)])
    d.loc["r5", "x"] = np.nan
    with pytest.warns(UserWarning, match=r"dropped 1 row"):
        fit = fit_untouched("y ~ x + (1 | c)", d)
    assert "r5" not in fit.fitted().index


# ---- polars ---------------------------------------------------------------------------------


def _same_fit(a, b):
    """Same arrays reach the core, so the same numbers come out, bit for bit."""
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.beta, b.beta)
    assert a.sigma == b.sigma
    assert list(a.fixef.index) == list(b.fixef.index)
    for g in a.ranef():
        ra, rb = a.ranef()[g], b.ranef()[g]
        assert list(map(str, ra.index)) == list(map(str, rb.index))
        np.testing.assert_array_equal(ra.to_numpy(), rb.to_numpy())
    assert a.objective(a.theta) == b.objective(b.theta)
    np.testing.assert_array_equal(a.fitted().to_numpy(), b.fitted().to_numpy())


@pytest.mark.parametrize(
    "formula, kw",
    [
        ("y ~ x + (x | g)", {}),
        ("y ~ x + s + (1 | s2) + (1 | h)", {"weights": "w"}),
        ("y ~ x + (1 | h) + (1 | g)", {"reml": False}),
    ],
)
def test_polars_gives_the_pandas_result(df, formula, kw):
    d = df.assign(s2=[f"grp{k}" for k in df["g"]])
    pdf = pl.from_pandas(d)
    assert isinstance(pdf, pl.DataFrame)
    a = fit_untouched(formula, d, **kw)
    b = fit_untouched(formula, pdf, **kw)
    _same_fit(a, b)


def test_polars_missing_values_dropped_with_warning(df):
    pdf = pl.from_pandas(df).with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(None).otherwise(pl.col("x")).alias("x")
    )
    with pytest.warns(UserWarning, match=r"dropped 1 row\(s\)"):
        b = fit_untouched("y ~ x + (1 | g)", pdf)
    a = lmer("y ~ x + (1 | g)", df.drop(index=4))
    np.testing.assert_array_equal(a.theta, b.theta)


def test_polars_bad_input_raises_the_same_errors(df):
    pdf = pl.from_pandas(df.drop(columns=["c"]))
    raises(FormulaError, "y ~ x + (1 | zz)", pdf, ["'zz'"])
    raises(DataError, "s ~ x + (1 | g)", pdf, ["'s'", "numeric"])
    raises(DataError, "y ~ x + (1 | g)", pdf, ["row 0"], weights=-np.ones(N))
    raises(DataError, "y ~ x + (1 | g)", pdf.head(0), ["no rows"])


def test_polars_enum_keeps_its_level_order(df):
    """A polars Enum arrives as an ordered categorical: levels in the Enum's order, as a pandas
    categorical with the same categories. (A pandas categorical's category order does not
    survive polars' own from_pandas, which is why the Enum is built directly here.)"""
    order = ["z", "v", "u"]
    d = df.assign(c=pd.Categorical(df["c"].astype(str), categories=order))
    pdf = pl.from_pandas(df.drop(columns=["c"])).with_columns(
        pl.Series("c", df["c"].astype(str).tolist(), dtype=pl.Enum(order))
    )
    a = fit_untouched("y ~ x + (1 | c)", d, reml=False)
    b = fit_untouched("y ~ x + (1 | c)", pdf, reml=False)
    assert list(b.ranef()["c"].index) == order
    _same_fit(a, b)
