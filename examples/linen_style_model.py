"""The Linen -> NNX guide's Block/Model, written for ramie and trained a few steps.

Flax Linen creates variables lazily from a sample input and keeps them outside
the module; in NNX (and ramie) the module owns its Variables, created eagerly
in ``__init__``. This script follows the guide "Evolution from Flax Linen to
NNX" section by section, with ``import ramie as nnx`` and the guide's code:

1. ``Block`` (Linear -> Dropout -> ReLU) and ``Model`` (Block -> Linear);
   parameters exist as soon as the model is built;
2. the guide's ``train_step``: ``nnx.jit`` + ``nnx.grad``, a plain SGD update
   through ``nnx.split`` / ``nnx.GraphState.merge`` / ``nnx.update``, Dropout
   switched on by ``model.train()``; trained on a synthetic 10-class problem;
3. ``model.eval()`` for deterministic evaluation;
4. custom Variable types (``Counter``) next to ``BatchStat`` and ``Param``,
   split by type and merged back;
5. several methods: ``AutoEncoder.encode`` is called directly.

Run it with ``python examples/linen_style_model.py [--steps N]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ramie as nnx


# --- 1. Basic Module definition (the guide's NNX code) ----------------------
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


# --- 2. Training step (the guide's NNX code) ------------------------------------
@nnx.jit
def train_step(model, inputs, labels):
    def loss_fn(model):
        logits = model(inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = nnx.grad(loss_fn)(model)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    nnx.update(model, nnx.GraphState.merge(params, rest))


@nnx.jit
def evaluate(model, inputs, labels):
    """Loss and accuracy of ``model`` on one batch."""
    logits = model(inputs)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits.argmax(-1) == labels).mean()


def make_data(
    seed: int, n: int, din: int = 784, classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic classification problem: noisy copies of 10 random prototypes.

    Made with NumPy: the data needs no compiled JAX code, and slicing NumPy
    batches does not compile anything either.
    """
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(classes, din))
    labels = rng.integers(0, classes, size=n)
    inputs = prototypes[labels] + 3.0 * rng.normal(size=(n, din))
    return inputs.astype(np.float32), labels.astype(np.int32)


@nnx.jit
def forward(model, x):
    """A jitted call: state updates inside (the Counter, BatchStats) reach ``model``."""
    return model(x)


# --- 4. Collections and variable types (the guide's NNX code) -------------------
class Counter(nnx.Variable):
    pass


class CountingBlock(nnx.Module):
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


# --- 5. Multiple methods (the guide's NNX code) ---------------------------------
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


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every section; return the numbers it printed.

    Args:
        argv: Command-line arguments (``--steps N``, ``--seed S``).

    Returns:
        ``initial_loss``, ``final_loss``, ``accuracy`` (eval mode), ``count``
        (calls seen by the Counter) and ``latent_shape`` of ``encode``.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=30, help="training steps (default: 30)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)

    print("1. Model(784, 256, 10): parameters are created eagerly")
    model = Model(784, 256, 10, rngs=nnx.Rngs(args.seed))
    assert model.linear.bias.value.shape == (10,)
    assert model.block.linear.kernel.value.shape == (784, 256)
    print(
        f"   block.linear.kernel {model.block.linear.kernel.value.shape}, "
        f"linear.bias {model.linear.bias.value.shape}"
    )

    print(f"2. train_step x {args.steps} (nnx.jit + nnx.grad, SGD 0.1, dropout on)")
    inputs, labels = make_data(args.seed, 768)
    inputs, test_inputs = inputs[:256], inputs[256:]
    labels, test_labels = labels[:256], labels[256:]
    model.eval()
    initial_loss, _ = evaluate(model, test_inputs, test_labels)
    model.train()  # Sets ``deterministic=False`` under the hood for nnx.Dropout
    for step in range(args.steps):
        batch = slice((step * 32) % 256, (step * 32) % 256 + 32)
        train_step(model, inputs[batch], labels[batch])
    model.eval()  # dropout off
    final_loss, accuracy = evaluate(model, test_inputs, test_labels)
    print(
        f"   held-out loss {float(initial_loss):.3f} -> {float(final_loss):.3f}, "
        f"eval accuracy {float(accuracy):.1%}"
    )

    print("3. eval mode is deterministic")
    same = bool(final_loss == evaluate(model, test_inputs, test_labels)[0])
    print(f"   two eval calls agree: {same}")

    print("4. Variable types: Param, BatchStat and a custom Counter")
    block = CountingBlock(4, 4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 4))
    for _ in range(3):
        forward(block, x)  # under nnx.jit, ``self.count += 1`` updates block.count
    graphdef, params, batch_stats, count = nnx.split(
        block, nnx.Param, nnx.BatchStat, Counter
    )
    print(
        f"   params {sorted(params.keys())}, batch_stats {sorted(batch_stats.keys())}, "
        f"count {sorted(count.keys())} = {int(block.count.value)}"
    )
    block = nnx.merge(graphdef, params, batch_stats, count)

    print("5. AutoEncoder: call encode() directly")
    auto = AutoEncoder(784, 256, 784, rngs=nnx.Rngs(0))
    z = auto.encode(jnp.ones((1, 784)))
    _, ae_params, _ = nnx.split(auto, nnx.Param, ...)
    shapes = jax.tree.map(jnp.shape, nnx.to_pure_dict(ae_params))
    print(f"   encode -> {z.shape}; params {shapes}")

    return {
        "initial_loss": float(initial_loss),
        "final_loss": float(final_loss),
        "accuracy": float(accuracy),
        "deterministic_eval": same,
        "count": int(block.count.value),
        "latent_shape": tuple(z.shape),
    }


if __name__ == "__main__":
    main()
