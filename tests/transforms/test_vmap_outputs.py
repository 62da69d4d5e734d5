"""vmap outputs: per-Variable out_axes, aliasing between inputs and outputs,
captured modules, and the sharding names of stacked layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie
from ramie.errors import GraphStructureError, TransformError


class Block(ramie.Module):
    def __init__(self, rngs: ramie.Rngs):
        self.linear = ramie.Linear(2, 3, rngs=rngs)
        self.bn = ramie.BatchNorm(3, use_running_average=False, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.linear(x))


def _axes():
    abstract = ramie.eval_shape(lambda: Block(ramie.Rngs(0)))
    return ramie.prefix(abstract, {ramie.BatchStat: 0, ...: None})


@pytest.mark.parametrize("graph_updates", [True, False])
def test_prefix_state_as_out_axes_stacks_only_the_chosen_variables(graph_updates):
    axes = _axes()

    @ramie.vmap(in_axes=(None, 0), out_axes=axes, graph_updates=graph_updates)
    def create(seed, _):
        return Block(ramie.Rngs(seed))

    block = create(0, jnp.arange(4))
    reference = Block(ramie.Rngs(0))
    # broadcast Variables come out once, stacked ones once per example
    np.testing.assert_allclose(block.linear.kernel.value, reference.linear.kernel.value)
    assert block.bn.mean.value.shape == (4, 3)
    np.testing.assert_allclose(block.bn.mean.value, jnp.zeros((4, 3)))


def test_prefix_state_out_axes_then_in_axes_match_jax_vmap():
    axes = _axes()
    block = ramie.vmap(lambda _: Block(ramie.Rngs(0)), out_axes=axes)(jnp.arange(4))
    xs = jax.random.normal(jax.random.key(1), (4, 5, 2))

    ys = ramie.vmap(lambda m, x: m(x), in_axes=(axes, 0))(block, xs)

    kernel, bias = block.linear.kernel.value, block.linear.bias.value
    h = xs @ kernel + bias
    mean = h.mean(axis=1, keepdims=True)
    var = h.var(axis=1, keepdims=True)
    expected = (h - mean) / jnp.sqrt(var + 1e-5)
    np.testing.assert_allclose(ys, expected, rtol=1e-4, atol=1e-5)
    # the per-example running means were updated on each example's batch
    np.testing.assert_allclose(
        block.bn.mean.value, 0.01 * mean[:, 0, :], rtol=1e-4, atol=1e-6
    )


def test_prefix_of_a_tuple_gives_one_prefix_per_node():
    m = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
    p1, p2 = ramie.prefix((m, m), {ramie.Param: 0})
    assert p1.to_pure_dict() == p2.to_pure_dict() == {"kernel": 0, "bias": 0}


def test_returning_an_argument_with_another_axis_is_inconsistent_aliasing():
    m = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
    before = m.kernel.value

    with pytest.raises(TransformError, match=r"Inconsistent aliasing detected") as e:
        ramie.vmap(lambda m: m, in_axes=0, out_axes=1)(m)
    assert "in_axes 0" in str(e.value) and "out_axes 1" in str(e.value)
    assert m.kernel.value is before  # nothing applied


def test_returning_an_argument_with_its_own_axis_gives_the_callers_object():
    m = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
    assert ramie.vmap(lambda m: m, in_axes=0, out_axes=0)(m) is m


def test_returning_an_argument_without_graph_updates_is_a_duplicate():
    m = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
    with pytest.raises(GraphStructureError, match=r"Duplicate Param"):
        ramie.vmap(lambda m: m, graph_updates=False)(m)


@pytest.mark.parametrize("graph_updates", [True, False])
def test_returning_a_captured_module_is_an_error(graph_updates):
    outside = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    f = ramie.vmap(lambda x: outside, graph_updates=graph_updates)
    with pytest.raises(ValueError, match=r"Cannot return captured Variable Linear"):
        f(jnp.zeros((4,)))


def test_variable_as_tree_mode_prefix_is_an_error_when_decorating():
    with pytest.raises(TransformError, match=r"Variables prefixes are not supported"):
        ramie.vmap(lambda v: v, in_axes=(ramie.Variable(0),), graph=False)


def test_transform_metadata_with_state_axes_names_only_stacked_variables():
    axes = ramie.StateAxes({(ramie.Param, ramie.RngState): 0, ...: None})
    init = ramie.with_partitioning(ramie.initializers.lecun_normal(), ("in", "out"))

    class Layer(ramie.Module):
        @ramie.split_rngs(splits=3)
        @ramie.vmap(
            in_axes=(axes, axes), transform_metadata={ramie.PARTITION_NAME: "layers"}
        )
        def __init__(self, rngs):
            self.linear = ramie.Linear(2, 2, kernel_init=init, rngs=rngs)
            self.scale = ramie.BatchStat(
                jnp.ones(2), out_sharding=("out",)
            )  # broadcast: no new axis

    layer = Layer(ramie.Rngs(0))
    assert layer.linear.kernel.value.shape == (3, 2, 2)
    assert layer.linear.kernel.get_metadata()["out_sharding"] == ("layers", "in", "out")
    assert layer.scale.value.shape == (2,)
    assert layer.scale.get_metadata()["out_sharding"] == ("out",)


def test_tuple_prefix_for_one_module_passed_twice_matches_jax_vmap():
    stacked = ramie.vmap(lambda _: ramie.Linear(2, 3, rngs=ramie.Rngs(0)))(
        jnp.arange(4)
    )
    ma1, ma2 = ramie.prefix((stacked, stacked), {ramie.Param: 0})
    x = jax.random.normal(jax.random.key(2), (2,))

    y = ramie.vmap(lambda a, b, x: a(x) + b(x), in_axes=(ma1, ma2, None))(
        stacked, stacked, x
    )
    kernel, bias = stacked.kernel.value, stacked.bias.value
    expected = jax.vmap(lambda k, b: 2 * (x @ k + b))(kernel, bias)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_tuple_prefix_giving_a_shared_variable_two_axes_is_an_error():
    shared = ramie.Param(jnp.ones((4, 4)))
    a = ramie.Dict(x=shared)
    b = ramie.Dict(y=shared)
    pa, pb = ramie.prefix((a, b), lambda path, v: 0 if path[-1] == "x" else 1)
    with pytest.raises(TransformError, match=r"different prefixes[\s\S]*x: 0"):
        ramie.vmap(lambda a, b: None, in_axes=(pa, pb))(a, b)
