"""Parametric bootstrap (lme4's ``bootMer``): simulate from the fit, refit, collect.

The responses are simulated here, in blocks, from one random stream seeded by ``seed``, so the
replicates are the same whatever ``n_jobs`` is. For an LMM with the default statistics the
core refits a block on ``n_jobs`` threads (one problem and symbolic analysis per thread, only y
changes; quasi-Newton from the original estimates). Otherwise worker processes (fork), each
holding one refitter, fit their share of a block, each search starting at the original
estimates.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm

from .. import _core
from .._errors import MixedfitError
from .params import (has_residual_scale, sdcor_names, sdcor_values, term_sizes,
                     theta_to_sdcor, theta_to_sdcor_rows)
from .profile import check_level, level_columns
from .refit import refitter_for
from .simulate_fit import _check_nsim, simulate_responses, simulation_frame

__all__ = ["bootstrap", "BootstrapResult"]

PROGRESS_AFTER_SECONDS = 2.0    # show progress when the run is expected to take longer
CHUNKS_PER_JOB = 4              # work units per process and block (progress granularity)
BLOCK = 1000                    # replicates simulated at a time (bounds memory)


@dataclass
class BootstrapResult:
    """``replicates``: one row per replicate (NaN where the refit failed); ``original``: the
    statistics of the fit itself; ``n_failed`` / ``failures``: refits that failed (count,
    first messages); ``n_singular``: replicates with a variance parameter on its boundary."""
    replicates: pd.DataFrame
    original: pd.Series
    nsim: int
    n_failed: int
    n_singular: int
    failures: list = field(default_factory=list)
    seconds: float = math.nan

    def confint(self, type: str = "perc", level: float = 0.95) -> pd.DataFrame:
        """Bootstrap intervals per statistic: "perc" (quantiles of the replicates, at the
        (R + 1) alpha order statistic as the boot package), "basic" (2 t0 - those quantiles)
        or "norm" (t0 - bias -/+ z sd). Failed replicates are left out, with a warning."""
        level = check_level(level)
        if type not in ("perc", "basic", "norm"):
            raise ValueError(f"type must be 'perc', 'basic' or 'norm', got {type!r}")
        if self.n_failed:
            warnings.warn(f"{self.n_failed} of {self.nsim} bootstrap replicates failed and are "
                          "left out of the intervals", stacklevel=2)
        a = (1 - level) / 2
        t = self.replicates
        t0 = self.original
        if type == "norm":
            z = norm.ppf(1 - a)
            centre = 2 * t0 - t.mean()
            sd = t.std(ddof=1)
            lo, hi = centre - z * sd, centre + z * sd
        else:
            q = t.quantile([a, 1 - a], interpolation="linear") if len(t) < 2 else \
                pd.DataFrame(np.nanquantile(t.to_numpy(), [a, 1 - a], axis=0, method="weibull"),
                             columns=t.columns)
            lo, hi = q.iloc[0], q.iloc[1]
            if type == "basic":
                lo, hi = 2 * t0 - hi, 2 * t0 - lo
        return pd.DataFrame({level_columns(level)[0]: lo, level_columns(level)[1]: hi})

    def __repr__(self) -> str:
        return (f"<BootstrapResult: {self.nsim} replicates, {self.n_failed} failed, "
                f"{self.n_singular} singular; statistics {list(self.replicates.columns)}>")


# ---- statistics of one fit ---------------------------------------------------------------------
def default_names(fit) -> list[str]:
    return sdcor_names(fit) + list(fit.design.fixed_names)


def default_statistics(fit, theta, beta, sigma) -> np.ndarray:
    scale = sigma if has_residual_scale(fit) else 1.0
    vals = theta_to_sdcor(np.asarray(theta), scale, term_sizes(fit))
    if has_residual_scale(fit):
        vals = np.r_[vals, sigma]
    return np.r_[vals, beta]


def func_statistics(func, fit, names=None) -> tuple[list[str], np.ndarray]:
    """Call the user's ``func(fit) -> dict`` and check it returns numbers (the same keys as
    the original when ``names`` is given)."""
    try:
        out = func(fit)
    except Exception as exc:  # noqa: BLE001 - the user's function: say which argument failed
        raise ValueError(f"func raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(out, dict) or not out:
        raise ValueError(f"func must return a non-empty dict of numbers, got {type(out).__name__}")
    try:
        vals = np.array([float(v) for v in out.values()], dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"func must return a dict of numbers, got {out!r}") from None
    keys = [str(k) for k in out]
    if names is not None and keys != names:
        raise ValueError(f"func returned keys {keys}, the original fit gave {names}")
    return keys, vals


def _is_singular(fit, theta) -> bool:
    lower = fit._theta_lower
    return bool(np.any(np.asarray(theta)[lower == 0] < fit.control.singular_tol))


# ---- fitting the replicates -------------------------------------------------------------------
Outcome = tuple  # (statistics, singular, failure message or None)


class _Worker:
    """Fits simulated responses one by one with a refitter (general path: any family, any
    ``func``), or hands a batch of LMM responses to the core's refit loop (fast path)."""

    def __init__(self, fit, func, names):
        self.fit, self.func, self.names = fit, func, names
        self.refitter = refitter_for(fit, vcov_method="factor") if getattr(fit, "is_glmm", False) \
            else refitter_for(fit)

    def failed(self, message: str) -> Outcome:
        return np.full(len(self.names), np.nan), False, message

    def one(self, y: np.ndarray) -> Outcome:
        y = np.ascontiguousarray(y)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if self.func is None:
                    theta, beta, sigma, ok = self.refitter.estimates(y)
                    if not ok:
                        return self.failed("optimizer did not converge")
                    return default_statistics(self.fit, theta, beta, sigma), \
                        _is_singular(self.fit, theta), None
                refit = self.refitter.refit(y)
        except (MixedfitError, ArithmeticError, np.linalg.LinAlgError) as exc:
            return self.failed(f"{type(exc).__name__}: {exc}")
        _, vals = func_statistics(self.func, refit, self.names)
        return vals, refit.is_singular(), None

    def block(self, Y: np.ndarray, threads: int) -> list:
        """Outcomes for the columns of Y (n, b)."""
        fast = _lmm_fast_path(self) if self.func is None else None
        if fast is None:
            return [self.one(Y[:, j]) for j in range(Y.shape[1])]
        return fast.block(Y, threads)


