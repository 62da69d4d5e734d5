"""Tests for ``ramie.scan`` against ``jax.lax.scan`` and eager loops: carried,
broadcast and scanned modules, RNG state threaded through steps, out_axes,
reverse/length, remat inside scan, scan inside jit, and errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tx_helpers import assert_trees_equal, pure_state

import ramie
from ramie.errors import TransformError

XS = jax.random.normal(jax.random.key(0), (5, 3))


class Acc(ramie.Module):
    def __init__(self):
        self.total = ramie.Variable(jnp.zeros(3))
        self.n = ramie.Variable(jnp.array(0))


def rnn_step(h, cell, x):
    h = jnp.tanh(cell(h) + x)
    return h, 2.0 * h


def _reference_scan(cell, xs, h0, **kw):
    gd, st = ramie.split(cell)

    def step(h, x):
        return rnn_step(h, ramie.merge(gd, st, copy=True), x)

    return jax.lax.scan(step, h0, xs, **kw)


# -------------------------------------------------------- vs jax.lax.scan
def test_broadcast_module_matches_lax_scan():
    cell = ramie.Linear(3, 3, rngs=ramie.Rngs(0))
    h, ys = ramie.scan(rnn_step, in_axes=(ramie.Carry, None, 0))(jnp.zeros(3), cell, XS)
    h_ref, ys_ref = _reference_scan(cell, XS, jnp.zeros(3))
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-5, atol=1e-6)


def test_reverse_matches_lax_scan():
    cell = ramie.Linear(3, 3, rngs=ramie.Rngs(0))
    h, ys = ramie.scan(rnn_step, in_axes=(ramie.Carry, None, 0), reverse=True)(
        jnp.zeros(3), cell, XS
    )
    h_ref, ys_ref = _reference_scan(cell, XS, jnp.zeros(3), reverse=True)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-5, atol=1e-6)
    h_fwd, _ = _reference_scan(cell, XS, jnp.zeros(3))
    assert not np.allclose(h, h_fwd)


def test_length_without_scanned_inputs():
    acc = Acc()

    def count(acc):
        acc.n.value += 1
        return acc, acc.n.value

    out, ys = ramie.scan(count, in_axes=(ramie.Carry,), length=4)(acc)
    assert out is acc
    assert int(acc.n.value) == 4
    np.testing.assert_array_equal(ys, [1, 2, 3, 4])


def test_nothing_to_scan_without_length_is_an_error():
    with pytest.raises(ValueError, match=r"length="):
        ramie.scan(lambda c: (c, c), in_axes=(ramie.Carry,))(jnp.zeros(()))


def test_scanned_pytree_inputs():
    def step(c, d):
        return c + d["a"].sum(), d["a"] * d["b"]

    c, ys = ramie.scan(step, in_axes=(ramie.Carry, 0))(0.0, {"a": XS, "b": XS + 1})
    c_ref, ys_ref = jax.lax.scan(step, 0.0, {"a": XS, "b": XS + 1})
    np.testing.assert_allclose(c, c_ref, rtol=1e-5)
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-6)


# ------------------------------------------------------------ Carry module
def test_carry_module_accumulates_across_steps():
    acc = Acc()

    def step(acc, x):
        acc.total.value += x
        acc.n.value += 1
        return acc, acc.total.value

    out, ys = ramie.scan(step, in_axes=(ramie.Carry, 0))(acc, XS)
    assert out is acc
    assert int(acc.n.value) == 5
    np.testing.assert_allclose(acc.total.value, XS.sum(0), rtol=1e-5)
    np.testing.assert_allclose(ys, jnp.cumsum(XS, 0), rtol=1e-5, atol=1e-6)


def test_carry_pytree_with_module_and_array():
    acc = Acc()

    def step(carry, x):
        a, h = carry
        a.n.value += 1
        return (a, h + x), h

    (a, h), ys = ramie.scan(step, in_axes=(ramie.Carry, 0))((acc, jnp.zeros(3)), XS)
    assert a is acc and int(acc.n.value) == 5
    np.testing.assert_allclose(h, XS.sum(0), rtol=1e-5)
    np.testing.assert_allclose(ys[1:], jnp.cumsum(XS, 0)[:-1], rtol=1e-5, atol=1e-6)


def test_out_axes_carry_alone():
    acc = Acc()

    def step(acc, x):
        acc.total.value += x
        return acc

    out = ramie.scan(step, in_axes=(ramie.Carry, 0), out_axes=ramie.Carry)(acc, XS)
    assert out is acc
    np.testing.assert_allclose(acc.total.value, XS.sum(0), rtol=1e-5)


def test_out_axes_stacking_on_axis_1_and_several_outputs():
    xb = jnp.stack([XS, 2 * XS])  # (2, 5, 3): scan over axis 1
    cell = ramie.Linear(3, 3, rngs=ramie.Rngs(0))
    h, ys = ramie.scan(
        rnn_step, in_axes=(ramie.Carry, None, 1), out_axes=(ramie.Carry, 1)
    )(jnp.zeros((2, 3)), cell, xb)
    assert ys.shape == (2, 5, 3)
    h_ref, ys_ref = _reference_scan(cell, jnp.swapaxes(xb, 0, 1), jnp.zeros((2, 3)))
    np.testing.assert_allclose(ys, jnp.swapaxes(ys_ref, 0, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-6)

    def step3(c, x):
        return c + x.sum(), x, 2 * x

    c, y0, y1 = ramie.scan(
        step3, in_axes=(ramie.Carry, 0), out_axes=(ramie.Carry, 0, 1)
    )(0.0, XS)
    np.testing.assert_allclose(y0, XS, rtol=1e-6)
    np.testing.assert_allclose(y1, 2 * XS.T, rtol=1e-6)
    np.testing.assert_allclose(c, XS.sum(), rtol=1e-5)


def test_without_carry():
    cell = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
    ys = ramie.scan(lambda m, x: m(x), in_axes=(None, 0), out_axes=0)(cell, XS)
    np.testing.assert_allclose(ys, cell(XS), rtol=1e-5, atol=1e-6)


# --------------------------------------------------- RNG state in scan
def test_broadcast_dropout_draws_one_mask_per_call():
    dropout = ramie.Dropout(0.5, rngs=ramie.Rngs(dropout=0))
    eager = ramie.Dropout(0.5, rngs=ramie.Rngs(dropout=0))
    ones = jnp.ones(16)
    run = ramie.scan(lambda c, d, x: (c, d(ones)), in_axes=(ramie.Carry, None, 0))
    _, masks = run(0.0, dropout, XS)
    first = eager(ones)
    # every step sees the same (broadcast) RNG state: one mask for all steps
    np.testing.assert_array_equal(masks, jnp.stack([first] * len(XS)))
    # the last step's update is written back: the next call draws a new mask
    assert int(dropout.rngs.count.value) == 1
    _, masks2 = run(0.0, dropout, XS)
    np.testing.assert_array_equal(masks2, jnp.stack([eager(ones)] * len(XS)))
    assert not np.array_equal(masks, masks2)


def test_carried_dropout_threads_rng_state_through_steps():
    dropout = ramie.Dropout(0.5, rngs=ramie.Rngs(dropout=0))
    eager = ramie.Dropout(0.5, rngs=ramie.Rngs(dropout=0))
    ones = jnp.ones(16)
    axes = ramie.StateAxes({...: ramie.Carry})
    _, masks = ramie.scan(lambda c, d, x: (c, d(ones)), in_axes=(ramie.Carry, axes, 0))(
        0.0, dropout, XS
    )
    assert int(dropout.rngs.count.value) == len(XS)
    expected = jnp.stack([eager(ones) for _ in range(len(XS))])
    np.testing.assert_array_equal(masks, expected)


def test_broadcast_state_is_threaded_without_graph_updates():
    dropout = ramie.Dropout(0.5, rngs=ramie.Rngs(dropout=0))
    eager = ramie.Dropout(0.5, rngs=ramie.Rngs(dropout=0))
    ones = jnp.ones(16)
    run = ramie.scan(
        lambda d, c, x: (c, d(ones)),
        in_axes=(None, ramie.Carry, 0),
        graph_updates=False,
    )
    _, masks = run(dropout, 0.0, XS)
    assert int(dropout.rngs.count.value) == len(XS)
    expected = jnp.stack([eager(ones) for _ in range(len(XS))])
    np.testing.assert_array_equal(masks, expected)


class Block(ramie.Module):
    def __init__(self, rngs: ramie.Rngs):
        self.linear = ramie.Linear(4, 4, rngs=rngs)
        self.dropout = ramie.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.dropout(self.linear(x)))


def _stack(n: int, seed: int):
    @ramie.split_rngs(splits=n)
    @ramie.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
        return Block(rngs)

    return create(ramie.Rngs(params=seed, dropout=seed + 1))


def _scan_layers(blocks, x):
    def forward(x, block):
        return block(x), block.dropout(jnp.ones(8))

    return ramie.scan(forward, in_axes=(ramie.Carry, 0), out_axes=(ramie.Carry, 0))(
        x, blocks
    )


def _loop_reference(blocks, x, n):
    """Each layer sliced out and run eagerly, one after the other."""
    gd, state = ramie.split(blocks)
    masks = []
    new_states = []
    for i in range(n):
        layer = ramie.merge(gd, jax.tree.map(lambda a, i=i: a[i], state), copy=True)
        x = layer(x)
        masks.append(layer.dropout(jnp.ones(8)))
        new_states.append(ramie.state(layer))
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *new_states)
    return x, jnp.stack(masks), stacked


def test_scanned_stacked_layers_match_an_eager_loop():
    blocks = _stack(3, 0)
    x0 = jax.random.normal(jax.random.key(1), (2, 4))
    x_ref, masks_ref, state_ref = _loop_reference(blocks, x0, 3)
    x, masks = _scan_layers(blocks, x0)
    np.testing.assert_allclose(x, x_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(masks, masks_ref)
    assert_trees_equal(
        pure_state(blocks),
        jax.tree.map(
            lambda a: np.asarray(
                jax.random.key_data(a)
                if jnp.issubdtype(a.dtype, jax.dtypes.prng_key)
                else a
            ),
            ramie.to_pure_dict(state_ref),
        ),
        rtol=1e-6,
    )


def test_scanned_dropout_masks_differ_per_layer_and_per_call_and_reproduce():
    blocks = _stack(3, 0)
    x0 = jnp.ones((2, 4))
    _, m1 = _scan_layers(blocks, x0)
    _, m2 = _scan_layers(blocks, x0)
    m1, m2 = np.asarray(m1), np.asarray(m2)
    assert len({tuple(m) for m in m1}) == 3  # per layer
    assert not np.array_equal(m1, m2)  # per call
    np.testing.assert_array_equal(blocks.dropout.rngs.count.value, [4, 4, 4])
    again = _stack(3, 0)
    _, r1 = _scan_layers(again, x0)
    np.testing.assert_array_equal(r1, m1)  # same seed, same masks
    other = _stack(3, 5)
    _, o1 = _scan_layers(other, x0)
    assert not np.array_equal(o1, m1)


def test_scan_over_layers_in_eval_mode_is_deterministic():
    blocks = _stack(3, 0)
    blocks.eval()
    x0 = jax.random.normal(jax.random.key(1), (2, 4))

    def forward(x, block):
        return block(x)

    y1 = ramie.scan(forward, in_axes=(ramie.Carry, 0), out_axes=ramie.Carry)(x0, blocks)
    y2 = ramie.scan(forward, in_axes=(ramie.Carry, 0), out_axes=ramie.Carry)(x0, blocks)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(blocks.dropout.rngs.count.value, [0, 0, 0])


def test_scan_with_state_axes_broadcasts_or_carries_the_rest():
    class Layer(ramie.Module):
        def __init__(self, rngs):
            self.linear = ramie.Linear(3, 3, rngs=rngs)
            self.calls = ramie.BatchStat(jnp.array(0))

    axes = ramie.StateAxes({ramie.Param: 0, ...: None})

    @ramie.split_rngs(splits=4)
    @ramie.vmap(in_axes=(0,), out_axes=axes)
    def create(rngs):
        return Layer(rngs)

    layers = create(ramie.Rngs(0))

    def step(x, layer):
        layer.calls.value += 1
        return layer.linear(x), None

    x, _ = ramie.scan(step, in_axes=(ramie.Carry, axes))(jnp.ones(3), layers)
    assert int(layers.calls.value) == 1  # broadcast: each step sees 0
    carried = ramie.StateAxes({ramie.Param: 0, ...: ramie.Carry})
    ramie.scan(step, in_axes=(ramie.Carry, carried))(jnp.ones(3), layers)
    assert int(layers.calls.value) == 5  # carried through the 4 steps
    ref = jnp.ones(3)
    for i in range(4):
        ref = ref @ layers.linear.kernel.value[i] + layers.linear.bias.value[i]
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- remat
def test_remat_inside_scan_gives_the_same_gradients():
    blocks = _stack(3, 0)
    blocks.eval()
    x0 = jax.random.normal(jax.random.key(1), (2, 4))

    def loss(blocks, use_remat):
        def forward(x, block):
            f = ramie.remat(lambda b, x: b(x)) if use_remat else (lambda b, x: b(x))
            return f(block, x)

        y = ramie.scan(forward, in_axes=(ramie.Carry, 0), out_axes=ramie.Carry)(
            x0, blocks
        )
        return jnp.sum(y**2)

    g_remat = ramie.grad(loss)(blocks, True)
    g_plain = ramie.grad(loss)(blocks, False)
    assert_trees_equal(
        ramie.to_pure_dict(g_remat), ramie.to_pure_dict(g_plain), rtol=1e-5, atol=1e-6
    )
    # reference: jax.grad of an eager loop over the sliced layers
    gd, params, rest = ramie.split(blocks, ramie.Param, ...)

    def pure_loop(params):
        y = x0
        for i in range(3):
            layer = jax.tree.map(lambda a, i=i: a[i], (params, rest))
            y = ramie.merge(gd, *layer, copy=True)(y)
        return jnp.sum(y**2)

    g_ref = jax.grad(pure_loop)(params)
    assert_trees_equal(
        ramie.to_pure_dict(g_remat), ramie.to_pure_dict(g_ref), rtol=1e-5, atol=1e-6
    )


# ---------------------------------------------------------- scan in jit
def test_scan_inside_jit_matches_eager_scan_and_updates_state():
    blocks = _stack(3, 0)
    eager = ramie.clone(blocks)
    x0 = jnp.ones((2, 4))

    @ramie.jit
    def run(blocks, x):
        return _scan_layers(blocks, x)

    for _ in range(2):
        x, masks = run(blocks, x0)
        x_e, masks_e = _scan_layers(eager, x0)
        np.testing.assert_allclose(x, x_e, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(masks, masks_e)
    assert_trees_equal(pure_state(blocks), pure_state(eager), rtol=1e-6)
    np.testing.assert_array_equal(blocks.dropout.rngs.count.value, [4, 4, 4])


# ------------------------------------------------------------------ errors
def test_returning_a_different_module_as_carry_is_an_error():
    with pytest.raises(ValueError, match=r"same modules and Variables as the carry"):
        ramie.scan(lambda a, x: (Acc(), x), in_axes=(ramie.Carry, 0))(Acc(), XS)


def test_returning_an_array_instead_of_the_carry_module_is_an_error():
    with pytest.raises(ValueError, match=r"same modules and Variables as the carry"):
        ramie.scan(lambda a, x: (x, x), in_axes=(ramie.Carry, 0))(Acc(), XS)


def test_non_tuple_output_with_carry_and_ys_is_an_error():
    with pytest.raises(TypeError, match=r"must return a tuple"):
        ramie.scan(lambda c, x: c, in_axes=(ramie.Carry, 0))(0.0, XS)


def test_two_carries_is_an_error_when_decorating():
    with pytest.raises(TransformError, match=r"multiple Carry.*at most one argument"):
        ramie.scan(lambda a, b, x: (a, x), in_axes=(ramie.Carry, ramie.Carry, 0))


def test_carry_on_one_side_only_is_an_error_when_decorating():
    with pytest.raises(TransformError, match=r"the other must also have Carry"):
        ramie.scan(in_axes=0, out_axes=(ramie.Carry, 0))
    with pytest.raises(TransformError, match=r"the other must also have Carry"):
        ramie.scan(in_axes=(ramie.Carry, 0), out_axes=0)


@pytest.mark.parametrize(
    "out_axes",
    [(ramie.Carry, None), (ramie.Carry, ramie.StateAxes({...: None}))],
)
def test_broadcast_outputs_are_an_error_when_decorating(out_axes):
    with pytest.raises(TransformError, match=r"Cannot broadcast output state"):
        ramie.scan(in_axes=(ramie.Carry, 0), out_axes=out_axes)


def test_bare_carry_in_axes_needs_exactly_one_argument():
    loop = ramie.scan(
        lambda c, x: c, in_axes=ramie.Carry, out_axes=ramie.Carry, length=3
    )
    with pytest.raises(TransformError, match=r"exactly one argument.*called with 2"):
        loop(0.0, 1.0)
    assert (
        float(
            ramie.scan(
                lambda c: c + 1, in_axes=ramie.Carry, out_axes=ramie.Carry, length=3
            )(0.0)
        )
        == 3.0
    )


def test_carry_replaced_by_a_new_module_is_an_error():
    counter = ramie.Dict(n=ramie.BatchStat(jnp.array(0)))

    def step(c, x):
        return ramie.Dict(n=ramie.BatchStat(c.n.value + 1)), x

    with pytest.raises(TransformError, match=r"Carry references must be the same"):
        ramie.scan(step)(counter, XS)


def test_scanned_inputs_of_different_lengths_is_an_error():
    with pytest.raises(ValueError, match=r"different lengths"):
        ramie.scan(lambda c, a, b: (c, a), in_axes=(ramie.Carry, 0, 0))(
            0.0, XS, jnp.ones(4)
        )


def test_structural_change_inside_scan_is_an_error():
    acc = Acc()

    def step(acc, x):
        acc.extra = ramie.Variable(x)
        return acc, x

    with pytest.raises(ramie.errors.GraphStructureError, match=r"ramie.scan"):
        ramie.scan(step, in_axes=(ramie.Carry, 0))(acc, XS)
    assert not hasattr(acc, "extra")


def test_keyword_arguments_that_are_not_parameters_are_rejected():
    with pytest.raises(TypeError, match=r"positionally"):
        ramie.scan(lambda c, *xs, **kw: (c, xs))(0.0, XS, extra=XS)


def test_carry_of_another_structure_names_the_paths():
    from ramie.errors import CarryStructureError

    def step(c, x):
        return {"b": c["a"] + x, "keep": c["keep"]}, x

    carry = {"a": jnp.zeros(2), "keep": jnp.ones(2)}
    with pytest.raises(CarryStructureError) as e:
        ramie.scan(step, in_axes=(ramie.Carry, 0), out_axes=(ramie.Carry, 0))(
            carry, jnp.ones((3, 2))
        )
    msg = str(e.value)
    assert "In the carry given, not in the one returned:\n    a\n" in msg
    assert "In the carry returned, not in the one given:\n    b\n" in msg
    assert "    keep" not in msg


def test_scan_keyword_arguments_take_their_parameter_in_axes():
    @ramie.scan(in_axes=(ramie.Carry, 0), out_axes=(ramie.Carry, 0))
    def cumsum(c, x):
        c = c + x
        return c, c

    xs = jnp.arange(4.0)
    c, ys = cumsum(jnp.zeros(()), x=xs)
    np.testing.assert_array_equal(ys, jnp.cumsum(xs))
    assert float(c) == float(xs.sum())


def test_prefix_as_scan_in_axes():
    cell = ramie.Linear(3, 3, rngs=ramie.Rngs(0))
    cell.offset = ramie.BatchStat(jnp.arange(5.0))  # one entry per step
    axes = ramie.prefix(cell, {"offset": 0, ...: None})

    @ramie.scan(in_axes=(axes, ramie.Carry, 1), out_axes=(ramie.Carry, 1))
    def unroll(cell, h, x):
        h = cell(h) + x + cell.offset[...]
        return h, h

    h0, xs = jnp.zeros((2, 3)), jnp.ones((2, 5, 3))
    h, ys = unroll(cell, h0, xs)
    ref = h0
    for t in range(5):  # the loop written out
        ref = cell(ref) + xs[:, t] + cell.offset[...][t]
        np.testing.assert_allclose(ys[:, t], ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, ref, rtol=1e-5, atol=1e-6)


class LazyScale(ramie.Module):
    """Creates its Variable on the first call (as a lazily initialised layer)."""

    def __call__(self, x):
        if not hasattr(self, "scale"):
            self.scale = ramie.Param(x * 2.0)
        return x * self.scale.value


def test_variables_created_in_a_scanned_module_come_out_stacked():
    layer = LazyScale()
    xs = jax.random.normal(jax.random.key(0), (5, 3))

    def step(c, m, x):
        y = m(x)
        return c + y, y

    c, ys = ramie.scan(step, in_axes=(ramie.Carry, 0, 0))(jnp.zeros(3), layer, xs)
    # reference: the same computation with jax.lax.scan on arrays
    c_ref, ys_ref = jax.lax.scan(
        lambda c, x: (c + x * x * 2.0, x * x * 2.0), jnp.zeros(3), xs
    )
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-6)
    np.testing.assert_allclose(c, c_ref, rtol=1e-6)
    assert layer.scale.value.shape == (5, 3)
    np.testing.assert_allclose(layer.scale.value, xs * 2.0, rtol=1e-6)
    # second call: the structure is there, the Variable is sliced per step
    c2, ys2 = ramie.scan(step, in_axes=(ramie.Carry, 0, 0))(jnp.zeros(3), layer, xs)
    np.testing.assert_allclose(ys2, ys_ref, rtol=1e-6)


def test_variables_created_in_broadcast_state_are_an_error():
    layer = LazyScale()
    with pytest.raises(ramie.errors.GraphStructureError, match=r"scale.*axis None"):
        ramie.scan(lambda c, m, x: (c, m(x)), in_axes=(ramie.Carry, None, 0))(
            jnp.zeros(3), layer, jnp.ones((5, 3))
        )
    assert not hasattr(layer, "scale")


def test_calling_the_same_function_again_does_not_retrace():
    traces = 0

    @ramie.scan
    def f(count, x):
        nonlocal traces  # a closed-over Python value that changes
        traces += 1
        return count + 1, x * 2

    xs = jnp.arange(5.0)
    ref_c, ref_ys = jax.lax.scan(lambda c, x: (c + 1, x * 2), jnp.array(0), xs)
    c, ys = f(jnp.array(0), xs)
    c, ys = f(c, xs)
    assert traces == 1
    assert int(c) == 2 * int(ref_c)
    np.testing.assert_array_equal(ys, ref_ys)


def test_a_new_closure_with_the_same_code_is_not_retraced():
    traces = []

    def run(xs):
        def step(c, x):
            traces.append(1)
            return c + x, c

        return ramie.scan(step)(jnp.array(0.0), xs)

    xs = jnp.arange(4.0)
    run(xs)
    c, ys = run(xs)
    ref_c, ref_ys = jax.lax.scan(lambda c, x: (c + x, c), jnp.array(0.0), xs)
    assert len(traces) == 1
    np.testing.assert_allclose(c, ref_c)
    np.testing.assert_allclose(ys, ref_ys)


@pytest.mark.parametrize("graph_updates", [True, False])
def test_a_new_variable_as_carry_is_an_identity_error(graph_updates):
    count = ramie.Variable(jnp.array(0))

    @ramie.scan(graph_updates=graph_updates)
    def f(count, x):
        return ramie.Variable(count.value + 1), x

    with pytest.raises(ValueError, match=r"scan Variable identity must be preserved"):
        f(count, jnp.arange(3))
    assert int(count.value) == 0


def test_returning_a_scanned_variable_without_graph_updates_is_a_duplicate():
    v = ramie.Param(jnp.arange(5))
    f = ramie.scan(lambda v: v, in_axes=0, out_axes=0, graph_updates=False)
    with pytest.raises(ramie.errors.GraphStructureError, match=r"Duplicate Param"):
        f(v)
