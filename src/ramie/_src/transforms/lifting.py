"""The graph <-> pytree conversion that every ramie transform shares.

A ramie transform wraps a JAX transform around a *pure* function that:

1. rebuilds fresh copies of the argument graphs from their state values
   (``rebuild``), so that every Variable inside belongs to the JAX trace;
2. calls the user function on them, which may mutate them freely;
3. flattens the graphs again and returns, next to the user's output, the new
   state values: only the changed ones (``mode='changed'``) or all of them
   (``mode='all'``, for transforms such as vmap/scan/cond whose output
   structure must be fixed in advance) (``collect``).

Outside, ``apply_state`` writes the new values into the caller's own objects,
and ``build_outputs`` turns graph nodes in the output back into objects; an
output that is an argument (or part of one) comes back as the caller's object.

Static information (GraphDefs, which leaves changed) crosses the JAX boundary in
the output *structure*, as leafless :class:`Aux` nodes, so it is correct for
every trace and every cached call. If the function changes the structure of
an argument graph (new attribute, replaced sub-module or Variable), the new
structure is applied to the caller's objects in place (``apply_graph_update``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Hashable
from typing import Any

import jax

from ramie._src.core import links
from ramie._src.core.graph import registry
from ramie._src.core.graph.context import prefix_state
from ramie._src.core.graph.defs import (
    ARR,
    DCT,
    LST,
    NTP,
    OBJ,
    PTR,
    REF,
    STC,
    TUP,
    VAR,
    GraphDef,
)
from ramie._src.core.graph.flatten import Flat, _holds_data, flatten, unflatten
from ramie._src.core.graph.registry import OBJECT, VARIABLE, kind_of
from ramie._src.core.module import Module
from ramie._src.core.paths import format_path
from ramie._src.core.pytree import Pytree, init_slots
from ramie._src.core.tracing import current_trace
from ramie._src.core.tracked import TrackedDict, TrackedList
from ramie._src.core.variable_modes import REFS_USED, is_ref_value, set_raw_through
from ramie._src.core.variables import (
    Variable,
    _get_raw,
    _Hashed,
    _outer_trace_error,
    _set_meta,
    _set_raw,
    new_variable,
    thaw_metadata,
)
from ramie.errors import GraphStructureError, TransformError


def reject_bound_method(f: Any, api: str) -> None:
    """Raise if ``f`` is (a partial of) a method bound to a Module.

    The module would be captured as a constant of the trace, so its Variables
    would not be lifted and their updates would be lost.
    """
    g = f
    while isinstance(g, functools.partial):
        g = g.func
    owner = getattr(g, "__self__", None)
    if not inspect.ismethod(g) or not isinstance(owner, Module):
        return
    cls = type(owner).__name__
    name = g.__func__.__name__
    raise TransformError(
        f"{api}({cls.lower()}.{name}): {api} does not support bound methods of a "
        f"Module; found the method {name!r} bound to a {cls}. The {cls} would be a "
        "captured constant and its Variable updates lost.\n"
        "  Fix: pass the module as an argument, with the unbound method:\n"
        f"      {api}({cls}.{name})({cls.lower()}, ...)\n"
        f"  or decorate the method in the class body with @{api}."
    )


def reject_node_prefix(spec: Any, name: str, api: str) -> None:
    """Raise if a graph object is used inside an axes/shardings/argnums spec.

    Specs are prefixes of the arguments; a module or Variable there is almost
    always a misplaced argument (``in_axes=model``).
    """
    if spec is None or isinstance(spec, (int, str)):
        return
    for leaf in jax.tree_util.tree_leaves(spec, is_leaf=is_node):
        if isinstance(leaf, Variable) and _is_spec_value(leaf._raw):
            continue  # a State of shardings (``get_named_sharding``) describes state
        if prefix_state(leaf) is not None:
            continue  # ramie.prefix(model, ..., graph=False)
        if is_node(leaf):
            example = (
                f"{name}=(ramie.StateAxes({{ramie.Param: 0, ...: None}}), 0)"
                if name.endswith("axes")
                else "argnums=ramie.DiffState(0, ramie.Param)"
                if name == "argnums"
                else f"{name}=(ramie.StateSharding({{ramie.Param: sharding}}), None)"
            )
            raise TransformError(
                f"{api}({name}=...): Graph nodes are not allowed as prefixes; found "
                f"a {type(leaf).__name__} in {name}. {name} describes the arguments "
                "(one entry per argument), it does not hold them.\n"
                "  Fix: pass the module as an argument and give it an entry, e.g.\n"
                f"      {example}"
            )


def _is_spec_value(x: Any) -> bool:
    """A sharding, PartitionSpec or axis number held by a spec State entry."""
    return x is None or isinstance(
        x, (int, jax.sharding.Sharding, jax.sharding.PartitionSpec)
    )


def resolve_kwargs(f: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Turn keyword arguments that name positional parameters of ``f`` into
    positional ones, so per-argument specs (``in_axes``) apply to them.

    Keywords that cannot be positional (``**kwargs``, keyword-only) stay.
    """
    if not kwargs or isinstance(f, functools.partial):
        return args, kwargs
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        sig = None
    if sig is None:
        return args, kwargs
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError:
        return args, kwargs  # let the call itself raise Python's error
    return tuple(bound.args), dict(bound.kwargs)


