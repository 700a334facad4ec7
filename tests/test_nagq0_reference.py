"""nAGQ = 0 fits (``glmer(..., nagq=0)`` / ``fast=True``) against frozen lme4 1.1-31 values
(tests/reference/lme4_nagq0.json, made by tests/reference/make_nagq0_reference.R).

Two checks per model:

* at lme4's own theta, through the core: the conditional modes b = Lambda(theta) u, the fixed
  effects and the linear predictor. PIRLS is converged on both sides, so only PIRLS's
  stopping rule separates them (measured: 1.2e-9 cbpp, 1e-11 grouseticks): tolerance 1e-7
  absolute on values of order 1.
* the whole fit: ranef, coef, fixef and predict (in-sample and for new rows). The two
  optimizers stop at their own tolerances (theta within 4e-5 relative of each other), which
  moves the modes by up to 2.4e-5 (cbpp): tolerance 2e-4 absolute.

Before b was formed from the right Lambda, nAGQ = 0 fits reported b == u (cbpp: b_1 = 0.868
where lme4 has 0.557), so every one of these checks failed by ~0.3.
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from _reference import REFERENCE_DIR, load_data

import mixedfit as mf

AT_THETA_ATOL = 1e-7
FIT_ATOL = 2e-4


@lru_cache(maxsize=None)
def _reference() -> dict:
    with open(REFERENCE_DIR / "lme4_nagq0.json", encoding="utf-8") as fh:
        return json.load(fh)


MODELS = list(_reference()["models"])


@lru_cache(maxsize=None)
def _fit(model_id: str):
    ref = _reference()["models"][model_id]
    data = load_data("glmm", ref["data"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mf.glmer(ref["formula"], data, family=ref["family"], nagq=0), data, ref


def _ref_b(ref) -> np.ndarray:
    """lme4's ranef as one vector in the core's order: term by term, level by level."""
    out = []
    for group in ref["ranef"].values():
        vals = np.column_stack([group["values"][t] for t in group["terms"]])
        out.append(vals.ravel())
    return np.concatenate(out)


@pytest.mark.parametrize("model_id", MODELS)
def test_modes_at_lme4_theta(model_id):
    fit, _, ref = _fit(model_id)
    prob = fit._prob
    theta = np.asarray(ref["theta"], dtype=float)
    prob.stage1(theta, None)
    st = prob.state_at(theta)
    # The groups of the reference are in the fit's term order (both are lme4's).
    assert [t.group for t in fit.design.terms] == list(ref["ranef"])
    np.testing.assert_allclose(st["b"], _ref_b(ref), rtol=0, atol=AT_THETA_ATOL)
    beta = fit._fixed.from_scaled(st["beta"])    # the core works on scaled fixed-effect columns
    np.testing.assert_allclose(beta, list(ref["fixef"].values()), rtol=0, atol=AT_THETA_ATOL)
    np.testing.assert_allclose(st["eta"], ref["eta"], rtol=0, atol=AT_THETA_ATOL)


@pytest.mark.parametrize("model_id", MODELS)
def test_fit_matches_lme4(model_id):
    fit, data, ref = _fit(model_id)
    np.testing.assert_allclose(fit.theta, ref["theta"], rtol=5e-4)
    fe = fit.fixef
    assert list(fe.index) == list(ref["fixef"])
    np.testing.assert_allclose(fe.to_numpy(), list(ref["fixef"].values()), atol=FIT_ATOL)
    ranef, coef = fit.ranef(), fit.coef()
    for group, rr in ref["ranef"].items():
        got = ranef[group]
        assert [str(x) for x in got.index] == rr["levels"]
        for term in rr["terms"]:
            np.testing.assert_allclose(got[term].to_numpy(), rr["values"][term], atol=FIT_ATOL)
        rc = ref["coef"][group]
        for term in rc["terms"]:
            np.testing.assert_allclose(coef[group][term].to_numpy(), rc["values"][term],
                                       atol=FIT_ATOL)
    np.testing.assert_allclose(fit.predict(type="link"), ref["eta"], atol=FIT_ATOL)
    np.testing.assert_allclose(fit.predict(), ref["fitted"], atol=FIT_ATOL)
    rows = np.asarray(ref["newdata_rows_1based"]) - 1
    new = data.iloc[rows].reset_index(drop=True)
    np.testing.assert_allclose(fit.predict(new, type="link"), ref["newdata_link"], atol=FIT_ATOL)
    np.testing.assert_allclose(fit.predict(new), ref["newdata_response"], atol=FIT_ATOL)
    np.testing.assert_allclose(fit.predict(new, re_form="NA", type="link"),
                               ref["newdata_link_fixed_only"], atol=FIT_ATOL)


def test_pooling_table_partial_pooling_is_lme4_coef():
    from mixedfit import shrinkage

    fit, _, ref = _fit("cbpp")
    table = shrinkage.pooling_table(fit, "herd")
    np.testing.assert_allclose(table["partial_(Intercept)"].to_numpy(),
                               ref["coef"]["herd"]["values"]["(Intercept)"], atol=FIT_ATOL)


@pytest.mark.parametrize("model_id", MODELS)
def test_predict_in_sample_equals_predict_on_the_same_rows(model_id):
    fit, data, _ = _fit(model_id)
    np.testing.assert_allclose(fit.predict(newdata=data), fit.predict(), rtol=1e-12, atol=1e-12)
    b = np.concatenate([fit.ranef()[t.group][list(t.columns)].to_numpy().ravel()
                        for t in fit.design.terms])
    np.testing.assert_allclose(b, fit.b, rtol=0, atol=0)


def test_fast_is_nagq0():
    ref = _reference()["models"]["cbpp"]
    data = load_data("glmm", "cbpp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = mf.glmer(ref["formula"], data, family="binomial", fast=True)
    np.testing.assert_allclose(fast.b, _ref_b(ref), atol=FIT_ATOL)
