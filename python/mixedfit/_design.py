"""From a formula and a data frame to the arrays the core takes, built once.

Validation lives here: every error names the column, term or value at fault, and the caller's
frame is never modified (we only read from it and build new arrays).

The model matrices of simple formulas (plain columns, factors, their interactions) are built
directly from the columns (``_simple_terms``); everything else by formulaic (``_terms``).
Either way the design is the same; formulaic's specs, which ``predict`` needs for new data,
are then built on first use.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import _core
from ._errors import DataError, FormulaError
from ._formula import ParsedFormula, _split_top, identifiers, parse_formula
from ._rexpr import evaluate, float_values
from ._simple_terms import simple_model_matrices
from ._terms import (drop_unused_categories, lme4_column_name, model_matrices, newdata_matrix,
                     rename)

__all__ = ["Design", "GroupTerm", "build_design", "as_pandas", "lme4_column_name",
           "newdata_matrix"]

def as_pandas(data) -> pd.DataFrame:
    """Accept pandas or polars frames (converted once, at the boundary)."""
    if isinstance(data, pd.DataFrame):
        return data
    mod = type(data).__module__
    if mod.startswith("polars") and hasattr(data, "to_pandas"):
        try:
            return data.to_pandas()
        except ImportError as exc:
            raise DataError(
                f"converting a polars DataFrame needs pyarrow ({exc}); "
                "install it with: pip install 'mixedfit[polars]'"
            ) from None
    raise DataError(
        f"data must be a pandas or polars DataFrame, got {type(data).__name__}"
    )

# A fixed-effect column is aliased when its distance from the span of the columns before it
# is at most this fraction of its norm (lme4's rank check uses a tolerance of this order).
ALIASING_TOL = 1e-7


@dataclass
class GroupTerm:
    """One random-effects term after design: grouping codes, levels and its Z block."""

    group: str                      # lme4's grouping-factor name, e.g. "Subject", "cask:batch"
    columns: list[str]              # lme4 column names of the term's model matrix
    lhs: str                        # the left-hand expression, for newdata
    group_cols: tuple[str, ...]
    codes: np.ndarray               # (n,) int32
    levels: pd.Index                # level labels
    Z: np.ndarray                   # (n, p_k) float64, column-major

    @property
    def nlevels(self) -> int:
        return len(self.levels)

    @property
    def p(self) -> int:
        return self.Z.shape[1]


@dataclass
class Design:
    parsed: ParsedFormula
    columns: dict                   # the used columns (pandas Series) of the rows used, by name
    used: list[str]                 # the columns the formula (and weights/offset) use
    y: np.ndarray | None            # (n,) float64 for numeric responses
    response: pd.Series | pd.DataFrame
    X: np.ndarray                   # (n, p) float64 column-major
    fixed_names: list[str]
    dropped_fixed: list[str]
    terms: list[GroupTerm]          # lme4 order (decreasing number of levels)
    weights: np.ndarray | None
    offset: np.ndarray | None
    n_dropped_na: int
    keep_fixed: np.ndarray | None = None
    term_order: list[int] = field(default_factory=list)  # formula position of each term
    specs: dict | None = None   # formulaic's model specs by piece ("fixed", "re0", ...)
    x_qr: tuple | None = None   # (X, Xs, T, T^-1) from the aliasing check, for the first scaling

    def take_x_qr(self, X: np.ndarray) -> tuple | None:
        """X's scaling (Xs, T, T^-1) computed by the aliasing check, handed out once and only for
        the very array it scales (a design copied with another X recomputes it)."""
        stored, self.x_qr = self.x_qr, None
        return stored[1:] if stored is not None and stored[0] is X else None

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def fixed_spec(self):
        """formulaic's model spec of the fixed effects (evaluates new data for predict)."""
        return self._model_specs()["fixed"]

    @property
    def term_specs(self) -> list:
        """formulaic's model spec of each bar term's left side, in the order of ``terms``."""
        specs = self._model_specs()
        return [specs[f"re{k}"] for k in self.term_order]

    def _model_specs(self) -> dict:
        """The specs, built by formulaic on first use when a simple formula's matrices were
        built without it (the same rows, so the same levels and columns)."""
        if self.specs is None:
            ordered = _ordered_factors(self.source, self.used)
            mms, _ = model_matrices(self.parsed, self.source, self.used,
                                    np.ones(self.n, dtype=bool), ordered, self.parsed.text)
            self.specs = {key: mms[key].model_spec for key in _pieces(self.parsed)}
        return self.specs

    def x_gram(self) -> np.ndarray:
        """X'X of the fixed effects (unweighted, as lmerTest's anova forms it)."""
        return self.X.T @ self.X

    def contrast_design(self) -> tuple[np.ndarray, pd.DataFrame]:
        """(X, its rows' model frame): rows that span the fixed effects' design, for
        contrasts that depend on its structure alone (the type III anova)."""
        return self.X, self.frame

    @property
    def index(self) -> pd.Index:
        """Row labels of the observations used."""
        return next(iter(self.columns.values())).index

    @functools.cached_property
    def source(self) -> pd.DataFrame:
        """The used columns of the rows used, as a frame, built on first use (most fits never
        need it). The columns are pandas' copy-on-write views of the caller's: later changes
        to the caller's frame do not reach them."""
        return pd.DataFrame(self.columns, copy=False)

    @property
    def frame(self) -> pd.DataFrame:
        """The model frame: used columns of the rows used (built on first access)."""
        return self.source

    @property
    def p(self) -> int:
        return self.X.shape[1]


