"""``glmer`` on a Dask DataFrame: the in-memory fit's recipe, PIRLS run by passes.

The in-memory glmer optimizes in two stages (lme4's): theta with beta inside PIRLS, then
(theta, beta) on the Laplace objective ``aic + |u|^2 + log|L|^2`` at the mode u. Each
evaluation runs PIRLS to convergence. Here the optimizer code is the in-memory fit's own
(``glmm._optimize``); only the problem it calls is different: :class:`DaskGlmmProblem` has
the core GlmmProblem's methods (``stage1``, ``stage2``, ``state_at``) and runs PIRLS as the
core does, step for step, except that every step's row work is a pass over the partitions:

* a pass (``_working.working_partition``) evaluates the rows at the broadcast (beta, b):
  deviance, Pearson sum and the cross products ``[Z Xs z]' W [Z Xs z]`` of the working
  response and weights, summed up a tree on the workers;
* the client builds the core's crossproduct problem (``LmmProblem.from_crossproduct``, the
  one the Dask LMM uses) from them and solves the penalized least squares at theta for the
  next (beta,) u -- exactly the step the in-memory core takes, with the same convergence
  test, step halving and log-determinant (of the factor at the last step's weights);
* so one PIRLS step = one pass; an evaluation from a warm start (the last mode, as in
  memory) takes two to four.

The in-memory fit of binomial-logit and Poisson-log models follows the exact gradient of the
objective (Newton); for one random-effects term so does this one: the gradient's pieces are
per-level blocks of the cross products and a few row sums that each pass forms beside them
(_gradient.py), so it costs no pass, and the mode's sensitivity predicts the next PIRLS
start as in the core. The numbers then follow the in-memory fit's path step for step. With
several terms the gradient needs selected inverses of the factor that the crossproduct core
does not form, so those models take the derivative-free path (BOBYQA, the in-memory
``control={'optimizer': 'bobyqa'}``): the same objective, the estimates to the optimizers'
tolerance of the default in-memory fit's (tests/test_dask_glmm.py states the tolerances).
Each evaluation is a few passes (typically 3-5 from a warm start); ``fit.passes`` counts them.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import scipy.sparse as sp

from .. import _core
from .._design import _check_aliased, warn_dropped_columns
from .._errors import ConvergenceError, DataError, NumericalError, numerical_failures_explained
from .._standardize import FixedScaling
from ..families import resolve_family
from ..optimize import lambda_blocks, newton, report_convergence
from ..options import Control, check_bool
from ._gradient import LevelBlocks, laplace_gradient, leverage_blocks
from ._crossprod import Layout, _r_factor, combine_scaling, cooccurrence, scaling_partition
from ._lmm import _check_scales
from ._passes import persist_partitions, reduce_leaves, reduce_partitions
from ._result import DaskDesign, DaskGlmerResult
from ._spec import fit_spec, scan_spec
from ._working import (WorkingPoint, combine_glmm_scans, combine_working, glmm_rows,
                       glmm_scan_partition, working_partition, working_rows_partition)

__all__ = ["glmer_dask", "DaskGlmmProblem"]

# The core's PIRLS constants (cpp/include/mixedfit/glmm.hpp, PirlsControl).
STEP_TOL = 1e-11
MAX_HALVINGS = 20
# Points whose state is kept (see DaskGlmmProblem._remembered).
RECENT_POINTS = 8
_CANONICAL = {("binomial", "logit"), ("poisson", "log")}


@dataclasses.dataclass
class _Iterate:
    """A PIRLS iterate: (u, beta_s) and the pass's sums at it."""

    u: np.ndarray
    beta: np.ndarray
    work: dict

    @property
    def pdev(self) -> float:
        return self.work["dev"] + float(self.u @ self.u) if self.work["valid"] else math.nan


