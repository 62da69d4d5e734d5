"""Automatic differentiation over modules: grad, value_and_grad, vjp, jvp, custom_vjp.

For a graph argument (a module), ``grad`` differentiates the Variables that
match a filter - ``Param`` by default, or the filter of a
:class:`~ramie.DiffState` - and returns the gradient as a State with the same
paths and Variable types. Other state (BatchStat, RNG counters, ...) is not
differentiated, but updates to it made inside (BatchNorm statistics, dropout
RNG counts) are written back to the module, as with every ramie transform.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ramie._src.core.filters import to_predicate
from ramie._src.core.graph.flatten import to_state
from ramie._src.core.modes import resolve_graph
from ramie._src.core.sentinels import MISSING
from ramie._src.core.variables import Param, Variable, new_variable
from ramie._src.transforms import lifting
from ramie._src.transforms.axes import DiffState
from ramie._src.transforms.lifting import Extracted, is_node
from ramie._src.transforms.simple import is_simple, modal


class _DefaultFilter:
    """An int argnum: a module's Params, or every Variable held in a plain
    container argument (a State, dict or list of Variables), as in Flax."""

    def __repr__(self) -> str:
        return "Param"


_DEFAULT = _DefaultFilter()


def _normalize_argnums(argnums: Any) -> tuple[list[tuple[int, Any]], bool]:
    if isinstance(argnums, int):
        return [(argnums, _DEFAULT)], True
    if isinstance(argnums, DiffState):
        return [(argnums.argnum, argnums.filter)], True
    out = []
    for a in argnums:
        if isinstance(a, DiffState):
            out.append((a.argnum, a.filter))
        elif isinstance(a, int):
            out.append((a, _DEFAULT))
        else:
            raise TypeError(
                "argnums entries must be ints or ramie.DiffState, got "
                f"{type(a).__name__}"
            )
    return out, False


class _DiffPlan:
    """Which leaves of the extracted arguments are differentiated, per argnum."""

    def __init__(
        self, ext: Extracted, args: tuple, specs: list[tuple[int, Any]], api: str
    ):
        self.ext = ext
        self.specs = specs
        # leaf ranges of each positional argument in the flattened (args, kwargs)
        counts = [len(jax.tree_util.tree_leaves(a, is_leaf=is_node)) for a in args]
        starts = [0]
        for c in counts:
            starts.append(starts[-1] + c)
        self.starts = starts
        n_pos = starts[-1]
        for argnum, _ in specs:
            if not 0 <= argnum < len(args):
                raise ValueError(
                    f"{api}: argnums refers to argument {argnum}, but the function was "
                    f"called with {len(args)} positional argument(s)"
                )

        def arg_of(leaf_pos: int) -> int | None:
            if leaf_pos >= n_pos:
                return None
            for a in range(len(args)):
                if starts[a] <= leaf_pos < starts[a + 1]:
                    return a
            return None

        node_arg = [arg_of(p) for p in ext.node_pos]
        param = to_predicate(Param)
        preds = {a: param if f is _DEFAULT else to_predicate(f) for a, f in specs}
        default = {a for a, f in specs if f is _DEFAULT}
        self.diff_graph: list[int] = []
        for j, (path, leaf) in enumerate(zip(ext.flat.paths, ext.flat.leaves)):
            a = node_arg[path[0]]
            if a not in preds:
                continue
            if a in default and len(path) == 1 and isinstance(leaf, Variable):
                # a Variable passed on its own or held by a plain container
                # (State, dict) is differentiated whatever its type, as in Flax:
                # the default Param filter picks among a module's Variables
                self.diff_graph.append(j)
                continue
            if preds[a](path[1:], leaf):
                self.diff_graph.append(j)
        node_set = set(ext.node_pos)
        other_pos = [
            p for p in range(len(ext.node_pos) + len(ext.other)) if p not in node_set
        ]
        self.other_pos = other_pos
        self.diff_other: list[int] = [
            i for i, p in enumerate(other_pos) if arg_of(p) in preds
        ]
        self.node_arg = node_arg
        self.args = args

    def split(self, values: list, other: list) -> tuple[list, list, list, list]:
        dg = set(self.diff_graph)
        do = set(self.diff_other)
        return (
            [values[i] for i in self.diff_graph],
            [other[i] for i in self.diff_other],
            [v for i, v in enumerate(values) if i not in dg],
            [v for i, v in enumerate(other) if i not in do],
        )

    def join(self, dg: list, do: list, rg: list, ro: list) -> tuple[list, list]:
        return _interleave(dg, rg, self.diff_graph), _interleave(
            do, ro, self.diff_other
        )

    def grads(self, g_graph: list, g_other: list, single: bool) -> Any:
        ext = self.ext
        graph_grad = dict(zip(self.diff_graph, g_graph))
        other_grad = dict(zip(self.diff_other, g_other))
        other_index = {p: i for i, p in enumerate(self.other_pos)}
        node_index = {p: k for k, p in enumerate(ext.node_pos)}
        results = []
        for argnum, _ in self.specs:
            arg = self.args[argnum]
            leaves, treedef = jax.tree_util.tree_flatten(arg, is_leaf=is_node)
            out = []
            for off, _leaf in enumerate(leaves):
                p = self.starts[argnum] + off
                if p in node_index:
                    k = node_index[p]
                    out.append(self._node_grad(k, graph_grad, argnum))
                else:
                    out.append(other_grad.get(other_index[p]))
            results.append(jax.tree_util.tree_unflatten(treedef, out))
        return results[0] if single else tuple(results)

    def _node_grad(self, k: int, graph_grad: dict, argnum: int) -> Any:
        ext = self.ext
        paths, leaves = [], []
        for j, (path, leaf) in enumerate(zip(ext.flat.paths, ext.flat.leaves)):
            if path[0] != k or j not in graph_grad:
                continue
            g = graph_grad[j]
            if isinstance(leaf, Variable):
                g = new_variable(type(leaf), g, dict(leaf._meta))
            if len(path) == 1:  # the argument is itself a Variable
                return g
            paths.append(path[1:])
            leaves.append(g)
        return to_state(paths, leaves)


def _interleave(a: list, b: list, a_idx: list[int]) -> list:
    n = len(a) + len(b)
    out: list[Any] = [None] * n
    a_set = set(a_idx)
    for i, v in zip(a_idx, a):
        out[i] = v
    it = iter(b)
    for i in range(n):
        if i not in a_set:
            out[i] = next(it)
    return out


@modal("ramie.value_and_grad", ("argnums",))
def value_and_grad(
    f: Callable[..., Any] = MISSING,  # type: ignore[assignment]
    *,
    argnums: int | DiffState | Sequence[int | DiffState] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
    reduce_axes: Sequence[Any] = (),
    graph: Any = None,
    graph_updates: Any = None,
) -> Any:
    """Like :func:`grad` but also returns the value: ``(value, grads)``.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> model = ramie.Linear(2, 1, rngs=ramie.Rngs(0))
        >>> def loss_fn(m):
        ...     return (m(jnp.ones((1, 2))) ** 2).mean()
        >>> loss, grads = ramie.value_and_grad(loss_fn)(model)
        >>> sorted(grads), grads.kernel.shape
        (['bias', 'kernel'], (2, 1))
    """
    lifting.reject_node_prefix(argnums, "argnums", "ramie.value_and_grad")
    if f is MISSING:
        return lambda fn: value_and_grad(
            fn,
            argnums=argnums,
            has_aux=has_aux,
            holomorphic=holomorphic,
            allow_int=allow_int,
        )
    lifting.reject_bound_method(f, "ramie.value_and_grad")
    if is_simple(graph, graph_updates):
        return _tree_grad(f, argnums, has_aux, holomorphic, allow_int, True)
    return _grad_impl(f, argnums, has_aux, holomorphic, allow_int, return_value=True)


@modal("ramie.grad", ("argnums",))
def grad(
    f: Callable[..., Any] = MISSING,  # type: ignore[assignment]
    *,
    argnums: int | DiffState | Sequence[int | DiffState] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
    reduce_axes: Sequence[Any] = (),
    graph: Any = None,
    graph_updates: Any = None,
) -> Any:
    """Gradient of ``f`` w.r.t. its arguments; for modules, w.r.t. their Params.

    Args:
        f: Function returning a scalar (or ``(scalar, aux)`` with ``has_aux``).
        argnums: Argument(s) to differentiate: ints (modules: their ``Param``
            Variables) or :class:`~ramie.DiffState` for another filter.
        has_aux: ``f`` returns ``(loss, aux)``; aux is returned too.
        holomorphic, allow_int: As in ``jax.grad``.

    Returns:
        A function returning the gradients (a State for each module argument,
        arrays for array arguments), plus ``aux`` when ``has_aux``.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> model = ramie.BatchNorm(3, rngs=ramie.Rngs(0))
        >>> grads = ramie.grad(lambda m, x: m(x).sum())(model, jnp.ones((4, 3)))
        >>> sorted(grads)  # BatchStats are not differentiated...
        ['bias', 'scale']
        >>> float(model.mean.value[0])  # ...but their update is kept
        0.01
    """
    lifting.reject_node_prefix(argnums, "argnums", "ramie.grad")
    if f is MISSING:
        return lambda fn: grad(
            fn,
            argnums=argnums,
            has_aux=has_aux,
            holomorphic=holomorphic,
            allow_int=allow_int,
        )
    lifting.reject_bound_method(f, "ramie.grad")
    if is_simple(graph, graph_updates):
        return _tree_grad(f, argnums, has_aux, holomorphic, allow_int, False)
    return _grad_impl(f, argnums, has_aux, holomorphic, allow_int, return_value=False)


def _inexact_variable(path: tuple, x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)


def _as_module_type(primal: Any, grads: Any) -> Any:
    """Gradients (a State) for a module primal, as a module of the same type."""
    if not lifting.is_node(primal):
        return grads
    from ramie._src.core.graph.api import clone, update

    m = clone(primal)
    update(m, grads)
    return m


def _tree_grad(
    f: Callable[..., Any],
    argnums: Any,
    has_aux: bool,
    holomorphic: bool,
    allow_int: bool,
    return_value: bool,
) -> Callable[..., Any]:
    """Tree mode / ``graph_updates=False``: the gradient of a module argument is
    a module of the same type (all its floating-point Variables differentiated,
    the others keep their values), as ``jax.grad`` gives for a pytree."""

    single = isinstance(argnums, int)
    idx = (argnums,) if single else tuple(argnums)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        specs = tuple(
            DiffState(i, _inexact_variable) if lifting.is_node(args[i]) else i
            for i in idx
        )
        inner = _grad_impl(
            f,
            specs[0] if single else specs,
            has_aux,
            holomorphic,
            allow_int,
            return_value=return_value,
        )
        _check_diff_aliasing(
            args, idx, "ramie.value_and_grad" if return_value else "ramie.grad"
        )
        res = inner(*args, **kwargs)
        if return_value:
            value, grads = res
        elif has_aux:
            grads, aux = res
        else:
            grads = res
        gs = [grads] if single else list(grads)
        out = [_tree_like(args[i], g) for i, g in zip(idx, gs)]
        grads = out[0] if single else tuple(out)
        if return_value:
            return value, grads
        return (grads, aux) if has_aux else grads

    return wrapper


def _variable_ids(tree: Any) -> dict[int, Variable]:
    from ramie._src.core.graph.api import iter_graph

    found: dict[int, Variable] = {}
    for leaf in jax.tree_util.tree_leaves(tree, is_leaf=lifting.is_node):
        if isinstance(leaf, Variable):
            found[id(leaf)] = leaf
        elif lifting.is_node(leaf):
            for _, v in iter_graph(leaf):
                if isinstance(v, Variable):
                    found[id(v)] = v
    return found


def _check_diff_aliasing(args: tuple, idx: tuple, api: str) -> None:
    """``graph_updates=False``: a Variable may not be both differentiated and
    not (passed in a differentiated argument and in another one)."""
    diff = _variable_ids(tuple(args[i] for i in idx if i < len(args)))
    rest = _variable_ids(tuple(a for i, a in enumerate(args) if i not in idx))
    for key in diff.keys() & rest.keys():
        var = diff[key]
        from ramie.errors import SharedReferenceError

        raise SharedReferenceError(
            f"{api}: Inconsistent aliasing detected: the same "
            f"{type(var).__name__} is passed in a differentiated argument "
            f"(argnums={idx if len(idx) > 1 else idx[0]}) and in a "
            "non-differentiated one, so it would be both differentiated and "
            "constant.\n"
            "  Fix: pass it once, or copy it for the constant use:\n"
            "      f(v, ramie.clone(v))"
        )


def _tree_like(arg: Any, g: Any) -> Any:
    """Graph-mode gradients ``g`` of ``arg`` with the structure of ``arg``:
    a module for a module, a Variable (holding its gradient) at every
    occurrence of a Variable, also a shared one."""
    from ramie._src.core.graph.api import clone, update

    if isinstance(arg, Variable):
        return g
    if lifting.is_node(arg):
        m = clone(arg)
        update(m, g)
        return m
    leaves, treedef = jax.tree_util.tree_flatten(arg, is_leaf=lifting.is_node)
    try:
        g_items = treedef.flatten_up_to(g)
    except (ValueError, TypeError):
        return g
    seen: dict[int, Any] = {}
    for leaf, gi in zip(leaves, g_items):
        if isinstance(leaf, Variable) and isinstance(gi, Variable):
            seen.setdefault(id(leaf), gi)
    out = []
    for leaf, gi in zip(leaves, g_items):
        if isinstance(leaf, Variable) and not isinstance(gi, Variable):
            first = seen.get(id(leaf))
            gi = (
                first
                if first is None
                else new_variable(type(first), first._raw, dict(first._meta))
            )
        elif lifting.is_node(leaf):
            gi = _tree_like(leaf, gi)
        out.append(gi)
    return jax.tree_util.tree_unflatten(treedef, out)


def _grad_impl(
    f: Callable[..., Any],
    argnums: Any,
    has_aux: bool,
    holomorphic: bool,
    allow_int: bool,
    *,
    return_value: bool,
) -> Callable[..., Any]:
    api = "ramie.value_and_grad" if return_value else "ramie.grad"
    specs, single = _normalize_argnums(argnums)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ext = lifting.extract((args, kwargs))
        lifting.check_traces(ext, api)
        plan = _DiffPlan(ext, args, specs, api)
        static = ext.static

        def pure(dg: list, do: list, rg: list, ro: list) -> Any:
            values, other = plan.join(dg, do, rg, ro)
            (a, k), inner = lifting.rebuild(static, values, other)
            out = f(*a, **k)
            if has_aux:
                if not (isinstance(out, tuple) and len(out) == 2):
                    raise TypeError(
                        f"{api}(has_aux=True): the function must return (loss, aux), "
                        f"got {type(out).__name__}"
                    )
                loss, aux = out
            else:
                loss, aux = out, None
            aux_out, extra = lifting.collect(inner, aux, mode="changed", api=api)
            return loss, (aux_out, extra)

        dg, do, rg, ro = plan.split(ext.values, ext.other)
        vg = jax.value_and_grad(
            pure,
            argnums=(0, 1),
            has_aux=True,
            holomorphic=holomorphic,
            allow_int=allow_int,
        )
        (loss, (aux_out, (auxs, state_vals))), (g_graph, g_other) = vg(dg, do, rg, ro)
        index_map = lifting.apply_state(ext, auxs.value, state_vals, api)
        aux = lifting.build_outputs(aux_out, auxs.value, index_map)
        grads = plan.grads(g_graph, g_other, single)
        if return_value:
            value = (loss, aux) if has_aux else loss
            return value, grads
        return (grads, aux) if has_aux else grads

    return wrapper


def vjp(
    f: Callable[..., Any] = MISSING,  # type: ignore[assignment]
    *primals: Any,
    has_aux: bool = False,
    reduce_axes: Sequence[Any] = (),
    graph: Any = None,
    graph_updates: Any = None,
) -> Any:
    """``jax.vjp`` with modules among the primals (their Params are differentiated).

    Returns ``(out, vjp_fn)`` (and ``aux`` with ``has_aux``); ``vjp_fn(ct)``
    returns one cotangent per primal: a State for module primals in graph mode,
    a module of the primal's type (all its floating-point Variables) with
    ``graph=False`` or ``graph_updates=False``. Without ``f``, a decorator.
    """
    lifting.reject_bound_method(f, "ramie.vjp")
    simple = is_simple(graph, graph_updates)
    if f is MISSING:
        return lambda fn: functools.wraps(fn)(
            lambda *p: vjp(
                fn, *p, has_aux=has_aux, graph=graph, graph_updates=graph_updates
            )
        )
    ext = lifting.extract((primals, {}))
    lifting.check_traces(ext, "ramie.vjp")
    filt = _inexact_variable if simple else Param
    plan = _DiffPlan(
        ext, primals, [(i, filt) for i in range(len(primals))], "ramie.vjp"
    )
    static = ext.static
    dg, do, rg, ro = plan.split(ext.values, ext.other)

    def pure(dg: list, do: list) -> Any:
        values, other = plan.join(dg, do, rg, ro)
        (a, _), inner = lifting.rebuild(static, values, other)
        out = f(*a)
        if has_aux:
            out, aux = out
        else:
            aux = None
        aux_out, extra = lifting.collect(inner, aux, mode="changed", api="ramie.vjp")
        return out, (aux_out, extra)

    out, vjp_fun, (aux_out, (auxs, state_vals)) = jax.vjp(pure, dg, do, has_aux=True)
    index_map = lifting.apply_state(ext, auxs.value, state_vals, "ramie.vjp")
    aux = lifting.build_outputs(aux_out, auxs.value, index_map)

    def vjp_fn(ct: Any) -> tuple:
        g_graph, g_other = vjp_fun(ct)
        grads = plan.grads(g_graph, g_other, single=False)
        if simple:
            grads = tuple(_as_module_type(p, g) for p, g in zip(primals, grads))
        return grads

    return (out, vjp_fn, aux) if has_aux else (out, vjp_fn)


def jvp(
    f: Callable[..., Any] = MISSING,  # type: ignore[assignment]
    primals: tuple = MISSING,  # type: ignore[assignment]
    tangents: tuple = MISSING,  # type: ignore[assignment]
    *,
    has_aux: bool = False,
    graph: Any = None,
    graph_updates: Any = None,
) -> Any:
    """``jax.jvp`` with modules among the primals.

    The tangent of a module primal gives tangents for (some of) its Variables
    by path: a State, or a module of the same type (``jax.tree.map(jnp.ones_like,
    m)``). The Params of a module are differentiated in graph mode, all its
    floating-point Variables with ``graph=False`` or ``graph_updates=False``;
    Variables without a tangent get zero. Without ``f``, a decorator whose
    function takes ``(primals, tangents)``.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> m = ramie.Linear(2, 1, use_bias=False, rngs=ramie.Rngs(0))
        >>> x = jnp.ones((1, 2))
        >>> t_m = jax.tree.map(jnp.ones_like, m)  # d(kernel) = 1
        >>> out, t_out = ramie.jvp(lambda m: m(x), (m,), (t_m,))
        >>> float(t_out[0, 0])  # x @ ones
        2.0
    """
    if f is MISSING:
        return lambda fn: functools.wraps(fn)(
            lambda primals, tangents: jvp(
                fn,
                primals,
                tangents,
                has_aux=has_aux,
                graph=graph,
                graph_updates=graph_updates,
            )
        )
    lifting.reject_bound_method(f, "ramie.jvp")
    import jax.numpy as jnp

    simple = is_simple(graph, graph_updates)
    tangents = tuple(_as_tangent_tree(p, t) for p, t in zip(primals, tangents))
    ext = lifting.extract((tuple(primals), {}))
    lifting.check_traces(ext, "ramie.jvp")
    filt = _inexact_variable if simple else Param
    plan = _DiffPlan(
        ext, tuple(primals), [(i, filt) for i in range(len(primals))], "ramie.jvp"
    )
    static = ext.static
    dg, do, rg, ro = plan.split(ext.values, ext.other)
    t_graph = []
    node_index = {p: k for k, p in enumerate(ext.node_pos)}
    tangent_leaves: dict[int, Any] = {}
    for k, p in enumerate(ext.node_pos):
        a = _arg_of_leaf(plan, p)
        tangent_leaves[k] = tangents[a] if a is not None else None
    for j in plan.diff_graph:
        path = ext.flat.paths[j]
        t = tangent_leaves.get(path[0])
        for key in path[1:]:
            if t is None:
                break
            try:
                t = t[key]
            except (KeyError, IndexError, TypeError):
                t = None
        if isinstance(t, Variable):
            t = t._raw
        t_graph.append(jnp.zeros_like(ext.values[j]) if t is None else t)
    t_other = []
    flat_t = []
    for a, tan in enumerate(tangents):
        if not is_node(primals[a]):
            flat_t.extend(jax.tree_util.tree_leaves(tan))
    t_other = flat_t[: len(do)]
    del node_index

    def pure(dg: list, do: list) -> Any:
        values, other = plan.join(dg, do, rg, ro)
        (a, _), inner = lifting.rebuild(static, values, other)
        out = f(*a)
        if has_aux:
            out, aux = out
        else:
            aux = None
        aux_out, extra = lifting.collect(inner, aux, mode="changed", api="ramie.jvp")
        return out, (aux_out, extra)

    (out, (aux_out, (auxs, state_vals))), (t_out, _) = jax.jvp(
        pure, (dg, do), (t_graph, t_other)
    )
    index_map = lifting.apply_state(ext, auxs.value, state_vals, "ramie.jvp")
    aux = lifting.build_outputs(aux_out, auxs.value, index_map)
    return (out, t_out, aux) if has_aux else (out, t_out)


def _as_tangent_tree(primal: Any, t: Any) -> Any:
    """A module given as a tangent is read through its State."""
    if lifting.is_node(t) and not isinstance(t, Variable):
        from ramie._src.core.graph.api import state

        return state(t)
    return t


def _arg_of_leaf(plan: _DiffPlan, leaf_pos: int) -> int | None:
    for a in range(len(plan.args)):
        if plan.starts[a] <= leaf_pos < plan.starts[a + 1]:
            return a
    return None


@modal("ramie.custom_vjp", ("nondiff_argnums",))
def custom_vjp(
    fun: Callable[..., Any] = MISSING,  # type: ignore[assignment]
    *,
    nondiff_argnums: tuple[int | DiffState, ...] = (),
    graph: bool | None = None,
    graph_updates: bool | None = None,
) -> Any:
    """``jax.custom_vjp`` for functions that take modules.

    Define the passes with ``f.defvjp(fwd, bwd)``; ``fwd(*args)`` returns
    ``(out, residuals)``.

    In graph mode with graph updates (the default) a module argument keeps
    reference semantics: its Variable updates (and structural changes) made in
    ``f`` reach the caller, so its state after the call is an output as well.
    ``bwd(res, g)`` receives ``g = (inputs_g, out_g)``, where ``inputs_g`` has
    one entry per differentiable argument (a State of cotangents, Variable by
    Variable, for a module; ``None`` otherwise), and returns one cotangent per
    differentiable argument: a State by path for a module (Variables left out
    get zero), an array for an array. Returning ``inputs_g``'s entry unchanged
    passes the gradient of the module's later use straight through.

    ``nondiff_argnums`` holds integers for plain non-differentiable arguments
    (given first to ``bwd``, as in JAX) and ``ramie.DiffState(i, filter)`` to
    differentiate only the Variables of argument ``i`` matching ``filter``.

    With ``graph=False`` or ``graph_updates=False`` the protocol is JAX's:
    ``bwd(*nondiff, res, g)`` gets the output cotangent ``g`` and returns a
    cotangent of each argument's own type (a module for a module, e.g. a
    ``ramie.clone`` holding the gradients); ``DiffState`` is not allowed. A
    ``bwd`` that declares ``updates_g`` also receives the cotangents of the
    Variables that ``f`` updated (``None`` elsewhere), with the structure of
    the arguments.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> @ramie.custom_vjp
        ... def scale(m, x):
        ...     return m(x)
        >>> def fwd(m, x):
        ...     return m(x), (m.kernel.value, x)
        >>> def bwd(res, g):
        ...     (m_g, _), out_g = g  # (inputs_g, out_g)
        ...     kernel, x = res
        ...     return ramie.State({"kernel": x.T @ out_g}), out_g @ kernel.T
        >>> scale.defvjp(fwd, bwd)
        >>> m = ramie.Linear(2, 2, use_bias=False, rngs=ramie.Rngs(0))
        >>> grads = ramie.grad(lambda m, x: scale(m, x).sum())(m, jnp.ones((1, 2)))
        >>> grads.kernel.shape
        (2, 2)

        The same in tree mode, where ``bwd`` returns a module of cotangents:

        >>> @ramie.custom_vjp(graph=False)
        ... def scale(m, x):
        ...     return m(x)
        >>> def bwd(res, g):
        ...     m, x = res
        ...     m_g = ramie.clone(m)
        ...     m_g.kernel.value = x.T @ g
        ...     return m_g, g @ m.kernel.value.T
        >>> scale.defvjp(lambda m, x: (scale(m, x), (m, x)), bwd)
        >>> g = ramie.grad(lambda m: scale(m, jnp.ones((1, 2))).sum(), graph=False)(m)
        >>> type(g).__name__, g.kernel.shape
        ('Linear', (2, 2))
    """
    from ramie._src.transforms.custom_vjp import CustomVJP, TreeCustomVJP

    if fun is MISSING:
        return functools.partial(
            custom_vjp,
            nondiff_argnums=nondiff_argnums,
            graph=graph,
            graph_updates=graph_updates,
        )
    if is_simple(graph, graph_updates):
        return TreeCustomVJP(
            fun,
            nondiff_argnums,
            graph=bool(resolve_graph(graph)),  # type: ignore[arg-type]
        )
    return CustomVJP(fun, nondiff_argnums)
