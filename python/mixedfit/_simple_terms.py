"""Model matrices of simple formulas built directly with numpy, the way formulaic builds them.

Most models people fit name plain columns: numeric covariates, factors (categorical, string
or logical columns) with treatment contrasts, their interactions (``a:b``, ``a*b``), with or
without an intercept. For those, materializing through formulaic costs milliseconds per fit;
building the columns from factor codes costs microseconds. Formulaic stays the authority:
its parsed formula gives the terms and their order, this module applies formulaic's rule for
keeping the matrix structurally full rank (which factors of a term are coded by contrasts and
which by indicators of every level) and names the columns as formulaic does. Anything else --
function calls, ``I()``, ordered factors, unusual column types -- returns None, and the caller
takes formulaic's path. The tests prove the two paths give the same matrices.
"""

from __future__ import annotations

import functools
import itertools
import math
import re

import numpy as np
import pandas as pd

from ._formula import ParsedFormula
from ._terms import _formula_piece, drop_unused_categories, r_logical

__all__ = ["simple_model_matrices"]

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Factor:
    """One column as formulaic encodes it: a numeric vector, or the codes of a factor."""

    def __init__(self, name: str, values: np.ndarray | None, codes: np.ndarray | None,
                 levels: list[str] | None):
        self.name = name
        self.values = values    # numeric factors: the values (their own dtype)
        self.codes = codes      # categorical factors: level codes 0..len(levels)-1
        self.levels = levels

    @property
    def categorical(self) -> bool:
        return self.codes is not None

    def columns(self, reduced: bool) -> list[tuple[str, object]]:
        """(formulaic's column name, values) pairs: numeric values as they are; a factor's
        indicators of every level, or (``reduced``, treatment contrasts) of all but the first,
        given as the level code to compare with."""
        if not self.categorical:
            return [(self.name, self.values)]
        if reduced:
            return [(f"{self.name}[T.{lev}]", k) for k, lev in enumerate(self.levels) if k]
        return [(f"{self.name}[{lev}]", k) for k, lev in enumerate(self.levels)]

    def width(self, reduced: bool) -> int:
        """How many columns ``columns(reduced)`` gives."""
        return len(self.levels) - reduced if self.categorical else 1


def _factor(name: str, col: pd.Series) -> _Factor | None:
    """The column ``name`` as a numeric or categorical factor, or None when formulaic's
    encoding of it is not one this module reproduces."""
    dtype = col.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iuf":
        return _Factor(name, col.to_numpy(), None, None)
    if isinstance(dtype, np.dtype) and dtype.kind == "b":
        col = r_logical(col)
        dtype = col.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        if dtype.ordered or pd.api.types.infer_dtype(dtype.categories, skipna=False) != "string":
            return None
        values = drop_unused_categories(col).array
        # (one conversion of the labels: iterating pandas' Arrow-backed strings converts them
        # one by one, ten times slower for a hundred levels)
        return _Factor(name, None, values.codes, values.categories.to_numpy().tolist())
    if dtype == object or dtype == "str":
        values = col.to_numpy()
        if pd.api.types.infer_dtype(values, skipna=False) != "string":
            return None
        codes, levels = pd.factorize(values, sort=True)
        return _Factor(name, None, codes, list(levels))
    return None


@functools.lru_cache(maxsize=1024)
def _term_factors(rhs: str, ordered: frozenset) -> tuple[tuple[str, ...], ...] | None:
    """Each term of formulaic's reading of ``rhs`` as its column names (the intercept as no
    names), or None when a term is more than plain columns."""
    terms = []
    for term in _formula_piece(rhs, ordered):
        names = []
        for fa in term.factors:
            method = fa.eval_method.value
            if method == "literal" and fa.expr == "1":
                continue
            if method != "lookup" or not _PLAIN_NAME.fullmatch(fa.expr):
                return None
            names.append(fa.expr)
        terms.append(tuple(names))
    return tuple(terms)


class _ScopedTerms:
    """An ordered set of scoped terms: tuples of (factor name, reduced), equal when they have
    the same factors in any order (formulaic's ScopedTerm)."""

    def __init__(self, items=()):
        self.items: list[tuple] = []
        for item in items:
            self.add(item)

    def add(self, item: tuple) -> None:
        if frozenset(item) not in {frozenset(t) for t in self.items}:
            self.items.append(item)

    def without(self, item: tuple) -> "_ScopedTerms":
        return _ScopedTerms(t for t in self.items if frozenset(t) != frozenset(item))


