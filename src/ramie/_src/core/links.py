"""Weak parent links, so that an object can name its own path in a message.

When a Module attribute is set to a Variable or a sub-module (directly or inside
a list, tuple or dict), the child records a weak reference to its parent and the
keys under which it was stored. :func:`path_of` follows these links to the root
and returns the path, e.g. ``('block', 'batchnorm', 'mean')``. Links are best
effort (a shared object keeps the link of its most recent placement) and are
used only to write better error messages; no behaviour depends on them.
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable
from typing import Any

from ramie._src.core.paths import format_path

_MAX_DEPTH = 256


def parent_ref(parent: Any) -> weakref.ref:
    """A weak reference to ``parent`` (CPython reuses one per object)."""
    return weakref.ref(parent)


def _link_of(obj: Any):
    # Variables store the link in `_link`, graph objects in `_ramie_link`.
    link = getattr(obj, "_ramie_link", None)
    if link is None:
        link = getattr(obj, "_link", None)
    return link


def set_link(child: Any, pref: weakref.ref, keys: tuple[Hashable, ...]) -> None:
    """Record that ``child`` lives at ``keys`` below the parent behind ``pref``."""
    link = (pref, keys)
    try:
        object.__setattr__(child, "_ramie_link", link)
    except AttributeError:
        try:
            object.__setattr__(child, "_link", link)
        except AttributeError:
            pass


def link_children(parent: Any, key: Hashable, value: Any, pref=None) -> None:
    """Link ``value`` (and graph objects inside plain containers) to ``parent``."""
    from ramie._src.core.graph import registry
    from ramie._src.core.graph.registry import OBJECT, VARIABLE, kind_of

    k = kind_of(value)
    if k is VARIABLE or k is OBJECT:
        set_link(value, pref or parent_ref(parent), (key,))
        return
    if k is registry.LIST or k is registry.TUPLE:
        pref = pref or parent_ref(parent)
        for i, item in enumerate(value):
            _link_nested(item, pref, (key, i))
    elif k is registry.DICT:
        pref = pref or parent_ref(parent)
        for k2, item in value.items():
            _link_nested(item, pref, (key, k2))


def _link_nested(value: Any, pref, keys: tuple) -> None:
    from ramie._src.core.graph.registry import OBJECT, VARIABLE, kind_of

    k = kind_of(value)
    if k is VARIABLE or k is OBJECT:
        set_link(value, pref, keys)
    elif isinstance(value, (list, tuple)) and len(keys) < 8:
        for i, item in enumerate(value):
            _link_nested(item, pref, keys + (i,))
    elif isinstance(value, dict) and len(keys) < 8:
        for k2, item in value.items():
            _link_nested(item, pref, keys + (k2,))


def path_of(obj: Any) -> tuple[Hashable, ...] | None:
    """The path of ``obj`` from the root it was last attached under.

    Returns ``None`` when ``obj`` has never been attached to a parent.
    """
    parts: list[Hashable] = []
    cur = obj
    seen = set()
    for _ in range(_MAX_DEPTH):
        link = _link_of(cur)
        if link is None:
            break
        parent = link[0]()
        if parent is None or id(parent) in seen:
            break
        seen.add(id(parent))
        parts[:0] = link[1]
        cur = parent
    if not parts:
        return None
    return tuple(parts)


def describe(obj: Any) -> str:
    """``'Param at block.linear.kernel'``-style text for messages."""
    path = path_of(obj)
    name = type(obj).__name__
    if path is None:
        return f"{name} (not attached to a module)"
    return f"{name} at {format_path(path)}"
