"""``lmer`` on a Dask DataFrame: scan, scale, cross products, then the in-memory optimizer.

The recipe mirrors :func:`mixedfit.lmm.lmer` so that the numbers are those of an in-memory fit
of the same rows:

* the in-memory fit standardizes (``_standardize.py``): ``X = Xs T`` with ``Xs' W Xs = n I``
  from a QR factorization, ``y = X b0 + s ys`` from the weighted least-squares fit. Here the
  same ``T``, ``b0`` and ``s`` come from the R factor of ``sqrt(w) [X y]`` over all rows, formed
  by TSQR in the scaling pass (R is unique up to the signs of its rows, and a sign flip of a
  column of ``Xs`` changes no rounding in the core). The cross-product pass then forms A from
  the standardized rows ``Xs = X T^-1``, ``ys = (y - Xs T b0) / s``, as the in-memory core does
  from its standardized copy. The aliased-column check runs on the R factor of ``X``, which
  is what the in-memory check computes from X itself;
* the optimizer is the in-memory fit's choice (``lmm._use_gradient``) on the same scaled
  criterion with the same start: BOBYQA for every model whose evaluation is cheap, the
  gradient path for one-term models with many levels (their gradient comes from A's
  per-level blocks alone). The gradient of a model with several terms needs the rows, so
  such models are fitted by BOBYQA here even where the in-memory fit takes the gradient path
  (their estimates then agree with it to the optimizers' tolerance, not to rounding).

The objective therefore agrees with the in-memory fit's to rounding of the sums (~1e-12
relative) and the estimates to the optimizer's resolution around the same path.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from .. import _core
from .._design import _check_aliased, warn_dropped_columns
from .._errors import DataError
from .._standardize import SCALE_TOL, FixedScaling, ScaledLmmProblem
from ..lmm import fit_problem
from ..optimize import report_convergence
from ..options import Control, check_bool
from ._crossprod import (Layout, Standardization, combine_crossprod, combine_scaling,
                         cooccurrence, crossprod_partition, scaling_partition)
from ._passes import reduce_partitions
from ._result import DaskDesign, DaskLmerResult
from ._spec import combine_scans, fit_spec, scan_partition, scan_spec

__all__ = ["lmer_dask"]

# Residuals smaller than this many units in the last place of the response are rounding
# (as in-memory, _standardize._ROUNDING_ULPS).
_ROUNDING_ULPS = 64.0


class CrossprodLmmProblem(ScaledLmmProblem):
    """The standardized LMM problem built from summed cross products (no rows): the
    in-memory ScaledLmmProblem's interface, objective and solution included."""

    def __init__(self, n: int, std: Standardization, layout: Layout, crossprod: dict):
        self.n, self.p = n, std.T.shape[0]
        self.fixed = FixedScaling(None, std.T)
        self.b0, self.scale = std.b0, std.scale
        A = crossprod["A"].tocoo()
        self._core_args = (n, self.p, list(zip(layout.nlevels, layout.p)),
                           cooccurrence(crossprod["pairs"], layout), A.row.astype(np.int64),
                           A.col.astype(np.int64), A.data.astype(float),
                           float(crossprod["sum_log_w"]))
        self._weights = None
        self._build_core()

    def _build_core(self) -> None:
        self.core = _core.LmmProblem.from_crossproduct(*self._core_args)
        self.q = self.core.q
        self.ntheta = self.core.ntheta
        self.rest_dense = self.core.rest_dense

    def linear_predictor(self, beta, b):
        """None: no rows are here. X beta + Z b of a Dask fit is computed on the cluster,
        lazily, by DaskLmerResult.fitted()."""
        return None


def _check_scales(moments: dict, keep: np.ndarray, stacklevel: int) -> None:
    """lme4's hint for predictors on very different scales (check_predictor_scales' rule,
    from the columns' moments instead of the rows)."""
    n = moments["n"]
    sd = np.sqrt(moments["m2"][keep] / max(n - 1, 1))
    continuous = ~moments["binary"][keep]
    if not continuous.any():
        return
    with np.errstate(divide="ignore"):
        log_sd = np.log(sd[continuous])
    spread = np.abs(log_sd[:, None] - log_sd[None, :])
    if np.any(np.abs(log_sd) > math.log(SCALE_TOL)) or np.any(spread > math.log(SCALE_TOL)):
        warnings.warn("Some predictor variables are on very different scales: consider "
                      "rescaling", stacklevel=stacklevel + 1)


def _scaling(ddf, spec, progress: bool):
    """The aliased-column mask and the standardization, from the scaling pass."""
    scaled = reduce_partitions(ddf, scaling_partition, combine_scaling, spec, progress=progress)
    keep = _check_aliased(scaled["R"], spec.fixed_names_all)
    dropped = [nm for nm, k in zip(spec.fixed_names_all, keep) if not k]
    if dropped:
        warn_dropped_columns(dropped, stacklevel=5)
    R_kept = scaled["R"][:, keep]
    spec.x_gram = R_kept.T @ R_kept  # X'X = R'R (the anova's type I and II hypotheses)
    std = Standardization.from_r(scaled["Rw"], keep, spec.n)
    rounding = _ROUNDING_ULPS * np.finfo(float).eps * scaled["ymax"]
    if not std.scale > rounding:
        raise DataError(
            f"response {spec.parsed.response!r} is fitted exactly by the fixed effects (e.g. it "
            "is constant): there is no residual variation for a linear mixed model")
    return keep, std, scaled["moments"]


def lmer_dask(formula: str, data, *, reml: bool = True, weights=None, offset=None,
              control=None, data_name: str | None = None, progress: bool = True):
    """:func:`mixedfit.lmer` for a Dask DataFrame (see the module docstring)."""
    control = Control.coerce(control)
    reml = check_bool(reml, "reml")
    progress = check_bool(progress, "progress")
    call = dict(formula=formula, data=data, weights=weights, offset=offset, control=control,
                data_name=data_name, progress=progress)
    meta = data._meta
    parsed, scan = scan_spec(formula, meta, weights, offset)
    scanned = reduce_partitions(data[list(scan.used)], scan_partition, combine_scans, scan,
                                progress=progress)
    spec = fit_spec(formula, parsed, scan, meta, scanned, lmm=True)
    data = data[list(scan.used)]  # later passes read the used columns only
    if spec.n_dropped_na:
        warnings.warn(f"dropped {spec.n_dropped_na} row(s) with missing values", stacklevel=3)
    keep, std, moments = _scaling(data, spec, progress)
    spec.keep_fixed = keep
    _check_scales(moments, keep, stacklevel=3)
    layout = Layout(tuple(t.nlevels for t in spec.terms), tuple(t.p for t in spec.terms))
    crossprod = reduce_partitions(data, crossprod_partition, combine_crossprod, spec, std,
                                  layout, progress=progress)
    design = DaskDesign(spec, call["data"], weights)
    if design.p == 0:
        reml = False
    prob = CrossprodLmmProblem(spec.n, std, layout, crossprod)
    ps = [t.p for t in design.terms]
    if len(ps) > 1:  # the gradient of several terms needs the rows
        control = dataclasses.replace(control, optimizer="bobyqa")
    opt, sol = fit_problem(prob, design, reml, control)
    report_convergence(opt, ps, control, stacklevel=3)
    return DaskLmerResult(design, prob, reml, opt.x, opt, sol, control,
                          data_name if data_name is not None else "data", call)
