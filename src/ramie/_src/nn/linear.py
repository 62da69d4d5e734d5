"""Dense layers: :class:`Linear`, :class:`LinearGeneral` and :class:`Einsum`.

``Linear(in, out)`` holds ``kernel`` of shape ``(in, out)`` and ``bias`` of
shape ``(out,)`` - the names and shapes of Flax NNX, so checkpoints map one to
one - and computes ``x @ kernel + bias`` over the last axis of ``x``.
``LinearGeneral`` contracts several input axes at once and may produce several
output axes (its kernel is ``(*batch, *in_features, *out_features)``), and
``Einsum`` contracts the input with its kernel along any ``jnp.einsum``
equation. All three draw ``kernel`` then ``bias`` from ``rngs.params()``, in
Flax's order, so equal seeds give equal weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ramie._src.core.module import Module
from ramie._src.core.rngs import Rngs
from ramie._src.core.variables import Param, VariableMetadata
from ramie._src.nn import initializers
from ramie._src.nn.checks import check_size, input_error
from ramie._src.nn.dtypes import promote_dtype as default_promote_dtype
from ramie._src.nn.initializers import initialize

default_kernel_init = initializers.lecun_normal()
default_bias_init = initializers.zeros_init()


class Linear(Module):
    """A linear transformation over the last axis: ``y = x @ kernel + bias``.

    Args:
        in_features: Size of the input's last axis.
        out_features: Size of the output's last axis.
        use_bias: Whether to add a bias.
        dtype: Computation dtype (``None``: inferred from inputs and params).
        param_dtype: Dtype of the parameters.
        precision: Matmul precision passed to ``dot_general``.
        kernel_init: Initializer of ``kernel`` (default ``lecun_normal()``).
        bias_init: Initializer of ``bias`` (default zeros).
        dot_general: The contraction function (default ``lax.dot_general``).
        promote_dtype: Function casting inputs and params to one dtype.
        preferred_element_type: Accumulation dtype for ``dot_general``.
        rngs: RNG streams; the kernel draws from ``params``.
        kernel_metadata: Extra metadata of the ``kernel`` Param.
        bias_metadata: Extra metadata of the ``bias`` Param.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> layer = ramie.Linear(784, 256, rngs=ramie.Rngs(0))
        >>> layer.kernel.shape, layer.bias.shape
        ((784, 256), (256,))
        >>> layer(jnp.ones((2, 784))).shape
        (2, 256)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Callable[..., Any] = default_kernel_init,
        bias_init: Callable[..., Any] = default_bias_init,
        dot_general: Callable[..., Any] = lax.dot_general,
        promote_dtype: Callable[..., Any] = default_promote_dtype,
        preferred_element_type: Any = None,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
        bias_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
    ):
        kernel_key = rngs.params()
        self.kernel = Param(
            initialize(
                kernel_init,
                kernel_key,
                (in_features, out_features),
                param_dtype,
                kernel_metadata,
            ),
            **kernel_metadata,
        )
        self.bias: Param | None
        if use_bias:
            bias_key = rngs.params()
            self.bias = Param(
                initialize(
                    bias_init, bias_key, (out_features,), param_dtype, bias_metadata
                ),
                **bias_metadata,
            )
        else:
            self.bias = None
        self.in_features = in_features
        self.out_features = out_features
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.dot_general = dot_general
        self.promote_dtype = promote_dtype
        self.preferred_element_type = preferred_element_type

    def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
        """Apply the layer to ``inputs`` of shape ``(..., in_features)``.

        Raises:
            InputShapeError: ``inputs`` has another size on its last axis
                (the message names the layer's path in the model).
        """
        shape = getattr(inputs, "shape", None)
        if (
            shape is not None
            and shape[-1:] != (self.in_features,)
            # inside shard_map the kernel is a local shard: its rows decide
            and shape[-1:] != tuple(getattr(self.kernel._raw, "shape", ())[:1])
        ):
            found = shape[-1] if shape else "?"
            check_size(
                self,
                inputs,
                -1,
                self.in_features,
                fix=f"pass inputs of shape (..., {self.in_features}), or build "
                "the layer for them:\n"
                f"      ramie.Linear({found}, {self.out_features}, rngs=rngs)",
            )
        kernel = self.kernel._raw
        bias = self.bias._raw if self.bias is not None else None
        inputs, kernel, bias = self.promote_dtype(
            (inputs, kernel, bias), dtype=self.dtype
        )
        kwargs = {}
        if self.preferred_element_type is not None:
            kwargs["preferred_element_type"] = self.preferred_element_type
        if out_sharding is not None:
            kwargs["out_sharding"] = out_sharding
        y = self.dot_general(
            inputs,
            kernel,
            (((inputs.ndim - 1,), (0,)), ((), ())),
            precision=self.precision,
            **kwargs,
        )
        if bias is not None:
            y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
        return y


