"""Tests for ``ramie.jit`` beyond plain calls: ahead-of-time ``lower``/``compile``,
``cached_partial`` clones, ``jax.Ref`` arguments and results, in_shardings that
place argument state, one Variable given two shardings, and ``make_jaxpr``'s
refusal of graph updates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import ramie
from ramie.errors import RamieError


class Stepper(ramie.Module):
    def __init__(self):
        self.count = ramie.Variable(jnp.array(0))
        self.w = ramie.Param(jnp.arange(6.0).reshape(2, 3))


def step(m, x):
    m.count.value += 1
    return x @ m.w.value


# ------------------------------------------------------------ lower/compile
@pytest.mark.parametrize("graph", [True, False])
def test_compiled_call_applies_updates_and_matches_eager(graph):
    m, ref = Stepper(), Stepper()
    x = jnp.arange(4.0).reshape(2, 2)
    f = ramie.jit(step, graph=graph, graph_updates=graph)
    compiled = f.lower(m, x).compile()
    assert "dot" in compiled.as_text()  # jax.stages.Compiled attributes forwarded
    assert compiled.cost_analysis() is not None
    for n in (1, 2):
        np.testing.assert_allclose(compiled(m, x), step(ref, x))
        assert int(m.count.value) == int(ref.count.value) == n


def test_compiled_call_takes_other_module_of_same_structure():
    m1, m2 = Stepper(), Stepper()
    m2.w.value = m2.w.value * 2
    x = jnp.ones((1, 2))
    compiled = ramie.jit(step).lower(m1, x).compile()
    y = compiled(m2, x)
    np.testing.assert_allclose(y, x @ m2.w.value)
    assert (int(m1.count.value), int(m2.count.value)) == (0, 1)


def test_compiled_call_with_donated_module():
    m, ref = Stepper(), Stepper()
    x = jnp.ones((1, 2))
    compiled = ramie.jit(step, donate_argnums=0).lower(m, x).compile()
    np.testing.assert_allclose(compiled(m, x), step(ref, x))
    assert int(m.count.value) == 1


@pytest.mark.parametrize("graph", [True, False])
def test_jit_partial_lower_compile_binds_the_module(graph):
    m, ref = Stepper(), Stepper()
    x = jnp.ones((1, 2))
    f = ramie.jit_partial(step, m, graph=graph, graph_updates=False)
    compiled = f.lower(x).compile()
    for n in (1, 2):
        np.testing.assert_allclose(compiled(x), step(ref, x))
        assert int(m.count.value) == n


# ------------------------------------------------------------ cached_partial
def test_cached_partial_binds_a_clone_sharing_variables():
    m = ramie.Linear(2, 3, rngs=ramie.Rngs(0))
    seen = []

    @ramie.jit
    def f(cached, model, x):
        seen.append((cached is model, cached.kernel is model.kernel))
        cached.bias.value = cached.bias.value + 1.0
        return cached, model(x)

    g = ramie.cached_partial(f, m)
    x = jnp.ones((1, 2))
    clone, y = g(m, x)
    assert seen == [(False, True)]  # two objects inside, one set of Variables
    assert clone is not m and clone.kernel is m.kernel and clone.bias is m.bias
    np.testing.assert_allclose(m.bias.value, np.ones(3))
    np.testing.assert_allclose(y, x @ m.kernel.value + 1.0, rtol=1e-6)
    clone2, _ = g(m, x)
    assert clone2 is clone  # the bound clone is reused
    np.testing.assert_allclose(m.bias.value, 2 * np.ones(3))


def test_cached_partial_keeps_sharing_between_bound_arguments():
    m = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
    holder = ramie.Dict(inner=m)
    g = ramie.cached_partial(lambda a, b: (a, b), m, holder)
    a, b = g()
    assert a is not m and b is not holder
    assert b["inner"] is a  # shared module stays shared in the clones


def test_cached_partial_refuses_tree_mode():
    m = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
    with pytest.raises(RamieError, match="graph-mode-only API") as e:
        ramie.cached_partial(ramie.jit(step), m, graph=False)
    assert "jit_partial" in str(e.value)


# ------------------------------------------------------------ jax.Ref
def test_ref_argument_returned_is_the_callers_ref_and_new_refs_come_out():
    r = jax.new_ref(jnp.array(1.0))

    @ramie.jit
    def f(r, scale):
        r[...] += 1.0
        return jax.new_ref(r[...] * scale), r, {"plain": r[...]}

    for n in (2.0, 3.0):  # second call takes the cached path
        new, same, rest = f(r, 10.0)
        assert same is r
        assert isinstance(new, jax.Ref) and new is not r
        assert float(r[...]) == n and float(new[...]) == 10.0 * n
        assert float(rest["plain"]) == n


# ------------------------------------------------------------ shardings
def _mesh():
    if len(jax.devices()) < 4:
        pytest.skip("needs 4 devices")
    devices = np.array(jax.devices()[:4]).reshape(2, 2)
    return jax.sharding.Mesh(devices, ("a", "b"))


def test_in_shardings_place_state_the_function_only_reads():
    mesh = _mesh()
    spec = ramie.StateSharding(
        {
            ramie.PathContains("kernel"): NamedSharding(mesh, P("a", "b")),
            ramie.PathContains("bias"): NamedSharding(mesh, P("b")),
        }
    )
    m = ramie.Linear(16, 32, rngs=ramie.Rngs(0))
    before = np.asarray(m.kernel.value)
    assert not isinstance(m.kernel.value.sharding, NamedSharding)
    f = ramie.jit(lambda m: None, in_shardings=(spec,))
    f(m)
    assert m.kernel.value.sharding.spec == P("a", "b")
    assert m.bias.value.sharding.spec == P("b")
    np.testing.assert_array_equal(np.asarray(m.kernel.value), before)


def test_one_variable_given_two_shardings_is_an_error():
    v = ramie.Param(jnp.ones(4))
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("x",))
    f = ramie.jit(lambda a, b: a.value + b.value, in_shardings=(P(), P("x")))
    with jax.set_mesh(mesh):
        with pytest.raises(ValueError, match="Inconsistent aliasing") as e:
            f(v, v)
        assert "args[0]" in str(e.value) and "args[1]" in str(e.value)
        same = ramie.jit(lambda a, b: a.value + b.value, in_shardings=(P(), P()))
        np.testing.assert_allclose(same(v, v), 2 * np.ones(4))


# ------------------------------------------------------------ make_jaxpr
def test_make_jaxpr_refuses_graph_updates_and_applies_nothing():
    c = ramie.Variable(jnp.array(0))

    def bump(c):
        c.value += 1
        return c.value

    with pytest.raises(RamieError, match="does not support graph_updates=True"):
        ramie.make_jaxpr(bump, graph=True, graph_updates=True)(c)
    jaxpr = ramie.make_jaxpr(bump, graph_updates=False)(c)
    assert "add" in str(jaxpr)
    assert int(c.value) == 0


# ------------------------------------------------------------ shard_map
class MLP(ramie.Module):
    def __init__(self, rngs):
        self.linear1 = ramie.Linear(2, 64, use_bias=False, rngs=rngs)
        self.linear2 = ramie.Linear(64, 3, use_bias=False, rngs=rngs)

    def __call__(self, x):
        return self.linear2(jax.nn.relu(self.linear1(x)))


def test_shard_map_tensor_parallel_layers_see_local_kernel_shards():
    """A Linear whose kernel is a shard (inside shard_map) takes inputs of the
    shard's size: the in_features check follows the kernel it actually holds."""
    n = 4
    if len(jax.devices()) < n:
        pytest.skip("needs 4 devices")
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:n]), ("model",))
    m = MLP(ramie.Rngs(0))
    x = jnp.linspace(-1.0, 1.0, 64).reshape(32, 2)
    spec = ramie.StateSharding(
        {
            ramie.PathContains("linear1"): P(None, "model"),
            ramie.PathContains("linear2"): P("model", None),
        }
    )
    shapes = []

    def f(m, x):
        shapes.append((m.linear1.kernel.value.shape, m.linear2.kernel.value.shape))
        return jax.lax.psum(m(x), "model")

    sm = ramie.shard_map(f, mesh=mesh, in_specs=(spec, P()), out_specs=P())
    y = sm(m, x)
    assert shapes == [((2, 64 // n), (64 // n, 3))]
    np.testing.assert_allclose(y, m(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(RamieError, match="in_features=64"):
        m.linear2(jnp.ones((1, 16)))  # outside shard_map the check still holds


# ------------------------------------------------------------ out_shardings
@pytest.mark.parametrize("kind", ["prefix", "state_sharding"])
def test_out_shardings_per_variable_place_a_returned_module(kind):
    mesh = _mesh()
    kernel_sh, bias_sh = NamedSharding(mesh, P("a", "b")), NamedSharding(mesh, P("b"))
    table = {
        ramie.PathContains("kernel"): kernel_sh,
        ramie.PathContains("bias"): bias_sh,
    }
    template = ramie.Linear(16, 32, rngs=ramie.Rngs(0))
    spec = (
        ramie.prefix(template, table)
        if kind == "prefix"
        else ramie.StateSharding(table)
    )

    @ramie.jit(out_shardings=(spec, NamedSharding(mesh, P())))
    def make(scale):
        m = ramie.Linear(16, 32, rngs=ramie.Rngs(0))
        # the out_shardings entry wins over a constraint made inside
        m.kernel.value = jax.lax.with_sharding_constraint(
            m.kernel.value * scale, NamedSharding(mesh, P("b", "a"))
        )
        return m, scale * 2

    m, y = make(2.0)
    assert m.kernel.value.sharding.spec == P("a", "b")
    assert m.bias.value.sharding.spec == P("b")
    assert y.sharding.spec == P()
    np.testing.assert_allclose(m.kernel.value, 2.0 * template.kernel.value)


# ------------------------------------------------------------ graph_updates=False
class Pair(ramie.Module):
    def __init__(self):
        self.a = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
        self.b = ramie.Linear(2, 2, rngs=ramie.Rngs(1))


@pytest.mark.parametrize("graph_updates", [True, False])
def test_structure_changes_come_back_only_with_graph_updates(graph_updates):
    m = Pair()
    a, b = m.a, m.b

    @ramie.jit(graph=True, graph_updates=graph_updates)
    def swap_and_zero(tree):
        mod = tree[0]["pair"]
        mod.a, mod.b = mod.b, mod.a
        mod.a.bias.value = jnp.full(2, 7.0)  # the old b's bias Variable
        mod.extra = 1

    swap_and_zero(({"pair": m},))
    if graph_updates:
        assert m.a is b and m.b is a and m.extra == 1
    else:
        assert m.a is a and m.b is b and not hasattr(m, "extra")
    # the value update reaches the Variable either way
    np.testing.assert_allclose(b.bias.value, np.full(2, 7.0))
    np.testing.assert_allclose(a.bias.value, np.zeros(2))


@pytest.mark.parametrize("graph", [True, False])
def test_shard_map_state_argument_with_a_state_of_specs(graph):
    """A State prefix applies key by key to a State argument (from split)."""
    n = 4
    if len(jax.devices()) < n:
        pytest.skip("needs 4 devices")
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:n]), ("a",))
    m = ramie.Linear(16, 32, rngs=ramie.Rngs(0))
    graphdef, state = ramie.split(m)
    specs = ramie.State({"kernel": P(None, "a"), "bias": P()})
    x = jnp.linspace(0.0, 1.0, 32).reshape(2, 16)
    shapes = []

    def f(state, x):
        local = ramie.merge(graphdef, state)
        shapes.append((local.kernel.value.shape, local.bias.value.shape))
        return x @ local.kernel.value + local.bias.value.sum()

    sm = ramie.shard_map(
        f,
        mesh=mesh,
        in_specs=(specs, P()),
        out_specs=P(None, "a"),
        graph=graph,
        graph_updates=False,
    )
    y = sm(state, x)
    assert shapes == [((16, 32 // n), (32,))]
    expected = x @ m.kernel.value + m.bias.value.sum()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_graph_updates_false_keeps_bare_array_attribute_updates():
    class Holder(ramie.Module):
        def __init__(self):
            self.total = jnp.zeros(2)  # a bare array: a state leaf, no Variable

    h = Holder()

    @ramie.jit(graph=True, graph_updates=False)
    def add(h, x):
        h.total = h.total + x
        h.note = "dropped"

    add(h, jnp.ones(2))
    add(h, jnp.ones(2))
    np.testing.assert_allclose(h.total, [2.0, 2.0])
    assert not hasattr(h, "note")


# ------------------------------------------------------------ cached path
class StateHolder(ramie.Module):
    def __init__(self):
        self.s = ramie.State({"w": ramie.Param(jnp.ones(2))})


def test_cached_path_sees_a_state_entry_replaced_between_calls():
    """States inside the arguments (an Optimizer's opt_state) are checked on
    every call: unchanged, the call takes the fast path without flattening;
    an entry replaced or renamed rebuilds the entry."""
    from tx_helpers import stats_delta

    h = StateHolder()
    f = ramie.jit(lambda h: h.s["w"].value.sum() + 0.0 * len(h.s))
    assert float(f(h)) == 2.0
    with stats_delta() as d:
        assert float(f(h)) == 2.0
    assert d["fast_calls"] == 1 and d["flattens"] == 0 and d["traces"] == 0
    h.s["w"] = ramie.Param(jnp.full(2, 3.0))
    assert float(f(h)) == 6.0
    w = h.s.pop("w")
    h.s["v"] = w  # same child, another key: a stale entry would still run
    with pytest.raises(KeyError):
        f(h)
    g = ramie.jit(lambda h: sum(v.value.sum() for v in h.s.values()) + len(h.s))
    assert float(g(h)) == 7.0
    h.s["u"] = ramie.Param(jnp.ones(2))
    assert float(g(h)) == 10.0


def _replace_w(s, how):
    """Replace ``s["w"]`` by a new Param of 3s through one State method."""
    new = ramie.Param(jnp.full(2, 3.0))
    if how == "setitem":
        s["w"] = new
    elif how == "setattr":
        s.w = new
    elif how == "update":
        s.update(w=new)
    elif how == "ior":
        s |= {"w": new}
    elif how == "setdefault":
        del s["w"]
        s.setdefault("w", new)
    elif how == "pop":
        s.pop("w")
        dict.__setitem__(s, "w", new)  # the pop alone must be seen
    elif how == "popitem":
        s.popitem()
        dict.__setitem__(s, "w", new)
    elif how == "clear":
        s.clear()
        dict.__setitem__(s, "w", new)
    elif how == "delattr":
        del s.w
        dict.__setitem__(s, "w", new)


@pytest.mark.parametrize(
    "how",
    ["setitem", "setattr", "update", "ior", "setdefault", "pop", "popitem", "clear",
     "delattr"],
)  # fmt: skip
def test_cached_path_sees_every_kind_of_state_change(how):
    """Every in-place change of a State held by the arguments is seen by the
    cached path, whichever State method made it."""
    from tx_helpers import stats_delta

    h = StateHolder()
    f = ramie.jit(lambda h: h.s["w"].value.sum())
    assert float(f(h)) == 2.0
    _replace_w(h.s, how)
    with stats_delta() as d:
        assert float(f(h)) == 6.0
    assert d["flattens"] == 1 and d["state_checks"] == 1


def test_cached_path_checks_states_only_after_a_state_changed():
    """The States of an Optimizer are compared with their snapshot only after
    some State changed somewhere; an unchanged step compares nothing."""
    from tx_helpers import adam_step_setup, stats_delta

    model, opt, step = adam_step_setup()
    with stats_delta() as d:
        for _ in range(5):
            step(model, opt)
    assert d["fast_calls"] == 5 and d["state_checks"] == 0 and d["flattens"] == 0
    other = ramie.State({"a": ramie.Param(jnp.ones(1))})
    other["b"] = ramie.Param(jnp.ones(1))  # an unrelated State changed
    with stats_delta() as d:
        step(model, opt)
        step(model, opt)
    assert d["state_checks"] == 1 and d["flattens"] == 0 and d["fast_calls"] == 2


def test_state_update_nests_mappings_like_setitem():
    s = ramie.State({"a": ramie.Param(jnp.ones(1))})
    s.update({"b": {"c": ramie.Param(jnp.zeros(1))}}, d=ramie.Param(jnp.ones(2)))
    assert type(s["b"]) is ramie.State and sorted(s) == ["a", "b", "d"]
    s |= {"e": {"f": 1}}
    assert type(s["e"]) is ramie.State and s["e"]["f"] == 1
    assert s.setdefault("a") is s["a"] and s.setdefault("g", 5) == 5


def test_in_shardings_apply_to_modules_nested_in_containers():
    """Modules inside a list/dict argument take the general path: its
    in_shardings place every Variable inside (per filter) and the other leaves."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ("x",))
    spec = ramie.StateSharding(
        {
            ramie.PathContains("kernel"): NamedSharding(mesh, P(None, "x")),
            ...: NamedSharding(mesh, P()),
        }
    )
    m = ramie.Linear(2, 8, rngs=ramie.Rngs(0))
    x = jnp.arange(16.0).reshape(8, 2)

    @ramie.jit(in_shardings=(spec, NamedSharding(mesh, P("x"))))
    def f(tree, x):
        return x * 2, tree["layers"][0](x)

    y, z = f({"layers": [m]}, x)
    assert m.kernel.value.sharding.spec == P(None, "x")
    assert m.bias.value.sharding.spec == P()
    assert y.sharding.spec == P("x")
    np.testing.assert_allclose(y, 2 * x)
    np.testing.assert_allclose(z, x @ m.kernel.value + m.bias.value, rtol=1e-6)


def test_a_cached_train_step_runs_two_python_functions():
    """The cached path of a train step (model, Optimizer with adam, batch) runs
    two Python functions - ``__call__`` and the trace check - however large
    the model: everything else (key, validity stamp, gather, the jitted call,
    write-back) is C calls."""
    import functools
    import sys

    import optax

    def python_calls(fn) -> list[str]:
        names = []

        def profile(frame, event, arg):
            if event == "call":
                names.append(frame.f_code.co_name)

        sys.setprofile(profile)
        try:
            fn()
        finally:
            sys.setprofile(None)
        return names

    for depth in (1, 6):
        model = ramie.Sequential(
            *[ramie.Linear(4, 4, rngs=ramie.Rngs(i)) for i in range(depth)]
        )
        opt = ramie.Optimizer(model, optax.adam(1e-3), wrt=ramie.Param)
        x = jnp.ones((2, 4))

        @ramie.jit
        def step(model, opt, x):
            loss, grads = ramie.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
            opt.update(model, grads)
            return loss

        step(model, opt, x)
        step(model, opt, x)
        names = python_calls(functools.partial(step, model, opt, x))
        assert names == ["__call__", "current_trace"], names
