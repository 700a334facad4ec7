"""glmer on Dask DataFrames equals the in-memory glmer of the same rows.

A LocalCluster (two worker processes) fits data written to Parquet in six files. Each PIRLS
step of the Dask fit is one pass over the partitions, solved with the same crossproduct core
as the Dask LMM, under the in-memory fit's own two-stage optimizer.

Tolerances, and why:

* one random-effects term, binomial-logit or Poisson-log (the in-memory default takes the
  exact gradient, and so does the Dask fit, from cross products and row sums): the same
  Newton path on the same objective (its sums differ in order only), the same number of
  evaluations; the objective to 1e-10 relative (measured <= 2e-14) and theta, beta to 1e-6
  relative (measured 1e-14 .. 4e-7). Not 1e-8: the recipe ends with one Newton step on a
  Hessian from gradient differences that is kept only if it lowers the objective, and at
  the optimum that decrease (~1e-14 relative) is below the rounding in which the two fits'
  sums differ -- one fit may keep a step of ~1e-7 the other drops. vcov to 1e-6 of its
  largest entry (measured <= 4e-9);
* several terms (the Dask fit takes the derivative-free path: their gradient needs selected
  inverses the crossproduct core does not form): against the in-memory BOBYQA fit, the same
  path, the objective to 1e-10 and the estimates to 1e-7 (the rounding of the sums moves
  BOBYQA's path by ~1e-8: measured 9e-9); against the default in-memory fit (Newton) the
  objective to 1e-10 and the estimates to 1e-5 (two optimizers' stopping points, measured
  ~1e-7); vcov to 1e-3 of its largest entry (lme4's Hessian by central differences of an
  objective of ~1e3 carries ~1e-5 relative noise from its rounding; measured 1.6e-4);
* the objective as a function of (theta, beta) at a fixed point to 1e-10 relative (PIRLS
  converges to ~1e-12 either way).
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
from mixedfit import DataError  # noqa: E402

OBJ_RTOL = 1e-10
EST_RTOL = 1e-6           # one term: the same gradient path (see above)
VCOV_RTOL = 1e-6
BOBYQA_RTOL = 1e-7        # several terms: the same BOBYQA path
OTHER_PATH_RTOL = 1e-5    # several terms against the default (Newton) path
BOBYQA_VCOV_RTOL = 1e-3
NPART = 6


def _frame(seed=4, n=720, ngroups=24):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, ngroups, n)
    h = rng.integers(0, 6, n)
    x = rng.normal(size=n)
    b = 0.8 * rng.normal(size=ngroups + 1)
    part = np.repeat(np.arange(NPART), n // NPART)
    last = (part == NPART - 1) & (np.arange(n) % 4 == 0)
    g = np.where(last, ngroups, g)                      # a level only the last partition has
    eta = -0.3 + 0.7 * x + b[g] + 0.5 * np.cos(h)
    trials = rng.integers(1, 8, n)
    o = 0.3 * rng.normal(size=n)
    df = pd.DataFrame({
        "y01": (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype("int64"),
        "succ": rng.binomial(trials, 1 / (1 + np.exp(-eta))).astype(float),
        "x": x, "g": [f"g{k:02d}" for k in g], "h": h, "o": o, "w": rng.uniform(0.5, 2.0, n),
        "part": part,
    })
    df["fail"] = trials - df["succ"]
    df["counts"] = rng.poisson(np.exp(0.2 + 0.3 * x + 0.5 * b[g] + o))
    df["xm"] = df["x"].where(np.arange(n) % 40 != 3)      # 18 missing values
    return df


@pytest.fixture(scope="module")
def data(tmp_path_factory, cluster):
    df = _frame()
    folder = tmp_path_factory.mktemp("parquet_glmm")
    for k, part in df.groupby("part"):
        part.to_parquet(folder / f"part-{k:02d}.parquet")
    ddf = dd.read_parquet(str(folder))
    assert ddf.npartitions == NPART
    return df.reset_index(drop=True), ddf


def _fit(formula, frame, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixedfit.SingularFitWarning)
        return mixedfit.glmer(formula, frame, **kw)


@pytest.fixture(scope="module")
def fits(data):
    """(Dask fit, in-memory fit) of a formula and arguments, once per module; ``control``
    goes to the in-memory fit only."""
    df, ddf = data
    cache = {}

    def pair(formula, control=None, **kw):
        key = (formula, str(control), tuple(sorted(kw.items())))
        if key not in cache:
            dask_key = (formula, tuple(sorted(kw.items())))
            if dask_key not in cache:
                cache[dask_key] = _fit(formula, ddf, progress=False, **kw)
            cache[key] = (cache[dask_key], _fit(formula, df, control=control, **kw))
        return cache[key]

    return pair


def _same_fit(fd, fp, est_rtol=EST_RTOL, vcov_rtol=VCOV_RTOL):
    assert isinstance(fd, type(fp))
    np.testing.assert_allclose(-2 * fd.loglik, -2 * fp.loglik, rtol=OBJ_RTOL)
    np.testing.assert_allclose(fd.deviance, fp.deviance, rtol=max(1e-8, est_rtol))
    np.testing.assert_allclose(fd.theta, fp.theta, rtol=est_rtol, atol=1e-7)
    np.testing.assert_allclose(fd.beta, fp.beta, rtol=est_rtol, atol=1e-9)
    V = fp.vcov.to_numpy()
    np.testing.assert_allclose(fd.vcov.to_numpy(), V, rtol=vcov_rtol,
                               atol=vcov_rtol * np.abs(V).max())
    assert list(fd.fixef.index) == list(fp.fixef.index)
    for (gd, rd), (gp, rp) in zip(fd.ranef().items(), fp.ranef().items()):
        assert gd == gp and list(rd.index) == list(rp.index)
        np.testing.assert_allclose(rd.to_numpy(), rp.to_numpy(), rtol=100 * est_rtol,
                                   atol=1e-8)
    # the objective as a function of (theta, beta), at the in-memory optimum
    par = np.r_[fp.theta, fp.beta]
    np.testing.assert_allclose(fd.objective(par), fp.objective(par), rtol=OBJ_RTOL)
    assert fd.passes > 0


CASES = [
    ("y01 ~ x + (1 | g)", {"family": "binomial"}),
    ("counts ~ x + (1 | g)", {"family": "poisson", "offset": "o", "weights": "w"}),
    ("y01 ~ x + (x | g)", {"family": "binomial"}),
]


def test_binomial_cbind_equals_in_memory(fits):
    """The default tier's Laplace fit (the others are marked slow: ~5-15 s each)."""
    fd, fp = fits("cbind(succ, fail) ~ x + (1 | g)", family="binomial")
    assert fd.optinfo.method == fp.optinfo.method == "Newton"
    _same_fit(fd, fp)
    assert "g24" in fd.ranef()["g"].index         # the level only the last partition has


