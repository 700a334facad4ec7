"""Pictures of shrinkage (partial pooling) with matplotlib.

- :func:`shrinkage_plot`: each cluster's no-pooling estimate joined to its mixed-model
  (partial-pooling) estimate, with the population average marked; intercept against slope for
  models with two cluster-specific parameters, two parallel axes for one parameter.
- :func:`shrinkage_animation`: the same movement as a GIF (matplotlib's Pillow writer).
- :func:`proportion_plot`: observed proportion against the estimated probability per group for a
  Bernoulli/binomial random-intercept model, with the identity line.
- :func:`caterpillar_plot`: conditional modes with conditional intervals, sorted.

Every function accepts a fit (``mixedfit.lmer``/``mixedfit.glmer``); the shrinkage pictures also
accept a table from :func:`mixedfit.shrinkage.pooling_table`. They return a matplotlib
``Figure`` (save it with ``fig.savefig("file.png")``), or draw into ``ax=`` when given.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["shrinkage_plot", "shrinkage_animation", "proportion_plot", "caterpillar_plot",
           "bayes_proportion_panels", "bayes_shrinkage_plot"]

NOPOOL_COLOR = "#6baed6"     # the cluster-by-cluster estimates: lighter
PARTIAL_COLOR = "#08306b"    # the mixed model's estimates: darker
COMPLETE_COLOR = "#d95f02"
POPULATION_COLOR = "black"
_INTERCEPT = "(Intercept)"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _new_figure(figsize):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.08, h_pad=0.08)
    return fig


def _as_table(obj, group=None, scale="auto") -> pd.DataFrame:
    if isinstance(obj, pd.DataFrame):
        if "params" not in obj.attrs:
            raise ValueError(
                "this DataFrame is not a pooling table (its .attrs lost 'params'); pass the fit "
                "or the output of mixedfit.shrinkage.pooling_table(fit)"
            )
        return obj
    from .shrinkage import pooling_table

    return pooling_table(obj, group, scale=scale)


def _param_label(param: str, table: pd.DataFrame) -> str:
    scale = table.attrs.get("scale", "identity")
    if param == _INTERCEPT:
        if scale == "response":
            fam = table.attrs.get("family", "")
            return ("probability (observed proportion or estimate)" if fam == "binomial"
                    else "mean (observed or estimated)")
        base = "intercept"
    else:
        base = f"slope of {param}" if _INTERCEPT in table.attrs["params"] else f"coefficient of {param}"
    if scale == "link":
        base += f" ({table.attrs.get('link', 'link')} scale)"
    return base


def _sizes(n: np.ndarray, small=12.0, large=140.0):
    """Marker areas proportional to cluster size, or None when all clusters are the same size."""
    n = np.asarray(n, dtype=float)
    if n.size == 0 or np.all(n == n[0]):
        return None
    return small + (large - small) * (n - n.min()) / (n.max() - n.min())


def _size_legend(ax, n, sizes, loc):
    from matplotlib.lines import Line2D

    vals = np.unique(np.quantile(n, [0.0, 0.5, 1.0]).round().astype(int))
    nmin, nmax = float(np.min(n)), float(np.max(n))
    handles = []
    for v in vals:
        area = sizes.min() + (sizes.max() - sizes.min()) * (v - nmin) / (nmax - nmin)
        handles.append(Line2D([], [], ls="none", marker="o", color=PARTIAL_COLOR,
                              markersize=np.sqrt(area), label=str(v)))
    leg = ax.legend(handles=handles, title="cluster size", loc=loc, fontsize=8,
                    title_fontsize=8, frameon=True)
    ax.add_artist(leg)


def _robust_sd(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    if v.size < 2:
        return 1.0
    s = float(np.std(v))
    return s if s > 0 else 1.0


def _limits(table, params, limits, zoom, sd):
    """Axis limits: the population value +/- zoom * (random-effect SD) per parameter."""
    if limits is not None and not isinstance(limits, str):
        lims = [tuple(map(float, lim)) for lim in limits]
        if len(lims) != len(params) or any(len(lim) != 2 or not lim[0] < lim[1] for lim in lims):
            raise ValueError(f"limits must be one (low, high) pair per parameter {params}, got {limits!r}")
        return lims
    if limits not in (None, "auto", "data"):
        raise ValueError(f"limits must be 'auto', 'data' or (low, high) pairs, got {limits!r}")
    if limits == "data":
        out = []
        for p in params:
            v = np.concatenate([table[f"nopool_{p}"].to_numpy(float), table[f"partial_{p}"].to_numpy(float),
                                [table.attrs["population"][p]]])
            v = v[np.isfinite(v)]
            lo, hi = float(v.min()), float(v.max())
            pad = 0.05 * (hi - lo) if hi > lo else 0.5
            out.append((lo - pad, hi + pad))
        return out
    if not (isinstance(zoom, (int, float)) and zoom > 0):
        raise ValueError(f"zoom must be a positive number, got {zoom!r}")
    if sd is not None:
        sd = np.atleast_1d(np.asarray(sd, dtype=float))
        if sd.shape != (len(params),) or np.any(~np.isfinite(sd)) or np.any(sd <= 0):
            raise ValueError(f"sd must hold one positive SD per parameter {params}, got {sd!r}")
    out = []
    for k, p in enumerate(params):
        center = table.attrs["population"][p]
        if sd is not None:
            s = float(sd[k])
        elif table.attrs.get("scale") == "response":
            s = None
        else:
            s = float(table.attrs.get("re_sd", {}).get(p, 0.0))
            if not s > 0:  # a variance estimated at zero: fall back on the no-pooling spread
                s = _robust_sd(table[f"nopool_{p}"].to_numpy(float))
        if s is None:  # probabilities / means on the response scale: show everything
            v = np.concatenate([table[f"nopool_{p}"].to_numpy(float), table[f"partial_{p}"].to_numpy(float)])
            v = v[np.isfinite(v)]
            lo, hi = min(float(v.min()), center), max(float(v.max()), center)
            if table.attrs.get("family") == "binomial":
                lo, hi = min(lo, 0.0), max(hi, 1.0)
            pad = 0.04 * (hi - lo) if hi > lo else 0.5
            out.append((lo - pad, hi + pad))
        else:
            out.append((center - zoom * s, center + zoom * s))
    return out


def _outside(values, lim):
    return np.isfinite(values) & ((values < lim[0]) | (values > lim[1]))


def _note(ax, lines, own_figure, y0=0.01):
    """Notes about clusters not shown as usual: under the figure when the figure is ours,
    in the corner of the axes otherwise."""
    if not lines:
        return
    text = "\n".join(lines)
    if own_figure:
        ax.figure.supxlabel(text, fontsize=8, color="0.25")
    else:
        ax.text(0.01, y0, text, transform=ax.transAxes, fontsize=8, va="bottom", ha="left",
                color="0.25", bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="0.8", alpha=0.9))


def _legends(ax, n, sizes, size_loc="upper left", ncol=2):
    """The size legend (inside the axes) and the main legend (under the axes)."""
    if sizes is not None:
        _size_legend(ax, n, sizes, loc=size_loc)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=ncol, fontsize=8,
              frameon=False)


def _title(table, title):
    if title is not None:
        return title
    return f"Shrinkage of cluster estimates: {table.attrs.get('formula', '')}"


# ---------------------------------------------------------------------------------------------
# static shrinkage plots
# ---------------------------------------------------------------------------------------------
def shrinkage_plot(fit, group=None, params=None, *, ax=None, limits="auto", zoom=3.0, sd=None,
                   show_complete=True, title=None, scale="auto", figsize=(7.0, 6.0)):
    """Movement of each cluster's estimate from no pooling to partial pooling.

    With two (or more) cluster-specific parameters, the first two (or ``params``) are drawn
    as intercept on x and slope on y: a light point at each cluster's own regression (no
    pooling), a dark point at its mixed-model estimate, an arrow between them, and the
    population average (fixed effects) as a large black point. With one parameter (a random
    intercept) the two sets of estimates sit on two parallel axes joined by lines.

    Parameters
    ----------
    fit : a fit, or a table from :func:`mixedfit.shrinkage.pooling_table`.
    group : grouping factor (needed only when the model has several).
    params : the two parameters to draw (default: the first two), or one.
    limits : ``"auto"`` (zoom from the random-effect SDs, see ``zoom``/``sd``), ``"data"``
        (everything in view) or one ``(low, high)`` pair per parameter.
    zoom, sd : with ``limits="auto"`` each axis spans the population value +/- ``zoom``
        random-effect SDs; ``sd`` overrides the estimated SDs (pass the same values to several
        plots to give them the same axes). No-pooling estimates outside the view are marked at
        the edge and counted in a note.
    show_complete : mark the complete-pooling estimate.
    scale : passed to :func:`mixedfit.shrinkage.pooling_table` for GLMMs.
    """
    table = _as_table(fit, group, scale)
    params = _choose_params(table, params)
    if len(params) == 1:
        return _shrinkage_1d(table, params[0], ax=ax, limits=limits, zoom=zoom, sd=sd,
                             show_complete=show_complete, title=title, figsize=figsize)
    px, py = params
    lims = _limits(table, params, limits, zoom, sd)
    own = ax is None
    fig, ax = _fig_ax(ax, figsize)

    x0, y0 = table[f"nopool_{px}"].to_numpy(float), table[f"nopool_{py}"].to_numpy(float)
    x1, y1 = table[f"partial_{px}"].to_numpy(float), table[f"partial_{py}"].to_numpy(float)
    n = table["n"].to_numpy(float)
    # Cluster sizes as marker areas, kept small so that the arrows of large clusters (short
    # ones) are not buried under their own markers; the arrows are drawn on top.
    sizes = _sizes(n, small=6.0, large=70.0)
    s_all = sizes if sizes is not None else np.full(len(table), 28.0)
    has_np = np.isfinite(x0) & np.isfinite(y0)

    ax.quiver(x0[has_np], y0[has_np], (x1 - x0)[has_np], (y1 - y0)[has_np], angles="xy",
              scale_units="xy", scale=1, color="0.3", alpha=0.75, width=0.0022,
              headwidth=4, headlength=5, headaxislength=4.5, zorder=5)
    ax.scatter(x0[has_np], y0[has_np], s=s_all[has_np], color=NOPOOL_COLOR, alpha=0.8,
               edgecolor="white", linewidth=0.4, label="no pooling (regression per cluster)",
               zorder=3)
    ax.scatter(x1, y1, s=s_all, color=PARTIAL_COLOR, alpha=0.85, edgecolor="white",
               linewidth=0.4, label="partial pooling (mixed model)", zorder=4)
    if np.any(~has_np):
        ax.scatter(x1[~has_np], y1[~has_np], s=s_all[~has_np] + 20, facecolor="none",
                   edgecolor=COMPLETE_COLOR, linewidth=1.0, zorder=5,
                   label="no no-pooling estimate")
    pop = table.attrs["population"]
    ax.scatter([pop[px]], [pop[py]], s=220, color=POPULATION_COLOR, edgecolor="white",
               linewidth=1.5, zorder=6, label="population average (fixed effects)")
    if show_complete:
        comp = table.attrs["complete"]
        ax.scatter([comp[px]], [comp[py]], s=110, marker="X", color=COMPLETE_COLOR,
                   edgecolor="white", linewidth=0.8, zorder=7, label="complete pooling")

    # no-pooling estimates outside the view: marked at the edge, and counted
    out_np = has_np & (_outside(x0, lims[0]) | _outside(y0, lims[1]))
    if np.any(out_np):
        ex = np.clip(x0[out_np], *lims[0])
        ey = np.clip(y0[out_np], *lims[1])
        ax.scatter(ex, ey, s=30, marker="D", facecolor="none", edgecolor=NOPOOL_COLOR,
                   linewidth=1.0, clip_on=False, zorder=5,
                   label="no-pooling estimate outside the view (at the edge)")
    out_pp = _outside(x1, lims[0]) | _outside(y1, lims[1])
    ax.set_xlim(*lims[0])
    ax.set_ylim(*lims[1])
    ax.set_xlabel(_param_label(px, table))
    ax.set_ylabel(_param_label(py, table))
    ax.set_title(_title(table, title), fontsize=11)
    ax.grid(True, color="0.92", zorder=0)
    _legends(ax, n, sizes)
    _note(ax, _notes(table, out_np, out_pp, has_np), own)
    return fig


def _notes(table, out_np, out_pp, has_np, animated=False):
    m = len(table)
    lines = []
    if np.any(out_np):
        lines.append(f"{int(out_np.sum())} of {m} no-pooling estimates start outside the view"
                     if animated else
                     f"{int(out_np.sum())} of {m} no-pooling estimates lie outside the view "
                     "(marked at the edge)")
    if np.any(out_pp):
        lines.append(f"{int(out_pp.sum())} of {m} mixed-model estimates lie outside the view")
    if np.any(~has_np):
        reasons = table.loc[~has_np, "nopool_note"].value_counts()
        top = reasons.index[0] if len(reasons) else ""
        lines.append(f"{int((~has_np).sum())} cluster(s) have no no-pooling estimate ({top})")
    return lines


def _choose_params(table, params):
    have = list(table.attrs["params"])
    if params is None:
        return have[:2]
    if isinstance(params, str):
        params = [params]
    params = list(params)
    bad = [p for p in params if p not in have]
    if bad or not 1 <= len(params) <= 2:
        raise ValueError(f"params must be one or two of {have}, got {params!r}")
    return params


def _fig_ax(ax, figsize):
    if ax is None:
        fig = _new_figure(figsize)
        ax = fig.add_subplot()
        return fig, ax
    return ax.figure, ax


def _limits_1d(table, p, limits, zoom, sd):
    """Axis limits for one parameter: the whole data range unless some clusters are far out."""
    if limits == "auto" and sd is None and table.attrs.get("scale") != "response":
        lims = _limits(table, [p], "data", zoom, sd)
        wide = _limits(table, [p], "auto", max(zoom, 4.0), None)
        return [(max(lims[0][0], wide[0][0]), min(lims[0][1], wide[0][1]))]
    return _limits(table, [p], limits, zoom, sd)


def _shrinkage_1d(table, p, *, ax, limits, zoom, sd, show_complete, title, figsize):
    lims = _limits_1d(table, p, limits, zoom, sd)
    own = ax is None
    fig, ax = _fig_ax(ax, (figsize[0], min(figsize[1], 4.5)))
    x0 = table[f"nopool_{p}"].to_numpy(float)
    x1 = table[f"partial_{p}"].to_numpy(float)
    n = table["n"].to_numpy(float)
    sizes = _sizes(n)
    s_all = sizes if sizes is not None else np.full(len(table), 30.0)
    has_np = np.isfinite(x0)
    from matplotlib.collections import LineCollection

    segs = np.stack([np.column_stack([x0, np.ones_like(x0)]), np.column_stack([x1, np.zeros_like(x1)])], axis=1)
    ax.add_collection(LineCollection(segs[has_np], colors="0.6", linewidths=0.7, alpha=0.6, zorder=2))
    ax.scatter(x0[has_np], np.ones(has_np.sum()), s=s_all[has_np], color=NOPOOL_COLOR, alpha=0.8,
               edgecolor="white", linewidth=0.4, zorder=3, label="no pooling (per cluster)")
    ax.scatter(x1, np.zeros_like(x1), s=s_all, color=PARTIAL_COLOR, alpha=0.8, edgecolor="white",
               linewidth=0.4, zorder=4, label="partial pooling (mixed model)")
    pop = table.attrs["population"][p]
    ax.axvline(pop, color=POPULATION_COLOR, lw=1.5, zorder=1, label="population average (fixed effect)")
    if show_complete:
        ax.axvline(table.attrs["complete"][p], color=COMPLETE_COLOR, lw=1.2, ls="--", zorder=1,
                   label="complete pooling")
    out_np = has_np & _outside(x0, lims[0])
    if np.any(out_np):
        ax.scatter(np.clip(x0[out_np], *lims[0]), np.ones(out_np.sum()), s=30, marker="D",
                   facecolor="none", edgecolor=NOPOOL_COLOR, clip_on=False, zorder=5,
                   label="outside the view (at the edge)")
    out_pp = _outside(x1, lims[0])
    ax.set_xlim(*lims[0])
    ax.set_ylim(-0.3, 1.35)
    ax.set_yticks([0, 1], ["partial\npooling", "no\npooling"])
    ax.set_xlabel(_param_label(p, table))
    ax.set_title(_title(table, title), fontsize=11)
    ax.grid(True, axis="x", color="0.92", zorder=0)
    _legends(ax, n, sizes, size_loc="center right")
    _note(ax, _notes(table, out_np, out_pp, has_np), own, y0=0.16)
    return fig


# ---------------------------------------------------------------------------------------------
# animation
# ---------------------------------------------------------------------------------------------
def _ease(t):
    return t * t * (3 - 2 * t)


def shrinkage_animation(fit, path=None, group=None, params=None, *, frames=24, hold=4, fps=8,
                        dpi=80, limits="auto", zoom=3.0, sd=None, title=None, scale="auto",
                        figsize=(6.0, 5.0)):
    """Animate each cluster's estimate moving from no pooling to partial pooling.

    ``frames`` is the total number of frames, of which ``hold`` at the start and ``hold`` at
    the end stand still. Written as a GIF with matplotlib's Pillow writer when ``path`` is
    given (returns the path); otherwise returns the ``FuncAnimation`` (its still parts are
    pre-rendered at ``dpi``: save it at that resolution). Two parameters move in
    the intercept-slope plane (as :func:`shrinkage_plot`); one parameter moves along x, with
    the clusters stacked on y in the order of their no-pooling estimates.
    """
    from matplotlib.animation import FuncAnimation, PillowWriter

    if not (isinstance(frames, (int, np.integer)) and isinstance(hold, (int, np.integer))
            and frames >= 2 and 0 <= hold and frames - 2 * hold >= 2):
        raise ValueError(f"need integers frames >= 2 * hold + 2 and hold >= 0; got frames={frames!r}, hold={hold!r}")
    if not (isinstance(fps, (int, float)) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    table = _as_table(fit, group, scale)
    params = _choose_params(table, params)
    fig = _new_figure(figsize)
    ax = fig.add_subplot()
    n = table["n"].to_numpy(float)
    sizes = _sizes(n, small=8.0, large=110.0)
    s_all = sizes if sizes is not None else np.full(len(table), 22.0)
    pop = table.attrs["population"]

    if len(params) == 2:
        px, py = params
        lims = _limits(table, params, limits, zoom, sd)
        start = table[[f"nopool_{px}", f"nopool_{py}"]].to_numpy(float)
        end = table[[f"partial_{px}", f"partial_{py}"]].to_numpy(float)
        has_np = np.all(np.isfinite(start), axis=1)
        ax.set_xlim(*lims[0])
        ax.set_ylim(*lims[1])
        ax.set_xlabel(_param_label(px, table))
        ax.set_ylabel(_param_label(py, table))
        ax.scatter([pop[px]], [pop[py]], s=200, color=POPULATION_COLOR, edgecolor="white",
                   linewidth=1.5, zorder=6, label="population average")
        out_np = has_np & (_outside(start[:, 0], lims[0]) | _outside(start[:, 1], lims[1]))
        out_pp = _outside(end[:, 0], lims[0]) | _outside(end[:, 1], lims[1])
    else:
        (p,) = params
        lims = _limits_1d(table, p, limits, zoom, sd)
        x0 = table[f"nopool_{p}"].to_numpy(float)
        x1 = table[f"partial_{p}"].to_numpy(float)
        has_np = np.isfinite(x0)
        order = np.argsort(np.where(has_np, x0, x1), kind="stable")
        rank = np.empty(len(order))
        rank[order] = np.arange(len(order))
        start = np.column_stack([x0, rank])
        end = np.column_stack([x1, rank])
        ax.set_xlim(*lims[0])
        ax.set_ylim(-1, len(order))
        ax.set_yticks([])
        ax.set_ylabel("clusters, ordered by their own estimate")
        ax.set_xlabel(_param_label(p, table))
        ax.axvline(pop[p], color=POPULATION_COLOR, lw=1.5, zorder=1, label="population average")
        out_np = has_np & _outside(x0, lims[0])
        out_pp = _outside(x1, lims[0])
    start = np.where(np.isfinite(start), start, end)
    from matplotlib.collections import LineCollection

    paths = np.stack([start, end], axis=1)[has_np]
    ax.add_collection(LineCollection(paths, colors="0.85", linewidths=0.6, zorder=1))
    ax.grid(True, color="0.93", zorder=0)
    ax.scatter([], [], s=22, color=NOPOOL_COLOR, label="no pooling")
    ax.scatter([], [], s=22, color=PARTIAL_COLOR, label="partial pooling")
    if sizes is not None:
        _size_legend(ax, n, sizes, loc="upper right")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=8, frameon=False)
    _note(ax, _notes(table, out_np, out_pp, has_np, animated=True), True)
    ax.set_title(_title(table, title), fontsize=10)

    # Everything that stays still is rendered once; each frame draws the moving points over
    # that picture (an axes at the same place with the same limits) instead of re-drawing
    # the labels, ticks and legends 20-odd times.
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    background = np.asarray(canvas.buffer_rgba()).copy()
    frame = _new_figure(figsize)
    frame.set_layout_engine("none")
    frame.set_dpi(dpi)
    frame.figimage(background, 0, 0, origin="upper", zorder=0)
    over = frame.add_axes(ax.get_position(), zorder=1)
    over.set_xlim(ax.get_xlim())
    over.set_ylim(ax.get_ylim())
    over.set_axis_off()
    over.patch.set_visible(False)
    pts = over.scatter(start[:, 0], start[:, 1], s=s_all, color=NOPOOL_COLOR, edgecolor="white",
                       linewidth=0.3, zorder=4)
    if len(params) == 2:  # keep the population point on top of the moving points
        over.scatter([pop[params[0]]], [pop[params[1]]], s=200, color=POPULATION_COLOR,
                     edgecolor="white", linewidth=1.5, zorder=6)
    stage_text = over.text(0.015, 0.975, "", transform=over.transAxes, ha="left", va="top",
                           fontsize=9, zorder=7,
                           bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="0.75", alpha=0.9))
    c0 = np.array(_rgb(NOPOOL_COLOR))
    c1 = np.array(_rgb(PARTIAL_COLOR))
    move = frames - 2 * hold

    def progress(i):
        if i < hold:
            return 0.0
        if i >= frames - hold:
            return 1.0
        return _ease((i - hold + 1) / move)

    def update(i):
        t = progress(i)
        pts.set_offsets(start + t * (end - start))
        col = np.clip(c0 + t * (c1 - c0), 0, 1)
        pts.set_facecolor(np.tile(np.r_[col, 0.9], (len(start), 1)))
        stage_text.set_text("no pooling" if t == 0 else
                            ("partial pooling (mixed model)" if t == 1 else "shrinking ..."))
        return pts, stage_text

    update(0)
    anim = FuncAnimation(frame, update, frames=frames, interval=1000 / fps, blit=False)
    if path is None:
        return anim
    anim.save(str(path), writer=PillowWriter(fps=fps), dpi=dpi)
    return path


def _rgb(color):
    from matplotlib.colors import to_rgb

    return to_rgb(color)


# ---------------------------------------------------------------------------------------------
# Bernoulli: observed proportion vs estimated probability
# ---------------------------------------------------------------------------------------------
def proportion_plot(fit, group=None, *, ax=None, title=None, figsize=(6.0, 6.0)):
    """Observed proportion of successes per group against the model's estimated probability.

    For a binomial GLMM with one random intercept (``result ~ 1 + (1 | group)``). Points off
    the identity line are the shrinkage: small proportions are pulled up and large ones down,
    toward the population probability (horizontal line). Groups sharing a point are counted
    next to it.
    """
    table = _as_table(fit, group, "response")
    if table.attrs.get("scale") != "response" or table.attrs.get("family") != "binomial":
        raise ValueError("proportion_plot needs a binomial GLMM of the form y ~ 1 + (1 | group)")
    fig, ax = _fig_ax(ax, figsize)
    x = table["nopool_(Intercept)"].to_numpy(float)
    y = table["partial_(Intercept)"].to_numpy(float)
    n = table["n_trials"].to_numpy(float) if "n_trials" in table else table["n"].to_numpy(float)
    sizes = _sizes(n)
    ok = np.isfinite(x)
    ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--", label="identity (no shrinkage)", zorder=1)
    pop = table.attrs["population"]["(Intercept)"]
    ax.axhline(pop, color=POPULATION_COLOR, lw=1.2, label=f"population probability ({pop:.2f})", zorder=1)
    comp = table.attrs["complete"]["(Intercept)"]
    ax.axhline(comp, color=COMPLETE_COLOR, lw=1.0, ls=":", label=f"overall proportion ({comp:.2f})", zorder=1)
    ax.scatter(x[ok], y[ok], s=(sizes[ok] if sizes is not None else 45), color=PARTIAL_COLOR,
               alpha=0.8, edgecolor="white", linewidth=0.5, zorder=3, label="groups")
    # how many groups share each point
    pts = pd.DataFrame({"x": np.round(x[ok], 10), "y": np.round(y[ok], 10)})
    counts = pts.value_counts()
    for (px, py), k in counts.items():
        if k > 1:
            right = px > 0.9
            ax.annotate(f"\u00d7{k}", (px, py), xytext=(-5 if right else 5, -9),
                        textcoords="offset points", ha="right" if right else "left",
                        fontsize=8, color="0.3")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_aspect("equal")
    ax.set_xlabel("observed proportion in the group")
    ax.set_ylabel("estimated probability (mixed model)")
    ax.set_title(title if title is not None else f"Shrinkage of group proportions: {table.attrs.get('formula', '')}",
                 fontsize=11)
    ax.grid(True, color="0.92", zorder=0)
    if sizes is not None:
        _size_legend(ax, n, sizes, loc="lower right")
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    return fig


# ---------------------------------------------------------------------------------------------
# caterpillar plot
# ---------------------------------------------------------------------------------------------
def caterpillar_plot(fit, group=None, *, level=0.95, max_labels=40, title=None, figsize=None):
    """Conditional modes of the random effects with conditional intervals, one panel per term.

    Levels are sorted by the first term's conditional mode; the intervals are
    ``mode +/- z * conditional SD`` with ``z`` the normal quantile for ``level``. Level labels
    are shown when there are at most ``max_labels`` levels.
    """
    from scipy.stats import norm

    if not (isinstance(level, float) and 0 < level < 1):
        raise ValueError(f"level must be a probability in (0, 1), got {level!r}")
    re_all = fit.ranef(condvar=True)
    if group is None:
        if len(re_all) != 1:
            raise ValueError(f"the model has grouping factors {list(re_all)}; pass group= one of them")
        group = next(iter(re_all))
    if group not in re_all:
        raise KeyError(f"no grouping factor {group!r} in the model; have {list(re_all)}")
    re = re_all[group]
    cols = [c for c in re.columns if not str(c).startswith("condsd_")]
    m = len(re)
    z = float(norm.ppf(0.5 + level / 2))
    order = np.argsort(re[cols[0]].to_numpy(float), kind="stable")
    if figsize is None:
        figsize = (max(5.0, 3.2 * len(cols) + 1.2), float(np.clip(0.16 * m + 1.6, 3.0, 11.0)))
    fig = _new_figure(figsize)
    axes = fig.subplots(1, len(cols), sharey=True, squeeze=False)[0]
    ypos = np.arange(m)
    for ax, c in zip(axes, cols):
        mode = re[c].to_numpy(float)[order]
        sd = re[f"condsd_{c}"].to_numpy(float)[order]
        ax.hlines(ypos, mode - z * sd, mode + z * sd, color=NOPOOL_COLOR, lw=1.2, zorder=2)
        ax.scatter(mode, ypos, s=12 if m > 60 else 18, color=PARTIAL_COLOR, zorder=3)
        ax.axvline(0.0, color="0.4", lw=1, ls="--", zorder=1)
        ax.set_title(str(c), fontsize=10)
        ax.set_xlabel("conditional mode")
        ax.grid(True, axis="x", color="0.92", zorder=0)
    ax0 = axes[0]
    ax0.set_ylim(-1, m)
    if m <= max_labels:
        ax0.set_yticks(ypos, [str(v) for v in re.index.to_numpy()[order]], fontsize=8)
    else:
        ax0.set_yticks([])
    ax0.set_ylabel(f"levels of {group} (sorted)")
    fig.suptitle(title if title is not None else
                 f"Random effects of {group}\nconditional modes with {level:.0%} intervals",
                 fontsize=11)
    return fig


__all__ += ["profile_plot"]


def profile_plot(prof, level: float = 0.95, ncol: int = 3):
    """Profile zeta plots (lme4's ``xyplot(profile(fit))``): zeta against each parameter's
    value, with the ``level`` interval's cutoffs dashed. ``prof``: ``fit.profile()``."""
    import math

    import matplotlib.pyplot as plt
    from scipy.stats import norm

    names = list(prof.estimates.index)
    ncol = min(ncol, len(names))
    nrow = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.8 * nrow), squeeze=False)
    cut = norm.ppf((1 + level) / 2)
    for ax, name in zip(axes.flat, names):
        z = prof.zeta(name)
        ax.plot(z["value"], z[".zeta"], "-o", ms=3)
        for c in (-cut, 0.0, cut):
            ax.axhline(c, color="grey", lw=0.7, ls="--" if c else ":")
        ax.set_xlabel(name)
        ax.set_ylabel("zeta")
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# the Bayesian cross-check
# ---------------------------------------------------------------------------------------------
BAYES_COLOR = "#e6550d"


