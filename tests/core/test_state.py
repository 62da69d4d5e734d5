"""Tests for ``ramie/_src/core/state.py``: State, FlatState, filtering and
merging, pure dicts and the strict ``replace_by_pure_dict``."""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie as nnx
from ramie.errors import FilterError, StateLoadError


class Block(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(2, 3, rngs=rngs)
        self.batchnorm = nnx.BatchNorm(3, rngs=rngs)


class Model(nnx.Module):
    def __init__(self, rngs):
        self.block = Block(rngs)
        self.layers = [nnx.Linear(3, 3, rngs=rngs), nnx.Linear(3, 1, rngs=rngs)]


def _model():
    return Model(nnx.Rngs(0))


# ----------------------------------------------------------------- State
def test_state_is_a_nested_mapping_of_live_variables():
    m = _model()
    s = nnx.state(m)
    assert isinstance(s, dict) and type(s) is nnx.State
    assert sorted(s.keys()) == ["block", "layers"]
    assert type(s["block"]) is nnx.State and type(s.layers) is nnx.State
    assert s.block.linear.kernel is m.block.linear.kernel
    assert s["layers"][1]["bias"] is m.layers[1].bias
    assert s.raw_mapping is s


def test_state_attribute_errors():
    s = nnx.state(_model())
    with pytest.raises(
        AttributeError, match=r"State has no key 'blok'; keys: \['block', 'layers'\]"
    ):
        _ = s.blok
    s.extra = 1
    assert s["extra"] == 1
    del s.extra
    with pytest.raises(AttributeError):
        del s.extra


def test_state_converts_nested_dicts():
    s = nnx.State({"a": {"b": {"c": 1}}})
    assert type(s.a) is nnx.State and type(s.a.b) is nnx.State
    s["d"] = {"e": 2}
    assert type(s.d) is nnx.State


def test_state_seed_keys_are_sorted():
    class Seed(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(2, 3, rngs=rngs)
            self.batchnorm = nnx.BatchNorm(3, rngs=rngs)

    _, params, _ = nnx.split(Seed(nnx.Rngs(0)), nnx.Param, ...)
    assert list(params.keys()) == ["batchnorm", "linear"]


def test_pure_dict_matches_flax():
    fnnx = pytest.importorskip("flax.nnx")

    class FBlock(fnnx.Module):
        def __init__(self, rngs):
            self.linear = fnnx.Linear(2, 3, rngs=rngs)
            self.batchnorm = fnnx.BatchNorm(3, rngs=rngs)

    class FModel(fnnx.Module):
        def __init__(self, rngs):
            self.block = FBlock(rngs)
            self.layers = fnnx.List(
                [fnnx.Linear(3, 3, rngs=rngs), fnnx.Linear(3, 1, rngs=rngs)]
            )

    ours = jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(_model())))
    theirs = jax.tree.map(
        jnp.shape, fnnx.to_pure_dict(fnnx.state(FModel(fnnx.Rngs(0))))
    )
    assert ours == theirs
    # same initial values, since the key sequence matches
    ours_v = nnx.to_pure_dict(nnx.state(_model()))
    theirs_v = fnnx.to_pure_dict(fnnx.state(FModel(fnnx.Rngs(0))))
    np.testing.assert_allclose(
        ours_v["layers"][1]["kernel"], theirs_v["layers"][1]["kernel"]
    )


def test_state_is_a_pytree_aligned_with_grads():
    m = _model()
    params = nnx.state(m, nnx.Param)
    grads = jax.tree.map(jnp.ones_like, params)
    new = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
    assert type(new) is nnx.State and type(new.block.linear.kernel) is nnx.Param
    np.testing.assert_allclose(
        new.block.linear.kernel.value, m.block.linear.kernel.value - 0.1
    )
    keys = [
        jax.tree_util.keystr(p)
        for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]
    ]
    assert keys[0] == "['block']['batchnorm']['bias'].value"


def test_state_through_jit_and_grad():
    m = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(m)

    def loss(params):
        return jnp.sum(nnx.merge(graphdef, params)(jnp.ones((1, 2))))

    grads = jax.jit(jax.grad(loss))(params)
    assert type(grads) is nnx.State and sorted(grads) == ["bias", "kernel"]
    np.testing.assert_allclose(grads.kernel.value, np.ones((2, 1)))