@pytest.mark.slow
@pytest.mark.parametrize("formula,kw", CASES)
def test_glmer_equals_in_memory(fits, formula, kw):
    fd, fp = fits(formula, **kw)
    _same_fit(fd, fp)
    assert "g24" in fd.ranef()["g"].index


@pytest.mark.slow
def test_several_terms_take_the_derivative_free_path(fits):
    fd, fb = fits("y01 ~ x + (1 | g) + (1 | h)", family="binomial",
                  control={"optimizer": "bobyqa"})
    assert fd.optinfo.method == fb.optinfo.method != "Newton"
    _same_fit(fd, fb, BOBYQA_RTOL, BOBYQA_VCOV_RTOL)
    _, fp = fits("y01 ~ x + (1 | g) + (1 | h)", family="binomial")
    _same_fit(fd, fp, OTHER_PATH_RTOL, BOBYQA_VCOV_RTOL)


@pytest.mark.slow
def test_probit_link_scoring_steps(fits):
    """A non-canonical link: PIRLS is Fisher scoring (damped after a halving, as in the
    core) and both fits take the derivative-free path (measured: theta 8e-9, beta 2e-8)."""
    fd, fp = fits("y01 ~ x + (1 | g)", family="binomial", link="probit")
    assert fd.optinfo.method == fp.optinfo.method != "Newton"
    _same_fit(fd, fp, BOBYQA_RTOL, BOBYQA_VCOV_RTOL)


@pytest.mark.slow
def test_empty_partitions_and_missing_values(data):
    df, ddf = data
    sub, dfs = ddf[ddf.part != 2], df[df.part != 2]  # a partition without rows
    with pytest.warns(UserWarning, match=r"dropped 15 row\(s\) with missing values"):
        fd = _fit("y01 ~ xm + (1 | g)", sub, family="binomial", progress=False)
    with pytest.warns(UserWarning, match=r"dropped 15 row\(s\)"):
        fp = _fit("y01 ~ xm + (1 | g)", dfs, family="binomial")
    _same_fit(fd, fp)


