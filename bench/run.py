"""Benchmark suite: mixedfit against lme4 and the Python peers, on named problems.

    python bench/run.py [--problems a,b] [--repeats N] [--quick] [--no-r] [--compare]

Every engine runs in its own child process per problem (Python peers through
worker.py, lme4 through one Rscript per problem), so a peer that is slow, runs out
of memory or crashes is recorded as such and the run goes on. Results go to
bench/results/latest.json and latest.md; see bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import engines  # noqa: E402
import problems  # noqa: E402
import report  # noqa: E402

BENCH = problems.BENCH_DIR
REPO = os.path.dirname(BENCH)
RESULTS = os.path.join(BENCH, "results")
WORKER = os.path.join(BENCH, "worker.py")
R_WORKER = os.path.join(BENCH, "lme4_worker.R")

ALL_ENGINES = ["mixedfit", "lme4", "glmm", "mixedlm", "statsmodels"]
DEFAULT_REPEATS = {"small": 11, "medium": 5, "large": 3}
AGREE_REL_TOL = 1e-3


def log(msg=""):
    print(msg, flush=True)


# --- child processes ---------------------------------------------------------------------


def _rss_bytes(pid):
    """Resident set size of a process (Linux), or None."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_child(cmd, env, fit_timeout, ready_timeout, total_timeout, mem_gib):
    """Run a worker; return (events, status, stderr tail).

    fit_timeout applies to the gap between two events once the worker is ready
    (one fit, or one batch of fits), ready_timeout to loading the data and the
    engine, total_timeout to the whole child. A child whose resident memory grows
    beyond mem_gib is stopped. (The memory is watched from outside rather than
    capped with an address-space limit, because such a limit keeps some engines from
    starting their thread pools and so changes what is measured.)
    """
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True, cwd=REPO,
    )
    q: queue.Queue = queue.Queue()
    err_lines: list = []

    def read_out():
        for line in proc.stdout:
            q.put(line)
        q.put(None)

    def read_err():
        for line in proc.stderr:
            err_lines.append(line)
            del err_lines[:-40]

    threading.Thread(target=read_out, daemon=True).start()
    threading.Thread(target=read_err, daemon=True).start()
    events = []
    status = "ok"
    start = time.monotonic()
    last = start
    ready = False
    mem_limit = mem_gib * 2**30 if mem_gib else None

    def stop():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    while True:
        limit = fit_timeout if ready else ready_timeout
        remaining = min(last + limit, start + total_timeout) - time.monotonic()
        if remaining <= 0:
            status = "timeout"
            stop()
            break
        try:
            line = q.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            if mem_limit:
                rss = _rss_bytes(proc.pid)
                if rss is not None and rss > mem_limit:
                    status = "memory"
                    stop()
                    break
            continue
        if line is None:
            break
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        events.append(ev)
        last = time.monotonic()
        if ev.get("event") == "ready":
            ready = True
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if status == "ok" and proc.returncode not in (0, None):
        status = f"crashed (exit {proc.returncode})"
        if proc.returncode in (-9, 137):
            status = "killed (out of memory?)"
    return events, status, "".join(err_lines[-15:])


