"""Linen variable collections <-> ramie Variables.

Linen keeps a model's state as ``{collection: {path...: value}}``; ramie keeps
typed Variables on module attributes. The collection name decides the type:
``params`` <-> :class:`~ramie.Param`, ``batch_stats`` <-> ``BatchStat``,
``cache`` <-> ``Cache``, ``intermediates`` <-> ``Intermediate``, and any other
collection <-> the Variable type registered under that name
(:func:`ramie.register_variable_name`), created on first use.

Metadata travels both ways. A Linen box (``nn.Partitioned``,
``nn.LogicallyPartitioned``) becomes Variable metadata (``out_sharding``,
``sharding_rules``, ``mesh``) and remembers its box type, so it is boxed again
on the way back. A ramie Variable with metadata of its own becomes an
:class:`NNXMeta` box in Linen, which Linen's ``get_partition_spec`` reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cache
from typing import Any, TypeVar

from ramie._src.bridge import deps
from ramie._src.core.variables import (
    _NAME_TO_TYPE,
    _TYPE_TO_NAME,
    DEFAULT_METADATA,
    Variable,
    canonical_metadata_name,
    register_variable_name,
    variable_name_from_type,
    variable_type_from_name,
)
from ramie._src.spmd import sharding as spmd
from ramie.errors import BridgeError

A = TypeVar("A")
B = TypeVar("B")
_LINEN_META = "linen_meta_type"


def _own_metadata(var: Variable) -> dict[str, Any]:
    """A Variable's metadata without the defaults every Variable reports."""
    return {
        k: v
        for k, v in var.get_metadata().items()
        if not (k in DEFAULT_METADATA and v == DEFAULT_METADATA[k])
    }


def collection_of(var_type: type[Variable]) -> str:
    """The Linen collection name of a Variable type (registering new types).

    Registered types use their name; any other type gets a collection named
    after its class.

    Example:
        >>> import ramie
        >>> from ramie._src.bridge.variables import collection_of
        >>> collection_of(ramie.BatchStat)
        'batch_stats'
    """
    if var_type in _TYPE_TO_NAME:
        return _TYPE_TO_NAME[var_type]
    # A subclass gets its own collection (named after it), so its type
    # survives a trip through Linen (as in Flax: LoRAParam -> 'LoRAParam').
    name = var_type.__name__
    if name not in _NAME_TO_TYPE:
        register_variable_name(name, var_type)
        return name
    return variable_name_from_type(var_type, allow_register=True)


def type_of(collection: str) -> type[Variable]:
    """The Variable type of a Linen collection (a new one for unknown names).

    Example:
        >>> import ramie
        >>> from ramie._src.bridge.variables import type_of
        >>> type_of("params") is ramie.Param
        True
    """
    return variable_type_from_name(collection, allow_register=True)


def sort_variable_types(types: Iterable[type]) -> list[type]:
    """Variable types ordered most derived first (stable among equals).

    A filter built from the result tests ``LoRAParam`` before its parent
    ``Param``, so a subclass is never claimed by its base type's collection.

    Example:
        >>> import ramie
        >>> from ramie.bridge.variables import sort_variable_types
        >>> [t.__name__ for t in sort_variable_types([ramie.Param, ramie.LoRAParam])]
        ['LoRAParam', 'Param']
    """
    types = list(types)

    def depth(t: type) -> int:
        return sum(1 for base in t.__mro__ if issubclass(base, Variable))

    return sorted(types, key=lambda t: -depth(t))


def get_col_name(keypath: Sequence[Any]) -> str:
    """The Linen collection named by the first key of a variables-tree path.

    Accepts the key paths of ``jax.tree_util`` (``DictKey``, ``GetAttrKey``,
    ``SequenceKey``) and plain keys alike.

    Example:
        >>> import jax
        >>> from ramie.bridge.variables import get_col_name
        >>> variables = {"batch_stats": {"mean": 0.0}}
        >>> [get_col_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(variables)]
        ['batch_stats']
    """
    if not keypath:
        raise BridgeError(
            "ramie.bridge.variables.get_col_name(keypath): the path is empty; "
            "expected a path that starts with a collection name, e.g.\n"
            "      get_col_name((jax.tree_util.DictKey('params'), ...))"
        )
    first = keypath[0]
    for attr in ("key", "name", "idx"):
        if hasattr(first, attr):
            return str(getattr(first, attr))
    return str(first)


