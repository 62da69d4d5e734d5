"""Tests for ``ramie/_src/core/containers.py``: List, Dict and Sequential."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie as nnx
from ramie._src.core.pytree import version_of


def _lin(seed=0):
    return nnx.Linear(2, 1, rngs=nnx.Rngs(seed))


def _paths(state):
    return sorted(nnx.to_flat_state(state).paths, key=str)


# ------------------------------------------------------------------ List
def test_list_is_a_mutable_sequence_module():
    a, b, c = _lin(seed=0), _lin(seed=1), _lin(seed=2)
    lst = nnx.List([a])
    lst.append(b)
    lst.insert(0, c)
    assert isinstance(lst, nnx.Module)
    assert len(lst) == 3 and list(lst) == [c, a, b]
    assert lst[-1] is b
    lst[1] = b
    assert lst[1] is b
    del lst[0]
    assert list(lst) == [b, b]
    assert lst == [b, b] and lst == nnx.List([b, b]) and lst != [a]
    assert lst.index(b) == 0 and b in lst  # MutableSequence mixins
    lst.extend([a])
    assert lst.pop() is a


def test_list_slice_is_a_list():
    lst = nnx.List([1, 2, 3])
    sub = lst[1:]
    assert type(sub) is nnx.List and list(sub) == [2, 3]


def test_list_mutations_bump_version():
    lst = nnx.List()
    v0 = version_of(lst)
    lst.append(_lin())
    lst[0] = _lin(seed=1)
    del lst[0]
    assert version_of(lst) == v0 + 3


def test_list_state_uses_int_keys_like_flax():
    fnnx = pytest.importorskip("flax.nnx")
    ours = nnx.List(
        [nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.BatchNorm(3, rngs=nnx.Rngs(0))]
    )
    theirs = fnnx.List(
        [fnnx.Linear(2, 3, rngs=fnnx.Rngs(0)), fnnx.BatchNorm(3, rngs=fnnx.Rngs(0))]
    )
    assert _paths(nnx.state(ours)) == _paths(fnnx.state(theirs))
    assert sorted(nnx.state(ours).keys()) == [0, 1]


def test_list_split_merge_round_trip_keeps_sharing():
    a = _lin()
    lst = nnx.List([a, a, 3, "static"])
    graphdef, state = nnx.split(lst)
    back = nnx.merge(graphdef, state)
    assert type(back) is nnx.List and len(back) == 4
    assert back[0] is back[1] and back[2:4] == [3, "static"]
    np.testing.assert_array_equal(back[0].kernel.value, a.kernel.value)


def test_list_update_and_pytree():
    lst = nnx.List([nnx.Param(jnp.ones(2))])
    nnx.update(lst, {0: jnp.zeros(2)})
    np.testing.assert_array_equal(lst[0].value, np.zeros(2))
    nnx.update(lst, {"0": jnp.full(2, 3.0)})  # checkpoint-style string index
    np.testing.assert_array_equal(lst[0].value, np.full(2, 3.0))
    doubled = jax.tree.map(lambda x: x * 2, lst)
    assert type(doubled) is nnx.List
    np.testing.assert_array_equal(doubled[0].value, np.full(2, 6.0))


def test_list_children_are_linked_for_paths():
    from ramie._src.core import links

    class M(nnx.Module):
        def __init__(self):
            self.layers = nnx.List([_lin(), _lin()])

    m = M()
    assert links.path_of(m.layers[1].kernel) == ("layers", 1, "kernel")
    m.layers.insert(0, _lin(seed=3))
    assert links.path_of(m.layers[2].kernel) == ("layers", 2, "kernel")


# ------------------------------------------------------------------ Dict
def test_dict_mapping_and_attribute_access():
    heads = nnx.Dict(cls=_lin(), reg=_lin(seed=1))
    assert isinstance(heads, nnx.Module)
    assert sorted(heads) == ["cls", "reg"] and len(heads) == 2
    assert heads.cls is heads["cls"]
    heads.extra = nnx.Param(jnp.ones(1))
    assert "extra" in heads and heads["extra"] is heads.extra
    del heads.extra
    assert "extra" not in heads
    heads["tmp"] = 1
    del heads["tmp"]
    assert dict(heads.items()) == {"cls": heads.cls, "reg": heads.reg}
    assert heads == {"cls": heads.cls, "reg": heads.reg}


def test_dict_missing_attribute_lists_keys():
    d = nnx.Dict(a=1)
    with pytest.raises(AttributeError, match=r"no key or attribute 'b'; keys: \['a'\]"):
        _ = d.b


def test_dict_bumps_only_on_change():
    d = nnx.Dict()
    sub = _lin()
    v0 = version_of(d)
    d["a"] = sub
    d["a"] = sub  # same object: no change
    assert version_of(d) == v0 + 1
    del d["a"]
    assert version_of(d) == v0 + 2


def test_dict_state_split_merge():
    fnnx = pytest.importorskip("flax.nnx")
    ours = nnx.Dict(
        enc=nnx.Linear(2, 3, rngs=nnx.Rngs(0)), dec=nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    )
    theirs = fnnx.Dict(
        enc=fnnx.Linear(2, 3, rngs=fnnx.Rngs(0)),
        dec=fnnx.Linear(3, 2, rngs=fnnx.Rngs(0)),
    )
    assert _paths(nnx.state(ours)) == _paths(fnnx.state(theirs))
    graphdef, state = nnx.split(ours)
    back = nnx.merge(graphdef, state)
    assert type(back) is nnx.Dict and sorted(back) == ["dec", "enc"]
    assert back.enc.kernel.shape == (2, 3)


# ------------------------------------------------------------ Sequential
def test_sequential_applies_in_order():
    model = nnx.Sequential(
        nnx.Linear(2, 4, rngs=nnx.Rngs(0)),
        jax.nn.relu,
        nnx.Linear(4, 1, rngs=nnx.Rngs(1)),
    )
    x = jnp.ones((3, 2))
    expected = model.layers[2](jax.nn.relu(model.layers[0](x)))
    np.testing.assert_allclose(model(x), expected)
    assert type(model.layers) is nnx.List
    assert _paths(nnx.state(model))[0] == ("layers", 0, "bias")


def test_sequential_state_matches_flax():
    fnnx = pytest.importorskip("flax.nnx")
    ours = nnx.Sequential(
        nnx.Linear(2, 4, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(4, 1, rngs=nnx.Rngs(1))
    )
    theirs = fnnx.Sequential(
        fnnx.Linear(2, 4, rngs=fnnx.Rngs(0)),
        fnnx.relu,
        fnnx.Linear(4, 1, rngs=fnnx.Rngs(1)),
    )
    assert _paths(nnx.state(ours)) == _paths(fnnx.state(theirs))


def test_sequential_unpacks_tuples_and_passes_kwargs_to_first():
    def first(x, *, scale):
        return x * scale, x

    def second(a, b):
        return a + b

    model = nnx.Sequential(first, second)
    assert model(2, scale=3) == 8


def test_sequential_passes_rngs_to_layers_that_accept_them():
    model = nnx.Sequential(nnx.Dropout(0.5), lambda x: x)
    x = jnp.ones(64)
    y = model(x, rngs=nnx.Rngs(dropout=0))
    assert bool(jnp.any(y == 0)) and bool(jnp.any(y == 2))


def test_sequential_rejects_non_callables():
    with pytest.raises(TypeError, match="argument 1 is a int, not a callable"):
        nnx.Sequential(jax.nn.relu, 3)


@pytest.mark.parametrize(
    "args, kwargs",
    [((7,), {}), ((1, "a"), {}), ((), {}), ((), {"k": 2})],
    ids=["one", "several", "none", "keywords"],
)
def test_empty_sequential_is_the_identity_like_flax(args, kwargs):
    from flax import nnx as fnnx

    assert nnx.Sequential()(*args, **kwargs) == fnnx.Sequential()(*args, **kwargs)


def test_list_items_marked_data_or_static():
    ls = nnx.List([nnx.data(1), nnx.static("s"), nnx.data(jnp.array(2))])
    leaves, treedef = jax.tree.flatten(ls)
    assert leaves[0] == 1 and int(leaves[1]) == 2 and len(leaves) == 2
    doubled = jax.tree.unflatten(treedef, [x * 2 for x in leaves])
    assert doubled[0] == 2 and doubled[1] == "s" and int(doubled[2]) == 4
    ls.insert(0, nnx.data(5))  # marks follow their items
    del ls[1]
    assert list(ls)[:2] == [5, "s"] and jax.tree.leaves(ls)[0] == 5
    assert len(jax.tree.leaves(ls)) == 2
    ls[0] = 6  # an unmarked int is static again
    assert len(jax.tree.leaves(ls)) == 1


def test_dict_item_assignment_updates_variables_and_checks_the_trace():
    d = nnx.Dict(a=nnx.Param(jnp.array(1.0)))
    param = d.a
    d.a = jnp.array(2.0)  # like a module attribute: the Param keeps its identity
    assert d.a is param and float(param.value) == 2.0

    @jax.jit
    def f():
        with pytest.raises(
            nnx.errors.TraceContextError,
            match=r"Cannot mutate 'Dict' from different trace level \(setting 'a'\)",
        ):
            d.a = 3.0

    f()
    assert float(d.a.value) == 2.0
