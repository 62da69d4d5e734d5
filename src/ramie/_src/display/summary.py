"""``tabulate`` and ``summary``: a table of every sub-module call of a model.

The model is traced exactly once, abstractly (``jax.eval_shape``): nothing is
computed, no memory is allocated for activations, and the model's state is not
touched (the trace runs on a merged copy). While that single trace runs, the
``__call__`` (and the requested method) of every Module class in the graph is
temporarily wrapped to record which sub-module was called, in which order, and
the shapes it returned; the originals are restored afterwards, even on error.
With ``compute_flops``/``compute_vjp_flops`` each call is traced once into a
jaxpr that is both evaluated and costed by XLA, so the Python code of every
module still runs once per call.

The layout follows Flax's: each row shows the path (``block1/linear``, or
``block1/forward`` for a method other than ``__call__``), the type, the inputs
and outputs (``float32[32,10]``), then one column per Variable type found in
the model (``BatchStat``, ``Param``, ``RngState``, user types): the module's
own Variables of that type and the total of its subtree, counted once per
shared Variable. Every public method and ``__call__`` is recorded; a call
with the same module and inputs as one inside it (``__call__`` forwarding to
``g``) is shown once.
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
from ramie._src.display.sizes import format_size, group_type, size_and_bytes

_tls = threading.local()


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
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        try:
            dtype = str(jax.numpy.dtype(x.dtype))
        except TypeError:  # PRNG keys and other extended dtypes
            dtype = str(x.dtype)
        return f"{dtype}[{','.join(map(str, x.shape))}]"
    if kind_of(x) is OBJECT:
        return f"{type(x).__name__}(...)"
    return " ".join(repr(x).split())[:60]


def _text(x: Any, indent: str = "") -> str:
    """YAML-like text of a value: leaves as ``float32[2,3]``, ``- item`` lists."""
    if isinstance(x, Mapping) and kind_of(x) is not OBJECT:
        if not x:
            return "{}"
        lines = []
        for k, v in x.items():
            t = _text(v, indent + "  ")
            if "\n" in t or t.startswith("- "):
                lines.append(f"{indent}{k}:\n{t}")
            else:
                lines.append(f"{indent}{k}: {t}")
        return "\n".join(lines)
    if isinstance(x, (list, tuple)) and kind_of(x) is not OBJECT:
        if not x:
            return "[]" if isinstance(x, list) else "()"
        return "\n".join(f"{indent}- " + _text(v, indent + "  ").lstrip() for v in x)
    return _leaf_text(x)


def _inputs_text(args: tuple, kwargs: dict) -> str:
    parts = []
    if args:
        parts.append(_text(args[0] if len(args) == 1 and not kwargs else list(args)))
    if kwargs:
        parts.append(_text(kwargs))
    return "\n".join(parts)


def _tree_text(tree: Any) -> str:
    """Text of an output: one leaf, or ``- leaf`` lines for a tuple/list."""
    return _text(tree)


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
        # id of a copy made to cost one call -> id of the module it copies
        self.canon: dict[int, int] = {}
        self.keep: list[Any] = []  # those copies, kept alive so ids stay unique


def _wrap(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        rec: _Recorder | None = getattr(_tls, "recorder", None)
        key = (id(self), name)
        if rec is None or rec.paused or (rec.stack and rec.stack[-1] == key):
            return fn(self, *args, **kwargs)  # not recording, or a super() chain
        order = next(rec.counter)
        path = rec.paths.get(id(self))
        costed = None
        rec.stack.append(key)
        try:
            if path is not None and (rec.compute_flops or rec.compute_vjp_flops):
                costed = _costed_call(rec, fn, self, args, kwargs, path)
            out = costed[0] if costed is not None else fn(self, *args, **kwargs)
        finally:
            rec.stack.pop()
        if path is not None:
            flops = vjp_flops = None
            if costed is not None:
                flops, vjp_flops = costed[1], costed[2]
            elif rec.compute_flops or rec.compute_vjp_flops:
                flops, vjp_flops = _call_flops(rec, fn, self, args, kwargs)
            row_path = path if name == "__call__" else (*path, name)
            rec.module_paths[order] = path
            rec.rows.append(
                CallInfo(
                    order,
                    rec.canon.get(id(self), id(self)),
                    type(self),
                    row_path,
                    _inputs_text(args, kwargs),
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


def _costed_call(
    rec: _Recorder,
    fn: Callable[..., Any],
    obj: Any,
    args: tuple,
    kwargs: dict,
    path: tuple,
) -> tuple[Any, Any, Any] | None:
    """Run one call by tracing it once to a jaxpr: ``(output, flops, vjp_flops)``.

    The Python code of the call runs exactly once: it is traced (on a copy of
    the module, whose sub-module calls are recorded and costed the same way)
    into a jaxpr, which is then both evaluated in the surrounding trace (its
    state changes written back to ``obj``) and handed to XLA's cost analysis.
    Returns None when the call cannot be handled so (outputs that are not
    arrays, a call that adds or removes Variables); the caller then runs it
    directly and costs it with :func:`_call_flops`.
    """
    graphdef, state = api.split((obj, args, kwargs))
    originals = {p: id(m) for p, m in api.iter_modules(obj)}

    def pure(st: Any) -> Any:
        o, a, k = api.merge(graphdef, st)
        for p, m in api.iter_modules(o):
            rec.paths[id(m)] = (*path, *p)
            orig = originals.get(p)
            if orig is not None:
                rec.canon[id(m)] = rec.canon.get(orig, orig)
        rec.keep.append(o)
        out = fn(o, *a, **k)
        return out, api.state(o)

    try:
        closed, shapes = jax.make_jaxpr(pure, return_shape=True)(state)
        out_shape, state_shape = shapes
        if jax.tree.structure(state_shape) != jax.tree.structure(api.state(obj)):
            return None
    except Exception:
        return None
    leaves = jax.tree.leaves(state)
    n_out = len(jax.tree.leaves(out_shape))
    results = jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *leaves)
    out_tree = jax.tree.structure(shapes)
    out, new_state = jax.tree.unflatten(out_tree, results)
    api.update(obj, new_state)

    def forward(consts: Any, xs: Any) -> Any:
        return jax.core.eval_jaxpr(closed.jaxpr, consts, *xs)[:n_out]

    abstract = (_abstract(list(closed.consts)), _abstract(leaves))
    rec.paused += 1
    try:
        flops = vjp_flops = None
        if rec.compute_flops:
            flops = _cost(jax.jit(forward).lower(*abstract))
        if rec.compute_vjp_flops:

            def backward(consts: Any, xs: Any) -> Any:
                o, f_vjp = jax.vjp(lambda ys: forward(consts, ys), xs)
                return f_vjp(o)

            try:
                vjp_flops = _cost(jax.jit(backward).lower(*abstract))
            except Exception:  # integer outputs etc.: no backward pass to cost
                vjp_flops = None
    finally:
        rec.paused -= 1
    return out, flops, vjp_flops


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

    from ramie._src.core.module import _recordable_methods

    names = {"__call__", method}
    for c in classes:
        names.update(name for _, name, _ in _recordable_methods(c))
    restore = _patch_classes(classes, tuple(sorted(names)))
    _tls.recorder = rec
    try:
        jax.eval_shape(pure, state)
    finally:
        _tls.recorder = None
        for owner, name, original in reversed(restore):
            setattr(owner, name, original)


# --------------------------------------------------------------- the table
def _type_stats(module: Any) -> dict[type, tuple[int, int]]:
    """``{Variable type: (size, bytes)}`` of a module's subtree, shared once."""
    from ramie._src.core.state import iter_flat
    from ramie._src.core.variables import Variable

    out: dict[type, tuple[int, int]] = {}
    for _, var in iter_flat(api.state(module)):
        if isinstance(var, Variable):
            s, b = size_and_bytes(var._raw)
            t = group_type(var)
            s0, b0 = out.get(t, (0, 0))
            out[t] = (s0 + s, b0 + b)
    return out


