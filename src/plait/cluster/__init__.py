"""plait.cluster: the pool interface on a cluster (``pip install 'plait[cluster]'``)."""

from __future__ import annotations

from ._backend import Backend as Backend
from ._pool import ClusterPool as ClusterPool
from ._pool import DaskPool as DaskPool

__all__ = ["Backend", "ClusterPool", "DaskPool"]

for _obj in (Backend, ClusterPool, DaskPool):
    _obj.__module__ = __name__
del _obj
