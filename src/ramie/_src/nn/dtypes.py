"""Dtype promotion shared by the layers.

Layers take ``dtype`` (the computation dtype; ``None`` infers it from the
inputs and parameters) and ``param_dtype`` (the storage dtype of parameters).
:func:`promote_dtype` casts a layer's inputs and parameters to one dtype before
computing, as Flax does, so numbers match Flax NNX.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp


def canonicalize_dtype(*args: Any, dtype: Any = None, inexact: bool = True) -> Any:
    """The dtype of a computation over ``args`` (or ``dtype`` if given).

    Example:
        >>> import jax.numpy as jnp
        >>> canonicalize_dtype(jnp.ones(2, jnp.bfloat16), jnp.ones(2))
        dtype('float32')
    """
    if dtype is None:
        args_filtered = [jnp.asarray(x) for x in args if x is not None]
        dtype = jnp.result_type(*args_filtered)
        if inexact and not jnp.issubdtype(dtype, jnp.inexact):
            dtype = jnp.promote_types(jnp.float32, dtype)
    if inexact and not jnp.issubdtype(dtype, jnp.inexact):
        raise ValueError(f"Dtype must be inexact: {dtype}")
    return jnp.dtype(dtype)


def promote_dtype(
    args: Sequence[Any], /, *, dtype: Any = None, inexact: bool = True
) -> list[Any]:
    """Cast every non-None array in ``args`` to one common dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> x, w, b = promote_dtype((jnp.ones(2), jnp.ones(2, jnp.bfloat16), None))
        >>> x.dtype, w.dtype, b
        (dtype('float32'), dtype('float32'), None)
    """
    try:
        dtype = canonicalize_dtype(*args, dtype=dtype, inexact=inexact)
        return [jnp.asarray(x, dtype) if x is not None else None for x in args]
    except (TypeError, RuntimeError) as e:
        from ramie._src.nn.checks import unusable_value_error

        err = unusable_value_error(args, sys._getframe(1).f_locals.get("self"))
        if err is None:
            raise
        raise err from e
