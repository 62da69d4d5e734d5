"""Variables: typed, mutable boxes that hold a model's state.

A :class:`Variable` owns one value (usually a ``jax.Array``) plus metadata. Its
*type* says what the value is for: :class:`Param` (trained), :class:`BatchStat`
(running statistics), :class:`Cache` (decode caches), :class:`Intermediate`
(sown values), RNG state, or any user subclass (``class Counter(Variable):
pass``). Filters select state by type, so the type is the collection.

A Variable behaves like its value: arithmetic, comparisons, indexing,
``jnp.dot(x, param)`` and ``np.asarray(param)`` all work. Reading and writing
use ``.value`` (never deprecated here), ``v[...]`` or ``get_value``/``set_value``.
In-place operators update the box: ``self.count += 1`` changes the Variable and
keeps its identity.

A Variable remembers the JAX trace it was created under and refuses a new value
under another trace (a tracer would escape the transform). Variables are JAX
pytrees whose single leaf is the value, so ``jax.tree.map`` over a State of
Variables returns a State of new Variables with the same types and metadata.
"""

from __future__ import annotations

import operator
import warnings
import weakref
from collections.abc import Callable, Hashable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from ramie._src.core import links
from ramie._src.core.epoch import EPOCH
from ramie._src.core.modes import current_var_modes
from ramie._src.core.sentinels import MISSING
from ramie._src.core.tracing import current_trace, describe_trace
from ramie._src.core.variable_modes import (
    _BoxType,
    _RefType,
    _Tracer,
    is_box_value,
    is_ref_value,
    mode_storage,
    modes_of,
    write_ref,
)
from ramie._src.display.arrays import array_repr
from ramie.errors import LostStateWarning, TraceContextError, flax_compatible

A = TypeVar("A")

# One stable name per concept; older spellings are accepted everywhere.
METADATA_ALIASES: dict[str, str] = {
    "sharding": "out_sharding",
    "sharding_names": "out_sharding",
}


def canonical_metadata_name(name: str) -> str:
    return METADATA_ALIASES.get(name, name)


