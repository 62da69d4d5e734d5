"""Tests for ``ramie.vmap`` (and ``pmap``) against ``jax.vmap`` on the pure
split/merge function: axes for modules, stacked module creation, out_axes,
collectives and the broadcast-mutation error."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tx_helpers import assert_trees_equal, pure_state

import ramie
from ramie.errors import TransformError


class Counter(ramie.Variable):
    pass


class Block(ramie.Module):
    def __init__(self, rngs: ramie.Rngs):
        self.linear = ramie.Linear(3, 3, rngs=rngs)
        self.calls = ramie.BatchStat(jnp.array(0))

    def __call__(self, x):
        self.calls.value += 1
        return jnp.tanh(self.linear(x))


XS = jax.random.normal(jax.random.key(0), (4, 3))


def _create(n: int, seed: int = 0):
    @ramie.split_rngs(splits=n)
    @ramie.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
        return Block(rngs)

    return create(ramie.Rngs(seed))


# ---------------------------------------------------------- in_axes
def test_broadcast_module_matches_jax_vmap():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    ys = ramie.vmap(lambda m, x: m(x), in_axes=(None, 0))(model, XS)
    gd, st = ramie.split(model)
    ref = jax.vmap(lambda st, x: ramie.merge(gd, st)(x), in_axes=(None, 0))(st, XS)
    np.testing.assert_allclose(ys, ref, rtol=1e-6)
    assert ys.shape == (4, 2)


def test_mapped_module_matches_jax_vmap():
    blocks = _create(4)
    before = pure_state(blocks)
    xs = jax.random.normal(jax.random.key(1), (4, 2, 3))
    gd, st = ramie.split(ramie.clone(blocks))
    ys = ramie.vmap(lambda m, x: m(x), in_axes=(0, 0))(blocks, xs)

    def pure(st, x):
        m = ramie.merge(gd, st, copy=True)
        y = m(x)
        return y, ramie.state(m)

    ref, ref_state = jax.vmap(pure)(st, xs)
    np.testing.assert_allclose(ys, ref, rtol=1e-6)
    assert_trees_equal(
        pure_state(blocks), jax.tree.map(np.asarray, ramie.to_pure_dict(ref_state))
    )
    # mapped Variables are updated per example
    np.testing.assert_array_equal(blocks.calls.value, before["calls"] + 1)


def test_int_axes_for_a_module_on_axis_1():
    @ramie.split_rngs(splits=4)
    @ramie.vmap(in_axes=(0,), out_axes=1)
    def create(rngs):
        return ramie.Linear(3, 3, rngs=rngs)

    layers = create(ramie.Rngs(0))
    assert layers.kernel.value.shape == (3, 4, 3)
    assert layers.bias.value.shape == (3, 4)
    k = layers.kernel.value
    ys = ramie.vmap(lambda m, x: m(x), in_axes=(1, 0))(layers, XS)
    ref = jnp.stack([XS[i] @ k[:, i] + layers.bias.value[:, i] for i in range(4)])
    np.testing.assert_allclose(ys, ref, rtol=1e-5, atol=1e-6)


def test_state_axes_per_filter():
    model = Block(ramie.Rngs(0))
    model.calls.value = jnp.zeros((4,), jnp.int32)
    axes = ramie.StateAxes({ramie.Param: None, ramie.BatchStat: 0})
    ys = ramie.vmap(lambda m, x: m(x), in_axes=(axes, 0))(model, XS)
    np.testing.assert_allclose(ys, jnp.tanh(model.linear(XS)), rtol=1e-6)
    np.testing.assert_array_equal(model.calls.value, np.ones(4))
    assert model.linear.kernel.value.shape == (3, 3)  # broadcast, untouched


def test_state_axes_unmatched_variable_names_its_path():
    model = Block(ramie.Rngs(0))
    axes = ramie.StateAxes({ramie.Param: None})
    with pytest.raises(ValueError, match=r"calls"):
        ramie.vmap(lambda m, x: m(x), in_axes=(axes, 0))(model, XS)


def test_state_axes_for_a_non_module_argument_is_an_error():
    with pytest.raises(ValueError, match=r"StateAxes"):
        ramie.vmap(lambda x: x, in_axes=(ramie.StateAxes({...: 0}),))(XS)


def test_broadcast_module_updated_uniformly_is_written_back():
    model = Block(ramie.Rngs(0))
    ramie.vmap(lambda m, x: m(x), in_axes=(None, 0))(model, XS)
    assert int(model.calls.value) == 1


def test_broadcast_module_changed_per_example_is_an_error():
    model = Block(ramie.Rngs(0))
    before = pure_state(model)

    def f(m, x):
        m.calls.value = x.sum().astype(jnp.int32)
        return x

    with pytest.raises(ValueError, match=r"in_axes=None"):
        ramie.vmap(f, in_axes=(None, 0))(model, XS)
    assert_trees_equal(pure_state(model), before)  # nothing half-written


def test_broadcast_module_changed_per_example_error_names_the_path():
    model = Block(ramie.Rngs(0))

    def f(m, x):
        m.calls.value = x.sum().astype(jnp.int32)
        return x

    with pytest.raises(ValueError, match=r"calls"):
        ramie.vmap(f, in_axes=(None, 0))(model, XS)


def test_new_per_example_variable_on_a_broadcast_argument_is_an_error():
    model = Block(ramie.Rngs(0))

    def f(m, x):
        m.extra = ramie.Param(x)
        return x

    with pytest.raises(ValueError, match=r"ramie.vmap.*extra"):
        ramie.vmap(f, in_axes=(None, 0))(model, XS)
    assert not hasattr(model, "extra")  # nothing half-applied


def test_new_variable_on_a_mapped_argument_is_stacked():
    model = ramie.vmap(lambda x: Block(ramie.Rngs(0)), in_axes=0)(XS)  # a stack

    def f(m, x):
        m.extra = ramie.Param(2 * x)
        return x

    ramie.vmap(f, in_axes=(0, 0))(model, XS)
    np.testing.assert_array_equal(model.extra.value, 2 * XS)


def test_in_axes_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"in_axes has 1 entries"):
        ramie.vmap(lambda a, b: a, in_axes=(0,))(XS, XS)


# ----------------------------------------------------- stacked creation
def test_stacked_creation_gives_distinct_reproducible_layers():
    blocks = _create(5, seed=0)
    k = np.asarray(blocks.linear.kernel.value)
    assert k.shape == (5, 3, 3) and blocks.linear.bias.value.shape == (5, 3)
    assert blocks.calls.value.shape == (5,)
    for i in range(5):
        for j in range(i):
            assert not np.allclose(k[i], k[j])
    again = _create(5, seed=0)
    assert_trees_equal(pure_state(again), pure_state(blocks))
    other = _create(5, seed=1)
    assert not np.allclose(other.linear.kernel.value, k)


def test_stacked_creation_matches_manual_split_and_jax_vmap():
    rngs = ramie.Rngs(0)
    blocks = _create(3, seed=0)
    # split_rngs draws one key from the stream, then splits it
    ref_rngs = ramie.Rngs(0)
    base = ref_rngs.default()
    keys = jax.random.split(base, 3)
    expected = jax.vmap(lambda k: ramie.split(Block(ramie.Rngs(k)))[1])(keys)
    np.testing.assert_allclose(
        blocks.linear.kernel.value, expected["linear"]["kernel"].value, rtol=1e-6
    )
    del rngs


def test_split_rngs_restores_the_caller_stream():
    rngs = ramie.Rngs(0)

    @ramie.split_rngs(splits=4)
    @ramie.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
        return Block(rngs)

    create(rngs)
    assert rngs.default.key.value.shape == ()
    # the parent stream advanced by one draw, so a second call differs
    a = create(rngs)
    b = create(rngs)
    assert not np.allclose(a.linear.kernel.value, b.linear.kernel.value)


def test_out_axes_state_axes_for_created_modules():
    @ramie.split_rngs(splits=3)
    @ramie.vmap(in_axes=(0,), out_axes=ramie.StateAxes({ramie.Param: 0, ...: None}))
    def create(rngs):
        return Block(rngs)

    blocks = create(ramie.Rngs(0))
    assert blocks.linear.kernel.value.shape == (3, 3, 3)
    assert blocks.calls.value.shape == ()


def test_transform_metadata_adds_partition_name():
    init = ramie.with_partitioning(ramie.initializers.lecun_normal(), ("in", "out"))

    @ramie.split_rngs(splits=2)
    @ramie.vmap(
        in_axes=(0,), out_axes=0, transform_metadata={ramie.PARTITION_NAME: "layers"}
    )
    def create(rngs):
        return ramie.Linear(3, 3, kernel_init=init, rngs=rngs)

    m = create(ramie.Rngs(0))
    assert m.kernel.get_metadata()["out_sharding"] == ("layers", "in", "out")


# ---------------------------------------------------------------- out_axes
def test_out_axes_int_and_none():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    ys = ramie.vmap(lambda m, x: m(x), in_axes=(None, 0), out_axes=1)(model, XS)
    assert ys.shape == (2, 4)
    np.testing.assert_allclose(ys, model(XS).T, rtol=1e-6)
    y, k = ramie.vmap(
        lambda m, x: (m(x), m.kernel.value), in_axes=(None, 0), out_axes=(0, None)
    )(model, XS)
    assert y.shape == (4, 2) and k.shape == (3, 2)
    ref = jax.vmap(lambda x: (x * 2, x.sum()), out_axes=(1, 0))(XS)
    got = ramie.vmap(lambda x: (x * 2, x.sum()), out_axes=(1, 0))(XS)
    assert_trees_equal(got, ref)


def test_returning_an_argument_module_gives_the_callers_object():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    out = ramie.vmap(lambda m, x: m, in_axes=(None, 0), out_axes=None)(model, XS)
    assert out is model


def test_axis_size_without_mapped_inputs():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    out = ramie.vmap(lambda m: m.kernel.value.sum(), in_axes=None, axis_size=3)(model)
    np.testing.assert_allclose(
        out, np.full(3, float(model.kernel.value.sum())), rtol=1e-6
    )


# ------------------------------------------------------------ collectives
def test_axis_name_collectives():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))

    def f(m, x):
        y = m(x)
        return y - jax.lax.pmean(y, "batch")

    ys = ramie.vmap(f, in_axes=(None, 0), axis_name="batch")(model, XS)
    ref = jax.vmap(lambda x: model(x) - jax.lax.pmean(model(x), "b"), axis_name="b")(XS)
    np.testing.assert_allclose(ys, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ys.mean(0), 0.0, atol=1e-6)


def test_collective_state_update_is_uniform_and_written_back():
    model = Block(ramie.Rngs(0))
    model.mean = ramie.BatchStat(jnp.zeros(3))

    def f(m, x):
        m.mean.value = jax.lax.pmean(x, "i")  # the same value on every example
        return x

    ramie.vmap(f, in_axes=(None, 0), axis_name="i")(model, XS)
    np.testing.assert_allclose(model.mean.value, XS.mean(0), rtol=1e-6)


# ----------------------------------------------------------------- nesting
def test_vmap_inside_jit_and_grad():
    blocks = _create(3)
    xs = jax.random.normal(jax.random.key(1), (3, 3))

    @ramie.jit
    def loss(m, xs):
        return ramie.grad(
            lambda m: ramie.vmap(lambda m, x: m(x).sum(), in_axes=(0, 0))(m, xs).sum()
        )(m)

    grads = loss(blocks, xs)
    gd, params, rest = ramie.split(blocks, ramie.Param, ...)

    def pure(params):
        return jax.vmap(lambda p, r, x: ramie.merge(gd, p, r, copy=True)(x).sum())(
            params, rest, xs
        ).sum()

    ref = jax.grad(pure)(params)
    assert_trees_equal(
        ramie.to_pure_dict(grads), ramie.to_pure_dict(ref), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(blocks.calls.value, np.ones(3))


def test_nested_vmap_over_two_axes():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    xs = jax.random.normal(jax.random.key(2), (2, 4, 3))
    inner = ramie.vmap(lambda m, x: m(x), in_axes=(None, 0))
    ys = ramie.vmap(inner, in_axes=(None, 0))(model, xs)
    np.testing.assert_allclose(ys, model(xs), rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------------- pmap
def test_pmap_over_devices():
    n = 2
    if jax.local_device_count() < n:
        pytest.skip("needs 2 devices")
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    xs = jax.random.normal(jax.random.key(3), (n, 3))
    ys = ramie.pmap(
        lambda m, x: m(x), in_axes=(None, 0), devices=jax.local_devices()[:n]
    )(model, xs)
    np.testing.assert_allclose(np.asarray(ys), model(xs), rtol=1e-5, atol=1e-6)


# ------------------------------------------- keywords and structure changes
class _Stack(ramie.Module):
    @ramie.vmap
    def __init__(self, seed):
        self.kernel = ramie.Param(jax.random.uniform(jax.random.key(seed), (2, 3)))
        self.bias = ramie.Param(jnp.zeros((3,)))

    @ramie.vmap(in_axes=0, out_axes=1)
    def __call__(self, x):
        assert self.kernel.ndim == 2 and x.ndim == 1
        return x @ self.kernel + self.bias


def test_vmap_over_init_creates_stacked_attributes():
    seeds = jnp.arange(4)
    stack = _Stack(seeds)
    assert stack.kernel.shape == (4, 2, 3) and stack.bias.shape == (4, 3)
    for i in range(4):  # each slice is what the unbatched constructor makes
        ref = jax.random.uniform(jax.random.key(seeds[i]), (2, 3))
        np.testing.assert_array_equal(stack.kernel.value[i], ref)
    x = jax.random.normal(jax.random.key(1), (4, 2))
    y = stack(x)
    expected = jnp.einsum("bi,bio->ob", x, stack.kernel.value)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_vmap_over_init_new_variables_follow_state_axes():
    axes = ramie.StateAxes({ramie.Param: 0, ...: None})

    class Block(ramie.Module):
        @ramie.vmap(in_axes=(axes, 0))
        def __init__(self, key):
            self.linear = ramie.Linear(3, 3, rngs=ramie.Rngs(key))
            self.scale = ramie.Variable(jnp.ones((2,)))  # broadcast: not stacked

    block = Block(key=jax.random.split(jax.random.key(0), 5))  # keyword argument
    assert block.linear.kernel.shape == (5, 3, 3)
    assert block.scale.shape == (2,)


def test_vmap_keyword_arguments_take_their_parameter_in_axes():
    @ramie.vmap(in_axes=(0, None))
    def f(x, y):
        return x + y

    x, y = jnp.arange(3.0), jnp.ones(2)
    np.testing.assert_array_equal(f(x, y=y), f(x, y))
    np.testing.assert_array_equal(f(x=x, y=y), x[:, None] + y[None, :])


def test_state_axes_from_a_state_of_axes():
    model = ramie.Linear(2, 3, rngs=ramie.Rngs(0))
    axes_state = ramie.state(model)
    axes_state["kernel"] = 0
    axes_state["bias"] = 1
    axes = ramie.StateAxes(axes_state)
    assert axes.map_prefix(("kernel",), None) == 0
    assert axes.map_prefix(("bias",), None) == 1

    stack = ramie.vmap(
        lambda: ramie.Linear(2, 3, rngs=ramie.Rngs(0)), out_axes=axes, axis_size=4
    )()
    assert stack.kernel.shape == (4, 2, 3)
    assert stack.bias.shape == (3, 4)


def test_changed_broadcast_variable_error_names_it_with_jax_wording():
    class Env(ramie.Module):
        def __init__(self):
            self.shared = ramie.BatchStat(jnp.array(1))
            self.step = ramie.BatchStat(jnp.zeros((4,), jnp.int32))

    env = Env()
    axes = ramie.StateAxes({ramie.PathContains("shared"): None, ...: 0})

    def f(e):
        e.step.value += 1
        e.shared.value = e.shared.value + e.step.value  # per-example now

    with pytest.raises(
        TransformError, match=r"'shared'.*got axis spec None but output was batched"
    ):
        ramie.vmap(f, in_axes=(axes,))(env)
    assert int(env.shared.value) == 1  # nothing written back


def test_prefix_of_a_dict_of_variables_as_in_axes():
    d = {"a": ramie.Param(jnp.array(2)), "b": ramie.BatchStat(jnp.arange(5))}
    axes = ramie.prefix(d, lambda path, v: 0 if "b" in path else None)
    out = ramie.vmap(lambda d: d["a"][...] * d["b"][...], in_axes=(axes,))(d)
    np.testing.assert_array_equal(out, 2 * jnp.arange(5))
