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
    with pytest.raises(ModuleAttributeError, match="bogus"):
        net.eval(bogus=1)  # a keyword no sub-module has is a typo, not ignored
    assert not net.blocks[1].drop.deterministic  # and nothing changed


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
    with pytest.raises(
        ValueError,
        match=r"(?s)`deterministic` is False, but no `rngs` argument was provided "
        r"to Dropout.*no RNG stream.*model\.eval\(\)",
    ):
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


def test_view_info_matches_flax_for_builtin_layers():
    fnnx = pytest.importorskip("flax.nnx")

    def info(lib, only=...):
        class B(lib.Module):
            def __init__(self, rngs):
                self.linear = lib.Linear(2, 3, rngs=rngs)
                self.bn = lib.BatchNorm(3, rngs=rngs)
                self.drop = lib.Dropout(0.5, rngs=rngs)

        text = lib.view_info(lib.List([B(lib.Rngs(0)), B(lib.Rngs(1))]), only=only)
        # (class name, parameter) lines; descriptions are each library's own words
        return [ln for ln in text.splitlines() if not ln.startswith("    ")]

    assert info(nnx) == info(fnnx)
    assert info(nnx, only=nnx.Dropout) == info(fnnx, only=fnnx.Dropout)
    assert info(nnx, only=nnx.MultiHeadAttention) == []


def test_view_info_reads_a_custom_set_view_docstring():
    class Custom(nnx.Module):
        def set_view(self, flag: bool | None = None, *, n: int = 2, **kwargs):
            """Custom options.

            Args:
                flag: Turns the thing on.
                n: How many,
                    over two lines.

            Returns:
                Unused options.
            """
            return kwargs

    class NoDoc(nnx.Module):
        def set_view(self, level: int = 0):
            self.level = level

    text = nnx.view_info(nnx.List([Custom(), NoDoc()]))
    assert text.splitlines() == [
        f"{Custom.__qualname__}:",
        "  flag: bool | None = None",
        "    Turns the thing on.",
        "  n: int = 2",
        "    How many,",
        "    over two lines.",
        f"{NoDoc.__qualname__}:",
        "  set_view(self, level: 'int' = 0)",
    ]


def test_view_passes_a_set_view_without_kwargs_only_its_options():
    class Levels(nnx.Module):
        def __init__(self):
            self.level = 0

        def set_view(self, level: int | None = None):
            if level is not None:
                self.level = level

    net = nnx.List([Levels(), nnx.Dropout(0.5, rngs=nnx.Rngs(0))])
    v = nnx.view(net, level=3, deterministic=True)
    assert v[0].level == 3 and v[1].deterministic and net[0].level == 0
    with pytest.raises(
        ValueError, match=r"Unused keys found in nnx\.view: \['other'\]"
    ):
        nnx.view(net, level=1, other=2)


def test_attribute_errors_are_value_errors_with_flax_wording():
    net = Net(nnx.Rngs(0))
    match = (
        r"Could not find at least one instance of the following attributes: "
        r"\['zzz'\]"
    )
    with pytest.raises(ValueError, match=match):
        net.set_attributes(deterministic=True, zzz=1)
    with pytest.raises(ValueError, match=match):
        nnx.with_attributes(net, deterministic=True, zzz=1)
    w = nnx.with_attributes(net, deterministic=True, zzz=1, raise_if_not_found=False)
    assert w.blocks[0].drop.deterministic


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
            h = self.perturb("h", x * self.w[...])
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


def test_capture_as_decorator_installs_and_removes_captures():
    seen = []

    @nnx.capture(nnx.Intermediate, nnx.Cache)
    def run(model, x):
        seen.append(tuple(type(v) for v in model.__captures__))
        seen.append(tuple(type(v) for v in model.lin.__captures__))
        return model(x)

    s = Sower()
    out, inter, cache = run(s, jnp.ones(2))
    assert seen == [(nnx.Intermediate, nnx.Cache)] * 2
    assert list(inter) == ["y"] and list(cache) == []
    assert not hasattr(s, "__captures__") and not hasattr(s.lin, "__captures__")
    assert not hasattr(s, "y")  # sown into the capture, not onto the module


def test_capture_removes_buffers_when_the_function_raises():
    s = Sower()

    def boom(model):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        nnx.capture(boom, nnx.Intermediate)(s)
    assert not hasattr(s, "__captures__")


