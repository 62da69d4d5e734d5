"""Recurrent cells, RNN and Bidirectional: behaviour, and numbers against Flax NNX.

The common suite (``cases_recurrent.py``) already runs every layer through
jit/grad/vmap/bfloat16; here are the specifics: initialisation order, carry
initialisation, ``seq_lengths`` semantics checked against a hand-written loop,
``broadcast_rngs``, ``state_axes``, and the error messages. An eager RNN call
compiles its scan, so tests keep the number of RNN calls small.
"""

from __future__ import annotations

import contextlib
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import ramie
from ramie._src.nn import recurrent, rnn
from ramie.errors import RamieWarning, RngError
from ramie.testing import assert_trees_close

CELLS = ["LSTMCell", "OptimizedLSTMCell", "GRUCell", "SimpleCell"]


def copy_to_flax(ours, theirs):
    """Copy ramie's state (params and RNG state) into the Flax module."""
    state = nnx.state(theirs)
    nnx.replace_by_pure_dict(state, ramie.to_pure_dict(ramie.state(ours)))
    nnx.update(theirs, state)


def pure_shapes(tree):
    return jax.tree.map(jnp.shape, tree)


# ------------------------------------------------------------------ cells
@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("keep_rngs", [False, True])
def test_cells_initialise_like_flax(name, keep_rngs):
    """Same Rngs seed -> identical parameters (no copying), same paths and shapes."""
    ctx = (
        pytest.warns(UserWarning, match="keep_rngs")
        if keep_rngs
        else contextlib.nullcontext()
    )
    with ctx:
        ours = getattr(ramie, name)(3, 5, keep_rngs=keep_rngs, rngs=ramie.Rngs(0))
    with pytest.warns(UserWarning) if keep_rngs else contextlib.nullcontext():
        theirs = getattr(nnx, name)(3, 5, keep_rngs=keep_rngs, rngs=nnx.Rngs(0))
    our_pure = ramie.to_pure_dict(ramie.state(ours))
    their_pure = nnx.to_pure_dict(nnx.state(theirs))
    assert pure_shapes(our_pure) == pure_shapes(their_pure)
    assert_trees_close(
        ramie.to_pure_dict(ramie.state(ours, ramie.Param)),
        nnx.to_pure_dict(nnx.state(theirs, nnx.Param)),
        rtol=0,
        atol=0,
    )
    assert (ours.rngs is not None) == keep_rngs


def test_lstm_cell_param_names_match_flax():
    cell = ramie.LSTMCell(3, 4, rngs=ramie.Rngs(0))
    names = set(ramie.to_pure_dict(ramie.state(cell)))
    assert names == {"ii", "if_", "ig", "io", "hi", "hf", "hg", "ho"}
    assert cell.ii.bias is None and cell.hi.bias.shape == (4,)
    assert cell.ii.kernel.shape == (3, 4) and cell.hi.kernel.shape == (4, 4)


