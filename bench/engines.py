"""Python engines: how each one fits a named problem, and what it reports.

Each adapter gets the problem's pandas DataFrame (factor columns as categoricals)
and fits it through the engine's own formula interface.  ``prepare`` may add a
column that a peer needs to spell the same model (e.g. the failure count of a
``cbind()`` response); it runs before the clock starts.  ``fit`` is the timed
part: formula + data frame -> fitted model.

Every engine is called with the options that make it compute what lme4's default
call computes (no Satterthwaite degrees of freedom, for instance).

``estimates`` returns a dict with
  m2ll   -2 x the engine's log-likelihood at its optimum: the REML criterion for a
         REML fit, the (Laplace) -2 logLik for a GLMM, None when the engine has no
         likelihood (variational Bayes);
  fixef  {name: value}, in the engine's own naming;
  theta  list (relative covariance factor, lme4's parametrization) when the engine
         reports it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

# statsmodels builds the random-effects design of a crossed model densely (n x q);
# above this many cells we do not even try (8 bytes each).
DENSE_CELL_LIMIT = 100_000_000


class Unsupported(Exception):
    """This engine cannot fit this problem as specified."""


def _fixef_dict(names, values):
    return {str(k): float(v) for k, v in zip(names, values)}


class Engine:
    name = "?"
    modes = ("lmm", "glmm")

    def version(self):
        return None

    def check(self, problem, df):
        """Raise Unsupported when the engine cannot fit the problem."""
        if problem.kind not in self.modes:
            if problem.kind == "objective":
                raise Unsupported(f"{self.name} exposes no profiled objective at a given theta")
            raise Unsupported(f"{self.name} has no {problem.kind} interface")

    def prepare(self, problem, df):
        return df

    def fit(self, problem, df):
        raise NotImplementedError

    def estimates(self, problem, model):
        raise NotImplementedError

    # objective microbenchmark: return a callable theta -> criterion
    def objective_fn(self, problem, df):
        raise Unsupported(f"{self.name} exposes no profiled objective at a given theta")


# --- mixedfit ----------------------------------------------------------------------------


class Mixedfit(Engine):
    name = "mixedfit"
    modes = ("lmm", "glmm", "objective")

    def __init__(self):
        import mixedfit

        self.mod = mixedfit

    def version(self):
        return getattr(self.mod, "__version__", None)

    def fit(self, problem, df):
        if problem.kind == "glmm":
            return self.mod.glmer(problem.formula, df, family=problem.family)
        return self.mod.lmer(problem.formula, df, reml=problem.reml)

    def estimates(self, problem, m):
        if problem.kind == "glmm":
            m2ll = -2.0 * float(m.loglik)
        elif problem.reml:
            m2ll = float(m.reml_criterion)
        else:
            m2ll = -2.0 * float(m.loglik)
        fe = m.fixef
        return {"m2ll": m2ll, "fixef": _fixef_dict(fe.index, fe.values),
                "theta": [float(t) for t in np.ravel(m.theta)]}

    def objective_fn(self, problem, df):
        fit = self.mod.lmer(problem.formula, df, reml=problem.reml)
        return fit.objective


# --- glmm (PyPI) ------------------------------------------------------------------------------


class Glmm(Engine):
    name = "glmm"

    def __init__(self):
        import glmm

        self.mod = glmm

    def version(self):
        from importlib.metadata import version

        return version("glmm")

    def prepare(self, problem, df):
        if problem.binomial_counts:
            # glmm's cbind() takes two column names, not expressions
            succ, total = problem.binomial_counts
            df = df.copy()
            df["_failures"] = df[total] - df[succ]
        return df

    def _formula(self, problem):
        if problem.binomial_counts:
            succ, _ = problem.binomial_counts
            lhs, rhs = problem.formula.split("~", 1)
            return f"cbind({succ}, _failures) ~{rhs}"
        return problem.formula

    def fit(self, problem, df):
        if problem.kind == "glmm":
            return self.mod.fit(df, self._formula(problem), family=problem.family)
        # lme4's lmer computes neither Satterthwaite df nor a Hessian-based vcov
        return self.mod.fit(df, problem.formula, reml=problem.reml, satterthwaite=False,
                            wald_se="rx")

    def estimates(self, problem, m):
        return {"m2ll": -2.0 * float(m.loglik), "fixef": _fixef_dict(m.names, m.beta),
                "converged": bool(m.converged)}


# --- mixedlm (PyPI) -----------------------------------------------------------------------------


class Mixedlm(Engine):
    name = "mixedlm"
    modes = ("lmm", "glmm", "objective")

    def __init__(self):
        import mixedlm

        self.mod = mixedlm

    def version(self):
        from importlib.metadata import version

        return version("mixedlm")

    def prepare(self, problem, df):
        if problem.binomial_counts:
            # no cbind(): the same binomial model as a proportion with the trials as weights
            succ, total = problem.binomial_counts
            df = df.copy()
            df["_proportion"] = df[succ] / df[total]
        return df

    def fit(self, problem, df):
        if problem.kind == "glmm":
            fam = self.mod.families.Binomial()
            if problem.binomial_counts:
                _, total = problem.binomial_counts
                rhs = problem.formula.split("~", 1)[1]
                return self.mod.glmer(f"_proportion ~{rhs}", df, family=fam, weights=total)
            return self.mod.glmer(problem.formula, df, family=fam)
        return self.mod.lmer(problem.formula, df, REML=problem.reml)

    def estimates(self, problem, m):
        fe = m.fixef()
        return {"m2ll": -2.0 * float(m.logLik()), "fixef": {str(k): float(v) for k, v in fe.items()},
                "theta": [float(t) for t in np.ravel(m.theta)]}

    def objective_fn(self, problem, df):
        m = self.mod.lmer(problem.formula, df, REML=problem.reml)
        return m.as_function("deviance")


# --- statsmodels ---------------------------------------------------------------------------------


def _bars(formula):
    """Split 'y ~ a + b + (x | g) + (1 | h)' into ('y ~ a + b', [('x', 'g'), ('1', 'h')])."""
    import re

    bars = re.findall(r"\(([^()|]*)\|([^()|]*)\)", formula)
    fixed = re.sub(r"\+?\s*\([^()|]*\|[^()|]*\)", "", formula).strip()
    fixed = re.sub(r"\s+", " ", fixed).rstrip("+ ").strip()
    return fixed, [(a.strip(), b.strip()) for a, b in bars]


class Statsmodels(Engine):
    """MixedLM for linear models; BinomialBayesMixedGLM (variational Bayes) for binary GLMMs."""

    name = "statsmodels"

    def __init__(self):
        import statsmodels

        self.sm = statsmodels

    def version(self):
        return self.sm.__version__

    def check(self, problem, df):
        super().check(problem, df)
        fixed, bars = _bars(problem.formula)
        groups = [g for _, g in bars]
        if problem.kind == "glmm":
            if problem.binomial_counts:
                raise Unsupported("BinomialBayesMixedGLM takes a binary (0/1) response only, not binomial counts")
            q = sum(df[g].nunique() for g in groups)
            cells = len(df) * q
            if cells > DENSE_CELL_LIMIT:
                raise Unsupported(
                    f"the formula interface builds the random-effects design densely: "
                    f"{len(df):,} x {q:,} ({cells * 8 / 2**30:.1f} GiB); not attempted")
        elif len(groups) > 1:
            # crossed factors: one all-data group, each factor a variance component (dense n x q)
            q = sum(df[g].nunique() for g in groups)
            cells = len(df) * q
            if cells > DENSE_CELL_LIMIT:
                raise Unsupported(
                    f"crossed random effects need one all-data group with dense variance-component "
                    f"designs: {len(df):,} x {q:,} ({cells * 8 / 2**30:.1f} GiB); not attempted")

    def fit(self, problem, df):
        import statsmodels.formula.api as smf

        fixed, bars = _bars(problem.formula)
        if problem.kind == "glmm":
            from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

            vc = {g: f"0 + C({g})" for _, g in bars}
            model = BinomialBayesMixedGLM.from_formula(fixed, vc, df)
            return model.fit_vb()
        if len(bars) == 1:
            expr, g = bars[0]
            re_formula = "~" + expr if expr not in ("1", "") else "1"
            model = smf.mixedlm(fixed, df, groups=g, re_formula=re_formula)
        else:
            if any(expr != "1" for expr, _ in bars):
                raise Unsupported("crossed random slopes are not mapped to statsmodels")
            vc = {g: f"0 + C({g})" for _, g in bars}
            model = smf.mixedlm(fixed, df.assign(_all=1), groups="_all", re_formula="0",
                                vc_formula=vc)
        return model.fit(reml=problem.reml)

    def estimates(self, problem, r):
        if problem.kind == "glmm":
            names = r.model.exog_names
            return {"m2ll": None, "fixef": _fixef_dict(names, r.fe_mean),
                    "note": "variational Bayes posterior means: no likelihood to compare"}
        fe = r.fe_params
        return {"m2ll": -2.0 * float(r.llf), "fixef": _fixef_dict(fe.index, fe.values),
                "converged": bool(getattr(r, "converged", True))}


ENGINES = {
    "mixedfit": Mixedfit,
    "glmm": Glmm,
    "mixedlm": Mixedlm,
    "statsmodels": Statsmodels,
}

PYTHON_ENGINES = list(ENGINES)


def get(name):
    return ENGINES[name]()


def finite(x):
    return x is not None and isinstance(x, float) and math.isfinite(x)
