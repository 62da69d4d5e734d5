"""RNN and Bidirectional: run a recurrent cell over the time axis.

:class:`RNN` wraps any :class:`~ramie.RNNCellBase` and applies it at every
step with :func:`ramie.scan`; the cell's Variables are threaded through the
loop (``state_axes`` picks other treatments, as in Flax NNX). Inputs are
``(*batch, time, *features)``, or ``(time, *batch, *features)`` with
``time_major=True``.

``seq_lengths`` gives the valid length of each padded sequence: the carry
returned with ``return_carry=True`` is the one after the last valid step, and
``reverse=True`` flips only the valid part of each sequence, keeping padding
at the end (:func:`flip_sequences`). Outputs at padded steps are computed
like any other and should be masked by the caller. :class:`Bidirectional`
runs one RNN forward and one backward and merges their outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import jax
import jax.numpy as jnp

from ramie._src.core.filters import All
from ramie._src.core.module import Module
from ramie._src.core.rng_ops import (
    _selected,  # pyright: ignore[reportPrivateUsage]
    find_streams,
    split_rngs,
)
from ramie._src.core.rngs import Rngs, RngState, RngStream
from ramie._src.nn.recurrent import RNNCellBase
from ramie._src.transforms.axes import Carry, StateAxes
from ramie._src.transforms.scan import scan

Array = jax.Array
A = TypeVar("A")

_log = logging.getLogger(__name__)

_NO_TIME_AXIS = (
    "ramie.RNN: inputs of shape {shape} have no time axis. {cell} has "
    "{nfa} feature axis(es), so inputs need at least {need} dimensions: "
    "(*batch, time, *features), or (time, *batch, *features) with time_major=True.\n"
    "  For a single unbatched sequence of shape (time, features) this is already "
    "enough; to add a time axis of length 1 use: rnn(x[..., None, :])"
)
_BAD_SEQ_LENGTHS = (
    "ramie.RNN: seq_lengths of shape {found} does not match the batch shape {batch} "
    "of inputs {shape} ({layout}).\n"
    "  Pass one length per sequence: seq_lengths=jnp.array([...]) of shape {batch}"
)


def flip_sequences(
    inputs: Array, seq_lengths: Array | None, num_batch_dims: int, time_major: bool
) -> Array:
    """Reverse each sequence along time, keeping its padding at the end.

    Without ``seq_lengths`` this is ``jnp.flip`` along the time axis. With
    them, step ``t < length`` of the result is step ``length - 1 - t`` of the
    input, and padded steps stay behind the valid ones.

    Args:
        inputs: Array ``(*batch, time, ...)`` (or ``(time, *batch, ...)``).
        seq_lengths: Valid length of each sequence, shape ``batch``, or None.
        num_batch_dims: Number of batch axes.
        time_major: Whether time is the leading axis.

    Returns:
        The flipped array, same shape as ``inputs``.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1, 0, 0], [2, 3, 0], [4, 5, 6]])
        >>> flip_sequences(x, jnp.array([1, 2, 3]), num_batch_dims=1, time_major=False)
        Array([[1, 0, 0],
               [3, 2, 0],
               [6, 5, 4]], dtype=int32)
    """
    time_axis = 0 if time_major else num_batch_dims
    steps = inputs.shape[time_axis]
    if seq_lengths is None:
        return jnp.flip(inputs, axis=time_axis)
    lengths = jnp.expand_dims(jnp.asarray(seq_lengths), axis=time_axis)
    rev = jnp.arange(steps - 1, -1, -1)
    if time_major:
        rev = rev.reshape((steps,) + (1,) * num_batch_dims)
    else:
        rev = rev.reshape((1,) * num_batch_dims + (steps,))
    # valid step t reads length-1-t; the padding is permuted among itself.
    idx = (rev + lengths) % steps
    idx = idx.reshape(idx.shape + (1,) * (inputs.ndim - idx.ndim))
    return jnp.take_along_axis(inputs, idx, axis=time_axis)


def _select_last_carry(carries: A, seq_lengths: Array) -> A:
    """The carry after step ``seq_lengths - 1`` from carries stacked on axis 0."""

    def pick(x: Array) -> Array:
        steps = x.shape[0]
        last = jnp.asarray(seq_lengths) - 1
        last = jnp.where(last < 0, last + steps, last)  # Python indexing, as in Flax
        idx = last.reshape((1,) + last.shape + (1,) * (x.ndim - 1 - last.ndim))
        return jnp.take_along_axis(x, idx, axis=0)[0]

    return jax.tree_util.tree_map(pick, carries)


def _as_stream(
    rngs: Rngs | RngStream | bool, api: str, error: type[Exception]
) -> RngStream | None:
    if rngs is True:
        return RngStream(0, tag="carry")
    if rngs is False or rngs is None:
        return None
    if isinstance(rngs, Rngs):
        return rngs.carry.fork()
    if isinstance(rngs, RngStream):
        return rngs
    raise error(
        f"{api}(rngs=...): expected ramie.Rngs, an RngStream or a bool; got "
        f"{type(rngs).__name__}.\n  Pass e.g. rngs=ramie.Rngs(carry=0), or rngs=False"
    )


class RNN(Module):
    """Apply a recurrent cell over the time axis of a sequence.

    Args:
        cell: The cell to run, e.g. :class:`~ramie.LSTMCell`.
        time_major: Inputs are ``(time, *batch, *features)`` instead of
            ``(*batch, time, *features)``.
        return_carry: Return ``(final_carry, outputs)`` instead of ``outputs``.
        reverse: Process the sequence from the end (only the valid part when
            ``seq_lengths`` is given).
        keep_order: With ``reverse``, flip the outputs back to input order.
        unroll: Steps unrolled per loop iteration (``jax.lax.scan``'s ``unroll``).
        state_axes: ``{filter: Carry | None | axis}`` for the cell's Variables
            in the scan (default: everything is carried).
        broadcast_rngs: Filter of RNG streams inside the cell that give the
            same keys at every step (e.g. ``'dropout'`` for one mask per
            sequence); each call still gets fresh keys.
        rngs: Where the initial carry's keys come from: ``True`` (default) a
            stream seeded with 0, Rngs (its ``carry`` stream is forked), an
            RngStream, or ``False`` (use the cell's).

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> rnn = ramie.RNN(ramie.LSTMCell(3, 4, rngs=ramie.Rngs(0)))
        >>> x = jnp.ones((2, 5, 3))  # (batch, time, features)
        >>> rnn(x).shape
        (2, 5, 4)
        >>> (c, h), y = rnn(x, return_carry=True, seq_lengths=jnp.array([5, 2]))
        >>> c.shape, h.shape, y.shape
        ((2, 4), (2, 4), (2, 5, 4))
    """

    def __init__(
        self,
        cell: RNNCellBase,
        *,
        time_major: bool = False,
        return_carry: bool = False,
        reverse: bool = False,
        keep_order: bool = False,
        unroll: int = 1,
        state_axes: Mapping[Any, Any] | StateAxes | None = None,
        broadcast_rngs: Any = None,
        rngs: Rngs | RngStream | bool = True,
    ):
        self.cell = cell
        self.time_major = time_major
        self.return_carry = return_carry
        self.reverse = reverse
        self.keep_order = keep_order
        self.unroll = unroll
        if isinstance(rngs, RngStream):
            rngs = rngs.fork()
        self.rngs = _as_stream(rngs, "ramie.RNN", ValueError)
        if state_axes is None:
            state_axes = StateAxes({...: Carry})
        elif not isinstance(state_axes, StateAxes):
            state_axes = StateAxes(state_axes)
        self.state_axes: StateAxes = state_axes
        self.broadcast_rngs = broadcast_rngs

    def __call__(
        self,
        inputs: Array,
        *,
        initial_carry: Any = None,
        seq_lengths: Array | None = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
        rngs: Rngs | RngStream | None = None,
    ) -> Any:
        """Run the cell over the sequence; arguments override the attributes.

        Args:
            inputs: ``(*batch, time, *features)`` (or time-major).
            initial_carry: The first carry (default: ``cell.initialize_carry``
                with ``rngs``, zeros for the built-in cells).
            seq_lengths: Valid length of each sequence, shape ``batch``.
            return_carry, time_major, reverse, keep_order: Per-call overrides.
            rngs: Rngs or RngStream for the initial carry (default the RNN's).

        Returns:
            ``outputs`` shaped like ``inputs`` with the cell's output features,
            or ``(carry, outputs)`` when ``return_carry``.

        Raises:
            ValueError: ``inputs`` has no time axis, or ``seq_lengths`` does not
                fit the batch shape.
        """
        return_carry = self.return_carry if return_carry is None else return_carry
        time_major = self.time_major if time_major is None else time_major
        reverse = self.reverse if reverse is None else reverse
        keep_order = self.keep_order if keep_order is None else keep_order
        inputs = jnp.asarray(inputs)
        nfa = self.cell.num_feature_axes
        if inputs.ndim < nfa + 1:
            raise ValueError(
                _NO_TIME_AXIS.format(
                    shape=inputs.shape,
                    cell=type(self.cell).__name__,
                    nfa=nfa,
                    need=nfa + 1,
                )
            )
        time_axis = 0 if time_major else inputs.ndim - (nfa + 1)
        batch_dims = (
            inputs.shape[1 : inputs.ndim - nfa]
            if time_major
            else inputs.shape[:time_axis]
        )
        if seq_lengths is not None:
            seq_lengths = self._check_seq_lengths(
                seq_lengths, batch_dims, inputs.shape, time_major
            )

        if reverse:
            inputs = flip_sequences(inputs, seq_lengths, len(batch_dims), time_major)
        if initial_carry is None:
            stream = rngs if rngs is not None else self.rngs
            if isinstance(stream, Rngs):
                stream = stream.carry.fork()
            step_shape = inputs.shape[:time_axis] + inputs.shape[time_axis + 1 :]
            carry = self.cell.initialize_carry(step_shape, stream)
        else:
            carry = initial_carry

        slice_carry = seq_lengths is not None and return_carry
        carry, outputs = self._scan(carry, inputs, time_axis, slice_carry)
        if slice_carry:
            carry = _select_last_carry(carry, seq_lengths)  # type: ignore[arg-type]
        if reverse and keep_order:
            outputs = flip_sequences(outputs, seq_lengths, len(batch_dims), time_major)
        return (carry, outputs) if return_carry else outputs

    def _check_seq_lengths(
        self,
        seq_lengths: Any,
        batch: tuple[int, ...],
        shape: tuple[int, ...],
        time_major: bool,
    ) -> Array:
        seq_lengths = jnp.asarray(seq_lengths)
        try:
            return jnp.broadcast_to(seq_lengths, batch)
        except ValueError:
            layout = "time-major" if time_major else "batch-major"
            raise ValueError(
                _BAD_SEQ_LENGTHS.format(
                    found=seq_lengths.shape, batch=batch, shape=shape, layout=layout
                )
            ) from None

    def _scan(
        self, carry: Any, inputs: Array, time_axis: int, slice_carry: bool
    ) -> tuple[Any, Any]:
        """Scan the cell; with ``slice_carry`` also return every step's carry."""
        rng_filter = All(RngState, self.broadcast_rngs)
        state_axes = StateAxes([(rng_filter, None), *self.state_axes.items()])
        out_axes = (Carry, (0, time_axis)) if slice_carry else (Carry, time_axis)

        # Broadcast streams get one fresh key per call (split_rngs forks them
        # and restores them afterwards); each step starts again from that key,
        # so every step draws the same numbers (Flax broadcasts this state).
        only = self.broadcast_rngs
        backup = (
            split_rngs(self.cell, splits=1, only=only, squeeze=True)
            if only is not None
            else None
        )
        try:
            fixed = [
                (s.key._raw, s.count._raw) for s in _broadcast_streams(self.cell, only)
            ]

            def step(
                cell: RNNCellBase, carry: Any, x: Array, fixed: list
            ) -> tuple[Any, Any]:
                if fixed:
                    for s, (key, count) in zip(_broadcast_streams(cell, only), fixed):
                        s.key.set_value(key)
                        s.count.set_value(count)
                carry, y = cell(carry, x)
                return (carry, (carry, y)) if slice_carry else (carry, y)

            run = scan(
                step,
                in_axes=(state_axes, Carry, time_axis, None),
                out_axes=out_axes,
                unroll=self.unroll,
            )
            new_carry, ys = run(self.cell, carry, inputs, fixed)
        finally:
            if backup is not None:
                backup.restore()
        return ys if slice_carry else (new_carry, ys)


def _broadcast_streams(cell: Any, only: Any) -> list[RngStream]:
    """The RNG streams of ``cell`` selected by ``broadcast_rngs`` (graph order)."""
    if only is None:
        return []
    return _selected(find_streams(cell), only)


def _concatenate(a: Array, b: Array) -> Array:
    """Join the forward and backward outputs along the feature axis."""
    return jnp.concatenate([a, b], axis=-1)


class RNNBase(Protocol):
    """What :class:`Bidirectional` needs of its two RNNs (an :class:`RNN` fits)."""

    def __call__(
        self,
        inputs: Array,
        *,
        initial_carry: Any = None,
        rngs: Rngs | RngStream | None = None,
        seq_lengths: Array | None = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
    ) -> Any: ...


class Bidirectional(Module):
    """Run one RNN forward and one backward over the sequence and merge outputs.

    The backward RNN is called with ``reverse=True, keep_order=True``, so both
    outputs are in input order before ``merge_fn`` combines them (default:
    concatenate features). With ``seq_lengths`` the backward pass starts at
    each sequence's last valid step.

    Args:
        forward_rnn: RNN for the forward direction.
        backward_rnn: RNN for the backward direction (use a separate instance
            unless the two should share parameters).
        merge_fn: ``merge_fn(forward_out, backward_out)``.
        time_major: Inputs are ``(time, *batch, *features)``.
        return_carry: Return ``((forward_carry, backward_carry), outputs)``.
        rngs: Keys for the initial carries: ``True`` (a stream seeded with 0),
            Rngs (its ``carry`` stream is forked), an RngStream, or ``False``
            (each RNN uses its own).

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> fwd = ramie.RNN(ramie.GRUCell(3, 4, rngs=ramie.Rngs(0)))
        >>> bwd = ramie.RNN(ramie.GRUCell(3, 4, rngs=ramie.Rngs(1)))
        >>> layer = ramie.Bidirectional(fwd, bwd)
        >>> layer(jnp.ones((2, 5, 3))).shape
        (2, 5, 8)
    """

    def __init__(
        self,
        forward_rnn: RNNBase,
        backward_rnn: RNNBase,
        *,
        merge_fn: Callable[[Array, Array], Array] = _concatenate,
        time_major: bool = False,
        return_carry: bool = False,
        rngs: Rngs | RngStream | bool = True,
    ):
        self.forward_rnn = forward_rnn
        self.backward_rnn = backward_rnn
        self.merge_fn = merge_fn
        self.time_major = time_major
        self.return_carry = return_carry
        self.rngs = _as_stream(rngs, "ramie.Bidirectional", TypeError)

    def __call__(
        self,
        inputs: Array,
        *,
        initial_carry: tuple[Any, Any] | None = None,
        rngs: Rngs | RngStream | None = None,
        seq_lengths: Array | None = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
    ) -> Any:
        """Run both directions and merge.

        Args:
            inputs: ``(*batch, time, *features)`` (or time-major).
            initial_carry: ``(forward_carry, backward_carry)`` or None.
            rngs: Rngs or RngStream for the initial carries (default the layer's).
            seq_lengths: Valid length of each sequence, shape ``batch``.
            return_carry, time_major: Per-call overrides.
            reverse, keep_order: Accepted for signature compatibility; unused.

        Returns:
            Merged outputs, or ``((forward_carry, backward_carry), outputs)``
            when ``return_carry``.
        """
        time_major = self.time_major if time_major is None else time_major
        return_carry = self.return_carry if return_carry is None else return_carry
        stream = rngs if rngs is not None else self.rngs
        if isinstance(stream, Rngs):
            stream = stream.carry
        carry_fwd, carry_bwd = (None, None) if initial_carry is None else initial_carry
        if self.forward_rnn is self.backward_rnn:
            _log.warning(
                "ramie.Bidirectional: forward_rnn and backward_rnn are the same "
                "object, so both directions share parameters."
            )
        carry_fwd, out_fwd = self.forward_rnn(
            inputs, initial_carry=carry_fwd, rngs=stream, seq_lengths=seq_lengths,
            return_carry=True, time_major=time_major, reverse=False,
        )  # fmt: skip
        carry_bwd, out_bwd = self.backward_rnn(
            inputs, initial_carry=carry_bwd, rngs=stream, seq_lengths=seq_lengths,
            return_carry=True, time_major=time_major, reverse=True, keep_order=True,
        )  # fmt: skip
        outputs = jax.tree_util.tree_map(self.merge_fn, out_fwd, out_bwd)
        return ((carry_fwd, carry_bwd), outputs) if return_carry else outputs
