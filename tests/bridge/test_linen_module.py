"""bridge.Module (Linen-style ramie modules) against the same model in Linen."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie

nn = pytest.importorskip("flax.linen")
bridge = ramie.bridge
X = jax.random.normal(jax.random.key(1), (4, 3))


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


class BDense(bridge.Module):
    features: int

    @bridge.compact
    def __call__(self, x):
        w = self.param(
            "kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features)
        )
        b = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return x @ w + b


class BMLP(bridge.Module):
    hidden: int

    @bridge.compact
    def __call__(self, x):
        x = jax.nn.relu(BDense(self.hidden)(x))
        return BDense(2)(x)


class LDense(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        w = self.param(
            "kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features)
        )
        b = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return x @ w + b


class LMLP(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x):
        x = jax.nn.relu(LDense(self.hidden)(x))
        return LDense(2)(x)


def test_compact_names_and_init_values_match_linen():
    ours = BMLP(5).init(jax.random.key(0), X)
    ref = LMLP(5).init(jax.random.key(0), X)
    assert set(ours["params"]) == {"BDense_0", "BDense_1"}
    renamed = {"params": {"LDense_0": ours["params"]["BDense_0"],
                          "LDense_1": ours["params"]["BDense_1"]}}  # fmt: skip
    shapes = jax.tree.map(jnp.shape, renamed)
    assert shapes == jax.tree.map(jnp.shape, dict(ref))
    # same variables in -> same outputs and same gradients as Linen
    close(BMLP(5).apply(ours, X), LMLP(5).apply(renamed, X))
    g_ours = jax.grad(lambda p: BMLP(5).apply({"params": p}, X).sum())(ours["params"])
    g_ref = jax.grad(lambda p: LMLP(5).apply({"params": p}, X).sum())(renamed["params"])
    close(g_ours["BDense_1"]["kernel"], g_ref["LDense_1"]["kernel"])


def test_apply_does_not_change_the_module_and_works_under_jit():
    model = BMLP(5)
    variables = model.init(jax.random.key(0), X)
    y = jax.jit(model.apply)(variables, X)
    close(y, model.apply(variables, X))
    assert "BDense_0" not in vars(model) and model.scope is None


def test_setup_submodules_and_mutable_collection():
    class Counter(bridge.Module):
        def setup(self):
            self.dense = BDense(3)

        def __call__(self, x):
            c = self.variable("counts", "n", lambda: jnp.zeros((), jnp.int32))
            if not self.is_initializing():
                c.value += 1
            return self.dense(x)

    variables = Counter().init(jax.random.key(0), X)
    assert set(variables) == {"params", "counts"}
    assert type(ramie.variable_type_from_name("counts")).__name__ != "Param"
    _, upd = Counter().apply(variables, X, mutable="counts")
    assert int(upd["counts"]["n"]) == 1
    assert int(variables["counts"]["n"]) == 0


def test_make_rng_streams_and_param_requires_a_scope():
    class Noisy(bridge.Module):
        @bridge.compact
        def __call__(self, x):
            return x + jax.random.normal(self.make_rng("noise"), x.shape)

    m = Noisy()
    a = m.apply({}, X, rngs={"noise": jax.random.key(1)})
    b = m.apply({}, X, rngs={"noise": jax.random.key(2)})
    assert not np.allclose(a, b)
    with pytest.raises(ramie.errors.BridgeError, match="init/apply"):
        BDense(2).param("w", nn.initializers.zeros_init(), (1,))


def test_nnx_and_linen_submodules_inside_bridge_module():
    class Mixed(bridge.Module):
        @bridge.compact
        def __call__(self, x):
            x = bridge.nnx_in_bridge_mdl(lambda r: ramie.Linear(3, 4, rngs=r))(x)
            return bridge.linen_in_bridge_mdl(nn.Dense(2), name="head")(x)

    variables = Mixed().init(jax.random.key(0), X)
    assert set(variables["params"]) == {"Linear_0", "head"}
    p = variables["params"]
    ref = (X @ p["Linear_0"]["kernel"] + p["Linear_0"]["bias"]) @ p["head"][
        "kernel"
    ] + p["head"]["bias"]
    close(Mixed().apply(variables, X), ref)


def test_attr_priority_decides_the_name_of_a_shared_submodule():
    class Top(bridge.Module):
        def setup(self):
            self.zzz = BDense(2)
            self.set_attr_priority("zzz", bridge.AttrPriority.HIGH)
            self.aaa = self.zzz

        def __call__(self, x):
            return self.aaa(x)

    assert set(Top().init(jax.random.key(0), X)["params"]) == {"zzz"}


def test_with_partitioning_gives_linen_partitioned_boxes():
    class P(bridge.Module):
        @bridge.compact
        def __call__(self, x):
            w = self.param(
                "w",
                bridge.with_partitioning(nn.initializers.ones_init(), ("in", "out")),
                (x.shape[-1], 2),
            )
            return x @ w

    variables = P().init(jax.random.key(0), X)
    assert isinstance(variables["params"]["w"], nn.Partitioned)
    assert variables["params"]["w"].names == ("in", "out")
    assert nn.get_partition_spec(variables)["params"][
        "w"
    ] == jax.sharding.PartitionSpec("in", "out")
    close(P().apply(variables, X), X @ jnp.ones((3, 2)))


def test_current_module_and_context():
    seen = []

    class Probe(bridge.Module):
        @bridge.compact
        def __call__(self):
            seen.append(
                (bridge.current_module() is self, bridge.current_context().in_compact)
            )

    Probe().apply({})
    assert seen == [(True, True)]
    assert bridge.current_module() is None


def test_update_adds_entries_a_lazy_bridge_module_has_not_created_yet():
    class Holder(bridge.Module):
        a: int

    src = ramie.Param(jnp.array(2.0))
    foo = Holder(1)
    ramie.update(foo, {"b": {"c": src}})
    assert foo.b["c"] is not src  # a copy: the source State stays independent
    assert float(foo.b["c"].value) == 2.0
    assert list(ramie.state(foo).flat_paths()) == [("b", "c")]


def test_update_into_a_bridge_module_is_all_or_nothing():
    class Holder(bridge.Module):
        a: int

    class Outer(ramie.Module):
        def __init__(self):
            self.lazy = Holder(1)
            self.linear = ramie.Linear(2, 2, rngs=ramie.Rngs(0))

    model = Outer()
    bad = {"lazy": {"w": ramie.Param(jnp.ones(3))}, "linear": {"nope": jnp.ones(2)}}
    with pytest.raises(ramie.errors.StateLoadError, match="linear.nope"):
        ramie.update(model, bad)
    assert "w" not in vars(model.lazy)  # nothing was added
    # an ordinary module still refuses paths it does not have
    with pytest.raises(ramie.errors.StateLoadError, match="extra"):
        ramie.update(model.linear, {"extra": jnp.ones(2)})
