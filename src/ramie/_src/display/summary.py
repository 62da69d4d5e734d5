"""``tabulate`` and ``summary``: a table of every sub-module call of a model.

The model is traced exactly once, abstractly (``jax.eval_shape``): nothing is
computed, no memory is allocated for activations, and the model's state is not
touched (the trace runs on a merged copy). While that single trace runs, the
``__call__`` (and the requested method) of every Module class in the graph is
temporarily wrapped to record which sub-module was called, in which order, and
the shapes it returned; the originals are restored afterwards, even on error.

Each row shows the module's path, type, output shapes (``f32[32,10]``), its
trainable parameters (``Param`` and subclasses) and, separately, its other
state (``BatchStat``, RNG state, caches...), counted once per shared Variable.
The table is rendered with rich and fits in 80 columns by default.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import itertools
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import jax

from ramie._src.core.graph import api
from ramie._src.core.graph.registry import OBJECT, kind_of
from ramie._src.core.paths import format_path
from ramie._src.core.variables import Param
from ramie._src.display.arrays import shape_str
from ramie._src.display.sizes import format_size, group_type, size_and_bytes

_tls = threading.local()
WIDTH = 80


@dataclasses.dataclass
class CallInfo:
    """One recorded call (a row of the table); ``row_filter`` receives these.

    Attributes:
        call_order: Position of the call's start among all recorded calls.
        object_id: ``id`` of the (traced copy of the) module.
        type: The module's class.
        path: Path of the module from the root, plus the method name when it
            is not ``__call__``.
        inputs_repr: The call's arguments as shape text.
        outputs: The call's outputs with arrays replaced by shape text.
        flops: Estimated FLOPs of the call (``compute_flops=True``), else None.
        vjp_flops: Estimated FLOPs of its backward pass, else None.
    """

    call_order: int
    object_id: int
    type: type
    path: tuple
    inputs_repr: str
    outputs: Any
    flops: int | None
    vjp_flops: int | None


def filter_rng_streams(row: CallInfo) -> bool:
    """Default ``row_filter``: hide calls of RNG streams.

    Example:
        >>> import ramie
        >>> row = CallInfo(0, 0, ramie.RngStream, ("rngs",), "", None, None, None)
        >>> filter_rng_streams(row)
        False
    """
    from ramie._src.core.rngs import RngStream

    return not issubclass(row.type, RngStream)


# ------------------------------------------------------------- recording
def _leaf_text(x: Any) -> str:
    if isinstance(x, str):
        return x
    s = shape_str(x)
    if s is not None:
        return s
    if kind_of(x) is OBJECT:
        return f"{type(x).__name__}(...)"
    return " ".join(repr(x).split())[:40]


def _tree_text(tree: Any) -> str:
    """Shapes of a pytree, one leaf a line: ``f32[32,10]`` or ``[0]: f32[..]``."""
    flat, _ = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: kind_of(x) is OBJECT
    )
    if not flat:
        return ""
    if len(flat) == 1 and not flat[0][0]:
        return _leaf_text(flat[0][1])
    return "\n".join(f"{jax.tree_util.keystr(p)}: {_leaf_text(x)}" for p, x in flat)


class _Recorder:
    def __init__(self, method: str, compute_flops: bool, compute_vjp_flops: bool):
        self.method = method
        self.compute_flops = compute_flops
        self.compute_vjp_flops = compute_vjp_flops
        self.paths: dict[int, tuple] = {}
        self.rows: list[CallInfo] = []
        self.module_paths: dict[int, tuple] = {}  # call_order -> module path
        self.stack: list[tuple[int, str]] = []
        self.counter = itertools.count()
        self.paused = 0
        self.root_calls = 0


def _wrap(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        rec: _Recorder | None = getattr(_tls, "recorder", None)
        key = (id(self), name)
        if rec is None or rec.paused or (rec.stack and rec.stack[-1] == key):
            return fn(self, *args, **kwargs)  # not recording, or a super() chain
        order = next(rec.counter)
        rec.stack.append(key)
        try:
            out = fn(self, *args, **kwargs)
        finally:
            rec.stack.pop()
        path = rec.paths.get(id(self))
        if path is not None:
            flops = vjp_flops = None
            if rec.compute_flops or rec.compute_vjp_flops:
                flops, vjp_flops = _call_flops(rec, fn, self, args, kwargs)
            row_path = path if name == "__call__" else (*path, name)
            rec.module_paths[order] = path
            rec.rows.append(
                CallInfo(
                    order,
                    id(self),
                    type(self),
                    row_path,
                    _tree_text((args, kwargs) if kwargs else args),
                    jax.tree.map(
                        _leaf_text, out, is_leaf=lambda x: kind_of(x) is OBJECT
                    ),
                    flops,
                    vjp_flops,
                )
            )
        return out

    wrapper._ramie_summary_original = fn  # type: ignore[attr-defined]
    return wrapper


def _abstract(tree: Any) -> Any:
    def f(x: Any) -> Any:
        if hasattr(x, "shape") and hasattr(x, "dtype"):
            return jax.ShapeDtypeStruct(x.shape, x.dtype)
        return x

    return jax.tree.map(f, tree)


def _cost(lowered: Any) -> int:
    cost = lowered.cost_analysis()
    if cost is None:
        cost = lowered.compile().cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return int(cost.get("flops", 0)) if cost else 0


def _call_flops(
    rec: _Recorder, fn: Callable[..., Any], obj: Any, args: tuple, kwargs: dict
) -> tuple[Any, Any]:
    """Lower one call on its own (abstract shapes) and read XLA's cost analysis."""
    rec.paused += 1
    try:
        graphdef, state = api.split((obj, args, kwargs))
        abstract = _abstract(state)

        def pure(st: Any) -> Any:
            o, a, k = api.merge(graphdef, st)
            return fn(o, *a, **k)

        flops = vjp_flops = None
        if rec.compute_flops:
            flops = _cost(jax.jit(pure).lower(abstract))
        if rec.compute_vjp_flops:

            def backward(st: Any) -> Any:
                out, f_vjp = jax.vjp(pure, st)
                return f_vjp(out)

            try:
                vjp_flops = _cost(jax.jit(backward).lower(abstract))
            except Exception:  # integer outputs etc.: no backward pass to cost
                vjp_flops = None
        return flops, vjp_flops
    finally:
        rec.paused -= 1


