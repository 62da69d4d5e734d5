"""Laws of the graph API, checked on random graphs (see ``strategies.py``).

Each law compares ramie's result against an independent walk of the object
graph (``describe``), so sharing patterns (tied weights, cycles), values,
Variable types and metadata are all checked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import ramie as nnx
from properties.strategies import (
    describe,
    filter_lists,
    flat_items,
    leaf_sig,
    module_graphs,
    num_bare_arrays,
    objects_of,
    variables_of,
)
from ramie._src.core.filters import to_predicate


def _state_sig(state) -> list:
    return [(p, leaf_sig(v)) for p, v in flat_items(state)]


@given(graph=module_graphs())
def test_merge_inverts_split(graph):
    before = describe(graph)
    graphdef, state = nnx.split(graph)
    rebuilt = nnx.merge(graphdef, state)
    assert rebuilt is not graph
    assert describe(rebuilt) == before
    assert describe(graph) == before  # split did not change the graph


@given(graph=module_graphs())
def test_merge_with_copy_inverts_split_without_sharing_variables(graph):
    graphdef, state = nnx.split(graph)
    rebuilt = nnx.merge(graphdef, state, copy=True)
    assert describe(rebuilt) == describe(graph)
    ours = {id(v) for v in variables_of(graph)}
    assert not ours & {id(v) for v in variables_of(rebuilt)}


@given(graph=module_graphs(), filters=filter_lists())
def test_merge_inverts_filtered_split(graph, filters):
    graphdef, *states = nnx.split(graph, *filters, ...)
    assert len(states) == len(filters) + 1
    rebuilt = nnx.merge(graphdef, *reversed(states))  # order of States is free
    assert describe(rebuilt) == describe(graph)


@given(graph=module_graphs(), filters=filter_lists())
def test_split_partitions_variables_exactly_once(graph, filters):
    graphdef, *states = nnx.split(graph, *filters, ...)
    preds = [to_predicate(f) for f in filters]
    leaves = []
    for i, s in enumerate(states):
        for path, leaf in flat_items(s):
            leaves.append(leaf)
            if i < len(preds):  # first matching filter wins
                assert preds[i](path, leaf)
            assert not any(p(path, leaf) for p in preds[:i])
    variables = variables_of(graph)
    got = [id(v) for v in leaves if isinstance(v, nnx.Variable)]
    assert sorted(got) == sorted(id(v) for v in variables)  # each exactly once
    n_arrays = sum(1 for v in leaves if not isinstance(v, nnx.Variable))
    assert n_arrays == num_bare_arrays(graph)
    assert graphdef.num_leaves == len(leaves)


@given(graph=module_graphs())
def test_state_is_split_without_graphdef(graph):
    _, state = nnx.split(graph)
    assert _state_sig(nnx.state(graph)) == _state_sig(state)


def _layout(state) -> list:
    """Every entry of a nested State in insertion order: path, State class or
    the leaf's identity (so key order, nesting and sharing are all compared)."""
    out = []
    for k, v in state.items():
        if isinstance(v, dict):
            out.append(((k,), type(v)))
            out.extend(((k, *p), x) for p, x in _layout(v))
        else:
            out.append(((k,), id(v)))
    return out


@given(graph=module_graphs())
def test_unfiltered_split_and_state_build_the_same_state_as_filtered(graph):
    # Without filters split and state nest the leaves while walking the graph;
    # with filters they list paths first and nest them afterwards.
    graphdef, fast = nnx.split(graph)
    graphdef2, listed = nnx.split(graph, ...)
    assert graphdef == graphdef2
    assert type(fast) is nnx.State
    assert _layout(fast) == _layout(listed)
    assert _layout(nnx.state(graph)) == _layout(nnx.state(graph, ...))
    assert _layout(nnx.state(graph)) == _layout(listed)


@given(graph=module_graphs())
def test_update_with_own_state_changes_nothing(graph):
    before = describe(graph)
    ids = [id(v) for v in variables_of(graph)]
    nnx.update(graph, nnx.state(graph))
    assert describe(graph) == before
    assert [id(v) for v in variables_of(graph)] == ids


@given(graph=module_graphs(arrays=False))
def test_update_writes_values_in_place(graph):
    variables = variables_of(graph)
    ids = [id(v) for v in variables]
    expected = [np.asarray(v.value) + 1 for v in variables]
    new = jax.tree.map(lambda x: x + 1, nnx.state(graph))
    nnx.update(graph, new)
    assert [id(v) for v in variables_of(graph)] == ids  # same objects
    for v, e in zip(variables, expected):
        np.testing.assert_array_equal(np.asarray(v.value), e)


