"""predict(re_form=...) selects random-effect terms (and columns), as lme4's predict() does.

Reference: tests/reference/lme4_predict.json, made by tests/reference/make_predict_reference.R.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import mixedfit
from _reference import REFERENCE_DIR, load_data

REF = json.loads((REFERENCE_DIR / "lme4_predict.json").read_text(encoding="utf-8"))
DATA_KIND = {"sleepstudy": "lmm", "Penicillin": "lmm", "cbpp": "glmm"}

# Predictions are sums of fixed and random effects at the optimum, so they differ as the two
# optima do. LMM: lme4's and mixedfit's optima agree to ~1e-4 in theta and ~1e-7 in beta, which
# moves a sleepstudy prediction (~300 ms) by < 1e-3: relative 2e-6 (6e-4 ms) holds with margin.
# GLMM: lme4 stops PIRLS early, so its reported cbpp optimum is off by up to 6.8e-4 in the fixed
# effects and 9.6e-4 in the modes (measured, tests/reference/README.md); a link-scale
# prediction can move by their sum, 1.6e-3: absolute 2.5e-3 on the link scale and 2.5e-3 / 4
# on the probability scale (the logistic's slope is at most 1/4).
TOLERANCE = {("lmer", "link"): dict(rtol=2e-6), ("lmer", "response"): dict(rtol=2e-6),
             ("glmer", "link"): dict(rtol=0, atol=2.5e-3),
             ("glmer", "response"): dict(rtol=0, atol=2.5e-3 / 4)}


@pytest.fixture(scope="module")
def fits():
    out = {}
    for case_id, case in REF["cases"].items():
        df = load_data(DATA_KIND[case["data"]], case["data"])
        if case["kind"] == "lmer":
            fit = mixedfit.lmer(case["formula"], df, reml=case["reml"])
        else:
            fit = mixedfit.glmer(case["formula"], df, family="binomial")
        newdata = df.iloc[np.asarray(case["newdata_rows"]) - 1]
        out[case_id] = (fit, newdata)
    return out


CASES = [(cid, k) for cid, c in REF["cases"].items() for k in range(len(c["predictions"]))]


@pytest.mark.parametrize("case_id,k", CASES, ids=[f"{c}-{REF['cases'][c]['predictions'][k]['re_form']}" for c, k in CASES])
def test_predictions_match_lme4(fits, case_id, k):
    fit, newdata = fits[case_id]
    ref = REF["cases"][case_id]["predictions"][k]
    model_kind = REF["cases"][case_id]["kind"]
    re_form = ref["re_form"]
    for kind in ("link", "response"):
        tol = TOLERANCE[model_kind, kind]
        np.testing.assert_allclose(fit.predict(re_form=re_form, type=kind),
                                   ref[f"fitted_{kind}"], **tol)
        np.testing.assert_allclose(fit.predict(newdata, re_form=re_form, type=kind),
                                   ref[f"newdata_{kind}"], **tol)


def test_intercept_term_alone_leaves_out_the_slope_term(fits):
    """The regression: (1 | Subject) selected both Subject terms, as they share the factor."""
    fit, _ = fits["sleep_uncorr"]
    intercept_only = fit.predict(re_form="~(1 | Subject)")
    everything = fit.predict()
    subject = fit.data["Subject"].to_numpy()
    days = fit.data["Days"].to_numpy()
    re = fit.ranef()["Subject"]
    pop = fit.predict(re_form="~0")
    np.testing.assert_allclose(intercept_only, pop + re["(Intercept)"].loc[subject].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(everything - intercept_only, re["Days"].loc[subject].to_numpy() * days,
                               rtol=1e-9, atol=1e-9)


def test_re_form_naming_an_absent_effect_is_refused(fits):
    fit, _ = fits["sleep_uncorr"]
    with pytest.raises(ValueError, match="no random effect .Reaction."):
        fit.predict(re_form="~(1 | Subject) + (0 + Reaction | Subject)")


def test_re_form_with_an_unknown_column_is_a_formula_error(fits):
    fit, _ = fits["sleep_uncorr"]
    with pytest.raises(mixedfit.FormulaError, match=r"re_form term '\(0\+nosuch \| Subject\)'.*nosuch"):
        fit.predict(re_form="~(0 + nosuch | Subject)")
    with pytest.raises(ValueError, match="grouping factor 'Other' is not in the model"):
        fit.predict(re_form="~(1 | Other)")
