"""Printing: pure functions of a result, in lme4's layout (summary() and print())."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._rformat import (
    abbreviate,
    format_pval,
    format_r,
    print_matrix,
    signif_stars,
    zapsmall,
)

__all__ = ["Summary", "render_summary", "render_print", "format_varcorr", "format_anova",
           "AnovaTable"]


def format_varcorr(vc, digits: int = 4, comp=("Variance", "Std.Dev.")) -> str:
    """The random-effects table as lme4's ``.prt.VC`` prints it (left-justified columns)."""
    names, groups, sds = [], [], []
    for t in vc.terms:
        for j, nm in enumerate(t.names):
            groups.append(t.group if j == 0 else "")
            names.append(nm)
        sds.extend(t.sd)
    if vc.sigma is not None:
        groups.append("Residual")
        names.append("")
        sds.append(vc.sigma)
    sds = np.asarray(sds, dtype=float)
    cols = {"Groups": groups, "Name": names}
    if "Variance" in comp:
        cols["Variance"] = format_r(sds**2, digits)
    if "Std.Dev." in comp:
        cols["Std.Dev."] = format_r(sds, digits)
    maxlen = max(len(t.names) for t in vc.terms)
    corr_cols: list[list[str]] = []
    if maxlen > 1:
        ncorr = maxlen - 1
        corr_rows = []
        for t in vc.terms:
            p = len(t.names)
            cc = format_r(np.round(t.corr, 2).ravel(), 7, nsmall=2)
            cc = np.array(cc, dtype=object).reshape(p, p)
            for i in range(p):
                row = []
                for j in range(ncorr):
                    row.append(cc[i, j] if j < i else "")
                corr_rows.append(row)
        if vc.sigma is not None:
            corr_rows.append([""] * ncorr)
        corr_cols = [[r[j] for r in corr_rows] for j in range(ncorr)]
    colnames = list(cols)
    data = [cols[c] for c in colnames]
    if corr_cols:
        colnames += ["Corr"] + [""] * (len(corr_cols) - 1)
        data += corr_cols
    nrow = len(groups)
    cells = [[data[j][i] for j in range(len(colnames))] for i in range(nrow)]
    return print_matrix(cells, colnames, [""] * nrow, right=False)


def _groups_line(fit) -> str:
    parts = [f"{g}, {n}" for g, n in fit.ngroups.items()]
    return f"Number of obs: {fit.nobs}, groups:  " + "; ".join(parts)


def _method_title(mtit: str, cls: str, width: int = 80) -> str:
    """lme4's .prt.methTit: wrap long titles (exdent 2) and append the class in brackets."""
    if len(mtit) + 5 + len(cls) <= width:
        return f"{mtit} ['{cls}']"
    import textwrap

    pieces = textwrap.wrap(mtit, width=width - 3, subsequent_indent="  ",
                           break_on_hyphens=False) + [" [", cls, "]"]
    lines, cur = [], ""
    for p in pieces:
        if cur and len(cur) + len(p) > width:
            lines.append(cur)
            cur = p
        else:
            cur += p
    lines.append(cur)
    return "\n".join(lines)


_DDF_TITLE = {"Satterthwaite": "Satterthwaite's", "Kenward-Roger": "Kenward-Roger's"}


def _title(fit, ddf: str = "lme4") -> str:
    if fit.family == "gaussian" and fit.link == "identity" and not getattr(fit, "is_glmm", False):
        how = "REML" if fit.reml else "maximum likelihood "
        if ddf in _DDF_TITLE:  # lmerTest's title and class
            return _method_title(f"Linear mixed model fit by {how}. t-tests use "
                                 f"{_DDF_TITLE[ddf]} method", "lmerModLmerTest")
        return _method_title(f"Linear mixed model fit by {how}", "lmerMod")
    if getattr(fit, "nagq", 1) > 1:
        meth = f"Adaptive Gauss-Hermite Quadrature, nAGQ = {fit.nagq}"
    else:
        meth = "Laplace Approximation"
    return _method_title(f"Generalized linear mixed model fit by maximum likelihood ({meth})", "glmerMod")


