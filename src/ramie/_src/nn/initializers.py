"""Initializers: functions ``init(key, shape, dtype) -> Array``.

These are JAX's own initializers (``jax.nn.initializers``), re-exported so
``ramie.initializers.lecun_normal()`` and the seeds'
``ramie.initializers.ones(rngs.params(), [1], jnp.float32)`` work, plus the
builders ``zeros_init()``/``ones_init()``.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.nn.initializers import (
    constant as constant,
    delta_orthogonal as delta_orthogonal,
    glorot_normal as glorot_normal,
    glorot_uniform as glorot_uniform,
    he_normal as he_normal,
    he_uniform as he_uniform,
    kaiming_normal as kaiming_normal,
    kaiming_uniform as kaiming_uniform,
    lecun_normal as lecun_normal,
    lecun_uniform as lecun_uniform,
    normal as normal,
    ones as ones,
    orthogonal as orthogonal,
    truncated_normal as truncated_normal,
    uniform as uniform,
    variance_scaling as variance_scaling,
    xavier_normal as xavier_normal,
    xavier_uniform as xavier_uniform,
    zeros as zeros,
)

Initializer = jax.nn.initializers.Initializer
DtypeLikeInexact = Any


def zeros_init() -> Initializer:
    """An initializer that returns zeros (a builder, like ``lecun_normal()``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> zeros_init()(jax.random.key(0), (2,), jnp.float32)
        Array([0., 0.], dtype=float32)
    """
    return zeros


def ones_init() -> Initializer:
    """An initializer that returns ones."""
    return ones


__all__ = [
    "Initializer", "DtypeLikeInexact", "constant", "delta_orthogonal", "glorot_normal",
    "glorot_uniform", "he_normal", "he_uniform", "kaiming_normal", "kaiming_uniform",
    "lecun_normal", "lecun_uniform", "normal", "ones", "ones_init", "orthogonal",
    "truncated_normal", "uniform", "variance_scaling", "xavier_normal",
    "xavier_uniform", "zeros", "zeros_init",
]  # fmt: skip
