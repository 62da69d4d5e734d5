"""Normalization layers: BatchNorm, LayerNorm and RMSNorm, plus the shared helpers.

Each layer computes a mean and variance of its input over *reduction axes*,
rescales the input to zero mean and unit variance, and then applies a learned
``scale`` and ``bias`` that hold one value per *feature*. The layers differ
only in which axes they reduce: the batch (BatchNorm), the features of each
example (LayerNorm, RMSNorm), groups of channels (GroupNorm) or the spatial
axes of each channel (InstanceNorm). Statistics are computed in at least
float32 so half-precision inputs stay stable; with ``use_fast_variance`` the
variance is the one-pass ``E[x^2] - E[x]^2``, clipped at zero. BatchNorm keeps
running averages in ``mean`` and ``var`` (:class:`~ramie.BatchStat`) and uses
them when ``use_running_average`` is true (``model.eval()``). GroupNorm and
InstanceNorm live in ``group_norm.py`` and reuse :func:`compute_stats` and
:func:`normalize` from here.
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
from ramie._src.nn.checks import check_features
from ramie._src.nn.dtypes import canonicalize_dtype
from ramie._src.nn.dtypes import promote_dtype as default_promote_dtype

Axes = int | Sequence[int]
default_bias_init = initializers.zeros_init()
default_scale_init = initializers.ones_init()


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
        stacked = lax.pmean(
            jnp.stack(out), axis_name, axis_index_groups=axis_index_groups
        )
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
        >>> bn.eval()
        >>> bn.use_running_average
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
        bias_init: Callable[..., Any] = default_bias_init,
        scale_init: Callable[..., Any] = default_scale_init,
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
            self.scale = Param(
                scale_init(rngs.params(), feature_shape, param_dtype), **scale_metadata
            )
        else:
            self.scale = None
        if use_bias:
            self.bias = Param(
                bias_init(rngs.params(), feature_shape, param_dtype), **bias_metadata
            )
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
        check_features(self, x, feature_axes, self.num_features)
        reduction_axes = tuple(i for i in range(x.ndim) if i not in feature_axes)
        scale = self.scale._raw if self.scale is not None else None
        bias = self.bias._raw if self.bias is not None else None
        # Inputs, statistics and parameters share one dtype, as in Flax.
        x, mean, var, scale, bias = self.promote_dtype(
            (x, self.mean._raw, self.var._raw, scale, bias), dtype=self.dtype
        )
        if not use_running_average:
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
            new_mean = m * self.mean._raw + (1 - m) * mean
            new_var = m * self.var._raw + (1 - m) * var
            if _in_cell(self.mean) or _in_cell(self.var):
                # a jax.Ref cell takes no differentiated value (plain jax.grad
                # over hijax/ref Variables); the statistics need no gradient
                new_mean = jax.lax.stop_gradient(new_mean)
                new_var = jax.lax.stop_gradient(new_var)
            self.mean.value = new_mean
            self.var.value = new_var
        return normalize(
            x,
            mean,
            var,
            scale,
            bias,
            reduction_axes,
            feature_axes,
            self.dtype,
            self.epsilon,
        )

    def set_view(
        self, use_running_average: bool | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Switch the statistics source (used by ``ramie.view``).

        Args:
            use_running_average: If True, normalize with the stored running
                statistics instead of the statistics of the batch.
            **kwargs: Options for other layers, returned unused.

        Returns:
            The keyword arguments this layer did not use.
        """
        if use_running_average is not None:
            self.use_running_average = use_running_average
        return kwargs


def create_scale_and_bias(
    layer: Module,
    num_features: int,
    rngs: Rngs,
    param_dtype: Any,
    use_scale: bool,
    scale_init: Callable[..., Any],
    scale_metadata: Mapping[str, Any],
    use_bias: bool | None = None,
    bias_init: Callable[..., Any] | None = None,
    bias_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
) -> None:
    """Create ``layer.scale`` then ``layer.bias`` (one key each, Flax's order)."""
    shape = (num_features,)
    layer.scale = (
        Param(scale_init(rngs.params(), shape, param_dtype), **scale_metadata)
        if use_scale
        else None
    )
    if use_bias is None:  # RMSNorm has no bias attribute at all
        return
    assert bias_init is not None
    layer.bias = (
        Param(bias_init(rngs.params(), shape, param_dtype), **bias_metadata)
        if use_bias
        else None
    )


