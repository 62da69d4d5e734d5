"""Seed 001: "Evolution from Flax Linen to NNX" (Chinese guide), NNX examples.

Every NNX code block runs verbatim with ``import ramie as nnx``. The seed spells
``nnx.GraphState.merge``, which ramie keeps working without warnings.
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


def test_variable_creation_is_eager():
    model = Model(784, 256, 10, rngs=nnx.Rngs(0))
    # Parameters were already initialized during model instantiation.
    assert model.linear.bias.value.shape == (10,)
    assert model.block.linear.kernel.value.shape == (784, 256)


def test_training_step_with_dropout_and_graphstate_merge():
    model = Model(784, 256, 10, rngs=nnx.Rngs(0))
    model.train()  # Sets ``deterministic=False` under the hood for nnx.Dropout

    @nnx.jit
    def train_step(model, inputs, labels):
        def loss_fn(model):
            logits = model(inputs)
            return optax.softmax_cross_entropy_with_integer_labels(
                logits, labels
            ).mean()

        grads = nnx.grad(loss_fn)(model)
        _, params, rest = nnx.split(model, nnx.Param, ...)
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
        nnx.update(model, nnx.GraphState.merge(params, rest))

    inputs = jax.random.normal(jax.random.key(1), (8, 784))
    labels = jnp.arange(8) % 10
    kernel0 = np.asarray(model.linear.kernel.value)
    count0 = int(model.block.dropout.rngs.count.value)
    train_step(model, inputs, labels)
    train_step(model, inputs, labels)
    assert not np.allclose(kernel0, model.linear.kernel.value)  # updated in place
    # Dropout draws a fresh key per step from its own stream: no key passed
    assert int(model.block.dropout.rngs.count.value) == count0 + 2
    assert model.block.dropout.deterministic is False


def test_collections_and_variable_types():
    class Counter(nnx.Variable):
        pass

    class Block(nnx.Module):
        def __init__(self, in_features: int, out_features: int, rngs: nnx.Rngs):
            self.linear = nnx.Linear(in_features, out_features, rngs=rngs)
            self.batchnorm = nnx.BatchNorm(
                num_features=out_features, momentum=0.99, rngs=rngs
            )
            self.count = Counter(jnp.array(0))

        def __call__(self, x):
            x = self.linear(x)
            x = self.batchnorm(x)
            self.count += 1
            x = jax.nn.relu(x)
            return x

    model = Block(4, 4, rngs=nnx.Rngs(0))

    model.linear.kernel  # Param(value=...)
    model.batchnorm.mean  # BatchStat(value=...)
    model.count  # Counter(value=...)
    assert repr(model.linear.kernel).startswith("Param(value=")
    assert repr(model.batchnorm.mean).startswith("BatchStat(value=")
    assert repr(model.count).startswith("Counter(value=")

    model(jax.random.normal(jax.random.key(0), (2, 4)))
    assert int(model.count.value) == 1  # `self.count += 1` updated the Variable
    assert isinstance(model.count, Counter)

    graphdef, params, batch_stats, count = nnx.split(
        model, nnx.Param, nnx.BatchStat, Counter
    )
    params.keys()  # ['batchnorm', 'linear']
    batch_stats.keys()  # ['batchnorm']
    count.keys()  # ['count']
    assert list(params.keys()) == ["batchnorm", "linear"]
    assert list(batch_stats.keys()) == ["batchnorm"]
    assert list(count.keys()) == ["count"]
    # ... make arbitrary modifications ...
    # Merge back with ``nnx.merge`` to carry on:
    model = nnx.merge(graphdef, params, batch_stats, count)
    assert int(model.count.value) == 1
    assert model(jnp.ones((2, 4))).shape == (2, 4)


def test_multiple_methods_autoencoder():
    class AutoEncoder(nnx.Module):
        def __init__(self, in_dim: int, embed_dim: int, output_dim: int, rngs):
            self.encoder = nnx.Linear(in_dim, embed_dim, rngs=rngs)
            self.decoder = nnx.Linear(embed_dim, output_dim, rngs=rngs)

        def encode(self, x):
            return self.encoder(x)

        def decode(self, x):
            return self.decoder(x)

        def __call__(self, x):
            x = self.encode(x)
            x = self.decode(x)
            return x

    model = AutoEncoder(784, 256, 784, rngs=nnx.Rngs(0))
    _, params, _ = nnx.split(model, nnx.Param, ...)
    shapes = jax.tree.map(jnp.shape, params.to_pure_dict())
    assert shapes == {
        "decoder": {"bias": (784,), "kernel": (256, 784)},
        "encoder": {"bias": (256,), "kernel": (784, 256)},
    }
    assert "'kernel': Param(value=(256, 784))" in repr(jax.tree.map(jnp.shape, params))
    z = model.encode(jnp.ones((1, 784)))
    assert z.shape == (1, 256)


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


def test_rnn_with_scan_and_carry():
    x = jnp.ones((3, 12, 32))
    model = RNN(x.shape[2], 64, rngs=nnx.Rngs(0))
    y = model(x)
    assert y.shape == (3, 12, 64)
    # equals a Python loop over the time axis (axis 1)
    carry = model.cell.initial_state(3)
    outs = []
    for t in range(12):
        carry, out = model.cell(carry, x[:, t])
        outs.append(out)
    np.testing.assert_allclose(y, jnp.stack(outs, axis=1), rtol=1e-5, atol=1e-6)


class ScanBlock(nnx.Module):
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
            return ScanBlock(features, features, rngs=rngs)

        self.blocks = create_block(rngs)
        self.num_layers = num_layers

    def __call__(self, x):
        @nnx.split_rngs(splits=self.num_layers)
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def forward(x, model):
            x = model(x)
            return x

        return forward(x, self.blocks)


def test_scan_over_layers_structure():
    model = MLP(64, num_layers=5, rngs=nnx.Rngs(0))
    _, params, _ = nnx.split(model, nnx.Param, ...)
    assert jax.tree.map(jnp.shape, params.to_pure_dict()) == {
        "blocks": {"linear": {"bias": (5, 64), "kernel": (5, 64, 64)}}
    }
    # five independently initialised layers
    k = model.blocks.linear.kernel.value
    assert not np.allclose(k[0], k[1])


def _loop_reference(model, x, train):
    """Run the stacked layers one by one, in eager Python."""
    graphdef, state = nnx.split(model.blocks)
    for i in range(model.num_layers):
        layer_state = jax.tree.map(lambda a, i=i: a[i], state)
        layer = nnx.merge(graphdef, layer_state, copy=True)
        layer.train() if train else layer.eval()
        x = layer(x)
    return x


def test_scan_over_layers_eval_mode_is_deterministic_and_matches_loop():
    model = MLP(64, num_layers=5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (4, 64))
    model.eval()
    y1, y2 = model(x), model(x)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_allclose(
        y1, _loop_reference(model, x, train=False), rtol=1e-5, atol=1e-6
    )


def test_scan_over_layers_train_mode_uses_dropout_with_fresh_masks():
    model = MLP(64, num_layers=5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (4, 64))
    model.train()
    y1, y2 = model(x), model(x)
    assert not np.allclose(y1, y2)  # new masks every call
    eval_out = nnx.view(model, deterministic=True)(x)
    assert not np.allclose(y1, eval_out)
    # each layer drew one key per call from its own (stacked) stream
    np.testing.assert_array_equal(model.blocks.dropout.rngs.count.value, [2] * 5)
    # the same seed reproduces the same masks
    again = MLP(64, num_layers=5, rngs=nnx.Rngs(0))
    again.train()
    np.testing.assert_allclose(again(x), y1)


def test_scan_over_layers_under_jit():
    model = MLP(64, num_layers=5, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 64))
    model.train()

    @nnx.jit
    def forward(model, x):
        return model(x)

    a, b = forward(model, x), forward(model, x)
    assert a.shape == (2, 64) and not np.allclose(a, b)
    model.eval()
    np.testing.assert_array_equal(forward(model, x), forward(model, x))


def test_train_state_with_graphdef_apply():
    pytest.importorskip("flax")
    from flax.training import train_state

    model = nnx.Linear(784, 10, rngs=nnx.Rngs(0))
    model.train()  # set deterministic=False
    graphdef, params, other_variables = nnx.split(model, nnx.Param, ...)

    class TrainState(train_state.TrainState):
        other_variables: nnx.State

    state = TrainState.create(
        apply_fn=graphdef.apply,
        params=params,
        other_variables=other_variables,
        tx=optax.adam(1e-3),
    )

    @jax.jit
    def train_step(state, inputs, labels):
        def loss_fn(params, other_variables):
            logits, (graphdef, new_state) = state.apply_fn(params, other_variables)(
                inputs
            )  # <== inputs
            return optax.softmax_cross_entropy_with_integer_labels(
                logits, labels
            ).mean()

        grads = jax.grad(loss_fn)(state.params, state.other_variables)
        state = state.apply_gradients(grads=grads)
        return state

    inputs = jax.random.normal(jax.random.key(0), (8, 784))
    labels = jnp.arange(8)
    new = train_step(state, inputs, labels)
    assert int(new.step) == 1
    assert not np.allclose(new.params["kernel"].value, state.params["kernel"].value)
