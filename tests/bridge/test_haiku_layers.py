"""HaikuBatchNorm and HaikuGRUCell compute what Haiku computes, step by step."""

from __future__ import annotations

import flax.linen as nn
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ramie as nnx
from bridge_helpers import KEY, TOL, close, randomize, refused_unchanged
from ramie.errors import StateLoadError

LR = 0.05


def batches(n, shape, seed=0):
    rng = np.random.default_rng(seed)
    # each batch has its own scale and shift, so the statistics keep moving
    return [
        (rng.standard_normal(shape) * (1 + i) + 0.5 * i).astype(np.float32)
        for i in range(n)
    ]


def snapshot(model):
    return [np.array(x) for x in jax.tree.leaves(nnx.state(model))]


# ------------------------------------------------------------- BatchNorm


def h_net(x, is_training):
    x = hk.Linear(4, w_init=jnp.zeros, name="body")(x)
    x = hk.BatchNorm(True, True, decay_rate=0.9, name="bn")(x, is_training)
    return hk.Linear(2, w_init=jnp.zeros, name="head")(jax.nn.relu(x))


class Net(nnx.Module):
    def __init__(self, bn_cls, rngs):
        self.body = nnx.Linear(3, 4, rngs=rngs)
        self.bn = bn_cls(4, momentum=0.9, rngs=rngs)
        self.head = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.head(jax.nn.relu(self.bn(self.body(x))))


@jax.jit
def haiku_step(params, state, x):
    def loss(p):
        y, new_state = hk.transform_with_state(h_net).apply(p, state, None, x, True)
        return jnp.mean(y**2), (y, new_state)

    grads, (y, state) = jax.grad(loss, has_aux=True)(params)
    params = jax.tree.map(lambda p, g: p - LR * g, params, grads)
    return params, state, y


@nnx.jit
def ramie_step(model, optimizer, x):
    def loss(m):
        y = m(x)
        return jnp.mean(y**2), y

    grads, y = nnx.grad(loss, has_aux=True)(model)
    optimizer.update(model, grads)
    return y


def haiku_bn_stats(state):
    out = {}
    for which in ("mean", "var"):
        ema = state[f"bn/~/{which}_ema"]
        out[which] = ema["average"].reshape(-1)
        out[f"{which}_hidden"] = ema["hidden"].reshape(-1)
        out["counter"] = ema["counter"]
    return out


def trained_haiku(xs, steps):
    f = hk.transform_with_state(h_net)
    params, state = f.init(KEY, xs[0], True)
    params = randomize(params)
    for x in xs[:steps]:
        params, state, _ = haiku_step(params, state, x)
    return params, state


def test_loaded_haiku_batchnorm_keeps_training_like_haiku():
    xs = batches(6, (8, 3))
    params, state = trained_haiku(xs, 2)
    model = Net(nnx.bridge.HaikuBatchNorm, nnx.Rngs(0))
    report = nnx.bridge.load_haiku(model, params, state)
    assert report.ok
    loaded = {x.target: x.sources for x in report.loaded}
    assert loaded["bn.mean_hidden"] == ("state/bn/~/mean_ema/hidden",)
    assert loaded["bn.counter"] == ("state/bn/~/mean_ema/counter",)
    assert dict(report.ignored)["state/bn/~/var_ema/counter"].startswith("equal to")
    assert int(model.bn.counter.value) == 2
    optimizer = nnx.Optimizer(model, optax.sgd(LR), wrt=nnx.Param)
    for x in xs[2:]:
        params, state, y_ref = haiku_step(params, state, x)
        close(ramie_step(model, optimizer, x), y_ref)
        ref = haiku_bn_stats(state)
        for name, value in ref.items():
            close(getattr(model.bn, name).value, value)
    assert int(model.bn.counter.value) == 6
    close(model.body.kernel.value, params["body"]["w"])
    close(model.head.kernel.value, params["head"]["w"])
    # evaluation uses the continued statistics, as Haiku does
    model.eval()
    x = xs[0]
    close(
        model(x), hk.transform_with_state(h_net).apply(params, state, None, x, False)[0]
    )


