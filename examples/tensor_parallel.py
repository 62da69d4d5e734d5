"""Tensor parallel (Megatron-style) attention and MLP on a 2 x 4 mesh.

The attention heads and the MLP hidden units are split over the 4-way ``model``
axis (``qkv``/``up`` by columns, ``out``/``down`` by rows, one all-reduce per
sub-block); the batch is split over the 2-way ``data`` axis.

This is ``train_single_device.py`` plus three lines (marked ``# +``): a mesh,
the logical-axis ``RULES`` for it, and the batch placed on it. It prints the
same loss curve as the single-device run.

Run it with ``python examples/tensor_parallel.py [--steps N]`` (on a CPU-only machine,
with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

import ramie as nnx

# How logical axes map to mesh axes for each way of scaling (unused on one device).
AUTO = jax.sharding.AxisType.Auto  # meshes whose shardings JAX propagates (GSPMD)
RULES = {
    "dp": [("embed", None), ("heads", None), ("mlp", None)],
    "fsdp": [("embed", "data"), ("heads", None), ("mlp", None)],
    "tp": [("embed", None), ("heads", "model"), ("mlp", "model")],
}
init = nnx.initializers.lecun_normal()


def dense(din: int, dout: int, axes: tuple, rngs: nnx.Rngs) -> nnx.Linear:
    kernel_init = nnx.with_partitioning(init, axes)
    return nnx.Linear(din, dout, use_bias=False, kernel_init=kernel_init, rngs=rngs)


class Block(nnx.Module):
    """Pre-norm attention + MLP; Megatron-style shardable (heads, mlp)."""

    def __init__(self, dim: int, heads: int, rngs: nnx.Rngs):
        self.heads = heads
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.qkv = dense(dim, 3 * dim, ("embed", "heads"), rngs)
        self.out = dense(dim, dim, ("heads", "embed"), rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.up = dense(dim, 4 * dim, ("embed", "mlp"), rngs)
        self.down = dense(4 * dim, dim, ("mlp", "embed"), rngs)
        self.head = dense(dim, 1, ("embed", None), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, d = x.shape
        q, k, v = jnp.split(self.qkv(self.norm1(x)), 3, axis=-1)
        q, k, v = (a.reshape(b, t, self.heads, d // self.heads) for a in (q, k, v))
        att = nnx.dot_product_attention(q, k, v)
        x = x + self.out(att.reshape(b, t, d))
        x = x + self.down(jax.nn.gelu(self.up(self.norm2(x))))
        return self.head(x.mean(axis=1))[:, 0]


def batch(step: int, size: int, seq: int, dim: int) -> tuple[jax.Array, jax.Array]:
    kx = jax.random.fold_in(jax.random.key(42), step)
    x = jax.random.normal(kx, (size, seq, dim))
    return x, jnp.sin(x.sum(axis=(1, 2)) / dim)


@nnx.jit
def train_step(model: Block, optimizer: nnx.Optimizer, x, y) -> jax.Array:
    def loss_fn(model: Block) -> jax.Array:
        return jnp.mean((model(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def train(args: argparse.Namespace, rules: Any = ()) -> dict[str, Any]:
    with nnx.logical_axis_rules(rules):
        model = Block(args.dim, args.heads, rngs=nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    losses = []
    for step in range(args.steps):
        x, y = batch(step, args.batch, args.seq, args.dim)
        x, y = jax.device_put((x, y), jax.P("data"))  # +
        losses.append(float(train_step(model, optimizer, x, y)))
    print("losses:", " ".join(f"{v:.6f}" for v in losses))
    return {
        "losses": losses,
        "kernel_sharding": model.up.kernel.sharding,
        "model": model,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=8)
    args = parser.parse_args(argv)
    with jax.set_mesh(jax.make_mesh((2, 4), ("data", "model"), (AUTO, AUTO))):  # +
        return train(args, RULES["tp"])  # +


if __name__ == "__main__":
    main()