def is_vanilla_variable(var: Variable) -> bool:
    """True when ``var`` has no metadata worth keeping in Linen (a bare array)."""
    for key, value in _own_metadata(var).items():
        if key in var.required_metadata:
            continue
        if key.endswith("_hooks") and not value:
            continue
        if key == "eager_sharding":
            continue
        return False
    return True


# --------------------------------------------------------------- NNXMeta box
class _Metadata(dict):
    """A Variable's metadata dict that also answers to older key spellings.

    ``meta.metadata['sharding']`` and ``['sharding_names']`` read
    ``'out_sharding'``, as on Variables.
    """

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(canonical_metadata_name(key))

    def __contains__(self, key: object) -> bool:
        k = canonical_metadata_name(key) if isinstance(key, str) else key
        return super().__contains__(k)

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(canonical_metadata_name(key), default)


@cache
def nnx_meta_class() -> type:
    """Build :class:`NNXMeta` (a Linen ``AxisMetadata`` box) on first use."""
    meta = deps.flax_meta("ramie.bridge.NNXMeta")
    from flax import struct

    class NNXMeta(struct.PyTreeNode, meta.AxisMetadata):
        """A ramie Variable's type and metadata, boxed for Linen.

        ``ToLinen`` stores a Variable that carries metadata (e.g. sharding
        names) as this box; Linen's ``unbox``/``get_partition_spec`` see the
        value and its ``PartitionSpec``, and ``ToNNX`` turns it back into
        the same Variable type with the same metadata.

        Attributes:
            var_type: The ramie Variable class.
            value: The array (a pytree child, so ``jax`` transforms see it).
            metadata: The Variable's metadata dict.
        """

        var_type: type = struct.field(pytree_node=False)
        value: Any = struct.field(pytree_node=True)
        metadata: dict = struct.field(pytree_node=False)

        def unbox(self) -> Any:
            return self.value

        def replace_boxed(self, val: Any) -> Any:
            return self.replace(value=val)

        def add_axis(self, index: int, params: dict) -> Any:
            # nn.vmap / nn.scan stacked the value: name the new axis too.
            return self._with_axis(index, params, insert=True)

        def remove_axis(self, index: int, params: dict) -> Any:
            return self._with_axis(index, params, insert=False)

        def _with_axis(self, index: int, params: dict, insert: bool) -> Any:
            names = self.metadata.get("out_sharding")
            if names is None:
                return self
            names = list(names)
            if insert:
                names.insert(index, params.get(meta.PARTITION_NAME))
            else:
                names.pop(index)
            md = _Metadata({**self.metadata, "out_sharding": tuple(names)})
            return self.replace(metadata=md)

        def get_partition_spec(self) -> Any:
            """The ``PartitionSpec`` of the value, from its sharding metadata."""
            return spmd.get_var_pspec(self.to_nnx_variable())

        def to_nnx_variable(self) -> Variable:
            """The ramie Variable this box stands for."""
            return self.var_type(self.value, **self.metadata)

    NNXMeta.__module__ = "ramie.bridge"
    NNXMeta.__qualname__ = "NNXMeta"
    return NNXMeta


def _is_axis_metadata(x: Any) -> bool:
    meta = _loaded_meta()
    return meta is not None and isinstance(x, meta.AxisMetadata)


def _loaded_meta() -> Any:
    import sys

    return sys.modules.get("flax.core.meta")


# ---------------------------------------------------------- one variable
def to_linen_var(var: Variable) -> Any:
    """A ramie Variable as a Linen leaf: a bare array, its Linen box, or NNXMeta.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> from ramie._src.bridge.variables import to_linen_var
        >>> to_linen_var(ramie.Param(jnp.ones(2)))
        Array([1., 1.], dtype=float32)
    """
    metadata = _own_metadata(var)
    value = var.get_raw_value()
    box = metadata.get(_LINEN_META)
    if box is not None:
        fields = {k: v for k, v in metadata.items() if k != _LINEN_META}
        if hasattr(box, "from_nnx_metadata"):
            return box.from_nnx_metadata({"value": value, **fields})
        return box(value, **fields)
    if is_vanilla_variable(var):
        return value
    return nnx_meta_class()(type(var), value, _Metadata(metadata))


