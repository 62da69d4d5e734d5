"""Eager sharding of Variables created with sharding metadata.

When a Variable is created with ``out_sharding`` metadata while a mesh is
active (``jax.set_mesh``/``jax.sharding.use_mesh``), its value is placed with
that sharding right away, so large models are initialised already sharded.
"""

from __future__ import annotations

from typing import Any

import jax


def _active_mesh() -> Any:
    try:
        mesh = jax.sharding.get_abstract_mesh()
        if mesh is not None and not mesh.empty:
            return mesh
    except Exception:  # pragma: no cover - older jax
        pass
    return None


def shard_on_create(var: Any) -> None:
    from ramie._src.spmd.sharding import get_var_pspec, using_eager_sharding

    spec = var._meta.get("out_sharding")
    raw = var._raw
    if spec is None or not hasattr(raw, "shape") or isinstance(raw, jax.core.Tracer):
        return
    if not using_eager_sharding():
        return
    mesh = _active_mesh()
    if mesh is None:
        return
    try:
        concrete = (
            jax.sharding.get_mesh() if hasattr(jax.sharding, "get_mesh") else None
        )
    except Exception:
        concrete = None
    if concrete is None or getattr(concrete, "empty", True):
        return
    from jax.sharding import NamedSharding

    sharding = NamedSharding(concrete, get_var_pspec(var))
    var._raw = jax.device_put(raw, sharding)  # noqa: SLF001
