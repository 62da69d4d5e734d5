"""Tests for ``ramie/_src/core/graph/flatten.py``: the flatten/unflatten
algorithms behind split and merge."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import ramie as nnx
from ramie._src.core.graph.defs import ARRAY_DEF, OBJ, REF, STC, VAR
from ramie._src.core.graph.flatten import (
    collect_leaves,
    container_unchanged,
    flatten,
    to_state,
    unflatten,
    unflatten_state,
)
from ramie._src.core.sentinels import MISSING
from ramie._src.core.tracked import TrackedList


class Node(nnx.Module):
    pass


def _graph():
    n = Node()
    n.w = nnx.Param(jnp.ones(1), tag="w")
    n.same = n.w  # shared Variable
    n.sub = Node()
    n.sub.back = n  # cycle
    n.arr = jnp.zeros(1)
    n.s = "x"
    return n


def test_flatten_depth_first_sorted_with_references():
    n = _graph()
    flat = flatten(n)
    tag, cls, idx, attrs = flat.graphdef.root
    assert (tag, cls, idx) == (OBJ, Node, 0)
    attrs = dict(attrs)
    assert list(attrs) == ["arr", "s", "same", "sub", "w"]
    assert attrs["arr"] == ARRAY_DEF and attrs["s"] == (STC, "x")
    assert attrs["same"] == (
        VAR,
        nnx.Param,
        1,
        (("tag", "w"),),
    )  # first visit in key order
    assert attrs["w"] == (REF, 1)
    assert attrs["sub"] == (OBJ, Node, 2, (("back", (REF, 0)),))
    assert flat.paths == [("arr",), ("same",)]
    assert flat.leaves[1] is n.w and flat.objects == [n, n.w, n.sub]
    assert flat.ref_index[id(n.sub)] == 2
    assert flat.graphdef.num_leaves == 2 and flat.graphdef.num_nodes == 3


def test_flatten_with_preseeded_index_refers_outward():
    n = _graph()
    outer = flatten(n)
    wrapper = Node()
    wrapper.inner = n.sub
    flat = flatten(
        wrapper, ref_index=dict(outer.ref_index), objects=list(outer.objects)
    )
    assert dict(flat.graphdef.root[3])["inner"] == (REF, 2)
    assert flat.leaves == []


def test_track_containers_and_container_unchanged():
    n = Node()
    n.tracked = [nnx.Param(jnp.ones(1))]
    n.plain = {"a": nnx.Param(jnp.ones(1))}
    object.__getattribute__(n, "__dict__")["plain"] = dict(n.plain)  # bypass tracking
    flat = flatten(n, track_containers=True)
    assert [type(t) for t in flat.tracked] == [TrackedList]
    ((container, snapshot),) = flat.containers
    assert container is n.plain and container_unchanged(container, snapshot)
    n.plain["b"] = nnx.Param(jnp.ones(1))
    assert not container_unchanged(container, snapshot)
    lst = [1, 2]
    snap = (id(lst[0]), id(lst[1]))
    assert container_unchanged(lst, snap)
    lst.append(3)
    assert not container_unchanged(lst, snap)


def test_unflatten_rebuilds_sharing_and_cycles():
    n = _graph()
    flat = flatten(n)
    index_ref = {}
    new = unflatten(flat.graphdef, flat.leaves, index_ref=index_ref)
    assert (
        new is not n and new.same is new.w is n.w
    )  # given Variables are used as they are
    assert new.sub.back is new and new.s == "x"
    assert index_ref[0] is new and index_ref[2] is new.sub


def test_unflatten_bare_values_become_variables():
    flat = flatten(_graph())
    new = unflatten(flat.graphdef, [jnp.ones(1), jnp.full(1, 5.0)])
    assert (
        type(new.w) is nnx.Param and new.w.tag == "w" and float(new.w.value[0]) == 5.0
    )
    made = []

    def make(defn, value):
        made.append(defn[1])
        return nnx.BatchStat(value)

    custom = unflatten(flat.graphdef, [jnp.ones(1), jnp.ones(1)], make_variable=make)
    assert made == [nnx.Param] and type(custom.w) is nnx.BatchStat


def test_unflatten_state_reports_missing_and_unexpected():
    n = _graph()
    flat = flatten(n)
    state = nnx.state(n)
    node, missing, unexpected = unflatten_state(flat.graphdef, state)
    assert (missing, unexpected) == ([], [])
    assert node.w is n.w
    copied, _, _ = unflatten_state(flat.graphdef, state, copy=True)
    assert copied.w is not n.w and copied.w is copied.same
    del state["same"]
    state["zz"] = {"deep": 1}
    _, missing, unexpected = unflatten_state(flat.graphdef, state)
    assert missing == [("same",)] and unexpected == [("zz", "deep")]


def test_unflatten_state_accepts_string_indices():
    m = nnx.List([nnx.Param(jnp.ones(1)), nnx.Param(jnp.ones(2))])
    flat = flatten(m)
    node, missing, unexpected = unflatten_state(
        flat.graphdef, {"0": jnp.zeros(1), "1": jnp.zeros(2)}
    )
    assert (missing, unexpected) == ([], [])
    assert type(node[1]) is nnx.Param and node[1].shape == (2,)


def test_collect_leaves():
    n = _graph()
    flat = flatten(n)
    leaves, missing, unexpected = collect_leaves(flat.graphdef, nnx.state(n))
    assert leaves == flat.leaves and missing == [] and unexpected == []
    leaves, missing, unexpected = collect_leaves(
        flat.graphdef, {"arr": 1, "extra": 2, "e2": {}}
    )
    assert (
        leaves == [1, MISSING] and missing == [("same",)] and unexpected == [("extra",)]
    )


def test_to_state_nests_depth_first_paths():
    paths = [("a", "x"), ("a", "y"), ("b",), ("c", 0, "k")]
    s = to_state(paths, [1, 2, 3, 4])
    assert s == {"a": {"x": 1, "y": 2}, "b": 3, "c": {0: {"k": 4}}}
    assert type(s.a) is nnx.State and type(s.c[0]) is nnx.State
    gs = to_state([("a", "b")], [1], cls=nnx.GraphState)
    assert type(gs.a) is nnx.GraphState and gs.graphdef is None


def test_merge_plan_is_cached_per_graphdef():
    n = _graph()
    graphdef, state = nnx.split(n)
    assert graphdef._plan is None
    nnx.merge(graphdef, state)
    plan = graphdef._plan
    assert plan
    nnx.merge(graphdef, state)
    assert graphdef._plan is plan


@pytest.mark.parametrize("root", ["list", "tuple", "dict"])
def test_container_roots(root):
    p = nnx.Param(jnp.ones(1))
    value = {"list": [p, p], "tuple": (p, 1), "dict": {"a": p, "b": 2}}[root]
    graphdef, state = nnx.split(value)
    new = nnx.merge(graphdef, state)
    if root == "list":
        assert new[0] is new[1] is p and _paths(state) == [(0,)]
    elif root == "tuple":
        assert new == (p, 1)
    else:
        assert new["a"] is p and new["b"] == 2


def test_variable_root_flattens_to_one_leaf():
    p = nnx.Param(jnp.ones(1), tag="t")
    flat = flatten(p)
    assert flat.graphdef.root == (VAR, nnx.Param, 0, (("tag", "t"),))
    assert flat.paths == [()] and flat.leaves == [p]
    assert unflatten(flat.graphdef, [p]) is p
    rebuilt = unflatten(flat.graphdef, [jnp.zeros(1)])
    assert type(rebuilt) is nnx.Param and rebuilt.tag == "t"


def _paths(state):
    return sorted(nnx.to_flat_state(state).paths)
