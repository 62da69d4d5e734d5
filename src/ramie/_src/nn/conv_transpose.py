"""Transposed convolution: :class:`ConvTranspose`.

A transposed ("fractionally strided") convolution maps each input position to
a kernel-sized patch of the output, so strides *enlarge* the spatial size:
with ``'SAME'`` padding and stride ``s`` the output is ``s`` times larger, with
``'VALID'`` it is ``s * (n - 1) + dilated_kernel``. It wraps
``lax.conv_transpose``, which pads the dilated input itself; note that this
differs from PyTorch, whose ``padding`` argument removes border rows instead.

``'CIRCULAR'`` padding computes the ``'VALID'`` result and folds it back
periodically onto an output of ``stride * n`` positions. The kernel is
``kernel_size + (in_features, out_features)``, or ``(out_features,
in_features)`` with ``transpose_kernel=True`` (the gradient of a ``Conv``).
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
from ramie._src.nn.conv import (
    PaddingLike,
    broadcast_to_rank,
    canonicalize_padding,
    check_mask,
    default_bias_init,
    default_kernel_init,
    flatten_batch,
    kernel_size_tuple,
    unflatten_batch,
)
from ramie._src.nn.dtypes import promote_dtype as default_promote_dtype
from ramie._src.nn.initializers import initialize

_TRANSPOSE_PADDINGS = ("SAME", "SAME_LOWER", "VALID", "CIRCULAR")


def _fold_circular(
    y: jax.Array, periods: Sequence[int], transpose_kernel: bool
) -> jax.Array:
    """Wrap each spatial axis of ``y`` onto ``period`` positions by summation.

    ``y`` is first padded to a whole number of periods (the split of that
    padding between both ends decides the alignment and follows Flax, so
    results agree), then every block of ``period`` positions is added up.
    """
    pads = [(0, 0)]
    for size, period in zip(y.shape[1:-1], periods):
        extra = (period - size) % (2 * period)
        low, high = (extra // 2, extra - extra // 2)
        pads.append((low, high) if transpose_kernel else (high, low))
    pads.append((0, 0))
    y = jnp.pad(y, pads)
    for axis, period in enumerate(periods, start=1):
        blocks = (
            *y.shape[:axis],
            y.shape[axis] // period,
            period,
            *y.shape[axis + 1 :],
        )
        y = jnp.reshape(y, blocks).sum(axis=axis)
    return y


class ConvTranspose(Module):
    """An N-dimensional transposed convolution over channels-last inputs.

    Args:
        in_features: Number of input channels (last axis of the inputs).
        out_features: Number of output channels.
        kernel_size: Spatial size of the kernel; an int means a 1-D kernel.
        strides: Upsampling factor, an int or one per spatial dimension
            (default 1).
        padding: ``'SAME'`` (output ``stride * n``), ``'VALID'``,
            ``'CIRCULAR'`` (periodic, output ``stride * n``), an int, or one
            int or ``(low, high)`` pair per spatial dimension (padding of the
            dilated input, as in ``lax.conv_transpose``).
        kernel_dilation: Dilation of the kernel, an int or one per dimension.
        use_bias: Whether to add a bias of shape ``(out_features,)``.
        mask: Optional array of the kernel's shape multiplied into the kernel.
        dtype: Computation dtype (``None``: inferred from inputs and params).
        param_dtype: Dtype of the parameters.
        precision: Precision passed to the convolution.
        kernel_init: Initializer of ``kernel`` (default ``lecun_normal()``).
        bias_init: Initializer of ``bias`` (default zeros).
        transpose_kernel: Flip the kernel spatially and swap its channel axes
            (kernel ``(*kernel_size, out, in)``): the exact transpose of a
            ``Conv`` with the same kernel.
        promote_dtype: Function casting inputs and params to one dtype.
        preferred_element_type: Accumulation dtype of the convolution.
        rngs: RNG streams; ``kernel`` then ``bias`` draw from ``params``.
        kernel_metadata: Extra metadata of the ``kernel`` Param.
        bias_metadata: Extra metadata of the ``bias`` Param.

    Raises:
        ValueError: for a padding other than the above, strides or dilation
            that do not match the kernel rank, or a mask not shaped like the
            kernel.
        TypeError: if ``kernel_size`` is neither an int nor a sequence of ints.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> layer = ramie.ConvTranspose(
        ...     3, 4, kernel_size=(3, 3), strides=2, rngs=ramie.Rngs(0)
        ... )
        >>> layer.kernel.shape, layer.bias.shape
        ((3, 3, 3, 4), (4,))
        >>> layer(jnp.ones((2, 5, 5, 3))).shape
        (2, 10, 10, 4)
        >>> up = ramie.ConvTranspose(3, 4, 6, strides=2, padding="CIRCULAR",
        ...                          transpose_kernel=True, rngs=ramie.Rngs(0))
        >>> up.kernel.shape, up(jnp.ones((7, 3))).shape
        ((6, 4, 3), (14, 4))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] | None = None,
        *,
        padding: PaddingLike = "SAME",
        kernel_dilation: int | Sequence[int] | None = None,
        use_bias: bool = True,
        mask: jax.Array | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Callable[..., Any] = default_kernel_init,
        bias_init: Callable[..., Any] = default_bias_init,
        transpose_kernel: bool = False,
        promote_dtype: Callable[..., Any] = default_promote_dtype,
        preferred_element_type: Any = None,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = MappingProxyType({}),
        bias_metadata: Mapping[str, Any] = MappingProxyType({}),
    ):
        api = "ramie.ConvTranspose"
        kernel_size = kernel_size_tuple(kernel_size, api)
        rank = len(kernel_size)
        broadcast_to_rank(strides, rank, "strides", api)
        broadcast_to_rank(kernel_dilation, rank, "kernel_dilation", api)
        self._check_padding(padding, rank)
        if transpose_kernel:
            kernel_shape = (*kernel_size, out_features, in_features)
        else:
            kernel_shape = (*kernel_size, in_features, out_features)
        check_mask(mask, kernel_shape, api)

        self.kernel_size = kernel_size
        self.in_features = in_features
        self.out_features = out_features
        self.strides = strides
        self.padding = padding
        self.kernel_dilation = kernel_dilation
        self.use_bias = use_bias
        self.mask = mask
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.transpose_kernel = transpose_kernel
        self.promote_dtype = promote_dtype
        self.preferred_element_type = preferred_element_type
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

    @staticmethod
    def _check_padding(padding: PaddingLike, rank: int) -> str | list[tuple[int, int]]:
        api = "ramie.ConvTranspose"
        pad = canonicalize_padding(padding, rank, api)
        if isinstance(pad, str) and pad not in _TRANSPOSE_PADDINGS:
            raise ValueError(
                f"{api}(padding={padding!r}): this padding is not supported by "
                f"transposed convolutions; use one of "
                f"{', '.join(map(repr, _TRANSPOSE_PADDINGS))} or explicit (low, high) "
                "pairs.\n  For a causal upsampling, pad explicitly, e.g. "
                "padding=((k - 1, 0),)."
            )
        return pad

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Apply the transposed convolution to ``(*batch, *spatial, in_features)``.

        Args:
            inputs: Channels-last inputs; any number of batch axes, or none.

        Returns:
            ``(*batch, *out_spatial, out_features)``.

        Raises:
            ValueError: if ``inputs`` has too few axes or the wrong number of
                features.
        """
        api = "ramie.ConvTranspose"
        rank = len(self.kernel_size)
        x, batch_shape = flatten_batch(inputs, rank, self.in_features, api)
        strides = broadcast_to_rank(self.strides, rank, "strides", api)
        kernel_dilation = broadcast_to_rank(
            self.kernel_dilation, rank, "kernel_dilation", api
        )
        check_mask(self.mask, self.kernel_shape, api)
        kernel = self.kernel._raw
        if self.mask is not None:
            kernel = kernel * self.mask
        padding = self._check_padding(self.padding, rank)
        circular = padding == "CIRCULAR"
        bias = self.bias._raw if self.bias is not None else None
        x, kernel, bias = self.promote_dtype((x, kernel, bias), dtype=self.dtype)
        y = lax.conv_transpose(
            x,
            kernel,
            strides,
            "VALID" if circular else padding,
            rhs_dilation=kernel_dilation,
            transpose_kernel=self.transpose_kernel,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )
        if circular:
            periods = [n * s for n, s in zip(x.shape[1:-1], strides)]
            y = _fold_circular(y, periods, self.transpose_kernel)
        if bias is not None:
            y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
        return unflatten_batch(y, batch_shape)
