"""Initializers: functions ``init(key, shape, dtype) -> Array``.

These are JAX's own initializers (``jax.nn.initializers``), re-exported so
``ramie.initializers.lecun_normal()`` and the seeds'
``ramie.initializers.ones(rngs.params(), [1], jnp.float32)`` work, plus the
builders ``zeros_init()``/``ones_init()``.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.nn.initializers import (
    constant as constant,
)
from jax.nn.initializers import (
    delta_orthogonal as delta_orthogonal,
)
from jax.nn.initializers import (
    glorot_normal as glorot_normal,
)
from jax.nn.initializers import (
    glorot_uniform as glorot_uniform,
)
from jax.nn.initializers import (
    he_normal as he_normal,
)
from jax.nn.initializers import (
    he_uniform as he_uniform,
)
from jax.nn.initializers import (
    kaiming_normal as kaiming_normal,
)
from jax.nn.initializers import (
    kaiming_uniform as kaiming_uniform,
)
from jax.nn.initializers import (
    lecun_normal as lecun_normal,
)
from jax.nn.initializers import (
    lecun_uniform as lecun_uniform,
)
from jax.nn.initializers import (
    normal as normal,
)
from jax.nn.initializers import (
    ones as ones,
)
from jax.nn.initializers import (
    orthogonal as orthogonal,
)
from jax.nn.initializers import (
    truncated_normal as truncated_normal,
)
from jax.nn.initializers import (
    uniform as uniform,
)
from jax.nn.initializers import (
    variance_scaling as variance_scaling,
)
from jax.nn.initializers import (
    xavier_normal as xavier_normal,
)
from jax.nn.initializers import (
    xavier_uniform as xavier_uniform,
)
from jax.nn.initializers import (
    zeros as zeros,
)

Initializer = jax.nn.initializers.Initializer
DtypeLikeInexact = Any

# Eager initializers dispatch one small JAX op at a time (a truncated normal is
# ~15 dispatches). When the same initializer is called eagerly with the same
# shape and dtype again and again - building many identical layers - a compiled
# version is much faster. `initialize` compiles a combination once it has been
# seen _COMPILE_AFTER times, so one-off layers never pay a compile.
_COMPILE_AFTER = 3
_MAX_ENTRIES = 512
_seen: dict[tuple, int] = {}
_compiled: dict[tuple, Any] = {}
_EAGER = object()  # marks initializers that cannot be traced


def initialize(
    init: Any,
    key: jax.Array,
    shape: Any,
    dtype: Any,
    metadata: Any = None,
) -> jax.Array:
    """``init(key, shape, dtype)``, compiled when the call repeats eagerly.

    When the Variable the value is for is annotated with a sharding (in
    ``metadata``, the layer's ``kernel_metadata``, or through
    :func:`ramie.with_partitioning`) and a mesh is active, the initializer is
    compiled with that sharding as its output sharding, so each device
    computes and holds only its own shard.

    Layers call this instead of the initializer directly. Under a JAX trace
    (inside ``jit``/``vmap``) it simply calls ``init``. An initializer that
    cannot be traced (one that builds its value with NumPy, say) is detected on
    its first compiled call and always runs eagerly. Initializers should be pure
    functions of ``(key, shape, dtype)``, as JAX's are: Python side effects
    would run only when a combination is compiled.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> initialize(lecun_normal(), jax.random.key(0), (2, 3), jnp.float32).shape
        (2, 3)
    """
    from ramie._src.core.tracing import current_trace

    sharded = _sharded(init, key, shape, dtype, metadata)
    if sharded is not None:
        return sharded
    if current_trace() is not None or isinstance(key, jax.core.Tracer):
        return init(key, shape, dtype)
    try:
        entry = (init, tuple(shape), jax.numpy.dtype(dtype))
        fn = _compiled.get(entry)
    except TypeError:  # unhashable initializer or shape
        return init(key, shape, dtype)
    if fn is _EAGER:
        return init(key, shape, dtype)
    if fn is None:
        n = _seen.get(entry, 0) + 1
        if n < _COMPILE_AFTER:
            if len(_seen) >= _MAX_ENTRIES:
                _seen.pop(next(iter(_seen)))
            _seen[entry] = n
            return init(key, shape, dtype)
        _seen.pop(entry, None)
        if len(_compiled) >= _MAX_ENTRIES:
            _compiled.pop(next(iter(_compiled)))
        shape_t, dtype_t = entry[1], entry[2]
        fn = jax.jit(lambda k: init(k, shape_t, dtype_t))
        try:
            out = fn(key)
        except Exception:
            # not traceable (e.g. it builds the value with NumPy): stay eager
            _compiled[entry] = _EAGER
            return init(key, shape, dtype)
        _compiled[entry] = fn
        return out
    return fn(key)


def _sharded(init: Any, key: Any, shape: Any, dtype: Any, metadata: Any) -> Any:
    """The value computed into its annotated sharding, or None when not annotated."""
    meta = dict(metadata or {})
    inner = getattr(init, "_ramie_inner", None)
    if inner is not None:
        meta.update(init._ramie_metadata)
    if "sharding" in meta or "sharding_names" in meta:
        meta["out_sharding"] = meta.pop("sharding", meta.pop("sharding_names", None))
    if not meta.get("out_sharding") or not meta.get("eager_sharding", True):
        return None
    from ramie._src.spmd import placement
    from ramie._src.spmd.sharding import using_eager_sharding

    if not using_eager_sharding():
        return None
    from ramie._src.core.tracing import current_trace

    target = placement.target_sharding(
        meta,
        tuple(shape),
        f"Param created in {placement.creator_name() or 'an initializer'}",
        api="sharded initialization",
        # under a trace an uneven dimension is left to the Variable, which
        # constrains (and warns) as JAX allows
        traced="quiet" if current_trace() is not None else None,
    )
    if not isinstance(target, jax.sharding.NamedSharding):
        return None
    fn = inner if inner is not None else init
    try:
        value = placement.sharded_initialize(fn, key, tuple(shape), dtype, target)
    except placement.ShardingError:
        raise
    except Exception:  # not traceable: compute eagerly, the Variable places it
        return None
    if inner is not None:
        from ramie._src.core.variables import VariableMetadata

        return VariableMetadata(value, dict(init._ramie_metadata))
    return value


def zeros_init() -> Initializer:
    """An initializer that returns zeros (a builder, like ``lecun_normal()``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> zeros_init()(jax.random.key(0), (2,), jnp.float32)
        Array([0., 0.], dtype=float32)
    """
    return zeros


def ones_init() -> Initializer:
    """An initializer that returns ones."""
    return ones


__all__ = [
    "Initializer", "DtypeLikeInexact", "constant", "initialize", "delta_orthogonal",
    "glorot_normal", "glorot_uniform", "he_normal", "he_uniform", "kaiming_normal",
    "kaiming_uniform", "lecun_normal", "lecun_uniform", "normal", "ones", "ones_init",
    "orthogonal", "truncated_normal", "uniform", "variance_scaling", "xavier_normal",
    "xavier_uniform", "zeros", "zeros_init",
]  # fmt: skip