def test_or_sub_copy_and_pickle():
    m = _model()
    params, stats = nnx.state(m, nnx.Param, nnx.BatchStat)
    both = params | stats
    assert sorted(both.block.batchnorm) == ["bias", "mean", "scale", "var"]
    only_params = both - stats
    assert sorted(only_params.block.batchnorm) == ["bias", "scale"]
    copy = params.copy()
    assert copy is not params and copy.block is not params.block
    assert copy.block.linear.kernel is params.block.linear.kernel
    back = pickle.loads(pickle.dumps(params))
    assert type(back) is nnx.State and sorted(back) == ["block", "layers"]
    np.testing.assert_array_equal(
        back.block.linear.kernel.value, params.block.linear.kernel.value
    )


def test_repr_seed_style():
    r = repr(nnx.state(nnx.Linear(1, 1, rngs=nnx.Rngs(0))))
    assert r.startswith("State({") and "'bias': Param(value=" in r


# ------------------------------------------------------------- FlatState
def test_flat_state_round_trip():
    s = nnx.state(_model())
    flat = nnx.to_flat_state(s)
    assert type(flat) is nnx.FlatState
    assert flat.paths[0] == ("block", "batchnorm", "bias")
    assert flat.paths[-1] == ("layers", 1, "kernel")
    assert len(flat.leaves) == len(flat.paths) == 10
    assert nnx.from_flat_state(flat) == s
    assert s.flat_state() == flat and flat.to_nested_state() == s
    assert nnx.State.from_flat_path(list(flat)) == s
    assert nnx.State.from_flat_path(dict(flat)) == s
    assert s.flat_paths() == list(flat.paths)


def test_flat_state_sorting_filter_split_merge():
    a, b = nnx.Param(jnp.ones(1)), nnx.BatchStat(jnp.ones(1))
    flat = nnx.FlatState([(("z",), a), (("a", 1), b), (("a", 0), a)])
    assert flat.paths == (("a", 0), ("a", 1), ("z",))
    assert nnx.FlatState([(("z",), a), (("a",), b)], sort=False).paths == (
        ("z",),
        ("a",),
    )
    mixed = nnx.FlatState([((1,), a), (("x",), b)])  # int and str keys sort
    assert mixed.paths == ((1,), ("x",))
    params = flat.filter(nnx.Param)
    assert params.paths == (("a", 0), ("z",))
    p2, rest = flat.split(nnx.Param, ...)
    assert p2.paths == params.paths and rest.paths == (("a", 1),)
    with pytest.raises(FilterError, match=r"a\[1\] \(BatchStat\)"):
        flat.split(nnx.Param)
    merged = nnx.FlatState.merge(p2, rest)
    assert merged.paths == flat.paths
    direct = nnx.FlatState.from_sorted_keys_values([("a",), ("b",)], [a, b])
    assert direct.leaves == [a, b]
    assert repr(nnx.FlatState()) == "FlatState([])" and "a[0]" in repr(flat)


def test_flat_state_is_a_pytree():
    flat = nnx.to_flat_state(nnx.state(nnx.Linear(1, 2, rngs=nnx.Rngs(0))))
    doubled = jax.tree.map(lambda x: x * 2, flat)
    assert type(doubled) is nnx.FlatState and doubled.paths == flat.paths
    np.testing.assert_array_equal(doubled.leaves[1].value, flat.leaves[1].value * 2)


def test_from_flat_state_takes_a_dict_of_paths():
    """``dict(to_flat_state(s))`` edited by path and rebuilt (a common recipe)."""
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    flat = dict(nnx.to_flat_state(state))
    flat[("kernel",)].set_value(jnp.ones((2, 3)))
    rebuilt = nnx.from_flat_state(flat)
    assert type(rebuilt) is nnx.State and sorted(rebuilt) == ["bias", "kernel"]
    restored = nnx.merge(graphdef, rebuilt)
    np.testing.assert_array_equal(restored.kernel.value, jnp.ones((2, 3)))
    assert nnx.from_flat_state(flat, cls=nnx.GraphState).graphdef is None


def test_from_flat_state_empty_path():
    with pytest.raises(ValueError, match="empty path"):
        nnx.from_flat_state([((), 1)])


