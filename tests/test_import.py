"""``import mixedfit`` stays light: SciPy, matplotlib and statsmodels load only where used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("scipy", "matplotlib", "statsmodels", "dask", "distributed")


def _package_parent() -> str:
    """The folder the tests import mixedfit from (the installed package in CI, the source tree
    with a built extension in development): the subprocesses must import the same one."""
    import mixedfit

    return str(Path(mixedfit.__file__).resolve().parents[1])


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_package_parent(), env.get("PYTHONPATH")]))
    return env


def _modules_after(code: str) -> list[str]:
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=_env(), check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _heavy(modules: list[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules if m.split(".")[0] in HEAVY})


def test_import_loads_no_scipy_or_matplotlib():
    assert _heavy(_modules_after("import mixedfit")) == []


@pytest.mark.parametrize("name", ["lmer", "glmer", "anova", "datasets", "plot", "shrinkage",
                                  "simulate", "LmerResult", "GlmerResult", "VarCorr"])
def test_public_names_resolve(name):
    import mixedfit

    assert getattr(mixedfit, name) is not None
    assert name in dir(mixedfit)


def test_anova_stays_the_function_after_its_module_is_imported():
    """``mixedfit.anova`` is both a module and a function; the function must win."""
    out = subprocess.run(
        [sys.executable, "-c", "import mixedfit.anova, mixedfit; print(callable(mixedfit.anova))"],
        capture_output=True, text=True, check=True,
        env=_env(),
    )
    assert out.stdout.strip() == "True"


def test_a_fit_loads_no_matplotlib():
    code = ("import mixedfit, pandas as pd\n"
            "df = pd.DataFrame({'y': [1.0, 2.1, 2.9, 4.2, 5.1, 5.8, 7.2, 8.1],"
            " 'g': list('aabbccdd')})\n"
            "print(mixedfit.lmer('y ~ 1 + (1 | g)', df).summary())")
    assert "matplotlib" not in _heavy(_modules_after(code))