def test_plain_batchnorm_gets_the_averages_and_is_told_what_it_drops():
    xs = batches(3, (8, 3))
    params, state = trained_haiku(xs, 2)
    model = Net(nnx.BatchNorm, nnx.Rngs(0))
    report = nnx.bridge.load_haiku(model, params, state)
    assert report.ok
    ignored = dict(report.ignored)
    for key in ("mean_ema/hidden", "mean_ema/counter", "var_ema/hidden"):
        assert "HaikuBatchNorm" in ignored[f"state/bn/~/{key}"]
    # a plain EMA continues differently from Haiku's debiased one
    optimizer = nnx.Optimizer(model, optax.sgd(LR), wrt=nnx.Param)
    _, state, _ = haiku_step(params, state, xs[2])
    ramie_step(model, optimizer, xs[2])
    ref = haiku_bn_stats(state)["var"]
    assert not np.allclose(model.bn.var.value, ref, **TOL)


def test_fresh_haiku_batchnorm_follows_a_fresh_hk_batchnorm():
    def fwd(x, is_training):
        return hk.BatchNorm(True, True, decay_rate=0.8, eps=1e-3)(x, is_training)

    f = hk.transform_with_state(fwd)
    xs = batches(4, (16, 3), seed=3)
    _, state = f.init(KEY, xs[0], True)
    params = {"batch_norm": {"scale": jnp.ones((1, 3)), "offset": jnp.zeros((1, 3))}}
    bn = nnx.bridge.HaikuBatchNorm(3, momentum=0.8, epsilon=1e-3, rngs=nnx.Rngs(0))
    for x in xs:
        y, state = f.apply(params, state, None, x, True)
        close(bn(x), y)
        close(bn.mean.value, state["batch_norm/~/mean_ema"]["average"][0])
        close(bn.var.value, state["batch_norm/~/var_ema"]["average"][0])
    bn.eval()
    close(bn(xs[0]), f.apply(params, state, None, xs[0], False)[0])


def test_channels_first_batchnorm_loads_into_axis_1_and_keeps_training():
    """``hk.BatchNorm(data_format="channels_first")`` on NCHW images is
    ``HaikuBatchNorm(C, axis=1)``: Haiku's (1, C, 1, 1) parameters and
    statistics load, and training and evaluation go on as in Haiku."""

    def fwd(x, is_training):
        bn = hk.BatchNorm(True, True, 0.9, data_format="channels_first", name="bn")
        return bn(x, is_training)

    f = hk.transform_with_state(fwd)
    xs = batches(5, (6, 4, 3, 3), seed=5)
    params, state = f.init(KEY, xs[0], True)
    params = randomize(params)
    assert params["bn"]["scale"].shape == (1, 4, 1, 1)
    for x in xs[:2]:
        _, state = f.apply(params, state, None, x, True)

    class Model(nnx.Module):
        def __init__(self):
            self.bn = nnx.bridge.HaikuBatchNorm(
                4, momentum=0.9, axis=1, rngs=nnx.Rngs(0)
            )

        def __call__(self, x, **kw):
            return self.bn(x, **kw)

    model = Model()
    assert nnx.bridge.load_haiku(model, params, state).ok
    assert int(model.bn.counter.value) == 2
    for x in xs[2:]:
        y, state = f.apply(params, state, None, x, True)
        close(model(x), y)
        stats = haiku_bn_stats(state)
        for name in ("mean", "var", "mean_hidden", "var_hidden"):
            close(getattr(model.bn, name).value, stats[name])
    model.eval()
    close(model(xs[0]), f.apply(params, state, None, xs[0], False)[0])


def test_test_local_stats_normalises_by_the_batch_and_updates_nothing():
    def fwd(x, is_training, test_local_stats):
        return hk.BatchNorm(True, True, 0.9, name="bn")(
            x, is_training, test_local_stats
        )

    f = hk.transform_with_state(fwd)
    xs = batches(3, (8, 3), seed=9)
    params, state = f.init(KEY, xs[0], True, False)
    params = randomize(params)
    _, state = f.apply(params, state, None, xs[0], True, False)
    bn = nnx.bridge.HaikuBatchNorm(3, momentum=0.9, rngs=nnx.Rngs(0))
    assert nnx.bridge.load_haiku(bn, params, state).ok
    before = snapshot(bn)
    y, after_state = f.apply(params, state, None, xs[1], False, True)
    close(bn(xs[1], use_running_average=True, test_local_stats=True), y)
    for a, b in zip(before, snapshot(bn)):
        np.testing.assert_array_equal(a, b)  # nothing updated, as in Haiku
    assert jax.tree.all(jax.tree.map(np.array_equal, after_state, state))
    # without it, evaluation uses the running averages: another result
    y_avg, _ = f.apply(params, state, None, xs[1], False, False)
    close(bn(xs[1], use_running_average=True), y_avg)
    assert not np.allclose(y, y_avg, atol=1e-3)


