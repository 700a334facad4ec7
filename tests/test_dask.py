"""Fits of Dask DataFrames (mixedfit.dask) equal the in-memory fits of the same rows.

One LocalCluster (two worker processes, one thread each) serves the module; the data are
written to Parquet in many files and read back with dask.dataframe, so every pass runs on
the workers. Tolerances: the objective to 1e-10 relative, at fixed theta and at the optimum
(the cross products are summed in another order than the in-memory core sums them:
rounding, ~1e-13 measured). Estimates (beta, theta, sigma) agree to 1e-6 relative, not to
rounding: BOBYQA takes the same path from the same start, but the rounding above can move
its last steps within its stopping tolerance (ftol_abs = 1e-8 on the criterion). Measured:
3e-11 in most cases, 5.3e-8 in theta for the offset cases on one CPU, 1.1e-7 with five
partitions. Either fit's theta is therefore also checked to be as good a minimum of the
other's criterion, to within that stopping tolerance.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import mixedfit  # noqa: E402
from mixedfit import DataError, FormulaError  # noqa: E402

OBJ_RTOL = 1e-10
EST_RTOL = 1e-6
FTOL_ABS = 1e-8  # BOBYQA's stopping tolerance on the criterion (lme4's)


def _frame(seed=0, n=1200, ngroups=30, nh=8):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, ngroups, n)
    h = rng.integers(0, nh, n)
    x = rng.normal(size=n)
    b0 = rng.normal(size=ngroups)
    b1 = 0.5 * rng.normal(size=ngroups)
    c = rng.normal(size=nh) * 0.7
    f = rng.choice(["a", "b", "c"], n)
    y = 2.0 + 0.8 * x + b0[g] + b1[g] * x + c[h] + (f == "b") * 0.4 + rng.normal(size=n)
    df = pd.DataFrame({
        "y": y, "x": x, "g": [f"g{k:02d}" for k in g], "h": h.astype("int64"), "f": f,
        "w": rng.uniform(0.5, 2.0, n), "o": rng.normal(size=n) * 0.3,
        "part": np.repeat(np.arange(12), n // 12),
    })
    df["yo"] = df["y"] + df["o"]
    df["xm"] = df["x"].where(np.arange(n) % 50 != 7)   # 24 missing values
    df["gcat"] = df["g"].astype("category")             # Dask's metadata lacks its categories
    # A fixed-effect level and a grouping level that only the last partition has.
    last = df["part"] == 11
    df.loc[last & (np.arange(n) % 3 == 0), "f"] = "rare"
    df.loc[last & (np.arange(n) % 5 == 0), "g"] = "g_last"
    df["counts"] = rng.poisson(np.exp(0.3 + 0.2 * x + b0[g] * 0.3))
    return df


@pytest.fixture(scope="module")
def data(tmp_path_factory, cluster):
    df = _frame()
    folder = tmp_path_factory.mktemp("parquet")
    for k, part in df.groupby("part"):
        part.to_parquet(folder / f"part-{k:02d}.parquet")
    ddf = dd.read_parquet(str(folder))
    assert ddf.npartitions == 12
    return df.reset_index(drop=True), ddf


@pytest.fixture(scope="module")
def fits(data):
    """(Dask fit, pandas fit) of a formula and arguments, each fitted once per module."""
    df, ddf = data
    cache = {}

    def pair(formula, **kw):
        key = (formula, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = (mixedfit.lmer(formula, ddf, progress=False, **kw),
                          mixedfit.lmer(formula, df, **kw))
        return cache[key]

    return pair


def _same_fit(fd, fp, est_rtol=EST_RTOL):
    assert isinstance(fd, type(fp))
    # The criterion as a function: at fixed theta the two problems agree to rounding.
    for theta in (fp.theta, fp.theta * 0.7 + 0.1):
        np.testing.assert_allclose(fd.objective(theta), fp.objective(theta), rtol=OBJ_RTOL)
    # Each optimum is as low on the other's criterion, to within the stopping tolerance.
    assert fp.objective(fd.theta) <= fp.objective(fp.theta) + FTOL_ABS
    assert fd.objective(fp.theta) <= fd.objective(fd.theta) + FTOL_ABS
    obj_d = fd.reml_criterion if fd.reml else -2 * fd.loglik
    obj_p = fp.reml_criterion if fp.reml else -2 * fp.loglik
    np.testing.assert_allclose(obj_d, obj_p, rtol=OBJ_RTOL)
    np.testing.assert_allclose(fd.theta, fp.theta, rtol=est_rtol, atol=1e-10)
    np.testing.assert_allclose(fd.beta, fp.beta, rtol=est_rtol, atol=1e-10)
    np.testing.assert_allclose(fd.sigma, fp.sigma, rtol=est_rtol)
    assert list(fd.fixef.index) == list(fp.fixef.index)
    np.testing.assert_allclose(fd.vcov.to_numpy(), fp.vcov.to_numpy(), rtol=10 * est_rtol,
                               atol=1e-12)
    for (gd, rd), (gp, rp) in zip(fd.ranef().items(), fp.ranef().items()):
        assert gd == gp
        assert list(rd.index) == list(rp.index)
        np.testing.assert_allclose(rd.to_numpy(), rp.to_numpy(), rtol=10 * est_rtol, atol=1e-9)


CASES = [
    ("y ~ x + (1 | g)", {}),
    ("y ~ x + f + (x | g)", {}),
    ("y ~ x + (1 | g) + (1 | h)", {}),
    ("y ~ x + (1 | gcat:h)", {}),
    ("y ~ x + factor(h) + (1 | g)", {}),            # a numeric column's values as levels
    ("y ~ x + (1 | g)", {"weights": "w", "reml": False}),
    ("yo ~ x + offset(o) + (1 | g)", {}),
    ("yo ~ x + (1 | g)", {"offset": "o"}),
]


@pytest.mark.parametrize("formula,kw", CASES)
def test_fit_equals_in_memory(fits, formula, kw):
    fd, fp = fits(formula, **kw)
    _same_fit(fd, fp)
    assert fd.nobs == fp.nobs


def test_many_levels_take_the_gradient_path_as_in_memory(cluster, tmp_path):
    """A one-term model takes the gradient path in memory; its gradient comes from A's
    blocks, so the Dask fit takes the same path, here on 600 levels, and agrees as closely."""
    df = _frame(seed=3, n=6000, ngroups=600)
    for k, part in df.groupby(np.arange(len(df)) % 5):
        part.to_parquet(tmp_path / f"part-{k}.parquet")
    ddf = dd.read_parquet(str(tmp_path))
    fd = mixedfit.lmer("y ~ x + (x | g)", ddf, progress=False)
    fp = mixedfit.lmer("y ~ x + (x | g)", df)
    assert fp.optinfo.method == fd.optinfo.method != "bobyqa"
    _same_fit(fd, fp)


def test_level_in_one_partition_only(fits):
    fd, fp = fits("y ~ x + f + (x | g)")
    assert "frare" in fd.fixef.index
    assert "g_last" in fd.ranef()["g"].index
    _same_fit(fd, fp)


def test_empty_partitions_and_missing_values(data):
    df, ddf = data
    sub = ddf[(ddf.part != 3) & (ddf.part != 7)]       # two partitions without rows
    dfs = df[(df.part != 3) & (df.part != 7)]
    with pytest.warns(UserWarning, match=r"dropped 20 row\(s\) with missing values"):
        fd = mixedfit.lmer("y ~ xm + (xm | g)", sub, progress=False)
    with pytest.warns(UserWarning, match=r"dropped 20 row\(s\)"):
        fp = mixedfit.lmer("y ~ xm + (xm | g)", dfs)
    _same_fit(fd, fp)


def test_fitted_residuals_predict_are_lazy_and_equal(data, fits):
    df, ddf = data
    fd, fp = fits("y ~ x + f + (x | g)")
    fitted = fd.fitted()
    assert isinstance(fitted, dd.Series)
    want = fp.fitted().to_numpy()
    # estimates agree to ~1e-8 relative, so fitted values do on their own scale (a value near
    # zero is a difference of values of that scale)
    np.testing.assert_allclose(fitted.compute().to_numpy(), want, rtol=1e-8,
                               atol=1e-8 * np.abs(want).max())
    res = fd.residuals(type="pearson", scaled=True)
    assert isinstance(res, dd.Series)
    np.testing.assert_allclose(res.compute().to_numpy(),
                               fp.residuals(type="pearson", scaled=True).to_numpy(),
                               rtol=1e-7, atol=1e-9)
    pred = fd.predict(newdata=ddf, re_form="~0")
    assert isinstance(pred, dd.Series)
    np.testing.assert_allclose(pred.compute().to_numpy(), fp.predict(newdata=df, re_form="~0"),
                               rtol=1e-8)


def test_tables_of_a_dask_fit(fits):
    fd, fp = fits("y ~ x + (1 | g)", reml=False)
    fd2, fp2 = fits("y ~ x + (x | g)", reml=False)
    assert "Random effects" in str(fd.summary())
    pd.testing.assert_frame_equal(fd.coef_table("lme4"), fp.coef_table("lme4"), rtol=1e-7)
    vd, vp = fd.varcorr.to_frame(), fp.varcorr.to_frame()
    np.testing.assert_allclose(vd["sdcor"], vp["sdcor"], rtol=1e-8)
    ad = mixedfit.anova(fd, fd2)
    ap = mixedfit.anova(fp, fp2)
    np.testing.assert_allclose(np.asarray(ad["Chisq"], float)[1:], np.asarray(ap["Chisq"], float)[1:],
                               rtol=1e-6)


@pytest.mark.parametrize("formula", ["y ~ x + f + (x | g)", "y ~ x + (1 | g) + (1 | h)"])
def test_satterthwaite_and_kenward_roger_from_cross_products(fits, formula):
    """The df methods need only A (Z'WZ, Z'W[X y], [X y]'W[X y]): the same tables (to the
    estimates' 1e-8 carried through the df formulas, 1e-7)."""
    fd, fp = fits(formula)
    for ddf in ("Satterthwaite", "Kenward-Roger"):
        pd.testing.assert_frame_equal(fd.coef_table(ddf), fp.coef_table(ddf), rtol=1e-7)


@pytest.mark.parametrize("formula", ["y ~ x * f + (1 | g)", "y ~ f + xm + (1 | g) + (1 | h)"])
@pytest.mark.parametrize("type", [1, 2, 3])
def test_single_fit_anova_equals_in_memory(fits, formula, type):
    """lmerTest's anova(fit) of a Dask fit: types I and II from X'X (the scaling pass's R
    factor), type III from a synthetic design over the factors' levels (its contrasts depend
    on the design's structure alone). Tolerance: that of the estimates (see the module)."""
    fd, fp = fits(formula)
    ad, ap = mixedfit.anova(fd, type=type), mixedfit.anova(fp, type=type)
    assert list(ad.index) == list(ap.index) and ad.attrs["heading"] == ap.attrs["heading"]
    np.testing.assert_allclose(ad.to_numpy(), ap.to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("method", ["simulate", "refit", "profile"])
def test_methods_needing_refits_are_refused(fits, method):
    fd, _ = fits("y ~ x + (1 | g)")
    with pytest.raises(NotImplementedError, match=method):
        getattr(fd, method)(1) if method != "profile" else fd.profile()
    with pytest.raises(NotImplementedError, match="stays on the cluster"):
        fd.design.X


def test_bad_input_names_the_column(data):
    _, ddf = data
    with pytest.raises(FormulaError, match="nope"):
        mixedfit.lmer("y ~ nope + (1 | g)", ddf, progress=False)
    with pytest.raises(FormulaError, match="grouping factor 'gg'"):
        mixedfit.lmer("y ~ x + (1 | gg)", ddf, progress=False)
    with pytest.raises(DataError, match="weights column 'ww'"):
        mixedfit.lmer("y ~ x + (1 | g)", ddf, weights="ww", progress=False)
    with pytest.raises(DataError, match="response 'f' must be numeric"):
        mixedfit.lmer("f ~ x + (1 | g)", ddf, progress=False)
    with pytest.raises(DataError, match="weights must be positive"):
        mixedfit.lmer("y ~ x + (1 | g)", ddf.assign(w=ddf.w - 1.0), weights="w", progress=False)
    with pytest.raises(FormulaError, match="scale.*not supported on Dask"):
        mixedfit.lmer("y ~ scale(x) + (1 | g)", ddf, progress=False)


def test_client_receives_partials_only(data, monkeypatch):
    """Every value the client gathers from the cluster is a reduced partial: its size does not
    grow with the rows (a fit of 12x the rows gathers the same number of bytes)."""
    from dask.sizeof import sizeof

    import mixedfit.dask._passes as passes

    gathered = []
    real = passes.compute

    def recording(obj, progress):
        out = real(obj, progress)
        gathered.append(sizeof(out))
        return out

    monkeypatch.setattr(passes, "compute", recording)
    df, ddf = data
    mixedfit.lmer("y ~ x + (1 | g)", ddf, progress=False)
    small = list(gathered)
    gathered.clear()
    big = dd.concat([ddf] * 3)
    mixedfit.lmer("y ~ x + (1 | g)", big, progress=False)
    assert len(small) == len(gathered) == 3          # scan, scaling, cross products
    assert max(gathered) < 64_000                    # the rows alone are ~100 kB
    assert max(gathered) <= 1.5 * max(small)          # 3x the rows, not more bytes


def _die_once(part, marker):
    """Kills the worker process the first time it runs (the marker file records it)."""
    if len(part) and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return part


def test_killed_worker_gives_the_right_fit(data, tmp_path):
    df, ddf = data
    marker = str(tmp_path / "killed")
    flaky = ddf.map_partitions(_die_once, marker, meta=ddf._meta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the nanny's and the scheduler's reports
        fd = mixedfit.lmer("y ~ x + (1 | g)", flaky, progress=False)
    assert os.path.exists(marker)
    _same_fit(fd, mixedfit.lmer("y ~ x + (1 | g)", df))


def test_progress_bar(data, fits, capsys):
    _, ddf = data
    fd = mixedfit.lmer("y ~ x + (1 | g)", ddf, progress=True)
    assert "100%" in capsys.readouterr().out
    _same_fit(fd, fits("y ~ x + (1 | g)")[1])


def test_default_scheduler_without_client(data, fits):
    """Without a distributed Client the passes run on Dask's local scheduler."""
    df, _ = data
    local = dd.from_pandas(df, npartitions=5)
    with _no_client():
        fd = mixedfit.lmer("y ~ x + (1 | g)", local, progress=False)
    # Five partitions sum A in another order than twelve do (1.1e-7 in theta measured).
    _same_fit(fd, fits("y ~ x + (1 | g)")[1])


class _no_client:
    """Makes the module's Client not the default one for a while."""

    def __enter__(self):
        import mixedfit.dask._passes as passes

        self._real = passes._active_client
        passes._active_client = lambda: None

    def __exit__(self, *exc):
        import mixedfit.dask._passes as passes

        passes._active_client = self._real


def test_summary_equals_in_memory_text(fits):
    """The summary's scaled-residual quantiles are exact (computed on the cluster)."""
    fd, fp = fits("y ~ x + f + (x | g)")
    assert str(fd.summary()) == str(fp.summary())


def test_exact_quantiles_heavy_tails(cluster):
    from mixedfit.dask._quantiles import exact_quantiles

    v = np.random.default_rng(1).standard_cauchy(20001)
    probs = [0, 0.1, 0.25, 0.5, 0.77, 1]
    got = exact_quantiles(dd.from_pandas(pd.Series(v), npartitions=7), probs)
    np.testing.assert_array_equal(got, np.quantile(v, probs))


def test_crossproduct_core_refuses_row_methods_and_pickles(fits):
    import pickle

    fd, fp = fits("y ~ x + (1 | g)")
    core = fd._problem.core
    assert not core.has_rows
    with pytest.raises(TypeError, match="needs the data rows"):
        core.linear_predictor(np.zeros(2), np.zeros(core.q))
    # a one-term model's gradient needs A alone; two terms' needs the rows
    _, grad = core.objective_grad(fd.theta, True)
    np.testing.assert_allclose(grad, fp._problem.core.objective_grad(fd.theta, True)[1],
                               rtol=1e-8, atol=1e-8)
    two = fits("y ~ x + (1 | g) + (1 | h)")[0]._problem.core
    with pytest.raises(TypeError, match="needs the data rows"):
        two.objective_grad(np.ones(2), True)
    again = pickle.loads(pickle.dumps(fd))
    assert again.objective(fp.theta) == fd.objective(fp.theta)
    assert again.design.source is None


def test_partial_crossproduct_equals_dense():
    """A partition's lower triangle of [Z D]' W [Z D] (per-level sums) against the dense
    product, for three terms (vector, scalar, vector) crossed."""
    from mixedfit.dask._crossprod import Layout, _partial_crossprod

    rng = np.random.default_rng(0)
    n = 500
    lay = Layout((30, 7, 5), (2, 1, 2))
    codes = [rng.integers(0, nl, n) for nl in lay.nlevels]
    Z = [np.column_stack([np.ones(n), rng.normal(size=n)]), np.ones((n, 1)),
         np.column_stack([np.ones(n), rng.normal(size=n)])]
    D, w = rng.normal(size=(n, 3)), rng.uniform(0.5, 2, n)
    M = np.zeros((n, lay.q + 3))
    for k in range(3):
        for a in range(lay.p[k]):
            M[np.arange(n), lay.starts[k] + codes[k] * lay.p[k] + a] = Z[k][:, a]
    M[:, lay.q:] = D
    want = np.tril(M.T @ (M * w[:, None]))
    got = _partial_crossprod(codes, Z, D, w, lay).toarray()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
