"""Fits of data that lie on a Dask cluster (``pip install "mixedfit[dask]"``).

``mixedfit.lmer(formula, ddf)`` with a ``dask.dataframe.DataFrame`` fits the rows where they
lie, on the active ``distributed.Client`` (else Dask's default scheduler), and gives the
numbers of the in-memory fit of the same rows. Dask is imported only when such a frame
arrives, so ``import mixedfit`` neither needs nor loads it.

How (see :mod:`._lmm` for the recipe and why it reproduces the in-memory numbers):

1. a scan pass: row counts, rows dropped for missing values, every factor's levels across
   all partitions (one global coding), the response checked;
2. a scaling pass: the R factors of ``[X y]`` (TSQR: per-partition QR, stacked and
   re-factored up the tree) for the aliased-column check and the standardization the
   in-memory fit uses;
3. a cross-product pass: each partition forms its part of ``A = [Z X y]' W [Z X y]`` and the
   level pairs that co-occur; partials are summed up a tree on the workers and only the sum
   (size O(A), never O(n)) reaches the client, where the core is built from it
   (``LmmProblem.from_crossproduct``). Every evaluation of the criterion then touches A alone.

``mixedfit.glmer(formula, ddf)`` runs the same scan and scaling passes, then PIRLS with one
pass per step: the partitions form the working weights' cross products at the broadcast
(beta, b), the client solves the step from them with the same crossproduct core (see
:mod:`._glmm`).
"""

from __future__ import annotations

__all__ = ["is_dask_frame", "lmer_dask", "glmer_dask"]


def is_dask_frame(data) -> bool:
    """Whether ``data`` is a Dask DataFrame (checked without importing Dask)."""
    mod = type(data).__module__
    return mod.startswith("dask") and hasattr(data, "to_delayed") and hasattr(data, "columns")


def lmer_dask(formula, data, **kwargs):
    from ._lmm import lmer_dask as fit

    return fit(formula, data, **kwargs)


def glmer_dask(formula, data, **kwargs):
    from ._glmm import glmer_dask as fit

    return fit(formula, data, **kwargs)
