"""``ramie.jit``: ``jax.jit`` for functions that take and mutate modules.

The first call with a given set of graph objects flattens their graphs, traces
the function once per argument signature (as ``jax.jit`` does) and records a
cache *entry*: the list of the graphs' Variables in leaf order and the jitted
callable. Later calls with the same objects skip graph traversal entirely:

1. compute a key from the identity of the graph arguments (under a µs);
2. check the entry is still valid: the global structure epoch has not moved
   (or every object's version is unchanged), plain lists/dicts inside the
   graphs still hold the same children, and - only if some State anywhere
   was changed in place since (``EPOCH.states``) - the States inside the
   graphs (an Optimizer's ``opt_state``) still hold the same entries. When
   no epoch counter moved since the entry was last found valid and it has no
   plain containers, this is one comparison (``entry.stamp``);
3. read the Variables' values into one list, make one JAX dispatch;
4. write back only the Variables the function changed.

Which Variables changed is decided at trace time and travels in the output's
pytree structure, so it is right for every compiled signature. The static
part of the first trace's result is kept on the side; traces that agree with
it return no static node, so the common call unflattens only arrays. A
structural change made inside the function (a new attribute, a replaced
sub-module) is applied to the caller's objects and invalidates the entry.

Steps 1-4 run inline in ``JitWrapped.__call__`` for entries without ref/hijax
cells: a cached call runs two Python functions (``__call__`` and the trace
check); the rest is C calls.
"""

from __future__ import annotations

import functools
import inspect
import operator
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import numpy as np

from ramie._src.core.epoch import EPOCH
from ramie._src.core.graph import registry
from ramie._src.core.graph.flatten import container_unchanged, flatten
from ramie._src.core.graph.registry import ARRAY, OBJECT, VARIABLE
from ramie._src.core.modes import resolve_graph
from ramie._src.core.pytree import version_of
from ramie._src.core.sentinels import MISSING
from ramie._src.core.state import GraphState, State
from ramie._src.core.tracing import current_trace
from ramie._src.core.variable_modes import REFS_USED, _RefType, read_cell, write_cell
from ramie._src.core.variables import Variable, _get_raw, _set_raw, hashable
from ramie._src.transforms import lifting
from ramie._src.transforms.jit_support import (
    _constrain_outputs_of,
    _mark_refs,
    _per_variable,
    _restore,
    _restore_refs,
    _snapshot,
)
from ramie._src.transforms.lifting import Extracted, is_node, raw
from ramie._src.transforms.simple import check_prefix, checked_inner, is_simple

# Counters that tests use to assert the fast path does no extra work.
STATS = {
    "traces": 0, "flattens": 0, "fast_calls": 0, "slow_calls": 0, "state_checks": 0,
}  # fmt: skip

_MAX_ENTRIES = 32
_STATE_TYPES = (State, GraphState)
_NODE, _LEAF, _OTHER = 0, 1, 2
_type_kinds: dict[type, int] = {}
_NO_KW: dict = {}  # never mutated: the keyword arguments of most calls


def _arg_kind(t: type, value: Any) -> int:
    k = _type_kinds.get(t)
    if k is None:
        gk = registry.kind_of(value)
        if gk is OBJECT or gk is VARIABLE:
            k = _NODE
        elif gk is ARRAY or t in (int, float, bool, complex, type(None)):
            k = _LEAF
        else:
            k = _OTHER
        _type_kinds[t] = k
    return k


def _contains_node(x: Any, depth: int = 0) -> bool:
    t = type(x)
    if t in (list, tuple):
        return any(_contains_node(v, depth + 1) for v in x)
    if t is dict:
        return any(_contains_node(v, depth + 1) for v in x.values())
    k = _arg_kind(t, x)
    if k == _NODE:
        return True
    if k == _LEAF or depth > 32:
        return False
    for leaf in jax.tree_util.tree_leaves(x, is_leaf=is_node):
        if is_node(leaf):
            return True
    return False


def _as_tuple(x: int | Sequence[int] | None) -> tuple[int, ...]:
    if x is None:
        return ()
    if isinstance(x, int):
        return (x,)
    return tuple(x)


def _names(x: str | Sequence[str] | None) -> tuple[str, ...]:
    if x is None:
        return ()
    if isinstance(x, str):
        return (x,)
    return tuple(x)


class _Static:
    """Hashable description of one call signature's graph structure."""

    __slots__ = ("parts", "_hash")

    def __init__(self, *parts: Any):
        self.parts = parts
        self._hash = hash(parts)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (
            isinstance(other, _Static)
            and self._hash == other._hash
            and self.parts == other.parts
        )


class _Entry:
    """A cached call path for one set of graph arguments (see module docstring)."""

    __slots__ = (
        "roots", "ext", "vars", "objs", "vers", "containers", "epoch", "meta",
        "trace", "jitted", "dyn_pos", "dyn_kw", "targets", "fast", "donated",
        "cells", "states", "states_epoch", "get_dyn", "last_idx", "last_targets",
        "first", "plain", "stamp", "quick",
    )  # fmt: skip

    def valid(self) -> bool:
        if self.epoch != EPOCH.value:
            for obj, ver in zip(self.objs, self.vers):
                if getattr(obj, "_ramie_ver", 0) != ver:
                    return False
            self.epoch = EPOCH.value
        if self.meta != EPOCH.meta:
            flat = flatten(self.ext.nodes)
            STATS["flattens"] += 1
            if flat.graphdef != self.ext.flat.graphdef:
                return False
            self.meta = EPOCH.meta
        for unchanged, c, snap in self.containers:
            if not unchanged(c, snap):
                return False
        if self.states_epoch != EPOCH.states:
            STATS["state_checks"] += 1
            for c, keys, ids in self.states:
                if tuple(dict.keys(c)) != keys or tuple(map(id, dict.values(c))) != ids:
                    return False
            self.states_epoch = EPOCH.states
        self.stamp = EPOCH.value + EPOCH.meta + EPOCH.states
        return True


