"""The functional API: split, merge, update, state, graphdef, clone, pop, ...

These functions move between the object world (a Module graph with shared
references and cycles) and the pytree world (a static :class:`GraphDef` plus
nested :class:`State` mappings of Variables) that JAX transforms understand.

All of them preserve sharing: a Variable or Module referenced twice appears once
in a State and is rebuilt once by ``merge``. States hold the model's live
Variables, so ``split`` copies nothing; ``merge`` reuses the Variables of the
States it is given (pass ``copy=True`` for fresh ones); ``clone`` copies.
"""

from __future__ import annotations

from builtins import map as _map  # this module defines its own map
from collections.abc import Hashable, Iterator, Mapping
from itertools import repeat
from operator import attrgetter
from typing import Any, TypeVar, overload

from ramie._src.core import links
from ramie._src.core.epoch import EPOCH
from ramie._src.core.filters import filters_to_predicates, to_predicate
from ramie._src.core.graph import registry
from ramie._src.core.graph.defs import ARR, STC, VAR, GraphDef
from ramie._src.core.graph.flatten import (
    _consume,
    flatten,
    to_state,
    unflatten,
    unflatten_state,
)
from ramie._src.core.graph.registry import (
    ARRAY,
    DICT,
    LIST,
    NAMEDTUPLE,
    OBJECT,
    PYTREE,
    STATIC,
    TUPLE,
    VARIABLE,
    kind_of,
)
from ramie._src.core.graph.tree_mode import maybe_check
from ramie._src.core.nogc import no_gc
from ramie._src.core.paths import format_path, format_paths
from ramie._src.core.pytree import Pytree, bump, data_marks, is_data_number
from ramie._src.core.sentinels import MISSING
from ramie._src.core.state import (
    GraphState,
    State,
    _is_mapping,
    iter_flat,
    merge_state,
    sorted_keys,
    unmatched_error,
)
from ramie._src.core.tracing import current_trace
from ramie._src.core.variable_modes import REFS_USED, set_raw_through
from ramie._src.core.variables import (
    Variable,
    _get_meta,
    _get_raw,
    _get_trace,
    _outer_trace_error,
    _set_meta,
    _set_raw,
)
from ramie.errors import GraphStructureError

A = TypeVar("A")
PureState = tuple  # (GraphDef, State)


# ---------------------------------------------------------------- split
@overload
def split(node: A, /) -> tuple[GraphDef[A], State]: ...
@overload
def split(node: A, first: Any, /) -> tuple[GraphDef[A], State]: ...
@overload
def split(node: A, first: Any, second: Any, /, *filters: Any) -> tuple[Any, ...]: ...
@no_gc
def split(node: A, *filters: Any, graph: bool | None = None) -> tuple[Any, ...]:  # type: ignore[misc]
    """Split a graph into a static GraphDef and one State per filter.

    Each Variable goes to the State of the first filter that matches it; a
    trailing ``...`` collects the rest. Shared Variables appear once.

    Args:
        node: A Module or any graph of Modules, Variables, lists and dicts.
        *filters: Filters such as ``ramie.Param`` or ``ramie.PathContains("head")``.
        graph: Accepted for compatibility with Flax; ramie always works on graphs.

    Returns:
        ``(graphdef, state_1, ..., state_n)``. Pass all of them to ``merge``.

    Raises:
        FilterError: if a Variable matches no filter and there is no ``...``.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> model = ramie.Linear(2, 3, rngs=ramie.Rngs(0))
        >>> graphdef, params = ramie.split(model, ramie.Param)
        >>> jax.tree.map(jnp.shape, params.to_pure_dict())
        {'bias': (3,), 'kernel': (2, 3)}
        >>> ramie.merge(graphdef, params)(jnp.ones((1, 2))).shape
        (1, 3)
    """
    maybe_check(node, graph, "ramie.split")
    if not filters or (
        len(filters) == 1 and (filters[0] is Ellipsis or filters[0] is True)
    ):
        if isinstance(node, Variable):  # its State is the Variable, as in Flax
            flat = flatten(node)
            return flat.graphdef, node
        if kind_of(node) in (ARRAY, STATIC):  # a bare leaf is its own state
            return flatten(node).graphdef, node
        flat = flatten(node, state_cls=State)
        return flat.graphdef, flat.state
    flat = flatten(node)
    parts = _partition(flat.paths, flat.leaves, filters, "ramie.split()")
    return (flat.graphdef, *[to_state(p, lv) for p, lv in parts])


def _partition(
    paths: list, leaves: list, filters: tuple, api: str, exhaustive: bool = True
) -> list[tuple[list, list]]:
    preds = filters_to_predicates(filters)
    out: list[tuple[list, list]] = [([], []) for _ in preds]
    rest = []
    n = len(preds)
    for path, leaf in zip(paths, leaves):
        for i in range(n):
            if preds[i](path, leaf):
                out[i][0].append(path)
                out[i][1].append(leaf)
                break
        else:
            rest.append((path, leaf))
    if rest and exhaustive:
        raise unmatched_error(api, filters, rest)
    return out