def _header(fit, ddf: str = "lme4") -> list[str]:
    lines = [_title(fit, ddf)]
    if getattr(fit, "is_glmm", False):
        lines.append(f" Family: {fit.family}  ( {fit.link} )")
    lines.append(f"Formula: {fit.formula}")
    lines.append(f"   Data: {fit.data_name}")
    call = getattr(fit, "_call", {}) or {}
    if isinstance(call.get("weights"), str):
        lines.append(f"Weights: {call['weights']}")
    if isinstance(call.get("offset"), str):
        lines.append(f" Offset: {call['offset']}")
    return lines


def _aic_table(fit, round_digits: int) -> str:
    """lme4's .prt.aictab: values rounded, formatted together (df.resid on its own), then
    printed as a named character vector of common width."""
    names = ["AIC", "BIC", "logLik", "deviance", "df.resid"]
    vals = np.round(np.array([fit.aic, fit.bic, fit.loglik, fit.deviance_table_value]), round_digits)
    cells = [c.strip() for c in format_r(vals, 7)] + [str(int(fit.nobs - fit.df))]
    w = max(max(len(n) for n in names), max(len(c) for c in cells))
    return "".join(n.rjust(w) + " " for n in names) + "\n" + "".join(c.rjust(w) + " " for c in cells)


def _scaled_residuals(fit, digits: int) -> list[str]:
    scaled = not getattr(fit, "is_glmm", False) or getattr(fit, "has_scale", False)
    if hasattr(fit, "residual_quantiles"):  # rows elsewhere (a Dask fit): computed there
        q = fit.residual_quantiles(scaled)
    else:
        r = fit.residuals(type="pearson", scaled=scaled).to_numpy()
        q = np.quantile(r, [0, 0.25, 0.5, 0.75, 1.0])
    q = zapsmall(q, digits + 1)
    cells = format_r(q, digits)
    names = ["Min", "1Q", "Median", "3Q", "Max"]
    w = [max(len(n), len(c)) for n, c in zip(names, cells)]
    head = " ".join(n.rjust(wi) for n, wi in zip(names, w))
    row = " ".join(c.rjust(wi) for c, wi in zip(cells, w))
    return ["Scaled residuals: ", head + " ", row + " "]


def _coef_table(fit, digits: int, table=None) -> str:
    """lme4's fixed-effects table; with ``table`` (a ``coef_table`` with df and p columns)
    lmerTest's, where printCoefmat formats estimate, SE and df together."""
    names = list(fit.design.fixed_names)
    if table is not None:
        cs = table[["Estimate", "Std. Error", "df"]].to_numpy()
        return _format_coefmat(names, cs, table["t value"].to_numpy(), "t value",
                               table["Pr(>|t|)"].to_numpy(), "Pr(>|t|)", digits)
    coefs = fit.coefficients()      # lme4's table: one source for print, summary, tidy, JSON
    stat_name = coefs.columns[2]
    pv = coefs["Pr(>|z|)"].to_numpy() if "Pr(>|z|)" in coefs else None
    return _format_coefmat(names, coefs[["Estimate", "Std. Error"]].to_numpy(),
                           coefs[stat_name].to_numpy(), stat_name, pv, "Pr(>|z|)", digits)


def _format_coefmat(names, cs, stat, stat_name, pv, p_name, digits: int) -> str:
    """printCoefmat: the leading columns ``cs`` rounded together, the statistic, then
    (when ``pv`` is given) p-values with significance stars and their legend."""
    acs = np.abs(cs[np.isfinite(cs) & (cs != 0)])
    if acs.size:
        digmin = 1 + np.floor(np.log10([acs.min(), acs.max()]))
    else:
        digmin = np.array([1.0, 1.0])
    nd = int(max(1, np.max(digits - digmin)))
    k, ncs = cs.shape
    csf = np.array(format_r(np.round(cs, nd).ravel(order="F"), digits), dtype=object)
    csf = csf.reshape(ncs, k)
    dig_tst = max(1, min(5, digits - 1))
    tst = format_r(np.round(stat, dig_tst), digits)
    colnames = ["Estimate", "Std. Error", "df"][:ncs] + [stat_name]
    cells = [[*csf[:, i], tst[i]] for i in range(k)]
    legend = ""
    if pv is not None:
        pfmt = format_pval(pv, dig_tst)
        stars = [signif_stars(p) for p in pv]
        colnames = colnames + [p_name, ""]
        cells = [row + [pfmt[i], stars[i]] for i, row in enumerate(cells)]
        if any(s.strip() for s in stars):
            legend = "---\nSignif. codes:  0 \u2018***\u2019 0.001 \u2018**\u2019 0.01 \u2018*\u2019 0.05 \u2018.\u2019 0.1 \u2018 \u2019 1"
    text = print_matrix_coef(cells, colnames, names)
    return text + ("\n" + legend if legend else "")


