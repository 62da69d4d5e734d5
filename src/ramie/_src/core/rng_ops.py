"""Operations on all RNG streams of a graph: split, fork, restore, reseed.

``split_rngs(splits=n)`` gives every selected stream ``n`` keys (a leading axis
of size ``n``) so that ``vmap``/``scan`` can hand one to each instance or step;
afterwards it restores the streams. As a decorator it applies to the streams
found in the function's arguments. A stream whose key already has that leading
axis (a stream that lives inside a stacked module) is left as it is, so the
scan-over-layers code of the guides works whether or not the scan is wrapped in
``split_rngs``.

``reseed(model, dropout=1)`` resets the key and counter of the named streams;
naming a stream the model does not have is an error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ramie._src.core.filters import to_predicate
from ramie._src.core.graph import api
from ramie._src.core.graph.registry import OBJECT, kind_of
from ramie._src.core.modes import resolve_graph, resolve_graph_updates
from ramie._src.core.rngs import RngStream, as_key
from ramie._src.core.sentinels import MISSING
from ramie.errors import RngError


def find_streams(*nodes: Any) -> list[tuple[tuple, RngStream]]:
    """``(path, stream)`` for every RngStream reachable from ``nodes``."""
    out: list[tuple[tuple, RngStream]] = []
    seen: set[int] = set()
    for i, node in enumerate(nodes):
        for leaf in jax.tree_util.tree_leaves(
            node, is_leaf=lambda x: kind_of(x) is OBJECT
        ):
            if kind_of(leaf) is not OBJECT:
                continue
            for path, value in api.iter_graph(leaf):
                if isinstance(value, RngStream) and id(value) not in seen:
                    seen.add(id(value))
                    out.append(((i, *path), value))
    return out


class RngBackup:
    """Saved keys and counters of streams; restores them on ``restore()``.

    Also a context manager: ``with ramie.split_rngs(model, splits=4): ...``.
    """

    def __init__(self, saved: list[tuple[RngStream, Any, Any]]):
        self.saved = saved

    def restore(self) -> None:
        for stream, key, count in self.saved:
            stream.key.set_value(key)
            stream.count.set_value(count)

    def __enter__(self) -> RngBackup:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def __iter__(self):
        return iter(self.saved)

    def __len__(self) -> int:
        return len(self.saved)


def restore_rngs(backups: RngBackup | list, /) -> None:
    """Undo a direct ``split_rngs``/``fork_rngs``."""
    if isinstance(backups, RngBackup):
        backups.restore()
    else:
        RngBackup(list(backups)).restore()


def _selected(streams: list[tuple[tuple, RngStream]], only: Any) -> list[RngStream]:
    pred = to_predicate(only)
    out = []
    for path, s in streams:
        if pred(path, s.key) or pred(path, s):
            out.append(s)
    return out


def _as_shape(splits: int | tuple[int, ...]) -> tuple[int, ...]:
    return (splits,) if isinstance(splits, int) else tuple(splits)


def _split_streams(
    streams: list[RngStream], splits: int | tuple[int, ...], squeeze: bool
) -> RngBackup:
    shape = _as_shape(splits)
    todo = []
    for s in streams:  # check every stream before splitting any
        kshape = tuple(getattr(s.key._raw, "shape", ()))
        if kshape[: len(shape)] == shape and kshape:
            continue  # already split for this axis (a stacked module's stream)
        if kshape:
            raise RngError(
                f"split_rngs(splits={splits}): the {s.tag!r} stream already has "
                f"keys of shape {kshape}, which does not start with {shape}. Split "
                "streams once per vmap/scan axis."
            )
        todo.append(s)
    saved = []
    for s in todo:
        base = s()  # advance the parent stream so the next split differs
        saved.append((s, s.key._raw, s.count._raw))
        new_keys = jax.random.split(base, shape)
        if squeeze and shape == (1,):
            new_keys = new_keys[0]
        s.key.set_value(new_keys)
        s.count.set_value(jnp.zeros(new_keys.shape, jnp.uint32))
    return RngBackup(saved)


class _SplitDecorator:
    def __init__(self, kind: str, kwargs: dict):
        self.kind = kind
        self.kwargs = kwargs

    def __call__(self, f: Callable[..., Any]) -> Callable[..., Any]:
        kind, kwargs = self.kind, self.kwargs

        @functools.wraps(f)
        def wrapper(*args: Any, **kw: Any) -> Any:
            streams = _selected(
                find_streams(*args, *kw.values()), kwargs.get("only", ...)
            )
            if kind == "split":
                backup = _split_streams(
                    streams, kwargs["splits"], kwargs.get("squeeze", False)
                )
            else:
                backup = _fork_streams(streams, kwargs.get("split"))
            try:
                return f(*args, **kw)
            finally:
                backup.restore()

        return wrapper


def split_rngs(
    node: Any = MISSING,
    /,
    *,
    splits: int | tuple[int, ...],
    only: Any = ...,
    squeeze: bool = False,
    graph: bool | None = None,
    graph_updates: bool | None = None,
) -> Any:
    """Split RNG stream keys into ``splits`` keys for ``vmap``/``scan``.

    As a decorator, the streams in the function's arguments are split for the
    call and restored afterwards. Called on a node, the streams are split in
    place and a backup is returned; use it as a context manager or pass it to
    :func:`restore_rngs`.

    Args:
        node: Graph whose streams to split (omit for decorator form).
        splits: Number (or shape) of keys per stream.
        only: Filter selecting streams (by name, e.g. ``'dropout'``).
        squeeze: With ``splits=1``, drop the new axis.

    Example:
        >>> import ramie
        >>> rngs = ramie.Rngs(params=0, dropout=1)
        >>> with ramie.split_rngs(rngs, splits=5, only="dropout"):
        ...     rngs.dropout.key.shape, rngs.params.key.shape
        ((5,), ())
        >>> rngs.dropout.key.shape
        ()
    """
    if squeeze and splits != 1:
        raise ValueError("split_rngs(squeeze=True) is only supported with splits=1")
    if not _in_place(graph, graph_updates):
        # tree mode / graph_updates=False: a copy with split streams
        kw = dict(split=splits, only=only, squeeze=squeeze)
        if node is MISSING:
            return _simple_decorator(**kw)
        return _copy_with_streams(node, **kw)
    if node is MISSING:
        return _SplitDecorator(
            "split", {"splits": splits, "only": only, "squeeze": squeeze}
        )
    streams = _selected(find_streams(node), only)
    return _split_streams(streams, splits, squeeze)


def _fork_streams(streams: list[RngStream], split: Any) -> RngBackup:
    saved = []
    for s in streams:
        base = s()
        saved.append((s, s.key._raw, s.count._raw))
        key = jax.random.split(base, split) if split is not None else base
        s.key.set_value(key)
        s.count.set_value(jnp.zeros(key.shape, jnp.uint32))
    return RngBackup(saved)


def fork_rngs(
    node: Any = MISSING,
    /,
    *,
    split: Any = None,
    only: Any = ...,
    graph: bool | None = None,
    graph_updates: bool | None = None,
) -> Any:
    """Give streams fresh independent keys (optionally split), restorable.

    With ``graph=False`` or ``graph_updates=False`` the streams of ``node`` are
    left alone and a forked copy is returned instead.
    """
    if not _in_place(graph, graph_updates):
        kw = dict(split=split, fork=..., only=only)
        if node is MISSING:
            return _simple_decorator(**kw)
        return _copy_with_streams(node, **kw)
    if node is MISSING:
        return _SplitDecorator("fork", {"split": split, "only": only})
    return _fork_streams(_selected(find_streams(node), only), split)


def backup_keys(node: Any, /, *, graph: bool = True) -> RngBackup:
    """A snapshot of every stream's key and counter in ``node``."""
    return RngBackup([(s, s.key._raw, s.count._raw) for _, s in find_streams(node)])