def unpack(node: A, *filters: Any, graph: bool | None = None) -> Any:
    """Like :func:`split`, but each State carries the GraphDef (a GraphState)."""
    gd, *states = split(node, *filters)
    out = []
    for s in states:
        gs = GraphState(graphdef=gd)
        dict.update(gs, s)
        out.append(gs)
    return out[0] if len(out) == 1 else tuple(out)


# ------------------------------------------------------------------ state
def _walk_leaves(value: Any, path: tuple, seen: set, paths: list, leaves: list) -> None:
    k = kind_of(value)
    if k is VARIABLE:
        i = id(value)
        if i not in seen:
            seen.add(i)
            paths.append(path)
            leaves.append(value)
    elif k is OBJECT:
        i = id(value)
        if i in seen:
            return
        seen.add(i)
        marks = data_marks(value)
        for key, child in value._graph_children():
            ck = kind_of(child)
            if ck is not STATIC:
                _walk_leaves(child, path + (key,), seen, paths, leaves)
            elif marks is not None and is_data_number(marks, key, child):
                paths.append(path + (key,))
                leaves.append(child)
    elif k is ARRAY:
        paths.append(path)
        leaves.append(value)
    elif k is STATIC:
        return
    else:
        for key, child in _container_items(value, k):
            _walk_leaves(child, path + (key,), seen, paths, leaves)


def _container_items(value: Any, k: str) -> Any:
    if k is LIST or k is TUPLE:
        return enumerate(value)
    if k is DICT:
        return [(key, value[key]) for key in sorted_keys(value)]
    if k is NAMEDTUPLE:
        return zip(value._fields, value)
    return registry.one_level(value)[0]


def _nest_leaves(node: Any, out: State, seen: set[int]) -> None:
    """Put the state leaves below graph node ``node`` into ``out``, nested.

    Shared objects and Variables (ids in ``seen``) are visited once; empty
    sub-States are left out. Builds the same State as ``to_state`` of
    ``leaves_with_paths``, without listing the paths.
    """
    kinds = registry._cache  # pyright: ignore[reportPrivateUsage]
    k = kinds.get(type(node)) or kind_of(node)
    marks = None
    if k is OBJECT:
        items: Any = node._graph_children()
        marks = data_marks(node)
    elif k is VARIABLE or k is ARRAY or k is STATIC:
        return
    else:
        items = _container_items(node, k)
    setitem = dict.__setitem__
    for key, child in items:
        ck = kinds.get(type(child)) or kind_of(child)
        if ck is VARIABLE:
            i = id(child)
            if i not in seen:
                seen.add(i)
                setitem(out, key, child)
        elif ck is STATIC:
            if marks is not None and is_data_number(marks, key, child):
                setitem(out, key, child)
            continue
        elif ck is ARRAY:
            setitem(out, key, child)
        else:
            if ck is OBJECT:
                i = id(child)
                if i in seen:
                    continue
                seen.add(i)
            sub = State.__new__(State)
            _nest_leaves(child, sub, seen)
            if sub:
                setitem(out, key, sub)


def leaves_with_paths(node: Any) -> tuple[list[tuple], list[Any]]:
    """``(paths, leaves)`` of every state leaf of ``node`` (shared ones once)."""
    paths: list[tuple] = []
    leaves: list[Any] = []
    _walk_leaves(node, (), set(), paths, leaves)
    return paths, leaves


@no_gc
def state(node: Any, *filters: Any, graph: bool | None = None) -> Any:
    """The State of ``node`` (its live Variables), optionally filtered.

    With several filters, returns one State per filter; each Variable goes to
    the first filter it matches (as in ``split``), but unlike ``split`` the
    filters need not cover every Variable.

    Example:
        >>> import ramie
        >>> bn = ramie.BatchNorm(3, rngs=ramie.Rngs(0))
        >>> sorted(ramie.state(bn, ramie.BatchStat))
        ['mean', 'var']
    """
    maybe_check(node, graph, "ramie.state")
    if not filters:
        if kind_of(node) is VARIABLE:
            return node  # as split(variable) does
        out = State.__new__(State)
        _nest_leaves(node, out, {id(node)})
        return out
    paths, leaves = leaves_with_paths(node)
    preds = [to_predicate(f) for f in filters]
    groups: list[tuple[list, list]] = [([], []) for _ in preds]
    for p, v in zip(paths, leaves):
        for pred, (ps, ls) in zip(preds, groups):
            if pred(p, v):
                ps.append(p)
                ls.append(v)
                break
    outs = [to_state(ps, ls) for ps, ls in groups]
    return outs[0] if len(outs) == 1 else tuple(outs)


variables = state