def test_haiku_batchnorm_through_to_haiku_replaces_hk_batchnorm():
    def haiku_bn(x, is_training):
        return hk.BatchNorm(True, True, 0.9, name="bn")(x, is_training)

    def ramie_bn(x, is_training):
        bn = nnx.bridge.ToHaiku(
            nnx.bridge.HaikuBatchNorm, 4, momentum=0.9, name="bn"
        )  # fmt: skip
        return bn(x, use_running_average=not is_training)

    ref, ours = hk.transform_with_state(haiku_bn), hk.transform_with_state(ramie_bn)
    xs = batches(3, (8, 4), seed=2)
    p_ref, s_ref = ref.init(KEY, xs[0], True)
    p_ours, s_ours = ours.init(KEY, xs[0], True)
    assert set(s_ours["bn"]) == {"mean", "var", "mean_hidden", "var_hidden", "counter"}
    for x in xs:
        y_ref, s_ref = ref.apply(p_ref, s_ref, None, x, True)
        y_ours, s_ours = ours.apply(p_ours, s_ours, None, x, True)
        close(y_ours, y_ref)
        close(s_ours["bn"]["var"], s_ref["bn/~/var_ema"]["average"][0])
        close(s_ours["bn"]["mean_hidden"], s_ref["bn/~/mean_ema"]["hidden"][0])
    x = xs[0]
    close(ours.apply(p_ours, s_ours, None, x, False)[0],
          ref.apply(p_ref, s_ref, None, x, False)[0])  # fmt: skip


def test_unequal_ema_counters_are_refused_and_load_nothing():
    xs = batches(2, (8, 3))
    params, state = trained_haiku(xs, 1)
    state = jax.tree.map(lambda a: a, state)
    state["bn/~/var_ema"] = dict(state["bn/~/var_ema"], counter=jnp.array(5))
    model = Net(nnx.bridge.HaikuBatchNorm, nnx.Rngs(0))
    before = snapshot(model)
    with pytest.raises(StateLoadError, match=r"var_ema/counter -> bn\.counter"):
        nnx.bridge.load_haiku(model, params, state)
    for a, b in zip(snapshot(model), before):
        np.testing.assert_array_equal(a, b)


def test_haiku_to_nnx_batchnorm_trains_like_haiku():
    xs = batches(4, (8, 3))
    f = hk.transform_with_state(h_net)
    params, state = f.init(KEY, xs[0], True)
    params = randomize(params)
    model = nnx.bridge.HaikuToNNX(f, xs[0], True, rngs=nnx.Rngs(0))
    model.set_haiku(params, state)
    optimizer = nnx.Optimizer(model, optax.sgd(LR), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x):
        def loss(m):
            y = m(x, True)
            return jnp.mean(y**2), y

        grads, y = nnx.grad(loss, has_aux=True)(model)
        optimizer.update(model, grads)
        return y

    for x in xs:
        params, state, y_ref = haiku_step(params, state, x)
        close(step(model, optimizer, x), y_ref)
        ema = model.state["bn"]["mean_ema"]
        close(ema["hidden"].value, state["bn/~/mean_ema"]["hidden"])
        assert int(ema["counter"].value) == int(state["bn/~/mean_ema"]["counter"])
    close(model.params["head"]["w"].value, params["head"]["w"])


# ------------------------------------------------------------------- GRU


def h_gru(xs):
    core = hk.GRU(5, w_i_init=jnp.zeros, w_h_init=jnp.zeros)
    ys, _ = hk.dynamic_unroll(core, xs, core.initial_state(xs.shape[1]))
    return ys


def test_haiku_gru_loads_into_haiku_gru_cell_over_a_sequence():
    f = hk.transform(h_gru)
    xs = batches(1, (9, 3, 4))[0]  # time-major, as hk.dynamic_unroll
    params = randomize(f.init(KEY, xs))
    cell = nnx.bridge.HaikuGRUCell(4, 5, rngs=nnx.Rngs(0))
    report = nnx.bridge.load_haiku(cell, params)
    assert {x.sources for x in report.loaded} == {
        ("params/gru/w_i",),
        ("params/gru/b",),
        ("params/gru/w_h",),
    }
    assert all("z negated" in x.transform for x in report.loaded)
    rnn = nnx.RNN(cell, time_major=True)
    close(rnn(xs), f.apply(params, None, xs))


