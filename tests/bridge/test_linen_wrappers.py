"""ToNNX, ToLinen and functional against Flax Linen itself.

Every wrapper is compared with the wrapped library run directly: same
variables in, same outputs, updated collections and gradients out.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ramie

nn = pytest.importorskip("flax.linen")
from flax.training import train_state  # noqa: E402

bridge = ramie.bridge
X = jax.random.normal(jax.random.key(1), (4, 3))


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Dense(5)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.Dropout(0.5, deterministic=not train)(x)
        return nn.Dense(2)(x)


def linen_vars_of(model: ramie.Module) -> dict:
    """Linen variables read back from a ToNNX's Variables."""
    return model._linen_variables()


# --------------------------------------------------------------------- ToNNX
def test_to_nnx_matches_linen_apply_and_types_collections():
    model = bridge.ToNNX(LinenBlock(), rngs=ramie.Rngs(0, dropout=1))
    bridge.lazy_init(model, X, train=False)
    assert isinstance(model.Dense_0["kernel"], ramie.Param)
    assert isinstance(model.BatchNorm_0["mean"], ramie.BatchStat)
    variables = linen_vars_of(model)
    assert set(variables) == {"params", "batch_stats"}
    close(model(X, train=False), LinenBlock().apply(variables, X, train=False))


def test_to_nnx_batchnorm_stats_update_like_linen():
    model = bridge.ToNNX(LinenBlock(), rngs=ramie.Rngs(0, dropout=1))
    bridge.lazy_init(model, X, train=False)
    before = linen_vars_of(model)
    key = jax.random.key(7)
    y_ref, upd = LinenBlock().apply(
        before, X, rngs={"dropout": key}, mutable=["batch_stats"]
    )
    y = model(X, rngs={"dropout": key})
    close(y, y_ref)
    close(model.BatchNorm_0["mean"].value, upd["batch_stats"]["BatchNorm_0"]["mean"])
    assert not np.allclose(model.BatchNorm_0["mean"].value, 0.0)


def test_to_nnx_dropout_keys_come_from_module_rngs():
    model = bridge.ToNNX(LinenBlock(), rngs=ramie.Rngs(0, dropout=1))
    bridge.lazy_init(model, X, train=False)
    y1, y2 = model(X), model(X)
    assert not np.allclose(y1, y2)  # a new dropout key every call
    ramie.reseed(model, dropout=3)
    y3 = model(X)
    ramie.reseed(model, dropout=3)
    close(model(X), y3)


def test_to_nnx_trains_under_ramie_jit_and_grad_with_linen_gradients():
    model = bridge.ToNNX(LinenBlock(), rngs=ramie.Rngs(0, dropout=1))
    bridge.lazy_init(model, X, train=False)
    variables = linen_vars_of(model)
    target = jnp.ones((4, 2))

    def linen_loss(params):
        y = LinenBlock().apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, X, train=False
        )
        return jnp.mean((y - target) ** 2)

    ref = jax.grad(linen_loss)(variables["params"])

    @ramie.jit
    def grads_of(model):
        return ramie.grad(lambda m: jnp.mean((m(X, train=False) - target) ** 2))(model)

    grads = grads_of(model)
    close(grads["Dense_0"]["kernel"].value, ref["Dense_0"]["kernel"])
    close(grads["Dense_1"]["bias"].value, ref["Dense_1"]["bias"])

    optimizer = ramie.Optimizer(model, optax.sgd(0.1), wrt=ramie.Param)

    @ramie.jit
    def step(model, optimizer):
        loss, g = ramie.value_and_grad(lambda m: jnp.mean((m(X) - target) ** 2))(model)
        optimizer.update(model, g)
        return loss

    mean0 = np.asarray(model.BatchNorm_0["mean"].value)
    losses = [float(step(model, optimizer)) for _ in range(3)]
    assert losses[-1] < losses[0]
    assert not np.allclose(model.BatchNorm_0["mean"].value, mean0)


def test_to_nnx_method_and_lazy_init_of_a_method():
    class AE(nn.Module):
        def setup(self):
            self.enc = nn.Dense(2)
            self.dec = nn.Dense(3)

        def __call__(self, x):
            return self.dec(self.enc(x))

        def encode(self, x):
            return self.enc(x)

    model = bridge.ToNNX(AE(), rngs=ramie.Rngs(0)).lazy_init(X)
    variables = linen_vars_of(model)
    close(model.encode(X), AE().apply(variables, X, method=AE.encode))


def test_to_nnx_under_ramie_vmap_after_init():
    model = bridge.ToNNX(nn.Dense(2), rngs=ramie.Rngs(0)).lazy_init(X)
    xs = jnp.stack([X, 2 * X])
    ys = ramie.vmap(lambda m, x: m(x), in_axes=(None, 0))(model, xs)
    close(ys[1], model(2 * X))


