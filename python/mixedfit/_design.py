"""From a formula and a data frame to the arrays the core takes, built once.

Validation lives here: every error names the column, term or value at fault, and the caller's
frame is never modified (we only read from it and build new arrays).
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._errors import DataError, FormulaError
from ._formula import ParsedFormula, identifiers, parse_formula

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
    """Keep-mask of fixed-effect columns; later columns in the span of earlier ones are dropped."""
    p = X.shape[1]
    if p == 0:
        return np.ones(0, dtype=bool)
    r = np.linalg.qr(X, mode="r")
    d = np.abs(np.diag(r))
    norms = np.linalg.norm(X, axis=0)
    keep = d > 1e-7 * np.maximum(norms, np.finfo(float).tiny)
    keep &= norms > 0
    return keep


_EXPR_FUNCS = {
    "np": np, "log": np.log, "log10": np.log10, "log2": np.log2, "log1p": np.log1p,
    "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs, "round": np.round,
    "I": lambda x: x,  # formulaic's (and R's) "as is"
}


@functools.lru_cache(maxsize=256)
def _compile_expression(expr: str):
    try:
        return compile(expr, "<formula>", "eval")
    except SyntaxError:
        raise FormulaError(f"cannot parse expression {expr!r}") from None


def _eval_expression(expr: str, frame: pd.DataFrame, formula: str) -> np.ndarray:
    """Evaluate a response, cbind() or offset() expression over the data's columns."""
    code = _compile_expression(expr)
    env = {}
    for name in code.co_names:
        if name in frame.columns:
            col = frame[name]
            env[name] = col.to_numpy() if col.dtype.kind in "biuf" else col
        elif name not in _EXPR_FUNCS and name not in env:
            if not any(name in getattr(v, "__dict__", {}) for v in _EXPR_FUNCS.values()):
                raise FormulaError(f"unknown column {name!r} in {expr!r} of formula {formula!r}")
    try:
        val = eval(code, {"__builtins__": {}, **_EXPR_FUNCS}, env)
    except FormulaError:
        raise
    except Exception as exc:
        raise FormulaError(f"cannot evaluate {expr!r} in formula {formula!r}: {exc}") from None
    val = np.asarray(val)
    if val.ndim == 0:
        val = np.full(len(frame), val)
    if val.shape != (len(frame),):
        raise FormulaError(f"{expr!r} in formula {formula!r} does not give one value per row")
    return val


@functools.lru_cache(maxsize=256)
def _parse_cached(formula: str) -> ParsedFormula:
    return parse_formula(formula)


@functools.lru_cache(maxsize=1024)
def _formula_piece(expr: str):
    """A parsed formulaic Formula for one right-hand side (parsing is cached; formulas are
    immutable)."""
    import formulaic

    return formulaic.Formula(expr)