@pytest.mark.slow
def test_fitted_residuals_predict_and_summary(data, fits):
    df, ddf = data
    fd, fb = fits("counts ~ x + (1 | g)", family="poisson", offset="o", weights="w")
    fitted = fd.fitted()
    assert isinstance(fitted, dd.Series)
    np.testing.assert_allclose(fitted.compute().to_numpy(), fb.fitted().to_numpy(), rtol=1e-6)
    for kind in ("deviance", "pearson", "response", "working"):
        res = fd.residuals(type=kind)
        assert isinstance(res, dd.Series)
        np.testing.assert_allclose(res.compute().to_numpy(), fb.residuals(type=kind).to_numpy(),
                                   rtol=1e-5, atol=1e-8)
    for kind in ("link", "response"):
        pred = fd.predict(newdata=ddf, type=kind)
        assert isinstance(pred, dd.Series)
        np.testing.assert_allclose(pred.compute().to_numpy(),
                                   fb.predict(newdata=df, type=kind), rtol=1e-6, atol=1e-8)
    text = str(fd.summary())
    assert "Random effects" in text and "Scaled residuals" in text
    pd.testing.assert_frame_equal(fd.coef_table(), fb.coef_table(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(fd.ranef(condvar=True)["g"], float),
                               np.asarray(fb.ranef(condvar=True)["g"], float), rtol=1e-5,
                               atol=1e-8)
    small_d, small_p = fits("counts ~ 1 + (1 | g)", family="poisson", offset="o", weights="w")
    ad, ap = mixedfit.anova(small_d, fd), mixedfit.anova(small_p, fb)
    np.testing.assert_allclose(np.asarray(ad["Chisq"], float)[1:],
                               np.asarray(ap["Chisq"], float)[1:], rtol=1e-6)


def test_refused_and_bad_input(data):
    _, ddf = data
    with pytest.raises(NotImplementedError, match="nagq = 3"):
        mixedfit.glmer("y01 ~ x + (1 | g)", ddf, nagq=3, progress=False)
    with pytest.raises(NotImplementedError, match="Gamma"):
        mixedfit.glmer("counts ~ x + (1 | g)", ddf, family="Gamma", progress=False)
    with pytest.raises(DataError, match="'g' of a Dask fit must be 0/1"):
        mixedfit.glmer("g ~ x + (1 | g)", ddf, progress=False)
    with pytest.raises(DataError, match="poisson response 'x' has negative values"):
        mixedfit.glmer("x ~ 1 + (1 | g)", ddf, family="poisson", progress=False)
    with pytest.raises(DataError, match="Response is constant"):
        mixedfit.glmer("y01 ~ x + (1 | g)", ddf[ddf.y01 == 1], progress=False)


def _die_once(part, marker):
    """Kills the worker process the first time it runs (the marker file records it)."""
    if len(part) and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return part


@pytest.mark.slow
def test_killed_worker_mid_pirls_gives_the_right_fit(data, fits, tmp_path):
    """The worker dies while a PIRLS pass reads the rows (the rows kept on the workers are
    lost with it): Dask recomputes them, and the fit is the one without the failure."""
    import mixedfit.dask._working as working

    _, ddf = data
    marker = str(tmp_path / "killed")
    real = working.working_rows_partition

    def dying(a, *args):
        if a is not None:
            try:
                os.remove(marker + ".armed")   # one task (of either worker) claims it
            except FileNotFoundError:
                pass
            else:
                os._exit(1)
        return real(a, *args)

    open(marker + ".armed", "w").close()
    try:
        working.working_rows_partition = dying
        import mixedfit.dask._glmm as glmm_mod

        glmm_mod.working_rows_partition = dying
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fd = _fit("y01 ~ x + (1 | g)", ddf, family="binomial", progress=False)
    finally:
        working.working_rows_partition = real
        glmm_mod.working_rows_partition = real
    assert not os.path.exists(marker + ".armed")
    _same_fit(fd, fits("y01 ~ x + (1 | g)", family="binomial")[1])


@pytest.mark.slow
def test_default_scheduler_and_pickling(data):
    """Without a distributed Client the passes read the partitions each time on Dask's local
    scheduler (nothing kept in this process); a pickled fit keeps its tables."""
    import pickle

    import mixedfit.dask._passes as passes

    df, _ = data
    local = dd.from_pandas(df, npartitions=4)
    real = passes._active_client
    passes._active_client = lambda: None
    try:
        fd = _fit("y01 ~ x + (1 | g)", local, family="binomial", fast=True, progress=False)
    finally:
        passes._active_client = real
    fp = _fit("y01 ~ x + (1 | g)", df, family="binomial", fast=True)
    np.testing.assert_allclose(-2 * fd.loglik, -2 * fp.loglik, rtol=OBJ_RTOL)
    np.testing.assert_allclose(fd.beta, fp.beta, rtol=EST_RTOL)
    again = pickle.loads(pickle.dumps(fd))
    pd.testing.assert_frame_equal(again.coef_table(), fd.coef_table())
    with pytest.raises(NotImplementedError, match="without its Dask collection"):
        again.objective(np.r_[fd.theta, fd.beta])


def test_nagq0_with_progress_bar_equals_in_memory(data, capsys):
    """The default tier's fit: nagq = 0 (stage 1 only, a few seconds), with the bar over the
    passes; its numbers equal the in-memory nagq = 0 fits' as the Laplace fits' do."""
    df, ddf = data
    fd = _fit("y01 ~ x + (1 | g)", ddf, family="binomial", fast=True)
    err = capsys.readouterr().err
    assert "glmer passes over the rows" in err and f"{fd.passes - 2}pass" in err.replace(" ", "")
    fp = _fit("y01 ~ x + (1 | g)", df, family="binomial", fast=True)
    np.testing.assert_allclose(-2 * fd.loglik, -2 * fp.loglik, rtol=OBJ_RTOL)
    np.testing.assert_allclose(fd.theta, fp.theta, rtol=EST_RTOL)
    np.testing.assert_allclose(fd.beta, fp.beta, rtol=EST_RTOL)
    with pytest.raises(NotImplementedError, match="simulate"):
        fd.simulate(1)