def _own_variables(module: Any, var_type: type) -> str:
    """``name: float32[3]`` lines for the module's own Variables of a type."""
    from ramie._src.core.variables import DEFAULT_METADATA, Variable

    lines = []
    for name, var in module._graph_children():
        if not isinstance(var, Variable) or group_type(var) is not var_type:
            continue
        value = _leaf_text(var._raw) if hasattr(var._raw, "shape") else ""
        meta = {
            k: v
            for k, v in var.get_metadata().items()
            if k not in type(var).required_metadata
            and not (k in DEFAULT_METADATA and DEFAULT_METADATA[k] == v)
        }
        if meta:
            lines.append(f"{name}:")
            if value:
                lines.append(f"  value: {value}")
            lines += [f"  {k}: {' '.join(repr(v).split())}" for k, v in meta.items()]
        elif value:
            lines.append(f"{name}: {value}")
    return "\n".join(lines)


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
        console_kwargs: Extra arguments of ``rich.console.Console`` (default:
            as wide as the table needs, plain text without colour codes).
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
        ┏━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━┓
        ┃ path     ┃ type       ┃ inputs        ┃ outputs       ┃ Param                ┃
        ┡━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━┩
        │          │ Sequential │ float32[16,4] │ float32[16,2] │ 58 (232 B)           │
        ├──────────┼────────────┼───────────────┼───────────────┼──────────────────────┤
        │ layers/0 │ Linear     │ float32[16,4] │ float32[16,8] │ bias: float32[8]     │
        │          │            │               │               │ kernel: float32[4,8] │
        │          │            │               │               │                      │
        │          │            │               │               │ 40 (160 B)           │
        ├──────────┼────────────┼───────────────┼───────────────┼──────────────────────┤
        │ layers/2 │ Linear     │ float32[16,8] │ float32[16,2] │ bias: float32[2]     │
        │          │            │               │               │ kernel: float32[8,2] │
        │          │            │               │               │                      │
        │          │            │               │               │ 18 (72 B)            │
        ├──────────┼────────────┼───────────────┼───────────────┼──────────────────────┤
        │          │            │               │         Total │ 58 (232 B)           │
        └──────────┴────────────┴───────────────┴───────────────┴──────────────────────┘
        <BLANKLINE>
                                  Total Parameters: 58 (232 B)
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

    # A call with the same module and inputs as one it made (``__call__``
    # forwarding to ``g``) is one row: the first to finish, the innermost.
    seen: set[tuple] = set()
    kept: list[CallInfo] = []
    for row in rec.rows:
        ident = (row.object_id, row.inputs_repr)
        if ident not in seen:
            seen.add(ident)
            kept.append(row)
    rows = [
        row
        for row in sorted(kept, key=lambda r: r.call_order)
        if (depth is None or len(row.path) <= depth) and row_filter(row)
    ]

    modules = {p: m for p, m in api.iter_modules(obj)}
    modules[()] = obj
    totals = _type_stats(obj)
    var_types = sorted(totals, key=lambda t: t.__name__)
    table_options: dict[str, Any] = {
        "title": f"{type(obj).__name__} Summary",
        "show_header": True,
        "show_lines": True,
        "show_footer": True,
    }
    table_options.update(table_kwargs)
    table = rich.table.Table(**table_options)
    headers = ["path", "type", "inputs", "outputs"]
    if compute_flops:
        headers.append("flops")
    if compute_vjp_flops:
        headers.append("vjp_flops")
    for h in headers + [t.__name__ for t in var_types]:
        table.add_column(h, **dict(column_kwargs))
    for row in rows:
        module = modules.get(rec.module_paths[row.call_order], obj)
        stats = _type_stats(module)
        cells = [
            "/".join(map(str, row.path)),
            row.type.__name__,
            row.inputs_repr,
            _tree_text(row.outputs),
        ]
        if compute_flops:
            cells.append("" if row.flops is None else f"{row.flops:,}")
        if compute_vjp_flops:
            cells.append("" if row.vjp_flops is None else f"{row.vjp_flops:,}")
        for t in var_types:
            own = _own_variables(module, t)
            size = format_size(*stats[t]) if t in stats else ""
            cells.append(f"{own}\n\n{size}" if own else size)
        table.add_row(*(rich.text.Text(c) for c in cells))

    n = len(headers)
    table.columns[n - 1].footer = rich.text.Text("Total", justify="right")
    for i, t in enumerate(var_types):
        table.columns[n + i].footer = rich.text.Text(format_size(*totals[t]))
    size = sum(sz for sz, _ in totals.values())
    nbytes = sum(b for _, b in totals.values())
    table.caption = rich.text.Text(f"\nTotal Parameters: {format_size(size, nbytes)}")

    options: dict[str, Any] = {"force_terminal": False, "force_jupyter": False}
    options.update(console_kwargs)
    if "width" not in options:  # as wide as the table needs, nothing wider
        probe = rich.console.Console(file=io.StringIO(), width=10_000, **options)
        options["width"] = probe.measure(table).maximum
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
        │      │ Linear │ float32[5,3] │ float32[5,2] │ bias: float32[2]     │
        ...
        Total Parameters: 8 (32 B)
    """
    print(tabulate(model, *inputs, **kwargs))
