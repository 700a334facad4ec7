"""The design of a Dask fit: one global coding, built once on the client, applied to every
partition.

The scan pass (``scan_partition``) returns, per partition, its row counts and the levels of
every column whose levels shape the design (grouping factors, non-numeric fixed-effect
columns, logical columns and numeric columns inside ``factor()``/``C()``), as
sets -- O(levels), not O(rows). From their union the client builds a small *prototype*
frame in which every such column takes each of its global levels, and formulaic's model
specs are built on it once with the in-memory fit's own functions (``model_matrices``), so
column names, contrasts and level order are those of an in-memory fit of all the rows.
Partitions then evaluate these specs (``partition_arrays``); no partition ever codes a
factor by itself. Stateful transforms (``scale()``, ``center()``, ``poly()``, splines) would
need statistics of all rows before the specs exist, so they are refused with a FormulaError.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._design import (BinomialCounts, GroupTerm, _check_sizes, _complete_rows, _offset,
                       _ordered_factors, _parse_cached, _response, _used_columns, _weights)
from .._errors import DataError, FormulaError
from ..families import binomial_response, check_response
from .._terms import (_formula_piece, _stateful_columns, _STATEFUL, columns_in_calls,
                      model_matrices, newdata_matrix, rename)

__all__ = ["DaskGroupTerm", "FitSpec", "scan_spec", "scan_partition", "combine_scans",
           "fit_spec", "partition_arrays"]

# Functions whose argument's values become factor levels.
_FACTOR_FUNCTIONS = frozenset({"factor", "C"})


class DaskGroupTerm(GroupTerm):
    """A random-effects term of a Dask fit: its levels and layout, no rows (codes and Z stay
    on the cluster; reading them is an error, not an empty array)."""

    def __init__(self, group, columns, lhs, group_cols, levels, p):
        super().__init__(group=group, columns=columns, lhs=lhs, group_cols=group_cols,
                         codes=None, levels=levels, Z=None)
        self._p = int(p)

    @property
    def p(self) -> int:
        return self._p


@dataclass(frozen=True)
class ScanSpec:
    """What the scan pass reads: the used columns and those whose levels it collects."""

    formula: str
    used: tuple[str, ...]
    level_columns: tuple[str, ...]
    group_sets: tuple[tuple[str, ...], ...]   # multi-column grouping factors (a:b)
    weights: str | None
    offset: str | None
    family: object = None                     # a GLMM's Family (None: an LMM's numeric response)


def _factor_columns(parsed, used) -> set:
    """Numeric columns whose values become levels: inside factor() or C()."""
    pieces = [_formula_piece(parsed.fixed, frozenset())]
    pieces += [_formula_piece(t.lhs, frozenset()) for t in parsed.re_terms]
    return columns_in_calls(pieces, used, _FACTOR_FUNCTIONS)


def _is_level_dtype(dtype) -> bool:
    """Columns whose values are levels: categoricals, logicals, strings and objects."""
    if isinstance(dtype, pd.CategoricalDtype) or str(dtype) in ("bool", "boolean", "bool[pyarrow]"):
        return True
    return getattr(dtype, "kind", "O") not in "iuf"


def scan_spec(formula: str, meta: pd.DataFrame, weights, offset, family=None) -> tuple:
    """(parsed formula, ScanSpec) from the Dask frame's metadata (an empty pandas frame):
    unknown columns and refused transforms are reported before any pass runs."""
    parsed = _parse_cached(formula)
    for val, what in ((weights, "weights"), (offset, "offset")):
        if val is not None and not isinstance(val, str):
            raise DataError(f"{what} of a Dask fit must be a column name of the data (a vector "
                            "would have to sit on the client, next to no rows)")
        if isinstance(val, str) and val not in meta.columns:
            raise DataError(f"{what} column {val!r} is not in the data")
    extra = [v for v in (weights, offset) if isinstance(v, str)]
    used = _used_columns(parsed, meta, extra)
    pieces = [_formula_piece(parsed.fixed, frozenset())]
    pieces += [_formula_piece(t.lhs, frozenset()) for t in parsed.re_terms]
    stateful = _stateful_columns(pieces, used)
    if stateful:
        raise FormulaError(
            f"stateful transforms ({', '.join(sorted(_STATEFUL))}) of {sorted(stateful)} are not "
            "supported on Dask data: their statistics (means, scales, orthogonal polynomials) "
            "come from all rows before the design exists; add the transformed column to the "
            "frame first (e.g. ddf.assign(x_c=ddf.x - ddf.x.mean()))")
    levels = set(_factor_columns(parsed, used))
    for c in used:
        if c in meta.columns and _is_level_dtype(meta[c].dtype):
            levels.add(c)
    groups = []
    for t in parsed.re_terms:
        levels.update(t.group)
        if len(t.group) > 1 and t.group not in groups:
            groups.append(t.group)
    levels.discard(parsed.response.strip().strip("`"))  # checked as the response instead
    levels.difference_update(extra)
    spec = ScanSpec(formula, tuple(used), tuple(c for c in used if c in levels), tuple(groups),
                    weights, offset, family)
    return parsed, spec


def _complete(df: pd.DataFrame, spec: ScanSpec) -> pd.DataFrame:
    mask = _complete_rows(df, list(spec.used), spec.weights, spec.offset)
    return df if mask.all() else df.iloc[np.flatnonzero(mask)]


def scan_partition(df: pd.DataFrame, spec: ScanSpec) -> dict:
    """A partition's row counts, the levels of its level columns (complete rows only) and
    its level combinations of multi-column grouping factors; the response is checked."""
    frame = _complete(df, spec)
    out = {"rows": int(df.shape[0]), "complete": int(frame.shape[0]), "levels": {},
           "combos": {}, "categories": {}}
    for c in spec.level_columns:
        s = frame[c]
        if isinstance(s.dtype, pd.CategoricalDtype):
            out["levels"][c] = set(s.cat.categories[np.unique(s.cat.codes.to_numpy())])
            out["categories"][c] = list(s.cat.categories)
        else:
            if s.dtype.kind == "f" and not np.all(np.isfinite(s.to_numpy())):
                raise DataError(f"grouping factor {c!r} has non-finite values")
            out["levels"][c] = set(pd.unique(s.to_numpy()).tolist())
    for cols in spec.group_sets:
        out["combos"][cols] = set(map(tuple, frame[list(cols)].drop_duplicates().to_numpy()
                                      .tolist()))
    if frame.shape[0] and spec.family is None:  # a GLMM's response: see family_response
        parsed = _parse_cached(spec.formula)
        _response(parsed, frame, spec.formula, "numeric")
    return out


def combine_scans(*scans: dict) -> dict:
    out = {"rows": 0, "complete": 0, "levels": {}, "combos": {}, "categories": {}}
    for s in scans:
        out["rows"] += s["rows"]
        out["complete"] += s["complete"]
        for key in ("levels", "combos"):
            for c, vals in s[key].items():
                out[key].setdefault(c, set()).update(vals)
        for c, cats in s["categories"].items():  # categories in order of first appearance
            known = out["categories"].setdefault(c, [])
            known.extend(x for x in cats if x not in set(known))
    return out


# ---- the global coding and the specs --------------------------------------------------------
def _global_levels(col: str, scanned: dict) -> pd.Index:
    """The levels an in-memory fit would use: a categorical's categories (in the partitions'
    order; Dask's metadata may not know them) that some complete row has, else the sorted
    distinct values."""
    seen = scanned["levels"].get(col, set())
    if col in scanned["categories"]:
        return pd.Index([c for c in scanned["categories"][col] if c in seen])
    return pd.Index(sorted(seen))


def _is_text(dtype) -> bool:
    """Categorical, string or object columns: coded by the global levels as categoricals."""
    if isinstance(dtype, pd.CategoricalDtype):
        return True
    return getattr(dtype, "kind", "O") not in "iufb" and str(dtype) not in ("boolean",
                                                                            "bool[pyarrow]")


def _with_global_levels(frame: pd.DataFrame, spec: "FitSpec",
                        unseen: str = "missing") -> pd.DataFrame:
    """The text and categorical level columns as categoricals over the global levels, so
    formulaic codes every partition alike (whatever string dtype the partition has).
    ``unseen="keep"`` (new data): a column with a level the fit has not seen stays text
    (object), so that the error names the level."""
    cast = {}
    for c, lev in spec.component_levels.items():
        if c in frame.columns and _is_text(frame[c].dtype):
            ordered = bool(getattr(frame[c].dtype, "ordered", False))
            values = frame[c]
            if isinstance(values.dtype, pd.CategoricalDtype):
                values = values.astype(object)
            if unseen == "keep" and not values.dropna().isin(lev).all():
                cast[c] = values.astype(object)
                continue
            cast[c] = pd.Categorical(values, categories=lev, ordered=ordered)
    return frame.assign(**cast) if cast else frame


def _prototype(meta: pd.DataFrame, used, levels: dict) -> pd.DataFrame:
    """A small frame in which each level column takes every global level (cycling) and each
    numeric column varies: formulaic's specs built on it code factors as on all the rows."""
    length = max([2] + [len(v) for v in levels.values()])
    cols = {}
    for c in used:
        dtype = meta[c].dtype
        if c in levels:
            lev = levels[c]
            values = np.resize(np.asarray(lev, dtype=object), length) if len(lev) else []
            if _is_text(dtype):
                cols[c] = pd.Categorical(values, categories=lev,
                                         ordered=getattr(dtype, "ordered", False) or False)
            else:
                cols[c] = pd.Series(values).astype(dtype)
        else:
            cols[c] = pd.Series(np.linspace(1.0, 2.0, length)).astype(dtype)
    return pd.DataFrame(cols)


