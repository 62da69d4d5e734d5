"""``ramie.scan``: ``jax.lax.scan`` with modules as carry, scanned or broadcast inputs.

``in_axes`` has one entry per positional argument:

* :class:`~ramie.Carry` - the carry (at most one argument);
* an int - the argument is scanned over that axis (stacked layers: ``0``);
* ``None`` - broadcast: the same value at every step.

``out_axes`` describes the return value the same way: ``(Carry, 0)`` (the
default) means ``f`` returns ``(carry, y)`` with ``y`` stacked on axis 0, and
``Carry`` alone means ``f`` returns only the carry.

Module state follows its argument (or its :class:`~ramie.StateAxes` entry):

* scanned (an int): sliced per step, the updates stacked back;
* carried (``Carry``): threaded through the loop, so updates such as RNG
  counters or BatchNorm statistics accumulate across steps;
* broadcast (``None``): the same value at every step, as in Flax's default
  mode: a broadcast RNG stream gives every step the same key (recurrent
  dropout draws one mask for the whole sequence). The steps' changes do not
  accumulate; the value the last step left is written back, so the stream
  advances once per call and the next call draws new numbers.

With ``graph_updates=False`` (or ``graph=False``) broadcast state is threaded
through the loop like a carry, as Flax does in that mode.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ramie._src.core.sentinels import MISSING
from ramie._src.transforms import eager_cache, lifting
from ramie._src.transforms.axes import Carry, StateAxes, _FilterMap, is_carry
from ramie._src.transforms.lifting import Aux, is_node, is_node_subtree
from ramie._src.transforms.simple import check_scan_axes, is_simple, modal
from ramie.errors import CarryStructureError, GraphStructureError, TransformError


def _moveaxis(tree: Any, src: int, dst: int) -> Any:
    if src == dst:
        return tree
    return jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, src, dst), tree)


@modal("ramie.scan", ("in_axes", "out_axes"), check_out=False, validate=check_scan_axes)
def scan(
    f: Callable[..., Any] = MISSING,  # type: ignore[assignment]
    *,
    length: int | None = None,
    reverse: bool = False,
    unroll: int | bool = 1,
    _split_transpose: bool = False,
    in_axes: Any = (Carry, 0),
    out_axes: Any = (Carry, 0),
    transform_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
    graph: Any = None,
    graph_updates: Any = None,
) -> Any:
    """Loop ``f`` over the leading (or given) axis of its scanned inputs.

    Args:
        f: ``f(*args)`` per step (omit for decorator use).
        length: Number of steps (inferred from scanned inputs when omitted).
        reverse, unroll: As in ``jax.lax.scan``.
        in_axes: Per argument: ``Carry``, an int axis, ``None`` (broadcast) or,
            for modules, a :class:`~ramie.StateAxes`. Default ``(Carry, 0)``.
        out_axes: ``(Carry, axis)`` (default ``(Carry, 0)``), ``Carry`` alone,
            or axes for a function without carry.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> cell = ramie.Linear(4, 4, rngs=ramie.Rngs(0))
        >>> step = lambda h, cell, x: (jnp.tanh(cell(h) + x),) * 2
        >>> h, ys = ramie.scan(step, in_axes=(ramie.Carry, None, 0))(
        ...     jnp.zeros(4), cell, jnp.ones((7, 4)))
        >>> ys.shape
        (7, 4)
    """
    _check_axes(in_axes, out_axes)
    lifting.reject_node_prefix(in_axes, "in_axes", "ramie.scan")
    lifting.reject_node_prefix(out_axes, "out_axes", "ramie.scan")
    if f is MISSING:
        return lambda fn: scan(
            fn,
            length=length,
            reverse=reverse,
            unroll=unroll,
            in_axes=in_axes,
            out_axes=out_axes,
            transform_metadata=transform_metadata,
            graph=graph,
            graph_updates=graph_updates,
        )
    lifting.reject_bound_method(f, "ramie.scan")
    api = "ramie.scan"
    # graph mode with graph updates: broadcast state is constant over the steps
    thread_broadcast = is_simple(graph, graph_updates)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = lifting.resolve_kwargs(f, args, kwargs)
        if kwargs:
            raise TypeError(
                f"{api}: pass arguments positionally (got keywords {sorted(kwargs)})"
            )
        if is_carry(in_axes) and len(args) != 1:
            raise TransformError(
                f"{api}: When in_axes=Carry, the function must take exactly one "
                f"argument (the carry); it was called with {len(args)}.\n"
                "  Fix: give every argument an entry, e.g. "
                "in_axes=(ramie.Carry, 0) for f(carry, x)"
            )
        axes = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        axes = tuple(axes)
        if len(axes) != len(args):
            raise ValueError(
                f"{api}: in_axes has {len(axes)} entries but the function was called "
                f"with {len(args)} argument(s)"
            )
        carry_pos = [i for i, a in enumerate(axes) if is_carry(a)]
        if len(carry_pos) > 1:
            raise ValueError(
                f"{api}: at most one argument can be the Carry; got in_axes={axes}"
            )
        ext = lifting.extract((args, {}))
        lifting.check_traces(ext, api)
        arg_specs = lifting.broadcast_prefix(
            tuple(Carry if is_carry(a) else a for a in axes), args, is_node, api
        )
        g_specs = lifting.leaf_specs(ext, arg_specs, api)
        node_set = set(ext.node_pos)
        o_specs = [s for p, s in enumerate(arg_specs) if p not in node_set]
        for s in o_specs:
            if isinstance(s, StateAxes):
                raise ValueError(
                    f"{api}: StateAxes can only be used for module arguments"
                )
        values, other = ext.values, ext.other
        static = ext.static
        node_specs = [lifting.as_node_spec(arg_specs[p]) for p in ext.node_pos]
        carry_arg_nodes = _carry_nodes(args, carry_pos)
        out_is_carry_only = is_carry(out_axes)
        carry_out_index = _carry_out_index(out_axes, api)
        y_axes_spec = _y_axes(out_axes)
        # classify leaves: carry (Carry or broadcast module state), scanned, const
        g_carry = [
            j
            for j, s in enumerate(g_specs)
            if is_carry(s) or (s is None and thread_broadcast)
        ]
        g_const = (
            [] if thread_broadcast else [j for j, s in enumerate(g_specs) if s is None]
        )
        g_scan = [
            j for j, s in enumerate(g_specs) if isinstance(s, int) and not is_carry(s)
        ]
        o_carry = [j for j, s in enumerate(o_specs) if is_carry(s)]
        o_scan = [
            j for j, s in enumerate(o_specs) if isinstance(s, int) and not is_carry(s)
        ]
        o_const = [j for j, s in enumerate(o_specs) if s is None]

        def build() -> Any:
            n_values, n_other = len(values), len(other)

            def run(values: list, other: list) -> tuple:
                xs_g = [_moveaxis(values[j], g_specs[j], 0) for j in g_scan]
                xs_o = [_moveaxis(other[j], o_specs[j], 0) for j in o_scan]
                n_steps = length
                if n_steps is None:
                    firsts = [jax.tree_util.tree_leaves(x) for x in xs_g + xs_o]
                    sizes = {leaf.shape[0] for leaves in firsts for leaf in leaves}
                    if not sizes:
                        raise ValueError(
                            f"{api}: nothing to scan over; pass length=... or a "
                            "scanned input"
                        )
                    if len(sizes) > 1:
                        raise ValueError(
                            f"{api}: scanned inputs have different lengths "
                            f"{sorted(sizes)}"
                        )
                    n_steps = sizes.pop()
                consts = [other[j] for j in o_const]
                b_g = [values[j] for j in g_const]

                def body(carry: tuple, xs: tuple) -> tuple:
                    c_g, c_o, _ = carry
                    x_g, x_o = xs
                    vals: list[Any] = [None] * n_values
                    for j, v in zip(g_carry, c_g):
                        vals[j] = v
                    for j, v in zip(g_const, b_g):
                        vals[j] = v
                    for j, v in zip(g_scan, x_g):
                        vals[j] = v
                    oth: list[Any] = [None] * n_other
                    for j, v in zip(o_carry, c_o):
                        oth[j] = v
                    for j, v in zip(o_scan, x_o):
                        oth[j] = v
                    for j, v in zip(o_const, consts):
                        oth[j] = v
                    (a, _), inner = lifting.rebuild(static, vals, oth)
                    out = f(*a)
                    if out_is_carry_only:
                        carry_out, y = out, None
                    elif carry_out_index is None:
                        carry_out, y = None, out  # no carry: everything is stacked
                    else:
                        if not isinstance(out, tuple):
                            raise TypeError(
                                f"{api}: with out_axes={out_axes!r} the function "
                                f"must return a tuple; got {type(out).__name__}"
                            )
                        if carry_out_index is None:
                            carry_out, y = None, out
                        else:
                            carry_out = out[carry_out_index]
                            rest = out[:carry_out_index] + out[carry_out_index + 1 :]
                            y = rest[0] if len(rest) == 1 else rest
                    inner_carry = _carry_nodes(a, carry_pos)
                    if carry_pos:
                        _check_carry_structure(a[carry_pos[0]], carry_out, api)
                    c_leaves = _check_carry(
                        carry_out, inner_carry, carry_arg_nodes, api
                    )
                    if thread_broadcast:  # graph_updates=False: no aliasing
                        _reject_returned_inputs(ext, inner, y, api)
                    y_out, (aux, state_vals) = lifting.collect(
                        inner,
                        y,
                        mode="all",
                        reject_captured=True,
                        api=api,
                    )
                    if aux.value[0][0] == "same":
                        layout = None
                        new_c_g = [state_vals[j] for j in g_carry]
                        new_x_g = [state_vals[j] for j in g_scan]
                        last_b = [state_vals[j] for j in g_const]
                    else:
                        layout = _new_layout(
                            inner, ext.flat.paths, node_specs, g_carry, g_const, api
                        )
                        old_to_new, scanned, _ = layout
                        new_c_g = [state_vals[old_to_new[j]] for j in g_carry]
                        new_x_g = [state_vals[k] for k, _ in scanned]
                        last_b = [state_vals[old_to_new[j]] for j in g_const]
                    return (new_c_g, c_leaves, last_b), (
                        new_x_g,
                        y_out,
                        aux,
                        Aux(layout),
                    )

                carry0 = (
                    [values[j] for j in g_carry],
                    [other[j] for j in o_carry],
                    list(b_g),
                )
                (c_g, c_o, last_b), (ys_g, ys_user, aux, layout) = jax.lax.scan(
                    body,
                    carry0,
                    (xs_g, xs_o),
                    length=n_steps,
                    reverse=reverse,
                    unroll=unroll,
                )
                return c_g, c_o, last_b, ys_g, ys_user, aux, layout

            return run

        key = (
            static,
            tuple(g_specs),
            tuple(o_specs),
            tuple(carry_pos),
            length,
            reverse,
            unroll,
            out_axes,
            thread_broadcast,
        )
        run = eager_cache.cached("scan", f, key, build)
        c_g, c_o, last_b, ys_g, ys_user, aux, layout = run(values, other)
        # write back module state
        if layout.value is None:
            new_vals = list(values)
            for j, v in zip(g_carry, c_g):
                new_vals[j] = v
            for j, v in zip(g_const, last_b):
                new_vals[j] = v
            for j, v in zip(g_scan, ys_g):
                new_vals[j] = _moveaxis(v, 0, g_specs[j])
            lifting.apply_state(ext, (("same", None), False), new_vals, api)
            index_map = ext.flat.objects
        else:
            # the function added Variables to scanned arguments (a lazily
            # initialised layer): they come out stacked like the others
            old_to_new, scanned, n_new = layout.value
            new_vals = [None] * n_new
            for j, v in zip(g_carry, c_g):
                new_vals[old_to_new[j]] = v
            for j, v in zip(g_const, last_b):
                new_vals[old_to_new[j]] = v
            for (k, axis), v in zip(scanned, ys_g):
                new_vals[k] = _moveaxis(v, 0, axis)
            _, graphdef2, outer_of = aux.value[0]
            index_map = lifting.apply_graph_update(
                ext, graphdef2, outer_of, new_vals, api
            )
        # user outputs
        carry_result = None
        if carry_pos:
            carry_leaves, carry_def = jax.tree_util.tree_flatten(
                args[carry_pos[0]], is_leaf=is_node
            )
            it = iter(c_o)
            carry_result = jax.tree_util.tree_unflatten(
                carry_def,
                [leaf if is_node(leaf) else next(it) for leaf in carry_leaves],
            )
        if out_is_carry_only:
            return carry_result
        y_result = _apply_y_axes(ys_user, y_axes_spec, api)
        if aux.value[1]:
            y_result = lifting.build_outputs(y_result, aux.value, index_map)
        if carry_out_index is None:
            return y_result
        rest = (
            y_result
            if isinstance(out_axes, tuple) and len(out_axes) > 2
            else (y_result,)
        )
        out_list = list(rest)
        out_list.insert(carry_out_index, carry_result)
        return tuple(out_list)

    if "partition_name" in transform_metadata:
        from ramie._src.spmd.sharding import stacking_metadata

        return stacking_metadata(wrapper, in_axes, out_axes, transform_metadata)
    return wrapper


def _check_axes(in_axes: Any, out_axes: Any) -> None:
    """Errors in the axes specs, raised when the function is decorated."""
    api = "ramie.scan"

    def carries(axes: Any) -> int:
        if is_carry(axes):
            return 1
        if isinstance(axes, (tuple, list)):
            return sum(1 for a in axes if is_carry(a))
        return 0

    n_in, n_out = carries(in_axes), carries(out_axes)
    if n_in > 1:
        raise TransformError(
            f"{api}: Found multiple Carry definitions in in_axes={in_axes!r}; at most "
            "one argument can be the carry.\n"
            "  Fix: pack the carried values into one argument (a tuple or a module), "
            "e.g. in_axes=(ramie.Carry, 0) for f((a, b), x)"
        )
    if (n_in == 0) != (n_out == 0):
        raise TransformError(
            f"{api}: If one of in_axes or out_axes has Carry, the other must also have "
            f"Carry; got in_axes={in_axes!r}, out_axes={out_axes!r}.\n"
            "  Fix: in_axes=(ramie.Carry, 0), out_axes=(ramie.Carry, 0) for "
            "f(carry, x) -> (carry, y)"
        )
    ys = out_axes if isinstance(out_axes, (tuple, list)) else (out_axes,)
    for spec in ys:
        if is_carry(spec):
            continue
        if isinstance(spec, StateAxes):
            if any(ax is None for ax in spec.axes):
                raise TransformError(
                    f"{api}: Cannot broadcast output state. Got StateAxes {spec!r} "
                    "in out_axes: scan outputs are stacked over the steps.\n"
                    "  Fix: give every filter an int axis, or return the broadcast "
                    "module in the carry"
                )
        elif any(ax is None for ax in jax.tree_util.tree_leaves(spec, is_leaf=_none)):
            raise TransformError(
                f"{api}: Cannot broadcast output state: out_axes={out_axes!r} has None "
                "where scan stacks an output over the steps.\n"
                "  Fix: use an int axis (e.g. out_axes=(ramie.Carry, 0)) or return "
                "the value in the carry"
            )


def _reject_returned_inputs(ext: Any, inner: Any, y: Any, api: str) -> None:
    """With ``graph_updates=False`` an argument Variable cannot be an output."""
    from ramie._src.core.graph.api import leaves_with_paths
    from ramie._src.core.graph.tree_mode import duplicate_error
    from ramie._src.core.variables import Variable

    leaves = jax.tree_util.tree_leaves(y, is_leaf=is_node)
    if not inner.objects or not any(is_node(x) for x in leaves):
        return
    index = {id(v): j for j, v in enumerate(ext.flat.leaves)}
    where = {}
    for outer, obj in zip(ext.flat.objects, inner.objects):
        j = index.get(id(outer))
        if j is not None:
            where[id(obj)] = ext.flat.paths[j]
    for i, node in enumerate(leaves):
        if not is_node(node):
            continue
        pairs: Any = (
            [((), node)]
            if isinstance(node, Variable)
            else zip(*leaves_with_paths(node))
        )
        for path, v in pairs:
            if id(v) in where:
                raise duplicate_error(
                    api, v, ("args", *where[id(v)]), ("out", i, *path), transform=True
                )


def _new_layout(
    inner: Any,
    old_paths: list[tuple],
    node_specs: list[Any],
    g_carry: list[int],
    g_const: list[int],
    api: str,
) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...], int]:
    """Where the state goes when the function changed an argument's structure.

    Returns ``(old_to_new, scanned, n)``: for each old leaf index its index in
    the new graph (carried and broadcast leaves must still be there), the
    ``(new index, axis)`` of every scanned leaf, and the number of new leaves.
    New Variables must belong to a scanned part of an argument: carried and
    broadcast state keeps its structure over the steps.
    """
    from ramie._src.core.graph.flatten import flatten
    from ramie._src.core.paths import format_path

    flat = flatten(inner.nodes)
    new_index = {p: k for k, p in enumerate(flat.paths)}
    kept = set(g_carry) | set(g_const)
    old_to_new = [-1] * len(old_paths)
    for j, p in enumerate(old_paths):
        k = new_index.get(p)
        if k is None and j in kept:
            raise GraphStructureError(
                f"{api}: the function removed the carried or broadcast Variable at "
                f"{format_path(p[1:])}; carried and broadcast state must keep its "
                "structure from step to step. Only Variables of scanned arguments "
                "may be added inside the scan."
            )
        old_to_new[j] = -1 if k is None else k
    at_old = {old_to_new[j] for j in kept}
    scanned = []
    for k, (p, leaf) in enumerate(zip(flat.paths, flat.leaves)):
        if k in at_old:
            continue
        spec = node_specs[p[0]]
        if isinstance(spec, _FilterMap):
            spec = spec.lookup(p[1:], leaf, api)
        if not isinstance(spec, int) or is_carry(spec):
            raise GraphStructureError(
                f"{api}: the function created the {type(leaf).__name__} at "
                f"{format_path(p[1:])} in a part of an argument with axis {spec!r}: "
                "new Variables can only be added to scanned state (an int axis), "
                "where they come out stacked.\n"
                "  Fix: create it before the scan, or give it an axis, e.g. "
                "in_axes=(ramie.StateAxes({ramie.Param: 0, ...: ramie.Carry}), ...)"
            )
        scanned.append((k, spec))
    return tuple(old_to_new), tuple(scanned), len(flat.paths)


def _none(x: Any) -> bool:
    return x is None


def _carry_nodes(args: tuple, carry_pos: list[int]) -> list[Any]:
    if not carry_pos:
        return []
    return [
        x
        for x in jax.tree_util.tree_leaves(args[carry_pos[0]], is_leaf=is_node)
        if is_node(x)
    ]


def _carry_out_index(out_axes: Any, api: str) -> int | None:
    if is_carry(out_axes):
        return 0
    if isinstance(out_axes, tuple):
        idx = [i for i, a in enumerate(out_axes) if is_carry(a)]
        if len(idx) > 1:
            raise ValueError(
                f"{api}: at most one output can be the Carry; got out_axes={out_axes}"
            )
        return idx[0] if idx else None
    return None


def _y_axes(out_axes: Any) -> Any:
    if is_carry(out_axes):
        return None
    if isinstance(out_axes, tuple):
        rest = tuple(a for a in out_axes if not is_carry(a))
        return rest[0] if len(rest) == 1 else rest
    return out_axes


def _check_carry(
    carry_out: Any, inner_nodes: list[Any], outer_nodes: list[Any], api: str
) -> list[Any]:
    leaves = jax.tree_util.tree_leaves(carry_out, is_leaf=is_node)
    nodes = [x for x in leaves if is_node(x)]
    if len(nodes) != len(inner_nodes) or any(
        a is not b for a, b in zip(nodes, inner_nodes)
    ):
        raise TransformError(
            f"{api}: the carry returned by the function must contain the same modules "
            "and Variables as the carry argument (Carry references must be the same "
            "between iterations: scan Variable identity must be preserved across "
            "iterations); found a different object. Update the module or Variable "
            "you were given in place and return it, e.g.\n"
            "      count.value += 1\n"
            "      return count, y"
        )
    return [x for x in leaves if not is_node(x)]


def _check_carry_structure(carry_in: Any, carry_out: Any, api: str) -> None:
    """The carry must come back with the structure it went in with.

    ``jax.lax.scan`` only compares flattened leaves, so a dict carry whose keys
    were renamed would be silently relabelled.
    """
    in_def = jax.tree_util.tree_structure(carry_in, is_leaf=is_node)
    out_def = jax.tree_util.tree_structure(carry_out, is_leaf=is_node)
    if in_def == out_def:
        return
    from ramie._src.core.paths import format_path, format_paths

    def paths(tree: Any) -> list[tuple]:
        flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_node)[0]
        return [tuple(_key_name(k) for k in p) for p, _ in flat]

    p_in, p_out = paths(carry_in), paths(carry_out)
    gone = [p for p in p_in if p not in p_out]
    new = [p for p in p_out if p not in p_in]
    lines = [
        f"{api}: the function returned a carry of another structure than the "
        "carry it was given; the carry must keep its structure from step to step."
    ]
    if gone:
        lines += ["  In the carry given, not in the one returned:", format_paths(gone)]
    if new:
        lines += ["  In the carry returned, not in the one given:", format_paths(new)]
    if not gone and not new:
        lines.append(f"  Given: {in_def}\n  Returned: {out_def}")
    example = format_path(gone[0]) if gone else "carry"
    lines.append(
        "  Fix: return the carry with the same keys and nesting, e.g. update "
        f"{example} in place of adding a new entry."
    )
    raise CarryStructureError("\n".join(lines))


def _key_name(k: Any) -> Any:
    for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
            return getattr(k, attr)
    return str(k)


def _apply_y_axes(ys: Any, spec: Any, api: str) -> Any:
    if spec is None or ys is None:
        return ys
    if isinstance(spec, int):
        return _map_arrays(ys, lambda x: jnp.moveaxis(x, 0, spec) if spec != 0 else x)
    if isinstance(spec, tuple) and isinstance(ys, tuple) and len(spec) == len(ys):
        return tuple(_apply_y_axes(y, s, api) for y, s in zip(ys, spec))
    if isinstance(spec, _FilterMap):
        return ys
    raise ValueError(f"{api}: out_axes {spec!r} do not match the outputs")


def _map_arrays(tree: Any, fn: Callable[[Any], Any]) -> Any:
    def go(x: Any) -> Any:
        if is_node_subtree(x):
            aux, groups = x
            return (aux, [[fn(v) for v in g] for g in groups])
        return fn(x)

    return jax.tree_util.tree_map(go, tree, is_leaf=is_node_subtree)


_ = Aux