def test_sow_of_a_type_not_captured_is_skipped():
    class Only(nnx.Intermediate):
        pass

    class Other(nnx.Intermediate):
        pass

    class M(nnx.Module):
        def __call__(self, x):
            return self.sow(Only, "a", x), self.sow(Other, "b", x)

    m = M()
    flags, state = nnx.capture(m, Only)(jnp.ones(1))
    assert flags == (True, False)
    assert list(state) == ["a"] and not hasattr(m, "b")


def test_sow_inside_capture_does_not_hide_a_method():
    class Features(nnx.Module):
        def features(self, x):
            self.sow(nnx.Intermediate, "features", x * 2)
            return x * 2

        def __call__(self, x):
            return self.features(x) + self.features(x + 1)

    m = Features()
    out, inter = nnx.capture(m, nnx.Intermediate)(jnp.ones(2))
    assert len(inter["features"].value) == 2 and callable(m.features)
    with pytest.raises(
        ValueError,
        match=r"(?s)Expected 'features' to be a Variable, got method.*"
        r"ramie\.capture",
    ):
        m(jnp.ones(2))  # outside capture the Variable would hide the method


@pytest.mark.parametrize(
    "existing, match",
    [
        (10, r"Expected 'y' to be a Variable, got int"),
        ("param", r"Expected 'y' to be of type 'Intermediate', got 'Param'"),
    ],
)
def test_sow_into_an_existing_attribute_is_a_value_error(existing, match):
    s = Sower()
    s.y = nnx.Param(jnp.ones(1)) if existing == "param" else existing
    with pytest.raises(ValueError, match=match):
        s(jnp.ones(2))


def _perturbation_grads(lib):
    class Model(lib.Module):
        def __init__(self):
            self.w = lib.Param(jnp.array([1.0, -2.0]))

        def __call__(self, x):
            h = self.perturb("h", x * self.w[...])
            self.sow(lib.Intermediate, "h_value", h)
            return jnp.sum(jnp.sin(h))

    model = Model()
    x = jnp.array([0.5, 1.5])
    _, perturbations = lib.capture(model, lib.Perturbation)(x)

    def loss(model, perturbations, x):
        return lib.capture(model, lib.Intermediate, init=perturbations)(x)

    (_, pgrads), sowed = lib.grad(loss, argnums=(0, 1), has_aux=True)(
        model, perturbations, x
    )
    return pgrads["h"].get_value(), sowed["h_value"].get_value()[0]


def test_perturbation_gradients_through_capture_init_match_flax():
    fnnx = pytest.importorskip("flax.nnx")
    ours, ref = _perturbation_grads(nnx), _perturbation_grads(fnnx)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-6)  # cos(h), not 0
    np.testing.assert_allclose(ours[1], ref[1], rtol=1e-6)
    assert np.all(np.asarray(ours[0]) != 0)


def _init_only_grads(lib):
    class Model(lib.Module):
        def __init__(self):
            self.w = lib.Param(jnp.array([1.0, -2.0]))

        def __call__(self, x):
            return jnp.sum(jnp.sin(self.perturb("h", x * self.w[...])))

    model, x = Model(), jnp.array([0.5, 1.5])
    _, perturbations = lib.capture(model, lib.Perturbation)(x)

    @lib.value_and_grad(argnums=(0, 1))
    def loss_grad(model, perturbations, x):
        return lib.capture(lambda m: m(x), init=perturbations)(model)

    loss, (_, pgrads) = loss_grad(model, perturbations, x)
    return loss, pgrads["h"].get_value()


def test_capture_with_only_init_returns_the_result_alone_as_flax():
    # the pytree guide's recipe: the captured loss is the scalar grad needs
    fnnx = pytest.importorskip("flax.nnx")
    (loss, grads), (f_loss, f_grads) = _init_only_grads(nnx), _init_only_grads(fnnx)
    assert jnp.shape(loss) == ()
    np.testing.assert_allclose(loss, f_loss, rtol=1e-6)
    np.testing.assert_allclose(grads, f_grads, rtol=1e-6)
    np.testing.assert_allclose(grads, np.cos(np.array([0.5, -3.0])), rtol=1e-6)


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
