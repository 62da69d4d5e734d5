"""Sharding metadata on Variables and helpers built on it.

A Variable created through :func:`with_partitioning` (or with ``out_sharding``
metadata) records how its value is laid out on a device mesh: one mesh or
logical axis name per array axis, a ``PartitionSpec``, or a ``NamedSharding``.
:func:`get_partition_spec` turns a State of such Variables into
``PartitionSpec``s, :func:`get_named_sharding` into ``NamedSharding``s for a
mesh (both keep the State's structure, so they line up with it in
``jax.tree.map``), and :func:`get_abstract_model` describes a model's shapes
and shardings without allocating it (for sharded checkpoint restore). Logical
names are mapped to mesh axes by :func:`logical_axis_rules`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

from ramie._src.core.variables import Variable, with_metadata
from ramie._src.spmd import placement
from ramie.errors import ShardingError

_local = threading.local()
_eager: list[bool] = [True]

PARTITION_NAME = "partition_name"


def with_partitioning(
    initializer: Callable[..., Any],
    sharding: Any,
    mesh: Any = None,
    **metadata: Any,
) -> Callable[..., Any]:
    """Wrap an initializer so its Variables carry ``out_sharding`` (and ``mesh``).

    ``sharding`` is a tuple of mesh (or logical) axis names, a
    ``PartitionSpec`` or a ``NamedSharding``. Under a mesh the initializer is
    compiled to produce the value already sharded.

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
    if isinstance(sharding, list):
        sharding = tuple(sharding)
    return with_metadata(initializer, out_sharding=sharding, **metadata)


def current_rules() -> tuple:
    """The logical axis rules active in this thread."""
    return getattr(_local, "rules", None) or ()


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
    _local.rules = tuple(tuple(r) for r in rules)
    try:
        yield
    finally:
        _local.rules = prev


def logical_to_mesh_axes(names: Sequence[Any]) -> PartitionSpec:
    """Apply the active :func:`logical_axis_rules` to a tuple of axis names."""
    return placement.resolve_spec(tuple(names), {})


def get_var_pspec(var: Variable) -> PartitionSpec | None:
    """The PartitionSpec of one Variable (``P()`` when it has no sharding)."""
    spec = var._meta.get("out_sharding")
    if not spec:
        return PartitionSpec() if hasattr(var._raw, "shape") else None
    resolved = placement.resolve_spec(spec, var._meta)
    if isinstance(resolved, NamedSharding):
        return resolved.spec
    if not isinstance(resolved, PartitionSpec):  # a Format
        return getattr(resolved.sharding, "spec", PartitionSpec())
    return resolved


def _is_var(x: Any) -> bool:
    return isinstance(x, Variable)


def get_partition_spec(tree: Any) -> Any:
    """PartitionSpecs for every Variable in ``tree``, keeping its structure.

    Each Variable is replaced by a copy holding its ``PartitionSpec`` (other
    array leaves by ``P()``), so the result lines up with ``tree`` leaf for
    leaf.

    Example:
        >>> import ramie
        >>> init = ramie.with_partitioning(
        ...     ramie.initializers.lecun_normal(), (None, "model")
        ... )
        >>> layer = ramie.Linear(4, 8, kernel_init=init, rngs=ramie.Rngs(0))
        >>> specs = ramie.get_partition_spec(ramie.state(layer))
        >>> print(specs["kernel"].value)
        P(None, 'model')
    """

    def f(x: Any) -> Any:
        if isinstance(x, Variable):
            return x.replace(get_var_pspec(x))
        if hasattr(x, "shape"):
            return PartitionSpec()
        return None

    return jax.tree_util.tree_map(f, tree, is_leaf=_is_var)


