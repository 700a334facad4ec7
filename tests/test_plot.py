"""The shrinkage pictures: what is drawn (points, arrows, labels, notes), the files written, and
errors for bad arguments."""

import gc
import io
import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import mixedfit
from mixedfit import plot, shrinkage, simulate

matplotlib.use("Agg", force=False)


@pytest.fixture(scope="module")
def lmm():
    df = simulate.clustered(n_cluster=30, seed=7)
    fit = mixedfit.lmer("y ~ x + (x | cluster)", df)
    return fit, shrinkage.pooling_table(fit)


@pytest.fixture(scope="module")
def unbalanced():
    df = simulate.clustered(n_cluster=40, balanced=0.4, sd_slope=0.5, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mixedfit.lmer("y ~ x + (x | cluster)", df)
    return fit, shrinkage.pooling_table(fit)


@pytest.fixture(scope="module")
def bern():
    df = simulate.bernoulli_groups(n_groups=20, n_trials=8, seed=4)
    fit = mixedfit.glmer("result ~ (1 | subject)", df, family="binomial")
    return fit, shrinkage.pooling_table(fit)


def _png(fig, dpi=60):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    img = Image.open(buf)
    img.load()
    return np.asarray(img.convert("RGB"))


def _texts(fig):
    out = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    return "\n".join(out)


def _scatter_with_label(ax, label):
    for c in ax.collections:
        if c.get_label() == label:
            return c
    raise AssertionError(f"no collection labelled {label!r}; have {[c.get_label() for c in ax.collections]}")


def test_shrinkage_plot_draws_both_estimates_and_the_population(lmm):
    fit, tab = lmm
    fig = plot.shrinkage_plot(fit)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "intercept" and ax.get_ylabel() == "slope of x"
    nopool = _scatter_with_label(ax, "no pooling (regression per cluster)")
    partial = _scatter_with_label(ax, "partial pooling (mixed model)")
    pop = _scatter_with_label(ax, "population average (fixed effects)")
    np.testing.assert_allclose(partial.get_offsets(), tab[["partial_(Intercept)", "partial_x"]].to_numpy())
    np.testing.assert_allclose(nopool.get_offsets(), tab[["nopool_(Intercept)", "nopool_x"]].to_numpy())
    np.testing.assert_allclose(pop.get_offsets(), [fit.fixef.to_numpy()])
    # arrows from each no-pooling estimate to its mixed-model estimate
    (quiver,) = [c for c in ax.collections if isinstance(c, matplotlib.quiver.Quiver)]
    np.testing.assert_allclose(quiver.U, tab["partial_(Intercept)"] - tab["nopool_(Intercept)"])
    np.testing.assert_allclose(quiver.V, tab["partial_x"] - tab["nopool_x"])
    # balanced data: one point size for everyone
    assert np.unique(partial.get_sizes()).size == 1
    legend_text = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "complete pooling" in legend_text
    img = _png(fig)
    assert img.shape[:2] == (360, 420) and img.std() > 10


def test_auto_zoom_uses_random_effect_sds_and_counts_what_is_outside(lmm):
    fit, tab = lmm
    fig = plot.shrinkage_plot(tab, sd=(0.2, 0.1), zoom=2.0)
    ax = fig.axes[0]
    pop = tab.attrs["population"]
    assert ax.get_xlim() == pytest.approx((pop["(Intercept)"] - 0.4, pop["(Intercept)"] + 0.4))
    assert ax.get_ylim() == pytest.approx((pop["x"] - 0.2, pop["x"] + 0.2))
    x0, y0 = tab["nopool_(Intercept)"], tab["nopool_x"]
    out = ((x0 - pop["(Intercept)"]).abs() > 0.4) | ((y0 - pop["x"]).abs() > 0.2)
    assert out.sum() > 0
    assert f"{int(out.sum())} of 30 no-pooling estimates lie outside the view" in _texts(fig)
    edge = _scatter_with_label(ax, "no-pooling estimate outside the view (at the edge)")
    assert len(edge.get_offsets()) == out.sum()
    lo, hi = ax.get_xlim()
    assert np.all((edge.get_offsets()[:, 0] >= lo - 1e-12) & (edge.get_offsets()[:, 0] <= hi + 1e-12))
    # the default zoom comes from the estimated random-effect SDs
    fig = plot.shrinkage_plot(tab)
    sd_int = tab.attrs["re_sd"]["(Intercept)"]
    assert fig.axes[0].get_xlim() == pytest.approx((pop["(Intercept)"] - 3 * sd_int, pop["(Intercept)"] + 3 * sd_int))
    # everything in view: no note
    fig = plot.shrinkage_plot(tab, limits="data")
    assert "outside the view" not in _texts(fig)


def test_point_size_follows_cluster_size_and_missing_estimates_are_noted(unbalanced):
    fit, tab = unbalanced
    fig = plot.shrinkage_plot(tab, limits="data")
    ax = fig.axes[0]
    partial = _scatter_with_label(ax, "partial pooling (mixed model)")
    sizes = partial.get_sizes()
    n = tab["n"].to_numpy()
    assert np.unique(sizes).size > 1
    assert np.all(np.diff(sizes[np.argsort(n, kind="stable")]) >= 0)   # bigger cluster, bigger point
    missing = tab["nopool_(Intercept)"].isna().sum()
    assert missing > 0
    assert f"{missing} cluster(s) have no no-pooling estimate" in _texts(fig)
    assert "cluster size" in _texts(fig)


def test_drawing_into_given_axes(lmm):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    a1, a2 = fig.subplots(1, 2)
    out = plot.shrinkage_plot(lmm[1], ax=a2, sd=(0.1, 0.05))
    assert out is fig and a2.has_data() and not a1.has_data()
    assert any("outside the view" in t.get_text() for t in a2.texts)


def test_one_parameter_version_for_random_intercepts():
    df = simulate.clustered(n_cluster=25, balanced=0.6, seed=2)
    fit = mixedfit.lmer("y ~ x + (1 | cluster)", df)
    fig = plot.shrinkage_plot(fit)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["partial\npooling", "no\npooling"]
    partial = _scatter_with_label(ax, "partial pooling (mixed model)")
    tab = shrinkage.pooling_table(fit)
    np.testing.assert_allclose(partial.get_offsets()[:, 0], tab["partial_(Intercept)"])
    np.testing.assert_allclose(partial.get_offsets()[:, 1], 0)
    assert ax.get_xlabel() == "intercept"
    assert _png(fig).std() > 10
    # a two-parameter table drawn for one parameter
    fig = plot.shrinkage_plot(simulate_fit_table(), params="x")
    assert fig.axes[0].get_xlabel() == "slope of x"


def simulate_fit_table():
    df = simulate.clustered(n_cluster=20, seed=1)
    return shrinkage.pooling_table(mixedfit.lmer("y ~ x + (x | cluster)", df))


def test_animation_writes_a_gif_that_moves(lmm, tmp_path):
    _, tab = lmm
    path = tmp_path / "move.gif"
    out = plot.shrinkage_animation(tab, path, frames=10, hold=2, dpi=50, figsize=(5, 4))
    assert out == path and path.exists()
    img = Image.open(path)
    assert img.format == "GIF" and img.size == (250, 200)
    assert img.n_frames >= 6          # identical still frames may be merged
    img.seek(0)
    first = np.asarray(img.convert("RGB")).astype(int)
    img.seek(img.n_frames - 1)
    last = np.asarray(img.convert("RGB")).astype(int)
    assert np.abs(first - last).sum() > 0
    assert path.stat().st_size < 2_000_000


@pytest.mark.filterwarnings("ignore:Animation was deleted")
def test_animation_positions_interpolate(lmm):
    _, tab = lmm
    anim = plot.shrinkage_animation(tab, frames=8, hold=1)
    update = anim._func
    pts = update(0)[0]
    np.testing.assert_allclose(pts.get_offsets(), tab[["nopool_(Intercept)", "nopool_x"]].to_numpy())
    pts = update(7)[0]
    np.testing.assert_allclose(pts.get_offsets(), tab[["partial_(Intercept)", "partial_x"]].to_numpy())
    mid = update(4)[0].get_offsets()
    a = tab[["nopool_(Intercept)", "nopool_x"]].to_numpy()
    b = tab[["partial_(Intercept)", "partial_x"]].to_numpy()
    t = (mid - a)[:, 0] / (b - a)[:, 0]
    assert np.allclose(t, t[0]) and 0 < t[0] < 1
    del anim, update, pts
    gc.collect()   # the never-rendered animation warns when collected: here, under the filter


def test_one_parameter_animation(bern, tmp_path):
    _, tab = bern
    path = plot.shrinkage_animation(tab, tmp_path / "b.gif", frames=6, hold=1, dpi=40)
    assert Image.open(path).n_frames >= 4


@pytest.mark.parametrize("kw", [{"frames": 3, "hold": 1}, {"frames": 10, "hold": -1}, {"fps": 0}])
def test_animation_bad_arguments(lmm, kw):
    with pytest.raises(ValueError):
        plot.shrinkage_animation(lmm[1], **kw)


def test_proportion_plot(bern):
    fit, tab = bern
    fig = plot.proportion_plot(fit)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "observed proportion in the group"
    assert ax.get_ylabel() == "estimated probability (mixed model)"
    ident = [ln for ln in ax.get_lines() if ln.get_label() == "identity (no shrinkage)"][0]
    np.testing.assert_allclose(ident.get_xydata(), [[0, 0], [1, 1]])
    pts = _scatter_with_label(ax, "groups")
    np.testing.assert_allclose(np.sort(pts.get_offsets()[:, 0]), np.sort(tab["nopool_(Intercept)"]))
    # groups sharing a point are counted: the counts add up to the groups in shared points
    shared = tab.groupby("nopool_(Intercept)").size()
    labels = [t.get_text() for t in ax.texts if t.get_text().startswith("\u00d7")]
    assert sum(int(s[1:]) for s in labels) == shared[shared > 1].sum()
    assert ax.get_xlim() == pytest.approx((-0.03, 1.03))
    assert _png(fig).std() > 10


def test_proportion_plot_needs_a_binomial_intercept_model(lmm):
    with pytest.raises(ValueError, match="binomial"):
        plot.proportion_plot(lmm[0])


def test_caterpillar_plot(lmm):
    fit, _ = lmm
    fig = plot.caterpillar_plot(fit, level=0.9)
    assert len(fig.axes) == 2
    assert [a.get_title() for a in fig.axes] == ["(Intercept)", "x"]
    re = fit.ranef(condvar=True)["cluster"]
    order = np.argsort(re["(Intercept)"].to_numpy(), kind="stable")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == [str(v) for v in re.index.to_numpy()[order]]
    segs = fig.axes[1].collections[0].get_segments()
    half = np.array([(s[1, 0] - s[0, 0]) / 2 for s in segs])
    np.testing.assert_allclose(half, 1.6448536 * re["condsd_x"].to_numpy()[order], rtol=1e-6)
    assert "90% intervals" in fig._suptitle.get_text()
    assert _png(fig).std() > 10


def test_caterpillar_hides_labels_for_many_levels():
    df = simulate.clustered(n_cluster=80, obs_per_cluster=5, seed=1)
    fit = mixedfit.lmer("y ~ x + (1 | cluster)", df)
    fig = plot.caterpillar_plot(fit, max_labels=50)
    assert len(fig.axes[0].get_yticklabels()) == 0
    with pytest.raises(ValueError, match="level"):
        plot.caterpillar_plot(fit, level=95)
    with pytest.raises(KeyError, match="nope"):
        plot.caterpillar_plot(fit, group="nope")


def test_bad_arguments_name_the_value(lmm):
    fit, tab = lmm
    with pytest.raises(ValueError, match="params"):
        plot.shrinkage_plot(tab, params=["x", "z"])
    with pytest.raises(ValueError, match="limits"):
        plot.shrinkage_plot(tab, limits=[(0, 1)])
    with pytest.raises(ValueError, match="limits"):
        plot.shrinkage_plot(tab, limits="everything")
    with pytest.raises(ValueError, match="sd"):
        plot.shrinkage_plot(tab, sd=(0.5, -1))
    with pytest.raises(ValueError, match="zoom"):
        plot.shrinkage_plot(tab, zoom=0)
    with pytest.raises(ValueError, match="pooling table"):
        plot.shrinkage_plot(pd.DataFrame({"a": [1]}))
