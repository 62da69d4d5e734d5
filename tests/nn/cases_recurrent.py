"""Cases for the recurrent layers: the four cells, RNN and Bidirectional.

Cells are called as ``cell(carry, x)``; the carry arrays are separate inputs
(``(c, h, x)`` for the LSTMs) so every check sees plain arrays. RNN cases cover
each cell, ``return_carry``, ``reverse``/``keep_order``, ``time_major``,
``seq_lengths`` (as an int input) and ``unroll``; the Bidirectional cases cover
the forward direction with ``seq_lengths``. An RNN call compiles its scan (about
a second each), so the options are combined into few cases; the finer
behaviour is tested in ``test_recurrent.py``.
"""

import jax
import jax.numpy as jnp
from cases import LayerCase, normal

import ramie

BF16 = {"dtype": jnp.bfloat16, "param_dtype": jnp.bfloat16}


def _nnx():
    return __import__("flax").nnx


def _carry_and_x(batch: int, hidden: int, features: int, n_carry: int):
    def inputs(key):
        keys = jax.random.split(key, n_carry + 1)
        carry = tuple(jax.random.normal(k, (batch, hidden)) for k in keys[:-1])
        return (*carry, jax.random.normal(keys[-1], (batch, features)))

    return inputs


def _lstm_call(m, c, h, x):
    return m((c, h), x)


def _seq_and_lengths(key):
    x = jax.random.normal(key, (2, 5, 3))
    return x, jnp.array([3, 5], jnp.int32)


CELL_CASES = [
    LayerCase(
        name="LSTMCell",
        layer=ramie.LSTMCell,
        make=lambda rngs: ramie.LSTMCell(3, 4, rngs=rngs),
        make_flax=lambda rngs: _nnx().LSTMCell(3, 4, rngs=rngs),
        inputs=_carry_and_x(2, 4, 3, 2),
        call=_lstm_call,
        make_bf16=lambda rngs: ramie.LSTMCell(3, 4, **BF16, rngs=rngs),
    ),
    LayerCase(
        name="OptimizedLSTMCell",
        layer=ramie.OptimizedLSTMCell,
        make=lambda rngs: ramie.OptimizedLSTMCell(3, 4, rngs=rngs),
        make_flax=lambda rngs: _nnx().OptimizedLSTMCell(3, 4, rngs=rngs),
        inputs=_carry_and_x(2, 4, 3, 2),
        call=_lstm_call,
        make_bf16=lambda rngs: ramie.OptimizedLSTMCell(3, 4, **BF16, rngs=rngs),
    ),
    LayerCase(
        name="GRUCell",
        layer=ramie.GRUCell,
        make=lambda rngs: ramie.GRUCell(3, 4, rngs=rngs),
        make_flax=lambda rngs: _nnx().GRUCell(3, 4, rngs=rngs),
        inputs=_carry_and_x(2, 4, 3, 1),
        make_bf16=lambda rngs: ramie.GRUCell(3, 4, **BF16, rngs=rngs),
    ),
    LayerCase(
        name="SimpleCell-residual",
        layer=ramie.SimpleCell,
        make=lambda rngs: ramie.SimpleCell(3, 4, residual=True, rngs=rngs),
        make_flax=lambda rngs: _nnx().SimpleCell(3, 4, residual=True, rngs=rngs),
        inputs=_carry_and_x(2, 4, 3, 1),
        make_bf16=lambda rngs: ramie.SimpleCell(3, 4, residual=True, **BF16, rngs=rngs),
    ),
]


SEQ = normal(2, 5, 3)


def _rnn_case(name, cell, flax_cell, *, inputs=SEQ, call=None, **rnn_kwargs):
    """An RNN case over ``cell``, a ``(ramie_or_nnx, rngs, kwargs) -> cell`` builder."""
    return LayerCase(
        name=name,
        layer=ramie.RNN,
        make=lambda rngs: ramie.RNN(cell(ramie, rngs, {}), **rnn_kwargs),
        make_flax=lambda rngs: _nnx().RNN(flax_cell(_nnx(), rngs, {}), **rnn_kwargs),
        inputs=inputs,
        call=call,
        make_bf16=lambda rngs: ramie.RNN(cell(ramie, rngs, BF16), **rnn_kwargs),
    )


def _lstm(mod, rngs, kw):
    return mod.LSTMCell(3, 4, rngs=rngs, **kw)


