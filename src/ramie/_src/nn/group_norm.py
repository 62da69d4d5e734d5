"""GroupNorm and InstanceNorm: per-example normalization over groups of channels.

Both normalise every example on its own, like LayerNorm, but keep channels
apart: GroupNorm splits the channel axis into groups and computes one mean and
variance per group (over the group's channels and the spatial axes);
InstanceNorm is the extreme of one channel per group. Statistics and the final
scale-and-shift are :func:`~ramie._src.nn.normalization.compute_stats` and
:func:`~ramie._src.nn.normalization.normalize`, shared with the other layers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ramie._src.core.module import Module
from ramie._src.core.rngs import Rngs
from ramie._src.core.variables import Param
from ramie._src.nn import initializers
from ramie._src.nn.checks import check_features
from ramie._src.nn.dtypes import promote_dtype as default_promote_dtype
from ramie._src.nn.normalization import (
    Axes,
    canonicalize_axes,
    compute_stats,
    create_scale_and_bias,
    default_bias_init,
    default_scale_init,
    normalize,
    raw_or_none,
)


class GroupNorm(Module):
    """Group normalization (Wu & He, 2018, https://arxiv.org/abs/1803.08494).

    The channels (last axis) are split into ``num_groups`` groups of
    ``group_size`` channels; each example is normalised per group over the
    group's channels and all other non-batch axes. Give exactly one of
    ``num_groups`` and ``group_size`` (pass ``num_groups=None`` to use
    ``group_size``). ``num_groups=1`` is a LayerNorm over all non-batch axes;
    ``num_groups=num_features`` is an InstanceNorm.

    Args:
        num_features: Number of channels (last axis).
        num_groups: Number of groups (default 32, as in the paper).
        group_size: Channels per group, instead of ``num_groups``.
        epsilon: Added to the variance before the square root.
        dtype: Computation and output dtype (``None``: inferred).
        param_dtype: Dtype of ``scale`` and ``bias``.
        use_bias: Learn a ``bias`` (``None`` attribute otherwise).
        use_scale: Learn a ``scale`` (``None`` attribute otherwise).
        bias_init: Initializer of ``bias`` (zeros).
        scale_init: Initializer of ``scale`` (ones).
        reduction_axes: Axes to reduce, which must include the last axis.
            ``None``: every axis but the first (the batch axis). Give them
            explicitly for unbatched inputs.
        axis_name: Named axis (``vmap``/``shard_map``) to average statistics over.
        axis_index_groups: Sub-groups of ``axis_name``.
        use_fast_variance: One-pass variance ``E[x^2] - E[x]^2``.
        promote_dtype: Casts ``(x, scale, bias)`` to one dtype before computing.
        rngs: RNG streams; ``scale`` then ``bias`` draw from ``params``.
        bias_metadata: Extra metadata of the ``bias`` Param.
        scale_metadata: Extra metadata of the ``scale`` Param.

    Raises:
        ValueError: if both or neither of ``num_groups`` and ``group_size`` are
            given, or they do not divide ``num_features``.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> layer = ramie.GroupNorm(6, num_groups=3, rngs=ramie.Rngs(0))
        >>> layer.num_groups, layer.group_size
        (3, 2)
        >>> layer(jnp.ones((2, 4, 4, 6))).shape
        (2, 4, 4, 6)
    """

    def __init__(
        self,
        num_features: int,
        num_groups: int | None = 32,
        group_size: int | None = None,
        *,
        epsilon: float = 1e-6,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Callable[..., Any] = default_bias_init,
        scale_init: Callable[..., Any] = default_scale_init,
        reduction_axes: Axes | None = None,
        axis_name: str | None = None,
        axis_index_groups: Any = None,
        use_fast_variance: bool = True,
        promote_dtype: Callable[..., Any] = default_promote_dtype,
        rngs: Rngs,
        bias_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
        scale_metadata: Mapping[str, Any] = {},  # noqa: B006 - read only
    ):
        api = f"GroupNorm({num_features}, num_groups={num_groups}, "
        api += f"group_size={group_size})"
        if (num_groups is None) == (group_size is None):
            raise ValueError(
                f"{api}: give exactly one of num_groups and group_size.\n"
                "  num_groups defaults to 32; to set the group size instead, write\n"
                f"      GroupNorm({num_features}, num_groups=None, group_size=...)"
            )
        if group_size is not None:
            if group_size <= 0 or num_features % group_size:
                raise ValueError(
                    f"{api}: group_size must divide num_features; "
                    f"{num_features} % {group_size} != 0."
                )
            num_groups = num_features // group_size
        else:
            assert num_groups is not None
            if (
                not isinstance(num_groups, int)
                or num_groups <= 0
                or num_features % num_groups
            ):
                raise ValueError(
                    f"{api}: num_groups must be a positive int dividing num_features "
                    f"({num_features}); found {num_groups!r}.\n"
                    f"  E.g. GroupNorm({num_features}, num_groups=1) or a divisor of "
                    f"{num_features}."
                )
            group_size = num_features // num_groups
        self.feature_axis = -1
        self.num_groups = num_groups
        self.group_size = group_size
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
        self.axis_name = axis_name
        self.axis_index_groups = axis_index_groups
        self.use_fast_variance = use_fast_variance
        self.promote_dtype = promote_dtype

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        """Normalise ``x`` of shape ``(batch, ..., num_features)`` per group.

        ``mask`` (shaped like ``x``) selects the entries that count towards the
        statistics. Returns an array shaped like ``x``.
        """
        if x.shape[-1:] != (self.num_groups * self.group_size,):
            check_features(
                self, x, -1, self.num_groups * self.group_size, attr="num_features"
            )
        if self.reduction_axes is None:
            axes = canonicalize_axes(x.ndim, (*range(1, x.ndim - 1), -1))
        else:
            axes = canonicalize_axes(x.ndim, self.reduction_axes)
            if x.ndim - 1 not in axes:
                raise ValueError(
                    f"GroupNorm(reduction_axes={self.reduction_axes!r}): the "
                    "reduction axes must include the channel axis -1 "
                    f"(input rank {x.ndim}).\n"
                    f"  E.g. GroupNorm(..., reduction_axes={(*axes, -1)})"
                )
        group_shape = (*x.shape[:-1], self.num_groups, self.group_size)
        if mask is not None:
            mask = jnp.reshape(
                mask, (*mask.shape[:-1], self.num_groups, self.group_size)
            )
        x, scale, bias = self.promote_dtype(
            (x, raw_or_none(self.scale), raw_or_none(self.bias)), dtype=self.dtype
        )
        # Statistics over the non-channel reduction axes and the channels of a
        # group: the group axis is the last one left, so spread it back over
        # the channels along that axis.
        mean, var = compute_stats(
            jnp.reshape(x, group_shape),
            (*axes[:-1], x.ndim),
            self.dtype,
            self.axis_name,
            self.axis_index_groups,
            use_fast_variance=self.use_fast_variance,
            mask=mask,
        )
        mean = jnp.repeat(mean, self.group_size, axis=-1)
        var = jnp.repeat(var, self.group_size, axis=-1)
        return normalize(
            x,
            mean,
            var,
            scale,
            bias,
            axes[:-1],
            (self.feature_axis,),
            self.dtype,
            self.epsilon,
        )


class InstanceNorm(Module):
    """Instance normalization (Ulyanov et al., 2016, arXiv:1607.08022).

    Each channel of each example is normalised on its own over every axis that
    is neither the batch axis (the first) nor a feature axis. Equivalent to a
    LayerNorm over the spatial axes, or a GroupNorm with one channel per group.

    Args:
        num_features: Number of channels (size of ``feature_axes``).
        epsilon: Added to the variance before the square root.
        dtype: Computation and output dtype (``None``: inferred).
        param_dtype: Dtype of ``scale`` and ``bias``.
        use_bias: Learn a ``bias`` (``None`` attribute otherwise).
        use_scale: Learn a ``scale`` (``None`` attribute otherwise).
        bias_init: Initializer of ``bias`` (zeros).
        scale_init: Initializer of ``scale`` (ones).
        feature_axes: Channel axes (never the first axis, the batch axis).
        axis_name: Named axis (``vmap``/``shard_map``) to average statistics over.
        axis_index_groups: Sub-groups of ``axis_name``.
        use_fast_variance: One-pass variance ``E[x^2] - E[x]^2``.
        promote_dtype: Casts ``(x, scale, bias)`` to one dtype before computing.
        rngs: RNG streams; ``scale`` then ``bias`` draw from ``params``.
        bias_metadata: Extra metadata of the ``bias`` Param.
        scale_metadata: Extra metadata of the ``scale`` Param.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> layer = ramie.InstanceNorm(5, rngs=ramie.Rngs(0))
        >>> y = layer(jnp.sin(jnp.arange(120.0)).reshape(2, 3, 4, 5))
        >>> y.shape, y.dtype
        ((2, 3, 4, 5), dtype('float32'))
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
        bias_init: Callable[..., Any] = initializers.zeros,
        scale_init: Callable[..., Any] = initializers.ones,
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
        self.feature_axes = feature_axes
        self.axis_name = axis_name
        self.axis_index_groups = axis_index_groups
        self.use_fast_variance = use_fast_variance
        self.promote_dtype = promote_dtype

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        """Normalise each channel of each example of ``x``; returns ``x``'s shape.

        Raises:
            ValueError: if ``feature_axes`` includes the batch axis 0.
        """
        feature_axes = canonicalize_axes(x.ndim, self.feature_axes)
        if 0 in feature_axes:
            raise ValueError(
                f"InstanceNorm(feature_axes={self.feature_axes!r}): axis 0 is the "
                f"batch axis and cannot be a feature axis (input rank {x.ndim}).\n"
                "  Put the batch first, or add one: layer(x[None])[0]"
            )
        reduction_axes = tuple(i for i in range(1, x.ndim) if i not in feature_axes)
        x, scale, bias = self.promote_dtype(
            (x, raw_or_none(self.scale), raw_or_none(self.bias)), dtype=self.dtype
        )
        mean, var = compute_stats(
            x,
            reduction_axes,
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
            reduction_axes,
            feature_axes,
            self.dtype,
            self.epsilon,
        )