# --------------------------------------------------------------- LinearGeneral
def _as_tuple(x: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(x, int):
        return (x,)
    return tuple(int(i) for i in x)


def _reshaped_init(
    init: Callable[..., Any], shape: tuple[int, ...], n_out: int
) -> Callable:
    """Run ``init`` on a 2-D (or 1-D) view of ``shape`` and reshape the result.

    Fan-in and fan-out of variance-scaling initializers then count every
    contracted axis, as in Flax, which makes the same seed give the same kernel.
    """

    def wrapped(key: jax.Array, dtype: Any) -> Any:
        if n_out:
            flat = (math.prod(shape[:-n_out]), math.prod(shape[-n_out:]))
        else:
            flat = (math.prod(shape),)
        value = init(key, flat, dtype)
        if isinstance(value, VariableMetadata):
            value.raw_value = jnp.reshape(value.raw_value, shape)
            return value
        return jnp.reshape(value, shape)

    return wrapped


def _normalize_axes(axes: Sequence[int], ndim: int) -> tuple[int, ...]:
    return tuple(sorted(a % ndim for a in axes))


class LinearGeneral(Module):
    """A linear map that contracts one or more input axes.

    With ``in_features=(a, b)`` and ``axis=(-2, -1)`` the last two axes of the
    input (sizes ``a`` and ``b``) are contracted with ``kernel`` of shape
    ``(a, b, *out_features)``; the output axes replace them at the end.
    ``batch_axis={0: n}`` additionally gives every index of leading axis 0 its
    own kernel and bias (shapes gain a leading ``n``).

    Args:
        in_features: Size(s) of the contracted input axes.
        out_features: Size(s) of the output axes appended to the result.
        axis: Input axis (or axes) to contract, one per entry of ``in_features``.
        batch_axis: Mapping ``{axis: size}`` of leading axes with separate
            weights; the axes must be ``0, 1, ..., k-1``.
        use_bias: Whether to add a bias of shape ``(*batch, *out_features)``.
        dtype: Computation dtype (``None``: inferred from inputs and params).
        param_dtype: Dtype of the parameters.
        kernel_init: Initializer of ``kernel``; it sees the kernel as a matrix
            ``(prod(batch + in_features), prod(out_features))``.
        bias_init: Initializer of ``bias``.
        precision: Matmul precision passed to ``dot_general``.
        promote_dtype: Function casting inputs and params to one dtype.
        dot_general: The contraction function (default ``lax.dot_general``).
        dot_general_cls: A class whose instance is the contraction function;
            takes precedence over ``dot_general``.
        preferred_element_type: Accumulation dtype for ``dot_general``.
        rngs: RNG streams; ``kernel`` then ``bias`` draw from ``params``.
        kernel_metadata: Extra metadata of the ``kernel`` Param.
        bias_metadata: Extra metadata of the ``bias`` Param.

    Raises:
        ValueError: if ``in_features`` and ``axis`` differ in length, or
            ``batch_axis`` is not a run of leading axes.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> layer = ramie.LinearGeneral(
        ...     (2, 3), (4, 5), axis=(1, -1), rngs=ramie.Rngs(0)
        ... )
        >>> layer.kernel.shape, layer.bias.shape
        ((2, 3, 4, 5), (4, 5))
        >>> layer(jnp.ones((16, 2, 3))).shape
        (16, 4, 5)
    """

    def __init__(
        self,
        in_features: int | Sequence[int],
        out_features: int | Sequence[int],
        *,
        axis: int | Sequence[int] = -1,
        batch_axis: Mapping[int, int] = MappingProxyType({}),
        use_bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        kernel_init: Callable[..., Any] = default_kernel_init,
        bias_init: Callable[..., Any] = default_bias_init,
        precision: Any = None,
        promote_dtype: Callable[..., Any] = default_promote_dtype,
        dot_general: Callable[..., Any] | None = None,
        dot_general_cls: Any = None,
        preferred_element_type: Any = None,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = MappingProxyType({}),
        bias_metadata: Mapping[str, Any] = MappingProxyType({}),
    ):
        self.in_features = _as_tuple(in_features)
        self.out_features = _as_tuple(out_features)
        self.axis = _as_tuple(axis)
        self.batch_axis = MappingProxyType(
            {int(k): int(v) for k, v in batch_axis.items()}
        )
        if len(self.in_features) != len(self.axis):
            raise ValueError(
                f"ramie.LinearGeneral: in_features={self.in_features} and "
                f"axis={self.axis} must have the same length, got "
                f"{len(self.in_features)} and {len(self.axis)}.\n"
                "  Give one input axis per contracted feature size, e.g.\n"
                "      ramie.LinearGeneral((2, 3), 4, axis=(-2, -1), rngs=rngs)"
            )
        batch_dims = tuple(sorted(self.batch_axis))
        if batch_dims and batch_dims != tuple(range(len(batch_dims))):
            raise ValueError(
                f"ramie.LinearGeneral: batch_axis keys {batch_dims} must be the "
                "leading axes 0, 1, ..., k-1.\n"
                "  Move the batch axes to the front first, e.g.\n"
                "      ramie.LinearGeneral(3, 4, batch_axis={0: n}, rngs=rngs)"
            )
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.promote_dtype = promote_dtype
        self.dot_general = dot_general
        self.dot_general_cls = dot_general_cls
        self.preferred_element_type = preferred_element_type

        batch_shape = tuple(self.batch_axis[k] for k in batch_dims)
        kernel_shape = (*batch_shape, *self.in_features, *self.out_features)
        init_kernel = _reshaped_init(kernel_init, kernel_shape, len(self.out_features))
        self.kernel = Param(init_kernel(rngs.params(), param_dtype), **kernel_metadata)
        self.bias: Param | None
        if use_bias:
            bias_shape = (*batch_shape, *self.out_features)
            init_bias = _reshaped_init(bias_init, bias_shape, 0)
            self.bias = Param(init_bias(rngs.params(), param_dtype), **bias_metadata)
        else:
            self.bias = None

    def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
        """Contract ``inputs`` along ``axis`` with the kernel.

        Args:
            inputs: Array whose ``axis`` entries have sizes ``in_features``.
            out_sharding: Optional output sharding for ``dot_general``.

        Returns:
            The remaining input axes followed by ``out_features``.

        Raises:
            ValueError: if the contracted axes of ``inputs`` have other sizes.
        """
        ndim = inputs.ndim
        n_batch = len(self.batch_axis)
        if ndim < len(self.axis) + n_batch or any(
            not -ndim <= a < ndim for a in self.axis
        ):
            raise ValueError(
                f"ramie.LinearGeneral: inputs of shape {inputs.shape} have no axes "
                f"{self.axis} (plus {n_batch} batch axes) to contract.\n"
                "  Pass inputs with at least that many dimensions, or change `axis`."
            )
        axis = _normalize_axes(self.axis, ndim)
        found = tuple(inputs.shape[a] for a in axis)
        # the kernel's input dims pair with the axes in increasing order (as in Flax)
        expected = self.in_features
        if found != expected:
            raise input_error(
                self,
                f"inputs of shape {inputs.shape} have sizes {found} on axes "
                f"{axis}, expected in_features {expected}.",
                "reshape the inputs or build the layer for them, e.g.\n"
                f"      ramie.LinearGeneral({found}, {self.out_features}, "
                f"axis={axis}, rngs=rngs)",
            )
        batch_axis = _normalize_axes(tuple(self.batch_axis), ndim)
        batch_ind = tuple(range(n_batch))
        contract_ind = tuple(range(n_batch, n_batch + len(axis)))
        kernel = self.kernel._raw
        bias = self.bias._raw if self.bias is not None else None
        inputs, kernel, bias = self.promote_dtype(
            (inputs, kernel, bias), dtype=self.dtype
        )
        if self.dot_general_cls is not None:
            dot_general = self.dot_general_cls()
        elif self.dot_general is not None:
            dot_general = self.dot_general
        else:
            dot_general = lax.dot_general
        kwargs: dict[str, Any] = {}
        if out_sharding is not None:
            kwargs["out_sharding"] = out_sharding
        if self.preferred_element_type is not None:
            kwargs["preferred_element_type"] = self.preferred_element_type
        out = dot_general(
            inputs,
            kernel,
            ((axis, contract_ind), (batch_axis, batch_ind)),
            precision=self.precision,
            **kwargs,
        )
        if bias is not None:
            # dot_general puts batch axes first, then the free input axes
            free_shape = tuple(
                inputs.shape[a] if a in batch_axis else 1
                for a in range(ndim)
                if a not in axis
            )
            out += jnp.reshape(bias, (*free_shape, *self.out_features))
        return out


# ----------------------------------------------------------------------- Einsum
def _check_einsum_str(einsum_str: str) -> tuple[str, str, str]:
    """Split ``"x,k->y"`` into its three terms, or say what is wrong with it."""
    if "->" not in einsum_str:
        raise ValueError(
            f"ramie.Einsum: einsum_str {einsum_str!r} must be explicit and contain "
            "'->'.\n  Name the output axes, e.g. ramie.Einsum('bi,io->bo', (3, 4), "
            "rngs=rngs)"
        )
    operands, result = einsum_str.split("->", 1)
    if operands.count(",") != 1:
        raise ValueError(
            f"ramie.Einsum: einsum_str {einsum_str!r} must have exactly two operands "
            f"(the input and the kernel), i.e. one ',', found {operands.count(',')}.\n"
            "  Write it as 'INPUT,KERNEL->OUTPUT', e.g. 'bi,io->bo'."
        )
    x_str, k_str = operands.split(",")
    return x_str, k_str, result


def _named_dims(term: str) -> int:
    return len(term.replace("...", ""))


class Einsum(Module):
    """A learnable ``jnp.einsum(einsum_str, inputs, kernel) + bias``.

    The equation has two operands, the input and the kernel. The bias (if
    ``bias_shape`` is given) is broadcast over the output axes that do not come
    from the kernel. ``__call__`` may pass another equation over the same kernel.

    Args:
        einsum_str: Equation ``"INPUT,KERNEL->OUTPUT"`` such as
            ``"nta,hab->nthb"``, or None to pass one on every call.
        kernel_shape: Shape of ``kernel`` (an int for one axis).
        bias_shape: Shape of ``bias`` (an int for one axis); None for no bias.
        dtype: Computation dtype (``None``: inferred from inputs and params).
        param_dtype: Dtype of the parameters.
        precision: Precision passed to ``einsum_op``.
        kernel_init: Initializer of ``kernel`` (default ``lecun_normal()``).
        bias_init: Initializer of ``bias`` (default zeros).
        promote_dtype: Function casting inputs and params to one dtype.
        einsum_op: The einsum function (default ``jnp.einsum``).
        preferred_element_type: Accumulation dtype passed to ``einsum_op``.
        rngs: RNG streams; ``kernel`` then ``bias`` draw from ``params``.
        kernel_metadata: Extra metadata of the ``kernel`` Param.
        bias_metadata: Extra metadata of the ``bias`` Param.

    Raises:
        ValueError: if ``einsum_str`` has no ``'->'``, not exactly two operands,
            or a kernel term whose rank differs from ``kernel_shape``.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> layer = ramie.Einsum("nta,hab->nthb", (8, 2, 4), (8, 4), rngs=ramie.Rngs(0))
        >>> layer.kernel.shape, layer.bias.shape
        ((8, 2, 4), (8, 4))
        >>> layer(jnp.ones((16, 11, 2))).shape
        (16, 11, 8, 4)
    """

    def __init__(
        self,
        einsum_str: str | None,
        kernel_shape: int | Sequence[int],
        bias_shape: int | Sequence[int] | None = None,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Callable[..., Any] = default_kernel_init,
        bias_init: Callable[..., Any] = default_bias_init,
        promote_dtype: Callable[..., Any] = default_promote_dtype,
        einsum_op: Callable[..., Any] = jnp.einsum,
        preferred_element_type: Any = None,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = MappingProxyType({}),
        bias_metadata: Mapping[str, Any] = MappingProxyType({}),
    ):
        kernel_shape = _as_shape(kernel_shape)
        if einsum_str is not None:
            einsum_str = einsum_str.replace(" ", "")
            self._check(einsum_str, kernel_shape)
        self.kernel = Param(
            initialize(
                kernel_init, rngs.params(), kernel_shape, param_dtype, kernel_metadata
            ),
            **kernel_metadata,
        )
        self.bias: Param | None
        if bias_shape is not None:
            bias_shape = _as_shape(bias_shape)
            self.bias = Param(
                initialize(
                    bias_init, rngs.params(), bias_shape, param_dtype, bias_metadata
                ),
                **bias_metadata,
            )
        else:
            self.bias = None
        self.einsum_str = einsum_str
        self.kernel_shape = kernel_shape
        self.bias_shape = bias_shape
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.promote_dtype = promote_dtype
        self.einsum_op = einsum_op
        self.preferred_element_type = preferred_element_type

    @staticmethod
    def _check(einsum_str: str, kernel_shape: tuple[int, ...]) -> tuple[str, str, str]:
        x_str, k_str, out_str = _check_einsum_str(einsum_str)
        rank = _named_dims(k_str)
        if ("..." in k_str and rank > len(kernel_shape)) or (
            "..." not in k_str and rank != len(kernel_shape)
        ):
            raise ValueError(
                f"ramie.Einsum: the kernel term {k_str!r} of {einsum_str!r} names "
                f"{rank} axes but kernel_shape {kernel_shape} has "
                f"{len(kernel_shape)}.\n"
                "  Give the kernel one letter per axis, e.g. "
                "ramie.Einsum('bi,io->bo', (3, 4), rngs=rngs)"
            )
        return x_str, k_str, out_str

    def _check_inputs(self, inputs: Any, x_str: str, k_str: str, eq: str) -> None:
        """Each input axis contracted with the kernel must have its size."""
        shape = getattr(inputs, "shape", None)
        if shape is None or "." in x_str + k_str or len(x_str) != len(shape):
            return
        for i, letter in enumerate(x_str):
            j = k_str.find(letter)
            if j >= 0 and shape[i] != self.kernel_shape[j]:
                raise input_error(
                    self,
                    f"the input has size {shape[i]} on axis {i} (shape "
                    f"{tuple(shape)}), but {letter!r} in {eq!r} is "
                    f"{self.kernel_shape[j]} in the kernel of shape "
                    f"{tuple(self.kernel_shape)}.",
                    f"pass inputs with {self.kernel_shape[j]} on axis {i}, or "
                    "build the layer with a kernel_shape that fits them.",
                )

    def __call__(
        self, inputs: jax.Array, einsum_str: str | None = None, out_sharding: Any = None
    ) -> jax.Array:
        """Evaluate the equation on ``inputs`` and the kernel, then add the bias.

        Args:
            inputs: The first einsum operand.
            einsum_str: An equation used instead of the constructor's.
            out_sharding: Optional output sharding passed to ``einsum_op``.

        Returns:
            The einsum result plus the broadcast bias.

        Raises:
            ValueError: if neither the constructor nor the call gives an
                equation, or the bias does not fit the kernel axes of the output.
        """
        if einsum_str is None:
            einsum_str = self.einsum_str
        if einsum_str is None:
            raise ValueError(
                "ramie.Einsum: no einsum_str was given to the constructor or the "
                "call.\n"
                "  Pass one, e.g. layer(x, 'bi,io->bo')."
            )
        einsum_str = einsum_str.replace(" ", "")
        x_str, k_str, out_str = self._check(einsum_str, self.kernel_shape)
        self._check_inputs(inputs, x_str, k_str, einsum_str)
        kernel = self.kernel._raw
        bias = self.bias._raw if self.bias is not None else None
        inputs, kernel, bias = self.promote_dtype(
            (inputs, kernel, bias), dtype=self.dtype
        )
        kwargs: dict[str, Any] = {}
        if out_sharding is not None:
            kwargs["out_sharding"] = out_sharding
        if self.preferred_element_type is not None:
            kwargs["preferred_element_type"] = self.preferred_element_type
        y = self.einsum_op(
            einsum_str, inputs, kernel, precision=self.precision, **kwargs
        )
        if bias is not None:
            shape = self._bias_broadcast_shape(x_str, k_str, out_str, inputs.ndim)
            if math.prod(shape) != bias.size:
                raise ValueError(
                    f"ramie.Einsum: bias of shape {bias.shape} does not fit the output "
                    f"axes {out_str!r} taken from the kernel (sizes {shape}) in "
                    f"{einsum_str!r}.\n  Use bias_shape with the kernel sizes of those "
                    "output axes."
                )
            y += jnp.reshape(bias, shape)
        return y

    def _bias_broadcast_shape(
        self, x_str: str, k_str: str, out_str: str, x_ndim: int
    ) -> tuple[int, ...]:
        """Output-shaped tuple: kernel sizes on axes that come from the kernel,
        else 1.
        """
        k_ndim = len(self.kernel_shape)
        n_x_ell = x_ndim - _named_dims(x_str) if "..." in x_str else 0
        n_k_ell = k_ndim - _named_dims(k_str) if "..." in k_str else 0
        head, _, tail = k_str.partition("...")
        letter_size = {c: self.kernel_shape[i] for i, c in enumerate(head)}
        if "..." in k_str:
            letter_size.update(
                {
                    c: self.kernel_shape[k_ndim - len(tail) + i]
                    for i, c in enumerate(tail)
                }
            )
        # kernel ellipsis axes, right-aligned within the output's broadcast ellipsis
        ell_sizes = self.kernel_shape[len(head) : len(head) + n_k_ell]
        n_ell = max(n_x_ell, n_k_ell)
        shape: list[int] = []
        out_head, has_ell, out_tail = out_str.partition("...")
        shape += [letter_size.get(c, 1) for c in out_head]
        if has_ell:
            shape += [1] * (n_ell - n_k_ell) + list(ell_sizes)
        shape += [letter_size.get(c, 1) for c in out_tail]
        return tuple(shape)


def _as_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    """A shape given as an int (one axis) or a sequence of ints."""
    return (shape,) if isinstance(shape, int) else tuple(shape)
