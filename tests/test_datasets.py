"""mixedfit.datasets: lme4's data sets as pandas frames with lme4's factor levels."""

from __future__ import annotations

import pandas as pd
import pytest

from mixedfit import datasets
from _reference import load_data

# Data sets also frozen for the reference tests (written by make_reference.R from the same lme4);
# grouseticks is left out because the reference copy replaces cHEIGHT by scale(HEIGHT).
IN_REFERENCE = {"sleepstudy": "lmm", "Dyestuff": "lmm", "Dyestuff2": "lmm", "Penicillin": "lmm",
                "Pastes": "lmm", "cake": "lmm", "cbpp": "glmm", "VerbAgg": "glmm"}
NROW = {"sleepstudy": 180, "cbpp": 56, "Penicillin": 144, "Pastes": 60, "Dyestuff": 30,
        "Dyestuff2": 30, "InstEval": 73421, "VerbAgg": 7584, "grouseticks": 403, "cake": 270}


def test_every_promised_data_set_is_there():
    assert set(datasets.available()) == set(NROW)
    assert all(datasets.available().values())          # each has a title


@pytest.mark.parametrize("name", sorted(IN_REFERENCE))
def test_same_as_the_reference_copy(name):
    pd.testing.assert_frame_equal(datasets.load(name), load_data(IN_REFERENCE[name], name))


@pytest.mark.parametrize("name", sorted(NROW))
def test_rows_and_provenance(name):
    frame = datasets.load(name)
    assert len(frame) == NROW[name]
    meta = datasets.info(name)
    assert meta["package"] == "lme4" and meta["license"] == "GPL (>= 2)"
    assert list(frame.columns) == list(meta["columns"])


def test_lme4_level_order_and_ordered_factors():
    verbagg = datasets.load("VerbAgg")
    assert list(verbagg["mode"].cat.categories) == ["want", "do"]          # not alphabetical
    assert verbagg["resp"].cat.ordered and list(verbagg["resp"].cat.categories) == ["no", "perhaps", "yes"]
    cbpp = datasets.load("cbpp")
    assert list(cbpp["herd"].cat.categories) == [str(i) for i in range(1, 16)]  # 10 after 9
    insteval = datasets.load("InstEval")
    assert insteval["studage"].cat.ordered and insteval["lectage"].cat.ordered
    assert insteval["s"].cat.categories.size == 2972 and insteval["d"].cat.categories.size == 1128
    grouse = datasets.load("grouseticks")
    # lme4 ships cHEIGHT = HEIGHT - mean(HEIGHT) (centred, not scaled)
    pd.testing.assert_series_equal(grouse["cHEIGHT"], grouse["HEIGHT"] - grouse["HEIGHT"].mean(),
                                   check_names=False, rtol=0, atol=1e-9)


def test_each_load_is_a_new_frame():
    a = datasets.load("sleepstudy")
    a.loc[0, "Reaction"] = -1.0
    assert datasets.load("sleepstudy").loc[0, "Reaction"] != -1.0


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(KeyError, match="no data set 'sleep'; available: sleepstudy"):
        datasets.load("sleep")
