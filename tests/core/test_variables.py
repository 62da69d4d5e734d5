"""Tests for ``ramie/_src/core/variables.py``: Variable types, values, metadata,
operators, copies, pickling, pytree behaviour and trace checks."""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie as nnx
from ramie._src.core.epoch import EPOCH
from ramie.errors import TraceContextError


class Counter(nnx.Variable):
    pass


class Block(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.ones(3))
        self.mean = nnx.BatchStat(jnp.zeros(3))


class Net(nnx.Module):
    def __init__(self):
        self.block = Block()
        self.layers = [Block(), Block()]


# ------------------------------------------------------------------ types
def test_builtin_types_are_variables():
    for cls in (
        nnx.Param,
        nnx.BatchStat,
        nnx.Cache,
        nnx.Intermediate,
        nnx.Perturbation,
    ):
        assert issubclass(cls, nnx.Variable)
    assert nnx.Intermediates is nnx.Intermediate
    assert issubclass(nnx.Perturbation, nnx.Intermediate)
    assert nnx.VariableState is nnx.Variable


def test_type_property_and_user_subclass():
    c = Counter(jnp.array(0))
    assert c.type is Counter and c.var_type is Counter
    assert isinstance(c, nnx.Variable)
    assert Counter.state_type() is Counter


# ----------------------------------------------------------------- values
def test_value_get_and_set():
    p = nnx.Param(jnp.ones(3))
    np.testing.assert_array_equal(p.value, np.ones(3))
    p.value = jnp.zeros(3)
    np.testing.assert_array_equal(p.value, np.zeros(3))
    p.set_value(jnp.full(3, 2.0))
    np.testing.assert_array_equal(p.get_value(), np.full(3, 2.0))
    assert float(p.get_value(index=1)) == 2.0


def test_set_value_unwraps_variables():
    p = nnx.Param(jnp.ones(2))
    p.set_value(nnx.BatchStat(jnp.zeros(2)))
    assert isinstance(p.value, jax.Array)
    np.testing.assert_array_equal(p.value, np.zeros(2))


def test_set_value_with_index_is_functional():
    p = nnx.Param(jnp.zeros(3))
    old = p.value
    p.set_value(5.0, index=1)
    np.testing.assert_array_equal(p.value, [0.0, 5.0, 0.0])
    np.testing.assert_array_equal(old, np.zeros(3))


def test_ellipsis_indexing():
    p = nnx.Param(jnp.arange(3.0))
    assert p[...] is p.value
    assert float(p[2]) == 2.0
    p[...] = jnp.ones(3)
    np.testing.assert_array_equal(p.value, np.ones(3))
    p[0] = 7.0
    np.testing.assert_array_equal(p.value, [7.0, 1.0, 1.0])


def test_ellipsis_assignment_keeps_dtype():
    p = nnx.Param(jnp.zeros(3, jnp.float32))
    p[...] = jnp.arange(3, dtype=jnp.int32)
    assert p.value.dtype == jnp.float32
    np.testing.assert_array_equal(p.value, [0.0, 1.0, 2.0])


def test_ellipsis_on_non_array_value():
    v = nnx.Intermediate((1, 2))
    assert v[...] == (1, 2)
    assert v[0] == 1


def test_raw_value_accessors():
    v = nnx.Variable(jnp.ones(1))
    v.raw_value = jnp.zeros(1)
    np.testing.assert_array_equal(v.get_raw_value(), [0.0])
    v.set_raw_value(jnp.full(1, 3.0))
    assert float(v.raw_value[0]) == 3.0


def test_value_change_is_not_structural():
    p = nnx.Param(jnp.ones(2))
    before = EPOCH.value
    p.value = jnp.zeros(2)
    p[...] = jnp.ones(2)
    assert EPOCH.value == before


# --------------------------------------------------------------- metadata
def test_metadata_from_kwargs_and_attribute_access():
    p = nnx.Param(jnp.ones(2), tag="w", note=[1, 2])
    assert p.get_metadata() == {"tag": "w", "note": [1, 2]}
    assert p.tag == "w"
    assert p.get_metadata("tag") == "w"
    assert p.has_metadata("note")
    assert not p.has_metadata("other")


