"""Named benchmark problems and the data files they read.

Every engine (mixedfit, lme4 and the Python peers) reads the same CSV file for a
problem, so all of them fit exactly the same numbers.  Small lme4 data sets are
committed under ``bench/data``; larger ones are exported from R on demand or
simulated with a fixed seed, and cached there (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(BENCH_DIR, "data")
EXPORT_R = os.path.join(BENCH_DIR, "export_lme4_data.R")


class DataUnavailable(RuntimeError):
    """The data of a problem can be neither found nor produced on this machine."""


@dataclass(frozen=True)
class Problem:
    name: str
    kind: str  # "lmm", "glmm" or "objective"
    formula: str
    dataset: str  # file stem under bench/data
    factors: tuple  # columns read as factors (grouping factors and categorical predictors)
    family: str = "gaussian"
    reml: bool = True
    size: str = "small"  # "small", "medium" or "large": default repeats and --quick
    description: str = ""
    # objective microbenchmark: the fixed theta (lme4's order of terms)
    theta: tuple = ()
    # binomial responses written as cbind(successes, total - successes): the
    # columns, for peers that need another spelling of the same model
    binomial_counts: tuple = ()
    n_rows: int = 0
    target_vs_lme4: float = 0.0  # mixedfit's target speed-up over lme4 (0: none set)
    extra: dict = field(default_factory=dict)


PROBLEMS = {
    p.name: p
    for p in [
        Problem(
            name="sleepstudy",
            target_vs_lme4=5,
            kind="lmm",
            formula="Reaction ~ Days + (Days | Subject)",
            dataset="sleepstudy",
            factors=("Subject",),
            reml=True,
            size="small",
            n_rows=180,
            description="lme4 sleepstudy, correlated random intercept and slope, REML",
        ),
        Problem(
            name="instevall",
            target_vs_lme4=20,
            kind="lmm",
            formula="y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)",
            dataset="insteval",
            factors=("s", "d", "dept", "service"),
            reml=True,
            size="medium",
            n_rows=73421,
            description="lme4 InstEval, three crossed random intercepts, REML",
        ),
        Problem(
            name="crossed_1m",
            target_vs_lme4=20,
            kind="lmm",
            formula="y ~ 1 + x + (1 | f1) + (1 | f2)",
            dataset="crossed_1m",
            factors=("f1", "f2"),
            reml=True,
            size="large",
            n_rows=1_000_000,
            description="simulated, 1,000,000 rows, crossed factors of 5,000 and 500 levels, REML",
        ),
        Problem(
            name="nested_2m",
            kind="lmm",
            formula="y ~ x + (1 | student) + (1 | class) + (1 | school)",
            dataset="nested_2m",
            factors=("student", "class", "school"),
            reml=True,
            size="large",
            n_rows=2_000_000,
            description="simulated, 2,000,000 rows, 200,000 students in 50,000 classes in 2,000 "
                        "schools, 10% of students also in a second class; sparse rest block, REML",
        ),
        Problem(
            name="cbpp",
            target_vs_lme4=15,
            kind="glmm",
            formula="cbind(incidence, size - incidence) ~ period + (1 | herd)",
            dataset="cbpp",
            factors=("herd", "period"),
            family="binomial",
            reml=False,
            size="small",
            n_rows=56,
            binomial_counts=("incidence", "size"),
            description="lme4 cbpp, binomial counts, random intercept, Laplace",
        ),
        Problem(
            name="verbagg",
            target_vs_lme4=25,
            kind="glmm",
            formula="r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)",
            dataset="verbagg",
            factors=("id", "item", "Gender", "btype", "situ"),
            family="binomial",
            reml=False,
            size="medium",
            n_rows=7584,
            description="lme4 VerbAgg, binary response, crossed random intercepts, Laplace",
        ),
        Problem(
            name="binom_200k",
            kind="glmm",
            formula="y ~ 1 + x + (1 | f1) + (1 | f2)",
            dataset="binom_200k",
            factors=("f1", "f2"),
            family="binomial",
            reml=False,
            size="large",
            n_rows=200_000,
            description="simulated, 200,000 binary rows, crossed factors of 2,000 and 500 levels, Laplace",
        ),
        Problem(
            name="slopes_1k",
            kind="lmm",
            formula="y ~ x + (x | g)",
            dataset="slopes_1k",
            factors=("g",),
            reml=True,
            size="small",
            n_rows=1000,
            description="simulated, 1,000 rows, 100 clusters, correlated random intercept and slope, REML",
        ),
        Problem(
            name="bernoulli_300",
            kind="glmm",
            formula="y ~ x + (1 | subject)",
            dataset="bernoulli_300",
            factors=("subject",),
            family="binomial",
            reml=False,
            size="small",
            n_rows=300,
            description="simulated, 300 binary rows, 30 subjects, random intercept, Laplace",
        ),
        Problem(
            name="objective_sleepstudy",
            kind="objective",
            formula="Reaction ~ Days + (Days | Subject)",
            dataset="sleepstudy",
            factors=("Subject",),
            reml=True,
            size="small",
            n_rows=180,
            theta=(0.9667, 0.01517, 0.2309),
            description="one evaluation of the profiled REML criterion at a fixed theta",
        ),
        Problem(
            name="objective_instevall",
            kind="objective",
            formula="y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)",
            dataset="insteval",
            factors=("s", "d", "dept", "service"),
            reml=True,
            size="medium",
            n_rows=73421,
            theta=(0.2765, 0.4374, 0.0706),
            description="one evaluation of the profiled REML criterion at a fixed theta",
        ),
    ]
}

ALIASES = {
    "objective": ["objective_sleepstudy", "objective_instevall"],
    "lmm": ["sleepstudy", "slopes_1k", "instevall", "crossed_1m"],
    "glmm": ["cbpp", "bernoulli_300", "verbagg", "binom_200k"],
    "small": [n for n, p in PROBLEMS.items() if p.size == "small"],
    "all": list(PROBLEMS),
}

QUICK = ["sleepstudy", "cbpp", "objective_sleepstudy"]


# --- the size grid (issue targets: time against rows, one line per engine) --------------
# Three model shapes at growing sizes, simulated with fixed seeds; not in "all" (the large
# points take minutes per engine): run them with `--problems grid` and plot with
# bench/grid_plot.py.
GRID_SIZES = {
    "slopes": (1_000, 10_000, 100_000, 1_000_000),      # y ~ x + (x | g), 10 rows per cluster
    "crossed": (10_000, 100_000, 1_000_000),           # y ~ x + (1 | f1) + (1 | f2)
    "bernoulli": (1_000, 10_000, 100_000),             # y ~ x + (1 | g), binary, 10 per cluster
}


def _size_label(n: int) -> str:
    return f"1e{len(str(n)) - 1}"


def _grid_problem(shape: str, n: int) -> Problem:
    label = _size_label(n)
    common = dict(name=f"grid_{shape}_{label}", dataset=f"grid_{shape}_{label}", n_rows=n,
                  size="small" if n <= 10_000 else ("medium" if n <= 100_000 else "large"),
                  extra={"grid": shape})
    if shape == "slopes":
        return Problem(kind="lmm", formula="y ~ 1 + x + (1 + x | g)", factors=("g",), reml=True,
                       description=f"simulated, {n:,} rows, {n // 10:,} clusters of 10, "
                                   "correlated random intercepts and slopes, REML", **common)
    if shape == "crossed":
        return Problem(kind="lmm", formula="y ~ 1 + x + (1 | f1) + (1 | f2)", factors=("f1", "f2"),
                       reml=True, description=f"simulated, {n:,} rows, crossed factors of "
                       f"{n // 200:,} and {n // 2000:,} levels, REML", **common)
    return Problem(kind="glmm", formula="y ~ 1 + x + (1 | g)", factors=("g",), family="binomial",
                   reml=False, description=f"simulated, {n:,} binary rows, {n // 10:,} clusters "
                   "of 10, random intercept, Laplace", **common)


GRID = [_grid_problem(shape, n) for shape, sizes in GRID_SIZES.items() for n in sizes]
PROBLEMS.update({p.name: p for p in GRID})
ALIASES["grid"] = [p.name for p in GRID]

# lme4 data sets: the columns each export keeps, and whether the CSV is committed.
LME4_EXPORTS = {
    "sleepstudy": {"committed": True},
    "cbpp": {"committed": True},
    "verbagg": {"committed": True},
    "insteval": {"committed": False},  # ~2 MB: exported on demand, git-ignored
}


def resolve(names):
    out = []
    for raw in names:
        for name in ALIASES.get(raw, [raw]):
            if name not in PROBLEMS:
                known = ", ".join(list(PROBLEMS) + list(ALIASES))
                raise SystemExit(f"unknown problem {name!r}; known: {known}")
            if name not in out:
                out.append(name)
    return out


def csv_path(dataset: str) -> str:
    return os.path.join(DATA_DIR, f"{dataset}.csv")


def rscript() -> str | None:
    return shutil.which("Rscript")


def r_has_lme4() -> bool:
    exe = rscript()
    if exe is None:
        return False
    try:
        r = subprocess.run(
            [exe, "-e", "cat(requireNamespace('lme4', quietly=TRUE) && requireNamespace('jsonlite', quietly=TRUE))"],
            capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.stdout.strip().endswith("TRUE")


def ensure_data(problem: Problem, log=print) -> str:
    """Return the CSV path of ``problem``'s data, producing it when it is missing."""
    path = csv_path(problem.dataset)
    if os.path.exists(path):
        return path
    os.makedirs(DATA_DIR, exist_ok=True)
    if problem.dataset in SIMULATORS:
        log(f"  simulating {problem.dataset} (fixed seed) -> {os.path.relpath(path)}")
        SIMULATORS[problem.dataset](path)
        return path
    if problem.dataset in LME4_EXPORTS:
        if not r_has_lme4():
            raise DataUnavailable(
                f"{os.path.relpath(path)} is missing and R with lme4 is not available to export it "
                f"(run `Rscript bench/export_lme4_data.R {problem.dataset} bench/data/{problem.dataset}.csv` "
                "on a machine with lme4 and copy the file here)"
            )
        log(f"  exporting {problem.dataset} from lme4 -> {os.path.relpath(path)}")
        r = subprocess.run([rscript(), EXPORT_R, problem.dataset, path], capture_output=True, text=True)
        if r.returncode != 0 or not os.path.exists(path):
            raise DataUnavailable(f"exporting {problem.dataset} from R failed: {r.stderr.strip()[-500:]}")
        return path
    raise DataUnavailable(f"no source for data set {problem.dataset!r}")


