"""Convolution: :class:`Conv` over 1, 2 or 3 spatial dimensions.

Inputs are channels-last, ``(*batch, *spatial, features)`` (NWC, NHWC,
NDHWC); several leading batch axes are flattened into one for the
convolution, and an input with no batch axis gets a temporary one. The kernel
has shape ``kernel_size + (in_features // feature_group_count, out_features)``
and is drawn from ``rngs.params()`` before the bias, as in Flax NNX.

Besides what ``lax.conv_general_dilated`` supports ('SAME', 'VALID', explicit
``(low, high)`` pairs) the layer implements 'CIRCULAR' (periodic) and
'REFLECT' padding by padding the input first, and 'CAUSAL' padding for 1-D
convolutions (all padding on the left, so output ``t`` sees inputs ``<= t``).
The padding and broadcasting helpers here are shared with
:mod:`ramie._src.nn.conv_transpose`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ramie._src.core.module import Module
from ramie._src.core.rngs import Rngs
from ramie._src.core.variables import Param
from ramie._src.nn import initializers
from ramie._src.nn.checks import check_size
from ramie._src.nn.dtypes import promote_dtype as default_promote_dtype
from ramie._src.nn.initializers import initialize

default_kernel_init = initializers.lecun_normal()
default_bias_init = initializers.zeros_init()

PaddingLike = str | int | Sequence[int | tuple[int, int]]
LaxPadding = str | list[tuple[int, int]]

_LAX_PADDINGS = ("SAME", "SAME_LOWER", "VALID")
CONV_PADDINGS = (*_LAX_PADDINGS, "CIRCULAR", "REFLECT", "CAUSAL")


def canonicalize_padding(
    padding: PaddingLike, rank: int, api: str = "ramie.Conv"
) -> LaxPadding:
    """Turn a user's ``padding`` into an upper-case string or ``rank`` pairs.

    Args:
        padding: A padding mode string, an int used on both sides of every
            spatial dimension, or one int or ``(low, high)`` pair per dimension.
        rank: The number of spatial dimensions.
        api: The API named in error messages.

    Returns:
        An upper-case mode string, or a list of ``rank`` ``(low, high)`` pairs.

    Raises:
        ValueError: for an unknown string or a sequence of the wrong length.

    Example:
        >>> canonicalize_padding(1, 2)
        [(1, 1), (1, 1)]
        >>> canonicalize_padding([2, (0, 1)], 2), canonicalize_padding("same", 2)
        ([(2, 2), (0, 1)], 'SAME')
    """
    if isinstance(padding, str):
        mode = padding.upper()
        if mode in CONV_PADDINGS:
            return mode
    elif isinstance(padding, int):
        return [(padding, padding)] * rank
    elif isinstance(padding, Sequence) and len(padding) == rank:
        pairs: list[tuple[int, int]] = []
        for p in padding:
            if isinstance(p, int):
                pairs.append((p, p))
            elif (
                isinstance(p, Sequence)
                and len(p) == 2
                and all(isinstance(i, int) for i in p)
            ):
                pairs.append((p[0], p[1]))
            else:
                break
        else:
            return pairs
    example = ", ".join(["(1, 1)"] * rank)
    raise ValueError(
        f"{api}(padding={padding!r}): invalid padding for {rank} spatial "
        f"dimension(s).\n  Expected one of {', '.join(map(repr, CONV_PADDINGS))}, "
        f"an int, or a sequence of {rank} ints or (low, high) pairs, e.g.\n"
        f"      padding=({example},)"
    )


def broadcast_to_rank(
    value: int | Sequence[int] | None, rank: int, name: str, api: str = "ramie.Conv"
) -> tuple[int, ...]:
    """``value`` as a tuple of ``rank`` ints (None means 1).

    Args:
        value: An int for every dimension, one int per dimension, or None.
        rank: The number of spatial dimensions.
        name: The argument's name, for errors.
        api: The API named in error messages.

    Returns:
        A tuple of ``rank`` ints.

    Raises:
        ValueError: if a sequence of another length is given.

    Example:
        >>> broadcast_to_rank(2, 3, "strides"), broadcast_to_rank(None, 2, "strides")
        ((2, 2, 2), (1, 1))
    """
    if value is None:
        value = 1
    if isinstance(value, int):
        return (value,) * rank
    value = tuple(value)
    if len(value) != rank:
        raise ValueError(
            f"{api}({name}={value!r}): expected an int or {rank} ints, one per spatial "
            f"dimension of kernel_size, found {len(value)}.\n"
            f"  Pass e.g. {name}={(1,) * rank!r} or {name}=1."
        )
    return value


def kernel_size_tuple(kernel_size: int | Sequence[int], api: str) -> tuple[int, ...]:
    """``kernel_size`` as a tuple (an int means a 1-D kernel)."""
    if isinstance(kernel_size, int):
        return (kernel_size,)
    if isinstance(kernel_size, Sequence) and all(
        isinstance(k, int) for k in kernel_size
    ):
        return tuple(kernel_size)
    raise TypeError(
        f"{api}(kernel_size={kernel_size!r}): expected an int (1-D) or a sequence of "
        "ints, one per spatial dimension, e.g. kernel_size=(3, 3)."
    )


def flatten_batch(
    inputs: jax.Array, rank: int, features: int, api: str
) -> tuple[jax.Array, tuple[int, ...] | None]:
    """Reshape ``(*batch, *spatial, features)`` to exactly one batch axis.

    Returns the reshaped inputs and the original batch shape (None when
    there was exactly one batch axis and nothing was reshaped).
    """
    if inputs.ndim < rank + 1:
        raise ValueError(
            f"{api}: inputs of shape {inputs.shape} have {inputs.ndim} dimension(s); a "
            f"{rank}-D kernel needs (*batch, {rank} spatial, features), i.e. at least "
            f"{rank + 1}.\n  Add the missing axes, e.g. x[..., None] for one feature."
        )
    if inputs.shape[-1] != features:
        raise ValueError(
            f"{api}: inputs of shape {inputs.shape} have {inputs.shape[-1]} "
            f"features on the last axis, expected in_features={features}.\n"
            "  Inputs are channels-last (N, *spatial, C); transpose channels-first "
            "inputs with jnp.moveaxis(x, 1, -1)."
        )
    n_batch = inputs.ndim - rank - 1
    if n_batch == 1:
        return inputs, None
    batch_shape = inputs.shape[:n_batch]
    return jnp.reshape(inputs, (-1, *inputs.shape[n_batch:])), batch_shape


def unflatten_batch(y: jax.Array, batch_shape: tuple[int, ...] | None) -> jax.Array:
    """Undo :func:`flatten_batch` on the output."""
    if batch_shape is None:
        return y
    return jnp.reshape(y, (*batch_shape, *y.shape[1:]))


def check_mask(mask: Any, kernel_shape: tuple[int, ...], api: str) -> None:
    if mask is not None and tuple(mask.shape) != tuple(kernel_shape):
        raise ValueError(
            f"{api}: mask of shape {tuple(mask.shape)} must have the kernel's shape "
            f"{tuple(kernel_shape)}.\n  Build it like the kernel, e.g. "
            f"mask=jnp.ones({tuple(kernel_shape)})."
        )


def _dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
    # channels-last inputs/outputs (N, *spatial, C); kernel (*spatial, I, O)
    lhs = (0, ndim - 1, *range(1, ndim - 1))
    rhs = (ndim - 1, ndim - 2, *range(ndim - 2))
    return lax.ConvDimensionNumbers(lhs, rhs, lhs)


class Conv(Module):
    """An N-dimensional convolution over channels-last inputs.

    Args:
        in_features: Number of input channels (last axis of the inputs).
        out_features: Number of output channels.
        kernel_size: Spatial size of the kernel; an int means a 1-D kernel.
        strides: Inter-window strides, an int or one per spatial dimension.
        padding: ``'SAME'``, ``'VALID'``, ``'CIRCULAR'``, ``'REFLECT'``,
            ``'CAUSAL'`` (1-D only), an int, or one int or ``(low, high)`` pair
            per spatial dimension.
        input_dilation: Dilation of the inputs (a strided transposed
            convolution), an int or one per spatial dimension.
        kernel_dilation: Dilation of the kernel ("atrous" convolution).
        feature_group_count: Split the channels into this many groups that are
            convolved separately (``in_features`` for a depthwise convolution).
        use_bias: Whether to add a bias of shape ``(out_features,)``.
        mask: Optional array of the kernel's shape multiplied into the kernel.
        dtype: Computation dtype (``None``: inferred from inputs and params).
        param_dtype: Dtype of the parameters.
        precision: Precision passed to the convolution.
        kernel_init: Initializer of ``kernel`` (default ``lecun_normal()``).
        bias_init: Initializer of ``bias`` (default zeros).
        conv_general_dilated: The convolution function
            (default ``lax.conv_general_dilated``).
        promote_dtype: Function casting inputs and params to one dtype.
        preferred_element_type: Accumulation dtype of the convolution.
        rngs: RNG streams; ``kernel`` then ``bias`` draw from ``params``.
        kernel_metadata: Extra metadata of the ``kernel`` Param.
        bias_metadata: Extra metadata of the ``bias`` Param.

    Raises:
        ValueError: for an invalid padding, strides or dilations that do not
            match the kernel rank, feature counts not divisible by
            ``feature_group_count``, ``'CAUSAL'`` padding with a kernel of rank
            above 1, or a mask not shaped like the kernel.
        TypeError: if ``kernel_size`` is neither an int nor a sequence of ints.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> layer = ramie.Conv(3, 4, kernel_size=(3, 3), strides=2, rngs=ramie.Rngs(0))
        >>> layer.kernel.shape, layer.bias.shape
        ((3, 3, 3, 4), (4,))
        >>> layer(jnp.ones((2, 8, 8, 3))).shape
        (2, 4, 4, 4)
        >>> causal = ramie.Conv(
        ...     3, 4, kernel_size=3, padding="CAUSAL", rngs=ramie.Rngs(0)
        ... )
        >>> causal(jnp.ones((10, 3))).shape  # no batch axis
        (10, 4)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] | None = 1,
        *,
        padding: PaddingLike = "SAME",
        input_dilation: int | Sequence[int] | None = 1,
        kernel_dilation: int | Sequence[int] | None = 1,
        feature_group_count: int = 1,
        use_bias: bool = True,
        mask: jax.Array | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Callable[..., Any] = default_kernel_init,
        bias_init: Callable[..., Any] = default_bias_init,
        conv_general_dilated: Callable[..., Any] = lax.conv_general_dilated,
        promote_dtype: Callable[..., Any] = default_promote_dtype,
        preferred_element_type: Any = None,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = MappingProxyType({}),
        bias_metadata: Mapping[str, Any] = MappingProxyType({}),
    ):
        api = "ramie.Conv"
        kernel_size = kernel_size_tuple(kernel_size, api)
        rank = len(kernel_size)
        # validate the configuration now rather than at the first call
        broadcast_to_rank(strides, rank, "strides", api)
        lhs_dilation = broadcast_to_rank(input_dilation, rank, "input_dilation", api)
        broadcast_to_rank(kernel_dilation, rank, "kernel_dilation", api)
        pad = canonicalize_padding(padding, rank, api)
        if (
            isinstance(pad, str)
            and any(d != 1 for d in lhs_dilation)
            and conv_general_dilated is lax.conv_general_dilated
        ):
            raise ValueError(
                f"{api}(input_dilation={input_dilation!r}, padding={padding!r}): "
                "lax.conv_general_dilated supports input dilation only with explicit "
                "padding.\n  Give (low, high) pairs, e.g. "
                f"padding={tuple([(1, 1)] * rank)!r}, or use ramie.ConvTranspose."
            )
        if pad == "CAUSAL" and rank != 1:
            raise ValueError(
                f"{api}(padding='CAUSAL'): causal padding is defined for 1-D "
                f"convolutions only, but kernel_size={kernel_size} has {rank} "
                "dimensions.\n"
                "  Pad explicitly instead, e.g. padding=((k - 1, 0), (k // 2, k // 2))."
            )
        if (
            feature_group_count < 1
            or in_features % feature_group_count
            or (out_features % feature_group_count)
        ):
            raise ValueError(
                f"{api}(feature_group_count={feature_group_count}): in_features="
                f"{in_features} and out_features={out_features} must both be "
                "divisible by it.\n  For a depthwise convolution use e.g. "
                f"ramie.Conv({in_features}, {in_features}, 3, "
                f"feature_group_count={in_features}, rngs=rngs)"
            )
        kernel_shape = (*kernel_size, in_features // feature_group_count, out_features)
        check_mask(mask, kernel_shape, api)

        self.kernel_shape = kernel_shape
        self.kernel = Param(
            initialize(
                kernel_init, rngs.params(), kernel_shape, param_dtype, kernel_metadata
            ),
            **kernel_metadata,
        )
        self.bias: Param | None
        if use_bias:
            self.bias = Param(
                initialize(
                    bias_init,
                    rngs.params(),
                    (out_features,),
                    param_dtype,
                    bias_metadata,
                ),
                **bias_metadata,
            )
        else:
            self.bias = None
        self.in_features = in_features
        self.out_features = out_features
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.input_dilation = input_dilation
        self.kernel_dilation = kernel_dilation
        self.feature_group_count = feature_group_count
        self.use_bias = use_bias
        self.mask = mask
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.conv_general_dilated = conv_general_dilated
        self.promote_dtype = promote_dtype
        self.preferred_element_type = preferred_element_type

    def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
        """Convolve ``inputs`` of shape ``(*batch, *spatial, in_features)``.

        Args:
            inputs: Channels-last inputs; any number of batch axes, or none.
            out_sharding: Optional output sharding passed to the convolution.

        Returns:
            ``(*batch, *out_spatial, out_features)``.

        Raises:
            ValueError: if ``inputs`` has too few axes or the wrong number of
                features.
        """
        api = "ramie.Conv"
        kernel_size = self.kernel_size
        rank = len(kernel_size)
        if inputs.ndim >= rank + 1 and inputs.shape[-1] != self.in_features:
            check_size(
                self,
                inputs,
                -1,
                self.in_features,
                fix=f"inputs are channels-last (N, *spatial, {self.in_features}); "
                "transpose channels-first inputs with jnp.moveaxis(x, 1, -1), or "
                f"build the layer with in_features={inputs.shape[-1]}.",
            )
        x, batch_shape = flatten_batch(inputs, rank, self.in_features, api)
        strides = broadcast_to_rank(self.strides, rank, "strides", api)
        input_dilation = broadcast_to_rank(
            self.input_dilation, rank, "input_dilation", api
        )
        kernel_dilation = broadcast_to_rank(
            self.kernel_dilation, rank, "kernel_dilation", api
        )
        padding = canonicalize_padding(self.padding, rank, api)
        if padding in ("CIRCULAR", "REFLECT"):
            # pad like 'SAME' for a stride-1 convolution, with wrapped/mirrored values
            dilated = [(k - 1) * d + 1 for k, d in zip(kernel_size, kernel_dilation)]
            pads = [(0, 0), *[((k - 1) // 2, k // 2) for k in dilated], (0, 0)]
            x = jnp.pad(x, pads, mode="wrap" if padding == "CIRCULAR" else "reflect")
            padding = "VALID"
        elif padding == "CAUSAL":
            if rank != 1:
                raise ValueError(
                    f"{api}(padding='CAUSAL'): causal padding is defined for 1-D "
                    f"convolutions only, got kernel_size={kernel_size}."
                )
            left = kernel_dilation[0] * (kernel_size[0] - 1)
            x = jnp.pad(x, [(0, 0), (left, 0), (0, 0)])
            padding = "VALID"
        check_mask(self.mask, self.kernel_shape, api)
        kernel = self.kernel._raw
        if self.mask is not None:
            kernel = kernel * self.mask
        bias = self.bias._raw if self.bias is not None else None
        x, kernel, bias = self.promote_dtype((x, kernel, bias), dtype=self.dtype)
        kwargs: dict[str, Any] = {}
        if out_sharding is not None:
            kwargs["out_sharding"] = out_sharding
        if self.preferred_element_type is not None:
            kwargs["preferred_element_type"] = self.preferred_element_type
        y = self.conv_general_dilated(
            x,
            kernel,
            strides,
            padding,
            lhs_dilation=input_dilation,
            rhs_dilation=kernel_dilation,
            dimension_numbers=_dimension_numbers(x.ndim),
            feature_group_count=self.feature_group_count,
            precision=self.precision,
            **kwargs,
        )
        if bias is not None:
            y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
        return unflatten_batch(y, batch_shape)