def print_matrix_coef(cells, colnames, rownames) -> str:
    """printCoefmat's layout: right-justified numbers, the stars column left-justified."""
    rw = max(len(r) for r in rownames)
    ncol = len(colnames)
    widths = [max([len(colnames[j])] + [len(r[j]) for r in cells]) for j in range(ncol)]
    lines = [" " * rw + "".join(" " + colnames[j].rjust(widths[j]) for j in range(ncol))]
    for r, row in zip(rownames, cells):
        line = r.ljust(rw)
        for j in range(ncol):
            if colnames[j] == "" and j == ncol - 1:
                line += " " + row[j].ljust(widths[j])
            else:
                line += " " + row[j].rjust(widths[j])
        lines.append(line)
    return "\n".join(lines)


SIGNIF_LEGEND = ("---\nSignif. codes:  0 \u2018***\u2019 0.001 \u2018**\u2019 0.01 \u2018*\u2019 0.05 "
                 "\u2018.\u2019 0.1 \u2018 \u2019 1")


def format_anova(table, digits: int = 5) -> str:
    """A likelihood-ratio table as lme4's anova() prints it (R's print.anova: the heading,
    then printCoefmat: criteria zapped and formatted per column, the statistic rounded to
    ``digits - 1``, p-values with stars; missing cells blank)."""
    dig_tst = max(1, min(5, digits - 1))
    cells = {}
    for name in table.columns:
        values = table[name].to_numpy(dtype=float)
        ok = ~np.isnan(values)
        if name in ("npar", "Df"):
            text = [str(int(v)) for v in values[ok]]
        elif name == "Pr(>Chisq)":
            text = format_pval(values[ok], dig_tst)
        elif name == "Chisq":
            text = format_r(np.round(values[ok], dig_tst), digits)
        else:   # print.anova zaps the other columns first (base R's zapsmall)
            text = format_r(zapsmall(values[ok], digits), digits)
        column = [""] * len(values)
        for i, t in zip(np.flatnonzero(ok), text):
            column[i] = t.strip()
        cells[name] = column
    colnames = list(table.columns)
    rows = [[cells[c][i] for c in colnames] for i in range(len(table))]
    if "Pr(>Chisq)" in table.columns:
        pvalues = table["Pr(>Chisq)"].to_numpy(dtype=float)
        rows = [row + [signif_stars(p) if not pd.isna(p) else ""] for row, p in zip(rows, pvalues)]
        colnames = colnames + [""]
    lines = list(table.attrs.get("heading", []))
    lines.append(print_matrix_coef(rows, colnames, [str(i) for i in table.index]))
    if "Pr(>Chisq)" in table.columns and any(p <= 0.1 for p in pvalues if not np.isnan(p)):
        lines.append(SIGNIF_LEGEND)
    return "\n".join(lines)


class AnovaTable(pd.DataFrame):
    """A DataFrame of likelihood-ratio tests that prints as lme4's anova() does."""

    @property
    def _constructor(self):
        return pd.DataFrame           # slices and arithmetic give plain DataFrames

    def __repr__(self) -> str:
        return format_anova(self)

    __str__ = __repr__


def _corr_fixed(fit) -> list[str]:
    """lme4's 'Correlation of Fixed Effects': rows abbreviated to 11 characters, columns to 6,
    values formatted together to 3 decimals, printed left-justified."""
    V = fit.vcov.to_numpy()
    sd = np.sqrt(np.diag(V))
    C = V / np.outer(sd, sd)
    names = list(fit.design.fixed_names)
    p = len(names)
    cc = format_r(np.round(C, 3).ravel(), 7, nsmall=3)
    cc = np.array(cc, dtype=object).reshape(p, p)
    colnames = [abbreviate(n, 6) for n in names[:-1]]
    rownames = [abbreviate(n, 11) for n in names[1:]]
    cells = [[cc[i, j] if j < i else "" for j in range(p - 1)] for i in range(1, p)]
    return ["Correlation of Fixed Effects:", print_matrix(cells, colnames, rownames, right=False)]


