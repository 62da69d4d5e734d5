"""Compile-once caching for transforms called eagerly.

Called outside ``jit``, ``jax.lax.scan`` and ``jax.vmap`` trace and compile their
body on every call when the body is a fresh Python closure - which it is for
ramie's lifted transforms, and for code like ``RNN.__call__`` that defines its
step function inline. ramie instead jits the whole lifted operation and caches
it, keyed by what determines the computation: the function's code, the values it
closes over, and the graph structure and axes of the arguments.

A function is cached only when it captures no data - no arrays, Variables or
modules in its closure or in the globals it reads - because a compiled version
would freeze such values. Anything else runs uncached, exactly as before.

Calling the *same* function object again reuses its compiled version even when
a plain Python value it closes over has changed since (a counter incremented
with ``nonlocal``), as ``jax.jit`` and ``jax.lax.scan`` do: such values are read
when the function is first traced. A *new* function object (a closure defined
inside a loop or a method) is matched by its code and closure values.
"""

from __future__ import annotations

import functools
import types
import weakref
from collections.abc import Callable, Hashable
from typing import Any

from ramie._src.core.graph import registry
from ramie._src.core.tracing import current_trace
from ramie._src.core.variables import hashable

_MAX = 256
_cache: dict[Hashable, Callable[..., Any]] = {}
# function object -> {(kind, static): key in _cache}: the same object is not
# traced again when a Python scalar it closes over changed (jax.jit's rule)
_by_function: weakref.WeakKeyDictionary[Any, dict[Hashable, Hashable]] = (
    weakref.WeakKeyDictionary()
)
STATS = {"hits": 0, "misses": 0, "uncacheable": 0}


def _data_free(value: Any, depth: int) -> bool:
    if registry.has_data(value):
        return False
    if depth < 3 and isinstance(value, (types.FunctionType, functools.partial)):
        return function_key(value, depth + 1) is not None
    return True


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def function_key(f: Any, depth: int = 0) -> Hashable | None:
    """A hashable identity of ``f``'s computation, or None if it captures data."""
    if isinstance(f, functools.partial):
        inner = function_key(f.func, depth + 1)
        if inner is None:
            return None
        parts = (*f.args, *f.keywords.values())
        if not all(_data_free(v, depth) for v in parts):
            return None
        try:
            return (
                "partial",
                inner,
                hashable(f.args),
                hashable(tuple(sorted(f.keywords.items()))),
            )
        except TypeError:
            return None
    if not isinstance(f, types.FunctionType):
        return None
    code = f.__code__
    cells = []
    for cell in f.__closure__ or ():
        try:
            v = cell.cell_contents
        except ValueError:  # empty cell
            return None
        if not _data_free(v, depth):
            return None
        cells.append(v)
    g = f.__globals__
    for name in _global_names(code):
        v = g.get(name)
        if (
            v is not None
            and not isinstance(v, (types.ModuleType, type))
            and not _data_free(v, depth)
        ):
            return None
    try:
        key = (
            code,
            tuple(hashable(v) for v in cells),
            hashable(f.__defaults__),
            hashable(tuple(sorted((f.__kwdefaults__ or {}).items()))),
        )
        hash(key)
    except TypeError:
        return None
    return key


def cached(
    kind: str, f: Any, static: Hashable, build: Callable[[], Callable[..., Any]]
) -> Callable[..., Any]:
    """``build()`` jitted and cached when called eagerly with a data-free ``f``."""
    if current_trace() is not None:
        return build()
    if isinstance(f, (tuple, list)):
        keys = tuple(function_key(g) for g in f)
        fkey = None if any(k is None for k in keys) else keys
    else:
        fkey = function_key(f)
    if fkey is None:
        STATS["uncacheable"] += 1
        return build()
    per_fn = _per_function(f)
    try:
        key = (kind, fkey, static)
        first = per_fn.get((kind, static)) if per_fn is not None else None
        fn = _cache.get(first) if first is not None else None
        if fn is None:
            fn = _cache.get(key)
        else:
            key = first
    except TypeError:
        STATS["uncacheable"] += 1
        return build()
    if fn is not None:
        STATS["hits"] += 1
    else:
        STATS["misses"] += 1
        import jax

        fn = jax.jit(build())
        if len(_cache) >= _MAX:
            _cache.pop(next(iter(_cache)))
        _cache[key] = fn
    if per_fn is not None:
        # the key, not the compiled function: that one refers to ``f`` and
        # would keep it alive in this weak table after leaving ``_cache``
        if len(per_fn) >= _MAX:
            per_fn.pop(next(iter(per_fn)))
        per_fn[(kind, static)] = key
    return fn


def _per_function(f: Any) -> dict[Hashable, Hashable] | None:
    """The identity-keyed cache of ``f`` (None for several functions)."""
    if isinstance(f, (tuple, list)):
        return None
    try:
        table = _by_function.get(f)
        if table is None:
            table = _by_function[f] = {}
    except TypeError:  # not weakly referenceable or not hashable
        return None
    return table