def _getter(positions: tuple[int, ...]) -> Callable[[tuple], tuple]:
    """``args -> tuple(args[i] for i in positions)`` at C speed."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    if positions:  # args[i:i + 1], a one-tuple
        return operator.itemgetter(slice(positions[0], positions[0] + 1))
    return operator.itemgetter(slice(0, 0))


def _split_containers(containers: list) -> tuple[list, list]:
    """The containers of the arguments: ``(checks, states)``.

    ``checks`` holds ``(unchanged, container, snapshot)`` for plain lists,
    dicts and other pytrees, compared on every call. ``states`` holds
    ``(state, keys, child_ids)`` for States (an Optimizer's ``opt_state``
    holds several): every in-place change of a State counts in
    ``EPOCH.states``, so these are compared only after some State changed.
    """
    checks, states = [], []
    for c, snap in containers:
        if type(c) in _STATE_TYPES:
            states.append((c, tuple(dict.keys(c)), tuple(map(id, dict.values(c)))))
        else:
            checks.append((container_unchanged, c, snap))
    return checks, states


class JitWrapped:
    """The callable returned by :func:`jit` (binds as a method, too)."""

    def __init__(
        self,
        fun: Callable[..., Any],
        *,
        in_shardings: Any = None,
        out_shardings: Any = None,
        static_argnums: int | Sequence[int] | None = None,
        static_argnames: str | Sequence[str] | None = None,
        donate_argnums: int | Sequence[int] | None = None,
        donate_argnames: str | Sequence[str] | None = None,
        keep_unused: bool = False,
        device: Any = None,
        backend: str | None = None,
        inline: bool = False,
        abstracted_axes: Any = None,
        graph_updates: bool = True,
    ):
        self.fun = fun
        # graph_updates=False: only Variable values come back, not structure
        self._keep_structure = not graph_updates
        functools.update_wrapper(self, fun, updated=())
        try:
            self._sig: inspect.Signature | None = inspect.signature(fun)
        except (TypeError, ValueError):
            self._sig = None
        self.static_argnums = _as_tuple(static_argnums)
        self.static_argnames = _names(static_argnames)
        self.donate_argnums = _as_tuple(donate_argnums)
        self.donate_argnames = _names(donate_argnames)
        self._resolve_names()
        self.in_shardings = in_shardings
        self.out_shardings = out_shardings
        # What jax.jit gets, and the function traced (see _per_variable).
        self._jax_out_shardings = out_shardings
        self._trace_fun = fun
        if _per_variable(out_shardings):
            self._jax_out_shardings = None
            self._trace_fun = _constrain_outputs_of(fun, out_shardings)
        self._jit_kwargs = {
            k: v
            for k, v in dict(
                keep_unused=keep_unused, device=device, backend=backend, inline=inline
            ).items()
            if v not in (None, False)
        }
        self._entries: dict[Hashable, _Entry] = {}
        self._compiled: dict[_Static, Any] = {}

    def _resolve_names(self) -> None:
        # static/donate given by name also apply to the same positional argument
        if self._sig is None:
            return
        params = list(self._sig.parameters)
        for name in self.static_argnames:
            if name in params and params.index(name) not in self.static_argnums:
                self.static_argnums += (params.index(name),)
        for i in self.static_argnums:
            if i < len(params) and params[i] not in self.static_argnames:
                self.static_argnames += (params[i],)
        for name in self.donate_argnames:
            if name in params and params.index(name) not in self.donate_argnums:
                self.donate_argnums += (params.index(name),)
        for i in self.donate_argnums:
            if i < len(params) and params[i] not in self.donate_argnames:
                self.donate_argnames += (params[i],)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return functools.partial(self, obj)

    def __repr__(self) -> str:
        return f"<ramie.jit of {getattr(self.fun, '__qualname__', self.fun)!r}>"

    # ----------------------------------------------------------- calling
    def _key(self, args: tuple, kwargs: dict) -> tuple | None:
        parts: list[Any] = []
        statics = self.static_argnums
        for i, a in enumerate(args):
            if statics and i in statics:
                parts.append(("s", _static(a, i, self)))
                continue
            k = _arg_kind(type(a), a)
            if k == _NODE:
                parts.append(id(a))
            elif k == _LEAF:
                parts.append(None)
            elif _contains_node(a):
                return None
            else:
                parts.append(None)
        if kwargs:
            for name in sorted(kwargs):
                a = kwargs[name]
                if name in self.static_argnames:
                    parts.append((name, "s", _static(a, name, self)))
                    continue
                k = _arg_kind(type(a), a)
                if k == _NODE:
                    parts.append((name, id(a)))
                elif k != _LEAF and _contains_node(a):
                    return None
                else:
                    parts.append((name,))
        return tuple(parts)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = None
        if not kwargs and not self.static_argnums:
            # The common step call: the key inline (as _key computes it).
            kinds = _type_kinds
            parts = []
            for a in args:
                k = kinds.get(type(a))
                if k == _NODE:
                    parts.append(id(a))
                elif k == _LEAF:
                    parts.append(None)
                else:
                    break
            else:
                key = tuple(parts)
        if key is None:
            key = self._key(args, kwargs)
            if key is None:
                return self._generic_call(args, kwargs)
        entry = self._entries.get(key)
        trace = current_trace()
        e = EPOCH
        if (
            entry is None
            or not entry.fast
            or entry.trace is not trace
            or not (
                # nothing changed anywhere since the entry was last found valid
                (entry.stamp == e.value + e.meta + e.states and not entry.containers)
                or entry.valid()
            )
        ):
            entry = self._build_entry(args, kwargs)
            if trace is None:
                # Entries built while tracing hold traced objects: use once.
                self._store(key, entry)
        if not entry.plain:
            return self._run(entry, args, kwargs)
        # The cached path, inline: one Python frame per call (see _run).
        STATS["fast_calls"] += 1
        dyn = entry.get_dyn(args)
        kw = {n: kwargs[n] for n in entry.dyn_kw} if entry.dyn_kw else _NO_KW
        try:
            out, state_vals = entry.jitted(list(map(_get_raw, entry.vars)), dyn, kw)
        except (RuntimeError, ValueError) as e:  # costs nothing unless raised
            err = _deleted_error(entry.vars, e)
            if err is None:
                raise
            raise err from e
        if type(state_vals) is list and entry.first[0] is entry.quick:
            deque(map(_set_raw, entry.last_targets, state_vals), maxlen=0)
            return out
        return self._finish(entry, out, state_vals, dyn, kw)

    def _store(self, key: Hashable, entry: _Entry) -> None:
        entries = self._entries
        entries.pop(key, None)
        if len(entries) >= _MAX_ENTRIES:
            entries.pop(next(iter(entries)))
        entries[key] = entry

    def _split_args(self, args: tuple, kwargs: dict) -> tuple:
        node_pos, dyn_pos, static_items = [], [], []
        for i, a in enumerate(args):
            if i in self.static_argnums:
                static_items.append((i, _static(a, i, self)))
            elif _arg_kind(type(a), a) == _NODE:
                node_pos.append(i)
            else:
                dyn_pos.append(i)
        node_kw, dyn_kw, static_kw = [], [], []
        for name in sorted(kwargs):
            a = kwargs[name]
            if name in self.static_argnames:
                static_kw.append((name, _static(a, name, self)))
            elif _arg_kind(type(a), a) == _NODE:
                node_kw.append(name)
            else:
                dyn_kw.append(name)
        return (
            tuple(node_pos), tuple(dyn_pos), tuple(static_items),
            tuple(node_kw), tuple(dyn_kw), tuple(static_kw),
        )  # fmt: skip

    def _build_entry(self, args: tuple, kwargs: dict) -> _Entry:
        node_pos, dyn_pos, static_items, node_kw, dyn_kw, static_kw = self._split_args(
            args, kwargs
        )
        nodes = tuple(args[i] for i in node_pos) + tuple(kwargs[n] for n in node_kw)
        flat = flatten(nodes, track_containers=True)
        STATS["flattens"] += 1
        ext = Extracted(None, None, nodes, flat, [raw(v) for v in flat.leaves], [])
        lifting.check_traces(ext, "ramie.jit")
        donated = self._donated_leaves(flat, node_pos, node_kw)
        static = _Static(
            "fast", node_pos, node_kw, static_items, static_kw, len(args), dyn_pos,
            dyn_kw, flat.graphdef, donated,
        )  # fmt: skip
        entry = _Entry()
        entry.roots = nodes
        entry.ext = ext
        entry.vars = flat.leaves
        entry.objs = [
            o for o in flat.objects if registry.kind_of(o) is OBJECT
        ] + flat.tracked
        entry.vers = [version_of(o) for o in entry.objs]
        entry.containers, entry.states = _split_containers(flat.containers)
        entry.states_epoch = EPOCH.states
        entry.epoch = EPOCH.value
        entry.stamp = EPOCH.value + EPOCH.meta + EPOCH.states
        entry.meta = EPOCH.meta
        entry.trace = current_trace()
        entry.fast = all(isinstance(v, Variable) for v in flat.leaves)
        entry.cells = (
            [i for i, v in enumerate(flat.leaves) if type(_raw_or(v)) is _RefType]
            if REFS_USED[0]
            else []
        )
        entry.dyn_pos = dyn_pos
        entry.get_dyn = _getter(dyn_pos)
        entry.dyn_kw = dyn_kw
        entry.targets = {}
        entry.last_idx = entry.last_targets = entry.quick = None
        # plain: the cached path runs inline in __call__ (no ref/hijax cells)
        entry.plain = entry.fast and not entry.cells
        entry.donated = donated
        entry.jitted, entry.first = self._compiled_for(
            static, flat, node_pos, node_kw, dyn_pos, dyn_kw, args, kwargs
        )
        return entry

    def _donated_leaves(self, flat: Any, node_pos: tuple, node_kw: tuple) -> frozenset:
        if not self.donate_argnums and not self.donate_argnames:
            return frozenset()
        donated_nodes = {k for k, p in enumerate(node_pos) if p in self.donate_argnums}
        donated_nodes |= {
            len(node_pos) + k
            for k, n in enumerate(node_kw)
            if n in self.donate_argnames
        }
        return frozenset(i for i, p in enumerate(flat.paths) if p[0] in donated_nodes)

    def _compiled_for(
        self, static: _Static, flat: Any, node_pos: tuple, node_kw: tuple,
        dyn_pos: tuple, dyn_kw: tuple, args: tuple, kwargs: dict,
    ) -> Any:  # fmt: skip
        cached = self._compiled.get(static)
        if cached is not None:
            return cached
        fun = self._trace_fun
        (
            _,
            node_pos,
            node_kw,
            static_items,
            static_kw,
            n_args,
            dyn_pos,
            dyn_kw,
            graphdef,
            donated,
        ) = static.parts
        n_node_args = len(node_pos)
        keep = self._keep_structure
        # The static part of the first trace's result. Traces that give the
        # same one return ``(out, state_values)`` and the call reads it from
        # here; others return ``(out, (Aux(static), state_values))``.
        first: list = []

        def pure(vals: list, dyn: tuple, kw: dict) -> Any:
            STATS["traces"] += 1
            inner_nodes, inner = _rebuild_nodes(graphdef, vals)
            call_args: list[Any] = [None] * n_args
            for i, n in zip(node_pos, inner_nodes[:n_node_args]):
                call_args[i] = n
            for i, a in zip(dyn_pos, dyn):
                call_args[i] = a
            for i, a in static_items:
                call_args[i] = _unwrap(a)
            call_kw = dict(kw)
            for name, n in zip(node_kw, inner_nodes[n_node_args:]):
                call_kw[name] = n
            for name, a in static_kw:
                call_kw[name] = _unwrap(a)
            snap = _snapshot(inner.objects) if keep else None
            out, refs = _mark_refs(fun(*call_args, **call_kw), (dyn, kw))
            if snap:
                _restore(snap)
            result = lifting.collect(inner, out, mode="changed", always=always)
            if leaf_sh is not None:
                result = _constrain_state(result, leaf_sh, inner, paths)
            out, (aux, state_vals) = result
            if refs:
                aux = lifting.Aux((aux.value[0], True, True))
            if not first:
                first.append(aux.value)
            if aux.value == first[0]:
                return out, list(state_vals)
            return out, (aux, state_vals)

        jit_kwargs = dict(self._jit_kwargs)
        shardings = self._leaf_shardings(
            flat, node_pos, node_kw, dyn_pos, dyn_kw, args, kwargs
        )
        # As in Flax: updated argument state keeps the argument's in_shardings
        # (applied while tracing, so the cached call costs nothing more).
        leaf_sh = None
        paths = flat.paths
        always = donated
        if shardings is not None and any(s is not None for s in shardings[0]):
            leaf_sh = shardings[0]
            # Leaves given an in_sharding are always written back, so the
            # caller's Variables take that sharding even if the function only
            # read them (as in Flax).
            always = donated | {i for i, s in enumerate(leaf_sh) if s is not None}
        if self._jax_out_shardings is not None:
            jit_kwargs["out_shardings"] = (self._jax_out_shardings, None)
        if donated:
            order = sorted(donated) + [
                i for i in range(len(flat.leaves)) if i not in donated
            ]
            n = len(donated)

            def pure_donating(d: list, k: list, dyn: tuple, kw: dict) -> Any:
                return pure(_unsort(d + k, order), dyn, kw)

            if shardings is not None:
                vs, ds, ks = shardings
                ordered = [vs[i] for i in order]
                jit_kwargs["in_shardings"] = (ordered[:n], ordered[n:], ds, ks)
            jitted = _DonatingCall(
                jax.jit(pure_donating, donate_argnums=(0,), **jit_kwargs), order, n
            )
        else:
            if shardings is not None:
                jit_kwargs["in_shardings"] = shardings
            jitted = jax.jit(pure, **jit_kwargs)
        self._compiled[static] = jitted, first
        return jitted, first

    def _leaf_shardings(self, flat, node_pos, node_kw, dyn_pos, dyn_kw, args, kwargs):
        spec = self.in_shardings
        if spec is None:
            return None
        from ramie._src.transforms.sharding import leaf_shardings_for_jit

        return leaf_shardings_for_jit(
            spec,
            flat,
            node_pos,
            node_kw,
            dyn_pos,
            dyn_kw,
            args,
            kwargs,
            self.static_argnums,
        )

    def _run(self, entry: _Entry, args: tuple, kwargs: dict) -> Any:
        dyn = entry.get_dyn(args)
        kw = {n: kwargs[n] for n in entry.dyn_kw} if entry.dyn_kw else _NO_KW
        if not entry.fast:
            # bare arrays among the leaves: read and write them through their paths
            STATS["slow_calls"] += 1
            out, rest = entry.jitted(entry.ext.values, dyn, kw)
            static, state_vals = _static_and_values(rest, entry.first)
            index_map = lifting.apply_state(entry.ext, static, state_vals, "ramie.jit")
            if static[1]:
                out = lifting.build_outputs(out, static, index_map)
                if len(static) > 2:
                    out = _restore_refs(out, (dyn, kw))
            return out
        STATS["fast_calls"] += 1
        # ref/hijax Variables pass their jax.Ref cells: jax.jit updates them in
        # place, so they are never among the written-back values.
        vals = list(map(_get_raw, entry.vars))
        for i in entry.cells:  # ref/hijax Variables: pass their cells' arrays
            vals[i] = read_cell(vals[i])
        try:
            out, state_vals = entry.jitted(vals, dyn, kw)
        except (RuntimeError, ValueError) as e:  # costs nothing unless raised
            err = _deleted_error(entry.vars, e)
            if err is None:
                raise
            raise err from e
        return self._finish(entry, out, state_vals, dyn, kw)

    def _finish(
        self, entry: _Entry, out: Any, state_vals: Any, dyn: tuple, kw: dict
    ) -> Any:
        """Write a fast-path call's results back and build its outputs."""
        static, state_vals = _static_and_values(state_vals, entry.first)
        st = static[0]
        if st[0] == "same":
            idx = st[1]  # positions of the Variables the function changed
            if idx is entry.last_idx:  # the same trace as last call
                targets = entry.last_targets
            elif idx:
                targets = entry.targets.get(idx)
                if targets is None:
                    vs = entry.vars
                    targets = entry.targets[idx] = [vs[i] for i in idx]
            else:
                targets = []
            entry.last_idx, entry.last_targets = idx, targets
            if entry.cells:
                _write_back_cells(targets, state_vals)
            else:
                deque(map(_set_raw, targets, state_vals), maxlen=0)  # a C loop
            # the next call with this static part writes back inline
            entry.quick = static if static is entry.first[0] and not static[1] else None
            if static[1]:  # graph objects among the outputs
                out = lifting.build_outputs(out, static, entry.ext.flat.objects)
                if len(static) > 2:  # jax.Refs among the outputs
                    out = _restore_refs(out, (dyn, kw))
            return out
        index_map = lifting.apply_state(entry.ext, static, state_vals, "ramie.jit")
        if static[1]:
            out = lifting.build_outputs(out, static, index_map)
            if len(static) > 2:  # jax.Refs among the outputs
                out = _restore_refs(out, (dyn, kw))
        return out

    # -------------------------------------------------- generic path
    def _generic_call(self, args: tuple, kwargs: dict) -> Any:
        STATS["slow_calls"] += 1
        static_items = tuple(
            (i, _static(args[i], i, self)) for i in self.static_argnums if i < len(args)
        )
        dyn_args = tuple(a for i, a in enumerate(args) if i not in self.static_argnums)
        static_kw = tuple(
            (k, _static(kwargs[k], k, self))
            for k in sorted(kwargs)
            if k in self.static_argnames
        )
        dyn_kwargs = {k: v for k, v in kwargs.items() if k not in self.static_argnames}
        ext = lifting.extract((dyn_args, dyn_kwargs))
        STATS["flattens"] += 1
        lifting.check_traces(ext, "ramie.jit")
        static = _Static("generic", ext.static, static_items, static_kw, len(args))
        jitted = self._compiled.get(static)
        if jitted is None:
            fun = self._trace_fun
            n_args = len(args)
            keep = self._keep_structure

            def pure(values: list, other: list) -> Any:
                STATS["traces"] += 1
                tree, inner = lifting.rebuild(ext_static, values, other)
                d_args, d_kwargs = tree
                it = iter(d_args)
                statics = dict(static_items)
                call_args = [
                    _unwrap(statics[i]) if i in statics else next(it)
                    for i in range(n_args)
                ]
                call_kw = dict(d_kwargs)
                for k, v in static_kw:
                    call_kw[k] = _unwrap(v)
                snap = _snapshot(inner.objects) if keep else None
                out = fun(*call_args, **call_kw)
                if snap:
                    _restore(snap)
                result = lifting.collect(inner, out, mode="changed", always=always)
                if graph_sh is not None:
                    result = _constrain_state(result, graph_sh, inner, ext_paths)
                return result

            ext_static = ext.static
            ext_paths = ext.flat.paths
            jit_kwargs = dict(self._jit_kwargs)
            if self._jax_out_shardings is not None:
                jit_kwargs["out_shardings"] = (self._jax_out_shardings, None)
            graph_sh, always = None, frozenset()
            if self.in_shardings is not None:
                graph_specs, other_specs = self._generic_shardings(
                    ext, args, dyn_args, dyn_kwargs
                )
                jit_kwargs["in_shardings"] = (graph_specs, other_specs)
                if any(sp is not None for sp in graph_specs):
                    graph_sh = graph_specs
                    always = frozenset(
                        i for i, sp in enumerate(graph_specs) if sp is not None
                    )
            jitted = jax.jit(pure, **jit_kwargs)
            self._compiled[static] = jitted
        out, (aux, state_vals) = jitted(ext.values, ext.other)
        index_map = lifting.apply_state(ext, aux.value, state_vals, "ramie.jit")
        return lifting.build_outputs(out, aux.value, index_map)

    def _generic_shardings(
        self, ext: Extracted, args: tuple, dyn_args: tuple, dyn_kwargs: dict
    ) -> tuple[list, list]:
        """in_shardings for graph objects nested in containers: per leaf.

        Each positional entry applies to its whole argument: to every Variable
        of the modules inside it (one per filter for a StateSharding) and to
        every other leaf.
        """
        from ramie._src.transforms.sharding import _per_arg, _unwrap

        api = "ramie.jit(in_shardings=...)"
        per_arg = _per_arg(self.in_shardings, len(args), self.static_argnums)
        dyn_specs = tuple(
            per_arg[i] for i in range(len(args)) if i not in self.static_argnums
        )
        prefix = (dyn_specs, {k: None for k in dyn_kwargs})
        specs = lifting.broadcast_prefix(prefix, (dyn_args, dyn_kwargs), is_node, api)
        graph_specs = lifting.leaf_specs(ext, specs, api, convert=_unwrap)
        nodes = set(ext.node_pos)
        other_specs = [sp for i, sp in enumerate(specs) if i not in nodes]
        return graph_specs, other_specs

    # ------------------------------------------------------ jax-like API
    def lower(self, *args: Any, **kwargs: Any) -> Lowered:
        """Lower for the given arguments (like ``jax.jit(f).lower``).

        Returns a :class:`Lowered` whose ``compile()`` gives a callable taking
        the same arguments as the jitted function (modules included) and
        applying Variable updates like a regular call.
        """
        return self._lower((), args, kwargs)

    def _lower(self, bound: tuple, args: tuple, kwargs: dict) -> Lowered:
        args = bound + args
        key = self._key(args, kwargs)
        if key is None:
            raise NotImplementedError(
                "ramie.jit(...).lower(): graph objects nested inside containers are "
                "not supported here; pass modules as top-level arguments"
            )
        entry = self._build_entry(args, kwargs)
        vals = list(map(_get_raw, entry.vars))
        for i in entry.cells:
            vals[i] = read_cell(vals[i])
        dyn = tuple(args[i] for i in entry.dyn_pos)
        kw = {n: kwargs[n] for n in entry.dyn_kw}
        return Lowered(self, bound, entry.jitted.lower(vals, dyn, kw))

    def _call_compiled(
        self, compiled: Any, bound: tuple, args: tuple, kwargs: dict
    ) -> Any:
        args = bound + args
        if self._key(args, kwargs) is None:
            raise NotImplementedError(
                "ramie.jit(...).lower(...).compile(): graph objects nested inside "
                "containers are not supported here; pass modules as top-level "
                "arguments"
            )
        built = self._build_entry(args, kwargs)
        entry = _Entry()
        for name in _Entry.__slots__:
            setattr(entry, name, getattr(built, name))
        jitted = built.jitted
        if isinstance(jitted, _DonatingCall):
            entry.jitted = _DonatingCall(compiled, jitted.order, jitted.n)
        else:
            entry.jitted = compiled
        return self._run(entry, args, kwargs)

    def eval_shape(self, *args: Any, **kwargs: Any) -> Any:
        from ramie._src.transforms.general import eval_shape

        return eval_shape(self.fun, *args, **kwargs)


