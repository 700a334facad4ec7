"""R's number formatting, re-implemented so printed summaries read exactly like lme4's.

``format_r(values, digits)`` follows R's ``formatReal``: every element is rounded to ``digits``
significant digits, the column gets the most decimals any element then needs, and scientific
notation is used only when it is narrower than fixed notation.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["format_r", "abbreviate", "format_pval", "signif_stars", "zapsmall", "print_matrix"]


def _sci(x: float, digits: int) -> tuple[int, int, bool]:
    """(kpower, nsig, negative) of x rounded to ``digits`` significant digits."""
    s = f"{abs(x):.{digits - 1}e}"
    mant, exp = s.split("e")
    kp = int(exp)
    ds = mant.replace(".", "").rstrip("0")
    nsig = max(1, len(ds))
    return kp, nsig, x < 0


def format_r(values, digits: int = 7, nsmall: int = 0) -> list[str]:
    """Format numbers jointly as R's ``format(x, digits=digits, nsmall=nsmall)``."""
    vals = [float(v) for v in np.atleast_1d(np.asarray(values, dtype=float))]
    finite = [v for v in vals if math.isfinite(v)]
    if not finite:
        return _pad(["NaN" if math.isnan(v) else ("Inf" if v > 0 else "-Inf") for v in vals])
    mxsl = 1
    rgt = 0
    mxe = 0
    mxns = 1
    neg = 0
    for v in finite:
        if v == 0:
            kp, nsig, ng = 0, 1, False
        else:
            kp, nsig, ng = _sci(v, digits)
        if ng:
            neg = 1
        left = kp + 1
        sleft = int(ng) + (1 if left <= 0 else left)
        right = nsig - left
        rgt = max(rgt, right)
        mxsl = max(mxsl, sleft)
        mxe = max(mxe, abs(kp))
        mxns = max(mxns, nsig)
    rgt = max(rgt, 0)
    rgt_f = max(rgt, nsmall)
    wF = mxsl + rgt_f + (1 if rgt_f > 0 else 0)
    ew = 2 if mxe < 100 else 3
    wE = neg + (mxns + 1 if mxns > 1 else mxns) + 2 + ew
    out = []
    if wF <= wE:
        for v in vals:
            out.append(f"{v:.{rgt_f}f}" if math.isfinite(v) else _nonfinite(v))
    else:
        for v in vals:
            if not math.isfinite(v):
                out.append(_nonfinite(v))
                continue
            s = f"{v:.{mxns - 1}e}"
            out.append(s)
    return _pad(out)


def _nonfinite(v: float) -> str:
    return "NaN" if math.isnan(v) else ("Inf" if v > 0 else "-Inf")


def _pad(strs: list[str]) -> list[str]:
    w = max((len(s) for s in strs), default=0)
    return [s.rjust(w) for s in strs]


def zapsmall(x, digits: int) -> np.ndarray:
    """``zapsmall`` as lme4's printing sees it (the Matrix package's method): round to
    ``digits - log10(max|x|)`` decimals, that count rounded to the nearest integer."""
    x = np.asarray(x, dtype=float)
    fin = x[np.isfinite(x)]
    mx = np.max(np.abs(fin)) if fin.size else 0.0
    d = digits - math.log10(mx) if mx > 0 else digits
    nd = max(0, int(math.floor(d + 0.5)))
    return np.round(x, nd)


def abbreviate(name: str, minlength: int = 4) -> str:
    """R's ``abbreviate(name, minlength)`` (the default 'left.kept' method)."""
    s = name.strip()
    if len(s) <= minlength:
        return s
    b = list(s)

    def done():
        return len(b) - sum(ch == " " for ch in b) <= minlength

    def vowel(ch):
        return ch in "aeiou"

    def first(i):
        return b[i - 1].isspace()

    def last(i):
        return (not b[i - 1].isspace()) and (i + 1 == len(b) or b[i + 1].isspace())

    for test in (
        lambda i: vowel(b[i]) and last(i),
        lambda i: vowel(b[i]) and not first(i),
        lambda i: b[i].islower() and last(i),
        lambda i: b[i].islower() and not first(i),
        lambda i: not first(i) and not b[i].isspace(),
    ):
        i = len(b) - 1
        while i > 0:
            if i < len(b) and test(i):
                del b[i]
                if done():
                    return "".join(b).replace(" ", "")
            i -= 1
    return "".join(b).replace(" ", "")


def format_pval(pv, digits: int) -> list[str]:
    """R's ``format.pval(pv, digits)`` with eps = machine epsilon: values from 1e-4 up are
    formatted together in fixed notation, smaller ones together (usually scientific)."""
    eps = float(np.finfo(float).eps)
    pv = np.asarray(pv, dtype=float)
    out = [""] * len(pv)
    is0 = pv < eps
    idx = [i for i in range(len(pv)) if not is0[i]]
    if idx:
        expo = np.floor(np.log10(np.where(pv[idx] > 0, pv[idx], 1e-50)))
        fixp = (expo >= -3) | ((expo == -4) & (digits > 1))
        for group in (True, False):
            sel = [i for i, f in zip(idx, fixp) if bool(f) == group]
            if sel:
                for i, s in zip(sel, format_r(pv[sel], digits)):
                    out[i] = s.strip()
    if np.any(is0):
        d = max(1, digits - 2)
        sep = " "
        if idx:
            nc = max(len(out[i]) for i in idx)
            if d > 1 and d + 6 > nc:
                d = max(1, nc - 7)
            sep = "" if (d == 1 and nc <= 6) else " "
        else:
            sep = "" if d == 1 else " "
        e = "<" + sep + format_r([eps], d)[0].strip()
        for i in range(len(pv)):
            if is0[i]:
                out[i] = e
    return out


def signif_stars(p: float) -> str:
    if not np.isfinite(p):
        return ""
    for cut, s in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p <= cut:
            return s
    return " "


def print_matrix(cells: list[list[str]], colnames: list[str], rownames: list[str],
                 right: bool = True, gap: int = 1) -> str:
    """R's print of a character matrix (quote=FALSE): row names left-justified, cells
    right- (or left-) justified under their column names."""
    rw = max((len(r) for r in rownames), default=0)
    ncol = len(colnames)
    widths = []
    for j in range(ncol):
        w = len(colnames[j])
        for row in cells:
            w = max(w, len(row[j]))
        widths.append(w)
    sep = " " * gap
    lines = []
    head = " " * rw
    for j in range(ncol):
        head += sep + (colnames[j].rjust(widths[j]) if right else colnames[j].ljust(widths[j]))
    lines.append(head)
    for r, row in zip(rownames, cells):
        line = r.ljust(rw)
        for j in range(ncol):
            line += sep + (row[j].rjust(widths[j]) if right else row[j].ljust(widths[j]))
        lines.append(line)
    return "\n".join(lines)
