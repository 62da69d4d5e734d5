"""``ramie.vmap`` (and ``pmap``): map a function over an axis, modules included.

For a module argument, ``in_axes`` may be an int (every Variable is mapped over
that axis), ``None`` (the module is broadcast) or a :class:`~ramie.StateAxes`
(one axis per filter). Modules created inside and returned come out stacked:
this is how the guides build N layers at once::

    @ramie.split_rngs(splits=5)
    @ramie.vmap(in_axes=(0,), out_axes=0)
    def create_block(rngs):
        return Block(64, 64, rngs=rngs)

Changes to argument Variables made inside are written back, with the argument's
own axis. Structural changes are carried out too: Variables an argument gains
inside (``@ramie.vmap`` on ``__init__`` building a stack of weights) take the
axis the argument's ``in_axes`` entry gives them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax

from ramie._src.core.graph.flatten import flatten
from ramie._src.core.modes import resolve_graph
from ramie._src.core.sentinels import MISSING
from ramie._src.transforms import eager_cache, lifting
from ramie._src.transforms.axes import StateAxes, _FilterMap, is_axis_leaf
from ramie._src.transforms.lifting import is_node
from ramie._src.transforms.simple import is_simple, modal
from ramie.errors import TransformError


def _convert_out_axes(out_axes: Any) -> Any:
    """StateAxes at a node position become ``(0, [axis_per_group])``."""

    def conv(x: Any) -> Any:
        if isinstance(x, _FilterMap):
            return (0, list(x.axes))
        return x

    return jax.tree_util.tree_map(conv, out_axes, is_leaf=is_axis_leaf)


def _node_out_axes(out_axes: Any) -> Any:
    """Per-Variable prefixes (a State from ``ramie.prefix``) as StateAxes."""
    from ramie._src.core.state import State

    if not any(
        isinstance(x, State)
        for x in jax.tree_util.tree_leaves(out_axes, is_leaf=is_axis_leaf)
    ):
        return out_axes
    return jax.tree_util.tree_map(lifting.as_node_spec, out_axes, is_leaf=is_axis_leaf)


def _reject_variable_prefix(spec: Any, name: str) -> None:
    """In tree mode a prefix is a pytree of axes; a Variable there is a mistake."""
    from ramie._src.core.variables import Variable

    leaves = jax.tree_util.tree_leaves(
        spec, is_leaf=lambda x: isinstance(x, Variable) or is_axis_leaf(x)
    )
    for leaf in leaves:
        if isinstance(leaf, Variable):
            raise TransformError(
                f"ramie.vmap({name}=...): Variables prefixes are not supported with "
                f"graph=False; found a {type(leaf).__name__} in {name}. A prefix "
                "holds axes (int or None), one per argument or per leaf.\n"
                "  Fix: use the axis itself, e.g. in_axes=(0,), or per-Variable "
                "axes from ramie.prefix(model, {ramie.Param: 0, ...: None})"
            )


def _mesh_has_axis(name: Any) -> bool:
    mesh = jax.sharding.get_abstract_mesh()
    return mesh is not None and not mesh.empty and name in mesh.axis_names


def _new_state_axes(
    nodes: Any, node_specs: list[Any], api: str
) -> tuple[list[tuple], list[Any]]:
    """Paths and axes of every leaf of argument graphs whose structure changed.

    New Variables take the axis their argument's spec gives them (a
    StateAxes resolves them by filter), as existing ones do.
    """
    flat = flatten(nodes)
    out = []
    for path, leaf in zip(flat.paths, flat.leaves):
        spec = node_specs[path[0]]
        if isinstance(spec, _FilterMap):
            spec = spec.lookup(path[1:], leaf, api)
        out.append(spec)
    return list(flat.paths), out


def _check_output_aliasing(
    ext: Any,
    inner: Any,
    graph_axes: list[Any],
    out: Any,
    out_specs: Callable[[Any], list[Any]],
    api: str,
    simple: bool,
) -> None:
    """Raise if an argument Variable is returned with another axis than it came in.

    ``vmap(f, in_axes=0, out_axes=1)`` on ``f(m): return m`` would have to
    store one Variable both unmoved and transposed. With ``graph=False`` or
    ``graph_updates=False`` returning an argument Variable at all is an error
    (no aliasing between inputs and outputs in those modes).
    """
    leaves = jax.tree_util.tree_leaves(out, is_leaf=is_node)
    pos = [i for i, leaf in enumerate(leaves) if is_node(leaf)]
    if not pos or not inner.objects:
        return
    from ramie._src.core.graph.api import leaves_with_paths
    from ramie._src.core.paths import format_path
    from ramie._src.core.variables import Variable

    leaf_index = {id(v): j for j, v in enumerate(ext.flat.leaves)}
    in_axis: dict[int, tuple[Any, tuple]] = {}
    for outer, obj in zip(ext.flat.objects, inner.objects):
        j = leaf_index.get(id(outer))
        if j is not None:
            in_axis[id(obj)] = (graph_axes[j], ext.flat.paths[j])
    specs = out_specs(out)
    for i in pos:
        spec = lifting.as_node_spec(specs[i])
        node = leaves[i]
        if isinstance(node, Variable):
            pairs: Any = [((), node)]
        else:
            pairs = zip(*leaves_with_paths(node))
        for path, v in pairs:
            found = in_axis.get(id(v))
            if found is None:
                continue
            if simple:
                from ramie._src.core.graph.tree_mode import duplicate_error

                raise duplicate_error(
                    api,
                    v,
                    ("args", *found[1]),
                    ("out", i, *path),
                    transform=True,
                )
            o = (
                spec.lookup(tuple(path), v, api)
                if isinstance(spec, _FilterMap)
                else spec
            )
            if o != found[0]:
                raise TransformError(
                    f"{api}: Inconsistent aliasing detected: the {type(v).__name__} "
                    f"at args{format_path(found[1])} is mapped with in_axes "
                    f"{found[0]!r} and returned (out{i}{'.' if path else ''}"
                    f"{format_path(tuple(path))}) with out_axes {o!r}; one Variable "
                    "cannot have two axes.\n"
                    "  Fix: return it with the axis it came in with (out_axes="
                    f"{found[0]!r} for that output), or return a copy: "
                    "ramie.clone(module)"
                )


@modal("ramie.vmap", ("in_axes", "out_axes"))
def vmap(
    f: Callable[..., Any] = MISSING,  # type: ignore[assignment]
    *,
    in_axes: Any = 0,
    out_axes: Any = 0,
    axis_name: Any = None,
    axis_size: int | None = None,
    spmd_axis_name: Any = None,
    transform_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
    graph: Any = None,
    graph_updates: Any = None,
) -> Any:
    """Vectorise ``f`` over an axis; module arguments and outputs are allowed.

    Args:
        f: The function (omit for decorator use with options).
        in_axes: Per positional argument: an int, ``None`` (broadcast) or, for
            modules, a :class:`~ramie.StateAxes`; a single value applies to all.
        out_axes: Same, for the outputs.
        axis_name, axis_size, spmd_axis_name: As in ``jax.vmap``.
        transform_metadata: ``{ramie.PARTITION_NAME: name}`` adds ``name`` to the
            sharding metadata of Variables of returned modules at the new axis.

    Example:
        >>> import ramie
        >>> @ramie.split_rngs(splits=3)
        ... @ramie.vmap(in_axes=(0,), out_axes=0)
        ... def create(rngs):
        ...     return ramie.Linear(4, 4, rngs=rngs)
        >>> create(ramie.Rngs(0)).kernel.shape
        (3, 4, 4)
    """
    if not resolve_graph(graph):
        _reject_variable_prefix(in_axes, "in_axes")
        _reject_variable_prefix(out_axes, "out_axes")
    lifting.reject_node_prefix(in_axes, "in_axes", "ramie.vmap")
    lifting.reject_node_prefix(out_axes, "out_axes", "ramie.vmap")
    if f is MISSING:
        return lambda fn: vmap(
            fn,
            in_axes=in_axes,
            out_axes=out_axes,
            axis_name=axis_name,
            axis_size=axis_size,
            spmd_axis_name=spmd_axis_name,
            transform_metadata=transform_metadata,
            graph=graph,
            graph_updates=graph_updates,
        )
    lifting.reject_bound_method(f, "ramie.vmap")
    api = "ramie.vmap"
    simple = is_simple(graph, graph_updates)
    out_axes = _node_out_axes(out_axes)
    partition = transform_metadata.get("partition_name")

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = lifting.resolve_kwargs(f, args, kwargs)
        ext = lifting.extract((args, kwargs))
        lifting.check_traces(ext, api)
        axes_args = (
            in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        )
        if isinstance(in_axes, list):
            axes_args = tuple(in_axes)
        if len(axes_args) != len(args):
            raise ValueError(
                f"{api}: in_axes has {len(axes_args)} entries but the function was "
                f"called with {len(args)} positional argument(s)"
            )
        arg_specs = lifting.broadcast_prefix(tuple(axes_args), args, is_node, api)
        kw_specs = [0] * len(jax.tree_util.tree_leaves(kwargs, is_leaf=is_node))
        specs = arg_specs + kw_specs
        graph_axes = lifting.leaf_specs(ext, specs, api)
        node_set = set(ext.node_pos)
        other_axes = [s for p, s in enumerate(specs) if p not in node_set]
        for s in other_axes:
            if isinstance(s, StateAxes):
                raise ValueError(
                    f"{api}: StateAxes can only be used for module arguments"
                )
        static = ext.static

        def out_specs(out: Any) -> list[Any]:
            return lifting.broadcast_prefix(out_axes, out, is_node, api)

        broadcast_changed: list[tuple] = []  # filled at trace time, for error messages
        # The out axes of the argument state. jax.vmap reads out_axes after
        # tracing, so when the function changes an argument's structure (an
        # ``__init__`` creating attributes) this list is refilled at trace time.
        state_out_axes = list(graph_axes)
        node_specs = [lifting.as_node_spec(specs[p]) for p in ext.node_pos]

        def pure(values: list, other: list) -> Any:
            (a, k), inner = lifting.rebuild(static, values, other)
            out = f(*a, **k)
            _check_output_aliasing(ext, inner, graph_axes, out, out_specs, api, simple)
            result = lifting.collect(
                inner,
                out,
                mode="all",
                out_specs=out_specs,
                reject_captured=True,
                api=api,
            )
            state_static = result[1][0].value[0]
            if state_static[0] == "new":
                paths, axes = _new_state_axes(inner.nodes, node_specs, api)
                state_out_axes[:] = axes
                in_ids = {id(v) for v in values}
                broadcast_changed[:] = [
                    p[1:]
                    for p, ax, v in zip(paths, axes, result[1][1])
                    if ax is None and id(v) not in in_ids
                ]
                return result
            state_out_axes[:] = graph_axes
            new_vals = result[1][1]
            broadcast_changed[:] = [
                ext.flat.paths[j][1:]
                for j, ax in enumerate(graph_axes)
                if ax is None and new_vals[j] is not values[j]
            ]
            return result

        jax_out_axes = (_convert_out_axes(out_axes), (0, state_out_axes))
        kw = {}
        if spmd_axis_name is not None:
            kw["spmd_axis_name"] = spmd_axis_name
        elif partition is not None and _mesh_has_axis(partition):
            # stacking layers along a mesh axis: shard the new axis over it
            kw["spmd_axis_name"] = partition

        def build() -> Any:
            return jax.vmap(
                pure,
                in_axes=(graph_axes, other_axes),
                out_axes=jax_out_axes,
                axis_name=axis_name,
                axis_size=axis_size,
                **kw,
            )

        key = (
            static,
            tuple(graph_axes),
            tuple(other_axes),
            out_axes,
            axis_name,
            axis_size,
            kw.get("spmd_axis_name"),
        )
        try:
            out, (aux, state_vals) = eager_cache.cached("vmap", f, key, build)(
                ext.values, ext.other
            )
        except ValueError as e:
            if "out_axes" in str(e) and "None" in str(e):
                from ramie._src.core.paths import format_path

                names = (
                    ", ".join(repr(format_path(p)) for p in broadcast_changed)
                    or "(unknown)"
                )
                raise TransformError(
                    f"{api}: at vmap in_axes=None, the broadcast Variable(s) {names} "
                    "got axis spec None but output was batched on axis 0: a Variable "
                    "of an argument broadcast with in_axes=None was changed to a "
                    "per-example value inside vmap, which cannot be written back to "
                    "the unbatched argument.\n"
                    "  Map that argument (in_axes=0, or a StateAxes giving those "
                    "Variables an axis) or do not change it inside vmap.\n"
                    f"JAX said: {e}"
                ) from e
            raise
        index_map = lifting.apply_state(ext, aux.value, state_vals, api)
        result = lifting.build_outputs(out, aux.value, index_map)
        return result

    if "partition_name" in transform_metadata:
        from ramie._src.spmd.sharding import stacking_metadata

        return stacking_metadata(wrapper, in_axes, out_axes, transform_metadata)
    return wrapper


@modal("ramie.pmap", ("in_axes", "out_axes"))
def pmap(
    f: Callable[..., Any] = MISSING,  # type: ignore[assignment]
    *,
    axis_name: Any = None,
    in_axes: Any = 0,
    out_axes: Any = 0,
    static_broadcasted_argnums: Any = (),
    devices: Any = None,
    backend: str | None = None,
    axis_size: int | None = None,
    donate_argnums: Any = (),
    global_arg_shapes: Any = None,
    transform_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
    graph: Any = None,
    graph_updates: Any = None,
) -> Any:
    """``jax.pmap`` for functions that take modules (mapped over devices).

    Implemented as ``vmap`` inside ``jax.pmap`` semantics: module arguments
    follow ``in_axes`` like in :func:`vmap`.
    """
    lifting.reject_node_prefix(in_axes, "in_axes", "ramie.pmap")
    lifting.reject_node_prefix(out_axes, "out_axes", "ramie.pmap")
    if f is MISSING:
        return lambda fn: pmap(
            fn,
            axis_name=axis_name,
            in_axes=in_axes,
            out_axes=out_axes,
            devices=devices,
            backend=backend,
            axis_size=axis_size,
            graph=graph,
            graph_updates=graph_updates,
        )
    lifting.reject_bound_method(f, "ramie.pmap")
    api = "ramie.pmap"
    out_axes = _node_out_axes(out_axes)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError(
                f"{api}: keyword arguments are not supported, pass them positionally"
            )
        ext = lifting.extract((args, {}))
        lifting.check_traces(ext, api)
        axes_args = (
            in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        )
        specs = lifting.broadcast_prefix(tuple(axes_args), args, is_node, api)
        graph_axes = lifting.leaf_specs(ext, specs, api)
        node_set = set(ext.node_pos)
        other_axes = [s for p, s in enumerate(specs) if p not in node_set]
        static = ext.static

        def out_specs(out: Any) -> list[Any]:
            return lifting.broadcast_prefix(out_axes, out, is_node, api)

        def pure(values: list, other: list) -> Any:
            (a, k), inner = lifting.rebuild(static, values, other)
            out = f(*a, **k)
            return lifting.collect(
                inner,
                out,
                mode="all",
                out_specs=out_specs,
                allow_structure_change=False,
                reject_captured=True,
                api=api,
            )

        out, (aux, state_vals) = jax.pmap(
            pure,
            axis_name=axis_name,
            in_axes=(graph_axes, other_axes),
            out_axes=(_convert_out_axes(out_axes), (0, graph_axes)),
            devices=devices,
            backend=backend,
            axis_size=axis_size,
        )(ext.values, ext.other)
        index_map = lifting.apply_state(ext, aux.value, state_vals, api)
        return lifting.build_outputs(out, aux.value, index_map)

    return wrapper


PARTITION_NAME = "partition_name"
