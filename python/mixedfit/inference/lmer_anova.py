"""lmerTest's ``anova(fit)`` for one LMM: F tests of each fixed-effects term.

The hypothesis matrices follow lmerTest 3.1's definitions:

- type 1: rows of the Doolittle factor of X'X (sequential, in formula order);
- type 2: marginal tests for terms no other term contains, otherwise the Doolittle rows of
  X'X with the term and its containing terms moved last;
- type 3: the term's effects on the fully dummy-coded design, orthogonalized against the
  terms that contain it (highest order first), then mapped to the model's coefficients.

A term contains another when it has all of its variables and more, and the same numeric
variables (lmerTest's ``containment``): ``temp`` is contained in ``recipe:temp``, ``recipe``
is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .ddf import KenwardRoger, Satterthwaite

__all__ = ["single_fit_anova", "hypothesis_matrices", "parse_anova_type", "check_ddf"]

_TYPES = {"1": 1, "2": 2, "3": 3, "I": 1, "II": 2, "III": 3}
_ROMAN = {1: "I", 2: "II", 3: "III"}
_DDF = ("Satterthwaite", "Kenward-Roger")
_COLUMNS = ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]


def parse_anova_type(type) -> int:
    key = str(type).strip()
    if key not in _TYPES:
        raise ValueError(f"type must be one of 1, 2, 3 (or 'I', 'II', 'III'), got {type!r}")
    return _TYPES[key]


def check_ddf(ddf, allowed=_DDF) -> str:
    if ddf not in allowed:
        raise ValueError(f"ddf must be one of {', '.join(repr(a) for a in allowed)}, got {ddf!r}")
    return ddf


@dataclass
class FixedTerm:
    label: str                # R's term label, e.g. "recipe:temp"
    columns: list[int]        # its columns in the fit's X
    variables: frozenset      # the variables it is made of
    numeric: frozenset        # those that are numeric (not factors)
    order: int


def fixed_terms(design) -> tuple[list[FixedTerm], bool]:
    """The fixed-effects terms (without the intercept) and whether there is an intercept.
    Column indices are the fit's (after dropping aliased columns)."""
    kept = np.flatnonzero(design.keep_fixed) if design.keep_fixed is not None \
        else np.arange(design.p)
    from .._design import _ordered_factors

    ordered = _ordered_factors(design.source, list(design.used))
    return _terms_of_spec(design.fixed_spec, kept, ordered)


def _terms_of_spec(spec, kept, ordered: frozenset = frozenset()) -> tuple[list[FixedTerm], bool]:
    position = {int(full): i for i, full in enumerate(kept)}
    kinds = {name: state[0] for name, state in spec.encoder_state.items()}
    terms, intercept = [], False
    for term, cols in spec.term_indices.items():
        if str(term) == "1":
            intercept = True
            continue
        variables = [str(f.expr) for f in term.factors]
        numeric = [v for v in variables if getattr(kinds.get(v), "value", "") != "categorical"]
        label = ":".join(_r_label(v, ordered) for v in variables)   # R's spelling
        terms.append(FixedTerm(label, [position[c] for c in cols if c in position],
                               frozenset(variables), frozenset(numeric), len(variables)))
    return terms, intercept


def _r_label(expr: str, ordered: frozenset) -> str:
    """R's name of one factor of a term (``C(o, contr.poly)`` of an ordered ``o`` is ``o``)."""
    from .._rexpr import deparse

    try:
        return deparse(expr, ordered)
    except Exception:       # a plain column name formulaic quoted: keep formulaic's text
        return expr


def _contains(inner: FixedTerm, outer: FixedTerm) -> bool:
    return (inner.variables < outer.variables) and inner.numeric == outer.numeric


def containment(terms: list[FixedTerm]) -> dict[str, list[str]]:
    return {t.label: [o.label for o in terms if _contains(t, o)] for t in terms}