def test_ramie_gru_cell_differs_and_is_refused_naming_haiku_gru_cell():
    f = hk.transform(h_gru)
    xs = batches(1, (4, 3, 4))[0]
    params = randomize(f.init(KEY, xs))
    cell = nnx.GRUCell(4, 5, rngs=nnx.Rngs(0))
    with refused_unchanged(cell, "HaikuGRUCell"):
        nnx.bridge.load_haiku(cell, params)
    # the candidates really differ: same weights, other outputs
    twin = nnx.bridge.HaikuGRUCell(4, 5, rngs=nnx.Rngs(0))
    nnx.bridge.load_haiku(twin, params)
    nnx.update(cell, nnx.state(twin))
    h = jnp.full((3, 5), 0.7)
    assert not np.allclose(cell(h, xs[0])[0], twin(h, xs[0])[0], **TOL)


def test_linen_gru_is_not_loaded_into_haiku_gru_cell():
    class LGRU(nn.Module):
        @nn.compact
        def __call__(self, h, x):
            return nn.GRUCell(5)(h, x)

    x, h = jnp.ones((3, 4)), jnp.zeros((3, 5))
    variables = LGRU().init(KEY, h, x)
    cell = nnx.bridge.HaikuGRUCell(4, 5, rngs=nnx.Rngs(0))
    with pytest.raises(StateLoadError, match="use ramie.GRUCell"):
        nnx.bridge.load_linen(cell, variables)


class Block(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(4, 4, rngs=rngs)
        self.bn = nnx.bridge.HaikuBatchNorm(4, momentum=0.9, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.bn(self.linear(x)))


class Stack(nnx.Module):
    def __init__(self, rngs):
        @nnx.split_rngs(splits=3)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(rngs):
            return Block(rngs)

        self.blocks = make(rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def forward(x, block):
            return block(x)

        return forward(x, self.blocks)


@pytest.mark.slow
def test_layer_stack_of_batchnorms_continues_per_layer():
    def fwd(x, is_training):
        @hk.layer_stack(3)
        def body(x):
            x = hk.Linear(4, w_init=jnp.zeros)(x)
            return jax.nn.relu(hk.BatchNorm(True, True, 0.9)(x, is_training))

        return body(x)

    f = hk.transform_with_state(fwd)
    xs = batches(4, (8, 4), seed=5)
    params, state = f.init(KEY, xs[0], True)
    params = randomize(params)
    apply = jax.jit(f.apply, static_argnums=4)
    for x in xs[:2]:
        _, state = apply(params, state, None, x, True)
    model = Stack(nnx.Rngs(0))
    assert nnx.bridge.load_haiku(model, params, state).ok
    ema = "__layer_stack_no_per_layer/batch_norm/~/var_ema"
    for x in xs[2:]:
        y, state = apply(params, state, None, x, True)
        close(model(x), y)
        close(model.blocks.bn.var_hidden.value, state[ema]["hidden"][:, 0])
        np.testing.assert_array_equal(
            model.blocks.bn.counter.value, state[ema]["counter"]
        )


def test_trained_linen_gru_loads_into_linen_gru_cell_with_its_candidate_bias():
    class LGRU(nn.Module):
        @nn.compact
        def __call__(self, h, x):
            return nn.GRUCell(5, name="cell")(h, x)

    x, h = batches(1, (3, 4), seed=4)[0], jnp.full((3, 5), 0.4)
    variables = randomize(LGRU().init(KEY, h, x))  # hn/bias non-zero, as trained
    assert np.any(variables["params"]["cell"]["hn"]["bias"] != 0)
    cell = nnx.bridge.LinenGRUCell(4, 5, rngs=nnx.Rngs(0))
    report = nnx.bridge.load_linen(cell, variables)
    assert {x.target: x.sources for x in report.loaded}["bias_hn"] == (
        "params/cell/hn/bias",
    )
    for ours, ref in zip(cell(h, x), LGRU().apply(variables, h, x)):
        close(ours, ref)
    # a plain GRUCell refuses the same checkpoint, naming the cell that fits
    plain = nnx.GRUCell(4, 5, rngs=nnx.Rngs(0))
    with pytest.raises(StateLoadError, match="LinenGRUCell"):
        nnx.bridge.load_linen(plain, variables)
