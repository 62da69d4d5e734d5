"""Tests for ``ramie/_src/core/tracked.py``: lists and dicts that report mutations."""

from __future__ import annotations

import collections
import pickle

import jax
import jax.numpy as jnp
import pytest

import ramie as nnx
from ramie._src.core.epoch import EPOCH
from ramie._src.core.tracked import TrackedDict, TrackedList, to_plain, track

LIST_MUTATIONS = {
    "setitem": lambda x: x.__setitem__(0, 9),
    "delitem": lambda x: x.__delitem__(0),
    "iadd": lambda x: x.__iadd__([7]),
    "imul": lambda x: x.__imul__(2),
    "append": lambda x: x.append(4),
    "extend": lambda x: x.extend([4, 5]),
    "insert": lambda x: x.insert(0, 4),
    "remove": lambda x: x.remove(2),
    "pop": lambda x: x.pop(),
    "clear": lambda x: x.clear(),
    "sort": lambda x: x.sort(reverse=True),
    "reverse": lambda x: x.reverse(),
}

DICT_MUTATIONS = {
    "setitem": lambda x: x.__setitem__("c", 3),
    "delitem": lambda x: x.__delitem__("a"),
    "ior": lambda x: x.__ior__({"z": 0}),
    "pop": lambda x: x.pop("a"),
    "popitem": lambda x: x.popitem(),
    "clear": lambda x: x.clear(),
    "update": lambda x: x.update(z=1),
    "setdefault": lambda x: x.setdefault("q", 0),
}


@pytest.mark.parametrize("name", sorted(LIST_MUTATIONS))
def test_list_mutations_bump_version_and_epoch(name):
    x = TrackedList([1, 2, 3])
    expected = [1, 2, 3]
    LIST_MUTATIONS[name](expected)
    e0 = EPOCH.value
    LIST_MUTATIONS[name](x)
    assert x._ramie_ver == 1 and EPOCH.value == e0 + 1
    assert x == expected  # behaves exactly like a list


@pytest.mark.parametrize("name", sorted(DICT_MUTATIONS))
def test_dict_mutations_bump_version_and_epoch(name):
    x = TrackedDict(a=1, b=2)
    expected = {"a": 1, "b": 2}
    DICT_MUTATIONS[name](expected)
    e0 = EPOCH.value
    DICT_MUTATIONS[name](x)
    assert x._ramie_ver == 1 and EPOCH.value == e0 + 1
    assert x == expected


def test_reads_do_not_bump():
    x, d = TrackedList([1, 2, 2]), TrackedDict(a=1)
    e0 = EPOCH.value
    assert x.count(2) == 2 and x.index(2) == 1 and x[0] == 1 and 2 in x
    assert d.get("a") == 1 and list(d.items()) == [("a", 1)]
    assert EPOCH.value == e0 and x._ramie_ver == 0 and d._ramie_ver == 0


def test_copy_returns_plain_builtin():
    assert type(TrackedList([1]).copy()) is list
    assert type(TrackedDict(a=1).copy()) is dict


@pytest.mark.parametrize("value", [TrackedList([1, [2]]), TrackedDict(a=1, b=[2])])
def test_pickle_keeps_type_and_contents(value):
    back = pickle.loads(pickle.dumps(value))
    assert type(back) is type(value) and back == value
    assert back._ramie_ver == 0


def test_tracked_list_pytree():
    x = TrackedList([jnp.ones(1), jnp.zeros(2)])
    leaves, treedef = jax.tree.flatten(x)
    assert len(leaves) == 2
    back = jax.tree.unflatten(treedef, leaves)
    assert type(back) is TrackedList
    keys = [p for p, _ in jax.tree_util.tree_flatten_with_path(x)[0]]
    assert keys == [(jax.tree_util.SequenceKey(0),), (jax.tree_util.SequenceKey(1),)]


def test_tracked_dict_pytree_sorted_keys():
    x = TrackedDict(b=jnp.ones(1), a=jnp.zeros(1))
    keys = [
        jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(x)[0]
    ]
    assert keys == ["['a']", "['b']"]
    back = jax.tree.map(lambda v: v + 1, x)
    assert type(back) is TrackedDict and float(back["a"][0]) == 1.0


def test_track_only_containers_with_data():
    p = nnx.Param(jnp.ones(1))
    assert type(track([p])) is TrackedList
    assert type(track({"a": p})) is TrackedDict
    assert type(track([1, 2])) is list
    assert type(track([jnp.ones(1)])) is TrackedList  # arrays are data
    nested = track({"a": [[p]]})
    assert type(nested) is TrackedDict and type(nested["a"]) is TrackedList
    assert type(nested["a"][0]) is TrackedList and nested["a"][0][0] is p


def test_track_tuples_and_namedtuples():
    Pair = collections.namedtuple("Pair", "x y")
    p = nnx.Param(jnp.ones(1))
    t = track(([p], 1))
    assert type(t) is tuple and type(t[0]) is TrackedList
    nt = track(Pair([p], 2))
    assert type(nt) is Pair and type(nt.x) is TrackedList and nt.y == 2
    same = (p, 1)
    assert track(same) is same  # nothing to replace


def test_track_is_idempotent_on_tracked_containers():
    x = track([nnx.Param(jnp.ones(1))])
    assert track(x) is x


def test_to_plain_round_trip():
    p = nnx.Param(jnp.ones(1))
    tracked = track({"a": [p, (p, 2)]})
    plain = to_plain(tracked)
    assert type(plain) is dict and type(plain["a"]) is list
    assert plain == {"a": [p, (p, 2)]}
    values = to_plain(
        tracked, leaf_fn=lambda v: v.value if isinstance(v, nnx.Variable) else v
    )
    assert isinstance(values["a"][0], jax.Array)


def test_mutating_module_list_is_seen_by_split():
    class M(nnx.Module):
        def __init__(self):
            self.layers = [nnx.Linear(1, 1, rngs=nnx.Rngs(0))]

    m = M()
    gd1 = nnx.graphdef(m)
    m.layers.append(nnx.Linear(1, 1, rngs=nnx.Rngs(1)))
    assert nnx.graphdef(m) != gd1
    assert sorted(nnx.state(m).layers) == [0, 1]