# ------------------------------------------------- filtering and merging
def test_split_state_and_filter_state():
    s = nnx.state(_model())
    params, stats = nnx.split_state(s, nnx.Param, ...)
    assert sorted(params.block.batchnorm) == ["bias", "scale"]
    assert sorted(stats.block.batchnorm) == ["mean", "var"] and "layers" not in stats
    kernels = nnx.filter_state(s, "kernel")
    assert sorted(nnx.to_flat_state(kernels).paths) == [
        ("block", "linear", "kernel"),
        ("layers", 0, "kernel"),
        ("layers", 1, "kernel"),
    ]
    k, b = nnx.filter_state(s, "kernel", "bias")
    assert len(nnx.to_flat_state(b)) == 4
    p2, rest = s.split(nnx.Param, ...)
    assert p2 == params
    assert s.filter(nnx.BatchStat) == stats
    assert nnx.GraphState(s).split(nnx.Param, ...)[0].__class__ is nnx.GraphState


# misuse: split_state whose filters leave leaves unmatched
def test_split_state_unmatched_names_paths():
    s = nnx.state(_model())
    with pytest.raises(
        FilterError, match=r"split_state: 2 Variable\(s\).*\n.*block\.batchnorm\.mean"
    ):
        nnx.split_state(s, nnx.Param)


def test_merge_state_deep_and_later_wins():
    a = nnx.State({"x": {"p": 1, "q": 2}, "y": 3})
    b = nnx.State({"x": {"q": 20, "r": 30}})
    merged = nnx.merge_state(a, b)
    assert merged == {"x": {"p": 1, "q": 20, "r": 30}, "y": 3}
    assert type(merged.x) is nnx.State
    assert a == {"x": {"p": 1, "q": 2}, "y": 3}  # inputs untouched
    assert nnx.State.merge(a, b) == merged
    assert nnx.GraphState.merge(a, b) == merged  # the seeds' spelling


def test_map_state_and_legacy_methods():
    s = nnx.state(nnx.Linear(1, 2, rngs=nnx.Rngs(0)))
    shapes = nnx.map_state(lambda path, v: (path, v.shape), s)
    assert shapes.kernel == (("kernel",), (1, 2))
    assert s.map(lambda p, v: v.shape).bias == (2,)
    pure = s.to_pure_dict()
    assert sorted(pure) == ["bias", "kernel"] and isinstance(pure["bias"], jax.Array)
    s.replace_by_pure_dict({"bias": jnp.ones(2), "kernel": jnp.ones((1, 2))})
    np.testing.assert_array_equal(s.bias.value, np.ones(2))


def test_graph_state_carries_graphdef():
    gs = nnx.GraphState({"a": 1}, graphdef="gd")
    assert gs.graphdef == "gd" and gs.a == 1
    gs.b = 2
    assert gs["b"] == 2
    mapped = jax.tree.map(lambda x: x + 1, gs)
    assert type(mapped) is nnx.GraphState and mapped.a == 2


# ------------------------------------------------------------ pure dicts
def test_to_pure_dict_extract_fn_and_restore_int_paths():
    s = nnx.state(_model())
    pure = nnx.to_pure_dict(s, lambda path, v: path)
    assert pure["layers"][1]["bias"] == ("layers", 1, "bias")
    assert nnx.restore_int_paths({"layers": {"0": {"w": 1}, "x": 2}}) == {
        "layers": {0: {"w": 1}, "x": 2}
    }


def test_replace_by_pure_dict_round_trip_and_string_indices():
    m = _model()
    s = nnx.state(m)
    pure = jax.tree.map(lambda x: x + 1, nnx.to_pure_dict(s))
    pure["layers"] = {str(k): v for k, v in pure["layers"].items()}  # checkpoint keys
    nnx.replace_by_pure_dict(s, pure)
    np.testing.assert_array_equal(m.layers[1].bias.value, np.ones(1))
    np.testing.assert_array_equal(m.block.batchnorm.var.value, np.full(3, 2.0))


def test_replace_by_pure_dict_accepts_numpy_of_same_dtype():
    m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    nnx.replace_by_pure_dict(
        nnx.state(m),
        {"kernel": np.zeros((2, 3), np.float32), "bias": np.ones(3, np.float32)},
    )
    assert isinstance(m.bias.value, jax.Array)
    np.testing.assert_array_equal(m.bias.value, np.ones(3))


def _nested_model_state():
    m = _model()
    return m, nnx.state(m)


def _full_pure(s):
    return nnx.to_pure_dict(s)


