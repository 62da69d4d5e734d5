"""Tests for ``ramie/_src/core/graph/registry.py``: what kind of graph element
a Python value is."""

from __future__ import annotations

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie as nnx
from ramie._src.core.graph import registry
from ramie._src.core.graph.registry import has_data, is_graph_node, kind_of, one_level
from ramie._src.core.tracked import TrackedDict, TrackedList

Pair = collections.namedtuple("Pair", "x y")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Box:
    a: jax.Array
    b: object


class Plain:
    pass


class Node(nnx.Module):
    pass


@pytest.mark.parametrize(
    "value, kind",
    [
        (nnx.Param(jnp.ones(1)), registry.VARIABLE),
        (nnx.Linear(1, 1, rngs=nnx.Rngs(0)), registry.OBJECT),
        (nnx.Rngs(0), registry.OBJECT),
        (jnp.ones(1), registry.ARRAY),
        (np.ones(1), registry.ARRAY),
        (jax.ShapeDtypeStruct((1,), jnp.float32), registry.ARRAY),
        (3, registry.STATIC),
        ("s", registry.STATIC),
        (None, registry.STATIC),
        (jnp.float32, registry.STATIC),
        (Plain(), registry.STATIC),
        ([1], registry.LIST),
        (TrackedList([1]), registry.LIST),
        ((1,), registry.TUPLE),
        ({"a": 1}, registry.DICT),
        (TrackedDict(a=1), registry.DICT),
        (Pair(1, 2), registry.NAMEDTUPLE),
        (Box(jnp.ones(1), 2), registry.PYTREE),
    ],
)
def test_kind_of(value, kind):
    assert kind_of(value) == kind
    assert kind_of(value) == kind  # cached answer is the same


def test_tracers_are_arrays():
    kinds = []

    @jax.jit
    def f(x):
        kinds.append(kind_of(x))
        return x

    f(jnp.ones(1))
    assert kinds == [registry.ARRAY]


def test_bare_array_attribute_survives_merge_split_inside_jit():
    n = Node()
    n.a = jnp.ones(1)
    n.w = nnx.Param(jnp.ones(1))
    graphdef, state = nnx.split(n)

    @jax.jit
    def f(state):
        return nnx.split(nnx.merge(graphdef, state))[1]

    assert sorted(f(state)) == ["a", "w"]


def test_bare_array_inside_jit_matches_flax():
    fnnx = pytest.importorskip("flax.nnx")

    class FNode(fnnx.Module):
        def __init__(self):
            self.a = fnnx.data(jnp.ones(1))
            self.w = fnnx.Param(jnp.ones(1))

    graphdef, state = fnnx.split(FNode())
    out = jax.jit(lambda s: fnnx.split(fnnx.merge(graphdef, s))[1])(state)
    assert sorted(out) == ["a", "w"]  # what ramie should do too


def test_is_graph_node():
    assert is_graph_node(nnx.Param(jnp.ones(1))) and is_graph_node(Node())
    assert not is_graph_node(jnp.ones(1)) and not is_graph_node([Node()])


def test_has_data():
    p = nnx.Param(jnp.ones(1))
    assert has_data(p) and has_data(jnp.ones(1)) and has_data(Node())
    assert has_data([1, {"a": (2, p)}])
    assert has_data(Pair(1, jnp.ones(1))) and has_data(Box(jnp.ones(1), 1))
    assert not has_data([1, "a", (None, 2.0)]) and not has_data({"a": [1]})
    assert not has_data(Plain())


def test_one_level():
    items, treedef = one_level(Box(jnp.ones(1), 2))
    assert [k for k, _ in items] == ["a", "b"]
    rebuilt = treedef.unflatten([c for _, c in items])
    assert isinstance(rebuilt, Box) and rebuilt.b == 2


def test_generic_pytree_nodes_in_modules_round_trip():
    n = Node()
    n.box = Box(jnp.ones(1), nnx.Param(jnp.ones(2)))
    n.pair = Pair(nnx.BatchStat(jnp.ones(1)), 2)
    graphdef, state = nnx.split(n)
    assert sorted(nnx.to_flat_state(state).paths) == [
        ("box", "a"),
        ("box", "b"),
        ("pair", "x"),
    ]
    new = nnx.merge(graphdef, state)
    assert isinstance(new.box, Box) and new.box.b is n.box.b
    assert type(new.pair) is Pair and new.pair.y == 2 and new.pair.x is n.pair.x
    nnx.update(n, {"pair": {"x": jnp.zeros(1)}})
    assert float(n.pair.x.value[0]) == 0.0
