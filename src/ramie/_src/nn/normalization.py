"""Normalization layers: BatchNorm (and LayerNorm, RMSNorm, GroupNorm).

All of them normalise over *reduction axes* and learn a ``scale`` and ``bias``
per *feature axis*. Statistics are computed in at least float32 (stable in half
precision); with ``use_fast_variance`` the variance is ``E[x^2] - E[x]^2``,
clipped at zero. BatchNorm keeps running averages in ``mean`` and ``var``
(:class:`~ramie.BatchStat`) and uses them when ``use_running_average`` is true
(``model.eval()``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ramie._src.core.module import Module
from ramie._src.core.rngs import Rngs
from ramie._src.core.variables import BatchStat, Param
from ramie._src.nn import initializers
from ramie._src.nn.dtypes import canonicalize_dtype
from ramie._src.nn.dtypes import promote_dtype as default_promote_dtype

Axes = int | Sequence[int]


def canonicalize_axes(ndim: int, axes: Axes) -> tuple[int, ...]:
    """Non-negative, sorted, unique axes.

    Example:
        >>> canonicalize_axes(3, -1), canonicalize_axes(4, (0, -2))
        ((2,), (0, 2))
    """
    if isinstance(axes, int):
        axes = (axes,)
    return tuple(sorted({a % ndim if ndim else a for a in axes}))


def _square_magnitude(x: jax.Array) -> jax.Array:
    if jnp.iscomplexobj(x):
        return lax.square(lax.real(x)) + lax.square(lax.imag(x))
    return lax.square(x)


def compute_stats(
    x: jax.Array,
    axes: Axes,
    dtype: Any = None,
    axis_name: str | None = None,
    axis_index_groups: Any = None,
    use_mean: bool = True,
    use_fast_variance: bool = True,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of ``x`` over ``axes``, in at least float32.

    Args:
        x: Input.
        axes: Axes to reduce.
        dtype: Minimum statistics dtype (always promoted to at least float32).
        axis_name: Named axis to average over as well (``pmean``), e.g. under
            ``vmap(axis_name=...)`` or ``shard_map``.
        axis_index_groups: Sub-groups of ``axis_name``.
        use_mean: If False the mean is taken as zero (RMS statistics).
        use_fast_variance: ``E[x^2] - E[x]^2`` (one pass) instead of
            ``E[(x - E[x])^2]``.
        mask: Boolean array broadcastable to ``x``: positions to include.
    """
    if dtype is None:
        dtype = jnp.result_type(x)
    dtype = jnp.promote_types(dtype, jnp.float32)
    x = jnp.asarray(x, dtype)
    axes = canonicalize_axes(x.ndim, axes)

    def means(*arrays: jax.Array) -> tuple[jax.Array, ...]:
        out = tuple(a.mean(axes, where=mask) for a in arrays)
        if axis_name is None:
            return out
        stacked = lax.pmean(jnp.stack(out), axis_name, axis_index_groups=axis_index_groups)
        return tuple(stacked[i] for i in range(len(out)))

    if not use_mean:
        (var,) = means(_square_magnitude(x))
        return jnp.zeros_like(var), var
    if use_fast_variance:
        mu, mu2 = means(x, _square_magnitude(x))
        var = jnp.maximum(0.0, mu2 - _square_magnitude(mu))
    else:
        (mu,) = means(x)
        (var,) = means(_square_magnitude(x - jnp.expand_dims(mu, axes)))
    return mu, var


def normalize(
    x: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    scale: jax.Array | None,
    bias: jax.Array | None,
    reduction_axes: Axes,
    feature_axes: Axes,
    dtype: Any,
    epsilon: float,
) -> jax.Array:
    """``(x - mean) * rsqrt(var + eps) * scale + bias``, broadcast per feature."""
    reduction_axes = canonicalize_axes(x.ndim, reduction_axes)
    feature_axes = canonicalize_axes(x.ndim, feature_axes)
    stats_shape = [1 if i in reduction_axes else d for i, d in enumerate(x.shape)]
    feature_shape = [x.shape[i] if i in feature_axes else 1 for i in range(x.ndim)]
    mean = jnp.reshape(mean, stats_shape)
    var = jnp.reshape(var, stats_shape)
    y = x - mean
    mul = lax.rsqrt(var + epsilon)
    parts = [x]
    if scale is not None:
        scale = jnp.reshape(scale, feature_shape)
        mul = mul * scale
        parts.append(scale)
    y = y * mul
    if bias is not None:
        bias = jnp.reshape(bias, feature_shape)
        y = y + bias
        parts.append(bias)
    return jnp.asarray(y, canonicalize_dtype(*parts, dtype=dtype))


