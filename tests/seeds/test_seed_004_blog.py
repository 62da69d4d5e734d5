"""Seed 004: blog article "Migrating from Flax Linen to NNX" (Chinese).

The NNX snippets run verbatim with ``import ramie as nnx``, including the plain
Python list of layers (``self.layers = [nnx.Linear(...) ...]``) and
``self.count += 1`` on a Variable attribute.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ramie as nnx


class Block(nnx.Module):
    def __init__(self, in_features, out_features, rngs: nnx.Rngs):
        self.linear = nnx.Linear(in_features, out_features, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        x = self.linear(x)
        x = self.dropout(x)
        return jax.nn.relu(x)


class Model(nnx.Module):
    def __init__(self, din, dmid, dout, rngs):
        self.block = Block(din, dmid, rngs=rngs)
        self.linear = nnx.Linear(dmid, dout, rngs=rngs)

    def __call__(self, x):
        return self.linear(self.block(x))


def cross_entropy_loss(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def update_model(model, grads):
    # the article leaves this helper undefined ("in-place update"); a plain SGD step
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads))


def test_eager_initialisation():
    # NNX初始化
    model = Model(784, 256, 10, rngs=nnx.Rngs(0))
    # 参数已自动初始化
    print(model.linear.bias.value.shape)  # 直接访问
    assert model.linear.bias.value.shape == (10,)


def test_training_step():
    model = Model(784, 256, 10, rngs=nnx.Rngs(0))
    # NNX训练步骤
    model.train()  # 设置训练模式

    @nnx.jit
    def train_step(model, inputs, labels):
        def loss_fn(model):
            logits = model(inputs)
            return cross_entropy_loss(logits, labels)

        grads = nnx.grad(loss_fn)(model)
        update_model(model, grads)  # 就地更新

    inputs = jax.random.normal(jax.random.key(0), (16, 784))
    labels = jnp.arange(16) % 10
    kernel0 = np.asarray(model.linear.kernel.value)
    train_step(model, inputs, labels)
    assert not np.allclose(kernel0, model.linear.kernel.value)


def test_custom_variable_counter():
    class Counter(nnx.Variable):
        pass

    class Block(nnx.Module):
        def __init__(self):
            self.count = Counter(jnp.array(0))

        def __call__(self, x):
            self.count += 1  # 直接操作
            return x

    block = Block()
    block(1.0)
    block(2.0)
    assert int(block.count.value) == 2
    assert isinstance(block.count, Counter)
    # also under a transform
    nnx.jit(lambda b, x: b(x))(block, 3.0)
    assert int(block.count.value) == 3


def test_autoencoder_calls_methods_directly():
    class AutoEncoder(nnx.Module):
        def __init__(self, in_dim, embed_dim, out_dim, rngs):
            self.encoder = nnx.Linear(in_dim, embed_dim, rngs=rngs)
            self.decoder = nnx.Linear(embed_dim, out_dim, rngs=rngs)

        def encode(self, x):
            return self.encoder(x)

    model = AutoEncoder(784, 256, 784, nnx.Rngs(0))
    x = jnp.ones((1, 784))
    # 调用方式
    z = model.encode(x)  # 更直观
    assert z.shape == (1, 256)


def test_plain_list_of_layers():
    class ScannedLinear(nnx.Module):
        def __init__(self, dim, n_layers, rngs):
            self.layers = [nnx.Linear(dim, dim, rngs=rngs) for _ in range(n_layers)]

        def __call__(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    model = ScannedLinear(8, 3, nnx.Rngs(0))
    x = jnp.ones((2, 8))
    y = model(x)
    assert y.shape == (2, 8)
    state = nnx.state(model)
    assert sorted(state["layers"].keys()) == [0, 1, 2]
    graphdef, state = nnx.split(model)
    np.testing.assert_allclose(nnx.merge(graphdef, state)(x), y)
    # the list works under transforms, and appending a layer is seen
    f = nnx.jit(lambda m, x: m(x))
    np.testing.assert_allclose(f(model, x), y, rtol=1e-6)
    model.layers.append(nnx.Linear(8, 8, rngs=nnx.Rngs(1)))
    np.testing.assert_allclose(f(model, x), model(x), rtol=1e-6)
    grads = nnx.grad(lambda m: m(x).sum())(model)
    assert sorted(grads["layers"].keys()) == [0, 1, 2, 3]
