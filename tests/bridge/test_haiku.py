"""HaikuToNNX and ToHaiku: Haiku inside ramie and ramie inside Haiku."""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ramie as nnx

KEY = jax.random.key(0)
TOL = dict(rtol=1e-5, atol=1e-5)


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


def normal(*shape, seed=0):
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape, np.float32)


def trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def mlp_fn(x, training):
    x = hk.nets.MLP([8, 4], name="mlp")(x)
    return hk.dropout(hk.next_rng_key(), 0.5 if training else 0.0, x)


# ---------------------------------------------------------------- HaikuToNNX


def test_params_keep_haiku_names_and_round_trip():
    f = hk.transform(mlp_fn)
    x = normal(2, 3)
    model = nnx.bridge.HaikuToNNX(f, x, False, rngs=nnx.Rngs(0))
    assert model.params["mlp"]["linear_0"]["w"].shape == (3, 8)
    assert isinstance(model.params["mlp"]["linear_1"]["b"], nnx.Param)
    paths = {p for p, _ in nnx.iter_graph(model) if p and p[0] == "params"}
    assert ("params", "mlp", "linear_0", "w") in paths
    # the same parameters Haiku's own init gives with the params key
    params = model.to_haiku()
    trees_equal(params, f.init(nnx.Rngs(0).params(), x, False))
    # State -> to_haiku and back is identical
    graphdef, state = nnx.split(model)
    trees_equal(nnx.merge(graphdef, state).to_haiku(), params)
    close(model(x, False), f.apply(params, KEY, x, False))


def test_dropout_keys_come_from_rngs_and_training_matches_haiku():
    f = hk.transform(mlp_fn)
    x, y = normal(4, 3), normal(4, 4, seed=1)
    model = nnx.bridge.HaikuToNNX(f, x, False, rngs=nnx.Rngs(params=0, dropout=5))
    # the call's key is the dropout stream's next key
    expected_key = nnx.Rngs(dropout=5).dropout.fork(tag="dropout")()
    params = model.to_haiku()
    close(model(x, True), f.apply(params, expected_key, x, True))
    a, b = model(x, True), model(x, True)
    assert not np.allclose(a, b)  # a fresh key each call

    def haiku_loss(p):
        return ((f.apply(p, KEY, x, False) - y) ** 2).mean()

    grads = nnx.grad(lambda m: ((m(x, False) - y) ** 2).mean())(model)
    ref = jax.grad(haiku_loss)(params)
    close(grads["params"]["mlp"]["linear_0"]["w"].value, ref["mlp/~/linear_0"]["w"])

    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss, g = nnx.value_and_grad(lambda m: ((m(x, False) - y) ** 2).mean())(model)
        optimizer.update(model, g)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(3)]
    p = params
    for _ in range(3):
        p = jax.tree.map(lambda w, g: w - 0.1 * g, p, jax.grad(haiku_loss)(p))
    for name in p:
        for k in p[name]:
            close(model.to_haiku()[name][k], p[name][k])
    assert losses[2] < losses[0]


class HBNBlock(hk.Module):
    def __call__(self, x, training):
        x = hk.Linear(4)(x)
        x = hk.BatchNorm(True, True, decay_rate=0.9)(x, is_training=training)
        return jax.nn.relu(x)


def test_state_is_batchstat_and_written_back():
    f = hk.transform_with_state(lambda x, t: HBNBlock(name="block")(x, t))
    x = normal(8, 4)
    model = nnx.bridge.HaikuToNNX(f, x, True, rngs=nnx.Rngs(0))
    avg = model.state["block"]["batch_norm"]["mean_ema"]["average"]
    assert isinstance(avg, nnx.BatchStat)
    params, state = model.to_haiku()
    y_ref, state_ref = f.apply(params, state, None, x, True)
    close(model(x, True), y_ref)
    _, new_state = model.to_haiku()
    trees_equal(new_state, state_ref)
    # training under ramie.jit carries the new state out
    nnx.jit(lambda m, x: m(x, True))(model, x)
    _, state2 = f.apply(params, state_ref, None, x, True)
    for name in state2:
        for k in state2[name]:
            close(model.to_haiku()[1][name][k], state2[name][k])
    # gradients go to Params only
    grads = nnx.grad(lambda m: m(x, False).sum())(model)
    assert set(grads) == {"params"}


class HAutoEncoder(hk.Module):
    def __init__(self, name=None):
        super().__init__(name=name)
        self.encoder = hk.Linear(3, name="encoder")
        self.decoder = hk.Linear(6, name="decoder")

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def __call__(self, x):
        return self.decode(self.encode(x))


def test_multi_transform_functions_are_methods():
    # one module instance for init and the methods, as in the guide
    def fwd():
        m = HAutoEncoder(name="auto_encoder")
        return (lambda x: m(x)), (m.encode, m.decode)

    f = hk.multi_transform(fwd)
    x = normal(2, 6)
    model = nnx.bridge.HaikuToNNX(f, x, rngs=nnx.Rngs(0), methods=("encode", "decode"))
    params = model.to_haiku()
    encode, decode = f.apply
    z = model.encode(x)
    close(z, encode(params, None, x))
    close(model.decode(z), decode(params, None, z))
    close(model.call_method(1, z), decode(params, None, z))
    with pytest.raises(AttributeError):
        model.nope  # noqa: B018


