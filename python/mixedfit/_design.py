"""From a formula and a data frame to the arrays the core takes, built once.

Validation lives here: every error names the column, term or value at fault, and the caller's
frame is never modified (we only read from it and build new arrays).
"""

from __future__ import annotations

import ast
import functools
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._errors import DataError, FormulaError, MixedfitError
from ._formula import ParsedFormula, _split_top, identifiers, parse_formula, to_formulaic
from ._rexpr import MATH_FUNCTIONS, RHS_FUNCTIONS, check, deparse, evaluate, factor, parse

__all__ = ["Design", "GroupTerm", "build_design", "as_pandas", "lme4_column_name"]

_LEVEL = re.compile(r"\[(?:T\.)?([^\]]*)\]")


def lme4_column_name(name: str) -> str:
    """formulaic's column names in lme4's spelling: ``f[T.b]`` -> ``fb``, ``Intercept`` -> ``(Intercept)``."""
    if name == "Intercept":
        return "(Intercept)"
    return _LEVEL.sub(r"\1", name)


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
    source: pd.DataFrame            # the caller's frame, or its rows without missing values
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
    fixed_spec: object = None
    term_specs: list = field(default_factory=list)
    keep_fixed: np.ndarray | None = None
    r_names: dict = field(default_factory=dict)  # formulaic's spelling of a term -> R's

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def index(self) -> pd.Index:
        """Row labels of the observations used."""
        return self.source.index

    @functools.cached_property
    def frame(self) -> pd.DataFrame:
        """The model frame: used columns of the rows used (built on first access)."""
        return self.source[self.used]

    @property
    def p(self) -> int:
        return self.X.shape[1]


def _used_columns(parsed: ParsedFormula, df: pd.DataFrame, extra: list[str]) -> list[str]:
    cols = set(df.columns)
    exprs = [parsed.response, parsed.fixed, *parsed.offsets]
    for t in parsed.re_terms:
        exprs.append(t.lhs)
    used = []
    for e in exprs:
        for tok in identifiers(e):
            if tok in cols and tok not in used:
                used.append(tok)
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