class Lowered:
    """A lowered :func:`jit` call (``jitted.lower(*args)``).

    ``compile()`` gives a :class:`Compiled`; ``as_text()``, ``cost_analysis()``
    and the other attributes of ``jax.stages.Lowered`` are forwarded.
    """

    def __init__(self, jitted: JitWrapped, bound: tuple, lowered: Any):
        self._jitted = jitted
        self._bound = bound
        self.lowered = lowered

    def compile(self, *args: Any, **kwargs: Any) -> Compiled:
        """Compile (``jax.stages.Lowered.compile``); the result takes modules."""
        compiled = self.lowered.compile(*args, **kwargs)
        return Compiled(self._jitted, self._bound, compiled)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.lowered, name)


class Compiled:
    """A compiled :func:`jit` call: call it with the jitted function's arguments.

    Each call runs the compiled executable and applies Variable updates to the
    modules passed, like a call of the jitted function. Other attributes
    (``as_text()``, ``cost_analysis()``...) are those of ``jax.stages.Compiled``.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> counter = ramie.Variable(jnp.array(0))
        >>> @ramie.jit
        ... def bump(c, x):
        ...     c.value += 1
        ...     return x * 2
        >>> compiled = bump.lower(counter, jnp.ones(2)).compile()
        >>> compiled(counter, jnp.ones(2)), int(counter.value)
        (Array([2., 2.], dtype=float32), 1)
    """

    def __init__(self, jitted: JitWrapped, bound: tuple, compiled: Any):
        self._jitted = jitted
        self._bound = bound
        self.compiled = compiled

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._jitted._call_compiled(self.compiled, self._bound, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.compiled, name)