def test_round_trip_linen_vars_to_nnx_to_linen_vars_is_identical():
    ref_vars = LinenBlock().init({"params": jax.random.key(3)}, X, train=False)
    model = bridge.ToNNX(LinenBlock(), rngs=ramie.Rngs(0))
    bridge.lazy_init(model, X, train=False)
    ramie.update(model, bridge.variables.linen_vars_to_nnx_attrs(ref_vars))
    # the ramie State (no RNG state: Linen does not keep any)
    graphdef, state, rng_state = ramie.split(model, ramie.Not(ramie.RngState), ...)
    assert set(state) == {"Dense_0", "Dense_1", "BatchNorm_0"}

    def rebuild(*, rngs):
        return ramie.merge(graphdef, state, rng_state)

    back = bridge.ToLinen(rebuild).init({"params": jax.random.key(9)}, X, train=False)
    assert jax.tree.structure(dict(back)) == jax.tree.structure(dict(ref_vars))
    jax.tree.map(np.testing.assert_array_equal, dict(back), dict(ref_vars))


def test_to_nnx_error_without_lazy_init_names_the_fix():
    class Outer(ramie.Module):
        def __init__(self):
            self.block = bridge.ToNNX(nn.Dense(2), rngs=ramie.Rngs(0))

        def __call__(self, x):
            return self.block(x)

    with pytest.raises(ramie.errors.BridgeError, match=r"(?s)at block: .*lazy_init"):
        Outer()(X)
    dropout_only = bridge.ToNNX(nn.Dropout(0.5, deterministic=True))
    np.testing.assert_array_equal(dropout_only(X), X)  # no variables needed


def test_lazy_init_rejects_a_plain_function():
    with pytest.raises(ramie.errors.BridgeError, match="lazy_init"):
        bridge.lazy_init(lambda x: x, X)


# -------------------------------------------------------------------- ToLinen
class RamieBlock(ramie.Module):
    def __init__(self, din, dout, *, rngs):
        self.lin = ramie.Linear(din, dout, rngs=rngs)
        self.bn = ramie.BatchNorm(dout, momentum=0.9, rngs=rngs)
        self.drop = ramie.Dropout(0.5, rngs=rngs)

    def __call__(self, x, train: bool = True):
        y = self.bn(self.lin(x), use_running_average=not train)
        return self.drop(y, deterministic=not train)


def test_to_linen_outputs_equal_the_ramie_module():
    model = bridge.to_linen(RamieBlock, 3, 4)
    variables = jax.jit(model.init, static_argnames="train")(
        {"params": jax.random.key(0)}, X, train=False
    )
    assert set(variables) == {"params", "batch_stats"}
    ours = RamieBlock(3, 4, rngs=ramie.Rngs(0))
    ramie.update(ours, {"lin": dict(variables["params"]["lin"])})
    ramie.update(
        ours, {"bn": {**variables["params"]["bn"], **variables["batch_stats"]["bn"]}}
    )
    close(model.apply(variables, X, train=False), ours(X, train=False))


def test_to_linen_batch_stats_mutable_and_dropout_keys():
    model = bridge.to_linen(RamieBlock, 3, 4)
    variables = model.init({"params": jax.random.key(0)}, X, train=False)
    k1, k2 = jax.random.key(1), jax.random.key(2)
    y1, upd = model.apply(variables, X, rngs={"dropout": k1}, mutable=["batch_stats"])
    y2, _ = model.apply(variables, X, rngs={"dropout": k2}, mutable=["batch_stats"])
    assert not np.allclose(y1, y2)
    ours = RamieBlock(3, 4, rngs=ramie.Rngs(0))
    ramie.update(ours, {"lin": dict(variables["params"]["lin"])})
    ours(X)  # train mode: statistics of this batch
    close(upd["batch_stats"]["bn"]["mean"], ours.bn.mean.value)


def test_to_linen_gradients_equal_ramie_grad():
    model = bridge.to_linen(ramie.Linear, 3, 2)
    variables = model.init(jax.random.key(0), X)
    g_linen = jax.grad(lambda p: model.apply({"params": p}, X).sum())(
        variables["params"]
    )
    ours = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    ramie.update(ours, dict(variables["params"]))
    g_ours = ramie.grad(lambda m: m(X).sum())(ours)
    close(g_linen["kernel"], g_ours["kernel"].value)


def test_to_linen_under_jax_jit_and_in_train_state():
    model = bridge.to_linen(ramie.Linear, 3, 2)
    params = model.init(jax.random.key(0), X)["params"]
    state = train_state.TrainState.create(
        apply_fn=model.apply, params=params, tx=optax.sgd(0.1)
    )
    target = jnp.zeros((4, 2))

    @jax.jit
    def step(state):
        loss, g = jax.value_and_grad(
            lambda p: jnp.mean((state.apply_fn({"params": p}, X) - target) ** 2)
        )(state.params)
        return state.apply_gradients(grads=g), loss

    losses = []
    for _ in range(3):
        state, loss = step(state)
        losses.append(float(loss))
    assert losses[2] < losses[0]
    assert int(state.step) == 3


