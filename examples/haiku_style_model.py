"""The Haiku -> NNX guide's models in ramie: Dropout and BatchNorm blocks, a counter.

Haiku keeps parameters and state outside the module (``hk.transform`` and
``hk.transform_with_state``); in NNX (and ramie) they are Variables owned by
the module, told apart by type. This script follows "Migrating from Haiku to
Flax NNX" with ``import ramie as nnx``:

1. ``Model(784, 256, 10)`` with a Dropout ``Block``, trained a few steps with
   the guide's ``train_step`` (``nnx.grad`` and ``nnx.merge_state``);
2. the same model with a BatchNorm ``Block``: ``nnx.grad`` differentiates only
   ``nnx.Param``, training updates the ``nnx.BatchStat`` running averages in
   place, and ``model.eval()`` switches to them;
3. the guide's ``FooModule``, the NNX form of ``hk.get_state`` /
   ``hk.set_state``: a ``Counter`` Variable incremented on every call;
4. the same training step with ``nnx.Optimizer`` and optax's Adam.

Run it with ``python examples/haiku_style_model.py [--steps N]``.
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
    """Linear -> Dropout(0.5) -> ReLU (the guide's first Block)."""

    def __init__(self, in_features: int, out_features: int, rngs: nnx.Rngs):
        self.linear = nnx.Linear(in_features, out_features, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        x = self.linear(x)
        x = self.dropout(x)
        x = jax.nn.relu(x)
        return x


class BatchNormBlock(nnx.Module):
    """Linear -> BatchNorm -> ReLU (the guide's Block with non-parameter state)."""

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


class Model(nnx.Module):
    """``block`` then a Linear head; ``block_cls`` picks the guide's Block variant."""

    def __init__(
        self, din: int, dmid: int, dout: int, rngs: nnx.Rngs, block_cls: type = Block
    ):
        self.block = block_cls(din, dmid, rngs=rngs)
        self.linear = nnx.Linear(dmid, dout, rngs=rngs)

    def __call__(self, x):
        x = self.block(x)
        x = self.linear(x)
        return x


@nnx.jit
def train_step(model, inputs, labels):
    """The guide's step: plain SGD through split / merge_state / update."""

    def loss_fn(model):
        logits = model(inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = nnx.grad(loss_fn)(model)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    nnx.update(model, nnx.merge_state(params, rest))


@nnx.jit
def optimizer_step(model, optimizer, inputs, labels):
    """The same step with ``nnx.Optimizer``; returns the loss."""

    def loss_fn(model):
        logits = model(inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def evaluate(model, inputs, labels):
    """Loss and accuracy on one batch."""
    logits = model(inputs)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits.argmax(-1) == labels).mean()


class Counter(nnx.Variable):
    pass


class FooModule(nnx.Module):
    """The guide's top-level "function" as a module: ``x + multiplier * counter``."""

    def __init__(self, rngs):
        self.counter = Counter(jnp.ones((), jnp.int32))
        self.multiplier = nnx.Param(
            nnx.initializers.ones(rngs.params(), [1], jnp.float32)
        )

    def __call__(self, x):
        output = x + self.multiplier * self.counter.value

        self.counter.value += 1
        return output


def make_data(
    seed: int, n: int, din: int = 784, classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic classification problem: noisy copies of 10 random prototypes.

    NumPy arrays: making and slicing them compiles no JAX code.
    """
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(classes, din))
    labels = rng.integers(0, classes, size=n)
    inputs = prototypes[labels] + 3.0 * rng.normal(size=(n, din))
    return inputs.astype(np.float32), labels.astype(np.int32)


def _train(model: Model, inputs: np.ndarray, labels: np.ndarray, steps: int) -> None:
    model.train()
    for step in range(steps):
        start = (step * 32) % (len(labels) - 32)
        train_step(model, inputs[start : start + 32], labels[start : start + 32])
    model.eval()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every section; return the numbers it printed.

    Args:
        argv: Command-line arguments (``--steps N``, ``--seed S``).

    Returns:
        Losses and accuracies of the three trained models, whether the batch
        statistics moved, and the FooModule's outputs and counter.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=30, help="training steps (default: 30)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)
    inputs, labels = make_data(args.seed, 1024)
    inputs, test_inputs = inputs[:512], inputs[512:]
    labels, test_labels = labels[:512], labels[512:]
    out: dict[str, Any] = {}

    print("1. Model with a Dropout block, the guide's train_step")
    model = Model(784, 256, 10, rngs=nnx.Rngs(args.seed))
    assert model.linear.bias.value.shape == (10,)
    assert model.block.linear.kernel.value.shape == (784, 256)
    model.eval()
    out["dropout_initial_loss"] = float(evaluate(model, test_inputs, test_labels)[0])
    _train(model, inputs, labels, args.steps)
    loss, acc = evaluate(model, test_inputs, test_labels)
    out["dropout_loss"], out["dropout_accuracy"] = float(loss), float(acc)
    before = out["dropout_initial_loss"]
    print(f"   loss {before:.3f} -> {float(loss):.3f}, eval accuracy {float(acc):.1%}")

    print(
        "2. Model with a BatchNorm block: grads for Param, BatchStat updated in place"
    )
    model = Model(784, 256, 10, rngs=nnx.Rngs(args.seed), block_cls=BatchNormBlock)
    print(
        f"   block.linear.kernel is a {type(model.block.linear.kernel).__name__}, "
        f"block.batchnorm.mean is a {type(model.block.batchnorm.mean).__name__}"
    )
    mean_before = np.asarray(model.block.batchnorm.mean.value).copy()
    _train(model, inputs, labels, args.steps)
    moved = float(
        np.abs(np.asarray(model.block.batchnorm.mean.value) - mean_before).max()
    )
    loss, acc = evaluate(model, test_inputs, test_labels)  # eval(): running averages
    out["batchnorm_loss"], out["batchnorm_accuracy"], out["batch_stats_moved"] = (
        float(loss),
        float(acc),
        moved,
    )
    print(
        f"   running mean moved by up to {moved:.3f}; eval loss {float(loss):.3f}, "
        f"accuracy {float(acc):.1%}"
    )

    print("3. FooModule: hk.get_state / hk.set_state become a Counter Variable")
    foo = FooModule(rngs=nnx.Rngs(0))
    x = jnp.ones((1, 4))
    outputs = [float(foo(x)[0, 0]) for _ in range(3)]
    _, params, counter = nnx.split(foo, nnx.Param, Counter)
    out["foo_outputs"], out["foo_counter"] = outputs, int(foo.counter.value)
    print(
        f"   outputs {outputs}; params {sorted(params.keys())}, "
        f"counter {sorted(counter.keys())} = {int(foo.counter.value)}"
    )

    print("4. The same training with nnx.Optimizer(model, optax.adam(1e-3))")
    model = Model(784, 256, 10, rngs=nnx.Rngs(args.seed), block_cls=BatchNormBlock)
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    model.train()
    for step in range(args.steps):
        start = (step * 32) % (len(labels) - 32)
        optimizer_step(
            model, optimizer, inputs[start : start + 32], labels[start : start + 32]
        )
    model.eval()
    loss, acc = evaluate(model, test_inputs, test_labels)
    out["adam_loss"], out["adam_accuracy"] = float(loss), float(acc)
    print(
        f"   {int(optimizer.step.value)} optimizer steps; eval loss {float(loss):.3f}, "
        f"accuracy {float(acc):.1%}"
    )
    return out


if __name__ == "__main__":
    main()
