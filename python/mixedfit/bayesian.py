"""Bayesian fits of mixed models by MCMC: the same formula and design as ``lmer``/``glmer``.

``bayes(formula, data, family=...)`` builds the model matrices with the same code as the
frequentist fits (one formula language for both), puts weakly informative priors on the
parameters and samples the posterior with NumPyro's NUTS sampler (JAX, CPU). The result has
the frequentist fit's accessors where they make sense (``fixef``, ``ranef()``, ``varcorr``)
holding posterior means and summaries, plus MCMC diagnostics and the ArviZ InferenceData.

The model, for every random-effects term ``k`` with grouping factor ``g`` and columns ``Z_k``::

    eta = X beta + offset + sum_k Z_k[i] . u_k[g[i]]
    u_k[j] = diag(sd_k) L_k z_k[j],   z_k[j] ~ N(0, I)        (non-centred)
    L_k L_k' ~ LKJ(eta_lkj)           (the correlation matrix; terms with >= 2 columns)

and ``y ~ Normal(eta, sigma / sqrt(w))``, ``Binomial(trials, logit^-1(eta))`` or
``Poisson(exp(eta))``. Default priors (see :func:`default_priors`), with ``s`` the data scale
(``sd(y)`` for the Gaussian family, 1 on the logit and log scales):

- a fixed effect of a non-constant column ``x``: ``Normal(0, 2.5 s / sd(x))``;
- the intercept: ``Normal(c, 2.5 s sqrt(1 + sum_j (mean(x_j) / sd(x_j))^2))`` with ``c`` the
  mean of the response on the link scale (the extra width admits the intercept that the
  slopes' priors imply when the predictors are not centred);
- a random-effect SD for column ``z``: ``HalfNormal(2.5 s / sd(z))`` (``sd(z) = 1`` for a
  constant column);
- the correlations of one term: ``LKJ(2)`` (mild preference for small correlations);
- the residual SD (Gaussian): ``HalfNormal(2.5 sd(y))``.

This module imports JAX, NumPyro and ArviZ only when a fit is made; they come with
``pip install "mixedfit[bayes]"``.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._design import build_design
from ._errors import DataError
from .families import resolve_family

__all__ = ["bayes", "BayesResult", "BayesConvergenceWarning", "default_priors", "available"]

_INTERCEPT = "(Intercept)"
_FAMILIES = {"gaussian": "identity", "binomial": "logit", "poisson": "log"}
_PRIOR_KEYS = ("fixef", "sd", "sd_family", "lkj", "sigma")
_SD_FAMILIES = ("half-normal", "half-t")
HALF_T_DF = 3.0

# thresholds of the convergence checks (Vehtari et al. 2021 recommendations)
RHAT_MAX = 1.01
ESS_MIN_PER_CHAIN = 100


class BayesConvergenceWarning(UserWarning):
    """The MCMC sample does not look converged (R-hat, divergences or effective sample size)."""


def available() -> bool:
    """True when the optional Bayesian extra (NumPyro, JAX, ArviZ) is installed."""
    try:
        _backend()
    except ImportError:
        return False
    return True


def _backend():
    try:
        import arviz
        import jax
        import numpyro
    except ImportError as exc:
        raise ImportError(
            f"mixedfit.bayes needs the optional Bayesian extra ({exc.name} is missing): "
            'pip install "mixedfit[bayes]"'
        ) from None
    return jax, numpyro, arviz


# ---------------------------------------------------------------------------------------------
# data: the frequentist fits' design
# ---------------------------------------------------------------------------------------------
@dataclass
class _Term:
    group: str
    columns: list
    codes: np.ndarray
    levels: pd.Index
    Z: np.ndarray


@dataclass
class _Inputs:
    family: str
    X: np.ndarray
    fixed_names: list
    y: np.ndarray            # Gaussian/Poisson: the response; binomial: successes
    trials: np.ndarray       # binomial: number of trials; Gaussian: prior weights; else ones
    offset: np.ndarray
    terms: list
    response_name: str
    n_dropped_na: int


def _family_name(family) -> str:
    fam = resolve_family(family)
    if fam.name not in _FAMILIES or fam.link != _FAMILIES[fam.name]:
        raise ValueError(
            f"bayes() fits the families {', '.join(_FAMILIES)} with their canonical links; "
            f"got {fam.name!r} with link {fam.link!r}"
        )
    return fam.name


def _inputs(formula, data, family: str) -> _Inputs:
    from .glmm import _response

    gaussian = family == "gaussian"
    design = build_design(formula, data, lmm=gaussian,
                          response_kind="numeric" if gaussian else "raw")
    if gaussian:
        y = design.y
        w = np.ones_like(y) if design.weights is None else design.weights
    else:
        y, w = _response(resolve_family(family), design)
        if family == "binomial":
            y = np.round(y * w)   # successes out of w trials
    terms = [_Term(t.group, list(t.columns), np.asarray(t.codes, dtype=np.int32),
                   pd.Index(t.levels), np.asarray(t.Z, dtype=float)) for t in design.terms]
    if not terms:
        raise DataError(f"formula {formula!r} has no random-effects term such as (1 | group)")
    off = np.zeros(design.n) if design.offset is None else np.asarray(design.offset, float)
    return _Inputs(family, np.asarray(design.X, dtype=float), list(design.fixed_names),
                   np.asarray(y, dtype=float), np.asarray(w, dtype=float), off, terms,
                   design.parsed.response, design.n_dropped_na)


# ---------------------------------------------------------------------------------------------
# priors
# ---------------------------------------------------------------------------------------------
@dataclass
class _Priors:
    fixef_loc: np.ndarray
    fixef_scale: np.ndarray
    sd_scale: list             # one array per term
    sd_family: str
    lkj: float
    sigma_scale: float | None


def _data_scale(inp: _Inputs) -> float:
    if inp.family != "gaussian":
        return 1.0
    s = float(np.std(inp.y))
    return s if s > 0 else 1.0


def _link_center(inp: _Inputs) -> float:
    if inp.family == "gaussian":
        return float(np.average(inp.y - inp.offset, weights=inp.trials))
    if inp.family == "binomial":
        p = (inp.y.sum() + 0.5) / (inp.trials.sum() + 1.0)
        return float(math.log(p / (1 - p)))
    return float(math.log(np.mean(inp.y) + 0.1))


def _column_sd(v: np.ndarray) -> float:
    s = float(np.std(v))
    return s if s > 1e-12 * (1 + abs(float(np.mean(v)))) else 0.0


def _default_priors(inp: _Inputs) -> _Priors:
    s = _data_scale(inp)
    sds = np.array([_column_sd(inp.X[:, j]) for j in range(inp.X.shape[1])])
    means = inp.X.mean(axis=0) if inp.X.size else np.zeros(0)
    varying = sds > 0
    loc = np.zeros(len(sds))
    scale = np.where(varying, 2.5 * s / np.where(varying, sds, 1.0), 0.0)
    widen = math.sqrt(1.0 + float(np.sum((means[varying] / sds[varying]) ** 2)))
    constant = np.flatnonzero(~varying)
    if constant.size:
        loc[constant[0]] = _link_center(inp)
    scale[~varying] = 2.5 * s * widen
    sd_scale = []
    for t in inp.terms:
        zs = np.array([_column_sd(t.Z[:, j]) for j in range(t.Z.shape[1])])
        sd_scale.append(2.5 * s / np.where(zs > 0, zs, 1.0))
    sigma = 2.5 * s if inp.family == "gaussian" else None
    return _Priors(loc, scale, sd_scale, "half-normal", 2.0, sigma)


def _positive(name, v) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (math.isfinite(v) and v > 0):
        raise ValueError(f"priors[{name!r}] must be a positive number, got {v!r}")
    return float(v)


def _apply_overrides(pri: _Priors, inp: _Inputs, priors) -> _Priors:
    if priors is None:
        return pri
    if not isinstance(priors, dict):
        raise TypeError(f"priors must be a dict with keys among {_PRIOR_KEYS}, got {type(priors).__name__}")
    unknown = [k for k in priors if k not in _PRIOR_KEYS]
    if unknown:
        raise ValueError(f"unknown prior key(s) {unknown}; use {list(_PRIOR_KEYS)}")
    if "fixef" in priors:
        _override_fixef(pri, inp, priors["fixef"])
    if "sd" in priors:
        _override_sd(pri, inp, priors["sd"])
    if "sd_family" in priors:
        if priors["sd_family"] not in _SD_FAMILIES:
            raise ValueError(f"priors['sd_family'] must be one of {_SD_FAMILIES}, got {priors['sd_family']!r}")
        pri.sd_family = priors["sd_family"]
    if "lkj" in priors:
        pri.lkj = _positive("lkj", priors["lkj"])
    if "sigma" in priors:
        if pri.sigma_scale is None:
            raise ValueError(f"priors['sigma'] applies to the Gaussian family only, not {inp.family!r}")
        pri.sigma_scale = _positive("sigma", priors["sigma"])
    return pri


def _override_fixef(pri, inp, spec):
    if not isinstance(spec, dict):
        raise TypeError("priors['fixef'] must map fixed-effect names to (mean, sd) pairs")
    for name, pair in spec.items():
        if name not in inp.fixed_names:
            raise ValueError(f"priors['fixef'] names {name!r}, not a fixed effect of the model "
                             f"(have {inp.fixed_names})")
        try:
            m, sd = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise ValueError(f"priors['fixef'][{name!r}] must be a (mean, sd) pair, got {pair!r}") from None
        j = inp.fixed_names.index(name)
        pri.fixef_loc[j] = m
        pri.fixef_scale[j] = _positive(f"fixef {name} sd", sd)


def _override_sd(pri, inp, spec):
    """A number (every SD), or {group: number} or {group: {column: number}}."""
    groups = sorted({t.group for t in inp.terms})
    if not isinstance(spec, dict):
        v = _positive("sd", spec)
        pri.sd_scale = [np.full(len(t.columns), v) for t in inp.terms]
        return
    for g, val in spec.items():
        if g not in groups:
            raise ValueError(f"priors['sd'] names grouping factor {g!r}; the model has {groups}")
        for k, t in enumerate(inp.terms):
            if t.group != g:
                continue
            if isinstance(val, dict):
                for c, v in val.items():
                    if c not in t.columns and not any(c in u.columns for u in inp.terms if u.group == g):
                        raise ValueError(f"priors['sd'][{g!r}] names column {c!r}, not a "
                                         f"random effect of {g!r}")
                    if c in t.columns:
                        pri.sd_scale[k][t.columns.index(c)] = _positive(f"sd {g} {c}", v)
            else:
                pri.sd_scale[k][:] = _positive(f"sd {g}", val)


def _priors_frame(pri: _Priors, inp: _Inputs) -> pd.DataFrame:
    rows = [(name, "Normal", f"mean {m:.4g}, sd {s:.4g}")
            for name, m, s in zip(inp.fixed_names, pri.fixef_loc, pri.fixef_scale)]
    dname = "HalfNormal" if pri.sd_family == "half-normal" else f"Half-t({HALF_T_DF:g})"
    for t, sc in zip(inp.terms, pri.sd_scale):
        rows += [(f"sd {c} | {t.group}", dname, f"scale {s:.4g}") for c, s in zip(t.columns, sc)]
        if len(t.columns) > 1:
            rows.append((f"cor | {t.group}", "LKJ", f"eta {pri.lkj:.4g}"))
    if pri.sigma_scale is not None:
        rows.append(("sigma", "HalfNormal", f"scale {pri.sigma_scale:.4g}"))
    return pd.DataFrame(rows, columns=["parameter", "distribution", "parameters"]).set_index("parameter")


def default_priors(formula: str, data, family="gaussian") -> pd.DataFrame:
    """The default priors ``bayes`` would use for this model and data, one row per parameter."""
    fam = _family_name(family)
    inp = _inputs(formula, data, fam)
    return _priors_frame(_default_priors(inp), inp)


# ---------------------------------------------------------------------------------------------
# the NumPyro model
# ---------------------------------------------------------------------------------------------
def _sd_dist(dist, pri, scale):
    import jax.numpy as jnp

    scale = jnp.asarray(scale)
    if pri.sd_family == "half-normal":
        return dist.HalfNormal(scale)
    return dist.FoldedDistribution(dist.StudentT(HALF_T_DF, 0.0, scale))


def _make_model(inp: _Inputs, pri: _Priors):
    """A NumPyro model closed over the data (as JAX arrays)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    X = jnp.asarray(inp.X)
    y = jnp.asarray(inp.y)
    trials = jnp.asarray(inp.trials)
    offset = jnp.asarray(inp.offset)
    terms = [(jnp.asarray(t.codes), jnp.asarray(t.Z), len(t.levels), len(t.columns)) for t in inp.terms]
    bernoulli = inp.family == "binomial" and bool(np.all(inp.trials == 1))
    loc, scale = jnp.asarray(pri.fixef_loc), jnp.asarray(pri.fixef_scale)

    def model():
        eta = offset
        if X.shape[1]:
            beta = numpyro.sample("beta", dist.Normal(loc, scale))
            eta = eta + X @ beta
        for k, (codes, Z, m, q) in enumerate(terms):
            sd = numpyro.sample(f"sd_{k}", _sd_dist(dist, pri, pri.sd_scale[k]))
            z = numpyro.sample(f"z_{k}", dist.Normal(0.0, 1.0).expand([m, q]).to_event(2))
            if q > 1:
                L = numpyro.sample(f"L_{k}", dist.LKJCholesky(q, pri.lkj))
                u = z @ (sd[:, None] * L).T
            else:
                u = z * sd
            numpyro.deterministic(f"u_{k}", u)
            eta = eta + jnp.sum(Z * u[codes], axis=1)
        if inp.family == "gaussian":
            sigma = numpyro.sample("sigma", dist.HalfNormal(pri.sigma_scale))
            numpyro.sample("y", dist.Normal(eta, sigma / jnp.sqrt(trials)), obs=y)
        elif bernoulli:
            numpyro.sample("y", dist.Bernoulli(logits=eta), obs=y)
        elif inp.family == "binomial":
            numpyro.sample("y", dist.Binomial(total_count=trials, logits=eta), obs=y)
        else:
            numpyro.sample("y", dist.Poisson(jnp.exp(eta)), obs=y)

    return model


