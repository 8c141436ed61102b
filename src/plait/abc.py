"""plait.abc: the interfaces plait's pluggable parts implement.

``Pool`` is the interface of ``plait.ThreadPool``, ``plait.ProcessPool`` and
``plait.cluster.DaskPool``; ``PoolMap`` is what ``Pool.map`` returns and
``MapProgress`` what its ``progress`` callback receives. ``Instrument`` is the base
class of objects the kernel calls as it runs (``plait.run(main, instruments=[...])``).
"""

from __future__ import annotations

from ._core._instrument import Instrument as Instrument
from ._pool import Pool as Pool
from ._poolmap import MapProgress as MapProgress
from ._poolmap import PoolMap as PoolMap

__all__ = ["Instrument", "MapProgress", "Pool", "PoolMap"]

for _cls in (Instrument, Pool, PoolMap):
    _cls.__module__ = __name__
del _cls