def _patch_classes(
    classes: set[type], names: tuple[str, ...]
) -> list[tuple[type, str, Any]]:
    """Wrap ``names`` on the classes that define them; return what to restore."""
    done: list[tuple[type, str, Any]] = []
    owners: set[tuple[type, str]] = set()
    for cls in classes:
        for name in names:
            for owner in cls.__mro__:
                if name in owner.__dict__:
                    break
            else:
                continue
            original = owner.__dict__[name]
            if (
                (owner, name) in owners
                or owner is object
                or not inspect.isfunction(original)
            ):
                continue
            owners.add((owner, name))
            done.append((owner, name, original))
            setattr(owner, name, _wrap(original, name))
    return done


def _trace(obj: Any, method: str, rec: _Recorder, args: tuple, kwargs: dict) -> None:
    """Trace ``obj.<method>(*args, **kwargs)`` once, abstractly, recording calls."""
    from ramie._src.core.module import Module

    classes = {type(m) for _, m in api.iter_modules(obj)} | {type(obj)}
    classes = {c for c in classes if issubclass(c, Module) or c is type(obj)}
    graphdef, state = api.split((obj, args, kwargs))

    def pure(st: Any) -> None:
        root, a, k = api.merge(graphdef, st)
        rec.paths = {id(m): p for p, m in api.iter_modules(root)}
        rec.paths[id(root)] = ()
        # the rows hold the outputs; returning nothing lets any output type through
        getattr(root, method)(*a, **k)

    restore = _patch_classes(classes, tuple(dict.fromkeys(("__call__", method))))
    _tls.recorder = rec
    try:
        jax.eval_shape(pure, state)
    finally:
        _tls.recorder = None
        for owner, name, original in reversed(restore):
            setattr(owner, name, original)


