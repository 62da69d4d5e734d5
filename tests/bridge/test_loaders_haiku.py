"""load_haiku: the migration guide's Haiku models load into their ramie twins."""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie as nnx
from bridge_helpers import (  # noqa: F401
    KEY,
    TOL,
    close,
    normal,
    randomize,
    refused_unchanged,
)
from ramie.errors import StateLoadError


def snapshot(model):
    return [np.array(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))] + [
        np.array(x) for x in jax.tree.leaves(nnx.state(model, nnx.BatchStat))
    ]


# ---------------------------------------------------------------- Block/Model


class HBlock(hk.Module):
    def __init__(self, features, name=None):
        super().__init__(name=name)
        self.features = features

    def __call__(self, x, training):
        x = hk.Linear(self.features)(x)
        x = hk.dropout(hk.next_rng_key(), 0.5 if training else 0, x)
        return jax.nn.relu(x)


class HModel(hk.Module):
    def __init__(self, dmid, dout, name=None):
        super().__init__(name=name)
        self.dmid, self.dout = dmid, dout

    def __call__(self, x, training):
        x = HBlock(self.dmid, name="block")(x, training)
        return hk.Linear(self.dout)(x)


class Block(nnx.Module):
    def __init__(self, din, dout, rngs):
        self.linear = nnx.Linear(din, dout, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.dropout(self.linear(x)))


class Model(nnx.Module):
    def __init__(self, din, dmid, dout, rngs):
        self.block = Block(din, dmid, rngs=rngs)
        self.linear = nnx.Linear(dmid, dout, rngs=rngs)

    def __call__(self, x):
        return self.linear(self.block(x))


def block_model():
    f = hk.transform(lambda x, training: HModel(16, 5, name="model")(x, training))
    x = normal(2, 12)
    return f, f.init(KEY, x, training=False), x


def test_block_model_matches_apply():
    f, params, x = block_model()
    assert set(params) == {"model/block/linear", "model/linear"}
    model = Model(12, 16, 5, rngs=nnx.Rngs(0))
    report = nnx.bridge.load_haiku(model, params)
    model.eval()
    close(model(x), f.apply(params, KEY, x, training=False))
    loaded = {x.target: x.sources for x in report.loaded}
    assert loaded["block.linear.kernel"] == ("params/model/block/linear/w",)
    assert loaded["linear.bias"] == ("params/model/linear/b",)


# ------------------------------------------------------- BatchNorm (state)


class HBNBlock(hk.Module):
    def __call__(self, x, training):
        x = hk.Linear(4)(x)
        x = hk.BatchNorm(True, True, decay_rate=0.99)(x, is_training=training)
        return jax.nn.relu(x)


