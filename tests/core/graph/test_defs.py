"""Tests for ``ramie/_src/core/graph/defs.py``: GraphDef, the static, hashable
description of a graph."""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie as nnx
from ramie._src.core.graph.defs import ARRAY_DEF, DCT, LST, OBJ, STC, TUP, VAR, attrs_of


class Node(nnx.Module):
    pass


def _linear(seed=0, out=3):
    return nnx.Linear(2, out, rngs=nnx.Rngs(seed))


def test_hashable_and_compared_by_structure():
    a, b = nnx.graphdef(_linear(0)), nnx.graphdef(_linear(1))
    assert a == b and not (a != b) and hash(a) == hash(b)
    assert len({a, b}) == 1
    c = nnx.graphdef(_linear(0, out=4))  # out_features is a static attribute
    assert a != c
    assert a != "not a graphdef"


def test_unhashable_static_values_compare_by_value():
    def make(v):
        n = Node()
        n.cfg = {"sizes": v}  # a static dict: unhashable
        n.w = nnx.Param(jnp.ones(1))
        return nnx.graphdef(n)

    assert make([1, 2]) == make([1, 2])
    assert hash(make([1, 2])) == hash(make([1, 2]))
    assert make([1, 2]) != make([1, 3])


def test_pickle_round_trip():
    g = nnx.graphdef(_linear())
    g2 = pickle.loads(pickle.dumps(g))
    assert g2 == g and g2.num_leaves == 2
    graphdef, state = nnx.split(_linear())
    y = nnx.merge(pickle.loads(pickle.dumps(graphdef)), state)(jnp.ones((1, 2)))
    assert y.shape == (1, 3)


def test_repr_node_type_and_fields():
    g = nnx.graphdef(_linear())
    assert repr(g) == "GraphDef(Linear, 2 leaves)"
    assert g.node_type is nnx.Linear and g.num_nodes == 3
    assert nnx.graphdef([nnx.Param(jnp.ones(1))]).node_type is list
    assert nnx.graphdef({"a": nnx.Param(jnp.ones(1))}).node_type is dict
    assert nnx.graphdef((nnx.Param(jnp.ones(1)),)).node_type is tuple
    assert repr(nnx.graphdef([1, nnx.Param(jnp.ones(1))])) == "GraphDef(list, 1 leaves)"


def test_nodes_and_describe():
    n = Node()
    n.items = [nnx.Param(jnp.ones(1)), jnp.zeros(1)]
    n.pair = (nnx.BatchStat(jnp.ones(1)), nnx.BatchStat(jnp.ones(1)))
    n.table = {"k": nnx.Cache(jnp.ones(1))}
    n.name = "n"
    g = nnx.graphdef(n)
    tags = [d[0] for d in g.nodes]
    assert tags == [OBJ, LST, VAR, TUP, VAR, VAR, DCT, VAR]
    text = g.describe()
    assert text.splitlines()[0] == "Node #0"
    assert (
        "  items: list" in text
        and "    0: Param #1" in text
        and "    1: <array>" in text
    )
    assert "  name: 'n'" in text and "  table: dict" in text


def test_attrs_of():
    assert attrs_of((OBJ, Node, 0, (("a", ARRAY_DEF),))) == (("a", ARRAY_DEF),)
    assert attrs_of((LST, ((0, (STC, 1)),))) == ((0, (STC, 1)),)
    assert attrs_of((STC, 3)) == ()


def test_outer_index_methods_are_noops():
    g = nnx.graphdef(_linear())
    assert g.with_no_outer_index() is g and g.with_same_outer_index() is g
    assert g.with_matching_outer_index(g) is g


def test_graphdef_is_a_leafless_pytree_and_static_jit_argument():
    graphdef, state = nnx.split(_linear())
    assert jax.tree.leaves(graphdef) == []
    assert jax.tree.map(lambda x: x, graphdef) is graphdef
    assert jax.tree.leaves((graphdef, state)) == jax.tree.leaves(state)

    @jax.jit
    def as_argument(graphdef, state, x):  # no static_argnums needed
        return nnx.merge(graphdef, state)(x)

    static = jax.jit(lambda g, s, x: nnx.merge(g, s)(x), static_argnums=0)
    x = jnp.ones((1, 2))
    np.testing.assert_allclose(
        as_argument(graphdef, state, x), static(graphdef, state, x)
    )


def test_apply_seed_usage_with_train_state():
    train_state = pytest.importorskip("flax.training.train_state")
    optax = pytest.importorskip("optax")
    model = _linear()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ts = train_state.TrainState.create(
        apply_fn=graphdef.apply, params=params, tx=optax.sgd(0.1)
    )

    @jax.jit
    def step(ts, x):
        def loss(params):
            y, _ = ts.apply_fn(params, rest)(x)
            return jnp.sum(y)

        return ts.apply_gradients(grads=jax.grad(loss)(ts.params))

    new = step(ts, jnp.ones((1, 2)))
    np.testing.assert_allclose(new.params.bias.value, params.bias.value - 0.1)