def bayes_proportion_panels(table: pd.DataFrame, *, ncols=None, title=None, figsize=None):
    """Observed proportion against estimate, one panel per number of trials per group.

    ``table`` is :func:`mixedfit.shrinkage.bernoulli_by_trials`: in every panel the glmer
    estimates (circles) and the Bayesian posterior means (triangles) of each group's
    probability, the identity line (no shrinkage) and the overall proportion of successes
    (horizontal line). Both sets of estimates bend toward the overall proportion, less so as
    the number of trials grows.
    """
    need = {"n_trials", "observed", "glmer", "bayes", "overall"}
    if not isinstance(table, pd.DataFrame) or not need <= set(table.columns):
        raise ValueError(f"table must be the output of shrinkage.bernoulli_by_trials (columns {sorted(need)})")
    trials = sorted(table["n_trials"].unique())
    ncols = ncols or min(len(trials), 4)
    nrows = -(-len(trials) // ncols)
    fig = _new_figure(figsize or (3.1 * ncols + 0.4, 3.3 * nrows + 0.9))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)).ravel()
    for ax, j in zip(axes, trials):
        d = table[table["n_trials"] == j]
        overall = float(d["overall"].iloc[0])
        ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--", zorder=1,
                label="identity (no shrinkage)")
        ax.axhline(overall, color=COMPLETE_COLOR, lw=1.2, ls=":", zorder=1,
                   label="overall proportion")
        # open circles under small filled triangles: where the two agree both stay visible
        ax.scatter(d["observed"], d["glmer"], s=46, facecolor="none", edgecolor=PARTIAL_COLOR,
                   linewidth=1.1, zorder=3, label="glmer estimate")
        ax.scatter(d["observed"], d["bayes"], s=16, marker="^", color=BAYES_COLOR, alpha=0.85,
                   linewidth=0, zorder=4, label="Bayesian posterior mean")
        ax.set_title(f"J = {j} trials per group", fontsize=10)
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set_aspect("equal")
        ax.grid(True, color="0.92", zorder=0)
    for k, ax in enumerate(axes):
        if k >= len(trials):
            ax.set_visible(False)
        elif k + ncols >= len(trials):       # the lowest panel of its column
            ax.set_xlabel("observed proportion", fontsize=9)
            ax.xaxis.set_tick_params(labelbottom=True)
    fig.supylabel("estimated probability", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    groups = table.attrs.get("n_groups")
    fig.suptitle(title if title is not None else
                 "Shrinkage in both frameworks: glmer and MCMC"
                 + (f" ({groups} groups per panel)" if groups else ""), fontsize=11)
    return fig


def bayes_shrinkage_plot(table: pd.DataFrame, params=None, *, ax=None, limits="auto", zoom=3.0,
                         sd=None, title=None, figsize=(7.0, 6.0)):
    """:func:`shrinkage_plot` of a :func:`mixedfit.shrinkage.compare_bayes` table, with each
    cluster's Bayesian posterior mean (triangle) joined to its conditional mode by a thin line.

    Arrows run from each cluster's own regression (no pooling) to the mixed model's estimate, as
    in :func:`shrinkage_plot`; where the triangles sit on the dark points the two frameworks
    shrink alike.
    """
    if not isinstance(table, pd.DataFrame) or "bayes_population" not in table.attrs:
        raise ValueError("table must be the output of mixedfit.shrinkage.compare_bayes")
    params = _choose_params(table, params)
    title = title if title is not None else f"Conditional modes and posterior means: {table.attrs.get('formula', '')}"
    fig = shrinkage_plot(table, params=params, ax=ax, limits=limits, zoom=zoom, sd=sd,
                         show_complete=False, title=title, figsize=figsize)
    ax = ax if ax is not None else fig.axes[0]
    if len(params) == 2:
        px, py = params
        x1, y1 = table[f"partial_{px}"].to_numpy(float), table[f"partial_{py}"].to_numpy(float)
        xb, yb = table[f"bayes_{px}"].to_numpy(float), table[f"bayes_{py}"].to_numpy(float)
        bpop = table.attrs["bayes_population"]
        pop_xy = (bpop[px], bpop[py])
    else:
        (p,) = params
        x1, xb = table[f"partial_{p}"].to_numpy(float), table[f"bayes_{p}"].to_numpy(float)
        y1 = yb = np.full(len(table), -0.15)
        pop_xy = None
    from matplotlib.collections import LineCollection

    segs = np.stack([np.column_stack([x1, y1]), np.column_stack([xb, yb])], axis=1)
    ax.add_collection(LineCollection(segs, colors=BAYES_COLOR, linewidths=0.8, alpha=0.7, zorder=6))
    ax.scatter(xb, yb, s=22, marker="^", color=BAYES_COLOR, alpha=0.85, edgecolor="white",
               linewidth=0.3, zorder=7, label="Bayesian posterior mean")
    if pop_xy is not None:
        ax.scatter([pop_xy[0]], [pop_xy[1]], s=120, marker="^", color=BAYES_COLOR,
                   edgecolor="black", linewidth=1.0, zorder=8, label="posterior mean of the fixed effects")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=2, fontsize=8, frameon=False)
    return fig