@no_gc
def graphdef(node: A, /, *, graph: bool | None = None) -> GraphDef[A]:
    """Only the GraphDef of ``node``."""
    maybe_check(node, graph, "ramie.graphdef")
    return flatten(node, with_paths=False).graphdef


# ------------------------------------------------------------------ merge
@no_gc
def merge(
    graphdef: GraphDef[A] | GraphState,
    /,
    *states: Mapping,
    copy: bool = False,
    recreate_variables: bool = True,
) -> A:
    """Rebuild a graph from a GraphDef and the State(s) split from it.

    Args:
        graphdef: From ``split`` (or a GraphState from ``unpack``).
        *states: Every State ``split`` returned, in any order.
        copy: Copy the Variables instead of using the States' own objects.

    Raises:
        GraphStructureError: a Variable has no value in the States, or the
            States hold values the GraphDef has no place for.

    Example:
        >>> import ramie
        >>> model = ramie.BatchNorm(3, rngs=ramie.Rngs(0))
        >>> graphdef, params, stats = ramie.split(model, ramie.Param, ramie.BatchStat)
        >>> type(ramie.merge(graphdef, params, stats)).__name__
        'BatchNorm'
    """
    if isinstance(graphdef, GraphState):
        _check_graph_states(graphdef, states)
        states = (graphdef, *states)
        graphdef = graphdef.graphdef
    elif isinstance(graphdef, GraphDef) and not states and graphdef.num_leaves:
        raise TypeError(
            "ramie.merge() missing 1 required positional argument: 'state'; the "
            f"GraphDef has {graphdef.num_leaves} leaves to fill. Pass every State "
            "split returned:\n"
            "      graphdef, state = ramie.split(model)\n"
            "      model = ramie.merge(graphdef, state)"
        )
    if not isinstance(graphdef, GraphDef):
        raise TypeError(
            f"ramie.merge(): the first argument must be a GraphDef (from ramie.split), "
            f"got {type(graphdef).__name__}.\n"
            "      graphdef, state = ramie.split(model)\n"
            "      model = ramie.merge(graphdef, state)"
        )
    if (
        graphdef.root[0] in (ARR, STC)
        and len(states) == 1
        and not isinstance(states[0], Mapping)
    ):
        return states[0]  # the state of a bare leaf is the leaf, as in Flax
    for i, s in enumerate(states):
        if not isinstance(s, Mapping) and not (
            isinstance(s, Variable) and len(states) == 1 and graphdef.root[0] == VAR
        ):  # the State of a bare Variable is the Variable
            raise TypeError(
                f"ramie.merge(): state argument {i + 1} must be a State or mapping, "
                f"got {type(s).__name__}"
            )
    if not states:
        state_all: Any = State()
    elif len(states) == 1:
        state_all = states[0]
    else:
        state_all = merge_state(*states)
    node, missing, unexpected = unflatten_state(graphdef, state_all, copy=copy)
    if missing or unexpected:
        raise _structure_error(
            "ramie.merge()", graphdef, missing, unexpected, len(states)
        )
    return node


def _check_graph_states(first: GraphState, rest: tuple) -> None:
    """``merge(graph_state, ...)``: the rest must be GraphStates of one GraphDef."""
    for i, s in enumerate(rest, start=2):
        if not isinstance(s, GraphState):
            raise GraphStructureError(
                f"ramie.merge(): Expected GraphState object as argument {i} (the first "
                f"is a GraphState from ramie.unpack); got {type(s).__name__}.\n"
                "  Fix: pass what ramie.unpack returned, or a GraphDef first:\n"
                "      model = ramie.merge(*ramie.unpack(model, ramie.Param, ...))\n"
                "      model = ramie.merge(graphdef, state)"
            )
        gd = getattr(s, "_graphdef", None)
        if gd is not None and gd != first.graphdef:
            raise GraphStructureError(
                f"ramie.merge(): GraphDef must be the same for every GraphState; "
                f"argument {i} was unpacked from a different graph than argument 1.\n"
                "  Fix: merge only the GraphStates of one ramie.unpack(...) call"
            )


def _structure_error(
    api: str, graphdef: GraphDef, missing: list, unexpected: list, n_states: int
) -> GraphStructureError:
    n_found = graphdef.num_leaves - len(missing) + len(unexpected)
    lines = [f"{api}: the State(s) do not fit the GraphDef."]
    if missing:
        lines.append(f"  No value for {len(missing)} leaf(s):")
        lines.append(format_paths(missing))
    if unexpected:
        lines.append(f"  {len(unexpected)} value(s) the GraphDef has no place for:")
        lines.append(format_paths(unexpected))
    lines.append(
        f"  The GraphDef expects {graphdef.num_leaves} leaves; the {n_states} State(s) "
        f"hold {n_found}."
    )
    if missing and not unexpected:
        lines.append(
            "  If you split with filters, pass every resulting State to merge:\n"
            "      graphdef, params, rest = ramie.split(model, ramie.Param, ...)\n"
            "      model = ramie.merge(graphdef, params, rest)"
        )
    else:
        lines.append(
            "  The model definition probably changed since the State was split or "
            "saved; rebuild the State from the current model:\n"
            "      graphdef, state = ramie.split(model)"
        )
    return GraphStructureError("\n".join(lines))


