"""The frozen lme4 intervals and bootstrap quantiles (tests/reference/lme4_confint.json, made
by tests/reference/make_confint_reference.R) and the mixedfit fits they describe."""

from __future__ import annotations

import json
from functools import lru_cache

import mixedfit
from tests._reference import REFERENCE_DIR, load_data

# model id -> (function, formula, keyword arguments, reference kind of its data set)
MODELS = {
    "sleepstudy_reml": ("lmer", "Reaction ~ Days + (Days | Subject)", dict(reml=True), "lmm"),
    "sleepstudy_ml": ("lmer", "Reaction ~ Days + (Days | Subject)", dict(reml=False), "lmm"),
    "dyestuff": ("lmer", "Yield ~ 1 + (1 | Batch)", {}, "lmm"),
    "dyestuff2": ("lmer", "Yield ~ 1 + (1 | Batch)", {}, "lmm"),
    "penicillin": ("lmer", "diameter ~ 1 + (1 | plate) + (1 | sample)", {}, "lmm"),
    "cbpp": ("glmer", "cbind(incidence, size - incidence) ~ period + (1 | herd)",
             dict(family="binomial"), "glmm"),
    "grouseticks": ("glmer", "TICKS ~ YEAR + (1 | BROOD)", dict(family="poisson"), "glmm"),
}


@lru_cache(maxsize=None)
def confint_reference() -> dict:
    with open(REFERENCE_DIR / "lme4_confint.json", encoding="utf-8") as fh:
        return json.load(fh)


@lru_cache(maxsize=None)
def reference_fit(model_id: str):
    fn, formula, kwargs, kind = MODELS[model_id]
    data = load_data(kind, confint_reference()["models"][model_id]["data"])
    return getattr(mixedfit, fn)(formula, data, **kwargs)
