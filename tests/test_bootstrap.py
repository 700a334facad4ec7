"""mixedfit.bootstrap (lme4's bootMer) and confint(method="boot")."""

import math

import numpy as np
import pytest
from scipy.stats import norm

import mixedfit
from mixedfit._errors import NumericalError
from mixedfit.inference import refit as refit_module
from tests._confint_reference import confint_reference, reference_fit

QUANTILE_Z = 4.5   # 54 quantile comparisons: 4.5 standard errors keeps false alarms < 1e-3


def _quantile_se(probs, q, k, n):
    """Standard error of the sample p_k-quantile from n draws: sqrt(p(1-p)/n) / f(q_p), the
    density f estimated from neighbouring frozen quantiles."""
    lo, hi = max(k - 1, 0), min(k + 1, len(probs) - 1)
    dens = (probs[hi] - probs[lo]) / (q[hi] - q[lo])
    p = probs[k]
    return math.sqrt(p * (1 - p) / n) / dens


@pytest.mark.slow
def test_distribution_matches_bootmer():
    ref = confint_reference()["bootstrap_sleepstudy"]
    fit = reference_fit("sleepstudy_reml")
    nsim = ref["nsim"]
    boot = mixedfit.bootstrap(fit, nsim=nsim, seed=1, progress=False)
    assert boot.n_failed == 0
    probs = ref["probs"]
    for name, q_ref in ref["quantiles"].items():
        ours = np.nanquantile(boot.replicates[name].to_numpy(), probs)
        for k in range(len(probs)):
            se_one = _quantile_se(probs, q_ref, k, nsim)
            tol = QUANTILE_Z * math.sqrt(2) * se_one          # two independent runs of nsim
            assert abs(ours[k] - q_ref[k]) <= tol, (name, probs[k], ours[k], q_ref[k], tol)


def test_median_and_spread_match_bootmer_quickly():
    ref = confint_reference()["bootstrap_sleepstudy"]
    fit = reference_fit("sleepstudy_reml")
    nsim = 400
    boot = mixedfit.bootstrap(fit, nsim=nsim, seed=2, progress=False)
    probs = ref["probs"]
    for name, q_ref in ref["quantiles"].items():
        for k in (2, 4, 6):                                # 10 %, 50 %, 90 %
            se = math.sqrt(_quantile_se(probs, q_ref, k, nsim) ** 2
                           + _quantile_se(probs, q_ref, k, ref["nsim"]) ** 2)
            ours = np.nanquantile(boot.replicates[name].to_numpy(), probs[k])
            assert abs(ours - q_ref[k]) <= QUANTILE_Z * se, (name, probs[k])


def test_same_replicates_for_any_number_of_jobs():
    fit = reference_fit("sleepstudy_reml")
    a = mixedfit.bootstrap(fit, nsim=40, seed=7, n_jobs=1, progress=False)
    b = mixedfit.bootstrap(fit, nsim=40, seed=7, n_jobs=2, progress=False)
    assert a.replicates.equals(b.replicates)
    c = mixedfit.bootstrap(fit, nsim=40, seed=8, n_jobs=1, progress=False)
    assert not a.replicates.equals(c.replicates)


def test_same_replicates_for_any_number_of_processes_on_the_general_path():
    fit = reference_fit("dyestuff")

    def stat(f):
        return {"sigma": f.sigma, "mean": f.beta[0]}

    a = mixedfit.bootstrap(fit, nsim=24, func=stat, seed=3, n_jobs=1, progress=False)
    b = mixedfit.bootstrap(fit, nsim=24, func=stat, seed=3, n_jobs=2, progress=False)
    np.testing.assert_array_equal(a.replicates.to_numpy(), b.replicates.to_numpy())


def test_fast_path_agrees_with_the_general_optimizer():
    fit = reference_fit("sleepstudy_reml")
    fast = mixedfit.bootstrap(fit, nsim=30, seed=5, progress=False)
    general = mixedfit.bootstrap(fit, nsim=30, seed=5, progress=False,
                                 func=lambda f: dict(zip(fast.replicates.columns,
                                                         _default_stats(f))))
    scale = fast.replicates.std().to_numpy()
    diff = np.abs(fast.replicates.to_numpy() - general.replicates.to_numpy()) / scale
    # Two optimizers on one smooth criterion: the general path works on standardized data
    # and stops where BOBYQA's tolerance lets it; along the flat ridge of (.sig01, .sig02) a
    # replicate's estimates then differ by up to ~1e-3 of their bootstrap spread (measured
    # 1.1e-3); a real difference (another optimum, a wrong response) is far above 5e-3.
    assert np.nanmax(diff) < 5e-3


def _default_stats(f):
    vc = f.varcorr.terms[0]
    return [vc.sd[0], vc.corr[1, 0], vc.sd[1], f.sigma, *f.beta]


