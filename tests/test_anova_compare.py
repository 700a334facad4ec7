"""anova(fit1, fit2, ...): lme4's likelihood-ratio table, and refusals of meaningless comparisons.

Reference: tests/reference/lme4_anova.json, made by tests/reference/make_anova_reference.R.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import mixedfit
from _reference import REFERENCE_DIR, load_data

REF = json.loads((REFERENCE_DIR / "lme4_anova.json").read_text(encoding="utf-8"))
# Criteria at the optimum agree to 1e-6 relative (CRITERION_RTOL of the reference tests); a
# Chisq is a difference of two deviances (~1800 each), so its absolute error is ~2e-3 at most
# and the p-value moves by (its log-derivative) x that; 1e-4 relative on Chisq and p holds.
CRITERION_RTOL = 1e-6
CHISQ_RTOL = 1e-4


@pytest.fixture(scope="module")
def sleepstudy():
    return load_data("lmm", "sleepstudy")


def _fits(table_ref, sleepstudy, reml_flags):
    return [mixedfit.lmer(f, sleepstudy, reml=r, data_name="sleepstudy")
            for f, r in zip(table_ref["formulas"], reml_flags)]


@pytest.mark.parametrize("table_id,reml_flags", [("reml_pair", [True, True]),
                                                  ("ml_three", [True, False, False])])
def test_table_matches_lme4(sleepstudy, table_id, reml_flags):
    ref = REF["tables"][table_id]
    fits = _fits(ref, sleepstudy, reml_flags)
    with pytest.warns(UserWarning, match=r"refitting model\(s\) with ML \(instead of REML\)"):
        table = mixedfit.anova(*fits)
    assert ref["messages"] == ["refitting model(s) with ML (instead of REML)"]
    order = [i - 1 for i in ref["row_order"]]
    assert list(table.index) == [ref["formulas"][i] for i in order]
    cols = ref["columns"]
    assert list(table.columns) == list(cols)
    np.testing.assert_array_equal(table["npar"], cols["npar"])
    for c in ("AIC", "BIC", "logLik", "deviance"):
        np.testing.assert_allclose(table[c], cols[c], rtol=CRITERION_RTOL)
    assert np.isnan(table.iloc[0]["Chisq"]) and cols["Chisq"][0] is None
    np.testing.assert_allclose(table["Chisq"].iloc[1:], cols["Chisq"][1:], rtol=CHISQ_RTOL)
    np.testing.assert_array_equal(table["Df"].iloc[1:], cols["Df"][1:])
    np.testing.assert_allclose(table["Pr(>Chisq)"].iloc[1:], cols["Pr(>Chisq)"][1:], rtol=CHISQ_RTOL)
    # lme4's heading, with the formulas as the models' names
    heading = [line.split(": ", 1)[1] if ": " in line and not line.startswith("Data") else line
               for line in ref["heading"]]
    assert table.attrs["heading"] == heading


def test_names_label_the_rows(sleepstudy):
    ref = REF["tables"]["reml_pair"]
    fits = _fits(ref, sleepstudy, [False, False])
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # ML fits: no refitting note
        table = mixedfit.anova(*fits, names=["fm1", "fm2"])
    assert list(table.index) == ["fm1", "fm2"]
    assert table.attrs["heading"] == ref["heading"]


def test_different_responses_are_refused(sleepstudy):
    a = mixedfit.lmer("Reaction ~ Days + (1 | Subject)", sleepstudy, reml=False)
    b = mixedfit.lmer("log(Reaction) ~ Days + (1 | Subject)", sleepstudy, reml=False)
    with pytest.raises(mixedfit.DataError, match=r"different responses \('Reaction' vs 'log\(Reaction\)'"):
        mixedfit.anova(a, b)


def test_different_data_are_refused(sleepstudy):
    shuffled = sleepstudy.copy()
    shuffled["Reaction"] = shuffled["Reaction"].to_numpy()[::-1]
    a = mixedfit.lmer("Reaction ~ Days + (1 | Subject)", sleepstudy, reml=False)
    b = mixedfit.lmer("Reaction ~ Days + (Days | Subject)", shuffled, reml=False)
    with pytest.raises(mixedfit.DataError, match="different data.*'Reaction' has different values"):
        mixedfit.anova(a, b)
    other_days = sleepstudy.assign(Days=sleepstudy["Days"] * 2.0)
    c = mixedfit.lmer("Reaction ~ Days + (Days | Subject)", other_days, reml=False)
    with pytest.raises(mixedfit.DataError, match="column 'Days' has different values"):
        mixedfit.anova(a, c)
    # an equal copy of the same data is the same data
    d = mixedfit.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy.copy(), reml=False)
    assert mixedfit.anova(a, d)["Chisq"].iloc[1] > 0


def test_different_rows_are_refused(sleepstudy):
    a = mixedfit.lmer("Reaction ~ Days + (1 | Subject)", sleepstudy, reml=False)
    b = mixedfit.lmer("Reaction ~ Days + (1 | Subject)", sleepstudy.iloc[:170], reml=False)
    with pytest.raises(mixedfit.DataError, match="same size of dataset.*180 vs 170"):
        mixedfit.anova(a, b)


def test_lmer_and_glmer_are_refused():
    cbpp = load_data("glmm", "cbpp")
    cbpp = cbpp.assign(prop=cbpp["incidence"] / cbpp["size"])
    g = mixedfit.glmer("prop ~ period + (1 | herd)", cbpp, family="binomial", weights="size")
    lm = mixedfit.lmer("prop ~ period + (1 | herd)", cbpp, reml=False)
    with pytest.raises(mixedfit.DataError, match=r"cannot compare a glmer \(binomial\) fit with a lmer fit"):
        mixedfit.anova(g, lm)


def test_one_fit_is_not_a_comparison(sleepstudy):
    from mixedfit.anova import compare_fits

    a = mixedfit.lmer("Reaction ~ Days + (1 | Subject)", sleepstudy, reml=False)
    with pytest.raises(ValueError, match="at least two"):
        compare_fits(a)
    assert list(mixedfit.anova(a).columns)[-1] == "Pr(>F)"     # one fit: lmerTest's F tests


@pytest.mark.parametrize("table_id,reml_flags,names", [
    ("reml_pair", [True, True], ["fm1", "fm2"]),
    ("ml_three", [True, False, False], ["fm2", "fm1_ml", "fm0_ml"]),
])
def test_printed_as_lme4_prints_it(sleepstudy, table_id, reml_flags, names):
    """Character for character: the criteria agree with lme4's to 1e-6 relative, far below
    the printed digits (5 significant)."""
    ref = REF["tables"][table_id]
    fits = _fits(ref, sleepstudy, reml_flags)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = mixedfit.anova(*fits, names=names)
    assert str(table) == ref["printed"]
    assert type(table.iloc[:1]).__name__ == "DataFrame"      # slices are plain frames
