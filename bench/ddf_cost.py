"""What Satterthwaite / Kenward-Roger tables cost next to the fit, mixedfit and lmerTest.

    python bench/ddf_cost.py            # prints a table (about a minute; R part if Rscript exists)

For each problem: the median time of the fit, of ``coef_table("Satterthwaite")``,
``coef_table("Kenward-Roger")`` and the type III ``anova``; for lmerTest the time of
``lme4::lmer`` and of ``as_lmerModLmerTest`` (its numerical Hessian and Jacobian, which
``lmerTest::lmer`` adds to every fit) plus ``summary``. Problems: sleepstudy, and 10^5 rows
with a random intercept and slope for 100 and for 1000 groups (``y ~ x * f + (x | g)``).
Not part of ``bench/run.py``, which times fits across engines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import mixedfit  # noqa: E402

SLEEP_CSV = os.path.join(HERE, "..", "tests", "reference", "data", "sleepstudy.csv")


def simulated(n: int, groups: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    x = rng.normal(size=n)
    f = rng.integers(0, 3, n)
    y = 1 + 0.5 * x + 0.3 * f + 2 * rng.normal(size=groups)[g] + rng.normal(size=groups)[g] * x \
        + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "f": [f"f{v}" for v in f], "g": [f"g{v}" for v in g]})


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def mixedfit_row(name, formula, df, repeats):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mixedfit.lmer(formula, df)
        return {
            "problem": name,
            "fit": median_time(lambda: mixedfit.lmer(formula, df), repeats),
            "satterthwaite": median_time(lambda: fit.coef_table("Satterthwaite"), repeats),
            "kenward_roger": median_time(lambda: fit.coef_table("Kenward-Roger"), repeats),
            "anova_type3": median_time(lambda: mixedfit.anova(fit), repeats),
        }


R_SCRIPT = r"""
suppressPackageStartupMessages(library(lmerTest))
args <- commandArgs(TRUE)
df <- read.csv(args[1], stringsAsFactors = TRUE)
form <- as.formula(args[2]); reps <- as.integer(args[3])
med <- function(expr) median(replicate(reps, system.time(eval(expr))[["elapsed"]]))
fit <- lme4::lmer(form, df)
t_fit <- med(quote(lme4::lmer(form, df)))
t_satt <- med(quote(summary(as_lmerModLmerTest(fit))))
cat(t_fit, t_satt, "\n")
"""


def lmertest_row(formula, df, repeats):
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        csv, script = os.path.join(tmp, "d.csv"), os.path.join(tmp, "t.R")
        df.to_csv(csv, index=False)
        with open(script, "w") as fh:
            fh.write(R_SCRIPT)
        out = subprocess.run(["Rscript", script, csv, formula, str(repeats)],
                             capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def main():
    sleep = pd.read_csv(SLEEP_CSV)
    problems = [("sleepstudy", "Reaction ~ Days + (Days | Subject)", sleep, 21),
                ("sim 1e5 rows, 100 groups", "y ~ x * f + (x | g)", simulated(100_000, 100), 5),
                ("sim 1e5 rows, 1000 groups", "y ~ x * f + (x | g)", simulated(100_000, 1000), 5)]
    lines = ["| problem | fit | Satterthwaite table | KR table | anova (III) | lme4 fit | lmerTest derivatives + summary |",
             "|---|---|---|---|---|---|---|"]
    for name, formula, df, repeats in problems:
        row = mixedfit_row(name, formula, df, repeats)
        r = lmertest_row(formula, df, max(3, repeats // 4))
        r_cells = [f"{r[0] * 1e3:.0f} ms", f"{r[1] * 1e3:.0f} ms"] if r else ["-", "-"]
        lines.append(f"| {name} | {row['fit'] * 1e3:.1f} ms | {row['satterthwaite'] * 1e3:.1f} ms | "
                     f"{row['kenward_roger'] * 1e3:.1f} ms | {row['anova_type3'] * 1e3:.1f} ms | "
                     + " | ".join(r_cells) + " |")
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
