"""Dropout: randomly zero inputs in training, identity in evaluation.

A Dropout layer keeps its own RNG stream, forked at construction from the
``dropout`` stream of the given Rngs (or ``default`` when there is none) and
tagged ``'dropout'``, so no key is passed per call and
``ramie.reseed(model, dropout=...)`` resets it. ``model.train()`` and
``model.eval()`` switch its ``deterministic`` flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ramie._src.core.module import Module
from ramie._src.core.rngs import Rngs, RngStream


def _mask_sharding(inputs: Any, layer: Any) -> Any:
    """On an Explicit mesh the mask is sharded like ``inputs`` (bar broadcast dims)."""
    sharding = getattr(jax.typeof(inputs), "sharding", None)
    spec = getattr(sharding, "spec", None)
    mesh = getattr(sharding, "mesh", None)
    if spec is None or mesh is None or mesh.empty or not any(spec):
        return None
    entries = list(spec) + [None] * (len(inputs.shape) - len(spec))
    for d in layer.broadcast_dims:
        entries[d] = None
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*entries))


class Dropout(Module):
    """Zero each input with probability ``rate`` and rescale the rest by ``1/(1-rate)``.

    Args:
        rate: Probability of dropping an element (not the keep rate).
        broadcast_dims: Axes along which one mask is shared.
        deterministic: When True, return inputs unchanged (``eval()`` sets it).
        rng_collection: Name of the RNG stream to draw from.
        rngs: Rngs (or an RngStream) to fork this layer's stream from; with
            ``None`` a key must be given per call.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> drop = ramie.Dropout(0.5, rngs=ramie.Rngs(0))
        >>> y = drop(jnp.ones(1000))
        >>> bool(jnp.all((y == 0) | (y == 2)))
        True
        >>> drop.eval()
        >>> bool((drop(jnp.ones(4)) == 1).all())
        True
    """

    def __init__(
        self,
        rate: float,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool = False,
        rng_collection: str = "dropout",
        rngs: Rngs | RngStream | None = None,
    ):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"Dropout(rate={rate}): rate must be in [0, 1]")
        self.rate = rate
        self.broadcast_dims = tuple(broadcast_dims)
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        if isinstance(rngs, Rngs):
            self.rngs = rngs[rng_collection].fork(tag=rng_collection)
        elif isinstance(rngs, RngStream):
            self.rngs = rngs.fork(tag=rng_collection)
        elif rngs is None:
            self.rngs = None
        else:
            raise TypeError(
                f"Dropout(rngs=...): expected ramie.Rngs, an RngStream or None, got "
                f"{type(rngs).__name__}"
            )

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: Rngs | RngStream | jax.Array | None = None,
    ) -> jax.Array:
        """Apply dropout; ``deterministic``/``rngs`` override the layer's own."""
        if deterministic is None:
            deterministic = self.deterministic
        if deterministic or self.rate == 0.0:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        source = rngs if rngs is not None else self.rngs
        if source is None:
            from ramie._src.core.links import describe

            raise ValueError(
                f"Dropout: {describe(self)} is in training mode: `deterministic` "
                "is False, but no `rngs` argument was provided to Dropout and it "
                "has no RNG stream of its own.\n"
                "  Give it one at construction: "
                "Dropout(rate, rngs=ramie.Rngs(dropout=0))\n"
                "  or per call: dropout(x, rngs=rngs), or call model.eval() for "
                "inference."
            )
        if isinstance(source, Rngs):
            key = source[self.rng_collection]()
        elif isinstance(source, RngStream):
            key = source()
        else:
            key = source
        keep = 1.0 - self.rate
        shape = list(inputs.shape)
        for d in self.broadcast_dims:
            shape[d] = 1
        mask = jax.random.bernoulli(
            key, p=keep, shape=tuple(shape), out_sharding=_mask_sharding(inputs, self)
        )
        mask = jnp.broadcast_to(mask, inputs.shape)
        return lax.select(mask, inputs / keep, jnp.zeros_like(inputs))

    def set_view(
        self, deterministic: bool | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Switch dropout on or off (used by ``ramie.view``).

        Args:
            deterministic: If True, disables dropout masking.
            **kwargs: Options for other layers, returned unused.

        Returns:
            The keyword arguments this layer did not use.
        """
        if deterministic is not None:
            self.deterministic = deterministic
        return kwargs