# misuse: replace_by_pure_dict with a missing entry
def test_replace_by_pure_dict_missing_names_path():
    m, s = _nested_model_state()
    pure = _full_pure(s)
    del pure["block"]["batchnorm"]["mean"]
    pure["layers"][0]["bias"] = pure["layers"][0]["bias"] + 1  # a valid change...
    before = np.asarray(m.layers[0].bias.value)
    with pytest.raises(
        StateLoadError, match=r"Missing \(1\).*\n\s+block\.batchnorm\.mean"
    ) as info:
        nnx.replace_by_pure_dict(s, pure)
    assert info.value.missing == [("block", "batchnorm", "mean")]
    np.testing.assert_array_equal(m.layers[0].bias.value, before)  # ...not applied


# misuse: replace_by_pure_dict with an unexpected entry
def test_replace_by_pure_dict_unexpected_names_path():
    _, s = _nested_model_state()
    pure = _full_pure(s)
    pure["layers"][1]["scale"] = jnp.ones(1)
    with pytest.raises(
        StateLoadError, match=r"Unexpected \(1\).*\n\s+layers\[1\]\.scale"
    ) as info:
        nnx.replace_by_pure_dict(s, pure)
    assert info.value.unexpected == [("layers", 1, "scale")]
    assert "nothing was changed" in str(info.value)


# misuse: replace_by_pure_dict with a mis-shaped entry
def test_replace_by_pure_dict_shape_mismatch_names_path():
    _, s = _nested_model_state()
    pure = _full_pure(s)
    pure["block"]["linear"]["kernel"] = jnp.zeros((3, 2))
    with pytest.raises(
        StateLoadError, match=r"block\.linear\.kernel: shape \(2, 3\) vs \(3, 2\)"
    ) as info:
        nnx.replace_by_pure_dict(s, pure)
    assert info.value.mismatched == [
        (("block", "linear", "kernel"), "shape (2, 3)", "shape (3, 2)")
    ]


# misuse: replace_by_pure_dict with a wrong dtype
def test_replace_by_pure_dict_dtype_mismatch_names_path():
    _, s = _nested_model_state()
    pure = _full_pure(s)
    pure["layers"][0]["bias"] = jnp.zeros(3, jnp.int32)
    with pytest.raises(
        StateLoadError, match=r"layers\[0\]\.bias: dtype float32 vs int32"
    ):
        nnx.replace_by_pure_dict(s, pure)


def test_replace_by_pure_dict_aggregates_all_problems():
    m = nnx.List([nnx.Param(jnp.ones(2)) for _ in range(13)])
    s = nnx.state(m)
    pure = {i: jnp.ones(3) for i in range(12)}  # 12 mismatched, 1 missing
    pure["x"] = jnp.ones(1)
    with pytest.raises(StateLoadError) as info:
        nnx.replace_by_pure_dict(s, pure)
    msg = str(info.value)
    assert "Missing (1)" in msg and "Unexpected (1)" in msg and "Mismatched (12)" in msg
    assert "... and 2 more" in msg
    assert isinstance(info.value, ValueError)


def test_replace_by_pure_dict_replace_fn_and_non_strict():
    m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    s = nnx.state(m)
    nnx.replace_by_pure_dict(
        s,
        {"kernel": 1.0, "bias": 2.0},
        lambda leaf, v: leaf.replace(jnp.full(leaf.shape, v)),
    )
    assert float(s.bias.value[0]) == 2.0
    assert float(m.bias.value[0]) == 0.0  # replace_fn swaps the State's leaf
    nnx.replace_by_pure_dict(s, {"bias": jnp.ones(3), "extra": 1}, strict=False)
    np.testing.assert_array_equal(s.bias.value, np.ones(3))
    with pytest.raises(StateLoadError, match="Mismatched"):
        nnx.replace_by_pure_dict(s, {"bias": jnp.ones(4)}, strict=False)


def test_replace_by_pure_dict_lossy_dtype_needs_allow_cast():
    model = nnx.Linear(2, 3, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    s = nnx.state(model)
    pure = {"kernel": jnp.full((2, 3), 1.5, jnp.float32), "bias": np.zeros(3)}
    with pytest.raises(StateLoadError) as e:
        s.replace_by_pure_dict(pure)
    assert "kernel: dtype bfloat16 vs float32" in str(e.value)
    assert "ramie.replace_by_pure_dict(..., allow_cast=True)" in str(e.value)
    assert float(model.kernel.value.sum()) != 9.0  # nothing changed
    s.replace_by_pure_dict(pure, allow_cast=True)
    assert model.kernel.value.dtype == jnp.bfloat16
    assert float(model.kernel.value.sum()) == 9.0
