"""Optimizer: optax on a module's Variables, with its state held as Variables.

``Optimizer(model, tx, wrt=Param)`` initialises the optax transformation ``tx``
on the model's Variables selected by ``wrt`` and keeps the optax state as
:class:`OptState` Variables, so optimizer state splits, merges, checkpoints,
shards and crosses transforms like model state. Entries that mirror a parameter
(Adam's ``mu`` and ``nu``) are :class:`OptVariable` and carry that parameter's
metadata (for example its sharding). optax sees States of plain arrays, shaped
like the model's State, as in Flax.

``optimizer.update(model, grads)`` applies one step in place. Written without
``wrt`` (the older Flax style), the optimizer keeps a reference to the model and
``optimizer.update(grads)`` works as well.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ramie._src.core.filters import to_predicate
from ramie._src.core.graph import api
from ramie._src.core.graph.flatten import to_state
from ramie._src.core.graph.registry import OBJECT, kind_of
from ramie._src.core.loading import check_load
from ramie._src.core.pytree import Pytree
from ramie._src.core.sentinels import MISSING
from ramie._src.core.state import iter_flat
from ramie._src.core.variables import Param, Variable, as_pure
from ramie.errors import GraphStructureError


class OptState(Variable):
    """Any optimizer state (including the step counter)."""

    __slots__ = ()


class OptArray(OptState):
    """Optimizer state that is a plain array (e.g. Adam's ``count``)."""

    __slots__ = ()


class OptVariable(OptState):
    """Optimizer state that mirrors a model Variable and keeps its metadata."""

    __slots__ = ()


def to_opt_state(tree: Any) -> Any:
    """Wrap every leaf of an optax state in an OptState Variable.

    ``tx.init`` receives the model's State of Variables, so entries that mirror
    a parameter (Adam's ``mu`` and ``nu``) come back as Variables: they become
    :class:`OptVariable` carrying that parameter's metadata (an
    ``optimizer_sharding`` entry becomes their ``out_sharding``). Every other
    array (counters, scalars) becomes an :class:`OptArray`.

    Example:
        >>> import jax.numpy as jnp, optax, ramie
        >>> params = ramie.State({"w": ramie.Param(jnp.ones(2))})
        >>> from ramie._src.training.optimizer import to_opt_state
        >>> mu = to_opt_state(optax.adam(1e-3).init(params))[0].mu
        >>> type(mu["w"]).__name__
        'OptVariable'
    """

    def wrap(x: Any) -> Any:
        if isinstance(x, Variable):
            meta = dict(x._meta)
            if "optimizer_sharding" in meta:
                meta["out_sharding"] = meta.pop("optimizer_sharding")
            return OptVariable(x._raw, **meta)
        return OptArray(x)

    return jax.tree_util.tree_map(wrap, tree, is_leaf=_is_var)


def _is_var(x: Any) -> bool:
    return isinstance(x, Variable)


class Optimizer(Pytree):
    """An optax optimizer bound to a module's Variables.

    Args:
        model: The module to optimise.
        tx: An optax ``GradientTransformation`` (e.g. ``optax.adam(1e-3)``).
        wrt: Filter of the Variables to optimise (default ``Param``). A filter
            may also select bare arrays stored as attributes (for example
            ``lambda path, x: path[-1] == "w"``); they are updated in place.

    Attributes:
        step: Number of updates applied (an :class:`OptState`).
        opt_state: The optax state, with arrays held as :class:`OptState`.

    Example:
        >>> import jax.numpy as jnp, optax, ramie
        >>> model = ramie.Linear(2, 1, rngs=ramie.Rngs(0))
        >>> optimizer = ramie.Optimizer(model, optax.sgd(0.1), wrt=ramie.Param)
        >>> loss_fn = lambda m: (m(jnp.ones((1, 2))) ** 2).mean()
        >>> grads = ramie.grad(loss_fn)(model)
        >>> _ = optimizer.update(model, grads)  # returns the updates
        >>> int(optimizer.step.value)
        1
    """

    # ``Optimizer[MyModel]`` in annotations, as in Flax
    __class_getitem__ = classmethod(types.GenericAlias)

    def __init__(
        self,
        model: Any,
        tx: optax.GradientTransformation,
        *,
        wrt: Any = MISSING,
        graph: Any = None,
    ):
        legacy = wrt is MISSING
        if legacy:
            wrt = Param
        self.step = OptState(jnp.array(0, dtype=jnp.uint32))
        self.tx = tx
        self.wrt = wrt
        params = api.state(model, wrt)
        if not params:
            _warn_empty(model, wrt)
        self.opt_state = to_opt_state(tx.init(params))
        if legacy:
            self.model = model

    def update(self, model: Any, grads: Any = MISSING, /, **kwargs: Any) -> Any:
        """Apply one optimisation step to ``model`` in place.

        optax sees the same structures as the model's State: ``tx.update``
        receives the gradients, the optimizer state and the parameters as States
        of arrays (Variables replaced by their values, also in ``kwargs``).

        Args:
            model: The module (omit it with the older ``update(grads)`` form).
            grads: Gradients as returned by ``ramie.grad`` (a State), or a
                nested dict with the same paths. Gradients of Variables outside
                the ``wrt`` filter are ignored (e.g. the frozen base weights when
                only ``LoRAParam`` is optimised).
            **kwargs: Extra arguments for ``tx.update`` (e.g. ``value=``,
                ``grad=`` and ``value_fn=`` for optax line searches).

        Returns:
            The updates optax computed, a State of arrays shaped like the
            optimised parameters.

        Raises:
            StateLoadError: the gradients do not match the optimised Variables;
                nothing is changed.
        """
        if grads is MISSING:
            grads = model
            model = self.__dict__.get("model")
            if model is None:
                raise TypeError(
                    "Optimizer.update(grads): this optimizer was created with `wrt=` "
                    "and does not hold the model; pass it:\n"
                    "      optimizer.update(model, grads)"
                )
        params = api.state(model, self.wrt)
        p_flat = list(iter_flat(params))
        path_of = {id(v): p for p, v in p_flat}
        variables = jax.tree_util.tree_leaves(params, is_leaf=_is_var)
        if not isinstance(grads, Mapping) and kind_of(grads) is OBJECT:
            # a module of gradients (tree-mode `ramie.grad`, plain `jax.grad`):
            # take its `wrt` state
            grads = api.state(grads, self.wrt)
        grad_values = self._matching_grads(p_flat, grads)
        param_arrays = as_pure(params)
        treedef = jax.tree_util.tree_structure(param_arrays)
        grad_arrays = jax.tree_util.tree_unflatten(
            treedef, [grad_values[path_of[id(v)]] for v in variables]
        )
        opt_state_arrays = as_pure(self.opt_state)
        updates, new_opt_state = self.tx.update(
            grad_arrays, opt_state_arrays, param_arrays, **as_pure(kwargs)
        )
        new_params = optax.apply_updates(param_arrays, updates)
        new_leaves, new_def = jax.tree_util.tree_flatten(new_opt_state)
        old_vars, old_def = jax.tree_util.tree_flatten(self.opt_state, is_leaf=_is_var)
        if len(new_leaves) != len(old_vars):
            raise GraphStructureError(
                "Optimizer.update(): the optax state changed structure during "
                f"update ({len(old_vars)} leaves before, {len(new_leaves)} after; "
                f"before: {old_def}, after: {new_def})"
            )
        arrays: list[tuple[tuple, Any]] = []  # bare arrays stored in the model
        for var, value in zip(variables, jax.tree_util.tree_leaves(new_params)):
            if isinstance(var, Variable):
                var.set_value(value)
            else:
                arrays.append((path_of[id(var)], value))
        if arrays:
            api.update(model, to_state([p for p, _ in arrays], [v for _, v in arrays]))
        for var, value in zip(old_vars, new_leaves):
            if isinstance(var, Variable):
                var.set_value(value)
        self.step.value = self.step._raw + 1
        return updates

    def _matching_grads(self, p_flat: list, grads: Any) -> dict:
        """The gradient value for each optimised path; a clear error otherwise.

        Gradients held by Variables the ``wrt`` filter does not select are
        skipped; plain arrays must sit exactly at the optimised paths.
        """
        pred = to_predicate(self.wrt)
        p_paths = {p: v for p, v in p_flat}
        g_flat = {}
        unexpected = []
        for path, g in iter_flat(grads):
            if path in p_paths:
                g_flat[path] = g
            elif not (isinstance(g, Variable) and not pred(path, g)):
                unexpected.append(path)
        missing = [p for p in p_paths if p not in g_flat]
        # The loading policy (docs/guides/state_safety.md#loading-policy):
        # a gradient has its parameter's shape; any floating dtype is fine,
        # as optax casts each update to its parameter's dtype.
        pairs = []
        for path, var in p_flat:
            g = g_flat.get(path)
            if g is not None:
                g = g._raw if isinstance(g, Variable) else g
                pairs.append((path, _grad_target(var, g), g))
        values = check_load(
            pairs,
            api="Optimizer.update()",
            missing=missing,
            unexpected=unexpected,
            fix="  Fix: compute the gradients of the same model w.r.t. the "
            "optimizer's `wrt` filter, e.g.\n"
            "      grads = ramie.grad(loss_fn)(model)            "
            "# Params by default\n"
            "      optimizer.update(model, grads)",
        )
        return {path: v for (path, _, _), v in zip(pairs, values)}


def _warn_empty(model: Any, wrt: Any) -> None:
    import warnings

    from ramie.errors import RamieWarning

    types = sorted({type(v).__name__ for _, v in iter_flat(api.state(model))})
    shown = getattr(wrt, "__name__", None) or repr(wrt)
    warnings.warn(
        f"ramie.Optimizer(..., wrt={shown}): the filter matches no Variable of "
        f"{type(model).__name__} (it holds {', '.join(types) or 'no Variables'}), "
        "so update() will change nothing.\n"
        "  Fix: pass a filter that selects the trainable Variables, e.g.\n"
        "      ramie.Optimizer(model, tx, wrt=ramie.Param)",
        RamieWarning,
        stacklevel=3,
    )


def _grad_target(var: Variable, grad: Any) -> Any:
    """What a gradient for ``var`` must look like: its shape, a float dtype."""
    raw = var._raw if isinstance(var, Variable) else var
    shape = getattr(raw, "shape", None)
    if shape is None:
        return raw
    dtype = raw.dtype
    g_dtype = getattr(grad._raw if isinstance(grad, Variable) else grad, "dtype", None)
    if (
        g_dtype is not None
        and jnp.issubdtype(dtype, jnp.inexact)
        and jnp.issubdtype(g_dtype, jnp.inexact)
    ):
        dtype = g_dtype
    return jax.ShapeDtypeStruct(shape, dtype)


class ModelAndOptimizer(Optimizer):
    """An Optimizer that also holds its model: ``update(grads)`` (older Flax style).

    Example:
        >>> import jax.numpy as jnp, optax, ramie
        >>> model = ramie.Linear(2, 1, rngs=ramie.Rngs(0))
        >>> state = ramie.ModelAndOptimizer(model, optax.sgd(0.1))
        >>> grads = ramie.grad(lambda m: m(jnp.ones((1, 2))).sum())(state.model)
        >>> _ = state.update(grads)
        >>> int(state.step.value)
        1
    """

    def __init__(
        self,
        model: Any,
        tx: optax.GradientTransformation,
        *,
        wrt: Any = Param,
        graph: Any = None,
    ):
        super().__init__(model, tx, wrt=wrt)
        self.model = model

    def update(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """``update(grads, **kwargs)`` on the held model (``update(model, grads)``
        works as well)."""
        return super().update(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)