@pytest.mark.parametrize("alias", ["sharding", "sharding_names", "out_sharding"])
def test_sharding_aliases_map_to_out_sharding(alias):
    p = nnx.Param(jnp.ones((2, 2)), **{alias: ("data", None)})
    assert p.get_metadata() == {"out_sharding": ("data", None)}
    assert p.out_sharding == ("data", None)
    assert p.sharding_names == ("data", None)
    assert p.get_metadata("sharding") == ("data", None)
    assert p.has_metadata("sharding_names")


def test_sharding_names_setter():
    p = nnx.Param(jnp.ones(2))
    assert p.sharding_names is None
    p.sharding_names = ("model",)
    assert p.get_metadata("out_sharding") == ("model",)
    p.sharding = ("data",)
    assert p.out_sharding == ("data",)


def test_get_metadata_default_and_missing():
    p = nnx.Param(jnp.ones(1), tag="x")
    assert p.get_metadata("nope", None) is None
    with pytest.raises(KeyError, match=r"'nope'.*available: \['tag'\]"):
        p.get_metadata("nope")


def test_get_metadata_exclude_required():
    class Named(nnx.Variable):
        required_metadata = frozenset({"name"})

    v = Named(jnp.ones(1), name="n", other=1)
    assert v.get_metadata(exclude_required=True) == {"other": 1}
    assert v.get_metadata() == {"name": "n", "other": 1}


def test_set_metadata_forms():
    p = nnx.Param(jnp.ones(1), a=1)
    p.set_metadata("b", 2)
    p.set_metadata(c=3, sharding=("x",))
    assert p.get_metadata() == {"a": 1, "b": 2, "c": 3, "out_sharding": ("x",)}
    p.set_metadata({"only": True})  # a mapping replaces everything
    assert p.get_metadata() == {"only": True}
    with pytest.raises(TypeError, match="3 positional"):
        p.set_metadata("a", 1, 2)


def test_set_metadata_bumps_metadata_epoch():
    p = nnx.Param(jnp.ones(1))
    before = EPOCH.meta
    p.set_metadata(tag="t")
    assert EPOCH.meta > before
    before = EPOCH.meta
    p.del_metadata("tag")
    assert EPOCH.meta > before
    assert not p.has_metadata("tag")


def test_setattr_and_delattr_are_metadata():
    p = nnx.Param(jnp.ones(1))
    p.tag = "x"
    assert p.get_metadata("tag") == "x"
    del p.tag
    assert p.get_metadata() == {}


def test_missing_attribute_error_mentions_value_type():
    p = nnx.Param(jnp.ones(1))
    with pytest.raises(
        AttributeError, match=r"'Param' has no attribute or metadata 'bogus'"
    ):
        _ = p.bogus


def test_attributes_fall_through_to_value():
    p = nnx.Param(jnp.ones((2, 3)))
    assert p.T.shape == (3, 2)
    assert float(p.sum()) == 6.0


def test_metadata_property_is_a_copy():
    p = nnx.Param(jnp.ones(1), tag="x")
    md = p.metadata
    md["tag"] = "y"
    assert p.tag == "x"


def test_variable_metadata_wrapper():
    p = nnx.Param(nnx.VariableMetadata(jnp.ones(2), metadata={"tag": "w"}, extra=1))
    assert p.get_metadata() == {"tag": "w", "extra": 1}
    assert isinstance(p.value, jax.Array)
    assert "VariableMetadata(" in repr(nnx.VariableMetadata(jnp.ones(1), {"a": 1}))


def test_variable_from_variable_copies_metadata():
    src = nnx.BatchStat(jnp.ones(2), tag="s")
    dst = nnx.Param(src, extra=1)
    assert type(dst) is nnx.Param
    assert dst.get_metadata() == {"tag": "s", "extra": 1}


def test_with_metadata_initializer():
    init = nnx.with_metadata(nnx.initializers.ones, sharding_names=(None, "model"))
    layer = nnx.Linear(2, 4, kernel_init=init, rngs=nnx.Rngs(0))
    assert layer.kernel.get_metadata("out_sharding") == (None, "model")
    # nesting merges metadata
    init2 = nnx.with_metadata(init, tag="k")
    out = init2(jax.random.key(0), (2, 2))
    assert isinstance(out, nnx.VariableMetadata)
    assert out.metadata == {"out_sharding": (None, "model"), "tag": "k"}


