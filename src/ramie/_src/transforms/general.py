"""Lifted transforms that need no axis bookkeeping: eval_shape, remat, and the
shared ``lifted_call`` helper (also used by ``make_jaxpr`` and ``checkify``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax

from ramie._src.core.modes import resolve_graph
from ramie._src.core.sentinels import MISSING
from ramie._src.transforms import lifting
from ramie._src.transforms.simple import check_inputs, checked_inner, is_simple, modal


def lifted_call(
    transform: Callable[[Callable[..., Any]], Callable[..., Any]],
    fun: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    api: str,
    *,
    write_back: bool = True,
    post: Callable[[Any], Any] | None = None,
) -> Any:
    """Run ``transform(pure)(values, other)`` with graph arguments lifted."""
    ext = lifting.extract((args, kwargs))
    lifting.check_traces(ext, api)
    static = ext.static

    def pure(values: list, other: list) -> Any:
        (a, k), inner = lifting.rebuild(static, values, other)
        out = fun(*a, **k)
        return lifting.collect(inner, out, mode="changed", api=api)

    result = transform(pure)(ext.values, ext.other)
    if post is not None:
        result = post(result)
    out, (aux, state_vals) = result
    if write_back:
        index_map = lifting.apply_state(ext, aux.value, state_vals, api)
    else:
        index_map = ext.flat.objects
    return lifting.build_outputs(out, aux.value, index_map)


def eval_shape(
    f: Callable[..., Any],
    *args: Any,
    graph: Any = None,
    graph_updates: Any = None,
    **kwargs: Any,
) -> Any:
    """Shapes and dtypes of ``f``'s outputs, without computing (``jax.eval_shape``).

    Graph objects returned by ``f`` come back as *abstract* objects whose
    Variables hold ``jax.ShapeDtypeStruct``: the way to describe a large model
    without allocating it (e.g. to restore a checkpoint into). Arguments are
    not modified.

    Example:
        >>> import ramie
        >>> abstract = ramie.eval_shape(
        ...     lambda: ramie.Linear(1024, 1024, rngs=ramie.Rngs(0))
        ... )
        >>> abstract.kernel.value
        ShapeDtypeStruct(shape=(1024, 1024), dtype=float32)

    Under a mesh (``jax.set_mesh``), Variables annotated with a sharding get a
    ``NamedSharding`` on the concrete mesh, which checkpoint restore accepts
    directly.
    """
    lifting.reject_bound_method(f, "ramie.eval_shape")
    if is_simple(graph, graph_updates):
        tree = not resolve_graph(graph)
        check_inputs("ramie.eval_shape", args, kwargs, True)
        f = checked_inner(f, "ramie.eval_shape", tree)
    out = lifted_call(
        lambda pure: functools.partial(jax.eval_shape, pure),
        f,
        args,
        kwargs,
        "ramie.eval_shape",
        write_back=False,
    )
    from ramie._src.spmd.sharding import concrete_abstract_shardings

    return concrete_abstract_shardings(out)


@modal("ramie.remat", ())
def remat(
    f: Callable[..., Any] = MISSING,  # type: ignore[assignment]
    *,
    prevent_cse: bool = True,
    static_argnums: int | Sequence[int] = (),
    policy: Callable[..., bool] | None = None,
    graph: Any = None,
    graph_updates: Any = None,
) -> Any:
    """Rematerialise ``f`` in the backward pass (``jax.checkpoint``), modules allowed.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> layer = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
        >>> y = ramie.remat(lambda m, x: m(x))(layer, jnp.ones((1, 2)))
        >>> y.shape
        (1, 2)
    """
    if f is MISSING:
        return lambda fn: remat(
            fn, prevent_cse=prevent_cse, static_argnums=static_argnums, policy=policy
        )
    lifting.reject_bound_method(f, "ramie.remat")
    statics = (
        (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    )

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        static_vals = {i: args[i] for i in statics}
        dyn = tuple(a for i, a in enumerate(args) if i not in static_vals)

        def call(*d: Any, **kw: Any) -> Any:
            it = iter(d)
            full = [
                static_vals[i] if i in static_vals else next(it)
                for i in range(len(args))
            ]
            return f(*full, **kw)

        transform = lambda pure: jax.checkpoint(
            pure, prevent_cse=prevent_cse, policy=policy
        )
        return lifted_call(transform, call, dyn, kwargs, "ramie.remat")

    return wrapper


checkpoint = remat


def make_jaxpr(
    f: Callable[..., Any] = MISSING,  # type: ignore[assignment]
    *,
    static_argnums: Sequence[int] = (),
    graph: Any = None,
    graph_updates: Any = None,
    **kwargs: Any,
) -> Any:
    """``jax.make_jaxpr`` for functions that take modules.

    Tracing applies nothing to the arguments: Variable updates made by ``f``
    appear in the jaxpr but not in the caller's modules. Asking for graph
    updates (``graph_updates=True``, or ``ramie.set_graph_updates(True)``) is
    therefore an error, as in Flax.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> counter = ramie.Variable(jnp.array(0))
        >>> def bump(c):
        ...     c.value += 1
        ...     return c.value
        >>> jaxpr = ramie.make_jaxpr(bump)(counter)
        >>> len(jaxpr.eqns), int(counter.value)
        (1, 0)
    """
    if f is MISSING:
        return lambda fn: make_jaxpr(
            fn,
            static_argnums=static_argnums,
            graph=graph,
            graph_updates=graph_updates,
            **kwargs,
        )
    _reject_graph_updates(graph_updates)

    lifting.reject_bound_method(f, "ramie.make_jaxpr")
    statics = (
        (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    )

    @functools.wraps(f)
    def wrapper(*args: Any, **kw: Any) -> Any:
        static_vals = {i: args[i] for i in statics if i < len(args)}
        dyn = tuple(a for i, a in enumerate(args) if i not in static_vals)
        ext = lifting.extract((dyn, kw))
        static = ext.static

        def pure(values: list, other: list) -> Any:
            (a, k), inner = lifting.rebuild(static, values, other)
            it = iter(a)
            full = [
                static_vals[i] if i in static_vals else next(it)
                for i in range(len(args))
            ]
            out = f(*full, **k)
            out, _ = lifting.collect(inner, out, mode="changed")
            return out

        return jax.make_jaxpr(pure, **kwargs)(ext.values, ext.other)

    return wrapper


def _reject_graph_updates(graph_updates: Any) -> None:
    """make_jaxpr applies no updates: refuse an explicit request for them."""
    from ramie._src.core.modes import _graph_updates
    from ramie.errors import TransformError

    asked = graph_updates is True or (
        graph_updates is None and bool(_graph_updates) and _graph_updates[-1]
    )
    if asked:
        raise TransformError(
            "ramie.make_jaxpr: graph_updates=True was requested, but make_jaxpr "
            "only traces and writes nothing back to the arguments "
            "(nnx.make_jaxpr does not support graph_updates=True.).\n"
            "  Fix: ramie.make_jaxpr(f, graph_updates=False)(model)"
        )


def checkify(
    f: Callable[..., Any],
    errors: Any = None,
    graph: Any = None,
    graph_updates: Any = None,
) -> Any:
    """``jax.experimental.checkify.checkify`` for functions that take modules.

    Returns ``(error, output)`` like checkify; Variable updates are applied.
    """
    lifting.reject_bound_method(f, "ramie.checkify")
    from jax.experimental import checkify as ck

    errs = ck.user_checks if errors is None else errors

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        box: dict[str, Any] = {}

        def transform(pure: Callable[..., Any]) -> Callable[..., Any]:
            checked = ck.checkify(pure, errors=errs)

            def run(values: list, other: list) -> Any:
                err, result = checked(values, other)
                box["err"] = err
                return result

            return run

        out = lifted_call(transform, f, args, kwargs, "ramie.checkify")
        return box["err"], out

    return wrapper


def transform_metadata(
    f: Callable[..., Any] = MISSING,  # type: ignore[assignment]
    *,
    in_axes: Any = 0,
    out_axes: Any = 0,
    partition: Any,
    graph: Any = None,
) -> Any:
    """Remove the axis ``partition`` from Variables' sharding metadata around ``f``.

    Inside ``f`` the Variables of module arguments look unstacked (the named
    axis at ``in_axes`` is removed from their ``out_sharding``); afterwards it is
    added back at ``out_axes``. Used by vmap/scan over stacked layers.
    """
    if f is MISSING:
        return lambda fn: transform_metadata(
            fn, in_axes=in_axes, out_axes=out_axes, partition=partition
        )
    from ramie._src.spmd.sharding import PARTITION_NAME, stacking_metadata

    return stacking_metadata(f, in_axes, out_axes, {PARTITION_NAME: partition})
