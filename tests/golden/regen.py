"""Regenerate the golden printed texts (tests/golden/*.txt) from the current code.

Run after an intended change to printing or estimates, then review `git diff tests/golden`.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _reference import model_ids  # noqa: E402
from test_printing import _text  # noqa: E402


def main() -> None:
    for kind in ("lmm", "glmm"):
        for mid in model_ids(kind):
            s, _ = _text(kind, mid, "summary")
            p, _ = _text(kind, mid, "print")
            (HERE / f"{kind}_{mid}.txt").write_text("\n".join(s) + "\n\n" + "\n".join(p) + "\n",
                                                    encoding="utf-8")
            print("wrote", f"{kind}_{mid}.txt")


if __name__ == "__main__":
    main()