class _LmmBatch:
    """The core's refit loop for LMM replicates (quasi-Newton from the original estimates on
    every thread); replicates it hands back (a variance reaching 0) go to the general path."""

    def __init__(self, worker: _Worker, hessian: np.ndarray):
        fit = worker.fit
        self.worker, self.fit, self.hessian = worker, fit, hessian
        self.terms = [(t.codes, t.nlevels, t.Z) for t in fit.design.terms]

    def block(self, Y: np.ndarray, threads: int) -> list:
        fit, d = self.fit, self.fit.design
        Yc = Y if d.offset is None else Y - d.offset[:, None]
        Yc = np.asfortranarray(Yc)
        res = _core.refit_lmm_batch(d.X, self.terms, Yc, d.weights, fit.theta, fit._theta_lower,
                                    self.hessian, fit.reml, threads)
        dof = d.n - d.p if fit.reml else d.n
        ok = res["status"] == 0
        thetas = res["theta"][:, ok].T
        sigmas = np.sqrt(res["pwrss"][ok] / dof)
        stats = np.hstack([theta_to_sdcor_rows(thetas, sigmas, term_sizes(fit)), sigmas[:, None],
                           res["beta"][:, ok].T])
        singular = np.any(thetas[:, fit._theta_lower == 0] < fit.control.singular_tol, axis=1)
        fast = iter(zip(stats, singular))
        return [(*next(fast), None) if good else self.worker.one(Y[:, j])
                for j, good in enumerate(ok)]


def _lmm_fast_path(worker: _Worker):
    """The batch refitter for an LMM whose estimates are inside the parameter space and whose
    criterion has positive curvature there; None otherwise."""
    fit = worker.fit
    if getattr(fit, "is_glmm", False) or fit.is_singular():
        return None
    cached = getattr(worker, "_batch", False)
    if cached is not False:
        return cached
    from ..glmm import _derivs

    _, hess = _derivs(fit.objective, fit.theta)
    hess = 0.5 * (hess + hess.T)
    ok = np.all(np.isfinite(hess)) and np.all(np.linalg.eigvalsh(hess) > 0)
    worker._batch = _LmmBatch(worker, np.asfortranarray(hess)) if ok else None
    return worker._batch


_FORKED: dict = {}      # what forked workers inherit (the fit and the user's func)


def _run_block(Y):
    worker = _FORKED.get("worker")
    if worker is None:
        worker = _FORKED["worker"] = _Worker(*_FORKED["spec"])
    return worker.block(Y, 1)


