"""R expressions inside formulas, read with R's meaning and never handed to ``eval``.

A formula reaches mixedfit as text, possibly from a command line or a configuration file, so
every expression in it is treated as untrusted:

* ``to_python`` rewrites R's spelling into Python's (``x^2`` -> ``x ** 2``, ``as.numeric`` ->
  ``as_numeric``, ``TRUE`` -> ``True``, ``a.b`` -> a backticked column name);
* ``check`` parses the result with :mod:`ast` and allows only column names, numbers, strings,
  arithmetic, comparisons and calls of a fixed set of functions (no attributes but ``np.<f>`` and
  ``contr.<f>``, no subscripts, no lambdas, no comprehensions);
* ``evaluate`` computes a checked expression over a frame by walking the tree (the response,
  ``offset()`` and ``cbind()`` arguments);
* ``deparse`` prints a checked expression the way R prints it, for lme4's column names
  (``I(Days^2)``, ``poly(x, 2)``, ``bs(x, df = 3)``).

Right-hand-side terms go to formulaic, which does ``eval`` them: they are translated and
checked here first, so formulaic only ever sees whitelisted trees.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from ._errors import DataError, FormulaError

__all__ = ["to_python", "check", "evaluate", "deparse", "r_level_labels", "factor", "as_numeric"]

# ---- R's spelling -> Python's ---------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<bq>`[^`]*`)
      | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?L?)
      | (?P<name>(?:[^\W\d]|\.(?![\d]))[\w.]*)
      | (?P<op>%[^%]*%|\*\*|==|!=|<=|>=|&&|\|\||<-|[-+*/^(),=<>!&|:~\[\]{}$@;\\?])
      | (?P<bad>.)""",
    re.VERBOSE,
)

#: R function names whose Python spelling differs.
_R_TO_PY_NAMES = {"as.numeric": "as_numeric", "TRUE": "True", "FALSE": "False",
                  "ceiling": "ceil"}
_PY_TO_R_NAMES = {"as_numeric": "as.numeric", "True": "TRUE", "False": "FALSE", "ceil": "ceiling"}
# R's logical operators bind more loosely than comparisons, like Python's and/or/not (Python's
# & and | bind tighter); _logical_calls turns those into elementwise calls afterwards.
_R_OPERATORS = {"^": "**", "%%": "%", "%/%": "//", "&&": " and ", "||": " or ",
                "&": " and ", "|": " or ", "!": " not "}
_REFUSED_OPERATORS = {"[", "]", "{", "}", "$", "@", ";", "\\", "?", "<-", "~"}


def tokens(text: str) -> list[tuple[str, str]]:
    """R tokens of ``text`` as (kind, text) pairs; kinds: ws bq str num name op bad."""
    return [(m.lastgroup, m.group()) for m in _TOKEN.finditer(text)]


@functools.lru_cache(maxsize=1024)
def to_python(text: str, *, where: str = "") -> str:
    """Python source for the R expression ``text`` (names with dots become backticked;
    cached: a formula's expressions are rewritten once)."""
    out = []
    for kind, tok in tokens(text):
        if kind == "bad" or (kind == "op" and tok in _REFUSED_OPERATORS):
            raise FormulaError(f"{tok!r} is not allowed in the expression {text!r}{where}")
        if kind == "op" and tok.startswith("%") and tok not in _R_OPERATORS:
            raise FormulaError(f"operator {tok!r} cannot be used inside the expression {text!r}{where}")
        if kind == "op":
            tok = _R_OPERATORS.get(tok, tok)
        elif kind == "num" and tok.endswith("L"):
            tok = tok[:-1]
        elif kind == "name":
            if tok in _R_TO_PY_NAMES:
                tok = _R_TO_PY_NAMES[tok]
            elif "." in tok and not _is_module_function(tok):
                tok = f"`{tok}`"
        out.append(tok)
    return _logical_calls("".join(out), text)


