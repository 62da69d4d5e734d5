"""Transforms reject bound methods of Modules (the module would be a constant)."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import pytest

import ramie
from ramie.errors import TransformError


class Scaled(ramie.Module):
    def __init__(self):
        self.w = ramie.Param(jnp.array(2.0))
        self.calls = ramie.BatchStat(jnp.array(0))

    def apply(self, x):
        self.calls.value += 1
        return self.w.value * x


TRANSFORMS = {
    "jit": lambda f: ramie.jit(f),
    "vmap": lambda f: ramie.vmap(f),
    "pmap": lambda f: ramie.pmap(f),
    "scan": lambda f: ramie.scan(f),
    "grad": lambda f: ramie.grad(f),
    "value_and_grad": lambda f: ramie.value_and_grad(f),
    "remat": lambda f: ramie.remat(f),
    "eval_shape": lambda f: ramie.eval_shape(f, jnp.ones(())),
    "make_jaxpr": lambda f: ramie.make_jaxpr(f),
    "checkify": lambda f: ramie.checkify(f),
    "custom_vjp": lambda f: ramie.custom_vjp(f),
    "vjp": lambda f: ramie.vjp(f, jnp.ones(())),
    "jvp": lambda f: ramie.jvp(f, (jnp.ones(()),), (jnp.ones(()),)),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_bound_method_is_rejected_with_the_fix(name):
    m = Scaled()
    with pytest.raises(TransformError, match="does not support bound methods") as info:
        TRANSFORMS[name](m.apply)
    msg = str(info.value)
    assert f"ramie.{name}" in msg
    assert f"ramie.{name}(Scaled.apply)(scaled, ...)" in msg  # the fix, as code
    assert isinstance(info.value, ValueError)
    # the same through functools.partial
    with pytest.raises(TransformError, match="bound methods"):
        TRANSFORMS[name](functools.partial(m.apply))


def test_unbound_method_with_the_module_as_argument_keeps_updates():
    m = Scaled()
    y = ramie.jit(Scaled.apply)(m, jnp.ones(3))
    assert y.tolist() == [2.0, 2.0, 2.0]
    assert int(m.calls.value) == 1
    g = ramie.grad(lambda m, x: Scaled.apply(m, x).sum())(m, jnp.ones(3))
    assert float(g["w"].value) == 3.0


def test_methods_of_non_module_objects_are_allowed():
    class Helper:
        def double(self, x):
            return 2 * x

    assert float(ramie.jit(Helper().double)(jnp.ones(()))) == 2.0
