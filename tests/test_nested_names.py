"""Three-level nesting (1 | a/b/c): lme4 names the innermost factor c:(b:a); VarCorr, ranef and
lmerTest's ranova use that name, and the name written back in a formula fits the same model.
Reference: tests/reference/make_nested_reference.R -> lmertest_nested.json."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import mixedfit
from _reference import REFERENCE_DIR

REF = json.loads((REFERENCE_DIR / "lmertest_nested.json").read_text())
# lme4 stops its optimizer at ~1e-6 relative in theta; the REML criterion at both optima
# agrees to well below 1e-8 relative.
THETA_TOL = 2e-5


@pytest.fixture(scope="module")
def data():
    d = pd.read_csv(REFERENCE_DIR / "data" / "nested3.csv")
    for v in "abc":
        d[v] = pd.Categorical(d[v].astype(str), categories=[str(k) for k in sorted(d[v].unique())])
    return d


@pytest.fixture(scope="module")
def fit(data):
    return mixedfit.lmer(REF["formula"], data)


def test_names_follow_lme4(fit):
    assert list(fit.varcorr.to_frame()["grp"]) == REF["varcorr_groups"]
    assert list(fit.ranef()) == REF["ranef_names"]


def test_estimates_match_lme4(fit):
    np.testing.assert_allclose(fit.theta, REF["theta"], rtol=0, atol=THETA_TOL)
    np.testing.assert_allclose(fit.reml_criterion, REF["reml_criterion"], rtol=1e-9)


def test_ranova_rows_and_tests_match_lmertest(fit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = mixedfit.ranova(fit)
    want = REF["ranova"]
    assert list(table.index) == want["rows"]
    np.testing.assert_allclose(table["logLik"], want["logLik"], rtol=1e-8)
    np.testing.assert_allclose(table["LRT"].to_numpy()[1:], want["LRT"][1:], rtol=1e-6)
    assert table.attrs["heading"].endswith(want["heading"][2])


def test_written_name_fits_the_same_model(fit, data):
    spelled = mixedfit.lmer("y ~ 1 + (1 | c:(b:a)) + (1 | b:a) + (1 | a)", data)
    np.testing.assert_allclose(spelled.theta, fit.theta, rtol=1e-10)
    assert list(spelled.ranef()) == REF["ranef_names"]