def test_original_and_statistics_names():
    fit = reference_fit("sleepstudy_reml")
    boot = mixedfit.bootstrap(fit, nsim=5, seed=1, progress=False)
    assert list(boot.replicates.columns) == [".sig01", ".sig02", ".sig03", ".sigma",
                                             "(Intercept)", "Days"]
    np.testing.assert_allclose(boot.original.to_numpy(), _default_stats(fit), rtol=1e-12)
    assert len(boot.replicates) == 5 and boot.nsim == 5


def test_glmm_bootstrap_runs_and_centres_on_the_estimates():
    fit = reference_fit("cbpp")
    boot = mixedfit.bootstrap(fit, nsim=30, seed=1, n_jobs=1, progress=False)
    assert list(boot.replicates.columns) == [".sig01", "(Intercept)", "period2", "period3",
                                             "period4"]
    assert boot.n_failed == 0
    se = np.sqrt(np.diag(fit.vcov.to_numpy()))
    mean = boot.replicates[list(fit.design.fixed_names)].mean().to_numpy()
    assert np.all(np.abs(mean - fit.beta) < 5 * se / math.sqrt(30) * 1.5)


def test_failed_refits_are_counted_and_kept_as_nan(monkeypatch):
    fit = reference_fit("dyestuff")
    real = refit_module.LmmRefitter.refit
    calls = {"n": 0}

    def flaky(self, y):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise NumericalError("simulated failure")
        return real(self, y)

    monkeypatch.setattr(refit_module.LmmRefitter, "refit", flaky)
    with pytest.warns(UserWarning, match="bootstrap refits failed"):
        boot = mixedfit.bootstrap(fit, nsim=12, func=lambda f: {"s": f.sigma}, seed=1,
                                  n_jobs=1, progress=False)
    assert boot.n_failed == 4 and boot.replicates["s"].isna().sum() == 4
    assert "simulated failure" in boot.failures[0]
    with pytest.warns(UserWarning, match="4 of 12"):
        boot.confint()


def test_interval_types():
    fit = reference_fit("dyestuff")
    boot = mixedfit.bootstrap(fit, nsim=60, seed=1, progress=False)
    t, t0 = boot.replicates, boot.original
    perc, basic, nrm = (boot.confint(type=k, level=0.9) for k in ("perc", "basic", "norm"))
    assert list(perc.columns) == ["5 %", "95 %"]
    np.testing.assert_allclose(basic["5 %"], 2 * t0 - perc["95 %"])
    np.testing.assert_allclose(basic["95 %"], 2 * t0 - perc["5 %"])
    z = norm.ppf(0.95)
    np.testing.assert_allclose(nrm["5 %"], 2 * t0 - t.mean() - z * t.std())
    assert np.all(perc["5 %"] <= t.median()) and np.all(t.median() <= perc["95 %"])


def test_confint_boot_method_uses_the_confint_rows():
    fit = reference_fit("dyestuff")
    ci = fit.confint(method="boot", nsim=30, seed=1, progress=False)
    assert list(ci.index) == [".sig01", ".sigma", "(Intercept)"]
    assert np.all(ci.iloc[:, 0] < ci.iloc[:, 1])


def test_no_progress_output_when_disabled(capsys):
    mixedfit.bootstrap(reference_fit("dyestuff"), nsim=5, seed=1, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("kwargs,match", [
    (dict(nsim=0), "nsim"),
    (dict(nsim=2.5), "nsim"),
    (dict(n_jobs=0), "n_jobs"),
    (dict(func=3), "func"),
    (dict(func=lambda f: 1 / 0), "func raised ZeroDivisionError"),
    (dict(func=lambda f: {"a": "x"}), "func must return a dict of numbers"),
    (dict(func=lambda f: [1.0]), "func must return a non-empty dict"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mixedfit.bootstrap(reference_fit("dyestuff"), **{"nsim": 3, "progress": False, **kwargs})


def test_bad_interval_arguments():
    boot = mixedfit.bootstrap(reference_fit("dyestuff"), nsim=3, seed=1, progress=False)
    with pytest.raises(ValueError, match="type"):
        boot.confint(type="bca")
    with pytest.raises(ValueError, match="level"):
        boot.confint(level=1.5)


def test_fast_path_with_weights_and_offset_agrees_with_the_general_optimizer():
    from tests._reference import load_data

    d = load_data("lmm", "sleepstudy_wo")
    fit = mixedfit.lmer("Reaction ~ Days + offset(off) + (Days | Subject)", d, weights="w")
    fast = mixedfit.bootstrap(fit, nsim=20, seed=5, progress=False)
    general = mixedfit.bootstrap(fit, nsim=20, seed=5, progress=False,
                                 func=lambda f: dict(zip(fast.replicates.columns,
                                                         _default_stats(f))))
    scale = fast.replicates.std().to_numpy()
    diff = np.abs(fast.replicates.to_numpy() - general.replicates.to_numpy()) / scale
    assert np.nanmax(diff) < 1e-3