def get_named_sharding(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """``NamedSharding(mesh, spec)`` for every Variable in ``tree``, same structure.

    Raises :class:`ramie.errors.ShardingError` naming the Variable's path when
    its annotation does not fit ``mesh``.

    Example:
        >>> import jax, ramie
        >>> mesh = jax.make_mesh((1,), ("model",))
        >>> init = ramie.with_partitioning(
        ...     ramie.initializers.lecun_normal(), (None, "model")
        ... )
        >>> layer = ramie.Linear(4, 8, kernel_init=init, rngs=ramie.Rngs(0))
        >>> shardings = ramie.get_named_sharding(ramie.state(layer), mesh)
        >>> shardings["kernel"].value.spec
        P(None, 'model')
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_var)
    out = []
    for path, x in flat:
        if isinstance(x, Variable):
            spec = get_var_pspec(x)
            if spec is None:
                out.append(x.replace(None))
                continue
            placement.check_spec(
                spec,
                x.shape,
                mesh,
                f"Variable {_path_str(path)}",
                api="ramie.get_named_sharding()",
            )
            out.append(x.replace(NamedSharding(mesh, spec)))
        elif hasattr(x, "shape"):
            out.append(NamedSharding(mesh, PartitionSpec()))
        else:
            out.append(None)
    return jax.tree_util.tree_unflatten(treedef, out)


def _path_str(path: tuple) -> str:
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
    return ".".join(parts) or "<root>"


def _insert(fields: tuple, index: int, value: Any) -> tuple:
    items = list(fields)
    while len(items) < index:
        items.append(None)
    items.insert(index, value)
    return tuple(items)


def _remove(fields: tuple, index: int, value: Any, what: str) -> tuple:
    items = list(fields)
    removed = items.pop(index)
    if removed != value:
        raise ShardingError(
            f"Removing the stacked axis {value!r} at index {index} from {what} "
            f"{fields!r}: found {removed!r} there (Expected to remove {value!r}). "
            "The transform's transform_metadata must name the axis the Variable "
            "was stacked with."
        )
    return tuple(items)


def _partition_and_rest(params: Any) -> tuple[Any, dict]:
    if not isinstance(params, Mapping):
        return params, {}
    if PARTITION_NAME not in params:
        raise ShardingError(
            "Stacking annotated Variables: transform_metadata must give the name of "
            f"the new axis; got {dict(params)!r}. Pass "
            "transform_metadata={ramie.PARTITION_NAME: 'layers'}."
        )
    rest = dict(params)
    return rest.pop(PARTITION_NAME), rest


def _as_tuple(spec: Any) -> Any:
    if isinstance(spec, PartitionSpec):
        return tuple(spec)
    return spec if isinstance(spec, tuple) else None


def add_axis_to(v: Variable, index: int, params: Any) -> None:
    """Record a new stacked axis at ``index`` in one Variable's metadata."""
    name, rest = _partition_and_rest(params)
    spec = _as_tuple(v._meta.get("out_sharding"))
    if spec:
        v._meta["out_sharding"] = _insert(spec, index, name)
    for k, val in rest.items():
        t = v._meta.get(k)
        if isinstance(t, tuple) and t:
            v._meta[k] = _insert(t, index, val)
    v.add_axis(index, name)


def remove_axis_from(v: Variable, index: int, params: Any) -> None:
    """Undo :func:`add_axis_to`."""
    name, rest = _partition_and_rest(params)
    spec = _as_tuple(v._meta.get("out_sharding"))
    if spec:
        v._meta["out_sharding"] = _remove(spec, index, name, "out_sharding")
    for k, val in rest.items():
        t = v._meta.get(k)
        if isinstance(t, tuple) and t:
            v._meta[k] = _remove(t, index, val, k)
    v.remove_axis(index, name)


def add_axis(tree: Any, index: int, params: Any) -> Any:
    """Insert the axis ``params[PARTITION_NAME]`` into every Variable's sharding."""
    for leaf in jax.tree_util.tree_leaves(tree, is_leaf=_is_var):
        if isinstance(leaf, Variable):
            add_axis_to(leaf, index, params)
    return tree


def remove_axis(tree: Any, index: int, params: Any) -> Any:
    """Undo :func:`add_axis`."""
    for leaf in jax.tree_util.tree_leaves(tree, is_leaf=_is_var):
        if isinstance(leaf, Variable):
            remove_axis_from(leaf, index, params)
    return tree


def _abstract_with(v: Variable, mesh: Any) -> Variable:
    raw = v._raw
    sharding = NamedSharding(mesh, get_var_pspec(v) or PartitionSpec())
    return v.copy(jax.ShapeDtypeStruct(raw.shape, raw.dtype, sharding=sharding))


def as_abstract(tree: Any, graph: Any = None) -> Any:
    """Attach shardings to abstract Variables (values that are ShapeDtypeStructs).

    A Variable with ``out_sharding`` metadata and no sharding yet gets a
    ``NamedSharding`` on its ``mesh`` metadata, or on the current mesh
    (concrete when ``jax.set_mesh`` gave one, so checkpoint restore accepts
    it directly).

    Example:
        >>> import jax, ramie
        >>> mesh = jax.make_mesh((1,), ("model",))
        >>> with jax.set_mesh(mesh):
        ...     abstract = ramie.as_abstract(ramie.eval_shape(lambda: ramie.Linear(
        ...         2, 4, kernel_metadata={"out_sharding": (None, "model")},
        ...         rngs=ramie.Rngs(0))))
        >>> abstract.kernel.sharding.spec
        P(None, 'model')
    """
    from ramie._src.core.graph.api import map as graph_map

    def conv(_path: Any, v: Any) -> Any:
        if not isinstance(v, Variable):
            return v
        raw = v._raw
        if not isinstance(raw, jax.ShapeDtypeStruct) or raw.sharding is not None:
            return v
        if "out_sharding" not in v._meta:
            return v
        mesh = v._meta.get("mesh") or placement.current_mesh()
        if mesh is None:
            return v
        return _abstract_with(v, mesh)

    return graph_map(conv, tree)


def concrete_abstract_shardings(tree: Any) -> Any:
    """Give abstract annotated Variables NamedShardings on the concrete mesh.

    ``jax.eval_shape`` reports shardings on an ``AbstractMesh`` (Explicit
    meshes) or none at all (Auto meshes); checkpoint restore needs concrete
    devices. Variables without an annotation are replicated over the mesh.
    Used by ``ramie.eval_shape``; without an active concrete mesh only
    Variables whose metadata names their ``mesh`` are given shardings.
    """
    from ramie._src.core.graph.api import iter_graph

    mesh = placement.current_mesh()
    if not isinstance(mesh, jax.sharding.Mesh):
        mesh = None  # only Variables naming their own mesh are placed
    try:
        items = list(iter_graph(tree))
    except Exception:  # not a graph: plain pytree outputs
        return tree
    for _path, v in items:
        if not isinstance(v, Variable) or not isinstance(v._raw, jax.ShapeDtypeStruct):
            continue
        raw = v._raw
        if "out_sharding" not in v._meta:
            if mesh is None:
                continue
            # not annotated: replicated over the mesh, as jit leaves it
            if raw.sharding is None or not isinstance(
                getattr(raw.sharding, "mesh", None), jax.sharding.Mesh
            ):
                replicated = NamedSharding(mesh, PartitionSpec())
                v._raw = jax.ShapeDtypeStruct(raw.shape, raw.dtype, sharding=replicated)
            continue
        vmesh = v._meta.get("mesh") or mesh
        if not isinstance(vmesh, jax.sharding.Mesh):
            continue
        spec = get_var_pspec(v) or PartitionSpec()
        sharding = NamedSharding(vmesh, spec)
        v._raw = jax.ShapeDtypeStruct(raw.shape, raw.dtype, sharding=sharding)
    return tree


def abstract_with_sharding(tree: Any, graph: Any = None) -> Any:
    """Deprecated name of :func:`as_abstract`."""
    return as_abstract(tree, graph)


def get_abstract_model(
    init_fn: Callable[[], Any], mesh: jax.sharding.Mesh, *, graph: Any = None
) -> tuple[Any, Any]:
    """``(graphdef, abstract_state)`` of the model ``init_fn()`` builds, with shardings.

    Nothing is allocated: shapes come from ``ramie.eval_shape``; each abstract
    value carries the concrete ``NamedSharding`` of its Variable's metadata on
    ``mesh``, ready for a sharded checkpoint restore.

    Example:
        >>> import jax, ramie
        >>> mesh = jax.make_mesh((1,), ("model",))
        >>> graphdef, abstract = ramie.get_abstract_model(
        ...     lambda: ramie.Linear(2, 4, rngs=ramie.Rngs(0)), mesh)
        >>> abstract["kernel"].value.sharding.mesh == mesh
        True
    """
    from ramie._src.core.graph.api import split
    from ramie._src.transforms.general import eval_shape

    with jax.set_mesh(mesh):
        abstract = eval_shape(init_fn)
        graphdef, state = split(abstract)
        state = jax.tree_util.tree_map(
            lambda v: _abstract_with(v, mesh) if isinstance(v, Variable) else v,
            state,
            is_leaf=_is_var,
        )
    return graphdef, state


class use_eager_sharding:  # noqa: N801 - Flax's name
    """Turn sharding at Variable creation on/off (context manager or global switch).

    Example:
        >>> import ramie
        >>> with ramie.use_eager_sharding(False):
        ...     ramie.using_eager_sharding()
        False
        >>> ramie.using_eager_sharding()
        True
    """

    def __init__(self, value: bool, /):
        self._prev = _eager[0]
        _eager[0] = bool(value)

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        _eager[0] = self._prev


def using_eager_sharding() -> bool:
    """Whether Variables with sharding metadata are placed when created."""
    return _eager[0]


# ------------------------------------------------ stacking transforms
def _variables(tree: Any) -> list[Variable]:
    """Variables in ``tree``: direct leaves and those inside graph nodes."""
    from ramie._src.core.graph.api import leaves_with_paths
    from ramie._src.transforms.lifting import is_node

    out: dict[int, Variable] = {}
    for leaf in jax.tree_util.tree_leaves(
        tree, is_leaf=lambda x: is_node(x) or _is_var(x)
    ):
        if isinstance(leaf, Variable):
            out.setdefault(id(leaf), leaf)
        elif is_node(leaf):
            for v in leaves_with_paths(leaf)[1]:
                if isinstance(v, Variable):
                    out.setdefault(id(v), v)
    return list(out.values())


def _is_filter_map(ax: Any) -> bool:
    from ramie._src.transforms.axes import _FilterMap

    return isinstance(ax, _FilterMap)


def _stacked_variables(tree: Any, ax: Any) -> list[tuple[Variable, int]]:
    """``(variable, axis)`` for the Variables of ``tree`` stacked by ``ax``.

    ``ax`` is an int (every Variable) or a StateAxes (its int entries; the
    Variables it broadcasts or carries are left out).
    """
    if not _is_filter_map(ax):
        return [(v, ax) for v in _variables(tree)]
    from ramie._src.core.graph.api import leaves_with_paths
    from ramie._src.transforms.lifting import is_node

    out: dict[int, tuple[Variable, int]] = {}
    for leaf in jax.tree_util.tree_leaves(
        tree, is_leaf=lambda x: is_node(x) or _is_var(x)
    ):
        if isinstance(leaf, Variable):
            pairs: Any = [((), leaf)]
        elif is_node(leaf):
            pairs = zip(*leaves_with_paths(leaf))
        else:
            continue
        for path, v in pairs:
            if isinstance(v, Variable) and id(v) not in out:
                i = _stack_axis(ax.lookup(tuple(path), v, "transform_metadata"))
                if i is not None:
                    out[id(v)] = (v, i)
    return list(out.values())


def _per_arg(axes: Any, n: int) -> list[Any]:
    if isinstance(axes, (tuple, list)):
        return list(axes) + [None] * (n - len(axes))
    return [axes] * n


def _stack_axis(ax: Any) -> int | None:
    return ax if isinstance(ax, int) and not isinstance(ax, bool) else None


def stacking_metadata(
    f: Callable[..., Any], in_axes: Any, out_axes: Any, params: Mapping[str, Any]
) -> Callable[..., Any]:
    """Wrap a stacking transform so sharding metadata tracks the stacked axis.

    Before ``f`` runs, the axis named ``params[PARTITION_NAME]`` is removed
    from the metadata of Variables of arguments mapped over an int axis (so
    the body sees per-layer annotations); afterwards it is inserted again in
    those arguments' Variables (including ones the body created, as in
    ``vmap`` over ``__init__``) and in Variables of outputs mapped over an
    int axis.
    """
    import functools

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ramie._src.transforms.lifting import resolve_kwargs

        if kwargs and isinstance(in_axes, (tuple, list)):
            args, kwargs = resolve_kwargs(f, args, kwargs)
        per_arg = _per_arg(in_axes, len(args))
        stacked = [
            (arg, ax)
            for arg, ax in zip(args, per_arg)
            if _stack_axis(ax) is not None or _is_filter_map(ax)
        ]
        removed: list[tuple[Variable, int]] = []
        try:
            for arg, ax in stacked:
                for v, i in _stacked_variables(arg, ax):
                    remove_axis_from(v, i, params)
                    removed.append((v, i))
        except BaseException:
            for v, ax in removed:
                add_axis_to(v, ax, params)
            raise
        try:
            out = f(*args, **kwargs)
        except BaseException:
            for v, ax in removed:
                add_axis_to(v, ax, params)
            raise
        seen: set[int] = set()
        for arg, ax in stacked:
            for v, i in _stacked_variables(arg, ax):
                if id(v) not in seen:
                    seen.add(id(v))
                    add_axis_to(v, i, params)
        outs = out if isinstance(out_axes, (tuple, list)) else (out,)
        for o, ax in zip(outs, _per_arg(out_axes, len(outs))):
            if _stack_axis(ax) is None and not _is_filter_map(ax):
                continue
            for v, i in _stacked_variables(o, ax):
                if id(v) not in seen:
                    seen.add(id(v))
                    add_axis_to(v, i, params)
        return out

    return wrapper
