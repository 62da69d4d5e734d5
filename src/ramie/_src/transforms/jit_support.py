"""Helpers of ``ramie.jit`` that run while tracing, never on the cached path.

* ``graph_updates=False``: snapshot the argument objects' attributes and undo
  structural changes after the function ran (Variable values stay).
* ``out_shardings`` given per Variable (a ``ramie.prefix`` State or a
  StateSharding): placed inside the trace, where the output modules are known.
* ``jax.Ref`` outputs, which ``jax.jit`` cannot return: replaced by markers
  inside and turned back into Refs outside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ramie._src.core.graph import registry
from ramie._src.core.graph.registry import OBJECT, VARIABLE
from ramie._src.core.variables import Variable, _get_raw, _set_raw
from ramie._src.transforms import lifting
from ramie._src.transforms.lifting import is_node


def _raw_or(v: Any) -> Any:
    return _get_raw(v) if isinstance(v, Variable) else v


def _snapshot(objects: list) -> list[tuple[Any, dict]]:
    """The attribute dicts of the graph objects of the arguments (trace time)."""
    return [
        (o, dict(o.__dict__))
        for o in objects
        if registry.kind_of(o) is OBJECT and hasattr(o, "__dict__")
    ]


def _restore(snap: list[tuple[Any, dict]]) -> None:
    """Undo attribute changes (``graph_updates=False``).

    Variable values stay (they live in the Variables), and so does a new value
    for an attribute that held a bare array (an array leaf of the state).
    """
    for obj, attrs in snap:
        d = obj.__dict__
        if len(d) != len(attrs) or any(d.get(k, d) is not v for k, v in attrs.items()):
            new = dict(d)
            d.clear()
            d.update(attrs)
            for k, v in attrs.items():
                if _is_array(v) and _is_array(new.get(k)):
                    d[k] = new[k]


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray))


def _per_variable(spec: Any) -> bool:
    """True if ``spec`` holds a State or StateSharding (one sharding per Variable).

    jax.jit cannot take those as ``out_shardings``: the output modules' leaves
    are only known once traced, so such specs are applied inside the trace.
    """
    if spec is None:
        return False
    from ramie._src.core.state import State
    from ramie._src.transforms.axes import _FilterMap

    kinds = (State, _FilterMap)
    leaves = jax.tree_util.tree_leaves(spec, is_leaf=lambda x: isinstance(x, kinds))
    return any(isinstance(x, kinds) for x in leaves)


def _constrain_outputs_of(fun: Callable[..., Any], spec: Any) -> Callable[..., Any]:
    """``fun`` whose outputs are placed by the per-Variable ``out_shardings``.

    A module among the outputs gets each Variable's sharding from the State
    (``ramie.prefix``) or StateSharding matching it; other outputs get their
    sharding as with ``jax.jit``. Runs while tracing only.
    """
    from ramie._src.core.graph.api import leaves_with_paths
    from ramie._src.core.graph.registry import kind_of
    from ramie._src.transforms.axes import _FilterMap

    api = "ramie.jit(out_shardings=...)"

    def constrained(*args: Any, **kwargs: Any) -> Any:
        out = fun(*args, **kwargs)
        specs = lifting.broadcast_prefix(spec, out, is_node, api)
        leaves, treedef = jax.tree_util.tree_flatten(out, is_leaf=is_node)
        for j, (leaf, s) in enumerate(zip(leaves, specs)):
            if s is None:
                continue
            if not is_node(leaf):
                leaves[j] = _place(leaf, s)
                continue
            node_spec = lifting.as_node_spec(s)
            if kind_of(leaf) is VARIABLE:
                paths, variables = [()], [leaf]
            else:
                paths, variables = leaves_with_paths(leaf)
            for path, var in zip(paths, variables):
                if not isinstance(var, Variable):
                    continue
                vs = (
                    node_spec.lookup(path, var, api)
                    if isinstance(node_spec, _FilterMap)
                    else node_spec
                )
                vs = _raw_or(vs)
                if vs is not None:
                    _set_raw(var, _place(_get_raw(var), vs))
        return jax.tree_util.tree_unflatten(treedef, leaves)

    return constrained


def _place(x: Any, sharding: Any) -> Any:
    """Constrain a traced value to ``sharding`` (``reshard`` on Explicit axes)."""
    if not hasattr(x, "shape"):
        return x
    try:
        return jax.lax.with_sharding_constraint(x, sharding)
    except ValueError:
        return jax.sharding.reshard(x, sharding)


class _InRef:
    """Output marker: the k-th ``jax.Ref`` among the non-graph arguments."""

    __slots__ = ("k",)

    def __init__(self, k: int):
        self.k = k


class _NewRef:
    """Output marker: a ``jax.Ref`` created inside; carries its final value."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


jax.tree_util.register_pytree_node(_InRef, lambda r: ((), r.k), lambda k, _: _InRef(k))
jax.tree_util.register_pytree_node(
    _NewRef, lambda r: ((r.value,), None), lambda _, c: _NewRef(c[0])
)


def _is_ref(x: Any) -> bool:
    return isinstance(x, jax.Ref)


def _mark_refs(out: Any, inputs: Any) -> tuple[Any, bool]:
    """Replace ``jax.Ref`` outputs (which jax.jit cannot return) by markers.

    Runs while tracing only. A returned argument Ref becomes ``_InRef(k)`` and
    is the caller's own Ref again after the call; a Ref created inside becomes
    ``_NewRef(value)`` and a new ``jax.Ref`` holding that value outside.
    """
    leaves, treedef = jax.tree_util.tree_flatten(out, is_leaf=is_node)
    if not any(map(_is_ref, leaves)):
        return out, False
    in_refs = {id(r): k for k, r in enumerate(_ref_leaves(inputs))}
    leaves = [
        (_InRef(in_refs[id(x)]) if id(x) in in_refs else _NewRef(x[...]))
        if _is_ref(x)
        else x
        for x in leaves
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves), True


def _ref_leaves(tree: Any) -> list:
    return [x for x in jax.tree_util.tree_leaves(tree) if _is_ref(x)]


def _restore_refs(out: Any, inputs: Any) -> Any:
    """The outer side of :func:`_mark_refs`."""
    in_refs = _ref_leaves(inputs)

    def restore(x: Any) -> Any:
        if type(x) is _InRef:
            return in_refs[x.k]
        if type(x) is _NewRef:
            return jax.new_ref(x.value)
        return x

    return jax.tree_util.tree_map(
        restore, out, is_leaf=lambda x: type(x) in (_InRef, _NewRef)
    )