def _static_and_values(rest: Any, first: list) -> tuple[Any, list]:
    """The static part and the state values of a fast-path result."""
    if type(rest) is list:
        return first[0], rest
    aux, state_vals = rest
    return aux.value, state_vals


def _raw_or(v: Any) -> Any:
    return _get_raw(v) if isinstance(v, Variable) else v


def _write_back_cells(targets: list, values: list) -> None:
    for var, value in zip(targets, values):
        cell = _get_raw(var)
        if type(cell) is _RefType:
            write_cell(cell, value)
        else:
            _set_raw(var, value)


class _DonatingCall:
    """Calls a jitted function with the donated leaves as a separate argument."""

    def __init__(self, jitted: Any, order: list[int], n_donated: int):
        self.jitted = jitted
        self.order = order
        self.n = n_donated

    def __call__(self, vals: list, dyn: tuple, kw: dict) -> Any:
        ordered = [vals[i] for i in self.order]
        return self.jitted(ordered[: self.n], ordered[self.n :], dyn, kw)

    def lower(self, vals: list, dyn: tuple, kw: dict) -> Any:
        ordered = [vals[i] for i in self.order]
        return self.jitted.lower(ordered[: self.n], ordered[self.n :], dyn, kw)


def _constrain_state(result: tuple, leaf_sh: list, inner: Any, paths: Any) -> tuple:
    """Constrain updated argument state to the argument's in_shardings.

    When the structure changed (a Variable replaced), the sharding follows
    the path.
    """
    out, (aux, state_vals) = result
    st = aux.value[0]
    if st[0] == "same":
        if st[1] is None:
            return result
        # a value passed through unchanged already has its in_sharding
        vin = inner.values_in
        specs = [None if v is vin[i] else leaf_sh[i] for i, v in zip(st[1], state_vals)]
    else:
        by_path = dict(zip(paths, leaf_sh))
        specs = [by_path.get(p) for p in flatten(inner.nodes).paths]
    new_vals = [
        jax.lax.with_sharding_constraint(v, s)
        if s is not None and hasattr(v, "shape")
        else v
        for s, v in zip(specs, state_vals)
    ]
    return out, (aux, new_vals)


