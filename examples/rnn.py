"""Recurrent networks: the guides' RNNCell under ``nnx.scan``, and ``nnx.RNN``.

The Linen -> NNX and Haiku -> NNX guides write an RNN as a cell (one step:
``(carry, x) -> (carry, y)``) plus an ``nnx.scan`` over the time axis:
``in_axes=(nnx.Carry, None, 1)`` marks the carry, broadcasts the cell (the
same parameters at every step) and scans the inputs along axis 1;
``out_axes=(nnx.Carry, 1)`` returns the final carry and stacks the outputs
along axis 1 again - no transposes, unlike ``hk.scan``.

This script trains that RNN, and the built-in ``nnx.RNN(nnx.LSTMCell(...))``,
on a memory task: at every step, output the input from ``--delay`` steps
earlier. Predicting zeros scores a mean squared error of about 1.0; a
network that remembers scores close to 0.

Run it with ``python examples/rnn.py [--steps N]``.
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


class RNNCell(nnx.Module):
    """One step of a ReLU RNN (the guides' code)."""

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
    """The cell scanned over axis 1 of ``x`` (the guides' code)."""

    def __init__(self, input_size: int, hidden_size: int, rngs: nnx.Rngs):
        self.hidden_size = hidden_size
        self.cell = RNNCell(input_size, self.hidden_size, rngs=rngs)

    def __call__(self, x):
        scan_fn = lambda carry, cell, x: cell(carry, x)  # the guides' spelling
        carry = self.cell.initial_state(x.shape[0])
        carry, y = nnx.scan(
            scan_fn, in_axes=(nnx.Carry, None, 1), out_axes=(nnx.Carry, 1)
        )(carry, self.cell, x)
        return y


class Regressor(nnx.Module):
    """A recurrent layer followed by a per-step Linear read-out."""

    def __init__(self, recurrent: nnx.Module, hidden_size: int, rngs: nnx.Rngs):
        self.recurrent = recurrent
        self.readout = nnx.Linear(hidden_size, 1, rngs=rngs)

    def __call__(self, x):
        return self.readout(self.recurrent(x))


def make_batch(
    rng: np.random.Generator, batch: int, length: int, delay: int
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian inputs ``(batch, length, 1)`` and the inputs delayed by ``delay``."""
    x = rng.normal(size=(batch, length, 1)).astype(np.float32)
    y = np.pad(x, ((0, 0), (delay, 0), (0, 0)))[:, :length]
    return x, y


def loss_fn(model: Regressor, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean squared error."""
    return jnp.mean((model(x) - y) ** 2)


@nnx.jit
def train_step(
    model: Regressor, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array
) -> jax.Array:
    """One Adam step; returns the loss."""
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def eval_loss(model: Regressor, x: jax.Array, y: jax.Array) -> jax.Array:
    """Loss without updating anything."""
    return loss_fn(model, x, y)


def fit(model: Regressor, steps: int, delay: int, seed: int) -> tuple[float, float]:
    """Train ``model`` with Adam; return its held-out MSE before and after."""
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    x_val, y_val = make_batch(np.random.default_rng(10_000 + seed), 256, 16, delay)
    before = float(eval_loss(model, x_val, y_val))
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        train_step(model, optimizer, *make_batch(rng, 32, 16, delay))
    return before, float(eval_loss(model, x_val, y_val))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Show the guides' RNN, then train it and an LSTM; return the numbers printed.

    Args:
        argv: Command-line arguments (``--steps N``, ``--delay D``, ``--seed S``).

    Returns:
        ``output_shape`` of the guides' example, and the held-out MSE of each
        model before (``*_before``) and after training.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=300, help="training steps per model (default: 300)"
    )
    parser.add_argument(
        "--delay", type=int, default=2, help="how many steps to remember (default: 2)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)

    # The guides' example: 3 sequences of 12 steps with 32 features.
    x = jnp.ones((3, 12, 32))
    model = RNN(x.shape[2], 64, rngs=nnx.Rngs(0))
    y = model(x)
    print(
        f"RNN(32, 64) on {x.shape}: outputs {y.shape}, "
        f"cell kernel {model.cell.linear.kernel.value.shape}"
    )

    print(
        f"task: output the input from {args.delay} steps earlier "
        "(predicting 0 gives MSE ~1.0)"
    )
    results: dict[str, Any] = {"output_shape": tuple(y.shape)}
    models = {
        "scan_rnn": Regressor(
            RNN(1, 32, rngs=nnx.Rngs(args.seed)), 32, rngs=nnx.Rngs(args.seed)
        ),
        "lstm": Regressor(
            nnx.RNN(nnx.LSTMCell(1, 32, rngs=nnx.Rngs(args.seed))),
            32,
            rngs=nnx.Rngs(args.seed),
        ),
    }
    labels = {"scan_rnn": "RNNCell + nnx.scan", "lstm": "nnx.RNN(nnx.LSTMCell)"}
    for name, regressor in models.items():
        before, after = fit(regressor, args.steps, args.delay, args.seed)
        results[f"{name}_before"], results[name] = before, after
        print(
            f"  {labels[name]:<22} MSE {before:.3f} -> {after:.3f} ({args.steps} steps)"
        )
    return results


if __name__ == "__main__":
    main()
