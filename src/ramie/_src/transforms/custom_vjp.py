"""``ramie.custom_vjp``: a custom backward pass for functions that take modules.

Two protocols, chosen like every ramie transform by ``graph``/``graph_updates``:

*Graph mode with graph updates* (the default). Module arguments keep reference
semantics: Variable updates and structural changes made inside ``f`` (or
``fwd``) are carried out on the caller's objects. The state of every module
argument *after* the call is therefore an output too, and ``bwd`` receives the
cotangent ``g = (inputs_g, out_g)``: ``inputs_g`` has one entry per
differentiable argument, a State with the cotangent of each Variable of a module
argument (``None`` for other arguments). ``bwd`` returns one cotangent per
differentiable argument, a State (by path) for a module argument; Variables it
leaves out get a zero cotangent. A ``DiffState(argnum, filter)`` in
``nondiff_argnums`` restricts the differentiable Variables of that argument to
``filter``; integers in ``nondiff_argnums`` mark plain (non-module) arguments as
non-differentiable, and they are passed first to ``bwd``, as in JAX.

*Tree mode* (``graph=False``) and ``graph_updates=False``. As ``jax.custom_vjp``
with modules as pytrees: ``bwd(*nondiff, res, g)`` receives the output cotangent
only, and returns one cotangent per differentiable argument with the type of
the argument (for a module, a module of the same type holding the cotangents,
e.g. ``ramie.clone(m)`` with its values replaced). Variable updates inside
``f`` are still written back; the cotangents of the updated values are given to
``bwd`` when it declares a keyword parameter ``updates_g``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax

from ramie._src.core.filters import to_predicate
from ramie._src.core.graph.flatten import flatten, to_state
from ramie._src.core.tracing import current_trace
from ramie._src.core.variable_modes import REFS_USED, set_raw_through
from ramie._src.core.variables import (
    Variable,
    _outer_trace_error,
    _set_raw,
    new_variable,
)
from ramie._src.transforms import lifting
from ramie._src.transforms.axes import DiffState
from ramie._src.transforms.lifting import Aux, is_node
from ramie.errors import TransformError

API = "ramie.custom_vjp"


def _missing_defvjp() -> TransformError:
    return TransformError(
        f"{API}: call defvjp(fwd, bwd) before calling the function.\n"
        "  Fix:\n      f.defvjp(f_fwd, f_bwd)"
    )


def _split_nondiff(
    nondiff_argnums: tuple[int | DiffState, ...],
) -> tuple[tuple[int, ...], dict[int, Any]]:
    """Integers (non-differentiable arguments) and ``argnum -> filter`` of the
    DiffState entries; an argnum given twice is an error."""
    ints: list[int] = []
    filters: dict[int, Any] = {}
    seen: set[int] = set()
    for a in nondiff_argnums:
        if isinstance(a, DiffState):
            i, filt = a.argnum, a.filter
        elif isinstance(a, int):
            i, filt = a, None
        else:
            raise TransformError(
                f"{API}(nondiff_argnums=...): entries must be ints or "
                f"ramie.DiffState, found a {type(a).__name__}.\n"
                "  Fix: e.g. nondiff_argnums=(0, ramie.DiffState(1, ramie.Param))"
            )
        if i in seen:
            raise TransformError(
                f"{API}(nondiff_argnums=...): argnum {i} is repeated in "
                "nondiff_argnums; give each argument once."
            )
        seen.add(i)
        if filt is None:
            ints.append(i)
        else:
            filters[i] = filt
    return tuple(sorted(ints)), filters


def _fwd_pair(pair: Any) -> tuple[Any, Any]:
    if not (isinstance(pair, tuple) and len(pair) == 2):
        raise TransformError(
            f"{API}: fwd must return a pair (out, residuals), got "
            f"{type(pair).__name__}.\n"
            "  Fix:\n      def f_fwd(*args):\n          return f(*args), res"
        )
    return pair


def _accepts_updates_g(bwd: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(bwd).parameters
    except (TypeError, ValueError):
        return False
    return "updates_g" in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    )


def _lookup(ct: Any, path: tuple) -> Any:
    """The entry of ``ct`` (a State, dict or Variable) at ``path``, or None."""
    t = ct
    for key in path:
        if t is None:
            return None
        try:
            t = t[key]
        except (KeyError, IndexError, TypeError):
            return None
    if isinstance(t, Variable):
        t = t._raw
    return t


def _as_cotangent_tree(ct: Any) -> Any:
    """A module returned as a cotangent is read through its State."""
    if is_node(ct) and not isinstance(ct, Variable):
        from ramie._src.core.graph.api import state

        return state(ct)
    return ct


def _cotangent_items(treedef: Any, ct: Any, mismatch: str) -> list[Any]:
    """``ct`` flattened up to ``treedef`` (all None for a None cotangent)."""
    if ct is None:
        return [None] * treedef.num_leaves
    try:
        return treedef.flatten_up_to(ct)
    except (ValueError, TypeError) as e:
        raise TransformError(f"{API}: {mismatch} ({e}).") from None


# ---------------------------------------------------------------- shared
class _CustomVJPBase:
    """What both protocols share: the function, ``defvjp`` and argument checks."""

    def __init__(
        self, fun: Callable[..., Any], nondiff_argnums: tuple[Any, ...]
    ) -> None:
        lifting.reject_bound_method(fun, API)
        self.fun = fun
        self.nondiff_argnums = tuple(nondiff_argnums)
        self._ints, self._filters = _split_nondiff(self.nondiff_argnums)
        self.fwd: Callable[..., Any] | None = None
        self.bwd: Callable[..., Any] | None = None
        self.symbolic_zeros = False
        functools.update_wrapper(self, fun)

    def defvjp(
        self,
        fwd: Callable[..., Any],
        bwd: Callable[..., Any],
        symbolic_zeros: bool = False,
    ) -> None:
        """Set the forward (``fwd(*args) -> (out, res)``) and backward passes.

        ``symbolic_zeros`` is accepted for compatibility; cotangents given to
        ``bwd`` are always materialized arrays.
        """
        self.fwd = fwd
        self.bwd = bwd
        self.symbolic_zeros = symbolic_zeros

    def _positional(self, args: tuple, kwargs: dict) -> tuple:
        """The call's arguments, all by position (after ``defvjp`` was called)."""
        if self.fwd is None or self.bwd is None:
            raise _missing_defvjp()
        args, kwargs = lifting.resolve_kwargs(self.fun, args, kwargs)
        if kwargs:
            raise TransformError(
                f"{API}: keyword arguments {sorted(kwargs)} cannot be passed "
                "positionally; pass every argument by position."
            )
        return args


