"""Every ```python block of README.md runs as written, each on its own (fresh namespace, in a
temporary working directory). The ```bash blocks (install, the demo) are not run here: the
demo has its own tests in test_cli.py."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_readme_has_python_examples():
    assert len(python_blocks()) >= 2


@pytest.mark.parametrize("k", range(len(python_blocks())))
def test_readme_block_runs(k, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    code = compile(python_blocks()[k], f"README.md python block {k + 1}", "exec")
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(code, {"__name__": "__readme__"})
    assert out.getvalue()           # each example prints something