def test_layer_stack_and_scan():
    def fn(x):
        @hk.layer_stack(3)
        def body(x):
            return jax.nn.relu(hk.Linear(5)(x))

        y = body(x)
        cell = hk.VanillaRNN(5)
        out, _ = hk.dynamic_unroll(
            cell, y[:, None, :].repeat(4, 1), cell.initial_state(2), time_major=False
        )
        return out

    f = hk.transform(fn)
    x = normal(2, 5)
    model = nnx.bridge.HaikuToNNX(f, x, rngs=nnx.Rngs(0))
    close(nnx.jit(lambda m, x: m(x))(model, x), f.apply(model.to_haiku(), None, x))


def test_not_a_transform_is_a_clear_error():
    with pytest.raises(TypeError, match="hk.transform"):
        nnx.bridge.HaikuToNNX(mlp_fn, normal(1, 3), rngs=nnx.Rngs(0))


# ------------------------------------------------------------------ ToHaiku


def test_to_haiku_linear_params_and_outputs():
    f = hk.transform(lambda x: nnx.bridge.ToHaiku(nnx.Linear, 3, 4)(x))
    x = normal(2, 3)
    params = f.init(KEY, x)
    ours = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    nnx.update(
        ours,
        nnx.State(
            {"kernel": params["linear"]["kernel"], "bias": params["linear"]["bias"]}
        ),
    )
    close(f.apply(params, None, x), ours(x))
    close(jax.jit(f.apply)(params, None, x), ours(x))  # traces under jax.jit
    # gradients through Haiku equal ramie's own
    g = jax.grad(lambda p: f.apply(p, None, x).sum())(params)
    g_ours = nnx.grad(lambda m: m(x).sum())(ours)
    close(g["linear"]["kernel"], g_ours["kernel"].value)


def test_to_haiku_batchnorm_state_and_mixed_model():
    def fn(x, training):
        x = hk.Linear(4)(x)
        bn = nnx.bridge.ToHaiku(nnx.BatchNorm, 4, momentum=0.9, name="bn")
        return bn(x, use_running_average=not training)

    f = hk.transform_with_state(fn)
    x = normal(8, 3)
    params, state = f.init(KEY, x, True)
    assert set(params) == {"linear", "bn"}
    assert set(state["bn"]) == {"mean", "var"}
    y, state = f.apply(params, state, None, x, True)
    ref = nnx.BatchNorm(4, momentum=0.9, rngs=nnx.Rngs(0))
    h = x @ params["linear"]["w"] + params["linear"]["b"]
    close(y, ref(h))
    close(state["bn"]["mean"], ref.mean.value)
    close(state["bn"]["var"], ref.var.value)


def test_to_haiku_dropout_uses_haiku_rng():
    f = hk.transform(lambda x: nnx.bridge.ToHaiku(nnx.Dropout, 0.5)(x))
    x = jnp.ones((4, 10))
    params = f.init(KEY, x)
    assert params == {}
    a = f.apply(params, jax.random.key(1), x)
    b = f.apply(params, jax.random.key(2), x)
    assert set(np.unique(np.asarray(a))) <= {0.0, 2.0}
    assert not np.array_equal(a, b)


def test_without_haiku_the_error_names_the_extra():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['haiku'] = None\n"
        "import ramie\n"
        "try:\n"
        "    ramie.bridge.ToHaiku(ramie.Linear, 2, 3)\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "pip install ramie[haiku]" in out.stdout


def test_set_haiku_round_trip_and_all_or_nothing():
    f = hk.transform_with_state(lambda x, t: HBNBlock(name="block")(x, t))
    x = normal(8, 4)
    params, state = f.init(KEY, x, True)
    rng = np.random.default_rng(3)
    trained = jax.tree.map(
        lambda a: rng.standard_normal(a.shape).astype(a.dtype), params
    )
    model = nnx.bridge.HaikuToNNX(f, x, True, rngs=nnx.Rngs(1))
    model.set_haiku(trained, state)
    got_params, got_state = model.to_haiku()
    trees_equal(got_params, trained)
    trees_equal(got_state, state)
    # the same through split/merge
    graphdef, st = nnx.split(model)
    trees_equal(nnx.merge(graphdef, st).to_haiku()[0], trained)
    bad = {k: dict(v) for k, v in trained.items()}
    bad["block/linear"]["w"] = bad["block/linear"]["w"][:2]
    del bad["block/batch_norm"]
    with pytest.raises(nnx.errors.StateLoadError) as err:
        model.set_haiku(bad, state)
    msg = str(err.value)
    assert "block/linear" in msg and "batch_norm" in msg
    trees_equal(model.to_haiku()[0], trained)  # nothing written
