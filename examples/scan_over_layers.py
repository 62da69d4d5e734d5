"""Scan over layers: create N stacked blocks with vmap, run them with scan.

A stack of identical layers compiles faster when its parameters are stacked
along a leading axis and one ``lax.scan`` runs them, instead of tracing every
layer separately. The Linen -> NNX and Haiku -> NNX guides build it like this:

* ``nnx.split_rngs(splits=num_layers)`` + ``nnx.vmap(in_axes=(0,), out_axes=0)``
  call ``Block(...)`` once per key, giving one ``Block`` whose Variables have a
  leading axis of ``num_layers`` (``kernel`` is ``(5, 64, 64)``);
* ``nnx.split_rngs`` + ``nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)``
  runs them, each layer with its own dropout key; with ``out_axes=nnx.Carry``
  the block returns just the new carry, no dummy second output.

This script trains such an MLP (with an input and an output layer around it)
on a synthetic classification problem in train mode - Dropout active inside
the scan - and evaluates it in eval mode, where the scan gives the same
result as applying the five layers one by one.

Run it with ``python examples/scan_over_layers.py [--steps N]``.
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


class Block(nnx.Module):
    """Linear -> Dropout -> ReLU; one layer of the stack."""

    def __init__(self, input_dim, features, rngs):
        self.linear = nnx.Linear(input_dim, features, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)  # the guides use 0.5

    def __call__(self, x: jax.Array):  # No need to require a second input!
        x = self.linear(x)
        x = self.dropout(x)
        x = jax.nn.relu(x)
        return x  # No need to return a second output!


class MLP(nnx.Module):
    """``num_layers`` Blocks with stacked parameters (the guides' code)."""

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


class Classifier(nnx.Module):
    """Linear in, the scanned MLP, Linear out."""

    def __init__(
        self, din: int, features: int, num_layers: int, classes: int, rngs: nnx.Rngs
    ):
        self.embed = nnx.Linear(din, features, rngs=rngs)
        self.mlp = MLP(features, num_layers=num_layers, rngs=rngs)
        self.head = nnx.Linear(features, classes, rngs=rngs)

    def __call__(self, x):
        return self.head(self.mlp(jax.nn.relu(self.embed(x))))


def loss_fn(model: Classifier, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy."""
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def train_step(
    model: Classifier, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array
) -> jax.Array:
    """One Adam step; returns the loss."""
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model: Classifier, x: jax.Array) -> jax.Array:
    """Logits (in whichever mode the model is in)."""
    return model(x)


@nnx.jit
def eval_outputs(
    model: Classifier, x: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Logits, the scanned MLP's output and the layer-by-layer reference."""
    h = jax.nn.relu(model.embed(x))
    return model(x), model.mlp(h), layer_by_layer(model.mlp, h)


def layer_by_layer(mlp: MLP, x: jax.Array) -> jax.Array:
    """Eval-mode reference: apply the stacked layers one at a time."""
    kernel, bias = mlp.blocks.linear.kernel.value, mlp.blocks.linear.bias.value
    for i in range(mlp.num_layers):
        x = jax.nn.relu(x @ kernel[i] + bias[i])
    return x


def make_data(
    seed: int, n: int, din: int = 16, classes: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Points labelled by which of 4 random directions they align with most."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(din, classes))
    x = rng.normal(size=(n, din)).astype(np.float32)
    return x, (x @ directions).argmax(-1).astype(np.int32)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Build, train and evaluate the scanned MLP; return the printed numbers.

    Args:
        argv: Command-line arguments (``--steps N``, ``--layers L``, ``--seed S``).

    Returns:
        Parameter shapes, train/eval determinism checks, losses and accuracy.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=100, help="training steps (default: 100)"
    )
    parser.add_argument(
        "--layers", type=int, default=5, help="stacked blocks (default: 5)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)

    # The guides' model on its own: a (5, 64, 64) kernel.
    mlp = MLP(64, num_layers=5, rngs=nnx.Rngs(0))
    _, params, _ = nnx.split(mlp, nnx.Param, ...)
    shapes = jax.tree.map(jnp.shape, nnx.to_pure_dict(params))
    print(f"MLP(64, num_layers=5) params: {shapes}")

    model = Classifier(
        16, 64, args.layers, 4, rngs=nnx.Rngs(params=args.seed, dropout=args.seed + 1)
    )
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    x, y = make_data(args.seed, 4096)
    x_train, x_test, y_train, y_test = x[:2048], x[2048:], y[:2048], y[2048:]

    model.train()
    probe = x_test[:8]
    train_differs = not bool(jnp.allclose(predict(model, probe), predict(model, probe)))
    print(
        "train mode: two calls differ (a fresh dropout mask per layer and call): "
        f"{train_differs}"
    )
    losses = []
    for step in range(args.steps):
        start = (step * 64) % (len(y_train) - 64)
        losses.append(
            float(
                train_step(
                    model,
                    optimizer,
                    x_train[start : start + 64],
                    y_train[start : start + 64],
                )
            )
        )
    k = max(1, min(10, args.steps // 2))
    print(
        f"trained {args.steps} steps: loss {sum(losses[:k]) / k:.3f} (first {k}) -> "
        f"{sum(losses[-k:]) / k:.3f} (last {k})"
    )

    model.eval()
    logits, scanned, looped = eval_outputs(model, x_test)
    eval_same = bool(jnp.array_equal(logits, eval_outputs(model, x_test)[0]))
    matches = bool(jnp.allclose(scanned, looped, atol=1e-5))
    acc = float((logits.argmax(-1) == y_test).mean())
    print(
        f"eval mode: deterministic {eval_same}; scan == layer-by-layer loop {matches}"
    )
    print(f"test accuracy: {acc:.1%} (chance 25%)")
    return {
        "param_shapes": shapes,
        "train_differs": train_differs,
        "eval_deterministic": eval_same,
        "matches_loop": matches,
        "first_loss": sum(losses[:k]) / k,
        "last_loss": sum(losses[-k:]) / k,
        "accuracy": acc,
    }


if __name__ == "__main__":
    main()
