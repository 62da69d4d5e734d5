"""Flatten nested mappings to ``{path_tuple: value}`` and back.

``flatten_mapping({'a': {'b': 1}})`` gives ``{('a', 'b'): 1}`` (or ``'a/b'``
keys with ``sep='/'``); ``unflatten_mapping`` inverts it. Useful for renaming
checkpoint keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


class _EmptyNode:
    def __repr__(self) -> str:
        return "empty_node"


empty_node = _EmptyNode()


def flatten_mapping(
    xs: Mapping,
    /,
    *,
    keep_empty_nodes: bool = False,
    is_leaf: Callable[[tuple, Any], bool] | None = None,
    sep: str | None = None,
) -> dict:
    """``{'a': {'b': 1}}`` -> ``{('a', 'b'): 1}`` (``'a/b'`` with ``sep='/'``).

    Example:
        >>> flatten_mapping({"a": {"b": 1, "c": {}}}, keep_empty_nodes=True)
        {('a', 'b'): 1, ('a', 'c'): empty_node}
    """
    out: dict = {}

    def rec(m: Mapping, prefix: tuple) -> None:
        if not m and keep_empty_nodes and prefix:
            out[prefix if sep is None else sep.join(map(str, prefix))] = empty_node
            return
        for k, v in m.items():
            path = prefix + (k,)
            if isinstance(v, Mapping) and not (is_leaf and is_leaf(path, v)):
                if not v and keep_empty_nodes:
                    out[path if sep is None else sep.join(map(str, path))] = empty_node
                else:
                    rec(v, path)
            else:
                out[path if sep is None else sep.join(map(str, path))] = v

    rec(xs, ())
    return out


def unflatten_mapping(xs: Mapping, /, *, sep: str | None = None) -> dict:
    """Inverse of :func:`flatten_mapping`.

    Example:
        >>> unflatten_mapping({("a", "b"): 1})
        {'a': {'b': 1}}
    """
    out: dict = {}
    for key, v in xs.items():
        path = tuple(key.split(sep)) if sep is not None else tuple(key)
        d = out
        for k in path[:-1]:
            d = d.setdefault(k, {})
        d[path[-1]] = {} if v is empty_node else v
    return out


def flatten_to_sequence(
    xs: Mapping, /, *, is_leaf: Callable[[tuple, Any], bool] | None = None
) -> list[tuple[tuple, Any]]:
    """Like :func:`flatten_mapping` but a list of ``(path, value)`` pairs."""
    return list(flatten_mapping(xs, is_leaf=is_leaf).items())