def _sample(model, chains, draws, tune, seed, target_accept, progress):
    import jax
    from numpyro.infer import MCMC, NUTS

    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**31))
    method = "parallel" if jax.local_device_count() >= chains else "vectorized"
    mcmc = MCMC(NUTS(model, target_accept_prob=target_accept), num_warmup=tune,
                num_samples=draws, num_chains=chains, chain_method=method,
                progress_bar=progress)
    with warnings.catch_warnings():
        # NumPyro's note that chains run in one process when there is one CPU device
        warnings.filterwarnings("ignore", message="There are not enough devices")
        mcmc.run(jax.random.PRNGKey(int(seed)), extra_fields=("diverging",))
    return mcmc


# ---------------------------------------------------------------------------------------------
# from samples to labelled draws
# ---------------------------------------------------------------------------------------------
def _group_term_labels(inp: _Inputs) -> list[str]:
    """VarCorr's labels: a factor's second and later terms are "g.1", "g.2", ..."""
    seen: dict[str, int] = {}
    out = []
    for t in inp.terms:
        k = seen.get(t.group, 0)
        out.append(t.group if k == 0 else f"{t.group}.{k}")
        seen[t.group] = k + 1
    return out


def _pairs(q: int):
    """Row and column indices of the strict lower triangle, in VarCorr's order (by column)."""
    cols, rows = zip(*[(j, i) for j in range(q) for i in range(j + 1, q)])
    return np.array(rows), np.array(cols)