def doolittle_lower(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Unit lower-triangular L of the Doolittle LU factorization of a symmetric matrix, with
    lmerTest's conventions: a pivot below eps zeroes its column, entries below eps are 0."""
    n = x.shape[0]
    L = np.eye(n)
    U = np.zeros((n, n))
    for i in range(n):
        U[i] = x[i] - L[i, :i] @ U[:i]
        below = x[i + 1 :, i] - L[i + 1 :, :i] @ U[:i, i]
        L[i + 1 :, i] = 0.0 if abs(U[i, i]) < eps else below / U[i, i]
    L[np.abs(L) < eps] = 0.0
    return L


def _zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    mx = np.max(np.abs(x)) if x.size else 0.0
    if not mx > 0:
        return np.round(x, digits)
    return np.round(x, max(0, digits - int(np.ceil(np.log10(mx)))))


def _type1(gram, terms):
    p = gram.shape[0]
    L = np.ones((1, 1)) if p == 1 else doolittle_lower(gram).T
    return {t.label: L[t.columns] for t in terms}


def _type2(gram, terms):
    inside = containment(terms)
    by_label = {t.label: t for t in terms}
    out = {}
    for t in terms:
        if not inside[t.label]:
            out[t.label] = np.eye(gram.shape[0])[t.columns]
            continue
        moved = list(t.columns) + [c for o in inside[t.label] for c in by_label[o].columns]
        order = [c for c in range(gram.shape[0]) if c not in moved] + moved
        Lc = doolittle_lower(gram[np.ix_(order, order)]).T
        rows = [order.index(c) for c in t.columns]
        back = np.argsort(order)
        out[t.label] = Lc[rows][:, back]
    return out


def _dummy_design(frame, n, terms, intercept):
    """lmerTest's get_rdX: each term coded with all of its levels, named as lme4 names."""
    import formulaic

    from .._design import lme4_column_name

    blocks, names = [], []
    if intercept:
        blocks.append(np.ones((n, 1)))
        names.append("(Intercept)")
    for t in terms:
        mm = formulaic.model_matrix("0 + " + t.label, frame, na_action="ignore")
        blocks.append(np.asarray(mm, dtype=float))
        names.extend(lme4_column_name(str(c)) for c in mm.columns)
    return np.column_stack(blocks), names


def _is_treatment(state) -> bool:
    from formulaic.transforms.contrasts import TreatmentContrasts

    return isinstance(getattr(state, "contrasts", None), TreatmentContrasts)


def _treatment_coded(fit, X, frame, terms, intercept):
    """The design X (of rows ``frame``) with every factor treatment-coded (lmerTest's remake
    with contr.treatment): (X, lme4 column names, terms). X itself when it already is."""
    spec = fit.design.fixed_spec
    recoded = {str(f): re.match(r"^C\(\s*([^,]+?)\s*,.*\)$", str(f))
               for f, state in spec.factor_contrasts.items() if not _is_treatment(state)}
    if not recoded:
        return X, list(fit.design.fixed_names), terms
    import formulaic

    from .._design import lme4_column_name

    plain = {expr: (m.group(1) if m else expr) for expr, m in recoded.items()}
    labels = [":".join(plain.get(str(f.expr), str(f.expr)) for f in term.factors)
              for term in spec.term_indices if str(term) != "1"]
    mm = formulaic.model_matrix(("1 + " if intercept else "0 + ") + " + ".join(labels),
                                frame, na_action="ignore")
    new_terms, _ = _terms_of_spec(mm.model_spec, np.arange(mm.shape[1]))
    return (np.asarray(mm, dtype=float), [lme4_column_name(str(c)) for c in mm.columns],
            new_terms)


def _type3_treatment(frame, X, names, terms, intercept):
    """lmerTest's extract_contrasts_type3 on a treatment-coded design X."""
    rdX, rd_names = _dummy_design(frame, X.shape[0], terms, intercept)
    L = _zapsmall((np.linalg.pinv(X) @ rdX).T)          # rdX parameters x coefficients
    inside = containment(terms)
    by_label = {t.label: t for t in terms}
    for t in sorted(terms, key=lambda t: -t.order):      # stable: formula order within an order
        if inside[t.label]:
            other = [c for o in inside[t.label] for c in by_label[o].columns]
            A, B = L[:, other], L[:, t.columns]
            coef, *_ = np.linalg.lstsq(A, B, rcond=None)
            L[:, t.columns] = _zapsmall(B - A @ coef)
    missing = [n for n in names if n not in rd_names]
    if missing:
        raise ValueError(f"type 3 tests: coefficients {missing} are not columns of the "
                         "dummy-coded design; use anova(fit, type=1) or type=2")
    L = L[[rd_names.index(n) for n in names]]
    out = []
    for t in terms:
        Lt = L[:, t.columns].T
        out.append(Lt[np.abs(Lt).sum(axis=1) > 1e-8])
    return out


def _type3(fit, terms, intercept):
    """Type 3 contrasts on the treatment-coded design, mapped to the fit's coding. They
    depend on the design's structure alone (pinv(X) times the dummy-coded design, whose
    columns lie in X's span), so any rows spanning it give them: the fit's own, or for data
    that stay on a cluster a small synthetic design (``Design.contrast_design``)."""
    X, frame = fit.design.contrast_design()
    X_treat, names, treat_terms = _treatment_coded(fit, X, frame, terms, intercept)
    Ls = _type3_treatment(frame, X_treat, names, treat_terms, intercept)
    if X_treat is not X:
        mapping = _zapsmall(np.linalg.pinv(X_treat) @ X)
        Ls = [L @ mapping for L in Ls]
    return {t.label: L for t, L in zip(terms, Ls)}


def hypothesis_matrices(fit, type: int) -> dict[str, np.ndarray]:
    """lmerTest's contrast matrices (rows over the fixed effects) for each term."""
    terms, intercept = fixed_terms(fit.design)
    p = fit.design.p
    if p == 0 or (p == 1 and intercept):
        return {t.label: np.zeros((0, p)) for t in terms}
    if type == 1 or p <= 1 or len(terms) <= 1:
        return _type1(fit.design.x_gram(), terms)
    if type == 2:
        return _type2(fit.design.x_gram(), terms)
    return _type3(fit, terms, intercept)


def _f_row(engine, L, sigma, method):
    if L.shape[0] == 0:
        return None
    if method == "Satterthwaite":
        F, ndf, ddf = engine.ftest(L)
        ms, scaled = F * sigma**2, F
    else:
        F, ndf, ddf, scaling = engine.ftest(L)
        ms, scaled = F * sigma**2, F * scaling
    p = float(stats.f.sf(scaled, ndf, ddf))
    return [ms * ndf, ms, ndf, ddf, scaled, p]


def single_fit_anova(fit, type=3, ddf: str = "Satterthwaite") -> pd.DataFrame:
    """F tests of the fixed-effects terms of one LMM fit (lmerTest's ``anova(fit)``)."""
    kind = parse_anova_type(type)
    method = check_ddf(ddf)
    if getattr(fit, "is_glmm", False):
        raise ValueError("anova() of a single fit gives F tests for linear mixed models "
                         "(lmer fits); compare GLMM fits with anova(fit1, fit2)")
    engine = Satterthwaite(fit) if method == "Satterthwaite" else KenwardRoger(fit)
    rows, names = [], []
    for label, L in hypothesis_matrices(fit, kind).items():
        row = _f_row(engine, L, fit.sigma, method)
        rows.append(row if row is not None else [np.nan] * 6)
        names.append(label)
    table = pd.DataFrame(rows, index=pd.Index(names, dtype=object), columns=_COLUMNS, dtype=float)
    how = "Satterthwaite's" if method == "Satterthwaite" else "Kenward-Roger's"
    table.attrs["heading"] = f"Type {_ROMAN[kind]} Analysis of Variance Table with {how} method"
    return table
