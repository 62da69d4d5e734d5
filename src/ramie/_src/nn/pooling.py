"""Pooling: reduce each window of a channels-last array to one value.

Inputs are ``(*batch, *spatial, features)``; ``window_shape`` and ``strides``
have one entry per spatial dimension, so the features axis and any batch axes
(there may be none) are never pooled over. :func:`pool` is the general
reduction (``lax.reduce_window``); :func:`avg_pool`, :func:`max_pool` and
:func:`min_pool` are the usual cases, with the semantics of Flax Linen's
functions of the same names, which Flax NNX re-exports. Padding is ``'VALID'``
(the default: only full windows), ``'SAME'``, or ``(low, high)`` pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

PoolPadding = str | Sequence[tuple[int, int]]


def _spatial(
    inputs: jax.Array,
    window_shape: Sequence[int],
    strides: Sequence[int] | None,
    padding: PoolPadding,
    api: str,
) -> tuple[int, tuple[int, ...], tuple[int, ...], str | tuple[tuple[int, int], ...]]:
    """Validate the arguments; return (batch axes, window, strides, padding)."""
    try:
        window = tuple(int(w) for w in window_shape)
    except TypeError:
        raise TypeError(
            f"{api}(window_shape={window_shape!r}): expected a sequence of ints, one "
            "per spatial dimension, e.g. window_shape=(2, 2)."
        ) from None
    rank = len(window)
    stride = (1,) * rank if strides is None else tuple(int(s) for s in strides)
    if len(stride) != rank:
        raise ValueError(
            f"{api}: strides={tuple(stride)} must have one entry per window dimension, "
            f"like window_shape={window} ({rank}).\n  Pass e.g. strides={(2,) * rank}."
        )
    n_batch = jnp.ndim(inputs) - rank - 1
    if n_batch < 0:
        raise ValueError(
            f"{api}: inputs of shape {jnp.shape(inputs)} are too small for "
            f"window_shape={window}; expected (*batch, {rank} spatial, features), at "
            f"least {rank + 1} dimensions.\n  Add a features axis with x[..., None]."
        )
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in ("SAME", "VALID"):
            raise ValueError(
                f"{api}(padding={padding!r}): expected 'SAME', 'VALID' or {rank} "
                "(low, high) pairs."
            )
        return n_batch, window, stride, mode
    try:
        pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
    except (TypeError, ValueError):
        pairs = ()
    if len(pairs) != rank:
        raise ValueError(
            f"{api}(padding={padding!r}): expected 'SAME', 'VALID' or {rank} "
            f"(low, high) pairs, one per window dimension, e.g. "
            f"padding={((1, 1),) * rank}."
        )
    return n_batch, window, stride, pairs


def _reduce(
    inputs: jax.Array,
    init: Any,
    reduce_fn: Callable[[Any, Any], Any],
    n_batch: int,
    window: tuple[int, ...],
    stride: tuple[int, ...],
    padding: str | tuple[tuple[int, int], ...],
) -> jax.Array:
    ones = (1,) * n_batch
    if not isinstance(padding, str):
        padding = ((0, 0),) * n_batch + padding + ((0, 0),)
    return lax.reduce_window(
        inputs, init, reduce_fn, (*ones, *window, 1), (*ones, *stride, 1), padding
    )


def pool(
    inputs: jax.Array,
    init: Any,
    reduce_fn: Callable[[Any, Any], Any],
    window_shape: Sequence[int],
    strides: Sequence[int] | None,
    padding: PoolPadding,
) -> jax.Array:
    """Reduce every window of ``inputs`` with ``reduce_fn``, starting from ``init``.

    Note that a differentiable ``reduce_fn`` does not make the pooling
    differentiable in general; ``lax.add``, ``lax.max`` and ``lax.min`` with
    their identity as ``init`` are.

    Args:
        inputs: Array of shape ``(*batch, *spatial, features)``; zero or more
            batch axes.
        init: The initial value of each reduction (the identity of ``reduce_fn``).
        reduce_fn: A binary function ``(T, T) -> T`` such as ``lax.add``.
        window_shape: Window size, one int per spatial dimension.
        strides: Step between windows, one int per spatial dimension
            (None: 1 everywhere).
        padding: ``'SAME'``, ``'VALID'`` or one ``(low, high)`` pair per spatial
            dimension; padded positions hold ``init``.

    Returns:
        ``(*batch, *pooled_spatial, features)``.

    Raises:
        ValueError: if ``strides`` or ``padding`` do not match ``window_shape``,
            or ``inputs`` has fewer than ``len(window_shape) + 1`` axes.
        TypeError: if ``window_shape`` is not a sequence of ints.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> from jax import lax
        >>> x = jnp.ones((2, 6, 6, 3))
        >>> ramie.pool(x, 0.0, lax.add, (2, 2), (2, 2), "VALID").shape
        (2, 3, 3, 3)
    """
    n_batch, window, stride, pad = _spatial(
        inputs, window_shape, strides, padding, "ramie.pool"
    )
    return _reduce(inputs, init, reduce_fn, n_batch, window, stride, pad)


def avg_pool(
    inputs: jax.Array,
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: PoolPadding = "VALID",
    count_include_pad: bool = True,
) -> jax.Array:
    """Average over each window.

    Args:
        inputs: Array of shape ``(*batch, *spatial, features)``.
        window_shape: Window size, one int per spatial dimension.
        strides: Step between windows (None: 1 everywhere).
        padding: ``'SAME'``, ``'VALID'`` or ``(low, high)`` pairs.
        count_include_pad: Divide by the full window size, counting padded
            zeros (True), or only by the number of real inputs in the window.

    Returns:
        The window means, ``(*batch, *pooled_spatial, features)``.

    Raises:
        ValueError: as :func:`pool`.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> x = jnp.ones((4, 4, 1))  # no batch axis
        >>> y = ramie.avg_pool(x, (3, 3), padding="SAME", count_include_pad=False)
        >>> y.shape, bool((y == 1).all())
        ((4, 4, 1), True)
    """
    api = "ramie.avg_pool"
    n_batch, window, stride, pad = _spatial(inputs, window_shape, strides, padding, api)
    total = _reduce(inputs, 0.0, lax.add, n_batch, window, stride, pad)
    if count_include_pad:
        return total / math.prod(window)
    # count the real (unpadded) inputs of every window once, on one channel; the
    # counts are in the default float dtype, like Linen's, so bfloat16 inputs
    # give the same (float32) result
    spatial = jnp.shape(inputs)[n_batch:-1]
    ones = jnp.ones((1,) * n_batch + spatial + (1,))
    counts = _reduce(ones, 0.0, lax.add, n_batch, window, stride, pad)
    return total / counts


def _extreme(dtype: Any, largest: bool) -> Any:
    """The identity of max (``largest=False``) or min (``largest=True``) for
    ``dtype``.
    """
    if jnp.issubdtype(dtype, jnp.inexact):
        return jnp.inf if largest else -jnp.inf
    if jnp.issubdtype(dtype, jnp.bool_):
        return largest
    info = jnp.iinfo(dtype)
    return jnp.array(info.max if largest else info.min, dtype)


def max_pool(
    inputs: jax.Array,
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: PoolPadding = "VALID",
) -> jax.Array:
    """Maximum over each window (padded positions never win).

    Args:
        inputs: Array of shape ``(*batch, *spatial, features)``.
        window_shape: Window size, one int per spatial dimension.
        strides: Step between windows (None: 1 everywhere).
        padding: ``'SAME'``, ``'VALID'`` or ``(low, high)`` pairs.

    Returns:
        The window maxima, ``(*batch, *pooled_spatial, features)``.

    Raises:
        ValueError: as :func:`pool`.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> x = jnp.ones((2, 8, 3))
        >>> ramie.max_pool(x, (2,), strides=(2,)).shape
        (2, 4, 3)
    """
    api = "ramie.max_pool"
    n_batch, window, stride, pad = _spatial(inputs, window_shape, strides, padding, api)
    init = _extreme(jnp.result_type(inputs), largest=False)
    return _reduce(inputs, init, lax.max, n_batch, window, stride, pad)


def min_pool(
    inputs: jax.Array,
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: PoolPadding = "VALID",
) -> jax.Array:
    """Minimum over each window (padded positions never win).

    Args:
        inputs: Array of shape ``(*batch, *spatial, features)``.
        window_shape: Window size, one int per spatial dimension.
        strides: Step between windows (None: 1 everywhere).
        padding: ``'SAME'``, ``'VALID'`` or ``(low, high)`` pairs.

    Returns:
        The window minima, ``(*batch, *pooled_spatial, features)``.

    Raises:
        ValueError: as :func:`pool`.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> x = jnp.ones((1, 5, 5, 2))
        >>> ramie.min_pool(x, (3, 3), strides=(2, 2), padding="SAME").shape
        (1, 3, 3, 2)
    """
    api = "ramie.min_pool"
    n_batch, window, stride, pad = _spatial(inputs, window_shape, strides, padding, api)
    init = _extreme(jnp.result_type(inputs), largest=True)
    return _reduce(inputs, init, lax.min, n_batch, window, stride, pad)
