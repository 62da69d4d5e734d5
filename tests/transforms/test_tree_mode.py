"""Tree mode (graph=False) and graph_updates=False: graph functions and transforms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie as nnx
from ramie._src.transforms.jit import STATS


class Tied(nnx.Module):
    def __init__(self):
        self.a = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        self.b = self.a


# ------------------------------------------------------------ graph functions
@pytest.mark.parametrize("fn", [nnx.split, nnx.state, nnx.graphdef, nnx.clone])
def test_shared_reference_error_names_both_paths(fn):
    with pytest.raises(ValueError, match=r"found at paths 'a.bias' and 'b.bias'"):
        fn(Tied(), graph=False)
    fn(Tied())  # graph mode keeps the sharing


def test_shared_ref_cells_and_cycles_are_errors():
    r = jax.new_ref(jnp.zeros(1))
    with pytest.raises(ValueError, match=r"Duplicate Ref found at paths"):
        nnx.split([r, r], graph=False)
    a = nnx.List([1])
    a.append(nnx.List([2, a]))
    with pytest.raises(ValueError, match="Cycle detected"):
        list(nnx.iter_graph(a, graph=False))


def test_pytree_false_objects_are_rejected_with_their_path():
    class Opaque(nnx.Pytree, pytree=False):
        def __init__(self):
            self.x = 1

    with pytest.raises(ValueError, match=r"pytree=False.*Found at path '\[0\]'"):
        list(nnx.iter_graph(nnx.List([Opaque()]), graph=False))


def test_set_graph_mode_changes_the_default():
    with nnx.set_graph_mode(False):
        with pytest.raises(ValueError, match="found at paths"):
            nnx.split(Tied())
    nnx.split(Tied())


def test_tree_mode_split_merge_round_trip():
    m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(m, graph=False)
    m2 = nnx.merge(graphdef, state)
    np.testing.assert_array_equal(m2.kernel.value, m.kernel.value)


# ----------------------------------------------------------------- transforms
def test_jit_tree_mode_rejects_aliasing():
    v = nnx.Param(jnp.array(1.0))
    with pytest.raises(ValueError, match="does not support Variable aliasing"):
        nnx.jit(lambda v: v, graph=False)(v)
    with pytest.raises(ValueError, match=r"args\[0\]' and 'args\[1\]"):
        nnx.jit(lambda a, b: None, graph=False)(v, v)
    out = nnx.jit(lambda x: nnx.Param(x + 1), graph=False)(jnp.array(1.0))
    assert float(out.value) == 2.0  # a new Variable is fine


def test_jit_tree_mode_carries_updates_and_uses_the_fast_path():
    m = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    ref = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    x = jnp.arange(12.0).reshape(4, 3)

    @nnx.jit(graph=False)
    def step(m, x):
        return m(x)

    step(m, x)
    traces, fast = STATS["traces"], STATS["fast_calls"]
    step(m, x)
    assert STATS["traces"] == traces and STATS["fast_calls"] == fast + 1
    ref(x)
    ref(x)
    np.testing.assert_allclose(m.mean.value, ref.mean.value, rtol=1e-6)


@pytest.mark.parametrize("graph", [True, False])
def test_prefix_objects_need_graph_updates(graph):
    axes = nnx.StateAxes({nnx.Param: 0, ...: None})
    with pytest.raises(ValueError, match="cannot contain `StateAxes` objects"):
        nnx.vmap(lambda m: m, in_axes=(axes,), graph=graph, graph_updates=False)
    with pytest.raises(ValueError, match="cannot contain `DiffState` objects"):
        nnx.grad(lambda m: 0.0, argnums=nnx.DiffState(0, ...), graph=graph,
                 graph_updates=False)  # fmt: skip


@pytest.mark.parametrize("graph", [True, False])
def test_grad_returns_the_module_type(graph):
    m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    x = jnp.ones((4, 2))

    def loss(m):
        return ((m(x) - 1.0) ** 2).mean()

    grads = nnx.grad(loss, graph=graph, graph_updates=False)(m)
    assert isinstance(grads, nnx.Linear) and grads is not m
    ref = jax.grad(lambda w, b: (((x @ w + b) - 1.0) ** 2).mean(), argnums=(0, 1))(
        m.kernel.value, m.bias.value
    )
    np.testing.assert_allclose(grads.kernel.value, ref[0], rtol=1e-6)
    np.testing.assert_allclose(grads.bias.value, ref[1], rtol=1e-6)
    assert isinstance(nnx.grad(loss)(m), nnx.State)  # graph mode: a State


def test_eval_shape_graph_updates_false_rejects_duplicates():
    v = nnx.Param(jnp.array(1.0))
    with pytest.raises(ValueError, match="found at paths"):
        nnx.eval_shape(lambda a, b: None, v, v, graph=True, graph_updates=False)


# ---------------------------------------------------------------------- rngs
def test_split_rngs_without_graph_updates_returns_a_copy():
    rngs = nnx.Rngs(params=0, dropout=1)
    key_before = jax.random.key_data(rngs.params.key.value)
    out = nnx.split_rngs(rngs, splits=5, graph_updates=False)
    assert out.params.key.shape == (5,) and rngs.params.key.shape == ()
    np.testing.assert_array_equal(
        jax.random.key_data(rngs.params.key.value), key_before
    )
    assert int(rngs.params.count.value) == 1  # the original stream advanced once


def test_with_rngs_rules():
    rngs = nnx.Rngs(params=0, dropout=1, noise=2)
    new = nnx.with_rngs(rngs, split={"params": 4, ...: (2, 3)})
    assert new.params.key.shape == (4,) and new.noise.key.shape == (2, 3)
    new = nnx.with_rngs(rngs, split={"params": 4}, fork=...)
    assert new.params.key.shape == (4,) and new.dropout.key.shape == ()
    with pytest.raises(ValueError, match="multiple rules"):
        nnx.with_rngs(rngs, split={"params": 4}, fork="params")

    @nnx.with_rngs(broadcast=3)
    def shapes(r):
        return r.params.key.shape

    assert shapes(rngs) == (3,)


@pytest.mark.parametrize("graph", [True, False])
def test_vjp_cotangents_have_the_module_type(graph):
    m = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    x = jnp.arange(6.0).reshape(2, 3)
    out, vjp_fn = nnx.vjp(lambda m: m(x).sum(), m, graph=graph, graph_updates=False)
    (m_ct,) = vjp_fn(jnp.ones_like(out))
    assert isinstance(m_ct, nnx.Linear)
    ref_k, ref_b = jax.grad(lambda k, b: (x @ k + b).sum(), argnums=(0, 1))(
        m.kernel.value, m.bias.value
    )
    np.testing.assert_allclose(m_ct.kernel.value, ref_k, rtol=1e-6)
    np.testing.assert_allclose(m_ct.bias.value, ref_b, rtol=1e-6)
