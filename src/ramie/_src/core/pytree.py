"""Graph objects: the base class of Modules, Rngs, Optimizers and containers.

A :class:`Pytree` is a Python object with identity whose attributes form part
of an object graph: Variables, other graph objects, plain lists/dicts/tuples of
them, arrays, and static values. Three things happen on every attribute write:

* a *structural* change (a different object stored, an attribute added or
  deleted) increments the object's version and the global epoch, so caches
  keyed on graph structure (``ramie.jit``'s fast path) notice it;
* storing a plain array where a Variable lives updates the Variable's value
  instead of silently replacing it (``self.count = self.count + 1`` keeps
  ``count`` a ``Counter``);
* children get a weak link to their parent, so errors can print paths.

Subclasses are also JAX pytrees (opt out with ``class X(Pytree, pytree=False)``):
their data attributes are the children and the rest is static, so
``jax.tree.map`` and raw ``jax.jit`` accept modules. An attribute is data when
its value holds arrays, Variables or graph objects, unless it was marked with
``ramie.data``/``ramie.static`` (see ``data.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

import jax
import numpy as np

from ramie._src.core import links
from ramie._src.core.data import MARKERS_MADE, Marked, class_marks
from ramie._src.core.epoch import EPOCH
from ramie._src.core.graph import registry
from ramie._src.core.graph.registry import ARRAY, OBJECT, VARIABLE, kind_of
from ramie._src.core.paths import format_path
from ramie._src.core.tracing import current_trace
from ramie._src.core.tracked import track
from ramie._src.core.variables import (
    Variable,
    _set_watch,
    freeze_metadata,
    hashable,
    unhashable,
)
from ramie.errors import AttributeStatusError, GraphStructureError

_SLOTS = (
    "_ramie_ver",
    "_ramie_link",
    "_ramie_acyclic",
    "_ramie_marks",
    # keys that were data children when the object was rebuilt by
    # jax.tree_util although their value holds no data (a prefix tree such as
    # vmap's `in_axes`, built with jax.tree.map, holds 0/None there)
    "_ramie_datakeys",
    # on a Module-shaped tree made by ramie.prefix(..., graph=False): the
    # same prefix as a State, for ramie's transforms
    "_ramie_prefix",
    # the JAX trace the object was constructed under (None: eagerly); unset
    # for objects rebuilt by ramie or jax.tree_util, which may be changed
    # under any trace
    "_ramie_trace",
)
_SLOT_SET = frozenset(_SLOTS)
_NOTSET = object()
_NUMBER_TYPES = (int, float, complex, bool)
_SCALAR_CLASSES = (int, float, complex, bool, np.generic)


class Pytree:
    """Base class of every ramie graph object (Modules, Rngs, Optimizers...).

    Attributes hold the object's children. Subclasses are registered as JAX
    pytrees unless declared with ``pytree=False``.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> class Box(ramie.Pytree):
        ...     def __init__(self):
        ...         self.w = ramie.Param(jnp.ones(2))
        ...         self.name = "box"
        >>> jax.tree.map(lambda x: x * 2, Box()).w.value
        Array([2., 2.], dtype=float32)
    """

    __slots__ = ("__dict__", "__weakref__", *_SLOTS)
    _ramie_is_pytree: bool = True
    # {attribute: is_data} declared by the class (field specifiers, annotations).
    _ramie_class_marks: dict[str, bool] = {}

    def __new__(cls, /, *args: Any, **kwargs: Any) -> Any:
        obj = object.__new__(cls)
        _VER_SET(obj, 0)
        _LINK_SET(obj, None)
        _TRACE_SET(obj, current_trace())
        return obj

    def __init_subclass__(cls, *, pytree: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._ramie_is_pytree = pytree
        cls._ramie_class_marks = class_marks(cls, cls._ramie_class_marks)
        if pytree:
            _register_pytree(cls)

    # ----------------------------------------------------------- attributes
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SLOT_SET:
            object.__setattr__(self, name, value)
            return
        t = type(value)
        if t is Marked:
            value = _apply_mark(self, name, value)
            t = type(value)
        elif type(self)._ramie_class_marks or _instance_marks(self):
            _check_static(self, name, value)
        d = self.__dict__
        old = d.get(name, _NOTSET)
        if old is value:
            return
        if t is list or t is dict or t is tuple:
            if MARKERS_MADE[0]:
                _check_no_nested_marks(self, name, value)
            value = track(value)
        if (
            old is not _NOTSET
            and isinstance(old, Variable)
            and not isinstance(value, Variable)
            and (kind_of(value) is ARRAY or isinstance(value, _SCALAR_CLASSES))
        ):
            # `self.count = self.count + 1`: keep the Variable, update its value.
            set_variable(self, name, old, value)
            return
        made_under = getattr(self, "_ramie_trace", _NOTSET)
        if made_under is not _NOTSET and made_under is not current_trace():
            raise _outer_object_error(self, name, made_under)
        d[name] = value
        _VER_SET(self, version_of(self) + 1)
        EPOCH.value += 1
        if kind_of(value) is not registry.STATIC:
            links.link_children(self, name, value)

    def __delattr__(self, name: str) -> None:
        if name in _SLOT_SET:
            object.__delattr__(self, name)
            return
        try:
            del self.__dict__[name]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}"
            ) from None
        _VER_SET(self, version_of(self) + 1)
        EPOCH.value += 1

    # -------------------------------------------------------- graph protocol
    def _graph_children(self) -> list[tuple[Hashable, Any]]:
        """``(key, value)`` pairs of this node's children, in a stable order."""
        d = self.__dict__
        try:
            return sorted(d.items())
        except TypeError:
            return sorted(d.items(), key=lambda kv: (type(kv[0]).__name__, str(kv[0])))

    def _graph_rebuild(self, children: dict[Hashable, Any]) -> None:
        """Install ``children`` on a freshly created, empty instance."""
        self.__dict__.update(children)

    def _graph_replace(self, children: dict[Hashable, Any]) -> None:
        """Replace all children in place (structural write-back of transforms)."""
        self.__dict__.clear()
        self._graph_rebuild(children)
        bump(self)

    def _graph_get(self, key: Hashable, default: Any = _NOTSET) -> Any:
        """One child by key (``default`` when absent)."""
        return (
            self.__dict__.get(key, default)
            if default is not _NOTSET
            else self.__dict__[key]
        )

    def _graph_getter(self) -> Callable[[Hashable, Any], Any]:
        """A ``get(key, default)`` for looking up many children in a row.

        ``update`` uses it; a miss is retried through ``_graph_get``, so a
        getter may cover only the common keys. By default it is the instance
        dict's ``get`` (or ``_graph_get`` where a subclass overrides that);
        containers override it with a faster lookup of their own.
        """
        if type(self)._graph_get is Pytree._graph_get:
            return self.__dict__.get
        return self._graph_get

    def _graph_set(self, key: Hashable, value: Any) -> None:
        """Replace one child (used by update and structural write-back)."""
        setattr(self, key, value)  # type: ignore[arg-type]

    def _graph_del(self, key: Hashable) -> None:
        delattr(self, key)  # type: ignore[arg-type]

    @property
    def _pytree__state(self) -> Any:
        """Flax's name for an object's bookkeeping; ramie's is its version."""
        import types

        return types.SimpleNamespace(version=version_of(self))

    # --------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        init_slots(self)
        self.__dict__.update(state)

    def __repr__(self) -> str:
        from ramie._src.display.repr import object_repr

        return object_repr(self)

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        from ramie._src.display.treescope import render_object

        return render_object(self, path, subtree_renderer)


