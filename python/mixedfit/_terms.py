"""From R's right-hand sides to formulaic's model matrices, with R's names and R's order.

``model_matrices`` hands formulaic only whitelisted expressions (``_rexpr.check``), evaluates
them in R's model-frame order (stateful transforms see every non-missing value before
incomplete rows are dropped), and reports formulaic's spelling of each term with R's, so that
columns are named as lme4 names them (``I(Days^2)``, ``factor(Days)1``, ``temperature.L``).
``newdata_matrix`` evaluates a stored spec on new rows for ``predict``.
"""

from __future__ import annotations

import ast
import functools
import re
import warnings

import numpy as np
import pandas as pd

from ._errors import DataError, FormulaError, MixedfitError
from ._formula import ParsedFormula, _split_top, to_formulaic
from ._rexpr import MATH_FUNCTIONS, RHS_FUNCTIONS, check, deparse, factor, parse

__all__ = ["model_matrices", "newdata_matrix", "rename", "lme4_column_name",
           "drop_unused_categories"]

_LEVEL = re.compile(r"\[(?:T\.)?([^\]]*)\]")


def lme4_column_name(name: str) -> str:
    """formulaic's column names in lme4's spelling: ``f[T.b]`` -> ``fb``, ``Intercept`` -> ``(Intercept)``."""
    if name == "Intercept":
        return "(Intercept)"
    return _LEVEL.sub(r"\1", name)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: formulaic transforms whose values depend on all the rows they see (R evaluates them on every
#: non-missing value of their argument, before incomplete rows are dropped).
_STATEFUL = frozenset({"scale", "center", "standardize", "poly", "bs", "cr", "cs", "cc"})


def _plain(exc: BaseException) -> str:
    """An exception's message without terminal colour codes, on one line."""
    return " ".join(_ANSI.sub("", str(exc)).split())


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


def rename(names, r_names: dict[str, str], rhs: str) -> list[str]:
    """Column names as lme4 prints them: R's spelling of each factor, the factors of an
    interaction in the order the formula ``rhs`` first names them (R's ``terms`` order:
    ``temp %in% recipe`` after ``recipe`` gives ``recipeA:temp``), then lme4's levels.

    R names a one-column matrix term (``poly(x, 1)``) without formulaic's ``[1]`` suffix."""
    return list(_rename(tuple(names), tuple(r_names.items()), rhs))


@functools.lru_cache(maxsize=256)
def _rename(names: tuple, r_items: tuple, rhs: str) -> tuple:
    """``rename`` on hashable arguments (a model refitted is named once)."""
    r_names = dict(r_items)
    names = list(names)
    single = {py for py in r_names
              if sum(nm.startswith(py + "[") for nm in names) == 1 and py + "[1]" in names
              and py.split("(", 1)[0] in _STATEFUL}
    names = _numbered_contrasts(names)
    out = []
    for nm in names:
        for py in single:
            nm = nm.replace(py + "[1]", py)
        for py in sorted(r_names, key=len, reverse=True):
            if py != r_names[py]:
                nm = nm.replace(py, r_names[py])
        out.append(lme4_column_name(_in_formula_order(nm, rhs)))
    return tuple(out)


_CODED_LEVEL = re.compile(r"(?P<factor>[^:\[]*(?:\([^\[]*\))?)\[(?:S|H)\.(?P<level>[^\]]*)\]")


def _numbered_contrasts(names: list[str]) -> list[str]:
    """R numbers the columns of sum and Helmert contrasts (``C(f, contr.sum)1``); formulaic
    names them by level (``[S.a]``)."""
    numbers: dict[tuple[str, str], int] = {}

    def number(m) -> str:
        key = (m.group("factor"), m.group("level"))
        if key not in numbers:
            numbers[key] = 1 + sum(f == key[0] for f, _ in numbers)
        return f"{m.group('factor')}[{numbers[key]}]"

    return [_CODED_LEVEL.sub(number, nm) for nm in names]


def _in_formula_order(name: str, rhs: str) -> str:
    """The ``:``-joined factors of a column name, ordered by first mention in ``rhs``."""
    try:
        pieces = [p for _, p in _split_top(name, ":")]
    except FormulaError:  # a level label with an unmatched parenthesis: keep formulaic's order
        return name
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

    return {**MATH_FUNCTIONS, "factor": factor, "I": _r_as_is,
            "scale": stateful_transform(_r_scale), "center": stateful_transform(_r_center),
            "poly": stateful_transform(_r_poly)}


def columns_in_calls(formulas, columns, functions) -> set:
    """Columns that appear inside a call of one of ``functions`` (by name) in the formulas'
    factor expressions, e.g. ``scale(x)``, ``poly(x, 2)`` or ``factor(h)``."""
    cols = set(columns)
    out = set()
    for f in formulas:
        for expr in _python_factors(f):
            tree, aliases = parse(expr, expr)
            names = dict(aliases)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id in functions):
                    for sub in ast.walk(node):
                        if isinstance(sub, ast.Name) and names.get(sub.id, sub.id) in cols:
                            out.add(names.get(sub.id, sub.id))
    return out