# --------------------------------------------------------------- the table
def _stats(module: Any) -> tuple[tuple[int, int], dict[str, tuple[int, int]]]:
    """``(params, {other type name: (size, bytes)})`` of a module, shared once."""
    from ramie._src.core.state import iter_flat
    from ramie._src.core.variables import Variable

    params = (0, 0)
    other: dict[str, tuple[int, int]] = {}
    for _, var in iter_flat(api.state(module)):
        if not isinstance(var, Variable):
            continue
        s, b = size_and_bytes(var._raw)
        if isinstance(var, Param):
            params = (params[0] + s, params[1] + b)
        else:
            name = group_type(var).__name__
            s0, b0 = other.get(name, (0, 0))
            other[name] = (s0 + s, b0 + b)
    return params, dict(sorted(other.items()))


def _other_text(other: Mapping[str, tuple[int, int]]) -> str:
    return "\n".join(f"{s:,} {name}" for name, (s, _) in other.items())


def _path_text(row: CallInfo, module_path: tuple) -> str:
    text = format_path(module_path) if module_path else ""
    if len(row.path) > len(module_path):
        text = f"{text}.{row.path[-1]}()" if text else f"{row.path[-1]}()"
    return text


def tabulate(
    obj: Any,
    *input_args: Any,
    depth: int | None = None,
    method: str = "__call__",
    row_filter: Callable[[CallInfo], bool] = filter_rng_streams,
    table_kwargs: Mapping[str, Any] = MappingProxyType({}),
    column_kwargs: Mapping[str, Any] = MappingProxyType({}),
    console_kwargs: Mapping[str, Any] = MappingProxyType({}),
    compute_flops: bool = False,
    compute_vjp_flops: bool = False,
    **input_kwargs: Any,
) -> str:
    """A table of every sub-module call of ``obj.<method>(*input_args)``.

    The model is traced once under ``jax.eval_shape`` (no computation, state
    untouched). Rows are in call order; ``Param`` counts are the trainable
    parameters; "non-trainable" counts everything else (batch statistics, RNG
    state, caches), by Variable type.

    Args:
        obj: The model (any ramie Module or graph object with ``method``).
        *input_args: Positional inputs: arrays or ``jax.ShapeDtypeStruct``.
        depth: Show only rows at most this deep (root is 0); None for all.
        method: The method to trace (default ``'__call__'``).
        row_filter: ``row_filter(CallInfo) -> bool``; default hides RNG streams.
        table_kwargs: Extra arguments of ``rich.table.Table``.
        column_kwargs: Extra arguments of ``Table.add_column``.
        console_kwargs: Extra arguments of ``rich.console.Console`` (default
            ``width=80`` and plain text without colour codes).
        compute_flops: Add a column of XLA's FLOP estimate per call; each call
            is then also lowered on its own.
        compute_vjp_flops: Add a column of backward-pass FLOP estimates.
        **input_kwargs: Keyword inputs of the method.

    Returns:
        The rendered table.

    Raises:
        AttributeError: ``obj`` has no method ``method``.
        ImportError: rich is not installed.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> model = ramie.Sequential(
        ...     ramie.Linear(4, 8, rngs=ramie.Rngs(0)),
        ...     jax.nn.relu,
        ...     ramie.Linear(8, 2, rngs=ramie.Rngs(1)),
        ... )
        >>> print(ramie.tabulate(model, jnp.ones((16, 4))))
                                Sequential Summary
        ┏━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┓
        ┃ path      ┃ type       ┃ outputs   ┃ Param      ┃ non-trainable ┃
        ┡━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━━━┩
        │           │ Sequential │ f32[16,2] │ 58 (232 B) │               │
        ├───────────┼────────────┼───────────┼────────────┼───────────────┤
        │ layers[0] │ Linear     │ f32[16,8] │ 40 (160 B) │               │
        ├───────────┼────────────┼───────────┼────────────┼───────────────┤
        │ layers[2] │ Linear     │ f32[16,2] │ 18 (72 B)  │               │
        ├───────────┼────────────┼───────────┼────────────┼───────────────┤
        │           │            │     Total │ 58 (232 B) │               │
        └───────────┴────────────┴───────────┴────────────┴───────────────┘
        <BLANKLINE>
                        Total: 58 trainable params (232 B)
    """
    try:
        import rich.console
        import rich.table
        import rich.text
    except ImportError as e:  # pragma: no cover - rich is a display extra
        raise ImportError(
            "ramie.tabulate() needs rich: pip install 'ramie[display]' "
            "(or pip install rich)"
        ) from e
    if not callable(getattr(obj, method, None)):
        public = sorted(
            n
            for n in dir(type(obj))
            if not n.startswith("_") and callable(getattr(type(obj), n, None))
        )
        raise AttributeError(
            f"ramie.tabulate(..., method={method!r}): {type(obj).__name__} has no "
            f"method {method!r}; its methods: {public}.\n"
            "  Fix: ramie.tabulate(model, x, method='__call__')"
        )
    rec = _Recorder(method, compute_flops, compute_vjp_flops)
    _trace(obj, method, rec, input_args, input_kwargs)

    seen: set[tuple] = set()
    rows: list[CallInfo] = []
    for row in sorted(rec.rows, key=lambda r: r.call_order):
        ident = (row.path, row.inputs_repr, _tree_text(row.outputs))
        if ident in seen:
            continue
        seen.add(ident)
        if depth is not None and len(row.path) > depth:
            continue
        if row_filter(row):
            rows.append(row)

    modules = {p: m for p, m in api.iter_modules(obj)}
    modules[()] = obj
    table_options: dict[str, Any] = {
        "title": f"{type(obj).__name__} Summary",
        "show_header": True,
        "show_lines": True,
        "show_footer": True,
    }
    table_options.update(table_kwargs)
    table = rich.table.Table(**table_options)
    headers = ["path", "type", "outputs"]
    if compute_flops:
        headers.append("flops")
    if compute_vjp_flops:
        headers.append("vjp_flops")
    headers += ["Param", "non-trainable"]
    for h in headers:
        table.add_column(h, **dict(column_kwargs))
    for row in rows:
        module_path = rec.module_paths[row.call_order]
        params, other = _stats(modules.get(module_path, obj))
        cells = [
            _path_text(row, module_path),
            row.type.__name__,
            _tree_text(row.outputs),
        ]
        if compute_flops:
            cells.append("" if row.flops is None else f"{row.flops:,}")
        if compute_vjp_flops:
            cells.append("" if row.vjp_flops is None else f"{row.vjp_flops:,}")
        cells += [format_size(*params) if params[0] else "", _other_text(other)]
        table.add_row(*(rich.text.Text(c) for c in cells))

    params, other = _stats(obj)
    n = len(headers)
    table.columns[n - 3].footer = rich.text.Text("Total", justify="right")
    table.columns[n - 2].footer = rich.text.Text(
        format_size(*params) if params[0] else "0"
    )
    table.columns[n - 1].footer = rich.text.Text(_other_text(other))
    caption = f"Total: {params[0]:,} trainable params ({_bytes(params[1])})"
    if other:
        o_size = sum(s for s, _ in other.values())
        o_bytes = sum(b for _, b in other.values())
        caption += f"; non-trainable: {o_size:,} ({_bytes(o_bytes)})"
    table.caption = rich.text.Text("\n" + caption)

    options: dict[str, Any] = {
        "width": WIDTH,
        "force_terminal": False,
        "force_jupyter": False,
    }
    options.update(console_kwargs)
    buf = io.StringIO()
    rich.console.Console(file=buf, **options).print(table)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines())


def _bytes(n: int) -> str:
    from ramie._src.display.sizes import format_bytes

    return format_bytes(n)


def summary(model: Any, *inputs: Any, **kwargs: Any) -> None:
    """Print :func:`tabulate` of ``model`` on ``inputs`` (a Keras-style summary).

    Args:
        model: The model.
        *inputs: Positional inputs (arrays or ``jax.ShapeDtypeStruct``).
        **kwargs: Options and keyword inputs, as for :func:`tabulate`.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> layer = ramie.Linear(3, 2, rngs=ramie.Rngs(0))
        >>> x = jax.ShapeDtypeStruct((5, 3), jnp.float32)
        >>> ramie.summary(layer, x)  # doctest: +ELLIPSIS
        Linear Summary
        ...
        │        │ Linear │ f32[5,2] │ 8 (32 B) │               │
        ...
    """
    print(tabulate(model, *inputs, **kwargs))
