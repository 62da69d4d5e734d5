"""Pause Python's cyclic garbage collector around bulk graph operations.

Flattening or rebuilding a graph of thousands of Variables allocates many small
container objects; every few hundred allocations CPython runs a generation-0
collection that scans them, which can double the cost of ``split``/``merge``.
Nothing these functions allocate forms reference cycles that need collecting
before they return, so the collector is paused for their duration (and left
alone when the caller already disabled it).
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def no_gc(fn: F) -> F:
    """Decorator: run ``fn`` with the cyclic garbage collector paused."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not gc.isenabled():
            return fn(*args, **kwargs)
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.enable()

    return wrapper  # type: ignore[return-value]
