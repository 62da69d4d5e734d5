"""Counting a model's state: elements and bytes per Variable type.

Reprs, ``tabulate`` and treescope annotations all report sizes the same way:
``4,224 (16.9 KB)``, grouped by Variable type, with every RNG Variable counted
under ``RngState`` and shared Variables counted once.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from ramie._src.core.graph import api
from ramie._src.core.state import iter_flat
from ramie._src.core.variables import Variable


def size_and_bytes(value: Any) -> tuple[int, int]:
    """Number of elements and bytes of the arrays in ``value`` (any pytree).

    Example:
        >>> import jax.numpy as jnp
        >>> size_and_bytes({"a": jnp.zeros((2, 3)), "b": jnp.zeros(4, jnp.bfloat16)})
        (10, 32)
    """
    size = nbytes = 0
    for leaf in jax.tree_util.tree_leaves(value):
        shape = getattr(leaf, "shape", None)
        dtype = getattr(leaf, "dtype", None)
        if shape is None or dtype is None:
            continue
        n = int(np.prod(shape)) if shape else 1
        size += n
        nbytes += n * int(getattr(dtype, "itemsize", 0) or 0)
    return size, nbytes


def format_bytes(nbytes: int) -> str:
    """``1234`` -> ``'1.2 KB'`` (decimal units, like Flax's summary).

    Example:
        >>> format_bytes(16), format_bytes(16896), format_bytes(3_200_000)
        ('16 B', '16.9 KB', '3.2 MB')
    """
    for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if nbytes > scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{nbytes:,} B"


def format_size(size: int, nbytes: int) -> str:
    """``4,224 (16.9 KB)``.

    Example:
        >>> format_size(4224, 16896)
        '4,224 (16.9 KB)'
    """
    return f"{size:,} ({format_bytes(nbytes)})"


def group_type(var: Variable) -> type:
    """The type a Variable is counted under: RNG Variables as ``RngState``."""
    from ramie._src.core.rngs import RngState

    return RngState if isinstance(var, RngState) else type(var)


def variable_stats(node: Any) -> dict[type, tuple[int, int]]:
    """``{type: (elements, bytes)}`` over the Variables of ``node`` (shared once).

    Example:
        >>> import ramie
        >>> stats = variable_stats(ramie.Linear(2, 3, rngs=ramie.Rngs(0)))
        >>> {t.__name__: v for t, v in stats.items()}
        {'Param': (9, 36)}
    """
    stats: dict[type, tuple[int, int]] = {}
    for _, var in iter_flat(api.state(node)):
        if not isinstance(var, Variable):
            continue
        key = group_type(var)
        s, b = size_and_bytes(var._raw)
        s0, b0 = stats.get(key, (0, 0))
        stats[key] = (s0 + s, b0 + b)
    return dict(
        sorted(
            stats.items(), key=lambda kv: (kv[0].__name__ != "Param", kv[0].__name__)
        )
    )