def summarize(engine, problem, events, status, stderr, limits):
    """Turn a worker's events into one result cell."""
    cell = {"engine": engine, "status": status}
    for ev in events:
        kind = ev.get("event")
        if kind == "ready":
            cell["version"] = ev.get("version")
            cell["rss_ready_kb"] = ev.get("rss_kb")
        elif kind == "unsupported":
            cell["status"] = "unsupported"
            cell["reason"] = ev.get("reason")
        elif kind == "error":
            cell["status"] = "error"
            cell["reason"] = f"{ev.get('kind')}: {ev.get('message')}"
        elif kind == "estimates":
            cell["estimates"] = {k: v for k, v in ev.items() if k != "event"}
        elif kind == "budget":
            cell["budget_stop"] = ev.get("done")
    if status == "timeout":
        cell["reason"] = (f"no result within the time limit ({limits['fit_timeout']:.0f} s per fit, "
                          f"{limits['total_timeout']:.0f} s per problem)")
    if status == "memory":
        cell["reason"] = f"stopped: resident memory above the limit ({limits.get('mem_gib')} GiB)"
    if status.startswith(("crashed", "killed")):
        cell["reason"] = (stderr.strip().splitlines() or [status])[-1][:300]

    if problem.kind == "objective":
        batches = [ev for ev in events if ev.get("event") == "objective"]
        timed = [b for b in batches if b.get("i", 0) > 0] or batches
        per_eval = [b["seconds"] / b["evals"] for b in timed]
        if per_eval:
            cell["samples"] = per_eval
            cell["evals_per_sample"] = timed[0]["evals"]
            cell["median"] = statistics.median(per_eval)
            cell["min"] = min(per_eval)
            if cell["status"] in ("timeout", "memory"):
                cell["status"] = "partial"
        return cell

    fits = [ev for ev in events if ev.get("event") == "fit"]
    cold = [f for f in fits if not f.get("warm")]
    warm = [f for f in fits if f.get("warm")]
    if cold:
        cell["cold_seconds"] = cold[0]["seconds"]
        rss_fit = cold[0].get("rss_kb")
        if rss_fit is not None:
            cell["peak_rss_mb"] = rss_fit / 1024.0
            # the fit's peak above the resident set just before it (peak mark reset then):
            # the warm-up fit's when measured, else the cold fit's; as a fallback, the
            # growth of the process's peak since "ready"
            memory = [ev for ev in events if ev.get("event") == "memory"]
            if cold[0].get("peak_reset") and cold[0].get("rss_before_kb") is not None:
                cell["cold_fit_peak_rss_delta_mb"] = (rss_fit - cold[0]["rss_before_kb"]) / 1024.0
            if memory:
                cell["peak_rss_mb"] = memory[0]["peak_kb"] / 1024.0
                cell["fit_peak_rss_delta_mb"] = (memory[0]["peak_kb"] - memory[0]["rss_before_kb"]) / 1024.0
                cell["memory_method"] = "warm fit: peak during it - RSS before it"
            elif "cold_fit_peak_rss_delta_mb" in cell:
                cell["fit_peak_rss_delta_mb"] = cell["cold_fit_peak_rss_delta_mb"]
                cell["memory_method"] = "cold fit: peak during it - RSS before it"
            elif cell.get("rss_ready_kb") is not None:
                cell["fit_peak_rss_delta_mb"] = (rss_fit - cell["rss_ready_kb"]) / 1024.0
                cell["memory_method"] = "growth of the process's peak RSS"
    samples = [f["seconds"] for f in warm]
    if samples:
        cell["samples"] = samples
        cell["batch"] = warm[0].get("batch", 1)
        cell["median"] = statistics.median(samples)
        cell["min"] = min(samples)
        cell["max"] = max(samples)
    elif cold:
        # too slow for repeats within the budget: the single (cold) fit is all we have
        cell["samples"] = [cold[0]["seconds"]]
        cell["median"] = cold[0]["seconds"]
        cell["cold_only"] = True
    if fits and cell["status"] in ("timeout", "memory"):
        cell["status"] = "partial"
        cell["reason"] = f"stopped at the time limit after {len(fits)} fit(s)"
    return cell


def python_cmd(spec):
    return [sys.executable, WORKER, json.dumps(spec)]


def r_cmd(spec, problem):
    r_spec = dict(spec)
    r_spec.update(
        kind=problem.kind, formula=problem.formula, family=problem.family, reml=problem.reml,
        factors=list(problem.factors), theta=list(problem.theta),
    )
    return [problems.rscript(), "--vanilla", R_WORKER, json.dumps(r_spec)]


# --- agreement --------------------------------------------------------------------------------


def _norm_name(name):
    n = str(name).replace("[T.", "").replace("]", "")
    return "(Intercept)" if n in ("Intercept", "const") else n


