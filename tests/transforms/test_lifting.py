"""Tests for the graph <-> pytree lifting shared by the transforms, and for the
misuse diagnostics around raw JAX transforms: the lost-state warning and the
trace-context error."""

from __future__ import annotations

import gc
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tx_helpers import assert_trees_equal, pure_state

import ramie
from ramie.errors import LostStateWarning, TraceContextError


class Counter(ramie.Variable):
    pass


class Sub(ramie.Module):
    def __init__(self):
        self.count = Counter(jnp.array(0))


class Model(ramie.Module):
    def __init__(self):
        self.linear = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
        self.sub = Sub()
        self.layers = [Sub()]

    def __call__(self, x):
        self.sub.count.value += 1
        return self.linear(x)


X = jnp.ones((3, 2))


def _no_warnings(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = fn()
        gc.collect()
    return out


# ------------------------------------------------------ LostStateWarning
def test_lost_state_warning_fires_and_names_the_path():
    model = Model()

    def f(m, x):
        return m(x)

    with pytest.warns(LostStateWarning, match=r"sub\.count") as record:
        jax.jit(f)(model, X)
        gc.collect()
    msg = str(record[0].message)
    assert "jax.jit" in msg and "return the module" in msg and "ramie.jit" in msg
    assert int(model.sub.count.value) == 0  # indeed lost


def test_lost_state_warning_names_list_paths_and_vmap():
    model = Model()

    def f(m, x):
        m.layers[0].count.value += 1
        return x

    with pytest.warns(LostStateWarning, match=r"layers\[0\]\.count.*jax\.vmap"):
        jax.vmap(f, in_axes=(None, 0))(model, X)
        gc.collect()


def test_no_warning_when_the_module_is_returned():
    model = Model()

    def f(m, x):
        return m(x), m

    y, new = _no_warnings(lambda: jax.jit(f)(model, X))
    assert int(new.sub.count.value) == 1
    assert int(model.sub.count.value) == 0  # jax.jit is functional
    np.testing.assert_allclose(y, model.linear(X), rtol=1e-6)
    # the returned module is a working module
    np.testing.assert_allclose(new(X), y, rtol=1e-6)


def test_no_warning_without_mutation_or_with_ramie_jit():
    model = Model()
    _no_warnings(lambda: jax.jit(lambda m, x: m.linear(x))(model, X))
    _no_warnings(lambda: ramie.jit(lambda m, x: m(x))(model, X))
    assert int(model.sub.count.value) == 1


def test_jax_jit_on_split_state_round_trip():
    model = Model()
    gd, st = ramie.split(model)

    @jax.jit
    def f(st, x):
        m = ramie.merge(gd, st)
        y = m(x)
        return y, ramie.split(m)[1]

    y, st = _no_warnings(lambda: f(st, X))
    ramie.update(model, st)
    assert int(model.sub.count.value) == 1


# ------------------------------------------------------ TraceContextError
@pytest.mark.parametrize(
    "transform, name",
    [
        (lambda f: jax.jit(f), "jax.jit"),
        (lambda f: jax.vmap(f), "jax.vmap"),
        (lambda f: jax.grad(lambda x: f(x).sum()), "jax.grad"),
        (lambda f: ramie.jit(f), "jax.jit"),
    ],
    ids=["jax.jit", "jax.vmap", "jax.grad", "ramie.jit"],
)
def test_trace_context_error_names_path_transform_and_fix(transform, name):
    model = Model()
    before = pure_state(model)

    def f(x):
        model.layers[0].count.value += 1
        return x

    with pytest.raises(TraceContextError) as info:
        transform(f)(jnp.ones(2))
    msg = str(info.value)
    assert "layers[0].count" in msg
    assert "Counter" in msg
    assert name in msg
    assert "eager execution" in msg
    assert "ramie.jit" in msg and "ramie.split" in msg  # the fix, as code
    assert isinstance(info.value, ValueError)
    assert_trees_equal(pure_state(model), before)


def test_trace_context_error_for_set_value_and_item_assignment():
    model = Model()

    @jax.jit
    def f(x):
        model.linear.bias[...] = x
        return x

    with pytest.raises(TraceContextError, match=r"linear\.bias"):
        f(jnp.ones(2))

    @jax.jit
    def g(x):
        model.linear.kernel.set_value(x)
        return x

    with pytest.raises(TraceContextError, match=r"linear\.kernel"):
        g(jnp.ones((2, 2)))


def test_ramie_transform_on_an_outer_module_inside_jax_jit_is_an_error():
    bn = ramie.BatchNorm(2, rngs=ramie.Rngs(0))

    @jax.jit
    def f(x):
        return ramie.grad(lambda m: m(x).sum())(bn)

    with pytest.raises(TraceContextError, match=r"eager execution"):
        f(X)


def test_variables_created_inside_a_trace_can_be_mutated():
    @jax.jit
    def f(x):
        m = Model()
        m(x)
        m.sub.count.value += 1
        return m.sub.count.value

    assert int(f(X)) == 2


def test_reading_an_outer_variable_inside_a_trace_is_fine():
    model = Model()
    y = jax.jit(lambda x: model.linear(x))(X)
    np.testing.assert_allclose(y, model.linear(X), rtol=1e-6)


# ------------------------------------------------------- lifting semantics
def test_outputs_referring_to_arguments_are_the_callers_objects_across_transforms():
    model = Model()
    assert ramie.jit(lambda m: m.sub)(model) is model.sub
    assert (
        ramie.grad(lambda m: (m.linear(X).sum(), m.layers[0]), has_aux=True)(model)[1]
        is model.layers[0]
    )
    assert ramie.cond(True, lambda m: m.sub, lambda m: m.sub, model) is model.sub
    assert ramie.eval_shape(lambda m: m.linear, model) is model.linear


def test_shared_subgraphs_across_arguments_stay_shared():
    model = Model()
    model.alias = model.sub

    @ramie.jit
    def f(m, sub):
        assert m.alias is m.sub is sub
        sub.count.value += 5

    f(model, model.sub)
    assert model.alias is model.sub
    assert int(model.sub.count.value) == 5


def test_structural_change_with_shared_subgraphs_inside_one_argument():
    model = Model()

    @ramie.jit
    def f(m):
        m.new = Sub()
        m.other_alias = m.new
        m.alias = m.sub

    f(model)
    assert model.other_alias is model.new
    assert model.alias is model.sub


@pytest.mark.parametrize("transform", ["jit", "grad"])
def test_structural_change_with_an_argument_shared_with_another(transform):
    model = Model()

    def f(m, sub):
        m.new = Sub()
        sub.count.value += 1
        return m.linear(X).sum()

    if transform == "jit":
        ramie.jit(f)(model, model.sub)
    else:
        ramie.grad(f)(model, model.sub)
    assert isinstance(model.new, Sub)
    assert int(model.sub.count.value) == 1


def test_rngs_and_variables_as_direct_arguments():
    rngs = ramie.Rngs(0)
    v = Counter(jnp.array(1))

    @ramie.jit
    def f(rngs, v):
        v.value = v.value + 1
        return rngs()

    k = f(rngs, v)
    assert int(v.value) == 2
    ref = ramie.Rngs(0)
    np.testing.assert_array_equal(jax.random.key_data(k), jax.random.key_data(ref()))
    assert int(rngs.default.count.value) == 1


def test_plain_array_attribute_through_jit():
    class WithArray(ramie.Module):
        def __init__(self):
            self.arr = jnp.zeros(2)

    m = WithArray()

    @ramie.jit
    def bump(m):
        m.arr = m.arr + 1

    bump(m)
    bump(m)
    np.testing.assert_array_equal(m.arr, np.full(2, 2.0))


def test_plain_array_attribute_is_read_by_grad_and_vmap():
    class WithArray(ramie.Module):
        def __init__(self):
            self.arr = jnp.arange(2.0)

    m = WithArray()
    g = ramie.grad(lambda m, x: jnp.sum(m.arr * x), argnums=1)(m, jnp.ones(2))
    np.testing.assert_array_equal(g, np.arange(2.0))
    ys = ramie.vmap(lambda m, x: m.arr * x, in_axes=(None, 0))(m, jnp.ones((3, 2)))
    np.testing.assert_array_equal(ys, np.tile(np.arange(2.0), (3, 1)))


class WithArray(ramie.Module):
    def __init__(self):
        self.arr = jnp.zeros(2)
        self.linear = ramie.Linear(2, 2, rngs=ramie.Rngs(0))


def test_plain_array_attribute_changed_between_jit_calls():
    m = WithArray()
    f = ramie.jit(lambda m, x: m.linear(x) + m.arr)
    x = jnp.ones(2)
    np.testing.assert_allclose(f(m, x), m.linear(x), rtol=1e-6)
    m.arr = jnp.ones(2)
    np.testing.assert_allclose(f(m, x), m.linear(x) + 1, rtol=1e-6)


def test_plain_array_attribute_carried_through_scan():
    m = WithArray()

    def step(m, x):
        m.arr = m.arr + x
        return m, m.arr

    out, ys = ramie.scan(step, in_axes=(ramie.Carry, 0))(m, jnp.ones((3, 2)))
    assert out is m
    np.testing.assert_array_equal(m.arr, np.full(2, 3.0))
    np.testing.assert_array_equal(ys[:, 0], [1.0, 2.0, 3.0])


def test_plain_array_in_a_list_attribute_through_jit():
    class L(ramie.Module):
        def __init__(self):
            self.arrs = [jnp.zeros(1), jnp.ones(1)]

    m = L()

    @ramie.jit
    def inc(m):
        m.arrs[0] = m.arrs[0] + 5

    inc(m)
    np.testing.assert_array_equal(m.arrs[0], [5.0])
    np.testing.assert_array_equal(m.arrs[1], [1.0])