# --------------------------------------------------------------- operators
def test_binary_reflected_and_comparison_operators():
    p = nnx.Param(jnp.array([1.0, 2.0]))
    q = nnx.Param(jnp.array([3.0, 4.0]))
    np.testing.assert_array_equal(p + 1, [2.0, 3.0])
    np.testing.assert_array_equal(1 + p, [2.0, 3.0])
    np.testing.assert_array_equal(p * q, [3.0, 8.0])
    np.testing.assert_array_equal(q - p, [2.0, 2.0])
    np.testing.assert_array_equal(2 / p, [2.0, 1.0])
    np.testing.assert_array_equal(p**2, [1.0, 4.0])
    assert float(p @ q) == 11.0
    np.testing.assert_array_equal(p < q, [True, True])
    np.testing.assert_array_equal(p == 1.0, [True, False])
    np.testing.assert_array_equal(-p, [-1.0, -2.0])
    np.testing.assert_array_equal(abs(-p), [1.0, 2.0])
    quot, rem = divmod(nnx.Variable(jnp.array(7)), 2)
    assert (int(quot), int(rem)) == (3, 1)
    i = nnx.Variable(jnp.array(6))
    assert int(i & 3) == 2 and int(i | 1) == 7 and int(i >> 1) == 3 and int(~i) == -7


def test_array_protocol():
    p = nnx.Param(jnp.arange(6.0).reshape(2, 3))
    assert p.shape == (2, 3) and p.ndim == 2 and p.size == 6 and p.dtype == jnp.float32
    assert float(jnp.sum(p)) == 15.0
    assert np.asarray(p).shape == (2, 3)
    assert np.asarray(p, dtype=np.int32).dtype == np.int32
    assert len(p) == 2
    assert len(list(iter(p))) == 2
    s = nnx.Variable(jnp.array(3))
    assert int(s) == 3 and float(s) == 3.0 and complex(s) == 3 + 0j and bool(s)
    assert [10, 11, 12, 13][s] == 13  # __index__
    assert f"{s:03d}" == "003"
    assert 2 in nnx.Variable([1, 2])


def test_call_forwards_to_callable_value():
    v = nnx.Variable(lambda x: x + 1)
    assert v(1) == 2


def test_hash_is_identity_even_with_elementwise_eq():
    a, b = nnx.Param(jnp.ones(2)), nnx.Param(jnp.ones(2))
    assert len({a, b}) == 2
    assert {a: 1}[a] == 1


@pytest.mark.parametrize(
    "op, expected",
    [
        (lambda c: c.__iadd__(2), 5),
        (lambda c: c.__isub__(2), 1),
        (lambda c: c.__imul__(2), 6),
        (lambda c: c.__ifloordiv__(2), 1),
        (lambda c: c.__imod__(2), 1),
        (lambda c: c.__ipow__(2), 9),
    ],
)
def test_inplace_operators_update_value_and_keep_identity(op, expected):
    c = Counter(jnp.array(3))
    result = op(c)
    assert result is c
    assert int(c.value) == expected


def test_seed_counter_pattern():
    class Model(nnx.Module):
        def __init__(self):
            self.count = Counter(jnp.array(0))

        def __call__(self):
            self.count += 1  # seed 001/004 spelling
            self.count.value += 1

    m = Model()
    box = m.count
    m()
    m()
    assert m.count is box and type(m.count) is Counter
    assert int(m.count.value) == 4


# ------------------------------------------------------------------ copies
def test_copy_and_replace():
    p = nnx.Param(jnp.ones(2), tag="t", names=["a"])
    c = p.copy()
    assert type(c) is nnx.Param and c is not p
    assert c.get_metadata() == p.get_metadata()
    c.set_metadata(tag="u")
    assert p.tag == "t"  # metadata dict not shared
    r = p.replace(jnp.zeros(2), sharding=("x",))
    np.testing.assert_array_equal(r.value, np.zeros(2))
    assert r.get_metadata("out_sharding") == ("x",)
    np.testing.assert_array_equal(p.value, np.ones(2))
    assert type(p.to_state()) is nnx.Param and p.to_state() is not p


def test_copy_from_and_update_from_state():
    a = nnx.Param(jnp.ones(2), tag="a")
    b = nnx.Param(jnp.zeros(2), tag="b")
    a.copy_from(b)
    np.testing.assert_array_equal(a.value, np.zeros(2))
    assert a.tag == "b"
    c = nnx.Param(jnp.full(2, 5.0))
    a.update_from_state(c)
    assert a.get_metadata() == {} and float(a.value[0]) == 5.0


