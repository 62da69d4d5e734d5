"""Tests for ``ramie.grad``/``value_and_grad``/``vjp``/``jvp``/``custom_vjp``
against the JAX transforms applied to the pure split/merge function."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tx_helpers import assert_trees_equal, pure_state

import ramie


class Counter(ramie.Variable):
    pass


class Net(ramie.Module):
    def __init__(self, seed: int = 0):
        rngs = ramie.Rngs(seed)
        self.linear = ramie.Linear(3, 4, rngs=rngs)
        self.bn = ramie.BatchNorm(4, rngs=rngs)
        self.lora = ramie.LoRAParam(jnp.linspace(0.5, 1.5, 4))
        self.count = Counter(jnp.array(0))

    def __call__(self, x):
        self.count.value += 1
        return self.bn(self.linear(x)) * self.lora.value


X = jax.random.normal(jax.random.key(0), (5, 3))
Y = jax.random.normal(jax.random.key(1), (5, 4))


def loss_fn(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


def reference(model, wrt=ramie.Param, x=X, y=Y):
    """jax.value_and_grad of the pure function over the split state.

    Returns ``(loss, grads_dict, new_state_dict)``; ``model`` is not changed.
    """
    graphdef, diff, rest = ramie.split(model, wrt, ...)

    def pure(diff, rest):
        m = ramie.merge(graphdef, diff, rest, copy=True)
        loss = loss_fn(m, x, y)
        return loss, ramie.state(m)

    (loss, new_state), grads = jax.value_and_grad(pure, has_aux=True)(diff, rest)
    return loss, ramie.to_pure_dict(grads), pure_state_of(new_state)


def pure_state_of(state):
    return jax.tree.map(np.asarray, ramie.to_pure_dict(state))


def _close(a, b):
    assert_trees_equal(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ grad / vag
def test_grad_matches_jax_grad_and_is_param_only_by_default():
    model = Net()
    loss_ref, g_ref, state_ref = reference(model)
    grads = ramie.grad(loss_fn)(model, X, Y)
    assert isinstance(grads, ramie.State)
    flat = dict(ramie.to_flat_state(grads))
    paths = sorted(flat)
    # Param and its subclass LoRAParam; no BatchStat, no Counter
    assert paths == sorted(
        [
            ("bn", "bias"),
            ("bn", "scale"),
            ("linear", "bias"),
            ("linear", "kernel"),
            ("lora",),
        ]
    )
    assert isinstance(flat[("linear", "kernel")], ramie.Param)
    assert type(flat[("lora",)]) is ramie.LoRAParam
    _close(ramie.to_pure_dict(grads), g_ref)
    # the non-differentiated state updates are written back
    _close(pure_state(model), state_ref)
    assert int(model.count.value) == 1


def test_value_and_grad_matches_jax():
    model = Net()
    loss_ref, g_ref, state_ref = reference(model)
    loss, grads = ramie.value_and_grad(loss_fn)(model, X, Y)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-6)
    _close(ramie.to_pure_dict(grads), g_ref)
    _close(pure_state(model), state_ref)


def test_grad_as_decorator_with_options():
    model = Net()

    @ramie.grad(has_aux=True)
    def f(m):
        return loss_fn(m, X, Y), 7

    grads, aux = f(model)
    assert aux == 7
    assert "kernel" in grads["linear"]


@pytest.mark.parametrize(
    "wrt, expected",
    [
        (ramie.LoRAParam, [("lora",)]),
        (ramie.BatchStat, [("bn", "mean"), ("bn", "var")]),
        (ramie.PathContains("linear"), [("linear", "bias"), ("linear", "kernel")]),
        (
            ramie.All(ramie.Param, ramie.PathContains("bn")),
            [("bn", "bias"), ("bn", "scale")],
        ),
    ],
    ids=["lora", "batchstat", "path", "all"],
)
def test_diffstate_filters(wrt, expected):
    model = Net()
    loss_ref, g_ref, state_ref = reference(model, wrt=wrt)
    grads = ramie.grad(loss_fn, argnums=ramie.DiffState(0, wrt))(model, X, Y)
    assert sorted(dict(ramie.to_flat_state(grads))) == sorted(expected)
    _close(ramie.to_pure_dict(grads), g_ref)
    _close(pure_state(model), state_ref)


def test_multiple_argnums_modules_and_arrays():
    a, b = (
        ramie.Linear(3, 4, rngs=ramie.Rngs(0)),
        ramie.Linear(4, 2, rngs=ramie.Rngs(1)),
    )

    def f(a, x, b):
        return jnp.sum(jnp.tanh(b(a(x))) ** 2)

    ga, gx, gb = ramie.grad(f, argnums=(0, 1, 2))(a, X, b)
    gda, pa = ramie.split(a)
    gdb, pb = ramie.split(b)

    def pure(pa, x, pb):
        return f(ramie.merge(gda, pa), x, ramie.merge(gdb, pb))

    ra, rx, rb = jax.grad(pure, argnums=(0, 1, 2))(pa, X, pb)
    _close(ramie.to_pure_dict(ga), ramie.to_pure_dict(ra))
    _close(ramie.to_pure_dict(gb), ramie.to_pure_dict(rb))
    np.testing.assert_allclose(gx, rx, rtol=1e-5, atol=1e-6)
    # a single array argnum returns a plain array
    gx_only = ramie.grad(f, argnums=1)(a, X, b)
    np.testing.assert_allclose(gx_only, rx, rtol=1e-5, atol=1e-6)
    # argnums as a 1-tuple returns a tuple
    (gb_only,) = ramie.grad(f, argnums=(2,))(a, X, b)
    _close(ramie.to_pure_dict(gb_only), ramie.to_pure_dict(rb))


def test_mixed_diffstate_and_int_argnums():
    model = Net()
    other = ramie.Linear(4, 4, rngs=ramie.Rngs(2))

    def f(m, o):
        return jnp.mean(o(m(X)) ** 2)

    g_lora, g_other = ramie.grad(f, argnums=(ramie.DiffState(0, ramie.LoRAParam), 1))(
        model, other
    )
    assert list(g_lora.keys()) == ["lora"]
    assert sorted(g_other.keys()) == ["bias", "kernel"]


def test_modules_nested_in_pytrees_are_differentiated():
    a, b = (
        ramie.Linear(3, 2, rngs=ramie.Rngs(0)),
        ramie.Linear(3, 2, rngs=ramie.Rngs(1)),
    )
    grads = ramie.grad(lambda ms: jnp.sum(ms["a"](X) * ms["b"](X)))({"a": a, "b": b})
    ref_a = X.T @ b(X)
    np.testing.assert_allclose(grads["a"]["kernel"], ref_a, rtol=1e-5)
    np.testing.assert_allclose(grads["b"]["kernel"], X.T @ a(X), rtol=1e-5)


def test_has_aux_with_modules_in_aux():
    model = Net()

    def f(m, x, y):
        new = ramie.Linear(2, 2, rngs=ramie.Rngs(5))
        return loss_fn(m, x, y), {"sub": m.linear, "self": m, "new": new, "n": 3}

    grads, aux = ramie.grad(f, has_aux=True)(model, X, Y)
    assert aux["sub"] is model.linear and aux["self"] is model
    assert isinstance(aux["new"], ramie.Linear) and aux["n"] == 3
    np.testing.assert_array_equal(
        aux["new"].kernel.value, ramie.Linear(2, 2, rngs=ramie.Rngs(5)).kernel.value
    )
    (loss, aux2), grads2 = ramie.value_and_grad(f, has_aux=True)(model, X, Y)
    assert aux2["self"] is model
    assert np.ndim(loss) == 0
    assert sorted(grads2.keys()) == sorted(grads.keys())


def test_has_aux_requires_a_pair():
    model = Net()
    with pytest.raises(TypeError, match=r"has_aux"):
        ramie.grad(lambda m: loss_fn(m, X, Y), has_aux=True)(model)


def test_batchnorm_statistics_updated_through_grad():
    model = Net()
    mean0 = np.array(model.bn.mean.value)
    _, _, state_ref = reference(model)
    ramie.grad(loss_fn)(model, X, Y)
    assert not np.allclose(model.bn.mean.value, mean0)
    np.testing.assert_allclose(model.bn.mean.value, state_ref["bn"]["mean"], rtol=1e-6)
    np.testing.assert_allclose(model.bn.var.value, state_ref["bn"]["var"], rtol=1e-6)
    # eval mode: statistics are not changed
    model.eval()
    mean1 = np.array(model.bn.mean.value)
    ramie.grad(loss_fn)(model, X, Y)
    np.testing.assert_array_equal(model.bn.mean.value, mean1)


def test_dropout_rng_state_updated_through_grad():
    model = ramie.Sequential(
        ramie.Linear(3, 4, rngs=ramie.Rngs(0)),
        ramie.Dropout(0.5, rngs=ramie.Rngs(dropout=1)),
    )
    g1 = ramie.grad(lambda m: m(X).sum())(model)
    g2 = ramie.grad(lambda m: m(X).sum())(model)
    assert int(model.layers[1].rngs.count.value) == 2
    assert not np.allclose(g1["layers"][0]["kernel"], g2["layers"][0]["kernel"])


def test_structural_change_inside_grad_is_applied():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))

    def f(m):
        m.cache = ramie.Cache(m.kernel.value.sum())
        return m(X).sum()

    grads = ramie.grad(f)(model)
    assert isinstance(model.cache, ramie.Cache)
    np.testing.assert_allclose(model.cache.value, model.kernel.value.sum(), rtol=1e-6)
    assert sorted(grads.keys()) == ["bias", "kernel"]


def test_gradient_of_a_variable_argument():
    v = ramie.Param(jnp.array([1.0, 2.0, 3.0]))
    g = ramie.grad(lambda v: jnp.sum(v.value**2))(v)
    assert isinstance(g, ramie.Param)
    np.testing.assert_allclose(g.value, 2 * np.array([1.0, 2.0, 3.0]))


def test_variables_outside_modules_are_differentiated_whatever_their_type():
    # Flax's rule: the Param filter picks among a module's Variables; a Variable
    # passed on its own or inside a State is differentiated as it is.
    from flax import nnx as fnnx

    def grads(lib):
        state = lib.State({"p": lib.Perturbation(jnp.array(2.0))})
        cache = lib.Cache(jnp.array(3.0))

        def f(s, c):
            return s["p"][...] ** 2 * c[...]

        return lib.grad(f, argnums=(0, 1))(state, cache)

    (gs, gc), (fs, fc) = grads(ramie), grads(fnnx)
    assert type(gs["p"]) is ramie.Perturbation and type(gc) is ramie.Cache
    np.testing.assert_allclose(gs["p"].value, fs["p"].get_value())
    np.testing.assert_allclose(gc.value, fc.get_value())


def test_argnums_out_of_range_is_a_clear_error():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    with pytest.raises(ValueError, match=r"argnums refers to argument 3"):
        ramie.grad(lambda m, x: m(x).sum(), argnums=3)(model, X)


def test_nested_jit_grad_vmap():
    model = Net()
    model.eval()  # per-example BatchNorm in a vmap: use running averages
    xs = jax.random.normal(jax.random.key(2), (4, 5, 3))

    @ramie.jit
    def step(m, xs):
        def loss(m):
            ys = ramie.vmap(lambda m, x: m(x), in_axes=(None, 0))(m, xs)
            return jnp.mean(ys**2)

        return ramie.value_and_grad(loss)(m)

    graphdef, params, rest = ramie.split(model, ramie.Param, ...)

    @jax.jit
    def pure(params, rest, xs):
        def loss(params):
            def one(x):
                return ramie.merge(graphdef, params, rest, copy=True)(x)

            return jnp.mean(jax.vmap(one)(xs) ** 2)

        return jax.value_and_grad(loss)(params)

    loss_ref, g_ref = pure(params, rest, xs)
    loss, grads = step(model, xs)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    _close(ramie.to_pure_dict(grads), ramie.to_pure_dict(g_ref))
    loss2, _ = step(model, xs)
    np.testing.assert_allclose(loss2, loss_ref, rtol=1e-5)


def test_grad_inside_jit_updates_model_like_eager():
    model, eager = Net(), Net()

    @ramie.jit
    def train_step(m):
        grads = ramie.grad(loss_fn)(m, X, Y)
        params = ramie.state(m, ramie.Param)
        ramie.update(m, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads))

    for _ in range(2):
        train_step(model)
        grads = ramie.grad(loss_fn)(eager, X, Y)
        params = ramie.state(eager, ramie.Param)
        ramie.update(eager, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads))
    assert_trees_equal(pure_state(model), pure_state(eager), rtol=1e-5, atol=1e-6)


def test_grad_of_module_closed_over_is_a_trace_error():
    model = Net()
    x_param = jnp.ones((5, 3))
    with pytest.raises(ramie.errors.TraceContextError, match=r"count"):
        ramie.grad(lambda x: model(x).sum())(x_param)


# ---------------------------------------------------------------- vjp / jvp
def test_vjp_matches_jax_vjp():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    out, vjp_fn = ramie.vjp(lambda m, x: jnp.tanh(m(x)), model, X)
    gd, p = ramie.split(model)
    out_ref, vjp_ref = jax.vjp(lambda p, x: jnp.tanh(ramie.merge(gd, p)(x)), p, X)
    np.testing.assert_allclose(out, out_ref, rtol=1e-6)
    ct = jax.random.normal(jax.random.key(3), out.shape)
    g_model, g_x = vjp_fn(ct)
    r_model, r_x = vjp_ref(ct)
    assert isinstance(g_model, ramie.State)
    _close(ramie.to_pure_dict(g_model), ramie.to_pure_dict(r_model))
    np.testing.assert_allclose(g_x, r_x, rtol=1e-5, atol=1e-6)


def test_vjp_has_aux_and_state_updates():
    model = Net()
    _, _, state_ref = reference(model)

    def f(m):
        return loss_fn(m, X, Y), m.linear

    out, vjp_fn, aux = ramie.vjp(f, model, has_aux=True)
    assert aux is model.linear
    (g,) = vjp_fn(jnp.ones(()))
    assert "kernel" in g["linear"]
    _close(pure_state(model), state_ref)


def test_jvp_matches_jax_jvp():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    gd, p = ramie.split(model)
    t_kernel = jax.random.normal(jax.random.key(4), (3, 2))
    t_x = jax.random.normal(jax.random.key(5), X.shape)
    tangent = ramie.State({"kernel": t_kernel, "bias": jnp.zeros(2)})
    out, t_out = ramie.jvp(lambda m, x: jnp.tanh(m(x)), (model, X), (tangent, t_x))
    p_tan = jax.tree.map(jnp.zeros_like, p)
    p_tan["kernel"].value = t_kernel
    out_ref, t_ref = jax.jvp(
        lambda p, x: jnp.tanh(ramie.merge(gd, p)(x)), (p, X), (p_tan, t_x)
    )
    np.testing.assert_allclose(out, out_ref, rtol=1e-6)
    np.testing.assert_allclose(t_out, t_ref, rtol=1e-5, atol=1e-6)
    # Params missing from the tangent State get zero tangents
    _, t_partial = ramie.jvp(
        lambda m, x: jnp.tanh(m(x)),
        (model, X),
        (ramie.State({"kernel": t_kernel}), t_x),
    )
    np.testing.assert_allclose(t_partial, t_ref, rtol=1e-5, atol=1e-6)


def test_jvp_writes_back_state_updates():
    model = Net()
    _, _, state_ref = reference(model)
    tangent = jax.tree.map(jnp.zeros_like, ramie.state(model, ramie.Param))
    ramie.jvp(lambda m: loss_fn(m, X, Y), (model,), (tangent,))
    _close(pure_state(model), state_ref)


# -------------------------------------------------------------- custom_vjp
def test_custom_vjp_uses_the_custom_backward_pass():
    model = ramie.Linear(3, 2, use_bias=False, rngs=ramie.Rngs(0))

    @ramie.custom_vjp
    def f(m, x):
        return m(x)

    def fwd(m, x):
        return m(x), (m.kernel.value, x)

    def bwd(res, g):
        _, g = g  # (inputs_g, out_g)
        kernel, x = res
        # deliberately scaled, to see that this backward pass is the one used
        return ramie.State({"kernel": 2.0 * x.T @ g}), 3.0 * g @ kernel.T

    f.defvjp(fwd, bwd)
    np.testing.assert_allclose(f(model, X), model(X), rtol=1e-6)

    g_model, g_x = ramie.grad(lambda m, x: f(m, x).sum(), argnums=(0, 1))(model, X)

    # the same function written with jax.custom_vjp on the pure state
    gd, p = ramie.split(model)

    @jax.custom_vjp
    def pure(p, x):
        return ramie.merge(gd, p)(x)

    def pure_fwd(p, x):
        return pure(p, x), (p["kernel"].value, x)

    def pure_bwd(res, g):
        kernel, x = res
        ct = jax.tree.map(jnp.zeros_like, p)
        ct["kernel"].value = 2.0 * x.T @ g
        return ct, 3.0 * g @ kernel.T

    pure.defvjp(pure_fwd, pure_bwd)
    r_p, r_x = jax.grad(lambda p, x: pure(p, x).sum(), argnums=(0, 1))(p, X)
    _close(ramie.to_pure_dict(g_model), ramie.to_pure_dict(r_p))
    np.testing.assert_allclose(g_x, r_x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        g_model["kernel"], 2.0 * X.T @ np.ones((5, 2)), rtol=1e-5
    )


def test_custom_vjp_nondiff_argnums():
    model = ramie.Linear(3, 2, use_bias=False, rngs=ramie.Rngs(0))

    @ramie.custom_vjp(nondiff_argnums=(0,))
    def f(scale, m, x):
        return scale * m(x)

    def fwd(scale, m, x):
        return scale * m(x), x

    def bwd(scale, x, g):
        _, g = g
        return ramie.State({"kernel": scale * x.T @ g}), jnp.zeros_like(x)

    f.defvjp(fwd, bwd)
    g = ramie.grad(lambda m: f(2.0, m, X).sum())(model)
    np.testing.assert_allclose(g["kernel"], 2.0 * X.T @ np.ones((5, 2)), rtol=1e-5)


def test_custom_vjp_requires_defvjp():
    f = ramie.custom_vjp(lambda m: m(X))
    with pytest.raises(ramie.errors.TransformError, match=r"defvjp"):
        f(ramie.Linear(3, 2, rngs=ramie.Rngs(0)))


def test_custom_vjp_wrong_number_of_cotangents():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))

    @ramie.custom_vjp
    def f(m, x):
        return m(x)

    f.defvjp(lambda m, x: (m(x), None), lambda res, g: (ramie.State({}),))
    with pytest.raises(ValueError, match=r"1 cotangent\(s\) for 2"):
        ramie.grad(lambda m: f(m, X).sum())(model)


def test_shared_module_in_two_argnums_gets_its_gradient_once():
    class Holder(ramie.Module):
        def __init__(self):
            self.linear = ramie.Linear(3, 2, rngs=ramie.Rngs(0))

    h = Holder()

    def f(h, linear):
        return jnp.sum(h.linear(X)) + jnp.sum(linear(X))

    g_h, g_lin = ramie.grad(f, argnums=(0, 1))(h, h.linear)
    # as in flax.nnx: a shared Variable appears once, at its first occurrence,
    # with the total gradient
    np.testing.assert_allclose(
        g_h["linear"]["kernel"], 2 * X.T @ np.ones((5, 2)), rtol=1e-5
    )
    assert len(dict(ramie.to_flat_state(g_lin))) == 0


def test_grad_of_a_state_argument_covers_every_variable_in_it():
    # a State (or dict) of Variables is a plain container: its Variables are all
    # differentiated, whatever their type; a module argument keeps the Param default
    m = ramie.Dict(
        a=ramie.List([ramie.Param(jnp.array(10.0)), ramie.BatchStat(jnp.array(20.0))]),
        b=ramie.Param(jnp.array(10.0)),
    )
    graphdef, stats, rest = ramie.split(m, ramie.BatchStat, ...)

    def f(stats, rest):
        inner = ramie.merge(graphdef, stats, rest)
        return 2 * inner.a[0][...] + 3 * inner.a[1][...] + inner.b[...]

    grads = ramie.grad(f)(stats, rest)
    assert isinstance(grads["a"][1], ramie.BatchStat)
    assert float(grads["a"][1][...]) == 3.0
    ramie.update(m, grads)
    assert float(m.a[1][...]) == 3.0 and float(m.b[...]) == 10.0
    module_grads = ramie.grad(lambda m: 3 * m.a[1][...] + m.b[...])(m)
    assert ramie.to_flat_state(module_grads).paths == (("a", 0), ("b",))