def _opt_lstm(mod, rngs, kw):
    return mod.OptimizedLSTMCell(3, 4, rngs=rngs, **kw)


def _gru(mod, rngs, kw):
    return mod.GRUCell(3, 4, rngs=rngs, **kw)


def _simple(mod, rngs, kw):
    return mod.SimpleCell(3, 4, rngs=rngs, **kw)


def _with_lengths(**kwargs):
    return lambda m, x, lengths: m(x, seq_lengths=lengths, **kwargs)


RNN_CASES = [
    _rnn_case("RNN-LSTMCell", _lstm, _lstm),
    _rnn_case(
        "RNN-OptimizedLSTMCell-time-major-return-carry",
        _opt_lstm,
        _opt_lstm,
        inputs=normal(5, 2, 3),
        time_major=True,
        return_carry=True,
    ),
    _rnn_case(
        "RNN-GRUCell-seq-lengths-reverse-keep-order",
        _gru,
        _gru,
        inputs=_seq_and_lengths,
        call=_with_lengths(return_carry=True, reverse=True, keep_order=True),
    ),
    _rnn_case(
        "RNN-SimpleCell-reverse-2-batch-axes-unroll",
        _simple,
        _simple,
        inputs=normal(2, 2, 4, 3),
        reverse=True,
        unroll=2,
    ),
]


def _bidirectional(mod, rngs, kw, **kwargs):
    fwd = mod.RNN(mod.GRUCell(3, 4, rngs=rngs, **kw))
    bwd = mod.RNN(mod.LSTMCell(3, 5, rngs=rngs, **kw))
    return mod.Bidirectional(fwd, bwd, **kwargs)


BIDIRECTIONAL_CASES = [
    LayerCase(
        name="Bidirectional",
        layer=ramie.Bidirectional,
        make=lambda rngs: _bidirectional(ramie, rngs, {}),
        make_flax=lambda rngs: _bidirectional(_nnx(), rngs, {}),
        inputs=normal(2, 5, 3),
        make_bf16=lambda rngs: _bidirectional(ramie, rngs, BF16),
    ),
    LayerCase(
        name="Bidirectional-seq-lengths-carry-time-major",
        layer=ramie.Bidirectional,
        make=lambda rngs: _bidirectional(
            ramie, rngs, {}, time_major=True, return_carry=True
        ),
        make_flax=lambda rngs: _bidirectional(
            _nnx(), rngs, {}, time_major=True, return_carry=True
        ),
        inputs=lambda key: (
            jax.random.normal(key, (5, 2, 3)),
            jnp.array([5, 3], jnp.int32),
        ),
        call=lambda m, x, lengths: m(x, seq_lengths=lengths),
    ),
]

_CUSTOM_CELLS: dict = {}


def _custom_cell_class(mod):
    """A user-defined cell (``h' = tanh(W [x, h])``) subclassing ``mod.RNNCellBase``."""
    if mod.__name__ not in _CUSTOM_CELLS:

        class ConcatCell(mod.RNNCellBase):
            def __init__(self, in_features, hidden_features, *, rngs):
                self.hidden_features = hidden_features
                self.dense = mod.Linear(
                    in_features + hidden_features, hidden_features, rngs=rngs
                )

            def __call__(self, carry, inputs):
                h = jnp.tanh(self.dense(jnp.concatenate([inputs, carry], axis=-1)))
                return h, 2 * h

            def initialize_carry(self, input_shape, rngs=None, carry_init=None):
                return jnp.full(input_shape[:-1] + (self.hidden_features,), 0.5)

            @property
            def num_feature_axes(self):
                return 1

        _CUSTOM_CELLS[mod.__name__] = ConcatCell
    return _CUSTOM_CELLS[mod.__name__]


CUSTOM_CELL_CASES = [
    LayerCase(
        name="RNNCellBase-custom-cell-in-RNN",
        layer=ramie.RNNCellBase,
        make=lambda rngs: ramie.RNN(
            _custom_cell_class(ramie)(3, 4, rngs=rngs), reverse=True
        ),
        make_flax=lambda rngs: _nnx().RNN(
            _custom_cell_class(_nnx())(3, 4, rngs=rngs), reverse=True
        ),
        inputs=normal(2, 5, 3),
    ),
]

CASES = CELL_CASES + RNN_CASES + BIDIRECTIONAL_CASES + CUSTOM_CELL_CASES