def test_to_linen_under_nn_vmap():
    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x):
            layers = nn.vmap(
                bridge.ToLinen,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=None,
                axis_size=3,
            )(ramie.Linear, args=(3, 3))
            return layers(x)

    ys, v = jax.jit(Stack().init_with_output)(jax.random.key(0), X)
    p = v["params"]["VmapToLinen_0"]
    assert p["kernel"].shape == (3, 3, 3)
    assert not np.allclose(p["kernel"][0], p["kernel"][1])  # split params keys
    close(ys, jnp.einsum("bi,lio->lbo", X, p["kernel"]) + p["bias"][:, None])


class ScanLayer(ramie.Module):
    def __init__(self, rngs):
        self.lin = ramie.Linear(3, 3, rngs=rngs)

    def __call__(self, carry, _):
        return self.lin(carry), None


def test_to_linen_under_nn_scan_over_layers():
    class ScanStack(nn.Module):
        @nn.compact
        def __call__(self, x):
            scan = nn.scan(
                bridge.ToLinen,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                length=2,
            )(ScanLayer)
            y, _ = scan(x, None)
            return y

    y, v = jax.jit(ScanStack().init_with_output)(jax.random.key(0), X)
    p = v["params"]["ScanToLinen_0"]["lin"]
    ref = X
    for i in range(2):
        ref = ref @ p["kernel"][i] + p["bias"][i]
    close(y, ref)
    close(jax.jit(ScanStack().apply)(v, X), ref)


def test_to_linen_custom_collection_and_method():
    @ramie.register_variable_name("counts", overwrite=True)
    class Count(ramie.Variable):
        pass

    class Counter(ramie.Module):
        def __init__(self):
            self.n = Count(jnp.array(0))

        def __call__(self):
            self.n.value += 1
            return self.n.value

        def twice(self):
            return 2 * self.n.value

    model = bridge.ToLinen(Counter, skip_rng=True)
    variables = model.init(jax.random.key(0))
    assert int(variables["counts"]["n"]) == 0
    out, upd = model.apply(variables, mutable="counts")
    assert int(out) == 1 and int(upd["counts"]["n"]) == 1
    assert int(model.apply(upd, nnx_method="twice")) == 2


def test_to_linen_unknown_state_warns():
    model = bridge.to_linen(ramie.Linear, 3, 2)
    variables = model.init(jax.random.key(0), X)
    bad = {"params": {**variables["params"], "extra": jnp.ones(2)}}
    with pytest.warns(UserWarning, match="unknown module paths"):
        model.apply(bad, X)


def test_to_linen_class_defaults_and_overrides():
    LinenLinear = bridge.to_linen_class(ramie.Linear, in_features=3)
    v = LinenLinear(out_features=5).init(jax.random.key(0), X)
    assert v["params"]["kernel"].shape == (3, 5)


# ---------------------------------------------------------------- functional
def test_functional_matches_the_module():
    f = bridge.functional(ramie.Linear)(3, 2)
    state = f.init(rngs=ramie.Rngs(0))
    y, (graphdef, new_state) = f.apply(state)(X)
    close(y, ramie.merge(graphdef, new_state)(X))
    with pytest.raises(ramie.errors.BridgeError, match="init"):
        bridge.functional(ramie.Linear)(3, 2).apply(state)


def test_to_nnx_linen_rnn_with_nn_scan_and_sown_intermediates():
    class RNN(nn.Module):
        @nn.compact
        def __call__(self, xs):
            cell = nn.scan(
                nn.SimpleCell,
                variable_broadcast="params",
                split_rngs={"params": False},
                in_axes=1,
                out_axes=1,
            )(features=3)
            carry = cell.initialize_carry(jax.random.key(0), xs[:, 0].shape)
            _, ys = cell(carry, xs)
            self.sow("intermediates", "last", ys[:, -1])
            return ys

    xs = jax.random.normal(jax.random.key(2), (2, 5, 3))
    model = bridge.ToNNX(RNN(), rngs=ramie.Rngs(0)).lazy_init(xs)
    variables = {"params": model._linen_variables()["params"]}
    ref, upd = RNN().apply(variables, xs, mutable=["intermediates"])
    ys = model(xs, mutable=["intermediates"])
    close(ys, ref)
    assert isinstance(model.last, ramie.Intermediate)
    close(model.last.value[0], upd["intermediates"]["last"][0])
    popped = ramie.pop(model, ramie.Intermediate)
    assert "last" in popped and "last" not in vars(model)
