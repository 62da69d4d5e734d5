"""Tests for ramie.EMA against hand computations with plain jax (and flax.nnx.EMA)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import ramie
from ramie.errors import GraphStructureError


class Net(ramie.Module):
    def __init__(self, rngs: ramie.Rngs):
        self.linear = ramie.Linear(3, 4, rngs=rngs)
        self.bn = ramie.BatchNorm(4, rngs=rngs)
        self.dropout = ramie.Dropout(0.1, rngs=rngs)

    def __call__(self, x):
        return self.dropout(self.bn(self.linear(x)))


def _pure(state) -> dict:
    return jax.tree.map(np.asarray, ramie.to_pure_dict(state))


def test_update_matches_hand_computation():
    decay = 0.8
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    expected = _pure(ramie.state(model))
    ema = ramie.EMA(model, decay=decay)
    for step in range(1, 4):
        new = jax.tree.map(lambda p, s=step: p + s * 0.5, ramie.state(model))
        ramie.update(model, new)
        ema.update(model)
        current = _pure(ramie.state(model))
        expected = jax.tree.map(
            lambda e, p: decay * e + (1 - decay) * p, expected, current
        )
        got = _pure(ema.params)
        jax.tree.map(
            lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-6), got, expected
        )


def test_training_loop_in_jit_matches_plain_jax_and_optax():
    decay, lr = 0.9, 0.1
    model = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
    params0 = ramie.to_pure_dict(ramie.state(model, ramie.Param))
    optimizer = ramie.Optimizer(model, optax.sgd(lr), wrt=ramie.Param)
    ema = ramie.EMA(model, decay=decay, only=ramie.Param)
    ema_model = ema.apply_to(model)
    x, y = jnp.ones((4, 2)), jnp.zeros((4, 2))

    @ramie.jit
    def train_step(model, optimizer, ema, x, y):
        grads = ramie.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        ema.update(model)

    def loss(p):
        return jnp.mean((x @ p["kernel"] + p["bias"] - y) ** 2)

    params, avg = params0, params0
    for _ in range(3):
        train_step(model, optimizer, ema, x, y)
        grads = jax.grad(loss)(params)
        params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
        avg = jax.tree.map(lambda a, p: decay * a + (1 - decay) * p, avg, params)
    jax.tree.map(
        lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7),
        ramie.to_pure_dict(ema.params),
        avg,
    )
    # the applied model shares the EMA's Variables, so it saw every update
    np.testing.assert_allclose(ema_model.kernel.value, avg["kernel"], rtol=1e-5)
    assert ema_model.kernel is ema.params["kernel"]


def test_matches_flax_ema():
    ours_model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    ref_model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    ref_state = nnx.state(ref_model)
    nnx.replace_by_pure_dict(ref_state, ramie.to_pure_dict(ramie.state(ours_model)))
    nnx.update(ref_model, ref_state)
    ours, ref = ramie.EMA(ours_model, 0.7), nnx.EMA(ref_model, 0.7)
    for k in range(2):
        delta = jnp.full((3, 2), k + 1.0)
        ours_model.kernel[...] = ours_model.kernel[...] + delta
        ref_model.kernel[...] = ref_model.kernel[...] + delta
        ours.update(ours_model)
        ref.update(ref_model)
    np.testing.assert_allclose(
        ours.params["kernel"].value, ref.params["kernel"][...], rtol=1e-6
    )


def test_default_filter_skips_rng_state_and_only_param_skips_batch_stats():
    model = Net(ramie.Rngs(0))
    everything = ramie.EMA(model, 0.9)
    types = {
        type(v).__name__
        for v in jax.tree.leaves(
            everything.params, is_leaf=lambda v: isinstance(v, ramie.Variable)
        )
    }
    assert types == {"Param", "BatchStat"}  # RNG keys and counters are not averaged
    params_only = ramie.EMA(model, 0.9, only=ramie.Param)
    assert sorted(params_only.params.keys()) == ["bn", "linear"]
    assert "mean" not in params_only.params["bn"]
    applied = params_only.apply_to(model)
    assert applied.bn.mean is model.bn.mean  # untracked state is shared with the model
    assert applied.dropout.rngs.key is model.dropout.rngs.key
    applied.eval()
    out = applied(jnp.ones((2, 3)))
    assert out.shape == (2, 4)


def test_apply_to_leaves_the_model_unchanged_and_keeps_its_metadata():
    model = ramie.Linear(
        2,
        2,
        kernel_init=ramie.with_metadata(
            ramie.initializers.ones, out_sharding=(None, "m")
        ),
        rngs=ramie.Rngs(0),
    )
    ema = ramie.EMA(model, 0.5)
    assert ema.params["kernel"].out_sharding == (None, "m")
    model.kernel[...] = jnp.zeros((2, 2))
    ema.update(model)
    applied = ema.apply_to(model)
    np.testing.assert_allclose(applied.kernel.value, 0.5 * np.ones((2, 2)))
    np.testing.assert_allclose(model.kernel.value, np.zeros((2, 2)))
    assert applied is not model


def test_update_accepts_a_state():
    model = ramie.Linear(1, 1, use_bias=False, rngs=ramie.Rngs(0))
    ema = ramie.EMA(ramie.state(model, ramie.Param), 0.0, only=ramie.Param)
    model.kernel[...] = jnp.full((1, 1), 7.0)
    ema.update(ramie.state(model))
    assert float(ema.params["kernel"][0, 0]) == 7.0


def test_errors_name_the_paths_and_the_fix():
    model = Net(ramie.Rngs(0))
    ema = ramie.EMA(model, 0.9, only=ramie.Param)
    other = ramie.Linear(3, 4, rngs=ramie.Rngs(1))
    with pytest.raises(
        GraphStructureError,
        match=r"(?s)EMA.update\(\).*linear.kernel.*ema.update\(model\)",
    ):
        ema.update(other)
    with pytest.raises(GraphStructureError, match=r"(?s)EMA.apply_to\(\).*bn.bias"):
        ema.apply_to(other)
    with pytest.raises(TypeError, match=r"decay=1.5"):
        ramie.EMA(model, 1.5)
    with pytest.raises(
        TypeError, match=r"(?s)leaf at w is a .*Array.*only=ramie.Param"
    ):
        ramie.EMA({"w": jnp.ones(2)}, 0.9)