class BatchNorm(Module):
    """Batch normalization with running statistics.

    In training (``use_running_average=False``) it normalises with the batch's
    statistics and updates ``mean``/``var`` as exponential moving averages;
    in evaluation it uses them.

    Args:
        num_features: Size of the feature axis.
        use_running_average: Use the stored statistics (``eval()`` sets True).
        axis: Feature axis (or axes); every other axis is reduced.
        momentum: Decay of the moving averages.
        epsilon: Added to the variance.
        dtype: Output dtype (``None``: inferred).
        param_dtype: Dtype of ``scale`` and ``bias``.
        use_bias, use_scale: Learn ``bias`` / ``scale``.
        bias_init, scale_init: Their initializers.
        axis_name: Named axis to average statistics over (``vmap``/``shard_map``).
        axis_index_groups: Sub-groups of ``axis_name``.
        use_fast_variance: One-pass variance.
        rngs: RNG streams (``bias_init``/``scale_init`` draw from ``params``).

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> bn = ramie.BatchNorm(4, momentum=0.9, rngs=ramie.Rngs(0))
        >>> y = bn(jnp.arange(8.0).reshape(2, 4))
        >>> bn.mean.value
        Array([0.2, 0.3, 0.4, 0.5], dtype=float32)
        >>> bn.eval().use_running_average
        True
    """

    def __init__(
        self,
        num_features: int,
        *,
        use_running_average: bool = False,
        axis: int = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-5,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Callable[..., Any] = initializers.zeros_init(),
        scale_init: Callable[..., Any] = initializers.ones_init(),
        axis_name: str | None = None,
        axis_index_groups: Any = None,
        use_fast_variance: bool = True,
        promote_dtype: Callable[..., Any] = default_promote_dtype,
        rngs: Rngs,
        bias_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
        scale_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
    ):
        feature_shape = (num_features,)
        self.mean = BatchStat(jnp.zeros(feature_shape, jnp.float32))
        self.var = BatchStat(jnp.ones(feature_shape, jnp.float32))
        self.scale: Param | None
        self.bias: Param | None
        if use_scale:
            self.scale = Param(scale_init(rngs.params(), feature_shape, param_dtype), **scale_metadata)
        else:
            self.scale = None
        if use_bias:
            self.bias = Param(bias_init(rngs.params(), feature_shape, param_dtype), **bias_metadata)
        else:
            self.bias = None
        self.num_features = num_features
        self.use_running_average = use_running_average
        self.axis = axis
        self.momentum = momentum
        self.epsilon = epsilon
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.use_bias = use_bias
        self.use_scale = use_scale
        self.axis_name = axis_name
        self.axis_index_groups = axis_index_groups
        self.use_fast_variance = use_fast_variance
        self.promote_dtype = promote_dtype

    def __call__(
        self,
        x: jax.Array,
        use_running_average: bool | None = None,
        *,
        mask: jax.Array | None = None,
    ) -> jax.Array:
        """Normalise ``x``; in training also update the running statistics."""
        if use_running_average is None:
            use_running_average = self.use_running_average
        feature_axes = canonicalize_axes(x.ndim, self.axis)
        reduction_axes = tuple(i for i in range(x.ndim) if i not in feature_axes)
        if use_running_average:
            mean, var = self.mean._raw, self.var._raw
        else:
            mean, var = compute_stats(
                x,
                reduction_axes,
                dtype=self.dtype,
                axis_name=self.axis_name,
                axis_index_groups=self.axis_index_groups,
                use_fast_variance=self.use_fast_variance,
                mask=mask,
            )
            m = self.momentum
            self.mean.value = m * self.mean._raw + (1 - m) * mean
            self.var.value = m * self.var._raw + (1 - m) * var
        scale = self.scale._raw if self.scale is not None else None
        bias = self.bias._raw if self.bias is not None else None
        return normalize(
            x, mean, var, scale, bias, reduction_axes, feature_axes, self.dtype, self.epsilon
        )

    def set_view(self, use_running_average: bool | None = None, **kwargs: Any) -> dict[str, Any]:
        if use_running_average is not None:
            self.use_running_average = use_running_average
        return kwargs
