"""Contexts for splitting and merging several graphs consistently.

When several graphs share objects (a model and an optimizer holding the same
Variables), splitting them one by one would duplicate the shared objects. A
:class:`SplitContext` flattens every node against one reference index, so a
later split refers back to objects seen earlier; a :class:`MergeContext`
rebuilds them in the same order against one index, restoring the sharing.
:class:`UpdateContext` pairs an outer split with an outer merge around a pure
function, so custom transforms can be written with raw JAX (the "inner" split
and merge in between happen inside the transform).

``to_tree``/``from_tree`` apply this to a whole pytree: every graph object
becomes a :class:`NodeStates` leaf (GraphDef + States) and back.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import jax

from ramie._src.core.filters import to_predicate
from ramie._src.core.graph.defs import GraphDef
from ramie._src.core.graph.flatten import flatten, to_state, unflatten_state
from ramie._src.core.graph.registry import OBJECT, VARIABLE, kind_of
from ramie._src.core.sentinels import MISSING
from ramie._src.core.state import State, merge_state
from ramie.errors import GraphStructureError


def _is_node(x: Any) -> bool:
    k = kind_of(x)
    return k is OBJECT or k is VARIABLE


class SplitContext:
    """Split several graphs against one reference index (shared objects once)."""

    def __init__(self, ctxtag: Any = None):
        self.ctxtag = ctxtag
        self.ref_index: dict[int, int] = {}
        self.objects: list[Any] = []

    def split(self, node: Any, *filters: Any) -> tuple:
        """Like ``ramie.split``; objects split earlier here become references."""
        start = len(self.objects)
        flat = flatten(node, ref_index=self.ref_index, objects=self.objects)
        del start
        if not filters:
            return flat.graphdef, to_state(flat.paths, flat.leaves)
        from ramie._src.core.graph.api import _partition

        parts = _partition(flat.paths, flat.leaves, filters, "SplitContext.split()")
        return (flat.graphdef, *[to_state(p, lv) for p, lv in parts])

    def flatten(self, node: Any, /, *, with_paths: bool = True) -> tuple:
        from ramie._src.core.state import FlatState

        flat = flatten(node, ref_index=self.ref_index, objects=self.objects)
        return flat.graphdef, FlatState(zip(flat.paths, flat.leaves), sort=False)


class MergeContext:
    """Merge several GraphDefs split in one SplitContext, restoring shared objects."""

    def __init__(self, ctxtag: Any = None, inner: bool | None = None):
        self.ctxtag = ctxtag
        self.inner = inner
        self.index_ref: dict[int, Any] = {}

    def merge(self, graphdef: GraphDef, state: Any = MISSING, /, *states: Any) -> Any:
        """Like ``ramie.merge``; references to earlier merged objects are resolved."""
        all_states = [s for s in (state, *states) if s is not MISSING]
        merged = (
            all_states[0]
            if len(all_states) == 1
            else merge_state(*all_states)
            if all_states
            else State()
        )
        node, missing, unexpected = unflatten_state(
            graphdef, merged, index_ref=self.index_ref
        )
        if missing or unexpected:
            from ramie._src.core.graph.api import _structure_error

            raise _structure_error(
                "MergeContext.merge()", graphdef, missing, unexpected, len(all_states)
            )
        return node

    def unflatten(self, graphdef: GraphDef, flat_state: Any, /) -> Any:
        from ramie._src.core.state import from_flat_state

        return self.merge(graphdef, from_flat_state(list(flat_state)))


@contextlib.contextmanager
def split_context(ctxtag: Any = None) -> Iterator[SplitContext]:
    """``with ramie.split_context() as ctx: ctx.split(a); ctx.split(b)``."""
    yield SplitContext(ctxtag)


@contextlib.contextmanager
def merge_context(
    ctxtag: Any = None, inner: bool | None = None
) -> Iterator[MergeContext]:
    """``with ramie.merge_context() as ctx: a = ctx.merge(...); b = ctx.merge(...)``."""
    yield MergeContext(ctxtag, inner)


_local = threading.local()


class UpdateContext:
    """Outer split -> (pure function: inner merge, mutate, inner split) -> outer merge.

    The outer merge writes the final State into the objects split at the
    start and returns them, so in-place semantics survive a raw JAX transform.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> counter = ramie.Linear(1, 1, rngs=ramie.Rngs(0))
        >>> with ramie.update_context("step") as ctx:
        ...     graphdef, state = ctx.split(counter)
        ...     @jax.jit
        ...     def f(graphdef, state):
        ...         m = ramie.current_update_context("step").merge(graphdef, state)
        ...         m.bias.value = m.bias.value + 1
        ...         return ramie.current_update_context("step").split(m)
        ...     graphdef, state = f(graphdef, state)
        ...     same = ctx.merge(graphdef, state)
        >>> same is counter, float(counter.bias.value[0])
        (True, 1.0)
    """

    def __init__(self, tag: Any):
        self.tag = tag
        self._outer_nodes: list[Any] = []
        self._stage = (
            0  # 0: outer split, 1: inner merge, 2: inner split, 3: outer merge
        )

    def split(self, node: Any, *filters: Any) -> tuple:
        from ramie._src.core.graph.api import split

        if self._stage == 0:
            self._outer_nodes.append(node)
            return split(node, *filters)
        self._stage = 2
        return split(node, *filters)

    def merge(self, graphdef: GraphDef, state: Any, *states: Any) -> Any:
        from ramie._src.core.graph.api import merge, update

        if self._stage in (0, 1) and self._is_inner():
            self._stage = 1
            return merge(graphdef, state, *states)
        if not self._outer_nodes:
            return merge(graphdef, state, *states)
        target = self._outer_nodes.pop(0)
        update(target, merge_state(state, *states) if states else state)
        self._stage = 3
        return target

    def _is_inner(self) -> bool:
        from ramie._src.core.tracing import current_trace

        return current_trace() is not None

    def flatten_end(self, *args: Any, **kwargs: Any) -> None:  # Flax compatibility
        return None

    def unflatten_end(self, *args: Any, **kwargs: Any) -> None:  # Flax compatibility
        return None


@contextlib.contextmanager
def update_context(tag: Any) -> Iterator[UpdateContext]:
    """Open an :class:`UpdateContext` named ``tag`` (see its example)."""
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    ctx = UpdateContext(tag)
    stack.append(ctx)
    try:
        yield ctx
    finally:
        stack.pop()


def current_update_context(tag: Any) -> UpdateContext:
    """The innermost open :class:`UpdateContext` with this tag."""
    for ctx in reversed(getattr(_local, "stack", []) or []):
        if ctx.tag == tag:
            return ctx
    raise ValueError(
        f"current_update_context({tag!r}): no update context with this tag is open; "
        f"use `with ramie.update_context({tag!r}) as ctx:` around the transform"
    )


# ---------------------------------------------------------------- to_tree
class NodeStates:
    """A graph object as a pytree leaf-group: its GraphDef plus its States."""

    def __init__(self, graphdef: GraphDef, states: tuple, metadata: Any = None):
        self._graphdef = graphdef
        self.states = tuple(states)
        self.metadata = metadata

    @property
    def graphdef(self) -> GraphDef:
        return self._graphdef

    @property
    def state(self) -> Any:
        if len(self.states) != 1:
            raise ValueError(
                f"NodeStates.state: holds {len(self.states)} States; use .states"
            )
        return self.states[0]

    @classmethod
    def from_split(
        cls, graphdef: GraphDef, state: Any, /, *states: Any, metadata: Any = None
    ) -> NodeStates:
        return cls(graphdef, (state, *states), metadata)

    @classmethod
    def from_states(cls, state: Any, *states: Any) -> NodeStates:
        return cls(None, (state, *states), None)  # type: ignore[arg-type]

    @classmethod
    def from_prefixes(cls, prefixes: Any, /, *, metadata: Any = None) -> NodeStates:
        return cls(None, tuple(prefixes), metadata)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"NodeStates({self._graphdef!r}, {len(self.states)} state(s))"


jax.tree_util.register_pytree_node(
    NodeStates,
    lambda n: (n.states, (n._graphdef, n.metadata)),
    lambda aux, states: NodeStates(aux[0], tuple(states), aux[1]),
)


def to_tree(
    tree: Any,
    /,
    *,
    prefix: Any = MISSING,
    split_fn: Any = None,
    map_non_graph_nodes: bool = False,
    ctxtag: Any = None,
    check_aliasing: bool = True,
) -> Any:
    """Replace every graph object in ``tree`` by a :class:`NodeStates`.

    Shared objects appear once.

    Example:
        >>> import ramie
        >>> m = ramie.Linear(1, 1, rngs=ramie.Rngs(0))
        >>> tree = ramie.to_tree({"model": m, "n": 3})
        >>> type(tree["model"]).__name__, tree["n"]
        ('NodeStates', 3)
        >>> ramie.from_tree(tree)["model"].kernel.shape
        (1, 1)
    """
    ctx = SplitContext(ctxtag)

    def conv(x: Any) -> Any:
        if _is_node(x):
            if split_fn is not None:
                return split_fn(ctx, (), None, x)
            gd, *states = ctx.split(x)
            return NodeStates(gd, tuple(states))
        return x

    return jax.tree_util.tree_map(conv, tree, is_leaf=_is_node)


def from_tree(
    tree: Any,
    /,
    *,
    prefix: Any = MISSING,
    merge_fn: Any = None,
    is_node_leaf: Any = None,
    is_leaf: Any = None,
    map_non_graph_nodes: bool = False,
    is_inner: Any = None,
    ctxtag: Any = None,
) -> Any:
    """Inverse of :func:`to_tree`: rebuild graph objects from NodeStates leaves."""
    ctx = MergeContext(ctxtag, is_inner)

    def conv(x: Any) -> Any:
        if isinstance(x, NodeStates):
            if merge_fn is not None:
                return merge_fn(ctx, (), None, x)
            return ctx.merge(x.graphdef, *x.states)
        return x

    return jax.tree_util.tree_map(
        conv, tree, is_leaf=lambda x: isinstance(x, NodeStates)
    )


def prefix(node: Any, filter_map: Any, /, *, graph: Any = None) -> Any:
    """A State-shaped tree of values chosen per Variable (axes, shardings...).

    ``filter_map`` is a ``{filter: value}`` mapping (first match wins) or a
    function ``(path, variable) -> value``.

    With ``graph=False`` the result has ``node``'s own pytree structure (a
    Module-shaped tree holding the values where ``node`` holds Variables), so
    it can be passed to ``jax.vmap(in_axes=...)`` directly. A tuple or list of
    graph nodes gives one prefix per node, in order, for the ``in_axes`` of a
    transform taking them as separate arguments (a node shared between them
    must get the same value in each).

    Example:
        >>> import ramie
        >>> bn = ramie.BatchNorm(2, rngs=ramie.Rngs(0))
        >>> ramie.prefix(bn, {ramie.BatchStat: None, ...: 0}).to_pure_dict()
        {'bias': 0, 'mean': None, 'scale': 0, 'var': None}

    A tuple or list of nodes gives a tuple or list of prefixes, one per node,
    to unpack into the transform's per-argument axes (a node passed twice
    gets its full prefix twice):

        >>> p_bn, p_bn2 = ramie.prefix((bn, bn), {...: 0})
        >>> p_bn.to_pure_dict() == p_bn2.to_pure_dict()
        True
    """
    from ramie._src.core.graph.api import leaves_with_paths
    from ramie._src.core.graph.registry import LIST, TUPLE, _key_to_part
    from ramie._src.core.variables import Variable

    if callable(filter_map) and not isinstance(filter_map, dict):
        value_of = filter_map
    else:
        preds = [(to_predicate(f), val) for f, val in filter_map.items()]

        def value_of(p: tuple, v: Any) -> Any:
            for pred, val in preds:
                if pred(p, v):
                    return val
            from ramie._src.core.paths import format_path

            raise GraphStructureError(
                f"ramie.prefix(): No filter matched the Variable at "
                f"{format_path(p)}; add `...: value` as the last entry"
            )

    if kind_of(node) in (TUPLE, LIST) and any(_is_node(n) for n in node):
        return type(node)(prefix(n, value_of, graph=graph) for n in node)
    if graph is False:

        def leaf(jax_path: tuple, v: Any) -> Any:
            path = tuple(_key_to_part(k, i) for i, k in enumerate(jax_path))
            return value_of(path, v)

        tree = jax.tree_util.tree_map_with_path(
            leaf, node, is_leaf=lambda x: isinstance(x, Variable)
        )
        if kind_of(tree) is OBJECT:
            paths, leaves = leaves_with_paths(node)
            as_state = to_state(paths, [value_of(p, v) for p, v in zip(paths, leaves)])
            object.__setattr__(tree, "_ramie_prefix", as_state)
        return tree
    paths, leaves = leaves_with_paths(node)
    return to_state(paths, [value_of(p, v) for p, v in zip(paths, leaves)])


def prefix_state(spec: Any) -> Any:
    """The State form of a tree made by ``prefix(node, ..., graph=False)``.

    None for anything else. Transforms use it to accept such a Module-shaped
    prefix in ``in_axes`` (raw ``jax.vmap`` takes it as it is).
    """
    return getattr(spec, "_ramie_prefix", None) if kind_of(spec) is OBJECT else None