# ----------------------------------------------------------------- update
_NOTSET = object()


@no_gc
def update(node: Any, state: Any, /, *states: Any, allow_cast: bool = False) -> None:
    """Write the values of State(s) into the existing objects of ``node``.

    Accepts States, GraphStates and nested dicts of arrays. Partial States are
    fine (only the given paths change). Follows the loading policy
    (``docs/guides/state_safety.md#loading-policy``): values are canonicalised
    as JAX does (float64 NumPy arrays load into float32 Variables), a shape
    that differs from the Variable's is an error, a dtype that differs is cast
    only when lossless (or with ``allow_cast=True``), a path the graph does
    not have is an error, and when anything is wrong nothing is changed. The
    one exception is a lazily built node (a ``ramie.bridge.Module`` whose
    Variables are created on first use): entries it does not have yet are
    added to it, as when restoring before its first call.

    Args:
        node: The model (or any graph) to write into.
        state: A State, GraphState or nested dict of arrays.
        *states: More States, merged into the first.
        allow_cast: Cast values of another dtype to the Variables' dtypes even
            when the cast loses information (``float32 -> bfloat16``).

    Raises:
        StateLoadError: a path in the State does not exist in ``node``, or a
            value does not fit its Variable (every such path is listed).
        TraceContextError: when called inside a JAX transform on Variables
            created outside it.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> model = ramie.Linear(2, 3, rngs=ramie.Rngs(0))
        >>> params = jax.tree.map(jnp.zeros_like, ramie.state(model, ramie.Param))
        >>> ramie.update(model, params)
        >>> float(model.kernel.value.sum())
        0.0
        >>> ramie.update(model, {"kernel": jnp.zeros((2, 16))})
        Traceback (most recent call last):
        ...
        ramie.errors.StateLoadError: ramie.update(): the values do not fit ...
    """
    if states:
        state = merge_state(state, *states)
    if not isinstance(state, Mapping):
        raise TypeError(
            f"ramie.update(): expected a State or a nested dict of arrays, got "
            f"{type(state).__name__}"
        )
    plan = _UpdatePlan()
    unexpected: list[tuple] = []
    _plan_update(node, state, (), plan, unexpected)
    raws = _checked_values(node, plan, unexpected, allow_cast)
    trace = current_trace()
    targets = plan.targets
    if targets and set(_map(_get_trace, targets)) != {trace}:
        for var in targets:
            if var._trace is not trace:
                raise _outer_trace_error(var, trace)
    _apply_plan(plan, raws)


_UPDATE_FIX = (
    "  Fix: the State must come from this model (or one with the same "
    "structure); check the model definition, e.g.\n"
    "      sorted(ramie.state(model).flat_paths())   # the paths it has"
)
_aval = attrgetter("aval")


def _checked_values(
    node: Any, plan: _UpdatePlan, unexpected: list, allow_cast: bool
) -> list:
    """The raw values ``update`` writes, checked against the loading policy.

    The common case (a State of Variables whose values have the shapes and
    dtypes of the graph's, e.g. from a jitted step) is checked with C loops;
    anything else goes through ``check_load``, which converts values and raises
    one StateLoadError for every unexpected and mismatched path.
    """
    targets, values = plan.targets, plan.values
    if not unexpected and not plan.items:
        if all(_map(isinstance, values, repeat(Variable))):
            raws = list(_map(_get_raw, values))
            try:
                # JAX interns avals, so equal shapes and dtypes are usually the
                # same object and this list comparison is a C loop on `is`.
                if list(_map(_aval, raws)) == list(
                    _map(_aval, _map(_get_raw, targets))
                ):
                    return raws
            except AttributeError:  # not a JAX array (NumPy, Python values)
                pass
    from ramie._src.core.loading import check_load

    paths = _paths_by_id(node)
    pairs = [(paths.get(id(t), ("?",)), t, v) for t, v in zip(targets, values)]
    item_pairs = [(it[5], it[4], it[3]) for it in plan.items]
    converted = check_load(
        pairs + item_pairs,
        api="ramie.update()",
        allow_cast=allow_cast,
        unexpected=unexpected,
        fix=_UPDATE_FIX if unexpected else None,
    )
    n = len(pairs)
    for i, raw in enumerate(converted[n:]):
        it = plan.items[i]
        plan.items[i] = (*it[:3], raw, *it[4:])
    return converted[:n]