def _to_idata(mcmc, inp: _Inputs):
    """InferenceData with labelled variables: fixef, sd/cor per term, ranef per term, sigma."""
    import arviz as az

    s = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    post, coords, dims = {}, {}, {}
    if "beta" in s:
        post["fixef"] = s["beta"]
        coords["fixef_term"] = inp.fixed_names
        dims["fixef"] = ["fixef_term"]
    for k, (t, label) in enumerate(zip(inp.terms, _group_term_labels(inp))):
        cdim, ldim = f"{label}__term", f"{label}__level"
        coords[cdim] = list(t.columns)
        coords[ldim] = [str(v) for v in t.levels]
        post[f"sd_{label}"] = s[f"sd_{k}"]
        dims[f"sd_{label}"] = [cdim]
        if len(t.columns) > 1:
            L = s[f"L_{k}"]
            R = L @ np.swapaxes(L, -1, -2)
            i, j = _pairs(len(t.columns))
            post[f"cor_{label}"] = R[..., i, j]
            coords[f"{label}__pair"] = [f"{t.columns[a]},{t.columns[b]}" for a, b in zip(j, i)]
            dims[f"cor_{label}"] = [f"{label}__pair"]
        post[f"ranef_{label}"] = s[f"u_{k}"]
        dims[f"ranef_{label}"] = [ldim, cdim]
    if "sigma" in s:
        post["sigma"] = s["sigma"]
    diverging = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"])
    return az.from_dict(posterior=post, sample_stats={"diverging": diverging},
                        coords=coords, dims=dims)