class DaskGlmmProblem:
    """The core GlmmProblem's interface (stage1, stage2, state_at) for rows on a cluster:
    PIRLS as the core runs it, one pass per step. ``passes`` counts the passes."""

    def __init__(self, ddf, spec, T: np.ndarray, layout: Layout, loglik_constant: float,
                 progress):
        self.ddf, self.spec, self.T, self.layout = ddf, spec, T, layout
        self.fam = spec.scan.family
        self.p = T.shape[0]
        self.q = layout.q
        self.ps = list(layout.p)
        self.aic_constant = loglik_constant
        self.progress = progress
        self.tol, self.maxit = 1e-10, 300
        self.passes = 0
        self.cooc = None
        self._warm = {1: None, 2: None}   # the last mode per stage (u, beta_s)
        self._recent = {}                 # (stage, point) -> state, the last few points
        self._state = None
        # the design rows stay on the workers between passes (None without a Client)
        self.rows = persist_partitions(ddf, glmm_rows, spec, T)
        self._sens = None                 # (stage, phi, mode, d mode / d phi) at the last gradient
        self._stage1_newton = None        # (theta, curvature model) of stage 1's converged Newton

    @property
    def ntheta(self) -> int:
        return sum(p * (p + 1) // 2 for p in self.ps)

    @property
    def has_gradient(self) -> bool:
        """The exact gradient (_gradient.py): one term, binomial-logit or Poisson-log (the
        core's has_gradient; with several terms it needs selected inverses: not here)."""
        return len(self.ps) == 1 and (self.fam.name, self.fam.link) in _CANONICAL

    def release_rows(self) -> None:
        """Let the workers drop the kept rows (later passes read the partitions again)."""
        self.rows = None
        self.progress = None

    def __getstate__(self) -> dict:
        """Pickled without the collection and the kept states: a loaded fit's objective()
        needs the data again (passes), everything else does not."""
        state = self.__dict__.copy()
        state.update(ddf=None, rows=None, progress=None, _recent={}, _state=None,
                     _sens=None, _warm={1: None, 2: None}, _stage1_newton=None)
        return state

    def set_pirls_control(self, tol: float, maxit: int) -> None:
        self.tol, self.maxit = float(tol), int(maxit)

    # ---- passes and solves ----------------------------------------------------------
    def _b_terms(self, theta, u) -> tuple:
        out, starts = [], self.layout.starts
        for k, lam in enumerate(lambda_blocks(np.asarray(theta, float), self.ps)):
            U = u[starts[k]:starts[k + 1]].reshape(self.layout.nlevels[k], self.ps[k])
            out.append(U @ lam.T)
        return tuple(out)

    def _pass(self, theta, u, beta, with_beta: bool, glm_start: bool = False,
              leverage=None) -> dict:
        from dask import delayed

        point = WorkingPoint(np.asarray(beta, float), self._b_terms(theta, u), with_beta,
                             glm_start, with_pairs=self.cooc is None, leverage=leverage)
        point = delayed(point, pure=True)   # one key: sent to each worker once, not per task
        if self.ddf is None:
            raise NotImplementedError("this fit was loaded without its Dask collection: "
                                      "evaluating the objective needs passes over the rows")
        if self.rows is not None:
            work = reduce_leaves(self.rows, working_rows_partition, combine_working, self.fam,
                                 self.layout, point, progress=False)
        else:
            work = reduce_partitions(self.ddf, working_partition, combine_working, self.spec,
                                     self.T, self.layout, point, progress=False)
        self.passes += 1
        if self.progress is not None:
            self.progress.update(1)
        if self.cooc is None:
            self.cooc = cooccurrence(work["pairs"], self.layout)
        return work

    def _lmm(self, A: sp.csr_matrix, with_x: bool):
        """The core's crossproduct problem of [Z Xs z] (with_x) or [Z z] at these weights."""
        if not with_x:
            keep = np.r_[np.arange(self.q), self.q + self.p]
            A = A[keep][:, keep]
        A = A.tocoo()
        layout = list(zip(self.layout.nlevels, self.layout.p))
        return _core.LmmProblem.from_crossproduct(
            self.spec.n, self.p if with_x else 0, layout, self.cooc, A.row.astype(np.int64),
            A.col.astype(np.int64), A.data.astype(float), 0.0)

    # ---- PIRLS ----------------------------------------------------------------------
    def _pirls(self, theta, u, beta, with_beta: bool, glm_start: bool = False):
        """The core's Glmm::pirls: (the mode, the last factor's solution, the cross products
        that factor was formed from: those at the previous iterate's weights)."""
        cur = _Iterate(u, beta, self._pass(theta, u, beta, with_beta, glm_start))
        if not cur.work["valid"]:
            raise NumericalError("PIRLS: the starting linear predictor gives invalid means")
        oldpdev = math.inf if glm_start else cur.pdev
        alpha = 1.0
        for _ in range(self.maxit):
            sol = self._lmm(cur.work["A"], with_beta).solution(theta)
            # a candidate may be the mode: it brings the gradient's row sums at this factor
            lev = self._leverage(cur.work["A"], theta) if self.has_gradient else None
            unew = np.asarray(sol["u"])
            bnew = np.asarray(sol["beta"]) if with_beta else cur.beta
            small_step = self._small_step(cur, unew, bnew, with_beta)
            if alpha < 1.0:   # damped after a halving (non-canonical links)
                unew = cur.u + alpha * (unew - cur.u)
                bnew = cur.beta + alpha * (bnew - cur.beta) if with_beta else bnew
            cand = _Iterate(unew, bnew, self._pass(theta, unew, bnew, with_beta, leverage=lev))
            pdev = cand.pdev
            if not math.isfinite(pdev) and not math.isfinite(oldpdev):
                raise NumericalError("PIRLS: the first step from the starting values gives "
                                     "invalid means")
            if (math.isfinite(pdev) and abs(oldpdev - pdev) < self.tol * max(abs(pdev), 1.0)
                    and small_step):
                return cand, sol, cur.work["A"]
            if not pdev <= oldpdev + self.tol * max(abs(oldpdev), 1.0):
                cand = self._halve(theta, cur, cand, oldpdev, with_beta, lev)
                if (self.fam.name, self.fam.link) not in _CANONICAL:
                    alpha = max(0.5 * alpha, 1.0 / 64.0)
                if cand is None:   # no descent left; the previous iterate is the mode
                    return cur, sol, cur.work["A"]
            cur, oldpdev = cand, cand.pdev
        raise NumericalError(f"PIRLS did not converge in {self.maxit} steps")

    def _small_step(self, cur: _Iterate, unew, bnew, with_beta: bool) -> bool:
        """The core's step test: max |change| <= STEP_TOL (1 + max |iterate|)."""
        step = np.max(np.abs(unew - cur.u), initial=0.0)
        size = np.max(np.abs(cur.u), initial=0.0)
        if with_beta and self.p:
            step = max(step, np.max(np.abs(bnew - cur.beta)))
            size = max(size, np.max(np.abs(cur.beta)))
        return step <= STEP_TOL * (1.0 + size)

    def _halve(self, theta, cur: _Iterate, cand: _Iterate, oldpdev: float, with_beta: bool,
               lev):
        """Halve the step toward ``cur`` until the penalized deviance does not rise: the
        candidate, None when ``cur`` is the mode to rounding, else NumericalError."""
        pdev = cand.pdev
        for _ in range(MAX_HALVINGS):
            if pdev <= oldpdev:
                return cand
            unew = 0.5 * (cur.u + cand.u)
            bnew = 0.5 * (cur.beta + cand.beta) if with_beta else cand.beta
            cand = _Iterate(unew, bnew, self._pass(theta, unew, bnew, with_beta, leverage=lev))
            pdev = cand.pdev
        if pdev <= oldpdev:
            return cand
        if math.isfinite(pdev) and abs(pdev - oldpdev) <= 1e-8 * abs(oldpdev):
            return None
        raise NumericalError("PIRLS diverged: the penalized deviance rises at every step "
                             "length")

    def _leverage(self, A, theta) -> np.ndarray:
        """Lambda S_c Lambda' per level of the factor at these cross products."""
        blocks = LevelBlocks.from_crossprod(A, self.layout.nlevels[0], self.ps[0], self.p)
        lam = lambda_blocks(np.asarray(theta, float), self.ps)[0]
        return leverage_blocks(blocks, lam)[1]

    def _gradient(self) -> np.ndarray:
        """The exact gradient at the last evaluated point (its mode, the factor PIRLS
        last used); keeps the mode's sensitivity for the next start (as the core does)."""
        st = self._state
        mode, theta = st["mode"], st["theta"]
        if "grad" not in mode.work:   # the mode was an older iterate: its sums, one pass
            lev = self._leverage(st["factor_A"], theta)
            mode.work = self._pass(theta, mode.u, mode.beta, st["stage"] == 1, leverage=lev)
        blocks = LevelBlocks.from_crossprod(st["factor_A"], self.layout.nlevels[0],
                                            self.ps[0], self.p)
        lam = lambda_blocks(theta, self.ps)[0]
        S, _ = leverage_blocks(blocks, lam)
        U = mode.u.reshape(self.layout.nlevels[0], self.ps[0])
        grad, sens = laplace_gradient(theta, U, blocks, S, mode.work["grad"], st["stage"] == 1)
        phi = theta if st["stage"] == 1 else np.r_[theta, mode.beta]
        self._sens = (st["stage"], phi, mode.u.copy(), mode.beta.copy(), sens)
        return grad

    def _predicted_start(self, stage: int, phi: np.ndarray):
        """The core's predict_start: the mode to first order from the last gradient point,
        for moderate moves; else None."""
        if self._sens is None or self._sens[0] != stage or self._sens[1].size != phi.size:
            return None
        _, phi0, u0, b0, sens = self._sens
        d = phi - phi0
        if not np.max(np.abs(d)) <= 0.1 * (1.0 + np.max(np.abs(phi0))):
            return None
        u = u0 + sens[:self.q] @ d
        beta = b0 + sens[self.q:] @ d if stage == 1 else b0
        return (u, beta) if np.all(np.isfinite(u)) and np.all(np.isfinite(beta)) else None

    def stage1_grad(self, theta):
        """(nAGQ = 0 objective, its gradient in theta), PIRLS from the last stage-1 mode."""
        return self.stage1(theta, None), self._gradient()

    def stage2_grad(self, theta, beta):
        """(Laplace objective, its gradient in (theta, beta))."""
        return self.stage2(theta, beta, None, 1, None, None), self._gradient()

    def _finish(self, stage: int, theta, mode: _Iterate, sol, factor_A) -> float:
        """Record the state at the mode; the Laplace objective aic + |u|^2 + log|L|^2."""
        aic = mode.work["dev"] + self.aic_constant
        ussq = float(mode.u @ mode.u)
        self._state = {"stage": stage, "theta": np.array(theta, float), "mode": mode,
                       "ldL2": float(sol["ldL2"]), "factor_A": factor_A, "aic": aic,
                       "ussq": ussq}
        self._warm[stage] = (mode.u.copy(), mode.beta.copy())
        return aic + ussq + self._state["ldL2"]

    # ---- the core GlmmProblem's methods ----------------------------------------------
    def _remembered(self, key) -> float | None:
        """The objective of a point evaluated lately (its state restored), else None: the
        optimizer revisits points (the optimum for the Hessian, stage 1's theta in stage 2)
        and the mode does not depend on where PIRLS starts (to ~1e-12), so no pass is
        repeated for them."""
        if key not in self._recent:
            return None
        self._state = self._recent[key]
        self._warm[self._state["stage"]] = (self._state["mode"].u, self._state["mode"].beta)
        return self._state["objective"]

    def _remember(self, key, obj: float) -> float:
        self._state["objective"] = obj
        self._recent[key] = self._state
        while len(self._recent) > RECENT_POINTS:
            self._recent.pop(next(iter(self._recent)))
        return obj

    def stage1(self, theta, eta_start) -> float:
        """The nAGQ = 0 objective at theta; ``eta_start`` not None: PIRLS from the family's
        starting means (the partitions form them), else from the last stage-1 mode."""
        theta = np.asarray(theta, float)
        key = (1, theta.tobytes())
        obj = self._remembered(key)
        if obj is not None:
            return obj
        warm = self._predicted_start(1, theta) or self._warm[1]
        if eta_start is not None or warm is None:
            found = self._pirls(theta, np.zeros(self.q), np.zeros(self.p), True,
                                glm_start=True)
        else:
            found = self._pirls(theta, warm[0], warm[1], True)
        return self._remember(key, self._finish(1, theta, *found))

    def stage2(self, theta, beta, u_start, nagq, ghz, ghw) -> float:
        """The Laplace objective at (theta, beta) (nagq <= 1 only); u_start None: PIRLS
        from the last stage-2 mode."""
        if nagq > 1:
            raise NotImplementedError("adaptive Gauss-Hermite (nagq > 1) is not available "
                                      "on Dask data")
        theta, beta = np.asarray(theta, float), np.asarray(beta, float)
        if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(beta))):
            raise NumericalError("non-finite theta or beta")
        key = (2, theta.tobytes(), beta.tobytes())
        obj = self._remembered(key)
        if obj is not None:
            return obj
        if u_start is not None:
            u = np.asarray(u_start, float)
        elif self._warm[2] is not None:
            predicted = self._predicted_start(2, np.r_[theta, beta])
            u = self._warm[2][0] if predicted is None else predicted[0]
        else:
            u = np.zeros(self.q)
        try:
            found = self._pirls(theta, u, beta, False)
        except NumericalError:
            if not np.any(u):
                raise
            found = self._pirls(theta, np.zeros(self.q), beta, False)  # as the core does
        return self._remember(key, self._finish(2, theta, *found))

    def newton(self, stage: int, x0, u_start=None, curvature_from_stage1: bool = False):
        """The core GlmmProblem's newton: modified Newton on stage 1 (x = theta) or stage 2
        (x = (theta, beta)) with the exact gradient, by optimize.newton (the core's rules):
        (x, f, nevals, converged). Stage 2 starts PIRLS from ``u_start`` if given; with
        ``curvature_from_stage1`` its curvature model starts from stage 1's, as the core's."""
        x0 = np.asarray(x0, dtype=float)
        nt = self.ntheta
        if stage == 1:
            fg = self.stage1_grad
        else:
            fg = lambda x: self.stage2_grad(x[:nt], x[nt:])  # noqa: E731
            if u_start is not None:
                self._warm[2] = (np.asarray(u_start, dtype=float), x0[nt:])
                self._sens = None  # no prediction from an older gradient point
        H0 = self._stage2_start_hessian(x0, nt) if stage == 2 and curvature_from_stage1 else None
        curvature: list = []
        try:
            res = newton(fg, x0, np.full(x0.size, -np.inf), start_hessian=H0,
                         curvature=curvature)
        except (NumericalError, ValueError):
            res = None
        if res is None:
            return x0, math.nan, 0, False
        if stage == 1:
            self._stage1_newton = (res[0].copy(), curvature[0])
        return res[0], res[1], res[2], True

    def _stage2_start_hessian(self, x0: np.ndarray, nt: int):
        """Stage 2's starting curvature at (theta1, beta1), as the core's: stage 1's model for
        theta, twice the inverse unscaled vcov of beta at stage 1's mode; None unless the last
        evaluation is that mode."""
        st = self._state
        if (self._stage1_newton is None or st is None or st["stage"] != 1
                or not np.array_equal(x0[:nt], self._stage1_newton[0])
                or not np.array_equal(st["theta"], self._stage1_newton[0])
                or not np.array_equal(x0[nt:], st["mode"].beta)):
            return None
        V = self.state_at(st["theta"])["unscaled_vcov"]
        try:
            H_beta = 2.0 * np.linalg.inv(V)
        except np.linalg.LinAlgError:
            return None
        H = np.zeros((x0.size, x0.size))
        H[:nt, :nt] = self._stage1_newton[1]
        H[nt:, nt:] = H_beta
        return H if np.all(np.isfinite(H)) else None

    def stage2_hessian(self, x, delta: float = 1e-4):
        """(f, gradient, Hessian) of the Laplace objective at x = (theta, beta), the Hessian
        from central differences of the exact gradient (the core's stage2_hessian)."""
        x = np.asarray(x, dtype=float)
        nt = self.ntheta
        f, g = self.stage2_grad(x[:nt], x[nt:])
        H = np.empty((x.size, x.size))
        for j in range(x.size):
            e = np.zeros(x.size)
            e[j] = delta
            gp = self.stage2_grad((x + e)[:nt], (x + e)[nt:])[1]
            gm = self.stage2_grad((x - e)[:nt], (x - e)[nt:])[1]
            H[:, j] = (gp - gm) / (2.0 * delta)
        return f, g, 0.5 * (H + H.T)

    def state(self, with_variances: bool = False) -> dict:
        """The core GlmmProblem's state: the mode at the last successful evaluation."""
        if self._state is None:
            raise NumericalError("no successful evaluation yet")
        return self.state_at(self._state["theta"])

    def state_at(self, theta) -> dict:
        """The core's state_at: the mode, its sums and the variances at the last factor's
        weights (u-only factor: conditional variances; (beta, u) factor: unscaled vcov)."""
        st = self._state
        if st is None or not np.array_equal(st["theta"], np.asarray(theta, float)):
            raise ValueError("state_at: theta differs from the last evaluated theta")
        mode, theta = st["mode"], st["theta"]
        full = self._lmm(st["factor_A"], with_x=True).solution(theta)
        uonly = self._lmm(st["factor_A"], with_x=False).solution(theta)
        b = np.concatenate([B.ravel() for B in self._b_terms(theta, mode.u)])
        return {"theta": theta, "u": mode.u, "b": b,
                "beta": mode.beta, "eta": np.zeros(0), "mu": np.zeros(0),
                "devsum": mode.work["dev"], "aic": st["aic"], "ussq": st["ussq"],
                "ldL2": st["ldL2"], "pearson": mode.work["pearson"],
                "extreme": mode.work["extreme"], "stage": st["stage"],
                "unscaled_condvar": [np.asarray(m) for m in uonly["unscaled_condvar"]],
                "unscaled_vcov": np.asarray(full["unscaled_vcov"])}