@pytest.mark.parametrize("name", CELLS)
def test_cell_step_matches_flax_with_custom_functions(name):
    kwargs = {"activation_fn": jax.nn.relu, "bias_init": ramie.initializers.ones}
    if name != "SimpleCell":
        kwargs["gate_fn"] = jax.nn.hard_sigmoid
    ours = getattr(ramie, name)(3, 4, **kwargs, rngs=ramie.Rngs(1))
    theirs = getattr(nnx, name)(3, 4, **kwargs, rngs=nnx.Rngs(2))
    copy_to_flax(ours, theirs)
    x = jax.random.normal(jax.random.key(0), (2, 2, 3))
    carry = ours.initialize_carry(
        x.shape, ramie.Rngs(0), carry_init=jax.nn.initializers.normal(1.0)
    )
    assert_trees_close(ours(carry, x), theirs(carry, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "name, n_carry",
    [("LSTMCell", 2), ("OptimizedLSTMCell", 2), ("GRUCell", 1), ("SimpleCell", 1)],
)
def test_initialize_carry_shapes_dtype_and_keys_match_flax(name, n_carry):
    ours = getattr(ramie, name)(3, 4, param_dtype=jnp.float16, rngs=ramie.Rngs(0))
    # Flax's fused cells cannot build half-precision orthogonal kernels on CPU
    theirs = getattr(nnx, name)(3, 4, rngs=nnx.Rngs(0))
    theirs.param_dtype = jnp.float16
    init = jax.nn.initializers.normal(1.0)
    our_rngs, their_rngs = ramie.Rngs(carry=7), nnx.Rngs(carry=7)
    got = ours.initialize_carry((2, 6, 3), our_rngs, carry_init=init)
    want = theirs.initialize_carry((2, 6, 3), their_rngs, carry_init=init)
    leaves = jax.tree.leaves(got)
    assert len(leaves) == n_carry
    assert all(x.shape == (2, 6, 4) and x.dtype == jnp.float16 for x in leaves)
    assert_trees_close(got, want, rtol=0, atol=0)
    # one key per carry array drawn from the 'carry' stream
    assert (
        int(our_rngs.carry.count.value) == n_carry == int(their_rngs.carry.count[...])
    )


def test_initialize_carry_defaults_to_zeros_and_accepts_a_stream():
    cell = ramie.GRUCell(3, 4, rngs=ramie.Rngs(0))
    stream = ramie.RngStream(0, tag="carry")
    h = cell.initialize_carry((5, 3), stream)
    assert h.shape == (5, 4) and not h.any()
    assert int(stream.count.value) == 1


def test_carry_init_given_at_construction_warns_and_is_used():
    with pytest.warns(
        RamieWarning, match=r"initialize_carry\(x.shape, rngs, carry_init"
    ):
        cell = ramie.SimpleCell(
            3, 4, carry_init=ramie.initializers.ones, rngs=ramie.Rngs(0)
        )
    assert (cell.initialize_carry((2, 3), ramie.Rngs(0)) == 1).all()
    # the argument wins over the attribute
    assert not cell.initialize_carry(
        (2, 3), ramie.Rngs(0), carry_init=ramie.initializers.zeros
    ).any()


def test_keep_rngs_stream_is_used_when_no_rngs_are_passed():
    with pytest.warns(RamieWarning, match="deprecated"):
        cell = ramie.LSTMCell(3, 4, keep_rngs=True, rngs=ramie.Rngs(0))
    c, h = cell.initialize_carry((2, 3), carry_init=jax.nn.initializers.normal(1.0))
    assert c.shape == h.shape == (2, 4) and not jnp.array_equal(c, h)
    assert int(cell.rngs.count.value) == 2


def test_initialize_carry_without_rngs_raises_with_a_fix():
    cell = ramie.OptimizedLSTMCell(3, 4, rngs=ramie.Rngs(0))
    with pytest.raises(
        RngError,
        match=r"(?s)OptimizedLSTMCell\.initialize_carry\(\): no RNG stream"
        r".*rngs=ramie\.Rngs\(0\)",
    ) as info:
        cell.initialize_carry((2, 3))
    assert isinstance(info.value, ValueError)  # as Flax raises
    with pytest.raises(
        TypeError, match="expected ramie.Rngs, an RngStream or None; got int"
    ):
        cell.initialize_carry((2, 3), 0)


def test_rnn_cell_base_requires_subclasses_to_implement():
    base = ramie.RNNCellBase()
    with pytest.raises(NotImplementedError, match="initialize_carry"):
        base.initialize_carry((2, 3))
    with pytest.raises(NotImplementedError, match="num_feature_axes"):
        _ = base.num_feature_axes
    with pytest.raises(NotImplementedError, match="__call__"):
        base(None, jnp.ones(3))


def test_half_precision_recurrent_kernels_are_orthogonal_and_match_float32_default():
    key = jax.random.key(3)
    init = recurrent._orthogonal_any_dtype()
    assert jnp.array_equal(
        init(key, (4, 12), jnp.float32),
        ramie.initializers.orthogonal()(key, (4, 12), jnp.float32),
    )
    w = init(key, (4, 4), jnp.bfloat16).astype(jnp.float32)
    assert jnp.allclose(w @ w.T, jnp.eye(4), atol=2e-2)
    cell = ramie.GRUCell(
        3, 4, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=ramie.Rngs(0)
    )
    assert cell.dense_h.kernel.dtype == jnp.bfloat16
    # LSTMCell keeps Flax's modified_orthogonal (float32 then cast)
    assert jnp.array_equal(
        recurrent.modified_orthogonal(key, (4, 4), jnp.bfloat16), w.astype(jnp.bfloat16)
    )


# ------------------------------------------------------------------ flip_sequences
@pytest.mark.parametrize("time_major", [False, True])
def test_flip_sequences_matches_flax(time_major):
    from flax.nnx.nn.recurrent import flip_sequences as flax_flip

    x = jnp.arange(2 * 3 * 5 * 2).reshape(2, 3, 5, 2)  # (batch, batch, time, features)
    lengths = jnp.array([[5, 1, 3], [0, 4, 2]])
    if time_major:
        x = jnp.moveaxis(x, 2, 0)
    got = rnn.flip_sequences(x, lengths, num_batch_dims=2, time_major=time_major)
    np.testing.assert_array_equal(got, flax_flip(x, lengths, 2, time_major))
    np.testing.assert_array_equal(
        rnn.flip_sequences(x, None, 2, time_major), flax_flip(x, None, 2, time_major)
    )


def test_flip_sequences_keeps_padding_at_the_end():
    x = jnp.array([[1, 2, 3, 0, 0]])
    np.testing.assert_array_equal(
        rnn.flip_sequences(x, jnp.array([3]), 1, False), [[3, 2, 1, 0, 0]]
    )


# ------------------------------------------------------------------ RNN
def _loop(cell, carry, xs):
    """Reference: run the cell step by step over axis 1 in Python."""
    ys = []
    for t in range(xs.shape[1]):
        carry, y = cell(carry, xs[:, t])
        ys.append(y)
    return carry, jnp.stack(ys, axis=1)


def test_rnn_matches_a_python_loop_and_uses_initial_carry():
    cell = ramie.LSTMCell(3, 4, rngs=ramie.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 5, 3))
    carry0 = cell.initialize_carry(
        (2, 3), ramie.Rngs(1), carry_init=jax.nn.initializers.normal(1.0)
    )
    model = ramie.RNN(cell)
    count_before = int(model.rngs.count.value)
    carry, y = model(x, initial_carry=carry0, return_carry=True)
    assert (
        int(model.rngs.count.value) == count_before
    )  # no keys drawn for a given carry
    want_carry, want_y = _loop(cell, carry0, x)
    assert_trees_close((carry, y), (want_carry, want_y), rtol=1e-5, atol=1e-6)


