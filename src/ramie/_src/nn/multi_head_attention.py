"""MultiHeadAttention: projections to heads, dot-product attention, projection back.

The layer holds four :class:`~ramie.LinearGeneral` sub-layers with Flax NNX's
names and shapes: ``query`` ``(in_features, num_heads, head_dim)``, ``key`` and
``value`` ``(in_kv_features, num_kv_heads, head_dim)`` and ``out``
``(num_heads, head_dim, out_features)``; with ``normalize_qk`` also the
LayerNorms ``query_ln``/``key_ln``. Parameters draw keys in Flax's order, so
the same seed gives the same weights.

For autoregressive decoding, :meth:`MultiHeadAttention.init_cache` creates the
:class:`~ramie.Cache` Variables ``cached_key``, ``cached_value`` and
``cache_index``; each call with ``decode=True`` then takes one token, writes
its key and value at ``cache_index`` and attends to every position written so
far - the same result as a full pass with a causal mask.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ramie._src.core.module import Module
from ramie._src.core.rngs import Rngs, RngStream
from ramie._src.core.variables import Cache
from ramie._src.nn import initializers
from ramie._src.nn.attention import combine_masks, dot_product_attention
from ramie._src.nn.checks import check_size
from ramie._src.nn.dtypes import promote_dtype as default_promote_dtype
from ramie._src.nn.linear import LinearGeneral, default_kernel_init
from ramie._src.nn.normalization import LayerNorm

Array = jax.Array
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class MultiHeadAttention(Module):
    """Multi-head dot-product attention (Vaswani et al., 2017).

    ``inputs_q`` is projected to ``num_heads`` query heads and ``inputs_k`` /
    ``inputs_v`` (default: ``inputs_q``) to ``num_kv_heads`` key and value
    heads of size ``head_dim = qkv_features // num_heads``; ``attention_fn``
    combines them and ``out`` projects the heads back to ``out_features``.
    ``num_kv_heads < num_heads`` gives grouped-query attention.

    Args:
        num_heads: Number of query heads; must divide ``qkv_features``.
        in_features: Size of the last axis of ``inputs_q``.
        qkv_features: Total size of the query/key/value projections
            (default ``in_features``).
        out_features: Size of the output's last axis (default ``in_features``).
        num_kv_heads: Number of key/value heads (default ``num_heads``); must
            divide ``num_heads``.
        in_kv_features: Size of the last axis of ``inputs_k``/``inputs_v``
            (default ``in_features``).
        dtype: Computation dtype (``None``: inferred).
        param_dtype: Dtype of the parameters.
        broadcast_dropout: Share one dropout mask across batch and heads.
        dropout_rate: Dropout on the attention weights.
        deterministic: Disable dropout (``eval()`` sets True, ``train()`` False).
        precision: Precision of the matmuls.
        kernel_init: Initializer of the projection kernels.
        out_kernel_init: Initializer of ``out.kernel`` (default ``kernel_init``).
        bias_init: Initializer of the projection biases.
        out_bias_init: Initializer of ``out.bias`` (default ``bias_init``).
        use_bias: Whether the projections have biases.
        attention_fn: ``dot_product_attention`` or a function with its signature.
        decode: Use the autoregressive cache (``None`` counts as False).
        normalize_qk: Apply LayerNorm to queries and keys (Dehghani et al., 2023).
        qkv_promote_dtype: ``promote_dtype`` of the query/key/value layers.
        out_promote_dtype: ``promote_dtype`` of the ``out`` layer.
        ln_promote_dtype: ``promote_dtype`` of ``query_ln``/``key_ln``.
        qkv_dot_general: ``dot_general`` of the query/key/value layers.
        out_dot_general: ``dot_general`` of the ``out`` layer.
        qkv_dot_general_cls: ``dot_general_cls`` of the query/key/value layers.
        out_dot_general_cls: ``dot_general_cls`` of the ``out`` layer.
        rngs: RNG streams: projections draw from ``params``; with dropout a
            stream forked from ``dropout`` is kept as ``self.rngs``.
        keep_rngs: Keep that dropout stream (otherwise pass ``rngs`` per call).
        kernel_metadata: Extra metadata of the projection kernels.
        out_kernel_metadata: Of ``out.kernel`` (default ``kernel_metadata``).
        bias_metadata: Extra metadata of the projection biases.
        out_bias_metadata: Of ``out.bias`` (default ``bias_metadata``).
        query_ln_scale_metadata: Of ``query_ln.scale``.
        key_ln_scale_metadata: Of ``key_ln.scale``.

    Raises:
        ValueError: if ``num_heads`` does not divide ``qkv_features`` or
            ``num_kv_heads`` does not divide ``num_heads``.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> mha = ramie.MultiHeadAttention(4, 16, qkv_features=32, rngs=ramie.Rngs(0))
        >>> mha.query.kernel.shape, mha.out.kernel.shape
        ((16, 4, 8), (4, 8, 16))
        >>> x = jnp.sin(jnp.arange(2 * 5 * 16.0)).reshape(2, 5, 16)
        >>> mha(x).shape
        (2, 5, 16)
        >>> mha(x, jnp.ones((2, 7, 16)), is_causal=False).shape  # cross-attention
        (2, 5, 16)
    """

    def __init__(
        self,
        num_heads: int,
        in_features: int,
        qkv_features: int | None = None,
        out_features: int | None = None,
        num_kv_heads: int | None = None,
        in_kv_features: int | None = None,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        broadcast_dropout: bool = True,
        dropout_rate: float = 0.0,
        deterministic: bool | None = None,
        precision: Any = None,
        kernel_init: Callable[..., Any] = default_kernel_init,
        out_kernel_init: Callable[..., Any] | None = None,
        bias_init: Callable[..., Any] = initializers.zeros,
        out_bias_init: Callable[..., Any] | None = None,
        use_bias: bool = True,
        attention_fn: Callable[..., Array] = dot_product_attention,
        decode: bool | None = None,
        normalize_qk: bool = False,
        qkv_promote_dtype: Callable[..., Any] = default_promote_dtype,
        out_promote_dtype: Callable[..., Any] = default_promote_dtype,
        ln_promote_dtype: Callable[..., Any] = default_promote_dtype,
        qkv_dot_general: Callable[..., Any] | None = None,
        out_dot_general: Callable[..., Any] | None = None,
        qkv_dot_general_cls: Any = None,
        out_dot_general_cls: Any = None,
        rngs: Rngs,
        keep_rngs: bool = True,
        kernel_metadata: Mapping[str, Any] = _EMPTY,
        out_kernel_metadata: Mapping[str, Any] = _EMPTY,
        bias_metadata: Mapping[str, Any] = _EMPTY,
        out_bias_metadata: Mapping[str, Any] = _EMPTY,
        query_ln_scale_metadata: Mapping[str, Any] = _EMPTY,
        key_ln_scale_metadata: Mapping[str, Any] = _EMPTY,
    ):
        self.num_heads = num_heads
        self.in_features = in_features
        self.qkv_features = in_features if qkv_features is None else qkv_features
        self.out_features = in_features if out_features is None else out_features
        self.in_kv_features = in_features if in_kv_features is None else in_kv_features
        self.num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if self.num_kv_heads <= 0 or num_heads % self.num_kv_heads:
            raise ValueError(
                f"MultiHeadAttention(num_heads={num_heads}, num_kv_heads="
                f"{self.num_kv_heads}): num_kv_heads must divide num_heads.\n"
                f"  E.g. num_kv_heads=1 (multi-query) or num_kv_heads={num_heads}."
            )
        if self.qkv_features % num_heads:
            hint = num_heads * max(1, self.qkv_features // num_heads)
            raise ValueError(
                f"MultiHeadAttention(num_heads={num_heads}, qkv_features="
                f"{self.qkv_features}): num_heads must divide qkv_features "
                "(each head gets qkv_features // num_heads features).\n"
                f"  E.g. qkv_features={hint}"
            )
        self.head_dim = self.qkv_features // num_heads
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.broadcast_dropout = broadcast_dropout
        self.dropout_rate = dropout_rate
        self.deterministic = deterministic
        self.precision = precision
        self.use_bias = use_bias
        self.attention_fn = attention_fn
        self.decode = decode
        self.normalize_qk = normalize_qk
        self.qkv_promote_dtype = qkv_promote_dtype
        self.out_promote_dtype = out_promote_dtype
        self.ln_promote_dtype = ln_promote_dtype
        self.qkv_dot_general = qkv_dot_general
        self.out_dot_general = out_dot_general
        self.qkv_dot_general_cls = qkv_dot_general_cls
        self.out_dot_general_cls = out_dot_general_cls

        # Key order (Flax's): query, key, value, [query_ln, key_ln], out.
        projection = functools.partial(
            LinearGeneral,
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=kernel_init,
            bias_init=bias_init,
            use_bias=use_bias,
            precision=precision,
            promote_dtype=qkv_promote_dtype,
            dot_general=qkv_dot_general,
            dot_general_cls=qkv_dot_general_cls,
            kernel_metadata=kernel_metadata,
            bias_metadata=bias_metadata,
            rngs=rngs,
        )
        self.query = projection(in_features, (num_heads, self.head_dim))
        self.key = projection(self.in_kv_features, (self.num_kv_heads, self.head_dim))
        self.value = projection(self.in_kv_features, (self.num_kv_heads, self.head_dim))
        self.query_ln: LayerNorm | None = None
        self.key_ln: LayerNorm | None = None
        if normalize_qk:
            layer_norm = functools.partial(
                LayerNorm,
                self.head_dim,
                use_bias=False,
                dtype=dtype,
                param_dtype=param_dtype,
                promote_dtype=ln_promote_dtype,
                rngs=rngs,
            )
            self.query_ln = layer_norm(scale_metadata=query_ln_scale_metadata)
            self.key_ln = layer_norm(scale_metadata=key_ln_scale_metadata)
        self.out = LinearGeneral(
            (num_heads, self.head_dim),
            self.out_features,
            axis=(-2, -1),
            kernel_init=out_kernel_init or kernel_init,
            bias_init=out_bias_init or bias_init,
            use_bias=use_bias,
            dtype=dtype,
            param_dtype=param_dtype,
            precision=precision,
            promote_dtype=out_promote_dtype,
            dot_general=out_dot_general,
            dot_general_cls=out_dot_general_cls,
            rngs=rngs,
            kernel_metadata=out_kernel_metadata or kernel_metadata,
            bias_metadata=out_bias_metadata or bias_metadata,
        )
        self.rngs: RngStream | None = (
            rngs.dropout.fork() if keep_rngs and dropout_rate > 0 else None
        )
        self.cached_key: Cache | None = None
        self.cached_value: Cache | None = None
        self.cache_index: Cache | None = None

    def __call__(
        self,
        inputs_q: Array,
        inputs_k: Array | None = None,
        inputs_v: Array | None = None,
        *,
        mask: Array | None = None,
        deterministic: bool | None = None,
        rngs: Rngs | RngStream | Array | None = None,
        sow_weights: bool = False,
        decode: bool | None = None,
        is_causal: bool = False,
        out_sharding: Any = None,
        qkv_sharding: Any = None,
    ) -> Array:
        """Attend from ``inputs_q`` to ``inputs_k``/``inputs_v``.

        Args:
            inputs_q: ``[batch..., q_length, in_features]``.
            inputs_k: ``[batch..., kv_length, in_kv_features]`` (default
                ``inputs_q``: self-attention).
            inputs_v: Like ``inputs_k`` (default ``inputs_k``).
            mask: Broadcastable to ``[batch..., num_heads, q_length,
                kv_length]``; ``False``/0 entries are not attended to.
            deterministic: Overrides ``self.deterministic`` for this call.
            rngs: Dropout key source for this call (Rngs, stream or key);
                default ``self.rngs``.
            sow_weights: Sow the attention weights as the Intermediate
                ``attention_weights``.
            decode: Overrides ``self.decode``: take one token and use the cache.
            is_causal: Apply a causal mask.
            out_sharding: Output sharding of the ``out`` projection.
            qkv_sharding: Output sharding of the query/key/value projections.

        Returns:
            ``[batch..., q_length, out_features]``.

        Raises:
            ValueError: on inputs of the wrong size, a missing or mis-shaped
                decode cache, or dropout without a deterministic flag or RNG.
        """
        if inputs_k is None:
            if inputs_v is not None:
                raise ValueError(
                    "MultiHeadAttention: inputs_v was given without inputs_k. For "
                    "the same keys and values pass only inputs_k:\n"
                    "      mha(inputs_q, inputs_kv)"
                )
            inputs_k = inputs_q
        if inputs_v is None:
            inputs_v = inputs_k
        check_size(self, inputs_q, -1, self.in_features, arg="inputs_q")
        if inputs_k is not inputs_q:
            for arg, x in (("inputs_k", inputs_k), ("inputs_v", inputs_v)):
                check_size(
                    self,
                    x,
                    -1,
                    self.in_kv_features,
                    arg=arg,
                    attr="in_kv_features",
                    fix=f"pass {arg} with {self.in_kv_features} features, or "
                    "build the layer with in_kv_features=<their size> (keys and "
                    "values may have another size than queries).",
                )
        query = self.query(inputs_q, out_sharding=qkv_sharding)
        key = self.key(inputs_k, out_sharding=qkv_sharding)
        value = self.value(inputs_v, out_sharding=qkv_sharding)
        if self.query_ln is not None and self.key_ln is not None:
            query = self.query_ln(query)
            key = self.key_ln(key)

        if decode is None:
            decode = bool(self.decode)
        if decode:
            key, value, mask = self._update_cache(key, value, mask)

        deterministic, dropout_rng = self._dropout_args(deterministic, rngs)
        x = self.attention_fn(
            query,
            key,
            value,
            mask=mask,
            dropout_rng=dropout_rng,
            dropout_rate=self.dropout_rate,
            broadcast_dropout=self.broadcast_dropout,
            deterministic=deterministic,
            dtype=self.dtype,
            precision=self.precision,
            module=self if sow_weights else None,
            is_causal=is_causal,
        )
        return self.out(x, out_sharding=out_sharding)

    def _update_cache(
        self, key: Array, value: Array, mask: Array | None
    ) -> tuple[Array, Array, Array | None]:
        """Write this step's key/value into the cache; return full cache and mask."""
        if (
            self.cached_key is None
            or self.cached_value is None
            or self.cache_index is None
        ):
            raise ValueError(
                "MultiHeadAttention: decode=True but the autoregressive cache is not "
                "initialized.\n"
                "  Create it first with the full-length input shape:\n"
                "      mha.init_cache((batch, max_length, in_features))"
            )
        *batch_dims, max_length, kv_heads, head_dim = self.cached_key.shape
        expected = (*batch_dims, 1, kv_heads, head_dim)
        if tuple(key.shape) != expected:
            raise ValueError(
                "MultiHeadAttention: with decode=True each call takes one token; "
                f"the cache {tuple(self.cached_key.shape)} expects keys of shape "
                f"{expected}, found {tuple(key.shape)}.\n"
                "  Feed one position at a time: mha(x[:, i : i + 1], decode=True)"
            )
        index = self.cache_index._raw
        zero = jnp.zeros((), dtype=index.dtype)
        start = (zero,) * len(batch_dims) + (index, zero, zero)
        cache_k, cache_v = self.cached_key._raw, self.cached_value._raw
        key = lax.dynamic_update_slice(cache_k, key.astype(cache_k.dtype), start)
        value = lax.dynamic_update_slice(cache_v, value.astype(cache_v.dtype), start)
        self.cached_key.value = key
        self.cached_value.value = value
        self.cache_index.value = index + 1
        # The single query may attend to the positions written so far only.
        visible = jnp.broadcast_to(
            jnp.arange(max_length) <= index, (*batch_dims, 1, 1, max_length)
        )
        return key, value, combine_masks(mask, visible)

    def _dropout_args(
        self, deterministic: bool | None, rngs: Rngs | RngStream | Array | None
    ) -> tuple[bool, Array | None]:
        if self.dropout_rate <= 0.0:
            return True, None
        if deterministic is None:
            deterministic = self.deterministic
        if deterministic is None:
            raise ValueError(
                f"MultiHeadAttention(dropout_rate={self.dropout_rate}): it is not "
                "known whether dropout is on; deterministic is None.\n"
                "  Call model.train() / model.eval(), or pass it: "
                "mha(x, deterministic=True)"
            )
        if deterministic:
            return True, None
        source = self.rngs if rngs is None else rngs
        if source is None:
            raise ValueError(
                "MultiHeadAttention: dropout is on but the layer keeps no RNG stream "
                "(keep_rngs=False) and no rngs were passed.\n"
                "  Pass them per call: mha(x, rngs=rngs), or call model.eval()."
            )
        if isinstance(source, Rngs):
            return False, source.dropout()
        if isinstance(source, RngStream):
            return False, source()
        return False, source

    def init_cache(self, input_shape: Sequence[int], dtype: Any = jnp.float32) -> None:
        """Create zeroed decode caches for inputs of shape ``input_shape``.

        Args:
            input_shape: ``(batch..., max_length, features)`` of the full
                sequence to decode.
            dtype: Dtype of the cached keys and values.

        Example:
            >>> import jax.numpy as jnp, ramie
            >>> mha = ramie.MultiHeadAttention(2, 6, decode=True, rngs=ramie.Rngs(0))
            >>> mha.init_cache((1, 10, 6))
            >>> mha.cached_key.shape, int(mha.cache_index.value)
            ((1, 10, 2, 3), 0)
            >>> mha(jnp.ones((1, 1, 6))).shape, int(mha.cache_index.value)
            ((1, 1, 6), 1)
        """
        shape = (*input_shape[:-1], self.num_kv_heads, self.head_dim)
        self.cached_key = Cache(jnp.zeros(shape, dtype))
        self.cached_value = Cache(jnp.zeros(shape, dtype))
        self.cache_index = Cache(jnp.array(0, dtype=jnp.int32))

    def set_view(
        self,
        deterministic: bool | None = None,
        decode: bool | None = None,
        batch_size: int | Sequence[int] | None = None,
        max_length: int | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Set the behaviour flags; optionally create the decode cache.

        Args:
            deterministic: New value of ``self.deterministic`` (if not None).
            decode: New value of ``self.decode`` (if not None). With
                ``batch_size`` and ``max_length`` as well, a layer without a
                cache gets one (dtype ``self.dtype`` or float32).
            batch_size: Batch size (or batch shape) of the cache.
            max_length: Number of positions the cache holds.
            **kwargs: Options for other layers, returned unused.

        Returns:
            The keyword arguments this layer did not use.

        Raises:
            TypeError: if only one of ``batch_size`` and ``max_length`` is given
                for a layer without a cache.

        Example:
            >>> import ramie
            >>> mha = ramie.MultiHeadAttention(2, 6, rngs=ramie.Rngs(0))
            >>> mha.set_view(decode=True, batch_size=4, max_length=16, foo=1)
            {'foo': 1}
            >>> mha.decode, mha.cached_key.shape
            (True, (4, 16, 2, 3))
        """
        if deterministic is not None:
            self.deterministic = deterministic
        if decode is not None:
            self.decode = decode
            wants_cache = batch_size is not None or max_length is not None
            if self.cached_key is None and wants_cache:
                if batch_size is None or max_length is None:
                    missing = "batch_size" if batch_size is None else "max_length"
                    raise TypeError(
                        f"MultiHeadAttention.set_view: {missing!r} is needed to create "
                        "the decode cache; give both batch_size and max_length."
                    )
                batch = (
                    (batch_size,) if isinstance(batch_size, int) else tuple(batch_size)
                )
                self.init_cache(
                    (*batch, max_length, self.in_features), self.dtype or jnp.float32
                )
        return kwargs