# --- simulated data sets -------------------------------------------------------------


def _write_csv(path, cols):
    import pandas as pd

    tmp = path + ".part"
    pd.DataFrame(cols).to_csv(tmp, index=False, float_format="%.10g")
    os.replace(tmp, path)


def _crossed(rng, n, k1, k2):
    """Two crossed factors, a standard-normal covariate and random effects with sd 0.8 and
    0.5 (draws in the same order as before, so the cached data sets are unchanged)."""
    f1 = rng.integers(0, k1, n)
    f2 = rng.integers(0, k2, n)
    x = rng.standard_normal(n)
    u1 = 0.8 * rng.standard_normal(k1)
    u2 = 0.5 * rng.standard_normal(k2)
    return f1, f2, x, u1[f1] + u2[f2]


def simulate_crossed_1m(path, seed=20240501):
    """1e6 rows, y = 1 + 0.5 x + u1[f1] + u2[f2] + e; sd(u1)=0.8, sd(u2)=0.5, sd(e)=1."""
    rng = np.random.default_rng(seed)
    f1, f2, x, re = _crossed(rng, 1_000_000, 5000, 500)
    y = 1.0 + 0.5 * x + re + rng.standard_normal(x.size)
    _write_csv(path, {"y": y, "x": x, "f1": f1 + 1, "f2": f2 + 1})


