"""Inference timings against lme4 in one run: the parametric bootstrap and profile intervals
of sleepstudy (``Reaction ~ Days + (Days | Subject)``, REML).

    python bench/inference.py                         # 10,000 replicates here, 300 in lme4
    python bench/inference.py --nsim 2000 --r-nsim 100 --jobs 2

lme4's bootMer is timed on fewer replicates (its cost per replicate is constant) and compared
per replicate. Profile intervals: every parameter, lme4's ``confint(fit)`` against
``fit.confint()``. Absolute times on a shared machine are noisy; the ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

import mixedfit  # noqa: E402

DATA = os.path.join(HERE, "data", "sleepstudy.csv")


def load_sleepstudy() -> pd.DataFrame:
    d = pd.read_csv(DATA, dtype={"Subject": str})
    d["Subject"] = pd.Categorical(d["Subject"])
    return d


def time_mixedfit(nsim: int, jobs: int, repeats: int) -> dict:
    fit = mixedfit.lmer("Reaction ~ Days + (Days | Subject)", load_sleepstudy())
    mixedfit.bootstrap(fit, nsim=50, seed=0, n_jobs=jobs, progress=False)    # warm up
    boot_times, boot_cpu, prof_times, prof_cpu = [], [], [], []
    for r in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        boot = mixedfit.bootstrap(fit, nsim=nsim, seed=r, n_jobs=jobs, progress=False)
        boot_times.append(time.perf_counter() - t0)
        boot_cpu.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        ci = fit.confint()
        prof_times.append(time.perf_counter() - t0)
        prof_cpu.append(time.process_time() - c0)
    return dict(boot_seconds=float(np.median(boot_times)), boot_cpu=float(np.median(boot_cpu)),
                boot_nsim=nsim, n_failed=boot.n_failed, n_singular=boot.n_singular,
                profile_seconds=float(np.median(prof_times)),
                profile_cpu=float(np.median(prof_cpu)), profile=ci.to_numpy().tolist())


def time_lme4(nsim: int) -> dict | None:
    try:
        out = subprocess.run(["Rscript", os.path.join(HERE, "inference_lme4.R"), DATA, str(nsim)],
                             capture_output=True, text=True, check=True, timeout=3600)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"lme4 not timed: {exc}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nsim", type=int, default=10_000, help="mixedfit bootstrap replicates")
    ap.add_argument("--r-nsim", type=int, default=300, help="lme4 bootMer replicates")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-r", action="store_true")
    args = ap.parse_args(argv)
    mf = time_mixedfit(args.nsim, args.jobs, args.repeats)
    r = None if args.no_r else time_lme4(args.r_nsim)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    per_mf = mf["boot_seconds"] / mf["boot_nsim"]
    cpu_mf = mf["boot_cpu"] / mf["boot_nsim"]
    print(f"bootstrap  mixedfit: {mf['boot_nsim']} replicates in {mf['boot_seconds']:.2f} s wall, "
          f"{mf['boot_cpu']:.2f} s CPU ({1e6 * per_mf:.0f} us wall, {1e6 * cpu_mf:.0f} us CPU "
          f"per replicate, {args.jobs} jobs; {mf['n_failed']} failed, {mf['n_singular']} singular)")
    print(f"profile    mixedfit: all 6 sleepstudy intervals in {mf['profile_seconds']:.3f} s wall, "
          f"{mf['profile_cpu']:.3f} s CPU")
    if r is not None:
        per_r = r["boot_seconds"] / r["boot_nsim"]
        cpu_r = r["boot_cpu"] / r["boot_nsim"]
        print(f"bootstrap  lme4:     {r['boot_nsim']} replicates in {r['boot_seconds']:.2f} s wall, "
              f"{r['boot_cpu']:.2f} s CPU  ->  per replicate {per_r / per_mf:.0f}x (wall), "
              f"{cpu_r / cpu_mf:.0f}x (CPU)")
        print(f"profile    lme4:     {r['profile_seconds']:.2f} s wall, {r['profile_cpu']:.2f} s CPU"
              f"  ->  {r['profile_seconds'] / mf['profile_seconds']:.1f}x (wall), "
              f"{r['profile_cpu'] / mf['profile_cpu']:.1f}x (CPU)")
        gap = np.max(np.abs(np.array(mf["profile"]) - np.array(r["profile"])))
        print(f"profile intervals: largest difference from lme4's {gap:.2e}")


if __name__ == "__main__":
    main()