def build_design(
    formula: str,
    data,
    *,
    weights=None,
    offset=None,
    lmm: bool = True,
    response_kind: str = "numeric",
) -> Design:
    import formulaic

    parsed = _parse_cached(formula) if isinstance(formula, str) else parse_formula(formula)
    df = as_pandas(data)
    if not isinstance(df, pd.DataFrame):
        raise DataError("data must be a DataFrame")
    if df.shape[0] == 0:
        raise DataError("data has no rows")
    extra = [w for w in (weights, offset) if isinstance(w, str)]
    for val, what in ((weights, "weights"), (offset, "offset")):
        if isinstance(val, str) and val not in df.columns:
            raise DataError(f"{what} column {val!r} is not in the data")
    used = _used_columns(parsed, df, extra)
    n_rows = df.shape[0]
    mask = np.ones(n_rows, dtype=bool)
    for c in used:
        col = df[c]
        if col.dtype.kind in "biu":
            continue
        mask &= ~(np.isnan(col.to_numpy()) if col.dtype.kind == "f" else col.isna().to_numpy())
    for extra_vec, what in ((weights, "weights"), (offset, "offset")):
        if extra_vec is not None and not isinstance(extra_vec, str):
            arr = np.asarray(extra_vec)
            if arr.ndim == 1 and arr.shape[0] == n_rows and arr.dtype.kind in "biuf":
                mask &= ~np.isnan(arr.astype(float))
    n_dropped = int(n_rows - mask.sum())
    index = np.flatnonzero(mask) if n_dropped else np.arange(n_rows)
    frame = df.iloc[index] if n_dropped else df
    if frame.shape[0] == 0:
        raise DataError("no rows left after dropping rows with missing values")

    # One formulaic call for the fixed part and every random-effects left side.
    F = _formula_piece
    parts = {"fixed": F(parsed.fixed)}
    for k, t in enumerate(parsed.re_terms):
        parts[f"re{k}"] = F(t.lhs)
    simple_resp = parsed.response.strip("`") in frame.columns
    cbind = re.fullmatch(r"cbind\((.*)\)", parsed.response.strip())
    if cbind:
        from ._formula import _split_top

        pieces = [p.strip() for _, p in _split_top(cbind.group(1), ",")]
        if len(pieces) != 2 or not all(pieces):
            raise FormulaError(f"cbind() needs two arguments (successes, failures): {parsed.response!r}")
    try:
        mms = formulaic.model_matrix(formulaic.Formula(**parts), frame, na_action="raise",
                                     output="numpy")
    except Exception as exc:  # formulaic's errors name the factor; restate them plainly
        msg = str(exc)
        m = re.search(r"`([^`]+)` is not present in the dataset", msg)
        if m:
            raise FormulaError(f"unknown column {m.group(1)!r} in formula {formula!r}") from None
        m = re.search(r"name '([^']+)' is not defined", msg)  # inside I(...) or a function call
        if m:
            raise FormulaError(
                f"unknown column {m.group(1)!r} in formula {formula!r} "
                "(not a column of the data nor a known function)"
            ) from None
        raise FormulaError(f"cannot build the model matrices for {formula!r}: {msg}") from None

    # Response (and offsets): evaluated in the data like R's model frame, not model matrices.
    if cbind:
        s_ = _eval_expression(pieces[0], frame, formula)
        f_ = _eval_expression(pieces[1], frame, formula)
        response = pd.DataFrame({"successes": s_, "failures": f_}, index=frame.index)
        y = None
    else:
        if simple_resp:
            response = frame[parsed.response.strip("`")]
        else:
            response = pd.Series(_eval_expression(parsed.response, frame, formula),
                                 index=frame.index, name=parsed.response)
        y = None
        if response_kind == "numeric":
            if response.dtype.kind not in "biuf":
                raise DataError(
                    f"response {parsed.response!r} must be numeric, got dtype {response.dtype}"
                )
            y = np.ascontiguousarray(response.to_numpy(dtype=np.float64))
            if not np.all(np.isfinite(y)):
                raise DataError(f"response {parsed.response!r} has non-finite values")

    # Fixed effects
    Xdf = mms["fixed"]
    names = [lme4_column_name(c) for c in Xdf.model_spec.column_names]
    X = np.asarray(Xdf, dtype=np.float64, order="F")
    if not np.all(np.isfinite(X)):
        bad = [names[j] for j in range(X.shape[1]) if not np.all(np.isfinite(X[:, j]))]
        raise DataError(f"fixed-effect column(s) {bad} have non-finite values")
    keep = _check_aliased(X, names)
    dropped = [nm for nm, k in zip(names, keep) if not k]
    if dropped:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column{'s' if len(dropped) > 1 else ''} / coefficient{'s' if len(dropped) > 1 else ''}: "
            f"{', '.join(dropped)}",
            stacklevel=3,
        )
        X = np.asfortranarray(X[:, keep])
        names = [nm for nm, k in zip(names, keep) if k]

    n = X.shape[0]
    # Random-effects terms
    terms: list[GroupTerm] = []
    specs = []
    for k, t in enumerate(parsed.re_terms):
        Zdf = mms[f"re{k}"]
        if Zdf.shape[1] == 0:
            raise FormulaError(f"random-effects term '({t.lhs} | {t.name})' has no columns")
        Z = np.asarray(Zdf, dtype=np.float64, order="F")
        if not np.all(np.isfinite(Z)):
            raise DataError(f"random-effects term '({t.lhs} | {t.name})' has non-finite values")
        codes, levels = _codes(frame, t.group)
        terms.append(
            GroupTerm(
                group=t.name,
                columns=[lme4_column_name(c) for c in Zdf.model_spec.column_names],
                lhs=t.lhs,
                group_cols=t.group,
                codes=codes,
                levels=levels,
                Z=Z,
            )
        )
        specs.append(Zdf.model_spec)
    # lme4's order: decreasing number of levels, ties in formula order.
    order = sorted(range(len(terms)), key=lambda i: -terms[i].nlevels)
    terms = [terms[i] for i in order]
    specs = [specs[i] for i in order]
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

    w = None
    if weights is not None:
        w = np.ascontiguousarray(_numeric_vector(weights, frame, index, "weights", n_rows))
        bad = np.flatnonzero(~np.isfinite(w) | (w <= 0))
        if bad.size:
            raise DataError(
                f"weights must be positive and finite; row {int(frame.index[bad[0]]) if frame.index.dtype.kind in 'iu' else bad[0]} "
                f"has weight {float(w[bad[0]])!r}"
            )
    off = None
    if offset is not None:
        off = _numeric_vector(offset, frame, index, "offset", n_rows)
    for o_expr in parsed.offsets:
        o = np.asarray(_eval_expression(o_expr, frame, formula), dtype=np.float64)
        off = o if off is None else off + o
    if off is not None:
        off = np.ascontiguousarray(off)
        if not np.all(np.isfinite(off)):
            raise DataError("offset has non-finite values")

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
        weights=w,
        offset=off,
        n_dropped_na=n_dropped,
        fixed_spec=Xdf.model_spec,
        term_specs=specs,
        keep_fixed=keep,
    )
