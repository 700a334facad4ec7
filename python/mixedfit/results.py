"""Result objects: everything computed once at the optimum, plus accessors users know from lme4."""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._design import Design
from ._errors import DataError, SingularFitWarning

__all__ = ["VarCorr", "MixedResult", "LmerResult"]


@dataclass
class VarCorrTerm:
    group: str          # lme4's label in VarCorr ("Subject", "Subject.1" for a second term)
    names: list[str]
    cov: np.ndarray     # (p, p) covariance matrix of the random effects

    @property
    def sd(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov))

    @property
    def corr(self) -> np.ndarray:
        sd = self.sd
        with np.errstate(invalid="ignore", divide="ignore"):
            c = self.cov / np.outer(sd, sd)
        np.fill_diagonal(c, 1.0)
        return c


class VarCorr:
    """Estimated variances, standard deviations and correlations of the random effects.

    ``print`` shows lme4's layout; ``to_frame()`` gives lme4's ``as.data.frame(VarCorr(fit))``.
    """

    def __init__(self, terms: list[VarCorrTerm], sigma: float | None):
        self.terms = terms
        self.sigma = sigma

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for t in self.terms:
            p = len(t.names)
            sd = t.sd
            for i in range(p):
                rows.append((t.group, t.names[i], None, t.cov[i, i], sd[i]))
            corr = t.corr
            for j in range(p):
                for i in range(j + 1, p):
                    rows.append((t.group, t.names[j], t.names[i], t.cov[i, j], corr[i, j]))
        if self.sigma is not None:
            rows.append(("Residual", None, None, self.sigma**2, self.sigma))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    def format(self, digits: int = 4, comp=("Std.Dev.",)) -> str:
        from ._repr import format_varcorr

        return format_varcorr(self, digits=digits, comp=comp)

    def __str__(self) -> str:
        return self.format(digits=4, comp=("Std.Dev.",))

    __repr__ = __str__


