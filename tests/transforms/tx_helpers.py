"""Shared helpers for the transform tests: pure-state snapshots and STATS deltas."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

import ramie
from ramie._src.transforms.jit import STATS


def _to_np(x):
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def pure_state(node, *filters) -> dict:
    """``ramie.state`` as a nested dict of numpy arrays (PRNG keys as key data)."""
    state = ramie.state(node, *filters) if filters else ramie.state(node)
    return jax.tree.map(_to_np, ramie.to_pure_dict(state))


def assert_trees_equal(a, b, *, rtol: float = 0.0, atol: float = 0.0) -> None:
    """Same pytree structure and (close or exactly) equal leaves."""
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb, f"structures differ:\n  {ta}\n  {tb}"
    for x, y in zip(la, lb):
        x, y = _to_np(x), _to_np(y)
        assert x.shape == y.shape and x.dtype == y.dtype, (
            x.shape,
            x.dtype,
            y.shape,
            y.dtype,
        )
        if rtol or atol:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(x, y)


def assert_same_model(a, b, *, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Two object graphs have the same structure, sharing and state values."""
    assert ramie.graphdef(a) == ramie.graphdef(b)
    assert_trees_equal(pure_state(a), pure_state(b), rtol=rtol, atol=atol)


@contextlib.contextmanager
def stats_delta():
    """Yields a dict that holds the change of ``ramie.jit`` STATS on exit."""
    before = dict(STATS)
    delta: dict = {}
    try:
        yield delta
    finally:
        delta.update({k: STATS[k] - before[k] for k in STATS})


def adam_step_setup():
    """A Linear(2, 3), an adam Optimizer over its Params and a ``ramie.jit``
    train step taking both, already called twice (compiled and cached)."""
    import optax

    model = ramie.Linear(2, 3, rngs=ramie.Rngs(0))
    opt = ramie.Optimizer(model, optax.adam(0.1), wrt=ramie.Param)

    @ramie.jit
    def step(model, opt):
        grads = ramie.grad(lambda m: jnp.sum(m(jnp.ones((1, 2)))))(model)
        opt.update(model, grads)

    step(model, opt)
    step(model, opt)
    return model, opt, step
