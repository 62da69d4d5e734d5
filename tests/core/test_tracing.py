"""Tests for ``ramie/_src/core/tracing.py``: which JAX trace is active, its
human-readable name, and the checks and warnings Variables build on it."""

from __future__ import annotations

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie as nnx
from ramie._src.core.tracing import current_trace, describe_trace
from ramie.errors import LostStateWarning, TraceContextError


def test_current_trace_is_none_when_eager():
    assert current_trace() is None
    assert describe_trace(None) == "eager execution"


@pytest.mark.parametrize(
    "transform, name",
    [
        (jax.jit, "jax.jit"),
        (jax.vmap, "jax.vmap"),
        (jax.grad, "jax.grad"),
    ],
)
def test_describe_trace_names_the_transform(transform, name):
    seen = []

    def f(x):
        t = current_trace()
        assert t is not None
        seen.append(describe_trace(t))
        return jnp.sum(x)

    transform(f)(jnp.ones(2))
    assert name in seen[0]


def test_nested_transforms_have_distinct_traces():
    traces = []

    @jax.jit
    def outer(x):
        traces.append(current_trace())
        return jax.vmap(inner)(x)

    def inner(x):
        traces.append(current_trace())
        return x

    outer(jnp.ones((2, 2)))
    assert traces[0] is not traces[1]


def test_variable_created_in_outer_transform_cannot_change_in_inner():
    @jax.jit
    def f(x):
        v = nnx.Param(x)

        def body(carry, _):
            v.value = carry  # v belongs to the jit trace, not the scan trace
            return carry, None

        jax.lax.scan(body, x, None, length=2)
        return v.value

    with pytest.raises(TraceContextError, match=r"jax\.jit / jax\.lax control flow"):
        f(jnp.ones(2))


def test_variable_changes_in_its_own_transform_are_fine():
    def body(carry, _):
        v = nnx.BatchStat(carry)
        v.value = v.value * 2
        return v.value, None

    out, _ = jax.lax.scan(body, jnp.ones(2), None, length=3)
    np.testing.assert_array_equal(out, [8.0, 8.0])


class Block(nnx.Module):
    def __init__(self):
        self.count = nnx.BatchStat(jnp.zeros(()))
        self.w = nnx.Param(jnp.ones(2))


class Net(nnx.Module):
    def __init__(self):
        self.block = Block()


def test_lost_update_through_raw_jit_warns_with_path():
    net = Net()

    @jax.jit
    def step(net, x):
        net.block.count.value = net.block.count.value + 1  # dropped by JAX
        return jnp.sum(net.block.w.value * x)

    with pytest.warns(LostStateWarning, match=r"BatchStat at block\.count.*jax\.jit"):
        step(net, jnp.ones(2))
        gc.collect()
    assert float(net.block.count.value) == 0.0


def test_no_warning_when_module_is_returned():
    import warnings

    net = Net()

    @jax.jit
    def step(net):
        net.block.count.value = net.block.count.value + 1
        return net

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = step(net)
        gc.collect()
    assert float(new.block.count.value) == 1.0


def test_no_warning_when_nothing_changes():
    import warnings

    net = Net()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = jax.jit(lambda n: jnp.sum(n.block.w.value))(net)
        gc.collect()
    assert float(out) == 2.0