class _Progress:
    """tqdm when installed, else one rewritten stderr line; nothing when disabled."""

    def __init__(self, total: int, enabled: bool):
        self.bar, self.done, self.total, self.enabled = None, 0, total, enabled
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc="bootstrap", unit="rep")
            except ImportError:
                self.bar = None

    def update(self, k: int) -> None:
        self.done += k
        if self.bar is not None:
            self.bar.update(k)
        elif self.enabled:
            print(f"\rbootstrap: {self.done}/{self.total}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            print(file=sys.stderr)


def _check_jobs(n_jobs) -> int:
    if n_jobs is None:
        return max(1, min(os.cpu_count() or 1, 8))
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a positive integer or -1 (all cores), got {n_jobs!r}")
    return max(1, os.cpu_count() or 1) if n_jobs < 0 else int(n_jobs)


def _response_blocks(fit, frame, nsim: int, seed):
    """Simulated responses (n, b) in blocks of BLOCK replicates, all from one stream: the same
    responses whatever the number of workers."""
    rng = np.random.default_rng(seed)
    for start in range(0, nsim, BLOCK):
        b = min(BLOCK, nsim - start)
        yield simulate_responses(fit, frame, b, rng).T


def _run(worker: _Worker, blocks, nsim: int, n_jobs: int, progress: bool) -> list:
    """All replicates, block by block: an LMM's fast path on ``n_jobs`` threads of the core;
    otherwise the first block here (timed) and the rest across ``n_jobs`` processes (fork)."""
    results: list = []
    bar = None
    start = time.perf_counter()
    can_fork = "fork" in multiprocessing.get_all_start_methods()
    use_pool = worker.func is not None or _lmm_fast_path(worker) is None
    pool = None
    try:
        for Y in blocks:
            if pool is None and use_pool and can_fork and n_jobs > 1 and results:
                _FORKED.clear()
                _FORKED["spec"] = (worker.fit, worker.func, worker.names)
                pool = ProcessPoolExecutor(max_workers=n_jobs,
                                           mp_context=multiprocessing.get_context("fork"))
            if pool is not None:
                parts = np.array_split(np.arange(Y.shape[1]), n_jobs * CHUNKS_PER_JOB)
                futures = [pool.submit(_run_block, Y[:, idx]) for idx in parts if idx.size]
                for fut in futures:
                    part = fut.result()
                    results += part
                    bar.update(len(part))
                continue
            if not results:
                first = worker.block(Y[:, :1], n_jobs)
                results += first
                per_rep = time.perf_counter() - start
                bar = _Progress(nsim, progress and per_rep * nsim / n_jobs > PROGRESS_AFTER_SECONDS)
                bar.update(1)
                Y = Y[:, 1:]
            if Y.shape[1]:
                part = worker.block(Y, n_jobs)
                results += part
                bar.update(len(part))
        return results
    finally:
        if pool is not None:
            pool.shutdown()
        _FORKED.clear()
        if bar is not None:
            bar.close()


def bootstrap(fit, nsim: int = 1000, func=None, seed=None, re_form=None, n_jobs=None,
              progress: bool = True) -> BootstrapResult:
    """Parametric bootstrap of ``fit`` (lme4's ``bootMer(type = "parametric")``).

    nsim : number of replicates (>= 1).
    func : ``func(fit) -> dict`` of numbers for each refitted model (the fit passed is valid
        only during the call); default: lme4's ``.sig01, ..., .sigma`` on the sd/cor scale and
        the fixed effects.
    seed : anything ``numpy.random.default_rng`` takes; the result does not depend on n_jobs.
    re_form : as in :meth:`MixedResult.simulate`: None (default, lme4's ``use.u = FALSE``)
        draws new random effects; ``"all"`` (``use.u = TRUE``) keeps the estimated ones.
    n_jobs : threads (LMM fast path) or worker processes (default: the number of cores, at
        most 8; -1: all cores).
    progress : show progress on runs expected to take longer than a couple of seconds.
    """
    nsim = _check_nsim(nsim)
    n_jobs = _check_jobs(n_jobs)
    if func is not None and not callable(func):
        raise ValueError(f"func must be callable (fit -> dict of numbers), got {func!r}")
    if func is None:
        names = default_names(fit)
        original = np.r_[sdcor_values(fit), fit.beta]
    else:
        names, original = func_statistics(func, fit)
    frame = simulation_frame(fit, re_form)
    start = time.perf_counter()
    results = _run(_Worker(fit, func, names), _response_blocks(fit, frame, nsim, seed), nsim,
                   n_jobs, progress)
    values = np.vstack([r[0] for r in results])
    failures = [r[2] for r in results if r[2] is not None]
    if failures:
        warnings.warn(f"{len(failures)} of {nsim} bootstrap refits failed (rows of NaN); "
                      f"first: {failures[0]}", stacklevel=2)
    return BootstrapResult(
        replicates=pd.DataFrame(values, columns=names),
        original=pd.Series(original, index=names),
        nsim=nsim, n_failed=len(failures), n_singular=sum(bool(r[1]) for r in results),
        failures=failures[:10], seconds=time.perf_counter() - start)