@functools.lru_cache(maxsize=256)
def _names_read(parsed: ParsedFormula) -> tuple[str, ...]:
    """The names in a formula's expressions that may be columns, in order, each once."""
    exprs = [parsed.response, parsed.fixed, *parsed.offsets, *(t.lhs for t in parsed.re_terms)]
    return tuple(dict.fromkeys(tok for e in exprs for tok in identifiers(e)))


def _used_columns(parsed: ParsedFormula, df: pd.DataFrame, extra: list[str]) -> list[str]:
    cols = df.columns  # membership tests only (the Index hashes its labels once)
    used = [tok for tok in _names_read(parsed) if tok in cols]
    for t in parsed.re_terms:
        for g in t.group:
            if g not in cols:
                raise FormulaError(
                    f"grouping factor {g!r} in term '({t.lhs} | {t.name})' is not a column of the data"
                )
            if g not in used:
                used.append(g)
    for e in extra:
        if e not in used:
            used.append(e)
    return used


def _codes(frame, cols: tuple[str, ...]) -> tuple[np.ndarray, pd.Index]:
    """Level codes (sorted levels; categorical columns keep their category order);
    ``frame``: the rows' columns by name."""
    parts = []
    for c in cols:
        s = frame[c]
        if isinstance(s.dtype, pd.CategoricalDtype):
            values = drop_unused_categories(s).array
            codes, labels = values.codes, values.categories
        elif isinstance(s.dtype, np.dtype) and s.dtype.kind in "iu":
            codes, labels = _integer_codes(s.to_numpy())
        else:
            if s.dtype.kind == "f" and not np.all(np.isfinite(s.to_numpy())):
                raise DataError(f"grouping factor {c!r} has non-finite values")
            codes, labels = pd.factorize(s, sort=True)
            labels = pd.Index(labels)
        parts.append((codes, labels))
    if len(parts) == 1:
        codes, labels = parts[0]
        return np.asarray(codes, dtype=np.int32), labels  # no copy when int32 already
    key = np.zeros(len(parts[0][0]), dtype=np.int64)
    for codes, labels in parts:
        key = key * len(labels) + np.asarray(codes, dtype=np.int64)
    uniq, inv = np.unique(key, return_inverse=True)
    lab = []
    for u in uniq:
        pieces = []
        for codes, labels in reversed(parts):
            pieces.append(str(labels[u % len(labels)]))
            u //= len(labels)
        lab.append(":".join(reversed(pieces)))
    index = pd.Index(lab)
    if not index.is_unique:
        twice = index[index.duplicated()][0]
        raise DataError(f"grouping factor {':'.join(cols)!r} has two different level combinations "
                        f"labelled {twice!r} (a level label contains ':')")
    return inv.astype(np.int32), index