def _paths_by_id(node: Any) -> dict[int, tuple]:
    paths, leaves = leaves_with_paths(node)
    return {id(leaf): p for p, leaf in zip(paths, leaves)}


class _UpdatePlan:
    """What ``update`` writes, all collected (and checked) before any write."""

    __slots__ = ("targets", "values", "items", "adds")

    def __init__(self) -> None:
        self.targets: list[Variable] = []  # Variables of the graph...
        self.values: list[Any] = []  # ...and the value or Variable for each
        # bare arrays: (container, kind, key, value, old array, path)
        self.items: list[tuple] = []
        # new entries of nodes built lazily (bridge modules): (node, key, value)
        self.adds: list[tuple] = []


def _plan_update(
    node: Any, sub: Mapping, path: tuple, plan: _UpdatePlan, unexpected: list
) -> None:
    kinds = registry._cache  # pyright: ignore[reportPrivateUsage]
    k = kinds.get(type(node)) or kind_of(node)
    get = node._graph_getter() if k is OBJECT else None
    add_target = plan.targets.append
    add_value = plan.values.append
    for key, val in sub.items():
        child = _NOTSET if get is None else get(key, _NOTSET)
        if child is _NOTSET:
            child = _child_of(node, k, key)
        if child is val:  # the graph's own Variable (or array): nothing to write
            continue
        if child is _NOTSET:
            if k is OBJECT and getattr(node, "_graph_update_adds", False):
                plan.adds.append((node, key, val))  # a lazily built node
            else:
                _unexpected_paths(val, path + (key,), unexpected)
            continue
        if isinstance(child, Variable):
            if isinstance(val, Variable) or not _is_mapping(val):
                add_target(child)
                add_value(val)
            else:
                _unexpected_paths(val, path + (key,), unexpected)
            continue
        ck = kinds.get(type(child)) or kind_of(child)
        cpath = path + (key,)
        if ck is ARRAY:
            if _is_mapping(val):
                _unexpected_paths(val, cpath, unexpected)
            elif k is OBJECT or k is LIST or k is DICT:
                plan.items.append((node, k, _real_key(node, k, key), val, child, cpath))
            else:
                raise GraphStructureError(
                    f"ramie.update(): the array at {format_path(cpath)} is stored "
                    f"in an immutable {type(node).__name__} and cannot be updated in "
                    "place; store it in a Variable instead: ramie.Variable(array)"
                )
        elif ck is STATIC:
            if (
                k is DICT
                or k is LIST
                or (k is OBJECT and is_data_number(data_marks(node), key, child))
            ) and not _is_mapping(val):
                # a plain dict/list entry holding a Python value (``{"n": 1}``):
                # the key exists, so its value is replaced (as Flax does)
                plan.items.append((node, k, _real_key(node, k, key), val, child, cpath))
            else:
                _unexpected_paths(val, cpath, unexpected)
        else:
            if type(val) is State or _is_mapping(val):
                _plan_update(child, val, cpath, plan, unexpected)
            else:
                unexpected.append(cpath)


def _real_key(node: Any, k: str, key: Hashable) -> Hashable:
    if k is LIST and isinstance(key, str) and key.isdigit():
        return int(key)
    return key


def _child_of(node: Any, k: str, key: Hashable) -> Any:
    if k is OBJECT:
        try:
            return node._graph_get(key, _NOTSET)
        except (KeyError, IndexError, TypeError):
            return _NOTSET
    if k is LIST or k is TUPLE:
        if isinstance(key, str) and key.isdigit():
            key = int(key)
        if isinstance(key, int) and -len(node) <= key < len(node):
            return node[key]
        return _NOTSET
    if k is DICT:
        return node.get(key, _NOTSET)
    if k is NAMEDTUPLE:
        return getattr(node, key, _NOTSET) if isinstance(key, str) else _NOTSET
    if k is PYTREE:
        for ck, cv in registry.one_level(node)[0]:
            if ck == key:
                return cv
        return _NOTSET
    return _NOTSET


def _unexpected_paths(val: Any, path: tuple, out: list) -> None:
    if _is_mapping(val) and val:
        for k in sorted_keys(val):
            _unexpected_paths(val[k], path + (k,), out)
    else:
        out.append(path)


def _apply_plan_through(plan: _UpdatePlan, raws: list) -> None:
    """``_apply_plan`` when ref/hijax Variables exist: write into their cells."""
    for var, val, raw in zip(plan.targets, plan.values, raws):
        set_raw_through(var, raw)
        if isinstance(val, Variable) and val._meta != var._meta:
            meta = dict(val._meta)
            for mode in ("hijax", "ref"):  # the target keeps its own modes
                meta.pop(mode, None)
                if mode in var._meta:
                    meta[mode] = True
            _set_meta(var, meta)
            EPOCH.meta += 1


