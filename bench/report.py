"""Markdown tables and the baseline comparison for the benchmark results JSON."""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import problems  # noqa: E402

ENGINE_ORDER = ["mixedfit", "lme4", "glmm", "mixedlm", "statsmodels"]
PEERS = ["glmm", "mixedlm", "statsmodels"]


def fmt_time(s):
    if s is None:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1.0:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def fmt_ratio(r):
    if r is None:
        return "—"
    if r >= 100:
        return f"{r:.0f}×"
    if r >= 10:
        return f"{r:.1f}×"
    return f"{r:.2f}×"


def _median(cell):
    if not cell or cell.get("status") not in ("ok", "partial"):
        return None
    return cell.get("median")


def cell_line(problem, cell):
    """One log line per finished engine run."""
    name = cell["engine"]
    st = cell.get("status")
    med = cell.get("median")
    if med is not None:
        unit = "per evaluation" if problem.kind == "objective" else "median"
        n = len(cell.get("samples", []))
        extra = " (cold fit only)" if cell.get("cold_only") else ""
        mem = f", fit peak +{cell['fit_peak_rss_delta_mb']:.0f} MiB" if "fit_peak_rss_delta_mb" in cell else ""
        est = cell.get("estimates") or {}
        val = est.get("objective", est.get("m2ll"))
        crit = f", criterion {val:.4f}" if isinstance(val, (int, float)) else ""
        return f"{name:12s} {fmt_time(med):>10s} {unit} of {n}{extra}{mem}{crit}" + (
            f"  [{st}: {cell.get('reason')}]" if st != "ok" else "")
    return f"{name:12s} {st}: {cell.get('reason', '')}"


def _status_text(cell, notes):
    if not cell:
        return "—"  # engine not selected for this run
    st = cell.get("status", "missing")
    reason = (cell or {}).get("reason")
    if reason:
        if reason not in notes:
            notes.append(reason)
        return f"{st} [{notes.index(reason) + 1}]"
    return st