class _ToLogicalCalls(ast.NodeTransformer):
    """``a and b`` -> ``r_and(a, b)``, ``a or b`` -> ``r_or(a, b)``, ``not a`` -> ``r_not(a)``:
    R's ``&``, ``|``, ``!`` are elementwise."""

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        name = "r_and" if isinstance(node.op, ast.And) else "r_or"
        out = node.values[0]
        for v in node.values[1:]:
            out = ast.Call(ast.Name(name, ast.Load()), [out, v], [])
        return out

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            return ast.Call(ast.Name("r_not", ast.Load()), [node.operand], [])
        return node


def _logical_calls(py: str, text: str) -> str:
    if not re.search(r"\b(and|or|not)\b", py):
        return py
    tree, aliases = parse(py, text)
    src = ast.unparse(_ToLogicalCalls().visit(tree))
    for key, name in aliases:
        src = src.replace(key, f"`{name}`")
    return src


def _is_module_function(name: str) -> bool:
    """``np.log`` and ``contr.poly`` are spelled as Python attributes, not column names."""
    module, _, attr = name.partition(".")
    return (module == "np" and attr in NUMPY_FUNCTIONS) or (module == "contr" and attr in CONTRASTS)


# ---- the whitelist ------------------------------------------------------------------------------

def _r_log(x, base=None):
    return np.log(x) if base is None else np.log(x) / np.log(base)


def _r_round(x, digits=0):
    return np.round(x, int(digits))


def _identity(x):
    return x


def as_numeric(x):
    """R's ``as.numeric``: numbers unchanged, a factor becomes its level codes 1, 2, ..."""
    if isinstance(x, pd.Series) and isinstance(x.dtype, pd.CategoricalDtype):
        codes = x.cat.codes.to_numpy().astype(float)
        return np.where(codes < 0, np.nan, codes + 1)
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"as.numeric() needs numbers or a factor, got dtype {arr.dtype}")
    return arr.astype(float)


def r_level_labels(values) -> list[str]:
    """Level labels as R's ``as.character`` writes numbers: 1 not 1.0, 15 significant digits."""
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)):
            out.append("TRUE" if v else "FALSE")
        elif isinstance(v, (int, np.integer)):
            out.append(str(int(v)))
        elif isinstance(v, (float, np.floating)):
            out.append(format(float(v), ".15g"))
        else:
            out.append(str(v))
    return out


def factor(x):
    """R's ``factor(x)``: levels sorted (numbers numerically), labelled as R labels them."""
    s = x if isinstance(x, pd.Series) else pd.Series(np.asarray(x))
    if isinstance(s.dtype, pd.CategoricalDtype):
        return s
    levels = pd.Index(pd.unique(s.dropna())).sort_values()
    labels = r_level_labels(levels)
    if len(set(labels)) != len(labels):
        raise DataError(f"factor(): levels {list(levels)[:5]} print alike and cannot be told apart")
    codes = levels.get_indexer(s)
    return pd.Series(pd.Categorical.from_codes(codes, categories=labels), index=s.index)


#: Functions of numbers allowed anywhere (response, offset, cbind and right-hand side).
MATH_FUNCTIONS: dict[str, Callable] = {
    "log": _r_log, "log10": np.log10, "log2": np.log2, "log1p": np.log1p,
    "exp": np.exp, "expm1": np.expm1, "sqrt": np.sqrt, "abs": np.abs,
    "round": _r_round, "floor": np.floor, "ceil": np.ceil, "trunc": np.trunc,
    "sign": np.sign, "sin": np.sin, "cos": np.cos, "tan": np.tan,
    "I": _identity, "as_numeric": as_numeric,
    "r_and": np.logical_and, "r_or": np.logical_or, "r_not": np.logical_not,
}
#: ``np.<name>`` is accepted for these numpy functions.
NUMPY_FUNCTIONS = frozenset({"log", "log10", "log2", "log1p", "exp", "expm1", "sqrt", "abs",
                             "round", "floor", "ceil", "trunc", "sign", "sin", "cos", "tan"})