def test_rnn_seq_lengths_carry_is_the_one_after_the_last_valid_step():
    cell = ramie.GRUCell(3, 4, rngs=ramie.Rngs(0))
    model = ramie.RNN(cell, return_carry=True)
    x = jax.random.normal(jax.random.key(0), (3, 6, 3))
    lengths = jnp.array([6, 2, 4])
    fwd = ramie.jit(
        lambda m, x, lengths, reverse: m(
            x, seq_lengths=lengths, reverse=reverse, keep_order=True
        ),
        static_argnums=3,
    )
    carry, y = fwd(model, x, lengths, False)
    carry_r, y_r = fwd(model, x, lengths, True)
    h0 = jnp.zeros((1, 4))
    for b, n in enumerate(lengths.tolist()):
        seq = x[b : b + 1, :n]
        want_carry, want_y = _loop(cell, h0, seq)
        assert_trees_close(carry[b], want_carry[0], rtol=1e-5, atol=1e-6)
        assert_trees_close(y[b, :n], want_y[0], rtol=1e-5, atol=1e-6)
        # reverse runs the valid part backwards; keep_order restores the order
        want_carry_r, want_y_r = _loop(cell, h0, seq[:, ::-1])
        assert_trees_close(carry_r[b], want_carry_r[0], rtol=1e-5, atol=1e-6)
        assert_trees_close(y_r[b, :n], want_y_r[0, ::-1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"return_carry": True, "reverse": True},
        {"return_carry": True, "time_major": True, "reverse": True, "keep_order": True},
    ],
    ids=["reverse", "time-major-keep-order"],
)
def test_rnn_seq_lengths_match_flax(kwargs):
    ours = ramie.RNN(ramie.OptimizedLSTMCell(3, 4, rngs=ramie.Rngs(0)))
    theirs = nnx.RNN(nnx.OptimizedLSTMCell(3, 4, rngs=nnx.Rngs(0)))
    copy_to_flax(ours, theirs)
    shape = (5, 2, 3) if kwargs.get("time_major") else (2, 5, 3)
    x = jax.random.normal(jax.random.key(1), shape)
    lengths = jnp.array([2, 5])
    got = ours(x, seq_lengths=lengths, **kwargs)
    want = theirs(x, seq_lengths=lengths, **kwargs)
    assert_trees_close(got, want, rtol=1e-5, atol=1e-6)
    assert_trees_close(
        ramie.to_pure_dict(ramie.state(ours)), nnx.to_pure_dict(nnx.state(theirs))
    )


def test_rnn_seq_length_zero_picks_the_last_carry_as_flax_does():
    x = jax.random.normal(jax.random.key(1), (2, 4, 3))
    ours = ramie.RNN(ramie.SimpleCell(3, 4, rngs=ramie.Rngs(0)), return_carry=True)
    theirs = nnx.RNN(nnx.SimpleCell(3, 4, rngs=nnx.Rngs(0)), return_carry=True)
    copy_to_flax(ours, theirs)
    lengths = jnp.array([0, 3])
    assert_trees_close(
        ours(x, seq_lengths=lengths),
        theirs(x, seq_lengths=lengths),
        rtol=1e-5,
        atol=1e-6,
    )


