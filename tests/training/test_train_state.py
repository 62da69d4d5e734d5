"""Tests for ``ramie.TrainState``: optax steps match a plain optax loop, and
subclasses with extra fields are pytrees whose fields ``apply`` can name."""

from __future__ import annotations

import typing

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ramie


class WithStats(ramie.TrainState):
    batch_stats: ramie.State


class Net(ramie.Module):
    def __init__(self, rngs):
        self.linear = ramie.Linear(2, 3, rngs=rngs)
        self.bn = ramie.BatchNorm(3, rngs=rngs)

    def __call__(self, x, train: bool):
        return self.bn(self.linear(x), use_running_average=not train)


def _state():
    graphdef, params, stats = ramie.split(Net(ramie.Rngs(0)), ramie.Param, ...)
    return WithStats.create(
        graphdef, params=params, tx=optax.sgd(0.5), batch_stats=stats
    )


def test_subclass_fields_are_pytree_children():
    state = _state()
    n_params = len(jax.tree.leaves(state.params))
    n_stats = len(jax.tree.leaves(state.batch_stats))
    # params, step and the stats (sgd without momentum has an empty opt_state)
    assert len(jax.tree.leaves(state)) == n_params + n_stats + 1
    doubled = jax.tree.map(lambda x: x * 2, state)
    assert type(doubled) is WithStats and doubled.tx is state.tx


def test_apply_by_field_name_and_positional_gradients_match_optax():
    state = _state()
    x = jnp.ones((4, 2))
    y, _ = state.apply("params", "batch_stats")(x, train=True)
    assert y.shape == (4, 3)
    grads = jax.tree.map(jnp.ones_like, state.params)
    new = state.apply_gradients(grads)
    ref = optax.apply_updates(
        ramie.to_pure_dict(state.params),
        optax.sgd(0.5).update(ramie.to_pure_dict(grads), state.opt_state)[0],
    )
    np.testing.assert_allclose(
        ramie.to_pure_dict(new.params)["linear"]["kernel"], ref["linear"]["kernel"]
    )
    assert int(new.step) == 1 and type(new) is WithStats


def test_apply_unknown_field_names_the_fields():
    with pytest.raises(AttributeError, match=r"no field 'stats'.*batch_stats"):
        _state().apply("params", "stats")


@pytest.mark.parametrize(
    "cls", [ramie.TrainState, ramie.Optimizer, ramie.ModelAndOptimizer, ramie.StateAxes]
)
def test_generic_classes_take_a_type_argument_in_annotations(cls):
    """``nnx.TrainState[MLP]`` and friends are valid annotations, as in Flax."""
    alias = cls[ramie.Linear]
    assert typing.get_origin(alias) is cls
    assert typing.get_args(alias) == (ramie.Linear,)
