"""The ``mixedfit`` command: the demo's files, and ``fit`` on good and bad input."""

import json
import re
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import mixedfit
from mixedfit import cli, simulate


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    import io
    from contextlib import redirect_stderr, redirect_stdout

    so, se = io.StringIO(), io.StringIO()
    with redirect_stdout(so), redirect_stderr(se), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = cli.main(["demo", "--out", str(out), "--n-cluster", "12", "--frames", "6",
                         "--no-bayes"])
    return out, code, so.getvalue(), se.getvalue()


def test_demo_writes_every_file(demo_dir):
    out, code, stdout, stderr = demo_dir
    assert code == 0
    slugs = [s.slug for s in cli.DEMO_SETTINGS]
    assert len(slugs) == 6
    for slug in slugs:
        for ext in ("png", "gif"):
            assert (out / f"{slug}.{ext}").stat().st_size > 1000
        tab = pd.read_csv(out / f"{slug}_pooling.csv", index_col=0)
        assert len(tab) <= 12 and "shrinkage_x" in tab.columns
    for name in ("bernoulli.png", "bernoulli.gif", "bernoulli_proportions.png",
                 "bernoulli_caterpillar.png", "baseline_caterpillar.png", "comparison.csv",
                 "index.html"):
        assert (out / name).exists(), name


def test_demo_images_are_valid(demo_dir):
    out = demo_dir[0]
    for path in sorted(out.glob("*.png")) + sorted(out.glob("*.gif")):
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            assert img.format == ("PNG" if path.suffix == ".png" else "GIF")
            assert min(img.size) >= 200
            if img.format == "GIF":
                assert img.n_frames >= 3
            arr = np.asarray(img.convert("RGB"))
            assert arr.std() > 5, f"{path.name} looks blank"


def test_demo_report_links_the_pictures(demo_dir):
    out = demo_dir[0]
    html = (out / "index.html").read_text(encoding="utf-8")
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) >= 16
    for s in srcs:
        assert (out / s).exists(), s
    for s in cli.DEMO_SETTINGS:
        assert f'id="{s.slug}"' in html and s.title in html
    assert "Linear mixed model fit by REML" in html
    assert "Comparing the settings" in html and "<table>" in html
    assert html.count("<h2") == 8


def test_demo_prints_summaries_comparison_and_progress(demo_dir):
    _, _, stdout, stderr = demo_dir
    assert stdout.count("Linear mixed model fit by REML ['lmerMod']") == 6
    assert "Generalized linear mixed model fit by maximum likelihood" in stdout
    assert "== Shrinkage across settings ==" in stdout
    table = stdout.split("== Shrinkage across settings ==")[1]
    for s in cli.DEMO_SETTINGS:
        assert s.title in table
    assert "Bernoulli GLMM" in table
    assert "[1/8] Baseline:" in stderr and "[8/8]" in stderr and "index.html" in stderr
    # progress never reaches stdout, and every progress line is whole
    assert "[1/8]" not in stdout and "done (" not in stdout
    for line in stderr.splitlines():
        assert line.startswith("[") and line.endswith(" s)") or "index.html" in line, line
    assert "Bayesian cross-check skipped" in stdout


def test_progress_bar_on_a_terminal_never_shares_a_line_with_stdout():
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    err, out = Terminal(), io.StringIO()
    p = cli._Progress(2, quiet=False, stream=err)
    p.start("Baseline")
    p.step("fit")
    p.echo("== Baseline ==", file=out)
    p.done()
    p.finish("wrote report")
    assert out.getvalue() == "== Baseline ==\n"
    text = err.getvalue()
    assert "[" + "-" * cli._Progress.WIDTH + "] 1/2  Baseline: fit" in text
    # the bar is taken down before the stdout line and drawn again after it
    assert text.count("\r\x1b[K") >= 3
    assert text.endswith("[1/2] Baseline: fit - done (0.0 s)\nwrote report (0.0 s in all)\n")


def test_demo_report_tables_are_readable(demo_dir):
    out = demo_dir[0]
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "median_shrinkage_" not in html and "spread_reduction_" not in html
    assert "median shrinkage: slope of x" in html and "median cluster size" in html
    # counts print as integers, not 1000.000
    assert re.search(r"<td>\d+\.000</td>", html) is None
    assert "<td>120</td>" in html                 # 12 clusters x 10 observations
    for name in ["comparison.csv"] + [f"{s.slug}_pooling.csv" for s in cli.DEMO_SETTINGS]:
        assert f'<a href="{name}">' in html and (out / name).exists()


def test_demo_fewer_observations_keeps_every_cluster_in_a_zoomed_out_panel(tmp_path):
    import io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli.run_demo(tmp_path, n_cluster=30, animate=False, quiet=True, stdout=io.StringIO(),
                     settings=["fewer-observations"], bayes=False)
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "zoomed out so that every cluster" in html
    with Image.open(tmp_path / "fewer-observations.png") as img:
        assert img.size[0] > 1.8 * img.size[1]          # two panels side by side


