"""Tests for ``ramie.eval_shape``, ``remat``, ``make_jaxpr`` and ``checkify``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify as jax_checkify
from tx_helpers import assert_trees_equal, pure_state

import ramie


class Counter(ramie.Variable):
    pass


class Net(ramie.Module):
    def __init__(self, rngs: ramie.Rngs):
        self.linear = ramie.Linear(2, 3, rngs=rngs)
        self.bn = ramie.BatchNorm(3, rngs=rngs)
        self.count = Counter(jnp.array(0))

    def __call__(self, x):
        self.count.value += 1
        return self.bn(self.linear(x))


X = jax.random.normal(jax.random.key(0), (4, 2))


# -------------------------------------------------------------- eval_shape
def test_eval_shape_builds_an_abstract_module():
    abstract = ramie.eval_shape(lambda: Net(ramie.Rngs(0)))
    concrete = Net(ramie.Rngs(0))
    assert type(abstract) is Net
    assert ramie.graphdef(abstract) == ramie.graphdef(concrete)
    for (path, v), (_, c) in zip(
        ramie.to_flat_state(ramie.state(abstract)),
        ramie.to_flat_state(ramie.state(concrete)),
    ):
        assert type(v) is type(c), path
        assert isinstance(v.value, jax.ShapeDtypeStruct), path
        assert v.value.shape == c.value.shape and v.value.dtype == c.value.dtype, path


def test_eval_shape_keeps_metadata():
    init = ramie.with_partitioning(ramie.initializers.lecun_normal(), ("in", "out"))
    abstract = ramie.eval_shape(
        lambda: ramie.Linear(2, 3, kernel_init=init, rngs=ramie.Rngs(0))
    )
    assert abstract.kernel.get_metadata()["out_sharding"] == ("in", "out")


def test_eval_shape_of_a_call_does_not_mutate():
    model = Net(ramie.Rngs(0))
    before = pure_state(model)
    out = ramie.eval_shape(lambda m, x: m(x), model, X)
    assert isinstance(out, jax.ShapeDtypeStruct)
    assert out.shape == (4, 3) and out.dtype == jnp.float32
    assert_trees_equal(pure_state(model), before)
    assert int(model.count.value) == 0


def test_eval_shape_matches_jax_eval_shape_on_the_pure_function():
    model = Net(ramie.Rngs(0))
    gd, st = ramie.split(model)

    def pure(st, x):
        m = ramie.merge(gd, st, copy=True)
        return m(x), ramie.state(m)

    ref_out, _ = jax.eval_shape(pure, st, X)
    out = ramie.eval_shape(lambda m, x: m(x), model, X)
    assert (out.shape, out.dtype) == (ref_out.shape, ref_out.dtype)


def test_eval_shape_returning_an_argument_gives_the_callers_object():
    model = Net(ramie.Rngs(0))
    assert ramie.eval_shape(lambda m: m.linear, model) is model.linear


def test_eval_shape_abstract_model_can_be_filled_with_values():
    abstract = ramie.eval_shape(lambda: Net(ramie.Rngs(0)))
    concrete = Net(ramie.Rngs(1))
    gd, _ = ramie.split(abstract)
    model = ramie.merge(gd, ramie.state(concrete))
    np.testing.assert_allclose(model(X), Net(ramie.Rngs(1))(X), rtol=1e-6)


# ------------------------------------------------------------------ remat
def test_remat_values_gradients_and_state_match_plain_call():
    model, ref = Net(ramie.Rngs(0)), Net(ramie.Rngs(0))
    loss_remat = lambda m: jnp.sum(ramie.remat(lambda m, x: m(x))(m, X) ** 2)
    loss_plain = lambda m: jnp.sum(m(X) ** 2)
    g1 = ramie.grad(loss_remat)(model)
    g2 = ramie.grad(loss_plain)(ref)
    assert_trees_equal(
        ramie.to_pure_dict(g1), ramie.to_pure_dict(g2), rtol=1e-5, atol=1e-6
    )
    assert_trees_equal(pure_state(model), pure_state(ref), rtol=1e-6)
    assert int(model.count.value) == 1


def test_remat_is_visible_in_the_jaxpr():
    model = Net(ramie.Rngs(0))
    f = ramie.remat(lambda m, x: m(x))
    jaxpr = jax.make_jaxpr(
        lambda x: ramie.grad(lambda m: f(m, x).sum())(ramie.clone(model))
    )(X)
    assert "remat" in str(jaxpr) or "checkpoint" in str(jaxpr)


def test_remat_as_decorator_with_static_argnums_and_policy():
    model = ramie.Linear(2, 3, rngs=ramie.Rngs(0))

    @ramie.remat(static_argnums=(2,), policy=jax.checkpoint_policies.nothing_saveable)
    def f(m, x, n):
        assert isinstance(n, int)
        for _ in range(n):
            x = jnp.sin(x)
        return m(x)

    np.testing.assert_allclose(f(model, X, 2), model(jnp.sin(jnp.sin(X))), rtol=1e-6)
    g = ramie.grad(lambda m: f(m, X, 3).sum())(model)
    ref = jax.grad(lambda k: (jnp.sin(jnp.sin(jnp.sin(X))) @ k).sum())(
        model.kernel.value
    )
    np.testing.assert_allclose(g["kernel"], ref, rtol=1e-5)


def test_remat_method_of_module():
    class Block(ramie.Module):
        def __init__(self):
            self.linear = ramie.Linear(2, 2, rngs=ramie.Rngs(0))

        @ramie.remat
        def __call__(self, x):
            return jnp.tanh(self.linear(x))

    b = Block()
    np.testing.assert_allclose(b(X), jnp.tanh(b.linear(X)), rtol=1e-6)
    g = ramie.grad(lambda b: b(X).sum())(b)
    ref = jax.grad(lambda k: jnp.tanh(X @ k + b.linear.bias.value).sum())(
        b.linear.kernel.value
    )
    np.testing.assert_allclose(g["linear"]["kernel"], ref, rtol=1e-5)


# -------------------------------------------------------------- make_jaxpr
def test_make_jaxpr_matches_jax_make_jaxpr_and_does_not_mutate():
    model = Net(ramie.Rngs(0))
    before = pure_state(model)
    jaxpr = ramie.make_jaxpr(lambda m, x: m(x))(model, X)
    assert type(jaxpr).__name__ == "ClosedJaxpr"
    gd, st = ramie.split(model)
    ref = jax.make_jaxpr(lambda st, x: ramie.merge(gd, st, copy=True)(x))(st, X)
    assert [v.aval for v in jaxpr.jaxpr.outvars] == [v.aval for v in ref.jaxpr.outvars]
    assert len(jaxpr.jaxpr.invars) == len(ref.jaxpr.invars)
    assert "dot_general" in str(jaxpr)
    assert_trees_equal(pure_state(model), before)


def test_make_jaxpr_static_argnums():
    model = ramie.Linear(2, 3, rngs=ramie.Rngs(0))
    j2 = ramie.make_jaxpr(lambda m, n: m(jnp.ones((n, 2))), static_argnums=(1,))(
        model, 2
    )
    j5 = ramie.make_jaxpr(lambda m, n: m(jnp.ones((n, 2))), static_argnums=(1,))(
        model, 5
    )
    assert j2.jaxpr.outvars[0].aval.shape == (2, 3)
    assert j5.jaxpr.outvars[0].aval.shape == (5, 3)


# ---------------------------------------------------------------- checkify
def _checked(m, x):
    jax_checkify.check(jnp.all(x > 0), "x must be positive")
    return m(x)


def test_checkify_passes_and_updates_state():
    model = Net(ramie.Rngs(0))
    err, out = ramie.checkify(_checked)(model, jnp.abs(X) + 0.1)
    assert err.get() is None
    assert out.shape == (4, 3)
    assert int(model.count.value) == 1


def test_checkify_reports_the_failed_check():
    model = Net(ramie.Rngs(0))
    err, _ = ramie.checkify(_checked)(model, -jnp.abs(X))
    assert "x must be positive" in err.get()
    with pytest.raises(jax_checkify.JaxRuntimeError, match="x must be positive"):
        err.throw()


def test_checkify_inside_jit_and_with_error_sets():
    model = Net(ramie.Rngs(0))

    @ramie.jit
    def f(m, x):
        return ramie.checkify(
            lambda m, x: m(x) / x.sum(), errors=jax_checkify.float_checks
        )(m, x)

    err, _ = f(model, jnp.abs(X) + 1)
    assert err.get() is None
    err, _ = f(model, jnp.zeros_like(X))
    assert err.get() is not None and "division by zero" in err.get()
    assert int(model.count.value) == 2