def _apply_plan(plan: _UpdatePlan, raws: list) -> None:
    targets, values = plan.targets, plan.values
    if REFS_USED[0]:
        _apply_plan_through(plan, raws)
        _apply_items(plan)
        return
    _consume(_map(_set_raw, targets, raws))  # a C loop
    # metadata only where it differs
    if all(_map(isinstance, values, repeat(Variable))):
        metas = list(_map(_get_meta, values))
        if metas != list(_map(_get_meta, targets)):
            for var, meta in zip(targets, metas):
                if meta != var._meta:
                    _set_meta(var, dict(meta))
            EPOCH.meta += 1
    else:
        for var, val in zip(targets, values):
            if isinstance(val, Variable) and val._meta != var._meta:
                _set_meta(var, dict(val._meta))
                EPOCH.meta += 1
    _apply_items(plan)


def _fresh(value: Any) -> Any:
    """A new entry for a lazily built node: Variables copied, mappings as dicts."""
    if isinstance(value, Variable):
        return value.copy()
    if _is_mapping(value):
        return {k: _fresh(value[k]) for k in sorted_keys(value)}
    return value


def _apply_items(plan: _UpdatePlan) -> None:
    """Write plain (non-Variable) values into their nodes."""
    for node, key, val in plan.adds:
        node._graph_set(key, _fresh(val))
    for node, k, key, val, *_ in plan.items:
        if isinstance(val, Variable):
            val = val._raw
        if k is OBJECT:
            if type(node)._graph_set is Pytree._graph_set:
                node.__dict__[key] = val  # a value change, not a structural one
            else:  # List/Dict keep their items elsewhere
                node._graph_set(key, val)
        else:
            node[key] = val


# ------------------------------------------------------------------ clone
@no_gc
def clone(
    node: A, variables: bool = True, *, arrays: bool = False, graph: bool | None = None
) -> A:
    """A deep copy of ``node`` that keeps its internal sharing.

    Args:
        variables: Copy the Variables (default). With ``False`` the clone
            shares Variables with ``node``.
        arrays: Also copy the array buffers.

    Example:
        >>> import ramie
        >>> model = ramie.Linear(2, 3, rngs=ramie.Rngs(0))
        >>> other = ramie.clone(model)
        >>> same_values = bool((other.kernel.value == model.kernel.value).all())
        >>> other.kernel is model.kernel, same_values
        (False, True)
    """
    maybe_check(node, graph, "ramie.clone")
    flat = flatten(node)
    leaves = flat.leaves
    if variables or arrays:
        import jax.numpy as jnp

        def cp(v: Any) -> Any:
            if isinstance(v, Variable):
                raw = (
                    jnp.array(v._raw, copy=True)
                    if arrays and hasattr(v._raw, "shape")
                    else v._raw
                )
                return v.copy(raw) if variables else v
            return jnp.array(v, copy=True) if arrays else v

        leaves = [cp(v) for v in leaves]
    return unflatten(flat.graphdef, leaves)


# -------------------------------------------------------------------- pop
def pop(node: Any, *filters: Any) -> Any:
    """Remove the matching Variables from ``node`` and return them as State(s).

    Bare arrays stored in the graph (a Module attribute or a dict entry holding
    a ``jax.Array``) are matched by the filters too and popped the same way.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> class M(ramie.Module):
        ...     def __call__(self, x):
        ...         self.sow(ramie.Intermediate, "h", x * 2)
        ...         return x
        >>> m = M()
        >>> _ = m(jnp.ones(2))
        >>> intermediates = ramie.pop(m, ramie.Intermediate)
        >>> intermediates.h.value[0].shape, hasattr(m, "h")
        ((2,), False)
    """
    if not filters:
        raise ValueError(
            "ramie.pop() needs at least one filter, e.g. "
            "ramie.pop(model, ramie.Intermediate)"
        )
    preds = [to_predicate(f) for f in filters]
    found: list[list] = [[] for _ in preds]
    removals: list[tuple] = []
    seen: set[int] = set()

    def walk(value: Any, path: tuple) -> None:
        k = kind_of(value)
        if k is OBJECT:
            if id(value) in seen:
                return
            seen.add(id(value))
            items = list(value._graph_children())
        elif k in registry.CONTAINERS:
            items = list(_container_items(value, k))
        else:
            return
        for key, child in items:
            ck = kind_of(child)
            cpath = path + (key,)
            if ck is VARIABLE or ck is ARRAY:
                for i, pred in enumerate(preds):
                    if pred(cpath, child):
                        if id(child) not in seen:
                            if ck is VARIABLE:
                                seen.add(id(child))
                            found[i].append((cpath, child))
                        removals.append((value, k, key, cpath))
                        break
            elif ck is OBJECT or ck in registry.CONTAINERS:
                walk(child, cpath)

    walk(node, ())
    # check everything before changing anything
    for parent, k, _key, cpath in removals:
        if k is not OBJECT and k is not DICT:
            raise GraphStructureError(
                f"ramie.pop(): the Variable at {format_path(cpath)} is an item of a "
                f"{type(parent).__name__}; only Module attributes, ramie.List/Dict "
                "items and dict entries can be popped. Keep popped Variables as "
                "attributes, or use ramie.state() to read them without removing."
            )
    # delete from the highest key down, so list indices stay valid
    for parent, k, key, _ in sorted(
        removals,
        key=lambda r: (id(r[0]), r[2] if isinstance(r[2], int) else 0),
        reverse=True,
    ):
        if k is OBJECT:
            parent._graph_del(key)
        else:
            del parent[key]
    outs = [to_state([p for p, _ in f], [v for _, v in f]) for f in found]
    return outs[0] if len(outs) == 1 else tuple(outs)


