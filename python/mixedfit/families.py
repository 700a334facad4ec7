"""GLM families and links: names, validation and the binomial response's forms. The family
maths (links, variance, deviance, starting means, aic) is the core's, the same that PIRLS
uses; :class:`Family` applies it elementwise to arrays."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import _core
from ._design import BinomialCounts
from ._errors import DataError

__all__ = ["FAMILIES", "resolve_family", "Family", "NegativeBinomial"]

# family name -> (core code, default link, allowed links, has a dispersion parameter)
FAMILIES = {
    "binomial": (0, "logit", ("logit", "probit", "cloglog", "cauchit", "log"), False),
    "poisson": (1, "log", ("log", "sqrt", "identity"), False),
    "Gamma": (2, "inverse", ("inverse", "log", "identity"), True),
    "inverse.gaussian": (3, "1/mu^2", ("1/mu^2", "inverse", "log", "identity"), True),
    "gaussian": (4, "identity", ("identity", "log", "inverse"), True),
    # NB2 with a known shape theta (MASS's negative.binomial(theta)); glmer_nb estimates it.
    "negative.binomial": (5, "log", ("log", "sqrt", "identity"), False),
}
_ALIASES = {"gamma": "Gamma", "inverse_gaussian": "inverse.gaussian", "inversegaussian": "inverse.gaussian",
            "bernoulli": "binomial", "normal": "gaussian"}
LINKS = {"identity": 0, "log": 1, "logit": 2, "probit": 3, "cloglog": 4, "cauchit": 5,
         "inverse": 6, "sqrt": 7, "1/mu^2": 8}


@dataclass(frozen=True)
class Family:
    name: str
    link: str
    nb_theta: float | None = None  # the negative binomial's shape (variance mu + mu^2/theta)

    @property
    def codes(self) -> tuple[int, int]:
        return FAMILIES[self.name][0], LINKS[self.link]

    @property
    def core_args(self) -> tuple:
        """(family code, link code, nb_theta) as the core's GlmmProblem takes them."""
        return (*self.codes, self.nb_theta or 0.0)

    @property
    def display_name(self) -> str:
        """R's family()$family: "Negative Binomial(1.627)" (theta rounded to 4 decimals, as
        MASS prints it) for the negative binomial, the name otherwise."""
        if self.name != "negative.binomial":
            return self.name
        return f"Negative Binomial({round(self.nb_theta, 4):.7g})"

    @property
    def has_scale(self) -> bool:
        return FAMILIES[self.name][3]

    # ---- the family maths: the core's (the one PIRLS uses), elementwise --------------------
    def linkfun(self, mu) -> np.ndarray:
        return _elementwise(self, "linkfun", mu)

    def linkinv(self, eta) -> np.ndarray:
        """The mean, clamped as R's families clamp it (logit: within [eps, 1 - eps])."""
        return _elementwise(self, "linkinv", eta)

    def mu_eta(self, eta) -> np.ndarray:
        """d mu / d eta."""
        return _elementwise(self, "mu_eta", eta)

    def variance(self, mu) -> np.ndarray:
        return _elementwise(self, "variance", mu)

    def dev_resids(self, y, mu, wt) -> np.ndarray:
        """Unit deviances times the prior weights."""
        return _elementwise(self, "dev_resids", y, mu, wt)

    def mustart(self, y, w) -> np.ndarray:
        """GLM starting means (R's family()$initialize)."""
        return _elementwise(self, "mustart", y, w)

    def irls_rows(self, eta, base, y, pw):
        """One PIRLS step's rows as the core forms them: (mu, d mu / d eta, working weights,
        working response eta - base + (y - mu) / mu_eta, deviance; NaN for an invalid mean)."""
        return _core_family(self.core_args).irls_rows(*_vectors(eta, base, y, pw))

    def aic(self, y, mu, wt, deviance: float = 0.0) -> float:
        """R's family()$aic: -2 log-likelihood with its normalizing constants."""
        return float(_core_family(self.core_args).aic(*_vectors(y, mu, wt), float(deviance)))


@functools.lru_cache(maxsize=64)
def _core_family(args: tuple):
    return _core.Family(*args)


def _vectors(*arrays) -> list[np.ndarray]:
    """The arrays as flat float64 vectors, as the core family takes them."""
    return [np.ascontiguousarray(a, dtype=np.float64).ravel() for a in arrays]


