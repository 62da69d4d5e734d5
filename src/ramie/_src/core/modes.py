"""Mode switches: tree mode (``graph=False``), ``graph_updates`` and Variable modes.

*Graph mode* (the default) handles modules as graphs: shared references are
kept, and structural changes made inside a transform (a new attribute, a new
sub-module) are carried out. *Tree mode* (``graph=False``) treats modules as
plain pytrees: every object and Variable must be reachable by exactly one path
(a shared reference is an error naming both paths). ``graph_updates=False``
keeps Variable value updates but drops structural updates.

The switches follow Flax's semantics: ``set_graph_mode(False)`` called as a
statement changes the default for the rest of the program; used in ``with`` it
restores the previous value on exit; used as a decorator it applies only to
the calls of the decorated function.

``var_defaults(hijax=..., ref=...)`` sets the mode of new Variables the same
way: a ``ref``/``hijax`` Variable keeps its value in a ``jax.Ref`` so that plain
JAX transforms (``jax.jit``, ``jax.lax.scan``) see and keep its updates.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

# Stacks: the last entry is the current value; an empty stack means the default.
_graph_mode: list[bool] = []
_graph_updates: list[bool] = []
_var_modes: list[tuple[bool, bool]] = []


class _Setting:
    """``setter(value)``: set now; ``with``: set for the block; decorator: per call."""

    __slots__ = ("stack", "prev", "new")

    def __init__(self, stack: list[Any], value: Any):
        self.stack = stack
        self.new = value
        if stack:
            self.prev = stack[-1]
            stack[-1] = value
        else:
            self.prev = _UNSET
            stack.append(value)

    def __enter__(self) -> None:
        if self.prev is not _UNSET:
            self.stack.insert(-1, self.prev)

    def __exit__(self, *exc: Any) -> None:
        self.stack.pop()

    def __call__(self, f: Callable[..., Any]) -> Callable[..., Any]:
        # Undo the immediate effect: a decorator only applies during calls.
        self.stack.pop()
        if self.prev is not _UNSET:
            self.stack.append(self.prev)
        stack, new = self.stack, self.new

        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            stack.append(new)
            try:
                return f(*args, **kwargs)
            finally:
                stack.pop()

        return wrapper


_UNSET: Any = object()


class _ModeSetter:
    """A Flax-style config switch: call, ``with`` block, or decorator."""

    def __init__(self, stack: list[bool], name: str, what: str):
        self.stack = stack
        self.__name__ = name
        self.__qualname__ = name
        self.__doc__ = (
            f"``ramie.{name}(value)``: set {what}.\n\n"
            "Called as a statement it changes the default from then on; in a "
            "``with`` block it applies to the block; as a decorator, to each call "
            f"of the function. ``ramie.{name}.current_value()`` reads it."
        )

    def __call__(self, value: bool, /) -> _Setting:
        return _Setting(self.stack, bool(value))

    def current_value(self) -> bool:
        return self.stack[-1] if self.stack else True

    def get_default(self) -> bool:
        return True

    def get_stack(self) -> list[bool]:
        return self.stack

    def __repr__(self) -> str:
        return f"ramie.{self.__name__}"


set_graph_mode = _ModeSetter(
    _graph_mode, "set_graph_mode", "graph mode (True) or tree mode (False)"
)
set_graph_updates = _ModeSetter(
    _graph_updates,
    "set_graph_updates",
    "whether transforms carry structural (graph) updates out",
)


def resolve_graph(graph: bool | None) -> bool:
    """``graph`` itself, or the current default when ``None``."""
    if graph is None:
        return _graph_mode[-1] if _graph_mode else True
    return bool(graph)


def resolve_graph_updates(graph_updates: bool | None) -> bool:
    if graph_updates is None:
        return _graph_updates[-1] if _graph_updates else True
    return bool(graph_updates)


def tree_mode(graph: bool | None, graph_updates: bool | None = True) -> bool:
    """True when a transform called with these arguments runs in tree mode."""
    if graph is None and not _graph_mode:
        return False
    return not resolve_graph(graph)


# ------------------------------------------------------------- Variable modes
@dataclasses.dataclass(frozen=True)
class VarDefaults(Mapping[str, bool]):
    """The modes new Variables get: ``hijax`` and ``ref`` (both False by default)."""

    hijax: bool
    ref: bool

    def __getitem__(self, key: str) -> bool:
        if key not in ("hijax", "ref"):
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(("hijax", "ref"))

    def __len__(self) -> int:
        return 2


def current_var_modes() -> tuple[bool, bool]:
    """``(hijax, ref)`` for a new Variable that does not choose."""
    return _var_modes[-1] if _var_modes else (False, False)


def var_defaults(*, hijax: bool | None = None, ref: bool | None = None) -> Any:
    """Read the Variable mode defaults, or set them.

    ``var_defaults()`` returns the current :class:`VarDefaults`.
    ``var_defaults(hijax=True)`` sets the default: as a statement from then
    on, in a ``with`` block for the block, as a decorator for each call.
    An argument left as ``None`` keeps its current value.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> ramie.var_defaults()
        VarDefaults(hijax=False, ref=False)
        >>> with ramie.var_defaults(ref=True):
        ...     v = ramie.Variable(jnp.zeros(2))
        >>> v.ref, ramie.var_defaults().ref
        (True, False)
    """
    cur_hijax, cur_ref = current_var_modes()
    if hijax is None and ref is None:
        return VarDefaults(hijax=cur_hijax, ref=cur_ref)
    new = (
        cur_hijax if hijax is None else bool(hijax),
        cur_ref if ref is None else bool(ref),
    )
    return _Setting(_var_modes, new)


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
    """A copy of ``node`` whose Variables (those matching ``only``) use the given modes.

    ``ref=True``/``hijax=True`` make the Variables keep their values in
    ``jax.Ref`` cells that plain JAX transforms update in place; ``False``
    turns them back into plain Variables holding arrays. A mode left as
    ``None`` is kept. ``mutable=False`` makes frozen plain copies (writes
    raise; the form to hand to ``jax.grad``), ``mutable=True`` mutable
    ``ref`` copies. ``node`` may be a Module, a Variable, a State or any
    pytree of them. Variables shared between paths are an error unless
    ``allow_duplicates=True``.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> counter = ramie.with_vars(ramie.BatchStat(jnp.array(0)), ref=True)
        >>> @jax.jit
        ... def bump(c):
        ...     c[...] += 1
        >>> bump(counter); bump(counter)
        >>> int(counter[...])
        2
    """
    from ramie._src.core.variable_modes import convert_variables

    return convert_variables(
        node,
        hijax=hijax,
        ref=ref,
        mutable=mutable,
        only=only,
        allow_duplicates=allow_duplicates,
        api="ramie.with_vars",
    )


vars_as = with_vars