def _unsort(vals: list, order: list[int]) -> list:
    out: list[Any] = [None] * len(vals)
    for pos, i in enumerate(order):
        out[i] = vals[pos]
    return out


def _unwrap(a: Any) -> Any:
    from ramie._src.core.variables import unhashable

    return unhashable(a)


def _rebuild_nodes(graphdef: Any, vals: list) -> tuple[tuple, lifting.Inner]:
    from ramie._src.core.graph.flatten import unflatten

    index_ref: dict[int, Any] = {}
    nodes = unflatten(graphdef, list(vals), index_ref=index_ref)
    objects = [index_ref[i] for i in range(graphdef.num_nodes)]
    return nodes, lifting.Inner(nodes, objects, list(vals), graphdef)


def jit(
    fun: Callable[..., Any] = MISSING,  # type: ignore[assignment]
    *,
    in_shardings: Any = None,
    out_shardings: Any = None,
    static_argnums: int | Sequence[int] | None = None,
    static_argnames: str | Sequence[str] | None = None,
    donate_argnums: int | Sequence[int] | None = None,
    donate_argnames: str | Sequence[str] | None = None,
    keep_unused: bool = False,
    device: Any = None,
    backend: str | None = None,
    inline: bool = False,
    abstracted_axes: Any = None,
    graph: bool | None = None,
    graph_updates: bool | None = None,
) -> Any:
    """Compile a function that takes modules (and mutates them) with ``jax.jit``.

    Modules, Rngs, Optimizers and any graph objects may be passed anywhere in
    the arguments; Variable updates and structural changes made inside are
    applied to the caller's objects, so the function needs to return nothing.
    Repeated calls with the same objects take a cached path that costs about
    what ``jax.jit`` on the raw arrays costs.

    With ``graph_updates=False`` (or ``graph=False``) only Variable values come
    back: attributes set, deleted or swapped inside are restored afterwards.
    ``jax.Ref`` arguments are updated in place by JAX; a Ref the function
    returns is the caller's own Ref again, and a Ref created inside comes out
    as a new ``jax.Ref`` holding its final value.

    Args:
        fun: The function (omit to use as ``@ramie.jit(static_argnums=...)``).
        in_shardings, out_shardings: As in ``jax.jit``; for a module a single
            sharding applies to all its Variables, a
            :class:`~ramie.StateSharding` or a ``ramie.prefix(...)`` State gives
            one per Variable. Module arguments given an in_sharding get it
            even if the function only reads them; a Variable reached through
            two arguments with two shardings is an "Inconsistent aliasing"
            error.
        static_argnums, static_argnames: Arguments that are compile-time constants.
        donate_argnums, donate_argnames: Arguments whose buffers may be reused.
        keep_unused, device, backend, inline: Passed to ``jax.jit``.
        graph, graph_updates: Graph mode and whether structural changes made
            inside come back (both default to True).

    Returns:
        The compiled callable (it also works as a method decorator). Its
        ``lower(*args)`` gives a :class:`Lowered`, whose ``compile()`` gives a
        :class:`Compiled` that takes the same arguments, modules included.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> model = ramie.Linear(2, 3, rngs=ramie.Rngs(0))
        >>> @ramie.jit
        ... def zero_bias(model, x):
        ...     model.bias.value = jnp.zeros(3) + x.sum()
        ...     return model(x)
        >>> zero_bias(model, jnp.ones((1, 2))).shape
        (1, 3)
        >>> model.bias.value
        Array([2., 2., 2.], dtype=float32)
    """
    lifting.reject_bound_method(fun, "ramie.jit")
    in_shardings = lifting.unwrap_prefix_trees(in_shardings)
    out_shardings = lifting.unwrap_prefix_trees(out_shardings)
    kwargs = dict(
        in_shardings=in_shardings,
        out_shardings=out_shardings,
        static_argnums=static_argnums,
        static_argnames=static_argnames,
        donate_argnums=donate_argnums,
        donate_argnames=donate_argnames,
        keep_unused=keep_unused,
        device=device,
        backend=backend,
        inline=inline,
        abstracted_axes=abstracted_axes,
    )
    lifting.reject_node_prefix(in_shardings, "in_shardings", "ramie.jit")
    lifting.reject_node_prefix(out_shardings, "out_shardings", "ramie.jit")
    if fun is MISSING:
        return lambda f: jit(f, graph=graph, graph_updates=graph_updates, **kwargs)  # type: ignore[arg-type]
    if is_simple(graph, graph_updates):
        for name in ("in_shardings", "out_shardings"):
            check_prefix(kwargs[name], name, "ramie.jit")
        if not (is_node(fun) and callable(fun)):
            # Checked inside the trace: the cached fast path pays nothing per call.
            tree = not resolve_graph(graph)
            checked = checked_inner(fun, "ramie.jit", tree)
            functools.update_wrapper(checked, fun)
            return JitWrapped(checked, graph_updates=False, **kwargs)  # type: ignore[arg-type]
    if is_node(fun) and callable(fun):
        node = fun
        wrapped = JitWrapped(lambda m, *a, **k: m(*a, **k), **kwargs)  # type: ignore[arg-type]
        return functools.partial(wrapped, node)
    return JitWrapped(fun, **kwargs)  # type: ignore[arg-type]