def _integer_codes(values: np.ndarray) -> tuple[np.ndarray, pd.Index]:
    """``pd.factorize(values, sort=True)`` for an integer vector, by a table over its range
    when that is not much longer than the vector (O(n), no hashing or sorting)."""
    lo, hi = int(values.min()), int(values.max())
    if hi - lo >= 4 * values.size + 1024 or hi >= 2**63:
        codes, labels = pd.factorize(values, sort=True)
        return codes, pd.Index(labels)
    offsets = values.astype(np.int64, copy=False) - lo  # small types would wrap around
    present = np.zeros(hi - lo + 1, dtype=bool)
    present[offsets] = True
    levels = np.flatnonzero(present)
    table = np.empty(hi - lo + 1, dtype=np.int32)
    table[levels] = np.arange(levels.size, dtype=np.int32)
    return table[offsets], pd.Index((levels + lo).astype(values.dtype, copy=False))


def _numeric_vector(value, frame: pd.DataFrame, index, what: str, n_rows: int) -> np.ndarray:
    if isinstance(value, str):
        if value not in frame.columns:
            raise DataError(f"{what} column {value!r} is not in the data")
        arr = frame[value].to_numpy()
    else:
        arr = np.asarray(value)
        if arr.ndim != 1 or arr.shape[0] != n_rows:
            raise DataError(
                f"{what} must be a column name or a vector of length {n_rows} (one per row), "
                f"got shape {arr.shape}"
            )
        arr = arr[index]
    if arr.dtype.kind not in "biuf":
        label = f"{what} column {value!r}" if isinstance(value, str) else what
        raise DataError(f"{label} must be numeric, got dtype {arr.dtype}")
    return np.asarray(arr, dtype=np.float64)


def _check_aliased(X: np.ndarray, names: list[str]) -> np.ndarray:
    """Keep-mask of fixed-effect columns; later columns in the span of earlier ones are dropped."""
    return _aliased_columns(X)[0]


def _aliased_columns(X: np.ndarray):
    """``_check_aliased``'s keep-mask, and X's scaling (Xs, T) (``_standardize.fixed_scaling``)
    when X has no more columns than rows (else None), for the standardization to reuse.

    Column j is kept when its distance from the span of the columns before it (the j-th
    diagonal entry of an unpivoted QR) is not negligible against its norm."""
    n, p = X.shape
    if p <= n:
        if not p:
            return np.zeros(0, dtype=bool), None
        keep, *scaling = _core.fixed_qr(np.asfortranarray(X, dtype=np.float64), None,
                                        ALIASING_TOL)
        return keep, tuple(scaling)
    norms = np.linalg.norm(X, axis=0)
    scale = np.maximum(norms, np.finfo(float).tiny)
    keep = np.zeros(p, dtype=bool)  # more columns than rows: at most n survive
    kept: list[int] = []
    for j in range(p):
        if len(kept) == n:
            break
        last = np.linalg.qr(X[:, kept + [j]], mode="r")[-1, -1]
        if norms[j] > 0 and abs(last) > ALIASING_TOL * scale[j]:
            keep[j] = True
            kept.append(j)
    return keep, None


