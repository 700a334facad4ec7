"""Helpers for the lme4 reference tests: frozen values, their data sets, cached fits.

The values in ``tests/reference/lme4_*.json`` and the data in ``tests/reference/data`` are
made by ``tests/reference/make_reference.R`` (see ``tests/reference/README.md``). Nothing
here needs R.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
_FILES = {"lmm": "lme4_lmm.json", "glmm": "lme4_glmm.json"}


@lru_cache(maxsize=None)
def load_reference(kind: str) -> dict:
    """The parsed reference file for ``kind`` ("lmm" or "glmm")."""
    with open(REFERENCE_DIR / _FILES[kind], encoding="utf-8") as fh:
        return json.load(fh)


def model_ids(kind: str) -> list[str]:
    return list(load_reference(kind)["models"])


def model_ref(kind: str, model_id: str) -> dict:
    return load_reference(kind)["models"][model_id]


@lru_cache(maxsize=None)
def _read_dataset(kind: str, name: str) -> pd.DataFrame:
    meta = load_reference(kind)["datasets"][name]
    columns = meta["columns"]
    text_cols = {c: str for c, spec in columns.items() if spec["type"] in ("factor", "character")}
    df = pd.read_csv(REFERENCE_DIR / meta["file"], dtype=text_cols, keep_default_na=False)
    assert list(df.columns) == list(columns), f"{name}: CSV columns differ from the JSON record"
    assert len(df) == meta["nrow"], f"{name}: {len(df)} rows, the JSON records {meta['nrow']}"
    for col, spec in columns.items():
        if spec["type"] == "factor":
            cat = pd.Categorical(df[col], categories=spec["levels"], ordered=spec["ordered"])
            assert not pd.isna(cat).any(), f"{name}.{col}: a label is not among the recorded levels"
            df[col] = cat
        elif spec["type"] == "integer":
            df[col] = df[col].astype("int64")
        elif spec["type"] == "numeric":
            df[col] = df[col].astype("float64")
    return df


def load_data(kind: str, name: str) -> pd.DataFrame:
    """A data set as lme4 saw it: factors as pandas Categoricals with lme4's level order."""
    return _read_dataset(kind, name).copy()


# ---------------------------------------------------------------- fitting (cached)

_FITS: dict[tuple[str, str], Any] = {}


def _fit(kind: str, ref: dict, optimizer: str = "auto"):
    import mixedfit

    df = load_data(kind, ref["data"])
    control = {"optimizer": optimizer}
    if kind == "lmm":
        weights = None if ref["weights"] is None else df[ref["weights"]].to_numpy()
        offset = None if ref["offset"] is None else df[ref["offset"]].to_numpy()
        return mixedfit.lmer(ref["formula"], df, reml=ref["REML"], weights=weights, offset=offset,
                             control=control)
    return mixedfit.glmer(ref["formula"], df, family=ref["family"], link=ref["link"],
                          nagq=ref["nAGQ"], control=control)


def get_fit(kind: str, model_id: str, optimizer: str = "auto"):
    """Fit the reference model with mixedfit once per session; a failure is re-raised
    for every test that needs the fit, so each of them reports it. ``optimizer="bobyqa"``
    takes lme4's derivative-free path (which stops where lme4's does)."""
    key = (kind, model_id, optimizer)
    if key not in _FITS:
        try:
            _FITS[key] = _fit(kind, model_ref(kind, model_id), optimizer)
        except Exception as exc:  # noqa: BLE001 - remembered and re-raised below
            _FITS[key] = exc
    fit = _FITS[key]
    if isinstance(fit, Exception):
        raise AssertionError(
            f"{model_id}: fitting `{model_ref(kind, model_id)['call']}` with mixedfit failed: "
            f"{type(fit).__name__}: {fit}") from fit
    return fit


# ---------------------------------------------------------------- access and comparison

def need(fit, name: str, model_id: str):
    """``getattr(fit, name)``, failing with a clear message when the result object lacks it."""
    if not hasattr(fit, name):
        raise AssertionError(
            f"{model_id}: the mixedfit result ({type(fit).__name__}) has no attribute {name!r}, "
            "which the lme4 reference tests require (see tests/reference/README.md)")
    return getattr(fit, name)


