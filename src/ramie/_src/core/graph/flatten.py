"""Flatten an object graph into (GraphDef, leaves) and rebuild it.

``flatten`` walks the graph depth-first, children in sorted key order, and
returns the GraphDef plus three parallel outputs: the path and the leaf
(a Variable or a bare array) of every state leaf, and the list of all objects
and Variables by index. Shared objects are visited once; later references
become ``('R', index)``. Both walks are linear in the size of the graph.

``unflatten`` rebuilds a graph from a GraphDef and the leaves in the same order.
``collect_leaves`` turns a nested State into that order, checking that every
leaf is present and nothing is left over. No public names live here; see
``api.py``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterator
from functools import partial
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import jax
import numpy as np

from ramie._src.core import links
from ramie._src.core.graph import registry
from ramie._src.core.graph.defs import (
    ARR,
    ARRAY_DEF,
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
from ramie._src.core.loading import canonicalize
from ramie._src.core.pytree import _LINK_SET as _OBJ_LINK_SET
from ramie._src.core.pytree import _VER_SET, Pytree, data_marks, is_data_number
from ramie._src.core.sentinels import MISSING
from ramie._src.core.state import GraphState, State, _key_order, sorted_keys
from ramie._src.core.tracing import current_trace
from ramie._src.core.tracked import TrackedDict, TrackedList
from ramie._src.core.variables import (
    Variable,
    _get_link,
    _set_link,
    _set_meta,
    _set_raw,
    _set_trace,
    _set_watch,
    freeze_metadata,
    hashable,
    new_variable,
    thaw_metadata,
)

_SIMPLE = registry._SIMPLE_STATIC_TYPES  # pyright: ignore[reportPrivateUsage]


class Flat:
    """Result of :func:`flatten`.

    Attributes:
        graphdef: The GraphDef.
        paths: Path of each state leaf, in leaf order (empty when ``flatten``
            built ``state`` instead).
        leaves: The state leaves (Variables and bare arrays).
        objects: Every graph object and Variable, by index.
        ref_index: ``id(object) -> index`` for every object and Variable.
        containers: With ``track_containers``, ``(container, child_ids)`` for
            every untracked mutable container (a plain list or dict, a generic
            pytree node), so later in-place mutations can be detected.
        tracked: With ``track_containers``, the TrackedList/TrackedDict
            containers (they carry their own version counter).
        state: With ``state_cls``, the leaves nested into a State of that class.
    """

    __slots__ = (
        "graphdef",
        "paths",
        "leaves",
        "objects",
        "ref_index",
        "containers",
        "tracked",
        "state",
    )

    def __init__(
        self, graphdef, paths, leaves, objects, ref_index, containers, tracked, state
    ):
        self.graphdef = graphdef
        self.paths = paths
        self.leaves = leaves
        self.objects = objects
        self.ref_index = ref_index
        self.containers = containers
        self.tracked = tracked
        self.state = state


def _sorted_items(d: dict) -> list:
    try:
        return sorted(d.items())
    except TypeError:
        return sorted(d.items(), key=lambda kv: _key_order(kv[0]))


def flatten(
    node: Any,
    *,
    with_paths: bool = True,
    ref_index: dict[int, int] | None = None,
    objects: list | None = None,
    track_containers: bool = False,
    state_cls: type | None = None,
) -> Flat:
    """Flatten ``node``'s graph. See the module docstring.

    ``ref_index``/``objects`` may be pre-seeded with objects from another
    flatten, so that references to them become ``('R', index)`` (used by
    transforms to express outputs that point into their inputs). With
    ``state_cls`` (``State`` or a subclass) the leaves are nested into
    ``Flat.state`` during the walk instead of being listed with their paths
    (``with_paths`` is accepted for compatibility and has no effect).
    """
    if ref_index is None:
        ref_index = {}
    if objects is None:
        objects = []
    paths: list[tuple] = []
    leaves: list[Any] = []
    containers: list[tuple[Any, tuple]] = []
    tracked: list[Any] = []
    kinds = registry._cache  # pyright: ignore[reportPrivateUsage]
    setitem = dict.__setitem__
    if state_cls is not None:
        new_state = _state_maker(state_cls)
        root_state = new_state()
    else:
        new_state = root_state = None

    # ``sd`` is the State that this node's leaves go into, or None when
    # recording paths; ``sub`` walks one child of a container node.
    def walk(value: Any, path: tuple, sd: Any) -> tuple:
        k = kinds.get(type(value)) or kind_of(value)
        if k is OBJECT:
            i = id(value)
            idx = ref_index.get(i)
            if idx is not None:
                return (REF, idx)
            idx = ref_index[i] = len(objects)
            objects.append(value)
            attrs = []
            marks = data_marks(value)
            for key, child in value._graph_children():
                t = type(child)
                ck = kinds.get(t)
                if ck is STATIC:
                    if marks is not None and is_data_number(marks, key, child):
                        # `self.n = ramie.data(0)`: a leaf, like an array
                        if sd is None:
                            paths.append(path + (key,))
                        else:
                            setitem(sd, key, child)
                        leaves.append(child)
                        attrs.append((key, ARRAY_DEF))
                        continue
                    attrs.append(
                        (key, (STC, child if t in _SIMPLE else hashable(child)))
                    )
                elif ck is VARIABLE:
                    # a layer's Variables, handled here rather than by a call
                    # (the same steps as the VARIABLE branch below)
                    i = id(child)
                    cidx = ref_index.get(i)
                    if cidx is not None:
                        attrs.append((key, (REF, cidx)))
                        continue
                    cidx = ref_index[i] = len(objects)
                    objects.append(child)
                    if sd is None:
                        paths.append(path + (key,))
                    else:
                        setitem(sd, key, child)
                    leaves.append(child)
                    meta = child._meta
                    attrs.append(
                        (key, (VAR, t, cidx, freeze_metadata(meta) if meta else ()))
                    )
                elif sd is None:
                    attrs.append((key, walk(child, path + (key,), None)))
                else:
                    attrs.append((key, sub(child, path, key, sd)))
            return (OBJ, type(value), idx, tuple(attrs))
        if k is VARIABLE:
            i = id(value)
            idx = ref_index.get(i)
            if idx is not None:
                return (REF, idx)
            idx = ref_index[i] = len(objects)
            objects.append(value)
            if sd is None:
                paths.append(path)
            leaves.append(value)
            meta = value._meta
            return (VAR, type(value), idx, freeze_metadata(meta) if meta else ())
        if k is STATIC:
            return (STC, hashable(value))
        if k is ARRAY:
            if sd is None:
                paths.append(path)
            leaves.append(value)
            return ARRAY_DEF
        if k is TUPLE:
            if all(type(x) in _SIMPLE for x in value):
                return (STC, value)
            return (TUP, tuple([(j, sub(c, path, j, sd)) for j, c in enumerate(value)]))
        if k is LIST:
            if track_containers:
                if type(value) is TrackedList:
                    tracked.append(value)
                else:
                    containers.append((value, tuple(map(id, value))))
            return (LST, tuple([(j, sub(c, path, j, sd)) for j, c in enumerate(value)]))
        if k is DICT:
            items = _sorted_items(value)
            if track_containers:
                if type(value) is TrackedDict:
                    tracked.append(value)
                else:
                    containers.append((value, tuple((key, id(c)) for key, c in items)))
            return (DCT, tuple([(key, sub(c, path, key, sd)) for key, c in items]))
        if k is NAMEDTUPLE:
            return (
                NTP,
                type(value),
                tuple(
                    [
                        (key, sub(c, path, key, sd))
                        for key, c in zip(value._fields, value)
                    ]
                ),
            )
        items, treedef = registry.one_level(value)
        if track_containers:
            containers.append((value, tuple(id(c) for _, c in items)))
        return (PTR, treedef, tuple([(key, sub(c, path, key, sd)) for key, c in items]))

    def sub(child: Any, path: tuple, key: Hashable, sd: Any) -> tuple:
        if sd is None:
            return walk(child, path + (key,), None)
        csd = new_state()
        cdef = walk(child, path + (key,), csd)
        tag = cdef[0]
        if tag is VAR or tag is ARR:  # a new leaf (a shared one is a REF)
            setitem(sd, key, child)
        elif csd:
            setitem(sd, key, csd)
        return cdef

    try:
        if root_state is not None and kinds.get(type(node)) is VARIABLE:
            raise TypeError("flatten(state_cls=...) needs a graph, not a bare Variable")
        root = walk(node, (), root_state)
    finally:
        # break the closures' reference cycles (walk and sub call each other)
        walk = sub = None  # type: ignore[assignment]
    return Flat(
        GraphDef(root, len(leaves), len(objects)),
        paths,
        leaves,
        objects,
        ref_index,
        containers,
        tracked,
        root_state,
    )


def _state_maker(cls: type) -> Callable[[], Any]:
    """A function making empty instances of a State class, bypassing __init__."""
    if hasattr(cls, "_graphdef"):  # a GraphState: its graphdef slot starts empty

        def make() -> Any:
            s = cls.__new__(cls)
            object.__setattr__(s, "_graphdef", None)
            return s

        return make
    return partial(cls.__new__, cls)


def container_unchanged(container: Any, snapshot: tuple) -> bool:
    """Whether a container recorded by ``flatten(track_containers=True)`` is
    unchanged.
    """
    t = type(container)
    if t is list:
        return tuple(map(id, container)) == snapshot
    if t is dict:
        return tuple((k, id(c)) for k, c in _sorted_items(container)) == snapshot
    if t is State or t is GraphState:  # optimizer states: the common case
        return tuple([id(container[k]) for k in sorted_keys(container)]) == snapshot
    # one_level's order without its keys and treedef (a third of the cost)
    children, _ = jax.tree_util.flatten_one_level(container)
    return tuple(map(id, children)) == snapshot


# ---------------------------------------------------------------- unflatten
def unflatten(
    graphdef: GraphDef,
    leaves: list[Any],
    *,
    index_ref: dict[int, Any] | None = None,
    make_variable: Callable[[tuple, Any], Variable] | None = None,
) -> Any:
    """Rebuild a graph from ``graphdef`` and its leaves in flatten order.

    Leaves that are Variables are used as they are (the graph then holds
    those Variable objects); bare values become new Variables of the recorded
    type and metadata (``make_variable(var_def, value)`` overrides this).
    ``index_ref`` receives the rebuilt objects by index.
    """
    if index_ref is None:
        index_ref = {}
    it = iter(leaves)
    return _build(graphdef.root, it, index_ref, make_variable)


def _make_var(defn: tuple, leaf: Any, make_variable: Callable | None) -> Variable:
    if isinstance(leaf, Variable):
        return leaf
    if make_variable is not None:
        return make_variable(defn, leaf)
    return new_variable(defn[1], leaf, thaw_metadata(defn[3]) if defn[3] else {})


_rebuild_kind: dict[type, bool] = {}


def _set_dict(obj: Any, children: dict) -> None:
    object.__setattr__(obj, "__dict__", children)


def _default_rebuild(cls: type) -> bool:
    """Whether ``cls`` keeps its children in ``__dict__`` (the default)."""
    v = _rebuild_kind.get(cls)
    if v is None:
        v = _rebuild_kind[cls] = cls._graph_rebuild is Pytree._graph_rebuild
    return v


def _link(child: Any, link: tuple) -> None:
    if isinstance(child, Variable):
        _set_link(child, link)
    elif isinstance(child, Pytree):
        _OBJ_LINK_SET(child, link)


def _build(
    defn: tuple,
    it: Iterator[Any],
    index_ref: dict[int, Any],
    make_variable: Callable | None,
) -> Any:
    tag = defn[0]
    if tag == OBJ:
        cls = defn[1]
        obj = object.__new__(cls)
        _VER_SET(obj, 0)
        index_ref[defn[2]] = obj
        children: dict[Hashable, Any] = {}
        pref = None
        for key, cdef in defn[3]:
            ct = cdef[0]
            if ct == STC:
                v = cdef[1]
                children[key] = v.value if type(v) is _HASHED else v
                continue
            if ct == ARR:
                children[key] = next(it)
                continue
            if pref is None:
                pref = links.parent_ref(obj)
            if ct == VAR:
                v = _make_var(cdef, next(it), make_variable)
                index_ref[cdef[2]] = v
                if isinstance(v, Variable):  # make_variable may return a value
                    _set_link(v, (pref, (key,)))
            elif ct == REF:
                v = index_ref[cdef[1]]
                _link(v, (pref, (key,)))
            elif ct == OBJ:
                v = _build(cdef, it, index_ref, make_variable)
                _OBJ_LINK_SET(v, (pref, (key,)))
            else:
                v = _build(cdef, it, index_ref, make_variable)
                links.link_children(obj, key, v, pref)
            children[key] = v
        if _default_rebuild(cls):
            _set_dict(obj, children)
        else:
            obj._graph_rebuild(children)
        return obj
    if tag == VAR:
        v = _make_var(defn, next(it), make_variable)
        index_ref[defn[2]] = v
        return v
    if tag == REF:
        return index_ref[defn[1]]
    if tag == ARR:
        return next(it)
    if tag == STC:
        v = defn[1]
        return v.value if type(v) is _HASHED else v
    if tag == LST:
        items = [_build(c, it, index_ref, make_variable) for _, c in defn[1]]
        return TrackedList(items) if _holds_data(defn[1]) else items
    if tag == TUP:
        return tuple([_build(c, it, index_ref, make_variable) for _, c in defn[1]])
    if tag == DCT:
        d = {k: _build(c, it, index_ref, make_variable) for k, c in defn[1]}
        return TrackedDict(d) if _holds_data(defn[1]) else d
    if tag == NTP:
        return defn[1](*[_build(c, it, index_ref, make_variable) for _, c in defn[2]])
    if tag == PTR:
        return defn[1].unflatten(
            [_build(c, it, index_ref, make_variable) for _, c in defn[2]]
        )
    raise AssertionError(f"unknown graph definition tag {tag!r}")


def unflatten_state(
    graphdef: GraphDef,
    state: Any,
    *,
    copy: bool = False,
    index_ref: dict[int, Any] | None = None,
) -> tuple[Any, list, list]:
    """Rebuild a graph reading its leaves from a nested State, in one pass.

    Returns ``(node, missing_paths, unexpected_paths)``; when either list is
    non-empty the node is incomplete and must be discarded. ``index_ref`` may
    hold objects rebuilt earlier (references to them resolve).
    """
    # A MergeContext passes its index_ref to resolve references across calls.
    record_all = index_ref is not None
    # Layers are built optimistically and checked together at the end (cheaper
    # than one by one), except where their Variables must be indexed at once.
    defer = not copy and not record_all
    deferred: list = []  # (layer State, plan, built layer, parent path, key)
    if index_ref is None:
        index_ref = {}
    missing: list[tuple] = []
    unexpected: list[tuple] = []
    trace = current_trace()

    def leaf_of(sub: Any, key: Hashable, path: tuple) -> Any:
        if sub is not None:
            v = sub.get(key, MISSING)
            if v is MISSING and type(key) is int:
                v = sub.get(str(key), MISSING)
            if v is not MISSING and not (
                isinstance(v, dict) and not isinstance(v, Variable)
            ):
                return v
        missing.append(path + (key,))
        return None

    def var_of(cdef: tuple, leaf: Any) -> Variable:
        if isinstance(leaf, Variable):
            if copy:
                return _fast_var(type(leaf), leaf._raw, dict(leaf._meta), trace)
            return leaf
        if isinstance(leaf, _NUMPY):
            leaf = _canonical_numpy(leaf)
        return _fast_var(
            cdef[1], leaf, thaw_metadata(cdef[3]) if cdef[3] else {}, trace
        )

    def check_unexpected(sub: Any, attrs: tuple, used: int, path: tuple) -> None:
        if sub is not None and used != len(sub):
            known = {key for key, cdef in attrs if cdef[0] not in (STC, REF)}
            known |= {str(k) for k in known if isinstance(k, int)}
            for k in sorted_keys(sub):
                if k not in known:
                    _all_paths(sub[k], path + (k,), unexpected)

    get_link = _get_link
    osa = object.__setattr__

    def build_obj(plan: tuple, sub: Any, path: tuple, obj: Any = None) -> Any:
        cls, idx, statics, var_keys, other_keys, default_rebuild, defn = plan[:7]
        simple_children = plan[10]
        if obj is None:
            obj = object.__new__(cls)
        index_ref[idx] = obj
        children = statics.copy()
        used = 0
        pref = None
        if var_keys:
            sget = sub.get if sub is not None else None
            for key, vcls, vidx, vdef in var_keys:
                leaf = sget(key, MISSING) if sget is not None else MISSING
                if type(leaf) is vcls and not copy:
                    v = leaf  # the common case: the State's own Variable
                    used += 1
                    if get_link(v) is None:
                        if pref is None:
                            pref = links.parent_ref(obj)
                        _set_link(v, (pref, (key,)))
                else:
                    if leaf is MISSING or (
                        isinstance(leaf, dict) and not isinstance(leaf, Variable)
                    ):
                        leaf = leaf_of(sub, key, path)
                    used += leaf is not None
                    v = var_of(vdef, leaf)
                    if pref is None:
                        pref = links.parent_ref(obj)
                    _set_link(v, (pref, (key,)))
                index_ref[vidx] = v
                children[key] = v
        if simple_children:
            if pref is None:
                pref = links.parent_ref(obj)
            bulk = plan[11]
            if (
                bulk is not None
                and not copy
                and not record_all
                and sub is not None
                and _bulk_children(bulk, sub, pref, children)
            ):
                used += len(bulk[0])
                simple_children = ()
            # The most common node, an object holding only Variables (a layer),
            # whose State entry is exactly those Variables, already linked to a
            # parent, is built inline: no call, no recursion. With ``defer`` the
            # entries are only collected here and checked all at once, by C
            # loops, at the end (see _fast_layers_valid).
            sget = sub.get if sub is not None else None
            for key, cplan, ktup in simple_children:
                csub = sget(key) if sget is not None else None
                if csub is None and sget is not None and type(key) is int:
                    csub = sget(str(key))
                if csub is not None:
                    used += 1
                    if defer and not cplan[9] and isinstance(csub, dict):
                        fits = True
                    elif not copy and tuple(csub) == cplan[8]:
                        # Reading the link both checks that every value is a
                        # Variable (the slot raises TypeError on anything else)
                        # and that it is linked. Any Variable type is used as
                        # is, as on the general path.
                        try:
                            fits = None not in map(get_link, csub.values())
                        except TypeError:
                            fits = False
                    else:
                        fits = False
                    if fits:
                        v = object.__new__(cplan[0])
                        if record_all or cplan[9]:
                            index_ref[cplan[1]] = v
                            for vkey, _, vidx, _ in cplan[3]:
                                index_ref[vidx] = csub[vkey]
                        osa(v, "__dict__", {**cplan[2], **csub})
                        _OBJ_LINK_SET(v, (pref, ktup))
                        children[key] = v
                        if defer:
                            deferred.append((csub, cplan, v, path, ktup))
                        continue
                v = build_obj(cplan, csub, path + ktup)
                _OBJ_LINK_SET(v, (pref, ktup))
                children[key] = v
        for key, cdef, ct, ktup in other_keys:
            if pref is None:
                pref = links.parent_ref(obj)
            if ct == REF:
                v = index_ref[cdef[1]]
                _link(v, (pref, (key,)))
            elif ct == ARR:
                leaf = leaf_of(sub, key, path)
                used += leaf is not None
                v = leaf._raw if isinstance(leaf, Variable) else leaf
                if isinstance(v, _NUMPY):
                    v = _canonical_numpy(v)
            else:
                csub = sub.get(key) if sub is not None else None
                if csub is None and sub is not None and type(key) is int:
                    csub = sub.get(str(key))
                used += csub is not None
                if ct == OBJ:
                    v = build_obj(cdef, csub, path + ktup)  # cdef is the child's plan
                    _OBJ_LINK_SET(v, (pref, ktup))
                else:
                    v = build(cdef, csub, path + (key,))
                    links.link_children(obj, key, v, pref)
            children[key] = v
        if sub is not None and used != len(sub):
            check_unexpected(sub, defn[3], used, path)
        if default_rebuild:
            osa(obj, "__dict__", children)
        else:
            obj._graph_rebuild(children)
        return obj

    def build(defn: tuple, sub: Any, path: tuple) -> Any:
        tag = defn[0]
        if tag == OBJ:
            return build_obj(_plan_of(graphdef, defn), sub, path)
        if tag == VAR:  # a bare Variable as the root
            v = var_of(defn, sub)
            index_ref[defn[2]] = v
            return v
        if tag == REF:
            return index_ref[defn[1]]
        if tag == STC:
            v = defn[1]
            return v.value if type(v) is _HASHED else v
        if tag == ARR:
            return sub
        attrs = defn[1] if tag in (LST, TUP, DCT) else defn[2]
        items = []
        used = 0
        for key, cdef in attrs:
            ct = cdef[0]
            if ct == VAR:
                leaf = leaf_of(sub, key, path)
                used += leaf is not None
                v = var_of(cdef, leaf)
                index_ref[cdef[2]] = v
            elif ct == ARR:
                leaf = leaf_of(sub, key, path)
                used += leaf is not None
                v = leaf._raw if isinstance(leaf, Variable) else leaf
                if isinstance(v, _NUMPY):
                    v = _canonical_numpy(v)
            elif ct == STC or ct == REF:
                v = build(cdef, None, path)
            else:
                csub = sub.get(key) if sub is not None else None
                if csub is None and sub is not None and type(key) is int:
                    csub = sub.get(str(key))
                used += csub is not None
                v = build(cdef, csub, path + (key,))
            items.append(v)
        check_unexpected(sub, attrs, used, path)
        if tag == LST:
            return TrackedList(items) if _holds_data(attrs) else items
        if tag == TUP:
            return tuple(items)
        if tag == DCT:
            d = dict(zip((k for k, _ in attrs), items))
            return TrackedDict(d) if _holds_data(attrs) else d
        if tag == NTP:
            return defn[1](*items)
        return defn[1].unflatten(items)

    try:
        node = build(graphdef.root, state, ())
        if deferred and not _fast_layers_valid(deferred):
            # Some layer's State entry did not fit (a missing or extra key, a
            # raw array, an unlinked Variable): rebuild those layers in place,
            # checking each, which also reports what is missing or unexpected.
            defer = False
            for csub, cplan, v, lpath, ktup in deferred:
                if not _fast_layers_valid([(csub, cplan)]):
                    build_obj(cplan, csub, lpath + ktup, v)
    finally:
        # build and build_obj refer to each other through their closures; break
        # that cycle so the rebuilt graph is freed by reference counting alone
        # instead of waiting for (and costing) a cyclic garbage collection.
        build = build_obj = None  # type: ignore[assignment]
    return node, missing, unexpected


def _plan_of(graphdef: GraphDef, defn: tuple) -> tuple:
    """The merge plan of an object node, computed once per GraphDef."""
    plans = graphdef._plan
    if plans is None:
        plans = graphdef._plan = {"refs": _ref_targets(graphdef.root, set())}
    plan = plans.get(id(defn))
    if plan is None:
        plan = plans[id(defn)] = _object_plan(defn, plans["refs"])
    return plan


def _object_plan(defn: tuple, refs: set[int]) -> tuple:
    """Pre-sorted instructions for rebuilding one object node and its sub-objects.

    Variables come first, then sub-objects that hold only Variables, then the
    other sub-nodes, arrays and references in key order;
    references only ever point to nodes defined earlier in depth-first order,
    so this order resolves them all. Sub-object entries hold their own plans.
    """
    cls, idx, attrs = defn[1], defn[2], defn[3]
    statics: dict[Hashable, Any] = {}
    var_keys = []
    other_keys = []
    simple_children = []
    for key, cdef in attrs:
        ct = cdef[0]
        if ct == STC:
            v = cdef[1]
            statics[key] = v.value if type(v) is _HASHED else v
        elif ct == VAR:
            var_keys.append((key, cdef[1], cdef[2], cdef))
        elif ct == OBJ:
            cplan = _object_plan(cdef, refs)
            if cplan[7]:
                simple_children.append((key, cplan, (key,)))
            else:
                other_keys.append((key, cplan, ct, (key,)))
        else:
            other_keys.append((key, cdef, ct, (key,)))
    rebuild = _default_rebuild(cls)
    simple = (
        rebuild and not other_keys and not simple_children
    )  # only Variables and statics
    return (
        cls,
        idx,
        statics,
        tuple(var_keys),
        tuple(other_keys),
        rebuild,
        defn,
        simple,
        tuple(k for k, *_ in var_keys),  # 8: the State keys a simple node expects
        idx in refs
        or any(i in refs for _, _, i, _ in var_keys),  # 9: referenced elsewhere
        tuple(simple_children),  # 10: sub-objects holding only Variables, built inline
        _bulk_plan(simple_children),  # 11: or built all at once (see _bulk_children)
    )


_BULK_MIN = 8  # fewer sub-layers than this are cheaper to build one by one


def _bulk_plan(simple_children: list) -> tuple | None:
    """Instructions for building many variable-only sub-layers at once.

    Only for a node with at least ``_BULK_MIN`` such children, none of them
    referenced from elsewhere in the graph.
    """
    if len(simple_children) < _BULK_MIN or any(
        cplan[9] for _, cplan, _ in simple_children
    ):
        return None
    statics = tuple(cplan[2] for _, cplan, _ in simple_children)
    return (
        tuple(key for key, _, _ in simple_children),
        tuple(cplan[0] for _, cplan, _ in simple_children),
        tuple(ktup for _, _, ktup in simple_children),
        [cplan[8] for _, cplan, _ in simple_children],
        statics if any(statics) else None,
    )


def _bulk_children(bulk: tuple, sub: Any, pref: Any, children: dict) -> bool:
    """Build a node's variable-only sub-layers with C-level loops.

    Succeeds (and fills ``children``) only when every sub-layer's State entry
    is a dict holding exactly the layer's keys, in order, and only Variables
    linked to a parent; otherwise builds nothing and returns False so the
    caller takes the checked path, which also reports what does not fit.
    """
    keys, classes, ktups, expected, statics = bulk
    try:
        subs = list(map(sub.get, keys))
    except AttributeError:  # not a mapping
        return False
    if not _layer_entries_fit(subs, expected):
        return False
    objs = list(map(_NEW, classes))
    if statics is None:
        dicts = map(dict.copy, subs)
    else:  # each layer's static attributes first, then its Variables
        dicts = list(map(dict.copy, statics))
        _consume(map(dict.update, dicts, subs))
    _consume(map(_OSA, objs, repeat("__dict__"), dicts))
    _consume(map(_OBJ_LINK_SET, objs, zip(repeat(pref), ktups)))
    children.update(zip(keys, objs))
    return True


_NEW = object.__new__
_OSA = object.__setattr__
_consume = deque(maxlen=0).extend


def _fast_layers_valid(entries: list) -> bool:
    """Whether every layer State that merge used unchecked really fit its layer.

    ``entries`` are ``(layer State, plan, ...)`` tuples; see _layer_entries_fit.
    """
    return _layer_entries_fit(list(map(_first, entries)), [e[1][8] for e in entries])


def _layer_entries_fit(subs: list, expected: list) -> bool:
    """Whether each layer State in ``subs`` is a dict holding exactly the keys
    in ``expected`` (in order) and only Variables linked to a parent.

    C-level loops check all layers in one pass.
    """
    try:
        return list(map(tuple, subs)) == expected and None not in map(
            _get_link, chain.from_iterable(map(dict.values, subs))
        )
    except TypeError:  # a missing entry, a value that is not a Variable
        return False


_first = itemgetter(0)


def _ref_targets(defn: tuple, out: set[int]) -> set[int]:
    """Indices of the nodes a definition refers back to (shared nodes)."""
    tag = defn[0]
    if tag == REF:
        out.add(defn[1])
    elif tag == OBJ:
        for _, c in defn[3]:
            _ref_targets(c, out)
    elif tag in (LST, TUP, DCT):
        for _, c in defn[1]:
            _ref_targets(c, out)
    elif tag in (NTP, PTR):
        for _, c in defn[2]:
            _ref_targets(c, out)
    return out


def _fast_var(cls: type, raw: Any, meta: dict, trace: Any) -> Variable:
    v = object.__new__(cls)
    _set_raw(v, raw)
    _set_meta(v, meta)
    _set_trace(v, trace)
    _set_link(v, None)
    _set_watch(v, None)
    return v


from ramie._src.core.variables import _Hashed as _HASHED  # noqa: E402

_NUMPY = (np.ndarray, np.generic)


def _canonical_numpy(x: Any) -> Any:
    """The loading policy for raw NumPy leaves given to ``merge``.

    A 64-bit array is canonicalised as JAX does (float64 -> float32 when x64
    is off); other NumPy arrays are kept as they are.
    """
    if jax.dtypes.canonicalize_dtype(x.dtype) != x.dtype:
        return canonicalize(x)
    return x


def _holds_data(attrs: tuple) -> bool:
    """Whether a container definition has any non-static child."""
    for _, c in attrs:
        if c[0] != STC:
            return True
    return False


# ------------------------------------------------------- state <-> leaves
def collect_leaves(
    graphdef: GraphDef, state: Any
) -> tuple[list[Any], list[tuple], list[tuple]]:
    """Leaves of a nested State in ``graphdef``'s order.

    Returns ``(leaves, missing_paths, unexpected_paths)``; a missing leaf is
    represented by ``MISSING`` in ``leaves``.
    """
    leaves: list[Any] = []
    missing: list[tuple] = []
    unexpected: list[tuple] = []
    _collect(graphdef.root, state, (), leaves, missing, unexpected, True)
    return leaves, missing, unexpected


def _lookup(sub: Any, key: Hashable) -> Any:
    if sub is None:
        return MISSING
    v = sub.get(key, MISSING)
    if v is MISSING and isinstance(key, int):
        v = sub.get(str(key), MISSING)
    return v


def _collect(
    defn: tuple,
    sub: Any,
    path: tuple,
    leaves: list,
    missing: list,
    unexpected: list,
    is_root: bool,
) -> None:
    tag = defn[0]
    if tag == VAR or tag == ARR:  # a root that is itself a leaf
        leaves.append(sub)
        return
    attrs = (
        defn[3]
        if tag == OBJ
        else defn[1]
        if tag in (LST, TUP, DCT)
        else defn[2]
        if tag in (NTP, PTR)
        else ()
    )
    used = 0
    for key, cdef in attrs:
        ct = cdef[0]
        if ct == STC or ct == REF:
            continue
        v = _lookup(sub, key)
        if ct == VAR or ct == ARR:
            if v is MISSING or isinstance(v, dict) and not isinstance(v, Variable):
                missing.append(path + (key,))
                leaves.append(MISSING)
            else:
                used += 1
                leaves.append(v)
        else:
            if v is not MISSING:
                used += 1
            _collect(
                cdef,
                None if v is MISSING else v,
                path + (key,),
                leaves,
                missing,
                unexpected,
                False,
            )
    if sub is not None and used != len(sub):
        known = {key for key, cdef in attrs if cdef[0] not in (STC, REF)}
        known |= {str(k) for k in known if isinstance(k, int)}
        for k in sorted_keys(sub):
            if k not in known:
                _all_paths(sub[k], path + (k,), unexpected)


def _all_paths(v: Any, path: tuple, out: list) -> None:
    if isinstance(v, dict) and not isinstance(v, Variable):
        if not v:
            return
        for k in sorted_keys(v):
            _all_paths(v[k], path + (k,), out)
    else:
        out.append(path)


def to_state(paths: list[tuple], leaves: list[Any], cls: type = State) -> Any:
    """Nest parallel paths and leaves into a State (sub-mappings are States too).

    The one leaf of a bare Variable (path ``()``) is returned as it is, as
    Flax does for ``split(variable)``.
    """
    if len(paths) == 1 and paths[0] == ():
        return leaves[0]
    new = _state_maker(cls)
    setitem = dict.__setitem__
    root = new()
    nodes: dict[tuple, Any] = {(): root}  # the sub-State at each parent path
    last = None
    d = root
    for path, leaf in zip(paths, leaves):
        parent = path[:-1]
        if parent != last:  # leaves of one parent arrive together
            d = nodes.get(parent)
            if d is None:
                d = _sub_state(nodes, parent, new)
            last = parent
        setitem(d, path[-1], leaf)
    return root


def _sub_state(nodes: dict[tuple, Any], parent: tuple, new: Callable) -> Any:
    """The sub-State at ``parent``, created (with its own parents) if new."""
    d = nodes.get(parent)
    if d is None:
        up = _sub_state(nodes, parent[:-1], new)
        d = nodes[parent] = new()
        dict.__setitem__(up, parent[-1], d)
    return d


def _nest(d: dict, cls: type) -> Any:
    s = _state_maker(cls)()
    for k, v in d.items():
        dict.__setitem__(s, k, _nest(v, cls) if type(v) is dict else v)
    return s


def set_variable_link(var: Variable, link: Any) -> None:
    _set_link(var, link)


_ = (STATIC, PYTREE, NAMEDTUPLE, OBJECT)
