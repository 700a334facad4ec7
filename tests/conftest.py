"""Fixtures shared by test modules."""

from __future__ import annotations

import warnings

import pytest


@pytest.fixture(scope="module")
def cluster():
    """A distributed.LocalCluster of two worker processes (one thread, 700 MiB each) and its
    Client, for the module's Dask tests; closed after the module."""
    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lc = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      memory_limit="700MiB", dashboard_address=None)
        client = distributed.Client(lc)
    yield client
    client.close()
    lc.close()
