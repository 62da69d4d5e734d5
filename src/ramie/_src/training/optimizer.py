"""Optimizer: optax on a module's Variables, with its state held as Variables.

``Optimizer(model, tx, wrt=Param)`` initialises the optax transformation ``tx``
on the model's Variables selected by ``wrt`` and keeps the optax state as
:class:`OptState` Variables, so optimizer state splits, merges, checkpoints,
shards and crosses transforms like model state. Entries that mirror a parameter
(Adam's ``mu`` and ``nu``) are :class:`OptVariable` and carry that parameter's
metadata (for example its sharding). optax itself only ever sees plain arrays.

``optimizer.update(model, grads)`` applies one step in place. Written without
``wrt`` (the older Flax style), the optimizer keeps a reference to the model and
``optimizer.update(grads)`` works as well.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ramie._src.core.filters import to_predicate
from ramie._src.core.graph import api
from ramie._src.core.graph.registry import OBJECT, kind_of
from ramie._src.core.pytree import Pytree
from ramie._src.core.sentinels import MISSING
from ramie._src.core.state import State, iter_flat, load_error, to_pure_dict
from ramie._src.core.tracked import to_plain
from ramie._src.core.variables import Param, Variable, _set_raw
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


def _key_part(k: Any) -> Hashable:
    tu = jax.tree_util
    if isinstance(k, tu.DictKey):
        return k.key
    if isinstance(k, tu.GetAttrKey):
        return k.name
    if isinstance(k, tu.SequenceKey):
        return k.idx
    if isinstance(k, tu.FlattenedIndexKey):
        return k.key
    return str(k)


def to_opt_state(tree: Any, params: Any = None) -> Any:
    """Wrap every array of an optax state in an OptState Variable.

    Sub-trees of the optax state that mirror the parameters (same tree
    structure as ``to_pure_dict(params)``, e.g. Adam's ``mu`` and ``nu``)
    become :class:`OptVariable` leaves carrying each parameter's metadata; all
    other arrays (counters, scalars) become :class:`OptArray`.
    """
    if params is None:
        return jax.tree_util.tree_map(OptArray, tree)
    pure = to_pure_dict(params)
    p_leaves, p_struct = jax.tree_util.tree_flatten(pure)
    metas = [
        dict(v._meta) if isinstance(v, Variable) else {} for _, v in iter_flat(params)
    ]
    shapes = [jnp.shape(x) for x in p_leaves]

    def mirrors(x: Any) -> bool:
        if not isinstance(x, dict):
            return False
        try:
            leaves, struct = jax.tree_util.tree_flatten(x)
        except Exception:  # pragma: no cover - exotic optax states
            return False
        return struct == p_struct and [jnp.shape(v) for v in leaves] == shapes

    def wrap(x: Any) -> Any:
        if mirrors(x):
            leaves = jax.tree_util.tree_leaves(x)
            return jax.tree_util.tree_unflatten(
                p_struct, [OptVariable(v, **m) for v, m in zip(leaves, metas)]
            )
        return OptArray(x)

    return jax.tree_util.tree_map(wrap, tree, is_leaf=mirrors)


def _as_arrays(tree: Any) -> Any:
    """The optax state as optax built it: plain containers of arrays."""
    return to_plain(tree, lambda x: x._raw if isinstance(x, Variable) else x)


class Optimizer(Pytree):
    """An optax optimizer bound to a module's Variables.

    Args:
        model: The module to optimise.
        tx: An optax ``GradientTransformation`` (e.g. ``optax.adam(1e-3)``).
        wrt: Filter of the Variables to optimise (default ``Param``).

    Attributes:
        step: Number of updates applied (an :class:`OptState`).
        opt_state: The optax state, with arrays held as :class:`OptState`.

    Example:
        >>> import jax.numpy as jnp, optax, ramie
        >>> model = ramie.Linear(2, 1, rngs=ramie.Rngs(0))
        >>> optimizer = ramie.Optimizer(model, optax.sgd(0.1), wrt=ramie.Param)
        >>> loss_fn = lambda m: (m(jnp.ones((1, 2))) ** 2).mean()
        >>> grads = ramie.grad(loss_fn)(model)
        >>> optimizer.update(model, grads)
        >>> int(optimizer.step.value)
        1
    """

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
        self.opt_state = to_opt_state(tx.init(to_pure_dict(params)), params)
        if legacy:
            self.model = model

    def update(self, model: Any, grads: Any = MISSING, /, **kwargs: Any) -> None:
        """Apply one optimisation step to ``model`` in place.

        Args:
            model: The module (omit it with the older ``update(grads)`` form).
            grads: Gradients as returned by ``ramie.grad`` (a State of the
                ``wrt`` Variables), or a nested dict with the same paths.
            **kwargs: Extra arguments for ``tx.update`` (e.g. ``value=`` for
                ``optax.contrib`` line searches).

        Raises:
            StateLoadError: the gradients do not match the optimised Variables.
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
        if kind_of(grads) is OBJECT:
            # tree-mode gradients have the model's own type: take its wrt state
            grads = api.state(grads, self.wrt)
        g_flat = dict(iter_flat(grads))
        p_paths = [p for p, _ in p_flat]
        missing = [p for p in p_paths if p not in g_flat]
        unexpected = [p for p in g_flat if p not in set(p_paths)]
        mismatched = []
        for path, var in p_flat:
            g = g_flat.get(path)
            if g is None:
                continue
            g_shape = jnp.shape(g._raw if isinstance(g, Variable) else g)
            if g_shape != jnp.shape(var._raw):
                from ramie._src.display.arrays import short_dtype

                exp = (
                    f"{short_dtype(var.dtype)}"
                    f"[{','.join(map(str, jnp.shape(var._raw)))}]"
                )
                mismatched.append((path, exp, f"[{','.join(map(str, g_shape))}]"))
        if missing or unexpected or mismatched:
            raise load_error(
                "Optimizer.update()",
                missing,
                unexpected,
                mismatched,
                fix="  Fix: compute the gradients of the same model w.r.t. the "
                "optimizer's `wrt` filter, e.g.\n"
                "      grads = ramie.grad(loss_fn)(model)            "
                "# Params by default\n"
                "      optimizer.update(model, grads)",
            )
        p_tree = to_pure_dict(params)
        g_tree = to_pure_dict(grads)
        opt_state = _as_arrays(self.opt_state)
        updates, new_opt_state = self.tx.update(g_tree, opt_state, p_tree, **kwargs)
        new_params = optax.apply_updates(p_tree, updates)
        new_flat = dict(iter_flat(new_params))
        for path, var in p_flat:
            var.set_value(new_flat[path])
        new_leaves = jax.tree_util.tree_leaves(new_opt_state)
        old_leaves = jax.tree_util.tree_leaves(
            self.opt_state, is_leaf=lambda x: isinstance(x, Variable)
        )
        if len(new_leaves) != len(old_leaves):
            raise GraphStructureError(
                "Optimizer.update(): the optax state changed structure during update"
            )
        for var, value in zip(old_leaves, new_leaves):
            if isinstance(var, Variable):
                var.set_value(value)
        self.step.value = self.step._raw + 1


class ModelAndOptimizer(Optimizer):
    """An Optimizer that also holds its model: ``update(grads)`` (older Flax style).

    Example:
        >>> import jax.numpy as jnp, optax, ramie
        >>> model = ramie.Linear(2, 1, rngs=ramie.Rngs(0))
        >>> state = ramie.ModelAndOptimizer(model, optax.sgd(0.1))
        >>> state.update(ramie.grad(lambda m: m(jnp.ones((1, 2))).sum())(state.model))
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

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)


_ = (to_predicate, _set_raw, State)
