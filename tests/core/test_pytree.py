"""Tests for ``ramie/_src/core/pytree.py``: the base class of graph objects.

Attribute writes bump versions and the global epoch, an array written over a
Variable updates the Variable, lists/dicts of graph data are tracked, graph
objects are JAX pytrees, and cycles are refused by JAX's tree functions.
"""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie as nnx
from ramie._src.core.epoch import EPOCH
from ramie._src.core.pytree import bump, version_of
from ramie._src.core.tracked import TrackedDict, TrackedList
from ramie.errors import GraphStructureError, TraceContextError


class Box(nnx.Pytree):
    def __init__(self):
        self.w = nnx.Param(jnp.ones(2))
        self.name = "box"
        self.arr = jnp.zeros(1)
        self.subs = [nnx.BatchStat(jnp.ones(1))]


class Node(nnx.Module):
    pass


# ------------------------------------------------------- attribute writes
def test_new_attribute_bumps_version_and_epoch():
    n = Node()
    v0, e0 = version_of(n), EPOCH.value
    n.a = 1
    assert version_of(n) == v0 + 1
    assert EPOCH.value > e0


def test_writing_the_same_object_is_not_a_change():
    n = Node()
    sub = Node()
    n.sub = sub
    v0, e0 = version_of(n), EPOCH.value
    n.sub = sub
    assert (version_of(n), EPOCH.value) == (v0, e0)


def test_delete_bumps_and_missing_raises():
    n = Node()
    n.a = Node()
    v0 = version_of(n)
    del n.a
    assert version_of(n) == v0 + 1
    with pytest.raises(AttributeError, match="'Node' object has no attribute 'a'"):
        del n.a


def test_bump_helper():
    n = Node()
    e0 = EPOCH.value
    bump(n)
    assert version_of(n) == 1 and EPOCH.value == e0 + 1
    assert version_of(object()) == 0


@pytest.mark.parametrize(
    "new",
    [jnp.array(5), np.array(5), 5, 5.0, True],
    ids=["jax", "numpy", "int", "float", "bool"],
)
def test_array_over_variable_updates_the_variable(new):
    n = Node()
    n.count = nnx.BatchStat(jnp.array(0))
    box = n.count
    v0, e0 = version_of(n), EPOCH.value
    n.count = new
    assert n.count is box and type(n.count) is nnx.BatchStat
    assert int(n.count.value) == int(new)
    assert (version_of(n), EPOCH.value) == (v0, e0)  # a value change only


@pytest.mark.parametrize(
    "new", [np.float32(5.0), np.int64(5)], ids=["float32", "int64"]
)
def test_numpy_scalar_over_variable_updates_the_variable(new):
    n = Node()
    n.count = nnx.BatchStat(np.array(0))
    box = n.count
    n.count = n.count + 1  # np.array(0) + 1 is an np.int64 scalar
    assert n.count is box
    n.count = new
    assert n.count is box and int(n.count.value) == 5


def test_seed_counter_by_reassignment():
    class Counter(nnx.Variable):
        pass

    class M(nnx.Module):
        def __init__(self):
            self.count = Counter(jnp.array(0))

        def __call__(self):
            self.count = self.count + 1

    m = M()
    m()
    m()
    assert type(m.count) is Counter and int(m.count.value) == 2


def test_variable_or_non_array_over_variable_replaces_it():
    n = Node()
    n.v = nnx.Param(jnp.ones(1))
    new = nnx.BatchStat(jnp.zeros(1))
    n.v = new
    assert n.v is new
    n.v = "now static"
    assert n.v == "now static"


def test_lists_and_dicts_of_graph_data_are_tracked():
    n = Node()
    original = [nnx.Param(jnp.ones(1))]
    n.layers = original
    n.heads = {"a": Node()}
    n.shapes = [3, 3]
    n.nested = {"x": [nnx.Param(jnp.ones(1))]}
    assert type(n.layers) is TrackedList and isinstance(n.layers, list)
    assert n.layers is not original  # a tracked copy
    assert n.layers == original
    assert type(n.heads) is TrackedDict
    assert type(n.shapes) is list  # static content stays plain
    assert type(n.nested["x"]) is TrackedList
    e0 = EPOCH.value
    n.layers.append(nnx.Param(jnp.zeros(1)))
    assert EPOCH.value > e0
    assert len(nnx.state(n).layers) == 2


def test_tuples_are_rebuilt_with_tracked_contents():
    n = Node()
    n.pair = ([nnx.Param(jnp.ones(1))], 3)
    assert type(n.pair) is tuple and type(n.pair[0]) is TrackedList


# --------------------------------------------------------------- pytrees
def test_pytree_children_are_data_attributes_in_sorted_order():
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(Box())
    paths = [jax.tree_util.keystr(p) for p, _ in leaves_with_paths]
    assert paths == [".arr", ".subs[0].value", ".w.value"]
    assert "box" in str(treedef)  # static attribute lives in the treedef


def test_tree_map_over_pytree_rebuilds_same_type():
    b = Box()
    b2 = jax.tree.map(lambda x: x * 2, b)
    assert type(b2) is Box and b2 is not b
    assert b2.name == "box"
    np.testing.assert_array_equal(b2.w.value, [2.0, 2.0])
    np.testing.assert_array_equal(b.w.value, [1.0, 1.0])
    assert type(b2.subs) is TrackedList and type(b2.subs[0]) is nnx.BatchStat
    assert b2.w is not b.w