def reseed(
    node: Any,
    /,
    *,
    graph: bool | None = None,
    policy: str | Callable[..., Any] = "match_shape",
    **stream_keys: Any,
) -> None:
    """Reset the keys (and counters) of the named streams everywhere in ``node``.

    Args:
        node: A model or any graph holding RNG streams.
        policy: ``'match_shape'`` (default) splits the new key to the shape of
            a stream's key (stacked layers); ``'scalars_only'`` raises for
            non-scalar keys; or a callable ``(path, key, shape) -> new_key``.
        **stream_keys: Stream name to seed (int) or key.

    Raises:
        RngError: a named stream does not exist in ``node``.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> model = ramie.Dropout(0.5, rngs=ramie.Rngs(0))
        >>> x = jnp.ones((8,))
        >>> ramie.reseed(model, dropout=1); y1 = model(x)
        >>> ramie.reseed(model, dropout=1); y2 = model(x)
        >>> bool((y1 == y2).all())
        True
    """
    streams = find_streams(node)
    by_tag: dict[str, list[tuple[tuple, RngStream]]] = {}
    for path, s in streams:
        by_tag.setdefault(s.tag, []).append((path[1:], s))
    unknown = sorted(set(stream_keys) - set(by_tag))
    if unknown:
        raise RngError(
            "ramie.reseed(): the model has no RNG stream named "
            f"{', '.join(map(repr, unknown))}; "
            f"its streams are {sorted(by_tag) or 'none'}.\n"
            "  Reseed an existing stream, e.g. ramie.reseed(model, "
            f"{(sorted(by_tag) or ['dropout'])[0]}=0)"
        )
    for tag, seed in stream_keys.items():
        # The key a fresh `Rngs(tag=seed)` stream would hand out first: a module
        # built with that seed forked exactly this key, so reseeding to the
        # construction seed reproduces the construction-time behaviour (as Flax).
        new_key = jax.random.fold_in(as_key(seed), 0)
        for path, s in by_tag[tag]:
            shape = tuple(getattr(s.key._raw, "shape", ()))
            if callable(policy):
                key = policy(path, new_key, shape)
            elif not shape:
                key = new_key
            elif policy == "scalars_only":
                raise RngError(
                    f"ramie.reseed(policy='scalars_only'): the {tag!r} stream at "
                    f"{'.'.join(map(str, path))} has keys of shape {shape}; use "
                    "policy='match_shape' to split the new key to that shape"
                )
            elif policy == "match_shape":
                key = jax.random.split(new_key, shape)
            else:
                raise ValueError(f"reseed: unknown policy {policy!r}")
            s.key.set_value(key)
            s.count.set_value(jnp.zeros(shape, jnp.uint32))