#: Functions formulaic evaluates on the right-hand side (formulaic's own transforms, ours).
_MATH_NAMES = frozenset(MATH_FUNCTIONS)
RHS_FUNCTIONS = _MATH_NAMES | {
    "factor", "C", "poly", "bs", "cr", "cs", "cc", "scale", "center", "standardize",
}
#: ``contr.<name>`` for C(x, contr.<name>).
CONTRASTS = frozenset({"treatment", "poly", "sum", "helmert", "diff", "custom"})
#: Functions formulaic does not provide, with what to use instead.
_NOT_AVAILABLE = {
    "ns": "formulaic has no natural spline ns(); use cr(x, df=...) (a different basis) or poly()",
}

_BINOPS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide,
           ast.Pow: np.power, ast.Mod: np.mod, ast.FloorDiv: np.floor_divide,
           }
_COMPARE = {ast.Eq: np.equal, ast.NotEq: np.not_equal, ast.Lt: np.less, ast.LtE: np.less_equal,
            ast.Gt: np.greater, ast.GtE: np.greater_equal}
_UNARY = {ast.USub: np.negative, ast.UAdd: np.positive}

_BACKTICK = re.compile(r"`([^`]*)`")


@functools.lru_cache(maxsize=1024)
def parse(py: str, text: str) -> tuple[ast.Expression, tuple[tuple[str, str], ...]]:
    """ast of Python source ``py`` (backticked names replaced by placeholders) and the
    placeholder -> name pairs. ``text`` is the user's spelling, for messages."""
    names: dict[str, str] = {}

    def placeholder(m):
        key = f"_bq{len(names)}_"
        names[key] = m.group(1)
        return key

    src = _BACKTICK.sub(placeholder, py)
    try:
        tree = ast.parse(src.strip(), mode="eval")
    except SyntaxError:
        raise FormulaError(f"cannot parse the expression {text!r}") from None
    return tree, tuple(names.items())


def _function_name(node: ast.expr, functions) -> str | None:
    """The whitelisted function a call's ``func`` refers to, or None."""
    if isinstance(node, ast.Name) and node.id in functions:
        return node.id
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "np" and node.attr in NUMPY_FUNCTIONS):
        return node.attr
    return None


def check(py: str, text: str, columns, functions=MATH_FUNCTIONS) -> ast.Expression:
    """The ast of ``py`` if it uses only columns, constants, arithmetic, comparisons and calls
    of ``functions``; a FormulaError naming the first thing that is not allowed otherwise."""
    return _checked(py, text, columns, functions)[0]


def _checked(py: str, text: str, columns, functions=MATH_FUNCTIONS):
    """``check``'s ast with the placeholder -> name pairs of backticked names."""
    names = _MATH_NAMES if functions is MATH_FUNCTIONS else frozenset(functions)
    tree, aliases, findings = _vet(py, text, names)
    # membership tests only: a frame's column Index answers them without being copied
    cols = columns if isinstance(columns, (pd.Index, set, frozenset, dict)) else set(columns)
    for kind, what in findings:
        if kind == "error":
            raise FormulaError(what)
        if what not in cols:
            raise FormulaError(f"unknown column {what!r} in {text!r} "
                               "(not a column of the data nor a known function)")
    return tree, aliases


