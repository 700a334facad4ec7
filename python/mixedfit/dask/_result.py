"""Results of Dask fits: the in-memory result classes, with what needs the rows computed on
the cluster (lazily, as Dask collections) and what would need them again refused by name."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pandas as pd

from ..glmm import GlmerResult
from ..results import LmerResult
from ._spec import FitSpec, _is_text, _with_global_levels, partition_arrays

__all__ = ["DaskDesign", "DaskLmerResult", "DaskGlmerResult"]


# The synthetic design of contrast_design: rows per combination of levels, and at most.
_CONTRAST_ROWS_PER_CELL = 3
_CONTRAST_MAX_ROWS = 300_000


class DaskDesign:
    """The design of a Dask fit: the in-memory Design's layout and specs, rows on the
    cluster. ``X``, ``y`` and row labels are not on the client: reading them raises."""

    def __init__(self, spec: FitSpec, ddf, weights):
        self.spec = spec
        self.parsed = spec.parsed
        self.used = list(spec.scan.used)
        self.fixed_names = spec.fixed_names
        self.dropped_fixed = [nm for nm, k in zip(spec.fixed_names_all, spec.keep_fixed) if not k]
        self.terms = spec.terms
        self.term_specs = spec.term_specs
        self.fixed_spec = spec.fixed_spec
        self.keep_fixed = spec.keep_fixed
        self.weights = weights          # the column name (or None)
        self.offset = None              # offsets enter the lazy linear predictor
        self.n_dropped_na = spec.n_dropped_na
        self.n = spec.n
        self.p = len(self.fixed_names)
        self.source = ddf

    @property
    def response(self):
        return self.parsed.response

    @property
    def frame(self):
        """The model frame: the used columns, lazily (rows with missing values included;
        the fit drops them)."""
        return self.source[self.used]

    def x_gram(self) -> np.ndarray:
        """X'X of the fixed effects over all rows, from the scaling pass's R factor."""
        if self.spec.x_gram is None:
            raise NotImplementedError("X'X of this Dask fit was not kept")
        return self.spec.x_gram

    def contrast_design(self) -> tuple[np.ndarray, pd.DataFrame]:
        """(X, frame) of a small synthetic design with the fit's coding: every combination of
        the fixed-effect factors' global levels, three rows each with distinct values of the
        numeric variables. It spans the same column space as the rows on the cluster, which is
        all that structural contrasts (the type III anova) depend on."""
        variables = sorted(self.fixed_spec.required_variables)
        levels = {v: self.spec.component_levels[v] for v in variables
                  if v in self.spec.component_levels}
        cells = math.prod(len(lev) for lev in levels.values())
        if cells * _CONTRAST_ROWS_PER_CELL > _CONTRAST_MAX_ROWS:
            raise NotImplementedError(
                f"the type III anova of a Dask fit builds a design over all {cells:,} "
                "combinations of the fixed-effect factors' levels, too many here; use "
                "anova(fit, type=1) or type=2")
        grid = pd.MultiIndex.from_product([list(lev) for lev in levels.values()],
                                          names=list(levels)).to_frame(index=False)
        grid = grid.loc[grid.index.repeat(_CONTRAST_ROWS_PER_CELL)].reset_index(drop=True)
        rng = np.random.default_rng(20261202)
        meta = self.source._meta if self.source is not None else None
        cols = {}
        for v in variables:
            if v in levels:
                dtype = None if meta is None else meta[v].dtype
                if dtype is not None and not _is_text(dtype):
                    cols[v] = grid[v].astype(dtype)
                else:
                    cols[v] = pd.Categorical(grid[v], categories=levels[v],
                                             ordered=bool(getattr(dtype, "ordered", False)))
            else:
                cols[v] = rng.normal(size=len(grid))
        frame = pd.DataFrame(cols)
        X = np.asarray(self.fixed_spec.get_model_matrix(frame), dtype=np.float64)
        if self.keep_fixed is not None:
            X = X[:, np.asarray(self.keep_fixed, dtype=bool)]
        return X, frame

    def _rows(self, what: str):
        raise NotImplementedError(f"{what} of a Dask fit stays on the cluster; use fitted(), "
                                  "residuals() or predict(), which return Dask collections")

    X = property(lambda self: self._rows("the fixed-effects matrix X"))
    y = property(lambda self: self._rows("the response vector"))
    index = property(lambda self: self._rows("the row index"))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["source"] = None  # the collection is not pickled with the fit
        return state


def _eta(a, beta, b_terms) -> np.ndarray:
    """X beta + Z b + offset of a partition's arrays."""
    eta = a.X @ beta
    if a.offset is not None:
        eta = eta + a.offset
    for codes, Z, B in zip(a.codes, a.Z, b_terms):
        eta = eta + np.einsum("ij,ij->i", Z, B[codes])
    return eta