_VER_SET = Pytree._ramie_ver.__set__  # type: ignore[attr-defined]
_VER_GET = Pytree._ramie_ver.__get__  # type: ignore[attr-defined]
_LINK_SET = Pytree._ramie_link.__set__  # type: ignore[attr-defined]
_TRACE_SET = Pytree._ramie_trace.__set__  # type: ignore[attr-defined]


def _outer_object_error(obj: Pytree, name: str, made_under: Any) -> Exception:
    from ramie._src.core.tracing import describe_trace
    from ramie.errors import TraceContextError, flax_compatible

    cls = type(obj).__name__
    return flax_compatible(TraceContextError)(
        f"Cannot mutate {cls!r} from different trace level: setting {name!r} on "
        f"{links.describe(obj)}, which was created under "
        f"{describe_trace(made_under)}, inside "
        f"{describe_trace(current_trace())}. A value set there may be a "
        "tracer, which would escape the transform.\n"
        "  Fix: pass the object to the function and return it, e.g.\n"
        "      @jax.jit\n"
        "      def f(obj):\n"
        f"          obj.{name} = ...\n"
        "          return obj\n"
        "  or use the ramie transform (ramie.jit), which carries changes out."
    )


_ACYC_SET = Pytree._ramie_acyclic.__set__  # type: ignore[attr-defined]