def _span(names: tuple[str, ...], categorical: dict[str, bool]) -> list[tuple]:
    """The scoped terms spanning a term: a factor either reduced or left out, a numeric
    column always in (formulaic's itertools.product order)."""
    choices = [((nm, True), None) if categorical[nm] else ((nm, False),) for nm in names]
    out = _ScopedTerms(tuple(p for p in prod if p is not None)
                       for prod in itertools.product(*choices))
    return out.items


def _simplify(scoped: list[tuple]) -> list[tuple]:
    """The fewest scoped terms spanning the same space: ``A:(reduced f) + A`` becomes
    ``A:(full f)``, repeated until nothing combines (formulaic's rule and order)."""
    terms = _ScopedTerms()
    for st in sorted(scoped, key=len):
        factors = set(st)
        combined = False
        for existing in terms.items:
            others = set(existing)
            diff = factors - others
            if len(factors) - 1 != len(others) or len(diff) != 1:
                continue
            new = next(iter(diff))
            if new[1]:
                full = tuple((f[0], False) if f == new else f for f in st)
                merged = terms.without(existing)
                merged.add(full)
                terms = _ScopedTerms(_simplify(merged.items))
                combined = True
                break
        if not combined:
            terms.add(st)
    return terms.items


@functools.lru_cache(maxsize=1024)
def _scoped_terms(terms: tuple, categorical: frozenset) -> tuple:
    """Every term's scoped terms in formula order, keeping the matrix structurally full rank
    (``categorical``: the names of the categorical factors)."""
    categorical = {nm: nm in categorical for t in terms for nm in t}
    spanned: set[frozenset] = set()
    out = []
    for names in terms:
        span = [st for st in _span(names, categorical) if frozenset(st) not in spanned]
        out.extend(_simplify(span))
        spanned.update(frozenset(st) for st in span)
    return tuple(out)


def _term_columns(scoped: tuple, factors: dict[str, _Factor]):
    """(name, column) pairs of one scoped term (not the intercept); the first factor's
    columns vary fastest. A column is the product of its numeric factors (in their dtype)
    times its factors' level indicators (bool: 0 or 1, exactly)."""
    encoded = [factors[nm].columns(reduced) for nm, reduced in scoped]
    for rev in itertools.product(*reversed(encoded)):
        combo = rev[::-1]
        pairs = [(factors[nm], v) for (nm, _), (_, v) in zip(scoped, combo)]
        parts = [v for f, v in pairs if not f.categorical]
        parts += [f.codes == v for f, v in pairs if f.categorical]
        yield ":".join(name for name, _ in combo), functools.reduce(np.multiply, parts)


def _ncolumns(scoped: tuple, factors: dict[str, _Factor]) -> int:
    """How many columns ``_term_columns`` yields for a scoped term."""
    return math.prod(factors[nm].width(reduced) for nm, reduced in scoped)


def _matrix(scoped_terms: tuple, factors: dict[str, _Factor], n: int):
    """(X column-major float64, formulaic's column names), filled column by column (no
    second copy of the matrix is held while it is built)."""
    X = np.empty((n, sum(_ncolumns(st, factors) for st in scoped_terms)), dtype=np.float64,
                 order="F")
    names = []
    for st in scoped_terms:
        if not st:  # the intercept: written in place (a column of ones would be one more
            X[:, len(names)] = 1.0  # n-vector of fresh memory, whose pages cost to fault in)
            names.append("Intercept")
            continue
        for name, values in _term_columns(st, factors):
            X[:, len(names)] = values  # as float64
            names.append(name)
    return X, names


def simple_model_matrices(parsed: ParsedFormula, frame, n: int, ordered: frozenset):
    """{"fixed": (X, names), "re0": (Z, names), ...} as formulaic would build them on the
    ``n`` complete rows ``frame`` (a frame, or its used columns by name), or None when the
    formula is not simple enough for this path."""
    if parsed.offsets:
        return None
    pieces = {"fixed": parsed.fixed, **{f"re{k}": t.lhs for k, t in enumerate(parsed.re_terms)}}
    terms = {}
    for key, rhs in pieces.items():
        terms[key] = _term_factors(rhs, ordered)
        if terms[key] is None:
            return None
    factors = {}
    for nm in dict.fromkeys(nm for ts in terms.values() for t in ts for nm in t):
        if nm not in frame:
            return None
        factors[nm] = _factor(nm, frame[nm])
        if factors[nm] is None:
            return None
    categorical = frozenset(nm for nm, f in factors.items() if f.categorical)
    return {key: _matrix(_scoped_terms(ts, categorical), factors, n) for key, ts in terms.items()}
