"""Filters: a small language for selecting state by type, path or tag.

A filter is anything :func:`to_predicate` accepts, and a predicate is a function
``(path, value) -> bool`` where ``path`` is a tuple of keys and ``value`` is a
Variable (or a bare array). The accepted forms:

* a Variable type (``Param``): instances of that type (``OfType``);
* a string: Variables whose ``tag`` metadata equals it (RNG streams are tagged
  with their stream name), or whose path contains it as a key;
* ``...`` or ``True``: everything; ``None`` or ``False``: nothing;
* a list or tuple of filters: any of them;
* ``All``, ``Any``, ``Not``, ``PathContains``, ``OfType``, ``WithTag``,
  ``Everything``, ``Nothing`` objects;
* any callable ``(path, value) -> bool``.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Callable, Hashable
from typing import Any as TAny

Predicate = Callable[[tuple, TAny], bool]


@dataclasses.dataclass(frozen=True)
class OfType:
    """Matches Variables (or nodes) that are instances of ``type``.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> f = ramie.OfType(ramie.Param)
        >>> f(("w",), ramie.Param(jnp.ones(1))), f(("m",), ramie.BatchStat(jnp.ones(1)))
        (True, False)
    """

    type: type

    def __call__(self, path: tuple, x: TAny) -> bool:
        return isinstance(x, self.type)

    def __repr__(self) -> str:
        return f"OfType({self.type.__name__})"


@dataclasses.dataclass(frozen=True)
class WithTag:
    """Matches Variables whose ``tag`` metadata equals ``tag`` (RNG streams)."""

    tag: str

    def __call__(self, path: tuple, x: TAny) -> bool:
        meta = getattr(x, "_meta", None)
        if meta is not None:
            return meta.get("tag") == self.tag
        return getattr(x, "tag", None) == self.tag


@dataclasses.dataclass(frozen=True)
class PathContains:
    """Matches when ``key`` is one of the path's keys (or a substring, ``exact=False``).

    Example:
        >>> f = PathContains("linear")
        >>> f(("block", "linear", "kernel"), None), f(("head", "kernel"), None)
        (True, False)
    """

    key: Hashable
    exact: bool = True

    def __call__(self, path: tuple, x: TAny) -> bool:
        if self.exact:
            return self.key in path
        return builtins.any(str(self.key) in str(k) for k in path)

    def __repr__(self) -> str:
        return f"PathContains({self.key!r})"


@dataclasses.dataclass(frozen=True)
class PathIn:
    """Matches exactly the given paths."""

    paths: frozenset

    def __init__(self, *paths: tuple):
        object.__setattr__(self, "paths", frozenset(tuple(p) for p in paths))

    def __call__(self, path: tuple, x: TAny) -> bool:
        return tuple(path) in self.paths


@dataclasses.dataclass(frozen=True)
class _StringFilter:
    name: str

    def __call__(self, path: tuple, x: TAny) -> bool:
        meta = getattr(x, "_meta", None)
        if meta is not None and meta.get("tag") == self.name:
            return True
        return self.name in path

    def __repr__(self) -> str:
        return repr(self.name)


class Any:
    """Matches when any of the filters matches.

    Example:
        >>> import ramie
        >>> ramie.Any(ramie.Param, ramie.BatchStat)
        Any(Param, BatchStat)
    """

    def __init__(self, *filters: TAny):
        self.filters = filters
        self.predicates = tuple(to_predicate(f) for f in filters)

    def __call__(self, path: tuple, x: TAny) -> bool:
        return builtins.any(p(path, x) for p in self.predicates)

    def __repr__(self) -> str:
        return f"Any({', '.join(_name(f) for f in self.filters)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Any) and self.predicates == other.predicates

    def __hash__(self) -> int:
        return hash(("Any", self.predicates))


class All:
    """Matches when all of the filters match."""

    def __init__(self, *filters: TAny):
        self.filters = filters
        self.predicates = tuple(to_predicate(f) for f in filters)

    def __call__(self, path: tuple, x: TAny) -> bool:
        return builtins.all(p(path, x) for p in self.predicates)

    def __repr__(self) -> str:
        return f"All({', '.join(_name(f) for f in self.filters)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, All) and self.predicates == other.predicates

    def __hash__(self) -> int:
        return hash(("All", self.predicates))


class Not:
    """Matches when the filter does not.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> ramie.Not(ramie.Param)(("w",), ramie.BatchStat(jnp.ones(1)))
        True
    """

    def __init__(self, filter: TAny, /):
        self.filter = filter
        self.predicate = to_predicate(filter)

    def __call__(self, path: tuple, x: TAny) -> bool:
        return not self.predicate(path, x)

    def __repr__(self) -> str:
        return f"Not({_name(self.filter)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Not) and self.predicate == other.predicate

    def __hash__(self) -> int:
        return hash(("Not", self.predicate))


class Everything:
    """Matches everything (what ``...`` and ``True`` mean)."""

    def __call__(self, path: tuple, x: TAny) -> bool:
        return True

    def __repr__(self) -> str:
        return "Everything()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Everything)

    def __hash__(self) -> int:
        return hash(Everything)


class Nothing:
    """Matches nothing (what ``None`` and ``False`` mean)."""

    def __call__(self, path: tuple, x: TAny) -> bool:
        return False

    def __repr__(self) -> str:
        return "Nothing()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Nothing)

    def __hash__(self) -> int:
        return hash(Nothing)


_EVERYTHING = Everything()
_NOTHING = Nothing()


def to_predicate(filter: TAny) -> Predicate:
    """Turn any filter form into a ``(path, value) -> bool`` predicate.

    Raises:
        TypeError: for values that are not filters.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> pred = to_predicate([ramie.BatchStat, "dropout"])
        >>> pred(("bn", "mean"), ramie.BatchStat(jnp.ones(1)))
        True
    """
    if isinstance(filter, type):
        return OfType(filter)
    if isinstance(filter, str):
        return _StringFilter(filter)
    if filter is Ellipsis or filter is True:
        return _EVERYTHING
    if filter is None or filter is False:
        return _NOTHING
    if isinstance(filter, (list, tuple)):
        return Any(*filter)
    if isinstance(
        filter,
        (
            OfType,
            WithTag,
            PathContains,
            PathIn,
            Any,
            All,
            Not,
            Everything,
            Nothing,
            _StringFilter,
        ),
    ):
        return filter
    if callable(filter):
        return filter
    raise TypeError(
        f"Expected a filter (a Variable type, a string, ..., True/False/None, a "
        f"list of filters or a callable (path, value) -> bool); got "
        f"{type(filter).__name__}: {filter!r}"
    )


def filters_to_predicates(filters: tuple) -> tuple[Predicate, ...]:
    """Predicates for a sequence of filters, checking ``...`` is last if present."""
    for i, f in enumerate(filters):
        if (f is Ellipsis or f is True) and i != len(filters) - 1:
            raise ValueError(
                f"`...` must be the last filter; got it at position {i} of "
                f"{len(filters)}: {filters!r} (`...` or `True` can only be used "
                "as the last filters)"
            )
    return tuple(to_predicate(f) for f in filters)


def _name(f: TAny) -> str:
    if isinstance(f, type):
        return f.__name__
    if f is Ellipsis:
        return "..."
    return repr(f)


filter_name = _name
