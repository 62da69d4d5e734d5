"""List, Dict and Sequential: graph-aware containers of sub-modules.

Plain Python lists and dicts of modules are legal module attributes in ramie,
but mutating them in place (``self.layers.append(...)``) cannot be observed.
:class:`List` and :class:`Dict` are modules that behave like their builtin
counterparts and record every mutation, so cached transforms see it at once.
:class:`Sequential` applies callables in order.
"""

from __future__ import annotations

from collections.abc import (
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    MutableSequence,
)
from typing import Any

from ramie._src.core import links
from ramie._src.core.data import Marked
from ramie._src.core.graph.registry import ARRAY, kind_of
from ramie._src.core.module import Module
from ramie._src.core.pytree import _SLOT_SET, bump, set_variable
from ramie._src.core.variables import Variable


class List(Module, MutableSequence):
    """A mutable sequence of sub-modules (or any values) that is itself a Module.

    Example:
        >>> import ramie
        >>> layers = ramie.List([ramie.Linear(2, 2, rngs=ramie.Rngs(0))])
        >>> layers.append(ramie.Linear(2, 3, rngs=ramie.Rngs(1)))
        >>> len(layers), sorted(ramie.state(layers).keys())
        (2, [0, 1])
    """

    def __init__(self, it: Iterable[Any] | None = None, /):
        self.__dict__["_items"] = []
        for x in it or ():
            self.append(x)

    def _graph_children(self) -> list[tuple[Hashable, Any]]:
        return list(enumerate(self.__dict__["_items"]))

    def _graph_rebuild(self, children: dict[Hashable, Any]) -> None:
        self.__dict__["_items"] = [children[i] for i in range(len(children))]

    def _graph_get(self, key: Hashable, default: Any = None) -> Any:
        items = self.__dict__["_items"]
        if isinstance(key, str) and key.isdigit():
            key = int(key)
        if isinstance(key, int) and 0 <= key < len(items):
            return items[key]
        return default

    def _graph_getter(self) -> Callable[[Hashable, Any], Any]:
        return dict(enumerate(self.__dict__["_items"])).get  # int keys, one lookup

    def _graph_set(self, key: Hashable, value: Any) -> None:
        self[key] = value  # type: ignore[index]

    def _graph_del(self, key: Hashable) -> None:
        del self[key]  # type: ignore[arg-type]

    @property
    def _list(self) -> list[Any]:
        return self.__dict__["_items"]

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return List(self._list[index])
        return self._list[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            self._list[index] = [self._unmark(None, v) for v in value]
            self._marks().clear()  # positions moved: slices keep no marks
        else:
            i = range(len(self._list))[index]
            self._list[index] = self._unmark(i, value)
        self._changed()

    def __delitem__(self, index: Any) -> None:
        n = len(self._list)
        del self._list[index]
        if isinstance(index, slice):
            self._marks().clear()
        else:
            self._shift(range(n)[index], -1)
        self._changed()

    def __len__(self) -> int:
        return len(self._list)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._list)

    def insert(self, index: int, value: Any) -> None:
        n = len(self._list)
        i = min(max(index + n if index < 0 else index, 0), n)
        self._shift(i, +1)
        self._list.insert(index, self._unmark(i, value))
        self._changed()

    # ``ramie.data(x)``/``ramie.static(x)`` items: marks by position, as for
    # attributes (see ``data.py``), so ``jax.tree`` treats them accordingly.
    def _marks(self) -> dict[Any, bool]:
        marks = getattr(self, "_ramie_marks", None)
        if marks is None:
            marks = {}
            object.__setattr__(self, "_ramie_marks", marks)
        return marks

    def _unmark(self, i: int | None, value: Any) -> Any:
        if type(value) is Marked:
            if i is not None:
                self._marks()[i] = value.is_data
            return value.value
        if i is not None and getattr(self, "_ramie_marks", None):
            self._marks().pop(i, None)
        return value

    def _shift(self, at: int, by: int) -> None:
        """Renumber marks after inserting (``by=1``) or deleting (-1) at ``at``."""
        marks = getattr(self, "_ramie_marks", None)
        if marks:
            moved = {
                (k + by if k > at or (by > 0 and k == at) else k): v
                for k, v in marks.items()
                if not (by < 0 and k == at)
            }
            marks.clear()
            marks.update(moved)

    def _changed(self) -> None:
        bump(self)
        pref = links.parent_ref(self)
        for i, item in enumerate(self._list):
            links.link_children(self, i, item, pref)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, List):
            return self._list == other._list
        if isinstance(other, list):
            return self._list == other
        return NotImplemented

    __hash__ = object.__hash__  # type: ignore[assignment]