class BNBlock(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(4, 4, rngs=rngs)
        self.batchnorm = nnx.BatchNorm(4, momentum=0.99, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.batchnorm(self.linear(x)))


def test_batchnorm_state_averages_load_reshaped():
    f = hk.transform_with_state(lambda x, t: HBNBlock(name="block")(x, t))
    x = normal(8, 4)
    params, state = f.init(KEY, x, True)
    params = randomize(params)
    _, state = f.apply(params, state, None, x * 3 + 1, True)  # one train step
    assert state["block/batch_norm/~/mean_ema"]["average"].shape == (1, 4)
    model = BNBlock(nnx.Rngs(0))
    report = nnx.bridge.load_haiku(model, params, state)
    assert report.ok
    model.eval()
    close(model(x), f.apply(params, state, None, x, False)[0])
    loaded = {x.target: x for x in report.loaded}
    assert loaded["batchnorm.mean"].transform == "reshape (1, 4) -> (4,)"
    assert loaded["batchnorm.scale"].sources == ("params/block/batch_norm/scale",)
    ignored = dict(report.ignored)
    assert "state/block/batch_norm/~/mean_ema/counter" in ignored
    # a training step normalises with batch statistics, as Haiku does
    model.train()
    close(model(x), f.apply(params, state, None, x, True)[0])


# -------------------------------------------------------------- AutoEncoder


class HAutoEncoder(hk.Module):
    def __init__(self, embed_dim, output_dim, name=None):
        super().__init__(name=name)
        self.encoder = hk.Linear(embed_dim, name="encoder")
        self.decoder = hk.Linear(output_dim, name="decoder")

    def encode(self, x):
        return self.encoder(x)

    def decode(self, x):
        return self.decoder(x)

    def __call__(self, x):
        return self.decode(self.encode(x))


class AutoEncoder(nnx.Module):
    def __init__(self, in_dim, embed_dim, output_dim, rngs):
        self.encoder = nnx.Linear(in_dim, embed_dim, rngs=rngs)
        self.decoder = nnx.Linear(embed_dim, output_dim, rngs=rngs)

    def encode(self, x):
        return self.encoder(x)

    def decode(self, x):
        return self.decoder(x)

    def __call__(self, x):
        return self.decode(self.encode(x))


def autoencoder():
    def forward():
        module = HAutoEncoder(3, 6, name="auto_encoder")
        return (lambda x: module(x)), (module.encode, module.decode)

    return hk.multi_transform(forward)


def test_autoencoder_multi_transform():
    f = autoencoder()
    x = normal(2, 6)
    params = f.init(KEY, x)
    assert list(params)[0] == "auto_encoder/~/encoder"
    model = AutoEncoder(6, 3, 6, rngs=nnx.Rngs(0))
    nnx.bridge.load_haiku(model, params)
    encode, decode = f.apply
    # a checkpoint whose keys were sorted (decoder first) pairs by name
    model.encoder.kernel.value = jnp.zeros_like(model.encoder.kernel.value)
    sorted_params = jax.tree.map(lambda a: a, params)
    assert list(sorted_params)[0] == "auto_encoder/~/decoder"
    nnx.bridge.load_haiku(model, sorted_params)
    z = model.encode(x)
    close(z, encode(params, None, x))
    close(model.decode(z), decode(params, None, z))


# ------------------------------------------------------------ RNN (hk.scan)


class HRNNCell(hk.Module):
    def __init__(self, hidden_size, name=None):
        super().__init__(name=name)
        self.hidden_size = hidden_size

    def __call__(self, carry, x):
        x = jnp.concatenate([carry, x], axis=-1)
        x = jax.nn.relu(hk.Linear(self.hidden_size)(x))
        return x, x

    def initial_state(self, batch_size):
        return jnp.zeros((batch_size, self.hidden_size))


class HRNN(hk.Module):
    def __call__(self, x):
        cell = HRNNCell(8)
        carry = cell.initial_state(x.shape[0])
        _, y = hk.scan(cell, carry, jnp.swapaxes(x, 1, 0))
        return jnp.swapaxes(y, 0, 1)


class RNNCell(nnx.Module):
    def __init__(self, input_size, hidden_size, rngs):
        self.linear = nnx.Linear(hidden_size + input_size, hidden_size, rngs=rngs)
        self.hidden_size = hidden_size

    def __call__(self, carry, x):
        x = jax.nn.relu(self.linear(jnp.concatenate([carry, x], axis=-1)))
        return x, x

    def initial_state(self, batch_size):
        return jnp.zeros((batch_size, self.hidden_size))


class RNN(nnx.Module):
    def __init__(self, input_size, hidden_size, rngs):
        self.cell = RNNCell(input_size, hidden_size, rngs=rngs)

    def __call__(self, x):
        carry = self.cell.initial_state(x.shape[0])
        _, y = nnx.scan(
            lambda c, cell, x: cell(c, x),
            in_axes=(nnx.Carry, None, 1),
            out_axes=(nnx.Carry, 1),
        )(carry, self.cell, x)
        return y


def test_rnn_with_hk_scan():
    f = hk.transform(lambda x: HRNN()(x))
    x = normal(3, 7, 5)
    params = f.init(KEY, x)
    model = RNN(5, 8, rngs=nnx.Rngs(0))
    nnx.bridge.load_haiku(model, params)
    close(model(x), f.apply(params, None, x))


# ------------------------------------------------------- hk.layer_stack MLP


class HMLP(hk.Module):
    def __call__(self, x, training):
        @hk.layer_stack(5)
        def stack_block(x):
            return HBlock(8, name="block")(x, training)

        return stack_block(x)


class MLP(nnx.Module):
    def __init__(self, features, num_layers, rngs):
        @nnx.split_rngs(splits=num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def create_block(rngs):
            return Block(features, features, rngs=rngs)

        self.blocks = create_block(rngs)
        self.num_layers = num_layers

    def __call__(self, x):
        @nnx.split_rngs(splits=self.num_layers)
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def forward(x, model):
            return model(x)

        return forward(x, self.blocks)


def test_layer_stack_loads_into_vmapped_blocks():
    f = hk.transform(lambda x, t: HMLP(name="mlp")(x, t))
    x = normal(2, 8)
    params = f.init(KEY, x, False)
    (name,) = params
    assert "layer_stack" in name and params[name]["w"].shape == (5, 8, 8)
    model = MLP(8, 5, rngs=nnx.Rngs(0))
    nnx.bridge.load_haiku(model, params)
    model.eval()
    close(model(x), f.apply(params, KEY, x, False))


# ------------------------------------------------- top-level get_parameter


def test_top_level_function_parameter_and_state():
    def forward(x):
        counter = hk.get_state("counter", shape=[], dtype=jnp.int32, init=jnp.ones)
        multiplier = hk.get_parameter("multiplier", [1], x.dtype, init=jnp.ones)
        hk.set_state("counter", counter + 1)
        return x + multiplier * counter

    f = hk.transform_with_state(forward)
    x = normal(1, 4)
    params, state = f.init(KEY, x)
    _, state = f.apply(params, state, None, x)

    class Counter(nnx.Variable):
        pass

    class FooModule(nnx.Module):
        def __init__(self, rngs):
            self.counter = Counter(jnp.ones((), jnp.int32))
            self.multiplier = nnx.Param(jnp.zeros((1,), jnp.float32))

        def __call__(self, x):
            out = x + self.multiplier * self.counter.value
            self.counter.value += 1
            return out

    model = FooModule(nnx.Rngs(0))
    nnx.bridge.load_haiku(model, params, state)
    assert int(model.counter.value) == 2
    close(model(x), f.apply(params, state, None, x)[0])


# ---------------------------------------------------------------- layer zoo


def zoo_fn(x, seq, img, vol, ids):
    return [
        hk.LayerNorm(-1, True, True)(x),
        hk.RMSNorm(-1)(x),
        hk.GroupNorm(2)(x),
        hk.Conv1D(3, 3)(seq),
        hk.Conv2D(3, 3)(img),
        hk.Conv3D(2, 2)(vol),
        hk.Embed(7, 4)(ids),
        hk.MultiHeadAttention(
            2, 4, w_init=hk.initializers.VarianceScaling(), model_size=4
        )(seq, seq, seq),
    ]


class Zoo(nnx.Module):
    def __init__(self, rngs):
        self.ln = nnx.LayerNorm(4, epsilon=1e-5, rngs=rngs)
        self.rms = nnx.RMSNorm(4, epsilon=1e-5, rngs=rngs)
        self.gn = nnx.GroupNorm(4, num_groups=2, epsilon=1e-5, rngs=rngs)
        self.conv1 = nnx.Conv(4, 3, (3,), rngs=rngs)
        self.conv2 = nnx.Conv(4, 3, (3, 3), rngs=rngs)
        self.conv3 = nnx.Conv(4, 2, (2, 2, 2), rngs=rngs)
        self.embed = nnx.Embed(7, 4, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(2, 4, 8, decode=False, rngs=rngs)

    def __call__(self, x, seq, img, vol, ids):
        return [self.ln(x), self.rms(x), self.gn(x), self.conv1(seq),
                self.conv2(img), self.conv3(vol), self.embed(ids),
                self.attn(seq)]  # fmt: skip


def zoo_inputs():
    return (normal(2, 4), normal(2, 5, 4), normal(2, 5, 5, 4),
            normal(2, 3, 3, 3, 4), np.array([[1, 6, 0]]))  # fmt: skip


def test_norms_convs_embed_attention():
    inputs = zoo_inputs()
    f = hk.transform(zoo_fn)
    # one compiled program each instead of op-by-op dispatch
    params = randomize(jax.jit(f.init)(KEY, *inputs))
    model = Zoo(nnx.Rngs(0))
    report = nnx.bridge.load_haiku(model, params)
    assert report.ok
    ours = nnx.jit(lambda m, *a: m(*a))(model, *inputs)
    for a, b in zip(ours, jax.jit(f.apply)(params, None, *inputs)):
        close(a, b)
    loaded = {x.target: x for x in report.loaded}
    assert loaded["attn.query.kernel"].transform == "reshape (4, 8) -> (4, 2, 4)"
    assert loaded["attn.out.kernel"].sources == (
        "params/multi_head_attention/linear/w",
    )


def lstm_fn(x):
    core = hk.LSTM(6)
    out, state = core(x, core.initial_state(x.shape[0]))
    return out, state.cell


class Cell(nnx.Module):
    def __init__(self, rngs):
        self.lstm = nnx.LSTMCell(4, 6, rngs=rngs)

    def __call__(self, x):
        zeros = jnp.zeros((x.shape[0], 6))
        (c, h), y = self.lstm((zeros, zeros), x)
        return y, c


def test_lstm_packed_gates_split_with_forget_offset():
    f = hk.transform(lstm_fn)
    x = normal(3, 4)
    params = randomize(f.init(KEY, x))
    model = Cell(nnx.Rngs(0))
    report = nnx.bridge.load_haiku(model, params)
    for ours, ref in zip(model(x), f.apply(params, None, x)):
        close(ours, ref)
    loaded = {x.target: x.transform for x in report.loaded}
    assert "+ 1" in loaded["lstm.hf.bias"]


def test_haiku_gru_is_refused_with_the_reason():
    f = hk.transform(lambda x: hk.GRU(5)(x, jnp.zeros((x.shape[0], 5))))
    params = f.init(KEY, normal(3, 4))
    model = nnx.GRUCell(4, 5, rngs=nnx.Rngs(0))
    with refused_unchanged(model, "cannot be converted"):
        nnx.bridge.load_haiku(model, params)


# ---------------------------------------------------------------- bad input


def test_missing_layer_transposed_and_wrong_dtype_load_nothing():
    _, params, _ = block_model()
    params = dict(params)
    lin = dict(params.pop("model/linear"))  # a missing layer
    blk = dict(params["model/block/linear"])
    blk["w"] = blk["w"].T
    blk["b"] = blk["b"].astype(jnp.int32)
    params["model/block/linear"] = blk
    model = Model(12, 16, 5, rngs=nnx.Rngs(0))
    before = snapshot(model)
    with pytest.raises(StateLoadError) as err:
        nnx.bridge.load_haiku(model, params)
    msg = str(err.value)
    assert "params/model/block/linear/w -> block.linear.kernel" in msg
    assert "found float32[16, 12] (transposed?)" in msg
    assert "expected float32[16], found int32[16]" in msg
    assert set(err.value.missing) == {"linear.kernel", "linear.bias"}
    for a, b in zip(snapshot(model), before):
        np.testing.assert_array_equal(a, b)
    assert lin  # the popped layer is what the error names as unfilled


def test_other_architecture_is_refused():
    f = autoencoder()
    params = f.init(KEY, normal(2, 6))
    model = Model(12, 16, 5, rngs=nnx.Rngs(0))
    before = snapshot(model)
    with pytest.raises(StateLoadError, match="nothing was loaded"):
        nnx.bridge.load_haiku(model, params)
    for a, b in zip(snapshot(model), before):
        np.testing.assert_array_equal(a, b)


def test_mapping_completes_the_automatic_pairing():
    _, params, x = block_model()
    params = {"weird": {"a": params["model/linear"]["w"]},
              "model/block/linear": params["model/block/linear"],
              "model/linear": {"b": params["model/linear"]["b"]}}  # fmt: skip
    model = Model(12, 16, 5, rngs=nnx.Rngs(0))
    report = nnx.bridge.load_haiku(
        model, params, mapping={"params/weird/a": "linear.kernel"}
    )
    assert report.ok
    np.testing.assert_array_equal(model.linear.kernel.value, params["weird"]["a"])