class _Hashed:
    """Wraps an unhashable metadata or static value so it can sit in a hash key."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __hash__(self) -> int:
        return hash(type(self.value).__name__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Hashed):
            return False
        if self.value is other.value:
            return True
        try:
            return bool(self.value == other.value)
        except Exception:
            return False

    def __repr__(self) -> str:
        return repr(self.value)


def hashable(value: Any) -> Any:
    """``value`` itself when hashable, else a wrapper comparing by ``==``."""
    try:
        hash(value)
        return value
    except TypeError:
        return _Hashed(value)


def unhashable(value: Any) -> Any:
    return value.value if type(value) is _Hashed else value


def freeze_metadata(meta: Mapping[str, Any]) -> tuple:
    if not meta:
        return ()
    return tuple((k, hashable(v)) for k, v in sorted(meta.items()))


def thaw_metadata(frozen: tuple) -> dict[str, Any]:
    return {k: unhashable(v) for k, v in frozen}


class VariableMetadata(Generic[A]):
    """An initial value bundled with metadata, turned into a Variable by its type.

    Initializers wrapped with :func:`with_metadata` return this, so that a layer
    that does ``Param(init(key, shape))`` creates a Param carrying the metadata.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> p = ramie.Param(ramie.VariableMetadata(jnp.ones(2), metadata={"tag": "w"}))
        >>> p.tag
        'w'
    """

    __slots__ = ("raw_value", "metadata")

    def __init__(self, raw_value: A, metadata: Mapping[str, Any] | None = None, **kw):
        self.raw_value = raw_value
        md = dict(metadata or {})
        md.update(kw)
        self.metadata = md

    def __repr__(self) -> str:
        return f"VariableMetadata({array_repr(self.raw_value)}, {self.metadata!r})"


# Metadata every Variable reports (as Flax does) without storing it.
DEFAULT_METADATA: dict[str, Any] = {
    "hijax": False,
    "ref": False,
    "eager_sharding": True,
}

_SLOTS = ("_store", "_meta", "_trace", "_link", "_watch")
_OWN_ATTRS = frozenset(_SLOTS) | {"__dict__", "__weakref__", "_raw"}


def _unwrap(x: Any) -> Any:
    return x._raw if isinstance(x, Variable) else x


_PYTHON_VALUES = (list, bool, int, float, complex)


def _python_to_array(var: Variable, value: Any) -> Any:
    """A Python list or number assigned to an array Variable, as an array.

    Converted once, at assignment (the loading policy): it takes the
    Variable's dtype when that loses nothing (``v.value = 0`` on a float32
    Variable), else JAX's default dtype for it.
    """
    from ramie._src.core.loading import _weak_fits, canonicalize

    arr = canonicalize(value, api=f"{type(var).__name__}.value = ...")
    dtype = getattr(var._raw, "dtype", None)
    if dtype is not None and arr.dtype != dtype and _weak_fits(arr.dtype, dtype):
        arr = jax.lax.convert_element_type(arr, dtype)
    return arr


def _is_jax_array(x: Any) -> bool:
    return isinstance(x, jax.Array)


class Variable(Generic[A]):
    """A mutable box holding one piece of a model's state.

    Args:
        value: The initial value, usually a ``jax.Array``; any pytree works. A
            :class:`VariableMetadata` contributes its metadata too.
        **metadata: Extra information kept with the value, such as
            ``out_sharding`` (also accepted as ``sharding`` or
            ``sharding_names``). Read it as an attribute (``v.out_sharding``).

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> class Counter(ramie.Variable):
        ...     pass
        >>> c = Counter(jnp.array(0))
        >>> c += 1
        >>> c.value
        Array(1, dtype=int32, weak_type=True)
        >>> c
        Counter(value=Array(1, dtype=int32, weak_type=True))
    """

    __slots__ = (*_SLOTS, "__weakref__")
    _ramie_hooks: tuple[bool, bool] = (False, False)  # get_value/set_value overridden
    required_metadata: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        value: A,
        *,
        hijax: bool | None = None,
        ref: bool | None = None,
        eager_sharding: bool | None = None,
        **metadata: Any,
    ):
        meta: dict[str, Any] = {}
        if isinstance(value, VariableMetadata):
            meta.update(value.metadata)
            value = value.raw_value
        elif isinstance(value, Variable):
            meta.update(value._meta)
            value = value._raw
        for k, v in metadata.items():
            meta[canonical_metadata_name(k)] = v
        if eager_sharding is not None:
            meta["eager_sharding"] = eager_sharding
        hijax = meta.pop("hijax", None) if hijax is None else hijax
        ref = meta.pop("ref", None) if ref is None else ref
        meta.pop("hijax", None), meta.pop("ref", None)
        if is_ref_value(value):
            ref = True if ref is None else ref
        if hijax is None or ref is None:
            d_hijax, d_ref = current_var_modes()
            hijax = d_hijax if hijax is None else hijax
            ref = d_ref if ref is None else ref
        if hijax or ref:
            value = mode_storage(value, meta, hijax=bool(hijax), ref=bool(ref))
        _set_raw(self, value)
        _set_meta(self, meta)
        _set_trace(self, current_trace())
        _set_link(self, None)
        _set_watch(self, None)
        if "out_sharding" in meta and meta.get("eager_sharding", True):
            _maybe_shard_eagerly(self)

    # ------------------------------------------------------------------ values
    @property
    def _raw(self) -> Any:
        """The held value (a ``jax.Ref`` cell is read through)."""
        s = _get_raw(self)
        t = type(s)
        if t is _RefType:
            return s[...]
        if t is _BoxType:
            return s.get()
        if isinstance(s, _Tracer):
            if is_ref_value(s):
                return s[...]
            if is_box_value(s):
                return s.get()
        return s

    @_raw.setter
    def _raw(self, value: Any) -> None:
        s = _get_raw(self)
        if is_ref_value(s) and not is_ref_value(value):
            write_ref(self, s, value)
        elif is_box_value(s) and not is_box_value(value):
            s.set(value)
        else:
            _set_raw(self, value)

    @property
    def hijax(self) -> bool:
        """Whether plain JAX transforms see this Variable's updates (a ``jax.Ref``)."""
        return "hijax" in self._meta

    @property
    def ref(self) -> bool:
        """Whether the raw value is a ``jax.Ref`` (``get_raw_value()`` returns it)."""
        return "ref" in self._meta

    @property
    def mutable(self) -> bool:
        """False for a frozen copy (``ramie.with_vars(v, mutable=False)``)."""
        return self._meta.get("mutable", True) is not False

    @property
    def value(self) -> A:
        """The held value (read and write). ``v.value`` is never deprecated."""
        return self.get_value() if self._ramie_hooks[0] else self._raw

    @value.setter
    def value(self, value: A) -> None:
        self.set_value(value)

    def get_value(self, *, index: Any = MISSING) -> A:
        """The held value, or ``value[index]`` when ``index`` is given."""
        if index is MISSING:
            return self._raw
        return self._raw[index]  # type: ignore[index]

    def set_value(self, value: Any, *, index: Any = MISSING) -> None:
        """Replace the value (or ``value[index]``, functionally).

        Raises:
            TraceContextError: when called inside a JAX transform on a
                Variable created outside it.
        """
        if isinstance(value, Variable):
            value = value._raw
        if index is not MISSING:
            value = _set_at(self._raw, index, value)
        elif isinstance(value, _PYTHON_VALUES) and hasattr(self._raw, "shape"):
            value = _python_to_array(self, value)
        s = _get_raw(self)
        if type(s) is _RefType or (isinstance(s, _Tracer) and is_ref_value(s)):
            write_ref(self, s, value)
            return
        if type(s) is _BoxType or (isinstance(s, _Tracer) and is_box_value(s)):
            s.set(value)
            return
        self._check_mutable()
        _set_raw(self, value)

    @property
    def raw_value(self) -> A:
        return self._raw

    @raw_value.setter
    def raw_value(self, value: A) -> None:
        self.set_raw_value(value)

    def get_raw_value(self) -> A:
        """The stored value: the ``jax.Ref`` itself for a ``ref=True`` Variable."""
        return _get_raw(self) if "ref" in self._meta else self._raw

    def set_raw_value(self, value: A) -> None:
        s = _get_raw(self)
        if (is_ref_value(s) and not is_ref_value(value)) or (
            is_box_value(s) and not is_box_value(value)
        ):
            self.set_value(value)
            return
        self._check_mutable()
        _set_raw(self, value)

    def _check_mutable(self) -> None:
        if self._meta.get("mutable", True) is False:
            raise _immutable_error(self)
        trace = current_trace()
        if trace is not self._trace:
            raise _outer_trace_error(self, trace)
        watch = self._watch
        if watch is not None and not watch[1]:
            _arm_watch(self, watch, trace)

    def __getitem__(self, index: Any) -> Any:
        raw = self.get_value() if self._ramie_hooks[0] else self._raw
        if index is Ellipsis and not hasattr(raw, "shape"):
            return raw
        return raw[index]  # type: ignore[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        value = _unwrap(value)
        old = self._raw
        if index is Ellipsis and (
            not hasattr(old, "shape") or getattr(value, "shape", None) == old.shape
        ):
            new = value
            dtype = getattr(old, "dtype", None)
            if dtype is not None and getattr(value, "dtype", dtype) != dtype:
                new = jnp.asarray(value, dtype)
        else:
            new = _set_at(old, index, value)
        if self._ramie_hooks[1]:  # a subclass transforms values on the way in
            self.set_value(new)
            return
        s = _get_raw(self)
        if type(s) is _RefType or (isinstance(s, _Tracer) and is_ref_value(s)):
            write_ref(self, s, new)
            return
        if type(s) is _BoxType or (isinstance(s, _Tracer) and is_box_value(s)):
            s.set(new)
            return
        self._check_mutable()
        _set_raw(self, new)

    # ---------------------------------------------------------------- metadata
    @property
    def type(self) -> type[Variable]:
        """The Variable's type (its collection)."""
        return type(self)

    var_type = type

    def get_metadata(
        self,
        name: str | None = None,
        default: Any = MISSING,
        *,
        exclude_required: bool | None = None,
    ) -> Any:
        """All metadata as a dict, or one entry by name.

        Entries never set read as Flax's defaults (:data:`DEFAULT_METADATA`:
        ``hijax=False``, ``ref=False``, ``eager_sharding=True``).

        Example:
            >>> import jax.numpy as jnp, ramie
            >>> p = ramie.Param(jnp.ones(2), sharding=("model",))
            >>> p.get_metadata("out_sharding"), p.get_metadata("sharding_names")
            (('model',), ('model',))
        """
        if name is None:
            meta = {**DEFAULT_METADATA, **self._meta}
            if exclude_required:
                for k in self.required_metadata:
                    meta.pop(k, None)
            return meta
        name = canonical_metadata_name(name)
        if name in self._meta:
            return self._meta[name]
        if name in DEFAULT_METADATA:
            return DEFAULT_METADATA[name]
        if default is MISSING:
            raise KeyError(
                f"{type(self).__name__}.get_metadata({name!r}): no such metadata; "
                f"available: {sorted(self._meta)}"
            )
        return default

    def set_metadata(self, *args: Any, **kwargs: Any) -> None:
        """Set metadata: ``set_metadata(name, value)``, ``set_metadata(**kw)``
        or ``set_metadata(mapping)`` (replaces all metadata)."""
        if len(args) == 1 and isinstance(args[0], Mapping):
            _set_meta(self, {canonical_metadata_name(k): v for k, v in args[0].items()})
        elif len(args) == 2:
            self._meta[canonical_metadata_name(args[0])] = args[1]
        elif args:
            raise TypeError(
                "Variable.set_metadata() takes a mapping, (name, value) or keywords; "
                f"got {len(args)} positional arguments"
            )
        for k, v in kwargs.items():
            self._meta[canonical_metadata_name(k)] = v
        EPOCH.meta += 1

    def has_metadata(self, name: str) -> bool:
        return canonical_metadata_name(name) in self._meta

    def del_metadata(self, name: str) -> None:
        del self._meta[canonical_metadata_name(name)]
        EPOCH.meta += 1

    @property
    def metadata(self) -> dict[str, Any]:
        """A copy of the metadata dict."""
        return dict(self._meta)

    @property
    def sharding_names(self) -> Any:
        return self._meta.get("out_sharding")

    @sharding_names.setter
    def sharding_names(self, value: Any) -> None:
        self.set_metadata(out_sharding=value)

    # --------------------------------------------------------------- copying
    def copy(self, value: Any = MISSING, **updates: Any) -> Variable[A]:
        """A new Variable of the same type; optionally with a new value/metadata."""
        meta = dict(self._meta)
        hijax = updates.pop("hijax", None)
        ref = updates.pop("ref", None)
        for k, v in updates.items():
            meta[canonical_metadata_name(k)] = v
        if hijax is None and ref is None and value is MISSING:
            if is_ref_value(_get_raw(self)):
                return _new_variable(
                    type(self), mode_storage(self._raw, meta, **modes_of(meta)), meta
                )
            return _new_variable(type(self), self._raw, meta)
        raw = self._raw if value is MISSING else _unwrap(value)
        hijax = "hijax" in meta if hijax is None else bool(hijax)
        ref = "ref" in meta if ref is None else bool(ref)
        meta.pop("hijax", None), meta.pop("ref", None)
        if hijax or ref:
            raw = mode_storage(raw, meta, hijax=hijax, ref=ref)
        return _new_variable(type(self), raw, meta)

    replace = copy

    def to_state(self) -> Variable[A]:
        """A detached copy (the name older code used for State leaves)."""
        return self.copy()

    def copy_from(self, other: Variable[A]) -> None:
        """Take value and metadata from ``other``."""
        self.set_value(other._raw)
        if other._meta != self._meta:
            _set_meta(self, dict(other._meta))
            EPOCH.meta += 1

    update_from_state = copy_from

    @classmethod
    def from_metadata(cls, value: Any, attributes: Mapping[str, Any]) -> Variable:
        meta = dict(attributes)
        hijax, ref = bool(meta.pop("hijax", False)), bool(meta.pop("ref", False))
        if hijax or ref:
            value = mode_storage(value, meta, hijax=hijax, ref=ref)
        return _new_variable(cls, value, meta)

    @classmethod
    def state_type(cls) -> type[Variable]:
        return cls

    def create_value(self, value: A) -> A:
        return value

    # -------------------------------------------------- axes (vmap / scan)
    def add_axis(self, axis_index: int, axis_name: str | None) -> None:
        """Called after a transform stacked this Variable along a new axis.

        The sharding metadata (``out_sharding``) is already updated by the
        transform (see ``transform_metadata`` of ``ramie.vmap``/``ramie.scan``);
        override this in a subclass to react to the new axis.
        """

    def remove_axis(self, axis_index: int, axis_name: str | None) -> None:
        """Called before a transform slices the stacked axis off this Variable."""

    # ------------------------------------------------------ array protocol
    @property
    def shape(self) -> tuple[int, ...]:
        return jnp.shape(self._raw)

    @property
    def dtype(self) -> Any:
        raw = self._raw
        return raw.dtype if hasattr(raw, "dtype") else jnp.result_type(raw)

    @property
    def ndim(self) -> int:
        return jnp.ndim(self._raw)

    @property
    def size(self) -> int:
        return int(np.prod(jnp.shape(self._raw)))

    def __jax_array__(self) -> Any:
        return self._raw

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        arr = np.asarray(self._raw)
        if dtype is not None:
            arr = arr.astype(dtype)
        return arr

    def __len__(self) -> int:
        return len(self._raw)  # type: ignore[arg-type]

    def __iter__(self):
        return iter(self._raw)  # type: ignore[call-overload]

    def __contains__(self, item: Any) -> bool:
        return item in self._raw  # type: ignore[operator]

    def __bool__(self) -> bool:
        return bool(self._raw)

    def __float__(self) -> float:
        return float(self._raw)  # type: ignore[arg-type]

    def __int__(self) -> int:
        return int(self._raw)  # type: ignore[call-overload]

    def __index__(self) -> int:
        return operator.index(self._raw)  # type: ignore[arg-type]

    def __complex__(self) -> complex:
        return complex(self._raw)  # type: ignore[arg-type]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._raw(*args, **kwargs)  # type: ignore[operator]

    def __hash__(self) -> int:
        return object.__hash__(self)

    def __format__(self, spec: str) -> str:
        return format(self._raw, spec)

    # ------------------------------------------------- attribute handling
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in _OWN_ATTRS:
            raise AttributeError(name)
        try:
            meta = object.__getattribute__(self, "_meta")
        except AttributeError:
            raise AttributeError(name) from None
        # `v.sharding` is the value's sharding, as for a jax.Array; the
        # annotation is `v.out_sharding` (older spelling: `v.sharding_names`).
        cname = name if name == "sharding" else canonical_metadata_name(name)
        if cname in meta:
            return meta[cname]
        raw = self._raw
        try:
            return getattr(raw, name)
        except AttributeError:
            raise AttributeError(
                f"{type(self).__name__!r} has no attribute or metadata {name!r}, "
                f"and its value of type {type(raw).__name__} has no attribute "
                f"{name!r} either"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN_ATTRS:
            object.__setattr__(self, name, value)
        elif name == "value":
            self.set_value(value)
        elif name == "raw_value":
            self.set_raw_value(value)
        elif name == "sharding_names":
            self.set_metadata(out_sharding=value)
        else:
            self.set_metadata(name, value)

    def __delattr__(self, name: str) -> None:
        if name in _OWN_ATTRS:
            object.__delattr__(self, name)
        else:
            self.del_metadata(name)

    # --------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        return {"raw": self._raw, "meta": dict(self._meta)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        _set_raw(self, state["raw"])
        _set_meta(self, dict(state["meta"]))
        _set_trace(self, current_trace())
        _set_link(self, None)
        _set_watch(self, None)

    def __repr__(self) -> str:
        parts = [f"value={array_repr(self._raw)}"]
        for k, v in self._meta.items():
            if k == "eager_sharding":
                continue
            parts.append(f"{k}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        from ramie._src.display.treescope import render_variable

        return render_variable(self, path, subtree_renderer)

    # ------------------------------------------------------ subclassing
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Subclasses overriding get_value/set_value see v[...] and .value go
        # through them; plain ones keep the direct slot access.
        cls._ramie_hooks = (
            cls.get_value is not Variable.get_value,
            cls.set_value is not Variable.set_value,
        )
        _register_variable_pytree(cls)


_set_raw = Variable._store.__set__  # type: ignore[attr-defined]
_set_meta = Variable._meta.__set__  # type: ignore[attr-defined]
_set_trace = Variable._trace.__set__  # type: ignore[attr-defined]
_set_link = Variable._link.__set__  # type: ignore[attr-defined]
_set_watch = Variable._watch.__set__  # type: ignore[attr-defined]
_get_raw = Variable._store.__get__  # type: ignore[attr-defined]
_get_meta = Variable._meta.__get__  # type: ignore[attr-defined]
_get_trace = Variable._trace.__get__  # type: ignore[attr-defined]
_get_link = Variable._link.__get__  # type: ignore[attr-defined]


def _new_variable(cls: type[Variable], raw: Any, meta: dict[str, Any]) -> Variable:
    """Create a Variable without running ``__init__`` (fast; used by merge)."""
    v = object.__new__(cls)
    _set_raw(v, raw)
    _set_meta(v, meta)
    _set_trace(v, current_trace())
    _set_link(v, None)
    _set_watch(v, None)
    return v


new_variable = _new_variable


def _set_at(old: Any, index: Any, value: Any) -> Any:
    if isinstance(old, (dict, list)):  # a pytree value: a copy with one entry set
        new = type(old)(old) if type(old) in (dict, list) else old.copy()
        new[index] = value
        return new
    if isinstance(old, np.ndarray):
        new = old.copy()
        new[index] = value
        return new
    if hasattr(old, "at"):
        return old.at[index].set(value)
    return jnp.asarray(old).at[index].set(value)


def _maybe_shard_eagerly(var: Variable) -> None:
    from ramie._src.core import sharding_hooks

    sharding_hooks.shard_on_create(var)


# --------------------------------------------------------- operator support
def _binary(op: Callable[[Any, Any], Any]) -> Callable[[Variable, Any], Any]:
    def method(self: Variable, other: Any) -> Any:
        return op(self._raw, _unwrap(other))

    return method


def _reflected(op: Callable[[Any, Any], Any]) -> Callable[[Variable, Any], Any]:
    def method(self: Variable, other: Any) -> Any:
        return op(_unwrap(other), self._raw)

    return method


def _inplace(op: Callable[[Any, Any], Any]) -> Callable[[Variable, Any], Any]:
    def method(self: Variable, other: Any) -> Variable:
        self.set_value(op(self._raw, _unwrap(other)))
        return self

    return method


def _unary(op: Callable[[Any], Any]) -> Callable[[Variable], Any]:
    def method(self: Variable) -> Any:
        return op(self._raw)

    return method


_BINARY = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
    "pow": operator.pow,
    "matmul": operator.matmul,
    "and": operator.and_,
    "or": operator.or_,
    "xor": operator.xor,
    "lshift": operator.lshift,
    "rshift": operator.rshift,
}
for _name, _op in _BINARY.items():
    setattr(Variable, f"__{_name}__", _binary(_op))
    setattr(Variable, f"__r{_name}__", _reflected(_op))
    setattr(Variable, f"__i{_name}__", _inplace(_op))
Variable.__divmod__ = _binary(divmod)
Variable.__rdivmod__ = _reflected(divmod)
for _name, _op in {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "eq": operator.eq,
    "ne": operator.ne,
}.items():
    setattr(Variable, f"__{_name}__", _binary(_op))
for _name, _op in {
    "neg": operator.neg,
    "pos": operator.pos,
    "abs": operator.abs,
    "invert": operator.invert,
}.items():
    setattr(Variable, f"__{_name}__", _unary(_op))
Variable.__hash__ = object.__hash__  # type: ignore[method-assign]  # __eq__ above reset it


# ---------------------------------------------------------- trace checking
def _outer_trace_error(var: Variable, trace: Any) -> TraceContextError:
    where = links.describe(var)
    created = describe_trace(var._trace)
    now = describe_trace(trace)
    return flax_compatible(TraceContextError)(
        f"Cannot mutate {type(var).__name__} from a different trace level: "
        f"{where} was created under {created} and is being "
        f"changed inside {now}.\n"
        "  A JAX transform traces a pure function; a value assigned to a Variable "
        "from outside the transform would be a tracer that escapes it.\n"
        "  Fix: use the ramie transform, which carries updates out, e.g.\n"
        "      @ramie.jit            # instead of @jax.jit\n"
        "      def step(model, x): ...\n"
        "  or pass the state in and return it:\n"
        "      graphdef, state = ramie.split(model)\n"
        "      state = jax.jit(f)(graphdef, state)   # f merges, updates, splits\n"
        "      ramie.update(model, state)"
    )


def _immutable_error(var: Variable) -> TraceContextError:
    return TraceContextError(
        f"Cannot change {links.describe(var)}: it is an immutable copy (made with "
        "ramie.with_vars(..., mutable=False), e.g. to pass to jax.grad).\n"
        "  Fix: change the original Variable, or make a mutable copy:\n"
        "      v = ramie.with_vars(v, mutable=True)"
    )


def _arm_watch(var: Variable, watch: list, trace: Any) -> None:
    watch[1] = True
    path = links.path_of(var)
    weakref.finalize(
        var,
        _report_lost_state,
        watch,
        type(var).__name__,
        path,
        describe_trace(trace),
    )


def _report_lost_state(watch: list, type_name: str, path: Any, transform: str) -> None:
    if watch[0]:
        return
    from ramie._src.core.paths import format_path

    where = f"at {format_path(path)}" if path else "(path unknown)"
    warnings.warn(
        f"ramie: {type_name} {where} was updated inside {transform}, but the module "
        "was passed through the transform as a plain pytree and not returned, so "
        "JAX dropped the new value.\n"
        "  Fix: return the module and use the result, e.g.\n"
        "      loss, model = jax.jit(f)(model)     # f ends with `return loss, model`\n"
        "  or use the ramie transform, which carries updates out:\n"
        "      loss = ramie.jit(f)(model)",
        LostStateWarning,
        stacklevel=2,
    )


# ------------------------------------------------------------ pytree hooks
_VALUE_KEY = jax.tree_util.GetAttrKey("value")


def _register_variable_pytree(cls: type[Variable]) -> None:
    def flatten(v: Variable):
        watch = v._watch
        if watch is not None:
            watch[0] = True
        return (_get_raw(v),), freeze_metadata(v._meta)

    def flatten_with_keys(v: Variable):
        watch = v._watch
        if watch is not None:
            watch[0] = True
        return ((_VALUE_KEY, _get_raw(v)),), freeze_metadata(v._meta)

    def unflatten(aux: tuple, children: Any) -> Variable:
        return _new_variable(cls, children[0], thaw_metadata(aux))

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)


