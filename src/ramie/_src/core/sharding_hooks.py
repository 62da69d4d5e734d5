"""Eager sharding of Variables created with sharding metadata.

When a Variable is created with ``out_sharding`` metadata while a mesh is
active (``jax.set_mesh``), or with a ``mesh``/``NamedSharding`` in its
metadata, its value is placed with that sharding right away - eagerly with
``device_put``, under a trace with a sharding constraint - so models are
initialised already sharded. See :mod:`ramie._src.spmd.placement`.
"""

from __future__ import annotations

from typing import Any


def shard_on_create(var: Any) -> None:
    from ramie._src.spmd.placement import shard_on_create as place

    place(var)
