"""``ramie.shard_map``: ``jax.shard_map`` for functions that take modules.

``in_specs``/``out_specs`` have one entry per argument/output, as in JAX; for a
module the entry may be one ``PartitionSpec`` for all its Variables or a
:class:`~ramie.StateSharding` mapping filters to specs. Variable updates made
inside (per-shard) are written back with the argument's spec.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import PartitionSpec

from ramie._src.core.sentinels import MISSING
from ramie._src.transforms import lifting
from ramie._src.transforms.lifting import is_node
from ramie._src.transforms.simple import modal


def _shard_map_fn() -> Callable[..., Any]:
    fn = getattr(jax, "shard_map", None)
    if fn is None:  # pragma: no cover - older jax
        from jax.experimental.shard_map import shard_map as fn
    return fn


@modal("ramie.shard_map", ("in_specs", "out_specs"))
def shard_map(
    f: Callable[..., Any] = MISSING,  # type: ignore[assignment]
    *,
    mesh: Any,
    in_specs: Any,
    out_specs: Any,
    axis_names: Any = frozenset(),
    check_vma: bool = True,
    graph: Any = None,
    graph_updates: Any = None,
) -> Any:
    """Map ``f`` over shards of its inputs on ``mesh``; module arguments allowed.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> from jax.sharding import NamedSharding, PartitionSpec as P
        >>> mesh = jax.make_mesh((1,), ("x",))
        >>> layer = ramie.Linear(4, 4, rngs=ramie.Rngs(0))
        >>> x = jax.device_put(jnp.ones((8, 4)), NamedSharding(mesh, P("x")))
        >>> f = ramie.shard_map(
        ...     lambda m, x: m(x), mesh=mesh, in_specs=(P(), P("x")), out_specs=P("x")
        ... )
        >>> f(layer, x).shape
        (8, 4)
    """
    lifting.reject_node_prefix(in_specs, "in_specs", "ramie.shard_map")
    lifting.reject_node_prefix(out_specs, "out_specs", "ramie.shard_map")
    if f is MISSING:
        return lambda fn: shard_map(
            fn,
            mesh=mesh,
            in_specs=in_specs,
            out_specs=out_specs,
            axis_names=axis_names,
            check_vma=check_vma,
        )
    lifting.reject_bound_method(f, "ramie.shard_map")
    api = "ramie.shard_map"
    smap = _shard_map_fn()

    @functools.wraps(f)
    def wrapper(*args: Any) -> Any:
        ext = lifting.extract((args, {}))
        lifting.check_traces(ext, api)
        specs_args = (
            in_specs if isinstance(in_specs, tuple) else (in_specs,) * len(args)
        )
        arg_specs = lifting.broadcast_prefix(tuple(specs_args), args, is_node, api)
        graph_specs = lifting.leaf_specs(ext, arg_specs, api)
        node_set = set(ext.node_pos)
        other_specs = [s for p, s in enumerate(arg_specs) if p not in node_set]
        static = ext.static

        def pure(values: list, other: list) -> Any:
            (a, _), inner = lifting.rebuild(static, values, other)
            out = f(*a)
            return lifting.collect(
                inner, out, mode="all", allow_structure_change=False, api=api
            )

        kwargs: dict[str, Any] = {
            "mesh": mesh,
            "in_specs": (graph_specs, other_specs),
            "out_specs": (out_specs, (PartitionSpec(), graph_specs)),
        }
        if axis_names:
            kwargs["axis_names"] = axis_names
        if not check_vma:
            kwargs["check_vma"] = False
        out, (aux, state_vals) = smap(pure, **kwargs)(ext.values, ext.other)
        index_map = lifting.apply_state(ext, aux.value, state_vals, api)
        return lifting.build_outputs(out, aux.value, index_map)

    return wrapper