def _complete_rows(df: pd.DataFrame, used: list[str], weights, offset,
                   columns: dict | None = None) -> np.ndarray:
    """Rows with no missing value in a used column (pandas' NA and pyarrow nulls included);
    ``columns``: the used columns by name when already looked up."""
    n_rows = len(df)
    mask = np.ones(n_rows, dtype=bool)
    columns = {c: df[c] for c in used} if columns is None else columns
    for col in columns.values():
        dtype = col.dtype
        if isinstance(dtype, np.dtype) and dtype.kind in "biu":
            continue
        if isinstance(dtype, np.dtype) and dtype.kind == "f":
            mask &= ~np.isnan(col.to_numpy())
        elif isinstance(dtype, pd.CategoricalDtype):
            mask &= col.array.codes >= 0
        else:
            mask &= ~col.isna().to_numpy(dtype=bool)
    for extra_vec in (weights, offset):
        if extra_vec is not None and not isinstance(extra_vec, str):
            arr = np.asarray(extra_vec)
            if arr.ndim == 1 and arr.shape[0] == n_rows and arr.dtype.kind in "biuf":
                mask &= ~np.isnan(arr.astype(float))
    return mask


def _check_columns(df: pd.DataFrame, used: list[str]) -> None:
    if df.columns.is_unique:
        return
    dup = df.columns[df.columns.duplicated()]
    bad = [c for c in used if c in set(dup)]
    if bad:
        raise DataError(f"column name(s) {bad} appear more than once in the data")


def _ordered_factors(df, used: list[str]) -> frozenset:
    """The used columns that are ordered categoricals (``df``: a frame or a dict of columns)."""
    dtypes = {c: df[c].dtype for c in used}
    return frozenset(c for c, dt in dtypes.items()
                     if isinstance(dt, pd.CategoricalDtype) and dt.ordered)


@dataclass(frozen=True, eq=False)
class BinomialCounts:
    """A ``cbind(successes, failures)`` response: the two counts of each complete row."""

    successes: np.ndarray
    failures: np.ndarray

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The counts as an (n, 2) array, successes first."""
        out = np.column_stack([self.successes, self.failures])
        return out if dtype is None else out.astype(dtype)


@functools.lru_cache(maxsize=256)
def _cbind_arguments(text: str) -> tuple[str, ...] | None:
    """The arguments of a ``cbind(...)`` response (None for any other response)."""
    cbind = re.fullmatch(r"cbind\((.*)\)", text, flags=re.S)
    if cbind is None:
        return None
    return tuple(p.strip() for _, p in _split_top(cbind.group(1), ","))


def _response(parsed: ParsedFormula, frame: pd.DataFrame, formula: str, response_kind: str,
              columns: dict | None = None):
    """(y, response): y a float vector for numeric responses, response as given to families.
    ``columns``: the used columns of ``frame`` by name when already looked up."""
    columns = {} if columns is None else columns
    text = parsed.response.strip()
    pieces = _cbind_arguments(text)
    if pieces is not None:
        if response_kind == "numeric":
            raise FormulaError(
                f"a cbind(successes, failures) response {text!r} is for binomial glmer models, "
                "not lmer")
        if len(pieces) != 2 or not all(pieces):
            raise FormulaError(f"cbind() needs two arguments (successes, failures): {text!r}")
        where = f" of the response of formula {formula!r}"
        s_, f_ = (_numeric_values(evaluate(p, frame, where=where, looked_up=columns), p,
                                  "cbind() argument") for p in pieces)
        return None, BinomialCounts(s_, f_)
    if text.strip("`") in columns:
        response = columns[text.strip("`")]
    elif text.strip("`") in frame.columns:
        response = frame[text.strip("`")]
        if isinstance(response, pd.DataFrame):
            raise DataError(f"column name {text!r} appears more than once in the data")
    else:
        response = pd.Series(evaluate(text, frame, where=f" (the response of {formula!r})",
                                      looked_up=columns), index=frame.index, name=text)
    if response_kind != "numeric":
        return None, response
    if response.dtype.kind not in "biuf":
        raise DataError(f"response {text!r} must be numeric, got dtype {response.dtype}")
    y = np.ascontiguousarray(float_values(response))
    if not np.all(np.isfinite(y)):
        raise DataError(f"response {text!r} has non-finite values")
    return y, response


def warn_dropped_columns(dropped: list[str], stacklevel: int) -> None:
    """lme4's warning for aliased fixed-effect columns that the fit drops."""
    s = "s" if len(dropped) > 1 else ""
    warnings.warn(f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
                  f"column{s} / coefficient{s}: {', '.join(dropped)}", stacklevel=stacklevel)


