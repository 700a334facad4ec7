"""Negative binomial GLMMs: mixedfit's glmer_nb against lme4's glmer.nb, same machine, same run.

    python bench/negbin_speed.py [--repeats 5] [--r-repeats 1]

Times formula-to-result on the three cases of tests/reference/lme4_negbin.json (epil,
grouseticks, simulated crossed counts), reading the data from tests/reference/data first (not
timed), and prints the medians, the ratio lme4 / mixedfit and both log-likelihoods (which should
agree, mixedfit's never lower). Needs Rscript with lme4 and MASS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
import mixedfit  # noqa: E402

DATA = os.path.join(ROOT, "tests", "reference", "data")
CASES = {
    "epil": ("y ~ lbase * trt + lage + V4 + (1 | subject)", "epil.csv", ["subject"]),
    "grouseticks": ("TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION)", "grouseticks.csv",
                    ["BROOD", "LOCATION", "YEAR"]),
    "sim_crossed": ("y ~ x + (1 | A) + (1 | B)", "sim_negbin_crossed.csv", ["A", "B"]),
}

R_SCRIPT = r"""
suppressPackageStartupMessages({library(lme4); library(MASS); library(jsonlite)})
args <- commandArgs(TRUE)
d <- read.csv(args[1]); for (v in strsplit(args[3], ",")[[1]]) d[[v]] <- factor(d[[v]])
reps <- as.integer(args[4]); times <- numeric(reps)
for (i in seq_len(reps))
  times[i] <- system.time(
    fit <- suppressWarnings(glmer.nb(as.formula(args[2]), data = d)))[["elapsed"]]
cat(toJSON(list(times = I(times), loglik = as.numeric(logLik(fit))), digits = NA,
           auto_unbox = TRUE))
"""


def time_lme4(formula, path, factors, repeats):
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as f:
        f.write(R_SCRIPT)
    try:
        out = subprocess.run(["Rscript", f.name, path, formula, ",".join(factors), str(repeats)],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    return json.loads(out)


def time_mixedfit(formula, data, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = mixedfit.glmer_nb(formula, data)
        times.append(time.perf_counter() - t0)
    return {"times": times, "loglik": fit.loglik}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="mixedfit fits per case")
    ap.add_argument("--r-repeats", type=int, default=1,
                    help="lme4 fits per case (each takes seconds; one is enough for the ratio)")
    args = ap.parse_args()
    print(f"{'case':12s} {'lme4 s':>8s} {'mixedfit s':>10s} {'ratio':>7s} "
          f"{'logLik lme4':>14s} {'logLik mixedfit':>16s}", flush=True)
    for name, (formula, csv, factors) in CASES.items():
        path = os.path.join(DATA, csv)
        data = pd.read_csv(path)
        for v in factors:
            data[v] = data[v].astype(str).astype("category")
        mf = time_mixedfit(formula, data, args.repeats)
        r = time_lme4(formula, path, factors, args.r_repeats)
        t_mf, t_r = statistics.median(mf["times"]), statistics.median(r["times"])
        print(f"{name:12s} {t_r:8.3f} {t_mf:10.3f} {t_r / t_mf:7.1f} "
              f"{r['loglik']:14.5f} {mf['loglik']:16.5f}", flush=True)


if __name__ == "__main__":
    main()