class MixedResult:
    """What LMM and GLMM fits share: random-effects accessors, predictions, tidy tables."""

    design: Design
    theta: np.ndarray
    beta: np.ndarray
    b: np.ndarray
    _condvar: list[np.ndarray]
    _eta: np.ndarray

    # ---- tables built on first use (a fit returns without them) -------------------------
    @functools.cached_property
    def vcov(self) -> pd.DataFrame:
        """Covariance matrix of the fixed-effect estimates, labelled by their names."""
        names = self.design.fixed_names
        return pd.DataFrame(self._vcov_array, index=names, columns=names)

    # ---- simple properties -------------------------------------------------------------
    @property
    def formula(self) -> str:
        return self.design.parsed.text

    @property
    def data(self) -> pd.DataFrame:
        """The rows used in the fit (rows with missing values dropped)."""
        return self.design.frame

    @property
    def nobs(self) -> int:
        return self.design.n

    @property
    def response_name(self) -> str:
        return self.design.parsed.response

    @property
    def fixef(self) -> pd.Series:
        return pd.Series(self.beta, index=self.design.fixed_names, name="fixef")

    @property
    def ngroups(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.design.terms:
            out.setdefault(t.group, t.nlevels)
        return out

    @property
    def re_terms(self) -> list[tuple[str, list[str]]]:
        return [(t.group, list(t.columns)) for t in self.design.terms]

    @property
    def groups(self) -> dict[str, pd.Series]:
        out = {}
        for t in self.design.terms:
            if t.group not in out:
                out[t.group] = pd.Series(
                    np.asarray(t.levels)[t.codes], index=self.design.index, name=t.group
                )
        return out

    @property
    def converged(self) -> bool:
        """Whether the optimizer converged (``optinfo`` says which optimizer ran and how it
        stopped: ``method``, ``code``, ``message``, ``nevals``)."""
        return bool(self.optinfo.converged)

    def is_singular(self, tol: float | None = None) -> bool:
        """True when a variance parameter is at (or within ``tol`` of) its boundary, as lme4."""
        tol = self.control.singular_tol if tol is None else tol
        lower_zero = self._theta_lower == 0
        return bool(np.any(self.theta[lower_zero] < tol))

    # ---- random effects -----------------------------------------------------------------
    def _term_blocks(self):
        pos = 0
        for k, t in enumerate(self.design.terms):
            size = t.nlevels * t.p
            yield k, t, self.b[pos : pos + size].reshape(t.nlevels, t.p)
            pos += size

    def _condvar_blocks(self, k: int) -> np.ndarray:
        """(levels, p, p) conditional covariance of term k's random effects."""
        t = self.design.terms[k]
        M = self._condvar[k]
        return M.reshape(t.p, t.nlevels, t.p).transpose(1, 0, 2)

    def ranef(self, condvar: bool = False) -> dict[str, pd.DataFrame]:
        """Conditional modes per grouping factor: a DataFrame indexed by level, one column per
        term column; with ``condvar=True`` also ``condsd_<column>`` (conditional SDs)."""
        frames: dict[str, list[pd.DataFrame]] = {}
        for k, t, B in self._term_blocks():
            df = pd.DataFrame(B, index=t.levels, columns=list(t.columns))
            if condvar:
                cv = self._condvar_blocks(k)
                sd = np.sqrt(np.maximum(np.einsum("kii->ki", cv), 0.0))
                for j, c in enumerate(t.columns):
                    df[f"condsd_{c}"] = sd[:, j]
            df.index.name = t.group
            frames.setdefault(t.group, []).append(df)
        out = {}
        for g, dfs in frames.items():
            df = pd.concat(dfs, axis=1) if len(dfs) > 1 else dfs[0]
            if condvar:
                vals = [c for c in df.columns if not str(c).startswith("condsd_")]
                sds = [c for c in df.columns if str(c).startswith("condsd_")]
                df = df[vals + sds]
            out[g] = df
        return out

    def condvar(self, group: str) -> np.ndarray:
        """(levels, p, p) conditional covariance matrices for a grouping factor's single term."""
        for k, t in enumerate(self.design.terms):
            if t.group == group:
                return self._condvar_blocks(k)
        raise KeyError(f"no grouping factor {group!r}; have {list(self.ngroups)}")

    def coef(self) -> dict[str, pd.DataFrame]:
        """Per grouping factor: fixed effects plus that factor's random effects, per level."""
        fe = self.fixef
        out = {}
        for g, re in self.ranef().items():
            cols = list(fe.index) + [c for c in re.columns if c not in fe.index]
            df = pd.DataFrame(0.0, index=re.index, columns=cols)
            for c in fe.index:
                df[c] = fe[c]
            for c in re.columns:
                df[c] = df[c] + re[c]
            out[g] = df
        return out

    # ---- fitted values and prediction ----------------------------------------------------
    def _linear_predictor(self) -> np.ndarray:
        return self._eta

    def predict(self, newdata=None, re_form=None, allow_new_levels: bool = False,
                type: str = "response") -> np.ndarray:
        """Predictions. ``re_form=None`` uses every random effect; ``"~0"`` or ``"NA"`` none
        (population level); a formula of bar terms uses just those random-effect terms, as lme4
        does: ``"~(1 | Subject)"`` keeps the Subject intercepts and leaves out a
        ``(0 + Days | Subject)`` term (or the Days column of ``(Days | Subject)``).
        New levels raise unless ``allow_new_levels=True`` (then they get the population value)."""
        if type not in ("response", "link"):
            raise ValueError(f"type must be 'response' or 'link', got {type!r}")
        use = self._re_columns_for(re_form)
        if newdata is None:
            if use is None:
                eta = self._eta
            else:
                eta = self._eta_parts(self.design.X, self.design.offset,
                                      [(t.codes, t.Z) for t in self.design.terms], use)
        else:
            eta = self._eta_newdata(newdata, use, allow_new_levels)
        return self._inverse_link(eta) if type == "response" else eta

    def _inverse_link(self, eta):
        return eta

    def _re_columns_for(self, re_form) -> dict[int, np.ndarray] | None:
        """Which random effects ``re_form`` selects: None for all, else {term index: boolean
        mask over the term's columns} (terms not in the dict are left out)."""
        if re_form is None:
            return None
        if isinstance(re_form, float) and math.isnan(re_form):
            return {}
        s = str(re_form).replace(" ", "")
        if s in ("~0", "NA", "~1-1", "0"):
            return {}
        from ._formula import parse_formula

        parsed = parse_formula("y" + s if s.startswith("~") else "y~" + s)
        use: dict[int, np.ndarray] = {}
        for re_term in parsed.re_terms:
            for column in self._re_form_columns(re_term):
                k, j = self._find_re_column(re_term, column)
                use.setdefault(k, np.zeros(self.design.terms[k].p, dtype=bool))[j] = True
        return use

    def _re_form_columns(self, re_term) -> list[str]:
        """lme4's column names of one ``re_form`` bar term, built on the fit's data."""
        from ._design import _ordered_factors
        from ._errors import FormulaError
        from ._terms import bar_term_columns

        source = self.design.source
        try:
            return bar_term_columns(re_term.lhs, source,
                                    _ordered_factors(source, list(source.columns)))
        except FormulaError as exc:
            raise FormulaError(f"re_form term '({re_term.lhs} | {re_term.name})' cannot be "
                               f"evaluated on the fit's data: {exc}") from None

    def _find_re_column(self, re_term, column: str) -> tuple[int, int]:
        """(term index, column index) of a grouping factor's random-effect column."""
        if re_term.name not in self.ngroups:
            raise ValueError(f"re_form term '({re_term.lhs} | {re_term.name})': grouping factor "
                             f"{re_term.name!r} is not in the model (have {list(self.ngroups)})")
        for k, t in enumerate(self.design.terms):
            if t.group == re_term.name and column in t.columns:
                return k, list(t.columns).index(column)
        raise ValueError(f"re_form term '({re_term.lhs} | {re_term.name})': the model has no "
                         f"random effect {column!r} for {re_term.name!r}")

    def _eta_parts(self, X, offset, re_parts, use):
        eta = X @ self.beta
        if offset is not None:
            eta = eta + offset
        for (k, t, B), (codes, Z) in zip(self._term_blocks(), re_parts):
            if use is not None and k not in use:
                continue
            if use is not None:
                Z, B = Z[:, use[k]], B[:, use[k]]
            valid = codes >= 0
            contrib = np.einsum("ij,ij->i", Z, B[np.where(valid, codes, 0)])
            eta = eta + np.where(valid, contrib, 0.0)
        return eta

    def _eta_newdata(self, newdata, use, allow_new_levels):
        X, offset, parts, _ = self._newdata_parts(newdata, use, allow_new_levels)
        return self._eta_parts(X, offset, parts, use)

    def _newdata_parts(self, newdata, use, allow_new_levels):
        """Fixed-effects matrix, offset, per-term (codes, Z) (code -1 for a level the fit has
        not seen) and per-term level labels of ``newdata``."""
        from ._design import as_pandas, newdata_matrix
        from ._rexpr import evaluate

        nd = as_pandas(newdata)
        X = newdata_matrix(self.design.fixed_spec, nd, self.formula)
        if self.design.keep_fixed is not None and X.shape[1] == len(self.design.keep_fixed):
            X = X[:, self.design.keep_fixed]
        offset = None
        for o in self.design.parsed.offsets:
            ov = np.asarray(evaluate(o, nd, where=f" (offset of {self.formula!r})"), dtype=float)
            offset = ov if offset is None else offset + ov
        parts, labels = [], []
        for k, (t, spec) in enumerate(zip(self.design.terms, self.design.term_specs)):
            if use is not None and k not in use:
                parts.append((np.full(len(nd), -1), np.zeros((len(nd), t.p))))
                labels.append(None)
                continue
            for c in t.group_cols:
                if c not in nd.columns:
                    raise DataError(f"newdata has no grouping column {c!r}")
            Z = newdata_matrix(spec, nd, self.formula)
            if len(t.group_cols) == 1:
                lab = nd[t.group_cols[0]]
                codes = pd.Index(t.levels).get_indexer(lab)
                if np.any(codes < 0) and isinstance(lab.dtype, pd.CategoricalDtype):
                    codes = pd.Index(t.levels).get_indexer(lab.astype(object))
            else:
                lab = nd[list(t.group_cols)].astype(str).agg(":".join, axis=1)
                codes = pd.Index(t.levels).get_indexer(lab)
            new = codes < 0
            if np.any(new) and not allow_new_levels:
                bad = [b.item() if hasattr(b, "item") else b
                       for b in pd.Series(np.asarray(lab)[new]).unique()[:5]]
                raise DataError(
                    f"new level(s) {bad} of grouping factor {t.group!r} in newdata; "
                    "pass allow_new_levels=True to predict them at the population level"
                )
            parts.append((codes, Z))
            labels.append(np.asarray(lab))
        return X, offset, parts, labels

    # ---- tables -----------------------------------------------------------------------------
    def coefficients(self) -> pd.DataFrame:
        """lme4's ``coef(summary(fit))``: Estimate, Std. Error, a t or z value, and for GLMMs
        the Wald p-value ``Pr(>|z|)`` (normal reference distribution, as lme4 prints it)."""
        se = np.sqrt(np.diag(self.vcov.to_numpy()))
        with np.errstate(divide="ignore", invalid="ignore"):
            stat = self.beta / se
        z = getattr(self, "is_glmm", False) and not getattr(self, "has_scale", False)
        table = pd.DataFrame({"Estimate": self.beta, "Std. Error": se,
                              "z value" if z else "t value": stat},
                             index=list(self.design.fixed_names))
        if getattr(self, "has_pvalues", False):
            table["Pr(>|z|)"] = _two_sided_normal_p(stat)
        return table

    def coef_table(self, ddf: str = "Satterthwaite") -> pd.DataFrame:
        """Fixed effects with tests, indexed by term. For an LMM, lmerTest's
        ``summary(fit)$coefficients``: Estimate, Std. Error, df, t value, Pr(>|t|) with
        ``ddf="Satterthwaite"`` or ``"Kenward-Roger"`` (pbkrtest's adjusted SEs and df; REML
        fits only), or lme4's Estimate, Std. Error, t value with ``ddf="lme4"``. For a GLMM,
        lme4's Wald table (Estimate, Std. Error, z value, Pr(>|z|)) whatever ``ddf``."""
        from .inference.tables import coef_table

        return coef_table(self, ddf)

    def tidy(self, ddf: str = "Satterthwaite") -> pd.DataFrame:
        """One DataFrame of estimates (broom.mixed's columns): fixed effects with standard
        errors, test statistics, ``df`` and ``p_value`` (LMMs: ``ddf`` as in
        :meth:`coef_table`, none with "lme4"; GLMMs: Wald z tests, df NaN), then
        random-effect SDs and correlations."""
        tests = self.coef_table(ddf)
        stat = tests["t value"] if "t value" in tests else tests["z value"]
        rows = [("fixed", None, nm, est, se, st)
                for nm, est, se, st in zip(tests.index, tests["Estimate"], tests["Std. Error"], stat)]
        for _, r in self.varcorr.to_frame().iterrows():
            if r["grp"] == "Residual":
                term = "sd__Observation"
            elif r["var2"] is None or (isinstance(r["var2"], float) and math.isnan(r["var2"])):
                term = f"sd__{r['var1']}"
            else:
                term = f"cor__{r['var1']}.{r['var2']}"
            rows.append(("ran_pars", r["grp"], term, r["sdcor"], np.nan, np.nan))
        out = pd.DataFrame(rows, columns=["effect", "group", "term", "estimate", "std_error", "statistic"])
        nfix = len(self.design.fixed_names)
        for col, name in (("df", "df"), ("p_value", "Pr(>|t|)" if "Pr(>|t|)" in tests else "Pr(>|z|)")):
            values = tests[name].to_numpy() if name in tests else np.full(nfix, np.nan)
            out[col] = np.concatenate([values, np.full(len(out) - nfix, np.nan)])
        return out

    # ---- inference (python/mixedfit/inference) ----------------------------------------------
    def simulate(self, nsim: int = 1, seed=None, re_form=None, newdata=None) -> pd.DataFrame:
        """Responses simulated from the fit (lme4's ``simulate``): columns ``sim_1..sim_nsim``.
        ``re_form=None`` (lme4's default ``re.form = NA``) draws new random effects;
        ``re_form="all"`` (lme4's ``re.form = NULL``) keeps the estimated ones; see
        :mod:`mixedfit.inference.simulate_fit`."""
        from .inference.simulate_fit import simulate

        return simulate(self, nsim=nsim, seed=seed, re_form=re_form, newdata=newdata)

    def refit(self, newresp):
        """The same model fitted to a new response (lme4's ``refit``)."""
        from .inference.refit import refit

        return refit(self, newresp)

    def confint(self, parm=None, level: float = 0.95, method: str = "profile", nsim: int = 500,
                seed=None, **kwargs) -> pd.DataFrame:
        """Confidence intervals (lme4's ``confint``): ``method`` "profile", "Wald" or "boot";
        rows ``.sig01, ..., .sigma`` and the fixed effects, columns e.g. ``2.5 %``, ``97.5 %``."""
        from .inference.profile import confint

        return confint(self, parm=parm, level=level, method=method, nsim=nsim, seed=seed, **kwargs)

    def profile(self, which=None, alphamax: float = 0.01):
        """The likelihood profile (lme4's ``profile``): zeta curves for each parameter."""
        from .inference.profile import profile

        return profile(self, which=which, alphamax=alphamax)

    def __str__(self) -> str:
        from ._repr import render_print

        return render_print(self)

    def __repr__(self) -> str:
        return self.__str__()

    def summary(self, ddf: str = "lme4"):
        """lme4's summary; for an LMM with ``ddf="Satterthwaite"`` or ``"Kenward-Roger"``
        lmerTest's (title and df/p-value columns). GLMMs print lme4's layout."""
        from ._repr import Summary
        from .inference.ddf import DDF_METHODS
        from .inference.lmer_anova import check_ddf

        return Summary(self, check_ddf(ddf, DDF_METHODS))


class LmerResult(MixedResult):
    """A fitted linear mixed model (lme4's ``lmerMod``)."""

    family = "gaussian"
    link = "identity"

    def __init__(self, design, problem, reml, theta, opt, sol, control, data_name, call):
        self.design = design
        self._problem = problem
        self.reml = bool(reml)
        self.theta = np.asarray(theta, dtype=float)
        self.optinfo = opt
        self.control = control
        self.data_name = data_name
        self._call = call
        n, p = design.n, design.p
        self.beta = np.asarray(sol["beta"])
        self.u = np.asarray(sol["u"])
        self.b = np.asarray(sol["b"])
        self.devcomp = {k: float(sol[k]) for k in ("ldL2", "ldRX2", "pwrss", "wrss", "ussq")}
        pwrss = self.devcomp["pwrss"]
        self.sigma = math.sqrt(pwrss / (n - p if self.reml else n))
        s2 = self.sigma**2
        self._vcov_array = s2 * np.asarray(sol["unscaled_vcov"])
        self._condvar = [s2 * np.asarray(m) for m in sol["unscaled_condvar"]]
        self._theta_lower = _theta_lower(design)
        ldW = float(sol["ldW"])
        ml_dev = self.devcomp["ldL2"] - ldW + n * (1 + math.log(2 * math.pi * pwrss / n))
        if self.reml:
            self.reml_criterion = float(opt.fun)
            self.loglik = -0.5 * self.reml_criterion
        else:
            self.reml_criterion = None
            self.loglik = -0.5 * float(opt.fun)
        # lme4's deviance(): -2 logLik for ML fits; for REML fits the ML deviance at the REML
        # estimates (what deviance(fit, REML = FALSE) reports).
        self.deviance = -2.0 * self.loglik if not self.reml else ml_dev
        self.df = p + len(self.theta) + 1
        self.aic = -2.0 * self.loglik + 2 * self.df
        self.bic = -2.0 * self.loglik + self.df * math.log(n)

    @functools.cached_property
    def _eta(self) -> np.ndarray:
        """The linear predictor X beta + Z b (+ offset), computed on first use."""
        eta = self._problem.linear_predictor(self.beta, self.b)
        return eta if self.design.offset is None else eta + self.design.offset

    @functools.cached_property
    def varcorr(self) -> VarCorr:
        return VarCorr(_varcorr_terms(self.design, self.theta, self.sigma**2), self.sigma)

    @property
    def deviance_table_value(self) -> float:
        return -2.0 * self.loglik

    def objective(self, theta) -> float:
        """The profiled criterion of this fit (REML or ML) at a fixed ``theta`` (lme4's devfun)."""
        return float(self._problem.objective(np.asarray(theta, dtype=float), self.reml))

    def fitted(self) -> pd.Series:
        return pd.Series(self._eta, index=self.design.index, name="fitted")

    def residuals(self, type: str = "response", scaled: bool = False) -> pd.Series:
        """``type``: "response" (y - fitted), "pearson" (weighted), "working", "deviance"."""
        r = self.design.y - self._eta
        if type in ("pearson", "deviance"):
            if self.design.weights is not None:
                r = r * np.sqrt(self.design.weights)
        elif type not in ("response", "working"):
            raise ValueError(f"unknown residual type {type!r}; use response, pearson, working or deviance")
        if scaled:
            r = r / self.sigma
        return pd.Series(r, index=self.design.index, name="residuals")

    def refit_ml(self) -> "LmerResult":
        if not self.reml:
            return self
        from .lmm import lmer

        args = dict(self._call)
        args["reml"] = False
        # An internal refit (anova, profiles): the user was told about a singular fit when the
        # model was fitted, as lme4's refitML does not repeat its isSingular message.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingularFitWarning)
            return lmer(**args)


def _two_sided_normal_p(stat: np.ndarray) -> np.ndarray:
    """2 P(Z > |z|) for a standard normal Z."""
    from scipy.special import ndtr

    return 2.0 * ndtr(-np.abs(np.asarray(stat, dtype=float)))


def _theta_lower(design: Design) -> np.ndarray:
    from .optimize import theta_lower

    return theta_lower([t.p for t in design.terms])


def _varcorr_terms(design: Design, theta: np.ndarray, scale2: float) -> list[VarCorrTerm]:
    from .optimize import lambda_blocks

    out = []
    seen: dict[str, int] = {}
    lams = lambda_blocks(np.asarray(theta, dtype=float), [t.p for t in design.terms])
    for t, lam in zip(design.terms, lams):
        label = t.group
        if label in seen:
            seen[label] += 1
            label = f"{t.group}.{seen[t.group]}"
        else:
            seen[label] = 0
        out.append(VarCorrTerm(group=label, names=list(t.columns), cov=scale2 * lam @ lam.T))
    return out
