"""Data larger than memory: a random-slopes LMM fitted where its Parquet files lie.

    python bench/dask_scale.py                  # 5e7 rows in 100 files (about 2 GB on disk)
    python bench/dask_scale.py --rows 5e6       # a quicker run
    python bench/dask_scale.py --rows 5e6 --family binomial   # glmer: yb ~ x + (x | g)

Generates ``y ~ x + (x | g)`` data (5,000 groups) into ``bench/dask_data/<rows>/`` (git-ignored;
reused when present), starts a LocalCluster of two worker processes with a 1.5 GB memory limit
each, and reports the fit's wall time, rows per second and the client process's peak resident
memory (its growth during the fit, sampled every 10 ms, beside the peak itself). Then, when the
rows fit in memory (``--in-memory-limit`` rows, default 2e7), the in-memory fit of the same
rows, its time and that the two fits agree. ``--family binomial`` (or ``poisson``) fits the
GLMM ``yb ~ x + (x | g)`` (``yc ~ ...``) instead and reports the number of passes over the
rows as well (a GLMM needs one per PIRLS step).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
FORMULA = "y ~ x + (x | g)"
GLMM_FORMULAS = {"binomial": "yb ~ x + (x | g)", "poisson": "yc ~ x + (x | g)"}
NGROUPS = 5000


def generate(rows: int, files: int, folder: Path) -> None:
    if folder.exists() and len(list(folder.glob("*.parquet"))) == files:
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12)
    b0 = rng.normal(size=NGROUPS)
    b1 = 0.4 * rng.normal(size=NGROUPS)
    per = rows // files
    for k in range(files):
        g = rng.integers(0, NGROUPS, per).astype(np.int32)
        x = rng.normal(size=per)
        y = 1.0 + 0.5 * x + b0[g] + b1[g] * x + rng.normal(size=per)
        frame = pd.DataFrame({"y": y, "x": x, "g": g})
        if folder.name.endswith("-glmm"):   # GLMM responses on the same linear predictor scale
            eta = -0.5 + 0.5 * x + 0.5 * b0[g] + 0.5 * b1[g] * x
            frame["yb"] = (rng.uniform(size=per) < 1 / (1 + np.exp(-eta))).astype(np.int8)
            frame["yc"] = rng.poisson(np.exp(eta)).astype(np.int32)
        frame.to_parquet(folder / f"part-{k:03d}.parquet")


class PeakRSS:
    """Peak resident set of this process, sampled in a thread (Linux /proc)."""

    def __init__(self):
        self.peak = self.start = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _time_passes() -> list:
    """Wall time of each pass over the partitions (recorded around mixedfit's pass runner)."""
    import mixedfit.dask._passes as passes

    times, real = [], passes.compute

    def timed(obj, progress):
        t = time.perf_counter()
        try:
            return real(obj, progress)
        finally:
            times.append(time.perf_counter() - t)

    passes.compute = timed
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=float, default=5e7)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--memory-limit", default="1.5GB")
    ap.add_argument("--in-memory-limit", type=float, default=2e7)
    ap.add_argument("--family", choices=["gaussian", *GLMM_FORMULAS], default="gaussian",
                    help="gaussian: lmer (default); binomial or poisson: glmer")
    args = ap.parse_args()
    rows = int(args.rows)
    glmm = args.family != "gaussian"
    folder = HERE / "dask_data" / (f"{rows}-glmm" if glmm else f"{rows}")
    t = time.perf_counter()
    generate(rows, args.files, folder)
    print(f"data: {rows:,} rows in {args.files} Parquet files ({time.perf_counter() - t:.1f} s)")

    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    import mixedfit

    if glmm:
        return bench_glmm(args, rows, folder)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      memory_limit=args.memory_limit, dashboard_address=None) as cluster, \
            Client(cluster):
        ddf = dd.read_parquet(str(folder))
        pass_times = _time_passes()
        with PeakRSS() as mem:
            t = time.perf_counter()
            fit = mixedfit.lmer(FORMULA, ddf, progress=False)
            wall = time.perf_counter() - t
        print(f"dask fit: {wall:.1f} s, {rows / wall:,.0f} rows/s; client peak RSS "
              f"{mem.peak / 2**20:.0f} MiB ({(mem.peak - mem.start) / 2**20:.0f} MiB above "
              f"the {mem.start / 2**20:.0f} MiB before the fit)")
        print(f"  passes (scan, scaling, cross products): "
              f"{', '.join(f'{t:.1f} s' for t in pass_times)}; the rest (optimization on A, "
              f"result) {wall - sum(pass_times):.1f} s")
        print(f"  REML criterion {fit.reml_criterion:.10f}, beta {fit.beta}, theta {fit.theta}")
    if rows > args.in_memory_limit:
        print(f"in-memory fit: skipped ({rows:,} rows > --in-memory-limit "
              f"{int(args.in_memory_limit):,})")
        return
    df = pd.read_parquet(folder)
    t = time.perf_counter()
    ref = mixedfit.lmer(FORMULA, df)
    wall_mem = time.perf_counter() - t
    rel = abs(fit.reml_criterion - ref.reml_criterion) / abs(ref.reml_criterion)
    print(f"in-memory fit: {wall_mem:.1f} s; REML criterion relative difference {rel:.1e}, "
          f"max |beta difference| {np.max(np.abs(fit.beta - ref.beta)):.1e}, "
          f"max |theta difference| {np.max(np.abs(fit.theta - ref.theta)):.1e}")



def bench_glmm(args, rows: int, folder: Path) -> None:
    """glmer on the cluster beside glmer in memory: wall time, passes, client memory."""
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    import mixedfit

    formula = GLMM_FORMULAS[args.family]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      memory_limit=args.memory_limit, dashboard_address=None) as cluster, \
            Client(cluster):
        ddf = dd.read_parquet(str(folder), columns=["x", "g", formula.split()[0]])
        pass_times = _time_passes()
        with PeakRSS() as mem:
            t = time.perf_counter()
            fit = mixedfit.glmer(formula, ddf, family=args.family, progress=False)
            wall = time.perf_counter() - t
        print(f"dask glmer {formula!r} ({args.family}): {wall:.1f} s, {fit.passes} passes over "
              f"the rows (median {np.median(pass_times):.2f} s each); client peak RSS "
              f"{mem.peak / 2**20:.0f} MiB ({(mem.peak - mem.start) / 2**20:.0f} MiB above "
              f"the {mem.start / 2**20:.0f} MiB before the fit)")
        print(f"  -2 logLik {-2 * fit.loglik:.10f}, beta {fit.beta}, theta {fit.theta}")
    if rows > args.in_memory_limit:
        print(f"in-memory fit: skipped ({rows:,} rows > --in-memory-limit "
              f"{int(args.in_memory_limit):,})")
        return
    df = pd.read_parquet(folder, columns=["x", "g", formula.split()[0]])
    for label, control in (("default", None), ("bobyqa", {"optimizer": "bobyqa"})):
        t = time.perf_counter()
        ref = mixedfit.glmer(formula, df, family=args.family, control=control)
        wall_mem = time.perf_counter() - t
        rel = abs(fit.loglik - ref.loglik) / abs(ref.loglik)
        print(f"in-memory glmer ({label} optimizer): {wall_mem:.1f} s; -2 logLik relative "
              f"difference {rel:.1e}, max relative beta difference "
              f"{np.max(np.abs(fit.beta - ref.beta) / np.abs(ref.beta)):.1e}, max |theta "
              f"difference| {np.max(np.abs(fit.theta - ref.theta)):.1e}")


if __name__ == "__main__":
    main()
