"""``ref``/``hijax`` Variables: values kept in ``jax.Ref`` cells.

A Variable created with ``ref=True`` or ``hijax=True`` (or under
``ramie.var_defaults(...)``) stores its array in a ``jax.Ref``, JAX's mutable
array reference. Reading it (``v.value``, ``v[...]``, arithmetic) reads the
cell; writing it writes the cell. Because the pytree leaf of such a Variable is
the ``Ref`` itself, plain ``jax.jit``, ``jax.lax.scan`` and ``jax.vmap`` pass it
by reference and their writes are visible afterwards: nothing is lost even
without ramie's transforms.

``ref=True`` also makes ``get_raw_value()`` return the ``Ref``; ``hijax=True``
keeps the ``Ref`` an implementation detail. A ``hijax=True`` Variable whose
value is a pytree (``ramie.Variable({}, hijax=True)``) keeps it in a JAX
``Box`` instead: ``v["loss"] = x`` inside ``jax.jit`` is visible afterwards,
even when it adds a key.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.state.types import AbstractRef

from ramie.errors import GraphStructureError, TraceContextError

_RefType: type = jax.Ref
_Tracer: type = jax.core.Tracer
try:  # JAX's mutable box for pytree values (no public import path yet)
    from jax._src.hijax import Box as _Box  # pyright: ignore[reportPrivateUsage]
except Exception:  # pragma: no cover - depends on the installed jax
    _Box = None
_BoxType: Any = _Box
# Set once any Variable has held a Ref: hot paths skip Ref checks until then.
REFS_USED: list[bool] = [False]


def is_ref_value(x: Any) -> bool:
    """True for a ``jax.Ref`` or a tracer of one."""
    if type(x) is _RefType:
        return True
    if isinstance(x, _Tracer):
        return isinstance(getattr(x, "aval", None), AbstractRef)
    return False


def is_box_value(x: Any) -> bool:
    """True for a JAX ``Box`` (a hijax Variable's pytree value) or its tracer."""
    if _Box is None:
        return False
    if type(x) is _Box:
        return True
    return isinstance(x, _Tracer) and isinstance(x, _Box)


def _array_like(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic, int, float, complex, bool))


def modes_of(meta: dict[str, Any]) -> dict[str, bool]:
    return {"hijax": "hijax" in meta, "ref": "ref" in meta}


def mode_storage(value: Any, meta: dict[str, Any], *, hijax: bool, ref: bool) -> Any:
    """Record the modes in ``meta`` and return the storage for ``value``."""
    if hijax:
        meta["hijax"] = True
    if ref:
        meta["ref"] = True
    if not (hijax or ref):
        return value
    REFS_USED[0] = True
    if is_ref_value(value) or is_box_value(value):
        return value
    if _array_like(value):
        return jax.new_ref(jnp.asarray(value))
    if hijax and not ref and value is not None and _Box is not None:
        # a pytree value (a dict of metrics...): a JAX Box, which plain
        # jax.jit passes by reference, new keys included
        return _Box(value)
    return value  # None values (and ref=True pytrees) stay plain


def read_cell(cell: Any) -> Any:
    """The array in a concrete ``jax.Ref`` without dispatching an op."""
    impl = getattr(cell, "_refs", None)
    buf = getattr(impl, "_buf", None)
    return cell[...] if buf is None else buf


def write_cell(cell: Any, value: Any) -> None:
    """Store ``value`` (same shape/dtype) in a concrete ``jax.Ref``."""
    impl = getattr(cell, "_refs", None)
    if impl is not None and hasattr(impl, "_buf") and isinstance(value, jax.Array):
        impl._buf = value
    else:
        cell[...] = value


def set_raw_through(var: Any, value: Any) -> None:
    """Store ``value`` in ``var``: into its ``Ref`` cell if it has one."""
    from ramie._src.core.variables import _get_raw, _set_raw

    s = _get_raw(var)
    if is_ref_value(s) and not is_ref_value(value):
        write_ref(var, s, value)
    elif is_box_value(s) and not is_box_value(value):
        s.set(value)
    else:
        _set_raw(var, value)


def write_ref(var: Any, cell: Any, value: Any) -> None:
    """Write ``value`` into ``var``'s ``Ref`` cell (same shape and dtype)."""
    aval = jax.typeof(cell)
    shape = tuple(getattr(aval, "shape", ()))
    new_shape = tuple(jnp.shape(value))
    if new_shape != shape:
        from ramie._src.core import links

        raise TraceContextError(
            f"Cannot set {links.describe(var)}: it is a ref/hijax Variable whose "
            f"jax.Ref cell holds shape {shape}, and the new value has shape "
            f"{new_shape}. A Ref keeps its shape.\n"
            "  Fix: write a value of the same shape, or make a new Variable:\n"
            "      v = ramie.Variable(new_value, ref=True)"
        )
    dtype = getattr(aval, "dtype", None)
    if dtype is not None and getattr(value, "dtype", dtype) != dtype:
        value = jnp.asarray(value, dtype)
    cell[...] = value


def _key_name(k: Any) -> Any:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return getattr(k, attr)
    return k


def convert_variables(
    node: Any,
    *,
    hijax: bool | None,
    ref: bool | None,
    only: Any,
    mutable: bool | None = None,
    allow_duplicates: bool,
    api: str,
) -> Any:
    """A copy of ``node`` with the matching Variables converted (see ``with_vars``).

    Variables that do not match ``only`` are kept as they are (the copy shares
    them with ``node``).
    """
    from ramie._src.core.filters import to_predicate
    from ramie._src.core.graph.api import find_duplicates
    from ramie._src.core.graph.flatten import flatten, unflatten
    from ramie._src.core.graph.registry import OBJECT, kind_of
    from ramie._src.core.paths import format_path
    from ramie._src.core.variables import Variable

    pred = to_predicate(only)
    if not allow_duplicates:
        dups = find_duplicates(node)
        if dups:
            a, b = dups[0][0], dups[0][1]
            raise GraphStructureError(
                f"{api}(): Found duplicate at path '{format_path(b)}': the same "
                f"Variable or object is also found at path '{format_path(a)}' (found "
                "at paths of a shared reference); converting it would break the "
                f"sharing.\n  Fix: {api}(node, ..., allow_duplicates=True)"
            )

    def convert(path: tuple, x: Any) -> Any:
        if not pred(path, x):
            return x
        if mutable is False:
            v = x.copy(hijax=False, ref=False)
            v._meta["mutable"] = False
            return v
        if mutable is True:
            v = x.copy(hijax=hijax, ref=True if ref is None else ref)
            v._meta.pop("mutable", None)
            return v
        return x.copy(hijax=hijax, ref=ref)

    is_var = lambda x: isinstance(x, Variable)  # noqa: E731
    if is_var(node):
        return convert((), node)
    has_graph = any(
        kind_of(x) is OBJECT
        for x in jax.tree_util.tree_leaves(node, is_leaf=lambda x: kind_of(x) is OBJECT)
    )
    if has_graph:
        flat = flatten(node)
        leaves = [
            convert(p, v) if is_var(v) else v for p, v in zip(flat.paths, flat.leaves)
        ]
        return unflatten(flat.graphdef, leaves)
    return jax.tree_util.tree_map_with_path(
        lambda kp, x: convert(tuple(_key_name(k) for k in kp), x) if is_var(x) else x,
        node,
        is_leaf=is_var,
    )
