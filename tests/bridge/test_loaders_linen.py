"""load_linen: the migration guide's Linen models load into their ramie twins.

Each test initialises a Linen model, loads its variables into the
hand-written ramie model of the same architecture and compares outputs with
``model.apply`` (float32, 1e-5).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

import ramie as nnx
from ramie.errors import StateLoadError

TOL = dict(rtol=1e-5, atol=1e-5)


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


def normal(*shape, seed=0):
    """Random float32 data from NumPy (no JAX compilation per shape)."""
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape, np.float32)


def snapshot(model):
    return [np.array(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))] + [
        np.array(x) for x in jax.tree.leaves(nnx.state(model, nnx.BatchStat))
    ]


def assert_unchanged(model, before):
    after = snapshot(model)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- Block/Model


class LBlock(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x, training: bool):
        x = nn.Dense(self.features)(x)
        x = nn.Dropout(0.5, deterministic=not training)(x)
        return jax.nn.relu(x)


class LModel(nn.Module):
    dmid: int
    dout: int

    @nn.compact
    def __call__(self, x, training: bool):
        x = LBlock(self.dmid)(x, training)
        return nn.Dense(self.dout)(x)


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


def test_block_model_matches_apply():
    x = normal(2, 12, seed=1)
    variables = LModel(16, 5).init(jax.random.key(0), x, training=False)
    model = Model(12, 16, 5, rngs=nnx.Rngs(3))
    report = nnx.bridge.load_linen(model, variables)
    assert report.ok and len(report.loaded) == 4
    model.eval()
    close(model(x), LModel(16, 5).apply(variables, x, training=False))
    by_target = {x.target: x.sources for x in report.loaded}
    assert by_target["block.linear.kernel"] == ("params/LBlock_0/Dense_0/kernel",)
    assert by_target["linear.bias"] == ("params/Dense_0/bias",)


def test_same_shapes_pair_by_numeric_suffix_not_dict_order():
    # all layers the same shape: only the suffixes can order them
    params = {
        f"Dense_{i}": {"kernel": normal(3, 3, seed=i), "bias": normal(3, seed=i)}
        for i in range(11)
    }
    shuffled = {"params": {k: params[k] for k in sorted(params)}}
    assert list(shuffled["params"])[:3] == ["Dense_0", "Dense_1", "Dense_10"]
    model = nnx.List([nnx.Linear(3, 3, rngs=nnx.Rngs(0)) for _ in range(11)])
    nnx.bridge.load_linen(model, shuffled)
    for i in range(11):
        np.testing.assert_array_equal(
            model[i].kernel.value, params[f"Dense_{i}"]["kernel"]
        )


# ------------------------------------------------------ BatchNorm + counter


class LBNBlock(nn.Module):
    features: int

    def setup(self):
        self.dense = nn.Dense(self.features)
        self.batchnorm = nn.BatchNorm(momentum=0.99)
        self.count = self.variable("counter", "count", lambda: jnp.zeros((), jnp.int32))

    def __call__(self, x, training: bool):
        x = self.dense(x)
        x = self.batchnorm(x, use_running_average=not training)
        self.count.value += 1
        return jax.nn.relu(x)


class Counter(nnx.Variable):
    pass


class BNBlock(nnx.Module):
    def __init__(self, din, dout, rngs):
        self.linear = nnx.Linear(din, dout, rngs=rngs)
        self.batchnorm = nnx.BatchNorm(dout, momentum=0.99, rngs=rngs)
        self.count = Counter(jnp.array(0))

    def __call__(self, x):
        x = self.batchnorm(self.linear(x))
        self.count += 1
        return jax.nn.relu(x)


def test_batchnorm_block_eval_and_train_step():
    x = normal(8, 4, seed=0)
    lmodel = LBNBlock(4)
    variables = lmodel.init(jax.random.key(0), x, training=True)
    # one Linen train step moves the statistics away from their init values
    _, upd = lmodel.apply(
        variables, x * 3 + 1, training=True, mutable=["batch_stats", "counter"]
    )
    variables = {**variables, **upd}
    model = BNBlock(4, 4, rngs=nnx.Rngs(0))
    report = nnx.bridge.load_linen(model, variables)
    assert {x.target for x in report.loaded} >= {"batchnorm.mean", "count"}
    assert int(model.count.value) == 2
    model.eval()
    close(model(x), lmodel.apply(variables, x, training=False, mutable=["counter"])[0])
    nnx.bridge.load_linen(model, variables)  # the eval call counted too
    model.train()
    y_ref, upd = lmodel.apply(
        variables, x, training=True, mutable=["batch_stats", "counter"]
    )
    close(model(x), y_ref)
    close(model.batchnorm.mean.value, upd["batch_stats"]["batchnorm"]["mean"])
    close(model.batchnorm.var.value, upd["batch_stats"]["batchnorm"]["var"])
    assert int(model.count.value) == int(upd["counter"]["count"])


# ------------------------------------------------------------- AutoEncoder


class LAutoEncoder(nn.Module):
    embed_dim: int
    output_dim: int

    def setup(self):
        self.encoder = nn.Dense(self.embed_dim)
        self.decoder = nn.Dense(self.output_dim)

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


@pytest.mark.parametrize("sort_keys", [False, True])
def test_autoencoder_every_method(sort_keys):
    x = normal(2, 6, seed=2)
    lmodel = LAutoEncoder(3, 6)
    variables = lmodel.init(jax.random.key(0), x)
    if sort_keys:  # decoder before encoder: names, not order, must decide
        variables = jax.tree.map(lambda a: a, variables)
        assert list(variables["params"]) == ["decoder", "encoder"]
    model = AutoEncoder(6, 3, 6, rngs=nnx.Rngs(0))
    nnx.bridge.load_linen(model, variables)
    z = model.encode(x)
    close(z, lmodel.apply(variables, x, method="encode"))
    close(model.decode(z), lmodel.apply(variables, z, method="decode"))
    close(model(x), lmodel.apply(variables, x))


# -------------------------------------------------------- RNN with nn.scan


class LRNNCell(nn.Module):
    hidden_size: int

    @nn.compact
    def __call__(self, carry, x):
        x = jnp.concatenate([carry, x], axis=-1)
        x = jax.nn.relu(nn.Dense(self.hidden_size)(x))
        return x, x

    def initial_state(self, batch_size):
        return jnp.zeros((batch_size, self.hidden_size))


class LRNN(nn.Module):
    hidden_size: int

    @nn.compact
    def __call__(self, x):
        rnn = nn.scan(
            LRNNCell,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=1,
            out_axes=1,
        )(self.hidden_size)
        carry = rnn.initial_state(x.shape[0])
        _, y = rnn(carry, x)
        return y


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


def test_rnn_with_nn_scan():
    x = normal(3, 7, 5, seed=0)
    variables = LRNN(8).init(jax.random.key(0), x)
    model = RNN(5, 8, rngs=nnx.Rngs(0))
    nnx.bridge.load_linen(model, variables)
    close(model(x), LRNN(8).apply(variables, x))


# ----------------------------------------------------- scan over layers MLP


class LScanBlock(nn.Module):
    features: int
    training: bool

    @nn.compact
    def __call__(self, x, _):
        x = nn.Dense(self.features)(x)
        x = nn.Dropout(0.5)(x, deterministic=not self.training)
        return jax.nn.relu(x), None


class LMLP(nn.Module):
    features: int
    num_layers: int

    @nn.compact
    def __call__(self, x, training: bool):
        Scan = nn.scan(
            LScanBlock,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=self.num_layers,
        )
        y, _ = Scan(self.features, training)(x, None)
        return y


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


def test_scan_over_layers_stack_loads_into_vmapped_blocks():
    x = normal(2, 8, seed=0)
    variables = LMLP(8, 5).init(jax.random.key(0), x, training=False)
    assert variables["params"]["ScanLScanBlock_0"]["Dense_0"]["kernel"].shape == (
        5,
        8,
        8,
    )
    model = MLP(8, 5, rngs=nnx.Rngs(0))
    nnx.bridge.load_linen(model, variables)
    model.eval()
    close(model(x), LMLP(8, 5).apply(variables, x, training=False))


# --------------------------------------------------------------- TrainState


def test_trainstate_params_after_a_step():
    x = normal(4, 6, seed=0)
    labels = jnp.array([0, 1, 2, 1])
    dense = nn.Dense(3)
    state = train_state.TrainState.create(
        apply_fn=dense.apply,
        params=dense.init(jax.random.key(0), x)["params"],
        tx=optax.adam(1e-2),
    )

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    state = state.apply_gradients(grads=jax.grad(loss_fn)(state.params))
    model = nnx.Linear(6, 3, rngs=nnx.Rngs(0))
    nnx.bridge.load_linen(model, {"params": state.params})
    close(model(x), dense.apply({"params": state.params}, x))
    # a bare params dict is accepted too
    model2 = nnx.Linear(6, 3, rngs=nnx.Rngs(1))
    nnx.bridge.load_linen(model2, state.params)
    close(model2.kernel.value, state.params["kernel"])


# ---------------------------------------------------------------- layer zoo


class LZoo(nn.Module):
    @nn.compact
    def __call__(self, x, seq, img, vol, ids):
        outs = [nn.LayerNorm()(x), nn.RMSNorm()(x), nn.GroupNorm(num_groups=2)(x)]
        outs.append(nn.Conv(3, (3,))(seq))
        outs.append(nn.Conv(3, (3, 3))(img))
        outs.append(nn.Conv(2, (2, 2, 2))(vol))
        outs.append(nn.Embed(7, 4)(ids))
        outs.append(nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)(seq))
        return outs


class Zoo(nnx.Module):
    def __init__(self, rngs):
        self.ln = nnx.LayerNorm(4, rngs=rngs)
        self.rms = nnx.RMSNorm(4, rngs=rngs)
        self.gn = nnx.GroupNorm(4, num_groups=2, rngs=rngs)
        self.conv1 = nnx.Conv(4, 3, (3,), rngs=rngs)
        self.conv2 = nnx.Conv(4, 3, (3, 3), rngs=rngs)
        self.conv3 = nnx.Conv(4, 2, (2, 2, 2), rngs=rngs)
        self.embed = nnx.Embed(7, 4, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(2, 4, 8, decode=False, rngs=rngs)

    def __call__(self, x, seq, img, vol, ids):
        return [
            self.ln(x),
            self.rms(x),
            self.gn(x),
            self.conv1(seq),
            self.conv2(img),
            self.conv3(vol),
            self.embed(ids),
            self.attn(seq),
        ]


def zoo_inputs():
    return (
        normal(2, 4),
        normal(2, 5, 4),
        normal(2, 5, 5, 4),
        normal(2, 3, 3, 3, 4),
        np.array([[1, 6, 0]]),
    )


def randomize(variables, seed=7):
    """Replace every array by random values, so zeros/ones inits prove nothing."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda a: rng.standard_normal(a.shape).astype(a.dtype), variables
    )