@dataclass
class FitSpec:
    """Everything a partition needs to build its rows of the design, and the design's layout."""

    formula: str
    parsed: object
    scan: ScanSpec
    fixed_spec: object
    keep_fixed: np.ndarray | None       # aliased columns dropped (set after the scaling pass)
    fixed_names_all: list[str]
    term_specs: list                     # lme4 order
    terms: list[DaskGroupTerm]           # lme4 order
    component_levels: dict               # column -> pd.Index of its levels
    combo_keys: dict                     # group columns -> sorted int64 keys of the levels
    n: int
    n_dropped_na: int
    x_gram: np.ndarray | None = None    # X'X of the kept columns (set after the scaling pass)

    @property
    def fixed_names(self) -> list[str]:
        if self.keep_fixed is None:
            return list(self.fixed_names_all)
        return [nm for nm, k in zip(self.fixed_names_all, self.keep_fixed) if k]


def _combo_levels(cols, combos: set, component_levels: dict) -> tuple[np.ndarray, pd.Index]:
    """Sorted keys and labels of a multi-column grouping factor's level combinations, in the
    in-memory order (lexicographic in the components' codes)."""
    codes = np.array([[component_levels[c].get_loc(v) for c, v in zip(cols, combo)]
                      for combo in combos], dtype=np.int64).reshape(-1, len(cols))
    keys = _radix(codes, [len(component_levels[c]) for c in cols])
    order = np.argsort(keys)
    labels = [":".join(str(component_levels[c][k]) for c, k in zip(cols, codes[i]))
              for i in order]
    index = pd.Index(labels)
    if not index.is_unique:
        twice = index[index.duplicated()][0]
        raise DataError(f"grouping factor {':'.join(cols)!r} has two different level "
                        f"combinations labelled {twice!r} (a level label contains ':')")
    return keys[order], index


