"""Axes, shardings and argnums specs describe arguments; graph objects there are
errors raised when the transform is created."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import ramie
from ramie.errors import TransformError

MAKERS = {
    "jit_in": lambda m: ramie.jit(lambda x: x, in_shardings=m),
    "jit_out": lambda m: ramie.jit(out_shardings=(None, m)),
    "vmap_in": lambda m: ramie.vmap(lambda x: x, in_axes=m),
    "vmap_out": lambda m: ramie.vmap(out_axes=(0, m)),
    "pmap_in": lambda m: ramie.pmap(lambda x: x, in_axes=(m,)),
    "scan_in": lambda m: ramie.scan(lambda c, x: (c, x), in_axes=(ramie.Carry, m)),
    "grad": lambda m: ramie.grad(lambda x: x, argnums=m),
    "value_and_grad": lambda m: ramie.value_and_grad(argnums=[0, m]),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("node", ["dict", "variable"])
def test_graph_object_in_a_spec_is_rejected(name, node):
    m = ramie.Dict(a=ramie.Param(1)) if node == "dict" else ramie.Param(jnp.ones(2))
    with pytest.raises(TransformError, match="Graph nodes are not allowed as prefixes"):
        MAKERS[name](m)


def test_the_message_names_the_spec_and_shows_the_fix():
    with pytest.raises(TransformError) as info:
        ramie.vmap(lambda m, x: x, in_axes=(ramie.Linear(2, 2, rngs=ramie.Rngs(0)), 0))
    msg = str(info.value)
    assert "ramie.vmap(in_axes=...)" in msg and "found a Linear" in msg
    assert "ramie.StateAxes" in msg


def test_specs_without_graph_objects_are_accepted():
    axes = ramie.StateAxes({ramie.Param: 0, ...: None})
    assert callable(ramie.vmap(lambda m, x: x, in_axes=(axes, 0)))
    assert callable(ramie.grad(lambda m: 0.0, argnums=ramie.DiffState(0, ramie.Param)))


# ------------------------------------------------------ aliasing across args
class _Foo(ramie.Module):
    def __init__(self):
        self.a = ramie.Param(jnp.zeros((4, 4)))


def test_one_module_mapped_two_ways_is_an_error():
    m = _Foo()
    f = ramie.vmap(lambda a, b: None, in_axes=(0, 1))
    with pytest.raises(TransformError, match=r"Inconsistent aliasing") as info:
        f(m, m)
    assert "args[0].a" in str(info.value) and "args[1].a" in str(info.value)


def test_one_variable_mapped_and_broadcast_is_an_error():
    v = ramie.Param(jnp.arange(3.0))
    f = ramie.vmap(lambda a, b: a[...] + b[...], in_axes=(0, None))
    with pytest.raises(TransformError, match=r"Inconsistent aliasing"):
        f(v, v)


def test_one_module_mapped_the_same_way_twice_is_fine():
    m = _Foo()
    out = ramie.vmap(lambda a, b: a.a[...] + b.a[...], in_axes=(0, 0))(m, m)
    assert out.shape == (4, 4)