def test_norms_convs_embed_attention():
    inputs = zoo_inputs()
    # one compiled program each instead of op-by-op dispatch
    variables = randomize(jax.jit(LZoo().init)(jax.random.key(0), *inputs))
    model = Zoo(nnx.Rngs(0))
    report = nnx.bridge.load_linen(model, variables)
    assert report.ok
    ours = nnx.jit(lambda m, *a: m(*a))(model, *inputs)
    for a, b in zip(ours, jax.jit(LZoo().apply)(variables, *inputs)):
        close(a, b)


class LCells(nn.Module):
    @nn.compact
    def __call__(self, x):
        lstm, gru = nn.LSTMCell(6), nn.GRUCell(5)
        (c, h), y1 = lstm(lstm.initialize_carry(jax.random.key(0), x.shape), x)
        h2, y2 = gru(jnp.full((x.shape[0], 5), 0.3), x)
        return c, h, y2


class Cells(nnx.Module):
    def __init__(self, rngs):
        self.lstm = nnx.LSTMCell(4, 6, rngs=rngs)
        self.gru = nnx.GRUCell(4, 5, rngs=rngs)

    def __call__(self, x):
        (c, h), _ = self.lstm(self.lstm.initialize_carry(x.shape, rngs=nnx.Rngs(0)), x)
        _, y2 = self.gru(jnp.full((x.shape[0], 5), 0.3), x)
        return c, h, y2


