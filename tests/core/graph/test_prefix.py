"""Tests for ``ramie.prefix``: State prefixes, Module-shaped prefixes for raw
``jax.vmap`` (``graph=False``) and one prefix per node for several nodes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie as nnx
from ramie.errors import TransformError


class Foo(nnx.Module):
    def __init__(self, rngs):
        self.w = nnx.Param(rngs.normal((4, 2, 3)))
        self.s = nnx.BatchStat(jnp.zeros(3))


def test_tree_prefix_works_as_raw_jax_vmap_in_axes():
    model = Foo(nnx.Rngs(0))
    axes = nnx.prefix(model, {nnx.Param: 0, ...: None}, graph=False)
    assert type(axes) is Foo and axes.w == 0 and axes.s is None
    x = jnp.ones((2,))
    y = jax.vmap(lambda m, x: x @ m.w + m.s, in_axes=(axes, None))(model, x)
    want = jnp.stack([x @ model.w.value[i] for i in range(4)])
    np.testing.assert_allclose(y, want, rtol=1e-6)


def test_tree_prefix_is_accepted_by_ramie_vmap():
    model = Foo(nnx.Rngs(0))
    axes = nnx.prefix(model, {nnx.Param: 0, ...: None}, graph=False)
    y = nnx.vmap(lambda m, x: x @ m.w, in_axes=(axes, None))(model, jnp.ones(2))
    assert y.shape == (4, 3)


def test_prefix_matches_flax_for_a_state_and_a_tree():
    fnnx = pytest.importorskip("flax.nnx")

    class Theirs(fnnx.Module):
        def __init__(self, rngs):
            self.w = fnnx.Param(rngs.normal((4, 2, 3)))
            self.s = fnnx.BatchStat(jnp.zeros(3))

    fmap = {nnx.Param: 0, ...: None}
    ours = nnx.prefix(Foo(nnx.Rngs(0)), fmap, graph=False)
    theirs = fnnx.prefix(Theirs(fnnx.Rngs(0)), {fnnx.Param: 0, ...: None}, graph=False)
    assert (ours.w, ours.s) == (theirs.w, theirs.s)
    pure = nnx.prefix(Foo(nnx.Rngs(0)), fmap).to_pure_dict()
    assert pure == {"w": 0, "s": None}


def test_prefix_of_several_nodes_gives_one_per_node():
    model = Foo(nnx.Rngs(0))
    p1, p2 = nnx.prefix((model, model), {nnx.Param: 0, ...: None}, graph=True)
    assert p1.to_pure_dict() == p2.to_pure_dict() == {"w": 0, "s": None}

    @nnx.vmap(in_axes=(p1, p2, None))
    def forward(a, b, x):
        assert a is b
        return x @ a.w + x @ b.w

    assert forward(model, model, jnp.ones(2)).shape == (4, 3)


# misuse: one Variable shared by two arguments mapped two ways
def test_prefix_of_aliased_variable_with_two_axes_is_refused():
    @nnx.dataclass
    class A(nnx.Module):
        a: nnx.Variable
        b: nnx.Variable

    v = nnx.Param(jnp.ones((4, 2, 3)))
    left, right = (
        A(nnx.Param(jnp.ones((4, 2, 3))), v),
        A(v, nnx.Param(jnp.ones((2, 4, 3)))),
    )
    p1, p2 = nnx.prefix(
        (left, right),
        lambda path, x: 0 if x is left.a or (x is v and path == ("b",)) else 1,
    )
    with pytest.raises(TransformError, match="Inconsistent aliasing detected"):
        nnx.vmap(lambda l, r: l.a + r.b, in_axes=(p1, p2))(left, right)


@pytest.mark.parametrize("graph", [True, False])
def test_tree_prefixes_of_several_nodes_drive_vmap_out_axes_in_every_mode(graph):
    class Block(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(2, 3, rngs=rngs)
            self.bn = nnx.BatchNorm(3, rngs=rngs)

    abstract = nnx.eval_shape(lambda: Block(nnx.Rngs(0)))
    rngs = nnx.Rngs(0)
    model_axes, rngs_axes = nnx.prefix(
        (abstract, rngs), {nnx.BatchStat: 0, ...: None}, graph=False
    )
    assert type(model_axes) is Block and type(rngs_axes) is nnx.Rngs

    @nnx.vmap(
        in_axes=(None,), out_axes=model_axes, axis_size=4, graph=graph,
        graph_updates=False,
    )  # fmt: skip
    def create(key):
        return Block(nnx.Rngs(key))

    block = create(jax.random.key(1))
    assert block.bn.mean.shape == (4, 3)  # mapped: stacked
    assert block.linear.kernel.shape == (2, 3)  # broadcast: one copy
    np.testing.assert_array_equal(
        block.linear.kernel.value,
        Block(nnx.Rngs(jax.random.key(1))).linear.kernel.value,
    )


def test_tree_prefix_as_jit_out_shardings():
    mesh = jax.sharding.Mesh(jax.devices()[:1], ("d",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    abstract = nnx.eval_shape(lambda: nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    spec = nnx.prefix(abstract, {...: sharding}, graph=False)

    @nnx.jit(out_shardings=spec, graph=False)
    def create():
        return nnx.Linear(2, 3, rngs=nnx.Rngs(0))

    model = create()
    assert model.kernel.sharding == sharding and model.bias.sharding == sharding