def _fitted_partition(df, spec: FitSpec, beta, b_terms, name: str, residual: bool,
                      sqrt_weights: bool, divisor: float) -> pd.Series:
    """X beta + Z b + offset (or y minus it) for a partition's complete rows."""
    a = partition_arrays(df, spec, with_response=residual)
    if a is None:
        return pd.Series(np.zeros(0), index=df.index[:0], name=name)
    eta = _eta(a, beta, b_terms)
    out = eta
    if residual:
        out = a.y - (eta - (0.0 if a.offset is None else a.offset))
        if sqrt_weights and a.weights is not None:
            out = out * np.sqrt(a.weights)
        out = out / divisor
    return pd.Series(out, index=a.index, name=name)


def _mean_partition(eta: pd.Series, fam) -> pd.Series:
    """The means of a partition's linear predictors, as a Series on its index."""
    return pd.Series(fam.linkinv(eta.to_numpy(dtype=np.float64)), index=eta.index,
                     name=eta.name)


def _response_scale(eta, fam):
    """A lazy Series of linear predictors mapped to the response scale, partition by
    partition."""
    return eta.map_partitions(_mean_partition, fam, meta=eta._meta)


def _predict_partition(df, fit, use, allow_new_levels) -> pd.Series:
    frame = _with_global_levels(df, fit.design.spec, unseen="keep")
    return pd.Series(fit._eta_newdata(frame, use, allow_new_levels), index=df.index,
                     name="predict", dtype=float)


_REFUSED = ("simulate", "refit", "profile", "bootstrap", "refit with a new response")


class _OnCluster:
    """What every Dask fit shares: the random effects per term for the passes, the
    summary's exact residual quantiles, and the methods that would refit refused by name."""

    def _b_terms(self) -> list:
        return [B for _, _, B in self._term_blocks()]

    def residual_quantiles(self, scaled: bool = True) -> np.ndarray:
        """Min, quartiles and max of the Pearson residuals (for the summary), exact, computed
        on the cluster (three small passes; kept for the next summary)."""
        from ._quantiles import exact_quantiles

        cache = self.__dict__.setdefault("_residual_quantiles", {})
        if scaled not in cache:
            r = self.residuals(type="pearson", scaled=scaled)
            cache[scaled] = exact_quantiles(r, [0, 0.25, 0.5, 0.75, 1.0])
        return cache[scaled]

    @property
    def groups(self):
        raise NotImplementedError("the grouping factors of a Dask fit stay on the cluster")

    def objective(self, theta) -> float:
        return super().objective(theta)

    def _refuse(name):  # noqa: N805 - a helper used while the class body runs
        def method(self, *args, **kwargs):
            raise NotImplementedError(
                f"{name}() is not available for a fit to Dask data: it needs a fit per "
                "replicate (or per profile point) over all the rows; compute the rows into "
                "memory (ddf.compute()) and fit that")
        method.__name__ = name
        return method

    simulate = _refuse("simulate")
    refit = _refuse("refit")
    profile = _refuse("profile")
    bootstrap = _refuse("bootstrap")
    del _refuse

    def confint(self, parm=None, level: float = 0.95, method: str = "profile", **kwargs):
        if method != "Wald":
            raise NotImplementedError(f"confint(method={method!r}) is not available for a fit to "
                                      "Dask data (it refits the model); use method='Wald'")
        return super().confint(parm=parm, level=level, method=method, **kwargs)