# ---------------------------------------------------------------------------------------------
# the result
# ---------------------------------------------------------------------------------------------
class BayesResult:
    """A mixed model fitted by MCMC. Point estimates are posterior means.

    Attributes: ``formula``, ``family``, ``link``, ``nobs``, ``ngroups``, ``chains``, ``draws``,
    ``tune``, ``seed``, ``fixef`` (Series), ``varcorr`` (DataFrame of posterior summaries),
    ``sigma`` (posterior mean residual SD, Gaussian), ``priors`` (DataFrame), ``divergences``,
    ``idata`` (ArviZ InferenceData: groups ``posterior`` and ``sample_stats``).
    """

    def __init__(self, inp: _Inputs, pri: _Priors, idata, formula, call):
        self._inp = inp
        self.formula = str(formula)
        self.family = inp.family
        self.link = _FAMILIES[inp.family]
        self.idata = idata
        self.priors = _priors_frame(pri, inp)
        self.chains, self.draws, self.tune, self.seed = (call["chains"], call["draws"],
                                                         call["tune"], call["seed"])
        self.nobs = len(inp.y)
        self.ngroups = {t.group: len(t.levels) for t in inp.terms}
        self._labels = _group_term_labels(inp)
        self.divergences = int(np.asarray(idata.sample_stats["diverging"]).sum())

    # -- point estimates ------------------------------------------------------------------
    @property
    def fixef(self) -> pd.Series:
        """Posterior means of the fixed effects."""
        if "fixef" not in self.idata.posterior:
            return pd.Series(dtype=float)
        v = self.idata.posterior["fixef"].mean(("chain", "draw")).to_numpy()
        return pd.Series(v, index=pd.Index(self._inp.fixed_names), name="posterior mean")

    @property
    def sigma(self) -> float:
        """Posterior mean of the residual SD (NaN for families without one)."""
        if "sigma" not in self.idata.posterior:
            return float("nan")
        return float(self.idata.posterior["sigma"].mean())

    def ranef_draws(self) -> dict:
        """Per grouping factor, the posterior draws of the random effects: an xarray DataArray
        with dimensions ``(chain, draw, level, term)``, the columns of ``ranef()``."""
        import xarray as xr

        frames: dict[str, list] = {}
        for t, label in zip(self._inp.terms, self._labels):
            da = self.idata.posterior[f"ranef_{label}"]
            da = da.rename({f"{label}__level": "level", f"{label}__term": "term"})
            frames.setdefault(t.group, []).append(da)
        return {g: (xr.concat(das, dim="term") if len(das) > 1 else das[0]).rename(g)
                for g, das in frames.items()}

    def ranef(self) -> dict:
        """Posterior means of the random effects per grouping factor, indexed by level with one
        column per term column, as the frequentist ``ranef()``."""
        out = {}
        for g, da in self.ranef_draws().items():
            levels = next(t.levels for t in self._inp.terms if t.group == g)
            df = pd.DataFrame(da.mean(("chain", "draw")).to_numpy(), index=levels.copy(),
                              columns=[str(c) for c in da["term"].to_numpy()])
            df.index.name = g
            out[g] = df
        return out

    def coef(self) -> dict:
        """Per grouping factor: fixed effects plus the factor's random effects (posterior means)."""
        fe = self.fixef
        out = {}
        for g, re in self.ranef().items():
            cols = list(fe.index) + [c for c in re.columns if c not in fe.index]
            df = pd.DataFrame({c: np.full(len(re), fe.get(c, 0.0)) for c in cols}, index=re.index)
            for c in re.columns:
                df[c] = df[c] + re[c]
            out[g] = df
        return out

    def group_draws(self, group: str | None = None, scale: str = "link") -> pd.DataFrame:
        """Draws of each level's coefficients (fixed effects plus random effects) for a
        random-intercept-only factor, shape (draws, levels); ``scale="response"`` applies the
        inverse link (e.g. a group's probability)."""
        group = self._one_group(group)
        da = self.ranef_draws()[group]
        if list(da["term"].to_numpy()) != [_INTERCEPT]:
            raise ValueError(f"group_draws needs a factor with only a random intercept; {group!r} "
                             f"has {list(da['term'].to_numpy())}")
        u = da.stack(sample=("chain", "draw")).transpose("sample", "level", "term").to_numpy()[..., 0]
        b0 = self.idata.posterior["fixef"].sel(fixef_term=_INTERCEPT).stack(
            sample=("chain", "draw")).to_numpy() if _INTERCEPT in self._inp.fixed_names else 0.0
        eta = u + np.asarray(b0)[:, None]
        if scale == "response":
            eta = _inverse_link(self.family, eta)
        elif scale != "link":
            raise ValueError(f"scale must be 'link' or 'response', got {scale!r}")
        levels = next(t.levels for t in self._inp.terms if t.group == group)
        return pd.DataFrame(eta, columns=levels.copy())

    def _one_group(self, group):
        groups = list(self.ngroups)
        if group is None:
            if len(groups) != 1:
                raise ValueError(f"the model has grouping factors {groups}; pass group= one of them")
            return groups[0]
        if group not in groups:
            raise KeyError(f"no grouping factor {group!r} in the model; have {groups}")
        return group

    # -- summaries ------------------------------------------------------------------------
    def _parameters(self, with_ranef: bool):
        """(readable name, draws of shape (chain, draw)) for every scalar parameter."""
        post = self.idata.posterior
        for name, col in zip(self._inp.fixed_names, range(len(self._inp.fixed_names))):
            yield name, post["fixef"].isel(fixef_term=col).to_numpy()
        for t, label in zip(self._inp.terms, self._labels):
            for j, c in enumerate(t.columns):
                yield f"sd {c} | {label}", post[f"sd_{label}"].isel({f"{label}__term": j}).to_numpy()
            if len(t.columns) > 1:
                cor = post[f"cor_{label}"]
                for k, pair in enumerate(cor[f"{label}__pair"].to_numpy()):
                    yield f"cor {pair} | {label}", cor.isel({f"{label}__pair": k}).to_numpy()
        if "sigma" in post:
            yield "sigma", post["sigma"].to_numpy()
        if with_ranef:
            for t, label in zip(self._inp.terms, self._labels):
                u = post[f"ranef_{label}"].to_numpy()       # (chain, draw, level, term)
                for a, lev in enumerate(t.levels):
                    for j, c in enumerate(t.columns):
                        yield f"ranef {c} | {label}[{lev}]", u[:, :, a, j]

    def summary(self) -> pd.DataFrame:
        """Per parameter: posterior mean, sd, 95% equal-tailed interval, r_hat and ess_bulk."""
        import arviz as az

        rows = {}
        for name, x in self._parameters(with_ranef=False):
            lo, hi = np.quantile(x, [0.025, 0.975])
            with np.errstate(divide="ignore", invalid="ignore"):   # constant draws: NaN
                rows[name] = (float(x.mean()), float(x.std(ddof=1)), float(lo), float(hi),
                              float(az.rhat(x)), float(az.ess(x, method="bulk")))
        out = pd.DataFrame.from_dict(rows, orient="index",
                                     columns=["mean", "sd", "q2.5", "q97.5", "r_hat", "ess_bulk"])
        out.index.name = "parameter"
        return out

    def diagnostics(self) -> pd.DataFrame:
        """R-hat, bulk and tail effective sample sizes per parameter (random effects included,
        as ``ranef <column> | <group>[<level>]``); ``.attrs["divergences"]`` is the number of
        divergent transitions after warm-up."""
        import arviz as az

        with np.errstate(divide="ignore", invalid="ignore"):   # constant draws give NaN
            rows = {name: (float(az.rhat(x)), float(az.ess(x, method="bulk")),
                           float(az.ess(x, method="tail")))
                    for name, x in self._parameters(with_ranef=True)}
        out = pd.DataFrame.from_dict(rows, orient="index", columns=["r_hat", "ess_bulk", "ess_tail"])
        out.index.name = "parameter"
        out.attrs["divergences"] = self.divergences
        return out

    @property
    def varcorr(self) -> pd.DataFrame:
        """Posterior summaries of the random-effects SDs and correlations and the residual SD:
        rows as ``VarCorr.to_frame()`` (``grp``, ``var1``, ``var2``) with the posterior
        ``mean``, ``median``, ``q2.5`` and ``q97.5`` of each SD or correlation."""
        post = self.idata.posterior
        rows = []

        def add(grp, v1, v2, da):
            x = np.asarray(da).ravel()
            rows.append((grp, v1, v2, float(x.mean()), float(np.median(x)),
                         float(np.quantile(x, 0.025)), float(np.quantile(x, 0.975))))

        for t, label in zip(self._inp.terms, self._labels):
            sd = post[f"sd_{label}"]
            for j, c in enumerate(t.columns):
                add(label, c, None, sd.isel({f"{label}__term": j}))
            if len(t.columns) > 1:
                cor = post[f"cor_{label}"]
                for k, (i, j) in enumerate(zip(*_pairs(len(t.columns)))):
                    add(label, t.columns[j], t.columns[i], cor.isel({f"{label}__pair": k}))
        if "sigma" in post:
            add("Residual", None, None, post["sigma"])
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "mean", "median", "q2.5", "q97.5"])

    def __repr__(self) -> str:
        return (f"<BayesResult {self.formula!r} ({self.family}), {self.chains} chains x "
                f"{self.draws} draws after {self.tune} warm-up, {self.divergences} divergences>")

    def __str__(self) -> str:
        with pd.option_context("display.width", 120, "display.max_columns", 10):
            return (f"Bayesian mixed model fit by MCMC (NUTS) ['{self.family}']\n"
                    f"Formula: {self.formula}\n"
                    f"Number of obs: {self.nobs}, groups: "
                    + ", ".join(f"{g}, {n}" for g, n in self.ngroups.items())
                    + f"\nChains: {self.chains} x {self.draws} draws ({self.tune} warm-up), "
                      f"divergences: {self.divergences}\n\n"
                    + self.summary().to_string(float_format=lambda v: f"{v:.4g}"))


