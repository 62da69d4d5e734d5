"""Tests for ``ramie.jit``: values against ``jax.jit`` on the pure split/merge
function, mutations applied exactly as in eager execution, jit options, and the
cached fast path (``STATS`` counters) with its structural-change detection."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tx_helpers import assert_same_model, assert_trees_equal, pure_state, stats_delta

import ramie


class Counter(ramie.Variable):
    pass


class Net(ramie.Module):
    """Linear -> BatchNorm -> Dropout, with a counter: the realistic model."""

    def __init__(self, seed: int = 0):
        rngs = ramie.Rngs(params=seed, dropout=seed + 1)
        self.linear = ramie.Linear(3, 4, rngs=rngs)
        self.bn = ramie.BatchNorm(4, rngs=rngs)
        self.dropout = ramie.Dropout(0.5, rngs=rngs)
        self.count = Counter(jnp.array(0))

    def __call__(self, x):
        self.count.value += 1
        return self.dropout(self.bn(self.linear(x)))


class Small(ramie.Module):
    """Cheap to compile: Linear layers, a counter, a running statistic, a flag."""

    def __init__(self, seed: int = 0):
        rngs = ramie.Rngs(seed)
        self.linear = ramie.Linear(3, 4, rngs=rngs)
        self.layers = [ramie.Linear(4, 4, rngs=rngs)]
        self.count = Counter(jnp.array(0))
        self.stat = ramie.BatchStat(jnp.zeros(4))
        self.scale = 1.0
        self.cfg = {"shift": [0.0]}  # static, but mutable in place
        self.deterministic = False

    def __call__(self, x):
        self.count.value += 1
        x = self.linear(x) * self.scale + sum(self.cfg["shift"])
        for layer in self.layers:
            x = layer(x)
        if not self.deterministic:
            self.stat.value = 0.9 * self.stat.value + 0.1 * x.mean(0)
        return x + self.stat.value


X = jax.random.normal(jax.random.key(0), (5, 3))


def forward(model, x):
    return model(x)


jit_forward = ramie.jit(forward)


# ----------------------------------------------------------- reference values
def test_matches_jax_jit_on_pure_split_merge_function():
    model = Net()
    model.train()
    graphdef, state = ramie.split(model)

    @jax.jit
    def pure(graphdef, state, x):
        m = ramie.merge(graphdef, state)
        y = m(x)
        return y, ramie.split(m)[1]

    y_ref, state_ref = pure(graphdef, state, X)
    y = jit_forward(model, X)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
    assert_trees_equal(
        pure_state(model),
        jax.tree.map(np.asarray, _pure_keys(state_ref)),
        rtol=1e-6,
        atol=1e-7,
    )
    # the mutations really happened (not a trivially equal comparison)
    assert int(model.count.value) == 1
    assert int(model.dropout.rngs.count.value) == 1
    assert not np.allclose(model.bn.mean.value, 0.0)


def _pure_keys(state):
    def conv(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x

    return jax.tree.map(conv, ramie.to_pure_dict(state))


def test_output_equals_eager_call_in_eval_mode():
    model = Small()
    model.eval()
    eager = ramie.clone(model)
    np.testing.assert_allclose(jit_forward(model, X), eager(X), rtol=1e-5, atol=1e-6)
    assert_same_model(model, eager)


# ----------------------------------------------------- mutations (as eager)
def _bn_and_dropout(m, x):
    return m(x)


def _new_attributes(m, x):
    m.new_param = ramie.Param(jnp.ones(2) * x.sum())
    m.new_module = ramie.Linear(2, 2, rngs=ramie.Rngs(3))
    m.note = "hello"
    return m.new_module(jnp.ones((1, 2)))


def _replace_submodule(m, x):
    m.linear = ramie.Linear(3, 4, rngs=ramie.Rngs(7))
    return m(x)


def _list_append(m, x):
    m.layers.append(ramie.Linear(4, 4, rngs=ramie.Rngs(5)))
    return m(x)


def _list_pop(m, x):
    m.layers.append(ramie.Linear(4, 4, rngs=ramie.Rngs(5)))
    m.layers.pop(0)
    return m(x)


def _static_attribute(m, x):
    m.scale = 3.0
    return m(x)


def _eval_inside(m, x):
    m.eval()
    return m(x)


def _train_inside(m, x):
    m.train()
    return m(x)


def _variable_replaced(m, x):
    m.count = Counter(jnp.array(10))
    m.linear.bias = ramie.Param(jnp.full((4,), 0.5))
    return m(x)


def _metadata_changed(m, x):
    m.linear.kernel.set_metadata(tag="changed")
    return m(x)


def _tie_weights(m, x):
    m.layers.append(m.layers[0])
    m.alias = m.linear
    return m(x)


def _delete_attribute(m, x):
    del m.scale
    m.scale = 2.0
    del m.layers[0]
    return m(x)


MUTATIONS = [
    _bn_and_dropout,
    _new_attributes,
    _replace_submodule,
    _list_append,
    _list_pop,
    _static_attribute,
    _eval_inside,
    _train_inside,
    _variable_replaced,
    _metadata_changed,
    _tie_weights,
    _delete_attribute,
]


@pytest.mark.parametrize("fn", MUTATIONS, ids=lambda f: f.__name__.strip("_"))
def test_mutations_inside_are_applied_as_in_eager_execution(fn):
    model = Net() if fn is _bn_and_dropout else Small()
    if fn is _train_inside:
        model.eval()
    eager = ramie.clone(model)
    y = ramie.jit(fn)(model, X)
    y_eager = fn(eager, X)
    np.testing.assert_allclose(y, y_eager, rtol=1e-5, atol=1e-6)
    assert_same_model(model, eager)
    # running again continues from the updated state, still as eager does
    y2 = jit_forward(model, X)
    np.testing.assert_allclose(y2, eager(X), rtol=1e-5, atol=1e-6)
    assert_same_model(model, eager)


def test_structural_changes_inside_keep_container_types_and_identity():
    model = Small()
    layer0 = model.layers[0]

    @ramie.jit
    def grow(m):
        m.layers.append(ramie.Linear(4, 4, rngs=ramie.Rngs(1)))
        return m.layers[-1]

    last = grow(model)
    assert len(model.layers) == 2
    assert model.layers[0] is layer0
    assert last is model.layers[1]  # the output is the caller's (new) object
    # appending eagerly afterwards still works and is seen by the next call
    model.layers.append(ramie.Linear(4, 4, rngs=ramie.Rngs(2)))
    eager = ramie.clone(model)
    np.testing.assert_allclose(jit_forward(model, X), eager(X), rtol=1e-5, atol=1e-6)


def test_rng_counts_advance_like_eager():
    rngs = ramie.Rngs(params=0, dropout=1)
    ref = ramie.Rngs(params=0, dropout=1)
    draw = ramie.jit(lambda r: (r.dropout(), r.params()))
    for _ in range(3):
        k1, k2 = draw(rngs)
        e1, e2 = ref.dropout(), ref.params()
        assert_trees_equal((k1, k2), (e1, e2))
    assert int(rngs.dropout.count.value) == 3


# ------------------------------------------------------------- jit options
def test_static_argnums_and_argnames():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))

    @ramie.jit(static_argnums=2)
    def f(m, x, n):
        assert isinstance(n, int)  # a Python value, not a tracer
        return m(x) * n

    @ramie.jit(static_argnames="n")
    def g(m, x, *, n):
        assert isinstance(n, int)
        return m(x) * n

    expected = model(X)
    with stats_delta() as d:
        np.testing.assert_allclose(f(model, X, 2), 2 * expected, rtol=1e-6)
        np.testing.assert_allclose(f(model, X, 3), 3 * expected, rtol=1e-6)
        np.testing.assert_allclose(f(model, X, 2), 2 * expected, rtol=1e-6)
    assert d["traces"] == 2  # one per static value
    np.testing.assert_allclose(g(model, X, n=4), 4 * expected, rtol=1e-6)
    # a static argument given by keyword is still static
    np.testing.assert_allclose(f(model, X, n=5), 5 * expected, rtol=1e-6)


def test_static_argument_controls_python_structure():
    model = Small()

    @ramie.jit(static_argnames=("n_layers",))
    def grow(m, n_layers):
        while len(m.layers) < n_layers:
            m.layers.append(ramie.Linear(4, 4, rngs=ramie.Rngs(len(m.layers))))

    grow(model, n_layers=3)
    assert len(model.layers) == 3
    grow(model, n_layers=3)
    assert len(model.layers) == 3


@pytest.mark.parametrize("how", ["argnums", "argnames"])
def test_donate_updates_buffers_and_never_uses_deleted_ones(how):
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    kw = {"donate_argnums": 0} if how == "argnums" else {"donate_argnames": "m"}

    @ramie.jit(**kw)
    def step(m, x):
        m.kernel.value = m.kernel.value - 0.1 * x.sum()
        return m(x)

    k0 = np.array(model.kernel.value)
    b0 = np.array(model.bias.value)
    ref = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    for i in range(1, 4):
        old_kernel = model.kernel.get_value()
        y = step(model, X)
        ref.kernel.value = ref.kernel.value - 0.1 * X.sum()
        np.testing.assert_allclose(y, ref(X), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            model.kernel.value, k0 - 0.1 * i * X.sum(), rtol=1e-5
        )
        assert old_kernel.is_deleted()  # really donated
        # the unchanged (but donated) bias still holds a live buffer
        assert not model.bias.get_value().is_deleted()
        np.testing.assert_array_equal(model.bias.value, b0)
    # eager use after donation works
    np.testing.assert_allclose(model(X), ref(X), rtol=1e-5, atol=1e-5)


def test_donate_only_the_named_argument():
    a = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
    b = ramie.Linear(2, 2, rngs=ramie.Rngs(1))

    @ramie.jit(donate_argnums=0)
    def f(a, b):
        a.bias.value = a.bias.value + b.bias.value + 1

    old_a, old_b = a.bias.get_value(), b.bias.get_value()
    f(a, b)
    assert old_a.is_deleted() and not old_b.is_deleted()
    np.testing.assert_array_equal(a.bias.value, np.ones(2))


def test_modules_as_keyword_arguments():
    model = Small()
    eager = ramie.clone(model)

    @ramie.jit
    def f(x, *, model, scale=1.0):
        return model(x) * scale

    y = f(X, model=model, scale=2.0)
    np.testing.assert_allclose(y, 2.0 * eager(X), rtol=1e-5, atol=1e-6)
    assert_same_model(model, eager)
    with stats_delta() as d:
        f(X, model=model, scale=3.0)
    assert d["traces"] == 0 and d["flattens"] == 0


def test_modules_nested_in_containers_take_the_generic_path():
    a, b = Small(0), Small(1)
    ea, eb = ramie.clone(a), ramie.clone(b)

    @ramie.jit
    def f(models, x):
        return models["a"](x) + models["b"](x)

    for _ in range(2):
        y = f({"a": a, "b": b}, X)
        np.testing.assert_allclose(y, ea(X) + eb(X), rtol=1e-5, atol=1e-6)
    assert_same_model(a, ea)
    assert_same_model(b, eb)


# ---------------------------------------------------------------- outputs
def test_outputs_that_are_arguments_come_back_as_the_callers_objects():
    model = Small()
    m, lin, count, layers = ramie.jit(lambda m: (m, m.linear, m.count, m.layers))(model)
    assert m is model
    assert lin is model.linear
    assert count is model.count
    # a plain list is a pytree container: its elements are the caller's modules
    assert len(layers) == 1 and layers[0] is model.layers[0]


def test_new_module_output_is_a_new_object_with_its_values():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))

    class Wrapper(ramie.Module):
        def __init__(self, inner):
            self.inner = inner
            self.head = ramie.Linear(2, 1, rngs=ramie.Rngs(4))

    w = ramie.jit(lambda m: Wrapper(m))(model)
    eager = Wrapper(model)
    assert isinstance(w, Wrapper) and w is not eager
    assert w.inner is model  # the part that is an argument is the caller's object
    assert_same_model(w.head, eager.head)
    assert isinstance(w.head.kernel.value, jax.Array)
    # independent from later calls
    w2 = ramie.jit(lambda m: Wrapper(m))(model)
    assert w2.head is not w.head


def test_new_module_output_stays_usable_and_mutable_eagerly():
    make = ramie.jit(lambda: Small(3))
    m = make()
    ref = Small(3)
    assert_same_model(m, ref)
    m.layers.append(ramie.Linear(4, 4, rngs=ramie.Rngs(0)))
    ref.layers.append(ramie.Linear(4, 4, rngs=ramie.Rngs(0)))
    np.testing.assert_allclose(m(X), ref(X), rtol=1e-5, atol=1e-6)


def test_shared_module_across_arguments():
    model = Small()
    eager = ramie.clone(model)

    def f(model, linear, x):
        linear.bias.value = linear.bias.value + 1.0
        assert linear is model.linear  # sharing is preserved inside
        return model(x)

    y = ramie.jit(f)(model, model.linear, X)
    y_eager = f(eager, eager.linear, X)
    np.testing.assert_allclose(y, y_eager, rtol=1e-5, atol=1e-6)
    assert_same_model(model, eager)


def test_shared_variables_stay_tied():
    model = Small()
    model.tied = model.layers[0]
    model.layers.append(model.layers[0])

    @ramie.jit
    def f(m):
        m.tied.kernel.value = m.tied.kernel.value * 0.0 + 1.0

    f(model)
    assert model.tied is model.layers[0] is model.layers[1]
    np.testing.assert_array_equal(model.layers[1].kernel.value, np.ones((4, 4)))


# ------------------------------------------------------- method decoration
class WithMethods(ramie.Module):
    def __init__(self):
        self.linear = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
        self.calls = Counter(jnp.array(0))

    @ramie.jit
    def __call__(self, x):
        self.calls.value += 1
        return self.linear(x)

    @ramie.jit(static_argnums=2)
    def scaled(self, x, n):
        return self.linear(x) * n


def test_jit_as_method_decorator():
    m = WithMethods()
    expected = m.linear(X)
    with stats_delta() as d:
        for i in range(1, 4):
            np.testing.assert_allclose(m(X), expected, rtol=1e-6)
            assert int(m.calls.value) == i
    assert d["traces"] == 1
    np.testing.assert_allclose(m.scaled(X, 3), 3 * expected, rtol=1e-6)
    # two instances do not share state
    other = WithMethods()
    other(X)
    assert int(other.calls.value) == 1 and int(m.calls.value) == 3


def test_jit_of_a_module_instance():
    m = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    np.testing.assert_allclose(ramie.jit(m)(X), m(X), rtol=1e-6)


# -------------------------------------------------------------------- lower
def test_lower_compiles_without_running_or_mutating():
    model = Small()
    before = pure_state(model)
    lowered = jit_forward.lower(model, X)
    assert "stablehlo" in lowered.as_text() or "mhlo" in lowered.as_text()
    compiled = lowered.compile()
    assert compiled is not None
    assert_trees_equal(pure_state(model), before)


def test_lower_with_static_arguments():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    f = ramie.jit(lambda m, x, n: m(x) * n, static_argnums=2)
    t2 = f.lower(model, X, 2).as_text()
    t3 = f.lower(model, X, 3).as_text()
    assert t2 != t3  # the static value is baked into the program


def test_eval_shape_method_does_not_run_or_mutate():
    model = Small()
    before = pure_state(model)
    out = ramie.jit(forward).eval_shape(model, X)
    assert isinstance(out, jax.ShapeDtypeStruct) and out.shape == (5, 4)
    assert_trees_equal(pure_state(model), before)


# -------------------------------------------------------------- fast path
def test_repeated_calls_do_not_retrace_or_reflatten():
    model = Net()
    model.train()
    f = jit_forward
    f(model, X)  # builds the entry
    eager = ramie.clone(model)
    with stats_delta() as d:
        for _ in range(5):
            y = f(model, X)
            y_eager = eager(X)
    assert d == {
        "traces": 0, "flattens": 0, "fast_calls": 5, "slow_calls": 0, "state_checks": 0,
    }  # fmt: skip
    np.testing.assert_allclose(y, y_eager, rtol=1e-5, atol=1e-6)
    assert_same_model(model, eager)
    assert int(model.count.value) == 6


def test_value_updates_between_calls_take_the_fast_path():
    model = Small()
    f = ramie.jit(forward)
    f(model, X)
    with stats_delta() as d:
        model.linear.kernel.value = model.linear.kernel.value * 2.0
        model.count.value = jnp.array(100)
        ramie.update(model, ramie.state(model, ramie.BatchStat))
        y = f(model, X)
    assert d["traces"] == 0 and d["flattens"] == 0 and d["fast_calls"] == 1
    assert int(model.count.value) == 101
    eager = ramie.clone(model)
    np.testing.assert_allclose(f(model, X), eager(X), rtol=1e-5, atol=1e-6)
    del y


def test_new_input_shapes_retrace_but_do_not_reflatten():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    f = ramie.jit(forward)
    f(model, X)
    with stats_delta() as d:
        f(model, jnp.ones((7, 3)))
    assert d["traces"] == 1 and d["flattens"] == 0


def test_other_objects_get_their_own_entry():
    f = ramie.jit(forward)
    a, b = (
        ramie.Linear(3, 2, rngs=ramie.Rngs(0)),
        ramie.Linear(3, 2, rngs=ramie.Rngs(1)),
    )
    f(a, X)
    with stats_delta() as d:
        yb = f(b, X)  # same structure: flattened once, compiled program reused
        f(b, X)
        f(a, X)
    assert d["flattens"] == 1 and d["traces"] == 0
    np.testing.assert_allclose(yb, b(X), rtol=1e-6)


def _add_module(m):
    m.extra = ramie.Linear(2, 2, rngs=ramie.Rngs(0))


def _static(m):
    m.scale = 0.5


def _eval(m):
    m.eval()


def _train_after_eval(m):
    m.eval()


def _list_append_between(m):
    m.layers.append(ramie.Linear(4, 4, rngs=ramie.Rngs(9)))


def _list_setitem(m):
    m.layers[0] = ramie.Linear(4, 4, rngs=ramie.Rngs(9))


def _list_pop_between(m):
    m.layers.append(ramie.Linear(4, 4, rngs=ramie.Rngs(9)))


def _dict_set(m):
    m.heads = {"a": ramie.Linear(4, 4, rngs=ramie.Rngs(1))}


def _var_replaced(m):
    m.linear.kernel = ramie.Param(m.linear.kernel.value * 3.0)


def _var_metadata(m):
    m.linear.kernel.set_metadata(note="x")


def _submodule_replaced(m):
    m.linear = ramie.Linear(3, 4, rngs=ramie.Rngs(11))


def _tie(m):
    m.layers.append(m.layers[0])


# (prepare before the first call, change between calls)
STRUCTURE_CHANGES = {
    "new_submodule": (None, _add_module),
    "removed_submodule": (_add_module, lambda m: delattr(m, "extra")),
    "static_attribute": (None, _static),
    "eval": (None, _eval),
    "train_after_eval": (_train_after_eval, lambda m: m.train()),
    "list_append": (None, _list_append_between),
    "list_setitem": (None, _list_setitem),
    "list_pop": (_list_pop_between, lambda m: m.layers.pop()),
    "list_clear_and_refill": (
        None,
        lambda m: (
            m.layers.clear(),
            m.layers.append(ramie.Linear(4, 4, rngs=ramie.Rngs(2))),
        ),
    ),
    "dict_new_key": (
        _dict_set,
        lambda m: m.heads.__setitem__("b", ramie.Linear(4, 4, rngs=ramie.Rngs(3))),
    ),
    "dict_del_key": (_dict_set, lambda m: m.heads.pop("a")),
    "variable_replaced": (None, _var_replaced),
    "variable_metadata": (None, _var_metadata),
    "submodule_replaced": (None, _submodule_replaced),
    "weights_tied": (None, _tie),
    "static_list_in_place": (None, lambda m: m.cfg["shift"].append(1.5)),
    "static_dict_in_place": (None, lambda m: m.cfg.__setitem__("shift", [2.0])),
}


@pytest.mark.parametrize("name", sorted(STRUCTURE_CHANGES))
def test_structural_changes_between_calls_are_detected(name):
    prepare, change = STRUCTURE_CHANGES[name]
    model = Small()
    if prepare is not None:
        prepare(model)
    f = jit_forward
    f(model, X)
    with stats_delta() as d:
        f(model, X)
    assert d["flattens"] == 0  # a warm entry
    change(model)
    eager = ramie.clone(model)
    with stats_delta() as d:
        y = f(model, X)
    assert d["flattens"] >= 1, "the structural change was not detected"
    np.testing.assert_allclose(y, eager(X), rtol=1e-5, atol=1e-6)
    assert_same_model(model, eager)
    # and the new structure is cached again
    with stats_delta() as d:
        f(model, X)
    assert d["flattens"] == 0 and d["traces"] == 0


def test_change_in_a_shared_submodule_seen_through_another_root():
    shared = ramie.Linear(4, 4, rngs=ramie.Rngs(0))
    a, b = Small(0), Small(1)
    a.layers[0] = shared
    b.layers[0] = shared
    f = jit_forward
    f(a, X)
    shared.extra = Counter(jnp.array(1))  # changed via b's path, same object
    eager = ramie.clone(a)
    with stats_delta() as d:
        y = f(a, X)
    assert d["flattens"] >= 1
    np.testing.assert_allclose(y, eager(X), rtol=1e-5, atol=1e-6)
    assert int(a.layers[0].extra.value) == 1


def test_structural_change_inside_invalidates_the_entry():
    model = Small()
    f = ramie.jit(
        lambda m, x: (m.layers.append(ramie.Linear(4, 4, rngs=ramie.Rngs(1))), m(x))[1]
    )
    g = jit_forward
    g(model, X)
    f(model, X)
    eager = ramie.clone(model)
    with stats_delta() as d:
        y = g(model, X)
    assert d["flattens"] >= 1
    np.testing.assert_allclose(y, eager(X), rtol=1e-5, atol=1e-6)


def test_optimizer_state_entry_replaced_in_place_is_seen():
    from tx_helpers import adam_step_setup

    model, opt, step = adam_step_setup()
    mu = opt.opt_state[0].mu
    before = float(mu["kernel"].value.sum())
    # replace one entry of the optax state (a State) in place, not its value
    mu["kernel"] = ramie.OptState(jnp.full((2, 3), 100.0))
    with stats_delta() as d:
        step(model, opt)
    assert d["flattens"] >= 1, "the replaced optimizer-state entry was not seen"
    after = float(opt.opt_state[0].mu["kernel"].value.sum())
    assert after > 6 * 50.0 > before  # the step started from the new entry


# ------------------------------------------------ property: jit == eager
class Noise(ramie.Module):
    """A stochastic layer that is cheap to compile: it counts its draws."""

    def __init__(self):
        self.draws = Counter(jnp.array(0))
        self.deterministic = False

    def __call__(self, x):
        if not self.deterministic:
            self.draws.value += 1
            x = x + 0.01 * self.draws.value
        return x


class PNet(ramie.Module):
    def __init__(self):
        rngs = ramie.Rngs(0)
        self.layers = [ramie.Linear(2, 2, rngs=rngs)]
        self.extra = {}
        self.mean = ramie.BatchStat(jnp.zeros(2))
        self.noise = Noise()
        self.count = Counter(jnp.array(0))
        self.flag = 0
        self.use_running_average = False

    def __call__(self, x):
        self.count.value += 1
        for layer in self.layers:
            x = layer(x)
        for k in sorted(self.extra):
            x = x + self.extra[k].value
        if not self.use_running_average:
            self.mean.value = 0.5 * self.mean.value + 0.5 * x.mean(0)
        return self.noise(x - self.mean.value) + self.flag


def _op(m, op):
    kind, k = op
    n = len(m.layers)
    if kind == "value":
        m.layers[k % n].kernel.value = m.layers[k % n].kernel.value + 0.25 * (k + 1)
    elif kind == "count":
        m.count.value = m.count.value + k
    elif kind == "append":
        m.layers.append(ramie.Linear(2, 2, rngs=ramie.Rngs(k)))
    elif kind == "pop":
        if n > 1:
            m.layers.pop(k % n)
    elif kind == "replace":
        m.layers[k % n] = ramie.Linear(2, 2, rngs=ramie.Rngs(100 + k))
    elif kind == "static":
        m.flag = k
    elif kind == "train":
        m.train()
    elif kind == "eval":
        m.eval()
    elif kind == "extra":
        m.extra[f"e{k}"] = ramie.Param(jnp.full((2,), float(k)))
    elif kind == "tie":
        m.layers.append(m.layers[k % n])
    elif kind == "replace_var":
        m.count = Counter(jnp.array(k))
    elif kind == "meta":
        m.layers[k % n].kernel.set_metadata(tag=k)
    elif kind == "share_var":
        m.layers[k % n].bias = m.layers[0].bias
    elif kind == "del_extra":
        for key in sorted(m.extra)[:1]:
            del m.extra[key]
    else:  # pragma: no cover
        raise AssertionError(kind)


OPS = st.tuples(
    st.sampled_from(
        ["value", "count", "append", "pop", "replace", "static", "train", "eval",
         "extra", "tie", "replace_var", "meta", "share_var", "del_extra"]
    ),
    st.integers(0, 3),
)  # fmt: skip
STEPS = st.lists(
    st.tuples(st.lists(OPS, max_size=2), st.lists(OPS, max_size=2).map(tuple)),
    min_size=1,
    max_size=4,
)
PX = jnp.arange(8.0).reshape(4, 2) / 8.0


def _pstep(m, inside):
    for op in inside:
        _op(m, op)
    return m(PX)


_jit_pstep = ramie.jit(_pstep, static_argnums=1)


@settings(max_examples=15, deadline=None)
@given(steps=STEPS)
def test_property_jit_mutates_exactly_like_eager(steps):
    model = PNet()
    eager = ramie.clone(model)
    for between, inside in steps:
        for op in between:
            _op(model, op)
            _op(eager, op)
        y = _jit_pstep(model, inside)
        y_eager = _pstep(eager, inside)
        np.testing.assert_allclose(y, y_eager, rtol=1e-4, atol=1e-5)
        assert_same_model(model, eager, rtol=1e-4, atol=1e-5)
    # the tied-weight pattern survives: same objects where eager has them
    ids_j = [id(x) for x in model.layers]
    ids_e = [id(x) for x in eager.layers]
    assert [ids_j.index(i) for i in ids_j] == [ids_e.index(i) for i in ids_e]


# --------------------------------------------------------------- shardings
def test_in_and_out_shardings_with_state_sharding():
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    if len(jax.devices()) < 2:
        pytest.skip("needs 2 devices")
    mesh = jax.make_mesh((2,), ("d",), devices=jax.devices()[:2])
    replicated, by_column = NamedSharding(mesh, P()), NamedSharding(mesh, P(None, "d"))
    model = ramie.Linear(4, 4, rngs=ramie.Rngs(0))
    x = jnp.ones((2, 4))
    spec = ramie.StateSharding(
        {ramie.PathContains("kernel"): by_column, ...: replicated}
    )
    f = ramie.jit(forward, in_shardings=(spec, replicated), out_shardings=replicated)
    y = f(model, x)
    np.testing.assert_allclose(y, model(x), rtol=1e-6)
    assert y.sharding.is_equivalent_to(replicated, 2)
    in_specs = [
        s.spec for s in jax.tree.leaves(f.lower(model, x).compile().input_shardings)
    ]
    assert P(None, "d") in in_specs


@pytest.mark.parametrize("how", ["argnums", "argnames"])
def test_array_as_static_argument_is_refused_up_front(how):
    from ramie.errors import StaticArgumentError

    def f(x, n):
        return x * n

    if how == "argnums":
        g = ramie.jit(f, static_argnums=1)
        call = lambda: g(jnp.ones(2), jnp.array(3))  # noqa: E731
        where = "argument 1"
    else:
        g = ramie.jit(f, static_argnames="n")
        call = lambda: g(jnp.ones(2), n=jnp.array(3))  # noqa: E731
        where = "argument 'n'"
    with pytest.raises(
        StaticArgumentError, match=rf"ramie\.jit\(f\): {where} is static"
    ):
        call()
    np.testing.assert_array_equal(g(jnp.ones(2), n=3), [3.0, 3.0])


def test_in_shardings_for_non_static_arguments_only():
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    if len(jax.devices()) < 2:
        pytest.skip("needs 2 devices")
    mesh = jax.make_mesh((2,), ("d",), devices=jax.devices()[:2])
    rows = NamedSharding(mesh, P("d"))

    def fn(x, scale, relu):
        y = x * scale
        return jnp.maximum(y, 0).sum() if relu else y.sum()

    x = jnp.linspace(-1.0, 1.0, 16).reshape(4, 4)
    for statics in ({"static_argnums": (2,)}, {"static_argnames": ("relu",)}):
        f = ramie.jit(fn, in_shardings=(rows, None), **statics)  # 2 of 3 arguments
        np.testing.assert_allclose(f(x, 0.5, True), fn(x, 0.5, True), atol=1e-6)
        np.testing.assert_allclose(f(x, 0.5, False), fn(x, 0.5, False), atol=1e-6)
    with pytest.raises(ramie.errors.TransformError, match=r"got 1 entries"):
        ramie.jit(fn, in_shardings=(rows,), static_argnums=(2,))(x, 0.5, True)


def test_updated_state_keeps_its_in_shardings():
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    if len(jax.devices()) < 2:
        pytest.skip("needs 2 devices")
    mesh = jax.make_mesh(
        (2,),
        ("d",),
        devices=jax.devices()[:2],
        axis_types=(jax.sharding.AxisType.Auto,),
    )
    by_row, by_col = (
        NamedSharding(mesh, P("d", None)),
        NamedSharding(mesh, P(None, "d")),
    )
    model = ramie.Linear(4, 4, rngs=ramie.Rngs(0))
    spec = ramie.StateSharding({ramie.PathContains("kernel"): by_row, ...: None})

    @ramie.jit(in_shardings=(spec, None), static_argnums=(1,))
    def step(m, replace):
        new = jax.lax.with_sharding_constraint(m.kernel.value * 2, by_col)
        if replace:
            m.kernel = ramie.Param(new)  # a new Variable: the path decides
        else:
            m.kernel.value = new

    for replace in (False, True):
        before = np.asarray(model.kernel.value)
        step(model, replace)
        np.testing.assert_allclose(model.kernel.value, 2 * before, rtol=1e-6)
        assert model.kernel.value.sharding.is_equivalent_to(by_row, 2)
