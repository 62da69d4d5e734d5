"""Hypothesis strategies for random ramie object graphs, and graph inspectors.

``module_graphs()`` draws small random graphs that exercise everything the
graph layer must handle: nested Modules, plain lists/dicts/tuples, ``ramie.List``
and ``ramie.Dict``, Variables of several types (including a user subclass) with
and without metadata, bare arrays, static attributes, shared references (weight
tying) and reference cycles.

The inspectors (``describe``, ``variables_of``, ``objects_of``) walk a graph
*independently of ramie's own traversal code*, so the laws in
``test_graph_laws.py`` compare ramie against a second implementation rather
than against itself.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

import ramie as nnx


class Counter(nnx.Variable):
    """A user-defined Variable type (the seeds' ``class Counter(nnx.Variable)``)."""


class Node(nnx.Module):
    """A generic module whose attributes are set by the strategy."""


VAR_TYPES = (nnx.Param, nnx.BatchStat, nnx.Cache, nnx.Intermediate, Counter)
ATTR_NAMES = ("a", "b", "c", "d", "e")
TAGS = ("a", "dropout", "w")
STATICS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(["relu", "x", ""]),
    st.none(),
    st.booleans(),
    st.tuples(st.integers(0, 4), st.integers(0, 4)),
    st.lists(
        st.integers(0, 3), max_size=2
    ),  # a list of only static values stays static
)


class _Builder:
    """Draws one graph; keeps pools of finished Variables and modules to share."""

    def __init__(self, draw: Any, share_prob: float, arrays: bool):
        self.draw = draw
        self.share_prob = share_prob
        self.arrays = arrays
        self.counter = 0
        self.variables: list[nnx.Variable] = []
        self.modules: list[Any] = []  # finished modules (safe to share, no cycle)
        self.nodes: list[tuple[Node, list]] = []  # every Node with its ancestors

    def share(self) -> bool:
        return self.draw(st.integers(0, 99)) < int(self.share_prob * 100)

    def array(self) -> jax.Array:
        shape = self.draw(st.sampled_from([(), (2,), (1, 3)]))
        dtype = self.draw(st.sampled_from([jnp.float32, jnp.int32]))
        self.counter += 1
        size = int(np.prod(shape))
        return jnp.asarray(np.arange(size).reshape(shape) + 10 * self.counter, dtype)

    def variable(self) -> nnx.Variable:
        if self.variables and self.share():
            return self.draw(st.sampled_from(self.variables))
        cls = self.draw(st.sampled_from(VAR_TYPES))
        meta = {}
        if self.draw(st.integers(0, 3)) == 0:
            meta["tag"] = self.draw(st.sampled_from(TAGS))
        if self.draw(st.integers(0, 5)) == 0:
            meta["names"] = ["unhashable", "metadata"]
        v = cls(self.array(), **meta)
        self.variables.append(v)
        return v

    def leafish(self, depth: int, ancestors: list, arrays: bool = True) -> Any:
        """A Variable, a static value, a bare array or (depth > 0) a sub-module."""
        choices = ["var", "var", "static"]
        if self.arrays and arrays:
            choices.append("array")
        if depth > 0:
            choices += ["module", "module"]
        kind = self.draw(st.sampled_from(choices))
        if kind == "var":
            return self.variable()
        if kind == "static":
            return self.draw(STATICS)
        if kind == "array":
            return self.array()
        return self.module(depth - 1, ancestors)

    def value(self, depth: int, ancestors: list) -> Any:
        kind = self.draw(
            st.sampled_from(["leaf", "leaf", "leaf", "list", "tuple", "dict"])
        )
        if kind == "leaf":
            return self.leafish(depth, ancestors)
        n = self.draw(st.integers(0, 2))
        if kind == "tuple":
            # No bare arrays in tuples: an immutable container cannot be
            # updated in place (Flax refuses too; see test_api.py).
            items = [self.leafish(depth, ancestors, arrays=False) for _ in range(n)]
            return tuple(items)
        items = [self.leafish(depth, ancestors) for _ in range(n)]
        if kind == "list":
            return items
        keys = self.draw(
            st.lists(st.sampled_from(ATTR_NAMES), min_size=n, max_size=n, unique=True)
        )
        return dict(zip(keys, items))

    def module(self, depth: int, ancestors: list) -> Any:
        if self.modules and self.share():
            return self.draw(st.sampled_from(self.modules))
        kind = self.draw(st.sampled_from(["node", "node", "node", "list", "dict"]))
        if kind == "list":
            m: Any = nnx.List()
            for _ in range(self.draw(st.integers(0, 2))):
                m.append(self.leafish(depth, ancestors + [m]))
        elif kind == "dict":
            m = nnx.Dict()
            names = self.draw(
                st.lists(st.sampled_from(ATTR_NAMES), max_size=2, unique=True)
            )
            for name in names:
                m[name] = self.leafish(depth, ancestors + [m])
        else:
            m = Node()
            self.nodes.append((m, ancestors))
            names = self.draw(
                st.lists(st.sampled_from(ATTR_NAMES), max_size=3, unique=True)
            )
            for name in names:
                setattr(m, name, self.value(depth, ancestors + [m]))
        self.modules.append(m)
        return m