def _fixed_effects(X: np.ndarray, column_names, r_names: dict, rhs: str):
    """X without aliased columns (with lme4's warning), its names, the dropped names, the
    keep-mask, and X's QR factors if the check computed them for the X returned (or None)."""
    names = rename(column_names, r_names, rhs)
    if not np.isfinite(X).all():
        bad = [names[j] for j in range(X.shape[1]) if not np.all(np.isfinite(X[:, j]))]
        raise DataError(f"fixed-effect column(s) {bad} have non-finite values")
    keep, qr = _aliased_columns(X)
    dropped = [nm for nm, k in zip(names, keep) if not k]
    if dropped:
        qr = None
        warn_dropped_columns(dropped, stacklevel=5)
        X = np.asfortranarray(X[:, keep])
        names = [nm for nm, k in zip(names, keep) if k]
    return X, names, dropped, keep, qr


def _random_terms(parsed, mats, r_names, frame) -> tuple[list[GroupTerm], list[int]]:
    """The bar terms in lme4's order (decreasing number of levels, ties in formula order),
    and the formula position of each."""
    terms = []
    for k, t in enumerate(parsed.re_terms):
        Z, column_names = mats[f"re{k}"]
        if Z.shape[1] == 0:
            raise FormulaError(f"random-effects term '({t.lhs} | {t.name})' has no columns")
        if not np.isfinite(Z).all():
            raise DataError(f"random-effects term '({t.lhs} | {t.name})' has non-finite values")
        codes, levels = _codes(frame, t.group)
        terms.append(GroupTerm(group=t.name, columns=rename(column_names, r_names, t.lhs),
                               lhs=t.lhs, group_cols=t.group, codes=codes, levels=levels, Z=Z))
    order = sorted(range(len(terms)), key=lambda i: -terms[i].nlevels)
    return [terms[i] for i in order], order


def _matrices(parsed, df, columns, used, mask, formula):
    """({piece: (matrix column-major, formulaic's column names)}, R names of Python factors,
    formulaic's model specs or None): built directly for simple formulas (the specs then on
    first use), by formulaic otherwise. ``columns``: the used columns of the complete rows."""
    ordered = _ordered_factors(columns, used)
    simple = simple_model_matrices(parsed, columns, int(mask.sum()), ordered)
    if simple is not None:
        return simple, {}, None
    mms, r_names = model_matrices(parsed, df, used, mask, ordered, formula)
    mats = {key: (np.asarray(mms[key], dtype=np.float64, order="F"),
                  mms[key].model_spec.column_names) for key in _pieces(parsed)}
    return mats, r_names, {key: mms[key].model_spec for key in _pieces(parsed)}


def _pieces(parsed: ParsedFormula) -> list[str]:
    """The names of the model matrices of a formula: "fixed", then "re0", "re1", ..."""
    return ["fixed"] + [f"re{k}" for k in range(len(parsed.re_terms))]


def _check_sizes(terms: list[GroupTerm], n: int, p: int, lmm: bool) -> None:
    if p > n or (lmm and p == n):
        raise DataError(f"{p} fixed-effect columns for {n} observations: no residual degrees "
                        "of freedom are left (need more rows than fixed-effect coefficients)")
    for t in terms:
        if t.nlevels < 2:
            raise DataError(
                f"grouping factor {t.group!r} has only {t.nlevels} level; a random effect needs at least 2"
            )
        if lmm and t.nlevels >= n:
            raise DataError(
                f"grouping factor {t.group!r} has {t.nlevels} levels for {n} observations: "
                "the number of levels of each grouping factor must be < number of observations"
            )
        if lmm and t.nlevels * t.p >= n:
            raise DataError(
                f"number of observations ({n}) <= number of random effects ({t.nlevels * t.p}) "
                f"for term '({t.lhs} | {t.group})'; the random-effects parameters and the residual "
                "variance are probably unidentifiable"
            )