_register_variable_pytree(Variable)


# ------------------------------------------------------------- the types
class Param(Variable[A]):
    """A trainable parameter. ``ramie.grad`` and ``Optimizer`` use these by default."""

    __slots__ = ()


class BatchStat(Variable[A]):
    """Running statistics, e.g. BatchNorm's ``mean`` and ``var``."""

    __slots__ = ()


class Cache(Variable[A]):
    """Autoregressive caches, e.g. MultiHeadAttention's decode cache."""

    __slots__ = ()


class Intermediate(Variable[A]):
    """Values captured with ``Module.sow`` or by assigning ``Intermediate(x)``."""

    __slots__ = ()


Intermediates = Intermediate
"""The seeds' spelling of :class:`Intermediate`."""


class Perturbation(Intermediate[A]):
    """A zero added to an intermediate so its gradient can be read (``perturb``)."""

    __slots__ = ()


# ------------------------------------------------ collection names (Linen)
_NAME_TO_TYPE: dict[str, type[Variable]] = {}
_TYPE_TO_NAME: dict[type[Variable], str] = {}


def register_variable_name(
    name: str, typ: Any = MISSING, *, overwrite: bool = False
) -> Any:
    """Associate a Linen collection name with a Variable type.

    Usable directly or as a class decorator::

        @ramie.register_variable_name("counters")
        class Counter(ramie.Variable): ...
    """
    if typ is MISSING:
        return lambda t: register_variable_name(name, t, overwrite=overwrite)
    if not overwrite and name in _NAME_TO_TYPE and _NAME_TO_TYPE[name] is not typ:
        raise ValueError(
            f"register_variable_name({name!r}): already registered to "
            f"{_NAME_TO_TYPE[name].__name__}; pass overwrite=True to replace it"
        )
    _NAME_TO_TYPE[name] = typ
    _TYPE_TO_NAME[typ] = name
    return typ