def simulate_binom_200k(path, seed=20240502):
    """2e5 binary rows, logit P(y=1) = -0.5 + 0.8 x + u1[f1] + u2[f2]; sd(u1)=0.8, sd(u2)=0.5."""
    rng = np.random.default_rng(seed)
    f1, f2, x, re = _crossed(rng, 200_000, 2000, 500)
    eta = -0.5 + 0.8 * x + re
    y = (rng.random(x.size) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int8)
    _write_csv(path, {"y": y, "x": x, "f1": f1 + 1, "f2": f2 + 1})


def simulate_nested_2m(path, seed=20240503):
    """2e6 rows, 10 per student: 200,000 students, 4 per class in 50,000 classes, 25 classes
    per school in 2,000 schools. 10% of the students spend each of their rows, with probability
    1/2, in a second class of the same school (so students are not nested in classes; classes
    stay nested in schools). y = 1 + 0.5 x + u_student + u_class + u_school + e with sds 1, 0.5,
    0.3 and 1."""
    rng = np.random.default_rng(seed)
    n_student, n_class, n_school, per_student = 200_000, 50_000, 2_000, 10
    home = np.arange(n_student) // 4                           # each student's first class
    school_of = np.arange(n_class) // (n_class // n_school)
    other = school_of[home] * (n_class // n_school) + rng.integers(0, n_class // n_school, n_student)
    mover = rng.random(n_student) < 0.10
    student = np.repeat(np.arange(n_student), per_student)
    moved = mover[student] & (rng.random(student.size) < 0.5)
    klass = np.where(moved, other[student], home[student])
    school = school_of[klass]
    x = rng.standard_normal(student.size)
    u = (rng.standard_normal(n_student)[student] + 0.5 * rng.standard_normal(n_class)[klass]
         + 0.3 * rng.standard_normal(n_school)[school])
    y = 1.0 + 0.5 * x + u + rng.standard_normal(student.size)
    _write_csv(path, {"y": y, "x": x, "student": student + 1, "class": klass + 1,
                      "school": school + 1})


def simulate_slopes_1k(path, seed=20240503):
    """1,000 rows in 100 clusters of 10, y = 1 + 0.5 x + b0[g] + b1[g] x + e with
    sd(b0) = 0.8, sd(b1) = 0.4, corr(b0, b1) = 0.3, sd(e) = 1."""
    rng = np.random.default_rng(seed)
    n, k = 1000, 100
    g = np.repeat(np.arange(k), n // k)
    x = rng.standard_normal(n)
    cov = np.array([[0.64, 0.3 * 0.8 * 0.4], [0.3 * 0.8 * 0.4, 0.16]])
    b = rng.multivariate_normal(np.zeros(2), cov, size=k)
    y = 1.0 + 0.5 * x + b[g, 0] + b[g, 1] * x + rng.standard_normal(n)
    _write_csv(path, {"y": y, "x": x, "g": g + 1})


def simulate_bernoulli_300(path, seed=20240504):
    """300 binary rows, 30 subjects of 10, logit P(y=1) = -0.3 + 0.6 x + u[subject];
    sd(u) = 1."""
    rng = np.random.default_rng(seed)
    n, k = 300, 30
    subject = np.repeat(np.arange(k), n // k)
    x = rng.standard_normal(n)
    eta = -0.3 + 0.6 * x + rng.standard_normal(k)[subject]
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int8)
    _write_csv(path, {"y": y, "x": x, "subject": subject + 1})


SIMULATORS = {"crossed_1m": simulate_crossed_1m, "binom_200k": simulate_binom_200k,
              "slopes_1k": simulate_slopes_1k, "bernoulli_300": simulate_bernoulli_300,
              "nested_2m": simulate_nested_2m}


def simulate_grid(shape: str, n: int, path: str, seed: int = 20261202):
    """A grid data set: ``x`` standard normal; slopes: sd 1.0 (intercept), 0.5 (slope),
    correlation 0.3, residual sd 1; crossed: as crossed_1m at n rows with n/200 and n/2000
    levels; bernoulli: logit P(y=1) = -0.5 + 0.8 x + u[g], sd(u) = 1."""
    rng = np.random.default_rng(seed + n)
    if shape == "crossed":
        f1, f2, x, re = _crossed(rng, n, n // 200, n // 2000)
        y = 1.0 + 0.5 * x + re + rng.standard_normal(n)
        _write_csv(path, {"y": y, "x": x, "f1": f1 + 1, "f2": f2 + 1})
        return
    k = n // 10
    g = np.repeat(np.arange(k), 10)
    x = rng.standard_normal(n)
    if shape == "slopes":
        cov = np.array([[1.0, 0.15], [0.15, 0.25]])
        u = rng.standard_normal((k, 2)) @ np.linalg.cholesky(cov).T
        y = 1.0 + 0.5 * x + u[g, 0] + u[g, 1] * x + rng.standard_normal(n)
    else:
        eta = -0.5 + 0.8 * x + rng.standard_normal(k)[g]
        y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int8)
    _write_csv(path, {"y": y, "x": x, "g": g + 1})


SIMULATORS.update({p.dataset: (lambda path, p=p: simulate_grid(p.extra["grid"], p.n_rows, path))
                   for p in GRID})


# --- reading a problem's data into pandas (not timed) ---------------------------------


def _level_order(values):
    """R's factor() level order for the labels: numeric order when all labels are numbers."""
    uniq = list(dict.fromkeys(values))
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return sorted(uniq)


def load_frame(problem: Problem):
    """The problem's data as a pandas DataFrame; factor columns become string categoricals."""
    import pandas as pd

    df = pd.read_csv(csv_path(problem.dataset))
    for col in problem.factors:
        labels = df[col].astype(str)
        cats = _level_order(pd.unique(labels))
        df[col] = pd.Categorical(labels, categories=cats)
    return df