@functools.lru_cache(maxsize=1024)
def _vet(py: str, text: str, functions: frozenset):
    """(ast, placeholder -> name pairs, findings) of ``py``: in the ast's walk order, the
    names it reads as columns (``("column", name)``) and what is not allowed
    (``("error", message)``). Depends on the text only, so a formula's expressions are
    walked once; ``check`` tests the columns against each frame."""
    tree, aliases = parse(py, text)
    names = dict(aliases)
    findings: list[tuple[str, str]] = []
    structural: set[int] = set()  # function names and np/contr prefixes, not values
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if _function_name(node.func, functions) is None:
                findings.append(("error", _refused_function(node.func, text, names)))
            structural.add(id(node.func))
            if isinstance(node.func, ast.Attribute):
                structural.add(id(node.func.value))
            if any(k.arg is None for k in node.keywords):
                findings.append(("error", f"'**' arguments are not allowed in {text!r}"))
        elif isinstance(node, ast.Attribute):
            if not _allowed_attribute(node, functions):
                findings.append(("error", f"{ast.unparse(node)!r} is not allowed in the "
                                          f"expression {text!r}"))
            structural.add(id(node.value))
        elif isinstance(node, ast.Name):
            if id(node) not in structural:
                findings.append(("column", names.get(node.id, node.id)))
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, str, bool)):
                findings.append(("error", f"constant {node.value!r} is not allowed in {text!r}"))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            message = _power_error(node, text)
            if message:
                findings.append(("error", message))
        if not isinstance(node, _ALLOWED_NODES):
            findings.append(("error", f"{type(node).__name__.lower()} syntax is not allowed in "
                                      f"the expression {text!r}"))
    return tree, aliases, tuple(findings)


def _constant_only(node) -> bool:
    return all(not isinstance(n, (ast.Name, ast.Call)) for n in ast.walk(node))


def _power_error(node: ast.BinOp, text: str) -> str | None:
    """Powers of constants are computed with Python's unbounded integers (by formulaic's
    evaluation): allow only a literal raised to a literal of at most 1024."""
    if not (_constant_only(node.left) and _constant_only(node.right)):
        return None
    right = node.right
    ok = (isinstance(node.left, ast.Constant) and isinstance(right, ast.Constant)
          and isinstance(right.value, (int, float)) and abs(right.value) <= 1024)
    return None if ok else f"the power {ast.unparse(node)!r} in {text!r} is too large to compute"


def _allowed_attribute(node: ast.Attribute, functions) -> bool:
    if not isinstance(node.value, ast.Name):
        return False
    if node.value.id == "np":
        return node.attr in NUMPY_FUNCTIONS
    return node.value.id == "contr" and node.attr in CONTRASTS and "C" in functions


def _refused_function(func: ast.expr, text: str, names: Mapping[str, str]) -> str:
    """The message refusing a call of ``func``."""
    if isinstance(func, ast.Name):
        name = _PY_TO_R_NAMES.get(func.id, names.get(func.id, func.id))
        hint = _NOT_AVAILABLE.get(name)
        return (f"unknown function {name}() in {text!r}"
                + (f": {hint}" if hint else " (see the README's formula syntax)"))
    return f"calling {ast.unparse(func)!r} is not allowed in {text!r}"


_ALLOWED_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call, ast.keyword, ast.Constant,
    ast.Name, ast.Attribute, ast.Load, ast.List, ast.Tuple,
    *_BINOPS, *_COMPARE, *_UNARY,
)


# ---- evaluation (response, offset, cbind) -------------------------------------------------------

def evaluate(text: str, frame: pd.DataFrame, *, where: str = "",
             looked_up: Mapping | None = None) -> np.ndarray:
    """The R expression ``text`` over the columns of ``frame``, one value per row.
    ``looked_up``: columns of ``frame`` already taken from it, by name (pandas' lookups are
    not cheap)."""
    py = to_python(text, where=where)
    tree, aliases = _checked(py, text + where if where else text, frame.columns)
    names = dict(aliases)
    try:
        with np.errstate(all="ignore"):
            val = _Evaluator(frame, names, looked_up or {}).visit(tree.body)
    except (FormulaError, DataError):
        raise
    except Exception as exc:  # numpy's, pandas' or pyarrow's complaint about the values
        text_cols = [c for c in _columns_used(tree, names, frame.columns)
                     if frame[c].dtype.kind not in "biuf"]
        if text_cols:
            raise DataError(f"cannot evaluate {text!r}{where}: column(s) {text_cols} are not "
                            f"numeric ({type(exc).__name__}: {exc})") from None
        raise FormulaError(f"cannot evaluate {text!r}{where}: {exc}") from None
    val = np.asarray(val)
    if val.ndim == 0:
        val = np.full(len(frame), val)
    if val.shape != (len(frame),):
        raise FormulaError(f"{text!r}{where} does not give one value per row")
    return val


