"""Short, stable text for arrays: ``f32[784,256]``.

Reprs, summaries and error messages describe arrays by dtype and shape rather
than by value, which is what a reader needs and what stays the same across
backends.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_SHORT = {
    "float16": "f16",
    "bfloat16": "bf16",
    "float32": "f32",
    "float64": "f64",
    "int8": "i8",
    "int16": "i16",
    "int32": "i32",
    "int64": "i64",
    "uint8": "u8",
    "uint16": "u16",
    "uint32": "u32",
    "uint64": "u64",
    "bool": "bool",
    "complex64": "c64",
    "complex128": "c128",
}


def short_dtype(dtype: Any) -> str:
    """``float32`` -> ``f32``; typed PRNG keys -> ``key<fry>``.

    Example:
        >>> import jax.numpy as jnp
        >>> short_dtype(jnp.float32), short_dtype(jnp.bfloat16)
        ('f32', 'bf16')
    """
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(getattr(dtype, "name", dtype))
    return _SHORT.get(name, name)


def shape_str(x: Any) -> str | None:
    """``f32[784,256]`` for anything with ``shape`` and ``dtype``, else None.

    Example:
        >>> import jax.numpy as jnp
        >>> shape_str(jnp.zeros((784, 256)))
        'f32[784,256]'
        >>> shape_str(3) is None
        True
    """
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None:
        return None
    return f"{short_dtype(dtype)}[{','.join(str(d) for d in shape)}]"


def is_tracer(x: Any) -> bool:
    import jax

    return isinstance(x, jax.core.Tracer)


def array_repr(x: Any, max_elements: int = 8) -> str:
    """One-line text for a value held by a Variable.

    Small concrete arrays show their values; large, traced and abstract arrays
    show ``dtype[shape]``.

    Example:
        >>> import jax.numpy as jnp
        >>> array_repr(jnp.zeros((784, 256)))
        'f32[784,256]'
        >>> array_repr(jnp.array(3))
        'Array(3, dtype=int32, weak_type=True)'
    """
    s = shape_str(x)
    if s is None:
        return repr(x)
    if is_tracer(x):
        return f"{s} (traced)"
    dtype = getattr(x, "dtype", None)
    if not isinstance(x, (np.ndarray, np.generic)) and not hasattr(
        x, "addressable_shards"
    ):
        return s  # ShapeDtypeStruct and friends
    try:
        import jax

        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            return s
    except Exception:  # pragma: no cover
        pass
    size = int(np.prod(x.shape)) if x.shape else 1
    if size > max_elements:
        return s
    try:
        return " ".join(repr(x).split())
    except Exception:  # deleted or donated buffers
        return s