# ---------------------------------------------------------------- graph mode
class CustomVJP(_CustomVJPBase):
    """A function with a custom backward pass; modules allowed as inputs.

    Graph mode with graph updates: ``bwd(*nondiff, res, (inputs_g, out_g))``
    returns one cotangent per differentiable input (a State for a module).
    See :func:`custom_vjp`.
    """

    def __init__(
        self,
        fun: Callable[..., Any],
        nondiff_argnums: tuple[int | DiffState, ...] = (),
    ):
        super().__init__(fun, nondiff_argnums)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args = self._positional(args, kwargs)
        n = len(args)
        ints = self._ints
        for i in ints:
            if i >= n:
                raise TransformError(
                    f"{API}: nondiff_argnums refers to argument {i}, but the "
                    f"function was called with {n} positional argument(s)"
                )
            leaves = jax.tree_util.tree_leaves(args[i], is_leaf=is_node)
            if any(is_node(x) for x in leaves):
                raise TransformError(
                    f"{API}: argument {i} holds a Module or Variable but is in "
                    "nondiff_argnums as an integer. Passing integers to "
                    "nondiff_argnums for graph nodes arguments in custom_vjp is not "
                    "supported.\n"
                    "  Fix: give a DiffState with the differentiable Variables, e.g.\n"
                    f"      nondiff_argnums=(ramie.DiffState({i}, ramie.Param),)"
                )
        nd_vals = {i: args[i] for i in ints}
        diff_pos = [i for i in range(n) if i not in nd_vals]
        diff_args = tuple(args[i] for i in diff_pos)
        ext = lifting.extract((diff_args, {}))
        lifting.check_traces(ext, API)
        static = ext.static
        fun, fwd, bwd = self.fun, self.fwd, self.bwd

        # which argument (index into diff_args) each graph root belongs to
        leaves_per_arg = [
            len(jax.tree_util.tree_leaves(a, is_leaf=is_node)) for a in diff_args
        ]
        starts = [0]
        for c in leaves_per_arg:
            starts.append(starts[-1] + c)

        def arg_of(leaf_pos: int) -> int:
            for a in range(len(diff_args)):
                if starts[a] <= leaf_pos < starts[a + 1]:
                    return a
            raise AssertionError(leaf_pos)

        root_arg = [arg_of(p) for p in ext.node_pos]
        preds = {
            a: to_predicate(self._filters[diff_pos[a]])
            for a in range(len(diff_args))
            if diff_pos[a] in self._filters
        }
        differentiable = []
        for path, leaf in zip(ext.flat.paths, ext.flat.leaves):
            a = root_arg[path[0]]
            differentiable.append(a not in preds or preds[a](path[1:], leaf))

        def full(d: tuple) -> list:
            it = iter(d)
            return [nd_vals[i] if i in nd_vals else next(it) for i in range(n)]

        # paths/leaves of the argument graphs after ``fwd`` (for ``inputs_g``)
        after: list[Any] = []

        def run(user_fn: Callable[..., Any], values: list, other: list) -> Any:
            (a, _), inner = lifting.rebuild(static, values, other)
            res = user_fn(*full(a))
            return res, inner

        def pure(values: list, other: list) -> Any:
            out, inner = run(fun, values, other)
            return lifting.collect(inner, out, mode="all", api=API)

        def pure_fwd(values: list, other: list) -> Any:
            pair, inner = run(fwd, values, other)
            out, res = _fwd_pair(pair)
            result = lifting.collect(inner, out, mode="all", api=API)
            state_static = result[1][0].value[0]
            if state_static[0] == "same":
                after.append((ext.flat.paths, ext.flat.leaves))
            else:
                flat2 = flatten(inner.nodes)
                after.append((flat2.paths, flat2.leaves))
            return result, res

        def inputs_g(state_g: list) -> tuple:
            paths, leaves = after[-1] if after else (ext.flat.paths, ext.flat.leaves)
            per_root: dict[int, tuple[list, list]] = {}
            for path, leaf, g in zip(paths, leaves, state_g):
                if isinstance(leaf, Variable):
                    g = new_variable(type(leaf), g, dict(leaf._meta))
                ps, ls = per_root.setdefault(path[0], ([], []))
                ps.append(path[1:])
                ls.append(g)
            out = []
            k = 0
            for arg in diff_args:
                leaves_a, treedef = jax.tree_util.tree_flatten(arg, is_leaf=is_node)
                items = []
                for leaf in leaves_a:
                    if not is_node(leaf):
                        items.append(None)
                        continue
                    ps, ls = per_root.get(k, ([], []))
                    k += 1
                    if isinstance(leaf, Variable):
                        items.append(ls[0] if ps and ps[0] == () else None)
                    else:
                        items.append(to_state(ps, ls))
                out.append(jax.tree_util.tree_unflatten(treedef, items))
            return tuple(out)

        def pure_bwd(res: Any, g: Any) -> tuple[list, list]:
            out_g, (_, state_g) = g
            user_g = (inputs_g(state_g), out_g)
            nd = [nd_vals[i] for i in ints]
            cts = bwd(*nd, res, user_g)
            if not isinstance(cts, tuple):
                cts = (cts,)
            return _cotangents(ext, diff_args, cts, differentiable)

        pure = jax.custom_vjp(pure)
        pure.defvjp(pure_fwd, pure_bwd)
        out, (aux, state_vals) = pure(ext.values, ext.other)
        index_map = lifting.apply_state(ext, aux.value, state_vals, API)
        return lifting.build_outputs(out, aux.value, index_map)