def test_modules_pass_through_raw_jax_jit():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    y = jax.jit(lambda m, x: m(x))(model, jnp.ones((1, 2)))
    np.testing.assert_allclose(y, model(jnp.ones((1, 2))), rtol=1e-6)
    new = jax.jit(lambda m: jax.tree.map(lambda x: x + 1, m))(model)
    assert type(new) is nnx.Linear and new.in_features == 2


def test_pytree_false_opts_out():
    class NotATree(nnx.Pytree, pytree=False):
        def __init__(self):
            self.w = nnx.Param(jnp.ones(1))

    obj = NotATree()
    assert jax.tree.leaves(obj) == [obj]

    class Child(NotATree):  # Flax: subclasses default to pytree=True again
        pass

    (leaf,) = jax.tree.leaves(Child())
    assert isinstance(leaf, jax.Array)


def test_object_is_not_a_pytree():
    obj = nnx.Object()
    assert jax.tree.leaves(obj) == [obj]


def test_object_subclass_is_not_a_pytree():
    class O(nnx.Object):  # noqa: E742
        def __init__(self):
            self.w = nnx.Param(jnp.ones(2))

    obj = O()
    assert jax.tree.leaves(obj) == [obj]


def test_object_subclass_matches_flax():
    fnnx = pytest.importorskip("flax.nnx")

    class O(fnnx.Object):  # noqa: E742
        def __init__(self):
            self.w = fnnx.Param(jnp.ones(2))

    obj = O()
    assert jax.tree.leaves(obj) == [obj]  # the behaviour ramie should copy


# misuse: a reference cycle given to jax.tree_util
def test_cycle_in_jax_tree_flatten_names_path():
    a, b = Node(), Node()
    a.w = nnx.Param(jnp.ones(1))
    a.child = b
    b.parent = a
    with pytest.raises(GraphStructureError, match=r"cycle at child\.parent"):
        jax.tree.leaves(a)
    with pytest.raises(GraphStructureError, match=r"ramie\.split"):
        jax.tree.map(lambda x: x, a)
    # the graph API is fine with it
    graphdef, state = nnx.split(a)
    a2 = nnx.merge(graphdef, state)
    assert a2.child.parent is a2


# misuse: a cycle through a list, given to jax.tree_util
def test_cycle_through_list_names_path():
    a, b = Node(), Node()
    a.items = [b]
    b.up = a
    with pytest.raises(GraphStructureError, match=r"cycle at items\[0\]\.up"):
        jax.tree.flatten(a)


def test_shared_but_acyclic_graph_flattens():
    a = Node()
    shared = Node()
    shared.w = nnx.Param(jnp.ones(1))
    a.x = shared
    a.y = shared
    assert len(jax.tree.leaves(a)) == 2  # a pytree view duplicates shared leaves


# --------------------------------------------------------------- pickling
def test_pickle_round_trip():
    b = Box()
    b2 = pickle.loads(pickle.dumps(b))
    assert type(b2) is Box and b2.name == "box"
    np.testing.assert_array_equal(b2.w.value, [1.0, 1.0])
    assert version_of(b2) == 0
    b2.extra = 1  # usable after unpickling
    assert version_of(b2) == 1


def test_graph_replace_installs_children_and_bumps():
    n = Node()
    n.a = 1
    v0 = version_of(n)
    n._graph_replace({"b": 2})
    assert vars(n) == {"b": 2}
    assert version_of(n) == v0 + 1


def test_flax_bookkeeping_attribute_reports_the_version():
    class Box(nnx.Pytree):
        pass

    b = Box()
    v0 = b._pytree__state.version
    b.x = 1
    assert b._pytree__state.version == v0 + 1


# ------------------------------------------------- changes from another trace
class _Params(nnx.Pytree):
    def __init__(self):
        self.w = jnp.zeros((2, 3))
        self.count = nnx.data(0)


# misuse: an object made eagerly is changed inside a plain jax.jit
def test_setting_attribute_of_outer_object_inside_jit_is_refused():
    fnnx = pytest.importorskip("flax.nnx")
    import flax.errors

    class Theirs(fnnx.Pytree):
        def __init__(self):
            self.count = fnnx.data(0)

    ours, theirs = _Params(), Theirs()
    with pytest.raises(flax.errors.TraceContextError):
        jax.jit(lambda: setattr(theirs, "count", 1))()
    with pytest.raises(TraceContextError, match=r"'count'.*eager execution") as e:
        jax.jit(lambda: setattr(ours, "count", 1))()
    assert isinstance(e.value, flax.errors.TraceContextError)
    assert ours.count == 0 and "obj.count = ..." in str(e.value)


def test_objects_passed_in_or_rebuilt_by_ramie_may_be_changed_inside_transforms():
    @jax.jit
    def bump(p):
        p.count = p.count + 1
        p.extra = p.w * 2
        return p

    out = bump(_Params())
    assert int(out.count) == 1 and out.extra.shape == (2, 3)

    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    @nnx.jit
    def tag(m):
        m.note = 3  # a change inside ramie.jit is carried out
        return m(jnp.ones(2))

    tag(model)
    assert model.note == 3