def _columns_used(tree: ast.Expression, aliases: Mapping[str, str], columns) -> list:
    cols = set(columns)
    names = (aliases.get(n.id, n.id) for n in ast.walk(tree) if isinstance(n, ast.Name))
    return list(dict.fromkeys(n for n in names if n in cols))


def float_values(col: pd.Series) -> np.ndarray:
    """A numeric column as float64, pandas' missing values as NaN. (Asking pandas for
    ``na_value`` costs ~50x the conversion, and numpy dtypes have no missing value but NaN.)"""
    if isinstance(col.dtype, np.dtype):
        return np.array(col.to_numpy(), dtype=np.float64)  # a copy, never the frame's memory
    return col.to_numpy(dtype=np.float64, na_value=np.nan)


def _number(value):
    """``value`` if arithmetic may use it; text columns (kept as Series for comparisons such
    as ``y == "yes"``) and strings are refused by name."""
    if isinstance(value, pd.Series):
        raise DataError(f"column {value.name!r} is not numeric (dtype {value.dtype}) and cannot "
                        "be used in arithmetic")
    if isinstance(value, str):
        raise DataError(f"the string {value!r} cannot be used in arithmetic")
    return value


class _Evaluator:
    """Computes a checked expression tree node by node (no ``eval``)."""

    def __init__(self, frame: pd.DataFrame, aliases: Mapping[str, str], looked_up: Mapping):
        self.frame = frame
        self.aliases = aliases
        self.looked_up = looked_up

    def visit(self, node):
        return getattr(self, "visit_" + type(node).__name__)(node)

    def visit_Constant(self, node):
        return node.value

    def visit_Name(self, node):
        if node.id in ("True", "False"):
            return node.id == "True"
        name = self.aliases.get(node.id, node.id)
        col = self.looked_up[name] if name in self.looked_up else self.frame[name]
        if isinstance(col, pd.DataFrame):
            raise DataError(f"column name {col.columns[0]!r} appears more than once in the data")
        if col.dtype.kind in "biuf":
            return float_values(col) if col.dtype.kind != "b" else col.to_numpy(dtype=bool)
        return col

    def visit_BinOp(self, node):
        left, right = _number(self.visit(node.left)), _number(self.visit(node.right))
        return _BINOPS[type(node.op)](left, right)

    def visit_UnaryOp(self, node):
        return _UNARY[type(node.op)](_number(self.visit(node.operand)))

    def visit_Compare(self, node):
        left = self.visit(node.left)
        out = None
        for op, right_node in zip(node.ops, node.comparators):
            right = self.visit(right_node)
            res = np.asarray(_COMPARE[type(op)](left, right))
            out = res if out is None else out & res
            left = right
        return out

    def visit_Call(self, node):
        name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
        fn = MATH_FUNCTIONS[name]
        args = [self.visit(a) for a in node.args]
        if name not in ("I", "as_numeric"):
            args = [_number(a) for a in args]
        kwargs = {k.arg: self.visit(k.value) for k in node.keywords}
        return fn(*args, **kwargs)


# ---- R's printing of an expression ------------------------------------------------------------

_R_BINOP = {ast.Add: (" + ", 4), ast.Sub: (" - ", 4), ast.Mult: (" * ", 5), ast.Div: ("/", 5),
            ast.Mod: ("%%", 6), ast.FloorDiv: ("%/%", 6), ast.Pow: ("^", 8)}
