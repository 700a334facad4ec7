"""lme4 formula syntax: the bar terms are ours, the fixed-effects algebra is formulaic's.

``parse_formula("y ~ x + (x | g) + (1 | a/b)")`` splits a formula into the response, the
fixed-effects right-hand side and a list of random-effects terms, each a left-hand expression
(handed to formulaic) and a grouping factor (one or more column names joined by ``:``).
``to_formulaic`` rewrites an R right-hand side in formulaic's spelling (R's expressions inside
function calls become Python, see ``_rexpr``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._errors import FormulaError

__all__ = ["ParsedFormula", "ReTerm", "parse_formula"]


@dataclass(frozen=True)
class ReTerm:
    """One random-effects term ``(lhs | group)``.

    ``group`` is a tuple of column names; more than one means their interaction (``a:b``).
    ``name`` is lme4's name of the grouping factor (``"b:a"`` for the inner factor of ``a/b``).
    """

    lhs: str
    group: tuple[str, ...]
    name: str


@dataclass(frozen=True)
class ParsedFormula:
    response: str
    fixed: str
    re_terms: tuple[ReTerm, ...]
    offsets: tuple[str, ...]
    text: str


_IDENT = re.compile(r"`[^`]+`|(?:[^\W\d]|\.(?!\d))[\w.]*")


def _split_top(s: str, seps: str) -> list[tuple[str, str]]:
    """Split ``s`` at top-level characters in ``seps``; returns (separator, piece) pairs."""
    out: list[tuple[str, str]] = []
    depth = 0
    cur: list[str] = []
    sep = ""
    for ch in s:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unbalanced parentheses in {s!r}")
        if depth == 0 and ch in seps:
            out.append((sep, "".join(cur)))
            cur = []
            sep = ch
            continue
        cur.append(ch)
    if depth != 0:
        raise FormulaError(f"unbalanced parentheses in {s!r}")
    out.append((sep, "".join(cur)))
    return out


def _strip_outer(s: str) -> str | None:
    """Return the inside of ``s`` if the whole of ``s`` is one parenthesized group."""
    s = s.strip()
    if not (s.startswith("(") and s.endswith(")")):
        return None
    depth = 0
    for i, ch in enumerate(s):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0 and i != len(s) - 1:
                return None
    return s[1:-1]


def _bar_position(inner: str) -> tuple[int, int] | None:
    """(index, width) of the top-level ``|`` or ``||`` in ``inner``, or None."""
    depth = 0
    i = 0
    while i < len(inner):
        ch = inner[i]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "|" and depth == 0:
            width = 2 if inner[i : i + 2] == "||" else 1
            return i, width
        i += 1
    return None


def _group_terms(group: str) -> list[tuple[tuple[str, ...], str]]:
    """Expand a grouping expression: ``a``, ``a:b``, ``a/b`` (= ``a`` + ``a:b``), ``a/b/c``."""
    group = group.strip()
    if not group:
        raise FormulaError("a random-effects term has no grouping factor after '|'")
    if "/" in group:
        parts = [p.strip() for p in group.split("/")]
        if any(not p for p in parts):
            raise FormulaError(f"malformed nested grouping {group!r}")
        out = []
        name = ""
        for k in range(1, len(parts) + 1):
            # lme4 names the inner factor of a/b "b:a" and of a/b/c "c:(b:a)" (innermost
            # first, R's a/b = a + b %in% a applied again); its level labels follow the same
            # order.
            inner_first = list(reversed(parts[:k]))
            cols: list[str] = []
            for p in inner_first:
                cols.extend(_factor_names(p))
            outer = name if ":" not in name else f"({name})"
            name = parts[0] if k == 1 else f"{parts[k - 1]}:{outer}"
            out.append((tuple(cols), name))
        return out
    return [(tuple(_factor_names(group)), group.replace(" ", ""))]


def _factor_names(expr: str) -> list[str]:
    # c:(b:a) is the interaction c:b:a (lme4's name for the innermost factor of a/b/c)
    names = [p.strip() for p in expr.replace("(", "").replace(")", "").split(":")]
    for nm in names:
        if not nm or not _IDENT.fullmatch(nm):
            raise FormulaError(
                f"grouping factor {expr!r} must be a column name or an interaction 'a:b' of columns"
            )
    return [nm.strip("`") for nm in names]


def _lhs_terms(lhs: str) -> list[str]:
    """Split the left side of ``||`` into separate scalar pieces, as lme4 does."""
    pieces = [p.strip() for sep, p in _split_top(lhs, "+") if p.strip()]
    has_int = True
    rest = []
    for p in pieces:
        if p in ("0", "-1") or p.startswith("-"):
            if p in ("0", "-1"):
                has_int = False
                continue
        if p == "1":
            continue
        rest.append(p)
    if re.search(r"(^|[+\s])-\s*1\b", lhs):
        has_int = False
    out = ["1"] if has_int else []
    out.extend(f"0 + {p}" for p in rest)
    return out


def parse_formula(formula: str) -> ParsedFormula:
    if not isinstance(formula, str):
        raise FormulaError(f"formula must be a string, got {type(formula).__name__}")
    if formula.count("~") != 1:
        raise FormulaError(f"formula must have exactly one '~' (response ~ terms): {formula!r}")
    lhs, rhs = (s.strip() for s in formula.split("~"))
    if not lhs:
        raise FormulaError(f"formula has no response on the left of '~': {formula!r}")
    if not rhs:
        raise FormulaError(f"formula has no terms on the right of '~': {formula!r}")
    fixed_parts: list[tuple[str, str]] = []
    re_terms: list[ReTerm] = []
    offsets: list[str] = []
    pieces = list(_split_top(rhs, "+-"))
    while pieces:
        sep, piece = pieces.pop(0)
        p = piece.strip()
        inner = _strip_outer(p)
        bar = _bar_position(inner) if inner is not None else None
        if inner is not None and bar is None and "|" in inner and sep != "-":
            # A parenthesized sum of bar terms, as lme4 writes an expanded (x || g):
            # ((1 | g) + (0 + x | g)).
            pieces = [("+", q) for _, q in _split_top(inner, "+")] + pieces
            continue
        if bar is not None:
            if sep == "-":
                raise FormulaError(f"cannot subtract a random-effects term: {p!r}")
            idx, width = bar
            left, right = inner[:idx].strip(), inner[idx + width :].strip()
            if not left:
                raise FormulaError(f"random-effects term {p!r} has nothing left of '|'")
            lhs_pieces = _lhs_terms(left) if width == 2 else [left]
            for cols, name in _group_terms(right):
                for lp in lhs_pieces:
                    re_terms.append(ReTerm(lhs=lp, group=cols, name=name))
            continue
        if "|" in p:
            raise FormulaError(
                f"'|' may appear only inside a parenthesized random-effects term: {p!r}"
            )
        m = re.fullmatch(r"offset\((.*)\)", p)
        if m:
            if sep == "-":
                raise FormulaError("cannot subtract an offset")
            offsets.append(m.group(1).strip())
            continue
        if p or sep:
            fixed_parts.append((sep, piece))
    fixed = ""
    for sep, piece in fixed_parts:
        fixed += (sep if fixed or sep == "-" else "") + piece
    fixed = fixed.strip()
    if fixed.startswith("+"):
        fixed = fixed[1:].strip()
    if not fixed:
        fixed = "1"
    if not re_terms:
        raise FormulaError(
            f"no random-effects terms in {formula!r}; use e.g. '(1 | group)' "
            "(for a model without random effects use an ordinary regression)"
        )
    return ParsedFormula(
        response=lhs, fixed=fixed, re_terms=tuple(re_terms), offsets=tuple(offsets), text=formula
    )


def identifiers(expr: str) -> list[str]:
    """Names that may refer to columns (backticks removed)."""
    return [t.strip("`") for t in _IDENT.findall(expr)]


def to_formulaic(rhs: str, ordered: frozenset = frozenset()) -> str:
    """formulaic's spelling of an R right-hand side (fixed part or a bar term's left side).

    Function calls are R expressions, rewritten into Python (``I(Days^2)`` -> ``I(Days ** 2)``;
    ``^`` outside a call stays formula syntax: ``(a + b)^2`` is interaction expansion);
    ``a %in% b`` becomes ``a:b``; names with dots are backticked; an ordered factor ``o`` gets R's
    polynomial contrasts, ``C(o, contr.poly)``, also as ``factor(o)``."""
    from ._rexpr import to_python, tokens

    toks = tokens(rhs)
    out: list[str] = []
    i = 0
    while i < len(toks):
        kind, tok = toks[i]
        if kind == "name" and _next_token(toks, i + 1) == "(":
            end = _matching_paren(toks, i, rhs)
            call = "".join(t for _, t in toks[i:end + 1])
            py = to_python(call, where=f" of the formula term {call!r}")
            # R's factor() keeps an ordered factor ordered, and so its polynomial contrasts
            inner = [t for k, t in toks[i + 2:end] if k != "ws"]
            if tok == "factor" and len(inner) == 1 and inner[0].strip("`") in ordered:
                py = f"C({py}, contr.poly)"
            out.append(py)
            i = end + 1
            continue
        out.append(_formula_token(kind, tok, rhs, ordered))
        i += 1
    return "".join(out)


_FORMULA_OPERATORS = {"+", "-", "*", "/", ":", "^", "(", ")", "%in%"}


def _formula_token(kind: str, tok: str, rhs: str, ordered: frozenset) -> str:
    if kind in ("name", "bq"):
        name = tok.strip("`")
        quoted = f"`{name}`" if kind == "bq" or "." in name else name
        return f"C({quoted}, contr.poly)" if name in ordered else quoted
    if kind == "op" and tok in _FORMULA_OPERATORS:
        return ":" if tok == "%in%" else tok
    if kind in ("ws", "num"):
        return tok
    raise FormulaError(f"{tok!r} is not formula syntax in {rhs!r}")


def _next_token(toks, i: int) -> str | None:
    while i < len(toks) and toks[i][0] == "ws":
        i += 1
    return toks[i][1] if i < len(toks) else None


def _matching_paren(toks, start: int, rhs: str) -> int:
    depth = 0
    for j in range(start, len(toks)):
        if toks[j] == ("op", "("):
            depth += 1
        elif toks[j] == ("op", ")"):
            depth -= 1
            if depth == 0:
                return j
    raise FormulaError(f"unbalanced parentheses in {rhs!r}")