def _elementwise(fam: Family, what: str, *arrays) -> np.ndarray:
    """The core family's ``what`` over ``arrays`` broadcast together, in their shape."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays):
        arrays = np.broadcast_arrays(*arrays)
        shape = arrays[0].shape
    if len(shape) == 1:  # vectors, the usual case, go as they are
        return getattr(_core_family(fam.core_args), what)(*arrays)
    return getattr(_core_family(fam.core_args), what)(*_vectors(*arrays)).reshape(shape)


def NegativeBinomial(theta: float, link: str = "log") -> Family:
    """The NB2 family with a known shape ``theta`` (variance mu + mu^2 / theta; MASS's
    ``negative.binomial(theta)``), for ``glmer(..., family=NegativeBinomial(theta))``.
    ``mixedfit.glmer_nb`` estimates theta. Links: log (default), sqrt, identity."""
    is_number = isinstance(theta, (int, float, np.integer, np.floating))
    if isinstance(theta, (bool, np.bool_)) or not is_number:
        raise DataError(f"negative binomial theta must be a positive number, got {theta!r}")
    if not (np.isfinite(theta) and theta > 0):
        raise DataError(f"negative binomial theta must be positive and finite, got {theta!r}")
    return resolve_family(Family("negative.binomial", "log", float(theta)), link)


def resolve_family(family, link=None) -> Family:
    """Validate a family (name, or an object with ``.name``/``.link``) and link."""
    if isinstance(family, str) and (link is None or isinstance(link, str)):
        return _named_family(family, link)
    return _resolve_family(family, link)


@functools.lru_cache(maxsize=64)
def _named_family(name: str, link: str | None) -> Family:
    """``resolve_family`` of a family given by name (Family is immutable: one per call
    spelling, validated once)."""
    return _resolve_family(name, link)


def _resolve_family(family, link) -> Family:
    nb_theta = getattr(family, "nb_theta", None)
    if hasattr(family, "name") and hasattr(family, "link") and not isinstance(family, str):
        name, link = family.name, link or family.link
    elif isinstance(family, str):
        name = family
    else:
        raise ValueError(f"family must be a name like 'binomial', got {family!r}")
    name = _ALIASES.get(name.lower(), name) if name not in FAMILIES else name
    if name not in FAMILIES:
        raise ValueError(
            f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}"
        )
    if name == "negative.binomial" and nb_theta is None:
        raise ValueError("the negative binomial family needs its theta: pass "
                         "family=mixedfit.families.NegativeBinomial(theta), or estimate theta "
                         "with mixedfit.glmer_nb")
    default, allowed = FAMILIES[name][1], FAMILIES[name][2]
    link = default if link is None else link
    if link not in allowed:
        raise ValueError(
            f"link {link!r} is not available for family {name!r}; choose one of {', '.join(allowed)}"
        )
    return Family(name, link, nb_theta if name == "negative.binomial" else None)


def binomial_response(response, weights: np.ndarray | None, name: str):
    """(y as proportions, prior weights as trials) from 0/1, bool, factor, proportions or cbind."""
    # (ndarray methods rather than numpy's function wrappers: these checks run on every fit)
    if isinstance(response, BinomialCounts):
        s, f = response.successes, response.failures
        n = s + f
        if not np.isfinite(n).all() or min(s.min(initial=0.0), f.min(initial=0.0)) < 0:
            raise DataError(f"cbind response {name!r} has negative or non-finite counts")
        if max(np.abs(s - s.round()).max(initial=0.0),
               np.abs(f - f.round()).max(initial=0.0)) > 1e-8:
            raise DataError(f"cbind response {name!r} has non-integer counts")
        y = s / np.where(n > 0, n, 1.0)  # 0 where there are no trials
        w = n if weights is None else weights * n
        return y, w
    s = response
    dt = s.dtype
    if dt.kind in "biuf" and not isinstance(dt, pd.CategoricalDtype):
        y = s.to_numpy(dtype=float)
    elif isinstance(dt, pd.CategoricalDtype) or dt.kind in "OSU" or str(dt) in ("string", "str"):
        cats = s.astype("category").cat.categories if not isinstance(dt, pd.CategoricalDtype) else s.cat.categories
        if len(cats) < 2:
            raise DataError(f"factor response {name!r} has fewer than two levels")
        y = (s.astype(object) != cats[0]).to_numpy(dtype=float)
    else:
        raise DataError(f"binomial response {name!r} must be 0/1, logical, a factor or proportions; got dtype {dt}")
    if not np.isfinite(y).all():
        raise DataError(f"binomial response {name!r} has non-finite values")
    if y.size and (y.min() < 0 or y.max() > 1):
        bad = y[(y < 0) | (y > 1)][0]
        raise DataError(f"binomial response {name!r} must lie in [0, 1] (got {bad!r}); "
                        "for counts use cbind(successes, failures)")
    w = np.ones_like(y) if weights is None else weights
    succ = y * w
    off = np.abs(succ - np.round(succ))
    if off.max(initial=0.0) > 1e-7:
        i = int(np.flatnonzero(off > 1e-7)[0])
        raise DataError(
            f"non-integer number of successes in binomial response {name!r} at row {i}: "
            f"{y[i]!r} x weight {w[i]!r}; proportions need weights = number of trials"
        )
    return y, w


def check_response(fam: Family, y: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(y)):
        raise DataError(f"response {name!r} has non-finite values")
    if fam.name in ("poisson", "negative.binomial"):
        what = fam.name.replace(".", " ")
        if np.any(y < 0):
            raise DataError(f"{what} response {name!r} has negative values (e.g. {y[y < 0][0]!r})")
        if np.any(np.abs(y - np.round(y)) > 1e-8):
            bad = y[np.abs(y - np.round(y)) > 1e-8][0]
            raise DataError(f"{what} response {name!r} has non-integer values (e.g. {bad!r})")
    elif fam.name in ("Gamma", "inverse.gaussian"):
        if np.any(y <= 0):
            raise DataError(f"{fam.name} response {name!r} must be positive (e.g. {y[y <= 0][0]!r})")
    elif fam.name == "gaussian" and fam.link in ("log", "inverse") and np.any(y <= 0):
        raise DataError(f"gaussian response {name!r} with a {fam.link} link needs positive values")