def _radix(codes: np.ndarray, sizes: list[int]) -> np.ndarray:
    key = np.zeros(codes.shape[0], dtype=np.int64)
    for j, size in enumerate(sizes):
        key = key * size + codes[:, j]
    return key


def fit_spec(formula: str, parsed, scan: ScanSpec, meta: pd.DataFrame, scanned: dict,
             lmm: bool) -> FitSpec:
    """The global coding and the formulaic specs, from the scan's union of levels."""
    if scanned["complete"] == 0:
        raise DataError("no rows left after dropping rows with missing values" if
                        scanned["rows"] else "data has no rows")
    levels = {c: _global_levels(c, scanned) for c in scan.level_columns}
    used = list(scan.used)
    proto = _prototype(meta, used, levels)
    ordered = _ordered_factors(meta, used)
    mms, r_names = model_matrices(parsed, proto, used, np.ones(proto.shape[0], dtype=bool),
                                  ordered, formula)
    names = rename(mms["fixed"].model_spec.column_names, r_names, parsed.fixed)
    terms, specs = [], []
    combo_keys = {}
    for k, t in enumerate(parsed.re_terms):
        Zspec = mms[f"re{k}"].model_spec
        if len(Zspec.column_names) == 0:
            raise FormulaError(f"random-effects term '({t.lhs} | {t.name})' has no columns")
        if len(t.group) == 1:
            lev = levels[t.group[0]]
        else:
            keys, lev = _combo_levels(t.group, scanned["combos"].get(t.group, set()), levels)
            combo_keys[t.group] = keys
        terms.append(DaskGroupTerm(t.name, rename(Zspec.column_names, r_names, t.lhs), t.lhs,
                                   t.group, lev, len(Zspec.column_names)))
        specs.append(Zspec)
    order = sorted(range(len(terms)), key=lambda i: -terms[i].nlevels)
    terms, specs = [terms[i] for i in order], [specs[i] for i in order]
    n = int(scanned["complete"])
    _check_sizes(terms, n, len(names), lmm)
    return FitSpec(formula, parsed, scan, mms["fixed"].model_spec, None, names, specs, terms,
                   levels, combo_keys, n, int(scanned["rows"] - scanned["complete"]))