def _cotangents(
    ext: lifting.Extracted, args: tuple, cts: tuple, differentiable: list[bool]
) -> tuple[list, list]:
    """``bwd``'s cotangents (one per argument) as cotangents of the leaves."""
    if len(cts) != len(args):
        raise TransformError(
            f"{API}: bwd returned {len(cts)} cotangent(s) for {len(args)} "
            "differentiable input(s); return a tuple with one entry per argument "
            "that is not in nondiff_argnums (a State for a module)."
        )
    g_values: list[Any] = [None] * len(ext.values)
    g_other: list[Any] = []
    k = 0
    for arg, ct in zip(args, cts):
        leaves, treedef = jax.tree_util.tree_flatten(arg, is_leaf=is_node)
        ct_items = _cotangent_items(
            treedef,
            ct,
            "a cotangent returned by bwd does not match its argument: expected "
            f"the structure {treedef}, with a State for each module",
        )
        for leaf, item in zip(leaves, ct_items):
            if is_node(leaf):
                item = _as_cotangent_tree(item)
                for j, path in enumerate(ext.flat.paths):
                    if path[0] != k or not differentiable[j]:
                        continue
                    if len(path) == 1:
                        t = item._raw if isinstance(item, Variable) else item
                    else:
                        t = _lookup(item, path[1:])
                    g_values[j] = t
                k += 1
            else:
                g_other.append(item)
    return g_values, g_other