def to_nnx_var(collection: str, x: Any) -> Variable:
    """A Linen leaf of ``collection`` as a ramie Variable of the matching type.

    Example:
        >>> import jax.numpy as jnp
        >>> from ramie._src.bridge.variables import to_nnx_var
        >>> to_nnx_var("batch_stats", jnp.zeros(2))
        BatchStat(value=Array([0., 0.], dtype=float32))
    """
    var_type = type_of(collection)
    if _is_axis_metadata(x):
        if isinstance(x, nnx_meta_class()):
            if not issubclass(x.var_type, var_type) and x.var_type is not var_type:
                raise BridgeError(
                    f"ramie.bridge: an NNXMeta box of {x.var_type.__name__} sits in "
                    f"the Linen collection {collection!r}, which maps to "
                    f"{var_type.__name__}.\n  Keep each Variable in its own "
                    f"collection: {collection_of(x.var_type)!r}."
                )
            return x.to_nnx_variable()
        fields = x.to_nnx_metadata() if hasattr(x, "to_nnx_metadata") else dict(vars(x))
        fields = dict(fields)
        value = fields.pop("value")
        return var_type(value, **fields, **{_LINEN_META: type(x)})
    return var_type(x)


def unbox(x: Any) -> Any:
    """The bare value of a Linen leaf (boxes are opened, arrays returned as is)."""
    return x.unbox() if _is_axis_metadata(x) else x


# ------------------------------------------------------ whole collections
def iter_flat(tree: Mapping, prefix: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """``(path, leaf)`` of a nested mapping; Linen boxes are leaves."""
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from iter_flat(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def nest(flat: Mapping[tuple, Any]) -> dict:
    """Nested dicts from ``{path: leaf}``."""
    out: dict = {}
    for path, leaf in flat.items():
        d = out
        for k in path[:-1]:
            d = d.setdefault(k, {})
        d[path[-1]] = leaf
    return out


def linen_vars_to_nnx_attrs(variables: Mapping[str, Mapping]) -> dict:
    """``{collection: tree}`` -> one nested dict of Variables keyed by path.

    Raises:
        BridgeError: two collections hold a value at the same path.
    """
    flat: dict[tuple, Variable] = {}
    origin: dict[tuple, str] = {}
    for col, tree in variables.items():
        for path, leaf in iter_flat(tree):
            if path in flat:
                raise BridgeError(
                    f"ramie.bridge: the Linen collections {origin[path]!r} and "
                    f"{col!r} both hold {'/'.join(map(str, path))}; a ramie module "
                    "keeps one Variable per attribute.\n  Give one of them another "
                    "name in the Linen module, e.g. self.variable("
                    f"{col!r}, '{path[-1]}_{col}', ...)."
                )
            flat[path] = to_nnx_var(col, leaf)
            origin[path] = col
    return nest(flat)


def nnx_attrs_to_linen_vars(
    flat: Sequence[tuple[tuple, Variable]],
    to_leaf: Callable[[Variable], Any] | None = to_linen_var,
) -> dict[str, dict]:
    """``(path, Variable)`` pairs -> ``{collection: nested dict}`` for Linen."""
    by_col: dict[str, dict[tuple, Any]] = {}
    for path, var in flat:
        leaf = to_leaf(var) if to_leaf is not None else var.get_raw_value()
        by_col.setdefault(collection_of(type(var)), {})[tuple(path)] = leaf
    return {col: nest(f) for col, f in by_col.items()}


def with_partitioning(
    fn: Callable[..., Any],
    names: Sequence[Any],
    mesh: Any = None,
) -> Callable[..., Any]:
    """Like ``nn.with_partitioning``, for ramie initializers used with bridges.

    The Variables created get ``out_sharding=names`` and become
    ``nn.Partitioned`` boxes when they reach Linen (through ``ToLinen`` or a
    ``bridge.Module``'s ``variables``).

    Example:
        >>> import ramie
        >>> init = ramie.bridge.with_partitioning(
        ...     ramie.initializers.ones, ("in", "out"))
        >>> layer = ramie.Linear(2, 3, kernel_init=init, rngs=ramie.Rngs(0))
        >>> layer.kernel.out_sharding
        ('in', 'out')
    """
    meta = _loaded_meta()
    extra = {}
    if meta is not None or _flax_installed():
        extra[_LINEN_META] = deps.flax_meta(
            "ramie.bridge.with_partitioning"
        ).Partitioned
    return spmd.with_partitioning(fn, names, mesh, **extra)


def _flax_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("flax") is not None


def __getattr__(name: str) -> Any:
    if name == "NNXMeta":
        return nnx_meta_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
