"""ref/hijax Variables: values in jax.Ref cells that plain JAX transforms update."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ramie as nnx


# ----------------------------------------------------------------- modes
@pytest.mark.parametrize("hijax", [False, True])
@pytest.mark.parametrize("ref", [False, True])
def test_mode_properties(hijax, ref):
    v = nnx.Variable(jnp.array(1.0), hijax=hijax, ref=ref)
    assert (v.hijax, v.ref) == (hijax, ref)
    assert isinstance(v.get_raw_value(), jax.Ref) == ref
    # the value reads through the cell either way
    assert isinstance(v.value, jax.Array) and float(v.value) == 1.0


def test_var_defaults_statement_with_and_decorator():
    assert dict(nnx.var_defaults()) == {"hijax": False, "ref": False}
    with nnx.var_defaults(hijax=True):
        assert nnx.var_defaults().hijax
        with nnx.var_defaults(ref=True):
            assert dict(nnx.var_defaults()) == {"hijax": True, "ref": True}
        assert not nnx.var_defaults().ref
        assert nnx.Variable(1.0).hijax
    assert not nnx.Variable(1.0).hijax

    @nnx.var_defaults(hijax=True)  # decorating does not change the default now
    def make():
        return nnx.Param(jnp.zeros(2))

    assert not nnx.var_defaults().hijax
    assert make().hijax and not nnx.Param(jnp.zeros(2)).hijax


def test_set_graph_mode_statement_with_and_decorator():
    assert nnx.set_graph_mode.current_value() is True
    with nnx.set_graph_mode(False):
        assert nnx.set_graph_mode.current_value() is False
    assert nnx.set_graph_mode.current_value() is True

    @nnx.set_graph_mode(False)
    def inner():
        return nnx.set_graph_mode.current_value()

    assert nnx.set_graph_mode.current_value() is True
    assert inner() is False


# ------------------------------------------------- plain JAX transforms
def test_plain_jit_keeps_updates():
    v = nnx.Param(jnp.array(1.0), hijax=True)

    @jax.jit
    def f(v, a):
        v[...] = a
        v[...] += 5
        return v + 2

    y = f(v, 10.0)
    assert float(v[...]) == 15.0 and float(y) == 17.0


def test_plain_jit_keeps_batchnorm_statistics():
    x = jax.random.normal(jax.random.key(0), (8, 3)) + 4.0
    plain = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    hijax = nnx.with_vars(nnx.BatchNorm(3, rngs=nnx.Rngs(0)), hijax=True)
    jax.jit(lambda m, x: m(x))(hijax, x)
    plain(x)  # eager reference: the statistics an update should produce
    np.testing.assert_allclose(hijax.mean.value, plain.mean.value, rtol=1e-6)
    np.testing.assert_allclose(hijax.var.value, plain.var.value, rtol=1e-6)
    assert float(jnp.abs(hijax.mean.value).sum()) > 0  # it did change


def test_plain_scan_and_vmap_see_the_cell():
    count = nnx.BatchStat(jnp.array(0.0), ref=True)

    def body(c, x):
        count[...] += x
        return c, count[...]

    _, ys = jax.lax.scan(body, None, jnp.arange(4.0))
    np.testing.assert_allclose(ys, np.cumsum(np.arange(4.0)))
    assert float(count[...]) == 6.0
    out = jax.vmap(lambda x: x + count[...])(jnp.ones(3))
    np.testing.assert_allclose(out, np.full(3, 7.0))


def test_with_vars_round_trip_and_only():
    m = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    m_ref = nnx.with_vars(m, ref=True, only=nnx.BatchStat)
    assert m_ref.mean.ref and not m_ref.scale.ref
    assert m.mean.ref is False  # the original is untouched
    back = nnx.with_vars(m_ref, ref=False)
    assert not back.mean.ref and not isinstance(back.mean.get_raw_value(), jax.Ref)
    np.testing.assert_array_equal(back.mean.value, m.mean.value)


def test_with_vars_rejects_shared_variables_naming_both_paths():
    v = nnx.Param(jnp.zeros(1))
    with pytest.raises(ValueError, match=r"duplicate at path '\[1\]'.*path '\[0\]'"):
        nnx.with_vars([v, v], ref=True)
    both = nnx.with_vars([v, v], ref=True, allow_duplicates=True)
    assert both[0].ref


def test_ref_cell_keeps_its_shape():
    v = nnx.Param(jnp.zeros(3), ref=True)
    with pytest.raises(nnx.errors.TraceContextError, match="shape"):
        v.value = jnp.zeros(4)
    assert v.shape == (3,)


# ----------------------------------------------------------- ramie transforms
def _train(hijax: bool) -> tuple:
    with nnx.var_defaults(hijax=hijax):
        m = nnx.Sequential(
            nnx.Linear(3, 4, rngs=nnx.Rngs(0)),
            nnx.BatchNorm(4, rngs=nnx.Rngs(0)),
            nnx.Linear(4, 1, rngs=nnx.Rngs(1)),
        )
    opt = nnx.Optimizer(m, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(m, opt, x):
        loss, g = nnx.value_and_grad(lambda m: ((m(x) - 1) ** 2).mean())(m)
        opt.update(m, g)
        return loss

    x = jnp.arange(15.0).reshape((5, 3))
    losses = [float(step(m, opt, x)) for _ in range(3)]
    return losses, m


def test_ramie_jit_train_step_matches_plain_variables():
    losses_plain, plain = _train(False)
    losses_hijax, hijax = _train(True)
    np.testing.assert_allclose(losses_hijax, losses_plain, rtol=1e-6)
    np.testing.assert_allclose(
        hijax.layers[1].mean.value, plain.layers[1].mean.value, rtol=1e-6
    )
    # the Variables are still backed by their cells after the updates
    assert isinstance(hijax.layers[0].kernel.get_raw_value(), jax.Array)
    assert hijax.layers[0].kernel.hijax
    assert type(nnx.Variable.__dict__["_store"].__get__(hijax.layers[0].kernel)) is (
        jax.Ref
    )


def test_update_writes_into_cells():
    m = nnx.with_vars(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), ref=True)
    cell = m.kernel.get_raw_value()
    _, state = nnx.split(nnx.Linear(2, 2, rngs=nnx.Rngs(1)))
    nnx.update(m, state)
    assert m.kernel.get_raw_value() is cell
    np.testing.assert_array_equal(cell[...], state["kernel"].value)


def test_with_vars_mutable_false_is_a_frozen_plain_copy_for_jax_grad():
    model = nnx.with_vars(nnx.Linear(2, 1, rngs=nnx.Rngs(0)), hijax=True)
    frozen = nnx.with_vars(model, mutable=False)
    assert not frozen.kernel.mutable and not frozen.kernel.hijax
    with pytest.raises(nnx.errors.TraceContextError, match="immutable copy"):
        frozen.kernel.value = jnp.zeros((2, 1))
    x = jnp.ones((3, 2))
    grads = jax.grad(lambda m: m(x).sum())(frozen)
    np.testing.assert_allclose(grads.kernel.value, np.full((2, 1), 3.0))
    assert nnx.with_vars(frozen, mutable=True).kernel.ref


def test_hijax_train_step_takes_the_cached_fast_path():
    from ramie._src.transforms.jit import STATS

    with nnx.var_defaults(hijax=True):
        m = nnx.Sequential(
            nnx.Linear(4, 4, rngs=nnx.Rngs(0)), nnx.BatchNorm(4, rngs=nnx.Rngs(0))
        )
    opt = nnx.Optimizer(m, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(m, opt, x):
        loss, g = nnx.value_and_grad(lambda m: (m(x) ** 2).mean())(m)
        opt.update(m, g)
        return loss

    x = jnp.arange(8.0).reshape(2, 4)
    step(m, opt, x)
    before = dict(STATS)
    for _ in range(3):
        step(m, opt, x)
    assert STATS["fast_calls"] - before["fast_calls"] == 3
    assert STATS["traces"] == before["traces"]
    assert STATS["flattens"] == before["flattens"]
    assert int(opt.step.value) == 4 and m.layers[1].mean.hijax


# ------------------------------------------------------ pytree-valued hijax
def test_hijax_dict_value_updates_through_plain_jit_as_flax():
    fnnx = pytest.importorskip("flax.nnx")

    def step(v):
        v["a"] += 1
        v["b"] *= 2

    ours = nnx.Variable({"a": jnp.array(0), "b": jnp.array(2)}, hijax=True)
    theirs = fnnx.Variable({"a": jnp.array(0), "b": jnp.array(2)}, hijax=True)
    jax.jit(step)(ours)
    jax.jit(step)(theirs)
    assert (int(ours["a"]), int(ours["b"])) == (int(theirs["a"]), int(theirs["b"]))
    assert (int(ours["a"]), int(ours["b"])) == (1, 4)


def test_hijax_dict_value_gains_keys_inside_plain_jit():
    metrics = nnx.Variable({}, hijax=True)
    x = jnp.arange(6.0).reshape(2, 3)

    @jax.jit
    def record(x, metrics):
        metrics["total"] = jnp.sum(x)
        return x * 2

    assert len(metrics) == 0
    y = record(x, metrics)
    assert "total" in metrics and float(metrics["total"]) == float(jnp.sum(x))
    np.testing.assert_array_equal(y, x * 2)
    metrics.value = {"other": jnp.ones(2)}  # eager writes replace the value
    assert list(metrics) == ["other"]


def test_plain_variable_dict_item_assignment_copies():
    old = {"a": 1}
    v = nnx.Variable(old)
    v["b"] = 2
    assert v.value == {"a": 1, "b": 2} and old == {"a": 1}


class _Net(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(2, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, use_running_average=False, rngs=rngs)
        self.dropout = nnx.Dropout(0.2, deterministic=False, rngs=rngs)
        self.out = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.dropout(self.bn(self.linear(x)))))


@pytest.mark.slow  # compiles two train steps
def test_plain_jax_grad_over_hijax_batchnorm_and_dropout_matches_ramie_grad():
    x = jax.random.normal(jax.random.key(0), (8, 2))
    y = jax.random.normal(jax.random.key(1), (8, 3))
    plain = _Net(nnx.Rngs(0))
    opt_plain = nnx.Optimizer(plain, optax.adam(1e-2), wrt=nnx.Param)
    with nnx.var_defaults(hijax=True):
        hijax = _Net(nnx.Rngs(0))
        opt_hijax = nnx.Optimizer(hijax, optax.adam(1e-2), wrt=nnx.Param)

    @jax.jit  # plain JAX: the cells carry the updates
    def step_hijax(x, y):
        graphdef, params, rest = nnx.split(hijax, nnx.Param, ...)

        def loss_fn(params):
            return ((nnx.merge(graphdef, params, rest)(x) - y) ** 2).mean()

        loss, grads = jax.value_and_grad(loss_fn)(nnx.with_vars(params, hijax=False))
        opt_hijax.update(hijax, grads)
        return loss

    @nnx.jit
    def step_plain(model, optimizer, x, y):
        loss_fn = lambda m: ((m(x) - y) ** 2).mean()  # noqa: E731
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    for _ in range(2):
        np.testing.assert_allclose(
            step_hijax(x, y), step_plain(plain, opt_plain, x, y), rtol=1e-5
        )
    np.testing.assert_allclose(hijax.bn.mean.value, plain.bn.mean.value, rtol=1e-5)
    np.testing.assert_allclose(
        hijax.out.kernel.value, plain.out.kernel.value, rtol=1e-5, atol=1e-6
    )
    assert int(hijax.dropout.rngs.count.value) == int(plain.dropout.rngs.count.value)
