"""``with_sharding_constraint`` for States and trees holding Variables.

Older Flax NNX exported it (``nnx.with_sharding_constraint``) and guides still
call it to place a freshly initialised model inside ``jit``: each Variable's
value gets ``jax.lax.with_sharding_constraint`` with its PartitionSpec, and
the Variable keeps its type and metadata.
"""

from __future__ import annotations

from typing import Any

import jax

from ramie._src.core.variables import Variable


def with_sharding_constraint(x: Any, axis_resources: Any, mesh: Any = None) -> Any:
    """Constrain every array (or Variable value) in ``x`` to its sharding.

    Args:
        x: A State, a pytree of Variables, or a pytree of arrays.
        axis_resources: A matching tree of ``PartitionSpec``s (as returned by
            ``ramie.get_partition_spec(x)``) or ``Sharding``s.
        mesh: Optional mesh, turning PartitionSpecs into ``NamedSharding``s.

    Returns:
        ``x`` with constrained values (Variables are copied, not mutated).

    Example:
        >>> import jax, ramie
        >>> init = ramie.with_partitioning(ramie.initializers.ones, (None, None))
        >>> layer = ramie.Linear(2, 2, kernel_init=init, rngs=ramie.Rngs(0))
        >>> state = ramie.state(layer)
        >>> constrain = jax.jit(lambda s: ramie.with_sharding_constraint(
        ...     s, ramie.get_partition_spec(s)))
        >>> with jax.set_mesh(jax.make_mesh((1,), ("x",))):
        ...     out = constrain(state)
        >>> type(out["kernel"]).__name__
        'Param'
    """

    def spec_of(s: Any) -> Any:
        s = s.get_raw_value() if isinstance(s, Variable) else s
        if mesh is not None and isinstance(s, jax.sharding.PartitionSpec):
            return jax.sharding.NamedSharding(mesh, s)
        return s

    def constrain(leaf: Any, spec: Any) -> Any:
        spec = spec_of(spec)
        if isinstance(leaf, Variable):
            raw = leaf.get_raw_value()
            if not hasattr(raw, "shape"):
                return leaf
            return leaf.copy(jax.lax.with_sharding_constraint(raw, spec))
        if hasattr(leaf, "shape"):
            return jax.lax.with_sharding_constraint(leaf, spec)
        return leaf

    specs = jax.tree_util.tree_leaves(
        axis_resources,
        is_leaf=lambda s: (
            isinstance(s, (Variable, jax.sharding.PartitionSpec)) or s is None
        ),
    )
    leaves, treedef = jax.tree_util.tree_flatten(
        x, is_leaf=lambda v: isinstance(v, Variable)
    )
    if len(specs) != len(leaves):
        raise ValueError(
            "ramie.with_sharding_constraint(): axis_resources has "
            f"{len(specs)} entries but x has {len(leaves)} leaves; pass "
            "ramie.get_partition_spec(x)"
        )
    return treedef.unflatten([constrain(a, s) for a, s in zip(leaves, specs)])