def render_summary(fit, digits: int = 4, ddf: str = "lme4") -> str:
    """lme4's summary text; for an LMM with ``ddf`` "Satterthwaite" or "Kenward-Roger",
    lmerTest's (its title and the df and p-value columns)."""
    table = None if ddf == "lme4" or getattr(fit, "is_glmm", False) else fit.coef_table(ddf)
    lines = _header(fit, "lme4" if table is None else ddf)
    glmm = getattr(fit, "is_glmm", False)
    lines.append("")
    if not glmm and fit.reml:
        lines.append(f"REML criterion at convergence: {format_r([round(fit.reml_criterion, 1)], 7)[0].strip()}")
    else:
        lines.append(_aic_table(fit, 1))
    lines.append("")
    lines.extend(_scaled_residuals(fit, digits))
    lines.append("")
    lines.append("Random effects:")
    comp = ("Variance", "Std.Dev.")
    lines.append(format_varcorr(fit.varcorr, digits=digits, comp=comp))
    lines.append(_groups_line(fit))
    if len(fit.beta):  # lme4 prints no fixed-effects block for a model without them
        lines.append("")
        lines.append("Fixed effects:")
        lines.append(_coef_table(fit, digits, table))
    if 1 < len(fit.beta) <= 12:  # lme4.summary.cor.max
        lines.append("")
        lines.extend(_corr_fixed(fit))
    singular = fit.is_singular()
    messages = getattr(fit, "convergence_messages", [])
    if singular or messages or not fit.converged:
        lines.append(f"optimizer ({fit.optinfo.method}) convergence code: {_convergence_code(fit)}")
    if singular:
        lines.append("boundary (singular) fit: see help('isSingular')")
    lines.extend(messages)
    return "\n".join(lines) + "\n"


def _convergence_code(fit) -> str:
    """lme4's "0 (OK)", or the code and message of an optimizer that stopped early."""
    opt = fit.optinfo
    return "0 (OK)" if opt.converged else f"{opt.code} ({opt.message})"


def render_print(fit, digits: int = 4) -> str:
    lines = _header(fit)
    glmm = getattr(fit, "is_glmm", False)
    if not glmm and fit.reml:
        lines.append(f"REML criterion at convergence: {format_r([round(fit.reml_criterion, 4)], 7)[0].strip()}")
    else:
        lines.append(_aic_table(fit, 4))
    lines.append("Random effects:")
    lines.append(format_varcorr(fit.varcorr, digits=digits, comp=("Std.Dev.",)))
    lines.append(_groups_line(fit))
    lines.append("Fixed Effects:" if len(fit.beta) else "No fixed effect coefficients")
    vals = format_r(fit.beta, digits)
    names = list(fit.design.fixed_names)
    # R prints a named vector in rows that fit a width of 80, all columns equally wide.
    w = max([len(n) for n in names] + [len(v) for v in vals] + [1])
    per_line = max(1, 80 // (w + 2))
    for start in range(0, len(names), per_line):
        chunk = slice(start, start + per_line)
        lines.append("".join(n.rjust(w) + "  " for n in names[chunk]))
        lines.append("".join(v.rjust(w) + "  " for v in vals[chunk]))
    singular = fit.is_singular()
    n_checks = int(singular) + len(getattr(fit, "convergence_messages", []))
    if n_checks or not fit.converged:
        lines.append(f"optimizer ({fit.optinfo.method}) convergence code: {_convergence_code(fit)}"
                     f" ; {0 if fit.converged else 1} optimizer warnings; "
                     f"{n_checks} lme4 warnings ")
    return "\n".join(lines) + "\n"


class Summary:
    """``fit.summary()``: prints in lme4's layout; the pieces stay available as attributes."""

    def __init__(self, fit, ddf: str = "lme4"):
        self.fit = fit
        self.ddf = ddf
        lme4_table = ddf == "lme4" or getattr(fit, "is_glmm", False)
        self.coefficients = fit.coefficients() if lme4_table else fit.coef_table(ddf)
        self.varcorr = fit.varcorr

    def __str__(self) -> str:
        return render_summary(self.fit, ddf=self.ddf)

    __repr__ = __str__