# ----------------------------------------------------------- iteration
def iter_graph(
    node: Any, /, *, graph: bool | None = None
) -> Iterator[tuple[tuple, Any]]:
    """Yield ``(path, value)`` for every node and leaf, children before parents.

    Shared objects are yielded once (at their first path). Static attribute
    values are included.

    Example:
        >>> import ramie
        >>> layer = ramie.Linear(1, 1, rngs=ramie.Rngs(0))
        >>> [ramie.format_path(p) for p, v in ramie.iter_graph(layer)
        ...  if isinstance(v, ramie.Variable)]
        ['bias', 'kernel']
    """
    maybe_check(node, graph, "ramie.iter_graph")
    seen: set[int] = set()

    def walk(value: Any, path: tuple) -> Iterator[tuple[tuple, Any]]:
        k = kind_of(value)
        if k is OBJECT or k is VARIABLE:
            if id(value) in seen:
                return
            seen.add(id(value))
        if k is OBJECT:
            for key, child in value._graph_children():
                yield from walk(child, path + (key,))
        elif k in registry.CONTAINERS:
            for key, child in _container_items(value, k):
                yield from walk(child, path + (key,))
        yield path, value

    try:
        yield from walk(node, ())
    finally:
        walk = None  # type: ignore[assignment]  # break the closure's self-reference cycle


def iter_modules(
    module: Any, /, *, graph: bool | None = None
) -> Iterator[tuple[tuple, Any]]:
    """Yield ``(path, module)`` for every Module in the graph, root last."""
    from ramie._src.core.module import Module

    for path, value in iter_graph(module):
        if isinstance(value, Module):
            yield path, value


def iter_children(
    node: Any, /, *, graph: bool | None = None
) -> Iterator[tuple[Hashable, Any]]:
    """Yield ``(key, child)`` for the immediate graph-object children of ``node``."""
    maybe_check(node, graph, "ramie.iter_children")
    for key, value in node._graph_children():
        if kind_of(value) in (OBJECT, VARIABLE):
            yield key, value


def iter_module_children(
    node: Any, /, *, graph: bool | None = None
) -> Iterator[tuple[Hashable, Any]]:
    """Yield ``(key, module)`` for the immediate Module children of ``node``."""
    from ramie._src.core.module import Module

    for key, value in node._graph_children():
        if isinstance(value, Module):
            yield key, value


def find_duplicates(node: Any, /, *, only: Any = ...) -> list[list[tuple]]:
    """Groups of paths that reach the same object or Variable (shared references).

    Example:
        >>> import ramie
        >>> class Tied(ramie.Module):
        ...     def __init__(self):
        ...         self.a = ramie.Linear(1, 1, rngs=ramie.Rngs(0))
        ...         self.b = self.a
        >>> ramie.find_duplicates(Tied())
        [[('a',), ('b',)]]
    """
    pred = to_predicate(only)
    first: dict[int, list[tuple]] = {}

    def walk(value: Any, path: tuple, stack: set) -> None:
        k = kind_of(value)
        if k is OBJECT or k is VARIABLE:
            i = id(value)
            if i in first:
                if pred(path, value):
                    first[i].append(path)
                return
            first[i] = [path] if pred(path, value) else []
            if k is VARIABLE:
                return
            items = value._graph_children()
        elif k in registry.CONTAINERS:
            items = _container_items(value, k)
        else:
            return
        for key, child in items:
            walk(child, path + (key,), stack)

    walk(node, (), set())
    return [paths for paths in first.values() if len(paths) > 1]


# ---------------------------------------------------------- mapping
def map(
    f: Any, node: A, /, *, graph: bool | None = None, recreate_variables: bool = True
) -> A:  # noqa: A001
    """A copy of ``node`` with ``f(path, variable)`` applied to each Variable.

    A value ``f`` returns that is not a Variable is wrapped in a copy of the
    Variable it replaces; with ``recreate_variables=False`` it is stored as it
    is, so the copy holds plain values where ``node`` held Variables.

    Example:
        >>> import ramie
        >>> rngs = ramie.map(lambda path, v: 0, ramie.Rngs(0),
        ...                  recreate_variables=False)
        >>> rngs.default.count
        0
    """
    flat = flatten(node)
    new_leaves = []
    for p, v in zip(flat.paths, flat.leaves):
        out = f(p, v)
        if (
            recreate_variables
            and isinstance(v, Variable)
            and not isinstance(out, Variable)
        ):
            out = v.copy(out)
        new_leaves.append(out)
    if recreate_variables:
        return unflatten(flat.graphdef, new_leaves)
    return unflatten(flat.graphdef, new_leaves, make_variable=_as_is)