def _codes(frame: pd.DataFrame, cols: tuple[str, ...]) -> tuple[np.ndarray, pd.Index]:
    """Level codes (sorted levels; categorical columns keep their category order)."""
    parts = []
    for c in cols:
        s = frame[c]
        if isinstance(s.dtype, pd.CategoricalDtype):
            s = s.cat.remove_unused_categories()
            codes = s.cat.codes.to_numpy()
            labels = pd.Index(s.cat.categories)
        else:
            if s.dtype.kind == "f" and not np.all(np.isfinite(s.to_numpy())):
                raise DataError(f"grouping factor {c!r} has non-finite values")
            codes, labels = pd.factorize(s, sort=True)
            labels = pd.Index(labels)
        parts.append((np.asarray(codes, dtype=np.int64), labels))
    if len(parts) == 1:
        codes, labels = parts[0]
        return codes.astype(np.int32), labels
    key = np.zeros(len(frame), dtype=np.int64)
    for codes, labels in parts:
        key = key * len(labels) + codes
    uniq, inv = np.unique(key, return_inverse=True)
    lab = []
    for u in uniq:
        pieces = []
        for codes, labels in reversed(parts):
            pieces.append(str(labels[u % len(labels)]))
            u //= len(labels)
        lab.append(":".join(reversed(pieces)))
    return inv.astype(np.int32), pd.Index(lab)


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
    """Keep-mask of fixed-effect columns; later columns in the span of earlier ones are dropped.

    Column j is kept when its distance from the span of the columns before it (the j-th
    diagonal entry of an unpivoted QR) is not negligible against its norm."""
    n, p = X.shape
    norms = np.linalg.norm(X, axis=0)
    scale = np.maximum(norms, np.finfo(float).tiny)
    if p <= n:
        d = np.abs(np.diag(np.linalg.qr(X, mode="r"))) if p else np.zeros(0)
        return (d > 1e-7 * scale) & (norms > 0)
    keep = np.zeros(p, dtype=bool)  # more columns than rows: at most n survive
    kept: list[int] = []
    for j in range(p):
        if len(kept) == n:
            break
        last = np.linalg.qr(X[:, kept + [j]], mode="r")[-1, -1]
        if norms[j] > 0 and abs(last) > 1e-7 * scale[j]:
            keep[j] = True
            kept.append(j)
    return keep


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: formulaic transforms whose values depend on all the rows they see (R evaluates them on every
#: non-missing value of their argument, before incomplete rows are dropped).
_STATEFUL = frozenset({"scale", "center", "standardize", "poly", "bs", "cr", "cs", "cc"})


def _plain(exc: BaseException) -> str:
    """An exception's message without terminal colour codes, on one line."""
    return " ".join(_ANSI.sub("", str(exc)).split())


@functools.lru_cache(maxsize=256)
def _parse_cached(formula: str) -> ParsedFormula:
    return parse_formula(formula)


@functools.lru_cache(maxsize=1024)
def _formula_piece(expr: str, ordered: frozenset):
    """formulaic's Formula for one R right-hand side (parsing is cached; formulas are
    immutable). Its terms are checked against the data's columns by ``_check_piece``."""
    import formulaic

    py = to_formulaic(expr, ordered)
    try:
        return formulaic.Formula(py)
    except FormulaError:
        raise
    except Exception as exc:  # formulaic's own syntax errors are not ValueErrors
        raise FormulaError(f"cannot parse the formula terms {expr!r}: {_plain(exc)}") from None


def _python_factors(formula) -> list[str]:
    """The expressions formulaic would evaluate as Python for ``formula``."""
    return [fa.expr for term in formula for fa in term.factors
            if fa.eval_method.value == "python"]


def _check_piece(formula, columns, ordered: frozenset) -> None:
    """Every Python expression of ``formula`` passes the whitelist before formulaic evals it."""
    for expr in _python_factors(formula):
        check(expr, _r_text(expr, ordered), columns, RHS_FUNCTIONS)


def _r_text(expr: str, ordered: frozenset) -> str:
    try:
        return deparse(expr, ordered)
    except Exception:  # shown in a message only
        return expr


def _r_names(formula, ordered: frozenset) -> dict[str, str]:
    """formulaic's spelling of each Python factor -> R's (``I(x ** 2)`` -> ``I(x^2)``)."""
    return {e: _r_text(e, ordered) for e in _python_factors(formula)}


def _rename(names, r_names: dict[str, str], rhs: str) -> list[str]:
    """Column names as lme4 prints them: R's spelling of each factor, the factors of an
    interaction in the order the formula ``rhs`` first names them (R's ``terms`` order:
    ``temp %in% recipe`` after ``recipe`` gives ``recipeA:temp``), then lme4's levels.

    R names a one-column matrix term (``poly(x, 1)``) without formulaic's ``[1]`` suffix."""
    names = list(names)
    single = {py for py in r_names
              if sum(nm.startswith(py + "[") for nm in names) == 1 and py + "[1]" in names
              and py.split("(", 1)[0] in _STATEFUL}
    out = []
    for nm in names:
        for py in single:
            nm = nm.replace(py + "[1]", py)
        for py in sorted(r_names, key=len, reverse=True):
            if py != r_names[py]:
                nm = nm.replace(py, r_names[py])
        out.append(lme4_column_name(_in_formula_order(nm, rhs)))
    return out


def _in_formula_order(name: str, rhs: str) -> str:
    """The ``:``-joined factors of a column name, ordered by first mention in ``rhs``."""
    pieces = [p for _, p in _split_top(name, ":")]
    if len(pieces) < 2:
        return name

    def first_mention(piece: str) -> int:
        pos = rhs.find(piece.split("[", 1)[0])
        return pos if pos >= 0 else len(rhs)

    return ":".join(sorted(pieces, key=first_mention))


def _nan_mean(data):
    return np.nanmean(np.asarray(data, dtype=float), axis=0)


def _r_center(data, _state=None):
    """R's ``scale(x, scale = FALSE)``: the mean of the non-missing values."""
    if "center" not in _state:
        _state["center"] = _nan_mean(data)
    return np.asarray(data, dtype=float) - _state["center"]


def _r_scale(data, center=True, scale=True, _state=None):
    """R's ``scale(x)``: centre and divide by the SD of the non-missing values."""
    x = np.asarray(data, dtype=float)
    if "center" not in _state:
        _state["center"] = _nan_mean(x) if center is True else (None if center is False
                                                                 else np.asarray(center, float))
    if _state["center"] is not None:
        x = x - _state["center"]
    if "scale" not in _state:
        n = np.sum(~np.isnan(x), axis=0)
        _state["scale"] = (np.sqrt(np.nansum(x**2, axis=0) / (n - 1)) if scale is True
                           else (None if scale is False else np.asarray(scale, float)))
    return x if _state["scale"] is None else x / _state["scale"]


def _r_poly(x, degree=1, raw=False, _state=None):
    """R's ``poly(x, degree)`` (formulaic's, which matches it), refusing as R does a degree
    that the distinct values of x cannot carry."""
    from formulaic.transforms import poly

    values = np.asarray(x, dtype=float)
    if not _state:
        distinct = np.unique(values[~np.isnan(values)]).size
        if not isinstance(degree, (int, np.integer)) or degree < 1:
            raise DataError(f"poly(): degree must be a positive integer, got {degree!r}")
        if degree >= distinct:
            raise DataError(f"poly(): degree {degree} must be less than the number of distinct "
                            f"values ({distinct})")
    return poly(values, degree, raw, _state=_state)


@functools.lru_cache(maxsize=1)
def formulaic_context() -> dict:
    """The names formulaic may resolve besides the data's columns: the whitelisted functions."""
    from formulaic.transforms import stateful_transform

    return {**MATH_FUNCTIONS, "factor": factor,
            "scale": stateful_transform(_r_scale), "center": stateful_transform(_r_center),
            "poly": stateful_transform(_r_poly)}


def _stateful_columns(formulas, columns) -> set:
    """Columns that appear inside a stateful transform (scale(x), poly(x, 2), ...)."""
    cols = set(columns)
    out = set()
    for f in formulas:
        for expr in _python_factors(f):
            tree, aliases = parse(expr, expr)
            names = dict(aliases)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id in _STATEFUL):
                    for sub in ast.walk(node):
                        if isinstance(sub, ast.Name) and names.get(sub.id, sub.id) in cols:
                            out.add(names.get(sub.id, sub.id))
    return out