def check_agreement(problem, cells):
    """Compare each engine's criterion (or objective value) with lme4's (else mixedfit's)."""
    key = "objective" if problem.kind == "objective" else "m2ll"

    def value(c):
        v = (c.get("estimates") or {}).get(key)
        return v if isinstance(v, (int, float)) else None

    ref_engine = next((e for e in ("lme4", "mixedfit") if e in cells and value(cells[e]) is not None), None)
    out = {"reference": ref_engine, "key": key, "tolerance_rel": AGREE_REL_TOL, "engines": {}}
    if ref_engine is None:
        return out
    ref = value(cells[ref_engine])
    ref_fe = {_norm_name(k): v for k, v in (cells[ref_engine].get("estimates") or {}).get("fixef", {}).items()}
    for eng, c in cells.items():
        v = value(c)
        est = c.get("estimates") or {}
        if v is None:
            if est:
                out["engines"][eng] = {"compared": False,
                                       "note": est.get("note", f"no {key} reported")}
            continue
        diff = v - ref
        rel = abs(diff) / max(abs(ref), 1.0)
        entry = {"compared": True, "value": v, "diff": diff, "rel_diff": rel,
                 "agree": rel <= AGREE_REL_TOL}
        fe = {_norm_name(k): x for k, x in est.get("fixef", {}).items()}
        common = [k for k in ref_fe if k in fe]
        if common and eng != ref_engine:
            entry["fixef_max_abs_diff"] = max(abs(fe[k] - ref_fe[k]) for k in common)
            entry["fixef_compared"] = len(common)
        out["engines"][eng] = entry
    return out


# --- main -----------------------------------------------------------------------------------------