def test_lstm_and_gru_cells():
    x = normal(3, 4, seed=0)
    variables = randomize(LCells().init(jax.random.key(0), x))
    gru = variables["params"]["GRUCell_0"]
    gru["hn"]["bias"] = jnp.zeros_like(gru["hn"]["bias"])
    model = Cells(nnx.Rngs(0))
    report = nnx.bridge.load_linen(model, variables)
    for ours, ref in zip(model(x), LCells().apply(variables, x)):
        close(ours, ref)
    assert "params/GRUCell_0/hn/bias" in dict(report.ignored)
    kinds = {x.target: x.transform for x in report.loaded}
    assert kinds["lstm.if_.kernel"] == ""
    assert "concatenate" in kinds["gru.dense_i.kernel"]


def test_gru_with_nonzero_recurrent_bias_is_refused():
    x = jnp.ones((3, 4))
    variables = randomize(LCells().init(jax.random.key(0), x))
    model = Cells(nnx.Rngs(0))
    before = snapshot(model)
    with pytest.raises(StateLoadError, match=r"GRUCell_0/hn/bias -> gru\.dense_h"):
        nnx.bridge.load_linen(model, variables)
    assert_unchanged(model, before)


# ---------------------------------------------------------------- bad input


def block_model_variables():
    x = jnp.ones((1, 12))
    return LModel(16, 5).init(jax.random.key(0), x, training=False)


