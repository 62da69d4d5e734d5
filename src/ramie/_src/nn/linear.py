"""Dense layers: :class:`Linear` (and, in the same family, LinearGeneral and Einsum).

``Linear(in, out)`` holds ``kernel`` of shape ``(in, out)`` and ``bias`` of
shape ``(out,)`` - the names and shapes of Flax NNX, so checkpoints map one to
one - and computes ``x @ kernel + bias`` over the last axis of ``x``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ramie._src.core.module import Module
from ramie._src.core.rngs import Rngs
from ramie._src.core.variables import Param
from ramie._src.nn import initializers
from ramie._src.nn.dtypes import promote_dtype as default_promote_dtype

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
            kernel_init(kernel_key, (in_features, out_features), param_dtype),
            **kernel_metadata,
        )
        self.bias: Param | None
        if use_bias:
            bias_key = rngs.params()
            self.bias = Param(bias_init(bias_key, (out_features,), param_dtype), **bias_metadata)
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
        """Apply the layer to ``inputs`` of shape ``(..., in_features)``."""
        kernel = self.kernel._raw
        bias = self.bias._raw if self.bias is not None else None
        inputs, kernel, bias = self.promote_dtype((inputs, kernel, bias), dtype=self.dtype)
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
