"""The ``mixedfit`` command.

``mixedfit demo [--out DIR] [--quick] [--no-bayes]``
    Shrinkage demonstration on simulated data: six settings of random intercepts and slopes, a
    Bernoulli GLMM and (with the optional extra mixedfit[bayes]) a Bayesian cross-check by
    MCMC; prints the summaries and a comparison table, writes PNG plots, GIF animations, CSV
    tables and an ``index.html`` report. Progress goes to stderr only.
``mixedfit fit DATA --formula "y ~ x + (x | g)" [--family binomial] [--ml] [--nagq K] [--json]``
    Fits a model to a CSV (or Parquet, with pyarrow) file and prints the summary or JSON.

Exit status: 0 on success, 2 for bad input (missing or unreadable file, bad formula, unusable
data, bad options), 1 when the model cannot be fitted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = ["main", "DEMO_SETTINGS", "BAYES_FULL", "BAYES_QUICK"]

EXIT_OK, EXIT_FIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _BadInput(Exception):
    """An input problem reported as ``mixedfit <cmd>: error: ...`` with exit status 2."""


# ---------------------------------------------------------------------------------------------
# the demonstration
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoSetting:
    slug: str
    title: str
    params: dict
    text: tuple


DEMO_SETTINGS = (
    DemoSetting(
        "baseline", "Baseline", {},
        ("100 clusters of 10 observations, random intercepts (SD 0.5) and random slopes "
         "(SD 0.25) around a population intercept of 1 and slope of 0.5, residual SD 1.",
         "Each light point is a cluster's own regression line (no pooling); the arrow ends at "
         "the mixed model's estimate for that cluster (partial pooling). The cluster estimates "
         "are drawn toward the population average, and the ones that started furthest out move "
         "the most: the normal distribution assumed for the random effects makes extreme "
         "values improbable. The slopes shrink more than the intercepts because their "
         "variance is small next to how noisily ten points pin a slope down."),
    ),
    DemoSetting(
        "more-cluster-variance", "More cluster-level variance", {"sd_int": 1.0, "sd_slope": 1.0},
        ("Random-effect SDs of 1 for both intercepts and slopes, everything else as in the "
         "baseline.",
         "With clusters that genuinely differ a lot, large deviations from the average are "
         "plausible, so the model trusts each cluster's own data more: the arrows are short "
         "and the cloud of estimates keeps most of its spread."),
    ),
    DemoSetting(
        "more-slope-variance", "More slope variance", {"sd_int": 0.25, "sd_slope": 1.0},
        ("Intercept SD 0.25 and slope SD 1.",
         "The picture turns on its side: the slopes now vary widely and are barely shrunk, "
         "while the intercepts, which vary little between clusters, are pulled strongly toward "
         "the population value, so the movement is mostly along the intercept axis."),
    ),
    DemoSetting(
        "fewer-observations", "Fewer observations per cluster", {"obs_per_cluster": 3},
        ("3 observations per cluster.",
         "With three points a cluster's own regression is very noisy and often extreme, and "
         "the model knows little about each cluster, so it leans heavily on the population "
         "average: the cloud of cluster estimates collapses toward it."),
    ),
    DemoSetting(
        "more-observations", "More observations per cluster", {"obs_per_cluster": 100},
        ("100 observations per cluster.",
         "Each cluster's own estimate is already precise and rarely extreme, so the mixed "
         "model hardly moves it: shrinkage is small except for the few clusters that still "
         "stand out."),
    ),
    DemoSetting(
        "unbalanced", "Unbalanced clusters",
        {"balanced": 0.5, "sd_int": 0.5, "sd_slope": 0.5, "sigma": 0.25},
        ("Half of the rows dropped at random (clusters of different sizes), random-effect SDs "
         "0.5, residual SD 0.25. Point size shows the cluster size.",
         "Small clusters move further toward the population average than large ones, tempered "
         "by the variance components: with a small residual SD even small clusters carry a "
         "fair amount of information."),
    ),
)

BERNOULLI_TEXT = (
    "30 groups of 10 Bernoulli trials; each group's success probability has a logit drawn "
    "from a normal distribution around logit(0.7) with SD 1; the model is "
    "result ~ 1 + (1 | subject) with the binomial family.",
    "The estimated probabilities are higher than the observed proportions for groups with few "
    "successes and lower for groups with many, and close to them near the overall rate: not a "
    "bias of the fitting method but the same shrinkage as in the linear model. With only ten "
    "trials a proportion of 0 or 1 is common, and the model refuses to believe such a group "
    "never (or always) succeeds. The no-pooling estimates are the observed proportions, on the "
    "probability scale (their logits are infinite at 0 and 1).",
)


class _Progress:
    """Progress on stderr, never on stdout.

    On a terminal, a bar redrawn in place (``[#######-------]  3/9  Baseline: fit``), taken
    down before anything is printed to stdout (:meth:`echo`) and drawn again after it, so the
    two streams never share a line; each finished step also leaves a line
    ``[k/n] step: ... - done (1.2 s)``. Elsewhere (a file, a pipe) only those complete lines.
    """

    WIDTH = 24

    def __init__(self, total: int, quiet: bool, stream=None):
        self.total, self.quiet = total, quiet
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.k, self.what, self.steps = 0, "", []
        self.t0 = self.t = time.perf_counter()
        self.shown = False

    def _write(self, text: str):
        if not self.quiet:
            self.stream.write(text)
            self.stream.flush()

    def _draw(self):
        if self.quiet or not self.tty:
            return
        filled = round(self.WIDTH * (self.k - 1) / self.total)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        step = self.steps[-1] if self.steps else ""
        self._write(f"\r\x1b[K[{bar}] {self.k}/{self.total}  {self.what}: {step}")
        self.shown = True

    def _clear(self):
        if self.shown:
            self._write("\r\x1b[K")
            self.shown = False

    def start(self, what: str):
        self.k += 1
        self.what, self.steps = what, []
        self.t = time.perf_counter()
        self._draw()

    def step(self, what: str):
        self.steps.append(what)
        self._draw()

    def echo(self, text: str = "", file=None):
        """Print a line to stdout (or ``file``) without tangling it with the bar."""
        self._clear()
        print(text, file=file if file is not None else sys.stdout, flush=True)
        self._draw()

    def done(self):
        self._clear()
        self._write(f"[{self.k}/{self.total}] {self.what}: {' '.join(self.steps)} - done "
                    f"({time.perf_counter() - self.t:.1f} s)\n")

    def finish(self, msg: str):
        self._clear()
        self._write(f"{msg} ({time.perf_counter() - self.t0:.1f} s in all)\n")


def _demo_code(kind: str, params: dict, n_cluster: int, seed: int) -> str:
    if kind == "bernoulli":
        return ("import mixedfit\nfrom mixedfit import simulate\n\n"
                f"df = simulate.bernoulli_groups(n_groups=30, n_trials=10, p0=0.7, "
                f"sd_logit=1.0, seed={seed})\n"
                'fit = mixedfit.glmer("result ~ (1 | subject)", df, family="binomial")\n'
                "print(fit.summary())")
    args = dict(params)
    if n_cluster != 100:
        args["n_cluster"] = n_cluster
    args["seed"] = seed
    arg_text = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return ("import mixedfit\nfrom mixedfit import simulate\n\n"
            f"df = simulate.clustered({arg_text})\n"
            'fit = mixedfit.lmer("y ~ x + (x | cluster)", df)\n'
            "print(fit.summary())")


# The Bayesian cross-check: MCMC settings of the full demo and of --quick.
# Compiling each new model costs far more than sampling it (about 5-20 CPU seconds), so the
# quick run fits two Bernoulli models and leaves out the random-slopes comparison.
BAYES_FULL = {"chains": 4, "draws": 1000, "tune": 1000, "trials": (10, 20, 50, 100),
              "slopes": True}
BAYES_QUICK = {"chains": 2, "draws": 300, "tune": 300, "trials": (10, 50), "slopes": False}

BAYES_TEXT = (
    "The same shrinkage, fitted a second way: by MCMC (NUTS, with mixedfit.bayes), with "
    "weakly informative priors. The posterior mean of each group's probability is the "
    "Bayesian's estimate; the glmer estimate is the inverse logit of the conditional mode.",
    "For each number of trials per group J, 30 groups with success probabilities whose logits "
    "are normal around logit(0.5) with SD 0.7 are simulated and fitted both ways. Both sets "
    "of estimates bend away from the identity line toward the overall proportion, less so as "
    "J grows: shrinkage belongs to the model, not to the fitting method. The penalized "
    "residual sum of squares that lme4 minimizes is, group by group, the Bayesian's "
    "log-posterior deviance. Groups with the same observed proportion share one glmer "
    "estimate; their posterior means differ slightly because MCMC is a stochastic algorithm.",
    "Second picture: the baseline's random intercepts and slopes. Arrows run from each "
    "cluster's own regression to lmer's estimate, as above; the triangles are the posterior "
    "means, joined to the conditional modes by thin lines. With {n_cluster} clusters and weak "
    "priors the two nearly coincide.",
)


def _shrinkage_figure(plot, table, sd, title):
    """The shrinkage plot at the shared zoom; with a zoomed-out second panel when more than
    a tenth of the clusters' own estimates fall outside that view (e.g. 3 points per
    cluster). Returns (figure, whether it has the second panel)."""
    import numpy as np

    lims = plot._limits(table, ["(Intercept)", "x"], "auto", 3.0, sd)
    x0 = table["nopool_(Intercept)"].to_numpy(float)
    y0 = table["nopool_x"].to_numpy(float)
    ok = np.isfinite(x0) & np.isfinite(y0)
    outside = ok & (plot._outside(x0, lims[0]) | plot._outside(y0, lims[1]))
    if outside.sum() <= 0.1 * max(ok.sum(), 1):
        return plot.shrinkage_plot(table, sd=sd, title=title), False
    fig = plot._new_figure((13.0, 6.2))
    left, right = fig.subplots(1, 2)
    plot.shrinkage_plot(table, sd=sd, ax=left, title="the zoom shared by all settings")
    plot.shrinkage_plot(table, ax=right, limits="data", title="zoomed out: every cluster in view")
    fig.suptitle(title, fontsize=11)
    return fig, True


def _bayes_section(out, baseline, n_cluster, seed, progress, stdout, options):
    """Fit the seed's Bernoulli comparison per J and the baseline's slopes by MCMC; write the
    pictures and CSV files; return the report's section."""
    import warnings as _w

    import pandas as pd

    import mixedfit

    from . import plot, shrinkage, simulate
    from ._report import Section

    mcmc = {k: options[k] for k in ("chains", "draws", "tune")}
    unconverged = []
    with _w.catch_warnings(record=True) as caught:
        _w.simplefilter("always", mixedfit.BayesConvergenceWarning)
        table, fits = shrinkage.bernoulli_by_trials(
            options["trials"], seed=seed, progress=False, return_fits=True,
            on_fit=lambda j: progress.step(f"J={j}"), **mcmc)
        table.to_csv(out / "bayes_bernoulli.csv", index=False)
        compare = bfit = None
        if options.get("slopes", True):
            progress.step("slopes")
            if baseline is None:
                df = simulate.clustered(n_cluster=n_cluster, seed=seed)
                fit = mixedfit.lmer("y ~ x + (x | cluster)", df)
            else:
                df, fit, _ = baseline
            bfit = mixedfit.bayes("y ~ x + (x | cluster)", df, seed=seed, progress=False, **mcmc)
            compare = shrinkage.compare_bayes(fit, bfit)
            compare.to_csv(out / "bayes_slopes.csv")
    unconverged = [str(w.message) for w in caught
                   if issubclass(w.category, mixedfit.BayesConvergenceWarning)]
    progress.step("plot")
    plot.bayes_proportion_panels(table).savefig(out / "bayes_bernoulli.png", dpi=90)

    gaps = table.assign(gap=(table["glmer"] - table["bayes"]).abs()).groupby("n_trials")["gap"]
    stats = pd.Series({f"largest |glmer - Bayes| probability, J = {j}": v
                       for j, v in gaps.max().items()}, dtype=object)
    if compare is not None:
        plot.bayes_shrinkage_plot(compare, sd=(0.5, 0.25)).savefig(out / "bayes_slopes.png",
                                                                   dpi=100)
        for c in ("(Intercept)", "x"):
            diff = (compare[f"partial_{c}"] - compare[f"bayes_{c}"]).abs()
            stats[f"largest |lmer - Bayes| {'intercept' if c == '(Intercept)' else 'slope'}"] = diff.max()
    summary = str(bfit if bfit is not None else fits[min(fits)][1])
    progress.echo(f"== Bayesian cross-check ==  ({options['chains']} chains x {options['draws']} "
                  "draws)", file=stdout)
    progress.echo(summary, file=stdout)
    progress.echo(stats.to_string(float_format=lambda v: f"{v:.3f}"), file=stdout)
    for msg in unconverged:
        progress.echo(f"warning: {msg}", file=stdout)
    progress.echo(file=stdout)
    text = [BAYES_TEXT[0], BAYES_TEXT[1], BAYES_TEXT[2].format(n_cluster=len(compare))] \
        if compare is not None else list(BAYES_TEXT[:2]) + [
        "(The random-slopes comparison is left out of the quick run; run the demo without "
        "--quick for it.)"]
    if unconverged:
        text.append(f"{len(unconverged)} of the MCMC runs did not pass the convergence checks "
                    "(see the printed warnings); run the full demo for longer chains.")
    code = ("import mixedfit\nfrom mixedfit import plot, shrinkage, simulate\n\n"
            f"table = shrinkage.bernoulli_by_trials({tuple(options['trials'])!r}, seed={seed})\n"
            "plot.bayes_proportion_panels(table).savefig('bayes_bernoulli.png')\n\n"
            f"df = simulate.clustered(n_cluster={n_cluster}, seed={seed})\n"
            'fit = mixedfit.lmer("y ~ x + (x | cluster)", df)\n'
            f'post = mixedfit.bayes("y ~ x + (x | cluster)", df, seed={seed})\n'
            "print(post.summary())\n"
            "plot.bayes_shrinkage_plot(shrinkage.compare_bayes(fit, post))")
    images = [("bayes_bernoulli.png",
               "Observed proportion against estimate, one panel per number of trials J: glmer "
               "(circles) and the Bayesian posterior means (triangles); dashed: identity, "
               "dotted: overall proportion."),
              ("bayes_slopes.png",
               "Random intercepts and slopes: no pooling to lmer's estimates (arrows), and the "
               "posterior means (triangles).")]
    files = [("bayes_bernoulli.csv", "proportions and both estimates per group and J"),
             ("bayes_slopes.csv", "per-cluster estimates, with the posterior means")]
    if compare is None:
        images, files = images[:1], files[:1]
    return Section("bayes", "Bayesian cross-check", text, code, summary, stats, images, files)


def run_demo(out="mixedfit-demo", n_cluster: int = 100, seed: int = 888, frames: int = 24,
             animate: bool = True, quiet: bool = False, stdout=None, settings=None,
             bayes=None, bayes_options=None) -> Path:
    """Run the shrinkage demonstration; returns the path of the report (``index.html``).

    ``bayes``: add the Bayesian cross-check (True), leave it out (False) or add it when the
    optional extra is installed (None, the default). ``bayes_options`` overrides
    :data:`BAYES_FULL` (chains, draws, tune, trials).
    """
    import pandas as pd

    import mixedfit

    from . import plot, shrinkage, simulate
    from ._report import Section, write_report

    stdout = stdout if stdout is not None else sys.stdout
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise _BadInput(f"output path {str(out)!r} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _BadInput(f"cannot create the output directory {str(out)!r}: {exc.strerror or exc}") from exc
    chosen = DEMO_SETTINGS if settings is None else tuple(s for s in DEMO_SETTINGS if s.slug in settings)
    from .bayesian import available

    with_bayes = available() if bayes is None else bool(bayes)
    progress = _Progress(len(chosen) + 2 + with_bayes, quiet)
    baseline = None
    sections, rows = [], {}
    base_sd = (0.5, 0.25)   # the baseline's random-effect SDs: the zoom of every picture
    baseline_truth = {"sd_int": 0.5, "sd_slope": 0.25}
    for setting in chosen:
        progress.start(setting.title)
        progress.step("simulate")
        df = simulate.clustered(n_cluster=n_cluster, seed=seed, **setting.params)
        progress.step("fit")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = mixedfit.lmer("y ~ x + (x | cluster)", df, data_name="df")
        summary = str(fit.summary())
        header = f"== {setting.title} ==  ({len(df)} observations, {df['cluster'].nunique()} clusters)"
        progress.echo(header, file=stdout)
        progress.echo(summary, file=stdout)
        for w in caught:
            progress.echo(f"warning: {w.message}", file=stdout)
        progress.echo(file=stdout)
        table = shrinkage.pooling_table(fit)
        table.to_csv(out / f"{setting.slug}_pooling.csv")
        stats = shrinkage.describe(table)
        progress.step("plot")
        sd = (max(base_sd[0], setting.params.get("sd_int", baseline_truth["sd_int"])),
              max(base_sd[1], setting.params.get("sd_slope", baseline_truth["sd_slope"])))
        fig, zoomed_out = _shrinkage_figure(plot, table, sd, f"{setting.title}: y ~ x + (x | cluster)")
        fig.savefig(out / f"{setting.slug}.png", dpi=100)
        caption = ("No pooling (light) to partial pooling (dark); the black point is the "
                   "population average, the orange cross the complete-pooling regression.")
        if zoomed_out:
            caption += (" Left: the zoom shared by all settings; right: zoomed out so that "
                        "every cluster's own estimate is in view.")
        images = [(f"{setting.slug}.png", caption)]
        if animate:
            progress.step("animate")
            plot.shrinkage_animation(table, out / f"{setting.slug}.gif", sd=sd, frames=frames,
                                     hold=max(1, frames // 6), dpi=80,
                                     title=setting.title)
            images.append((f"{setting.slug}.gif", "The same movement, animated."))
        if setting.slug == "baseline":
            baseline = (df, fit, table)
            fig = plot.caterpillar_plot(fit)
            fig.savefig(out / "baseline_caterpillar.png", dpi=80)
            images.append(("baseline_caterpillar.png",
                           "Conditional modes of the random effects with 95% intervals."))
        text = list(setting.text)
        missing = int(stats["no_estimate"])
        if missing:
            text.append(f"{missing} cluster(s) have fewer than two observations and so no line "
                        "of their own; they appear only at their mixed-model estimate (open "
                        "circles), which the model can still give them.")
        sections.append(Section(setting.slug, setting.title, text,
                                _demo_code("lmm", setting.params, n_cluster, seed), summary,
                                stats, images,
                                [(f"{setting.slug}_pooling.csv", "the estimates per cluster")]))
        vc = fit.varcorr.to_frame()
        rows[setting.title] = {
            "obs": len(df),
            "clusters": int(df["cluster"].nunique()),
            "median n": stats["median_n"],
            "SD int": float(vc["sdcor"].iloc[0]),
            "SD slope": float(vc["sdcor"].iloc[1]),
            "sigma": float(fit.sigma),
            "shrinkage int": stats["median_shrinkage_(Intercept)"],
            "shrinkage slope": stats["median_shrinkage_x"],
            "spread lost int": stats["spread_reduction_(Intercept)"],
            "spread lost slope": stats["spread_reduction_x"],
            "no own fit": int(stats["no_estimate"]),
        }
        progress.done()

    # ---- the Bernoulli GLMM ---------------------------------------------------------------
    progress.start("Bernoulli GLMM")
    progress.step("simulate")
    bern = simulate.bernoulli_groups(n_groups=30, n_trials=10, p0=0.7, sd_logit=1.0, seed=seed)
    progress.step("fit")
    gfit = mixedfit.glmer("result ~ (1 | subject)", bern, family="binomial", data_name="df")
    summary = str(gfit.summary())
    progress.echo("== Bernoulli GLMM ==  (30 groups of 10 trials)", file=stdout)
    progress.echo(summary, file=stdout)
    progress.echo(file=stdout)
    gtable = shrinkage.pooling_table(gfit)
    gtable.to_csv(out / "bernoulli_pooling.csv")
    gstats = shrinkage.describe(gtable)
    progress.step("plot")
    plot.proportion_plot(gtable).savefig(out / "bernoulli_proportions.png", dpi=100)
    plot.shrinkage_plot(gtable).savefig(out / "bernoulli.png", dpi=100)
    plot.caterpillar_plot(gfit).savefig(out / "bernoulli_caterpillar.png", dpi=80)
    images = [("bernoulli_proportions.png",
               "Observed proportion against the estimated probability; points off the dashed "
               "identity line have been shrunk toward the population probability."),
              ("bernoulli.png", "The same estimates on two parallel axes.")]
    if animate:
        progress.step("animate")
        plot.shrinkage_animation(gtable, out / "bernoulli.gif", frames=frames,
                                 hold=max(1, frames // 6), dpi=80, title="Bernoulli GLMM")
        images.append(("bernoulli.gif", "The proportions moving to the model's estimates."))
    images.append(("bernoulli_caterpillar.png",
                   "Conditional modes (logit scale) with 95% intervals."))
    sections.append(Section("bernoulli", "Bernoulli trials (GLMM)", list(BERNOULLI_TEXT),
                            _demo_code("bernoulli", {}, n_cluster, seed), summary, gstats, images,
                            [("bernoulli_pooling.csv", "the estimates per group")]))
    vc = gfit.varcorr.to_frame()
    rows["Bernoulli GLMM"] = {
        "obs": len(bern), "clusters": 30, "median n": gstats["median_n"],
        "SD int": float(vc["sdcor"].iloc[0]), "SD slope": math.nan, "sigma": math.nan,
        "shrinkage int": gstats["median_shrinkage_(Intercept)"], "shrinkage slope": math.nan,
        "spread lost int": gstats["spread_reduction_(Intercept)"], "spread lost slope": math.nan,
        "no own fit": int(gstats["no_estimate"]),
    }
    progress.done()

    # ---- the Bayesian cross-check ---------------------------------------------------------
    bayes_note = None
    if with_bayes:
        progress.start("Bayesian cross-check")
        sections.append(_bayes_section(out, baseline, n_cluster, seed, progress, stdout,
                                       dict(BAYES_FULL, **(bayes_options or {}))))
        progress.done()
    else:
        bayes_note = ("Bayesian cross-check skipped: it needs the optional extra "
                      '(pip install "mixedfit[bayes]").')
        progress.echo(bayes_note, file=stdout)
        progress.echo(file=stdout)

    # ---- comparison and report -----------------------------------------------------------
    progress.start("comparison and report")
    comparison = pd.DataFrame.from_dict(rows, orient="index")
    comparison.index.name = "setting"
    comparison.to_csv(out / "comparison.csv")
    note = ("Shrinkage is the fraction of the way a cluster's estimate moves from its own "
            "regression toward the population value (median over clusters); 'spread lost' is "
            "1 - SD(mixed-model estimates) / SD(own estimates) across clusters; SDs and sigma "
            "are the fitted values. The Bernoulli row is on the probability scale.")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        progress.echo("== Shrinkage across settings ==", file=stdout)
        progress.echo(comparison.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-"),
                      file=stdout)
        progress.echo(note, file=stdout)
    intro = [
        "Mixed models give each cluster its own intercept and slope, but they do not take each "
        "cluster's data at face value: cluster-specific estimates are pulled toward the "
        "population average, more so when a cluster has little data or when clusters differ "
        "little from each other. This is shrinkage, or partial pooling, between the two "
        "extremes of fitting every cluster separately (no pooling) and ignoring the clusters "
        "(complete pooling).",
        "Each section simulates data with mixedfit.simulate, fits y ~ x + (x | cluster) by "
        "REML and shows how the per-cluster regressions move to the mixed model's estimates. "
        f"All six pictures share the zoom of the baseline (population value +/- 3 baseline "
        f"random-effect SDs, widened where a setting's SDs are larger); estimates outside the "
        f"view are marked at the edge and counted under the plot. Seed {seed}.",
    ]
    if bayes_note:
        intro.append(bayes_note)
    closing = [
        "The amount of shrinkage follows from the relative size of two variances: the noise in "
        "a cluster's own estimate (residual variance over cluster size) and the variance of the "
        "random effects. Little data per cluster or little true variation between clusters "
        "means strong pooling; plenty of data or large differences let each cluster speak for "
        "itself. The CSV files next to this page hold the per-cluster numbers: each section "
        "links its own, and the table above is in comparison.csv."
    ]
    path = write_report(out, "Shrinkage in mixed models", intro, comparison, note, sections,
                        closing, comparison_files=[("comparison.csv", "the table above")])
    progress.done()
    progress.finish(f"wrote {path}")
    return path


# ---------------------------------------------------------------------------------------------
# fitting a file
# ---------------------------------------------------------------------------------------------
def read_table(path):
    """Read a CSV/TSV (or Parquet) file into a DataFrame, with clear errors."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise _BadInput(f"file not found: {str(path)!r}")
    if p.is_dir():
        raise _BadInput(f"{str(path)!r} is a directory, not a data file")
    suffix = p.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            try:
                import pyarrow  # noqa: F401
            except ImportError as exc:
                raise _BadInput("reading Parquet files needs pyarrow (pip install pyarrow); "
                                "or save the data as CSV") from exc
            return pd.read_parquet(p)
        sep = "\t" if suffix in (".tsv", ".tab") else ","
        df = pd.read_csv(p, sep=sep)
    except _BadInput:
        raise
    except pd.errors.EmptyDataError as exc:
        raise _BadInput(f"{str(path)!r} is empty: no columns to read") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        kind = "Parquet" if suffix in (".parquet", ".pq") else "CSV"
        raise _BadInput(f"cannot read {str(path)!r} as {kind}: {exc}") from exc
    except Exception as exc:  # pyarrow raises its own error types for corrupt files
        raise _BadInput(f"cannot read {str(path)!r}: {exc}") from exc
    if df.shape[1] < 2 or len(df) == 0:
        raise _BadInput(f"{str(path)!r} has {len(df)} row(s) and {df.shape[1]} column(s): "
                        "not a table a model can be fitted to (wrong separator?)")
    return df


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):
        return _jsonable(v.item())
    return v


_JSON_KEYS = {"Estimate": "estimate", "Std. Error": "std_error", "t value": "t_value",
              "z value": "z_value", "Pr(>|z|)": "p_value"}


def _fixef_record(term, row) -> dict:
    """One fixed effect of ``fit.coefficients()`` with JSON keys (non-finite values -> null)."""
    return {"term": str(term), **{_JSON_KEYS[c]: _jsonable(float(v)) for c, v in row.items()}}


def fit_to_dict(fit, include_ranef: bool = False) -> dict:
    """The estimates of a fit as plain JSON-ready data."""
    glmm = getattr(fit, "family", "gaussian") != "gaussian" or getattr(fit, "link", "identity") != "identity"
    fixef = [_fixef_record(term, row) for term, row in fit.coefficients().iterrows()]
    vc = fit.varcorr.to_frame()
    varcorr = [{k: (None if (isinstance(v, float) and math.isnan(v)) or v is None else _jsonable(v))
                for k, v in row.items()} for row in vc.to_dict(orient="records")]
    out = {
        "formula": fit.formula,
        "family": getattr(fit, "family", "gaussian"),
        "link": getattr(fit, "link", "identity"),
        "method": ("REML" if getattr(fit, "reml", False) else "ML") if not glmm
        else ("Laplace" if getattr(fit, "nagq", 1) == 1 else f"adaptive Gauss-Hermite ({fit.nagq} points)"),
        "nobs": int(fit.nobs),
        "ngroups": {str(k): int(v) for k, v in fit.ngroups.items()},
        "fixef": fixef,
        "varcorr": varcorr,
        "sigma": _jsonable(float(fit.sigma)) if not glmm or getattr(fit, "has_scale", False) else None,
        "loglik": _jsonable(float(fit.loglik)),
        "aic": _jsonable(float(fit.aic)),
        "bic": _jsonable(float(fit.bic)),
        "deviance": _jsonable(float(fit.deviance)),
        "reml_criterion": _jsonable(float(fit.reml_criterion)) if getattr(fit, "reml_criterion", None) is not None else None,
        "converged": bool(getattr(getattr(fit, "optinfo", None), "converged", True)),
        "singular": bool(fit.is_singular()) if hasattr(fit, "is_singular") else None,
    }
    if include_ranef:
        out["ranef"] = {
            str(g): {str(lv): {str(c): _jsonable(float(v)) for c, v in row.items()}
                     for lv, row in df.iterrows()}
            for g, df in fit.ranef(condvar=True).items()
        }
    return out


def run_fit(args, stdout=None) -> int:
    import mixedfit

    stdout = stdout if stdout is not None else sys.stdout
    df = read_table(args.data)
    family = args.family
    gaussian = family.lower() in ("gaussian", "normal") and args.link in (None, "identity")
    if gaussian and args.nagq is not None:
        raise _BadInput("--nagq applies to GLMMs only (give --family binomial, poisson, ...)")
    if args.nagq is not None and args.nagq < 0:
        raise _BadInput(f"--nagq must be a non-negative integer, got {args.nagq}")
    name = Path(args.data).name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if gaussian:
                fit = mixedfit.lmer(args.formula, df, reml=not args.ml, data_name=name)
            else:
                fit = mixedfit.glmer(args.formula, df, family=family, link=args.link,
                                     nagq=1 if args.nagq is None else args.nagq, data_name=name)
        except mixedfit.FormulaError as exc:
            raise _BadInput(f"bad formula {args.formula!r}: {exc}") from exc
        except (mixedfit.DataError, KeyError, ValueError, TypeError) as exc:
            raise _BadInput(f"cannot fit {args.formula!r} to {name!r}: {_msg(exc)}") from exc
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.ml and not gaussian:
        print("note: --ml has no effect for GLMMs (they are always fitted by maximum likelihood)",
              file=sys.stderr)
    if args.json:
        json.dump(fit_to_dict(fit, include_ranef=args.ranef), stdout, indent=2, allow_nan=False)
        print(file=stdout)
    else:
        print(fit.summary(), file=stdout)
        if args.ranef:
            for g, re in fit.ranef(condvar=True).items():
                print(f"\nConditional modes of {g}:", file=stdout)
                print(re.to_string(float_format=lambda v: f"{v:.5g}"), file=stdout)
    return EXIT_OK


def _msg(exc) -> str:
    s = str(exc)
    if isinstance(exc, KeyError) and s.startswith(("'", '"')):
        s = s[1:-1]
    return s


# ---------------------------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------------------------
def _positive(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="mixedfit",
        description="Linear and generalized linear mixed models (lme4's formulas and numbers) "
                    "and pictures of shrinkage.",
    )
    p.add_argument("--version", action="version", version=f"mixedfit {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="run the shrinkage demonstration on simulated data",
                       description="Simulate six settings of clustered data and a Bernoulli "
                                   "experiment, fit mixed models, print summaries and write "
                                   "plots, animations and an index.html report.")
    d.add_argument("--out", default="mixedfit-demo", metavar="DIR",
                   help="output directory (default: mixedfit-demo)")
    d.add_argument("--n-cluster", type=_positive, default=None, metavar="N",
                   help="clusters per simulated setting (default: 100, 30 with --quick)")
    d.add_argument("--seed", type=int, default=888, help="random seed (default: 888)")
    d.add_argument("--frames", type=_positive, default=24, metavar="K",
                   help="frames per GIF animation (default: 24)")
    d.add_argument("--no-animation", action="store_true", help="skip the GIF animations")
    d.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    d.add_argument("--quick", action="store_true",
                   help="a fast run: 30 clusters, no animations, short MCMC chains")
    d.add_argument("--no-bayes", action="store_true",
                   help="leave out the Bayesian cross-check (run when mixedfit[bayes] is installed)")

    f = sub.add_parser("fit", help="fit a model to a CSV or Parquet file",
                       description="Fit a linear (or, with --family, generalized linear) mixed "
                                   "model and print lme4's summary, or JSON with --json.")
    f.add_argument("data", metavar="DATA", help="CSV/TSV file (Parquet when pyarrow is installed)")
    f.add_argument("--formula", required=True, help='model formula, e.g. "y ~ x + (x | g)"')
    f.add_argument("--family", default="gaussian",
                   help="gaussian (default: lmer), or binomial, poisson, Gamma, inverse.gaussian (glmer)")
    f.add_argument("--link", default=None, help="link function (default: the family's canonical link)")
    f.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML (LMMs)")
    f.add_argument("--nagq", type=int, default=None, metavar="K",
                   help="GLMMs: 1 = Laplace (default), K > 1 adaptive Gauss-Hermite points")
    f.add_argument("--json", action="store_true", help="print the estimates as JSON")
    f.add_argument("--ranef", action="store_true", help="also print the conditional modes")
    return p


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        if args.command == "demo":
            if args.frames < 4:
                raise _BadInput(f"--frames must be at least 4, got {args.frames}")
            n_cluster = args.n_cluster or (30 if args.quick else 100)
            if n_cluster < 5:
                raise _BadInput(f"--n-cluster must be at least 5 (a variance needs several "
                                f"clusters to estimate), got {args.n_cluster}")
            run_demo(args.out, n_cluster=n_cluster, seed=args.seed, frames=args.frames,
                     animate=not (args.no_animation or args.quick), quiet=args.quiet,
                     bayes=False if args.no_bayes else None,
                     bayes_options=BAYES_QUICK if args.quick else None)
            return EXIT_OK
        return run_fit(args)
    except _BadInput as exc:
        print(f"mixedfit {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a program that stopped reading (e.g. head)
        import os

        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_FIT_FAILED
    except Exception as exc:  # a fit that fails numerically, an optimizer that gives up
        import mixedfit

        if isinstance(exc, (mixedfit.ConvergenceError, mixedfit.NumericalError)):
            print(f"mixedfit {args.command}: the model could not be fitted: {exc}", file=sys.stderr)
            return EXIT_FIT_FAILED
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