def test_other_architecture_lists_everything_and_loads_nothing():
    model = AutoEncoder(6, 3, 6, rngs=nnx.Rngs(0))
    before = snapshot(model)
    with pytest.raises(StateLoadError) as err:
        nnx.bridge.load_linen(model, block_model_variables())
    msg = str(err.value)
    assert "nothing was loaded" in msg
    for path in ("params/LBlock_0/Dense_0/kernel", "params/Dense_0/bias"):
        assert path in msg
    assert "-> encoder.kernel: expected float32[6, 3], found float32[16, 5]" in msg
    assert_unchanged(model, before)


def test_missing_layer_names_the_unfilled_variables():
    variables = block_model_variables()
    del variables["params"]["Dense_0"]
    model = Model(12, 16, 5, rngs=nnx.Rngs(0))
    before = snapshot(model)
    with pytest.raises(StateLoadError) as err:
        nnx.bridge.load_linen(model, variables)
    assert set(err.value.missing) == {"linear.kernel", "linear.bias"}
    assert err.value.unexpected == []
    assert_unchanged(model, before)


def test_transposed_kernel_and_wrong_dtype_give_both_paths():
    variables = block_model_variables()
    p = variables["params"]
    p["LBlock_0"]["Dense_0"]["kernel"] = p["LBlock_0"]["Dense_0"]["kernel"].T
    p["Dense_0"]["bias"] = p["Dense_0"]["bias"].astype(jnp.int32)
    model = Model(12, 16, 5, rngs=nnx.Rngs(0))
    before = snapshot(model)
    with pytest.raises(StateLoadError) as err:
        nnx.bridge.load_linen(model, variables)
    msg = str(err.value)
    assert (
        "params/LBlock_0/Dense_0/kernel -> block.linear.kernel: expected "
        "float32[12, 16], found float32[16, 12] (transposed?)"
    ) in msg
    assert (
        "params/Dense_0/bias -> linear.bias: expected float32[5], found int32[5]"
    ) in msg
    assert len(err.value.mismatched) == 2
    assert_unchanged(model, before)


