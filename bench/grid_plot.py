"""Plot the size grid: fit time against rows, log-log, one line per engine and model shape.

    python bench/run.py --problems grid --out bench/results/grid.json
    python bench/grid_plot.py bench/results/grid.json    # -> bench/results/size_grid.png and .md

Reads the JSON that run.py writes (the medians of its repeats); a point is drawn only where
the engine finished (timeouts, memory stops and unsupported problems leave a gap). Also writes
the table of medians and of each engine's time divided by mixedfit's (grid.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import problems  # noqa: E402
from report import fmt_time  # noqa: E402

ENGINE_STYLE = {"mixedfit": ("C0", "o"), "lme4": ("C3", "s"), "glmm": ("C2", "^"),
                "mixedlm": ("C1", "v"), "statsmodels": ("C4", "D")}


def grid_medians(results: dict) -> dict:
    """{shape: {engine: [(rows, median seconds), ...]}} for the grid problems in results."""
    out: dict = {}
    for name, rec in results["problems"].items():
        prob = problems.PROBLEMS.get(name)
        if prob is None or "grid" not in prob.extra:
            continue
        for engine, cell in rec["engines"].items():
            if cell.get("status") == "ok" and cell.get("median") is not None:
                out.setdefault(prob.extra["grid"], {}).setdefault(engine, []).append(
                    (prob.n_rows, cell["median"]))
    for engines in out.values():
        for points in engines.values():
            points.sort()
    return out


def table(medians: dict) -> str:
    """Markdown: one table per model shape, rows by size, a column per engine with its median
    and, for the others, their time / mixedfit's (above 1x mixedfit is faster)."""
    out = ["Median fit time; in parentheses the engine's time ÷ mixedfit's (above 1× mixedfit "
           "is faster)."]
    for shape, engines in medians.items():
        ours = dict(engines.get("mixedfit", []))
        names = list(engines)
        sizes = sorted({rows for points in engines.values() for rows, _ in points})
        model = next(p.formula for p in problems.GRID if p.extra["grid"] == shape)
        out += ["", f"### {shape}: `{model}`", "",
                "| rows | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
        for rows in sizes:
            cells = []
            for engine in names:
                t = dict(engines[engine]).get(rows)
                if t is None:
                    cells.append("—")
                elif engine == "mixedfit" or rows not in ours:
                    cells.append(fmt_time(t))
                else:
                    cells.append(f"{fmt_time(t)} ({t / ours[rows]:.2f}×)")
            out.append(f"| {rows:,} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def plot(medians: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(problems.GRID_SIZES)
    fig, axes = plt.subplots(1, len(shapes), figsize=(4.2 * len(shapes), 3.8), squeeze=False)
    for ax, shape in zip(axes[0], shapes):
        for engine, points in medians.get(shape, {}).items():
            color, marker = ENGINE_STYLE.get(engine, ("k", "x"))
            rows, secs = zip(*points)
            ax.loglog(rows, secs, marker=marker, color=color, label=engine)
        model = next(p.formula for p in problems.GRID if p.extra["grid"] == shape)
        ax.set_title(f"{shape}: {model}", fontsize=9)
        ax.set_xlabel("rows")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("formula-to-result time (s, median)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nwrote {path}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="JSON written by run.py --problems grid")
    ap.add_argument("--out", default=os.path.join(problems.BENCH_DIR, "results", "size_grid.png"))
    args = ap.parse_args(argv)
    with open(args.results, encoding="utf-8") as fh:
        medians = grid_medians(json.load(fh))
    if not medians:
        raise SystemExit(f"{args.results} has no grid problems (run.py --problems grid)")
    text = table(medians)
    print(text)
    md = os.path.splitext(args.out)[0] + ".md"
    with open(md, "w", encoding="utf-8") as fh:
        fh.write(f"# Size grid\n\nFrom `{os.path.basename(args.results)}`, plotted in "
                 f"`{os.path.basename(args.out)}`.\n\n" + text)
    print(f"wrote {md}")
    plot(medians, args.out)


if __name__ == "__main__":
    main()