def as_float_array(x, what: str, model_id: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{model_id}: {what} is not numeric: {x!r}") from exc
    return arr


def assert_close(actual, expected, *, rtol: float = 0.0, atol=0.0, what: str, model_id: str,
                 names=None) -> None:
    """Elementwise |actual - expected| <= atol + rtol * |expected|, with a readable report."""
    a = np.atleast_1d(as_float_array(actual, what, model_id))
    e = np.atleast_1d(np.asarray(expected, dtype=float))
    assert a.shape == e.shape, f"{model_id}: {what} has shape {a.shape}, lme4 has {e.shape}"
    atol = np.broadcast_to(np.asarray(atol, dtype=float), e.shape)
    tol = atol + rtol * np.abs(e)
    err = np.abs(a - e)
    bad = ~(err <= tol)  # also catches NaN
    if bad.any():
        labels = list(names) if names is not None else [str(i) for i in range(e.size)]
        lines = [f"  {labels[i]}: mixedfit {a.flat[i]!r}, lme4 {e.flat[i]!r}, "
                 f"|diff| {err.flat[i]:.3g} > tol {tol.flat[i]:.3g}"
                 for i in np.flatnonzero(bad.ravel())[:12]]
        raise AssertionError(f"{model_id}: {what} differs from lme4 "
                             f"(rtol={rtol:g}, atol as listed):\n" + "\n".join(lines))


def fixef_tolerance(ref_values, ref_se, rtol: float) -> np.ndarray:
    """Per-coefficient absolute tolerance: rtol relative to max(|estimate|, its SE), so a
    coefficient near zero is judged on the scale of its uncertainty."""
    return rtol * np.maximum(np.abs(np.asarray(ref_values, float)), np.asarray(ref_se, float))


def series_in_order(obj, names: list[str], what: str, model_id: str) -> np.ndarray:
    """Values of a pandas Series (or mapping) in lme4's order, checking the names."""
    if isinstance(obj, pd.Series):
        got = [str(k) for k in obj.index]
        values = obj.to_numpy()
    elif isinstance(obj, dict):
        got = [str(k) for k in obj]
        values = list(obj.values())
    else:
        raise AssertionError(f"{model_id}: {what} should be a pandas Series indexed by name, "
                             f"got {type(obj).__name__}")
    assert got == names, f"{model_id}: {what} names {got} differ from lme4's {names}"
    return as_float_array(values, what, model_id)


def matrix_in_order(obj, names: list[str], what: str, model_id: str) -> np.ndarray:
    if not isinstance(obj, pd.DataFrame):
        raise AssertionError(f"{model_id}: {what} should be a pandas DataFrame, "
                             f"got {type(obj).__name__}")
    assert [str(c) for c in obj.index] == names, \
        f"{model_id}: {what} rows {list(obj.index)} differ from lme4's {names}"
    assert [str(c) for c in obj.columns] == names, \
        f"{model_id}: {what} columns {list(obj.columns)} differ from lme4's {names}"
    return as_float_array(obj.to_numpy(), what, model_id)


def is_missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or (x is pd.NA) or (
        not isinstance(x, str) and pd.isna(x))


def varcorr_rows(fit, model_id: str) -> list[tuple]:
    """The fit's VarCorr as (grp, var1, var2, vcov, sdcor) tuples, None for missing names."""
    vc = need(fit, "varcorr", model_id)
    if not hasattr(vc, "to_frame"):
        raise AssertionError(f"{model_id}: fit.varcorr has no to_frame()")
    frame = vc.to_frame()
    cols = ["grp", "var1", "var2", "vcov", "sdcor"]
    missing = [c for c in cols if c not in frame.columns]
    assert not missing, f"{model_id}: varcorr.to_frame() lacks columns {missing}"
    rows = []
    for rec in frame[cols].itertuples(index=False):
        grp, v1, v2, vcov, sdcor = rec
        rows.append((str(grp), None if is_missing(v1) else str(v1),
                     None if is_missing(v2) else str(v2), float(vcov), float(sdcor)))
    return rows


def check_varcorr(fit, ref_rows: list[dict], sigma_ref: float, *, rtol: float, sd_atol: float,
                  corr_atol: float, model_id: str) -> None:
    """Compare VarCorr row by row. Standard deviations get an absolute floor ``sd_atol`` (in
    units of the residual SD ``sigma_ref``), correlations ``corr_atol``; variances and
    covariances the matching floor on their scale."""
    rows = varcorr_rows(fit, model_id)
    got_keys = [r[:3] for r in rows]
    want_keys = [(r["grp"], r["var1"], r["var2"]) for r in ref_rows]
    assert got_keys == want_keys, \
        f"{model_id}: VarCorr rows {got_keys} differ from lme4's {want_keys}"
    for r, ref in zip(rows, ref_rows):
        label = "/".join(x for x in r[:3] if x is not None)
        if ref["var2"] is None:  # a variance and its standard deviation
            sd_floor = sd_atol * sigma_ref
            assert_close(r[4], ref["sdcor"], rtol=rtol, atol=sd_floor,
                         what=f"VarCorr std.dev. {label}", model_id=model_id)
            assert_close(r[3], ref["vcov"], rtol=2 * rtol,
                         atol=2 * sd_floor * ref["sdcor"] + sd_floor**2,
                         what=f"VarCorr variance {label}", model_id=model_id)
        else:  # a covariance and its correlation
            assert_close(r[4], ref["sdcor"], atol=corr_atol,
                         what=f"VarCorr correlation {label}", model_id=model_id)
            sds = [x["sdcor"] for x in ref_rows if x["grp"] == ref["grp"] and x["var2"] is None
                   and x["var1"] in (ref["var1"], ref["var2"])]
            scale = float(np.prod(sds)) if len(sds) == 2 else abs(ref["vcov"])
            assert_close(r[3], ref["vcov"], atol=corr_atol * scale + 2 * rtol * abs(ref["vcov"]),
                         what=f"VarCorr covariance {label}", model_id=model_id)


def check_ranef(fit, ref_ranef: dict, *, atol: float, model_id: str) -> None:
    """Conditional modes and conditional SDs, matched by group, level label and term."""
    ranef_fn = need(fit, "ranef", model_id)
    got = ranef_fn(condvar=True)
    assert isinstance(got, dict), f"{model_id}: ranef(condvar=True) should return a dict"
    assert sorted(str(g) for g in got) == sorted(ref_ranef), \
        f"{model_id}: ranef groups {list(got)} differ from lme4's {list(ref_ranef)}"
    for grp, ref in ref_ranef.items():
        frame = got[grp]
        assert isinstance(frame, pd.DataFrame), f"{model_id}: ranef[{grp!r}] is not a DataFrame"
        labels = [str(i) for i in frame.index]
        assert sorted(labels) == sorted(ref["levels"]), (
            f"{model_id}: ranef[{grp!r}] levels differ from lme4's "
            f"(first few: {labels[:5]} vs {ref['levels'][:5]})")
        frame = frame.set_axis(labels, axis=0).loc[ref["levels"]]
        for term in ref["terms"]:
            for col, values, what in ((term, ref["condval"][term], "conditional mode"),
                                      (f"condsd_{term}", ref["condsd"][term], "conditional SD")):
                assert col in frame.columns, \
                    f"{model_id}: ranef[{grp!r}] lacks column {col!r} (has {list(frame.columns)})"
                assert_close(frame[col].to_numpy(), values, atol=atol,
                             what=f"{what} {grp}/{term}", model_id=model_id,
                             names=[f"{grp}={lv}" for lv in ref["levels"]])


def check_ngroups(fit, ref: dict, model_id: str) -> None:
    ng = need(fit, "ngroups", model_id)
    got = {str(k): int(v) for k, v in dict(ng).items()}
    assert got == ref["ngroups"], f"{model_id}: ngroups {got} differ from lme4's {ref['ngroups']}"
    nobs = need(fit, "nobs", model_id)
    assert int(nobs) == ref["nobs"], f"{model_id}: nobs {nobs} differs from lme4's {ref['nobs']}"