def _evaluation_frame(df: pd.DataFrame, used: list[str], mask: np.ndarray,
                      stateful: set) -> pd.DataFrame:
    """The frame formulaic evaluates, in R's model-frame order.

    R evaluates each variable on all rows, drops incomplete rows afterwards and then drops the
    factor levels no remaining row has. So when rows are dropped, columns inside stateful
    transforms keep every row (``scale(x)`` uses every non-missing x) and the other columns are
    made missing on the dropped rows; categoricals lose their unused categories either way."""
    full = bool(stateful) and not mask.all()
    rows = df if full or mask.all() else df.iloc[np.flatnonzero(mask)]
    kept = mask if full else np.ones(rows.shape[0], dtype=bool)
    out, changed = {}, full
    for c in used:
        col = rows[c]
        if full and not (c in stateful and col.dtype.kind in "biuf"):
            col = (col.astype(float) if col.dtype.kind in "iub" else col).where(kept)
        if isinstance(col.dtype, pd.CategoricalDtype):
            trimmed = col.cat.remove_unused_categories()
            changed |= len(trimmed.cat.categories) != len(col.cat.categories)
            col = trimmed
        out[c] = col
    return pd.DataFrame(out, index=rows.index) if changed else rows


def _model_matrices(parsed: ParsedFormula, df: pd.DataFrame, used: list[str],
                    mask: np.ndarray, ordered: frozenset, formula: str):
    """formulaic's model matrices for the fixed part and each bar term's left side, on the
    complete rows; and the R spelling of their Python factors."""
    import formulaic

    pieces = {"fixed": _formula_piece(parsed.fixed, ordered)}
    for k, t in enumerate(parsed.re_terms):
        pieces[f"re{k}"] = _formula_piece(t.lhs, ordered)
    for f in pieces.values():
        _check_piece(f, df.columns, ordered)
    stateful = _stateful_columns(pieces.values(), used)
    frame = _evaluation_frame(df, used, mask, stateful)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            mms = formulaic.model_matrix(
                formulaic.Formula(**pieces), frame, context=formulaic_context(),
                na_action="ignore" if frame.shape[0] != mask.sum() else "raise", output="numpy")
    except (FormulaError, DataError):
        raise
    except Exception as exc:
        raise _formulaic_error(exc, formula) from None
    r_names = {}
    for f in pieces.values():
        r_names.update(_r_names(f, ordered))
    if frame.shape[0] != mask.sum():
        keep = np.flatnonzero(mask)
        mms = {k: _RowsOf(mms[k], keep) for k in pieces}
    return mms, r_names


