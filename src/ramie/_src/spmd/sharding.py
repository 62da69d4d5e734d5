"""Sharding metadata on Variables and helpers built on it.

A Variable created through :func:`with_partitioning` (or with ``out_sharding``
metadata) records one mesh or logical axis name per array axis.
:func:`get_partition_spec` turns a State of such Variables into
``PartitionSpec``s, :func:`get_named_sharding` into ``NamedSharding``s for a
mesh, and :func:`get_abstract_model` describes a model's shapes and shardings
without allocating it (for sharded checkpoint restore). Logical names are
mapped to mesh axes by :func:`logical_axis_rules`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

from ramie._src.core.variables import Variable, with_metadata

_local = threading.local()
_eager: list[bool] = [True]


def with_partitioning(
    initializer: Callable[..., Any],
    sharding: Sequence[Any],
    mesh: Any = None,
    **metadata: Any,
) -> Callable[..., Any]:
    """Wrap an initializer so its Variables carry ``out_sharding`` (and ``mesh``).

    Example:
        >>> import ramie
        >>> init = ramie.with_partitioning(
        ...     ramie.initializers.lecun_normal(), (None, "model")
        ... )
        >>> ramie.Linear(4, 8, kernel_init=init, rngs=ramie.Rngs(0)).kernel.out_sharding
        (None, 'model')
    """
    if mesh is not None:
        metadata["mesh"] = mesh
    return with_metadata(initializer, out_sharding=tuple(sharding), **metadata)


@contextlib.contextmanager
def logical_axis_rules(rules: Sequence[tuple[str, Any]]) -> Iterator[None]:
    """Map logical axis names to mesh axes inside the block.

    Example:
        >>> import ramie
        >>> with ramie.logical_axis_rules([("embed", None), ("mlp", "model")]):
        ...     print(ramie.spmd.logical_to_mesh_axes(("embed", "mlp")))
        P(None, 'model')
    """
    prev = getattr(_local, "rules", None)
    _local.rules = tuple(rules)
    try:
        yield
    finally:
        _local.rules = prev


def logical_to_mesh_axes(names: Sequence[Any]) -> PartitionSpec:
    """Apply the active :func:`logical_axis_rules` to a tuple of axis names."""
    rules = dict(getattr(_local, "rules", None) or ())
    return PartitionSpec(*[rules.get(n, n) if isinstance(n, str) else n for n in names])


def get_var_pspec(var: Variable) -> PartitionSpec:
    """The PartitionSpec of one Variable (replicated when it has no sharding)."""
    spec = var._meta.get("out_sharding")
    if spec is None:
        return PartitionSpec()
    own_rules = var._meta.get("sharding_rules")
    if own_rules:  # a Variable's own rules (Linen's LogicallyPartitioned) come first
        rules = dict(own_rules)
        spec = [rules.get(n, n) if isinstance(n, str) else n for n in spec]
    return logical_to_mesh_axes(spec)


def _is_var(x: Any) -> bool:
    return isinstance(x, Variable)


def get_partition_spec(tree: Any) -> Any:
    """PartitionSpecs for every Variable in ``tree`` (a State or module state).

    Example:
        >>> import ramie
        >>> init = ramie.with_partitioning(
        ...     ramie.initializers.lecun_normal(), (None, "model")
        ... )
        >>> layer = ramie.Linear(4, 8, kernel_init=init, rngs=ramie.Rngs(0))
        >>> state = ramie.state(layer)
        >>> print(ramie.get_partition_spec(state)["kernel"])
        P(None, 'model')
    """
    return jax.tree_util.tree_map(
        lambda x: get_var_pspec(x) if isinstance(x, Variable) else PartitionSpec(),
        tree,
        is_leaf=_is_var,
    )


def get_named_sharding(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """``NamedSharding(mesh, spec)`` for every Variable in ``tree``."""
    return jax.tree_util.tree_map(
        lambda spec: NamedSharding(mesh, spec),
        get_partition_spec(tree),
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def add_axis(tree: Any, index: int, params: Any) -> Any:
    """Insert ``params['partition_name']`` at ``index`` in every Variable's sharding."""
    name = params.get("partition_name") if isinstance(params, dict) else params
    for leaf in jax.tree_util.tree_leaves(tree, is_leaf=_is_var):
        if isinstance(leaf, Variable):
            leaf.add_axis(index, name)
    return tree


def remove_axis(tree: Any, index: int, params: Any) -> Any:
    """Undo :func:`add_axis`."""
    name = params.get("partition_name") if isinstance(params, dict) else params
    for leaf in jax.tree_util.tree_leaves(tree, is_leaf=_is_var):
        if isinstance(leaf, Variable):
            leaf.remove_axis(index, name)
    return tree


def _current_mesh() -> Any:
    try:
        mesh = jax.sharding.get_mesh()  # type: ignore[attr-defined]
        if mesh is not None and not getattr(mesh, "empty", True):
            return mesh
    except Exception:
        pass
    return None


def as_abstract(tree: Any, graph: Any = None) -> Any:
    """Attach shardings to abstract Variables (values that are ShapeDtypeStructs).

    Uses each Variable's ``mesh`` metadata, or the active mesh.
    """

    def conv(v: Any) -> Any:
        if not isinstance(v, Variable):
            return v
        raw = v._raw
        if not isinstance(raw, jax.ShapeDtypeStruct):
            return v
        mesh = v._meta.get("mesh") or _current_mesh()
        if mesh is None or "out_sharding" not in v._meta:
            return v
        sharding = NamedSharding(mesh, get_var_pspec(v))
        return v.copy(jax.ShapeDtypeStruct(raw.shape, raw.dtype, sharding=sharding))

    return jax.tree_util.tree_map(conv, tree, is_leaf=_is_var)


abstract_with_sharding = as_abstract


def get_abstract_model(
    init_fn: Callable[[], Any], mesh: jax.sharding.Mesh, *, graph: Any = None
) -> tuple[Any, Any]:
    """``(graphdef, abstract_state)`` of the model ``init_fn()`` builds, with shardings.

    Nothing is allocated: shapes come from ``ramie.eval_shape``; each abstract
    value carries the NamedSharding of its Variable's sharding metadata.
    """
    from ramie._src.core.graph.api import split
    from ramie._src.transforms.general import eval_shape

    abstract = eval_shape(init_fn)
    graphdef, state = split(abstract)

    def conv(v: Any) -> Any:
        if not isinstance(v, Variable):
            return v
        raw = v._raw
        sharding = NamedSharding(mesh, get_var_pspec(v))
        return v.copy(jax.ShapeDtypeStruct(raw.shape, raw.dtype, sharding=sharding))

    return graphdef, jax.tree_util.tree_map(conv, state, is_leaf=_is_var)


def use_eager_sharding(value: bool, /) -> Any:
    """Turn sharding at Variable creation on/off (context manager or global switch)."""
    _eager.append(bool(value))

    class _Ctx:
        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc: Any) -> None:
            _eager.pop()

    return _Ctx()


def using_eager_sharding() -> bool:
    """Whether Variables with sharding metadata are placed when created."""
    return _eager[-1]


PARTITION_NAME = "partition_name"
