"""The lean fit path: result tables built on first use, one closure per BOBYQA evaluation,
one QR of X per fit, numeric columns converted without copies of the caller's memory."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pandas as pd
import pytest

import mixedfit as mf
from mixedfit._design import build_design
from mixedfit._errors import NumericalError
from mixedfit._rexpr import float_values
from mixedfit._standardize import fixed_scaling
from mixedfit.options import Control
from mixedfit.optimize import bobyqa


def _frame(n=120, seed=2):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 12, n)
    x = rng.standard_normal(n)
    y = 1 + 0.5 * x + rng.standard_normal(12)[g] + rng.standard_normal(n)
    return pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g.astype(str)),
                         "b": (rng.random(n) < 1 / (1 + np.exp(-y))).astype(int)})


@pytest.mark.parametrize("kind", ["lmer", "glmer"])
def test_tables_are_built_on_first_use_and_kept(kind):
    df = _frame()
    fit = mf.lmer("y ~ x + (1 | g)", df) if kind == "lmer" else \
        mf.glmer("b ~ x + (1 | g)", df, family="binomial")
    assert "vcov" not in fit.__dict__ and "varcorr" not in fit.__dict__
    if kind == "lmer":
        assert "_eta" not in fit.__dict__
        t = fit.design.terms[0]
        by_hand = fit.design.X @ fit.beta + np.einsum(
            "ij,ij->i", t.Z, fit.b.reshape(t.nlevels, t.p)[t.codes])
        np.testing.assert_allclose(fit.fitted().to_numpy(), by_hand, rtol=1e-12, atol=1e-12)
    V = fit.vcov
    assert fit.vcov is V  # cached
    assert list(V.index) == list(V.columns) == ["(Intercept)", "x"]
    np.testing.assert_allclose(V.to_numpy(), V.to_numpy().T)
    assert fit.varcorr is fit.varcorr
    for again in (pickle.loads(pickle.dumps(fit)), copy.deepcopy(fit)):
        np.testing.assert_array_equal(again.vcov.to_numpy(), V.to_numpy())
        assert again.varcorr.to_frame().equals(fit.varcorr.to_frame())


def test_glmer_vcov_is_the_hessians_and_the_factors_stays_available():
    fit = mf.glmer("b ~ x + (1 | g)", _frame(), family="binomial")
    assert fit.vcov_hessian is not None
    np.testing.assert_array_equal(fit.vcov.to_numpy(), fit.vcov_hessian.to_numpy())
    assert fit.vcov_factor.shape == (2, 2)
    factor = mf.glmer("b ~ x + (1 | g)", _frame(), family="binomial", vcov_method="factor")
    assert factor.vcov_hessian is None
    np.testing.assert_array_equal(factor.vcov.to_numpy(), factor.vcov_factor.to_numpy())


def test_bobyqa_calls_the_function_once_per_evaluation_and_maps_failures_to_inf():
    calls = []

    def fun(x, shift):
        calls.append(x.copy())
        if x[0] > 2.5:
            raise NumericalError("not here")
        if x[0] < -2.5:
            return float("nan")
        return float((x[0] - 1.0) ** 2 + (x[1] - shift) ** 2)

    opt = bobyqa(fun, np.array([0.0, 0.0]), np.array([-np.inf, -np.inf]), Control(),
                 args=(0.5,), failures=(NumericalError,))
    assert opt.converged
    np.testing.assert_allclose(opt.x, [1.0, 0.5], atol=1e-5)
    assert opt.nevals == len(calls)
    with pytest.raises(ZeroDivisionError):  # anything else is not a failure to hide
        bobyqa(lambda x: 1 / 0, np.zeros(1), np.zeros(1), Control())


def test_x_is_factored_once_and_only_for_the_same_array():
    d = build_design("y ~ x + (1 | g)", _frame())
    stored = d.x_qr
    assert stored is not None and stored[0] is d.X
    fresh = fixed_scaling(d.X)
    np.testing.assert_array_equal(stored[1], fresh.Xs)
    np.testing.assert_array_equal(stored[2], fresh.T)
    # another array with the same values gets nothing; the same array gets it once
    assert d.take_x_qr(d.X.copy()) is None and d.x_qr is None
    d2 = build_design("y ~ x + (1 | g)", _frame())
    assert d2.take_x_qr(d2.X) is not None and d2.take_x_qr(d2.X) is None
    # weights change the scaling: the unweighted one is not reused for them
    w = np.linspace(0.5, 2.0, d2.n)
    unweighted = fixed_scaling(d2.X)
    weighted = fixed_scaling(d2.X, w, qr=(unweighted.Xs, unweighted.T))
    np.testing.assert_allclose(weighted.Xs.T @ (w[:, None] * weighted.Xs), d2.n * np.eye(d2.p),
                               atol=1e-9)
    np.testing.assert_allclose(weighted.Xs @ weighted.T, d2.X, atol=1e-12)


def test_rank_deficient_x_is_refactored_after_dropping_columns():
    df = _frame().assign(x2=lambda d: 2 * d["x"])
    with pytest.warns(UserWarning, match="rank deficient"):
        d = build_design("y ~ x + x2 + (1 | g)", df)
    assert d.x_qr is None and d.fixed_names == ["(Intercept)", "x"]


def test_float_values_copy_numpy_columns_and_map_pandas_missing_to_nan():
    df = pd.DataFrame({"a": np.arange(4.0), "i": np.arange(4),
                       "n": pd.array([1, None, 3, 4], dtype="Int64")})
    a = float_values(df["a"])
    a[0] = 99.0
    assert df["a"].iloc[0] == 0.0
    assert float_values(df["i"]).dtype == np.float64
    np.testing.assert_array_equal(float_values(df["n"]), [1.0, np.nan, 3.0, 4.0])


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64])
@pytest.mark.parametrize("spread", [3, 120, 10**6])
def test_integer_grouping_codes_are_pandas_sorted_factorization(dtype, spread):
    from mixedfit._design import _integer_codes

    rng = np.random.default_rng(spread)
    info = np.iinfo(dtype)
    lo = max(int(info.min), -spread)
    hi = min(int(info.max), spread)
    values = rng.integers(lo, hi, 500, endpoint=True).astype(dtype)
    values[:2] = [lo, hi]  # the ends of the type's range (wrap-around if mishandled)
    codes, levels = _integer_codes(values)
    want_codes, want_levels = pd.factorize(values, sort=True)
    np.testing.assert_array_equal(codes, want_codes)
    assert levels.equals(pd.Index(want_levels)) and levels.dtype == values.dtype