def variable_type_from_name(
    name: str, /, *, base: type[Variable] = Variable, allow_register: bool = False
) -> type[Variable]:
    """The Variable type of a Linen collection name (``'params'`` -> ``Param``).

    Example:
        >>> import ramie
        >>> ramie.variable_type_from_name("batch_stats").__name__
        'BatchStat'
    """
    if name in _NAME_TO_TYPE:
        return _NAME_TO_TYPE[name]
    if not allow_register:
        raise ValueError(
            f"variable_type_from_name({name!r}): unknown collection; known: "
            f"{sorted(_NAME_TO_TYPE)}. Register it with "
            f"ramie.register_variable_name({name!r}, MyVariableType)"
        )
    typ = type(name, (base,), {"__module__": __name__})
    register_variable_name(name, typ)
    return typ


def variable_name_from_type(
    typ: type[Variable], /, *, allow_register: bool = False
) -> str:
    """The Linen collection name of a Variable type (``Param`` -> ``'params'``)."""
    if typ in _TYPE_TO_NAME:
        return _TYPE_TO_NAME[typ]
    for parent in typ.__mro__[1:]:
        if parent in _TYPE_TO_NAME and parent is not Variable:
            return _TYPE_TO_NAME[parent]
    if not allow_register:
        raise ValueError(
            f"variable_name_from_type({typ.__name__}): no collection name registered; "
            f"register one with ramie.register_variable_name('name', {typ.__name__})"
        )
    register_variable_name(typ.__name__, typ)
    return typ.__name__


