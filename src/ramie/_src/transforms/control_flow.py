"""Control flow over modules: cond, switch, fori_loop, while_loop.

Branches and loop bodies may mutate the modules they are given; the new
Variable values are carried out of the JAX primitive and written back. Every
branch must leave the modules with the same structure (only values change),
as ``jax.lax.cond`` requires identical output types.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from ramie._src.core.modes import tree_mode
from ramie._src.transforms import eager_cache, lifting
from ramie._src.transforms.lifting import is_node
from ramie._src.transforms.simple import check_inputs


def _branch(fn: Callable[..., Any], static: tuple, api: str) -> Callable[..., Any]:
    def pure(values: list, other: list) -> Any:
        (a, _), inner = lifting.rebuild(static, values, other)
        out = fn(*a)
        return lifting.collect(
            inner, out, mode="all", allow_structure_change=False, api=api
        )

    return pure


def cond(
    pred: Any,
    true_fun: Callable[..., Any],
    false_fun: Callable[..., Any],
    *operands: Any,
    graph: Any = None,
    graph_updates: Any = None,
    **kwargs: Any,
) -> Any:
    """``jax.lax.cond`` whose branches may take and mutate modules.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> counter = ramie.Variable(jnp.array(0))
        >>> def inc(c):
        ...     c.value += 1
        >>> ramie.cond(True, inc, lambda c: None, counter)
        >>> counter.value
        Array(1, dtype=int32, weak_type=True)
    """
    return switch(
        jax.numpy.asarray(pred, jax.numpy.int32),
        [false_fun, true_fun],
        *operands,
        graph=graph,
        graph_updates=graph_updates,
        _api="ramie.cond",
    )


def switch(
    index: Any,
    branches: Sequence[Callable[..., Any]],
    *operands: Any,
    graph: Any = None,
    graph_updates: Any = None,
    _api: str = "ramie.switch",
) -> Any:
    """``jax.lax.switch`` whose branches may take and mutate modules.

    In tree mode (``graph=False``) the operands are pytrees: a Variable
    reached twice (``Foo(a=v, b=v)``) is refused with an error naming both
    paths; graph mode keeps such sharing.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> total = ramie.Variable(jnp.array(0))
        >>> def add(n):
        ...     def branch(t):
        ...         t.value += n
        ...     return branch
        >>> ramie.switch(2, [add(1), add(10), add(100)], total)
        >>> int(total.value)
        100
    """
    if tree_mode(graph, graph_updates):
        check_inputs(_api, operands, {}, True)
    ext = lifting.extract((operands, {}))
    lifting.check_traces(ext, _api)

    def build() -> Any:
        pures = [_branch(b, ext.static, _api) for b in branches]
        return lambda i, values, other: jax.lax.switch(i, pures, values, other)

    run = eager_cache.cached("switch", tuple(branches), (ext.static, _api), build)
    out, (aux, state_vals) = run(index, ext.values, ext.other)
    index_map = lifting.apply_state(ext, aux.value, state_vals, _api)
    return lifting.build_outputs(out, aux.value, index_map)


def _loop_body(
    fn: Callable[..., Any],
    static: tuple,
    ext: lifting.Extracted,
    api: str,
    with_index: bool,
) -> Callable[..., Any]:
    in_nodes = len(ext.node_pos)

    def body(*args: Any) -> Any:
        if with_index:
            i, (values, other) = args
        else:
            ((values, other),) = args
        ((val,), _), inner = lifting.rebuild(static, values, other)
        out = fn(i, val) if with_index else fn(val)
        leaves, treedef = jax.tree_util.tree_flatten(out, is_leaf=is_node)
        nodes = [x for x in leaves if is_node(x)]
        in_leaves = jax.tree_util.tree_leaves(val, is_leaf=is_node)
        in_node_objs = [x for x in in_leaves if is_node(x)]
        if (
            treedef != jax.tree_util.tree_structure(val, is_leaf=is_node)
            or len(nodes) != in_nodes
            or any(a is not b for a, b in zip(nodes, in_node_objs))
        ):
            raise ValueError(
                f"{api}: the body must return a value with the same structure as its "
                "input, containing the same modules (return the modules you were given)"
            )
        _, (aux, state_vals) = lifting.collect(
            inner, None, mode="all", allow_structure_change=False, api=api
        )
        return state_vals, [x for x in leaves if not is_node(x)]

    return body


def fori_loop(
    lower: Any,
    upper: Any,
    body_fun: Callable[[Any, Any], Any],
    init_val: Any,
    *,
    unroll: Any = None,
    graph: Any = None,
    graph_updates: Any = None,
) -> Any:
    """``jax.lax.fori_loop`` whose carried value may contain modules.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> counter = ramie.Variable(jnp.array(0))
        >>> def body(i, c):
        ...     c.value += i
        ...     return c
        >>> _ = ramie.fori_loop(0, 5, body, counter)
        >>> int(counter.value)
        10
    """
    api = "ramie.fori_loop"
    ext = lifting.extract(((init_val,), {}))
    lifting.check_traces(ext, api)
    kw = {} if unroll is None else {"unroll": unroll}

    def build() -> Any:
        body = _loop_body(body_fun, ext.static, ext, api, with_index=True)
        return lambda lo, hi, carry: jax.lax.fori_loop(
            lo, hi, lambda i, c: body(i, c), carry, **kw
        )

    concrete = isinstance(lower, int) and isinstance(upper, int)
    run = (
        eager_cache.cached("fori", body_fun, (ext.static, unroll), build)
        if not concrete
        else build()
    )
    values, other = run(lower, upper, (ext.values, ext.other))
    return _finish(ext, init_val, values, other, api)


def while_loop(
    cond_fun: Callable[[Any], Any],
    body_fun: Callable[[Any], Any],
    init_val: Any,
    *,
    graph: Any = None,
    graph_updates: Any = None,
) -> Any:
    """``jax.lax.while_loop`` whose carried value may contain modules."""
    api = "ramie.while_loop"
    ext = lifting.extract(((init_val,), {}))
    lifting.check_traces(ext, api)

    def build() -> Any:
        body = _loop_body(body_fun, ext.static, ext, api, with_index=False)

        def cond_pure(carry: tuple) -> Any:
            values, other = carry
            ((val,), _), _ = lifting.rebuild(ext.static, values, other)
            return cond_fun(val)

        return lambda carry: jax.lax.while_loop(cond_pure, lambda c: body(c), carry)

    run = eager_cache.cached("while", (cond_fun, body_fun), ext.static, build)
    values, other = run((ext.values, ext.other))
    return _finish(ext, init_val, values, other, api)


def _finish(
    ext: lifting.Extracted, init_val: Any, values: list, other: list, api: str
) -> Any:
    lifting.apply_state(ext, (("same", None), False), values, api)
    leaves, treedef = jax.tree_util.tree_flatten(init_val, is_leaf=is_node)
    it = iter(other)
    return jax.tree_util.tree_unflatten(
        treedef, [x if is_node(x) else next(it) for x in leaves]
    )
