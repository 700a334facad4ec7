"""Printing is a pure function of the result, in lme4's layout.

Three checks:
- layout: for every lme4 reference model, our summary() and print() have lme4's lines in
  lme4's order once numbers are masked (the text R printed is stored in the reference JSON);
- exact: where our estimates agree with lme4's to the printed digits, the text is identical;
- golden: our own output for every reference model is frozen in tests/golden/ (regenerate with
  ``python tests/golden/regen.py`` after an intended change, and review the diff).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from _reference import get_fit, model_ids, model_ref
from mixedfit._rformat import abbreviate, format_pval, format_r, zapsmall

GOLDEN = Path(__file__).resolve().parent / "golden"
_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?")

# Models whose estimates agree with lme4's to every printed digit when fitted on lme4's
# derivative-free path (the rest differ in the last printed digit because our Laplace
# objective is slightly better than lme4's). The default gradient-based optimizer reaches the
# optimum more closely than BOBYQA's stopping rule, which can move a last printed digit.
EXACT = {
    ("lmm", "sleepstudy_reml"): ("summary", "print"),
    ("lmm", "sleepstudy_ml"): ("print",),
    ("lmm", "dyestuff"): ("summary",),
    ("lmm", "dyestuff2"): ("summary", "print"),
    ("lmm", "pastes"): ("summary", "print"),
    ("lmm", "cake"): ("summary", "print"),
    ("lmm", "penicillin"): ("print",),
    ("lmm", "shrinkage"): ("summary", "print"),
}


def _text(kind, mid, what, optimizer="auto"):
    ref = model_ref(kind, mid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = get_fit(kind, mid, optimizer)
    fit.data_name = re.search(r"data = (\w+)", ref["call"]).group(1)
    # lme4 prints the formula as its call recorded it (e.g. (x || g) expanded).
    fit_formula = ref.get("formula_lme4") or ref["formula"]
    ours = str(fit.summary()) if what == "summary" else str(fit)
    ours = ours.replace(f"Formula: {fit.formula}", f"Formula: {fit_formula}")
    theirs = ref[f"{what}_text"]
    theirs = theirs if isinstance(theirs, str) else "\n".join(theirs)
    return ours.rstrip("\n").split("\n"), theirs.rstrip("\n").split("\n")


def _mask(line: str) -> str:
    return " ".join(_NUM.sub("#", line).split())


CASES = [(k, m, w) for k in ("lmm", "glmm") for m in model_ids(k) for w in ("summary", "print")]


@pytest.mark.parametrize("kind,mid,what", CASES)
def test_layout_matches_lme4(kind, mid, what):
    ours, theirs = _text(kind, mid, what)
    ref = model_ref(kind, mid)
    if ref.get("weights") or ref.get("offset"):
        # lme4 prints the call's argument expression (Weights: w); we were passed arrays.
        theirs = [l for l in theirs if not l.startswith(("Weights:", " Offset:"))]
    assert [_mask(l) for l in ours] == [_mask(l) for l in theirs]


@pytest.mark.parametrize("kind,mid,what", [(k, m, w) for (k, m), ws in EXACT.items() for w in ws])
def test_text_identical_to_lme4(kind, mid, what):
    ours, theirs = _text(kind, mid, what, optimizer="bobyqa")
    assert ours == theirs


@pytest.mark.parametrize("kind,mid", [(k, m) for k in ("lmm", "glmm") for m in model_ids(k)])
def test_golden_text(kind, mid):
    ours_s, _ = _text(kind, mid, "summary")
    ours_p, _ = _text(kind, mid, "print")
    got = "\n".join(ours_s) + "\n\n" + "\n".join(ours_p) + "\n"
    path = GOLDEN / f"{kind}_{mid}.txt"
    assert path.exists(), f"missing golden file {path.name}: run python tests/golden/regen.py"
    want = path.read_text(encoding="utf-8")
    if got != want:
        # Numbers may move in the last printed digit across platforms: compare masked layout
        # exactly and numbers to a relative 1e-3.
        g, w = got.split("\n"), want.split("\n")
        assert [_mask(l) for l in g] == [_mask(l) for l in w]
        gn = [float(x) for l in g for x in _NUM.findall(l)]
        wn = [float(x) for l in w for x in _NUM.findall(l)]
        np.testing.assert_allclose(gn, wn, rtol=1e-3, atol=1e-3)


# ---- R's number formatting, checked against values R prints -------------------------

def test_format_r_matches_r():
    assert format_r([612.1002, 35.07169, 654.941], 4) == ["612.10", " 35.07", "654.94"]
    assert format_r([24.74066, 5.922138, 25.5918], 4) == ["24.741", " 5.922", "25.592"]
    assert format_r([14.9099, 12.7412], 4) == ["14.91", "12.74"]
    assert format_r([0.001068, 0.000474, 0.000182], 3) == ["0.001068", "0.000474", "0.000182"]
    assert format_r([1.47e-9], 3) == ["1.47e-09"]
    assert format_r([1527.5], 4) == ["1528"]
    assert format_r([0.0, -1.0], 4) == [" 0", "-1"]


def test_format_pval_matches_r():
    assert format_pval([1.47e-9, 0.001068, 0.000474, 0.000182], 3) == [
        "1.47e-09", "0.001068", "0.000474", "0.000182"]
    assert format_pval([1e-20, 0.5], 3) == ["<2e-16", "0.5"]


def test_abbreviate_matches_r():
    assert abbreviate("(Intercept)", 6) == "(Intr)"
    assert abbreviate("period2", 6) == "perid2"
    assert abbreviate("recipeB:temp", 11) == "recipeB:tmp"
    assert abbreviate("recipeB:temp", 6) == "rcpB:t"
    assert abbreviate("Days", 6) == "Days"


def test_zapsmall_as_lme4_prints_it():
    # Matrix's zapsmall rounds to round(digits - log10(max|x|)) decimals.
    np.testing.assert_array_equal(zapsmall([-2.079234, 0.062915, 2.979589], 5),
                                  np.round([-2.079234, 0.062915, 2.979589], 5))
    np.testing.assert_array_equal(zapsmall([-3.95357, 0.02309, 5.17926], 5),
                                  np.round([-3.95357, 0.02309, 5.17926], 4))
