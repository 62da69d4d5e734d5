"""Text reprs of modules, graph objects and States.

Modules print as a compact, depth-limited tree: each line names the attribute
and the child's type, Variables print as ``Param(value=f32[784,256])``, and
static attributes follow in parentheses.
"""

from __future__ import annotations

import threading
from typing import Any

from ramie._src.core.graph import registry
from ramie._src.display.arrays import array_repr

_local = threading.local()
MAX_DEPTH = 6
MAX_ITEMS = 32


def _static_repr(v: Any) -> str:
    if isinstance(v, type):
        return v.__name__
    if callable(v) and hasattr(v, "__name__"):
        return v.__name__
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def object_repr(obj: Any) -> str:
    seen = getattr(_local, "seen", None)
    top = seen is None
    if top:
        seen = _local.seen = set()
    try:
        return _render(obj, 0, seen)
    finally:
        if top:
            _local.seen = None


def _render(value: Any, depth: int, seen: set) -> str:
    k = registry.kind_of(value)
    if k is registry.VARIABLE:
        return repr(value)
    if k is registry.ARRAY:
        return array_repr(value)
    if k is registry.STATIC:
        return _static_repr(value)
    pad = "  " * (depth + 1)
    if k is registry.OBJECT:
        name = type(value).__name__
        if id(value) in seen:
            return f"{name}(...)  # shared"
        if depth >= MAX_DEPTH:
            return f"{name}(...)"
        seen.add(id(value))
        children = value._graph_children()
        data = [(key, v) for key, v in children if registry.has_data(v)]
        static = [(key, v) for key, v in children if not registry.has_data(v)]
        static_txt = ", ".join(
            f"{key}={_static_repr(v)}" for key, v in static if not str(key).startswith("_")
        )
        if not data:
            return f"{name}({static_txt})"
        lines = [f"{name}(" + (f"  # {static_txt}" if static_txt else "")]
        for key, v in data[:MAX_ITEMS]:
            lines.append(f"{pad}{key}={_render(v, depth + 1, seen)},")
        if len(data) > MAX_ITEMS:
            lines.append(f"{pad}... {len(data) - MAX_ITEMS} more")
        lines.append("  " * depth + ")")
        return "\n".join(lines)
    if k is registry.DICT:
        items = [(repr(key), v) for key, v in value.items()]
        open_, close = "{", "}"
        sep = ": "
    else:
        items = [(None, v) for v in value]
        open_, close = ("[", "]") if k is registry.LIST else ("(", ")")
        if k is registry.NAMEDTUPLE:
            items = list(zip(value._fields, value))
            open_ = type(value).__name__ + "("
            sep = "="
        else:
            sep = ""
    if not items:
        return open_ + close
    lines = [open_]
    for key, v in items[:MAX_ITEMS]:
        prefix = f"{key}{sep}" if key is not None else ""
        lines.append(f"{pad}{prefix}{_render(v, depth + 1, seen)},")
    lines.append("  " * depth + close)
    return "\n".join(lines)


def state_repr(state: Any, depth: int = 0) -> str:
    name = type(state).__name__
    if not state:
        return f"{name}({{}})"
    pad = "  " * (depth + 1)
    lines = [f"{name}({{" if depth == 0 else "{"]
    from ramie._src.core.state import sorted_keys

    for key in sorted_keys(state):
        v = state[key]
        if isinstance(v, dict):
            inner = state_repr(v, depth + 1)
        else:
            inner = repr(v) if registry.kind_of(v) is registry.VARIABLE else array_repr(v)
        lines.append(f"{pad}{key!r}: {inner},")
    lines.append("  " * depth + ("})" if depth == 0 else "}"))
    return "\n".join(lines)