def is_node(x: Any) -> bool:
    """True for graph objects and Variables (treated as units by transforms)."""
    k = registry._cache.get(type(x)) or kind_of(x)  # pyright: ignore[reportPrivateUsage]
    return k is OBJECT or k is VARIABLE


def raw(x: Any) -> Any:
    return x._raw if isinstance(x, Variable) else x


class Aux:
    """A leafless pytree node that carries hashable static data through JAX."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        return f"Aux({self.value!r})"


jax.tree_util.register_pytree_node(Aux, lambda a: ((), a.value), lambda v, _: Aux(v))


# ------------------------------------------------------------------ outer
class Extracted:
    """Arguments split into graph state and the rest (outer side)."""

    __slots__ = ("treedef", "node_pos", "nodes", "flat", "values", "other")

    def __init__(self, treedef, node_pos, nodes, flat, values, other):
        self.treedef = treedef
        self.node_pos = node_pos
        self.nodes = nodes
        self.flat: Flat = flat
        self.values = values
        self.other = other

    @property
    def static(self) -> tuple:
        return (self.treedef, self.node_pos, self.flat.graphdef)


def extract(tree: Any, *, track_containers: bool = False) -> Extracted:
    """Find the graph nodes in ``tree`` and flatten them jointly."""
    leaves, treedef = jax.tree_util.tree_flatten(tree, is_leaf=is_node)
    node_pos = tuple(i for i, leaf in enumerate(leaves) if is_node(leaf))
    nodes = tuple(leaves[i] for i in node_pos)
    flat = flatten(nodes, track_containers=track_containers)
    values = [raw(v) for v in flat.leaves]
    if node_pos:
        pos = set(node_pos)
        other = [leaf for i, leaf in enumerate(leaves) if i not in pos]
    else:
        other = leaves
    return Extracted(treedef, node_pos, nodes, flat, values, other)


def check_traces(ext: Extracted, api: str) -> None:
    """Raise if a Variable of the arguments belongs to another JAX trace."""
    trace = current_trace()
    for _path, leaf in zip(ext.flat.paths, ext.flat.leaves):
        if isinstance(leaf, Variable) and leaf._trace is not trace:
            raise _outer_trace_error(leaf, trace)


# ------------------------------------------------------------------ inner
class Inner:
    """The rebuilt argument graphs inside the traced function."""

    __slots__ = ("nodes", "objects", "values_in", "graphdef", "outer_index")

    def __init__(self, nodes, objects, values_in, graphdef):
        self.nodes = nodes
        self.objects = objects
        self.values_in = values_in
        self.graphdef = graphdef
        self.outer_index = None


def rebuild(static: tuple, values: list, other: list) -> tuple[Any, Inner]:
    """Rebuild the argument tree with fresh graph objects from ``values``."""
    treedef, node_pos, graphdef = static
    index_ref: dict[int, Any] = {}
    nodes = unflatten(graphdef, list(values), index_ref=index_ref) if node_pos else ()
    objects = [index_ref[i] for i in range(graphdef.num_nodes)] if node_pos else []
    if node_pos:
        leaves: list[Any] = list(other)
        for p, n in zip(node_pos, nodes):
            leaves.insert(p, n)
    else:
        leaves = list(other)
    tree = jax.tree_util.tree_unflatten(treedef, leaves)
    return tree, Inner(nodes, objects, list(values), graphdef)


def collect(
    inner: Inner,
    out: Any,
    *,
    mode: str,
    always: frozenset = frozenset(),
    out_specs: Callable[[Any], list[Any]] | None = None,
    allow_structure_change: bool = True,
    reject_captured: bool = False,
    api: str = "ramie transform",
) -> tuple[Any, Any]:
    """After the user function: the output and the argument-state updates.

    Returns ``(out_tree, (Aux(static), state_values))``. In ``out_tree`` each
    graph node is replaced by a subtree ``(Aux(node_static), groups)`` holding
    its new leaves (``groups`` splits them by the filters of a StateAxes spec
    given by ``out_specs``), so axis prefixes apply to it like to any subtree.
    """
    objs = inner.objects
    flat2 = flatten(inner.nodes) if objs else flatten(())
    same = (
        flat2.graphdef == inner.graphdef
        and len(flat2.objects) == len(objs)
        and all(a is b for a, b in zip(flat2.objects, objs))
    )
    if same:
        if mode == "changed":
            # the stored value: a Ref cell written in place is unchanged
            new_vals = [
                _get_raw(v) if isinstance(v, Variable) else v for v in flat2.leaves
            ]
            vin = inner.values_in
            if REFS_USED[0]:
                new_vals = [
                    raw(v) if n is not vin[i] and is_ref_value(n) else n
                    for i, (n, v) in enumerate(zip(new_vals, flat2.leaves))
                ]
        else:
            new_vals = [raw(v) for v in flat2.leaves]
        if mode == "changed":
            vin = inner.values_in
            idx = tuple(
                i for i, v in enumerate(new_vals) if v is not vin[i] or i in always
            )
            state_static: tuple = ("same", idx)
            state_vals = [new_vals[i] for i in idx]
        else:
            state_static = ("same", None)
            state_vals = new_vals
    else:
        if not allow_structure_change:
            raise GraphStructureError(
                f"{api}: the function changed the structure of an argument (added, "
                "removed or replaced an attribute, sub-module or Variable). Inside "
                "this transform only Variable values may change; create the "
                "structure before calling it."
            )
        outer_index = {id(o): i for i, o in enumerate(objs)}
        outer_of = tuple(outer_index.get(id(o)) for o in flat2.objects)
        state_static = ("new", flat2.graphdef, outer_of)
        state_vals = [raw(v) for v in flat2.leaves]
    out_leaves, out_treedef = jax.tree_util.tree_flatten(out, is_leaf=is_node)
    pos = [i for i, leaf in enumerate(out_leaves) if is_node(leaf)]
    if pos:
        from ramie._src.transforms.axes import _FilterMap

        specs = out_specs(out) if out_specs is not None else None
        ref_index = dict(flat2.ref_index)
        objects = list(flat2.objects)
        for i in pos:
            nflat = flatten(out_leaves[i], ref_index=ref_index, objects=objects)
            if reject_captured:
                _reject_captured(nflat, out_leaves[i], api)
            vals = [raw(v) for v in nflat.leaves]
            spec = specs[i] if specs is not None else None
            if isinstance(spec, _FilterMap):
                n = len(spec.items())
                group_ids = tuple(
                    _group_of(spec, p, leaf, api)
                    for p, leaf in zip(nflat.paths, nflat.leaves)
                )
                groups: list[list] = [[] for _ in range(n)]
                for g, v in zip(group_ids, vals):
                    groups[g].append(v)
            else:
                group_ids = None
                groups = [vals]
            out_leaves[i] = (Aux(("node", nflat.graphdef, group_ids)), groups)
        out = jax.tree_util.tree_unflatten(out_treedef, out_leaves)
    return out, (Aux((state_static, bool(pos))), state_vals)


def _reject_captured(nflat: Flat, node: Any, api: str) -> None:
    """Raise if an output holds a Variable of an outer trace (a captured one).

    A transform that stacks its outputs (vmap, scan) cannot return a module it
    closes over: its Variables were never mapped.
    """
    trace = current_trace()
    for path, leaf in zip(nflat.paths, nflat.leaves):
        if isinstance(leaf, Variable) and leaf._trace is not trace:
            where = f"{type(node).__name__}{'.' if path else ''}{format_path(path)}"
            raise TransformError(
                f"{api}: Cannot return captured Variable {where} "
                f"({type(leaf).__name__}): the function returns a graph node it "
                f"closes over, created outside {api}. Cannot extract graph node "
                "from different trace level: its Variables were never mapped, so "
                "they cannot be stacked into the output.\n"
                "  Fix: pass the module as an argument and return that, e.g.\n"
                f"      {api}(f, in_axes=(None, 0))(model, x)   # f(model, x)"
            )


def _group_of(spec: Any, path: tuple, leaf: Any, api: str) -> int:
    for g, (pred, _) in enumerate(zip(spec._preds, spec.items())):
        if pred(path, leaf):
            return g
    spec.lookup(path, leaf, api)  # raises a clear error
    return 0


def is_node_subtree(x: Any) -> bool:
    return type(x) is tuple and len(x) == 2 and type(x[0]) is Aux and type(x[1]) is list


# ------------------------------------------------------------ outer after
def apply_state(ext: Extracted, static: tuple, values: list, api: str) -> list[Any]:
    """Write new argument state into the caller's objects.

    Returns the index -> object list of the (possibly new) argument graph,
    used to resolve outputs that refer to arguments.
    """
    state_static = static[0]
    flat = ext.flat
    if state_static[0] == "same":
        idx = state_static[1]
        if idx is None:
            idx = range(len(values))
        trace = current_trace()
        writes = []
        for i, v in zip(idx, values):
            leaf = flat.leaves[i]
            if isinstance(leaf, Variable):
                if leaf._raw is v:
                    continue
                if leaf._trace is not trace:
                    raise _outer_trace_error(leaf, trace)
                writes.append((leaf, v))
            else:
                _write_raw_leaf(ext, flat.paths[i], v)
        setter = set_raw_through if REFS_USED[0] else _set_raw
        for leaf, v in writes:
            setter(leaf, v)
        return flat.objects
    _, graphdef2, outer_of = state_static
    return apply_graph_update(ext, graphdef2, outer_of, values, api)


def _write_raw_leaf(ext: Extracted, path: tuple, value: Any) -> None:
    parent: Any = ext.nodes
    for key in path[:-1]:
        parent = _child(parent, key)
    key = path[-1]
    k = kind_of(parent)
    if k is OBJECT:
        if type(parent)._graph_set is Pytree._graph_set:
            parent.__dict__[key] = value  # a value change, not a structural one
        else:
            parent._graph_set(key, value)
    elif isinstance(parent, (list, dict)):
        if isinstance(parent, (TrackedList, TrackedDict)):
            # a value change: bypass the structural-change bookkeeping
            (list if isinstance(parent, list) else dict).__setitem__(parent, key, value)
        else:
            parent[key] = value
    else:
        raise GraphStructureError(
            f"a transform updated the array at {format_path(path[1:])}, which is "
            f"stored in an immutable {type(parent).__name__}; store it in a Variable "
            "instead:\n"
            "      self.x = ramie.Variable(array)"
        )


def _child(node: Any, key: Hashable) -> Any:
    k = kind_of(node)
    if k is OBJECT:
        return node._graph_get(key)
    if k is registry.NAMEDTUPLE:
        return getattr(node, key)  # type: ignore[arg-type]
    if k is registry.PYTREE:
        return dict(registry.one_level(node)[0])[key]
    return node[key]


def apply_graph_update(
    ext: Extracted, graphdef: GraphDef, outer_of: tuple, values: list, api: str
) -> list[Any]:
    """Make the caller's argument graphs match ``graphdef`` (structure changed
    inside).
    """
    old = ext.flat.objects
    index_map: list[Any] = [None] * graphdef.num_nodes
    it = iter(values)

    def build(defn: tuple) -> Any:
        tag = defn[0]
        if tag == OBJ:
            idx = defn[2]
            oi = outer_of[idx]
            if oi is not None:
                target = old[oi]
            else:
                target = object.__new__(defn[1])
                init_slots(target)
            index_map[idx] = target
            children = {}
            for key, cdef in defn[3]:
                children[key] = build(cdef)
            if oi is not None:
                target._graph_replace(children)
            else:
                target._graph_rebuild(children)
            pref = links.parent_ref(target)
            for key, v in children.items():
                links.link_children(target, key, v, pref)
            return target
        if tag == VAR:
            idx = defn[2]
            oi = outer_of[idx]
            value = next(it)
            meta = thaw_metadata(defn[3]) if defn[3] else {}
            if oi is not None:
                var = old[oi]
                set_raw_through(var, value)
                if var._meta != meta:
                    _set_meta(var, meta)
            else:
                var = new_variable(defn[1], value, meta)
            index_map[idx] = var
            return var
        if tag == REF:
            return index_map[defn[1]]
        if tag == ARR:
            return next(it)
        if tag == STC:
            v = defn[1]
            return v.value if type(v) is _Hashed else v
        if tag == LST:
            items = [build(c) for _, c in defn[1]]
            return TrackedList(items) if _holds_data(defn[1]) else items
        if tag == TUP:
            return tuple(build(c) for _, c in defn[1])
        if tag == DCT:
            d = {k: build(c) for k, c in defn[1]}
            return TrackedDict(d) if _holds_data(defn[1]) else d
        if tag == NTP:
            return defn[1](*[build(c) for _, c in defn[2]])
        if tag == PTR:
            return defn[1].unflatten([build(c) for _, c in defn[2]])
        raise AssertionError(tag)

    # The root is the tuple of argument nodes; an argument that is part of an
    # earlier one (``f(model, model.sub)``) is a reference, resolved by build.
    build(graphdef.root)
    return index_map


def build_outputs(out: Any, static: tuple, index_map: list[Any]) -> Any:
    """Replace output node subtrees by graph objects (outer side).

    Nodes that refer to argument objects resolve to the caller's objects via
    ``index_map`` (from :func:`apply_state`).
    """
    if not static[1]:
        return out
    index_ref: dict[int, Any] = dict(enumerate(index_map))

    def rebuild_node(x: Any) -> Any:
        if not is_node_subtree(x):
            return x
        aux, groups = x
        _, graphdef, group_ids = aux.value
        if group_ids is None:
            vals = list(groups[0])
        else:
            iters = [iter(g) for g in groups]
            vals = [next(iters[g]) for g in group_ids]
        return unflatten(graphdef, vals, index_ref=index_ref)

    return jax.tree_util.tree_map(rebuild_node, out, is_leaf=is_node_subtree)


# ------------------------------------------------------ prefix matching
def broadcast_prefix(
    prefix: Any, full: Any, is_leaf: Callable[[Any], bool], api: str
) -> list[Any]:
    """Expand a pytree prefix (axes, shardings) to one entry per leaf of ``full``.

    Graph nodes count as leaves of ``full``.
    """
    from ramie._src.transforms.axes import is_axis_leaf

    out: list[Any] = []

    from ramie._src.core.state import State

    def rec(p: Any, f: Any, where: str) -> None:
        # a ramie.prefix State for a plain dict (or a State) of Variables
        # applies key by key
        per_key = isinstance(p, State) and isinstance(f, dict) and not is_leaf(f)
        if (is_axis_leaf(p) and not per_key) or f is None or is_leaf(f):
            n = len(jax.tree_util.tree_leaves(f, is_leaf=is_leaf))
            out.extend([p] * n)
            return
        pc, ptd = (
            jax.tree_util.flatten_one_level(p) if not is_axis_leaf(p) else ((), None)
        )
        fc, ftd = jax.tree_util.flatten_one_level(f)
        if (
            type(p) is not type(f)
            and not (isinstance(p, (tuple, list)) and isinstance(f, (tuple, list)))
            and not (isinstance(p, dict) and isinstance(f, dict))
        ):
            raise ValueError(
                f"{api}: the axes/specs {p!r} do not match the argument structure at "
                f"{where or 'the top level'} ({type(f).__name__})"
            )
        pc, fc = list(pc), list(fc)
        if isinstance(p, dict) and isinstance(f, dict):
            if set(p) != set(f):
                raise ValueError(
                    f"{api}: the axes/specs have keys {sorted(p, key=str)} where the "
                    f"arguments at {where or 'the top level'} have "
                    f"{sorted(f, key=str)}"
                )
            pc = [p[k] for k in sorted(f)]
        if len(pc) != len(fc):
            raise ValueError(
                f"{api}: the axes/specs have {len(pc)} entries where the arguments at "
                f"{where or 'the top level'} have {len(fc)}"
            )
        for i, (a, b) in enumerate(zip(pc, fc)):
            rec(a, b, f"{where}[{i}]")

    rec(prefix, full, "")
    return out


def unwrap_prefix_trees(spec: Any) -> Any:
    """``spec`` with each ``ramie.prefix(node, ..., graph=False)`` tree as its State.

    Such a tree has the node's own shape (so that raw ``jax.vmap`` takes it);
    ramie's transforms read the same per-Variable entries from its State form.
    Only tuples, lists and dicts are searched, as for any axes prefix.
    """
    as_state = prefix_state(spec)
    if as_state is not None:
        return as_state
    t = type(spec)
    if t is tuple or t is list:
        return t(unwrap_prefix_trees(s) for s in spec)
    if t is dict:
        return {k: unwrap_prefix_trees(v) for k, v in spec.items()}
    return spec


def as_node_spec(spec: Any) -> Any:
    """A State of per-path entries (``ramie.prefix``) as a StateAxes."""
    from ramie._src.core.state import State
    from ramie._src.transforms.axes import StateAxes

    as_state = prefix_state(spec)  # ramie.prefix(model, ..., graph=False)
    if as_state is not None:
        spec = as_state
    return StateAxes(spec) if isinstance(spec, State) else spec


def _check_aliasing(ext: Extracted, node_specs: list[Any], api: str) -> None:
    """Raise if one Variable is reached through arguments with different specs."""
    from ramie._src.core.graph.api import leaves_with_paths
    from ramie._src.transforms.axes import _FilterMap

    first: dict[int, tuple[tuple, Any]] = {}
    for k, (node, spec) in enumerate(zip(ext.nodes, node_specs)):
        if kind_of(node) is VARIABLE:
            paths, leaves = [()], [node]
        else:
            paths, leaves = leaves_with_paths(node)
        for path, leaf in zip(paths, leaves):
            if not isinstance(leaf, Variable):
                continue
            s = spec.lookup(path, leaf, api) if isinstance(spec, _FilterMap) else spec
            where = (k, *path)
            seen = first.setdefault(id(leaf), (where, s))
            if seen[1] != s:
                a, b = format_path(seen[0]), format_path(where)
                raise TransformError(
                    f"{api}: Inconsistent aliasing detected. The following nodes "
                    f"have different prefixes: one {type(leaf).__name__} is reached "
                    "through two arguments with different specs (path: spec):\n"
                    f"    args{a}: {seen[1]!r}\n"
                    f"    args{b}: {s!r}\n"
                    "  A shared Variable can only be mapped one way.\n"
                    "  Fix: give both arguments the same spec, or pass the shared "
                    "object once"
                )


def leaf_specs(
    ext: Extracted,
    arg_specs: list[Any],
    api: str,
    convert: Callable[[Any], Any] = lambda x: x,
) -> list[Any]:
    """Per graph-leaf spec from per-argument-leaf specs (StateAxes resolved)."""
    from ramie._src.core.state import State, iter_flat
    from ramie._src.transforms.axes import _FilterMap

    node_specs = [as_node_spec(arg_specs[p]) for p in ext.node_pos]
    if len(node_specs) > 1 and (
        any(isinstance(sp, _FilterMap) for sp in node_specs)
        or any(sp != node_specs[0] for sp in node_specs)
    ):
        _check_aliasing(ext, node_specs, api)
    out = []
    seen: dict[int, Any] = {}
    tables: dict[int, dict] = {}
    for path, leaf in zip(ext.flat.paths, ext.flat.leaves):
        spec = node_specs[path[0]]
        if isinstance(spec, _FilterMap):
            spec = spec.lookup(path[1:], leaf, api)
        elif isinstance(spec, State):  # from ramie.prefix: one value per path
            table = tables.get(id(spec))
            if table is None:
                table = tables[id(spec)] = {
                    p: (v._raw if isinstance(v, Variable) else v)
                    for p, v in iter_flat(spec)
                }
            if path[1:] not in table:
                raise GraphStructureError(
                    f"{api}: the prefix (from ramie.prefix) has no entry for the "
                    f"Variable at {format_path(path[1:])}; build it from the same "
                    "module you pass: ramie.prefix(model, {...})"
                )
            spec = table[path[1:]]
        out.append(convert(spec))
        seen[id(leaf)] = spec
    return out
