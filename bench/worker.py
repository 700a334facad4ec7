"""Child process: time one Python engine on one problem and print JSON lines.

Run by ``run.py`` as ``python worker.py '<json spec>'``; each line on stdout is one
event, flushed at once, so the parent keeps every fit that finished even when it
has to stop the child at the time limit.

Events: ready (data loaded, engine imported), unsupported, fit (one timed fit),
estimates, objective (one timed batch of objective evaluations), error, done.
Memory of the first fit: just before it the worker resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``, Linux) and records the resident set (``rss_before_kb``); the
``rss_kb`` after it is the peak during the fit, so the difference is what the fit needs
above what was already resident (the data, the imported engine). Without the reset
(``peak_reset`` false) ``rss_kb`` is the process's peak so far (getrusage), which can
hide a fit's memory below an earlier peak (e.g. from building the data). The same is
measured around the (untimed) warm-up fit and emitted as a ``memory`` event: the memory
a fit needs once first-call costs (modules imported on first use, caches) are paid.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
import traceback
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import engines  # noqa: E402
import problems  # noqa: E402


def emit(**ev):
    sys.stdout.write(json.dumps(ev) + "\n")
    sys.stdout.flush()


def _proc_status_kb(field):
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_kb():
    """Peak resident set since the process started or the last reset_peak_rss(), in kB."""
    hwm = _proc_status_kb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def reset_peak_rss():
    """Reset the peak-RSS mark to the current RSS (Linux >= 4.0); True if it worked."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _batch_size(t, min_sample):
    """Fits per timed sample: fast fits are timed in batches of at least min_sample seconds."""
    if t >= min_sample:
        return 1
    return max(1, int(min_sample / max(t, 1e-6)) + 1)


def run_fit(spec, problem, engine, df):
    repeats = int(spec["repeats"])
    budget = float(spec["budget"])
    min_sample = float(spec.get("min_sample_seconds", 0.2))
    start = time.perf_counter()
    # first fit: cold (first-call costs), also the peak-memory measurement
    gc.collect()                          # what building the data left behind is not the fit's
    peak_reset = reset_peak_rss()
    rss_before = _proc_status_kb("VmRSS")
    t0 = time.perf_counter()
    model = engine.fit(problem, df)
    t = time.perf_counter() - t0
    emit(event="fit", i=0, warm=False, batch=1, seconds=t, rss_kb=peak_rss_kb(),
         rss_before_kb=rss_before, peak_reset=peak_reset)
    est = engine.estimates(problem, model)
    emit(event="estimates", **est)
    del model
    if repeats <= 0:
        return
    if t > budget / 2:
        emit(event="budget", done=0, budget=budget)
        return
    # warm-up fit, untimed in the results; sizes the batches; its memory is the fit's own
    # (the cold fit's also includes first-call costs such as modules imported on first use)
    gc.collect()
    peak_reset = reset_peak_rss()
    rss_before = _proc_status_kb("VmRSS")
    t0 = time.perf_counter()
    engine.fit(problem, df)
    t = time.perf_counter() - t0
    if peak_reset and rss_before is not None:
        emit(event="memory", rss_before_kb=rss_before, peak_kb=peak_rss_kb())
    m = _batch_size(t, min_sample)
    for i in range(1, repeats + 1):
        spent = time.perf_counter() - start
        if i > 1 and spent + m * t > budget:
            emit(event="budget", done=i - 1, budget=budget)
            break
        t0 = time.perf_counter()
        for _ in range(m):
            engine.fit(problem, df)
        tb = time.perf_counter() - t0
        t = tb / m
        emit(event="fit", i=i, warm=True, batch=m, seconds=t)


def run_objective(spec, problem, engine, df):
    """Time the objective at the fixed theta. Successive calls cycle through four copies of
    theta that differ in the 8th significant digit, so no engine can answer from a cache
    keyed on the last theta."""
    repeats = int(spec["repeats"])
    min_batch = float(spec.get("min_batch_seconds", 0.2))
    f = engine.objective_fn(problem, df)
    theta = [float(t) for t in problem.theta]
    thetas = [np.array([t * (1.0 + 1e-8 * j) for t in theta]) for j in range(4)]
    t0 = time.perf_counter()
    value = float(f(np.array(theta)))  # warm-up, and the value compared across engines
    first = time.perf_counter() - t0
    emit(event="estimates", objective=value, theta=theta)

    def batch(n):
        t0 = time.perf_counter()
        for k in range(n):
            f(thetas[k & 3])
        return time.perf_counter() - t0

    n = max(4, int(min_batch / max(first, 1e-7)))
    while True:  # grow the batch until it lasts at least min_batch seconds
        t = batch(n)
        if t >= min_batch or n >= 10_000_000:
            break
        n = max(n * 2, int(n * min_batch / max(t, 1e-9) * 1.2))
    emit(event="objective", i=0, evals=n, seconds=t)
    for i in range(1, repeats + 1):
        emit(event="objective", i=i, evals=n, seconds=batch(n))


def main():
    spec = json.loads(sys.argv[1])
    warnings.simplefilter("ignore")
    problem = problems.PROBLEMS[spec["problem"]]
    try:
        engine = engines.get(spec["engine"])
    except ImportError as e:
        emit(event="unsupported", reason=f"not installed: {e}")
        return
    df = problems.load_frame(problem)
    try:
        engine.check(problem, df)
        df = engine.prepare(problem, df)
    except engines.Unsupported as e:
        emit(event="unsupported", reason=str(e))
        return
    emit(event="ready", rss_kb=peak_rss_kb(), version=engine.version(), pid=os.getpid())
    try:
        if problem.kind == "objective":
            run_objective(spec, problem, engine, df)
        else:
            run_fit(spec, problem, engine, df)
    except engines.Unsupported as e:
        emit(event="unsupported", reason=str(e))
        return
    except MemoryError:
        emit(event="error", kind="memory", message="out of memory (MemoryError)")
        return
    except Exception as e:  # a peer failing is a result, not a crash of the run
        emit(event="error", kind=type(e).__name__, message=str(e)[:500],
             trace=traceback.format_exc()[-2000:])
        return
    emit(event="done")


if __name__ == "__main__":
    main()