def machine_info():
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                        capture_output=True, text=True).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "python", "cpp"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        info["worktree_dirty"] = bool(dirty)
    except OSError:
        pass
    return info


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", default="all",
                    help="comma-separated problem names or groups (all, lmm, glmm, objective, small)")
    ap.add_argument("--engines", default=",".join(ALL_ENGINES), help="comma-separated engines")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed samples per engine and problem (default: 11 small, 5 medium, 3 large)")
    ap.add_argument("--quick", action="store_true",
                    help="small problems only, 3 repeats (smoke test)")
    ap.add_argument("--no-r", action="store_true", help="skip lme4 (its columns are marked missing)")
    ap.add_argument("--compare", action="store_true",
                    help="after the run, print the change against results/baseline.json")
    ap.add_argument("--compare-only", action="store_true",
                    help="do not run: compare results/latest.json with the baseline")
    ap.add_argument("--save-baseline", action="store_true",
                    help="also store this run as results/baseline.json")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per fit (default 120)")
    ap.add_argument("--r-timeout", type=float, default=600.0,
                    help="seconds allowed per lme4 fit, the reference (default 600)")
    ap.add_argument("--budget", type=float, default=240.0,
                    help="seconds of repeats per engine and problem before stopping early (default 240)")
    ap.add_argument("--mem-limit-gb", type=float, default=12.0,
                    help="stop a child process whose resident memory exceeds this many GiB (0: no limit)")
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="threads of NumPy's/SciPy's BLAS in every child (default 1; 0: leave alone)")
    ap.add_argument("--threads", type=int, default=None,
                    help="set OMP/OpenBLAS/MKL/Rayon thread counts of every engine")
    ap.add_argument("--list", action="store_true", help="list the problems and exit")
    ap.add_argument("--out", default=os.path.join(RESULTS, "latest.json"), help="results JSON")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    latest = args.out
    baseline = os.path.join(RESULTS, "baseline.json")
    if args.list:
        for name, p in problems.PROBLEMS.items():
            log(f"{name:22s} {p.kind:9s} {p.size:6s} {p.n_rows:>9,} rows  {p.formula}")
        for alias, members in problems.ALIASES.items():
            log(f"{alias:22s} = {','.join(members)}")
        return 0
    if args.compare_only:
        with open(latest) as fh:
            cur = json.load(fh)
        report.print_compare(cur, baseline)
        return 0

    names = problems.QUICK if args.quick and args.problems == "all" else args.problems.split(",")
    names = problems.resolve([n.strip() for n in names if n.strip()])
    if args.quick:
        names = [n for n in names if problems.PROBLEMS[n].size == "small"]
    engine_names = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in engine_names:
        if e not in ALL_ENGINES:
            raise SystemExit(f"unknown engine {e!r}; known: {', '.join(ALL_ENGINES)}")

    r_available = not args.no_r and "lme4" in engine_names and problems.r_has_lme4()
    if "lme4" in engine_names and not r_available:
        log("lme4: " + ("skipped (--no-r)" if args.no_r else "R with lme4 not found: lme4 columns are marked missing"))

    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    # BLAS threads: the peers call BLAS on tiny vectors (e.g. inside SciPy's L-BFGS-B), where
    # a second BLAS thread only adds wake-up stalls that depend on the machine's load (on a
    # busy 2-core machine, 20x on sleepstudy). R's reference BLAS is single-threaded too.
    if args.blas_threads:
        for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
            env[var] = str(args.blas_threads)
    if args.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
            env[var] = str(args.threads)

    results = {
        "schema": 1,
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "settings": {"timeout_per_fit_s": args.timeout, "r_timeout_per_fit_s": args.r_timeout,
                     "budget_s": args.budget,
                     "mem_limit_gib": args.mem_limit_gb, "threads": args.threads,
                     "blas_threads": args.blas_threads,
                     "quick": args.quick, "agree_rel_tol": AGREE_REL_TOL,
                     "thread_env": {v: env.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                            "MKL_NUM_THREADS", "RAYON_NUM_THREADS")}},
        "r_available": r_available,
        "problems": {},
    }

    for name in names:
        problem = problems.PROBLEMS[name]
        repeats = args.repeats if args.repeats is not None else (3 if args.quick else DEFAULT_REPEATS[problem.size])
        log(f"== {name}: {problem.formula}  [{problem.kind}{', ' + problem.family if problem.kind == 'glmm' else ''}"
            f"{', REML' if problem.kind != 'glmm' and problem.reml else ''}]")
        entry = {"kind": problem.kind, "formula": problem.formula, "family": problem.family,
                 "reml": problem.reml if problem.kind != "glmm" else None,
                 "data": os.path.relpath(problems.csv_path(problem.dataset), REPO),
                 "rows": problem.n_rows, "description": problem.description,
                 "repeats": repeats, "engines": {}}
        if problem.kind == "objective":
            entry["theta"] = list(problem.theta)
        results["problems"][name] = entry
        try:
            csv = problems.ensure_data(problem, log=log)
        except problems.DataUnavailable as e:
            entry["skipped"] = str(e)
            log(f"  SKIPPED: {e}")
            continue
        entry["data"] = os.path.relpath(csv, REPO)
        spec = {"problem": name, "csv": entry["data"], "repeats": repeats, "budget": args.budget,
                "min_sample_seconds": 0.2, "min_batch_seconds": 0.2}
        for eng in engine_names:
            if eng == "lme4":
                if not r_available:
                    entry["engines"][eng] = {"engine": eng, "status": "missing",
                                             "reason": "R/lme4 not run" if args.no_r else "R with lme4 not installed"}
                    continue
                cmd = r_cmd(spec, problem)
            else:
                cmd = python_cmd(dict(spec, engine=eng))
            fit_timeout = args.r_timeout if eng == "lme4" else args.timeout
            cell_limits = {"fit_timeout": fit_timeout, "mem_gib": args.mem_limit_gb,
                           "total_timeout": args.budget + 2 * fit_timeout + 120}
            t0 = time.monotonic()
            events, status, stderr = run_child(cmd, env, fit_timeout, 300.0,
                                               cell_limits["total_timeout"], args.mem_limit_gb)
            cell = summarize(eng, problem, events, status, stderr, cell_limits)
            cell["wall_seconds"] = round(time.monotonic() - t0, 2)
            entry["engines"][eng] = cell
            log("  " + report.cell_line(problem, cell))
        entry["agreement"] = check_agreement(problem, entry["engines"])
        for eng, a in entry["agreement"]["engines"].items():
            if a.get("compared") and not a["agree"]:
                log(f"  DISAGREE: {eng} {entry['agreement']['key']} = {a['value']:.6f}, "
                    f"{entry['agreement']['reference']} = {a['value'] - a['diff']:.6f} (rel {a['rel_diff']:.2e})")
        _write(results, latest)  # keep what finished, even if a later problem fails

    try:
        results["machine"]["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    results["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    _write(results, latest)
    md = report.markdown(results)
    md_path = os.path.splitext(latest)[0] + ".md"
    with open(md_path, "w") as fh:
        fh.write(md)
    log("")
    log(md)
    log(f"wrote {os.path.relpath(latest, REPO)} and {os.path.relpath(md_path, REPO)}")
    if args.save_baseline:
        shutil.copyfile(latest, baseline)
        log(f"stored as baseline: {os.path.relpath(baseline, REPO)}")
    if args.compare:
        report.print_compare(results, baseline)
    return 0


def _write(results, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(results, fh, indent=1, sort_keys=False)
        fh.write("\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