def test_demo_with_the_bayesian_cross_check(tmp_path):
    pytest.importorskip("numpyro")
    import io

    sink = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli.run_demo(tmp_path, n_cluster=10, animate=False, quiet=True, stdout=sink,
                     settings=["baseline"], bayes=True,
                     bayes_options={"chains": 2, "draws": 60, "tune": 60, "trials": (10,),
                                    "slopes": False})
    for name in ("bayes_bernoulli.png", "bayes_bernoulli.csv"):
        assert (tmp_path / name).stat().st_size > 500, name
    assert not (tmp_path / "bayes_slopes.png").exists()      # left out, as in --quick
    table = pd.read_csv(tmp_path / "bayes_bernoulli.csv")
    assert list(table.columns) == ["n_trials", "subject", "observed", "glmer", "bayes", "overall"]
    assert len(table) == 30
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert 'id="bayes"' in html and '<a href="bayes_bernoulli.csv">' in html
    assert "random-slopes comparison is left out" in html
    assert "== Bayesian cross-check ==" in sink.getvalue()
    assert "Bayesian mixed model fit by MCMC (NUTS) ['binomial']" in sink.getvalue()


def test_demo_comparison_shows_the_expected_ordering(demo_dir):
    comp = pd.read_csv(demo_dir[0] / "comparison.csv", index_col=0)
    assert comp.loc["Fewer observations per cluster", "shrinkage int"] > \
        comp.loc["More observations per cluster", "shrinkage int"]
    assert comp.loc["More observations per cluster", "median n"] == 100


def test_demo_quiet_and_bad_output_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = run(capsys, "demo", "--out", str(blocker), "--quiet")
    assert code == 2 and "not a directory" in err
    code, out, err = run(capsys, "demo", "--frames", "2")
    assert code == 2 and "--frames" in err
    code, out, err = run(capsys, "demo", "--n-cluster", "2")
    assert code == 2 and "--n-cluster" in err


def test_demo_without_animation_for_one_setting(tmp_path):
    import io

    sink = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = cli.run_demo(tmp_path, n_cluster=8, animate=False, quiet=True, stdout=sink,
                            settings=["baseline"], bayes=False)
    assert path == tmp_path / "index.html"
    assert not list(tmp_path.glob("*.gif"))
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "baseline.png", "baseline_caterpillar.png", "bernoulli.png",
        "bernoulli_proportions.png", "bernoulli_caterpillar.png"}
    html = path.read_text(encoding="utf-8")
    assert ".gif" not in html and html.count("<h2") == 3
    assert sink.getvalue().count("Linear mixed model fit by REML") == 1


# ---------------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "clusters.csv"
    simulate.clustered(n_cluster=25, seed=3).to_csv(p, index=False)
    return p


@pytest.fixture(scope="module")
def bern_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "bern.csv"
    simulate.bernoulli_groups(seed=2).to_csv(p, index=False)
    return p


def test_fit_prints_the_summary(capsys, csv_path):
    code, out, err = run(capsys, "fit", str(csv_path), "--formula", "y ~ x + (x | cluster)")
    assert code == 0
    fit = mixedfit.lmer("y ~ x + (x | cluster)", pd.read_csv(csv_path), data_name="clusters.csv")
    assert out.strip() == str(fit.summary()).strip()
    assert "Data: clusters.csv" in out


def test_fit_json_matches_the_fit(capsys, csv_path):
    code, out, err = run(capsys, "fit", str(csv_path), "--formula", "y ~ x + (x | cluster)", "--ml", "--json")
    assert code == 0
    res = json.loads(out)
    fit = mixedfit.lmer("y ~ x + (x | cluster)", pd.read_csv(csv_path), reml=False)
    assert res["method"] == "ML" and res["nobs"] == 250 and res["ngroups"] == {"cluster": 25}
    est = {r["term"]: r["estimate"] for r in res["fixef"]}
    assert est == pytest.approx(fit.fixef.to_dict(), rel=1e-10)
    assert res["loglik"] == pytest.approx(fit.loglik)
    assert res["sigma"] == pytest.approx(fit.sigma)
    assert res["reml_criterion"] is None
    assert [r["grp"] for r in res["varcorr"]] == ["cluster", "cluster", "cluster", "Residual"]
    assert "ranef" not in res


