"""Print mixedfit's optimum (theta, optimizer) for every LMM of lme4_lmm.json as JSON, the
input of check_lmm_optimum.R. Run from the repository root:

    PYTHONPATH=python python tests/reference/lmm_optima.py > lmm_mixedfit.json
"""

import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _reference import get_fit, model_ids  # noqa: E402

out = {}
for mid in model_ids("lmm"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = get_fit("lmm", mid)
    out[mid] = {"theta": [float(t) for t in fit.theta], "optimizer": fit.optinfo.method}
json.dump(out, sys.stdout, indent=1)
print()
