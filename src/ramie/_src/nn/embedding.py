"""Embedding tables: :class:`Embed`.

``Embed(num_embeddings, features)`` holds one Param, ``embedding``, of shape
``(num_embeddings, features)``: row ``i`` is the vector of token ``i``.
Calling the layer on integer ids gathers rows (``jnp.take`` along axis 0, so
negative ids count from the end and ids past the end give ``nan``);
:meth:`Embed.attend` goes the other way and scores query vectors against every
row, which is how language models tie input and output embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp

from ramie._src.core.module import Module
from ramie._src.core.rngs import Rngs
from ramie._src.core.variables import Param
from ramie._src.nn import initializers
from ramie._src.nn.dtypes import promote_dtype as default_promote_dtype
from ramie._src.nn.initializers import initialize

# unit variance per row: fan-in is the number of features (axis 1)
default_embed_init = initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)


class Embed(Module):
    """A lookup table mapping integer ids in ``[0, num_embeddings)`` to vectors.

    Args:
        num_embeddings: Number of rows (the vocabulary size).
        features: Size of each embedding vector.
        dtype: Dtype of the looked-up vectors (``None``: the table's dtype).
        param_dtype: Dtype of the table.
        embedding_init: Initializer of ``embedding`` (default: variance
            scaling 1.0, fan-in, normal, so each entry has variance
            ``1 / features``).
        promote_dtype: Function casting ``(embedding,)`` in ``__call__`` and
            ``(query, embedding)`` in ``attend`` to one dtype.
        rngs: RNG streams; ``embedding`` draws from ``params``.
        embedding_metadata: Extra metadata of the ``embedding`` Param.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> embed = ramie.Embed(num_embeddings=10, features=3, rngs=ramie.Rngs(0))
        >>> embed.embedding.shape
        (10, 3)
        >>> ids = jnp.array([[0, 1, 2], [9, 8, 7]])
        >>> embed(ids).shape, embed(ids).dtype
        ((2, 3, 3), dtype('float32'))
        >>> embed.attend(jnp.ones((2, 3))).shape
        (2, 10)
    """

    def __init__(
        self,
        num_embeddings: int,
        features: int,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        embedding_init: Callable[..., Any] = default_embed_init,
        promote_dtype: Callable[..., Any] = default_promote_dtype,
        rngs: Rngs,
        embedding_metadata: Mapping[str, Any] = MappingProxyType({}),
    ):
        self.embedding = Param(
            initialize(
                embedding_init,
                rngs.params(),
                (num_embeddings, features),
                param_dtype,
                embedding_metadata,
            ),
            **embedding_metadata,
        )
        self.num_embeddings = num_embeddings
        self.features = features
        self.dtype = dtype or self.embedding.dtype
        self.param_dtype = param_dtype
        self.promote_dtype = promote_dtype

    def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
        """Look up the rows of ``inputs``' integer ids.

        Args:
            inputs: Integer array of ids, any shape.
            out_sharding: Optional sharding of the output (explicit sharding mode).

        Returns:
            ``inputs.shape + (features,)`` in ``dtype``.

        Raises:
            ValueError: if ``inputs`` are not integers (ValueError, as in Flax).
        """
        dtype = jnp.result_type(inputs)
        if not jnp.issubdtype(dtype, jnp.integer):
            raise ValueError(
                f"ramie.Embed: inputs must be integer ids, got dtype {dtype}.\n"
                "  Cast token ids first, e.g. embed(ids.astype(jnp.int32)); to map "
                "float vectors to logits over the table use embed.attend(x)."
            )
        (embedding,) = self.promote_dtype(
            (self.embedding._raw,), dtype=self.dtype, inexact=False
        )
        if self.num_embeddings == 1:
            # one row: broadcasting avoids a gather (every valid id is 0)
            return jnp.broadcast_to(embedding, (*jnp.shape(inputs), self.features))
        if out_sharding is not None:
            take = jax.sharding.auto_axes(
                lambda table, ids: jnp.take(table, ids, axis=0),
                out_sharding=out_sharding,
            )
            return take(embedding, inputs)
        return jnp.take(embedding, inputs, axis=0)

    def attend(self, query: jax.Array, out_sharding: Any = None) -> jax.Array:
        """Score ``query`` vectors against every embedding: ``query @ embedding.T``.

        Args:
            query: Array whose last axis has size ``features``.
            out_sharding: Optional sharding of the output (explicit sharding mode).

        Returns:
            ``query.shape[:-1] + (num_embeddings,)``.

        Raises:
            ValueError: if the last axis of ``query`` is not ``features``.

        Example:
            >>> import jax.numpy as jnp, ramie
            >>> embed = ramie.Embed(5, 4, rngs=ramie.Rngs(0))
            >>> embed.attend(jnp.ones((2, 7, 4))).shape
            (2, 7, 5)
        """
        if jnp.ndim(query) < 1 or jnp.shape(query)[-1] != self.features:
            raise ValueError(
                f"ramie.Embed.attend: query of shape {jnp.shape(query)} must end in "
                f"features={self.features}.\n  Project it first, e.g. with "
                f"ramie.Linear(d, {self.features}, rngs=rngs)."
            )
        query, embedding = self.promote_dtype(
            (query, self.embedding._raw), dtype=self.dtype
        )
        if out_sharding is not None:
            return jnp.dot(query, embedding.T, out_sharding=out_sharding)
        return jnp.dot(query, embedding.T)
