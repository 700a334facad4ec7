"""GLMM Wald p-values: printed by summary() (lme4's Pr(>|z|)) and also returned by
summary().coefficients, fit.coefficients(), tidy() and the command line's --json."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mixedfit
from mixedfit import cli
from _reference import load_data


@pytest.fixture(scope="module")
def cbpp_fit():
    return mixedfit.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
                          load_data("glmm", "cbpp"), family="binomial")


def test_coefficients_have_the_wald_p_value(cbpp_fit):
    coefs = cbpp_fit.summary().coefficients
    assert list(coefs.columns) == ["Estimate", "Std. Error", "z value", "Pr(>|z|)"]
    z = cbpp_fit.fixef.to_numpy() / np.sqrt(np.diag(cbpp_fit.vcov.to_numpy()))
    np.testing.assert_allclose(coefs["z value"], z, rtol=1e-14)
    np.testing.assert_allclose(coefs["Pr(>|z|)"], 2 * stats.norm.sf(np.abs(z)), rtol=1e-12)
    pd.testing.assert_frame_equal(coefs, cbpp_fit.coefficients())


def test_printed_p_values_are_the_returned_ones(cbpp_fit):
    text = str(cbpp_fit.summary())
    block = text.split("Fixed effects:\n", 1)[1].split("\n---", 1)[0].splitlines()[1:]
    printed = [float(re.split(r"\s+", line.strip())[4]) for line in block]
    p = cbpp_fit.coefficients()["Pr(>|z|)"].to_numpy()
    # printed to lme4's digits (3 significant here): relative 5e-3 is half a unit in the last
    np.testing.assert_allclose(printed, p, rtol=5e-3)


def test_tidy_has_p_value(cbpp_fit):
    t = cbpp_fit.tidy()
    fixed = t[t["effect"] == "fixed"]
    np.testing.assert_array_equal(fixed["p_value"], cbpp_fit.coefficients()["Pr(>|z|)"])
    assert t[t["effect"] == "ran_pars"]["p_value"].isna().all()


def test_lmm_tables_have_no_p_value():
    """lme4 prints no p-values for lmer fits (no reference distribution for t); they come
    with a df method (lmerTest's Satterthwaite by default in tidy and coef_table)."""
    fit = mixedfit.lmer("Reaction ~ Days + (1 | Subject)", load_data("lmm", "sleepstudy"))
    assert "Pr(>|z|)" not in fit.coefficients().columns
    assert fit.tidy(ddf="lme4")["p_value"].isna().all()
    assert fit.tidy()["p_value"].iloc[:2].notna().all()


def test_json_has_p_value(cbpp_fit, tmp_path, capsys):
    path = tmp_path / "cbpp.csv"
    cbpp = load_data("glmm", "cbpp")
    cbpp["period"] = "p" + cbpp["period"].astype(str)   # read back as text, not integers
    cbpp.to_csv(path, index=False)
    code = cli.main(["fit", str(path), "--formula", cbpp_fit.formula, "--family", "binomial",
                     "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    first = out["fixef"][0]
    assert set(first) == {"term", "estimate", "std_error", "z_value", "p_value"}
    # same model and rows; only the period labels differ
    np.testing.assert_allclose([r["p_value"] for r in out["fixef"]],
                               cbpp_fit.coefficients()["Pr(>|z|)"], rtol=1e-6)
