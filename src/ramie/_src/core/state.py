"""State: the nested-mapping view of a graph's Variables.

``ramie.split``/``ramie.state`` return a :class:`State`: a nested mapping whose
keys are attribute names, list indices and dict keys, and whose leaves are the
model's Variables (or bare arrays). It supports item and attribute access
(``state['linear']['kernel']`` and ``state.linear.kernel``), is a JAX pytree
(``jax.tree.map(f, params, grads)`` maps over the arrays and keeps types), and
converts to and from a flat list of ``(path, leaf)`` pairs (:class:`FlatState`)
and plain nested dicts of arrays (``to_pure_dict`` / ``replace_by_pure_dict``).

``replace_by_pure_dict`` is strict: a missing key, an unexpected key or a shape
or dtype mismatch raises :class:`~ramie.errors.StateLoadError` listing every
offending path, and nothing is changed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import jax

from ramie._src.core.epoch import EPOCH
from ramie._src.core.filters import filters_to_predicates, to_predicate
from ramie._src.core.loading import load_error
from ramie._src.core.paths import format_path, parse_key
from ramie._src.core.sentinels import MISSING
from ramie._src.core.variables import Variable
from ramie.errors import FilterError

S = TypeVar("S", bound="State")
PathParts = tuple[Hashable, ...]


def _key_order(k: Hashable) -> tuple:
    if isinstance(k, str):
        return (1, k, 0)
    if isinstance(k, int):
        return (0, "", k)
    return (2, repr(k), 0)


def sorted_keys(mapping: Mapping) -> list:
    keys = list(mapping.keys())
    try:
        keys.sort()
    except TypeError:
        keys.sort(key=_key_order)
    return keys


def _is_mapping(x: Any) -> bool:
    if isinstance(x, dict):
        return True
    if isinstance(x, (Variable, jax.Array)):
        return False
    return isinstance(x, Mapping)


class State(dict):
    """A nested mapping of Variables, as returned by ``split`` and ``state``.

    Keys follow the model's attributes, so ``state.block.linear.kernel`` is the
    Variable at ``model.block.linear.kernel``. A State is a JAX pytree.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> model = ramie.Linear(2, 3, rngs=ramie.Rngs(0))
        >>> state = ramie.state(model)
        >>> sorted(state.keys())
        ['bias', 'kernel']
        >>> state.kernel.shape
        (2, 3)
        >>> jax.tree.map(jnp.shape, state.to_pure_dict())
        {'bias': (3,), 'kernel': (2, 3)}
    """

    __slots__ = ()

    def __init__(self, mapping: Mapping | Iterable = (), /, *, _copy: bool = True):
        super().__init__()
        items = mapping.items() if isinstance(mapping, Mapping) else mapping
        for k, v in items:
            if _is_mapping(v) and not isinstance(v, State):
                v = type(self)(v)
            dict.__setitem__(self, k, v)

    # --------------------------------------------------------------- access
    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(
                f"State has no key {key!r}; keys: {sorted_keys(self)}"
            ) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __delattr__(self, key: str) -> None:
        try:
            del self[key]
        except KeyError:
            raise AttributeError(key) from None

    # Every in-place change of the entries goes through these methods, which
    # count it in ``EPOCH.states`` (caches of States re-check after a change).
    def __setitem__(self, key: Hashable, value: Any) -> None:
        if _is_mapping(value) and not isinstance(value, State):
            value = State(value)
        EPOCH.states += 1
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: Hashable) -> None:
        EPOCH.states += 1
        dict.__delitem__(self, key)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def __ior__(self, other: Any) -> State:  # type: ignore[override]
        self.update(other)
        return self

    def pop(self, key: Hashable, *default: Any) -> Any:  # type: ignore[override]
        EPOCH.states += 1
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[Hashable, Any]:
        EPOCH.states += 1
        return dict.popitem(self)

    def setdefault(self, key: Hashable, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    def clear(self) -> None:
        EPOCH.states += 1
        dict.clear(self)

    @property
    def raw_mapping(self) -> dict:
        """The underlying mapping (the State itself)."""
        return self

    def __or__(self, other: Mapping) -> State:  # type: ignore[override]
        return merge_state(
            self, State(other) if not isinstance(other, State) else other
        )

    def __sub__(self, other: State) -> State:
        return diff(self, other)

    def __repr__(self) -> str:
        from ramie._src.display.repr import state_repr

        return state_repr(self)

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        from ramie._src.display.treescope import render_state

        return render_state(self, path, subtree_renderer)

    def __reduce__(self):
        return (type(self), (dict(self),))

    def copy(self) -> State:  # type: ignore[override]
        return type(self)(
            {k: v.copy() if isinstance(v, State) else v for k, v in self.items()}
        )

    # ------------------------------------------------------- legacy methods
    def flat_state(self) -> FlatState:
        """This State as a sorted list of ``(path, leaf)`` pairs."""
        return to_flat_state(self)

    def flat_paths(self) -> list[PathParts]:
        return [p for p, _ in iter_flat(self)]

    def filter(self, first: Any, /, *filters: Any) -> Any:
        """Select sub-States by filters (non-exhaustive)."""
        return filter_state(self, first, *filters)

    def split(self, first: Any, /, *filters: Any) -> Any:
        """Partition into one State per filter (every leaf must match one)."""
        return split_state(self, first, *filters)

    @staticmethod
    def merge(state: Mapping, /, *states: Mapping) -> State:
        """Deep-merge States; later ones win (``State.merge(params, rest)``)."""
        return merge_state(state, *states)

    def map(self, f: Callable[[PathParts, Any], Any]) -> State:
        return map_state(f, self)

    def to_pure_dict(
        self, extract_fn: Callable[[PathParts, Any], Any] | None = None
    ) -> dict:
        return to_pure_dict(self, extract_fn)

    def replace_by_pure_dict(
        self,
        pure_dict: Mapping,
        replace_fn: Callable[..., Any] | None = None,
        *,
        strict: bool = True,
        allow_cast: bool = False,
    ) -> None:
        """In-place :func:`replace_by_pure_dict` (see it for the loading policy)."""
        replace_by_pure_dict(
            self, pure_dict, replace_fn, strict=strict, allow_cast=allow_cast
        )

    @classmethod
    def from_flat_path(
        cls, flat: Iterable[tuple[PathParts, Any]] | Mapping, /
    ) -> State:
        items = flat.items() if isinstance(flat, Mapping) else flat
        return from_flat_state(list(items), cls=cls)


class GraphState(State):
    """A State that may carry the GraphDef it was split from.

    ``GraphState.merge(params, rest)`` deep-merges States (the seeds' spelling
    of :func:`merge_state`); ``ramie.unpack`` returns GraphStates bundling a
    GraphDef, which ``merge`` and ``update`` accept directly.
    """

    __slots__ = ("_graphdef",)

    def __init__(
        self, mapping: Mapping | Iterable = (), /, graphdef: Any = None, **kw: Any
    ):
        object.__setattr__(self, "_graphdef", graphdef)
        super().__init__(mapping, **kw)

    @property
    def graphdef(self) -> Any:
        return self._graphdef

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "_graphdef":
            object.__setattr__(self, key, value)
        else:
            self[key] = value


# ------------------------------------------------------------ flat views
def iter_flat(
    state: Mapping, prefix: PathParts = ()
) -> Iterator[tuple[PathParts, Any]]:
    """Yield ``(path, leaf)`` for every leaf of a nested mapping, keys sorted."""
    for k in sorted_keys(state):
        v = state[k]
        if _is_mapping(v):
            yield from iter_flat(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def _path_order(path: PathParts) -> tuple:
    return tuple(_key_order(k) for k in path)


class FlatState(list):
    """A sorted list of ``(path, leaf)`` pairs.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> state = ramie.state(ramie.Linear(2, 3, rngs=ramie.Rngs(0)))
        >>> flat = ramie.to_flat_state(state)
        >>> flat.paths
        (('bias',), ('kernel',))
    """

    def __init__(
        self, items: Iterable[tuple[PathParts, Any]] = (), /, *, sort: bool = True
    ):
        items = [(tuple(p), v) for p, v in items]
        if sort:
            try:
                items.sort(key=lambda kv: kv[0])
            except TypeError:
                items.sort(key=lambda kv: _path_order(kv[0]))
        super().__init__(items)

    @property
    def paths(self) -> tuple[PathParts, ...]:
        return tuple(p for p, _ in self)

    @property
    def leaves(self) -> list[Any]:
        return [v for _, v in self]

    def to_nested_state(self) -> State:
        return from_flat_state(self)

    def filter(self, first: Any, /, *filters: Any) -> Any:
        preds = filters_to_predicates((first, *filters))
        outs = [
            FlatState([(p, v) for p, v in self if pred(p, v)], sort=False)
            for pred in preds
        ]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def split(self, first: Any, /, *filters: Any) -> Any:
        parts = _partition(list(self), (first, *filters), "FlatState.split")
        outs = [FlatState(p, sort=False) for p in parts]
        return outs[0] if len(outs) == 1 else tuple(outs)

    @staticmethod
    def merge(flat: Iterable, /, *flats: Iterable) -> FlatState:
        items: dict[PathParts, Any] = {}
        for f in (flat, *flats):
            items.update((tuple(p), v) for p, v in f)
        return FlatState(items.items())

    @staticmethod
    def from_sorted_keys_values(
        keys: Iterable[PathParts], values: Iterable[Any]
    ) -> FlatState:
        return FlatState(zip(keys, values), sort=False)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  ({format_path(p)!s}, {v!r})" for p, v in self)
        return f"FlatState([\n{inner}\n])" if self else "FlatState([])"


def to_flat_state(state: Mapping) -> FlatState:
    """A State as a :class:`FlatState`."""
    return FlatState(iter_flat(state), sort=False)


def from_flat_state(
    flat: Iterable[tuple[PathParts, Any]] | Mapping[PathParts, Any],
    *,
    cls: type[S] = State,
) -> S:  # type: ignore[assignment]
    """Build a nested State from ``(path, leaf)`` pairs or a ``{path: leaf}`` dict.

    Example:
        >>> import ramie
        >>> state = ramie.from_flat_state({("linear", "kernel"): 1, ("bias",): 2})
        >>> state["linear"]["kernel"], state["bias"]
        (1, 2)
    """
    root: dict = {}
    for path, leaf in flat.items() if isinstance(flat, Mapping) else flat:
        if not path:
            raise ValueError("from_flat_state: empty path; every leaf needs a key")
        d = root
        for k in path[:-1]:
            nxt = d.get(k)
            if nxt is None:
                nxt = d[k] = {}
            d = nxt
        d[path[-1]] = leaf
    return _to_state(root, cls)


def _to_state(d: dict, cls: type) -> Any:
    s = cls.__new__(cls)
    if cls is GraphState:
        object.__setattr__(s, "_graphdef", None)
    for k, v in d.items():
        dict.__setitem__(s, k, _to_state(v, cls) if type(v) is dict else v)
    return s


# --------------------------------------------------- filtering & merging
def _partition(
    items: list[tuple[PathParts, Any]],
    filters: tuple,
    api: str,
    exhaustive: bool = True,
) -> list[list[tuple[PathParts, Any]]]:
    preds = filters_to_predicates(filters)
    parts: list[list] = [[] for _ in preds]
    rest = []
    for path, leaf in items:
        for i, pred in enumerate(preds):
            if pred(path, leaf):
                parts[i].append((path, leaf))
                break
        else:
            rest.append((path, leaf))
    if rest and exhaustive:
        raise unmatched_error(api, filters, rest)
    return parts


def unmatched_error(api: str, filters: tuple, rest: list) -> FilterError:
    from ramie._src.core.filters import filter_name

    names = ", ".join(filter_name(f) for f in filters)
    described = [
        f"{format_path(p)} ({type(v).__name__ if isinstance(v, Variable) else 'array'})"
        for p, v in rest[:10]
    ]
    more = f"\n    ... and {len(rest) - 10} more" if len(rest) > 10 else ""
    return FilterError(
        f"{api}: {len(rest)} Variable(s) matched none of the filters ({names}):\n    "
        + "\n    ".join(described)
        + more
        + "\n  Every Variable must go to exactly one State (Non-exhaustive filters, "
        "got a non-empty remainder). Add `...` as the last "
        "filter to collect the rest:\n"
        f"      graphdef, *states, rest = ramie.split(model, {names}, ...)"
    )


def split_state(state: Mapping, first: Any, /, *filters: Any) -> Any:
    """Partition a State by filters; every leaf must match one of them.

    Example:
        >>> import ramie
        >>> bn = ramie.BatchNorm(3, rngs=ramie.Rngs(0))
        >>> params, stats = ramie.split_state(ramie.state(bn), ramie.Param, ...)
        >>> sorted(params), sorted(stats)
        (['bias', 'scale'], ['mean', 'var'])
    """
    parts = _partition(list(iter_flat(state)), (first, *filters), "split_state")
    cls = type(state) if isinstance(state, State) else State
    outs = [from_flat_state(p, cls=cls) for p in parts]
    return outs[0] if len(outs) == 1 else tuple(outs)


def filter_state(state: Mapping, first: Any, /, *filters: Any) -> Any:
    """Select sub-States by filters; leaves matching none are left out."""
    preds = tuple(to_predicate(f) for f in (first, *filters))
    flat = list(iter_flat(state))
    cls = type(state) if isinstance(state, State) else State
    outs = [
        from_flat_state([(p, v) for p, v in flat if pred(p, v)], cls=cls)
        for pred in preds
    ]
    return outs[0] if len(outs) == 1 else tuple(outs)


def merge_state(state: Mapping, /, *states: Mapping, cls: type[State] = State) -> State:
    """Deep-merge States into a new State; for a path in several, the last wins.

    Example:
        >>> import ramie
        >>> bn = ramie.BatchNorm(3, rngs=ramie.Rngs(0))
        >>> _, params, rest = ramie.split(bn, ramie.Param, ...)
        >>> sorted(ramie.merge_state(params, rest))
        ['bias', 'mean', 'scale', 'var']
    """
    out: dict = {}
    for s in (state, *states):
        _deep_update(out, s)
    return _to_state(out, cls)


def _deep_update(out: dict, src: Mapping) -> None:
    for k, v in src.items():
        if _is_mapping(v):
            cur = out.get(k)
            if type(cur) is not dict:
                cur = out[k] = {}
            _deep_update(cur, v)
        else:
            out[k] = v


def map_state(f: Callable[[PathParts, Any], Any], state: Mapping) -> State:
    """A new State with ``f(path, leaf)`` applied to every leaf."""
    cls = type(state) if isinstance(state, State) else State
    return from_flat_state([(p, f(p, v)) for p, v in iter_flat(state)], cls=cls)


def diff(state: Mapping, other: Mapping) -> State:
    """The leaves of ``state`` whose paths are not in ``other``."""
    other_paths = {p for p, _ in iter_flat(other)}
    return from_flat_state(
        [(p, v) for p, v in iter_flat(state) if p not in other_paths]
    )


# ------------------------------------------------------------ pure dicts
def to_pure_dict(
    state: Mapping, extract_fn: Callable[[PathParts, Any], Any] | None = None
) -> dict:
    """Nested plain dicts of raw values (what checkpoint libraries store).

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> state = ramie.state(ramie.Linear(2, 3, rngs=ramie.Rngs(0)))
        >>> pure = ramie.to_pure_dict(state)
        >>> jax.tree.map(jnp.shape, pure)
        {'bias': (3,), 'kernel': (2, 3)}
    """

    def convert(m: Mapping, prefix: PathParts) -> dict:
        out = {}
        for k in sorted_keys(m):
            v = m[k]
            if _is_mapping(v):
                out[k] = convert(v, prefix + (k,))
            elif extract_fn is not None:
                out[k] = extract_fn(prefix + (k,), v)
            else:
                out[k] = v._raw if isinstance(v, Variable) else v
        return out

    try:
        return convert(state, ())
    finally:
        convert = None  # type: ignore[assignment]  # break the closure's self-reference cycle


def restore_int_paths(pure_dict: Mapping) -> dict:
    """Turn digit-string keys (from string-keyed formats) back into ints.

    Example:
        >>> restore_int_paths({"layers": {"0": {"w": 1}}})
        {'layers': {0: {'w': 1}}}
    """
    return {
        parse_key(k): restore_int_paths(v) if isinstance(v, Mapping) else v
        for k, v in pure_dict.items()
    }


def _lookup_flat(pure: Mapping) -> dict[PathParts, Any]:
    out = {}
    for path, v in iter_flat(pure):
        out[tuple(parse_key(k) for k in path)] = v
    return out


def replace_by_pure_dict(
    state: Mapping,
    pure_dict: Mapping,
    replace_fn: Callable[..., Any] | None = None,
    *,
    strict: bool = True,
    allow_cast: bool = False,
) -> None:
    """Write a pure dict's values into ``state`` in place, strictly.

    Follows the loading policy (``docs/guides/state_safety.md``): values are
    canonicalised as JAX does (float64 NumPy arrays load into float32
    Variables), every leaf of ``state`` must get a value of the same shape,
    a dtype may differ only by a lossless cast (or with ``allow_cast=True``),
    and every value must have a place. Otherwise nothing changes and a
    :class:`~ramie.errors.StateLoadError` lists all offending paths.

    Args:
        state: The State to fill (its Variables are updated in place).
        pure_dict: Nested dicts of arrays, e.g. from ``to_pure_dict`` or a
            checkpoint (digit-string keys are accepted for list indices).
        replace_fn: Optional ``(leaf, new_value) -> new_leaf`` for custom
            conversion; when given, shape and dtype checks are skipped.
        strict: With ``False``, missing and unexpected keys are allowed (only
            matching paths are written); shapes and dtypes are still checked.
        allow_cast: Cast values of another dtype to the State's dtypes even
            when the cast loses information.

    Raises:
        StateLoadError: on missing, unexpected or mismatched entries.

    Example:
        >>> import jax.numpy as jnp, numpy as np, ramie
        >>> model = ramie.Linear(2, 3, rngs=ramie.Rngs(0))
        >>> state = ramie.state(model)
        >>> pure = {"kernel": np.zeros((2, 3)), "bias": jnp.ones(3)}
        >>> ramie.replace_by_pure_dict(state, pure)
        >>> model.bias.value, model.kernel.dtype
        (Array([1., 1., 1.], dtype=float32), dtype('float32'))
    """
    from ramie._src.core.loading import check_load

    api = "ramie.replace_by_pure_dict()"
    flat_new = _lookup_flat(pure_dict)
    missing, pairs = [], []
    seen: set[PathParts] = set()
    for path, leaf in iter_flat(state):
        key = tuple(parse_key(k) for k in path)
        if key not in flat_new:
            missing.append(path)
            continue
        seen.add(key)
        pairs.append((path, leaf, flat_new[key]))
    unexpected = [p for p in flat_new if p not in seen]
    if not strict:
        missing, unexpected = [], []
    if replace_fn is not None:
        if missing or unexpected:
            raise load_error(api, missing, unexpected, [])
        for path, leaf, new in pairs:
            _set_path(state, path, replace_fn(leaf, new))
        return
    values = check_load(
        pairs, api=api, allow_cast=allow_cast, missing=missing, unexpected=unexpected
    )
    for _, leaf, _ in pairs:
        if isinstance(leaf, Variable):
            leaf._check_mutable()  # before any write: all or nothing
    for (path, leaf, _), new in zip(pairs, values):
        if isinstance(leaf, Variable):
            leaf.set_value(new)
        else:
            _set_path(state, path, new)


def _set_path(state: Mapping, path: PathParts, value: Any) -> None:
    d = state
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value  # type: ignore[index]


# ------------------------------------------------------------ pytree
def _state_flatten(s: State):
    keys = sorted_keys(s)
    return [s[k] for k in keys], tuple(keys)


def _state_flatten_with_keys(s: State):
    keys = sorted_keys(s)
    return [(jax.tree_util.DictKey(k), s[k]) for k in keys], tuple(keys)


def _make_unflatten(cls: type) -> Callable:
    def unflatten(keys: tuple, children: Iterable[Any]) -> Any:
        s = cls.__new__(cls)
        if cls is GraphState:
            object.__setattr__(s, "_graphdef", None)
        dict.update(s, zip(keys, children))
        return s

    return unflatten


jax.tree_util.register_pytree_with_keys(
    State, _state_flatten_with_keys, _make_unflatten(State), _state_flatten
)


# A GraphState keeps its GraphDef through JAX transforms (as static data), so
# ``merge(params, rest)`` works on the States a transform passes in.
def _graph_state_flatten(s: GraphState):
    children, keys = _state_flatten(s)
    return children, (s._graphdef, keys)


def _graph_state_flatten_with_keys(s: GraphState):
    children, keys = _state_flatten_with_keys(s)
    return children, (s._graphdef, keys)


def _graph_state_unflatten(aux: tuple, children: Iterable[Any]) -> GraphState:
    graphdef, keys = aux
    s = GraphState.__new__(GraphState)
    object.__setattr__(s, "_graphdef", graphdef)
    dict.update(s, zip(keys, children))
    return s


jax.tree_util.register_pytree_with_keys(
    GraphState,
    _graph_state_flatten_with_keys,
    _graph_state_unflatten,
    _graph_state_flatten,
)


def _flat_state_flatten(f: FlatState):
    return [v for _, v in f], tuple(p for p, _ in f)


jax.tree_util.register_pytree_node(
    FlatState,
    _flat_state_flatten,
    lambda paths, leaves: FlatState(zip(paths, leaves), sort=False),
)

_ = MISSING