def _stateful_columns(formulas, columns) -> set:
    """Columns that appear inside a stateful transform (scale(x), poly(x, 2), ...)."""
    return columns_in_calls(formulas, columns, _STATEFUL)


def drop_unused_categories(col: pd.Series) -> pd.Series:
    """``col`` without the categories no row has (``col`` itself when all are used; counting
    the codes is much cheaper than pandas' sort-based ``remove_unused_categories``)."""
    values = col.array  # (each Series.array builds an accessor)
    ncat = len(values.categories)
    seen = np.zeros(ncat + 1, dtype=bool)
    seen[values.codes] = True  # a missing value's code -1 marks the spare last slot
    used = seen[:ncat]
    if used.all():
        return col
    return col.cat.remove_categories(col.cat.categories[~used])


def _is_logical(values) -> bool:
    dtype = getattr(values, "dtype", None)
    return dtype is not None and (dtype == bool or str(dtype) in ("boolean", "bool[pyarrow]"))


def r_logical(values) -> pd.Series:
    """R's model frame treats a logical as a factor with levels FALSE, TRUE (``bTRUE``)."""
    s = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values))
    labels = pd.Series(np.where(s.fillna(False).to_numpy(dtype=bool), "TRUE", "FALSE"),
                       index=s.index).where(s.notna())
    return labels.astype(pd.CategoricalDtype(["FALSE", "TRUE"]))


def _r_as_is(x):
    """``I(x)``; a logical result is a factor, as in R's model frame (``I(x > 2)TRUE``)."""
    return r_logical(x) if _is_logical(x) else x


def _with_r_logicals(frame: pd.DataFrame) -> pd.DataFrame:
    logical = [c for c in frame.columns if _is_logical(frame[c])]
    return frame.assign(**{c: r_logical(frame[c]) for c in logical}) if logical else frame


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
        if _is_logical(col):
            col, changed = r_logical(col), True
        if full and not (c in stateful and col.dtype.kind in "biuf"):
            col = (col.astype(float) if col.dtype.kind in "iub" else col).where(kept)
        if isinstance(col.dtype, pd.CategoricalDtype):
            trimmed = drop_unused_categories(col)
            changed |= trimmed is not col
            col = trimmed
        out[c] = col
    return pd.DataFrame(out, index=rows.index) if changed else rows


def model_matrices(parsed: ParsedFormula, df: pd.DataFrame, used: list[str],
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


def bar_term_columns(lhs: str, df: pd.DataFrame, ordered: frozenset) -> list[str]:
    """lme4's column names of a bar term's left side ``lhs`` evaluated on ``df`` (checked
    against the whitelist first, as every piece handed to formulaic is)."""
    import formulaic

    piece = _formula_piece(lhs, ordered)
    _check_piece(piece, df.columns, ordered)
    try:
        mm = formulaic.model_matrix(piece, df, context=formulaic_context(), na_action="ignore",
                                    output="numpy")
    except (FormulaError, DataError):
        raise
    except Exception as exc:
        raise _formulaic_error(exc, lhs) from None
    return rename(mm.model_spec.column_names, _r_names(piece, ordered), lhs)


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
    m = re.search(r"evaluat\w+ factor `([^`]+)`", msg)
    term = f" in the term {_r_text(m.group(1), frozenset())!r}" if m else ""
    cause = exc.__cause__
    if isinstance(cause, MixedfitError):  # raised by one of our transforms: keep its class
        return type(cause)(f"{cause}{term} of formula {formula!r}")
    if cause is not None:
        msg = f"{type(cause).__name__}: {_plain(cause)}"
    return FormulaError(f"cannot build the model matrices for {formula!r}{term}: {msg}")


def _newdata_error(exc: Exception, what: str) -> DataError:
    msg = _plain(exc)
    m = re.search(r"`([^`]+)` is not present in the dataset", msg)
    if m:
        return DataError(f"newdata has no column {m.group(1)!r} (used by {what!r})")
    m = re.search(r"`([^`]+)` contains null values", msg)
    if m:
        return DataError(f"newdata has missing values in {m.group(1)!r} (used by {what!r})")
    return DataError(f"newdata does not fit the columns of {what!r}: "
                     f"{_formulaic_error(exc, what)}")


def newdata_matrix(spec, newdata: pd.DataFrame, what: str) -> np.ndarray:
    """A stored model matrix evaluated on new rows; a factor level the fit never saw is a
    DataError naming it (lme4 refuses them too), not formulaic's warning and a row of zeros.
    The formula was fine for the fit, so whatever goes wrong here is newdata's fault."""
    dup = sorted(set(newdata.columns[newdata.columns.duplicated()]))
    if dup:
        raise DataError(f"newdata has column name(s) {dup} more than once")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mm = spec.get_model_matrix(_with_r_logicals(newdata), na_action="raise",
                                       context=formulaic_context())
        except DataError:
            raise
        except Exception as exc:
            raise _newdata_error(exc, what) from None
    for w in caught:
        m = re.search(r"outside of the nominated levels.*?: (\{.*?\})", _plain(w.message))
        if m:
            raise DataError(f"newdata has level(s) {m.group(1)} of a fixed-effect factor in "
                            f"{what!r} that the fitted data does not have")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return np.asarray(mm, dtype=float)
