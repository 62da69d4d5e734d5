"""TrainState: a pure, pytree training state for ``jax.jit`` loops.

The functional counterpart of :class:`~ramie.Optimizer`: it bundles a GraphDef,
the trainable ``params`` State, the optax state and a step counter, and is a
JAX pytree, so a ``jax.jit`` step can take it and return a new one. It mirrors
Flax's ``TrainState`` (and ``flax.training.train_state.TrainState`` with
``apply_fn=graphdef.apply`` works too, see the guides).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import optax

from ramie._src.core.state import to_pure_dict


@dataclasses.dataclass(frozen=True)
class TrainState:
    """``(graphdef, params, opt_state, step, tx)``, immutable; a JAX pytree.

    Example:
        >>> import jax.numpy as jnp, optax, ramie
        >>> graphdef, params = ramie.split(ramie.Linear(2, 1, rngs=ramie.Rngs(0)))
        >>> state = ramie.TrainState.create(graphdef, params=params, tx=optax.sgd(0.1))
        >>> grads = jax.tree.map(jnp.ones_like, state.params)
        >>> int(state.apply_gradients(grads=grads).step)
        1
    """

    graphdef: Any
    params: Any
    opt_state: Any
    step: Any
    tx: optax.GradientTransformation

    @classmethod
    def create(
        cls,
        graphdef: Any,
        *,
        params: Any,
        tx: optax.GradientTransformation,
        step: int = 0,
        **kwargs: Any,
    ) -> TrainState:
        import jax.numpy as jnp

        opt_state = tx.init(to_pure_dict(params))
        return cls(
            graphdef=graphdef,
            params=params,
            opt_state=opt_state,
            step=jnp.asarray(step),
            tx=tx,
            **kwargs,
        )

    def apply(self, state: Any = None, *states: Any) -> Any:
        """``graphdef.apply(params, *states)``: the pure caller of the model."""
        return self.graphdef.apply(self.params if state is None else state, *states)

    def apply_gradients(self, *, grads: Any, **kwargs: Any) -> TrainState:
        """One optax step; returns a new TrainState."""
        params = to_pure_dict(self.params)
        updates, opt_state = self.tx.update(to_pure_dict(grads), self.opt_state, params)
        new_params = optax.apply_updates(params, updates)
        new_state = jax.tree_util.tree_map(
            lambda v, n: v.replace(n) if hasattr(v, "replace") else n,
            self.params,
            _like(self.params, new_params),
            is_leaf=lambda x: hasattr(x, "_raw"),
        )
        return dataclasses.replace(
            self, params=new_state, opt_state=opt_state, step=self.step + 1, **kwargs
        )

    def replace(self, **kwargs: Any) -> TrainState:
        return dataclasses.replace(self, **kwargs)


def _like(state: Any, pure: dict) -> Any:
    from ramie._src.core.state import from_flat_state, iter_flat

    flat = dict(iter_flat(pure))
    return from_flat_state([(p, flat[p]) for p, _ in iter_flat(state)])


jax.tree_util.register_dataclass(
    TrainState,
    data_fields=["params", "opt_state", "step"],
    meta_fields=["graphdef", "tx"],
)