# ---- the fit -----------------------------------------------------------------------------
def _checked_family(family, link):
    fam = resolve_family(family, link)
    if fam.name not in ("binomial", "poisson"):
        raise NotImplementedError(
            f"glmer on Dask data fits the binomial and poisson families; family {fam.name!r} "
            "has a dispersion (or a shape) whose log-likelihood constant depends on the fit")
    return fam


def _scan(formula, data, fam, weights, offset, progress):
    """The scan pass: (FitSpec, the used columns' frame, log-likelihood constant)."""
    meta = data._meta
    parsed, scan = scan_spec(formula, meta, weights, offset, family=fam)
    data = data[list(scan.used)]  # every pass reads the used columns only
    scanned = reduce_partitions(data, glmm_scan_partition, combine_glmm_scans, scan,
                                progress=progress)
    spec = fit_spec(formula, parsed, scan, meta, scanned, lmm=False)
    if spec.n_dropped_na:
        warnings.warn(f"dropped {spec.n_dropped_na} row(s) with missing values", stacklevel=4)
    low, high = scanned["yrange"] if scanned["yrange"] is not None else (0.0, 0.0)
    if low == high:
        raise DataError(f"Response is constant: every value of {parsed.response!r} is "
                        f"{low:g}; a GLMM needs variation in the response")
    return spec, data, scanned["loglik_constant"]