class DaskLmerResult(_OnCluster, LmerResult):
    """A linear mixed model fitted to a Dask DataFrame: the in-memory result, with
    ``fitted()``, ``residuals()`` and ``predict(newdata=ddf)`` returned as lazy Dask Series."""

    def _on_rows(self, name: str, residual: bool = False, sqrt_weights: bool = False,
                 divisor: float = 1.0):
        meta = pd.Series(np.zeros(0), name=name)
        return self.design.frame.map_partitions(
            _fitted_partition, self.design.spec, self.beta, self._b_terms(), name, residual,
            sqrt_weights, divisor, meta=meta)

    def fitted(self):
        """X beta + Z b (+ offset) per complete row, as a lazy Dask Series."""
        return self._on_rows("fitted")

    def residuals(self, type: str = "response", scaled: bool = False):
        """As LmerResult.residuals, as a lazy Dask Series."""
        if type not in ("response", "working", "pearson", "deviance"):
            raise ValueError(f"unknown residual type {type!r}; use response, pearson, working "
                             "or deviance")
        return self._on_rows("residuals", residual=True,
                             sqrt_weights=type in ("pearson", "deviance"),
                             divisor=self.sigma if scaled else 1.0)

    def predict(self, newdata=None, re_form=None, allow_new_levels: bool = False,
                type: str = "response"):
        """Predictions: for the fitted rows (``newdata=None``) or a Dask ``newdata``, a lazy
        Dask Series; a pandas or polars ``newdata`` gives an array, as in memory."""
        from . import is_dask_frame

        if type not in ("response", "link"):
            raise ValueError(f"type must be 'response' or 'link', got {type!r}")
        if newdata is None:
            if re_form is not None:
                raise NotImplementedError("predict(re_form=...) of a Dask fit needs newdata: "
                                          "pass newdata=the Dask frame")
            return self.fitted()
        if not is_dask_frame(newdata):
            return super().predict(newdata, re_form, allow_new_levels, type)
        use = self._re_columns_for(re_form)
        slim = copy.copy(self)
        slim._problem = None
        slim._call = None
        slim.design = copy.copy(self.design)
        slim.design.source = None
        return newdata.map_partitions(_predict_partition, slim, use, allow_new_levels,
                                      meta=pd.Series(np.zeros(0), name="predict"))

    def crossproducts(self):
        """(Z'WZ sparse, Z'W[X y], [X y]'W[X y]) in the data's units (y less the offset),
        from the fit's standardized A (the degrees-of-freedom methods need nothing else):
        [Z X y] = [Z Xs ys] M with M = diag(I, [[T, T b0], [0, s]])."""
        import scipy.sparse as sp

        prob = self._problem
        n_, p, layout, _, rows, cols, vals, _ = prob._core_args
        q = int(sum(nl * pk for nl, pk in layout))
        dim = q + p + 1
        lower = sp.coo_matrix((vals, (rows, cols)), shape=(dim, dim)).tocsr()
        full = (lower + lower.T - sp.diags(lower.diagonal())).tocsr()
        Mx = np.zeros((p + 1, p + 1))
        Mx[:p, :p] = prob.fixed.T
        Mx[:p, p] = prob.fixed.T @ prob.b0
        Mx[p, p] = prob.scale
        zz = full[:q, :q]
        zxy = np.asarray(full[:q, q:].toarray()) @ Mx
        xyxy = Mx.T @ full[q:, q:].toarray() @ Mx
        return zz, zxy, xyxy


# ---- GLMMs ---------------------------------------------------------------------------------
def _glmm_rows_partition(df, fit, what: str, type: str, scaled: bool) -> pd.Series:
    """The in-memory GlmerResult's fitted() or residuals() for a partition's complete rows:
    the fit's own methods, run on a copy that holds these rows' eta, mean and response."""
    a = partition_arrays(df, fit.design.spec)
    if a is None:
        return pd.Series(np.zeros(0), index=df.index[:0], name=what)
    rows = copy.copy(fit)
    rows._eta = _eta(a, fit.beta, fit._b_terms())
    rows._mu = fit._fam.linkinv(rows._eta)
    rows._y, rows._pw = a.y, a.weights
    rows.design = _RowLabels(a.index)
    if what == "fitted":
        return GlmerResult.fitted(rows)
    return GlmerResult.residuals(rows, type=type, scaled=scaled)


