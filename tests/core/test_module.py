"""Tests for ``ramie/_src/core/module.py``: Module, train/eval/set_attributes,
sow/perturb/capture, view/with_attributes/view_info and module iteration."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie as nnx
from ramie.errors import ModuleAttributeError


class Block(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(2, 3, rngs=rngs)
        self.bn = nnx.BatchNorm(3, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.layers = nnx.List([nnx.Linear(3, 3, rngs=rngs)])

    def __call__(self, x):
        return self.layers[0](self.drop(self.bn(self.linear(x))))

    def encode(self, x):
        return self.linear(x)


class Net(nnx.Module):
    def __init__(self, rngs):
        self.blocks = [Block(rngs), Block(rngs)]
        self.head = nnx.Linear(3, 1, rngs=rngs)


def _flags(model):
    out = {}
    for path, m in nnx.iter_modules(model):
        for name in ("deterministic", "use_running_average"):
            if name in vars(m):
                out[(path, name)] = vars(m)[name]
    return out


def test_any_method_can_be_called_directly():
    b = Block(nnx.Rngs(0))
    x = jnp.ones((1, 2))
    np.testing.assert_allclose(b.encode(x), b.linear(x))
    b.eval()
    assert b(x).shape == (1, 3)


# ------------------------------------------------------------ train / eval
def test_train_and_eval_flip_every_submodule():
    net = Net(nnx.Rngs(0))
    assert net.eval() is None  # as in Flax
    assert set(_flags(net).values()) == {True}
    assert len(_flags(net)) == 4
    assert net.train() is None
    assert set(_flags(net).values()) == {False}


def test_eval_matches_flax():
    fnnx = pytest.importorskip("flax.nnx")

    class FBlock(fnnx.Module):
        def __init__(self, rngs):
            self.bn = fnnx.BatchNorm(3, rngs=rngs)
            self.drop = fnnx.Dropout(0.5, rngs=rngs)

    class RBlock(nnx.Module):
        def __init__(self, rngs):
            self.bn = nnx.BatchNorm(3, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)

    ours, theirs = RBlock(nnx.Rngs(0)), FBlock(fnnx.Rngs(0))
    for mode in ("eval", "train"):
        getattr(ours, mode)()
        getattr(theirs, mode)()
        assert (ours.drop.deterministic, ours.bn.use_running_average) == (
            theirs.drop.deterministic,
            theirs.bn.use_running_average,
        )


def test_train_with_extra_attributes():
    net = Net(nnx.Rngs(0))
    net.train(rate=0.25)
    assert net.blocks[1].drop.rate == 0.25
    net.eval(bogus_but_ignored=1)  # train/eval never raise for unknown names


def test_set_attributes_with_filters():
    net = Net(nnx.Rngs(0))
    net.set_attributes(nnx.Dropout, deterministic=True)
    assert net.blocks[0].drop.deterministic and net.blocks[1].drop.deterministic
    net.set_attributes(nnx.PathContains(1), deterministic=False)
    assert net.blocks[0].drop.deterministic and not net.blocks[1].drop.deterministic
    net.set_attributes(
        lambda path, m: path == ("blocks", 0, "bn"), use_running_average=True
    )
    assert (
        net.blocks[0].bn.use_running_average
        and not net.blocks[1].bn.use_running_average
    )


# misuse: set_attributes with an attribute no sub-module has
def test_set_attributes_unknown_attribute_suggests_name():
    net = Net(nnx.Rngs(0))
    with pytest.raises(
        ModuleAttributeError, match=r"'determinstic' \(did you mean 'deterministic'\?\)"
    ):
        net.set_attributes(determinstic=True)
    with pytest.raises(AttributeError, match="raise_if_not_found=False"):
        net.set_attributes(zzz=1)
    net.set_attributes(zzz=1, raise_if_not_found=False)
    assert not any("zzz" in vars(m) for _, m in nnx.iter_modules(net))


# misuse: set_attributes whose filter excludes the modules having the attribute
def test_set_attributes_filter_excluding_all_raises():
    net = Net(nnx.Rngs(0))
    with pytest.raises(ModuleAttributeError, match="'deterministic'"):
        net.set_attributes(nnx.BatchNorm, deterministic=True)


# misuse: Dropout in train mode without any RNG stream
def test_dropout_without_rngs_in_train_mode_names_path():
    class M(nnx.Module):
        def __init__(self):
            self.block = nnx.Dict(drop=nnx.Dropout(0.5))

    m = M()
    with pytest.raises(ValueError, match=r"block\.drop"):
        m.block.drop(jnp.ones(3))


def test_dropout_without_rngs_in_train_mode_raises():
    drop = nnx.Dropout(0.5)
    with pytest.raises(ValueError, match=r"(?s)no RNG stream.*model\.eval\(\)"):
        drop(jnp.ones(3))
    drop.eval()
    np.testing.assert_array_equal(drop(jnp.ones(3)), np.ones(3))


def test_set_view():
    d = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
    assert d.set_view(deterministic=True, other=1) == {"other": 1}
    assert d.deterministic
    m = Net(nnx.Rngs(0))
    assert m.set_view(unknown=1) == {"unknown": 1}


# ------------------------------------------------------------ view
def test_view_shares_variables_and_leaves_original():
    net = Net(nnx.Rngs(0))
    v = nnx.view(net, deterministic=True, use_running_average=True)
    assert v is not net
    assert set(_flags(v).values()) == {True}
    assert set(_flags(net).values()) == {False}
    assert v.blocks[0].linear.kernel is net.blocks[0].linear.kernel
    w = nnx.with_attributes(net, only=nnx.Dropout, deterministic=True)
    assert w.blocks[0].drop.deterministic and not w.blocks[0].bn.use_running_average


# misuse: view with an attribute no module has
def test_view_unknown_attribute():
    with pytest.raises(ModuleAttributeError, match="'bogus'"):
        nnx.view(Net(nnx.Rngs(0)), bogus=True)


def test_view_info_lists_flags_with_paths():
    info = nnx.view_info(Net(nnx.Rngs(0)))
    assert "blocks[1].drop (Dropout): {'deterministic': False}" in info
    assert "blocks[0].bn (BatchNorm): {'use_running_average': False}" in info


# ------------------------------------------------------------ sow
class Sower(nnx.Module):
    def __init__(self):
        self.lin = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    def __call__(self, x):
        y = self.lin(x)
        self.sow(nnx.Intermediate, "y", y)
        return y


def test_sow_collects_values_in_a_tuple():
    s = Sower()
    assert s.sow(nnx.Intermediate, "tmp", 1) is True
    s(jnp.ones(2))
    s(jnp.zeros(2))
    assert type(s.y) is nnx.Intermediate
    assert isinstance(s.y.value, tuple) and len(s.y.value) == 2
    inter = nnx.state(s, nnx.Intermediate)
    assert sorted(inter) == ["tmp", "y"]


def test_sow_custom_reduce_and_string_type():
    s = Sower()
    for i in (1, 2, 3):
        s.sow(
            "intermediates", "total", i, reduce_fn=lambda a, b: a + b, init_fn=lambda: 0
        )
    assert type(s.total) is nnx.Intermediate and s.total.value == 6
    s.sow("helper_core_sown", "other", 1)
    assert nnx.variable_name_from_type(type(s.other)) == "helper_core_sown"


def test_sow_by_assignment_seed_spelling():
    class A(nnx.Module):
        def __call__(self, x):
            self.sowed = nnx.Intermediates(x)
            return x

    a = A()
    a(jnp.ones(1))
    assert list(nnx.state(a, nnx.Intermediate)) == ["sowed"]
    popped = nnx.pop(a, nnx.Intermediate)
    assert "sowed" in popped and not hasattr(a, "sowed")


# misuse: sow into an attribute that holds another Variable type
def test_sow_type_conflict_names_path():
    class Outer(nnx.Module):
        def __init__(self):
            self.block = Sower()
            self.block.y = nnx.Param(jnp.ones(1))

    o = Outer()
    with pytest.raises(ModuleAttributeError, match=r"block\.y"):
        o.block(jnp.ones(2))


def test_sow_type_conflict_raises():
    s = Sower()
    s.y = nnx.Param(jnp.ones(1))
    with pytest.raises(
        ModuleAttributeError, match=r"y already holds a Param, not a Intermediate"
    ):
        s(jnp.ones(2))


# ------------------------------------------------------------ perturb
def test_perturb_gives_gradient_of_intermediate():
    class P(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.array([1.0, 2.0]))

        def __call__(self, x):
            h = self.perturb("h", x * self.w.value)
            return jnp.sum(h**2)

    p = P()
    x = jnp.array([3.0, 4.0])
    p(x)  # first call creates the zero Perturbation
    assert type(p.h) is nnx.Perturbation
    np.testing.assert_array_equal(p.h.value, [0.0, 0.0])
    graphdef, perts, rest = nnx.split(p, nnx.Perturbation, ...)

    def loss(perts):
        return nnx.merge(graphdef, perts, rest)(x)

    grads = jax.grad(loss)(perts)
    np.testing.assert_allclose(grads.h.value, 2 * x * p.w.value)  # dL/dh


# ------------------------------------------------------------ capture
def test_capture_returns_sown_values_and_cleans_up():
    s = Sower()
    s.sow(nnx.Intermediate, "y", jnp.full(2, 99.0))  # stale value: removed first
    out, inter = nnx.capture(s, nnx.Intermediate)(jnp.ones(2))
    assert out.shape == (2,)
    assert len(inter.y.value) == 1
    np.testing.assert_allclose(inter.y.value[0], out)
    assert not hasattr(s, "y")


def test_capture_bound_method_function_and_default_type():
    s = Sower()
    _, inter = nnx.capture(s.__call__)(jnp.ones(2))
    assert list(inter) == ["y"]

    def f(model, x):
        return model(x) * 2

    out, inter = nnx.capture(f, nnx.Intermediate)(s, jnp.ones(2))
    assert list(inter) == ["y"] and out.shape == (2,)


def test_capture_several_types():
    class Two(nnx.Module):
        def __call__(self, x):
            self.sow(nnx.Intermediate, "a", x)
            self.sow(nnx.Cache, "b", x)
            return x

    _, a, b = nnx.capture(Two(), nnx.Intermediate, nnx.Cache)(jnp.ones(1))
    assert list(a) == ["a"] and list(b) == ["b"]


def test_capture_method_outputs_matches_flax():
    fnnx = pytest.importorskip("flax.nnx")
    assert _method_output_shapes(nnx) == _method_output_shapes(fnnx)


def _method_output_shapes(lib):
    class M(lib.Module):
        def __init__(self):
            self.lin = lib.Linear(2, 2, rngs=lib.Rngs(0))

        def __call__(self, x):
            return self.lin(x) * 2

    capture = lib.capture(M(), lib.Intermediate, method_outputs=lib.Intermediate)
    _, inter = capture(jnp.ones(2))
    return jax.tree.map(jnp.shape, lib.to_pure_dict(inter))


# ------------------------------------------------------------ iteration
def test_iter_modules_matches_flax():
    fnnx = pytest.importorskip("flax.nnx")

    class FBlock(fnnx.Module):
        def __init__(self, rngs):
            self.linear = fnnx.Linear(2, 3, rngs=rngs)
            self.bn = fnnx.BatchNorm(3, rngs=rngs)
            self.drop = fnnx.Dropout(0.5, rngs=rngs)
            self.layers = fnnx.List([fnnx.Linear(3, 3, rngs=rngs)])

    ours = [p for p, _ in Block(nnx.Rngs(0)).iter_modules()]
    theirs = [p for p, _ in fnnx.iter_modules(FBlock(fnnx.Rngs(0)))]
    assert (
        ours
        == theirs
        == [("bn",), ("drop",), ("layers", 0), ("layers",), ("linear",), ()]
    )
    ours_children = [k for k, _ in Block(nnx.Rngs(0)).iter_children()]
    theirs_children = [k for k, _ in fnnx.iter_children(FBlock(fnnx.Rngs(0)))]
    assert ours_children == theirs_children


def test_iter_modules_visits_shared_module_once():
    class Tied(nnx.Module):
        def __init__(self):
            self.a = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
            self.b = self.a
            self.items = [self.a]

    paths = [p for p, _ in nnx.iter_modules(Tied())]
    assert paths == [("a",), ()]


def test_iter_children_are_immediate():
    net = Net(nnx.Rngs(0))
    assert [k for k, _ in net.iter_children()] == ["head"]  # blocks is a plain list
    assert [k for k, _ in nnx.iter_module_children(net.blocks[0])] == [
        "bn",
        "drop",
        "layers",
        "linear",
    ]


# -------------------------------------------------- mistakes, named loudly
def _dropout_model():
    return nnx.Sequential(
        nnx.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.Dropout(0.1, rngs=nnx.Rngs(0))
    )


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_train_eval_with_unknown_keyword_raise_and_change_nothing(mode):
    m = _dropout_model()
    m.eval() if mode == "train" else m.train()
    before = (m.layers[1].deterministic, m.layers[1].rate)
    with pytest.raises(
        ModuleAttributeError, match=rf"Sequential\.{mode}\(\).*'dropuot'"
    ):
        getattr(m, mode)(rate=0.5, dropuot=0.2)
    assert (m.layers[1].deterministic, m.layers[1].rate) == before
    getattr(m, mode)(rate=0.5)  # a keyword some sub-module has is fine
    assert m.layers[1].rate == 0.5
    assert m.layers[1].deterministic is (mode == "eval")


def test_set_attributes_error_changes_nothing():
    m = _dropout_model()
    with pytest.raises(ModuleAttributeError, match="'nope'"):
        m.set_attributes(rate=0.9, nope=1)
    assert m.layers[1].rate == 0.1
    m.set_attributes(rate=0.9, nope=1, raise_if_not_found=False)
    assert m.layers[1].rate == 0.9


def test_sow_with_something_that_is_not_a_variable_type():
    from ramie.errors import VariableTypeError

    class Block(nnx.Module):
        def __call__(self, x):
            self.sow(jnp.mean, "h", x)
            return x

    class Model(nnx.Module):
        def __init__(self):
            self.block = Block()

    m = Model()
    with pytest.raises(VariableTypeError) as e:
        m.block(jnp.ones(2))
    msg = str(e.value)
    assert "Block.sow(mean, 'h', ...)" in msg and "block.h" in msg
    assert "self.sow(ramie.Intermediate, 'h', value)" in msg
    assert not hasattr(m.block, "h")