def _inverse_link(family, eta):
    if family == "binomial":
        return 1.0 / (1.0 + np.exp(-eta))
    if family == "poisson":
        return np.exp(eta)
    return eta


# ---------------------------------------------------------------------------------------------
# convergence checks
# ---------------------------------------------------------------------------------------------
def _convergence_problems(result: BayesResult) -> list[str]:
    d = result.diagnostics()
    problems = []
    rhat = d["r_hat"].to_numpy(float)
    if np.any(~np.isfinite(rhat)) or np.nanmax(rhat) > RHAT_MAX:
        worst = d["r_hat"].idxmax() if np.any(np.isfinite(rhat)) else d.index[0]
        problems.append(f"R-hat up to {np.nanmax(rhat):.3f} (> {RHAT_MAX}, at {worst}): the chains "
                        "disagree; run more warm-up and draws (tune=, draws=)")
    if result.divergences:
        problems.append(f"{result.divergences} divergent transitions after warm-up: raise "
                        "target_accept (e.g. 0.95) or give the SDs tighter priors (priors={'sd': ...})")
    ess_min = ESS_MIN_PER_CHAIN * result.chains
    low = d[["ess_bulk", "ess_tail"]].min(axis=1)
    if np.any(low.to_numpy(float) < ess_min):
        problems.append(f"effective sample size down to {low.min():.0f} (< {ess_min}, at "
                        f"{low.idxmin()}): draw more (draws=) or run longer warm-up (tune=)")
    return problems


