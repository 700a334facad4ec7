"""Per-evaluation time of the compiled core, without the Python fit path.

LMM: ``LmmProblem.objective(theta, reml)`` at a fixed theta (one factorization per call) and
``set_response(y)`` (A from the data: one pass over the rows).
GLMM: ``GlmmProblem.stage2(theta, beta, None, 1, ...)`` (a warm-started PIRLS and the Laplace
objective, the call the optimizer makes per evaluation). Median over many calls.

    PYTHONPATH=python python bench/core_eval.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

from mixedfit import _core

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _codes(col):
    codes, levels = pd.factorize(col, sort=True)
    return codes.astype(np.int32), len(levels)


def sleepstudy():
    d = pd.read_csv(os.path.join(DATA, "sleepstudy.csv"))
    g, nl = _codes(d["Subject"])
    days = d["Days"].to_numpy(float)
    X = np.column_stack([np.ones(len(d)), days])
    Z = np.asfortranarray(X.copy())
    return X, d["Reaction"].to_numpy(float), [(g, nl, Z)], np.array([0.97, 0.015, 0.23])


def slopes(n_rows, n_clusters, seed=1):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_clusters, dtype=np.int32), n_rows // n_clusters)
    x = rng.normal(size=len(g))
    b = rng.normal(size=(n_clusters, 2)) * [1.0, 0.5]
    y = 1 + 0.5 * x + b[g, 0] + b[g, 1] * x + rng.normal(size=len(g))
    X = np.column_stack([np.ones(len(g)), x])
    return X, y, [(g, n_clusters, np.asfortranarray(X.copy()))], np.array([1.0, 0.1, 0.5])


def crossed_1m():
    """bench/problems.py's crossed_1m (simulated once, cached): y ~ 1 + x + (1|f1) + (1|f2)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import problems

    d = pd.read_csv(problems.ensure_data(problems.PROBLEMS["crossed_1m"]))
    X = np.column_stack([np.ones(len(d)), d["x"].to_numpy(float)])
    ones = np.ones((len(d), 1))
    terms = [(*_codes(d["f1"]), ones), (*_codes(d["f2"]), ones)]  # 5,000 then 500 levels
    return X, d["y"].to_numpy(float), terms, np.array([0.8, 0.5])


def time_calls(f, repeats):
    f()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def lmm_case(name, X, y, terms, theta, repeats):
    prob = _core.LmmProblem(np.asfortranarray(X), terms)
    prob.set_response(y)
    t = time_calls(lambda: prob.objective(theta, True), repeats)
    print(f"{name:28s} objective  {t * 1e6:10.1f} us   value {prob.objective(theta, True):.15g}")
    t = time_calls(lambda: prob.set_response(y), repeats)
    print(f"{name:28s} set_resp.  {t * 1e6:10.1f} us")


def glmm_case(name, X, y, pw, terms, theta, beta, repeats):
    prob = _core.GlmmProblem(np.asfortranarray(X), y, pw, None, terms, 0, 2)
    z, w = np.polynomial.hermite_e.hermegauss(1)
    prob.stage1(theta, np.log((y * pw + 0.5) / (pw - y * pw + 0.5)))
    val = prob.stage2(theta, beta, None, 1, z, w / w.sum())
    t = time_calls(lambda: prob.stage2(theta, beta, None, 1, z, w / w.sum()), repeats)
    print(f"{name:28s} stage2     {t * 1e6:10.1f} us   value {val:.15g}")


def cbpp():
    d = pd.read_csv(os.path.join(DATA, "cbpp.csv"))
    g, nl = _codes(d["herd"])
    period = pd.get_dummies(d["period"].astype(str), drop_first=True).to_numpy(float)
    X = np.column_stack([np.ones(len(d)), period])
    size = d["size"].to_numpy(float)
    y = d["incidence"].to_numpy(float) / size
    Z = np.ones((len(d), 1))
    return X, y, size, [(g, nl, Z)], np.array([0.64]), np.array([-1.4, -1.0, -1.1, -1.6])


def bernoulli(n_rows=300, n_subj=30, seed=2):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_subj, dtype=np.int32), n_rows // n_subj)
    x = rng.normal(size=len(g))
    eta = -0.3 + 0.8 * x + rng.normal(size=n_subj)[g]
    y = (rng.random(len(g)) < 1 / (1 + np.exp(-eta))).astype(float)
    X = np.column_stack([np.ones(len(g)), x])
    return X, y, np.ones(len(g)), [(g, n_subj, np.ones((len(g), 1)))], np.array([0.9]), np.array([-0.3, 0.8])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--crossed", action="store_true", help="also the 10^6-row crossed problem")
    a = ap.parse_args()
    r = a.repeats
    lmm_case("sleepstudy", *sleepstudy(), r)
    lmm_case("slopes 1k/100", *slopes(1000, 100), r)
    lmm_case("slopes 100k/10k", *slopes(100_000, 10_000), max(r // 4, 20))
    if a.crossed:
        lmm_case("crossed_1m", *crossed_1m(), 11)
    glmm_case("cbpp", *cbpp(), r)
    glmm_case("bernoulli 300/(1|subject)", *bernoulli(), r)
    glmm_case("bernoulli 100k/(1|g) 10k", *bernoulli(100_000, 10_000), max(r // 4, 20))
    print(f"load average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
