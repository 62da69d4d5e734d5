r"""EMA: an exponential moving average of a model's parameters.

Evaluating with averaged weights smooths out the noise of the last optimizer
steps (Polyak & Juditsky 1992). :class:`EMA` keeps a shadow copy of the
selected Variables and, on every ``update``, moves it towards the current
values:

.. math:: \bar\theta \leftarrow \lambda\,\bar\theta + (1 - \lambda)\,\theta

The shadow copies are Variables of the same types (with the same metadata), so
an EMA is ordinary graph state: pass it to ``ramie.jit`` together with the
model and optimizer, checkpoint it, shard it. ``apply_to(model)`` returns a
model that *shares* the shadow Variables, so it always shows the latest average.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import jax.numpy as jnp

from ramie._src.core.filters import to_predicate
from ramie._src.core.graph import api
from ramie._src.core.graph.registry import OBJECT, VARIABLE, kind_of
from ramie._src.core.paths import format_path, format_paths
from ramie._src.core.pytree import Pytree
from ramie._src.core.state import State, from_flat_state, iter_flat, merge_state
from ramie._src.core.variables import Variable
from ramie.errors import GraphStructureError

A = TypeVar("A")


def _selected(node: Any, only: Any) -> list[tuple[tuple, Any]]:
    """``(path, leaf)`` of the state of ``node`` (a graph or a State) matching
    ``only``.
    """
    if isinstance(node, Mapping) and kind_of(node) not in (OBJECT, VARIABLE):
        pred = to_predicate(only)
        return [(p, v) for p, v in iter_flat(node) if pred(p, v)]
    return list(iter_flat(api.state(node, only)))


def _is_float(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)


class EMA(Pytree):
    r"""Exponential moving average of a model's (or a State's) Variables.

    Only floating-point Variables are averaged; integer state and RNG keys
    selected by ``only`` are skipped, so ``apply_to`` keeps the model's own.

    Args:
        params: A module (or any graph object) or a State whose Variables are
            tracked. Their current values start the average.
        decay: :math:`\lambda` in :math:`\bar\theta \leftarrow \lambda\bar\theta +
            (1 - \lambda)\theta`; e.g. ``0.999``.
        only: Filter of the Variables to track (default all floating-point
            ones; ``ramie.Param`` to leave batch statistics alone).
        graph: Accepted for Flax compatibility; ramie always uses graph mode.

    Attributes:
        decay: The decay rate.
        filter: The ``only`` filter.
        params: A State holding the averaged Variables (same paths and types
            as in the model).

    Raises:
        TypeError: ``decay`` is not a number in ``[0, 1]``, or a State leaf is
            not a Variable.

    Example:
        >>> import jax.numpy as jnp, optax, ramie
        >>> model = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
        >>> optimizer = ramie.Optimizer(model, optax.sgd(0.1), wrt=ramie.Param)
        >>> ema = ramie.EMA(model, decay=0.9, only=ramie.Param)
        >>> ema_model = ema.apply_to(model)
        >>> @ramie.jit
        ... def train_step(model, optimizer, ema, x):
        ...     grads = ramie.grad(lambda m: (m(x) ** 2).mean())(model)
        ...     optimizer.update(model, grads)
        ...     ema.update(model)
        >>> train_step(model, optimizer, ema, jnp.ones((1, 2)))
        >>> ema_model.kernel is ema.params["kernel"]
        True
    """

    def __init__(
        self, params: Any, decay: float, *, only: Any = ..., graph: bool | None = None
    ):
        if (
            isinstance(decay, bool)
            or not isinstance(decay, (int, float))
            or not 0 <= decay <= 1
        ):
            raise TypeError(
                f"ramie.EMA(decay={decay!r}): decay must be a number in [0, 1], "
                "e.g. ramie.EMA(model, decay=0.999)"
            )
        self.decay = float(decay)
        self.filter = only
        self.graph = graph
        flat = []
        for path, leaf in _selected(params, only):
            if not isinstance(leaf, Variable):
                raise TypeError(
                    f"ramie.EMA(): the leaf at {format_path(path)} is a "
                    f"{type(leaf).__name__}, not a Variable.\n"
                    "  Pass the model itself, or a State from "
                    "ramie.state(model, ...):\n"
                    "      ema = ramie.EMA(model, decay=0.999, only=ramie.Param)"
                )
            if _is_float(leaf[...]):
                flat.append((path, leaf.copy(value=jnp.copy(leaf[...]))))
        self.params: State = from_flat_state(flat)

    def _paths(self) -> list[tuple]:
        return [p for p, _ in iter_flat(self.params)]

    def update(self, updates: Any) -> None:
        r"""Move the average towards ``updates``: :math:`\bar\theta \leftarrow
        \lambda\bar\theta + (1 - \lambda)\theta`.

        Args:
            updates: The model (or a State, e.g. ``ramie.state(model)``) with
                the current values, structured like what was tracked.

        Raises:
            GraphStructureError: ``updates`` lacks some tracked Variables.

        Example:
            >>> import jax.numpy as jnp, ramie
            >>> model = ramie.Linear(1, 1, use_bias=False, rngs=ramie.Rngs(0))
            >>> model.kernel[...] = jnp.zeros((1, 1))
            >>> ema = ramie.EMA(model, decay=0.5)
            >>> model.kernel[...] = jnp.ones((1, 1))
            >>> ema.update(model)
            >>> float(ema.params["kernel"][0, 0])
            0.5
        """
        new = dict(_selected(updates, self.filter))
        missing = [p for p in self._paths() if p not in new]
        if missing:
            raise GraphStructureError(
                f"EMA.update(): {len(missing)} averaged Variable(s) have no new "
                "value:\n"
                f"{format_paths(missing)}\n"
                "  Pass the same model (or the State of the same Variables) the EMA "
                "was created from:\n"
                "      ema = ramie.EMA(model, decay=0.999)\n"
                "      ema.update(model)"
            )
        d = self.decay
        for path, avg in iter_flat(self.params):
            value = new[path]
            value = value[...] if isinstance(value, Variable) else value
            avg[...] = d * avg[...] + (1.0 - d) * value

    def apply_to(self, model: A) -> A:
        """A model like ``model`` whose tracked Variables are the averaged ones.

        The result shares the EMA's Variables (later ``update`` calls show up
        in it) and shares every untracked Variable with ``model``; ``model``
        itself is unchanged.

        Args:
            model: A model with the structure the EMA was created from.

        Returns:
            A new model of the same type, for evaluation.

        Raises:
            GraphStructureError: the EMA tracks paths ``model`` does not have.

        Example:
            >>> import ramie
            >>> model = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
            >>> ema = ramie.EMA(model, decay=0.9)
            >>> ema.apply_to(model).kernel is ema.params["kernel"]
            True
        """
        graphdef, state = api.split(model)
        have = {p for p, _ in iter_flat(state)}
        extra = [p for p in self._paths() if p not in have]
        if extra:
            raise GraphStructureError(
                f"EMA.apply_to(): the model has no Variable at {len(extra)} averaged "
                f"path(s):\n{format_paths(extra)}\n"
                "  Apply the EMA to a model built like the one it was created from."
            )
        return api.merge(graphdef, merge_state(state, self.params))