def test_from_metadata_and_create_value():
    v = Counter.from_metadata(jnp.ones(1), {"tag": "c"})
    assert type(v) is Counter and v.tag == "c"
    assert v.create_value(3) == 3


def test_add_and_remove_axis():
    p = nnx.Param(jnp.ones((2, 3)), sharding=("a", "b"))
    p.add_axis(0, "layers")
    assert p.out_sharding == ("layers", "a", "b")
    p.remove_axis(0, "layers")
    assert p.out_sharding == ("a", "b")
    p.add_axis(-1, "last")
    assert p.out_sharding == ("a", "b", "last")
    p.remove_axis(-1, "last")
    assert p.out_sharding == ("a", "b")
    q = nnx.Param(jnp.ones(2))
    q.add_axis(0, "layers")  # no sharding metadata: nothing to do
    assert not q.has_metadata("out_sharding")


# --------------------------------------------------------------------- repr
def test_repr_seed_style():
    p = nnx.Param(jnp.array([1.0, 2.0]))
    assert repr(p) == "Param(value=Array([1., 2.], dtype=float32))"
    c = Counter(jnp.array(1), tag="c")
    assert repr(c).startswith("Counter(value=") and "tag='c'" in repr(c)
    assert "eager_sharding" not in repr(nnx.Param(jnp.ones(1), eager_sharding=False))
    assert repr(nnx.Param(jnp.zeros((784, 256)))) == "Param(value=f32[784,256])"


# ------------------------------------------------------------------ pickling
def test_pickle_round_trip_keeps_type_value_and_metadata():
    c = Counter(jnp.arange(3), tag="c", names=["x"])
    c2 = pickle.loads(pickle.dumps(c))
    assert type(c2) is Counter
    assert c2.get_metadata() == {"tag": "c", "names": ["x"]}
    np.testing.assert_array_equal(c2.value, [0, 1, 2])
    c2.value = jnp.zeros(3, jnp.int32)  # mutable after unpickling
    shared = pickle.loads(pickle.dumps([c, c]))
    assert shared[0] is shared[1]


# -------------------------------------------------------------------- pytree
def test_variable_is_pytree_with_one_leaf():
    p = nnx.Param(jnp.ones(2), tag="t")
    leaves, treedef = jax.tree.flatten(p)
    assert len(leaves) == 1 and leaves[0] is p.value
    q = jax.tree.unflatten(treedef, [jnp.zeros(2)])
    assert type(q) is nnx.Param and q.tag == "t"
    ((path, _),) = jax.tree_util.tree_flatten_with_path(p)[0]
    assert path == (jax.tree_util.GetAttrKey("value"),)


def test_tree_map_keeps_type_and_metadata_for_user_subclass():
    c = Counter(jnp.array(1), names=["unhashable"])
    d = jax.tree.map(lambda x: x + 1, c)
    assert type(d) is Counter and d is not c
    assert d.get_metadata() == {"names": ["unhashable"]}
    assert int(d.value) == 2 and int(c.value) == 1
    # treedefs with equal unhashable metadata compare equal
    assert jax.tree.structure(c) == jax.tree.structure(d)


def test_treedef_depends_on_type_and_metadata():
    s = jax.tree.structure
    assert s(nnx.Param(jnp.ones(1))) != s(nnx.BatchStat(jnp.ones(1)))
    assert s(nnx.Param(jnp.ones(1), tag="a")) != s(nnx.Param(jnp.ones(1), tag="b"))


def test_variables_pass_through_jax_jit_and_grad():
    p = nnx.Param(jnp.array([1.0, 2.0]))
    out = jax.jit(lambda v: jax.tree.map(lambda x: x * 2, v))(p)
    assert type(out) is nnx.Param
    np.testing.assert_array_equal(out.value, [2.0, 4.0])
    assert isinstance(jax.jit(lambda v: v * 2)(p), jax.Array)  # arithmetic unwraps
    g = jax.grad(lambda v: jnp.sum(v.value**2))(p)
    assert type(g) is nnx.Param
    np.testing.assert_allclose(g.value, [2.0, 4.0])


