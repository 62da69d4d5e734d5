"""Tests for ``ramie.custom_vjp`` in both protocols, and for the tree-mode /
``graph_updates=False`` parts of ``grad`` and ``jvp``.

Gradients are compared with ``jax.grad`` / ``jax.jvp`` of the same function
written on plain arrays (a hand-written backward pass that is exact must give
the same numbers).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie
from ramie.errors import SharedReferenceError, TransformError

X = jax.random.normal(jax.random.key(0), (4, 3))


def _plain_loss(w, b, x):
    return jnp.sum(jnp.tanh(x @ w + b) ** 2)


def _reference(model, x=X):
    """``jax.grad`` of the plain function: (d kernel, d bias, d x)."""
    w, b = model.kernel.value, model.bias.value
    return jax.grad(_plain_loss, argnums=(0, 1, 2))(w, b, x)


def _tanh_grads(w, x, y, out_g):
    dy = out_g * (1.0 - y**2)
    return x.T @ dy, dy.sum(0), dy @ w.T


# ---------------------------------------------------------------- graph mode
def _state_cotangents(inputs_g, dw, db, dx):
    return ramie.State({"kernel": dw, "bias": db}), dx


def _graph_layer(seen=None, cotangents=_state_cotangents, **options):
    """``tanh(m(x))`` with a hand-written graph-mode bwd: ``cotangents(inputs_g,
    dw, db, dx)`` gives its result; ``seen`` collects the ``inputs_g``."""

    @ramie.custom_vjp(**options)
    def layer(m, x):
        return jnp.tanh(m(x))

    def fwd(m, x):
        y = layer(m, x)
        return y, (m.kernel.value, x, y)

    def bwd(res, g):
        inputs_g, out_g = g
        if seen is not None:
            seen.append(inputs_g)
        w, x, y = res
        return cotangents(inputs_g, *_tanh_grads(w, x, y, out_g))

    layer.defvjp(fwd, bwd)
    return layer


def test_graph_mode_gradients_match_jax_grad():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    layer = _graph_layer()
    g_m, g_x = ramie.grad(lambda m, x: jnp.sum(layer(m, x) ** 2), argnums=(0, 1))(
        model, X
    )
    r_w, r_b, r_x = _reference(model)
    np.testing.assert_allclose(g_m["kernel"].value, r_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_m["bias"].value, r_b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_x, r_x, rtol=1e-5, atol=1e-6)


def test_graph_mode_bwd_receives_inputs_g_for_the_arguments():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    seen: list = []
    layer = _graph_layer(seen)
    ramie.grad(lambda m: jnp.sum(layer(m, X)))(model)
    (m_g, x_g) = seen[0]
    assert isinstance(m_g, ramie.State)
    assert sorted(m_g) == ["bias", "kernel"]
    assert isinstance(m_g["kernel"], ramie.Param)
    assert m_g["kernel"].value.shape == (3, 2)
    assert x_g is None  # arrays have no entry


def test_graph_mode_returning_inputs_g_passes_later_gradients_through():
    # the module is used again after the call: its gradient there reaches bwd
    # through inputs_g; passing it on gives jax.grad of the whole function
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))

    def accumulate(inputs_g, dw, db, dx):
        m_g, _ = inputs_g
        m_g["kernel"].value = m_g["kernel"].value + dw
        m_g["bias"].value = m_g["bias"].value + db
        return m_g, dx

    layer = _graph_layer(cotangents=accumulate)

    def loss(m):
        return jnp.sum(layer(m, X) ** 2) + jnp.sum(m.kernel.value**3)

    g = ramie.grad(loss)(model)
    w, b = model.kernel.value, model.bias.value
    r_w, r_b = jax.grad(
        lambda w, b: _plain_loss(w, b, X) + jnp.sum(w**3), argnums=(0, 1)
    )(w, b)
    np.testing.assert_allclose(g["kernel"].value, r_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g["bias"].value, r_b, rtol=1e-5, atol=1e-6)


class Counted(ramie.Module):
    def __init__(self):
        self.w = ramie.Param(jnp.array(1.5))
        self.count = ramie.BatchStat(jnp.array(0))
        self.calls = 0


def test_graph_mode_carries_variable_and_attribute_updates():
    @ramie.custom_vjp
    def f(m):
        m.count.value += 1
        m.calls += 1  # a graph update: a static attribute changes
        return jnp.sin(m.w.value)

    def fwd(m):
        return f(m), (jnp.cos(m.w.value),)

    def bwd(res, g):
        (m_g,), out_g = g
        return (ramie.State({"w": res[0] * out_g}),)

    f.defvjp(fwd, bwd)
    m = Counted()
    g = ramie.grad(f)(m)
    np.testing.assert_allclose(g["w"].value, np.cos(1.5), rtol=1e-6)
    assert int(m.count.value) == 1 and m.calls == 1
    f(m)  # without differentiation: f itself runs
    assert int(m.count.value) == 2 and m.calls == 2


def test_diffstate_in_nondiff_argnums_limits_the_differentiated_variables():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    only_kernel = ramie.PathContains("kernel")
    # bwd gives a bias cotangent too, but bias is not differentiable here
    layer = _graph_layer(nondiff_argnums=(ramie.DiffState(0, only_kernel),))
    g = ramie.grad(lambda m: jnp.sum(layer(m, X) ** 2))(model)
    r_w, _, _ = _reference(model)
    np.testing.assert_allclose(g["kernel"].value, r_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(g["bias"].value, np.zeros(2))


def test_int_nondiff_argnums_for_a_module_is_an_error():
    @ramie.custom_vjp(nondiff_argnums=(0,))
    def f(m, x):
        return m(x)

    f.defvjp(lambda m, x: (m(x), None), lambda m, res, g: (g[1],))
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    with pytest.raises(TransformError, match=r"DiffState\(0, ramie.Param\)"):
        f(model, X)


def test_repeated_argnum_is_an_error():
    with pytest.raises(TransformError, match="argnum 0 is repeated"):
        ramie.custom_vjp(lambda m: m, nondiff_argnums=(0, ramie.DiffState(0, ...)))


def test_custom_vjp_inside_jit_inside_grad():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    layer = _graph_layer()
    g = ramie.grad(ramie.jit(lambda m: jnp.sum(layer(m, X) ** 2)))(model)
    r_w, r_b, _ = _reference(model)
    np.testing.assert_allclose(g["kernel"].value, r_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g["bias"].value, r_b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- tree mode
@pytest.mark.parametrize(
    "graph, graph_updates", [(False, False), (True, False)], ids=["tree", "nogu"]
)
def test_tree_mode_gradients_match_jax_grad(graph, graph_updates):
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))

    @ramie.custom_vjp(graph=graph, graph_updates=graph_updates)
    def layer(m, x):
        return jnp.tanh(m(x))

    def fwd(m, x):
        y = layer(m, x)
        return y, (m, x, y)

    def bwd(res, g):
        m, x, y = res
        dw, db, dx = _tanh_grads(m.kernel.value, x, y, g)
        m_g = ramie.clone(m)
        m_g.kernel.value = dw
        m_g.bias.value = db
        return m_g, dx

    layer.defvjp(fwd, bwd)
    g_m, g_x = ramie.grad(
        lambda m, x: jnp.sum(layer(m, x) ** 2),
        argnums=(0, 1),
        graph=graph,
        graph_updates=graph_updates,
    )(model, X)
    assert type(g_m) is ramie.Linear
    r_w, r_b, r_x = _reference(model)
    np.testing.assert_allclose(g_m.kernel.value, r_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_m.bias.value, r_b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_x, r_x, rtol=1e-5, atol=1e-6)


def test_tree_mode_updates_are_applied_and_their_cotangents_given():
    seen: list = []

    @ramie.custom_vjp(graph=False)
    def f(m):
        m.count.value += 1
        return jnp.sin(m.w.value)

    def fwd(m):
        return f(m), (m,)

    def bwd(res, g, *, updates_g):
        seen.append(updates_g)
        (m,) = res
        m_g = ramie.clone(m)
        m_g.w.value = jnp.cos(m.w.value) * g
        return (m_g,)

    f.defvjp(fwd, bwd)

    class Plain(ramie.Module):
        def __init__(self):
            self.w = ramie.Param(jnp.array(0.5))
            self.count = ramie.BatchStat(jnp.array(0.0))

    m = Plain()
    g = ramie.grad(f, graph=False)(m)
    np.testing.assert_allclose(g.w.value, np.cos(0.5), rtol=1e-6)
    assert float(m.count.value) == 1.0
    (m_up,) = seen[0]
    assert m_up.w is None  # not updated inside f
    assert isinstance(m_up.count, ramie.BatchStat)


def test_tree_mode_duplicate_variable_is_an_error():
    v = ramie.Param(jnp.array(1.0))

    @ramie.custom_vjp(nondiff_argnums=(1,), graph=True, graph_updates=False)
    def f(a, b):
        return a.value + b.value

    f.defvjp(lambda a, b: (f(a, b), ()), lambda b, res, g: (g,))
    with pytest.raises(SharedReferenceError, match="Duplicate"):
        f(v, v)


def test_tree_mode_rejects_diffstate():
    with pytest.raises(ValueError, match="cannot contain `DiffState`"):
        ramie.custom_vjp(
            lambda m: m, nondiff_argnums=(ramie.DiffState(0, ...),), graph=False
        )


# ------------------------------------------------- grad / jvp, simple modes
def test_grad_no_graph_updates_inconsistent_aliasing():
    v = ramie.Param(jnp.array(1.0))
    f = ramie.grad(lambda a, b: a.value * b.value, graph=True, graph_updates=False)
    with pytest.raises(SharedReferenceError, match="Inconsistent aliasing"):
        f(v, v)


def test_grad_no_graph_updates_shared_variable_in_a_container():
    p1, p2 = ramie.Param(jnp.array(3.0)), ramie.Param(jnp.array(5.0))
    tree = {"a": [p1, p2], "b": p1}
    g = ramie.grad(
        lambda t: t["a"][0].value * t["a"][1].value + t["b"].value,
        graph=True,
        graph_updates=False,
    )(tree)
    # d/dp1 (p1 * p2 + p1) = p2 + 1, at every place p1 occurs
    assert isinstance(g["b"], ramie.Param)
    np.testing.assert_allclose(g["a"][0].value, 6.0)
    np.testing.assert_allclose(g["b"].value, 6.0)
    np.testing.assert_allclose(g["a"][1].value, 3.0)


def test_grad_of_graph_states_merged_inside():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    params, rest = ramie.unpack(model, ramie.Param, ...)

    def loss(params, rest):
        m = ramie.merge(params, rest)
        return jnp.sum(jnp.tanh(m(X)) ** 2)

    g = ramie.grad(loss)(params, rest)
    assert isinstance(g, ramie.GraphState)
    r_w, r_b, _ = _reference(model)
    np.testing.assert_allclose(g["kernel"].value, r_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g["bias"].value, r_b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("graph_updates", [True, False])
def test_jvp_module_tangent_and_decorator(graph_updates):
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    t_model = jax.tree.map(lambda x: jnp.full_like(x, 0.5), model)
    t_x = jnp.ones_like(X)

    def f(m, x):
        return jnp.sum(jnp.tanh(m(x)) ** 2)

    out, t_out = ramie.jvp(f, (model, X), (t_model, t_x), graph_updates=graph_updates)
    w, b = model.kernel.value, model.bias.value
    r_out, r_t = jax.jvp(
        _plain_loss, (w, b, X), (jnp.full_like(w, 0.5), jnp.full_like(b, 0.5), t_x)
    )
    np.testing.assert_allclose(out, r_out, rtol=1e-6)
    np.testing.assert_allclose(t_out, r_t, rtol=1e-5)

    deco = ramie.jvp(graph_updates=graph_updates)(f)
    out2, t_out2 = deco((model, X), (t_model, t_x))
    np.testing.assert_allclose(t_out2, r_t, rtol=1e-5)


@pytest.mark.parametrize("graph", [True, False])
def test_fwd_must_return_a_pair(graph):
    @ramie.custom_vjp(graph=graph)
    def f(m):
        return m.kernel.value.sum()

    f.defvjp(lambda m: f(m), lambda res, g: (None,))
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    with pytest.raises(TransformError, match=r"fwd must return a pair"):
        ramie.grad(f, graph=graph)(model)


def test_tree_mode_cotangent_of_the_wrong_structure():
    @ramie.custom_vjp(graph=False)
    def f(m):
        return m.kernel.value.sum()

    f.defvjp(lambda m: (f(m), ()), lambda res, g: ({"kernel": g},))
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    with pytest.raises(TransformError, match=r"module of the same type"):
        ramie.grad(f, graph=False)(model)
