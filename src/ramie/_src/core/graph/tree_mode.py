"""Tree-mode checks: every object, Variable and ``jax.Ref`` reachable by one path.

In tree mode (``graph=False``) modules are handled as pytrees, which cannot
express sharing: a Variable reachable from two paths would become two
independent copies and one update would be lost. The graph functions and the
transforms therefore check the tree first and name both paths of the first
shared reference (or the two ends of a cycle).
"""

from __future__ import annotations

from typing import Any

from ramie._src.core import modes
from ramie._src.core.graph import registry
from ramie._src.core.graph.registry import OBJECT, VARIABLE, kind_of
from ramie._src.core.paths import format_path
from ramie._src.core.variable_modes import is_ref_value
from ramie.errors import SharedReferenceError


def is_tree_mode(graph: bool | None) -> bool:
    """True when ``graph`` (or the default, for ``None``) selects tree mode."""
    if graph is None:
        stack = modes._graph_mode
        return bool(stack) and not stack[-1]
    return not graph


def _describe(x: Any) -> str:
    return type(x).__name__


def _items(value: Any, k: Any) -> Any:
    from ramie._src.core.graph.api import _container_items

    return _container_items(value, k)


def duplicate_error(
    api: str, x: Any, first: tuple, second: tuple, *, transform: bool = False
) -> SharedReferenceError:
    a, b = format_path(first) or "<root>", format_path(second) or "<root>"
    name = api.split("(")[0].removeprefix("ramie.")
    if transform:
        why = (
            f"{api} with graph=False or graph_updates=False does not support "
            "Variable aliasing (duplicate inputs, duplicate outputs, or input "
            "Variables returned as outputs)."
        )
        fix = (
            f"  Fix: pass each Variable once, copy it with ramie.clone(...), or "
            f"use graph mode:\n      ramie.{name}(..., graph=True, graph_updates=True)"
        )
    else:
        why = (
            f"{api} in tree mode (graph=False) treats modules as pytrees, which "
            "does not support shared references."
        )
        fix = (
            f"  Fix: give each path its own object (ramie.clone(...)), or use "
            f"graph mode:\n      ramie.{name}(..., graph=True)"
        )
    return SharedReferenceError(
        f"{api}: Duplicate {_describe(x)} found at paths '{a}' and '{b}'.\n"
        f"  {why}\n{fix}"
    )


def _first_variable(node: Any) -> tuple[Any, tuple]:
    """The first Variable inside ``node`` and its relative path (else ``node``)."""
    if kind_of(node) is VARIABLE:
        return node, ()
    stack = [(node, ())]
    seen: set[int] = set()
    while stack:
        value, rel = stack.pop(0)
        k = kind_of(value)
        if k is VARIABLE:
            return value, rel
        if k is OBJECT and id(value) not in seen:
            seen.add(id(value))
            stack.extend((c, rel + (key,)) for key, c in value._graph_children())
        elif k in registry.CONTAINERS:
            stack.extend((c, rel + (key,)) for key, c in _items(value, k))
    return node, ()


def _cycle_error(api: str, value: Any, first: tuple, path: tuple) -> Exception:
    return SharedReferenceError(
        f"{api}: Cycle detected for {_describe(value)}, found at paths "
        f"'{format_path(first) or '<root>'}' and "
        f"'{format_path(path)}'. Tree mode (graph=False) needs a tree.\n"
        "  Fix: break the cycle, or use graph mode (graph=True)."
    )


def check_tree(node: Any, api: str, *, prefix: tuple = ()) -> None:
    """Raise if ``node`` shares an object, Variable or Ref, has a cycle, or holds
    an object declared with ``pytree=False``."""
    seen: dict[int, tuple] = {}
    active: dict[int, tuple] = {}

    def walk(value: Any, path: tuple) -> None:
        k = kind_of(value)
        if k is OBJECT or k is VARIABLE:
            i = id(value)
            if i in active:
                raise _cycle_error(api, value, active[i], path)
            if i in seen:
                x, rel = _first_variable(value)
                raise duplicate_error(api, x, seen[i] + rel, path + rel)
            seen[i] = path
            if k is VARIABLE:
                return
            if not getattr(type(value), "_ramie_is_pytree", True):
                raise SharedReferenceError(
                    f"{api}: {_describe(value)} was declared with pytree=False and "
                    "cannot be used in tree mode (graph=False). Found at path "
                    f"'{format_path(path) or '<root>'}'.\n"
                    f"  Fix: declare it as `class {_describe(value)}(ramie.Pytree)` "
                    "or use graph mode (graph=True)."
                )
            active[i] = path
            for key, child in value._graph_children():
                walk(child, path + (key,))
            del active[i]
        elif k in registry.CONTAINERS:
            i = id(value)
            if i in active:
                raise _cycle_error(api, value, active[i], path)
            active[i] = path
            for key, child in _items(value, k):
                walk(child, path + (key,))
            del active[i]
        elif is_ref_value(value):
            i = id(value)
            if i in seen:
                raise duplicate_error(api, value, seen[i], path)
            seen[i] = path

    walk(node, prefix)


def maybe_check(node: Any, graph: bool | None, api: str) -> None:
    """``check_tree`` when ``graph`` selects tree mode (cheap otherwise)."""
    if graph is False or (
        graph is None and modes._graph_mode and not modes._graph_mode[-1]
    ):
        check_tree(node, api)