@st.composite
def module_graphs(
    draw: Any,
    max_depth: int = 2,
    share_prob: float = 0.3,
    cycles: bool = True,
    arrays: bool = True,
) -> Any:
    """A random graph rooted at a :class:`Node`.

    Args:
        max_depth: Maximum module nesting below the root.
        share_prob: Probability that a Variable or module slot reuses an
            existing one (weight tying).
        cycles: Sometimes add a back edge from a module to one of its
            ancestors (or itself).
        arrays: Allow bare array attributes (state leaves without identity).
    """
    b = _Builder(draw, share_prob, arrays)
    root = Node()
    b.nodes.append((root, []))
    for name in draw(
        st.lists(st.sampled_from(ATTR_NAMES), min_size=1, max_size=3, unique=True)
    ):
        setattr(root, name, b.value(max_depth, [root]))
    if cycles and draw(st.integers(0, 2)) == 0:
        node, ancestors = draw(st.sampled_from(b.nodes))
        target = draw(st.sampled_from([*ancestors, node]))
        node.back = target
    return root


# ---------------------------------------------------------------- filters
FILTER_ATOMS = (
    nnx.Param,
    nnx.BatchStat,
    Counter,
    nnx.Intermediate,
    nnx.Variable,
    "a",
    "dropout",
    nnx.PathContains("b"),
    nnx.PathContains(0),
    nnx.OfType(nnx.Cache),
    nnx.WithTag("w"),
    nnx.Not(nnx.Param),
    nnx.All(nnx.Param, nnx.PathContains("c")),
    nnx.Any(nnx.BatchStat, "d"),
    [nnx.Cache, "e"],
    lambda path, x: len(path) % 2 == 0,
    None,
    False,
    nnx.Nothing(),
)


def filter_lists(max_size: int = 3) -> st.SearchStrategy[list]:
    """Lists of filters (without the trailing ``...``)."""
    return st.lists(st.sampled_from(FILTER_ATOMS), max_size=max_size)


# ---------------------------------------------------------------- inspectors
def _children(obj: Any) -> list[tuple[Any, Any]]:
    d = vars(obj)
    return sorted(d.items(), key=lambda kv: str(kv[0]))


def _value_sig(x: Any) -> tuple:
    a = np.asarray(x)
    return (str(a.dtype), a.shape, a.ravel().tolist())


def describe(root: Any) -> list[tuple]:
    """Structure, values and sharing pattern of a graph, as comparable data.

    Every object and Variable gets a number at its first visit; later visits
    record ``('ref', number)``. Two graphs with equal descriptions have the
    same shape, types, static values, Variable values and metadata, and the
    same pattern of shared references and cycles.
    """
    ids: dict[int, int] = {}
    out: list[tuple] = []

    def walk(x: Any, path: tuple) -> None:
        if isinstance(x, (nnx.Variable, nnx.Pytree)):
            if id(x) in ids:
                out.append((path, "ref", ids[id(x)]))
                return
            ids[id(x)] = len(ids)
        if isinstance(x, nnx.Variable):
            meta = sorted((k, repr(v)) for k, v in x.get_metadata().items())
            out.append(
                (path, "var", type(x).__name__, ids[id(x)], _value_sig(x.value), meta)
            )
        elif isinstance(x, nnx.Pytree):
            out.append((path, "obj", type(x).__name__, ids[id(x)]))
            for k, c in _children(x):
                walk(c, path + (k,))
        elif isinstance(x, tuple):
            out.append((path, "tuple", len(x)))
            for i, c in enumerate(x):
                walk(c, path + (i,))
        elif isinstance(x, list):
            out.append((path, "list", len(x)))
            for i, c in enumerate(x):
                walk(c, path + (i,))
        elif isinstance(x, dict):
            out.append((path, "dict", tuple(sorted(map(str, x)))))
            for k in sorted(x, key=str):
                walk(x[k], path + (k,))
        elif isinstance(x, (jax.Array, np.ndarray)):
            out.append((path, "array", _value_sig(x)))
        else:
            out.append((path, "static", repr(x)))

    walk(root, ())
    return out


def _walk_all(root: Any) -> tuple[list, list, int]:
    """(unique Variables, unique Pytree objects, number of bare arrays)."""
    seen: set[int] = set()
    variables: list = []
    objects: list = []
    arrays = [0]

    def walk(x: Any) -> None:
        if isinstance(x, (nnx.Variable, nnx.Pytree)):
            if id(x) in seen:
                return
            seen.add(id(x))
        if isinstance(x, nnx.Variable):
            variables.append(x)
        elif isinstance(x, nnx.Pytree):
            objects.append(x)
            for _, c in _children(x):
                walk(c)
        elif isinstance(x, (list, tuple)):
            for c in x:
                walk(c)
        elif isinstance(x, dict):
            for k in sorted(x, key=str):  # a stable order, as in describe()
                walk(x[k])
        elif isinstance(x, (jax.Array, np.ndarray)):
            arrays[0] += 1

    walk(root)
    return variables, objects, arrays[0]


def variables_of(root: Any) -> list[nnx.Variable]:
    """Every distinct Variable reachable from ``root``."""
    return _walk_all(root)[0]


def objects_of(root: Any) -> list[Any]:
    """Every distinct graph object (Module, List, ...) reachable from ``root``."""
    return _walk_all(root)[1]


def num_bare_arrays(root: Any) -> int:
    """How many bare array leaves ``root`` holds (counted at every path)."""
    return _walk_all(root)[2]


def flat_items(state: Any, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    """``(path, leaf)`` of a nested mapping, recursing into every dict."""
    out = []
    for k in sorted(state, key=lambda k: (str(type(k)), str(k))):
        v = state[k]
        if isinstance(v, dict):
            out.extend(flat_items(v, prefix + (k,)))
        else:
            out.append((prefix + (k,), v))
    return out


def leaf_sig(leaf: Any) -> tuple:
    """Type, metadata and value of a State leaf (Variable or array)."""
    if isinstance(leaf, nnx.Variable):
        meta = sorted((k, repr(v)) for k, v in leaf.get_metadata().items())
        return (type(leaf).__name__, meta, _value_sig(leaf.value))
    return ("array", [], _value_sig(leaf))