def test_fit_binomial_with_quadrature_and_ranef(capsys, bern_path):
    code, out, err = run(capsys, "fit", str(bern_path), "--formula", "result ~ (1 | subject)",
                         "--family", "binomial", "--nagq", "5", "--json", "--ranef")
    assert code == 0
    res = json.loads(out)
    fit = mixedfit.glmer("result ~ (1 | subject)", pd.read_csv(bern_path), family="binomial", nagq=5)
    assert res["family"] == "binomial" and res["link"] == "logit"
    assert res["method"].startswith("adaptive Gauss-Hermite")
    assert res["fixef"][0]["estimate"] == pytest.approx(fit.fixef.iloc[0], rel=1e-8)
    assert "z_value" in res["fixef"][0]
    assert len(res["ranef"]["subject"]) == 30
    code, out, err = run(capsys, "fit", str(bern_path), "--formula", "result ~ (1 | subject)",
                         "--family", "binomial")
    assert code == 0 and "Family: binomial  ( logit )" in out


def test_fit_reads_tsv_and_parquet(capsys, tmp_path):
    df = simulate.clustered(n_cluster=15, seed=1)
    tsv = tmp_path / "d.tsv"
    df.to_csv(tsv, sep="\t", index=False)
    code, out, _ = run(capsys, "fit", str(tsv), "--formula", "y ~ x + (1 | cluster)")
    assert code == 0 and "Number of obs: 150, groups:  cluster, 15" in out
    pq = tmp_path / "d.parquet"   # pyarrow is a test dependency
    df.to_parquet(pq)
    code, out2, _ = run(capsys, "fit", str(pq), "--formula", "y ~ x + (1 | cluster)")
    assert code == 0 and out2.replace("d.parquet", "d.tsv") == out


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (None, ["--formula", "y ~ x + (1 | cluster)"], "file not found"),
        ("empty", ["--formula", "y ~ x + (1 | cluster)"], "is empty"),
        ("binary", ["--formula", "y ~ x + (1 | cluster)"], "cannot read"),
        ("onecol", ["--formula", "y ~ x + (1 | cluster)"], "wrong separator"),
        ("good", ["--formula", "y ~ x + (x | "], "bad formula"),
        ("good", ["--formula", "y ~ nothere + (1 | cluster)"], "nothere"),
        ("good", ["--formula", "y ~ x"], "random-effects"),
        ("good", ["--formula", "y ~ x + (1 | cluster)", "--nagq", "3"], "--nagq"),
        ("good", ["--formula", "y ~ x + (1 | cluster)", "--family", "poison"], "poison"),
        ("dir", ["--formula", "y ~ x + (1 | cluster)"], "directory"),
        ("badparquet", ["--formula", "y ~ x + (1 | cluster)"], "cannot read"),
    ],
)
def test_fit_bad_input_exits_2_with_a_message(capsys, tmp_path, setup, args, message):
    path = tmp_path / ("d.parquet" if setup == "badparquet" else "d.csv")
    if setup == "empty":
        path.write_text("")
    elif setup == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif setup == "onecol":
        path.write_text("y;x;cluster\n1;2;3\n4;5;6\n")
    elif setup == "good":
        simulate.clustered(n_cluster=10, seed=1).to_csv(path, index=False)
    elif setup == "dir":
        path.mkdir()
    elif setup == "badparquet":
        path.write_bytes(b"PAR1 not really parquet")
    code, out, err = run(capsys, "fit", str(path), *args)
    assert code == 2
    assert err.startswith("mixedfit fit: error:")
    assert message in err
    assert out == ""


def test_no_command_and_unknown_option(capsys):
    code, out, err = run(capsys)
    assert code == 2 and "COMMAND" in err
    with pytest.raises(SystemExit) as exc:
        cli.main(["fit"])            # argparse: DATA and --formula are required
    assert exc.value.code == 2


def test_python_dash_m_runs_the_command(tmp_path, csv_path):
    res = subprocess.run([sys.executable, "-m", "mixedfit", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == f"mixedfit {mixedfit.__version__}"
    res = subprocess.run([sys.executable, "-m", "mixedfit", "fit", str(csv_path),
                          "--formula", "y ~ x + (1 | cluster)"], capture_output=True, text=True)
    assert res.returncode == 0 and "REML criterion at convergence" in res.stdout
    res = subprocess.run([sys.executable, "-m", "mixedfit", "fit", str(tmp_path / "missing.csv"),
                          "--formula", "y ~ x + (1 | cluster)"], capture_output=True, text=True)
    assert res.returncode == 2 and "file not found" in res.stderr and res.stdout == ""


def test_a_fit_that_fails_exits_1(capsys, csv_path, monkeypatch):
    def failing(*args, **kwargs):
        raise mixedfit.ConvergenceError("PIRLS did not converge")

    monkeypatch.setattr(mixedfit, "lmer", failing)
    code, out, err = run(capsys, "fit", str(csv_path), "--formula", "y ~ x + (1 | cluster)")
    assert code == 1
    assert "could not be fitted: PIRLS did not converge" in err and out == ""