class _RowsOf:
    """A model matrix restricted to some rows, keeping formulaic's model_spec."""

    def __init__(self, mm, rows):
        self.model_spec = mm.model_spec
        self.array = np.asarray(mm)[rows]
        self.shape = self.array.shape

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype)


def _formulaic_error(exc: Exception, formula: str) -> MixedfitError:
    """formulaic's (and numpy's, pandas') errors restated as ours, naming the term."""
    msg = _plain(exc)
    m = re.search(r"`([^`]+)` is not present in the dataset", msg)
    if m:
        return FormulaError(f"unknown column {m.group(1)!r} in formula {formula!r}")
    m = re.search(r"name '([^']+)' is not defined", msg)
    if m:
        return FormulaError(f"unknown column {m.group(1)!r} in formula {formula!r} "
                            "(not a column of the data nor a known function)")
    m = re.search(r"Error evaluating factor `([^`]+)`", msg)
    term = f" in the term {m.group(1)!r}" if m else ""
    return FormulaError(f"cannot build the model matrices for {formula!r}{term}: {msg}")


def _complete_rows(df: pd.DataFrame, used: list[str], weights, offset) -> np.ndarray:
    """Rows with no missing value in a used column (pandas' NA and pyarrow nulls included)."""
    n_rows = df.shape[0]
    mask = np.ones(n_rows, dtype=bool)
    for c in used:
        col = df[c]
        if isinstance(col.dtype, np.dtype) and col.dtype.kind in "biu":
            continue
        mask &= ~col.isna().to_numpy(dtype=bool)
    for extra_vec in (weights, offset):
        if extra_vec is not None and not isinstance(extra_vec, str):
            arr = np.asarray(extra_vec)
            if arr.ndim == 1 and arr.shape[0] == n_rows and arr.dtype.kind in "biuf":
                mask &= ~np.isnan(arr.astype(float))
    return mask


def _check_columns(df: pd.DataFrame, used: list[str]) -> None:
    dup = df.columns[df.columns.duplicated()]
    bad = [c for c in used if c in set(dup)]
    if bad:
        raise DataError(f"column name(s) {bad} appear more than once in the data")


def _ordered_factors(df: pd.DataFrame, used: list[str]) -> frozenset:
    return frozenset(c for c in used if isinstance(df[c].dtype, pd.CategoricalDtype)
                     and df[c].dtype.ordered)


def _response(parsed: ParsedFormula, frame: pd.DataFrame, formula: str, response_kind: str):
    """(y, response): y a float vector for numeric responses, response as given to families."""
    text = parsed.response.strip()
    cbind = re.fullmatch(r"cbind\((.*)\)", text, flags=re.S)
    if cbind:
        if response_kind == "numeric":
            raise FormulaError(
                f"a cbind(successes, failures) response {text!r} is for binomial glmer models, "
                "not lmer")
        pieces = [p.strip() for _, p in _split_top(cbind.group(1), ",")]
        if len(pieces) != 2 or not all(pieces):
            raise FormulaError(f"cbind() needs two arguments (successes, failures): {text!r}")
        where = f" of the response of formula {formula!r}"
        s_, f_ = (_numeric_values(evaluate(p, frame, where=where), p, "cbind() argument")
                  for p in pieces)
        return None, pd.DataFrame({"successes": s_, "failures": f_}, index=frame.index)
    if text.strip("`") in frame.columns:
        response = frame[text.strip("`")]
        if isinstance(response, pd.DataFrame):
            raise DataError(f"column name {text!r} appears more than once in the data")
    else:
        response = pd.Series(evaluate(text, frame, where=f" (the response of {formula!r})"),
                             index=frame.index, name=text)
    if response_kind != "numeric":
        return None, response
    if response.dtype.kind not in "biuf":
        raise DataError(f"response {text!r} must be numeric, got dtype {response.dtype}")
    y = np.ascontiguousarray(response.to_numpy(dtype=np.float64, na_value=np.nan))
    if not np.all(np.isfinite(y)):
        raise DataError(f"response {text!r} has non-finite values")
    return y, response