def _as_is(defn: tuple, value: Any) -> Any:
    return value


def recursive_map(f: Any, node: A, /, *, graph: bool | None = None) -> A:
    """Rebuild ``node`` bottom-up, each node and leaf replaced by ``f(path, x)``."""
    maybe_check(node, graph, "ramie.recursive_map")
    memo: dict[int, Any] = {}

    def rec(value: Any, path: tuple) -> Any:
        k = kind_of(value)
        if k is OBJECT or k is VARIABLE:
            if id(value) in memo:
                return memo[id(value)]
        if k is OBJECT:
            new = object.__new__(type(value))
            from ramie._src.core.pytree import init_slots

            init_slots(new)
            memo[id(value)] = new
            children = {
                key: rec(c, path + (key,)) for key, c in value._graph_children()
            }
            new._graph_rebuild(children)
            out = f(path, new)
        elif k is VARIABLE:
            out = f(path, value.copy())
        elif k is LIST:
            out = f(path, [rec(c, path + (i,)) for i, c in enumerate(value)])
        elif k is TUPLE:
            out = f(path, tuple(rec(c, path + (i,)) for i, c in enumerate(value)))
        elif k is DICT:
            out = f(
                path,
                {key: rec(value[key], path + (key,)) for key in sorted_keys(value)},
            )
        else:
            out = f(path, value)
        if k is OBJECT or k is VARIABLE:
            memo[id(value)] = out
        return out

    return rec(node, ())


def set_metadata(node: Any, /, *, only: Any = Variable, **metadata: Any) -> None:
    """Set metadata on every matching Variable of ``node`` in place."""
    pred = to_predicate(only)
    paths, leaves = leaves_with_paths(node)
    for p, v in zip(paths, leaves):
        if isinstance(v, Variable) and pred(p, v):
            v.set_metadata(**metadata)


# ------------------------------------------------------------ calling
class ApplyCaller:
    """Calls a method on a graph rebuilt from (graphdef, states), purely.

    Returned by ``graphdef.apply(*states)`` and ``ramie.call((graphdef, state))``.
    Calling it (or a method reached through attribute access) returns
    ``(output, (graphdef, new_state))``.
    """

    def __init__(self, graphdef: GraphDef, states: tuple, path: tuple = ()):
        self._graphdef = graphdef
        self._states = states
        self._path = path

    def __getattr__(self, name: str) -> ApplyCaller:
        if name.startswith("__"):
            raise AttributeError(name)
        return ApplyCaller(self._graphdef, self._states, self._path + ((0, name),))

    def __getitem__(self, key: Any) -> ApplyCaller:
        """``call(split(nodes))['b'].method()``: reach into containers too."""
        return ApplyCaller(self._graphdef, self._states, self._path + ((1, key),))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        model = merge(self._graphdef, *self._states)
        target: Any = model
        for item, key in self._path:
            target = target[key] if item else getattr(target, key)
        return target(*args, **kwargs), split(model)


def call(graphdef_state: tuple, /) -> ApplyCaller:
    """``call((graphdef, state)).method(*args)`` -> ``(out, (graphdef, state))``."""
    graphdef, *states = graphdef_state
    return ApplyCaller(graphdef, tuple(states))


# --------------------------------------------------------- low level
def flatten_graph(
    node: Any, /, *, with_paths: bool = True, graph: bool | None = None
) -> tuple:
    """``(graphdef, FlatState)`` of ``node`` (Flax's ``flatten``)."""
    from ramie._src.core.state import FlatState

    flat = flatten(node)
    return flat.graphdef, FlatState(zip(flat.paths, flat.leaves), sort=False)


def unflatten_graph(graphdef: GraphDef, state: Any, /, **kwargs: Any) -> Any:
    """Inverse of :func:`flatten_graph` (from a FlatState, leaf list or State)."""
    from ramie._src.core.state import FlatState

    if isinstance(state, FlatState):
        leaves = state.leaves
    elif isinstance(state, Mapping):
        return merge(graphdef, state)
    else:
        leaves = list(state)
    if len(leaves) != graphdef.num_leaves:
        raise GraphStructureError(
            f"ramie.unflatten(): the GraphDef expects {graphdef.num_leaves} leaves, "
            f"got {len(leaves)}"
        )
    return unflatten(graphdef, leaves)


_ = (Pytree, bump, links, iter_flat, MISSING)