def test_rnn_rngs_options_draw_carry_keys_like_flax():
    init = jax.nn.initializers.normal(1.0)
    x = jnp.ones((2, 3, 3))

    def pair(rngs_ours, rngs_theirs):
        cell_o = ramie.SimpleCell(3, 4, rngs=ramie.Rngs(0))
        cell_t = nnx.SimpleCell(3, 4, rngs=nnx.Rngs(0))
        cell_o.carry_init = cell_t.carry_init = init  # random carries show the keys
        return ramie.RNN(cell_o, rngs=rngs_ours), nnx.RNN(cell_t, rngs=rngs_theirs)

    ours, theirs = pair(True, True)
    assert_trees_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)
    assert ours.rngs.tag == "carry" and int(ours.rngs.count.value) == 1
    ours, theirs = pair(ramie.Rngs(carry=3), nnx.Rngs(carry=3))
    # per-call Rngs are forked, the RNN's own stream is untouched
    got, want = ours(x, rngs=ramie.Rngs(5)), theirs(x, rngs=nnx.Rngs(5))
    assert_trees_close(got, want, rtol=1e-5, atol=1e-6)
    assert int(ours.rngs.count.value) == 0
    ours, _ = pair(False, False)
    assert ours.rngs is None
    with pytest.raises(RngError, match=r"SimpleCell\.initialize_carry\(\)"):
        ours(x)
    with pytest.raises(
        ValueError, match=r"ramie\.RNN\(rngs=\.\.\.\): expected ramie\.Rngs"
    ):
        ramie.RNN(ours.cell, rngs=3)


def test_rnn_without_time_axis_raises_with_shapes():
    model = ramie.RNN(ramie.GRUCell(3, 4, rngs=ramie.Rngs(0)))
    with pytest.raises(
        ValueError, match=r"inputs of shape \(3,\) have no time axis.*GRUCell has 1"
    ):
        model(jnp.ones(3))


def test_rnn_seq_lengths_of_wrong_shape_raise():
    model = ramie.RNN(ramie.GRUCell(3, 4, rngs=ramie.Rngs(0)))
    with pytest.raises(
        ValueError,
        match=r"seq_lengths of shape \(3,\) does not match the batch shape \(2,\)",
    ):
        model(jnp.ones((2, 5, 3)), seq_lengths=jnp.array([1, 2, 3]))


def test_rnn_cell_with_two_feature_axes_scans_the_right_axis():
    class OuterCell(ramie.RNNCellBase):
        def __call__(self, carry, x):  # x: (*batch, rows, cols)
            carry = carry + x.sum(-1)
            return carry, carry

        def initialize_carry(self, input_shape, rngs=None, carry_init=None):
            return jnp.zeros(input_shape[:-1])

        @property
        def num_feature_axes(self):
            return 2

    x = jnp.ones((2, 7, 3, 4))  # (batch, time, rows, cols)
    y = ramie.RNN(OuterCell())(x)
    assert y.shape == (2, 7, 3)
    np.testing.assert_allclose(y[0, :, 0], 4.0 * jnp.arange(1, 8))


def test_rnn_broadcast_rngs_match_flax():
    """With broadcast_rngs every step sees the same dropout mask, fresh per call."""

    def make(mod):
        class DropCell(mod.RNNCellBase):
            def __init__(self, rngs):
                self.drop = mod.Dropout(0.5, rngs=rngs)

            def __call__(self, carry, x):
                return carry + 1, self.drop(x)

            def initialize_carry(self, input_shape, rngs=None, carry_init=None):
                return jnp.zeros(input_shape[:-1])

            @property
            def num_feature_axes(self):
                return 1

        return DropCell

    x = jnp.ones((1, 4, 16))
    for broadcast in [None, "dropout"]:
        ours = ramie.RNN(make(ramie)(ramie.Rngs(dropout=3)), broadcast_rngs=broadcast)
        theirs = nnx.RNN(make(nnx)(nnx.Rngs(dropout=3)), broadcast_rngs=broadcast)
        y1, y2 = ours(x), ours(x)
        assert jnp.array_equal(y1, theirs(x)) and jnp.array_equal(y2, theirs(x))
        assert not jnp.array_equal(y1, y2)
        same_each_step = all(jnp.array_equal(y1[0, 0], y1[0, t]) for t in range(4))
        assert same_each_step == (broadcast is not None)
        assert_trees_close(
            ramie.to_pure_dict(ramie.state(ours)), nnx.to_pure_dict(nnx.state(theirs))
        )