def _fixed_scaling(data, spec, progress) -> FixedScaling:
    """The aliased-column mask (set on spec) and X = Xs T with Xs'Xs = n I, from the R
    factor of X over all rows (TSQR in the scaling pass), as glmer's fixed_scaling."""
    scaled = reduce_partitions(data, scaling_partition, combine_scaling, spec,
                               progress=progress)
    keep = _check_aliased(scaled["R"], spec.fixed_names_all)
    dropped = [nm for nm, k in zip(spec.fixed_names_all, keep) if not k]
    if dropped:
        warn_dropped_columns(dropped, stacklevel=5)
    spec.keep_fixed = keep
    _check_scales(scaled["moments"], keep, stacklevel=4)
    R = _r_factor(scaled["R"][:, keep]) if keep.any() else np.zeros((0, 0))
    return FixedScaling(None, R / math.sqrt(spec.n))


def _passes_bar(progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc="glmer passes over the rows", unit="pass")


def glmer_dask(formula: str, data, *, family="binomial", link=None, nagq: int = 1,
               weights=None, offset=None, control=None, fast: bool = False,
               vcov_method: str = "hessian", data_name: str | None = None,
               progress: bool = True):
    """:func:`mixedfit.glmer` for a Dask DataFrame (see the module docstring)."""
    from .. import glmm

    control = Control.coerce(control)
    fam = _checked_family(family, link)
    nagq = 0 if check_bool(fast, "fast") else glmm._checked_nagq(nagq)
    if nagq > 1:
        raise NotImplementedError(
            f"nagq = {nagq} (adaptive Gauss-Hermite) is not available on Dask data; use "
            "nagq=1 (Laplace) or collect the rows with ddf.compute()")
    if vcov_method not in ("hessian", "factor"):
        raise ValueError(f"vcov_method must be 'hessian' or 'factor', got {vcov_method!r}")
    progress = check_bool(progress, "progress")
    call = dict(formula=formula, data=data, family=fam.name, link=fam.link, nagq=nagq,
                weights=weights, offset=offset, control=control, vcov_method=vcov_method,
                data_name=data_name, progress=progress)
    spec, rows, loglik_constant = _scan(formula, data, fam, weights, offset, progress)
    fixed = _fixed_scaling(rows, spec, progress)
    layout = Layout(tuple(t.nlevels for t in spec.terms), tuple(t.p for t in spec.terms))
    design = DaskDesign(spec, data, weights)
    bar = _passes_bar(progress)
    prob = DaskGlmmProblem(rows, spec, fixed.T, layout, loglik_constant, bar)
    prob.set_pirls_control(control.pirls_tol, control.pirls_maxiter)
    if not prob.has_gradient and control.optimizer == "gradient":
        raise NotImplementedError("the exact-gradient optimizer of a Dask GLMM is for one "
                                  "random-effects term (binomial-logit or Poisson-log)")
    try:
        opt, opt1, st, obj, hess = _optimize(glmm, prob, fam, design, nagq, control,
                                             vcov_method, fixed)
    finally:
        prob.release_rows()
        if bar is not None:
            bar.close()
    nt = len(opt1.x)
    beta = opt.x[nt:] if nagq >= 1 else np.asarray(st["beta"])
    report_convergence(opt, [t.p for t in design.terms], control, stacklevel=3)
    fit = DaskGlmerResult(design, prob, fam, nagq, opt.x[:nt], np.asarray(beta), obj, st,
                          hess, opt, opt1, control,
                          data_name if data_name is not None else "data", call,
                          np.zeros(0), np.zeros(0), (np.asarray(st["u"]), None, None), fixed,
                          extreme=st["extreme"])
    fit.passes = prob.passes + 2   # with the scan and scaling passes
    return fit


def _optimize(glmm, prob, fam, design, nagq, control, vcov_method, fixed):
    """glmm._optimize on the Dask problem. It takes the rows' y and prior weights for the
    family's starting eta, which the Dask problem forms on the partitions instead (any
    non-None eta_start means "from the starting means"), and, after a failure, to look for
    separated columns, which needs the rows: that failure is reported without the column."""
    stand_in = np.full(1, 0.5 if fam.name == "binomial" else 1.0)
    ghz, ghw = np.zeros(1), np.ones(1)
    try:
        with numerical_failures_explained(glmm._NUMERICAL_ADVICE):
            opt, opt1, st, obj, hess, _ = glmm._optimize(
                prob, fam, design, stand_in, np.ones(1), nagq, ghz, ghw, control,
                vcov_method, fixed)
    except NotImplementedError as exc:   # the separation check asked for the rows
        raise ConvergenceError("PIRLS failed at every starting value; check the response "
                               "for complete separation, or rescale the predictors") from exc
    return opt, opt1, st, obj, hess