_R_LOGICAL = {"r_and": (" & ", 2), "r_or": (" | ", 1)}
_R_COMPARE = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}


def deparse(py: str, ordered: frozenset = frozenset()) -> str:
    """R's printing of the Python expression ``py`` (as R's ``deparse`` spaces it).

    ``C(o, contr.poly)`` of an ordered factor ``o`` (how ordered factors are handed to
    formulaic) prints as ``o``, the name R gives it; ``C(factor(o), contr.poly)`` as
    ``factor(o)``."""
    tree, aliases = parse(py, py)
    return _Deparser(dict(aliases), ordered).show(tree.body, 0)


class _Deparser:
    def __init__(self, aliases: Mapping[str, str], ordered: frozenset):
        self.aliases = aliases
        self.ordered = ordered

    def _is_ordered(self, node) -> bool:
        """An ordered factor column ``o``, or ``factor(o)`` of one (which R keeps ordered)."""
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "factor" and len(node.args) == 1 and not node.keywords):
            node = node.args[0]
        return (isinstance(node, ast.Name)
                and self.aliases.get(node.id, node.id) in self.ordered)

    def show(self, node, outer: int) -> str:
        if isinstance(node, ast.BinOp):
            sym, prec = _R_BINOP[type(node.op)]
            right_prec = prec + (0 if isinstance(node.op, ast.Pow) else 1)
            left_prec = prec + (1 if isinstance(node.op, ast.Pow) else 0)
            s = self.show(node.left, left_prec) + sym + self.show(node.right, right_prec)
            return f"({s})" if prec < outer else s
        if isinstance(node, ast.UnaryOp):
            sym = {ast.USub: "-", ast.UAdd: "+"}[type(node.op)]
            s = sym + self.show(node.operand, 7)
            return f"({s})" if 7 < outer and outer != 8 else s  # R prints x^-1
        if isinstance(node, ast.Compare):
            parts = [self.show(node.left, 4)]
            for op, right in zip(node.ops, node.comparators):
                parts += [_R_COMPARE[type(op)], self.show(right, 4)]
            s = " ".join(parts)
            return f"({s})" if 3 < outer else s
        if isinstance(node, ast.Call):
            return self.show_call(node, outer)
        if isinstance(node, ast.Name):
            name = self.aliases.get(node.id, node.id)
            name = _PY_TO_R_NAMES.get(name, name)
            return name if re.fullmatch(r"(?:[^\W\d]|\.(?!\d))[\w.]*", name) else f"`{name}`"
        if isinstance(node, ast.Attribute):
            return f"{self.show(node.value, 9)}.{node.attr}"
        if isinstance(node, ast.Constant):
            return _r_constant(node.value)
        if isinstance(node, (ast.List, ast.Tuple)):
            return "c(" + ", ".join(self.show(e, 0) for e in node.elts) + ")"
        return ast.unparse(node)

    def show_call(self, node: ast.Call, outer: int) -> str:
        fname = self.show(node.func, 9)
        if fname in _R_LOGICAL and len(node.args) == 2:
            sym, prec = _R_LOGICAL[fname]
            s = self.show(node.args[0], prec) + sym + self.show(node.args[1], prec + 1)
            return f"({s})" if prec < outer else s
        if fname == "r_not" and len(node.args) == 1:
            s = "!" + self.show(node.args[0], 4)
            return f"({s})" if 3 < outer else s
        if (fname == "C" and len(node.args) == 2 and not node.keywords
                and self._is_ordered(node.args[0])
                and ast.unparse(node.args[1]) == "contr.poly"):
            return self.show(node.args[0], 0)
        if fname.startswith("np."):
            fname = fname[3:]
        args = [self.show(a, 0) for a in node.args]
        args += [f"{k.arg} = {self.show(k.value, 0)}" for k in node.keywords]
        return f"{fname}({', '.join(args)})"


def _r_constant(value) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else format(value, ".15g")
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    return str(value)