def test_non_strict_loads_what_fits_and_reports_the_rest():
    variables = block_model_variables()
    p = variables["params"]
    p["Dense_0"]["kernel"] = p["Dense_0"]["kernel"].T
    p["Extra_0"] = {"scale": jnp.ones((3,))}
    model = Model(12, 16, 5, rngs=nnx.Rngs(0))
    report = nnx.bridge.load_linen(model, variables, strict=False)
    assert not report.ok
    assert report.unmatched == ["params/Extra_0/scale"]
    assert [x.target for x in report.mismatched] == ["linear.kernel"]
    close(model.block.linear.kernel.value, p["LBlock_0"]["Dense_0"]["kernel"])
    text = str(report)
    assert "params/Extra_0/scale" in text and "linear.kernel" in text


# ------------------------------------------------------------------ mapping


def test_mapping_overrides_with_transform_and_skips():
    variables = block_model_variables()
    p = variables["params"]
    p["Dense_0"]["kernel"] = p["Dense_0"]["kernel"].T  # stored transposed
    p["Extra_0"] = {"scale": jnp.ones((3,))}
    model = Model(12, 16, 5, rngs=nnx.Rngs(0))
    report = nnx.bridge.load_linen(
        model,
        variables,
        mapping={
            "params/Dense_0/kernel": ("linear.kernel", jnp.transpose),
            "params/Extra_0/scale": None,
        },
    )
    assert report.ok
    close(model.linear.kernel.value, p["Dense_0"]["kernel"].T)
    loaded = {x.target: x for x in report.loaded}
    assert loaded["linear.kernel"].transform == "mapping: transpose"
    assert "mapping: transpose" in str(report)


def test_mapping_with_unknown_paths_is_an_error():
    model = Model(12, 16, 5, rngs=nnx.Rngs(0))
    with pytest.raises(StateLoadError, match="'params/Nope/kernel' is not an entry"):
        nnx.bridge.load_linen(
            model,
            block_model_variables(),
            mapping={"params/Nope/kernel": "linear.kernel"},
        )
    with pytest.raises(StateLoadError, match="'linear.nope' .* is not a Variable"):
        nnx.bridge.load_linen(
            model,
            block_model_variables(),
            mapping={"params/Dense_0/kernel": "linear.nope"},
        )


def test_loading_imports_neither_flax_nor_haiku():
    import subprocess
    import sys

    code = (
        "import numpy as np, ramie, sys\n"
        "m = ramie.Linear(2, 3, rngs=ramie.Rngs(0))\n"
        "ramie.bridge.load_linen(m, {'params': {'kernel': np.ones((2, 3), 'f4'),"
        " 'bias': np.ones(3, 'f4')}})\n"
        "ramie.bridge.load_haiku(m, {'linear': {'w': np.ones((2, 3), 'f4'),"
        " 'b': np.ones(3, 'f4')}})\n"
        "print(sorted({k.split('.')[0] for k in sys.modules} & {'flax', 'haiku'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_lossless_dtype_and_float64_numpy_follow_the_loading_policy():
    variables = block_model_variables()
    p = variables["params"]
    p["Dense_0"]["bias"] = np.asarray(p["Dense_0"]["bias"], np.float64)
    p["Dense_0"]["kernel"] = np.asarray(p["Dense_0"]["kernel"]).astype(np.float16)
    model = Model(12, 16, 5, rngs=nnx.Rngs(0))
    nnx.bridge.load_linen(model, variables)
    assert model.linear.bias.value.dtype == jnp.float32
    assert model.linear.kernel.value.dtype == jnp.float32
    np.testing.assert_array_equal(
        model.linear.kernel.value, p["Dense_0"]["kernel"].astype(np.float32)
    )
