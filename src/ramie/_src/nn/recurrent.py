"""Recurrent cells: one time step of an RNN, ``cell(carry, x) -> (carry, y)``.

A cell maps the carried hidden state and the input of one step to the new
state and the step's output. :class:`LSTMCell`, :class:`OptimizedLSTMCell`,
:class:`GRUCell` and :class:`SimpleCell` have the sub-layer names, shapes and
parameter initialisation order of Flax NNX, so ``Rngs(0)`` gives the same
weights and checkpoints map one to one.

``cell.initialize_carry(input_shape, rngs)`` builds the first carry for inputs
of shape ``(*batch, features)``; it draws one key per carry array from the
``carry`` stream (zeros by default, so the keys only matter for a random
``carry_init``). :class:`~ramie.RNN` (in ``rnn.py``) scans a cell over time.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ramie._src.core.module import Module
from ramie._src.core.rngs import Rngs, RngStream
from ramie._src.nn import initializers
from ramie._src.nn.dtypes import promote_dtype as default_promote_dtype
from ramie._src.nn.linear import Linear
from ramie.errors import RamieWarning, RngError

Array = jax.Array
Initializer = Callable[..., Any]
Carry = Any

default_kernel_init = initializers.lecun_normal()
default_bias_init = initializers.zeros_init()

_NO_CARRY_RNGS = (
    "{api}: no RNG stream to draw the initial carry from. The cell was built "
    "without keep_rngs=True and no rngs were passed.\n"
    "  Pass one: carry = cell.initialize_carry(x.shape, rngs=ramie.Rngs(0))"
)
_KEEP_RNGS_DEPRECATED = (
    "{cls}(keep_rngs=True) is deprecated (as in Flax NNX): the cell keeps its own "
    "'carry' stream only for initialize_carry().\n"
    "  Pass the RNGs where the carry is made instead:\n"
    "      carry = cell.initialize_carry(x.shape, rngs=rngs)"
)
_CARRY_INIT_IN_INIT = (
    "{cls}(carry_init=...) is stored on the cell, so two cells that differ only "
    "in carry_init have different GraphDefs.\n"
    "  Prefer giving it where the carry is made:\n"
    "      carry = cell.initialize_carry(x.shape, rngs, carry_init=carry_init)"
)


def modified_orthogonal(
    key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32
) -> Array:
    """An orthogonal matrix computed in float32, then cast to ``dtype``.

    The QR decomposition behind ``orthogonal()`` needs single precision, so
    this is the recurrent-kernel initializer of :class:`LSTMCell` that also
    works for ``param_dtype=jnp.bfloat16``.

    Args:
        key: PRNG key.
        shape: Shape of the matrix, e.g. ``(hidden, hidden)``.
        dtype: Dtype of the result.

    Returns:
        An orthogonal matrix of ``shape`` and ``dtype``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> w = modified_orthogonal(jax.random.key(0), (3, 3), jnp.bfloat16)
        >>> w.shape, w.dtype
        ((3, 3), dtype(bfloat16))
    """
    return initializers.orthogonal()(key, shape).astype(dtype)


def _orthogonal_any_dtype() -> Initializer:
    """``orthogonal()`` that also works for half-precision ``param_dtype``.

    Identical to ``initializers.orthogonal()`` for float32/float64 (the default
    of Flax's fused cells); for bfloat16/float16, which the QR decomposition
    does not support, it computes in float32 and casts.
    """
    ortho = initializers.orthogonal()

    def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        if jnp.dtype(dtype).itemsize < 4:
            return ortho(key, shape, jnp.float32).astype(dtype)
        return ortho(key, shape, dtype)

    return init


default_recurrent_kernel_init = _orthogonal_any_dtype()


class RNNCellBase(Module):
    """Base class of recurrent cells.

    Subclasses implement ``__call__(carry, inputs) -> (new_carry, outputs)``,
    :meth:`initialize_carry` and :attr:`num_feature_axes` (how many trailing
    axes of an input are features rather than batch or time; 1 for vectors).

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> class Accumulate(ramie.RNNCellBase):
        ...     def __call__(self, carry, x):
        ...         return carry + x, carry + x
        ...     def initialize_carry(self, input_shape, rngs=None, carry_init=None):
        ...         return jnp.zeros(input_shape)
        ...     @property
        ...     def num_feature_axes(self):
        ...         return 1
        >>> ramie.RNN(Accumulate())(jnp.ones((2, 5, 3)))[:, -1]
        Array([[5., 5., 5.],
               [5., 5., 5.]], dtype=float32)
    """

    def initialize_carry(
        self,
        input_shape: tuple[int, ...],
        rngs: Rngs | RngStream | None = None,
        carry_init: Initializer | None = None,
    ) -> Carry:
        """Build the initial carry for inputs of shape ``input_shape``.

        Args:
            input_shape: Shape of one time step's input, ``(*batch, features)``.
            rngs: Rngs (its ``carry`` stream is used) or an RngStream; defaults
                to the stream kept with ``keep_rngs=True``.
            carry_init: Initializer of the carry arrays (default: the cell's
                ``carry_init``, else zeros).

        Returns:
            The carry (a pytree of arrays).
        """
        raise NotImplementedError(
            f"{type(self).__name__} subclasses RNNCellBase but does not define "
            "initialize_carry(self, input_shape, rngs=None, carry_init=None)"
        )

    def __call__(self, carry: Carry, inputs: Array) -> tuple[Carry, Array]:
        """Run one step: ``(carry, inputs) -> (new_carry, outputs)``.

        Args:
            carry: The hidden state from the previous step.
            inputs: The step's input; all axes before the feature axes are
                batch axes.

        Returns:
            ``(new_carry, outputs)``.
        """
        raise NotImplementedError(
            f"{type(self).__name__} subclasses RNNCellBase but does not define "
            "__call__(self, carry, inputs) -> (new_carry, outputs)"
        )

    @property
    def num_feature_axes(self) -> int:
        """The number of trailing feature axes of an input (1 for vectors)."""
        raise NotImplementedError(
            f"{type(self).__name__} subclasses RNNCellBase but does not define the "
            "num_feature_axes property (return 1 for inputs of shape (..., features))"
        )

    # ------------------------------------------------------------ shared helpers
    def _setup_rngs(self, keep_rngs: bool, rngs: Rngs) -> None:
        """Store ``self.rngs``: a forked ``carry`` stream, or None.

        Called before the sub-layers are built: when ``carry`` falls back to the
        ``default`` stream, forking it shifts the params keys exactly as in Flax.
        """
        self.rngs: RngStream | None
        if keep_rngs:
            cls = type(self).__name__
            warnings.warn(
                _KEEP_RNGS_DEPRECATED.format(cls=cls), RamieWarning, stacklevel=3
            )
            self.rngs = _carry_stream(rngs).fork()  # type: ignore[union-attr]
        else:
            self.rngs = None

    def _setup_carry_init(self, carry_init: Initializer | None) -> None:
        if carry_init:
            cls = type(self).__name__
            warnings.warn(
                _CARRY_INIT_IN_INIT.format(cls=cls), RamieWarning, stacklevel=3
            )
        self.carry_init = carry_init

    def _carry_parts(
        self,
        input_shape: tuple[int, ...],
        rngs: Rngs | RngStream | None,
        carry_init: Initializer | None,
    ) -> tuple[RngStream, Initializer, tuple[int, ...]]:
        """The stream, initializer and shape of each carry array."""
        stream = _carry_stream(rngs if rngs is not None else self.rngs)
        if stream is None:
            api = f"{type(self).__name__}.initialize_carry()"
            raise RngError(_NO_CARRY_RNGS.format(api=api))
        if carry_init is None:
            carry_init = (
                self.carry_init if self.carry_init is not None else initializers.zeros
            )
        hidden = self.hidden_features  # type: ignore[attr-defined]
        return stream, carry_init, tuple(input_shape[:-1]) + (hidden,)


def _carry_stream(rngs: Rngs | RngStream | None) -> RngStream | None:
    if isinstance(rngs, Rngs):
        return rngs.carry
    if rngs is None or isinstance(rngs, RngStream):
        return rngs
    raise TypeError(
        f"initialize_carry(rngs=...): expected ramie.Rngs, an RngStream or None; got "
        f"{type(rngs).__name__}.\n  Pass e.g. rngs=ramie.Rngs(0)"
    )


class LSTMCell(RNNCellBase):
    r"""Long short-term memory cell with one dense layer per gate.

    .. math::
        \begin{array}{ll}
        i = \sigma(W_{ii} x + W_{hi} h + b_{hi}) \\
        f = \sigma(W_{if} x + W_{hf} h + b_{hf}) \\
        g = \tanh(W_{ig} x + W_{hg} h + b_{hg}) \\
        o = \sigma(W_{io} x + W_{ho} h + b_{ho}) \\
        c' = f c + i g, \qquad h' = o \tanh(c')
        \end{array}

    The carry is ``(c, h)``, the output is ``h'``. Input layers ``ii``,
    ``if_``, ``ig``, ``io`` have no bias; hidden layers ``hi``, ``hf``, ``hg``,
    ``ho`` carry the (shared) bias.

    Args:
        in_features: Size of the input's last axis.
        hidden_features: Size of the hidden state.
        gate_fn: Activation of the gates (default sigmoid).
        activation_fn: Activation of the candidate and the cell output (tanh).
        kernel_init: Initializer of the input kernels (lecun_normal).
        recurrent_kernel_init: Initializer of the hidden kernels
            (:func:`modified_orthogonal`).
        bias_init: Initializer of the biases (zeros).
        dtype: Computation dtype (None: inferred).
        param_dtype: Parameter dtype; also the dtype of the initial carry.
        carry_init: Initializer of the carry (prefer passing it to
            :meth:`initialize_carry`; warns).
        promote_dtype: Function casting inputs and params to one dtype.
        keep_rngs: Keep a forked ``carry`` stream for :meth:`initialize_carry`
            (deprecated; warns).
        rngs: RNG streams; kernels draw from ``params``.
        kernel_metadata, recurrent_kernel_metadata, bias_metadata: Extra
            metadata of the respective Params.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> cell = ramie.LSTMCell(3, 4, rngs=ramie.Rngs(0))
        >>> x = jnp.ones((2, 3))
        >>> carry = cell.initialize_carry(x.shape, ramie.Rngs(1))
        >>> (c, h), y = cell(carry, x)
        >>> c.shape, h.shape, y.shape, cell.hi.kernel.shape
        ((2, 4), (2, 4), (2, 4), (4, 4))
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        gate_fn: Callable[..., Any] = jax.nn.sigmoid,
        activation_fn: Callable[..., Any] = jnp.tanh,
        kernel_init: Initializer = default_kernel_init,
        recurrent_kernel_init: Initializer = modified_orthogonal,
        bias_init: Initializer = default_bias_init,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        carry_init: Initializer | None = None,
        promote_dtype: Callable[..., Any] = default_promote_dtype,
        keep_rngs: bool = False,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
        recurrent_kernel_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
        bias_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
    ):
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.gate_fn = gate_fn
        self.activation_fn = activation_fn
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.promote_dtype = promote_dtype
        self._setup_rngs(keep_rngs, rngs)

        def dense_i() -> Linear:
            return Linear(
                in_features, hidden_features, use_bias=False, kernel_init=kernel_init,
                dtype=dtype, param_dtype=param_dtype, promote_dtype=promote_dtype,
                rngs=rngs, kernel_metadata=kernel_metadata,
            )  # fmt: skip

        def dense_h() -> Linear:
            return Linear(
                hidden_features, hidden_features, use_bias=True,
                kernel_init=recurrent_kernel_init, bias_init=bias_init, dtype=dtype,
                param_dtype=param_dtype, promote_dtype=promote_dtype, rngs=rngs,
                kernel_metadata=recurrent_kernel_metadata, bias_metadata=bias_metadata,
            )  # fmt: skip

        # Creation order fixes which params key each layer draws (as in Flax).
        self.ii, self.if_, self.ig, self.io = dense_i(), dense_i(), dense_i(), dense_i()
        self.hi, self.hf, self.hg, self.ho = dense_h(), dense_h(), dense_h(), dense_h()
        self._setup_carry_init(carry_init)

    def __call__(
        self, carry: tuple[Array, Array], inputs: Array
    ) -> tuple[tuple[Array, Array], Array]:
        """One LSTM step.

        Args:
            carry: ``(c, h)``, e.g. from :meth:`initialize_carry`.
            inputs: Array of shape ``(*batch, in_features)``.

        Returns:
            ``((new_c, new_h), new_h)``.
        """
        c, h = carry
        i = self.gate_fn(self.ii(inputs) + self.hi(h))
        f = self.gate_fn(self.if_(inputs) + self.hf(h))
        g = self.activation_fn(self.ig(inputs) + self.hg(h))
        o = self.gate_fn(self.io(inputs) + self.ho(h))
        new_c = f * c + i * g
        new_h = o * self.activation_fn(new_c)
        return (new_c, new_h), new_h

    def initialize_carry(
        self,
        input_shape: tuple[int, ...],
        rngs: Rngs | RngStream | None = None,
        carry_init: Initializer | None = None,
    ) -> tuple[Array, Array]:
        """The initial ``(c, h)``, each of shape ``(*batch, hidden_features)``.

        Args:
            input_shape: Shape of one step's input, ``(*batch, in_features)``.
            rngs: Rngs (``carry`` stream) or an RngStream; draws two keys.
            carry_init: Initializer (default: the cell's, else zeros).

        Returns:
            ``(c, h)`` in ``param_dtype``.

        Raises:
            RngError: no ``rngs`` given and the cell kept none.
        """
        stream, init, shape = self._carry_parts(input_shape, rngs, carry_init)
        c = init(stream(), shape, self.param_dtype)
        h = init(stream(), shape, self.param_dtype)
        return c, h

    @property
    def num_feature_axes(self) -> int:
        """1: inputs are ``(*batch, in_features)``."""
        return 1


class OptimizedLSTMCell(RNNCellBase):
    r"""An LSTM cell that computes all four gates with two matmuls.

    The same function as :class:`LSTMCell`, but the input and hidden
    projections of the gates ``i, f, g, o`` are fused into ``dense_i`` (kernel
    ``(in_features, 4 * hidden)``, no bias) and ``dense_h`` (kernel
    ``(hidden, 4 * hidden)`` and bias), which is usually faster for hidden
    sizes up to about 2048.

    Args:
        in_features: Size of the input's last axis.
        hidden_features: Size of the hidden state.
        gate_fn: Activation of the gates (default sigmoid).
        activation_fn: Activation of the candidate and the cell output (tanh).
        kernel_init: Initializer of ``dense_i.kernel`` (lecun_normal).
        recurrent_kernel_init: Initializer of ``dense_h.kernel`` (orthogonal;
            computed in float32 for half-precision ``param_dtype``).
        bias_init: Initializer of ``dense_h.bias`` (zeros).
        dtype: Computation dtype (None: inferred).
        param_dtype: Parameter dtype; also the dtype of the initial carry.
        carry_init: Initializer of the carry (prefer :meth:`initialize_carry`; warns).
        promote_dtype: Function casting inputs and params to one dtype.
        keep_rngs: Keep a forked ``carry`` stream (deprecated; warns).
        rngs: RNG streams; kernels draw from ``params``.
        kernel_metadata, recurrent_kernel_metadata, bias_metadata: Extra
            metadata of the respective Params.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> cell = ramie.OptimizedLSTMCell(3, 4, rngs=ramie.Rngs(0))
        >>> x = jnp.ones((2, 3))
        >>> (c, h), y = cell(cell.initialize_carry(x.shape, ramie.Rngs(1)), x)
        >>> y.shape, cell.dense_i.kernel.shape, cell.dense_h.bias.shape
        ((2, 4), (3, 16), (16,))
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        gate_fn: Callable[..., Any] = jax.nn.sigmoid,
        activation_fn: Callable[..., Any] = jnp.tanh,
        kernel_init: Initializer = default_kernel_init,
        recurrent_kernel_init: Initializer = default_recurrent_kernel_init,
        bias_init: Initializer = default_bias_init,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        carry_init: Initializer | None = None,
        promote_dtype: Callable[..., Any] = default_promote_dtype,
        keep_rngs: bool = False,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
        recurrent_kernel_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
        bias_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
    ):
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.gate_fn = gate_fn
        self.activation_fn = activation_fn
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.promote_dtype = promote_dtype
        self._setup_rngs(keep_rngs, rngs)
        self.dense_i = Linear(
            in_features, 4 * hidden_features, use_bias=False, kernel_init=kernel_init,
            dtype=dtype, param_dtype=param_dtype, promote_dtype=promote_dtype,
            rngs=rngs, kernel_metadata=kernel_metadata,
        )  # fmt: skip
        self.dense_h = Linear(
            hidden_features, 4 * hidden_features, use_bias=True,
            kernel_init=recurrent_kernel_init, bias_init=bias_init, dtype=dtype,
            param_dtype=param_dtype, promote_dtype=promote_dtype, rngs=rngs,
            kernel_metadata=recurrent_kernel_metadata, bias_metadata=bias_metadata,
        )  # fmt: skip
        self._setup_carry_init(carry_init)

    def __call__(
        self, carry: tuple[Array, Array], inputs: Array
    ) -> tuple[tuple[Array, Array], Array]:
        """One LSTM step (see :class:`LSTMCell`).

        Args:
            carry: ``(c, h)``, e.g. from :meth:`initialize_carry`.
            inputs: Array of shape ``(*batch, in_features)``.

        Returns:
            ``((new_c, new_h), new_h)``.
        """
        c, h = carry
        gates = self.dense_i(inputs) + self.dense_h(h)
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        i, f, o = self.gate_fn(i), self.gate_fn(f), self.gate_fn(o)
        g = self.activation_fn(g)
        new_c = f * c + i * g
        new_h = o * self.activation_fn(new_c)
        return (new_c, new_h), new_h

    # The carry of both LSTM cells is the same (c, h) pair.
    initialize_carry = LSTMCell.initialize_carry
    num_feature_axes = LSTMCell.num_feature_axes


class SimpleCell(RNNCellBase):
    r"""The Elman cell: ``h' = tanh(W_i x + b_i + W_h h)``.

    With ``residual=True`` the previous state is added before the activation:
    ``h' = tanh(W_i x + b_i + W_h h + h)``. The carry and the output are both
    ``h'``. Note that, as in Flax, ``dtype`` defaults to float32 here.

    Args:
        in_features: Size of the input's last axis.
        hidden_features: Size of the hidden state.
        dtype: Computation dtype (default float32).
        param_dtype: Parameter dtype; also the dtype of the initial carry.
        carry_init: Initializer of the carry (prefer :meth:`initialize_carry`; warns).
        residual: Add ``h`` to the pre-activation.
        activation_fn: Activation (default tanh).
        kernel_init: Initializer of ``dense_i.kernel`` (lecun_normal).
        recurrent_kernel_init: Initializer of ``dense_h.kernel`` (orthogonal;
            computed in float32 for half-precision ``param_dtype``).
        bias_init: Initializer of ``dense_i.bias`` (zeros).
        promote_dtype: Function casting inputs and params to one dtype.
        keep_rngs: Keep a forked ``carry`` stream (deprecated; warns).
        rngs: RNG streams; kernels draw from ``params``.
        kernel_metadata, recurrent_kernel_metadata, bias_metadata: Extra
            metadata of the respective Params.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> cell = ramie.SimpleCell(3, 4, residual=True, rngs=ramie.Rngs(0))
        >>> x = jnp.ones((2, 3))
        >>> h, y = cell(cell.initialize_carry(x.shape, ramie.Rngs(1)), x)
        >>> h.shape, cell.dense_h.kernel.shape, cell.dense_i.bias.shape
        ((2, 4), (4, 4), (4,))
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        carry_init: Initializer | None = None,
        residual: bool = False,
        activation_fn: Callable[..., Any] = jnp.tanh,
        kernel_init: Initializer = default_kernel_init,
        recurrent_kernel_init: Initializer = default_recurrent_kernel_init,
        bias_init: Initializer = default_bias_init,
        promote_dtype: Callable[..., Any] = default_promote_dtype,
        keep_rngs: bool = False,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
        recurrent_kernel_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
        bias_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
    ):
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.residual = residual
        self.activation_fn = activation_fn
        self.promote_dtype = promote_dtype
        self._setup_rngs(keep_rngs, rngs)
        # dense_h is built first, so it draws the first params key (as in Flax).
        self.dense_h = Linear(
            hidden_features, hidden_features, use_bias=False, dtype=dtype,
            param_dtype=param_dtype, kernel_init=recurrent_kernel_init,
            promote_dtype=promote_dtype, rngs=rngs,
            kernel_metadata=recurrent_kernel_metadata,
        )  # fmt: skip
        self.dense_i = Linear(
            in_features, hidden_features, use_bias=True, dtype=dtype,
            param_dtype=param_dtype, kernel_init=kernel_init, bias_init=bias_init,
            promote_dtype=promote_dtype, rngs=rngs, kernel_metadata=kernel_metadata,
            bias_metadata=bias_metadata,
        )  # fmt: skip
        self._setup_carry_init(carry_init)

    def __call__(self, carry: Array, inputs: Array) -> tuple[Array, Array]:
        """One step.

        Args:
            carry: ``h`` of shape ``(*batch, hidden_features)``.
            inputs: Array of shape ``(*batch, in_features)``.

        Returns:
            ``(new_h, new_h)``.
        """
        pre = self.dense_i(inputs) + self.dense_h(carry)
        if self.residual:
            pre = pre + carry
        new_h = self.activation_fn(pre)
        return new_h, new_h

    def initialize_carry(
        self,
        input_shape: tuple[int, ...],
        rngs: Rngs | RngStream | None = None,
        carry_init: Initializer | None = None,
    ) -> Array:
        """The initial ``h`` of shape ``(*batch, hidden_features)``.

        Args:
            input_shape: Shape of one step's input, ``(*batch, in_features)``.
            rngs: Rngs (``carry`` stream) or an RngStream; draws one key.
            carry_init: Initializer (default: the cell's, else zeros).

        Returns:
            ``h`` in ``param_dtype``.

        Raises:
            RngError: no ``rngs`` given and the cell kept none.
        """
        stream, init, shape = self._carry_parts(input_shape, rngs, carry_init)
        return init(stream(), shape, self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        """1: inputs are ``(*batch, in_features)``."""
        return 1


class GRUCell(RNNCellBase):
    r"""Gated recurrent unit cell.

    .. math::
        \begin{array}{ll}
        r = \sigma(W_{ir} x + b_{ir} + W_{hr} h) \\
        z = \sigma(W_{iz} x + b_{iz} + W_{hz} h) \\
        n = \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h)) \\
        h' = (1 - z) n + z h
        \end{array}

    The three input projections are fused into ``dense_i`` (kernel
    ``(in_features, 3 * hidden)`` and bias), the hidden ones into ``dense_h``
    (kernel ``(hidden, 3 * hidden)``, no bias). Carry and output are ``h'``.

    Args:
        in_features: Size of the input's last axis.
        hidden_features: Size of the hidden state.
        gate_fn: Activation of the gates (default sigmoid).
        activation_fn: Activation of the candidate (tanh).
        kernel_init: Initializer of ``dense_i.kernel`` (lecun_normal).
        recurrent_kernel_init: Initializer of ``dense_h.kernel`` (orthogonal;
            computed in float32 for half-precision ``param_dtype``).
        bias_init: Initializer of ``dense_i.bias`` (zeros).
        dtype: Computation dtype (None: inferred).
        param_dtype: Parameter dtype; also the dtype of the initial carry.
        carry_init: Initializer of the carry (prefer :meth:`initialize_carry`; warns).
        promote_dtype: Function casting inputs and params to one dtype.
        keep_rngs: Keep a forked ``carry`` stream (deprecated; warns).
        rngs: RNG streams; kernels draw from ``params``.
        kernel_metadata, recurrent_kernel_metadata, bias_metadata: Extra
            metadata of the respective Params.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> cell = ramie.GRUCell(3, 4, rngs=ramie.Rngs(0))
        >>> x = jnp.ones((2, 3))
        >>> h, y = cell(cell.initialize_carry(x.shape, ramie.Rngs(1)), x)
        >>> h.shape, cell.dense_i.kernel.shape, cell.dense_h.kernel.shape
        ((2, 4), (3, 12), (4, 12))
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        gate_fn: Callable[..., Any] = jax.nn.sigmoid,
        activation_fn: Callable[..., Any] = jnp.tanh,
        kernel_init: Initializer = default_kernel_init,
        recurrent_kernel_init: Initializer = default_recurrent_kernel_init,
        bias_init: Initializer = default_bias_init,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        carry_init: Initializer | None = None,
        promote_dtype: Callable[..., Any] = default_promote_dtype,
        keep_rngs: bool = False,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
        recurrent_kernel_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
        bias_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
    ):
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.gate_fn = gate_fn
        self.activation_fn = activation_fn
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.promote_dtype = promote_dtype
        self._setup_rngs(keep_rngs, rngs)
        self.dense_i = Linear(
            in_features, 3 * hidden_features, use_bias=True, kernel_init=kernel_init,
            bias_init=bias_init, dtype=dtype, param_dtype=param_dtype,
            promote_dtype=promote_dtype, rngs=rngs, kernel_metadata=kernel_metadata,
            bias_metadata=bias_metadata,
        )  # fmt: skip
        self.dense_h = Linear(
            hidden_features, 3 * hidden_features, use_bias=False,
            kernel_init=recurrent_kernel_init, dtype=dtype, param_dtype=param_dtype,
            promote_dtype=promote_dtype, rngs=rngs,
            kernel_metadata=recurrent_kernel_metadata,
        )  # fmt: skip
        self._setup_carry_init(carry_init)

    def __call__(self, carry: Array, inputs: Array) -> tuple[Array, Array]:
        """One GRU step.

        Args:
            carry: ``h`` of shape ``(*batch, hidden_features)``.
            inputs: Array of shape ``(*batch, in_features)``.

        Returns:
            ``(new_h, new_h)``.
        """
        h = carry
        xr, xz, xn = jnp.split(self.dense_i(inputs), 3, axis=-1)
        hr, hz, hn = jnp.split(self.dense_h(h), 3, axis=-1)
        r = self.gate_fn(xr + hr)
        z = self.gate_fn(xz + hz)
        n = self.activation_fn(xn + r * hn)
        new_h = (1.0 - z) * n + z * h
        return new_h, new_h

    def initialize_carry(
        self,
        input_shape: tuple[int, ...],
        rngs: Rngs | RngStream | None = None,
        carry_init: Initializer | None = None,
    ) -> Array:
        """The initial ``h`` of shape ``(*batch, hidden_features)``.

        Args:
            input_shape: Shape of one step's input, ``(*batch, in_features)``.
            rngs: Rngs (``carry`` stream) or an RngStream; draws one key.
            carry_init: Initializer (default: the cell's, else zeros).

        Returns:
            ``h`` in ``param_dtype``.

        Raises:
            RngError: no ``rngs`` given and the cell kept none.
        """
        stream, init, shape = self._carry_parts(input_shape, rngs, carry_init)
        return init(stream(), shape, self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        """1: inputs are ``(*batch, in_features)``."""
        return 1
