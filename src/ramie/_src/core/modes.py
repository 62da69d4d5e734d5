"""Flax's graph-mode and Variable-mode switches, for compatibility.

Flax NNX can run transforms in *tree mode* (modules as plain pytrees, faster,
no shared references) or *graph mode*, and can make Variables mutable-array
references (``hijax``/``ref``). ramie always runs in graph mode - its cached
graph path is as fast as Flax's tree mode - and keeps Variables as plain boxes.
The switches are accepted so Flax code runs, and documented as having no effect;
asking for mutable-array Variables is an error rather than silently ignored.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

_graph_mode: list[bool] = [True]
_graph_updates: list[bool] = [True]


class _Switch:
    """Context manager and decorator that pushes a value on a stack."""

    def __init__(self, stack: list[bool], value: bool):
        self.stack = stack
        self.value = bool(value)

    def __enter__(self) -> _Switch:
        self.stack.append(self.value)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stack.pop()

    def __call__(self, f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return f(*args, **kwargs)

        return wrapper


class _ModeSetter:
    def __init__(self, stack: list[bool], name: str):
        self.stack = stack
        self.__name__ = name
        self.__doc__ = (
            f"``ramie.{name}(value)``: context manager/decorator accepted for Flax "
            "compatibility. ramie always uses graph mode with structural updates; the "
            "value is recorded (``get_default()``) but does not change behaviour."
        )

    def __call__(self, value: bool, /) -> _Switch:
        return _Switch(self.stack, value)

    def get_default(self) -> bool:
        return self.stack[-1]

    def get_stack(self) -> list[bool]:
        return list(self.stack)


set_graph_mode = _ModeSetter(_graph_mode, "set_graph_mode")
set_graph_updates = _ModeSetter(_graph_updates, "set_graph_updates")


class _VarDefaults:
    __slots__ = ("hijax", "ref")

    def __init__(self, hijax: bool = False, ref: bool = False):
        self.hijax = hijax
        self.ref = ref

    def __repr__(self) -> str:
        return f"VarDefaults(hijax={self.hijax}, ref={self.ref})"


def _reject(hijax: Any, ref: Any, api: str) -> None:
    if hijax or ref:
        raise NotImplementedError(
            f"{api}(hijax=True/ref=True): mutable-array Variables are not supported by "
            "ramie; ramie transforms carry Variable updates out without them. Drop the "
            "argument."
        )


def var_defaults(*, hijax: bool | None = None, ref: bool | None = None) -> Any:
    """Read the Variable mode defaults, or set them in a ``with`` block.

    Example:
        >>> import ramie
        >>> ramie.var_defaults()
        VarDefaults(hijax=False, ref=False)
    """
    if hijax is None and ref is None:
        return _VarDefaults()
    if hijax or ref:
        # Decorating is allowed (Flax code does it at class-definition time); the
        # error comes when the decorated function runs or the block is entered.
        return _Rejected(hijax, ref, "ramie.var_defaults")

    @contextlib.contextmanager
    def noop() -> Iterator[_VarDefaults]:
        yield _VarDefaults()

    return noop()


class _Rejected:
    """``var_defaults(hijax=True)``: raises when used, not when created."""

    def __init__(self, hijax: Any, ref: Any, api: str):
        self.args = (hijax, ref, api)

    def __enter__(self) -> None:
        _reject(*self.args)

    def __exit__(self, *exc: Any) -> None:
        return None

    def __call__(self, f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _reject(*self.args)
            return f(*args, **kwargs)

        return wrapper


def with_vars(
    node: Any,
    /,
    *,
    hijax: bool | None = None,
    ref: bool | None = None,
    mutable: bool | None = None,
    only: Any = ...,
    allow_duplicates: bool = False,
) -> Any:
    """A copy of ``node`` with its Variables in the given mode (plain boxes only)."""
    _reject(hijax, ref, "ramie.with_vars")
    from ramie._src.core.graph.api import clone

    return clone(node)


vars_as = with_vars
