"""Shrinkage (partial pooling): no pooling vs partial pooling vs complete pooling, per cluster.

For a fitted mixed model and one of its grouping factors, every cluster (level) has a vector of
*cluster-specific coefficients* for the columns of that factor's random-effects terms (for
``y ~ x + (x | g)``: an intercept and a slope of ``x`` per level of ``g``):

no pooling
    A separate regression per cluster: the response regressed on the random-effects columns
    using that cluster's rows only. Fixed effects without a random counterpart for this factor
    (and the offset, and the random effects of other grouping factors) are held at the mixed
    model's values, so for a random-intercept model with covariates the no-pooling intercept is
    the cluster mean of the covariate-adjusted response. For GLMMs the per-cluster fit is a
    GLM with the model's family and link (computed by batched IRLS), or - for a model whose
    only parameter is a random intercept - the empirical mean per cluster (for Bernoulli data
    the observed proportion), reported on the response (probability) scale because its logit
    is infinite when a cluster has all zeros or all ones. A cluster that cannot identify its
    parameters (fewer observations than parameters, a covariate constant within the cluster,
    complete separation) gets NaN and a reason in ``nopool_note``.
partial pooling
    The mixed model's estimate: fixed effects plus the cluster's conditional modes
    (``fit.coef()``).
complete pooling
    One regression (or GLM) of the response on the fixed-effects design, ignoring clusters.
shrinkage
    Per cluster and parameter, the fraction of the way the estimate moved from the no-pooling
    value toward the population value (the fixed effect):
    ``(nopool - partial) / (nopool - population)``. 0 means no movement, 1 means all the way
    to the population value; with correlated random effects a single coordinate can move past
    it (> 1) or away from it (< 0). The column ``shrinkage`` (without a suffix) is the same
    fraction for the distance to the population with each parameter measured in units of the
    spread (SD) of its no-pooling estimates across clusters.

Everything is vectorized over clusters: grouped sums form the per-cluster normal equations and a
single batched ``numpy.linalg.solve`` solves them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "pooling_tables",
    "pooling_table",
    "describe",
    "precision_weighted",
    "expected_intercept_shrinkage",
    "compare_bayes",
    "bernoulli_by_trials",
]

_INTERCEPT = "(Intercept)"


# ---------------------------------------------------------------------------------------------
# theory for the random-intercept LMM
# ---------------------------------------------------------------------------------------------
def precision_weighted(ybar, n, sigma, tau, mu):
    """The partial-pooling estimate of a cluster mean in a random-intercept model with known
    variances: ``(n/sigma^2 * ybar + 1/tau^2 * mu) / (n/sigma^2 + 1/tau^2)``.

    ``ybar`` is the cluster mean (adjusted for covariates), ``n`` the cluster size, ``sigma``
    the residual SD, ``tau`` the SD of the random intercepts and ``mu`` the population mean.
    ``tau = 0`` gives ``mu``; ``sigma = 0`` gives ``ybar``. Broadcasts over arrays.
    """
    ybar, n, sigma, tau, mu = np.broadcast_arrays(*(np.asarray(v, dtype=float)
                                                    for v in (ybar, n, sigma, tau, mu)))
    lam = _weight_on_data(n, sigma, tau)
    out = mu + lam * (ybar - mu)
    return out if out.ndim else float(out)


def expected_intercept_shrinkage(n, sigma, tau):
    """Fraction of the way a cluster's mean moves toward the population mean in a
    random-intercept model with known variances: ``sigma^2 / (sigma^2 + n * tau^2)``.

    Smaller clusters (``n``) and a smaller random-intercept SD (``tau``) mean more shrinkage.
    """
    n, sigma, tau = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (n, sigma, tau)))
    out = 1.0 - _weight_on_data(n, sigma, tau)
    return out if out.ndim else float(out)


def _weight_on_data(n, sigma, tau):
    if np.any(n < 0) or np.any(sigma < 0) or np.any(tau < 0):
        raise ValueError("n, sigma and tau must be non-negative")
    s2, t2 = sigma**2, tau**2
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = n * t2 / (s2 + n * t2)
    # limits: tau = 0 (or n = 0) -> no weight on the data; sigma = 0 with n, tau > 0 -> all of it
    lam = np.where((t2 == 0) | (n == 0), 0.0, np.where(s2 == 0, 1.0, lam))
    return lam


# ---------------------------------------------------------------------------------------------
# pulling what we need out of a fit
# ---------------------------------------------------------------------------------------------
@dataclass
class _Arrays:
    y: np.ndarray            # response (proportions for binomial)
    w: np.ndarray            # prior weights (trials for binomial)
    X: np.ndarray            # fixed-effects design
    fixed_names: list
    offset: np.ndarray       # zeros when the model has none
    has_offset: bool
    eta: np.ndarray          # full linear predictor (fixed + all random effects + offset)


def _is_glmm(fit) -> bool:
    return getattr(fit, "family", "gaussian") != "gaussian" or getattr(fit, "link", "identity") != "identity"


def _arrays(fit) -> _Arrays:
    design = getattr(fit, "design", None)
    if design is not None and getattr(design, "X", None) is not None:
        X = np.asarray(design.X, dtype=float)
        names = list(design.fixed_names)
        offset = design.offset
        if _is_glmm(fit):
            y = np.asarray(getattr(fit, "_y"), dtype=float)
            w = np.asarray(getattr(fit, "_pw"), dtype=float)
        else:
            y = np.asarray(design.y, dtype=float)
            w = np.ones_like(y) if design.weights is None else np.asarray(design.weights, float)
    else:  # only the public attributes: simple column names
        data = fit.data
        names = list(fit.fixef.index)
        X = np.column_stack([_column(data, c) for c in names]) if names else np.zeros((len(data), 0))
        resp = fit.response_name
        if resp not in data.columns:
            raise TypeError(f"cannot find the response {resp!r} among the model frame's columns")
        y = data[resp].to_numpy(dtype=float)
        w = np.ones_like(y)
        offset = None
    eta = np.asarray(fit.predict(type="link"), dtype=float)
    has_offset = offset is not None
    offset = np.zeros(len(y)) if offset is None else np.asarray(offset, dtype=float)
    return _Arrays(y, w, X, names, offset, has_offset, eta)


def _column(data: pd.DataFrame, name: str) -> np.ndarray:
    if name == _INTERCEPT:
        return np.ones(len(data))
    if name in data.columns and data[name].dtype.kind in "biuf":
        return data[name].to_numpy(dtype=float)
    raise TypeError(
        f"cannot rebuild model-matrix column {name!r} from the model frame; "
        "pass a fit made by mixedfit.lmer or mixedfit.glmer"
    )


def _group_parts(fit, group: str):
    """(Z (n, p), column names, codes (n,), level labels) for one grouping factor."""
    design = getattr(fit, "design", None)
    if design is not None and getattr(design, "terms", None):
        terms = [t for t in design.terms if t.group == group]
        Z = np.column_stack([np.asarray(t.Z, dtype=float) for t in terms])
        cols = [c for t in terms for c in t.columns]
        return Z, cols, np.asarray(terms[0].codes, dtype=np.intp), pd.Index(terms[0].levels)
    cols = [c for g, cs in fit.re_terms if g == group for c in cs]
    data = fit.data
    Z = np.column_stack([_column(data, c) for c in cols])
    levels = fit.ranef()[group].index
    codes = levels.get_indexer(fit.groups[group])
    return Z, cols, codes.astype(np.intp), levels


# ---------------------------------------------------------------------------------------------
# vectorized per-cluster regressions
# ---------------------------------------------------------------------------------------------
def _grouped_normal_equations(codes, m, Z, w, r):
    """Per cluster: G_j = sum w z z' (m, p, p) and h_j = sum w z r (m, p)."""
    p = Z.shape[1]
    G = np.empty((m, p, p))
    h = np.empty((m, p))
    for a in range(p):  # loops over parameters only, never over clusters
        wa = w * Z[:, a]
        h[:, a] = np.bincount(codes, weights=wa * r, minlength=m)
        for b in range(a, p):
            G[:, a, b] = G[:, b, a] = np.bincount(codes, weights=wa * Z[:, b], minlength=m)
    return G, h


