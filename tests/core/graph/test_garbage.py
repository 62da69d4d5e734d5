"""Graph operations leave no reference cycles behind.

Results of split/merge/clone/... must be freed by reference counting the moment
the caller drops them; a cycle would keep every Variable of the graph alive
until the next cyclic collection, and that collection's cost lands on some
later, unrelated step.
"""

from __future__ import annotations

import gc

import jax
import jax.numpy as jnp
import optax
import pytest

import ramie as nnx


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(3, 3, rngs=rngs)
        self.norm = nnx.BatchNorm(3, rngs=rngs)
        self.layers = [nnx.Linear(3, 3, rngs=rngs) for _ in range(3)]
        self.tied = self.linear  # shared reference


def _model() -> Block:
    return Block(nnx.Rngs(0))


OPS = {
    "split": lambda m: nnx.split(m),
    "split_filters": lambda m: nnx.split(m, nnx.Param, ...),
    "merge": lambda m: nnx.merge(*nnx.split(m)),
    "state": lambda m: nnx.state(m),
    "graphdef": lambda m: nnx.graphdef(m),
    "update": lambda m: nnx.update(m, nnx.state(m)),
    "update_new": lambda m: nnx.update(m, jax.tree.map(lambda x: x, nnx.state(m))),
    "clone": lambda m: nnx.clone(m),
    "iter_graph": lambda m: list(nnx.iter_graph(m)),
    "to_pure_dict": lambda m: nnx.state(m).to_pure_dict(),
    "replace_by_pure_dict": lambda m: nnx.state(m).replace_by_pure_dict(
        nnx.state(m).to_pure_dict()
    ),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_graph_op_creates_no_cyclic_garbage(op):
    model = _model()
    OPS[op](model)  # warm caches
    gc.collect()
    result = OPS[op](model)
    del result
    assert gc.collect() == 0, f"{op} left objects that only the cyclic collector frees"


def test_cached_jit_train_step_creates_no_cyclic_garbage():
    model = _model()
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x):
        loss, grads = nnx.value_and_grad(lambda m: (m.norm(m.linear(x)) ** 2).mean())(
            model
        )
        optimizer.update(model, grads)
        return loss

    x = jnp.ones((4, 3))
    step(model, optimizer, x)
    step(model, optimizer, x)
    gc.collect()
    step(model, optimizer, x)
    assert gc.collect() == 0