class Dict(Module, MutableMapping):
    """A mutable mapping of sub-modules with attribute access; itself a Module.

    Example:
        >>> import ramie
        >>> heads = ramie.Dict(cls=ramie.Linear(4, 2, rngs=ramie.Rngs(0)))
        >>> heads["reg"] = ramie.Linear(4, 1, rngs=ramie.Rngs(1))
        >>> sorted(heads), heads.cls.out_features
        (['cls', 'reg'], 2)
    """

    def __init__(self, *args: Any, **kwargs: Any):
        self.__dict__["_mapping"] = {}
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def _graph_children(self) -> list[tuple[Hashable, Any]]:
        m = self.__dict__["_mapping"]
        try:
            return sorted(m.items())
        except TypeError:
            return sorted(m.items(), key=lambda kv: str(kv[0]))

    def _graph_rebuild(self, children: dict[Hashable, Any]) -> None:
        self.__dict__["_mapping"] = dict(children)

    def _graph_get(self, key: Hashable, default: Any = None) -> Any:
        return self.__dict__["_mapping"].get(key, default)

    def _graph_set(self, key: Hashable, value: Any) -> None:
        self[key] = value

    def _graph_del(self, key: Hashable) -> None:
        del self[key]

    @property
    def _map(self) -> dict[Hashable, Any]:
        return self.__dict__["_mapping"]

    def __getitem__(self, key: Hashable) -> Any:
        return self._map[key]

    def __setitem__(self, key: Hashable, value: Any) -> None:
        if type(value) is Marked:  # Dict keys are classified by value
            value = value.value
        m = self._map
        old = m.get(key)
        if (
            isinstance(old, Variable)
            and not isinstance(value, Variable)
            and (kind_of(value) is ARRAY or isinstance(value, (int, float, bool)))
        ):
            set_variable(self, key, old, value)  # as for module attributes
            return
        if m.get(key, _NOTSET) is value:
            return
        m[key] = value
        bump(self)
        links.link_children(self, key, value)

    def __delitem__(self, key: Hashable) -> None:
        del self._map[key]
        bump(self)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_mapping", "_map"):
            raise AttributeError(name)
        try:
            return self.__dict__["_mapping"][name]
        except KeyError:
            raise AttributeError(
                f"ramie.Dict has no key or attribute {name!r}; "
                f"keys: {sorted(map(str, self._map))}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SLOT_SET or name.startswith("_ramie") or name == "__dict__":
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __delattr__(self, name: str) -> None:
        if name in self._map:
            del self[name]
        else:
            super().__delattr__(name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Dict, Mapping)):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = object.__hash__  # type: ignore[assignment]


_NOTSET = object()


class Sequential(Module):
    """Apply callables in order: the output of one is the input of the next.

    A tuple output is unpacked into the next call's positional arguments. An
    empty Sequential is the identity: it returns its one argument, the tuple
    of several, the keyword arguments (a dict) or None.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> model = ramie.Sequential(
        ...     ramie.Linear(2, 4, rngs=ramie.Rngs(0)),
        ...     jax.nn.relu,
        ...     ramie.Linear(4, 1, rngs=ramie.Rngs(1)),
        ... )
        >>> model(jnp.ones((3, 2))).shape
        (3, 1)
    """

    def __init__(self, *fns: Callable[..., Any]):
        for i, f in enumerate(fns):
            if not callable(f):
                raise TypeError(
                    f"ramie.Sequential(): argument {i} is a {type(f).__name__}, not "
                    "a callable; pass layers or functions, e.g. "
                    "Sequential(Linear(...), jax.nn.relu)"
                )
        self.layers = List(fns)

    def __call__(self, *args: Any, rngs: Any = None, **kwargs: Any) -> Any:
        if not self.layers:  # the identity, as in Flax
            if args:
                return args[0] if len(args) == 1 else args
            return kwargs or None
        out: Any = args
        for i, f in enumerate(self.layers):
            call_args = out if isinstance(out, tuple) else (out,)
            call_kwargs = kwargs if i == 0 else {}
            if rngs is not None and isinstance(f, Module) and _accepts_rngs(f):
                call_kwargs = {**call_kwargs, "rngs": rngs}
            out = f(*call_args, **call_kwargs)
        return out


def _accepts_rngs(f: Any) -> bool:
    import inspect

    try:
        return "rngs" in inspect.signature(f.__call__).parameters
    except (TypeError, ValueError):
        return False
