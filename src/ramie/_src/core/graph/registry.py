"""What kind of graph element a Python value is.

The graph code sorts every value it meets into one kind:

* ``VARIABLE`` - a :class:`~ramie.Variable`: a state leaf with identity.
* ``OBJECT`` - a graph object with identity (``Module``, ``Rngs``, ...):
  its attributes are its children.
* ``LIST``/``TUPLE``/``DICT``/``NAMEDTUPLE``/``PYTREE`` - containers without
  identity, traversed for the graph objects, Variables and arrays inside them.
* ``ARRAY`` - a bare array (``jax.Array``, ``np.ndarray``, ``ShapeDtypeStruct``):
  a state leaf without identity.
* ``STATIC`` - anything else; stored in the GraphDef by value.

Kinds are cached per Python type, so classifying is one dict lookup.
"""

from __future__ import annotations

from typing import Any, Final

import jax
import numpy as np

from ramie._src.core.tracked import TrackedDict, TrackedList

STATIC: Final = "static"
VARIABLE: Final = "variable"
OBJECT: Final = "object"
ARRAY: Final = "array"
LIST: Final = "list"
TUPLE: Final = "tuple"
DICT: Final = "dict"
NAMEDTUPLE: Final = "namedtuple"
PYTREE: Final = "pytree"

CONTAINERS: Final = frozenset({LIST, TUPLE, DICT, NAMEDTUPLE, PYTREE})
DATA_KINDS: Final = frozenset({VARIABLE, OBJECT, ARRAY})

_cache: dict[type, str] = {
    type(None): STATIC,
    list: LIST,
    tuple: TUPLE,
    dict: DICT,
    TrackedList: LIST,
    TrackedDict: DICT,
}
_SIMPLE_STATIC: Final = (str, int, float, bool, complex, bytes, type(None))


def _classify(t: type) -> str:
    from ramie._src.core.pytree import Pytree
    from ramie._src.core.variables import Variable

    if issubclass(t, Variable):
        return VARIABLE
    if issubclass(t, Pytree):
        return OBJECT
    if issubclass(t, (jax.Array, np.ndarray, jax.ShapeDtypeStruct, jax.core.Tracer)):
        return ARRAY
    if issubclass(t, _SIMPLE_STATIC):
        return STATIC
    if issubclass(t, tuple) and hasattr(t, "_fields"):
        return NAMEDTUPLE
    if t in (list, tuple, dict):  # pragma: no cover - seeded in _cache
        return {list: LIST, tuple: TUPLE, dict: DICT}[t]
    return STATIC


# A type is a pytree node when JAX does not treat its instances as leaves;
# registration is per type, so probing one instance decides for the type.
_probe_cache: dict[type, bool] = {}


def kind_of(value: Any) -> str:
    """The graph kind of ``value`` (see the module docstring)."""
    t = type(value)
    k = _cache.get(t)
    if k is not None:
        return k
    k = _classify(t)
    if k == STATIC and t not in _probe_cache:
        # generic pytree nodes (dataclasses, custom containers) need an instance
        try:
            leaves = jax.tree_util.tree_leaves(value, is_leaf=lambda x: x is not value)
            is_node = not (len(leaves) == 1 and leaves[0] is value)
        except Exception:
            is_node = False
        _probe_cache[t] = is_node
        if is_node:
            k = PYTREE
    _cache[t] = k
    return k


def is_graph_node(value: Any) -> bool:
    """True for values with identity in a graph: Modules, Rngs, Variables..."""
    k = kind_of(value)
    return k is OBJECT or k is VARIABLE


def is_simple_static(value: Any) -> bool:
    return type(value) in _SIMPLE_STATIC_TYPES


_SIMPLE_STATIC_TYPES: Final = frozenset(_SIMPLE_STATIC)


def has_data(value: Any, _depth: int = 0) -> bool:
    """True if ``value`` is, or contains, a Variable, graph object or array."""
    k = kind_of(value)
    if k in DATA_KINDS:
        return True
    if k is STATIC or _depth > 64:
        return False
    if k is DICT:
        return any(has_data(v, _depth + 1) for v in value.values())
    if k is LIST or k is TUPLE or k is NAMEDTUPLE:
        return any(has_data(v, _depth + 1) for v in value)
    children, _ = jax.tree_util.flatten_one_level(value)
    return any(has_data(v, _depth + 1) for v in children)


def one_level(value: Any) -> tuple[list[tuple[Any, Any]], Any]:
    """Children of a generic pytree node as ``[(key, child)]`` and a rebuilder."""
    keyed, _ = jax.tree_util.flatten_one_level_with_keys(value)
    treedef = jax.tree_util.tree_structure(value, is_leaf=lambda x: x is not value)
    items = [(_key_to_part(k, i), c) for i, (k, c) in enumerate(keyed)]
    return items, treedef


def _key_to_part(key: Any, i: int) -> Any:
    tu = jax.tree_util
    if isinstance(key, tu.GetAttrKey):
        return key.name
    if isinstance(key, tu.DictKey):
        return key.key
    if isinstance(key, tu.SequenceKey):
        return key.idx
    if isinstance(key, tu.FlattenedIndexKey):
        return key.key
    return i
