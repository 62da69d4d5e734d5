"""Markers and per-filter specs used by the transforms.

* :class:`Carry` marks the carry of ``scan`` in ``in_axes``/``out_axes``.
* :class:`StateAxes` gives one axis per filter for a graph argument of
  ``vmap``/``scan`` (``StateAxes({ramie.Param: 0, ramie.BatchStat: None})``).
* :class:`DiffState` picks which Variables of an argument ``grad`` differentiates.
* :class:`StateSharding` gives one sharding per filter to ``jit``.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from typing import Any

import jax

from ramie._src.core.filters import filter_name, to_predicate


class Carry:
    """Marks the carry argument and output of :func:`ramie.scan`.

    ``in_axes=(ramie.Carry, 0)`` scans over the second argument and carries the
    first; ``out_axes=ramie.Carry`` means the function returns only the carry.
    """

    def __repr__(self) -> str:  # pragma: no cover - class used as marker
        return "Carry"


def is_carry(x: Any) -> bool:
    return x is Carry or isinstance(x, Carry)


class _FilterMap:
    # ``StateAxes[...]`` in annotations, as in Flax (a Mapping there)
    __class_getitem__ = classmethod(types.GenericAlias)

    def __init__(self, filter_map: Mapping[Any, Any] | Iterable[tuple[Any, Any]], /):
        from ramie._src.core.state import State

        if isinstance(filter_map, State):
            items: Any = _path_items(filter_map)
        elif isinstance(filter_map, Mapping):
            items = filter_map.items()
        else:
            items = filter_map
        self._items = tuple(items)
        self._preds = tuple(to_predicate(f) for f, _ in self._items)

    @property
    def filters(self) -> tuple[Any, ...]:
        return tuple(f for f, _ in self._items)

    @property
    def axes(self) -> tuple[Any, ...]:
        return tuple(a for _, a in self._items)

    def items(self) -> tuple[tuple[Any, Any], ...]:
        return self._items

    def lookup(self, path: tuple, leaf: Any, api: str) -> Any:
        for pred, (_, value) in zip(self._preds, self._items):
            if pred(path, leaf):
                return value
        from ramie._src.core.paths import format_path

        raise ValueError(
            f"{api}: the Variable at {format_path(path)} ({type(leaf).__name__}) "
            f"matches none of the filters of {self!r}; add `...: <axis>` as the last "
            "entry to cover the rest"
        )

    def map_prefix(self, path: tuple, variable: Any) -> Any:
        """The entry for the Variable ``variable`` at ``path`` (first match)."""
        return self.lookup(tuple(path), variable, type(self).__name__)

    def __repr__(self) -> str:
        inner = ", ".join(f"{filter_name(f)}: {a!r}" for f, a in self._items)
        return f"{type(self).__name__}({{{inner}}})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._items == other._items  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self._items))


def _path_items(state: Any) -> list[tuple[Any, Any]]:
    """``{PathIn(paths...): value}`` items from a State holding one entry per path."""
    from ramie._src.core.filters import PathIn
    from ramie._src.core.state import iter_flat
    from ramie._src.core.variables import Variable

    groups: dict[Any, list[tuple]] = {}
    for path, value in iter_flat(state):
        if isinstance(value, Variable):
            value = value.get_value()
        groups.setdefault(value, []).append(path)
    return [(PathIn(*paths), value) for value, paths in groups.items()]


class StateAxes(_FilterMap):
    """One vmap/scan axis per filter for a graph argument.

    May also be built from a State whose leaves are the axes, path by path.

    Example:
        >>> import ramie
        >>> ramie.StateAxes({ramie.Param: 0, ...: None})
        StateAxes({Param: 0, ...: None})
        >>> axes = ramie.StateAxes(ramie.State({"kernel": 0, "bias": None}))
        >>> axes.map_prefix(("kernel",), None), axes.map_prefix(("bias",), None)
        (0, None)
    """


class StateSharding(_FilterMap):
    """One sharding (or PartitionSpec) per filter for a graph argument of ``jit``."""


class DiffState:
    """Differentiate argument ``argnum`` w.r.t. the Variables matching ``filter``.

    Example:
        >>> import ramie
        >>> ramie.DiffState(0, ramie.Param)
        DiffState(argnum=0, filter=Param)
    """

    def __init__(self, argnum: int, filter: Any):
        self.argnum = argnum
        self.filter = filter

    def __repr__(self) -> str:
        return f"DiffState(argnum={self.argnum}, filter={filter_name(self.filter)})"


AXIS_LEAF_TYPES = (int, type(None), StateAxes, StateSharding)


def is_axis_leaf(x: Any) -> bool:
    from ramie._src.core.state import State

    return (
        isinstance(x, AXIS_LEAF_TYPES)
        or isinstance(x, State)  # per-Variable values from ramie.prefix
        or is_carry(x)
        or isinstance(x, (jax.sharding.Sharding, jax.sharding.PartitionSpec))
    )
