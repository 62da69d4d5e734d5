"""Tests for the data/static markers and dataclass field specifiers.

An attribute marked ``data`` is a ``jax.tree`` child whatever its value; one
marked ``static`` lives in the tree structure and refuses arrays. Leaves are
compared with Flax NNX on the same class bodies; errors must name the class,
the attribute and a fix, and leave the object unchanged.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest
from flax import nnx as fnnx

import ramie
from ramie.errors import AttributeStatusError


def _markers_class(lib):
    class Holder(lib.Pytree):
        def __init__(self, a, b, c):
            self.a = lib.data(a)
            self.b = lib.static(b)
            self.c = c

    return Holder


def _leaves(tree):
    return [x.tolist() if hasattr(x, "tolist") else x for x in jax.tree.leaves(tree)]


def _reassign(obj, lib):
    yield _leaves(obj)
    obj.a = 3  # stays data
    yield _leaves(obj)
    obj.a = lib.static(4)
    yield _leaves(obj)
    obj.b = lib.data(5)
    yield _leaves(obj)
    obj.c = lib.static("c")
    yield _leaves(obj)
    obj.c = lib.data("c")
    yield _leaves(obj)


def test_marked_attributes_give_the_leaves_flax_gives():
    ours = _markers_class(ramie)(1, 2, jnp.array(7))
    ref = _markers_class(fnnx)(1, 2, jnp.array(7))
    assert list(_reassign(ours, ramie)) == list(_reassign(ref, fnnx))


def test_data_mark_survives_tree_map():
    obj = _markers_class(ramie)(1, "b", jnp.ones(2))
    mapped = jax.tree.map(lambda x: x + 1, obj)
    assert mapped.a == 2 and mapped.b == "b"
    mapped.a = 10  # the mark came along: still a leaf
    assert 10 in jax.tree.leaves(mapped)


def test_static_marker_refuses_arrays():
    holder = _markers_class(ramie)
    with pytest.raises(AttributeStatusError, match=r"Holder\.b.*Found data in value"):
        holder(1, jnp.ones(2), 3)
    assert issubclass(AttributeStatusError, ValueError)


def test_static_attribute_refuses_data_and_keeps_old_value():
    obj = _markers_class(ramie)(1, 2, 3)
    with pytest.raises(
        AttributeStatusError,
        match=r"(?s)Holder\.b: Found data on value of type 'list'.*"
        r"self\.b = ramie\.data\(value\)",
    ):
        obj.b = ["x", ramie.Param(jnp.ones(1))]
    assert obj.b == 2
    obj.b = ramie.data([ramie.Param(jnp.ones(1))])  # explicit override is fine
    assert len(jax.tree.leaves(obj)) == 2  # a and the Param; c=3 is static


def test_nested_markers_are_rejected():
    class Nested(ramie.Pytree):
        def __init__(self):
            self.a = [ramie.data(1), 2]

    with pytest.raises(AttributeStatusError, match=r"Nested\.a.*unexpected tags"):
        Nested()


def test_field_specifiers():
    @ramie.dataclass
    class Fields(ramie.Pytree):
        n: int = ramie.data()
        x: jax.Array
        tag: str = ramie.static(default="t", kw_only=True)
        k: int = ramie.data(default=3, kw_only=True)

    obj = Fields(1, jnp.zeros(()))
    assert _leaves(obj) == [3, 1, 0.0]  # sorted by name: k, n, x

    @ramie.dataclass
    class StaticArray(ramie.Pytree):
        a: jax.Array = ramie.static()

    with pytest.raises(
        AttributeStatusError,
        match=r"(?s)StaticArray\.a: Found unexpected data.*a: jax.Array = ramie.data",
    ):
        StaticArray(jnp.ones(2))


def test_annotations_and_dataclass_field_metadata():
    # This file's annotations are strings (``from __future__ import annotations``),
    # which Flax does not read; ramie reads both forms.
    lib = ramie

    @dataclasses.dataclass
    class Annotated(lib.Pytree):
        a: lib.Data[int]
        b: lib.Static[int]
        c: int = dataclasses.field(metadata={"static": False})

    obj = Annotated(1, 2, 3)
    assert _leaves(obj) == [1, 3]
    obj.a = lib.static(1)
    assert _leaves(obj) == [3]


def test_marker_repr_and_dict_container():
    assert repr(ramie.data(1)) == "ramie.data(1)"
    d = ramie.Dict(a=ramie.data(1))
    assert d.a == 1


# ---------------------------------------- dataclass fields holding containers
@ramie.dataclass
class _Config(ramie.Module):
    filters: list
    sizes: tuple[int, ...] = (1, 2)


def test_dataclass_container_field_is_static_configuration():
    m = _Config([3, 4])
    assert m.filters == [3, 4] and ramie.state(m) == ramie.State({})
    leaves, _ = jax.tree_util.tree_flatten(m)
    assert leaves == []  # part of the structure, like Flax's static fields


@pytest.mark.parametrize(
    "make", [lambda: ramie.Linear(1, 1, rngs=ramie.Rngs(0)), lambda: ramie.Variable(1)]
)
def test_dataclass_container_field_refuses_data_as_flax(make):

    @fnnx.dataclass
    class Theirs(fnnx.Module):
        filters: list

    with pytest.raises(ValueError, match="Found data on value of type") as theirs:
        Theirs([fnnx.Variable(1)])
    with pytest.raises(AttributeStatusError, match="Found data on value of type") as e:
        _Config([make()])
    assert "filters: list = ramie.data()" in str(e.value)
    assert isinstance(theirs.value, ValueError)


def test_dataclass_container_field_marked_data_and_init_lists_hold_modules():
    @ramie.dataclass
    class Stack(ramie.Module):
        layers: list = ramie.data()

    class Hand(ramie.Module):
        def __init__(self):
            self.layers = [ramie.Linear(1, 1, rngs=ramie.Rngs(0))]

    stack = Stack([ramie.Linear(1, 1, rngs=ramie.Rngs(0))])
    assert len(ramie.state(stack, ramie.Param)["layers"][0]) == 2
    assert len(ramie.state(Hand(), ramie.Param)["layers"][0]) == 2