def _rules(spec: Any) -> list[tuple[Any, Any]]:
    if spec is None:
        return []
    if isinstance(spec, (int, tuple)):
        return [(..., spec)]
    return list(spec.items())


def _specific(filt: Any) -> bool:
    return filt is not ... and filt is not True


def _copy_with_streams(
    node: Any,
    *,
    split: Any = None,
    fork: Any = None,
    broadcast: Any = None,
    only: Any = True,
    squeeze: bool = False,
) -> Any:
    """A copy of ``node`` whose streams are split/broadcast/forked per the rules.

    The originals keep their keys; each handled stream's counter advances once
    (the copy's keys derive from it), so the next copy differs.
    """
    split_rules = [(f, to_predicate(f), n) for f, n in _rules(split)]
    bcast_rules = [(f, to_predicate(f), n) for f, n in _rules(broadcast)]
    if fork is None:
        forks: list[Any] = []
    elif isinstance(fork, str) or not isinstance(fork, (list, tuple)):
        forks = [fork]
    else:
        forks = list(fork)
    fork_rules = [(f, to_predicate(f)) for f in forks]
    only_pred = to_predicate(only)

    def matches(pred: Any, path: tuple, s: RngStream) -> bool:
        return bool(pred(path, s.key) or pred(path, s))

    new = api.clone(node)
    pairs = zip(find_streams(node), find_streams(new))
    for (path, s), (_, c) in pairs:
        path = path[1:]
        if not matches(only_pred, path, s):
            continue
        found: dict[str, tuple] = {}
        for f, pred, n in split_rules:
            if matches(pred, path, s):
                found["split"] = (f, n)
                break
        for f, pred, n in bcast_rules:
            if matches(pred, path, s):
                found["broadcast"] = (f, n)
                break
        for f, pred in fork_rules:
            if matches(pred, path, s):
                found["fork"] = (f,)
                break
        if sum(_specific(v[0]) for v in found.values()) > 1:
            rules = ", ".join(f"{r} (filter {v[0]!r})" for r, v in found.items())
            raise RngError(
                f"ramie.with_rngs(): the RngStream at path "
                f"'{'.'.join(map(str, path))}' matches multiple rules: {rules}.\n"
                "  Fix: give each stream one rule, e.g. split={'params': 4}, "
                "fork=ramie.Not('params')"
            )
        if "split" in found:
            key = jax.random.split(s(), found["split"][1])
            if squeeze:
                key = key[0]
        elif "broadcast" in found:
            shape = _as_shape(found["broadcast"][1])
            base = s()
            key = jnp.broadcast_to(base, (*shape, *jnp.shape(base)))
        elif "fork" in found:
            key = s()
        else:
            continue
        c.key.set_value(key)
        c.count.set_value(jnp.zeros(key.shape, jnp.uint32))
    return new


def _simple_decorator(**kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kw: Any) -> Any:
            args, kw = _copy_with_streams((args, kw), **kwargs)
            return f(*args, **kw)

        return wrapper

    return decorator


def _in_place(graph: Any, graph_updates: Any) -> bool:
    return resolve_graph(graph) and resolve_graph_updates(graph_updates)


def with_rngs(
    node: Any = MISSING,
    /,
    *,
    split: Any = None,
    fork: Any = None,
    broadcast: Any = None,
    only: Any = True,
    graph: Any = None,
    graph_updates: Any = None,
) -> Any:
    """A copy of ``node`` whose selected streams are split, forked or broadcast.

    ``split``/``broadcast`` take a shape for every stream or a mapping from
    filter to shape (the first matching filter wins); ``fork`` a filter or list
    of filters. Streams that match no rule are copied unchanged; a stream that
    matches two rules with specific filters is an error. Without ``node`` it is
    a decorator that hands the copies to the function.

    Example:
        >>> import ramie
        >>> rngs = ramie.Rngs(params=0, dropout=1)
        >>> new = ramie.with_rngs(rngs, split={"params": 4}, fork=...)
        >>> new.params.key.shape, new.dropout.key.shape, rngs.params.key.shape
        ((4,), (), ())
    """
    kwargs = dict(split=split, fork=fork, broadcast=broadcast, only=only)
    if node is MISSING:
        return _simple_decorator(**kwargs)
    return _copy_with_streams(node, **kwargs)
