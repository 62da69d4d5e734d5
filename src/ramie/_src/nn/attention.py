"""Dot-product attention as functions, and the mask helpers that go with it.

Shapes follow Flax: queries are ``[batch..., q_length, num_heads, depth]``,
keys and values ``[batch..., kv_length, num_kv_heads, depth]`` and attention
weights ``[batch..., num_heads, q_length, kv_length]``. Masks are arrays
broadcastable to the weights, ``True`` (or non-zero) where attention is
allowed; :func:`make_attention_mask`, :func:`make_causal_mask` and
:func:`combine_masks` build them. When ``num_kv_heads`` divides ``num_heads``
each key/value head serves a group of query heads (grouped-query attention).
Without dropout and without sowing, :func:`dot_product_attention` runs
``jax.nn.dot_product_attention`` (compiled as one program), like Flax, so
results agree with it.
The :class:`~ramie.MultiHeadAttention` layer lives in ``multi_head_attention.py``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import random

from ramie._src.core.module import Module
from ramie._src.core.variables import Intermediate
from ramie._src.nn.dtypes import promote_dtype as default_promote_dtype

Array = jax.Array


def _check_qkv(api: str, *arrays: Array) -> None:
    names = "query, key, value" if len(arrays) == 3 else "query, key"
    shapes = ", ".join(str(tuple(a.shape)) for a in arrays)
    if any(a.ndim != arrays[0].ndim for a in arrays):
        raise ValueError(
            f"{api}: {names} must have the same rank, found shapes {shapes}.\n"
            "  Each is [batch..., length, heads, depth]; add missing batch axes, "
            "e.g. key[None]."
        )
    if any(a.shape[:-3] != arrays[0].shape[:-3] for a in arrays):
        raise ValueError(
            f"{api}: {names} must have the same batch dims (all axes but the "
            f"last three), found shapes {shapes}."
        )


@functools.partial(jax.jit, static_argnames=("is_causal",))
def _fused_attention(
    query: Array,
    key: Array,
    value: Array,
    bias: Array | None,
    mask: Array | None,
    is_causal: bool,
) -> Array:
    # One compiled program: outside jit, jax.nn's attention otherwise runs (and
    # is differentiated) op by op, which is several times slower.
    return jax.nn.dot_product_attention(
        query, key, value, bias, mask, is_causal=is_causal
    )


def _check_heads(api: str, q_heads: int, kv_heads: int, what: str) -> None:
    if q_heads % kv_heads:
        raise ValueError(
            f"{api}: the query has {q_heads} heads and the {what} {kv_heads}; for "
            f"grouped-query attention the query heads must be a multiple of the "
            f"{what} heads ({kv_heads} must divide {q_heads}).\n"
            "  E.g. MultiHeadAttention(num_heads=8, num_kv_heads=2, ...)"
        )


def dot_product_attention_weights(
    query: Array,
    key: Array,
    bias: Array | None = None,
    mask: Array | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: Array | None = None,
    dropout_rate: float = 0.0,
    deterministic: bool = False,
    dtype: Any = None,
    precision: Any = None,
    module: Module | None = None,
    promote_dtype: Callable[..., Any] = default_promote_dtype,
    is_causal: bool = False,
) -> Array:
    """Attention weights ``softmax(q k^T / sqrt(depth) + bias)``, masked, dropped out.

    Args:
        query: ``[batch..., q_length, num_heads, depth]``.
        key: ``[batch..., kv_length, num_kv_heads, depth]``; ``num_kv_heads``
            must divide ``num_heads``.
        bias: Added to the logits; broadcastable to
            ``[batch..., num_heads, q_length, kv_length]``.
        mask: Broadcastable to the weights; ``False``/0 entries are excluded.
        broadcast_dropout: Share one dropout mask across batch and heads.
        dropout_rng: Key for dropout (needed when it is active).
        dropout_rate: Probability of dropping a weight.
        deterministic: Disable dropout.
        dtype: Computation dtype (``None``: inferred from query and key).
        precision: Precision of the ``einsum``.
        module: If given, the weights are sown on it as the
            :class:`~ramie.Intermediate` ``attention_weights``.
        promote_dtype: Casts ``(query, key)`` to one dtype.
        is_causal: Also apply a causal (lower-triangular) mask.

    Returns:
        Weights of shape ``[batch..., num_heads, q_length, kv_length]``.

    Raises:
        ValueError: if the shapes of ``query`` and ``key`` do not fit together.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> q = jnp.ones((2, 3, 4, 8)); k = jnp.ones((2, 5, 4, 8))
        >>> w = ramie.dot_product_attention_weights(q, k)
        >>> w.shape, w.dtype
        ((2, 4, 3, 5), dtype('float32'))
    """
    api = "dot_product_attention_weights"
    query, key = promote_dtype((query, key), dtype=dtype)
    dtype = query.dtype
    _check_qkv(api, query, key)
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"{api}: query and key depths must match, found {query.shape[-1]} "
            f"and {key.shape[-1]} (shapes {tuple(query.shape)}, {tuple(key.shape)})."
        )
    q_heads, kv_heads = query.shape[-2], key.shape[-2]
    grouped = q_heads != kv_heads
    query = query / jnp.sqrt(query.shape[-1]).astype(dtype)
    if grouped:
        _check_heads(api, q_heads, kv_heads, "key")
        # Split query heads into (kv_heads, group) so each key head meets its group.
        group = q_heads // kv_heads
        query = jnp.reshape(
            query, (*query.shape[:-2], kv_heads, group, query.shape[-1])
        )
        logits = jnp.einsum("...qhgd,...khd->...hgqk", query, key, precision=precision)
        logits = jnp.reshape(logits, (*logits.shape[:-4], q_heads, *logits.shape[-2:]))
    else:
        logits = jnp.einsum("...qhd,...khd->...hqk", query, key, precision=precision)
    if bias is not None:
        logits = logits + bias
    if mask is not None or is_causal:
        masks = [] if mask is None else [mask]
        if is_causal:
            causal = jnp.tril(jnp.ones(logits.shape[-2:], dtype))
            masks.append(
                jnp.broadcast_to(causal, logits.shape if mask is None else mask.shape)
            )
        combined = combine_masks(*masks, dtype=dtype)
        logits = jnp.where(combined, logits, jnp.finfo(dtype).min)
    weights = jax.nn.softmax(logits).astype(dtype)
    if module is not None:
        module.sow(Intermediate, "attention_weights", weights)
    if not deterministic and dropout_rate > 0.0:
        if dropout_rng is None:
            raise ValueError(
                f"{api}: dropout_rate={dropout_rate} and deterministic=False, but no "
                "dropout_rng was given.\n"
                "  Pass one (dropout_rng=jax.random.key(0)) or deterministic=True."
            )
        keep_prob = 1.0 - dropout_rate
        if broadcast_dropout:  # one mask shared by every batch entry and head
            shape = (1,) * (key.ndim - 2) + weights.shape[-2:]
        else:
            shape = weights.shape
        keep = random.bernoulli(dropout_rng, keep_prob, shape)
        weights = weights * (keep.astype(dtype) / jnp.asarray(keep_prob, dtype=dtype))
    return weights


def dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    bias: Array | None = None,
    mask: Array | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: Array | None = None,
    dropout_rate: float = 0.0,
    deterministic: bool = False,
    dtype: Any = None,
    precision: Any = None,
    module: Module | None = None,
    promote_dtype: Callable[..., Any] = default_promote_dtype,
    is_causal: bool = False,
) -> Array:
    """Scaled dot-product attention (Vaswani et al., 2017): weights times values.

    Computes :math:`\\mathrm{softmax}(q k^\\top / \\sqrt{d} + bias)\\, v` per head,
    with masking and dropout as in :func:`dot_product_attention_weights`. The
    inputs need no batch axes. Without dropout (``dropout_rate=0``) and without
    ``module``, the fused ``jax.nn.dot_product_attention`` is used.

    Args:
        query: ``[batch..., q_length, num_heads, depth]``.
        key: ``[batch..., kv_length, num_kv_heads, depth]``.
        value: ``[batch..., kv_length, num_kv_heads, v_depth]``.
        bias: Added to the logits; broadcastable to
            ``[batch..., num_heads, q_length, kv_length]``.
        mask: Broadcastable to the weights; ``False``/0 entries are excluded.
        broadcast_dropout: Share one dropout mask across batch and heads.
        dropout_rng: Key for dropout (needed when it is active).
        dropout_rate: Probability of dropping a weight.
        deterministic: Disable dropout.
        dtype: Computation dtype (``None``: inferred from the inputs).
        precision: Precision of the ``einsum`` calls.
        module: If given, the weights are sown on it as ``attention_weights``.
        promote_dtype: Casts ``(query, key, value)`` to one dtype.
        is_causal: Also apply a causal (lower-triangular) mask.

    Returns:
        ``[batch..., q_length, num_heads, v_depth]``.

    Raises:
        ValueError: if the shapes of the inputs do not fit together.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> q = jnp.linspace(-1, 1, 2 * 3 * 4 * 8).reshape(2, 3, 4, 8)
        >>> kv = jnp.cos(jnp.arange(2 * 5 * 2 * 8.0)).reshape(2, 5, 2, 8)  # 2 kv heads
        >>> out = ramie.dot_product_attention(q, kv, kv)
        >>> out.shape, out.dtype
        ((2, 3, 4, 8), dtype('float32'))
    """
    api = "dot_product_attention"
    query, key, value = promote_dtype((query, key, value), dtype=dtype)
    dtype = query.dtype
    _check_qkv(api, query, key, value)
    if key.shape[-3] != value.shape[-3]:
        raise ValueError(
            f"{api}: key and value lengths must match, found {key.shape[-3]} and "
            f"{value.shape[-3]} (shapes {tuple(key.shape)}, {tuple(value.shape)})."
        )
    _check_heads(api, query.shape[-2], key.shape[-2], "key")
    _check_heads(api, query.shape[-2], value.shape[-2], "value")
    if dropout_rate == 0.0 and module is None:
        # jax.nn takes [batch, length, heads, depth]: fold extra batch axes into one.
        shape = query.shape
        if len(shape) > 4:

            def fold(x: Array) -> Array:
                return jnp.reshape(x, (math.prod(x.shape[:-3]), *x.shape[-3:]))

            query, key, value, bias, mask = jax.tree.map(
                fold, (query, key, value, bias, mask)
            )
        if mask is not None:
            mask = mask.astype(jnp.bool_)
        if query.dtype == jnp.float16:
            # jax.nn asks for an F16_F16_F32 dot algorithm and falls back to the
            # default when the backend refuses it, which it can only notice when
            # the einsum runs op by op (on CPU the refusal comes at compile time).
            out = jax.nn.dot_product_attention(
                query, key, value, bias, mask, is_causal=is_causal
            )
        else:
            out = _fused_attention(query, key, value, bias, mask, is_causal=is_causal)
        return jnp.reshape(out, shape) if len(shape) > 4 else out
    weights = dot_product_attention_weights(
        query, key, bias, mask, broadcast_dropout, dropout_rng, dropout_rate,
        deterministic, dtype, precision, module, promote_dtype, is_causal,
    )  # fmt: skip
    q_heads, v_heads = weights.shape[-3], value.shape[-2]
    if q_heads == v_heads:
        return jnp.einsum("...hqk,...khd->...qhd", weights, value, precision=precision)
    _check_heads(api, q_heads, v_heads, "value")
    group = q_heads // v_heads
    weights = jnp.reshape(
        weights, (*weights.shape[:-3], v_heads, group, *weights.shape[-2:])
    )
    out = jnp.einsum("...hgqk,...khd->...qhgd", weights, value, precision=precision)
    return jnp.reshape(out, (*out.shape[:-3], q_heads, out.shape[-1]))


def make_attention_mask(
    query_input: Array,
    key_input: Array,
    pairwise_fn: Callable[..., Any] = jnp.multiply,
    extra_batch_dims: int = 0,
    dtype: Any = jnp.float32,
) -> Array:
    """A ``[batch..., 1, q_length, kv_length]`` mask from per-token query/key values.

    ``mask[..., 0, i, j] = pairwise_fn(query_input[..., i], key_input[..., j])``;
    with 0/1 padding indicators and the default ``multiply``, a position pair
    is allowed when both tokens are real.

    Args:
        query_input: ``[batch..., q_length]``.
        key_input: ``[batch..., kv_length]``.
        pairwise_fn: Broadcasting elementwise function of the two.
        extra_batch_dims: Number of leading singleton axes to add.
        dtype: Dtype of the mask.

    Returns:
        The mask, with a singleton heads axis.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> tokens = jnp.array([[5, 7, 0]])  # 0 is padding
        >>> mask = ramie.make_attention_mask(tokens > 0, tokens > 0)
        >>> mask.shape, mask[0, 0].tolist()
        ((1, 1, 3, 3), [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    """
    mask = pairwise_fn(jnp.expand_dims(query_input, -1), jnp.expand_dims(key_input, -2))
    mask = jnp.expand_dims(mask, -3)
    mask = jnp.expand_dims(mask, tuple(range(extra_batch_dims)))
    return mask.astype(dtype)


def make_causal_mask(
    x: Array, extra_batch_dims: int = 0, dtype: Any = jnp.float32
) -> Array:
    """A ``[batch..., 1, length, length]`` mask letting position ``i`` see ``j <= i``.

    Args:
        x: ``[batch..., length]`` (only its shape is used).
        extra_batch_dims: Number of leading singleton axes to add.
        dtype: Dtype of the mask.

    Returns:
        The lower-triangular mask, with a singleton heads axis.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> mask = ramie.make_causal_mask(jnp.ones((2, 3)))
        >>> mask.shape, mask[0, 0].tolist()
        ((2, 1, 3, 3), [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    """
    positions = jnp.broadcast_to(jnp.arange(x.shape[-1], dtype=jnp.int32), x.shape)
    return make_attention_mask(
        positions,
        positions,
        jnp.greater_equal,
        extra_batch_dims=extra_batch_dims,
        dtype=dtype,
    )


def combine_masks(*masks: Array | None, dtype: Any = jnp.float32) -> Array | None:
    """The logical AND of the given masks (``None`` entries are skipped).

    Args:
        *masks: Masks of equal rank, broadcastable to each other, or ``None``.
        dtype: Dtype of the result.

    Returns:
        The combined mask, or ``None`` if every mask is ``None``.

    Raises:
        ValueError: if the masks differ in rank.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> causal = ramie.make_causal_mask(jnp.ones((1, 3)))
        >>> real = jnp.array([[1, 1, 0]])
        >>> padding = ramie.make_attention_mask(jnp.ones((1, 3)), real)
        >>> ramie.combine_masks(causal, None, padding)[0, 0].tolist()
        [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]
    """
    present = [m for m in masks if m is not None]
    if not present:
        return None
    if any(m.ndim != present[0].ndim for m in present):
        ranks = tuple(m.ndim for m in present)
        raise ValueError(
            f"combine_masks: masks must have the same rank, found ranks {ranks}.\n"
            "  Add singleton axes first, e.g. mask[None, None] for a "
            "[q_length, kv_length] mask."
        )
    combined = present[0]
    for m in present[1:]:
        combined = jnp.logical_and(combined, m)
    return combined.astype(dtype)
