"""Input checks for layers: errors that name the layer by its path.

A wrong input size otherwise surfaces deep inside ``dot_general`` or a
broadcast, naming neither the layer nor the fix. Layers call
:func:`check_size` at the top of ``__call__``: shapes are static in JAX, so
inside ``jit``/``vmap``/``scan`` the check runs once per trace, and the cached
``ramie.jit`` path never runs it at all.

The layer's path comes from the weak parent links every Module keeps (see
``core/links.py``), followed only when an error is raised; a layer that is not
attached to a model is named by its class.
"""

from __future__ import annotations

from typing import Any

from ramie._src.core.links import path_of
from ramie._src.core.paths import format_path
from ramie.errors import AbstractValueError, DeletedArrayError, InputShapeError


def layer_name(layer: Any) -> str:
    """``'ramie.Linear at block.linear'``, or ``'ramie.Linear'`` at the root.

    Example:
        >>> import ramie
        >>> class Block(ramie.Module):
        ...     def __init__(self):
        ...         self.linear = ramie.Linear(2, 3, rngs=ramie.Rngs(0))
        >>> block = Block()
        >>> layer_name(block.linear)
        'ramie.Linear at linear'
    """
    name = f"ramie.{type(layer).__name__}"
    path = path_of(layer)
    return f"{name} at {format_path(path)}" if path else name


def input_error(layer: Any, problem: str, fix: str) -> InputShapeError:
    """An :class:`~ramie.errors.InputShapeError` naming the layer by its path."""
    return InputShapeError(f"{layer_name(layer)}: {problem}\n  Fix: {fix}")


def check_size(
    layer: Any,
    x: Any,
    axis: int,
    expected: int,
    *,
    arg: str = "the input",
    attr: str = "in_features",
    fix: str | None = None,
) -> None:
    """Raise unless ``x.shape[axis] == expected``; nothing to do otherwise.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> layer = ramie.Linear(4, 8, rngs=ramie.Rngs(0))
        >>> check_size(layer, jnp.ones((2, 13)), -1, 4)
        Traceback (most recent call last):
        ...
        ramie.errors.InputShapeError: ramie.Linear: the input has 13 features ...
    """
    shape = getattr(x, "shape", None)
    if shape is None:
        return
    ndim = len(shape)
    if -ndim <= axis < ndim:
        found = shape[axis]
        if found == expected:
            return
        where = "its last axis" if axis == -1 else f"axis {axis}"
        problem = (
            f"{arg} has {found} features on {where} (shape {tuple(shape)}), "
            f"expected {attr}={expected}."
        )
    else:
        found = "its"
        problem = (
            f"{arg} has shape {tuple(shape)}, with no axis {axis} for the "
            f"{attr}={expected} features."
        )
    raise input_error(
        layer,
        problem,
        fix
        or f"pass inputs of shape (..., {expected}), or build the layer for "
        f"{found} features.",
    )


def check_features(
    layer: Any, x: Any, axes: Any, expected: int, *, attr: str = "num_features"
) -> None:
    """Raise unless the sizes of ``x`` on ``axes`` multiply to ``expected``.

    For normalisation layers, whose ``scale``/``bias`` of ``expected`` entries
    broadcast along the feature axes.
    """
    shape = getattr(x, "shape", None)
    if shape is None:
        return
    ndim = len(shape)
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    if not all(-ndim <= a < ndim for a in axes):
        return  # the layer's own axis check names this
    found = 1
    for a in axes:
        found *= shape[a]
    if found == expected:
        return
    where = "its last axis" if axes in ((-1,), (ndim - 1,)) else f"axes {axes}"
    raise input_error(
        layer,
        f"the input has {found} features on {where} (shape {tuple(shape)}), "
        f"expected {attr}={expected}.",
        f"pass inputs with {expected} features there, or build the layer with "
        f"{attr}={found}.",
    )


def unusable_value_error(args: Any, layer: Any) -> Exception | None:
    """The error for a layer whose Variable holds no usable array, or ``None``.

    Called only after a layer failed to convert its values: a Variable may hold
    a ``jax.ShapeDtypeStruct`` (a model from ``ramie.eval_shape`` whose values
    were never restored) or an array that was deleted or donated to a jitted
    call. The message names the Variable's path.
    """
    import jax

    for x in args:
        if isinstance(x, jax.ShapeDtypeStruct):
            return AbstractValueError(
                f"{_owner(layer, x)} holds an abstract value {_sds(x)}, not an "
                "array: the model was built by ramie.eval_shape (or merged from an "
                "abstract State) and its values were never restored.\n"
                "  Fix: restore the values before calling the model, e.g.\n"
                "      ramie.update(abstract_model, restored_state)\n"
                "  or build a concrete model: Model(..., rngs=ramie.Rngs(0))"
            )
        is_deleted = getattr(x, "is_deleted", None)
        if isinstance(x, jax.Array) and is_deleted is not None and is_deleted():
            return DeletedArrayError(
                f"{_owner(layer, x)} holds an array of shape {tuple(x.shape)} that "
                "was deleted, typically donated to a jitted call "
                "(donate_argnums) whose result was not stored back.\n"
                "  Fix: use the value the donating call returned, or stop donating:\n"
                "      model = step(model, ...)   # keep what the call returns\n"
                "      ramie.jit(step)            # without donate_argnums"
            )
    return None


def _owner(layer: Any, raw: Any) -> str:
    """``'The Param at block.linear.kernel'`` for the Variable holding ``raw``."""
    from ramie._src.core.variables import Variable

    if layer is not None:
        for value in vars(layer).values():
            if isinstance(value, Variable) and value._raw is raw:
                path = path_of(value)
                where = f" at {format_path(path)}" if path else ""
                return f"{layer_name(layer)}: the {type(value).__name__}{where}"
        return f"{layer_name(layer)}: a value"
    return "A value"


def _sds(x: Any) -> str:
    return f"ShapeDtypeStruct(shape={tuple(x.shape)}, dtype={x.dtype})"
