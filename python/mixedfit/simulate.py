"""Simulated data for demonstrating shrinkage (partial pooling) in mixed models.

Two generators:

``clustered``
    Clustered data with a random intercept and a random slope for one standard-normal
    covariate, as in the classic "Shrinkage in mixed effects models" demonstration:

    ``y = (intercept + re0[c]) + (beta + re1[c]) * x + e``,  ``(re0, re1) ~ N(0, Sigma)``,
    ``e ~ N(0, sigma^2)``.

``bernoulli_groups``
    Bernoulli trials with a normally distributed group effect on the logit scale, the set-up in
    which glmer estimates "always" sit closer to the overall proportion than the raw per-group
    proportions.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd

__all__ = ["clustered", "bernoulli_groups"]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer() and not isinstance(value, bool):
            value = int(value)
        else:
            raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _nonnegative(name: str, value) -> float:
    value = _finite(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def clustered(
    obs_per_cluster: int = 10,
    n_cluster: int = 100,
    intercept: float = 1.0,
    beta: float = 0.5,
    sigma: float = 1.0,
    sd_int: float = 0.5,
    sd_slope: float = 0.25,
    cor: float = 0.0,
    balanced: float = 1.0,
    seed=888,
    return_effects: bool = False,
):
    """Simulate clustered data with random intercepts and random slopes.

    Each of ``n_cluster`` clusters gets ``obs_per_cluster`` rows. ``x`` is standard normal;
    the cluster effects ``(re0, re1)`` are drawn from a bivariate normal with mean zero and
    covariance matrix ::

        [[sd_int**2, cor      ],
         [cor,       sd_slope**2]]

    and ``y = (intercept + re0) + (beta + re1) * x + N(0, sigma^2)``.

    Note that ``cor`` is placed in the off-diagonal of the *covariance* matrix exactly as the
    original demonstration writes it, so it is a covariance, not a correlation: the implied
    correlation is ``cor / (sd_int * sd_slope)``. A ``cor`` with
    ``abs(cor) > sd_int * sd_slope`` would make the matrix not positive semi-definite and is
    rejected.

    Parameters
    ----------
    obs_per_cluster, n_cluster : positive integers.
    intercept, beta : population intercept and slope of ``x``.
    sigma : residual standard deviation (>= 0).
    sd_int, sd_slope : standard deviations of the random intercepts and slopes (>= 0).
    cor : covariance of the random intercepts and slopes (see above).
    balanced : fraction of the rows kept, in [0, 1]; 1 keeps every row (balanced data), a
        smaller value samples that fraction of the rows at random without replacement, which
        leaves clusters of different sizes. Values outside [0, 1] are an error.
    seed : seed for ``numpy.random.default_rng`` (an int, a Generator, or None).
    return_effects : also return the simulated cluster effects.

    Returns
    -------
    DataFrame with columns ``x``, ``y`` and ``cluster`` (integer labels 1..n_cluster), in
    cluster order. With ``return_effects=True`` a tuple ``(data, effects)`` where ``effects``
    is a DataFrame indexed by cluster with the random effects (``re_intercept``,
    ``re_slope``) and the cluster-specific coefficients (``intercept``, ``slope``).
    """
    obs_per_cluster = _positive_int("obs_per_cluster", obs_per_cluster)
    n_cluster = _positive_int("n_cluster", n_cluster)
    intercept = _finite("intercept", intercept)
    beta = _finite("beta", beta)
    sigma = _nonnegative("sigma", sigma)
    sd_int = _nonnegative("sd_int", sd_int)
    sd_slope = _nonnegative("sd_slope", sd_slope)
    cor = _finite("cor", cor)
    balanced = _finite("balanced", balanced)
    if not 0.0 <= balanced <= 1.0:
        raise ValueError(
            f"balanced must be a proportion of rows to keep, in [0, 1]; got {balanced!r}"
        )
    bound = sd_int * sd_slope
    if abs(cor) > bound * (1 + 1e-12):
        raise ValueError(
            f"cor={cor!r} makes the random-effects covariance matrix "
            f"[[{sd_int**2:g}, {cor:g}], [{cor:g}, {sd_slope**2:g}]] not positive semi-definite: "
            f"cor is a covariance here and needs abs(cor) <= sd_int * sd_slope = {bound:g}"
        )
    rng = np.random.default_rng(seed)

    n = n_cluster * obs_per_cluster
    cluster = np.repeat(np.arange(1, n_cluster + 1), obs_per_cluster)
    x = rng.standard_normal(n)
    # Draw (re0, re1) = L z with L L' = Sigma, written out for the 2x2 case so that a
    # singular (but positive semi-definite) Sigma works too.
    z = rng.standard_normal((n_cluster, 2))
    re0 = sd_int * z[:, 0]
    if sd_int > 0:
        l21 = cor / sd_int
        l22 = math.sqrt(max(sd_slope**2 - l21**2, 0.0))
    else:
        l21, l22 = 0.0, sd_slope
    re1 = l21 * z[:, 0] + l22 * z[:, 1]
    idx = cluster - 1
    y = (intercept + re0[idx]) + (beta + re1[idx]) * x + sigma * rng.standard_normal(n)
    data = pd.DataFrame({"x": x, "y": y, "cluster": cluster})
    if balanced < 1.0:
        keep = int(round(balanced * n))
        rows = np.sort(rng.choice(n, size=keep, replace=False))
        data = data.iloc[rows].reset_index(drop=True)
    if not return_effects:
        return data
    effects = pd.DataFrame(
        {
            "re_intercept": re0,
            "re_slope": re1,
            "intercept": intercept + re0,
            "slope": beta + re1,
        },
        index=pd.Index(np.arange(1, n_cluster + 1), name="cluster"),
    )
    return data, effects


def bernoulli_groups(
    n_groups: int = 30,
    n_trials: int = 10,
    p0: float = 0.7,
    sd_logit: float = 1.0,
    seed=888,
    return_effects: bool = False,
):
    """Simulate Bernoulli trials whose success probability varies between groups.

    Each group ``j`` has ``logit(theta_j) ~ N(logit(p0), sd_logit^2)`` and contributes
    ``n_trials`` independent 0/1 results with success probability ``theta_j``.

    Parameters
    ----------
    n_groups, n_trials : positive integers.
    p0 : the success probability of a typical group (the median of ``theta_j``), in (0, 1).
    sd_logit : standard deviation of the group effects on the logit scale (>= 0).
    seed : seed for ``numpy.random.default_rng`` (an int, a Generator, or None).
    return_effects : also return the simulated per-group probabilities.

    Returns
    -------
    DataFrame with columns ``subject`` (integer labels 1..n_groups) and ``result`` (0/1), in
    group order. With ``return_effects=True`` a tuple ``(data, effects)`` where ``effects`` is a
    DataFrame indexed by subject with ``logit_theta`` and ``theta``.
    """
    n_groups = _positive_int("n_groups", n_groups)
    n_trials = _positive_int("n_trials", n_trials)
    p0 = _finite("p0", p0)
    if not 0.0 < p0 < 1.0:
        raise ValueError(f"p0 must be a probability strictly between 0 and 1, got {p0!r}")
    sd_logit = _nonnegative("sd_logit", sd_logit)
    rng = np.random.default_rng(seed)
    logit_theta = math.log(p0 / (1 - p0)) + sd_logit * rng.standard_normal(n_groups)
    theta = 1.0 / (1.0 + np.exp(-logit_theta))
    subject = np.repeat(np.arange(1, n_groups + 1), n_trials)
    result = (rng.random(n_groups * n_trials) < theta[subject - 1]).astype(np.int64)
    data = pd.DataFrame({"subject": subject, "result": result})
    if not return_effects:
        return data
    effects = pd.DataFrame(
        {"logit_theta": logit_theta, "theta": theta},
        index=pd.Index(np.arange(1, n_groups + 1), name="subject"),
    )
    return data, effects