# ----------------------------------------------------------------- tree mode
class TreeCustomVJP(_CustomVJPBase):
    """``custom_vjp`` in tree mode or with ``graph_updates=False``.

    ``bwd(*nondiff, res, g)`` gets the output cotangent and returns one
    cotangent per differentiable input, of the input's type.
    """

    def __init__(
        self,
        fun: Callable[..., Any],
        nondiff_argnums: tuple[int, ...] = (),
        graph: bool = False,
    ):
        super().__init__(fun, nondiff_argnums)
        self.graph = graph

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args = self._positional(args, kwargs)
        from ramie._src.transforms.simple import check_inputs

        check_inputs(API, args, {}, tree=True)  # each Variable once
        nd = set(self._ints)
        fun, fwd, bwd = self.fun, self.fwd, self.bwd
        wants_updates = _accepts_updates_g(bwd)

        def is_var(x: Any) -> bool:
            return isinstance(x, Variable)

        leaves, treedef = jax.tree_util.tree_flatten(args, is_leaf=is_var)
        arg_of: list[int] = []
        for i, a in enumerate(args):
            arg_of.extend([i] * len(jax.tree_util.tree_leaves(a, is_leaf=is_var)))
        var_pos = [p for p, x in enumerate(leaves) if is_var(x)]
        diff_pos = [p for p in range(len(leaves)) if arg_of[p] not in nd]
        fixed = {p: leaves[p] for p in range(len(leaves)) if arg_of[p] in nd}
        values = [leaves[p]._raw if is_var(leaves[p]) else leaves[p] for p in diff_pos]
        fixed_vals = {p: x._raw if is_var(x) else x for p, x in fixed.items()}

        def rebuild(diff_vals: list) -> tuple[tuple, list, list]:
            it = iter(diff_vals)
            new_leaves, start = [], []
            for p, orig in enumerate(leaves):
                v = fixed_vals[p] if p in fixed_vals else next(it)
                start.append(v)
                if is_var(orig):
                    v = new_variable(type(orig), v, dict(orig._meta))
                new_leaves.append(v)
            inner = jax.tree_util.tree_unflatten(treedef, new_leaves)
            return inner, new_leaves, start

        def updates_of(new_leaves: list, start: list) -> list:
            out = []
            for p in var_pos:
                now = new_leaves[p]._raw
                out.append(None if now is start[p] else now)
            return out

        def pure(diff_vals: list) -> Any:
            inner, new_leaves, start = rebuild(diff_vals)
            out = fun(*inner)
            return out, updates_of(new_leaves, start)

        def pure_fwd(diff_vals: list) -> Any:
            inner, new_leaves, start = rebuild(diff_vals)
            out, res = _fwd_pair(fwd(*inner))
            upd = updates_of(new_leaves, start)
            mask = tuple(u is not None for u in upd)
            return (out, upd), (res, Aux(mask))

        def pure_bwd(resid: Any, g: Any) -> tuple[list]:
            res, mask = resid
            out_g, upd_g = g
            nondiff = [args[i] for i in sorted(nd)]
            kw = {}
            if wants_updates:
                items: list[Any] = [None] * len(leaves)
                for p, m, ug in zip(var_pos, mask.value, upd_g):
                    if m:
                        orig = leaves[p]
                        items[p] = new_variable(type(orig), ug, dict(orig._meta))
                kw["updates_g"] = jax.tree_util.tree_unflatten(treedef, items)
            cts = bwd(*nondiff, res, out_g, **kw)
            if not isinstance(cts, tuple):
                cts = (cts,)
            diff_args = [a for i, a in enumerate(args) if i not in nd]
            if len(cts) != len(diff_args):
                raise TransformError(
                    f"{API}: bwd returned {len(cts)} cotangent(s) for "
                    f"{len(diff_args)} differentiable input(s); return a tuple "
                    "with one entry per argument not in nondiff_argnums."
                )
            flat_ct: list[Any] = []
            for a, ct in zip(diff_args, cts):
                sub = jax.tree_util.tree_structure(a, is_leaf=is_var)
                items_ct = _cotangent_items(
                    sub,
                    ct,
                    "a cotangent returned by bwd does not have the structure of "
                    f"its argument ({type(a).__name__}); in tree mode the "
                    "cotangent of a module is a module of the same type, e.g. "
                    "ramie.clone(m)",
                )
                flat_ct.extend(x._raw if is_var(x) else x for x in items_ct)
            return (flat_ct,)

        pure = jax.custom_vjp(pure)
        pure.defvjp(pure_fwd, pure_bwd)
        out, upd = pure(values)
        trace = current_trace()
        setter = set_raw_through if REFS_USED[0] else _set_raw
        for p, u in zip(var_pos, upd):
            if u is None:
                continue
            var = leaves[p]
            if var._trace is not trace:
                raise _outer_trace_error(var, trace)
            setter(var, u)
        return out
