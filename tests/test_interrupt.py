"""Ctrl-C stops a long fit promptly with KeyboardInterrupt and leaves no threads behind.

A child process starts a fit that takes far longer than the test waits, gets SIGINT, and must
exit with KeyboardInterrupt. The core checks for pending signals between PIRLS steps, between
the column-block steps of the threaded Cholesky and between the evaluations of its own BOBYQA
loop (at most every 50 ms), and the optimizers' Python callbacks pass KeyboardInterrupt through. The limit below only catches a
hang (a fit that ignores the signal runs on for minutes); it is not a speed requirement.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import mixedfit

HANG_LIMIT_S = 60

CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np, pandas as pd
    import mixedfit as mf

    rng = np.random.default_rng(1)
    n, S, I = 60000, 600, 1500
    s, i = rng.integers(0, S, n), rng.integers(0, I, n)
    x = rng.normal(size=n)
    y = 1 + x + rng.normal(0, 1, S)[s] + rng.normal(0, 1, I)[i] + rng.normal(size=n)
    df = pd.DataFrame({"y": y, "x": x, "s": pd.Categorical(s), "i": pd.Categorical(i)})
    tasks = lambda: len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 0
    # a small fit first: modules imported on first use and BLAS's thread pool (the QR of the
    # standardized fixed effects) start their threads before the count is taken
    mf.lmer("y ~ x + (1 | s)", df.iloc[:2000])
    before = tasks()
    print("start", flush=True)
    try:
        mf.lmer("y ~ x + (x | s) + (x | i)", df, control=CONTROL)
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", tasks() - before, flush=True)
    """
)


@pytest.mark.slow  # a child process that imports mixedfit and fits for seconds
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
# The model's default path is the gradient optimizer, driven from Python; BOBYQA runs inside
# the core (optimize.nlopt_in_core), which checks for signals between evaluations.
@pytest.mark.parametrize("optimizer", ["auto", "bobyqa"])
def test_sigint_stops_a_long_fit(optimizer):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(mixedfit.__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
    child = CHILD.replace("CONTROL", repr({"optimizer": optimizer}))
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "start"
        time.sleep(1.5)  # well inside the fit (it takes tens of seconds)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=HANG_LIMIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "finished" not in out, "the fit ended before the interrupt; make it longer"
    assert out.split() == ["interrupted", "0"], (out, err[-2000:])
    assert proc.returncode == 0
