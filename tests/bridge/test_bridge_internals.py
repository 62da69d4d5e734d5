"""The helper names of Flax's bridge submodules behave as Flax's do."""

from __future__ import annotations

import flax.linen as nn
import flax.nnx as fnnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.nnx.bridge import module as flax_module
from flax.nnx.bridge import variables as flax_variables
from flax.nnx.bridge import wrappers as flax_wrappers
from hypothesis import given
from hypothesis import strategies as st

import ramie as nnx
from ramie.bridge import module as bm
from ramie.bridge import variables as bv
from ramie.bridge import wrappers as bw
from ramie.errors import BridgeError

KEY = jax.random.key(0)


# ------------------------------------------------------------------ module


class WithSetup(nnx.bridge.Module):
    def setup(self):
        self.dense = nnx.Linear(2, 2, rngs=nnx.Rngs(0))


class Plain(nnx.bridge.Module):
    pass


@pytest.mark.parametrize("obj", [WithSetup(), Plain(), nn.Dense(2), object(), 3])
def test_has_setup_agrees_with_flax(obj):
    assert bm.has_setup(obj) == flax_module.has_setup(obj)


def test_bridge_modules_are_made_by_module_meta_and_have_module_base():
    assert type(nnx.bridge.Module) is bm.ModuleMeta
    assert type(WithSetup) is bm.ModuleMeta
    assert issubclass(WithSetup, bm.ModuleBase)
    module = WithSetup()
    assert module.scope is None and module.attr_priorities == {}


class Inner(nnx.bridge.Module):
    @nnx.bridge.compact
    def __call__(self, x):
        w = self.param("w", nnx.initializers.normal(), (x.shape[-1], 2))
        return x @ w


class Outer(nnx.bridge.Module):
    @nnx.bridge.compact
    def __call__(self, x, seen):
        seen.append(
            {k: v for k, v in vars(self).items() if isinstance(v, bm.ModuleState)}
        )
        return Inner()(x)


def test_state_of_a_submodule_not_yet_created_waits_in_a_module_state():
    x = jnp.ones((1, 3))
    variables = Outer().init(KEY, x, [])
    seen = []
    y = Outer().apply(variables, x, seen)
    (waiting,) = seen[-1].values()
    assert isinstance(waiting, nnx.State)
    np.testing.assert_array_equal(
        waiting["w"].value, variables["params"]["Inner_0"]["w"]
    )
    np.testing.assert_allclose(y, x @ variables["params"]["Inner_0"]["w"], rtol=1e-6)
    # a ModuleState flattens like any State
    leaves, treedef = jax.tree.flatten(waiting)
    assert type(jax.tree.unflatten(treedef, leaves)) is bm.ModuleState


# --------------------------------------------------------------- variables

RAMIE_TYPES = {
    "Variable": nnx.Variable,
    "Param": nnx.Param,
    "LoRAParam": nnx.LoRAParam,
    "BatchStat": nnx.BatchStat,
    "Cache": nnx.Cache,
    "Intermediate": nnx.Intermediate,
}
FLAX_TYPES = {
    "Variable": fnnx.Variable,
    "Param": fnnx.Param,
    "LoRAParam": fnnx.LoRAParam,
    "BatchStat": fnnx.BatchStat,
    "Cache": fnnx.Cache,
    "Intermediate": fnnx.Intermediate,
}


@given(st.permutations(sorted(RAMIE_TYPES)))
def test_sort_variable_types_orders_as_flax(names):
    ours = bv.sort_variable_types(RAMIE_TYPES[n] for n in names)
    theirs = flax_variables.sort_variable_types([FLAX_TYPES[n] for n in names])
    assert [t.__name__ for t in ours] == [t.__name__ for t in theirs]
    # every type comes before the Variable types it derives from
    for i, t in enumerate(ours):
        assert not any(issubclass(t, u) and t is not u for u in ours[:i])


def test_get_col_name_agrees_with_flax_on_every_leaf():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.BatchNorm(use_running_average=False)(nn.Dense(3)(x))
            self.sow("intermediates", "h", x)
            return x

    variables = Net().init(KEY, jnp.ones((2, 4)))
    _, variables = Net().apply(
        variables, jnp.ones((2, 4)), mutable=["batch_stats", "intermediates"]
    )
    variables = {**Net().init(KEY, jnp.ones((2, 4))), **variables}
    cols = []
    for path, _ in jax.tree_util.tree_leaves_with_path(dict(variables)):
        cols.append(bv.get_col_name(path))
        assert cols[-1] == flax_variables.get_col_name(path)
    assert set(cols) == {"params", "batch_stats", "intermediates"}
    assert bv.get_col_name(("cache", "x")) == "cache"
    with pytest.raises(BridgeError, match="get_col_name"):
        bv.get_col_name(())


# ---------------------------------------------------------------- wrappers


def test_current_linen_module_is_linen_s_current_module():
    found = []

    class Probe(nn.Module):
        @nn.compact
        def __call__(self, x):
            found.append(
                (bw.current_linen_module(), flax_wrappers.current_linen_module())
            )
            return nn.Dense(2)(x)

    Probe().init(KEY, jnp.ones((1, 3)))
    ours, theirs = found[-1]
    assert ours is theirs and isinstance(ours, Probe)
    assert bw.current_linen_module() is None


@pytest.mark.parametrize("add_default", [False, True])
def test_linen_rngs_dict_gives_flax_s_keys(add_default):
    def probe(fn):
        class Probe(nn.Module):
            @nn.compact
            def __call__(self, x):
                return fn(self, add_default=add_default)

        rngs = {"params": jax.random.key(1), "dropout": jax.random.key(2)}
        return Probe().apply({}, jnp.ones(1), rngs=rngs)

    ours, theirs = probe(bw.linen_rngs_dict), probe(flax_wrappers.linen_rngs_dict)
    assert sorted(ours) == sorted(theirs)
    assert ("default" in ours) == add_default
    for name in ("params", "dropout"):
        np.testing.assert_array_equal(
            jax.random.key_data(ours[name]), jax.random.key_data(theirs[name])
        )
    # the keys seed a ramie module
    assert isinstance(nnx.Rngs(**ours).dropout(), jax.Array)


def test_linen_rngs_dict_outside_linen_says_where_to_call_it():
    with pytest.raises(BridgeError, match="not bound"):
        bw.linen_rngs_dict(nn.Dense(2))