def test_as_pure():
    tree = {"w": nnx.Param(jnp.ones(2)), "n": [Counter(jnp.array(1)), 3]}
    pure = nnx.as_pure(tree)
    assert isinstance(pure["w"], jax.Array) and isinstance(pure["n"][0], jax.Array)
    assert pure["n"][1] == 3
    assert nnx.pure is nnx.as_pure


# --------------------------------------------------------- collection names
def test_collection_names_match_flax():
    fnnx = pytest.importorskip("flax.nnx")
    for name in ("params", "batch_stats", "cache", "intermediates"):
        ours = nnx.variable_type_from_name(name)
        theirs = fnnx.variable_type_from_name(name)
        assert ours.__name__ == theirs.__name__
        assert nnx.variable_name_from_type(ours) == fnnx.variable_name_from_type(theirs)


def test_variable_type_from_name_unknown():
    with pytest.raises(ValueError, match=r"unknown collection.*register_variable_name"):
        nnx.variable_type_from_name("no_such_collection_xyz")
    t = nnx.variable_type_from_name("helper_core_auto", allow_register=True)
    assert issubclass(t, nnx.Variable) and t.__name__ == "helper_core_auto"
    assert nnx.variable_type_from_name("helper_core_auto") is t


def test_register_variable_name_decorator_and_overwrite():
    @nnx.register_variable_name("helper_core_counters", overwrite=True)
    class MyCounter(nnx.Variable):
        pass

    assert nnx.variable_type_from_name("helper_core_counters") is MyCounter
    assert nnx.variable_name_from_type(MyCounter) == "helper_core_counters"

    class Other(nnx.Variable):
        pass

    with pytest.raises(ValueError, match="already registered to MyCounter"):
        nnx.register_variable_name("helper_core_counters", Other)
    nnx.register_variable_name("helper_core_counters", Other, overwrite=True)
    assert nnx.variable_type_from_name("helper_core_counters") is Other


def test_variable_name_from_subclass_uses_parent():
    class MyParam(nnx.Param):
        pass

    assert nnx.variable_name_from_type(MyParam) == "params"

    class Loose(nnx.Variable):
        pass

    with pytest.raises(ValueError, match="no collection name registered"):
        nnx.variable_name_from_type(Loose)
    assert nnx.variable_name_from_type(Loose, allow_register=True) == "Loose"


# ------------------------------------------------------------ trace checks
def test_variable_created_inside_jit_is_mutable_there():
    @jax.jit
    def f(x):
        v = nnx.Param(x)
        v.value = v.value + 1
        v += 1
        return v.value

    np.testing.assert_array_equal(f(jnp.zeros(2)), [2.0, 2.0])


def test_reading_outer_variable_inside_jit_is_fine():
    p = nnx.Param(jnp.ones(2))
    np.testing.assert_array_equal(
        jax.jit(lambda x: x + p.value)(jnp.ones(2)), [2.0, 2.0]
    )


# misuse: mutating an outer Variable inside jax.jit
def test_mutating_outer_variable_in_jit_names_path():
    net = Net()

    @jax.jit
    def f(x):
        net.block.mean.value = x
        return x

    with pytest.raises(TraceContextError, match=r"BatchStat at block\.mean.*jax\.jit"):
        f(jnp.ones(3))
    np.testing.assert_array_equal(net.block.mean.value, np.zeros(3))


# misuse: mutating an outer Variable inside jax.vmap
def test_mutating_outer_variable_in_vmap_names_path():
    net = Net()

    def f(x):
        net.layers[1].w[...] = x
        return x

    with pytest.raises(TraceContextError, match=r"Param at layers\[1\]\.w.*jax\.vmap"):
        jax.vmap(f)(jnp.ones((4, 3)))


# misuse: in-place operator on an outer Variable inside jax.grad
def test_inplace_on_outer_variable_in_grad_names_path():
    net = Net()

    def loss(x):
        net.layers[0].mean += x
        return jnp.sum(x)

    with pytest.raises(TraceContextError, match=r"layers\[0\]\.mean.*jax\.grad"):
        jax.grad(loss)(jnp.ones(3))
    assert isinstance(TraceContextError("x"), ValueError)


def test_unattached_variable_error_says_so():
    p = nnx.Param(jnp.ones(1))
    with pytest.raises(TraceContextError, match=r"Param \(not attached to a module\)"):
        jax.jit(lambda x: p.set_value(x))(jnp.ones(1))
