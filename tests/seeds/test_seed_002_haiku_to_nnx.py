"""Seed 002: "Migrating from Haiku to Flax NNX" (Chinese guide), NNX examples.

Every NNX code block runs verbatim with ``import ramie as nnx``. The Haiku side
of a few examples is run too (when dm-haiku is installed) to check that the
NNX models have the parameter shapes the guide says they correspond to.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ramie as nnx


class Block(nnx.Module):
    def __init__(self, in_features: int, out_features: int, rngs: nnx.Rngs):
        self.linear = nnx.Linear(in_features, out_features, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        x = self.linear(x)
        x = self.dropout(x)
        x = jax.nn.relu(x)
        return x


class Model(nnx.Module):
    def __init__(self, din: int, dmid: int, dout: int, rngs: nnx.Rngs):
        self.block = Block(din, dmid, rngs=rngs)
        self.linear = nnx.Linear(dmid, dout, rngs=rngs)

    def __call__(self, x):
        x = self.block(x)
        x = self.linear(x)
        return x


def test_model_parameters_created_at_construction():
    model = Model(784, 256, 10, rngs=nnx.Rngs(0))

    # Parameters were already initialized during model instantiation.

    assert model.linear.bias.value.shape == (10,)
    assert model.block.linear.kernel.value.shape == (784, 256)


def test_haiku_equivalent_has_same_shapes():
    hk = pytest.importorskip("haiku")

    class HkBlock(hk.Module):
        def __init__(self, features: int, name=None):
            super().__init__(name=name)
            self.features = features

        def __call__(self, x, training: bool):
            x = hk.Linear(self.features)(x)
            x = hk.dropout(hk.next_rng_key(), 0.5 if training else 0, x)
            x = jax.nn.relu(x)
            return x

    class HkModel(hk.Module):
        def __init__(self, dmid: int, dout: int, name=None):
            super().__init__(name=name)
            self.dmid = dmid
            self.dout = dout

        def __call__(self, x, training: bool):
            x = HkBlock(self.dmid)(x, training)
            x = hk.Linear(self.dout)(x)
            return x

    def forward(x, training: bool):
        return HkModel(256, 10, name="model")(x, training)

    model = hk.transform(forward)
    sample_x = jnp.ones((1, 784))
    params = model.init(jax.random.key(0), sample_x, training=False)
    ours = Model(784, 256, 10, rngs=nnx.Rngs(0))
    assert params["model/linear"]["b"].shape == ours.linear.bias.value.shape
    assert (
        params["model/hk_block/linear"]["w"].shape
        == ours.block.linear.kernel.value.shape
    )


def test_training_step_with_merge_state():
    model = Model(784, 256, 10, rngs=nnx.Rngs(0))
    model.train()  # set deterministic=False

    @nnx.jit
    def train_step(model, inputs, labels):
        def loss_fn(model):
            logits = model(
                inputs,  # <== inputs
            )
            return optax.softmax_cross_entropy_with_integer_labels(
                logits, labels
            ).mean()

        grads = nnx.grad(loss_fn)(model)
        _, params, rest = nnx.split(model, nnx.Param, ...)
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
        nnx.update(model, nnx.merge_state(params, rest))

    inputs = jax.random.normal(jax.random.key(1), (8, 784))
    labels = jnp.arange(8) % 10

    def loss():
        model.eval()
        out = float(
            optax.softmax_cross_entropy_with_integer_labels(
                model(inputs), labels
            ).mean()
        )
        model.train()
        return out

    before = loss()
    for _ in range(3):
        train_step(model, inputs, labels)
    assert loss() < before


def test_non_parameter_state_batchnorm():
    class Block(nnx.Module):
        def __init__(self, in_features: int, out_features: int, rngs: nnx.Rngs):
            self.linear = nnx.Linear(in_features, out_features, rngs=rngs)
            self.batchnorm = nnx.BatchNorm(
                num_features=out_features, momentum=0.99, rngs=rngs
            )

        def __call__(self, x):
            x = self.linear(x)
            x = self.batchnorm(x)

            x = jax.nn.relu(x)
            return x

    model = Block(4, 4, rngs=nnx.Rngs(0))

    model.linear.kernel  # Param(value=...)
    model.batchnorm.mean  # BatchStat(value=...)
    assert isinstance(model.linear.kernel, nnx.Param)
    assert isinstance(model.batchnorm.mean, nnx.BatchStat)

    # nnx.grad differentiates only Params, so batch statistics are skipped...
    x = jax.random.normal(jax.random.key(0), (8, 4))
    grads = nnx.grad(lambda m: m(x).sum())(model)
    assert sorted(grads.keys()) == ["batchnorm", "linear"]
    assert sorted(grads["batchnorm"].keys()) == ["bias", "scale"]
    # ...while their running averages are still updated
    assert not np.allclose(model.batchnorm.mean.value, 0.0)


def test_multiple_methods():
    class AutoEncoder(nnx.Module):
        def __init__(self, in_dim: int, embed_dim: int, output_dim: int, rngs):

            self.encoder = nnx.Linear(in_dim, embed_dim, rngs=rngs)
            self.decoder = nnx.Linear(embed_dim, output_dim, rngs=rngs)

        def encode(self, x):
            return self.encoder(x)

        def decode(self, x):
            return self.decoder(x)

    model = AutoEncoder(784, 256, 784, rngs=nnx.Rngs(0))
    _, params, _ = nnx.split(model, nnx.Param, ...)

    params
    text = repr(jax.tree.map(jnp.shape, params))
    assert "'bias': Param(value=(784,))" in text
    assert "'kernel': Param(value=(256, 784))" in text
    assert jax.tree.map(jnp.shape, params.to_pure_dict()) == {
        "decoder": {"bias": (784,), "kernel": (256, 784)},
        "encoder": {"bias": (256,), "kernel": (784, 256)},
    }
    z = model.encode(jnp.ones((1, 784)))
    assert z.shape == (1, 256)
    assert model.decode(z).shape == (1, 784)


def test_rnn_scan():
    class RNNCell(nnx.Module):
        def __init__(self, input_size, hidden_size, rngs):
            self.linear = nnx.Linear(hidden_size + input_size, hidden_size, rngs=rngs)
            self.hidden_size = hidden_size

        def __call__(self, carry, x):
            x = jnp.concatenate([carry, x], axis=-1)
            x = self.linear(x)
            x = jax.nn.relu(x)
            return x, x

        def initial_state(self, batch_size: int):
            return jnp.zeros((batch_size, self.hidden_size))

    class RNN(nnx.Module):
        def __init__(self, input_size: int, hidden_size: int, rngs: nnx.Rngs):
            self.hidden_size = hidden_size
            self.cell = RNNCell(input_size, self.hidden_size, rngs=rngs)

        def __call__(self, x):
            scan_fn = lambda carry, cell, x: cell(carry, x)
            carry = self.cell.initial_state(x.shape[0])
            carry, y = nnx.scan(
                scan_fn, in_axes=(nnx.Carry, None, 1), out_axes=(nnx.Carry, 1)
            )(carry, self.cell, x)

            return y

    model = RNN(8, 16, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 5, 8))
    y = model(x)
    assert y.shape == (2, 5, 16)
    # the Haiku version transposes to time-major and back: same result
    carry = model.cell.initial_state(2)
    _, ys = jax.lax.scan(lambda c, xt: model.cell(c, xt), carry, jnp.swapaxes(x, 1, 0))
    np.testing.assert_allclose(y, jnp.swapaxes(ys, 0, 1), rtol=1e-5, atol=1e-6)


def test_scan_over_layers():
    class Block(nnx.Module):
        def __init__(self, input_dim, features, rngs):
            self.linear = nnx.Linear(input_dim, features, rngs=rngs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x: jax.Array):  # No need to require a second input!
            x = self.linear(x)
            x = self.dropout(x)
            x = jax.nn.relu(x)
            return x  # No need to return a second output!

    class MLP(nnx.Module):
        def __init__(self, features, num_layers, rngs):
            @nnx.split_rngs(splits=num_layers)
            @nnx.vmap(in_axes=(0,), out_axes=0)
            def create_block(rngs: nnx.Rngs):
                return Block(features, features, rngs=rngs)

            self.blocks = create_block(rngs)
            self.num_layers = num_layers

        def __call__(self, x):
            @nnx.split_rngs(splits=self.num_layers)
            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
            def forward(x, model):
                x = model(x)
                return x

            return forward(x, self.blocks)

    model = MLP(64, num_layers=5, rngs=nnx.Rngs(0))
    _, params, _ = nnx.split(model, nnx.Param, ...)

    params
    text = repr(jax.tree.map(jnp.shape, params))
    assert "'bias': Param(value=(5, 64))" in text
    assert "'kernel': Param(value=(5, 64, 64))" in text
    x = jnp.ones((3, 64))
    model.train()
    assert not np.allclose(model(x), model(x))
    model.eval()
    np.testing.assert_array_equal(model(x), model(x))


def test_top_level_function_vs_module_counter():
    class Counter(nnx.Variable):
        pass

    class FooModule(nnx.Module):
        def __init__(self, rngs):
            self.counter = Counter(jnp.ones((), jnp.int32))
            self.multiplier = nnx.Param(
                nnx.initializers.ones(
                    rngs.params(),
                    [
                        1,
                    ],
                    jnp.float32,
                )
            )

        def __call__(self, x):
            output = x + self.multiplier * self.counter.value

            self.counter.value += 1
            return output

    model = FooModule(rngs=nnx.Rngs(0))

    _, params, counter = nnx.split(model, nnx.Param, Counter)
    assert list(params.keys()) == ["multiplier"]
    assert list(counter.keys()) == ["counter"]
    out = model(jnp.ones((1, 64)))
    np.testing.assert_allclose(out, 2.0)  # x + 1 * 1
    assert int(model.counter.value) == 2
    np.testing.assert_allclose(model(jnp.ones((1, 64))), 3.0)