register_variable_name("params", Param)
register_variable_name("batch_stats", BatchStat)
register_variable_name("cache", Cache)
register_variable_name("intermediates", Intermediate)
register_variable_name("perturbations", Perturbation)


def with_metadata(
    initializer: Callable[..., Any], **metadata: Any
) -> Callable[..., Any]:
    """Wrap an initializer so the Variables created from it carry ``metadata``.

    Example:
        >>> import jax, ramie
        >>> init = ramie.with_metadata(
        ...     ramie.initializers.ones, out_sharding=(None, "m")
        ... )
        >>> layer = ramie.Linear(2, 4, kernel_init=init, rngs=ramie.Rngs(0))
        >>> layer.kernel.out_sharding
        (None, 'm')
    """
    hooks = {
        k
        for k in (
            "on_set_value",
            "on_get_value",
            "on_create_value",
            "on_add_axis",
            "on_remove_axis",
        )
        if k in metadata
    }
    for k in hooks:
        metadata.pop(k)
    metadata = {canonical_metadata_name(k): v for k, v in metadata.items()}

    def init(*args: Any, **kwargs: Any) -> VariableMetadata:
        value = initializer(*args, **kwargs)
        if isinstance(value, VariableMetadata):
            md = dict(value.metadata)
            md.update(metadata)
            return VariableMetadata(value.raw_value, md)
        return VariableMetadata(value, dict(metadata))

    # read by layers to build the value already sharded (nn.initializers.initialize)
    init._ramie_inner = initializer  # type: ignore[attr-defined]
    init._ramie_metadata = metadata  # type: ignore[attr-defined]
    return init


def is_variable(x: Any) -> bool:
    return isinstance(x, Variable)


def as_pure(tree: Any) -> Any:
    """Replace every Variable in a pytree by its value.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> ramie.as_pure({"w": ramie.Param(jnp.ones(2))})
        {'w': Array([1., 1.], dtype=float32)}
    """
    return jax.tree.map(
        lambda x: x._raw if isinstance(x, Variable) else x,
        tree,
        is_leaf=lambda x: isinstance(x, Variable),
    )


pure = as_pure


def hashable_static(value: Any) -> Any:
    return hashable(value)


_ = (Hashable,)