def _fixed_effects(mm, r_names: dict, rhs: str) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    """X without aliased columns (with lme4's warning), its names, the dropped names, the mask."""
    names = _rename(mm.model_spec.column_names, r_names, rhs)
    X = np.asarray(mm, dtype=np.float64, order="F")
    if not np.all(np.isfinite(X)):
        bad = [names[j] for j in range(X.shape[1]) if not np.all(np.isfinite(X[:, j]))]
        raise DataError(f"fixed-effect column(s) {bad} have non-finite values")
    keep = _check_aliased(X, names)
    dropped = [nm for nm, k in zip(names, keep) if not k]
    if dropped:
        s = "s" if len(dropped) > 1 else ""
        warnings.warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column{s} / coefficient{s}: {', '.join(dropped)}",
            stacklevel=4,
        )
        X = np.asfortranarray(X[:, keep])
        names = [nm for nm, k in zip(names, keep) if k]
    return X, names, dropped, keep


def _random_terms(parsed, mms, r_names, frame) -> tuple[list[GroupTerm], list]:
    """The bar terms in lme4's order (decreasing number of levels, ties in formula order)."""
    terms, specs = [], []
    for k, t in enumerate(parsed.re_terms):
        Zdf = mms[f"re{k}"]
        if Zdf.shape[1] == 0:
            raise FormulaError(f"random-effects term '({t.lhs} | {t.name})' has no columns")
        Z = np.asarray(Zdf, dtype=np.float64, order="F")
        if not np.all(np.isfinite(Z)):
            raise DataError(f"random-effects term '({t.lhs} | {t.name})' has non-finite values")
        codes, levels = _codes(frame, t.group)
        terms.append(GroupTerm(group=t.name, columns=_rename(Zdf.model_spec.column_names, r_names, t.lhs),
                               lhs=t.lhs, group_cols=t.group, codes=codes, levels=levels, Z=Z))
        specs.append(Zdf.model_spec)
    order = sorted(range(len(terms)), key=lambda i: -terms[i].nlevels)
    return [terms[i] for i in order], [specs[i] for i in order]


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
    if df.shape[0] == 0:
        raise DataError("data has no rows")
    extra = [w for w in (weights, offset) if isinstance(w, str)]
    for val, what in ((weights, "weights"), (offset, "offset")):
        if isinstance(val, str) and val not in df.columns:
            raise DataError(f"{what} column {val!r} is not in the data")
    used = _used_columns(parsed, df, extra)
    _check_columns(df, used)
    mask = _complete_rows(df, used, weights, offset)
    n_rows = df.shape[0]
    n_dropped = int(n_rows - mask.sum())
    index = np.flatnonzero(mask) if n_dropped else np.arange(n_rows)
    frame = df.iloc[index] if n_dropped else df
    if frame.shape[0] == 0:
        raise DataError("no rows left after dropping rows with missing values")

    ordered = _ordered_factors(df, used)
    mms, r_names = _model_matrices(parsed, df, used, mask, ordered, formula)
    y, response = _response(parsed, frame, formula, response_kind)
    X, names, dropped, keep = _fixed_effects(mms["fixed"], r_names, parsed.fixed)
    terms, specs = _random_terms(parsed, mms, r_names, frame)
    _check_sizes(terms, X.shape[0], X.shape[1], lmm)
    return Design(
        parsed=parsed,
        source=frame,
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
        fixed_spec=mms["fixed"].model_spec,
        term_specs=specs,
        keep_fixed=keep,
        r_names=r_names,
    )


def newdata_matrix(spec, newdata: pd.DataFrame, what: str, r_names: dict | None = None) -> np.ndarray:
    """A stored model matrix evaluated on new rows; a factor level the fit never saw is a
    DataError naming it (lme4 refuses them too), not formulaic's warning and a row of zeros."""
    import formulaic  # noqa: F401  (the spec needs it)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mm = spec.get_model_matrix(newdata, na_action="raise", context=formulaic_context())
        except (FormulaError, DataError):
            raise
        except Exception as exc:
            raise _formulaic_error(exc, what) from None
    for w in caught:
        m = re.search(r"outside of the nominated levels.*?: (\{.*?\})", _plain(w.message))
        if m:
            raise DataError(f"newdata has level(s) {m.group(1)} of a fixed-effect factor in "
                            f"{what!r} that the fitted data does not have")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return np.asarray(mm, dtype=float)