def _identifiable(G, nobs, cols):
    """Boolean mask of clusters whose normal equations are non-singular, and reasons."""
    m, p, _ = G.shape
    reasons = np.full(m, "", dtype=object)
    d = np.sqrt(np.clip(np.einsum("kii->ki", G), 0, None))
    zero_col = np.any(d <= 0, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        C = G / (d[:, :, None] * d[:, None, :])
    C[zero_col] = np.eye(p)
    min_eig = np.linalg.eigvalsh(C)[:, 0] if p > 1 else np.ones(m)
    singular = zero_col | (min_eig < 1e-10)
    few = nobs < p
    reasons[few] = [f"{int(k)} observation{'s' if k != 1 else ''} for {p} parameter{'s' if p != 1 else ''}"
                    for k in nobs[few]]
    other = singular & ~few
    if np.any(other):
        varying = [c for c in cols if c != _INTERCEPT]
        what = ", ".join(varying) if varying else "the columns"
        reasons[other] = (f"{what} constant (or collinear) within the cluster"
                          if varying else "no information in the cluster")
    return ~(singular | few), reasons


def _batched_solve(G, h, ok):
    out = np.full(h.shape, np.nan)
    if np.any(ok):
        out[ok] = np.linalg.solve(G[ok], h[ok][..., None])[..., 0]
    return out


def _batched_wls(codes, m, Z, w, r, nobs, cols):
    G, h = _grouped_normal_equations(codes, m, Z, w, r)
    ok, reasons = _identifiable(G, nobs, cols)
    return _batched_solve(G, h, ok), reasons


def _batched_glm(codes, m, Z, y, w, off, fam, start, nobs, cols, maxit=50, tol=1e-9):
    """Per-cluster GLMs (same family and link), by IRLS run for all clusters at once."""
    p = Z.shape[1]
    c = np.array(np.broadcast_to(start, (m, p)), dtype=float)
    G, _ = _grouped_normal_equations(codes, m, Z, w, np.zeros_like(y))
    ok, reasons = _identifiable(G, nobs, cols)
    active = ok.copy()
    converged = np.zeros(m, dtype=bool)
    for _ in range(maxit):
        if not np.any(active):
            break
        eta = off + np.einsum("ij,ij->i", Z, c[codes])
        with np.errstate(all="ignore"):
            mu = fam.linkinv(eta)
            me = fam.mu_eta(eta)
            var = fam.variance(mu)
            W = w * me**2 / var
            zwork = (eta - off) + (y - mu) / me
        bad_row = ~np.isfinite(W) | ~np.isfinite(zwork)
        bad_cluster = np.bincount(codes, weights=bad_row.astype(float), minlength=m) > 0
        W = np.where(bad_row, 0.0, W)
        zwork = np.where(bad_row, 0.0, zwork)
        Gw, hw = _grouped_normal_equations(codes, m, Z, W, zwork)
        ok_now, _ = _identifiable(Gw, nobs, cols)
        failed = active & (bad_cluster | ~ok_now)
        active &= ~failed
        new = _batched_solve(Gw, hw, active)
        step = np.abs(new - c)
        done = active & np.all(step <= tol * (np.abs(c) + 0.1), axis=1)
        c[active] = new[active]
        converged |= done
        active &= ~done
    c[~converged] = np.nan
    lost = ok & ~converged
    if np.any(lost):
        if fam.name == "binomial":
            tot = np.bincount(codes, weights=w, minlength=m)
            with np.errstate(divide="ignore", invalid="ignore"):
                prop = np.bincount(codes, weights=w * y, minlength=m) / tot
            reasons[lost] = "no finite estimate (complete separation: fitted probabilities reach 0 or 1)"
            reasons[lost & (prop <= 0)] = "no finite estimate (all responses 0)"
            reasons[lost & (prop >= 1)] = "no finite estimate (all responses 1)"
        else:
            reasons[lost] = "the per-cluster GLM did not converge"
    return c, reasons


# ---------------------------------------------------------------------------------------------
# the tables
# ---------------------------------------------------------------------------------------------
def pooling_tables(fit, scale: str = "auto") -> dict:
    """No-, partial- and complete-pooling estimates and shrinkage for every grouping factor.

    Returns ``{group name: DataFrame}``; see :func:`pooling_table` for the columns.
    """
    groups = list(dict.fromkeys(g for g, _ in fit.re_terms))
    return {g: pooling_table(fit, g, scale=scale) for g in groups}


def pooling_table(fit, group: str | None = None, scale: str = "auto") -> pd.DataFrame:
    """No-, partial- and complete-pooling estimates and shrinkage for one grouping factor.

    Parameters
    ----------
    fit : a fit from ``mixedfit.lmer`` or ``mixedfit.glmer``.
    group : the grouping factor; may be omitted when the model has only one.
    scale : ``"auto"``, ``"link"`` or ``"response"``. For GLMMs, estimates are on the link scale
        (per-cluster GLM coefficients) unless the model is ``response ~ 1 + (1 | group)`` with
        no offset, where ``"auto"`` reports them on the response scale (the per-cluster
        empirical mean, e.g. the observed proportion, against the model's estimated
        probability). LMMs are on the response scale either way.

    Returns
    -------
    DataFrame indexed by the factor's levels (the order of ``fit.ranef()``) with columns

    - ``n``: observations in the cluster (and ``n_trials`` for binomial models),
    - ``nopool_<param>``: no-pooling estimate (NaN when not identifiable),
    - ``partial_<param>``: the mixed model's estimate (fixed + random effect),
    - ``complete_<param>``: the complete-pooling estimate (the same in every row),
    - ``shrinkage_<param>``: ``(nopool - partial) / (nopool - population)``,
    - ``shrinkage``: the same fraction for the distance to the population value, each parameter
      measured in SDs of its no-pooling estimates across clusters,
    - ``nopool_note``: why a no-pooling estimate is missing ("" otherwise).

    ``table.attrs`` holds ``group``, ``params``, ``population`` (the fixed effects on the
    table's scale), ``complete``, ``re_sd`` and ``re_cov`` (estimated random-effects SDs and
    covariance on the link scale), ``scale`` ("identity", "link" or "response"), ``family``,
    ``link``, ``sigma`` and ``formula``.
    """
    if scale not in ("auto", "link", "response"):
        raise ValueError(f"scale must be 'auto', 'link' or 'response', got {scale!r}")
    groups = list(dict.fromkeys(g for g, _ in fit.re_terms))
    if group is None:
        if len(groups) != 1:
            raise ValueError(f"the model has grouping factors {groups}; pass group= one of them")
        group = groups[0]
    if group not in groups:
        raise KeyError(f"no grouping factor {group!r} in the model; have {groups}")

    glmm = _is_glmm(fit)
    fam = None
    if glmm:
        from .families import resolve_family

        fam = getattr(fit, "_fam", None) or resolve_family(fit.family, fit.link)
    A = _arrays(fit)
    Z, cols, codes, levels = _group_parts(fit, group)
    m, p = len(levels), len(cols)
    fixef = fit.fixef
    population = np.array([float(fixef[c]) if c in fixef.index else 0.0 for c in cols])

    coef = fit.coef()[group]
    partial = coef.reindex(levels)[cols].to_numpy(dtype=float)

    # everything in the linear predictor except this factor's cluster coefficients
    held = A.eta - np.einsum("ij,ij->i", Z, partial[codes])
    nobs = np.bincount(codes, weights=(A.w > 0).astype(float), minlength=m).astype(np.int64)

    response_ok = (glmm and p == 1 and cols[0] == _INTERCEPT and A.fixed_names == [_INTERCEPT]
                   and not A.has_offset and len(groups) == 1)
    if scale == "response" and glmm and not response_ok:
        raise ValueError(
            "scale='response' needs a GLMM of the form response ~ 1 + (1 | group) without an "
            "offset (one mean per cluster); use scale='link' for this model"
        )
    use_response = glmm and response_ok and scale in ("auto", "response")

    if not glmm:
        nopool, reasons = _batched_wls(codes, m, Z, A.w, A.y - held, nobs, cols)
        Xw = A.X * np.sqrt(A.w)[:, None]
        cp_beta = np.linalg.lstsq(Xw, (A.y - A.offset) * np.sqrt(A.w), rcond=None)[0]
        table_scale = "identity"
    elif use_response:
        tot = np.bincount(codes, weights=A.w, minlength=m)
        hits = np.bincount(codes, weights=A.w * A.y, minlength=m)
        with np.errstate(divide="ignore", invalid="ignore"):
            nopool = (hits / tot)[:, None]
        reasons = np.full(m, "", dtype=object)
        reasons[tot <= 0] = "no observations"
        nopool[tot <= 0] = np.nan
        cp_beta = np.array([float(fam.linkfun(np.array([np.sum(A.w * A.y) / np.sum(A.w)]))[0])])
        partial = fam.linkinv(partial)
        population = fam.linkinv(population)
        table_scale = "response"
    else:
        nopool, reasons = _batched_glm(codes, m, Z, A.y, A.w, held, fam, population, nobs, cols)
        one = np.zeros(len(A.y), dtype=np.intp)
        cp_beta, _ = _batched_glm(one, 1, A.X, A.y, A.w, A.offset, fam,
                                          np.asarray(fixef.reindex(A.fixed_names), float),
                                          np.array([len(A.y)]), A.fixed_names)
        cp_beta = cp_beta[0]
        table_scale = "link"

    cp_map = dict(zip(A.fixed_names, np.atleast_1d(cp_beta)))
    complete = np.array([cp_map.get(c, 0.0) for c in cols], dtype=float)
    if table_scale == "response":
        complete = fam.linkinv(complete)

    shrink, overall = _shrinkage(nopool, partial, population)

    out = pd.DataFrame(index=levels.copy())
    out.index.name = group
    out["n"] = nobs
    if glmm and fam.name == "binomial":
        out["n_trials"] = np.bincount(codes, weights=A.w, minlength=m)
    for k, c in enumerate(cols):
        out[f"nopool_{c}"] = nopool[:, k]
    for k, c in enumerate(cols):
        out[f"partial_{c}"] = partial[:, k]
    for k, c in enumerate(cols):
        out[f"complete_{c}"] = complete[k]
    for k, c in enumerate(cols):
        out[f"shrinkage_{c}"] = shrink[:, k]
    out["shrinkage"] = overall
    out["nopool_note"] = reasons.astype(str)

    cov = _re_cov(fit, group, cols)
    out.attrs.update(
        group=group,
        params=list(cols),
        population=dict(zip(cols, population.tolist())),
        complete=dict(zip(cols, complete.tolist())),
        re_sd=dict(zip(cols, np.sqrt(np.clip(np.diag(cov), 0, None)).tolist())),
        re_cov=cov.tolist(),
        scale=table_scale,
        family=getattr(fit, "family", "gaussian"),
        link=getattr(fit, "link", "identity"),
        sigma=float(fit.sigma),
        formula=str(fit.formula),
    )
    return out


def _shrinkage(nopool, partial, population):
    d_np = nopool - population
    d_pp = partial - population
    spread = np.nanstd(nopool, axis=0) if np.any(np.isfinite(nopool)) else np.ones(nopool.shape[1])
    spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
    tiny = 1e-12 * (np.abs(population) + spread)
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(np.abs(d_np) > tiny, (nopool - partial) / d_np, np.nan)
        dist_np = np.sqrt(np.sum((d_np / spread) ** 2, axis=1))
        dist_pp = np.sqrt(np.sum((d_pp / spread) ** 2, axis=1))
        overall = np.where(dist_np > 1e-12, 1.0 - dist_pp / dist_np, np.nan)
    return per, overall


def _re_cov(fit, group, cols) -> np.ndarray:
    """Estimated random-effects covariance for ``cols`` of ``group`` (zero across terms)."""
    vc = fit.varcorr.to_frame()
    p = len(cols)
    cov = np.zeros((p, p))
    # VarCorr labels a factor's second and later terms "group.1", "group.2", ...
    rows = vc[(vc["grp"] == group) | vc["grp"].astype(str).str.fullmatch(rf"{_re_escape(group)}\.\d+")]
    index = {c: k for k, c in enumerate(cols)}
    seen = set()
    for grp, v1, v2, vcov in zip(rows["grp"], rows["var1"], rows["var2"], rows["vcov"]):
        if v1 not in index:
            continue
        if _missing(v2):
            if (grp, v1) in seen:
                continue
            seen.add((grp, v1))
            cov[index[v1], index[v1]] = vcov
        elif v2 in index:
            cov[index[v1], index[v2]] = cov[index[v2], index[v1]] = vcov
    return cov


def _re_escape(s: str) -> str:
    import re

    return re.escape(str(s))


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


# ---------------------------------------------------------------------------------------------
# one-line summaries for comparing settings
# ---------------------------------------------------------------------------------------------
def describe(table: pd.DataFrame) -> pd.Series:
    """How much shrinkage a pooling table shows, in a few numbers.

    - ``clusters``, ``median_n``: number of clusters and median cluster size,
    - ``no_estimate``: clusters without a no-pooling estimate,
    - ``median_shrinkage_<param>``: median over clusters of the per-parameter shrinkage,
    - ``spread_reduction_<param>``: ``1 - SD(partial) / SD(nopool)`` across clusters (how much
      narrower the cloud of cluster estimates became),
    - ``median_shrinkage``: median of the overall (distance) shrinkage.
    """
    params = table.attrs.get("params")
    if not params:
        params = [c[len("nopool_"):] for c in table.columns
                  if c.startswith("nopool_") and c != "nopool_note"]
    out = {"clusters": float(len(table)), "median_n": float(np.median(table["n"])),
           "no_estimate": float(table[f"nopool_{params[0]}"].isna().sum())}
    ok = table[[f"nopool_{c}" for c in params]].notna().all(axis=1)
    for c in params:
        out[f"median_shrinkage_{c}"] = float(np.nanmedian(table[f"shrinkage_{c}"])) \
            if table[f"shrinkage_{c}"].notna().any() else float("nan")
        sd_np = float(np.std(table.loc[ok, f"nopool_{c}"]))
        sd_pp = float(np.std(table.loc[ok, f"partial_{c}"]))
        out[f"spread_reduction_{c}"] = 1.0 - sd_pp / sd_np if sd_np > 0 else float("nan")
    out["median_shrinkage"] = float(np.nanmedian(table["shrinkage"])) \
        if table["shrinkage"].notna().any() else float("nan")
    return pd.Series(out, name=table.attrs.get("group"))


# ---------------------------------------------------------------------------------------------
# the Bayesian cross-check: posterior means next to the mixed model's estimates
# ---------------------------------------------------------------------------------------------
def compare_bayes(fit, bayes_fit, group: str | None = None, scale: str = "auto") -> pd.DataFrame:
    """The pooling table of a mixed model with the Bayesian fit's estimates beside it.

    ``fit`` is the ``lmer``/``glmer`` fit and ``bayes_fit`` a :func:`mixedfit.bayes` fit of the
    same formula to the same data. Returns :func:`pooling_table` (no pooling, the mixed model's
    partial pooling, complete pooling) with, per parameter, ``bayes_<param>``: each cluster's
    posterior mean on the table's scale. On the response scale (a binomial or Poisson
    ``y ~ 1 + (1 | g)``) that is the posterior mean of the cluster's probability (or mean);
    otherwise the posterior mean of fixed effect plus random effect. ``bayes_shrinkage_<param>``
    is the Bayesian counterpart of ``shrinkage_<param>``, measured toward the posterior mean of
    the population value, which ``table.attrs["bayes_population"]`` holds.
    """
    if str(bayes_fit.formula).replace(" ", "") != str(fit.formula).replace(" ", ""):
        raise ValueError(f"the two fits have different formulas: {fit.formula!r} and "
                         f"{bayes_fit.formula!r}")
    if getattr(fit, "family", "gaussian") != bayes_fit.family:
        raise ValueError(f"the two fits have different families: "
                         f"{getattr(fit, 'family', 'gaussian')!r} and {bayes_fit.family!r}")
    table = pooling_table(fit, group, scale=scale)
    group, params = table.attrs["group"], table.attrs["params"]
    if table.attrs["scale"] == "response":
        draws = bayes_fit.group_draws(group, scale="response")
        est = draws.mean(axis=0).reindex(table.index).to_numpy(float)[:, None]
        b0 = bayes_fit.idata.posterior["fixef"].sel(fixef_term=_INTERCEPT).to_numpy().ravel()
        from .bayesian import _inverse_link

        population = np.array([float(np.mean(_inverse_link(bayes_fit.family, b0)))])
    else:
        coef = bayes_fit.coef()[group]
        missing = [c for c in params if c not in coef.columns]
        if missing:
            raise ValueError(f"the Bayesian fit has no column(s) {missing} for {group!r}")
        est = coef.reindex(table.index)[params].to_numpy(float)
        population = np.array([float(bayes_fit.fixef.get(c, 0.0)) for c in params])
    if np.any(~np.isfinite(est)):
        raise ValueError(f"the Bayesian fit's levels of {group!r} differ from the mixed model's: "
                         "were both fitted to the same data?")
    shrink, _ = _shrinkage(table[[f"nopool_{c}" for c in params]].to_numpy(float), est, population)
    pos = table.columns.get_loc(f"complete_{params[0]}")
    for k, c in enumerate(params):
        table.insert(pos + k, f"bayes_{c}", est[:, k])
    for k, c in enumerate(params):
        table.insert(table.columns.get_loc("shrinkage"), f"bayes_shrinkage_{c}", shrink[:, k])
    table.attrs["bayes_population"] = dict(zip(params, population.tolist()))
    table.attrs["bayes"] = repr(bayes_fit)
    return table


SEED_TRIALS = (10, 20, 50, 100)


def bernoulli_by_trials(n_trials=SEED_TRIALS, n_groups: int = 30, p0: float = 0.5,
                        sd_logit: float = 0.7, seed: int = 101, chains: int = 4,
                        draws: int = 1000, tune: int = 1000, progress: bool = False,
                        on_fit=None, return_fits: bool = False):
    """Observed proportions, glmer estimates and Bayesian posterior means for Bernoulli groups,
    for several numbers of trials per group.

    For each ``J`` in ``n_trials``: simulate ``n_groups`` groups of ``J`` Bernoulli trials whose
    logits are ``N(logit(p0), sd_logit^2)`` (:func:`mixedfit.simulate.bernoulli_groups`), fit
    ``result ~ 1 + (1 | subject)`` with ``glmer`` (Laplace) and with :func:`mixedfit.bayes`, and
    compare each group's estimate with its observed proportion. The defaults are the
    classic demonstration that glmer's "biased" group estimates are shrinkage, found in both
    frameworks: 30 groups, probability 0.5, random-effect SD 0.7 on the logit scale.

    ``on_fit(J)`` is called before each pair of fits (for progress reports).

    Returns a long DataFrame with columns ``n_trials``, ``subject``, ``observed``, ``glmer``,
    ``bayes`` (posterior mean of the group's probability) and ``overall`` (the proportion of
    successes in that data set). With ``return_fits=True`` a tuple ``(table, fits)`` where
    ``fits`` maps each ``J`` to its ``(glmer fit, bayes fit)``.
    """
    from . import simulate
    from .bayesian import bayes
    from .glmm import glmer

    trials = [int(j) for j in np.atleast_1d(n_trials)]
    seeds = np.random.SeedSequence(seed).generate_state(len(trials))
    parts, fits = [], {}
    for j, s in zip(trials, seeds):
        if on_fit is not None:
            on_fit(j)
        df = simulate.bernoulli_groups(n_groups=n_groups, n_trials=j, p0=p0, sd_logit=sd_logit,
                                       seed=int(s))
        gfit = glmer("result ~ 1 + (1 | subject)", df, family="binomial")
        bfit = bayes("result ~ 1 + (1 | subject)", df, family="binomial", chains=chains,
                     draws=draws, tune=tune, seed=int(s) % (2**31), progress=progress)
        table = compare_bayes(gfit, bfit, scale="response")
        parts.append(pd.DataFrame({
            "n_trials": j,
            "subject": table.index.to_numpy(),
            "observed": table["nopool_(Intercept)"].to_numpy(),
            "glmer": table["partial_(Intercept)"].to_numpy(),
            "bayes": table["bayes_(Intercept)"].to_numpy(),
            "overall": float(df["result"].mean()),
        }))
        fits[j] = (gfit, bfit)
    out = pd.concat(parts, ignore_index=True)
    out.attrs.update(n_groups=n_groups, p0=p0, sd_logit=sd_logit, seed=seed)
    return (out, fits) if return_fits else out