def init_slots(obj: Pytree) -> None:
    """Initialise the bookkeeping slots of an object made with ``object.__new__``.

    Only the version is required; the link and the acyclic marker are read
    with defaults.
    """
    _VER_SET(obj, 0)


def _acyclic_epoch(obj: Pytree) -> int:
    return getattr(obj, "_ramie_acyclic", -1)


def version_of(obj: Any) -> int:
    """Structural version of a graph object (0 until first changed)."""
    return getattr(obj, "_ramie_ver", 0)


def bump(obj: Pytree) -> None:
    """Record a structural change made without ``__setattr__``."""
    _VER_SET(obj, version_of(obj) + 1)
    EPOCH.value += 1


def set_variable(owner: Pytree, name: Any, var: Variable, value: Any) -> None:
    """``var.set_value(value)`` for ``owner.<name> = value``, naming the owner
    in the error when the Variable belongs to another trace."""
    from ramie.errors import TraceContextError, flax_compatible

    try:
        var.set_value(value)
    except TraceContextError as e:
        raise flax_compatible(TraceContextError)(
            f"Cannot mutate {type(owner).__name__!r} from different trace level "
            f"(setting {name!r}). {e.args[0]}"
        ) from None


# --------------------------------------------------------- data/static marks
def _instance_marks(obj: Pytree) -> dict[str, bool] | None:
    return getattr(obj, "_ramie_marks", None)


def marks_of(obj: Pytree) -> dict[str, bool]:
    """``{attribute: is_data}`` for every marked attribute of ``obj``."""
    inst = _instance_marks(obj)
    cls_marks = type(obj)._ramie_class_marks
    if not inst:
        return cls_marks
    return {**cls_marks, **inst}


def data_marks(obj: Any) -> dict[str, bool] | None:
    """``marks_of(obj)`` when any attribute of ``obj`` is marked, else None.

    Graph walks use it to find Python numbers marked as data
    (``self.count = ramie.data(0)``): those are state leaves, like arrays.
    """
    inst = getattr(obj, "_ramie_marks", None)
    cls_marks = getattr(type(obj), "_ramie_class_marks", None)
    if not inst and not cls_marks:
        return None
    return {**cls_marks, **inst} if inst and cls_marks else (inst or cls_marks)


def is_data_number(marks: dict[str, bool] | None, key: Any, value: Any) -> bool:
    """Whether ``value`` (a child of an object with ``marks``) is a marked number."""
    return marks is not None and type(value) in _NUMBER_TYPES and bool(marks.get(key))


def _status_of(obj: Pytree, name: str) -> tuple[bool | None, bool]:
    """``(is_data, marked_on_the_class)``; ``is_data`` is None when unmarked."""
    inst = _instance_marks(obj)
    if inst and name in inst:
        return inst[name], False
    status = type(obj)._ramie_class_marks.get(name)
    return status, status is not None


def _type_name(value: Any) -> str:
    return "jax.Array" if isinstance(value, jax.Array) else type(value).__name__


def _data_types(value: Any) -> str:
    from ramie._src.core.data import has_data

    names = sorted({_type_name(v) for v in has_data(value)})
    return ", ".join(names)


