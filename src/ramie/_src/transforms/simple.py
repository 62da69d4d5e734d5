"""Transforms in tree mode (``graph=False``) and with ``graph_updates=False``.

In these modes a transform follows JAX's rules more closely: each Variable is
passed once (no duplicate inputs, no input Variable returned as an output), and
the prefix objects that only graph mode understands (``StateAxes``,
``StateSharding``, ``DiffState``) are rejected when the transform is created.
Variable value updates are still carried out, as in graph mode.

:func:`modal` wraps a transform factory; in graph mode with graph updates (the
default) it adds nothing but one check of the two arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

from ramie._src.core.graph import registry
from ramie._src.core.graph.registry import OBJECT, VARIABLE, kind_of
from ramie._src.core.graph.tree_mode import check_tree, duplicate_error
from ramie._src.core.modes import resolve_graph, resolve_graph_updates
from ramie._src.core.sentinels import MISSING
from ramie._src.transforms.lifting import unwrap_prefix_trees
from ramie.errors import GraphStructureError

_PREFIX_TYPES = ("StateAxes", "StateSharding", "DiffState")


class PrefixModeError(GraphStructureError):
    """A graph-mode prefix object given to a tree-mode transform."""


def is_simple(graph: Any, graph_updates: Any) -> bool:
    """True unless both graph mode and graph updates are on."""
    return not (resolve_graph(graph) and resolve_graph_updates(graph_updates))


def check_prefix(value: Any, name: str, api: str) -> None:
    """Reject ``StateAxes``/``StateSharding``/``DiffState`` inside ``value``."""
    if value is None:
        return
    from ramie._src.transforms.axes import DiffState, _FilterMap

    leaves = jax.tree_util.tree_leaves(
        value, is_leaf=lambda x: isinstance(x, (_FilterMap, DiffState))
    )
    for leaf in leaves:
        if isinstance(leaf, (_FilterMap, DiffState)):
            t = type(leaf).__name__
            short = api.removeprefix("ramie.")
            raise PrefixModeError(
                f"{api}: `{name}` cannot contain `{t}` objects when `graph=False` "
                f"or `graph_updates=False`; {t} needs graph mode.\n"
                "  Fix: split the module into groups and pass each group with its "
                "own plain prefix, e.g.\n"
                "      graphdef, params, rest = ramie.split(model, ramie.Param, ...)\n"
                f"  or use graph mode: ramie.{short}(..., graph=True, "
                "graph_updates=True)"
            )


def _variables(node: Any, path: tuple, out: dict[int, tuple], top: Any) -> None:
    """``id -> (top, path)`` of the Variables in ``node`` (first path wins)."""
    seen: set[int] = set()

    def walk(value: Any, p: tuple) -> None:
        k = kind_of(value)
        if k is VARIABLE:
            i = id(value)
            if i in out and out[i][0] != top:
                raise duplicate_error(f"{API[0]}", value, out[i][1], p, transform=True)
            out.setdefault(i, (top, p))
            return
        if k is OBJECT:
            if id(value) in seen:
                return
            seen.add(id(value))
            for key, child in value._graph_children():
                walk(child, p + (key,))
        elif k in registry.CONTAINERS:
            from ramie._src.core.graph.api import _container_items

            for key, child in _container_items(value, k):
                walk(child, p + (key,))
        elif isinstance(value, (list, tuple)):
            for j, child in enumerate(value):
                walk(child, p + (j,))
        elif isinstance(value, dict):
            for key, child in value.items():
                walk(child, p + (key,))

    walk(node, path)


API = ["ramie transform"]


def check_inputs(api: str, args: tuple, kwargs: dict, tree: bool) -> dict[int, Any]:
    """Raise on a Variable passed twice; return ``id -> path`` of input Variables."""
    if tree:
        _check_tree_transform({"args": tuple(args), "kwargs": dict(kwargs)}, api, ())
    API[0] = api
    found: dict[int, Any] = {}
    # graph mode keeps sharing between arguments: record, don't refuse
    top = ("a", 0) if not tree else None
    for i, a in enumerate(args):
        _variables(a, ("args", i), found, top or ("a", i))
    for k, a in kwargs.items():
        _variables(a, ("kwargs", k), found, top or ("k", k))
    return found


def _check_tree_transform(node: Any, api: str, prefix: tuple) -> None:
    try:
        check_tree(node, api, prefix=prefix)
    except GraphStructureError as e:
        msg = e.args[0] if e.args else ""  # without the docs link str() adds
        if "Duplicate" in msg:
            raise type(e)(
                msg.replace(
                    "in tree mode (graph=False) treats modules as pytrees, which "
                    "does not support shared references.",
                    "with graph=False or graph_updates=False does not support "
                    "Variable aliasing (duplicate inputs, duplicate outputs, or input "
                    "Variables returned as outputs).",
                )
            ) from None
        raise


def check_outputs(
    api: str, out: Any, inputs: dict[int, Any], tree: bool = True
) -> None:
    """Raise if ``out`` returns an input Variable (or, in tree mode, one twice)."""
    API[0] = api
    found: dict[int, Any] = {}

    def visit(value: Any, p: tuple) -> None:
        k = kind_of(value)
        if k is VARIABLE:
            i = id(value)
            if i in inputs:
                raise duplicate_error(api, value, inputs[i][1], p, transform=True)
            if tree and i in found:
                raise duplicate_error(api, value, found[i], p, transform=True)
            found[i] = p
        elif k is OBJECT:
            for key, child in value._graph_children():
                visit(child, p + (key,))
        elif k in registry.CONTAINERS:
            from ramie._src.core.graph.api import _container_items

            for key, child in _container_items(value, k):
                visit(child, p + (key,))
        elif isinstance(value, (list, tuple)):
            for j, child in enumerate(value):
                visit(child, p + (j,))
        elif isinstance(value, dict):
            for key, child in value.items():
                visit(child, p + (key,))

    visit(out, ("out",))


class Checked:
    """A transformed function with the tree-mode checks around each call."""

    def __init__(self, fn: Any, api: str, tree: bool, check_out: bool):
        self.__wrapped__ = fn
        self._api = api
        self._tree = tree
        self._check_out = check_out
        functools.update_wrapper(self, fn, updated=())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        inputs = check_inputs(self._api, args, kwargs, self._tree)
        out = self.__wrapped__(*args, **kwargs)
        if self._check_out:
            check_outputs(self._api, out, inputs, self._tree)
        return out

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return functools.partial(self, obj)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__wrapped__, name)


def check_scan_axes(kwargs: dict[str, Any]) -> None:
    """Tree-mode ``scan``: one ``Carry`` at most, and no broadcast outputs."""
    from ramie._src.transforms.axes import is_axis_leaf, is_carry

    def leaves(tree: Any) -> list[Any]:
        return jax.tree_util.tree_leaves(
            tree, is_leaf=lambda x: x is None or is_axis_leaf(x)
        )

    in_axes = kwargs.get("in_axes", MISSING)
    if in_axes is not MISSING and sum(map(is_carry, leaves(in_axes))) > 1:
        raise PrefixModeError(
            f"ramie.scan: Found multiple Carry definitions in in_axes={in_axes!r}; "
            "a scan has one carry.\n"
            "  Fix: group the carried values in one argument, e.g. "
            "in_axes=(ramie.Carry, 0) with f((a, b), x)"
        )
    out_axes = kwargs.get("out_axes", MISSING)
    if out_axes is not MISSING and any(x is None for x in leaves(out_axes)):
        raise PrefixModeError(
            f"ramie.scan: Cannot broadcast output state: out_axes={out_axes!r} "
            "contains None, but every output of a scan is stacked (or carried).\n"
            "  Fix: use an axis, e.g. out_axes=(ramie.Carry, 0)"
        )


def modal(
    api: str,
    prefixes: tuple[str, ...] = (),
    *,
    check_out: bool = True,
    validate: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a transform factory ``factory(f=MISSING, ..., graph=...)``."""

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(factory)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            graph = kwargs.get("graph")
            graph_updates = kwargs.get("graph_updates")
            for name in prefixes:
                if name in kwargs:
                    kwargs[name] = unwrap_prefix_trees(kwargs[name])
            if not is_simple(graph, graph_updates):
                return factory(*args, **kwargs)
            for name in prefixes:
                check_prefix(kwargs.get(name), name, api)
            if validate is not None:
                validate(kwargs)
            if not args or args[0] is MISSING:
                rest = args[1:]
                return lambda fn: wrapper(fn, *rest, **kwargs)
            out = factory(*args, **kwargs)
            return Checked(out, api, not resolve_graph(graph), check_out)

        return wrapper

    return deco


def checked_inner(f: Callable[..., Any], api: str, tree: bool) -> Callable[..., Any]:
    """``f`` with the input and output checks, for use inside a trace."""

    @functools.wraps(f)
    def inner(*args: Any, **kwargs: Any) -> Any:
        inputs = check_inputs(api, args, kwargs, tree)
        out = f(*args, **kwargs)
        check_outputs(api, out, inputs, tree)
        return out

    return inner
