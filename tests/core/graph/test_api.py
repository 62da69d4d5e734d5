"""Tests for ``ramie/_src/core/graph/api.py``: split, merge, update, state,
graphdef, clone, pop, iteration, mapping, metadata and functional calls."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie as nnx
from ramie._src.core.variables import DEFAULT_METADATA
from ramie.errors import (
    FilterError,
    GraphStructureError,
    StateLoadError,
    TraceContextError,
)


class Counter(nnx.Variable):
    pass


class Block(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(2, 3, rngs=rngs)
        self.batchnorm = nnx.BatchNorm(3, rngs=rngs)
        self.count = Counter(jnp.array(0))

    def __call__(self, x):
        self.count += 1
        return self.batchnorm(self.linear(x))


class Model(nnx.Module):
    def __init__(self, rngs):
        self.block = Block(rngs)
        self.layers = [nnx.Linear(3, 3, rngs=rngs)]
        self.tied = self.layers[0]  # weight tying


class Node(nnx.Module):
    pass


def _model():
    return Model(nnx.Rngs(0))


def _paths(state):
    return sorted(nnx.to_flat_state(state).paths, key=str)


# -------------------------------------------------------------------- split
def test_split_returns_live_variables_and_shares_once():
    m = _model()
    graphdef, state = nnx.split(m)
    assert isinstance(graphdef, nnx.GraphDef)
    assert state.block.linear.kernel is m.block.linear.kernel
    assert "tied" not in state  # the shared module appears once
    assert graphdef.num_leaves == len(_paths(state)) == 9


def test_split_with_filters_seed_forms():
    m = _model()
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)
    assert sorted(params.keys()) == ["block", "layers"]
    assert _paths(rest) == [
        ("block", "batchnorm", "mean"),
        ("block", "batchnorm", "var"),
        ("block", "count"),
    ]
    out = nnx.split(m, nnx.Param, nnx.BatchStat, Counter)
    assert len(out) == 4
    assert _paths(out[3]) == [("block", "count")]
    _, everything = nnx.split(m, ...)
    assert len(_paths(everything)) == 9


def test_split_state_keys_match_flax():
    fnnx = pytest.importorskip("flax.nnx")

    class FCounter(fnnx.Variable):
        pass

    class FBlock(fnnx.Module):
        def __init__(self, rngs):
            self.linear = fnnx.Linear(2, 3, rngs=rngs)
            self.batchnorm = fnnx.BatchNorm(3, rngs=rngs)
            self.count = FCounter(jnp.array(0))

    ours = nnx.split(Block(nnx.Rngs(0)), nnx.Param, nnx.BatchStat, Counter)
    theirs = fnnx.split(FBlock(fnnx.Rngs(0)), fnnx.Param, fnnx.BatchStat, FCounter)
    for a, b in zip(ours[1:], theirs[1:]):
        assert _paths(a) == _paths(b)
        assert jax.tree.map(jnp.shape, nnx.to_pure_dict(a)) == jax.tree.map(
            jnp.shape, fnnx.to_pure_dict(b)
        )


# misuse: split filters that leave Variables unmatched
def test_split_unmatched_filters_names_paths():
    with pytest.raises(FilterError, match=r"block\.batchnorm\.mean \(BatchStat\)"):
        nnx.split(_model(), nnx.Param, Counter)


# ------------------------------------------------------------------- merge
def test_merge_reuses_state_variables_unless_copy():
    m = _model()
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)
    new = nnx.merge(graphdef, rest, params)  # any order
    assert new is not m and new.block.linear.kernel is m.block.linear.kernel
    assert new.tied is new.layers[0]
    copied = nnx.merge(graphdef, params, rest, copy=True)
    assert copied.block.linear.kernel is not m.block.linear.kernel
    np.testing.assert_array_equal(
        copied.block.linear.kernel.value, m.block.linear.kernel.value
    )
    assert copied.tied is copied.layers[0]


def test_merge_from_pure_dict_recreates_types_and_metadata():
    m = Node()
    m.w = nnx.Param(jnp.ones(2), tag="w", out_sharding=("a",))
    m.c = Counter(jnp.array(3))
    graphdef, state = nnx.split(m)
    new = nnx.merge(graphdef, nnx.to_pure_dict(state))
    assert type(new.w) is nnx.Param and new.w.get_metadata() == {
        "tag": "w",
        "out_sharding": ("a",),
        **DEFAULT_METADATA,
    }
    assert type(new.c) is Counter and int(new.c.value) == 3


def test_merge_inside_jax_jit_seed_pattern():
    m = _model()
    graphdef, state = nnx.split(m)

    @jax.jit
    def step(state, x):
        model = nnx.merge(graphdef, state)
        y = model.block(x)
        return y, nnx.split(model)[1]

    y, new_state = step(state, jnp.ones((4, 2)))
    assert y.shape == (4, 3)
    nnx.update(m, new_state)
    assert int(m.block.count.value) == 1


# misuse: merge with a State missing (only some States of a split passed)
def test_merge_missing_state_names_paths():
    graphdef, params, rest = nnx.split(_model(), nnx.Param, ...)
    with pytest.raises(
        GraphStructureError, match=r"\n\s+block\.batchnorm\.mean\n"
    ) as info:
        nnx.merge(graphdef, params)
    msg = str(info.value)
    assert "No value for 3 leaf(s):" in msg
    assert "    block.count\n" in msg and "    block.batchnorm.var\n" in msg
    assert "ramie.merge(graphdef, params, rest)" in msg


# misuse: merge with keys the GraphDef has no place for
def test_merge_extra_keys_names_paths():
    graphdef, state = nnx.split(_model())
    state["block"]["linear"]["scale"] = nnx.Param(jnp.ones(1))
    state["extra"] = {"deep": nnx.Param(jnp.ones(1))}
    with pytest.raises(
        GraphStructureError, match=r"2 value\(s\) the GraphDef has no place for"
    ) as info:
        nnx.merge(graphdef, state)
    assert "block.linear.scale" in str(info.value) and "extra.deep" in str(info.value)


def test_merge_argument_errors():
    graphdef, state = nnx.split(_model())
    with pytest.raises(TypeError, match="must be a GraphDef"):
        nnx.merge(state, graphdef)
    with pytest.raises(TypeError, match="state argument 1 must be a State"):
        nnx.merge(graphdef, [1, 2])


def test_merge_graph_state_from_unpack():
    m = _model()
    gs = nnx.unpack(m)
    assert type(gs) is nnx.GraphState and gs.graphdef == nnx.graphdef(m)
    new = nnx.merge(gs)
    assert new.tied is new.layers[0]
    p, rest = nnx.unpack(m, nnx.Param, ...)
    assert p.graphdef is rest.graphdef
    assert nnx.merge(p, rest).block.count is m.block.count


def test_merge_with_no_states_for_leafless_graph():
    n = Node()
    n.name = "x"
    graphdef, state = nnx.split(n)
    assert state == {}
    assert nnx.merge(graphdef).name == "x"


# ------------------------------------------------------------------ update
def test_update_writes_in_place_and_accepts_partial_states():
    m = _model()
    kernel = m.block.linear.kernel
    params = jax.tree.map(jnp.zeros_like, nnx.state(m, nnx.Param))
    nnx.update(m, params)
    assert m.block.linear.kernel is kernel
    assert float(jnp.abs(kernel.value).sum()) == 0.0
    nnx.update(m, {"block": {"count": jnp.array(7)}})  # a pure dict, one path
    assert type(m.block.count) is Counter and int(m.block.count.value) == 7
    nnx.update(m, {"layers": {"0": {"bias": jnp.ones(3)}}})  # string index
    np.testing.assert_array_equal(m.tied.bias.value, np.ones(3))


def test_update_with_several_states_and_graph_state():
    m = _model()
    a = {"block": {"count": jnp.array(1)}}
    b = {"block": {"count": jnp.array(2)}}
    nnx.update(m, a, b)  # later wins
    assert int(m.block.count.value) == 2
    gs = nnx.unpack(m)
    gs["block"]["count"] = Counter(jnp.array(5), tag="c")
    nnx.update(m, gs)
    assert int(m.block.count.value) == 5 and m.block.count.tag == "c"  # metadata too


# misuse: update with a path the model does not have
def test_update_unknown_path_names_it_and_changes_nothing():
    m = _model()
    before = np.asarray(m.block.linear.kernel.value)
    bad = {
        "block": {"linear": {"kernel": jnp.zeros((2, 3)), "scale": jnp.ones(3)}},
        "head": {"w": jnp.ones(1)},
    }
    with pytest.raises(
        StateLoadError, match=r"Unexpected \(2\).*\n\s+block\.linear\.scale\n\s+head\.w"
    ) as info:
        nnx.update(m, bad)
    assert info.value.unexpected == [("block", "linear", "scale"), ("head", "w")]
    np.testing.assert_array_equal(m.block.linear.kernel.value, before)  # atomic


# misuse: update that goes into a Variable or a static attribute
def test_update_into_leaf_or_static_is_unexpected():
    m = _model()
    with pytest.raises(StateLoadError, match=r"block\.count\.inner"):
        nnx.update(m, {"block": {"count": {"inner": 1}}})
    with pytest.raises(StateLoadError, match=r"block\.linear\.in_features"):
        nnx.update(m, {"block": {"linear": {"in_features": 3}}})
    with pytest.raises(TypeError, match="expected a State"):
        nnx.update(m, [1])


# misuse: update of an outer model's Variables inside jax.jit
def test_update_inside_jit_names_path():
    m = _model()
    state = nnx.state(m)

    @jax.jit
    def f(state):
        nnx.update(m, state)
        return 0

    with pytest.raises(TraceContextError, match=r"at block\.batchnorm\.bias"):
        f(state)


# misuse: update of a bare array stored in an immutable tuple
def test_update_array_in_tuple_names_path():
    n = Node()
    n.pair = (jnp.ones(1), nnx.Param(jnp.ones(1)))
    with pytest.raises(
        GraphStructureError, match=r"array at pair\[0\] is stored in an immutable tuple"
    ):
        nnx.update(n, {"pair": {0: jnp.zeros(1)}})
    nnx.update(n, {"pair": {1: jnp.zeros(1)}})  # the Variable inside is fine
    assert float(n.pair[1].value[0]) == 0.0


def test_update_bare_arrays_in_attributes_lists_and_dicts():
    n = Node()
    n.a = jnp.ones(1)
    n.items = [jnp.ones(1), nnx.Param(jnp.ones(1))]
    n.table = {"x": jnp.ones(1), "p": nnx.Param(jnp.ones(1))}
    nnx.update(n, jax.tree.map(lambda x: x * 0, nnx.state(n)))
    assert (
        float(n.a[0]) == 0.0
        and float(n.items[0][0]) == 0.0
        and float(n.table["x"][0]) == 0.0
    )


@pytest.mark.parametrize("container", ["list", "dict"])
def test_update_bare_arrays_in_ramie_containers(container):
    if container == "list":
        c, key = nnx.List([jnp.ones(1)]), 0
    else:
        c, key = nnx.Dict(x=jnp.ones(1)), "x"
    nnx.update(c, {key: jnp.zeros(1)})
    assert float(c[key][0]) == 0.0
    assert key not in vars(c)


def test_update_bare_arrays_in_ramie_containers_matches_flax():
    fnnx = pytest.importorskip("flax.nnx")
    c = fnnx.List([jnp.ones(1)])
    fnnx.update(c, jax.tree.map(lambda x: x * 0, fnnx.state(c)))
    assert float(c[0][0]) == 0.0  # what ramie should do too


# ------------------------------------------------------------------- state
def test_state_filters_are_not_exhaustive():
    m = _model()
    assert _paths(nnx.state(m, Counter)) == [("block", "count")]
    params, counts = nnx.state(m, nnx.Param, Counter)
    assert len(_paths(params)) == 6 and len(_paths(counts)) == 1
    assert nnx.variables is nnx.state


def test_state_gives_each_variable_to_the_first_filter_it_matches():
    fnnx = pytest.importorskip("flax.nnx")
    m = nnx.LoRA(
        3, 2, 4, base_module=nnx.Linear(3, 4, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1)
    )
    params, lora, rest = nnx.state(m, nnx.Param, nnx.LoRAParam, ...)
    assert len(_paths(params)) == 4  # LoRAParam is a Param: taken by the first filter
    assert _paths(lora) == [] and _paths(rest) == []
    lora, params = nnx.state(m, nnx.LoRAParam, nnx.Param)
    assert len(_paths(lora)) == 2 and len(_paths(params)) == 2
    theirs = fnnx.LoRA(
        3, 2, 4, base_module=fnnx.Linear(3, 4, rngs=fnnx.Rngs(0)), rngs=fnnx.Rngs(1)
    )
    t_lora, t_params = fnnx.state(theirs, fnnx.LoRAParam, fnnx.Param)
    assert sorted(_paths(lora)) == sorted(p for p, _ in fnnx.to_flat_state(t_lora))
    assert sorted(_paths(params)) == sorted(p for p, _ in fnnx.to_flat_state(t_params))


# ---------------------------------------------------------------- graphdef
def test_graphdef_equality_and_hash():
    a, b = nnx.graphdef(_model()), nnx.graphdef(Model(nnx.Rngs(1)))
    assert a == b and hash(a) == hash(b)
    m = _model()
    m.block.linear.use_bias = False  # a static attribute is structure
    assert nnx.graphdef(m) != a
    m2 = _model()
    m2.extra = nnx.Param(jnp.ones(1))
    assert nnx.graphdef(m2) != a


# ------------------------------------------------------------------- clone
def test_clone_is_deep_and_keeps_sharing():
    m = _model()
    c = nnx.clone(m)
    assert c.block.linear.kernel is not m.block.linear.kernel
    assert c.tied is c.layers[0] and c.tied is not m.tied
    c.block.count.value = jnp.array(9)
    assert int(m.block.count.value) == 0
    np.testing.assert_array_equal(
        c.block.linear.kernel.value, m.block.linear.kernel.value
    )


def test_clone_variables_false_and_arrays_true():
    m = _model()
    shallow = nnx.clone(m, variables=False)
    assert shallow is not m and shallow.block.linear.kernel is m.block.linear.kernel
    deep = nnx.clone(m, arrays=True)
    assert deep.block.linear.kernel.value is not m.block.linear.kernel.value
    np.testing.assert_array_equal(
        deep.block.linear.kernel.value, m.block.linear.kernel.value
    )


# --------------------------------------------------------------------- pop
def test_pop_removes_and_returns():
    class S(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones(1))
            self.table = {"h": nnx.Intermediate(jnp.ones(1))}

        def __call__(self, x):
            self.sow(nnx.Intermediate, "y", x)
            return x

    class Outer(nnx.Module):
        def __init__(self):
            self.s = S()
            self.cache = nnx.Cache(jnp.zeros(1))

    o = Outer()
    o.s(jnp.ones(1))
    inter, cache = nnx.pop(o, nnx.Intermediate, nnx.Cache)
    assert _paths(inter) == [("s", "table", "h"), ("s", "y")]
    assert _paths(cache) == [("cache",)]
    assert not hasattr(o.s, "y") and "h" not in o.s.table and not hasattr(o, "cache")
    assert _paths(nnx.state(o)) == [("s", "w")]
    with pytest.raises(ValueError, match="at least one filter"):
        nnx.pop(o)


def test_pop_shared_variable_removes_every_reference():
    n = Node()
    v = nnx.Intermediate(jnp.ones(1))
    n.a = v
    n.b = v
    popped = nnx.pop(n, nnx.Intermediate)
    assert _paths(popped) == [("a",)]
    assert not hasattr(n, "a") and not hasattr(n, "b")


def test_pop_several_items_of_ramie_list():
    lst = nnx.List(
        [
            nnx.Intermediate(jnp.zeros(1)),
            nnx.Param(jnp.ones(1)),
            nnx.Intermediate(jnp.full(1, 2.0)),
            nnx.Param(jnp.full(1, 3.0)),
        ]
    )
    popped = nnx.pop(lst, nnx.Intermediate)
    assert sorted(popped) == [0, 2]
    assert [type(v) for v in lst] == [nnx.Param, nnx.Param]
    assert [float(v.value[0]) for v in lst] == [1.0, 3.0]


# misuse: pop of a Variable stored in a list
def test_pop_from_list_names_path():
    n = Node()
    n.vs = [nnx.Param(jnp.ones(1)), nnx.Intermediate(jnp.ones(1))]
    with pytest.raises(
        GraphStructureError, match=r"Variable at vs\[1\] is an item of a TrackedList"
    ):
        nnx.pop(n, nnx.Intermediate)


def test_pop_failure_changes_nothing():
    n = Node()
    n.a = nnx.Intermediate(jnp.ones(1))
    n.vs = [nnx.Intermediate(jnp.ones(1))]
    with pytest.raises(GraphStructureError):
        nnx.pop(n, nnx.Intermediate)
    assert hasattr(n, "a")


# --------------------------------------------------------------- iteration
def test_iter_graph_children_first_root_last_shared_once():
    m = _model()
    items = list(nnx.iter_graph(m))
    paths = [p for p, _ in items]
    assert paths[-1] == () and items[-1][1] is m
    assert paths.index(("block", "linear", "kernel")) < paths.index(("block", "linear"))
    assert ("tied",) not in paths  # the shared module is yielded at its first path
    assert ("block", "linear", "in_features") in paths  # static values too
    ids = [id(v) for _, v in items if isinstance(v, (nnx.Variable, nnx.Module))]
    assert len(ids) == len(set(ids))


def test_iter_children_and_module_children():
    m = _model()
    assert [k for k, _ in nnx.iter_children(m.block)] == [
        "batchnorm",
        "count",
        "linear",
    ]
    assert [k for k, _ in nnx.iter_module_children(m.block)] == ["batchnorm", "linear"]
    assert [p for p, _ in nnx.iter_modules(m)][-1] == ()


def test_find_duplicates():
    m = _model()
    m.block.alias = m.block.count
    dups = nnx.find_duplicates(m)
    assert [("block", "alias"), ("block", "count")] in dups
    assert [("layers", 0), ("tied",)] in dups
    assert nnx.find_duplicates(m, only=nnx.Variable) == [
        [("block", "alias"), ("block", "count")]
    ]
    assert nnx.find_duplicates(nnx.Linear(1, 1, rngs=nnx.Rngs(0))) == []


# ---------------------------------------------------------- map functions
def test_map_wraps_results_and_keeps_sharing():
    m = _model()
    doubled = nnx.map(lambda path, v: v.value * 2, m)
    assert type(doubled.block.count) is Counter and doubled.tied is doubled.layers[0]
    np.testing.assert_array_equal(
        doubled.layers[0].kernel.value, m.layers[0].kernel.value * 2
    )
    assert doubled.block.linear.kernel is not m.block.linear.kernel
    same = nnx.map(lambda path, v: v, m)
    assert same.block.count is m.block.count  # returning the Variable keeps it


def test_recursive_map_rebuilds_bottom_up():
    m = _model()
    seen = []

    def f(path, value):
        seen.append(path)
        if isinstance(value, nnx.Param):
            return value.replace(value.value * 0)
        return value

    new = nnx.recursive_map(f, m)
    assert new is not m and new.tied is new.layers[0]
    assert float(jnp.abs(new.block.linear.kernel.value).sum()) == 0.0
    assert float(jnp.abs(m.block.linear.kernel.value).sum()) > 0.0
    assert seen[-1] == () and seen.index(("block", "linear")) > seen.index(
        ("block", "linear", "kernel")
    )


def test_set_metadata():
    m = _model()
    nnx.set_metadata(m, only=nnx.Param, out_sharding=None, tag="p")
    assert m.block.linear.kernel.tag == "p" and not m.block.count.has_metadata("tag")
    nnx.set_metadata(m, tag="all")
    assert m.block.count.tag == "all"


# ---------------------------------------------------------- functional calls
def test_graphdef_apply_and_call():
    m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(m)
    x = jnp.ones((1, 2))
    y, (g2, s2) = graphdef.apply(state)(x)
    np.testing.assert_allclose(y, m(x))
    assert g2 == graphdef and sorted(s2) == ["bias", "kernel"]
    y2, _ = nnx.call((graphdef, state))(x)
    np.testing.assert_allclose(y2, y)


def test_apply_methods_and_state_updates():
    m = _model()
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)
    apply = jax.jit(lambda p, r, x: graphdef.apply(p, r).block(x))
    y, (g2, new_state) = apply(params, rest, jnp.ones((4, 2)))
    assert y.shape == (4, 3) and g2 == graphdef
    assert int(new_state.block.count.value) == 1
    assert int(m.block.count.value) == 0  # pure under jit
    out, _ = nnx.call((graphdef, params, rest)).block.linear(jnp.ones((1, 2)))
    assert out.shape == (1, 3)


def test_flatten_and_unflatten_public():
    m = _model()
    graphdef, flat = nnx.flatten(m)
    assert type(flat) is nnx.FlatState and len(flat) == graphdef.num_leaves
    back = nnx.unflatten(graphdef, flat)
    assert back.tied is back.layers[0]
    assert nnx.unflatten(graphdef, flat.leaves).block.count is m.block.count
    assert nnx.unflatten(graphdef, nnx.state(m)).block.count is m.block.count
    with pytest.raises(GraphStructureError, match="expects 9 leaves, got 8"):
        nnx.unflatten(graphdef, flat.leaves[:-1])


class _Layers(nnx.Module):
    def __init__(self, n: int = 3):
        rngs = nnx.Rngs(0)
        self.layers = nnx.List([nnx.Linear(2, 2, rngs=rngs) for _ in range(n)])


# merge builds a few sub-layers one by one and many (>= 8) at once: test both
N_LAYERS = pytest.mark.parametrize("n", [3, 12])


@N_LAYERS
def test_merge_links_unlinked_variables_so_errors_name_paths(n):
    from ramie._src.core.links import path_of

    graphdef, state = nnx.split(_Layers(n))
    mapped = jax.tree.map(lambda x: x * 2, state)  # fresh, unattached Variables
    assert path_of(mapped["layers"][1]["kernel"]) is None
    model = nnx.merge(graphdef, mapped)
    assert path_of(model.layers[1].kernel) == ("layers", 1, "kernel")
    np.testing.assert_allclose(
        model.layers[1].kernel.value, state["layers"][1]["kernel"].value * 2
    )


@N_LAYERS
def test_merge_layer_states_with_raw_arrays_or_other_variable_types(n):
    graphdef, state = nnx.split(_Layers(n))
    pure = state.to_pure_dict()
    model = nnx.merge(graphdef, pure)  # raw arrays become the graphdef's Params
    assert type(model.layers[0].kernel) is nnx.Param
    mixed = nnx.State(state)
    mixed["layers"][2]["bias"] = nnx.BatchStat(state["layers"][2]["bias"].value)
    model = nnx.merge(graphdef, mixed)  # a Variable in the State is used as is
    assert model.layers[2].bias is mixed["layers"][2]["bias"]
    assert type(model.layers[1].bias) is nnx.Param


@N_LAYERS
def test_merge_layer_state_with_a_missing_or_extra_key_is_an_error(n):
    graphdef, state = nnx.split(_Layers(n))
    missing = state.to_pure_dict()
    del missing["layers"][1]["bias"]
    with pytest.raises(GraphStructureError, match=r"layers\.1\.bias|layers\[1\]\.bias"):
        nnx.merge(graphdef, missing)
    extra = state.to_pure_dict()
    extra["layers"][0]["scale"] = np.ones(2)
    with pytest.raises(GraphStructureError, match="scale"):
        nnx.merge(graphdef, extra)


@N_LAYERS
def test_merge_fixes_up_only_the_layer_whose_state_does_not_fit(n):
    from ramie._src.core.links import path_of

    graphdef, state = nnx.split(_Layers(n))
    state["layers"][1]["kernel"] = nnx.Param(state["layers"][1]["kernel"].value + 1)
    state["layers"][2]["bias"] = np.full((2,), 7.0, np.float32)  # a raw array
    model = nnx.merge(graphdef, state)
    assert type(model.layers[2].bias) is nnx.Param
    np.testing.assert_array_equal(model.layers[2].bias.value, np.full((2,), 7.0))
    assert model.layers[0].kernel is state["layers"][0]["kernel"]
    assert path_of(model.layers[1].kernel) == ("layers", 1, "kernel")
    assert path_of(model.layers[2].bias) == ("layers", 2, "bias")
    assert model.layers[2] in list(model.layers)
    out = model.layers[2](np.ones((1, 2), np.float32))
    assert out.shape == (1, 2)


def test_merge_of_many_layers_uses_state_variables_and_links_paths():
    from ramie._src.core.links import path_of

    graphdef, state = nnx.split(_Layers(12))
    model = nnx.merge(graphdef, state)
    for i in range(12):
        layer = model.layers[i]
        assert type(layer) is nnx.Linear and layer.in_features == 2
        assert layer.kernel is state["layers"][i]["kernel"]
        assert path_of(layer) == ("layers", i)
    assert model.layers[0] is not model.layers[1]
    assert model.layers[0].__dict__ is not model.layers[1].__dict__
    y = model.layers[11](np.ones((1, 2), np.float32))
    assert y.shape == (1, 2)
    # a second merge builds new layer objects around the same Variables
    again = nnx.merge(graphdef, state)
    assert again.layers[5] is not model.layers[5]
    assert again.layers[5].kernel is model.layers[5].kernel


@N_LAYERS
def test_merge_layers_from_a_state_with_string_list_keys(n):
    graphdef, state = nnx.split(_Layers(n))
    pure = state.to_pure_dict()
    pure["layers"] = {str(k): v for k, v in pure["layers"].items()}  # as from JSON
    model = nnx.merge(graphdef, pure)
    np.testing.assert_array_equal(
        model.layers[n - 1].kernel.value, state["layers"][n - 1]["kernel"].value
    )


@N_LAYERS
def test_merge_keeps_a_layer_tied_among_many(n):
    m = _Layers(n)
    m.layers.append(m.layers[0])  # the same layer twice
    graphdef, state = nnx.split(m)
    model = nnx.merge(graphdef, state)
    assert model.layers[n] is model.layers[0]
    assert model.layers[0].kernel is state["layers"][0]["kernel"]
    copied = nnx.merge(graphdef, state, copy=True)
    assert copied.layers[n] is copied.layers[0]
    assert copied.layers[1].kernel is not state["layers"][1]["kernel"]


def test_split_merge_and_state_of_a_bare_variable():
    # As in Flax: the State of a lone Variable is the Variable itself.
    param = nnx.Param(jnp.arange(3.0))
    graphdef, state = nnx.split(param)
    assert state is param
    assert nnx.merge(graphdef, state) is param
    assert nnx.state(param) is param
    copied = nnx.merge(graphdef, state, copy=True)
    assert type(copied) is nnx.Param and copied is not param
    np.testing.assert_array_equal(copied.value, param.value)
    with pytest.raises(TypeError, match="must be a State or mapping"):
        nnx.merge(nnx.graphdef(_Layers()), param)


@N_LAYERS
def test_update_layers_in_a_list_by_int_or_string_keys(n):
    m = _Layers(n)
    kernels = [layer.kernel for layer in m.layers]
    new = jax.tree.map(lambda x: x + 1, nnx.state(m))  # new Variable objects
    nnx.update(m, new)
    for i in range(n):
        assert m.layers[i].kernel is kernels[i]  # written in place
        np.testing.assert_array_equal(
            m.layers[i].kernel.value, new["layers"][i]["kernel"].value
        )
    pure = nnx.state(m).to_pure_dict()
    pure["layers"] = {str(k): v for k, v in pure["layers"].items()}
    pure["layers"][str(n - 1)]["bias"] = np.full((2,), 5.0, np.float32)
    nnx.update(m, pure)
    np.testing.assert_array_equal(m.layers[n - 1].bias.value, np.full((2,), 5.0))
    before = np.asarray(m.layers[0].bias.value)
    bad = nnx.state(m).to_pure_dict()
    bad["layers"][0]["bias"] = np.zeros((2,), np.float32)
    bad["layers"][n] = {"kernel": np.zeros((2, 2), np.float32)}
    with pytest.raises(StateLoadError, match=rf"layers\.{n}\.kernel|layers\[{n}\]"):
        nnx.update(m, bad)
    np.testing.assert_array_equal(m.layers[0].bias.value, before)  # nothing written


def test_update_copies_metadata_and_mixes_variables_with_arrays():
    from ramie._src.core.epoch import EPOCH

    m = _Layers(3)
    new = jax.tree.map(lambda x: x + 1, nnx.state(m))
    new["layers"][1]["kernel"].set_metadata("tag", "x")  # as Flax: metadata travels
    meta_epoch = EPOCH.meta
    nnx.update(m, new)
    assert m.layers[1].kernel.get_metadata()["tag"] == "x"
    assert "tag" not in m.layers[0].kernel.get_metadata()
    assert EPOCH.meta > meta_epoch  # cached jit entries re-check their structure
    np.testing.assert_array_equal(
        m.layers[2].bias.value, new["layers"][2]["bias"].value
    )
    mixed = nnx.State(nnx.state(m))
    mixed["layers"][0]["bias"] = np.full((2,), 3.0, np.float32)  # a raw array
    mixed["layers"][2]["bias"] = nnx.Param(np.full((2,), 4.0, np.float32))
    nnx.update(m, mixed)
    np.testing.assert_array_equal(m.layers[0].bias.value, np.full((2,), 3.0))
    np.testing.assert_array_equal(m.layers[2].bias.value, np.full((2,), 4.0))
    assert isinstance(m.layers[0].bias, nnx.Param)


# ----------------------------------------------------- the loading policy
def _snapshot(model):
    return jax.tree.map(lambda x: np.array(x), nnx.to_pure_dict(nnx.state(model)))


def _assert_same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert jax.tree.map(lambda x: x.dtype, a) == jax.tree.map(lambda x: x.dtype, b)


# misuse: update with a State of another architecture
def test_update_with_another_shape_is_an_error_and_changes_nothing():
    model = nnx.Linear(4, 8, rngs=nnx.Rngs(0))
    other = nnx.state(nnx.Linear(4, 16, rngs=nnx.Rngs(1)))
    before = _snapshot(model)
    with pytest.raises(StateLoadError) as e:
        nnx.update(model, other)
    msg = str(e.value)
    assert "kernel: shape (4, 8) vs (4, 16)" in msg
    assert "bias: shape (8,) vs (16,)" in msg
    assert "docs/guides/state_safety.md#loading-policy" in msg
    assert sorted(p for p, _, _ in e.value.mismatched) == [("bias",), ("kernel",)]
    _assert_same(_snapshot(model), before)
    assert model.kernel.value.shape == (4, 8)


def test_update_canonicalises_numpy_float64():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    w = np.random.default_rng(0).standard_normal((3, 2))  # float64
    nnx.update(model, {"kernel": w, "bias": [0.5, 1]})
    assert isinstance(model.kernel.value, jax.Array)
    assert model.kernel.value.dtype == jnp.float32
    assert model.bias.value.dtype == jnp.float32
    np.testing.assert_allclose(model.kernel.value, w.astype(np.float32))
    np.testing.assert_array_equal(model.bias.value, [0.5, 1.0])


def test_update_dtype_needs_lossless_cast_or_allow_cast():
    model = Model(nnx.Rngs(0))
    before = _snapshot(model)
    bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(model, nnx.Param))
    with pytest.raises(StateLoadError) as e:
        nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.int32), bf16))
    assert "block.linear.kernel: dtype float32 vs int32" in str(e.value)
    assert "ramie.update(..., allow_cast=True)" in str(e.value)
    _assert_same(_snapshot(model), before)
    nnx.update(model, bf16)  # bfloat16 -> float32 is lossless
    assert model.block.linear.kernel.value.dtype == jnp.float32
    np.testing.assert_array_equal(
        model.block.linear.kernel.value, bf16["block"]["linear"]["kernel"].value
    )
    as_int = jax.tree.map(lambda x: jnp.ones(x.shape, jnp.int32), bf16)
    nnx.update(model, as_int, allow_cast=True)
    assert model.block.linear.kernel.value.dtype == jnp.float32
    assert float(model.block.linear.kernel.value.sum()) == 6.0


def test_update_reports_unexpected_and_mismatched_together():
    model = Model(nnx.Rngs(0))
    before = _snapshot(model)
    bad = nnx.to_pure_dict(nnx.state(model))
    bad["block"]["linear"]["kernel"] = jnp.zeros((2, 5))
    bad["block"]["extra"] = jnp.zeros(2)
    with pytest.raises(StateLoadError) as e:
        nnx.update(model, bad)
    assert e.value.unexpected == [("block", "extra")]
    assert [m[0] for m in e.value.mismatched] == [("block", "linear", "kernel")]
    _assert_same(_snapshot(model), before)


def test_update_of_bare_array_attribute_is_checked():
    class Holder(nnx.Module):
        def __init__(self):
            self.arr = jnp.zeros(3)

    h = Holder()
    with pytest.raises(StateLoadError, match=r"arr: shape \(3,\) vs \(4,\)"):
        nnx.update(h, {"arr": jnp.ones(4)})
    np.testing.assert_array_equal(h.arr, np.zeros(3))
    nnx.update(h, {"arr": np.ones(3)})
    assert h.arr.dtype == jnp.float32 and float(h.arr.sum()) == 3.0


def test_update_of_python_valued_variable_accepts_anything():
    class Holder(nnx.Module):
        def __init__(self):
            self.step = nnx.Variable(0)

    h = Holder()
    nnx.update(h, {"step": 5})
    assert h.step.value == 5


def test_merge_canonicalises_float64_numpy_leaves():
    model = Model(nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    pure = jax.tree.map(
        lambda x: np.asarray(x, np.float64 if x.dtype.kind == "f" else np.int64),
        nnx.to_pure_dict(state),
    )
    rebuilt = nnx.merge(graphdef, pure)
    kernel = rebuilt.block.linear.kernel.value
    assert isinstance(kernel, jax.Array) and kernel.dtype == jnp.float32
    np.testing.assert_array_equal(kernel, model.block.linear.kernel.value)
    assert rebuilt.block.count.value.dtype == jnp.int32


# ------------------------------------------------------- merge argument errors
def test_merge_without_state_is_a_type_error_naming_the_argument():
    graphdef, _ = nnx.split(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(TypeError, match=r"merge\(\) missing 1 required .* 'state'"):
        nnx.merge(graphdef)
    empty_def, _ = nnx.split(nnx.Dict())  # nothing to fill: fine
    assert isinstance(nnx.merge(empty_def), nnx.Dict)


def test_merge_of_graph_states_checks_type_and_graphdef():
    m1 = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    m2 = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    with pytest.raises(GraphStructureError, match="GraphDef must be the same"):
        nnx.merge(nnx.unpack(m1), nnx.unpack(m2))
    with pytest.raises(GraphStructureError, match="Expected GraphState object"):
        nnx.merge(nnx.unpack(m1), nnx.state(m1))
    merged = nnx.merge(*nnx.unpack(m1, nnx.Param, ...))
    np.testing.assert_array_equal(merged.kernel.value, m1.kernel.value)


@pytest.mark.parametrize("leaf", [42, "name", jnp.ones(3)])
def test_split_of_a_bare_leaf_keeps_it_as_the_state(leaf):
    graphdef, state = nnx.split(leaf)
    assert state is leaf  # nothing lost (the array used to vanish)
    assert nnx.merge(graphdef, state) is leaf


def test_call_reaches_into_containers_by_key():
    class Counter(nnx.Module):
        def __init__(self):
            self.count = nnx.BatchStat(jnp.array(0))

        def increment(self):
            self.count.value += 1
            return self.count.value

    nodes = {"a": Counter(), "b": Counter()}
    out, (graphdef, state) = nnx.call(nnx.split(nodes))["b"].increment()
    assert int(out) == 1
    new = nnx.merge(graphdef, state)
    assert int(new["a"].count.value) == 0 and int(new["b"].count.value) == 1


# ------------------------------------------- plain dict entries and numbers
def _dict_graph(lib):
    return {"a": {"b": 1, "c": lib.Param(jnp.array(2)), "d": 3}}


def test_update_replaces_python_values_in_plain_dicts_as_flax():
    fnnx = pytest.importorskip("flax.nnx")
    ours, theirs = _dict_graph(nnx), _dict_graph(fnnx)
    values = {"a": {"b": 4, "c": jnp.array(10)}}
    nnx.update(ours, values)
    fnnx.update(theirs, values)
    assert ours["a"]["b"] == theirs["a"]["b"] == 4
    assert ours["a"]["d"] == theirs["a"]["d"] == 3
    assert int(ours["a"]["c"].value) == int(theirs["a"]["c"][...]) == 10


# misuse: a key the dict does not have is still refused, and nothing changes
def test_update_plain_dict_unknown_key_changes_nothing():
    node = _dict_graph(nnx)
    with pytest.raises(StateLoadError, match=r"a\.e"):
        nnx.update(node, {"a": {"b": 4, "e": 5}})
    assert node["a"]["b"] == 1 and "e" not in node["a"]


def test_pop_takes_bare_arrays_matched_by_filters_as_flax():
    fnnx = pytest.importorskip("flax.nnx")

    def make(lib):
        return {
            "a": {
                "b": jnp.array(1),
                "c": lib.Param(jnp.array(2)),
                "d": 3.0 + jnp.zeros(()),
            }
        }

    below_two = lambda _, x: x < 2  # noqa: E731
    ours, theirs = make(nnx), make(fnnx)
    got = nnx.pop(ours, (nnx.Param, below_two))
    want = fnnx.pop(theirs, (fnnx.Param, below_two))
    assert sorted(got["a"]) == sorted(want["a"]) == ["b", "c"]
    assert sorted(ours["a"]) == sorted(theirs["a"]) == ["d"]
    assert len(jax.tree.leaves(ours)) == len(jax.tree.leaves(theirs)) == 1


def test_pop_bare_array_attribute_of_module():
    class M(nnx.Module):
        def __init__(self):
            self.w = jnp.ones(2)
            self.p = nnx.Param(jnp.zeros(2))

    m = M()
    popped = nnx.pop(m, "w")
    np.testing.assert_array_equal(popped["w"], jnp.ones(2))
    assert not hasattr(m, "w") and isinstance(m.p, nnx.Param)


class _Marked(nnx.Pytree):
    def __init__(self, n, tag):
        self.n = nnx.data(n)
        self.tag = nnx.static(tag)


def test_number_marked_data_is_a_state_leaf_as_flax():
    fnnx = pytest.importorskip("flax.nnx")

    class Theirs(fnnx.Pytree):
        def __init__(self, n, tag):
            self.n = fnnx.data(n)
            self.tag = fnnx.static(tag)

    ours, theirs = nnx.state(_Marked(1, 2)), fnnx.state(Theirs(1, 2))
    assert dict(ours) == dict(theirs) == {"n": 1}
    graphdef, state = nnx.split(_Marked(7, 2))
    rebuilt = nnx.merge(graphdef, state)
    assert (rebuilt.n, rebuilt.tag) == (7, 2)


def test_number_marked_data_updates_and_passes_through_jit():
    obj = _Marked(1, "x")
    nnx.update(obj, {"n": 5})
    assert obj.n == 5

    @jax.jit
    def step(o):
        o.n = o.n + 1
        return o

    assert int(step(obj).n) == 6
    assert int(nnx.state(obj)["n"]) == 5  # the input is unchanged


# misuse: an unmarked number stays static and cannot be updated
def test_unmarked_number_attribute_is_not_updatable():
    class P(nnx.Pytree):
        def __init__(self):
            self.n = 1

    with pytest.raises(StateLoadError, match="Unexpected"):
        nnx.update(P(), {"n": 2})


def test_map_without_recreating_variables_stores_plain_values_as_flax():
    fnnx = pytest.importorskip("flax.nnx")
    ours = nnx.map(lambda p, v: 0, nnx.Rngs(0), recreate_variables=False)
    theirs = fnnx.map(lambda p, v: 0, fnnx.Rngs(0), recreate_variables=False)
    assert ours.default.count == theirs.default.count == 0
    assert not isinstance(ours.default.count, nnx.Variable)
    again = nnx.map(lambda p, v: 1 if p[-1] == "count" else v, nnx.Rngs(0))
    assert isinstance(again.default.count, nnx.RngCount)
    assert int(again.default.count.value) == 1