@given(graph=module_graphs())
def test_flat_state_round_trip(graph):
    state = nnx.state(graph)
    flat = nnx.to_flat_state(state)
    assert isinstance(flat, nnx.FlatState)
    assert list(flat.paths) == [p for p, _ in flat_items(state)]
    back = nnx.from_flat_state(flat)
    assert back == state
    assert type(back) is nnx.State
    assert all(type(v) is nnx.State for v in _sub_mappings(back))


def _sub_mappings(state):
    for v in state.values():
        if isinstance(v, dict):
            yield v
            yield from _sub_mappings(v)


@given(graph=module_graphs())
def test_pure_dict_round_trip(graph):
    state = nnx.state(graph)
    pure = nnx.to_pure_dict(state)
    assert not any(isinstance(v, nnx.Variable) for _, v in flat_items(pure))
    assert all(type(d) is dict for d in _sub_mappings(pure))
    bumped = jax.tree.map(lambda x: x + 1, pure)
    nnx.replace_by_pure_dict(state, bumped)
    expected = _pure_sig(bumped)
    assert _pure_sig(nnx.to_pure_dict(state)) == expected
    # Variables were written in place; bare arrays (no identity) only in the
    # State, so update() carries them into the graph.
    nnx.update(graph, state)
    assert _pure_sig(nnx.to_pure_dict(nnx.state(graph))) == expected


def _pure_sig(pure):
    return [
        (p, str(np.asarray(v).dtype), np.asarray(v).tolist())
        for p, v in flat_items(pure)
    ]


@given(graph=module_graphs())
def test_clone_is_deep_and_keeps_sharing(graph):
    copy = nnx.clone(graph)
    assert describe(copy) == describe(graph)
    assert not {id(v) for v in variables_of(graph)} & {
        id(v) for v in variables_of(copy)
    }
    assert not {id(o) for o in objects_of(graph)} & {id(o) for o in objects_of(copy)}


@given(graph=module_graphs())
def test_graphdef_of_merge_is_graphdef(graph):
    graphdef, state = nnx.split(graph)
    assert nnx.graphdef(graph) == graphdef
    rebuilt = nnx.merge(graphdef, state)
    assert nnx.graphdef(rebuilt) == graphdef
    assert hash(nnx.graphdef(rebuilt)) == hash(graphdef)


@given(graph=module_graphs())
def test_tree_map_identity_keeps_types_and_metadata(graph):
    state = nnx.state(graph)
    mapped = jax.tree.map(lambda x: x, state)
    assert type(mapped) is nnx.State
    assert _state_sig(mapped) == _state_sig(state)
    old = dict(flat_items(state))
    for path, leaf in flat_items(mapped):
        if isinstance(leaf, nnx.Variable):
            assert leaf is not old[path]  # new boxes, same contents


@given(graph=module_graphs())
def test_find_duplicates_matches_independent_walk(graph):
    # Every path that reaches an already-seen object or Variable is a duplicate.
    refs = sum(1 for entry in describe(graph) if entry[1] == "ref")
    groups = nnx.find_duplicates(graph)
    assert sum(len(g) - 1 for g in groups) == refs


@given(graph=module_graphs(share_prob=0.0, cycles=False))
def test_jax_tree_flatten_of_acyclic_unshared_module_round_trips(graph):
    leaves, treedef = jax.tree.flatten(graph)
    assert describe(jax.tree.unflatten(treedef, leaves)) == describe(graph)
    doubled = jax.tree.map(lambda x: x * 2, graph)
    for old, new in zip(variables_of(graph), variables_of(doubled)):
        assert type(new) is type(old)
        np.testing.assert_array_equal(np.asarray(new.value), np.asarray(old.value) * 2)


@settings(max_examples=10)
@given(graph=module_graphs(), scale=st.integers(2, 3))
def test_merge_inside_jit_rebuilds_values(graph, scale):
    graphdef, state = nnx.split(graph)

    @jax.jit
    def f(state):
        model = nnx.merge(graphdef, state)
        _, new_state = nnx.split(model)
        return jax.tree.map(lambda x: x * scale, new_state)

    out = f(state)
    assert [p for p, _ in flat_items(out)] == [p for p, _ in flat_items(state)]
    for (_, a), (_, b) in zip(flat_items(out), flat_items(state)):
        va = a.value if isinstance(a, nnx.Variable) else a
        vb = b.value if isinstance(b, nnx.Variable) else b
        np.testing.assert_array_equal(np.asarray(va), np.asarray(vb) * scale)
        assert type(a) is type(b)
    _ = jnp
