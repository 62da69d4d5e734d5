"""Data/static markers and dataclass support for graph objects.

Every attribute of a Pytree is *data* (a JAX pytree child: arrays, Variables,
sub-modules) or *static* (part of the tree structure). By default ramie
classifies an attribute by its value each time the object is flattened, so a
plain list of sub-modules is data and no attribute can be misclassified.
``self.x = ramie.data(v)`` and ``self.n = ramie.static(v)`` override that for
one attribute, and the choice sticks until another marker is assigned: a
data-marked ``int`` becomes a ``jax.tree`` leaf, and a static-marked attribute
refuses values holding arrays or Variables (they would be hashed into the tree
structure). Classes can mark fields with ``ramie.data()``/``ramie.static()``
field specifiers, ``dataclasses.field(metadata={"static": True})`` or the
annotations ``ramie.Data[T]``/``ramie.Static[T]``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Generic, TypeVar, get_origin

from ramie._src.core.graph import registry
from ramie._src.core.sentinels import MISSING

A = TypeVar("A")


class Marked:
    """A value wrapped by :func:`data` or :func:`static`, to be assigned.

    Assigning it to a Pytree attribute stores ``value`` and records the mark;
    anywhere else it is an error (the mark would be silently lost).
    """

    __slots__ = ("value", "is_data")

    def __init__(self, value: Any, is_data: bool):
        self.value = value
        self.is_data = is_data

    def __repr__(self) -> str:
        return f"ramie.{'data' if self.is_data else 'static'}({self.value!r})"


# Set once a marker was made: only then do containers need a nested-marker scan.
MARKERS_MADE = [False]


def _field(is_static: bool, kwargs: dict[str, Any]) -> Any:
    metadata = dict(kwargs.pop("metadata", {}) or {})
    metadata["static"] = is_static
    return dataclasses.field(metadata=metadata, **kwargs)


def data(value: Any = MISSING, /, **kwargs: Any) -> Any:
    """Mark an attribute as data: ``self.w = ramie.data(w)``.

    The attribute becomes a ``jax.tree`` child whatever its value (an ``int``
    becomes a leaf) and stays data on later assignments. Without a value,
    returns a ``dataclasses.field`` (keyword arguments are passed on) for
    :func:`dataclass` classes.

    Example:
        >>> import jax, ramie
        >>> class Counter(ramie.Pytree):
        ...     def __init__(self):
        ...         self.count = ramie.data(0)
        ...         self.name = "steps"
        >>> jax.tree.leaves(Counter())
        [0]
    """
    if value is MISSING:
        return _field(False, kwargs)
    MARKERS_MADE[0] = True
    return Marked(value, True)


def static(value: Any = MISSING, /, **kwargs: Any) -> Any:
    """Mark an attribute as static: ``self.n = ramie.static(4)``.

    The attribute is part of the tree structure and refuses values that hold
    arrays, Variables or graph objects. Without a value, returns a
    ``dataclasses.field`` for :func:`dataclass` classes.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> class Box(ramie.Pytree):
        ...     def __init__(self):
        ...         self.scale = ramie.static(jnp.float32(2.0))
        >>> Box()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ramie.errors.AttributeStatusError: Box.scale = ramie.static(...): Found data ...
    """
    if value is MISSING:
        return _field(True, kwargs)
    MARKERS_MADE[0] = True
    return Marked(value, False)


class Data(Generic[A]):
    """Annotation ``x: ramie.Data[jax.Array]``: the attribute is data."""


class Static(Generic[A]):
    """Annotation ``n: ramie.Static[int]``: the attribute is static."""


_ANNOTATION = re.compile(r"(?:^|\.)(Data|Static)\[")


def class_marks(cls: type, inherited: dict[str, bool]) -> dict[str, bool]:
    """``{attribute: is_data}`` declared by ``cls`` (and its bases).

    Reads field specifiers (:func:`data`/:func:`static` or
    ``dataclasses.field(metadata={"static": ...})``) and ``Data``/``Static``
    annotations, including string annotations.
    """
    marks = dict(inherited)
    for name, ann in cls.__dict__.get("__annotations__", {}).items():
        origin = get_origin(ann)
        if origin is Data or origin is Static:
            marks[name] = origin is Data
        elif isinstance(ann, str) and (m := _ANNOTATION.search(ann)):
            marks[name] = m.group(1) == "Data"
    for name, value in cls.__dict__.items():
        if isinstance(value, dataclasses.Field) and "static" in value.metadata:
            marks[name] = not value.metadata["static"]
    return marks


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
        c = dataclasses.dataclass(
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
        _mark_container_fields(c)
        return c

    return wrap if cls is None else wrap(cls)


_CONTAINER_TYPES = (list, dict, tuple, set, frozenset)
_CONTAINER_NAME = re.compile(
    r"^(?:typing\.)?(list|dict|tuple|set|frozenset|List|Dict|Tuple|Set)(?:\[|$)"
)


def _is_container_annotation(ann: Any) -> bool:
    if isinstance(ann, str):
        return bool(_CONTAINER_NAME.match(ann.strip()))
    return ann in _CONTAINER_TYPES or get_origin(ann) in _CONTAINER_TYPES


def _mark_container_fields(c: type) -> None:
    """Make unmarked fields annotated with a plain container static (as Flax).

    In a ``ramie.dataclass`` a field such as ``filters: list`` holds
    configuration; storing Modules or Variables in it is an error that
    names ``ramie.data()`` / ``ramie.List`` as the fix. Lists assigned in a
    hand-written ``__init__`` are not affected.
    """
    marks = getattr(c, "_ramie_class_marks", None)
    if marks is None:  # not a ramie graph object
        return
    names = [
        f.name
        for f in dataclasses.fields(c)
        if f.name not in marks and _is_container_annotation(f.type)
    ]
    if names:
        c._ramie_class_marks = {**marks, **dict.fromkeys(names, False)}  # type: ignore[attr-defined]
        c._ramie_container_fields = frozenset(  # type: ignore[attr-defined]
            (*getattr(c, "_ramie_container_fields", ()), *names)
        )


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