def _apply_mark(obj: Pytree, name: str, marked: Marked) -> Any:
    value = marked.value
    cls = type(obj).__name__
    if not marked.is_data and registry.has_data(value):
        raise AttributeStatusError(
            f"{cls}.{name} = ramie.static(...): Found data in value of type "
            f"'{_type_name(value)}'; static "
            f"attributes are part of the pytree structure and cannot hold "
            f"{_data_types(value)}.\n"
            "  Mark it as data, or leave it unmarked to classify it by value:\n"
            f"      self.{name} = ramie.data(value)"
        )
    inst = _instance_marks(obj)
    if type(obj)._ramie_class_marks.get(name) == marked.is_data:
        if inst and name in inst:
            del inst[name]
    else:
        if inst is None:
            inst = {}
            object.__setattr__(obj, "_ramie_marks", inst)
        inst[name] = marked.is_data
    return value


def _check_static(obj: Pytree, name: str, value: Any) -> None:
    is_data, on_class = _status_of(obj, name)
    if is_data is not False or not registry.has_data(value):
        return
    cls = type(obj).__name__
    if name in getattr(type(obj), "_ramie_container_fields", ()):
        raise AttributeStatusError(
            f"{cls}.{name}: Found data on value of type '{_type_name(value)}' "
            f"assigned to static field '{name}'; it holds {_data_types(value)}. "
            f"A ramie.dataclass field annotated with a plain container is static "
            "configuration.\n"
            "  Declare the field as data, e.g.\n"
            f"      {name}: {_type_name(value)} = ramie.data()"
        )
    if on_class:
        raise AttributeStatusError(
            f"{cls}.{name}: Found unexpected data on value of type "
            f"'{_type_name(value)}' in static attribute '{name}' (declared "
            f"static on {cls}); it holds {_data_types(value)}.\n"
            "  Declare the field as data, e.g.\n"
            f"      {name}: {_type_name(value)} = ramie.data()"
        )
    raise AttributeStatusError(
        f"{cls}.{name}: Found data on value of type '{_type_name(value)}' "
        f"assigned to static attribute '{name}' (marked with ramie.static); it "
        f"holds {_data_types(value)}.\n"
        "  Mark it as data on assignment:\n"
        f"      self.{name} = ramie.data(value)"
    )


def _check_no_nested_marks(obj: Pytree, name: str, value: Any) -> None:
    def walk(v: Any, depth: int) -> bool:
        if type(v) is Marked:
            return True
        if depth > 32:
            return False
        if type(v) is dict:
            return any(walk(c, depth + 1) for c in v.values())
        if type(v) in (list, tuple):
            return any(walk(c, depth + 1) for c in v)
        return False

    if walk(value, 0):
        raise AttributeStatusError(
            f"{type(obj).__name__}.{name}: Found unexpected tags inside a "
            f"'{type(value).__name__}': ramie.data(...)/ramie.static(...) mark "
            "a whole attribute and must be assigned to it directly.\n"
            "  Mark the attribute instead, e.g.\n"
            f"      self.{name} = ramie.data([...])"
        )


