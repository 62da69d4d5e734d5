"""Tests for ``ramie.cond``/``switch``/``fori_loop``/``while_loop`` against the
``jax.lax`` primitives on the pure split/merge function."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tx_helpers import assert_trees_equal, pure_state

import ramie


class Counter(ramie.Variable):
    pass


class Model(ramie.Module):
    def __init__(self):
        self.linear = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
        self.count = Counter(jnp.array(0))


X = jnp.array([0.5, -1.0])


def up(m, x):
    m.count.value += 1
    m.linear.bias.value = m.linear.bias.value + x
    return m.linear(x)


def down(m, x):
    m.count.value -= 1
    return -x


def reference_branch(branch, pred_or_index, model, x, *, switch=False):
    """The same branches with jax.lax.cond/switch on (graphdef, state)."""
    gd, st = ramie.split(model)

    def lift(fn):
        def pure(st, x):
            m = ramie.merge(gd, st, copy=True)
            y = fn(m, x)
            return y, ramie.state(m)

        return pure

    if switch:
        return jax.lax.switch(pred_or_index, [lift(b) for b in branch], st, x)
    return jax.lax.cond(pred_or_index, lift(branch[0]), lift(branch[1]), st, x)


def _np_state(state):
    return jax.tree.map(np.asarray, ramie.to_pure_dict(state))


# ------------------------------------------------------------------- cond
@pytest.mark.parametrize("pred", [True, False])
def test_cond_matches_lax_cond(pred):
    model = Model()
    y_ref, st_ref = reference_branch((up, down), pred, model, X)
    y = ramie.cond(pred, up, down, model, X)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6)
    assert_trees_equal(pure_state(model), _np_state(st_ref))
    assert int(model.count.value) == (1 if pred else -1)


def test_cond_with_traced_predicate_inside_jit():
    model, eager = Model(), Model()

    @ramie.jit
    def f(m, p):
        return ramie.cond(p, up, down, m, X)

    for p in [True, True, False, True]:
        y = f(model, jnp.asarray(p))
        y_e = up(eager, X) if p else down(eager, X)
        np.testing.assert_allclose(y, y_e, rtol=1e-6)
    assert int(model.count.value) == 2
    assert_trees_equal(pure_state(model), pure_state(eager), rtol=1e-6)


def test_cond_branch_returning_an_argument_gives_the_callers_object():
    model = Model()
    out = ramie.cond(True, lambda m: m.linear, lambda m: m.linear, model)
    assert out is model.linear


def test_cond_structural_change_in_a_branch_is_an_error():
    model = Model()

    def add(m):
        m.extra = ramie.Param(jnp.ones(1))

    with pytest.raises(ramie.errors.GraphStructureError, match=r"ramie.cond"):
        ramie.cond(True, add, lambda m: None, model)
    assert not hasattr(model, "extra")


def test_cond_branches_with_different_output_types_is_an_error():
    model = Model()
    with pytest.raises(TypeError):
        ramie.cond(True, lambda m: jnp.ones(2), lambda m: jnp.ones(3), model)


def test_cond_updates_a_plain_array_attribute():
    class WithArray(ramie.Module):
        def __init__(self):
            self.arr = jnp.zeros(2)

    m = WithArray()

    def inc(m):
        m.arr = m.arr + 1

    ramie.cond(True, inc, inc, m)
    np.testing.assert_array_equal(m.arr, np.ones(2))


# ----------------------------------------------------------------- switch
def _set(k):
    def branch(m, x):
        m.count.value = m.count.value * 0 + k
        return x * k

    return branch


BRANCHES = [_set(10), _set(20), _set(30)]


@pytest.mark.parametrize("index", [0, 1, 2, 7, -3])
def test_switch_matches_lax_switch(index):
    model = Model()
    y_ref, st_ref = reference_branch(BRANCHES, index, model, X, switch=True)
    y = ramie.switch(index, BRANCHES, model, X)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6)
    assert_trees_equal(pure_state(model), _np_state(st_ref))


def test_switch_inside_jit():
    model = Model()
    f = ramie.jit(lambda m, i: ramie.switch(i, BRANCHES, m, X))
    for i, expected in [(2, 30), (0, 10), (1, 20)]:
        np.testing.assert_allclose(f(model, i), X * expected, rtol=1e-6)
        assert int(model.count.value) == expected


# -------------------------------------------------------------- fori_loop
def test_fori_loop_matches_lax_fori_loop():
    model = Model()
    gd, st = ramie.split(ramie.clone(model))

    def body(i, m):
        m.count.value += i
        m.linear.kernel.value = m.linear.kernel.value * 0.5 + i
        return m

    def pure_body(i, st):
        m = ramie.merge(gd, st, copy=True)
        body(i, m)
        return ramie.state(m)

    st_ref = jax.lax.fori_loop(1, 5, pure_body, st)
    out = ramie.fori_loop(1, 5, body, model)
    assert out is model
    assert int(model.count.value) == 1 + 2 + 3 + 4
    assert_trees_equal(pure_state(model), _np_state(st_ref), rtol=1e-6)


def test_fori_loop_with_module_and_array_carry():
    model = Model()

    def body(i, val):
        m, x = val
        m.count.value += 1
        return m, m.linear(x)

    m, y = ramie.fori_loop(0, 3, body, (model, X))
    assert m is model and int(model.count.value) == 3
    ref = X
    for _ in range(3):
        ref = model.linear(ref)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_fori_loop_unroll_and_inside_jit():
    model = Model()

    @ramie.jit(static_argnums=1)
    def f(m, n):
        def body(i, m):
            m.count.value += 2
            return m

        return ramie.fori_loop(0, n, body, m, unroll=2)

    assert f(model, 4) is model
    assert int(model.count.value) == 8


def test_fori_loop_body_returning_a_new_module_is_an_error():
    with pytest.raises(ValueError, match=r"same structure as its input"):
        ramie.fori_loop(0, 2, lambda i, m: Model(), Model())


def test_fori_loop_body_changing_structure_is_an_error():
    def body(i, m):
        m.extra = ramie.Param(jnp.ones(1))
        return m

    with pytest.raises(ramie.errors.GraphStructureError):
        ramie.fori_loop(0, 2, body, Model())


# ------------------------------------------------------------- while_loop
def test_while_loop_matches_lax_while_loop():
    model = Model()
    gd, st = ramie.split(ramie.clone(model))

    def cond_fn(val):
        m, n = val
        return m.count.value < 20

    def body(val):
        m, n = val
        m.count.value += 7
        m.linear.bias.value = m.linear.bias.value + 1.0
        return m, n + 1

    def pure_cond(val):
        st, n = val
        return cond_fn((ramie.merge(gd, st, copy=True), n))

    def pure_body(val):
        st, n = val
        m = ramie.merge(gd, st, copy=True)
        _, n = body((m, n))
        return ramie.state(m), n

    st_ref, n_ref = jax.lax.while_loop(pure_cond, pure_body, (st, 0))
    m, n = ramie.while_loop(cond_fn, body, (model, 0))
    assert m is model
    assert int(n) == int(n_ref) == 3
    assert int(model.count.value) == 21
    assert_trees_equal(pure_state(model), _np_state(st_ref), rtol=1e-6)


def test_while_loop_body_returning_wrong_structure_is_an_error():
    with pytest.raises(ValueError, match=r"same structure"):
        ramie.while_loop(lambda m: m.count.value < 3, lambda m: (m, 1), Model())


class _Shared(ramie.Module):
    def __init__(self, v):
        self.a = v
        self.b = v


@pytest.mark.parametrize("graph_updates", [True, False])
def test_branches_see_one_shared_variable_in_graph_mode(graph_updates):
    m = _Shared(ramie.Variable(jnp.array(0)))

    def via_a(m):
        m.a.value += 1

    def via_b(m):
        m.b.value += 10

    ramie.cond(True, via_a, via_b, m, graph=True, graph_updates=graph_updates)
    ramie.switch(1, [via_a, via_b], m, graph=True, graph_updates=graph_updates)
    assert m.a is m.b and int(m.a.value) == 11


@pytest.mark.parametrize("api", ["cond", "switch"])
def test_tree_mode_refuses_a_shared_variable_naming_both_paths(api):
    m = _Shared(ramie.Variable(jnp.array(0)))
    branches = [lambda m: None, lambda m: None]
    with pytest.raises(ValueError, match="Duplicate Variable") as e:
        if api == "cond":
            ramie.cond(True, *branches, m, graph=False)
        else:
            ramie.switch(0, branches, m, graph=False)
    msg = str(e.value)
    assert f"ramie.{api}" in msg and "args[0].a" in msg and "args[0].b" in msg
    assert msg.count("See https://") == 1
    assert int(m.a.value) == 0
