"""Lists and dicts that report their own mutations.

When a plain ``list`` or ``dict`` is stored on a Module (``self.layers =
[Linear(...), ...]``), ramie stores a :class:`TrackedList` / :class:`TrackedDict`
copy instead: a subclass of the builtin that behaves identically
(``isinstance(x, list)`` holds, it pickles, prints and compares as a list) but
increments its version and the global structure epoch whenever it is mutated,
so cached transforms notice ``model.layers.append(...)`` without re-scanning
the list on every call. Both are JAX pytrees with list/dict semantics.

Note that the stored container is a copy: mutate it through the module
(``model.layers.append(x)``), not through the original list object.
"""

from __future__ import annotations

from typing import Any

import jax

from ramie._src.core.epoch import EPOCH


def _bump(obj: Any) -> None:
    obj._ramie_ver += 1
    EPOCH.value += 1


class TrackedList(list):
    """A ``list`` that records structural mutations (see module docstring)."""

    __slots__ = ("_ramie_ver", "__weakref__")

    def __init__(self, *args: Any):
        super().__init__(*args)
        self._ramie_ver = 0

    def __reduce__(self):
        return (TrackedList, (list(self),))

    def __setitem__(self, i: Any, v: Any) -> None:
        super().__setitem__(i, v)
        _bump(self)

    def __delitem__(self, i: Any) -> None:
        super().__delitem__(i)
        _bump(self)

    def __iadd__(self, other: Any) -> TrackedList:  # type: ignore[override]
        super().__iadd__(other)
        _bump(self)
        return self

    def __imul__(self, n: Any) -> TrackedList:  # type: ignore[override]
        super().__imul__(n)
        _bump(self)
        return self

    def append(self, v: Any) -> None:
        super().append(v)
        _bump(self)

    def extend(self, it: Any) -> None:
        super().extend(it)
        _bump(self)

    def insert(self, i: Any, v: Any) -> None:
        super().insert(i, v)
        _bump(self)

    def remove(self, v: Any) -> None:
        super().remove(v)
        _bump(self)

    def pop(self, i: Any = -1) -> Any:
        v = super().pop(i)
        _bump(self)
        return v

    def clear(self) -> None:
        super().clear()
        _bump(self)

    def sort(self, *args: Any, **kwargs: Any) -> None:
        super().sort(*args, **kwargs)
        _bump(self)

    def reverse(self) -> None:
        super().reverse()
        _bump(self)

    def copy(self) -> list:  # type: ignore[override]
        return list(self)


class TrackedDict(dict):
    """A ``dict`` that records structural mutations (see module docstring)."""

    __slots__ = ("_ramie_ver", "__weakref__")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._ramie_ver = 0

    def __reduce__(self):
        return (TrackedDict, (dict(self),))

    def __setitem__(self, k: Any, v: Any) -> None:
        super().__setitem__(k, v)
        _bump(self)

    def __delitem__(self, k: Any) -> None:
        super().__delitem__(k)
        _bump(self)

    def __ior__(self, other: Any) -> TrackedDict:  # type: ignore[override]
        super().__ior__(other)
        _bump(self)
        return self

    def pop(self, *args: Any) -> Any:
        v = super().pop(*args)
        _bump(self)
        return v

    def popitem(self) -> Any:
        v = super().popitem()
        _bump(self)
        return v

    def clear(self) -> None:
        super().clear()
        _bump(self)

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        _bump(self)

    def setdefault(self, k: Any, default: Any = None) -> Any:
        v = super().setdefault(k, default)
        _bump(self)
        return v

    def copy(self) -> dict:  # type: ignore[override]
        return dict(self)


def track(value: Any) -> Any:
    """Replace plain lists/dicts that hold graph data by tracked ones (recursively).

    Containers of only static values (``[3, 3]``) stay plain; transforms
    compare those by content instead.
    """
    return _track(value)[0]


def _track(value: Any) -> tuple[Any, bool]:
    from ramie._src.core.graph.registry import DATA_KINDS, kind_of

    t = type(value)
    if t is list or t is TrackedList:
        pairs = [_track(v) for v in value]
        data = any(d for _, d in pairs)
        if t is TrackedList and all(a is b for (a, _), b in zip(pairs, value)):
            return value, data
        items = [v for v, _ in pairs]
        return (TrackedList(items) if data else items), data
    if t is dict or t is TrackedDict:
        pairs2 = {k: _track(v) for k, v in value.items()}
        data = any(d for _, d in pairs2.values())
        if t is TrackedDict and all(pairs2[k][0] is value[k] for k in value):
            return value, data
        items2 = {k: v for k, (v, _) in pairs2.items()}
        return (TrackedDict(items2) if data else items2), data
    if t is tuple or (isinstance(value, tuple) and hasattr(t, "_fields")):
        pairs = [_track(v) for v in value]
        data = any(d for _, d in pairs)
        if any(a is not b for (a, _), b in zip(pairs, value)):
            items = [v for v, _ in pairs]
            return (tuple(items) if t is tuple else t(*items)), data
        return value, data
    return value, kind_of(value) in DATA_KINDS


def to_plain(tree: Any, leaf_fn: Any = None) -> Any:
    """A copy with tracked containers turned back into plain lists/dicts.

    ``leaf_fn`` is applied to every other value (e.g. Variable -> its array).
    """
    t = type(tree)
    if t is TrackedList or t is list:
        return [to_plain(v, leaf_fn) for v in tree]
    if t is TrackedDict or t is dict:
        return {k: to_plain(v, leaf_fn) for k, v in tree.items()}
    if t is tuple:
        return tuple(to_plain(v, leaf_fn) for v in tree)
    if isinstance(tree, tuple) and hasattr(t, "_fields"):
        return t(*[to_plain(v, leaf_fn) for v in tree])
    return leaf_fn(tree) if leaf_fn is not None else tree


def _list_flatten_with_keys(x: TrackedList):
    return [(jax.tree_util.SequenceKey(i), v) for i, v in enumerate(x)], None


def _dict_flatten_with_keys(x: TrackedDict):
    keys = sorted(
        x, key=lambda k: (type(k).__name__, k) if not isinstance(k, str) else ("str", k)
    )
    return [(jax.tree_util.DictKey(k), x[k]) for k in keys], tuple(keys)


jax.tree_util.register_pytree_with_keys(
    TrackedList,
    _list_flatten_with_keys,
    lambda _, children: TrackedList(children),
    lambda x: (list(x), None),
)
jax.tree_util.register_pytree_with_keys(
    TrackedDict,
    _dict_flatten_with_keys,
    lambda keys, children: TrackedDict(zip(keys, children)),
)
