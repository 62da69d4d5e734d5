"""Shardings for ramie transforms: per-argument specs to per-leaf shardings.

``ramie.jit(in_shardings=...)`` takes one entry per positional argument, as
``jax.jit`` does. For a graph argument (a module), the entry may be a single
sharding for all its Variables, a :class:`~ramie.StateSharding` mapping
filters to shardings, or a State-shaped tree of shardings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ramie._src.core.state import iter_flat
from ramie._src.transforms.axes import StateSharding
from ramie.errors import TransformError


def _unwrap(s: Any) -> Any:
    """A sharding from a State entry (``get_named_sharding`` gives Variables)."""
    from ramie._src.core.variables import Variable

    return s._raw if isinstance(s, Variable) else s


def _per_arg(spec: Any, n_args: int, static_pos: tuple = ()) -> list[Any]:
    """One entry per positional argument.

    As in Flax (and ``jax.jit``), a tuple may also give one entry per
    *non-static* argument; static ones get ``None``.
    """
    if isinstance(spec, (tuple, list)):
        static = sorted(i for i in set(static_pos) if i < n_args)
        if static and len(spec) == n_args - len(static):
            it = iter(spec)
            return [None if i in static else next(it) for i in range(n_args)]
        if len(spec) != n_args:
            n_dyn = n_args - len(static)
            raise TransformError(
                f"ramie.jit(in_shardings=...): got {len(spec)} entries for {n_args} "
                f"positional arguments ({n_dyn} not static); give one per argument "
                "or one per non-static argument (None for unspecified)"
            )
        return list(spec)
    return [spec] * n_args


def _node_leaf_spec(spec: Any, path: tuple, leaf: Any, table: dict | None) -> Any:
    if spec is None:
        return None
    if isinstance(spec, StateSharding):
        return spec.lookup(path, leaf, "ramie.jit(in_shardings=...)")
    if table is not None:
        return table.get(path)
    return spec


def leaf_shardings_for_jit(
    spec: Any,
    flat: Any,
    node_pos: tuple,
    node_kw: tuple,
    dyn_pos: tuple,
    dyn_kw: tuple,
    args: tuple,
    kwargs: dict,
    static_pos: tuple = (),
) -> tuple[list, tuple, dict]:
    per_arg = _per_arg(spec, len(args), static_pos)
    node_specs = [per_arg[i] for i in node_pos] + [None for _ in node_kw]
    tables = [
        {p: _unwrap(s) for p, s in iter_flat(ns)}
        if isinstance(ns, Mapping) and not isinstance(ns, StateSharding)
        else None
        for ns in node_specs
    ]
    if len(node_specs) > 1 and any(ns is not None for ns in node_specs):
        roots = [args[i] for i in node_pos] + [kwargs[n] for n in node_kw]
        _check_aliasing(roots, node_specs, tables)
    vals = []
    for path, leaf in zip(flat.paths, flat.leaves):
        k = path[0]
        vals.append(_node_leaf_spec(node_specs[k], path[1:], leaf, tables[k]))
    dyn = tuple(per_arg[i] for i in dyn_pos)
    kw = {n: None for n in dyn_kw}
    return vals, dyn, kw


def _check_aliasing(roots: list, node_specs: list, tables: list) -> None:
    """Raise if one Variable is reached through two arguments with two shardings.

    A joint flatten lists a shared Variable once (at its first path), so each
    argument root is walked to find every path that reaches it.
    """
    from ramie._src.core.graph.api import leaves_with_paths
    from ramie._src.core.graph.registry import VARIABLE, kind_of
    from ramie._src.core.paths import format_path
    from ramie._src.core.variables import Variable

    first: dict[int, tuple[tuple, Any]] = {}
    for k, root in enumerate(roots):
        if kind_of(root) is VARIABLE:
            paths, leaves = [()], [root]
        else:
            paths, leaves = leaves_with_paths(root)
        for path, leaf in zip(paths, leaves):
            if not isinstance(leaf, Variable):
                continue
            s = _node_leaf_spec(node_specs[k], path, leaf, tables[k])
            seen = first.setdefault(id(leaf), ((k, *path), s))
            if seen[1] != s:
                a, b = format_path(seen[0]), format_path((k, *path))
                raise TransformError(
                    "ramie.jit(in_shardings=...): Inconsistent aliasing detected: "
                    f"one {type(leaf).__name__} is reached through two arguments "
                    "with different shardings (path: sharding):\n"
                    f"    args{a}: {seen[1]!r}\n"
                    f"    args{b}: {s!r}\n"
                    "  A shared Variable can only be placed one way.\n"
                    "  Fix: give both arguments the same in_shardings entry, or "
                    "pass the shared object once"
                )