def raw_or_none(var: Param | None) -> jax.Array | None:
    return None if var is None else var._raw


class LayerNorm(Module):
    """Layer normalization (Ba et al., 2016, https://arxiv.org/abs/1607.06450).

    Each example is normalised on its own over ``reduction_axes`` (by default
    the last axis), then scaled and shifted per feature:
    :math:`y = (x - \\mu) / \\sqrt{\\sigma^2 + \\epsilon} \\cdot scale + bias`.

    Args:
        num_features: Number of features (size of ``feature_axes``).
        epsilon: Added to the variance before the square root.
        dtype: Computation and output dtype (``None``: inferred).
        param_dtype: Dtype of ``scale`` and ``bias``.
        use_bias: Learn a ``bias`` (``None`` attribute otherwise).
        use_scale: Learn a ``scale`` (``None`` attribute otherwise).
        bias_init: Initializer of ``bias`` (zeros).
        scale_init: Initializer of ``scale`` (ones).
        reduction_axes: Axes the statistics are computed over.
        feature_axes: Axes that ``scale`` and ``bias`` are broadcast along.
        axis_name: Named axis (``vmap``/``shard_map``) to average statistics over.
        axis_index_groups: Sub-groups of ``axis_name``.
        use_fast_variance: One-pass variance ``E[x^2] - E[x]^2``.
        promote_dtype: Casts ``(x, scale, bias)`` to one dtype before computing.
        rngs: RNG streams; ``scale`` then ``bias`` draw from ``params``.
        bias_metadata: Extra metadata of the ``bias`` Param.
        scale_metadata: Extra metadata of the ``scale`` Param.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> layer = ramie.LayerNorm(6, rngs=ramie.Rngs(0))
        >>> layer.scale.shape, layer.bias.shape
        ((6,), (6,))
        >>> y = layer(jnp.arange(18.0).reshape(3, 6))
        >>> y.shape, y.dtype
        ((3, 6), dtype('float32'))
    """

    def __init__(
        self,
        num_features: int,
        *,
        epsilon: float = 1e-6,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Callable[..., Any] = default_bias_init,
        scale_init: Callable[..., Any] = default_scale_init,
        reduction_axes: Axes = -1,
        feature_axes: Axes = -1,
        axis_name: str | None = None,
        axis_index_groups: Any = None,
        use_fast_variance: bool = True,
        promote_dtype: Callable[..., Any] = default_promote_dtype,
        rngs: Rngs,
        bias_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
        scale_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
    ):
        self.scale: Param | None
        self.bias: Param | None
        create_scale_and_bias(
            self, num_features, rngs, param_dtype,
            use_scale, scale_init, scale_metadata, use_bias, bias_init, bias_metadata,
        )  # fmt: skip
        self.num_features = num_features
        self.epsilon = epsilon
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.use_bias = use_bias
        self.use_scale = use_scale
        self.reduction_axes = reduction_axes
        self.feature_axes = feature_axes
        self.axis_name = axis_name
        self.axis_index_groups = axis_index_groups
        self.use_fast_variance = use_fast_variance
        self.promote_dtype = promote_dtype

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        """Normalise ``x``; ``mask`` (broadcastable to ``x``) selects the entries
        that count towards the statistics. Returns an array shaped like ``x``."""
        if self.scale is not None or self.bias is not None:
            check_features(self, x, self.feature_axes, self.num_features)
        x, scale, bias = self.promote_dtype(
            (x, raw_or_none(self.scale), raw_or_none(self.bias)), dtype=self.dtype
        )
        mean, var = compute_stats(
            x,
            self.reduction_axes,
            self.dtype,
            self.axis_name,
            self.axis_index_groups,
            use_fast_variance=self.use_fast_variance,
            mask=mask,
        )
        return normalize(
            x,
            mean,
            var,
            scale,
            bias,
            self.reduction_axes,
            self.feature_axes,
            self.dtype,
            self.epsilon,
        )