class JitPartial:
    """``jit(fun)`` with leading arguments bound; also ``.lower(*rest)``."""

    def __init__(self, jitted: Any, args: tuple):
        self.jitted = jitted
        self.args = args
        functools.update_wrapper(self, jitted, updated=())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.jitted(*self.args, *args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        jitted = self.jitted
        if isinstance(jitted, functools.partial):  # jit of a callable module
            return jitted.func._lower(
                (*jitted.args, *self.args), args, {**jitted.keywords, **kwargs}
            )
        return jitted._lower(self.args, args, kwargs)

    def __repr__(self) -> str:
        return f"<ramie.jit_partial of {self.jitted!r}>"


def jit_partial(fun: Callable[..., Any], *partial_args: Any, **jit_kwargs: Any) -> Any:
    """``jit(fun)`` with leading arguments bound (ramie caches every call anyway).

    In tree mode (``graph=False``) the bound arguments are checked at once: a
    Variable shared between them is an error naming both paths.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> model = ramie.Linear(2, 1, rngs=ramie.Rngs(0))
        >>> forward = ramie.jit_partial(lambda m, x: m(x), model)
        >>> forward(jnp.ones((3, 2))).shape
        (3, 1)
    """
    graph = jit_kwargs.get("graph")
    if is_simple(graph, jit_kwargs.get("graph_updates")) and not resolve_graph(graph):
        from ramie._src.transforms.simple import check_inputs

        check_inputs("ramie.jit_partial", partial_args, {}, True)
    return JitPartial(jit(fun, **jit_kwargs), partial_args)


def cached_partial(
    f: Callable[..., Any],
    *cached_args: Any,
    graph: Any = None,
    graph_updates: Any = None,
) -> Any:
    """Bind arguments of a ramie-transformed function (Flax's ``cached_partial``).

    Each graph object among ``cached_args`` is bound as a *clone*: new module
    objects of the same structure that hold the very same Variable objects.
    Value updates made by ``f`` therefore reach the originals, while the clone
    (which ``f`` returns when it returns the bound module) stays the same object
    from call to call. Structural changes made inside ``f`` (a new attribute, a
    replaced sub-module) apply to the clone only, so keep the structure fixed.
    Graph mode with graph updates is required, as in Flax.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> model = ramie.Linear(2, 3, rngs=ramie.Rngs(0))
        >>> @ramie.jit
        ... def step(model, x):
        ...     model.bias.value += 1.0
        ...     return model(x)
        >>> cached_step = ramie.cached_partial(step, model)
        >>> cached_step(jnp.ones((1, 2))).shape
        (1, 3)
        >>> model.bias.value  # the update reached the original model
        Array([1., 1., 1.], dtype=float32)
    """
    from ramie._src.core.graph.flatten import unflatten
    from ramie._src.core.modes import resolve_graph_updates
    from ramie.errors import TransformError

    if not (resolve_graph(graph) and resolve_graph_updates(graph_updates)):
        raise TransformError(
            "ramie.cached_partial: cached_partial is a graph-mode-only API and "
            "requires graph_updates=True (got graph="
            f"{resolve_graph(graph)}, graph_updates="
            f"{resolve_graph_updates(graph_updates)}).\n"
            "  Fix: bind the arguments with ramie.jit_partial, which works in every "
            "mode:\n"
            "      step = ramie.jit_partial(f, model, graph=False)"
        )
    leaves, treedef = jax.tree_util.tree_flatten(cached_args, is_leaf=is_node)
    pos = [i for i, leaf in enumerate(leaves) if is_node(leaf)]
    if pos:
        # One joint flatten keeps objects shared between cached arguments shared.
        flat = flatten(tuple(leaves[i] for i in pos))
        clones = unflatten(flat.graphdef, list(flat.leaves))
        for i, clone in zip(pos, clones):
            leaves[i] = clone
    bound = jax.tree_util.tree_unflatten(treedef, leaves)
    return functools.partial(f, *bound)


_ = (_set_raw, raw)


def _static(a: Any, where: int | str, jitted: Any) -> Any:
    """The cache key of a static argument; arrays are refused, as JAX does.

    An array is not hashable, so it cannot be a compile-time constant; JAX
    rejects it up front, and so does ramie instead of failing later.
    """
    if isinstance(a, (jax.Array, np.ndarray)):
        from ramie.errors import StaticArgumentError

        fun = getattr(jitted.fun, "__name__", "f")
        what = f"argument {where}" if isinstance(where, int) else f"argument {where!r}"
        shape = getattr(a, "shape", ())
        raise StaticArgumentError(
            f"ramie.jit({fun}): {what} is static (static_argnums/static_argnames) "
            f"but got an array of shape {tuple(shape)}. Non-hashable static "
            "arguments are not supported: static values must be hashable Python "
            "values (numbers, strings, tuples), fixed at compile time.\n"
            "  Fix: pass the array as a regular argument (drop it from "
            "static_argnums), or pass a Python value, e.g. int(x) or tuple(x.tolist())"
        )
    return hashable(a)


def _deleted_error(variables: list, error: Exception) -> Exception | None:
    """Name the first Variable holding a deleted (donated) array, if any."""
    from ramie._src.core.links import path_of
    from ramie._src.core.paths import format_path
    from ramie.errors import DeletedArrayError

    for var in variables:
        raw = var._raw
        if (
            isinstance(raw, jax.Array)
            and not isinstance(raw, jax.core.Tracer)
            and raw.is_deleted()
        ):
            path = path_of(var)
            where = f" at {format_path(path)}" if path else ""
            return DeletedArrayError(
                f"ramie.jit: the {type(var).__name__}{where} holds an array of shape "
                f"{tuple(raw.shape)} that was deleted, typically donated to a "
                "jitted call (donate_argnums) whose result was not stored back "
                f"({error}).\n"
                "  Fix: use the value the donating call returned, or stop donating:\n"
                "      model = step(model, ...)   # keep what the call returns"
            )
    return None
