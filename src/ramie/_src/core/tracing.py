"""Which JAX trace is active: the check behind safe Variable mutation.

A Variable remembers the JAX trace it was created under (``None`` when it was
created eagerly). Changing it under a different trace would leak a tracer out of
a transform, so Variables compare the current trace with their own before
accepting a new value. This module is the one place that asks JAX which trace is
current; it uses JAX's fast internal accessor when available and the public
``jax.extend.core.get_opaque_trace_state`` otherwise.
"""

from __future__ import annotations

from typing import Any

try:  # the fast path: one attribute read
    from jax._src import core as _jax_core  # pyright: ignore[reportPrivateUsage]  # no public fast accessor

    _EVAL_TRACE_TYPE = _jax_core.EvalTrace
    # ``trace_ctx.trace`` is a Python property over this C++ state: reading
    # the state directly saves a Python call on every Variable write and jit call.
    _trace_state = _jax_core.trace_state_strong_ref
    if _trace_state.value is not _jax_core.trace_ctx.trace:  # probe the layout
        raise AttributeError("unexpected jax trace state")

    def current_trace() -> Any:
        """The active trace, or ``None`` when running eagerly."""
        t = _trace_state.value
        if type(t) is _EVAL_TRACE_TYPE:
            return None
        return t

except Exception:  # pragma: no cover - depends on the installed jax
    import jax.extend.core as _jex

    _EAGER_STATE = _jex.get_opaque_trace_state(convention="nnx")

    def current_trace() -> Any:
        """The active trace, or ``None`` when running eagerly."""
        t = _jex.get_opaque_trace_state(convention="nnx")
        if t == _EAGER_STATE:
            return None
        return t


_TRACE_NAMES = {
    "DynamicJaxprTrace": "jax.jit / jax.lax control flow (scan, cond, while_loop)",
    "JaxprTrace": "jax.jit / jax.linearize",
    "JVPTrace": "jax.grad / jax.jvp",
    "LinearizeTrace": "jax.grad / jax.vjp",
    "BatchTrace": "jax.vmap",
    "ShardMapTrace": "jax.shard_map",
}


def describe_trace(trace: Any) -> str:
    """A human name for the transform a trace belongs to.

    Example:
        >>> describe_trace(None)
        'eager execution'
    """
    if trace is None:
        return "eager execution"
    name = type(trace).__name__
    if name == "OpaqueTraceState":  # pragma: no cover - public fallback only
        return "a JAX transform"
    return _TRACE_NAMES.get(name, f"a JAX transform ({name})")
