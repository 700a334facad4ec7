"""A slow, obviously-correct dense NumPy reference for the GLMM objectives.

Tests only. Everything is a full dense matrix and every formula is written out once, with no
structure to get wrong:

    eta(u)  = X beta + Z Lambda u + offset,   mu = g^-1(eta)
    pdev(u) = sum_i d(y_i, mu_i) + ||u||^2                (d: unit deviance times prior weight)

* ``conditional_mode``: the minimizer of pdev over u (beta fixed) by damped Newton iterations
  with the expected (Fisher) Hessian  2 (Z Lambda)' W (Z Lambda) + 2 I, W_i = pw_i mu_eta_i^2 /
  V(mu_i), and step halving whenever pdev does not decrease. The Hessian only steers the steps;
  the iteration stops when the next step is at the rounding level of the iterate (not on a
  change of pdev, which rounding hides long before), so the point returned is the mode itself
  to ~1e-12, for canonical and non-canonical links alike.
* ``joint_mode``: the same over (beta, u) jointly (the nAGQ = 0 stage; only u is penalized).
* At the mode (``Mode``): the unscaled conditional variances Lambda (Lambda'Z'WZ Lambda + I)^-1
  Lambda' and the unscaled vcov of beta, the X block of the inverse of the (beta, u) system
  [X ZLambda]' W [X ZLambda] + diag(0, I) at the mode's working weights.
* Laplace objective on lme4's scale: R's ``family$aic(y, n, mu, wt, dev)`` (the family's
  -2 log-likelihood with its normalizing constants; +2 for dispersion families, as R has it)
  + ||u||^2 + log det(Lambda'Z'WZ Lambda + I), W the working weights at the mode; and the same
  with ``sum d`` in place of ``aic`` (the unit-deviance scale).
* Adaptive Gauss-Hermite for one scalar term, on the unit-deviance scale as lme4 computes it:
  with L_j = sqrt(1 + lambda^2 sum_{i in j} W_i Z_i^2) (the diagonal of the factor of
  Lambda'Z'WZ Lambda + I) and devc_j(z) = sum_{i in j} d(y_i, mu_i(eta_i + Z_i lambda z / L_j))
  + (u_j + z / L_j)^2,

      sum_j devc_j(0) + sum_j log L_j^2
        - 2 sum_j log( sum_k w_k exp(-(devc_j(z_k) - devc_j(0)) / 2 + z_k^2 / 2) )

  with probabilists' Gauss-Hermite nodes z_k and weights w_k normalized to sum to 1.
  ``agq_exact_objective`` gives the integral that this rule approximates, by adaptive
  quadrature level by level, to check the twin itself.

The family functions are written here from their textbook definitions (scipy's distributions
for the normalizing constants), independently of the package's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import integrate, special, stats

from _dense_twin import dense_z, lambda_matrix, level_blocks

__all__ = [
    "GlmmFamily",
    "Mode",
    "conditional_mode",
    "joint_mode",
    "laplace_objective",
    "agq_objective",
    "agq_exact_objective",
    "stage1_objective",
]

# Newton stops when its next step is this small relative to the parameters: the iterate is the
# mode to (near) rounding.
STEP_RTOL = 1e-12
MAX_NEWTON = 500
# Half-width of the integration range of ``agq_exact_objective`` in the standardized variable.
ZMAX = 12.0


# --------------------------------------------------------------------------------------------
# Families and links


_EPS = np.finfo(float).eps
# R's binomial links keep the mean inside (0, 1) in floating point: probit clamps eta at
# -qnorm(eps), cloglog clamps mu to [eps, 1 - eps]. Only far tails (AGQ nodes) reach them.
_PROBIT_THRESH = -special.ndtri(_EPS)

_LINKS = {
    # name: (linkinv, d mu / d eta, valid eta)
    "identity": (lambda e: e, lambda e: np.ones_like(e), lambda e: np.isfinite(e)),
    "log": (np.exp, np.exp, lambda e: np.isfinite(e)),
    "logit": (special.expit, lambda e: special.expit(e) * special.expit(-e), lambda e: np.isfinite(e)),
    "probit": (lambda e: special.ndtr(np.clip(e, -_PROBIT_THRESH, _PROBIT_THRESH)),
               lambda e: np.exp(-0.5 * e * e) / math.sqrt(2 * math.pi), lambda e: np.isfinite(e)),
    "cloglog": (lambda e: np.clip(-np.expm1(-np.exp(e)), _EPS, 1 - _EPS),
                lambda e: np.exp(e - np.exp(e)), lambda e: np.isfinite(e)),
    "cauchit": (lambda e: 0.5 + np.arctan(e) / math.pi, lambda e: 1.0 / (math.pi * (1.0 + e * e)),
                lambda e: np.isfinite(e)),
    "inverse": (lambda e: 1.0 / e, lambda e: -1.0 / (e * e), lambda e: np.isfinite(e) & (e != 0)),
    "sqrt": (lambda e: e * e, lambda e: 2.0 * e, lambda e: np.isfinite(e) & (e > 0)),
    "1/mu^2": (lambda e: 1.0 / np.sqrt(e), lambda e: -0.5 * e**-1.5, lambda e: np.isfinite(e) & (e > 0)),
}


@dataclass(frozen=True)
class GlmmFamily:
    """A family and link by name ("binomial", "poisson", "Gamma", "inverse.gaussian")."""

    name: str
    link: str

    def linkinv(self, eta):
        return _LINKS[self.link][0](eta)

    def mu_eta(self, eta):
        return _LINKS[self.link][1](eta)

    def valid(self, eta) -> bool:
        """eta in the link's domain and a mean in the family's range (for PIRLS iterates)."""
        return bool(np.all(_LINKS[self.link][2](eta))) and self.valid_mean(eta)

    def valid_mean(self, eta) -> bool:
        """A mean g^-1(eta) in the family's range (all a quadrature node needs: the
        conditional density is defined wherever the mean is)."""
        with np.errstate(all="ignore"):
            mu = self.linkinv(eta)
        if not np.all(np.isfinite(mu)):
            return False
        if self.name == "binomial":
            return bool(np.all((mu > 0) & (mu < 1)))
        return bool(np.all(mu > 0))

    def variance(self, mu):
        return {"binomial": lambda m: m * (1 - m), "poisson": lambda m: m,
                "Gamma": lambda m: m * m, "inverse.gaussian": lambda m: m**3}[self.name](mu)

    def dev_resids(self, y, mu, wt):
        """Unit deviances times the prior weights (R's family$dev.resids)."""
        if self.name == "binomial":
            return 2 * wt * (special.xlogy(y, y) - special.xlogy(y, mu)
                             + special.xlogy(1 - y, 1 - y) - special.xlogy(1 - y, 1 - mu))
        if self.name == "poisson":
            return 2 * wt * (special.xlogy(y, y) - special.xlogy(y, mu) - (y - mu))
        if self.name == "Gamma":
            return -2 * wt * (np.log(y / mu) - (y - mu) / mu)
        if self.name == "inverse.gaussian":
            return wt * (y - mu) ** 2 / (y * mu**2)
        raise ValueError(self.name)

    def aic(self, y, n, mu, wt, dev) -> float:
        """R's family$aic(y, n, mu, wt, dev): -2 log-likelihood with normalizing constants
        (binomial: y proportions of n trials, m = n if any n > 1 else wt; dispersion families
        at the estimate dev / sum(wt), plus 2)."""
        if self.name == "binomial":
            m = n if np.any(n > 1) else wt
            k = np.round(m * y)
            ll = stats.binom.logpmf(k, np.round(m), mu)
            return float(-2 * np.sum(np.where(m > 0, wt / np.where(m > 0, m, 1), 0) * ll))
        if self.name == "poisson":
            return float(-2 * np.sum(stats.poisson.logpmf(y, mu) * wt))
        if self.name == "Gamma":
            disp = dev / np.sum(wt)
            ll = stats.gamma.logpdf(y, a=1 / disp, scale=mu * disp)
            return float(-2 * np.sum(ll * wt) + 2)
        if self.name == "inverse.gaussian":
            sw = np.sum(wt)
            return float(sw * (math.log(dev / sw * 2 * math.pi) + 1) + 3 * np.sum(np.log(y) * wt) + 2)
        raise ValueError(self.name)


# --------------------------------------------------------------------------------------------
# The model


@dataclass
class Model:
    """Everything fixed for one problem, as dense arrays."""

    X: np.ndarray
    y: np.ndarray
    pw: np.ndarray        # prior weights (binomial: number of trials)
    offset: np.ndarray
    Z: np.ndarray
    terms: list
    fam: GlmmFamily
    trials: np.ndarray    # R's ``n`` for the binomial aic (1 for 0/1 data)
    theta: np.ndarray

    @classmethod
    def build(cls, X, y, pw, offset, terms, family, link, theta, trials=None):
        X = np.asarray(X, dtype=float)
        n = X.shape[0]
        y = np.asarray(y, dtype=float)
        pw = np.ones(n) if pw is None else np.asarray(pw, dtype=float)
        off = np.zeros(n) if offset is None else np.asarray(offset, dtype=float)
        if trials is None:
            trials = np.ones(n)
        return cls(X, y, pw, off, dense_z(terms, n), terms, GlmmFamily(family, link),
                   np.asarray(trials, dtype=float), np.asarray(theta, dtype=float))


@dataclass
class Mode:
    u: np.ndarray
    beta: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    weights: np.ndarray   # working weights at the mode
    devsum: float
    aic: float
    ussq: float
    ldL2: float
    newton_steps: int
    unscaled_condvar: list    # per term (p_k, p_k * l_k): diagonal blocks of the next line
    condvar_full: np.ndarray  # Lambda (Lambda'Z'WZ Lambda + I)^-1 Lambda'
    unscaled_vcov: np.ndarray  # X-block of the inverse of the (beta, u) system at these weights

    @property
    def laplace(self) -> float:
        """lme4's scale: aic + ||u||^2 + ldL2."""
        return self.aic + self.ussq + self.ldL2

    @property
    def laplace_unit(self) -> float:
        """Unit-deviance scale: sum of deviances + ||u||^2 + ldL2."""
        return self.devsum + self.ussq + self.ldL2


def _penalized_newton(m: Model, ZL: np.ndarray, beta0: np.ndarray, u0: np.ndarray, with_beta: bool):
    """Minimize pdev over u (and beta when with_beta). Returns (beta, u, steps)."""
    q = ZL.shape[1]
    p = m.X.shape[1]
    D = np.hstack([m.X, ZL]) if with_beta else ZL         # columns of the free parameters
    pen = np.r_[np.zeros(p), np.ones(q)] if with_beta else np.ones(q)
    base = m.offset if with_beta else m.offset + m.X @ beta0
    x = np.r_[beta0, u0] if with_beta else u0.copy()

    def pdev(xx):
        eta = base + D @ xx
        if not m.fam.valid(eta):
            return np.inf, eta
        mu = m.fam.linkinv(eta)
        return float(np.sum(m.fam.dev_resids(m.y, mu, m.pw)) + np.sum(pen * xx * xx)), eta

    def newton_step(xx, eta):
        mu = m.fam.linkinv(eta)
        me = m.fam.mu_eta(eta)
        var = m.fam.variance(mu)
        # d pdev / d eta_i = -2 pw_i (y_i - mu_i) mu_eta_i / V(mu_i); expected second derivative
        # 2 W_i, W_i = pw_i mu_eta_i^2 / V(mu_i).
        grad = D.T @ (-2 * m.pw * (m.y - mu) * me / var) + 2 * pen * xx
        W = m.pw * me * me / var
        H = 2 * (D.T @ (W[:, None] * D)) + 2 * np.diag(pen)
        return np.linalg.solve(H, -grad), float(np.max(np.abs(grad)))

    f, eta = pdev(x)
    if not np.isfinite(f):
        raise FloatingPointError("invalid starting point for the twin's Newton iterations")
    step, gmax = newton_step(x, eta)
    tmax = 1.0
    for steps in range(1, MAX_NEWTON + 1):
        if np.max(np.abs(step)) <= STEP_RTOL * max(1.0, float(np.max(np.abs(x)))):
            break                                    # the next step is below x's rounding
        # Damping: halve the step until pdev decreases, or, next to the mode where pdev's own
        # rounding hides any progress, until pdev stays within rounding and the gradient shrinks.
        # Scoring with the expected information can overshoot for non-canonical links and
        # oscillate about the mode: once a step was halved, later steps start shorter.
        t = tmax
        for _ in range(60):
            xn = x + t * step
            fn, etan = pdev(xn)
            if fn < f:
                stepn, gn = newton_step(xn, etan)
                break
            if fn <= f + 1e3 * np.finfo(float).eps * max(abs(f), 1.0):
                stepn, gn = newton_step(xn, etan)
                if gn < gmax:
                    break
            t *= 0.5
        else:
            raise FloatingPointError("the twin's Newton iterations stalled before converging")
        if t < tmax:
            tmax = max(t, 1.0 / 64)
        x, f, eta, step, gmax = xn, fn, etan, stepn, gn
    else:
        raise FloatingPointError("the twin's Newton iterations did not converge")
    return (x[:p], x[p:], steps) if with_beta else (beta0, x, steps)


def _mode_summary(m: Model, ZL: np.ndarray, beta, u, steps) -> Mode:
    eta = m.offset + m.X @ beta + ZL @ u
    mu = m.fam.linkinv(eta)
    me = m.fam.mu_eta(eta)
    W = m.pw * me * me / m.fam.variance(mu)
    dev = float(np.sum(m.fam.dev_resids(m.y, mu, m.pw)))
    q = ZL.shape[1]
    p = m.X.shape[1]
    M = ZL.T @ (W[:, None] * ZL) + np.eye(q)
    sign, logdet = np.linalg.slogdet(M)
    assert sign > 0
    Lam = lambda_matrix(m.terms, m.theta)
    C = Lam @ np.linalg.inv(M) @ Lam.T
    blocks = level_blocks(C, m.terms, m.X.shape[0])
    D = np.hstack([m.X, ZL])
    full = D.T @ (W[:, None] * D)
    full[p:, p:] += np.eye(q)
    vcov = np.linalg.inv(full)[:p, :p]
    return Mode(u=u, beta=np.asarray(beta, dtype=float), eta=eta, mu=mu, weights=W, devsum=dev,
                aic=m.fam.aic(m.y, m.trials, mu, m.pw, dev), ussq=float(u @ u), ldL2=float(logdet),
                newton_steps=steps, unscaled_condvar=blocks, condvar_full=C, unscaled_vcov=vcov)


def conditional_mode(X, y, pw, offset, terms, family, link, theta, beta, u_start=None,
                     trials=None) -> Mode:
    """The mode of pdev over u at (theta, beta) and the Laplace pieces there."""
    m = Model.build(X, y, pw, offset, terms, family, link, theta, trials)
    ZL = m.Z @ lambda_matrix(terms, theta)
    beta = np.asarray(beta, dtype=float)
    u0 = np.zeros(ZL.shape[1]) if u_start is None else np.asarray(u_start, dtype=float).copy()
    _, u, steps = _penalized_newton(m, ZL, beta, u0, with_beta=False)
    return _mode_summary(m, ZL, beta, u, steps)


def joint_mode(X, y, pw, offset, terms, family, link, theta, beta_start, trials=None) -> Mode:
    """The mode of pdev over (beta, u) jointly at theta (the nAGQ = 0 stage)."""
    m = Model.build(X, y, pw, offset, terms, family, link, theta, trials)
    ZL = m.Z @ lambda_matrix(terms, theta)
    beta, u, steps = _penalized_newton(m, ZL, np.asarray(beta_start, dtype=float),
                                       np.zeros(ZL.shape[1]), with_beta=True)
    return _mode_summary(m, ZL, beta, u, steps)


def laplace_objective(*args, unit: bool = False, **kw) -> float:
    """Laplace objective at (theta, beta): lme4's scale, or the unit-deviance scale."""
    md = conditional_mode(*args, **kw)
    return md.laplace_unit if unit else md.laplace


def stage1_objective(X, y, pw, offset, terms, family, link, theta, beta_start, trials=None) -> float:
    """nAGQ = 0: aic + ||u||^2 + ldL2 at the joint mode of (beta, u)."""
    return joint_mode(X, y, pw, offset, terms, family, link, theta, beta_start, trials).laplace


def _scalar_term(terms, theta):
    if len(terms) != 1:
        raise ValueError("adaptive Gauss-Hermite needs exactly one random-effects term")
    codes, nlev, Zk = terms[0]
    Zk = np.asarray(Zk, dtype=float).reshape(len(codes), -1)
    if Zk.shape[1] != 1 or np.size(theta) != 1:
        raise ValueError("adaptive Gauss-Hermite needs a scalar random-effects term")
    return np.asarray(codes), int(nlev), Zk[:, 0], float(np.asarray(theta).ravel()[0])


def _agq_pieces(X, y, pw, offset, terms, family, link, theta, beta, u_start, trials):
    md = conditional_mode(X, y, pw, offset, terms, family, link, theta, beta, u_start, trials)
    codes, nlev, z_col, lam = _scalar_term(terms, theta)
    fam = GlmmFamily(family, link)
    y = np.asarray(y, dtype=float)
    pwv = np.ones_like(y) if pw is None else np.asarray(pw, dtype=float)
    # Diagonal of the factor of Lambda'Z'WZ Lambda + I (diagonal for one scalar term).
    Ljj = np.sqrt(1.0 + lam * lam * np.bincount(codes, md.weights * z_col * z_col, minlength=nlev))

    def devc(z):
        """Per-level devc_j(z) for an array z of one node per level. As lme4, the node's mean
        is g^-1(eta) wherever that is a valid mean, also outside the link's usual domain
        (the sqrt link's eta < 0: mu = eta^2); a node with no valid mean raises."""
        zi = z[codes]
        eta = md.eta + z_col * lam * zi / Ljj[codes]
        if not fam.valid_mean(eta):
            raise FloatingPointError("a quadrature node gives a mean outside the family's range")
        d = fam.dev_resids(y, fam.linkinv(eta), pwv)
        return np.bincount(codes, d, minlength=nlev) + (md.u + z / Ljj) ** 2

    return md, Ljj, devc


def agq_objective(X, y, pw, offset, terms, family, link, theta, beta, nagq: int, u_start=None,
                  trials=None) -> float:
    """Adaptive Gauss-Hermite objective (one scalar term), lme4's unit-deviance scale."""
    md, Ljj, devc = _agq_pieces(X, y, pw, offset, terms, family, link, theta, beta, u_start, trials)
    nlev = Ljj.size
    zk, wk = np.polynomial.hermite_e.hermegauss(nagq)
    wk = wk / wk.sum()
    dev0 = devc(np.zeros(nlev))
    acc = np.zeros(nlev)
    for z, w in zip(zk, wk):
        acc += w * np.exp(-(devc(np.full(nlev, z)) - dev0) / 2 + z * z / 2)
    return float(np.sum(dev0) + np.sum(2 * np.log(Ljj)) - 2 * np.sum(np.log(acc)))


def agq_exact_objective(X, y, pw, offset, terms, family, link, theta, beta, trials=None) -> float:
    """What the AGQ rule approximates, by adaptive quadrature per level: the unit-deviance
    scale -2 log of prod_j integral exp(-devc_j(u)/2) du / sqrt(2 pi), written in the same
    centred and scaled variable z (u = u_j + z / L_j)."""
    md, Ljj, devc = _agq_pieces(X, y, pw, offset, terms, family, link, theta, beta, None, trials)
    nlev = Ljj.size
    dev0 = devc(np.zeros(nlev))
    total = float(np.sum(dev0) + np.sum(2 * np.log(Ljj)))
    for j in range(nlev):
        def f(z, j=j):
            zz = np.zeros(nlev)
            zz[j] = z
            return math.exp(-(devc(zz)[j] - dev0[j]) / 2) / math.sqrt(2 * math.pi)
        # In this variable the integrand is a unit-scale bump centred at z = 0 (the mode, scaled
        # by the conditional sd): +-ZMAX holds all of its mass that double precision can see.
        val, _ = integrate.quad(f, -ZMAX, ZMAX, points=[0.0], epsabs=0, epsrel=1e-12, limit=400)
        total -= 2 * math.log(val)
    return total