class _RowLabels:
    """The one attribute of a design that GlmerResult's fitted() and residuals() read."""

    def __init__(self, index):
        self.index = index


class DaskGlmerResult(_OnCluster, GlmerResult):
    """A generalized linear mixed model fitted to a Dask DataFrame: the in-memory result,
    with ``fitted()``, ``residuals()`` and ``predict(newdata=ddf)`` returned as lazy Dask
    Series. ``passes``: the passes over the rows the fit took (scan and scaling included)."""

    passes = 0

    def __init__(self, *args, extreme: int = 0, **kwargs):
        GlmerResult.__init__(self, *args, **kwargs)
        self._problem = None       # the LMM twin's name for the core problem: not used here
        if extreme:
            warnings.warn(
                f"fitted probabilities numerically 0 or 1 occurred for {extreme} "
                "observation(s): possible complete separation; estimates of the affected "
                "fixed effects are unreliable", stacklevel=3)

    def _slim(self):
        """A copy to ship to the workers: no optimizer problem, no collection."""
        slim = copy.copy(self)
        slim._prob = None
        slim._problem = None
        slim._call = None
        slim.design = copy.copy(self.design)
        slim.design.source = None
        return slim

    def _on_glmm_rows(self, what: str, type: str = "deviance", scaled: bool = False):
        return self.design.frame.map_partitions(
            _glmm_rows_partition, self._slim(), what, type, scaled,
            meta=pd.Series(np.zeros(0), name=what))

    def fitted(self):
        """Fitted means (response scale) per complete row, as a lazy Dask Series."""
        return self._on_glmm_rows("fitted")

    def residuals(self, type: str = "deviance", scaled: bool = False):
        """As GlmerResult.residuals, as a lazy Dask Series."""
        if type not in ("deviance", "pearson", "response", "working"):
            raise ValueError(f"unknown residual type {type!r}; use deviance, pearson, "
                             "response or working")
        return self._on_glmm_rows("residuals", type, scaled)

    def predict(self, newdata=None, re_form=None, allow_new_levels: bool = False,
                type: str = "response"):
        """Predictions (``type`` "response" or "link"): for the fitted rows
        (``newdata=None``) or a Dask ``newdata``, a lazy Dask Series; a pandas or polars
        ``newdata`` gives an array, as in memory."""
        from . import is_dask_frame

        if type not in ("response", "link"):
            raise ValueError(f"type must be 'response' or 'link', got {type!r}")
        if newdata is None:
            if re_form is not None:
                raise NotImplementedError("predict(re_form=...) of a Dask fit needs newdata: "
                                          "pass newdata=the Dask frame")
            eta = self.design.frame.map_partitions(
                _fitted_partition, self.design.spec, self.beta, self._b_terms(), "predict",
                False, False, 1.0, meta=pd.Series(np.zeros(0), name="predict"))
            return _response_scale(eta, self._fam) if type == "response" else eta
        if not is_dask_frame(newdata):
            return GlmerResult.predict(self, newdata, re_form, allow_new_levels, type)
        use = self._re_columns_for(re_form)
        eta = newdata.map_partitions(_predict_partition, self._slim(), use, allow_new_levels,
                                     meta=pd.Series(np.zeros(0), name="predict"))
        return _response_scale(eta, self._fam) if type == "response" else eta

    def objective(self, par) -> float:
        """GlmerResult.objective: the Laplace objective at (theta, beta), by passes."""
        return GlmerResult.objective(self, par)

    def crossproducts(self):
        raise NotImplementedError("the cross products of a GLMM change with its working "
                                  "weights; Satterthwaite and Kenward-Roger are for LMMs")

    def refit_ml(self):
        return self
