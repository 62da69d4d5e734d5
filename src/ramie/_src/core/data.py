"""Data/static markers and dataclass support for graph objects.

Flax classifies every attribute of a Pytree as *data* (pytree leaves: arrays,
Variables, sub-modules) or *static* and lets users force the choice with
``nnx.data(...)``/``nnx.static(...)``. ramie classifies attributes by their
value each time a graph is flattened - arrays, Variables and graph objects are
data wherever they are stored, everything else is static - so no attribute can
be misclassified. The markers are therefore accepted and return the value
unchanged (or, with keyword arguments, a ``dataclasses.field``), and
:func:`check_pytree` only validates.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Generic, TypeVar

from ramie._src.core.graph import registry
from ramie._src.core.sentinels import MISSING

A = TypeVar("A")


def data(value: Any = MISSING, /, **kwargs: Any) -> Any:
    """Mark an attribute value as data (``self.w = ramie.data(w)``).

    Returns ``value`` unchanged: ramie treats arrays, Variables and graph
    objects as data automatically. With keyword arguments (and no value),
    returns a ``dataclasses.field`` for :func:`dataclass` classes.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> ramie.data(jnp.ones(2)).shape
        (2,)
    """
    if value is MISSING:
        metadata = dict(kwargs.pop("metadata", {}) or {})
        metadata["ramie_static"] = False
        return dataclasses.field(metadata=metadata, **kwargs)
    return value


def static(value: Any = MISSING, /, **kwargs: Any) -> Any:
    """Mark an attribute value as static: ``self.n = ramie.static(4)``."""
    if value is MISSING:
        metadata = dict(kwargs.pop("metadata", {}) or {})
        metadata["ramie_static"] = True
        return dataclasses.field(metadata=metadata, **kwargs)
    return value


class Data(Generic[A]):
    """Annotation marker ``x: ramie.Data[jax.Array]`` (accepted, no effect)."""


class Static(Generic[A]):
    """Annotation marker ``n: ramie.Static[int]`` (accepted, no effect)."""


def dataclass(
    cls: type | None = None,
    *,
    init: bool = True,
    eq: bool = True,
    order: bool = False,
    unsafe_hash: bool = False,
    match_args: bool = True,
    kw_only: bool = False,
    slots: bool = False,
    weakref_slot: bool = False,
) -> Any:
    """``dataclasses.dataclass`` for Pytree/Module subclasses.

    The generated ``__eq__`` would compare Variables element-wise, so objects
    keep identity semantics (``eq`` is accepted for compatibility and only
    takes effect when ``unsafe_hash`` or ``order`` need it).

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> @ramie.dataclass
        ... class Scale(ramie.Module):
        ...     factor: ramie.Param
        ...     name: str = ramie.static(default="scale")
        >>> Scale(ramie.Param(jnp.ones(3))).name
        'scale'
    """

    def wrap(c: type) -> type:
        return dataclasses.dataclass(
            c,
            init=init,
            eq=False,
            order=order,
            unsafe_hash=unsafe_hash,
            match_args=match_args,
            kw_only=kw_only,
            slots=slots,
            weakref_slot=weakref_slot,
        )

    return wrap if cls is None else wrap(cls)


def register_data_type(type_: type, /) -> type:
    """Treat instances of ``type_`` as data leaves (like arrays) inside graphs.

    Example:
        >>> import ramie
        >>> class Buffer:
        ...     pass
        >>> _ = ramie.register_data_type(Buffer)
        >>> ramie.is_data(Buffer())
        True
    """
    registry._cache[type_] = registry.ARRAY  # pyright: ignore[reportPrivateUsage]
    return type_


def is_data(value: Any, /) -> bool:
    """True for values ramie stores as data: arrays, Variables, graph objects."""
    return registry.kind_of(value) in registry.DATA_KINDS


def has_data(value: Any, /) -> list[Any]:
    """The data leaves (arrays, Variables, graph objects) found inside ``value``.

    The list is empty (falsy) when ``value`` holds only static values.
    """
    out: list[Any] = []

    def walk(v: Any, depth: int) -> None:
        k = registry.kind_of(v)
        if k in registry.DATA_KINDS:
            out.append(v)
        elif k is registry.STATIC or depth > 64:
            return
        elif k is registry.DICT:
            for c in v.values():
                walk(c, depth + 1)
        elif k in (registry.LIST, registry.TUPLE, registry.NAMEDTUPLE):
            for c in v:
                walk(c, depth + 1)
        else:
            for _, c in registry.one_level(v)[0]:
                walk(c, depth + 1)

    walk(value, 0)
    return out


def check_pytree(pytree: Any) -> None:
    """Validate a graph object (ramie cannot misclassify attributes; see module docs).

    Raises:
        TypeError: if ``pytree`` is not a ramie graph object.
    """
    from ramie._src.core.pytree import Pytree

    if not isinstance(pytree, Pytree):
        raise TypeError(
            "check_pytree(): expected a ramie Pytree/Module, got "
            f"{type(pytree).__name__}"
        )