def _warn_if_unconverged(result: BayesResult) -> None:
    problems = _convergence_problems(result)
    if problems:
        warnings.warn("the MCMC sample may not represent the posterior: " + "; ".join(problems),
                      BayesConvergenceWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------
def _check_count(name, v, minimum=1) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def bayes(formula: str, data, family="gaussian", chains: int = 4, draws: int = 1000,
          tune: int = 1000, seed=None, priors=None, progress: bool = True,
          target_accept: float = 0.8) -> BayesResult:
    """Fit a mixed model by MCMC with the same formula (and model matrices) as lmer/glmer.

    Parameters
    ----------
    formula : lme4 formula, e.g. ``"y ~ x + (x | g)"``.
    data : pandas (or polars) DataFrame.
    family : ``"gaussian"``, ``"binomial"`` (logit link; 0/1, factor, or
        ``cbind(successes, failures)`` responses) or ``"poisson"`` (log link).
    chains, draws, tune : number of chains, of kept draws per chain and of warm-up
        (adaptation) iterations per chain.
    seed : integer seed of the sampler (None: a fresh random seed).
    priors : overrides of the default priors (see the module documentation), a dict with keys
        ``"fixef"`` ({name: (mean, sd)} normal priors), ``"sd"`` (half-normal/half-t scale: a
        number for every random-effect SD, {group: number} or {group: {column: number}}),
        ``"sd_family"`` (``"half-normal"`` or ``"half-t"`` with 3 degrees of freedom),
        ``"lkj"`` (LKJ shape of the correlations) and ``"sigma"`` (half-normal scale of the
        residual SD).
    progress : show NumPyro's progress bar (on stderr).
    target_accept : NUTS target acceptance probability; raise it (0.9-0.99) when there are
        divergent transitions.

    A :class:`BayesConvergenceWarning` says what to try when R-hat exceeds 1.01, when there are
    divergent transitions or when an effective sample size is below 100 per chain.
    """
    _backend()
    fam = _family_name(family)
    chains = _check_count("chains", chains)
    draws = _check_count("draws", draws, 2)
    tune = _check_count("tune", tune, 0)
    if not (isinstance(target_accept, float) and 0 < target_accept < 1):
        raise ValueError(f"target_accept must be a probability in (0, 1), got {target_accept!r}")
    if seed is not None:
        seed = _check_count("seed", seed, 0)
    inp = _inputs(formula, data, fam)
    if inp.n_dropped_na:
        warnings.warn(f"dropped {inp.n_dropped_na} row(s) with missing values", stacklevel=2)
    pri = _apply_overrides(_default_priors(inp), inp, priors)
    mcmc = _sample(_make_model(inp, pri), chains, draws, tune, seed, target_accept,
                   progress and sys.stderr is not None)
    result = BayesResult(inp, pri, _to_idata(mcmc, inp), formula,
                         dict(chains=chains, draws=draws, tune=tune, seed=seed))
    _warn_if_unconverged(result)
    return result
