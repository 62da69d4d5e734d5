"""Tests for ``ramie.Optimizer`` and ``ModelAndOptimizer`` against a plain optax
loop on the pure parameters, eagerly and inside ``ramie.jit``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ramie
from ramie._src.transforms.jit import STATS
from ramie.errors import StateLoadError


class Counter(ramie.Variable):
    pass


class MLP(ramie.Module):
    def __init__(self, seed: int = 0):
        rngs = ramie.Rngs(seed)
        self.l1 = ramie.Linear(3, 4, rngs=rngs)
        self.l2 = ramie.Linear(4, 2, rngs=rngs)
        self.calls = Counter(jnp.array(0))

    def __call__(self, x):
        self.calls.value += 1
        return self.l2(jnp.tanh(self.l1(x)))


def mlp_pure(params, x):
    h = jnp.tanh(x @ params["l1"]["kernel"] + params["l1"]["bias"])
    return h @ params["l2"]["kernel"] + params["l2"]["bias"]


X = jax.random.normal(jax.random.key(0), (8, 3))
Y = jax.random.normal(jax.random.key(1), (8, 2))


def loss_fn(model):
    return jnp.mean((model(X) - Y) ** 2)


def pure_loss(params):
    return jnp.mean((mlp_pure(params, X) - Y) ** 2)


def params_dict(model):
    return jax.tree.map(np.asarray, ramie.to_pure_dict(ramie.state(model, ramie.Param)))


def optax_reference(tx, params, n_steps):
    """A plain optax loop on a dict of arrays."""
    opt_state = tx.init(params)
    for _ in range(n_steps):
        grads = jax.grad(pure_loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    return params, opt_state


def assert_tree_close(a, b, rtol=1e-5, atol=1e-6):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert len(la) == len(lb), (ta, tb)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


TRANSFORMS = {
    "sgd": lambda: optax.sgd(0.1),
    "sgd_momentum": lambda: optax.sgd(0.1, momentum=0.9),
    "adam": lambda: optax.adam(1e-2),
    "adamw_weight_decay": lambda: optax.adamw(1e-2, weight_decay=0.1),
    "clip_then_adam": lambda: optax.chain(
        optax.clip_by_global_norm(0.05), optax.adam(1e-2)
    ),
}


def _train_step(model, optimizer):
    grads = ramie.grad(loss_fn)(model)
    optimizer.update(model, grads)


_jit_train_step = ramie.jit(_train_step)


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_update_matches_plain_optax_loop(name, mode):
    n_steps = 3
    model = MLP()
    params0 = params_dict(model)
    optimizer = ramie.Optimizer(model, TRANSFORMS[name](), wrt=ramie.Param)
    step = _jit_train_step if mode == "jit" else _train_step
    for _ in range(n_steps):
        step(model, optimizer)
    ref_params, ref_state = optax_reference(TRANSFORMS[name](), params0, n_steps)
    assert_tree_close(params_dict(model), ref_params)
    # optimizer state leaves equal optax's, in optax's order
    assert_tree_close(jax.tree.leaves(optimizer.opt_state), jax.tree.leaves(ref_state))
    assert int(optimizer.step.value) == n_steps
    assert (
        int(model.calls.value) == n_steps
    )  # non-Param state untouched by the optimizer
    assert not np.allclose(params_dict(model)["l1"]["kernel"], params0["l1"]["kernel"])


def test_repeated_jitted_steps_take_the_fast_path():
    model = MLP()
    optimizer = ramie.Optimizer(model, optax.adam(1e-2), wrt=ramie.Param)
    step = ramie.jit(_train_step)
    step(model, optimizer)
    before = dict(STATS)
    for _ in range(3):
        step(model, optimizer)
    assert STATS["traces"] == before["traces"]
    assert STATS["flattens"] == before["flattens"]
    assert STATS["fast_calls"] == before["fast_calls"] + 3
    assert int(optimizer.step.value) == 4


def test_older_form_without_wrt_and_update_grads():
    model, ref_model = MLP(), MLP()
    old = ramie.Optimizer(model, optax.adam(1e-2))
    new = ramie.Optimizer(ref_model, optax.adam(1e-2), wrt=ramie.Param)
    for _ in range(2):
        old.update(ramie.grad(loss_fn)(model))
        new.update(ref_model, ramie.grad(loss_fn)(ref_model))
    assert_tree_close(params_dict(model), params_dict(ref_model))
    assert int(old.step.value) == 2
    # the explicit form works on it too
    old.update(model, ramie.grad(loss_fn)(model))
    assert int(old.step.value) == 3


def test_update_grads_without_model_on_new_form_is_a_clear_error():
    model = MLP()
    optimizer = ramie.Optimizer(model, optax.sgd(0.1), wrt=ramie.Param)
    with pytest.raises(TypeError, match=r"optimizer\.update\(model, grads\)"):
        optimizer.update(ramie.grad(loss_fn)(model))


def test_model_and_optimizer():
    state = ramie.ModelAndOptimizer(MLP(), optax.sgd(0.1))
    ref_params0 = params_dict(state.model)
    np.testing.assert_allclose(
        state(X), state.model(X), rtol=1e-6
    )  # __call__ delegates

    @ramie.jit
    def step(state):
        state.update(ramie.grad(loss_fn)(state.model))

    step(state)
    step(state)
    ref_params, _ = optax_reference(optax.sgd(0.1), ref_params0, 2)
    assert_tree_close(params_dict(state.model), ref_params)
    assert int(state.step.value) == 2
    assert "model" in ramie.state(state)


def test_optimizer_state_is_held_as_opt_state_variables():
    init = ramie.with_partitioning(ramie.initializers.lecun_normal(), ("in", "out"))
    model = ramie.Linear(3, 2, kernel_init=init, rngs=ramie.Rngs(0))
    optimizer = ramie.Optimizer(model, optax.adam(1e-2), wrt=ramie.Param)
    assert isinstance(optimizer.step, ramie.OptState)
    assert optimizer.step.value.dtype == jnp.uint32
    adam_state = optimizer.opt_state[0]
    assert isinstance(adam_state.count, ramie.OptArray)
    for moment in (adam_state.mu, adam_state.nu):
        assert isinstance(moment["kernel"], ramie.OptVariable)
        assert isinstance(moment["bias"], ramie.OptVariable)
        # mirrors the parameter, keeping its metadata
        assert moment["kernel"].get_metadata()["out_sharding"] == ("in", "out")
        assert moment["kernel"].value.shape == (3, 2)
    flat = dict(ramie.to_flat_state(ramie.state(optimizer, ramie.OptVariable)))
    assert sorted(flat) == sorted(
        [("opt_state", 0, m, p) for m in ("mu", "nu") for p in ("bias", "kernel")]
    )
    everything = ramie.state(optimizer)
    assert sorted(everything.keys()) == ["opt_state", "step"]
    # all optimizer state is OptState
    for _, v in ramie.to_flat_state(everything):
        assert isinstance(v, ramie.OptState)


def test_opt_state_does_not_mistake_unrelated_entries_for_params():
    class M(ramie.Module):
        def __init__(self):
            self.count = ramie.Param(jnp.ones((3,)), out_sharding=("model",))

    optimizer = ramie.Optimizer(M(), optax.adam(1e-2), wrt=ramie.Param)
    count = optimizer.opt_state[0].count
    assert isinstance(count, ramie.OptArray)
    assert "out_sharding" not in count.get_metadata()


def test_step_counts_every_update():
    model = MLP()
    optimizer = ramie.Optimizer(model, optax.sgd(0.1), wrt=ramie.Param)
    assert int(optimizer.step.value) == 0
    for i in range(1, 4):
        _train_step(model, optimizer)
        assert int(optimizer.step.value) == i


def test_wrt_filter_other_than_param():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    model.lora = ramie.LoRAParam(jnp.zeros(2))
    kernel0 = np.asarray(model.kernel.value)
    optimizer = ramie.Optimizer(model, optax.sgd(0.5), wrt=ramie.LoRAParam)

    def loss(m):
        return jnp.sum((m(X) + m.lora.value - 1.0) ** 2)

    grads = ramie.grad(loss, argnums=ramie.DiffState(0, ramie.LoRAParam))(model)
    expected = -0.5 * np.asarray(grads["lora"].value)
    optimizer.update(model, grads)
    np.testing.assert_allclose(model.lora.value, expected, rtol=1e-6)
    np.testing.assert_array_equal(model.kernel.value, kernel0)  # not optimised


def test_extra_keyword_arguments_reach_the_transformation():
    def scale_by_value():
        def init(params):
            return optax.EmptyState()

        def update(updates, state, params=None, *, value):
            return jax.tree.map(lambda g: -value * g, updates), state

        return optax.GradientTransformationExtraArgs(init, update)

    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    bias0 = np.asarray(model.bias.value)
    optimizer = ramie.Optimizer(model, scale_by_value(), wrt=ramie.Param)
    grads = ramie.grad(lambda m: m(X).sum())(model)
    optimizer.update(model, grads, value=0.25)
    np.testing.assert_allclose(model.bias.value, bias0 - 0.25 * 8.0, rtol=1e-6)


# ------------------------------------------------- split / merge / checkpoint
def test_split_merge_round_trip_continues_identically():
    model = MLP()
    optimizer = ramie.Optimizer(model, optax.adam(1e-2), wrt=ramie.Param)
    _train_step(model, optimizer)
    gd, state = ramie.split((model, optimizer))
    model2, optimizer2 = ramie.merge(gd, state, copy=True)
    assert isinstance(optimizer2, ramie.Optimizer)
    assert isinstance(optimizer2.opt_state[0].mu["l1"]["kernel"], ramie.OptVariable)
    for _ in range(2):
        _train_step(model, optimizer)
        _train_step(model2, optimizer2)
    assert_tree_close(params_dict(model2), params_dict(model), rtol=0, atol=0)
    assert_tree_close(
        jax.tree.leaves(optimizer2.opt_state),
        jax.tree.leaves(optimizer.opt_state),
        rtol=0,
        atol=0,
    )
    assert int(optimizer2.step.value) == 3


def test_checkpoint_round_trip_through_pure_dicts(tmp_path):
    model = MLP()
    optimizer = ramie.Optimizer(
        model, optax.adamw(1e-2, weight_decay=0.1), wrt=ramie.Param
    )
    _jit_train_step(model, optimizer)
    _jit_train_step(model, optimizer)

    # save: flat pure dicts of numpy arrays
    def flat_pure(node):
        return {
            "/".join(map(str, p)): np.asarray(v.value)
            for p, v in ramie.to_flat_state(ramie.state(node))
        }

    np.savez(tmp_path / "model.npz", **flat_pure(model))
    np.savez(tmp_path / "opt.npz", **flat_pure(optimizer))

    # restore into freshly built objects (different init)
    model2 = MLP(seed=5)
    optimizer2 = ramie.Optimizer(
        model2, optax.adamw(1e-2, weight_decay=0.1), wrt=ramie.Param
    )
    for node, file in ((model2, "model.npz"), (optimizer2, "opt.npz")):
        loaded = np.load(tmp_path / file)
        state = ramie.state(node)
        for p, v in ramie.to_flat_state(state):
            v.value = jnp.asarray(loaded["/".join(map(str, p))])
        ramie.update(node, state)
    assert int(optimizer2.step.value) == 2

    for _ in range(2):
        _jit_train_step(model, optimizer)
        _jit_train_step(model2, optimizer2)
    assert_tree_close(params_dict(model2), params_dict(model))
    assert_tree_close(
        jax.tree.leaves(optimizer2.opt_state), jax.tree.leaves(optimizer.opt_state)
    )


def test_replace_by_pure_dict_round_trip():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    optimizer = ramie.Optimizer(model, optax.adam(1e-2), wrt=ramie.Param)
    optimizer.update(model, ramie.grad(lambda m: m(X).sum())(model))
    pure = ramie.to_pure_dict(ramie.state(optimizer))
    fresh = ramie.Optimizer(
        ramie.Linear(3, 2, rngs=ramie.Rngs(1)), optax.adam(1e-2), wrt=ramie.Param
    )
    state = ramie.state(fresh)
    ramie.replace_by_pure_dict(state, pure)
    ramie.update(fresh, state)
    assert_tree_close(
        jax.tree.leaves(fresh.opt_state),
        jax.tree.leaves(optimizer.opt_state),
        rtol=0,
        atol=0,
    )
    assert int(fresh.step.value) == 1


# ---------------------------------------------------------- wrong gradients
def _snapshot(model, optimizer):
    return params_dict(model), [
        np.asarray(x) for x in jax.tree.leaves(optimizer.opt_state)
    ]


def test_wrong_gradient_structure_names_missing_and_unexpected_paths():
    model = MLP()
    optimizer = ramie.Optimizer(model, optax.adam(1e-2), wrt=ramie.Param)
    grads = ramie.grad(loss_fn)(model)
    before = _snapshot(model, optimizer)
    bad = ramie.to_pure_dict(grads)
    del bad["l2"]["bias"]
    bad["l3"] = {"kernel": jnp.zeros((2, 2))}
    with pytest.raises(StateLoadError) as info:
        optimizer.update(model, bad)
    msg = str(info.value)
    assert "Optimizer.update()" in msg
    assert "l2.bias" in msg and "l3.kernel" in msg
    assert "ramie.grad" in msg  # the fix, as code
    assert ("l2", "bias") in [tuple(p) for p in info.value.missing]
    assert ("l3", "kernel") in [tuple(p) for p in info.value.unexpected]
    # nothing changed
    after = _snapshot(model, optimizer)
    assert_tree_close(after, before, rtol=0, atol=0)
    assert int(optimizer.step.value) == 0


def test_gradients_of_another_filter_are_rejected():
    model = MLP()
    optimizer = ramie.Optimizer(model, optax.sgd(0.1), wrt=ramie.Param)
    grads = ramie.grad(loss_fn, argnums=ramie.DiffState(0, ramie.PathContains("l1")))(
        model
    )
    with pytest.raises(StateLoadError, match=r"l2\.kernel"):
        optimizer.update(model, grads)


def test_mis_shaped_gradients_name_the_path():
    model = MLP()
    optimizer = ramie.Optimizer(model, optax.sgd(0.1), wrt=ramie.Param)
    grads = ramie.to_pure_dict(ramie.grad(loss_fn)(model))
    grads["l1"]["kernel"] = jnp.zeros((4, 4))
    with pytest.raises(StateLoadError, match=r"l1\.kernel"):
        optimizer.update(model, grads)


# ------------------------------------------------ gradients (loading policy)
def test_gradients_of_another_shape_name_the_path_and_change_nothing():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    opt = ramie.Optimizer(model, optax.sgd(0.1), wrt=ramie.Param)
    before = np.array(model.kernel.value)
    grads = {"kernel": jnp.ones((3, 5)), "bias": jnp.ones(2, jnp.int32)}
    with pytest.raises(StateLoadError) as e:
        opt.update(model, grads)
    msg = str(e.value)
    assert "kernel: shape (3, 2) vs (3, 5)" in msg
    assert "bias: dtype float32 vs int32" in msg
    np.testing.assert_array_equal(model.kernel.value, before)
    assert int(opt.step.value) == 0


def test_numpy_float64_gradients_match_float32_ones():
    a = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    b = ramie.clone(a)
    opt_a = ramie.Optimizer(a, optax.adam(0.1), wrt=ramie.Param)
    opt_b = ramie.Optimizer(b, optax.adam(0.1), wrt=ramie.Param)
    g = {"kernel": np.full((3, 2), 0.5), "bias": np.ones(2)}  # float64
    opt_a.update(a, g)
    opt_b.update(b, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g))
    assert a.kernel.value.dtype == jnp.float32
    np.testing.assert_array_equal(a.kernel.value, b.kernel.value)
    np.testing.assert_array_equal(a.bias.value, b.bias.value)


def test_wrt_filter_that_matches_nothing_warns_naming_it():
    from ramie.errors import RamieWarning

    model = ramie.BatchNorm(2, rngs=ramie.Rngs(0))
    with pytest.warns(RamieWarning, match=r"wrt=LoRAParam\): the filter matches no"):
        ramie.Optimizer(model, optax.sgd(0.1), wrt=ramie.LoRAParam)


# ------------------------------------------- optax sees the model's State
def test_line_search_with_value_grad_and_value_fn_matches_plain_optax():
    model = MLP()
    params0 = params_dict(model)
    optimizer = ramie.Optimizer(model, optax.lbfgs(), wrt=ramie.Param)
    graphdef, _, rest = ramie.split(model, ramie.Param, ...)

    def value_fn(params):  # receives a State of arrays, as in Flax
        return loss_fn(ramie.merge(graphdef, params, ramie.clone(rest)))

    for _ in range(2):
        loss, grads = ramie.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads, grad=grads, value=loss, value_fn=value_fn)

    tx = optax.lbfgs()
    params = jax.tree.map(jnp.asarray, params0)
    opt_state = tx.init(params)
    for _ in range(2):
        value, grad = jax.value_and_grad(pure_loss)(params)
        updates, opt_state = tx.update(
            grad, opt_state, params, value=value, grad=grad, value_fn=pure_loss
        )
        params = optax.apply_updates(params, updates)
    assert_tree_close(params_dict(model), params, rtol=1e-4, atol=1e-5)
    assert pure_loss(params_dict(model)) < pure_loss(params0)


def test_update_returns_the_updates_shaped_like_the_params():
    model = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    before = params_dict(model)
    optimizer = ramie.Optimizer(model, optax.sgd(0.5), wrt=ramie.Param)
    grads = ramie.grad(lambda m: m(X).sum())(model)
    updates = optimizer.update(model, grads)
    assert isinstance(updates, ramie.State)
    after = params_dict(model)
    for name in ("kernel", "bias"):
        np.testing.assert_allclose(after[name] - before[name], updates[name], atol=1e-6)
        np.testing.assert_allclose(updates[name], -0.5 * grads[name].value, atol=1e-6)


def test_gradients_outside_wrt_are_ignored():
    # the LoRA recipe: gradients of every Param, only LoRAParams optimised
    base = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    model = ramie.LoRA(3, 2, 2, base_module=base, rngs=ramie.Rngs(1))
    frozen = params_dict(model.base_module)
    optimizer = ramie.Optimizer(model, optax.sgd(0.1), wrt=ramie.LoRAParam)
    grads = ramie.grad(lambda m: jnp.sum(m(X) ** 2))(model)  # all Params
    assert "base_module" in grads
    lora_b0 = np.asarray(model.lora_b.value)
    optimizer.update(model, grads)
    np.testing.assert_allclose(
        model.lora_b.value, lora_b0 - 0.1 * grads["lora_b"].value, rtol=1e-6
    )
    assert_tree_close(params_dict(model.base_module), frozen, rtol=0, atol=0)


def test_partition_with_map_state_labels():
    model = MLP()
    params0 = params_dict(model)
    labels = ramie.map_state(lambda path, v: path[-1], ramie.state(model, ramie.Param))
    rates = {"kernel": optax.sgd(0.1), "bias": optax.sgd(1.0)}
    optimizer = ramie.Optimizer(model, optax.partition(rates, labels), wrt=ramie.Param)
    grads = ramie.grad(loss_fn)(model)
    optimizer.update(model, grads)
    g = ramie.to_pure_dict(grads)
    after = params_dict(model)
    for layer in ("l1", "l2"):
        np.testing.assert_allclose(
            after[layer]["kernel"],
            params0[layer]["kernel"] - 0.1 * g[layer]["kernel"],
            rtol=1e-5,
            atol=1e-6,
        )
        np.testing.assert_allclose(
            after[layer]["bias"],
            params0[layer]["bias"] - 1.0 * g[layer]["bias"],
            rtol=1e-5,
            atol=1e-6,
        )


def test_opt_state_entries_are_reached_by_attribute():
    model = MLP()
    optimizer = ramie.Optimizer(model, optax.adam(1e-2), wrt=ramie.Param)
    _train_step(model, optimizer)
    mu = optimizer.opt_state[0].mu
    assert isinstance(mu, ramie.State)
    assert isinstance(mu.l1["kernel"], ramie.OptVariable)
    assert mu.l1["kernel"][...].shape == (3, 4)
    assert float(jnp.abs(mu.l1["kernel"][...]).sum()) > 0


def test_optimizer_sharding_metadata_becomes_the_state_sharding():
    init = ramie.with_metadata(
        ramie.initializers.lecun_normal(), optimizer_sharding=("a", None)
    )
    model = ramie.Linear(3, 2, kernel_init=init, rngs=ramie.Rngs(0))
    optimizer = ramie.Optimizer(model, optax.adam(1e-2), wrt=ramie.Param)
    mu = optimizer.opt_state[0].mu["kernel"]
    assert mu.get_metadata()["out_sharding"] == ("a", None)
    assert "optimizer_sharding" not in mu.get_metadata()


# ----------------------------------------- bare arrays selected by the filter
class _ArrayModel(ramie.Module):
    def __init__(self):
        self.w = jnp.arange(8.0).reshape(2, 4) / 10
        self.count = jnp.array(0)

    def __call__(self, x):
        self.count += 1
        return x @ self.w


def test_optimizer_updates_bare_arrays_like_optax():
    wrt = lambda path, x: path[-1] == "w"  # noqa: E731
    model = _ArrayModel()
    tx = optax.adam(1e-2)
    optimizer = ramie.Optimizer(model, tx, wrt=wrt)
    x, y = jnp.ones((3, 2)), jnp.zeros((3, 4))

    @jax.jit
    def step(model, optimizer):
        graphdef, params, rest = ramie.split(model, wrt, ...)

        def loss_fn(params):
            m = ramie.merge(graphdef, params, rest)
            return jnp.mean((m(x) - y) ** 2), ramie.state(m, ramie.Not(wrt))

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        ramie.update(model, updates)
        optimizer.update(model, grads)
        return loss, model, optimizer

    w0 = model.w
    _, model, optimizer = step(model, optimizer)
    grad = jax.grad(lambda w: jnp.mean((x @ w - y) ** 2))(w0)
    upd, _ = tx.update(grad, tx.init(w0), w0)
    np.testing.assert_allclose(model.w, optax.apply_updates(w0, upd), rtol=1e-6)
    assert int(model.count) == 1 and int(optimizer.step.value) == 1
    assert not isinstance(model.w, ramie.Variable)