class RMSNorm(Module):
    """Root-mean-square normalization (Zhang & Sennrich, 2019, arXiv:1910.07467).

    Like :class:`LayerNorm` without re-centring: the input is divided by its
    root mean square over ``reduction_axes`` and multiplied by ``scale``,
    :math:`y = x / \\sqrt{\\mathrm{mean}(x^2) + \\epsilon} \\cdot scale`. There is
    no bias.

    Args:
        num_features: Number of features (size of ``feature_axes``).
        epsilon: Added to the mean square before the square root.
        dtype: Computation and output dtype (``None``: inferred).
        param_dtype: Dtype of ``scale``.
        use_scale: Learn a ``scale`` (``None`` attribute otherwise).
        scale_init: Initializer of ``scale`` (ones).
        reduction_axes: Axes the mean square is computed over.
        feature_axes: Axes that ``scale`` is broadcast along.
        axis_name: Named axis (``vmap``/``shard_map``) to average statistics over.
        axis_index_groups: Sub-groups of ``axis_name``.
        use_fast_variance: Accepted for symmetry with LayerNorm (no effect: no
            mean is subtracted).
        promote_dtype: Casts ``(x, scale)`` to one dtype before computing.
        rngs: RNG streams; ``scale`` draws from ``params``.
        scale_metadata: Extra metadata of the ``scale`` Param.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> layer = ramie.RMSNorm(6, rngs=ramie.Rngs(0))
        >>> sorted(ramie.state(layer).to_pure_dict())
        ['scale']
        >>> y = layer(jnp.arange(60.0).reshape(2, 5, 6))
        >>> y.shape, y.dtype
        ((2, 5, 6), dtype('float32'))
    """

    def __init__(
        self,
        num_features: int,
        *,
        epsilon: float = 1e-6,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        use_scale: bool = True,
        scale_init: Callable[..., Any] = initializers.ones,
        reduction_axes: Axes = -1,
        feature_axes: Axes = -1,
        axis_name: str | None = None,
        axis_index_groups: Any = None,
        use_fast_variance: bool = True,
        promote_dtype: Callable[..., Any] = default_promote_dtype,
        rngs: Rngs,
        scale_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
    ):
        self.scale: Param | None
        create_scale_and_bias(
            self, num_features, rngs, param_dtype, use_scale, scale_init, scale_metadata
        )
        self.num_features = num_features
        self.epsilon = epsilon
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.use_scale = use_scale
        self.reduction_axes = reduction_axes
        self.feature_axes = feature_axes
        self.axis_name = axis_name
        self.axis_index_groups = axis_index_groups
        self.use_fast_variance = use_fast_variance
        self.promote_dtype = promote_dtype

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Normalise ``x`` by its root mean square; returns ``x``'s shape."""
        if self.scale is not None:
            check_features(self, x, self.feature_axes, self.num_features)
        x, scale = self.promote_dtype((x, raw_or_none(self.scale)), dtype=self.dtype)
        mean, var = compute_stats(
            x,
            self.reduction_axes,
            self.dtype,
            self.axis_name,
            self.axis_index_groups,
            use_mean=False,
            use_fast_variance=self.use_fast_variance,
            mask=mask,
        )
        return normalize(
            x,
            mean,
            var,
            scale,
            None,
            self.reduction_axes,
            self.feature_axes,
            self.dtype,
            self.epsilon,
        )


def _in_cell(var: Any) -> bool:
    """Whether ``var`` keeps its value in a ``jax.Ref`` (hijax/ref modes)."""
    return "hijax" in var._meta or "ref" in var._meta