class Object(Pytree, pytree=False):
    """A graph object that is *not* a JAX pytree (Flax's legacy base class).

    Its subclasses are not pytrees either, unless declared with ``pytree=True``.
    """

    def __init_subclass__(cls, *, pytree: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(pytree=pytree, **kwargs)


# ----------------------------------------------------------- pytree support
def _check_acyclic(root: Pytree) -> None:
    """Raise if ``root``'s graph has a cycle (JAX pytrees must be trees)."""
    epoch = EPOCH.value
    if _acyclic_epoch(root) == epoch:
        return
    on_stack: set[int] = set()
    done: set[int] = set()

    def visit(node: Any, path: tuple) -> None:
        k = kind_of(node)
        if k is OBJECT:
            i = id(node)
            if i in on_stack:
                raise GraphStructureError(
                    f"jax.tree_util: the graph of {type(root).__name__} has a "
                    f"reference cycle at {format_path(path)}; JAX pytrees must be "
                    "trees.\n"
                    "  Use ramie's graph-aware API instead, which supports cycles:\n"
                    "      graphdef, state = ramie.split(model)   "
                    "# or ramie.jit(f)(model)"
                )
            if i in done:
                return
            on_stack.add(i)
            for key, child in node._graph_children():
                visit(child, path + (key,))
            on_stack.discard(i)
            done.add(i)
            _ACYC_SET(node, epoch)
        elif k in registry.CONTAINERS:
            if k is registry.DICT:
                items: Iterable = node.items()
            elif k is registry.PYTREE:
                items = registry.one_level(node)[0]
            else:
                items = enumerate(node)
            for key, child in items:
                visit(child, path + (key,))

    visit(root, ())


def _classify_children(obj: Pytree) -> tuple[list, list, tuple]:
    keys, values, static = [], [], []
    marks = marks_of(obj)
    sticky = getattr(obj, "_ramie_datakeys", None)
    for k, v in obj._graph_children():
        is_data = marks.get(k) if marks else None  # type: ignore[call-overload]
        if is_data is None:
            is_data = registry.has_data(v) or (sticky is not None and k in sticky)
        if is_data:
            keys.append(k)
            values.append(v)
        else:
            static.append((k, hashable(v)))
    return keys, values, tuple(static)


def _register_pytree(cls: type) -> None:
    def flatten(obj: Pytree):
        _check_acyclic(obj)
        keys, values, static = _classify_children(obj)
        return values, (tuple(keys), static, _marks_key(obj))

    def flatten_with_keys(obj: Pytree):
        _check_acyclic(obj)
        keys, values, static = _classify_children(obj)
        children = [(_attr_key(k), v) for k, v in zip(keys, values)]
        return children, (tuple(keys), static, _marks_key(obj))

    def unflatten(aux: tuple, children: Iterable[Any]) -> Pytree:
        keys, static, marks = aux
        obj = object.__new__(cls)
        init_slots(obj)
        if marks:
            object.__setattr__(obj, "_ramie_marks", dict(marks))
        items: dict[Hashable, Any] = dict(zip(keys, children))
        sticky = [k for k in keys if not registry.has_data(items[k])]
        if sticky:
            object.__setattr__(obj, "_ramie_datakeys", frozenset(sticky))
        for k, v in static:
            items[k] = unhashable(v)
        obj._graph_rebuild(dict(sorted(items.items(), key=_sort_key)))
        _after_unflatten(obj, keys, items)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)


def _marks_key(obj: Pytree) -> tuple:
    inst = _instance_marks(obj)
    return tuple(sorted(inst.items())) if inst else ()


def _sort_key(kv: tuple) -> tuple:
    k = kv[0]
    return (type(k).__name__, k) if not isinstance(k, str) else ("str", k)


def _attr_key(k: Hashable) -> Any:
    if isinstance(k, str):
        return jax.tree_util.GetAttrKey(k)
    if isinstance(k, int):
        return jax.tree_util.SequenceKey(k)
    return jax.tree_util.DictKey(k)


def _after_unflatten(obj: Pytree, keys: tuple, items: dict) -> None:
    """Link children to their new parent; watch Variables unflattened in a trace."""
    from ramie._src.core.tracing import current_trace

    tracing = current_trace() is not None
    pref = None
    for k in keys:
        v = items[k]
        kind = kind_of(v)
        if kind is VARIABLE or kind is OBJECT:
            if pref is None:
                pref = links.parent_ref(obj)
            links.set_link(v, pref, (k,))
            if tracing and kind is VARIABLE and v._watch is None:
                _set_watch(v, [False, False])
        elif kind is not registry.STATIC and kind is not ARRAY:
            if pref is None:
                pref = links.parent_ref(obj)
            links.link_children(obj, k, v, pref)
            if tracing:
                _watch_nested(v)


def _watch_nested(value: Any) -> None:
    for leaf in jax.tree_util.tree_leaves(
        value, is_leaf=lambda x: isinstance(x, Variable)
    ):
        if isinstance(leaf, Variable) and leaf._watch is None:
            _set_watch(leaf, [False, False])


_ = freeze_metadata