def _weights(weights, frame, index, n_rows):
    if weights is None:
        return None
    w = np.ascontiguousarray(_numeric_vector(weights, frame, index, "weights", n_rows))
    bad = np.flatnonzero(~np.isfinite(w) | (w <= 0))
    if bad.size:
        row = frame.index[bad[0]]
        raise DataError(f"weights must be positive and finite; row {row!r} has weight "
                        f"{float(w[bad[0]])!r}")
    return w


def _numeric_values(values, expr: str, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise DataError(f"{what} {expr!r} must be numeric, got dtype {values.dtype}")
    return values.astype(np.float64)


def _offset(offset, parsed, frame, index, n_rows, formula):
    off = None if offset is None else _numeric_vector(offset, frame, index, "offset", n_rows)
    for o_expr in parsed.offsets:
        o = _numeric_values(evaluate(o_expr, frame, where=f" (offset of {formula!r})"),
                            o_expr, "offset")
        off = o if off is None else off + o
    if off is None:
        return None
    off = np.ascontiguousarray(off)
    if not np.all(np.isfinite(off)):
        raise DataError("offset has non-finite values")
    return off


@functools.lru_cache(maxsize=256)
def _parse_cached(formula: str) -> ParsedFormula:
    return parse_formula(formula)


def build_design(
    formula: str,
    data,
    *,
    weights=None,
    offset=None,
    lmm: bool = True,
    response_kind: str = "numeric",
) -> Design:
    parsed = _parse_cached(formula) if isinstance(formula, str) else parse_formula(formula)
    df = as_pandas(data)
    n_rows = len(df)  # (df.shape also counts the columns, an Arrow-backed Index's length)
    if n_rows == 0:
        raise DataError("data has no rows")
    extra = [w for w in (weights, offset) if isinstance(w, str)]
    for val, what in ((weights, "weights"), (offset, "offset")):
        if isinstance(val, str) and val not in df.columns:
            raise DataError(f"{what} column {val!r} is not in the data")
    used = _used_columns(parsed, df, extra)
    _check_columns(df, used)
    columns = {c: df[c] for c in used}  # each looked up once: pandas' lookups are not cheap
    mask = _complete_rows(df, used, weights, offset, columns)
    n_dropped = int(n_rows - mask.sum())
    index = np.flatnonzero(mask) if n_dropped else np.arange(n_rows)
    frame = df.iloc[index] if n_dropped else df
    if n_dropped == n_rows:
        raise DataError("no rows left after dropping rows with missing values")
    if n_dropped:
        columns = {c: frame[c] for c in used}

    mats, r_names, specs = _matrices(parsed, df, columns, used, mask, formula)
    y, response = _response(parsed, frame, formula, response_kind, columns)
    X, names, dropped, keep, qr = _fixed_effects(*mats["fixed"], r_names, parsed.fixed)
    terms, order = _random_terms(parsed, mats, r_names, columns)
    _check_sizes(terms, X.shape[0], X.shape[1], lmm)
    return Design(
        parsed=parsed,
        columns=columns,
        used=used,
        y=y,
        response=response,
        X=X,
        fixed_names=names,
        dropped_fixed=dropped,
        terms=terms,
        weights=_weights(weights, frame, index, n_rows),
        offset=_offset(offset, parsed, frame, index, n_rows, formula),
        n_dropped_na=n_dropped,
        keep_fixed=keep,
        term_order=order,
        specs=specs,
        x_qr=None if qr is None else (X, *qr),
    )