# ---- a GLMM's response --------------------------------------------------------------------
def family_response(fam, parsed, frame: pd.DataFrame, formula: str, weights):
    """(y, prior weights) of a GLMM's rows, as the in-memory glmer forms them (binomial:
    proportions and trials from 0/1, logical or cbind(successes, failures)). A text or
    categorical binomial response is refused: its coding (first level = failure) would come
    from each partition's own levels."""
    _, response = _response(parsed, frame, formula, "raw")
    name = parsed.response
    if fam.name == "binomial":
        if not isinstance(response, BinomialCounts) and response.dtype.kind not in "biuf":
            raise DataError(f"binomial response {name!r} of a Dask fit must be 0/1, logical or "
                            f"cbind(successes, failures), got dtype {response.dtype} (code it "
                            "as 0/1 first: a factor's levels would differ between partitions)")
        y, pw = binomial_response(response, weights, name)
    else:
        if isinstance(response, BinomialCounts):
            raise DataError("cbind(...) responses are only for the binomial family")
        if response.dtype.kind not in "biuf":
            raise DataError(f"response {name!r} must be numeric for family {fam.name!r}, "
                            f"got dtype {response.dtype}")
        y = response.to_numpy(dtype=float)
        check_response(fam, y, name)
        pw = np.ones_like(y) if weights is None else weights
    return np.ascontiguousarray(y, dtype=float), np.ascontiguousarray(pw, dtype=float)


# ---- a partition's arrays ---------------------------------------------------------------
@dataclass
class PartitionArrays:
    X: np.ndarray                 # (n, p) all columns (before the aliased ones are dropped)
    y: np.ndarray                 # response minus offset (a GLMM's: y as its family takes it)
    weights: np.ndarray | None    # prior weights (a GLMM's: always, binomial trials included)
    offset: np.ndarray | None
    codes: list                   # per term (lme4 order), int64
    Z: list                       # per term, (n, p_k)
    index: pd.Index               # the rows' labels

    @property
    def n(self) -> int:
        return self.y.shape[0]


def _term_codes(frame: pd.DataFrame, term: DaskGroupTerm, spec: FitSpec) -> np.ndarray:
    cols = term.group_cols
    if len(cols) == 1:
        codes = spec.component_levels[cols[0]].get_indexer(frame[cols[0]].to_numpy())
    else:
        comp = np.column_stack([spec.component_levels[c].get_indexer(frame[c].to_numpy())
                                for c in cols])
        keys = _radix(comp.astype(np.int64), [len(spec.component_levels[c]) for c in cols])
        codes = np.searchsorted(spec.combo_keys[cols], keys)
    return codes.astype(np.int64)


def partition_arrays(df: pd.DataFrame, spec: FitSpec, with_response: bool = True):
    """The design rows of one partition's complete rows under the global coding (None when
    the partition has none)."""
    scan = spec.scan
    frame = _complete(df, scan)
    if frame.shape[0] == 0:
        return None
    n_rows = frame.shape[0]
    frame = _with_global_levels(frame, spec)
    X = newdata_matrix(spec.fixed_spec, frame, spec.formula)
    if spec.keep_fixed is not None:
        X = X[:, spec.keep_fixed]
    index = np.arange(n_rows)
    off = _offset(scan.offset, spec.parsed, frame, index, n_rows, spec.formula)
    y = None
    w = _weights(scan.weights, frame, index, n_rows)
    if with_response and scan.family is not None:
        y, w = family_response(scan.family, spec.parsed, frame, spec.formula, w)
    elif with_response:
        y, _ = _response(spec.parsed, frame, spec.formula, "numeric")
        if off is not None:
            y = y - off
    codes = [_term_codes(frame, t, spec) for t in spec.terms]
    Z = [newdata_matrix(s, frame, t.lhs) for s, t in zip(spec.term_specs, spec.terms)]
    for t, z in zip(spec.terms, Z):
        if not np.all(np.isfinite(z)):
            raise DataError(f"random-effects term '({t.lhs} | {t.group})' has non-finite values")
    if not np.all(np.isfinite(X)):
        raise DataError(f"fixed-effect columns of {spec.formula!r} have non-finite values")
    return PartitionArrays(np.asarray(X, dtype=float), y, w, off, codes, Z, frame.index)
