"""One pass over a Dask DataFrame: a function per partition, its results combined up a tree
on the workers, and only the root's (small) result brought to the client.

Partition functions must be pure: when a worker dies mid-pass, Dask recomputes the tasks it
held (the partition is read again), so the sum is formed from every partition exactly once
or the pass raises (``distributed.KilledWorker`` after too many failures) -- never a sum
with a partition missing or counted twice, because a task's result is taken once, by key.
"""

from __future__ import annotations

import contextlib

__all__ = ["reduce_partitions", "tree", "compute", "persist_partitions", "reduce_leaves"]

# Partials combined per tree node: a few, so no node holds many partials at once.
FAN_IN = 8


def tree(leaves: list, combine):
    """The delayed root of ``combine`` applied up a tree of fan-in FAN_IN over ``leaves``."""
    from dask import delayed

    level = list(leaves)
    depth = 0
    while len(level) > 1:
        depth += 1
        level = [delayed(combine, pure=True)(*level[i:i + FAN_IN],
                                             dask_key_name=f"mixedfit-combine-{depth}-{i}-"
                                             f"{_token(level[i:i + FAN_IN])}")
                 for i in range(0, len(level), FAN_IN)]
    return level[0]


def _token(objs) -> str:
    from dask.base import tokenize

    return tokenize(*[o.key for o in objs])


def reduce_partitions(ddf, per_partition, combine, *args, progress: bool = True):
    """``combine`` of ``per_partition(part, *args)`` over every partition of ``ddf``,
    computed on the cluster; returns the root's value."""
    from dask import delayed

    parts = ddf.to_delayed()
    leaves = [delayed(per_partition, pure=True)(p, *args) for p in parts]
    return compute(tree(leaves, combine), progress)


def persist_partitions(ddf, per_partition, *args):
    """``per_partition(part, *args)`` of every partition, kept in the workers' memory for
    later passes (``reduce_leaves``), when a distributed Client is active: the client holds
    futures only, and a value lost with a worker is recomputed from the partition. None
    without a Client (the local scheduler would keep them in this process: O(rows))."""
    client = _active_client()
    if client is None:
        return None
    from dask import delayed

    leaves = [delayed(per_partition, pure=True)(p, *args) for p in ddf.to_delayed()]
    return client.persist(leaves)


def reduce_leaves(leaves: list, per_leaf, combine, *args, progress: bool = True):
    """``combine`` of ``per_leaf(leaf, *args)`` over persisted leaves (persist_partitions)."""
    from dask import delayed

    return compute(tree([delayed(per_leaf, pure=True)(x, *args) for x in leaves], combine),
                   progress)


def _active_client():
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def compute(obj, progress: bool):
    """The value of a delayed object, on the active distributed Client if there is one (with
    its progress bar), else on Dask's default scheduler (with dask.diagnostics' bar)."""
    client = _active_client()
    if client is not None:
        future = client.compute(obj)
        if progress:
            from distributed import progress as show_progress

            show_progress(future, interval="100ms")
        return future.result()
    import dask

    bar = contextlib.nullcontext()
    if progress:
        from dask.diagnostics import ProgressBar

        bar = ProgressBar()
    with bar:
        return dask.compute(obj)[0]