def markdown(results):
    m = results.get("machine", {})
    lines = ["# Benchmark results", ""]
    lines.append(f"Run {results.get('started', '?')} on {m.get('cpu', m.get('machine', '?'))}, "
                 f"{m.get('cpus', '?')} CPUs, Python {m.get('python', '?')}"
                 + (f"; mixedfit at commit {m['commit']}" + (" (uncommitted changes)" if m.get("worktree_dirty") else "")
                    if m.get("commit") else "") + ".")
    la0, la1 = m.get("loadavg_start"), m.get("loadavg_end")
    if la0:
        lines.append(f"Load average (1 min) at start {la0[0]:.2f}" + (f", at end {la1[0]:.2f}" if la1 else "") + ".")
    lines.append(f"Command: `{results.get('command', '')}`")
    lines.append("")
    versions = {}
    for p in results["problems"].values():
        for eng, c in p.get("engines", {}).items():
            if c.get("version") and eng not in versions:
                versions[eng] = c["version"]
    if versions:
        lines.append("Versions: " + "; ".join(f"{e} {v}" for e, v in versions.items()) + ".")
        lines.append("")
    notes: list = []

    fit_probs = {k: v for k, v in results["problems"].items() if v["kind"] != "objective"}
    if fit_probs:
        lines += [
            "## Formula-to-result wall time (median)",
            "",
            "Median over the timed repeats (each after one cold and one warm-up fit; fits shorter "
            "than 0.2 s are timed in batches). Ratios are engine ÷ mixedfit: above 1× means mixedfit "
            "is faster.",
            "",
            "| problem | rows | mixedfit | lme4 | lme4 ÷ mixedfit (target) | glmm | mixedlm | statsmodels "
            "| fastest peer ÷ mixedfit |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, p in fit_probs.items():
            if p.get("skipped"):
                if p["skipped"] not in notes:
                    notes.append(p["skipped"])
                lines.append(f"| {name} | {p['rows']:,} | skipped [{notes.index(p['skipped']) + 1}] "
                             "| | | | | | |")
                continue
            lines.append(_time_row(name, p, notes))
        lines.append("")

    obj_probs = {k: v for k, v in results["problems"].items() if v["kind"] == "objective"}
    if obj_probs:
        lines += [
            "## Profiled objective at a fixed theta (time per evaluation, median)",
            "",
            "| problem | theta | mixedfit | lme4 (devFunOnly) | lme4 ÷ mixedfit | mixedlm | mixedlm ÷ mixedfit |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for name, p in obj_probs.items():
            if p.get("skipped"):
                if p["skipped"] not in notes:
                    notes.append(p["skipped"])
                lines.append(f"| {name} | | skipped [{notes.index(p['skipped']) + 1}] | | | | |")
                continue
            e = p["engines"]
            mf = _median(e.get("mixedfit"))
            cells = []
            for eng in ("mixedfit", "lme4", "mixedlm"):
                c = e.get(eng)
                med = _median(c)
                cells.append(fmt_time(med) if med is not None else _status_text(c, notes))
                if eng != "mixedfit":
                    cells.append(fmt_ratio(med / mf) if med is not None and mf else "—")
            theta = ", ".join(f"{t:g}" for t in p.get("theta", []))
            lines.append(f"| {name} | ({theta}) | " + " | ".join(cells) + " |")
        lines.append("")

    lines += [
        "## Do the engines agree?",
        "",
        "Criterion: the REML criterion (LMM), −2 log-likelihood (GLMM, Laplace) or the objective "
        "value at the fixed theta; compared with lme4's (mixedfit's when lme4 did not run). "
        "Flagged when the relative difference exceeds "
        f"{results.get('settings', {}).get('agree_rel_tol', 1e-3):g}. A negative difference means "
        "a lower (better) criterion than the reference.",
        "",
        "| problem | engine | criterion | difference | relative | max abs fixef difference | agrees |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, p in results["problems"].items():
        ag = p.get("agreement") or {}
        for eng in ENGINE_ORDER:
            a = (ag.get("engines") or {}).get(eng)
            if not a:
                continue
            if not a.get("compared"):
                lines.append(f"| {name} | {eng} | — | | | | not compared: {a.get('note', '')} |")
                continue
            is_ref = eng == ag.get("reference")
            fe = a.get("fixef_max_abs_diff")
            diff = "" if is_ref else "%+.2e" % a["diff"]
            rel = "" if is_ref else "%.1e" % a["rel_diff"]
            fes = "" if fe is None else "%.1e" % fe
            ref_tag = " (reference)" if is_ref else ""
            agree = "yes" if a["agree"] else "**NO**"
            lines.append(f"| {name} | {eng}{ref_tag} | {a['value']:.6f} | {diff} | {rel} | {fes} | {agree} |")
    lines.append("")

    mem_rows = []
    for name, p in fit_probs.items():
        cells = []
        for eng in ENGINE_ORDER:
            c = p.get("engines", {}).get(eng) or {}
            if "fit_peak_rss_delta_mb" in c:
                cold = c.get("cold_fit_peak_rss_delta_mb")
                cold_text = f"; cold +{cold:.0f}" if cold is not None else ""
                cells.append(f"+{c['fit_peak_rss_delta_mb']:.0f} ({c['peak_rss_mb']:.0f}{cold_text})")
            else:
                cells.append("—")
        if any(x != "—" for x in cells):
            mem_rows.append(f"| {name} | " + " | ".join(cells) + " |")
    if mem_rows:
        lines += [
            "## Peak memory of one fit (MiB)",
            "",
            "Peak resident set of the child process during a warm fit (its second) minus its "
            "resident set just before that fit: what one fit needs above the data and the "
            "imported engine (the kernel's peak mark is reset before the fit via "
            "/proc/self/clear_refs). In parentheses: the process's peak during that fit, and "
            "the same difference for the cold first fit, which also pays first-call costs "
            "(modules imported on first use, caches).",
            "",
            "| problem | " + " | ".join(ENGINE_ORDER) + " |",
            "|---|" + "---:|" * len(ENGINE_ORDER),
        ] + mem_rows + [""]

    if notes:
        lines += ["## Notes", ""]
        lines += [f"{i + 1}. {n}" for i, n in enumerate(notes)]
        lines.append("")
    return "\n".join(lines)


def _time_row(name, p, notes):
    e = p["engines"]
    mf = _median(e.get("mixedfit"))
    prob = problems.PROBLEMS.get(name)
    target = prob.target_vs_lme4 if prob else 0

    def tcell(eng):
        c = e.get(eng)
        med = _median(c)
        if med is None:
            return _status_text(c, notes)
        s = fmt_time(med)
        if c.get("cold_only"):
            s += " (1 cold fit)"
        if c.get("status") == "partial":
            s += " (partial)"
        return s

    def with_ratio(eng):
        med = _median(e.get(eng))
        s = tcell(eng)
        if med is not None and mf:
            s += f" ({fmt_ratio(med / mf)})"
        return s

    lme = _median(e.get("lme4"))
    ratio = fmt_ratio(lme / mf) if lme is not None and mf else "—"
    if target:
        ratio += f" (≥{target:g}×)"
    peer_meds = [(_median(e.get(x)), x) for x in PEERS if _median(e.get(x)) is not None]
    fastest = "—"
    if peer_meds and mf:
        med, who = min(peer_meds)
        fastest = f"{fmt_ratio(med / mf)} ({who})"
    return (f"| {name} | {p['rows']:,} | {tcell('mixedfit')} | {tcell('lme4')} | {ratio} | "
            f"{with_ratio('glmm')} | {with_ratio('mixedlm')} | {with_ratio('statsmodels')} | {fastest} |")


# --- compare against the baseline ------------------------------------------------------------


def print_compare(cur, baseline_path, out=print):
    if not os.path.exists(baseline_path):
        out(f"no baseline at {os.path.relpath(baseline_path)}: store one with --save-baseline")
        return
    with open(baseline_path) as fh:
        base = json.load(fh)
    bm, cm = base.get("machine", {}), cur.get("machine", {})
    out("")
    out(f"Change against the baseline ({base.get('started', '?')}, commit {bm.get('commit', '?')}) "
        f"-> this run ({cur.get('started', '?')}, commit {cm.get('commit', '?')})")
    if bm.get("cpu") != cm.get("cpu"):
        out("  note: different CPU model; compare the ratios to lme4 rather than the times")
    out("")
    header = f"{'problem':22s} {'engine':20s} {'baseline':>10s} {'now':>10s} {'change':>9s}"
    out(header)
    out("-" * len(header))
    for name, p in cur["problems"].items():
        bp = base.get("problems", {}).get(name)
        if not bp:
            out(f"{name:22s} (not in the baseline)")
            continue
        for eng in ENGINE_ORDER:
            a = _median(bp.get("engines", {}).get(eng))
            b = _median(p.get("engines", {}).get(eng))
            if a is None and b is None:
                continue
            change = f"{(b / a - 1) * 100:+.1f}%" if a and b else "—"
            out(f"{name:22s} {eng:20s} {fmt_time(a):>10s} {fmt_time(b):>10s} {change:>9s}")
        for who in ("lme4",) + tuple(PEERS):
            ra = _ratio(bp, who)
            rb = _ratio(p, who)
            if ra is None and rb is None:
                continue
            label = f"{who}÷mixedfit"
            out(f"{name:22s} {label:20s} {fmt_ratio(ra):>10s} {fmt_ratio(rb):>10s}")
        for eng, a in ((p.get("agreement") or {}).get("engines") or {}).items():
            if a.get("compared") and not a.get("agree"):
                out(f"{name:22s} {eng:20s} DISAGREES with the reference (rel {a['rel_diff']:.1e})")
    out("")
    out("Change is (now / baseline - 1) of the median time: negative is faster. On a shared, noisy "
        "machine the ratio to lme4, measured in the same run, is the steadier number.")


def _ratio(p, who):
    e = p.get("engines", {})
    a, b = _median(e.get(who)), _median(e.get("mixedfit"))
    return a / b if a is not None and b else None


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(problems.BENCH_DIR, "results", "latest.json")
    with open(path) as fh:
        print(markdown(json.load(fh)))
