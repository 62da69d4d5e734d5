"""Activation functions, and :class:`PReLU`, the one activation with a parameter.

The functions are JAX's own (``jax.nn``, and ``jnp.tanh``) re-exported under
the names Flax NNX uses, so ``ramie.relu is jax.nn.relu``: nothing to learn
and nothing that can drift. :class:`PReLU` is a leaky ReLU whose negative
slope is a learnable scalar Param, ``negative_slope``, as in Flax NNX; it
needs no RNG because its initial value is a constant.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from jax.nn import (
    celu as celu,
)
from jax.nn import (
    elu as elu,
)
from jax.nn import (
    gelu as gelu,
)
from jax.nn import (
    glu as glu,
)
from jax.nn import (
    hard_sigmoid as hard_sigmoid,
)
from jax.nn import (
    hard_silu as hard_silu,
)
from jax.nn import (
    hard_swish as hard_swish,
)
from jax.nn import (
    hard_tanh as hard_tanh,
)
from jax.nn import (
    identity as identity,
)
from jax.nn import (
    leaky_relu as leaky_relu,
)
from jax.nn import (
    log_sigmoid as log_sigmoid,
)
from jax.nn import (
    log_softmax as log_softmax,
)
from jax.nn import (
    logsumexp as logsumexp,
)
from jax.nn import (
    one_hot as one_hot,
)
from jax.nn import (
    relu as relu,
)
from jax.nn import (
    relu6 as relu6,
)
from jax.nn import (
    selu as selu,
)
from jax.nn import (
    sigmoid as sigmoid,
)
from jax.nn import (
    silu as silu,
)
from jax.nn import (
    soft_sign as soft_sign,
)
from jax.nn import (
    softmax as softmax,
)
from jax.nn import (
    softplus as softplus,
)
from jax.nn import (
    standardize as standardize,
)
from jax.nn import (
    swish as swish,
)
from jax.numpy import tanh as tanh

from ramie._src.core.module import Module
from ramie._src.core.variables import Param
from ramie._src.nn.dtypes import promote_dtype as default_promote_dtype

__all__ = [
    "PReLU", "celu", "elu", "gelu", "glu", "hard_sigmoid", "hard_silu", "hard_swish",
    "hard_tanh", "identity", "leaky_relu", "log_sigmoid", "log_softmax", "logsumexp",
    "one_hot", "relu", "relu6", "selu", "sigmoid", "silu", "soft_sign", "softmax",
    "softplus", "standardize", "swish", "tanh",
]  # fmt: skip


class PReLU(Module):
    """Parametric ReLU: ``x`` where ``x >= 0``, else ``negative_slope * x``.

    ``negative_slope`` is a scalar Param, so it is trained with the rest of
    the model. Unlike the other activations this is a layer: build it once,
    then call it.

    Args:
        negative_slope_init: Initial slope for negative inputs.
        dtype: Computation dtype; ``None`` computes in the inputs' dtype.
        param_dtype: Dtype of ``negative_slope``.
        promote_dtype: Function casting ``(inputs, negative_slope)`` to
            ``dtype`` when ``dtype`` is given.
        negative_slope_metadata: Extra metadata of the ``negative_slope`` Param.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> act = ramie.PReLU(negative_slope_init=0.1)
        >>> act.negative_slope.shape, act.negative_slope.dtype
        ((), dtype('float32'))
        >>> y = act(jnp.array([-2.0, 3.0], jnp.bfloat16))
        >>> y.shape, y.dtype
        ((2,), dtype(bfloat16))
    """

    def __init__(
        self,
        negative_slope_init: float = 0.01,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        promote_dtype: Callable[..., Any] = default_promote_dtype,
        negative_slope_metadata: Mapping[str, Any] = MappingProxyType({}),
    ):
        self.negative_slope = Param(
            jnp.asarray(negative_slope_init, dtype=param_dtype),
            **negative_slope_metadata,
        )
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.promote_dtype = promote_dtype

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Apply the activation elementwise.

        Args:
            inputs: Any array.

        Returns:
            An array of the inputs' shape, in ``dtype`` (or the inputs' dtype).
        """
        slope = self.negative_slope._raw
        if self.dtype is not None:
            inputs, slope = self.promote_dtype((inputs, slope), dtype=self.dtype)
        else:
            slope = jnp.asarray(slope, jnp.result_type(inputs))
        return jnp.where(inputs >= 0, inputs, slope * inputs)