def test_rnn_state_axes_broadcast_params_gives_the_same_result():
    cell = ramie.GRUCell(3, 4, rngs=ramie.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 4, 3))
    default = ramie.RNN(cell)
    explicit = ramie.RNN(cell, state_axes={ramie.Param: None, ...: ramie.Carry})
    assert isinstance(explicit.state_axes, ramie.StateAxes)
    assert_trees_close(explicit(x), default(x))


def test_rnn_under_jit_grad_and_vmap_matches_flax_gradients():
    ours = ramie.RNN(ramie.LSTMCell(3, 4, rngs=ramie.Rngs(0)))
    theirs = nnx.RNN(nnx.LSTMCell(3, 4, rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(2), (3, 2, 5, 3))  # vmapped over axis 0

    def loss(m, x, vmap):
        out = vmap(lambda m, x: m(x), in_axes=(None, 0))(m, x)
        return jnp.sum(out**2)

    g_ours = ramie.jit(ramie.grad(lambda m, x: loss(m, x, ramie.vmap)))(ours, x)
    g_theirs = nnx.jit(nnx.grad(lambda m, x: loss(m, x, nnx.vmap)))(theirs, x)
    assert_trees_close(
        ramie.to_pure_dict(g_ours), nnx.to_pure_dict(g_theirs), rtol=1e-5, atol=1e-6
    )


def test_rnn_bfloat16_outputs_and_carry():
    cell = ramie.OptimizedLSTMCell(
        3, 4, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=ramie.Rngs(0)
    )
    carry, y = ramie.RNN(cell, return_carry=True)(jnp.ones((2, 5, 3), jnp.bfloat16))
    assert y.dtype == jnp.bfloat16 and all(c.dtype == jnp.bfloat16 for c in carry)


# ------------------------------------------------------------------ Bidirectional
def test_bidirectional_matches_two_rnns_and_flax():
    x = jax.random.normal(jax.random.key(0), (2, 5, 3))
    lengths = jnp.array([5, 3])
    fwd, bwd = (
        ramie.RNN(ramie.GRUCell(3, 4, rngs=ramie.Rngs(0))),
        ramie.RNN(ramie.GRUCell(3, 2, rngs=ramie.Rngs(1))),
    )
    ours = ramie.Bidirectional(fwd, bwd, return_carry=True)
    theirs = nnx.Bidirectional(
        nnx.RNN(nnx.GRUCell(3, 4, rngs=nnx.Rngs(0))),
        nnx.RNN(nnx.GRUCell(3, 2, rngs=nnx.Rngs(1))),
        return_carry=True,
    )
    (c_f, c_b), y = ours(x, seq_lengths=lengths)
    assert y.shape == (2, 5, 6) and c_f.shape == (2, 4) and c_b.shape == (2, 2)
    cf_want, yf_want = fwd(x, seq_lengths=lengths, return_carry=True)
    cb_want, yb_want = bwd(
        x, seq_lengths=lengths, return_carry=True, reverse=True, keep_order=True
    )
    assert_trees_close(
        ((c_f, c_b), y), ((cf_want, cb_want), jnp.concatenate([yf_want, yb_want], -1))
    )
    assert_trees_close(
        ((c_f, c_b), y), theirs(x, seq_lengths=lengths), rtol=1e-5, atol=1e-6
    )


def test_bidirectional_rngs_options():
    cell = ramie.GRUCell(3, 4, rngs=ramie.Rngs(0))
    assert (
        ramie.Bidirectional(ramie.RNN(cell), ramie.RNN(cell), rngs=False).rngs is None
    )
    stream = ramie.RngStream(1, tag="carry")
    assert (
        ramie.Bidirectional(ramie.RNN(cell), ramie.RNN(cell), rngs=stream).rngs
        is stream
    )
    with pytest.raises(TypeError, match=r"ramie\.Bidirectional\(rngs=\.\.\.\)"):
        ramie.Bidirectional(ramie.RNN(cell), ramie.RNN(cell), rngs="carry")


def test_bidirectional_warns_when_both_directions_are_one_object(caplog):
    shared = ramie.RNN(ramie.SimpleCell(3, 2, rngs=ramie.Rngs(0)))
    layer = ramie.Bidirectional(shared, shared, merge_fn=jnp.add)
    with caplog.at_level(logging.WARNING, logger=rnn.__name__):
        y = layer(jnp.ones((1, 2, 3)))
    assert y.shape == (1, 2, 2)
    assert "share parameters" in caplog.text
