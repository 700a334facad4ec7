"""Data sets from R's lme4 package, as pandas DataFrames with lme4's factor levels.

>>> from mixedfit import datasets
>>> sleepstudy = datasets.load("sleepstudy")
>>> datasets.available()        # names with their titles

Every factor column is a pandas ``Categorical`` with lme4's level order (which is not always
alphabetical, e.g. ``VerbAgg["mode"]``, or integer labels such as ``cbpp["herd"]``); ordered
factors (``InstEval["studage"]``, ``VerbAgg["resp"]``, ``cake["temperature"]``) are ordered
Categoricals. ``info(name)`` gives the title, source and column types from lme4's help page.

Provenance and licence: the files are written from lme4 1.1-31 by ``make_datasets.R`` (in this
directory; see ``README.md`` here). lme4 is licensed GPL (>= 2), and so are these data as
distributed with it; the original sources are in ``info(name)["source"]`` and lme4's help pages.
mixedfit's own code is MIT-licensed; the data files keep lme4's licence.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

__all__ = ["load", "available", "info"]

_META_FILE = "datasets.json"


@lru_cache(maxsize=1)
def _metadata() -> dict:
    text = resources.files(__name__).joinpath(_META_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def available() -> dict[str, str]:
    """The data sets: name -> title."""
    return {name: meta["title"] for name, meta in _metadata()["datasets"].items()}


def info(name: str) -> dict:
    """Title, source, row count and column types (factor levels in lme4's order) of a data set,
    plus where it comes from (``package``, ``version``, ``license``)."""
    meta = _lookup(name)
    return {**meta, **_metadata()["source"]}


def load(name: str):
    """A data set as a new pandas DataFrame (factors as Categoricals in lme4's level order)."""
    import pandas as pd

    meta = _lookup(name)
    columns = meta["columns"]
    text_columns = {c: str for c, spec in columns.items() if spec["type"] in ("factor", "character")}
    with resources.files(__name__).joinpath(f"{name}.csv.gz").open("rb") as fh:
        frame = pd.read_csv(fh, compression="gzip", dtype=text_columns, keep_default_na=False)
    for column, spec in columns.items():
        frame[column] = _typed_column(frame[column], spec, f"{name}.{column}")
    return frame


def _lookup(name: str) -> dict:
    known = _metadata()["datasets"]
    if name not in known:
        raise KeyError(f"no data set {name!r}; available: {', '.join(known)}")
    return known[name]


def _typed_column(values, spec: dict, where: str):
    import pandas as pd

    kind = spec["type"]
    if kind == "factor":
        column = pd.Categorical(values, categories=spec["levels"], ordered=spec["ordered"])
        if pd.isna(column).any():
            raise ValueError(f"{where}: a label is not among lme4's levels")
        return column
    if kind == "integer":
        return values.astype("int64")
    if kind == "numeric":
        return values.astype("float64")
    if kind == "logical":
        return values.astype(bool)
    return values
