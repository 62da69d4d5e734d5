"""Text reprs of modules, graph objects and States.

A module prints as a compact summary, one line when it fits in 80 columns::

    Linear(784 -> 256, kernel=f32[784,256], bias=f32[256])

and otherwise as an indented tree whose lines never pass 80 columns. Arrays
and Variables show dtype and shape (``Param``s bare, other types named:
``mean=BatchStat(f32[3])``); the per-layer summary (``784 -> 256``) comes from
the formatter registry in :mod:`~ramie._src.display.layer_formats`, and
unknown modules list their data attributes, then short static ones. Runs of
identical layers in a list collapse to ``12 x Block(...)``, an object met a
second time prints ``Linear(<shared with encoder.proj>)``, reference cycles
print ``<cycle: ...>``, and nesting deeper than ``max_depth`` prints
``Block(...)``. States keep the ``State({'kernel': Param(value=...)})`` form.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ramie._src.core.graph import registry
from ramie._src.core.paths import format_path
from ramie._src.display import layer_formats
from ramie._src.display.arrays import array_repr, is_tracer, shape_str

_local = threading.local()
WIDTH = 80
MAX_DEPTH = 8
MAX_ITEMS = 16
RUN_MIN = 3
INDENT = 2


@contextlib.contextmanager
def repr_options(
    *,
    width: int | None = None,
    max_depth: int | None = None,
    max_items: int | None = None,
) -> Iterator[None]:
    """Temporarily change the width, depth and list length of module reprs.

    Args:
        width: Maximum line length (default 80).
        max_depth: Nesting levels shown before objects print as ``Name(...)``.
        max_items: Items shown per list, dict or module before ``... n more``.

    Example:
        >>> import ramie
        >>> layer = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
        >>> model = ramie.Sequential(ramie.Sequential(layer))
        >>> with repr_options(max_depth=1):
        ...     print(repr(model))
        Sequential(Sequential(...))
    """
    old = getattr(_local, "options", None)
    base = old or (WIDTH, MAX_DEPTH, MAX_ITEMS)
    _local.options = (
        base[0] if width is None else width,
        base[1] if max_depth is None else max_depth,
        base[2] if max_items is None else max_items,
    )
    try:
        yield
    finally:
        _local.options = old


def _options() -> tuple[int, int, int]:
    return getattr(_local, "options", None) or (WIDTH, MAX_DEPTH, MAX_ITEMS)


# -------------------------------------------------------------- documents
def _clip(line: str, width: int) -> str:
    return line if len(line) <= width else line[: max(width - 3, 0)] + "..."


class _Text:
    """An unbreakable piece of text."""

    __slots__ = ("text",)
    module_like = False

    def __init__(self, text: str):
        self.text = text

    def flat(self) -> str:
        return self.text

    def lines(
        self,
        indent: int,
        prefix: str,
        suffix: str,
        width: int,
        comment: Sequence[str] = (),
    ) -> list[str]:
        return [_clip(" " * indent + prefix + self.text + suffix, width)]


class _Group:
    """``open part, part, ... close``: one line if it fits, else one part per line."""

    __slots__ = ("open", "parts", "close", "module_like", "force_break", "_flat")

    def __init__(
        self,
        open_: str,
        parts: list[tuple[str, Any]],
        close: str,
        *,
        module_like: bool = False,
    ):
        self.open = open_
        self.parts = parts
        self.close = close
        self.module_like = module_like
        self.force_break = sum(1 for _, d in parts if d.module_like) >= 2
        self._flat: str | None = None

    def flat(self) -> str:
        if self._flat is None:
            inner = ", ".join(label + doc.flat() for label, doc in self.parts)
            self._flat = self.open + inner + self.close
        return self._flat

    def lines(
        self,
        indent: int,
        prefix: str,
        suffix: str,
        width: int,
        comment: Sequence[str] = (),
    ) -> list[str]:
        pad = " " * indent
        one = pad + prefix + self.flat() + suffix
        if not self.force_break and len(one) <= width:
            return [one]
        first = pad + prefix + self.open
        body = list(self.parts)
        # leading plain-text parts (e.g. "784 -> 256") stay on the opening line
        n_head = 0
        while (
            n_head < len(body)
            and not body[n_head][0]
            and isinstance(body[n_head][1], _Text)
        ):
            n_head += 1
        if n_head < len(body):  # greedily, as many as fit
            taken = 0
            while taken < n_head:
                cand = first + body[taken][1].flat() + ","
                if len(cand) > width:
                    break
                first = cand + (" " if taken + 1 < n_head else "")
                taken += 1
            first = first.rstrip()
            body = body[taken:]
        for text in comment:  # the first candidate that fits whole
            if len(first) + 4 + len(text) <= width:
                first = f"{first}  # {text}"
                break
        else:
            entries = comment[-1].split(", ") if comment else []
            for n in range(len(entries), 0, -1):  # as many entries as fit
                cand = f"{first}  # {', '.join(entries[:n])}"
                if len(cand) <= width:
                    first = cand
                    break
        out = [_clip(first, width)]
        for label, doc in body:
            out.extend(doc.lines(indent + INDENT, label, ",", width))
        out.append(_clip(pad + self.close + suffix, width))
        return out


def _collapse(parts: list[tuple[str, Any]], max_items: int) -> list[tuple[str, Any]]:
    """Collapse runs of identical positional parts; cap the number of parts."""
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(parts):
        label, doc = parts[i]
        j = i + 1
        if not label and doc.module_like:
            text = doc.flat()
            while j < len(parts) and not parts[j][0] and parts[j][1].flat() == text:
                j += 1
        if j - i >= RUN_MIN:
            out.append((f"{j - i} x ", doc))
        else:
            out.extend(parts[i:j])
        i = j
    if len(out) > max_items:
        hidden = len(out) - (max_items - 1)
        out = out[: max_items - 1] + [("", _Text(f"... {hidden} more"))]
    return out


# ------------------------------------------------------------ rendering
class _Ctx:
    __slots__ = ("seen", "stack", "max_depth", "max_items")

    def __init__(self, max_depth: int, max_items: int):
        self.seen: dict[int, tuple] = {}
        self.stack: set[int] = set()
        self.max_depth = max_depth
        self.max_items = max_items


def _scalar_text(x: Any) -> str:
    v = np.asarray(x).item()
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def value_text(x: Any) -> str:
    """Compact text of a Variable's or attribute's value: ``f32[784,256]``.

    Concrete scalars also show their value (``i32[] 4``); containers show
    their first items.

    Example:
        >>> import jax.numpy as jnp
        >>> (value_text(jnp.zeros((2, 3))), value_text(jnp.array(4)),
        ...  value_text((jnp.ones(2),)))
        ('f32[2,3]', 'i32[] 4', '(f32[2],)')
    """
    s = shape_str(x)
    if s is not None:
        if getattr(x, "ndim", None) == 0 and not is_tracer(x) and _is_concrete(x):
            try:
                return f"{s} {_scalar_text(x)}"
            except Exception:  # deleted buffers, exotic dtypes
                return s
        return s
    if isinstance(x, (tuple, list)):
        items = [value_text(e) for e in x[:4]] + (["..."] if len(x) > 4 else [])
        if isinstance(x, tuple):
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        return "[" + ", ".join(items) + "]"
    if isinstance(x, Mapping):
        items = [f"{k!r}: {value_text(v)}" for k, v in list(x.items())[:4]]
        return "{" + ", ".join(items) + (", ..." if len(x) > 4 else "") + "}"
    text = layer_formats.short_static(x, limit=40)
    return text if text is not None else f"<{type(x).__name__}>"


def _is_concrete(x: Any) -> bool:
    import jax

    if not isinstance(x, (np.ndarray, np.generic, jax.Array)):
        return False
    return not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _static_text(v: Any) -> str:
    text = layer_formats.short_static(v, limit=60)
    if text is None:
        text = " ".join(repr(v).split())
        text = text if len(text) <= 60 else text[:57] + "..."
    return text


def _relative_paths(obj: Any) -> dict[int, tuple]:
    """Paths (relative to ``obj``) of its children and grandchildren, by id."""
    out: dict[int, tuple] = {}
    for key, child in obj._graph_children():
        out.setdefault(id(child), (key,))
        k = registry.kind_of(child)
        if k is registry.OBJECT:
            items: Any = child._graph_children()
        elif k in registry.CONTAINERS:
            items = _container_items(child, k)
        else:
            continue
        for key2, grand in items:
            out.setdefault(id(grand), (key, key2))
    return out


def _container_items(value: Any, k: str) -> Any:
    if k is registry.DICT or isinstance(value, Mapping):
        return list(value.items())
    if k is registry.NAMEDTUPLE:
        return list(zip(value._fields, value))
    if k is registry.PYTREE:
        return registry.one_level(value)[0]
    return list(enumerate(value))


def _doc(value: Any, path: tuple, depth: int, ctx: _Ctx) -> Any:
    k = registry.kind_of(value)
    if k is registry.VARIABLE:
        return _variable_doc(value, path, ctx)
    if k is registry.ARRAY:
        return _Text(value_text(value))
    if k is registry.OBJECT:
        return _object_doc(value, path, depth, ctx)
    if k is registry.STATIC:
        return _Text(_static_text(value))
    return _container_doc(value, k, path, depth, ctx)


def _variable_doc(var: Any, path: tuple, ctx: _Ctx) -> _Text:
    from ramie._src.core.variables import Param

    name = type(var).__name__
    i = id(var)
    if i in ctx.seen:
        return _Text(f"{name}(<shared with {format_path(ctx.seen[i])}>)")
    ctx.seen[i] = path
    text = value_text(var._raw)
    return _Text(text if type(var) is Param else f"{name}({text})")


def _object_doc(obj: Any, path: tuple, depth: int, ctx: _Ctx) -> Any:
    name = type(obj).__name__
    i = id(obj)
    if i in ctx.stack:
        return _Text(f"{name}(<cycle: {format_path(ctx.seen[i])}>)")
    if i in ctx.seen:
        return _Text(f"{name}(<shared with {format_path(ctx.seen[i])}>)")
    ctx.seen[i] = path
    if depth >= ctx.max_depth:
        return _Text(f"{name}(...)")
    ctx.stack.add(i)
    try:
        fmt = layer_formats.formatter_for(obj)
        parts = None
        if fmt is not None:
            try:
                parts = fmt(obj)
            except Exception:  # a formatter must never break repr: fall back
                parts = None
        if parts is None:
            parts = layer_formats.generic_parts(obj)
        rel: dict[int, tuple] | None = None
        docs: list[tuple[str, Any]] = []
        n_pos = 0
        for part in parts:
            if isinstance(part, str):
                docs.append(("", _Text(part)))
                continue
            key, value = part
            if rel is None:
                rel = _relative_paths(obj)
            fallback = (key,) if key is not None else (n_pos,)
            child_path = path + rel.get(id(value), fallback)
            if key is None:
                n_pos += 1
            docs.append(
                (
                    "" if key is None else f"{key}=",
                    _doc(value, child_path, depth + 1, ctx),
                )
            )
    finally:
        ctx.stack.discard(i)
    module_like = any(label or not isinstance(d, _Text) for label, d in docs)
    return _Group(
        f"{name}(", _collapse(docs, ctx.max_items), ")", module_like=module_like
    )


def _container_doc(value: Any, k: str, path: tuple, depth: int, ctx: _Ctx) -> Any:
    i = id(value)
    if i in ctx.stack:
        return _Text("<cycle>")
    if k is registry.NAMEDTUPLE or (
        k is registry.PYTREE and not isinstance(value, Mapping)
    ):
        open_, close = f"{type(value).__name__}(", ")"
    elif isinstance(value, Mapping):
        open_, close = (
            ("{", "}")
            if type(value) in (dict, registry.TrackedDict)
            else (
                f"{type(value).__name__}({{",
                "})",
            )
        )
    elif k is registry.LIST:
        open_, close = "[", "]"
    else:
        open_, close = "(", ")"
    items = _container_items(value, k)
    if depth >= ctx.max_depth:
        return _Text(
            f"{open_}... {len(items)} items{close}" if items else open_ + close
        )
    ctx.stack.add(i)
    try:
        docs = []
        for key, child in items:
            doc = _doc(child, path + (key,), depth + 1, ctx)
            if isinstance(value, Mapping):
                label = f"{key!r}: "
            elif k is registry.NAMEDTUPLE or (
                k is registry.PYTREE and isinstance(key, str)
            ):
                label = f"{key}="
            else:
                label = ""
            docs.append((label, doc))
    finally:
        ctx.stack.discard(i)
    if k is registry.TUPLE and len(docs) == 1:
        close = "," + close
    module_like = any(d.module_like for _, d in docs)
    return _Group(open_, _collapse(docs, ctx.max_items), close, module_like=module_like)


def _totals_comment(obj: Any) -> list[str]:
    """Candidate totals comments, best first: with bytes per type, then counts."""
    from ramie._src.display.sizes import format_size, variable_stats

    try:
        stats = variable_stats(obj)
    except Exception:  # a half-built object: no totals rather than no repr
        return []
    full = [f"{t.__name__}: {format_size(*sb)}" for t, sb in stats.items()]
    if len(stats) < 2:
        return [", ".join(full)] if full else []
    count = sum(n for n, _ in stats.values())
    total = f"Total: {format_size(count, sum(b for _, b in stats.values()))}"
    counts = [f"{t.__name__}: {n:,}" for t, (n, _) in stats.items()]
    return [", ".join([*full, total]), ", ".join([*counts, total])]


def object_repr(obj: Any) -> str:
    """The repr of a Module or other graph object (see the module docstring).

    Args:
        obj: A Module, Rngs, Optimizer, metric or any ``ramie.Pytree``.

    Returns:
        One line when it fits in the width, else an indented tree; the first
        line of a tree carries the sizes per Variable type.

    Example:
        >>> import ramie
        >>> ramie.Linear(784, 256, rngs=ramie.Rngs(0))
        Linear(784 -> 256, kernel=f32[784,256], bias=f32[256])
        >>> print(repr(ramie.Sequential(ramie.Linear(8, 8, rngs=ramie.Rngs(0)),
        ...                             ramie.Linear(8, 2, rngs=ramie.Rngs(1)))))
        Sequential(  # Param: 90 (360 B)
          Linear(8 -> 8, kernel=f32[8,8], bias=f32[8]),
          Linear(8 -> 2, kernel=f32[8,2], bias=f32[2]),
        )
    """
    width, max_depth, max_items = _options()
    ctx = _Ctx(max_depth, max_items)
    doc = _doc(obj, (), 0, ctx)
    lines = doc.lines(0, "", "", width)
    if len(lines) > 1:
        lines = doc.lines(0, "", "", width, comment=_totals_comment(obj))
    return "\n".join(lines)


# ------------------------------------------------------------------ States
def state_repr(state: Any, depth: int = 0) -> str:
    """``State({'kernel': Param(value=f32[784,256]), ...})``, one entry a line.

    Values print through the Variables' own repr, so a State of shapes (from
    ``jax.tree.map(jnp.shape, state)``) reads ``Param(value=(784, 256))``.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> state = ramie.state(ramie.Linear(784, 256, rngs=ramie.Rngs(0)))
        >>> print(jax.tree.map(jnp.shape, state))
        State({
          'bias': Param(value=(256,)),
          'kernel': Param(value=(784, 256)),
        })
    """
    from ramie._src.core.state import sorted_keys

    name = type(state).__name__
    if not state:
        return f"{name}({{}})" if depth == 0 else "{}"
    pad = " " * (INDENT * (depth + 1))
    lines = [f"{name}({{" if depth == 0 else "{"]
    for key in sorted_keys(state):
        v = state[key]
        if isinstance(v, Mapping) and registry.kind_of(v) is not registry.VARIABLE:
            inner = state_repr(v, depth + 1)
        elif registry.kind_of(v) is registry.VARIABLE:
            inner = repr(v)
        else:
            inner = array_repr(v)
        lines.append(f"{pad}{key!r}: {inner},")
    lines.append(" " * (INDENT * depth) + ("})" if depth == 0 else "}"))
    return "\n".join(lines)
