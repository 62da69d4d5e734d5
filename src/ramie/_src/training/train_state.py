"""TrainState: a pure, pytree training state for ``jax.jit`` loops.

The functional counterpart of :class:`~ramie.Optimizer`: it bundles a GraphDef,
the trainable ``params`` State, the optax state and a step counter, and is a
JAX pytree, so a ``jax.jit`` step can take it and return a new one. It mirrors
Flax's ``TrainState`` (and ``flax.training.train_state.TrainState`` with
``apply_fn=graphdef.apply`` works too, see the guides). Subclasses add fields
by annotation (``batch_stats: ramie.State``); they become dataclass fields and
pytree children too.
"""

from __future__ import annotations

import dataclasses
import types
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

    # ``TrainState[MyModel]`` in annotations, as in Flax
    __class_getitem__ = classmethod(types.GenericAlias)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True)(cls)
        _register(cls)

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
        """``graphdef.apply(params, *states)``: the pure caller of the model.

        States may be given by field name: ``state.apply("params",
        "batch_stats")``.
        """
        chosen = [self.params if state is None else state, *states]
        for i, st in enumerate(chosen):
            if isinstance(st, str):
                if not hasattr(self, st):
                    names = [f.name for f in dataclasses.fields(self)]
                    raise AttributeError(
                        f"{type(self).__name__}.apply({st!r}): no field {st!r}; "
                        f"fields: {names}"
                    )
                chosen[i] = getattr(self, st)
        return self.graphdef.apply(*chosen)

    def apply_gradients(self, grads: Any, **kwargs: Any) -> TrainState:
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


def _register(cls: type) -> None:
    """Register ``cls`` as a pytree: every field but graphdef and tx is a child."""
    meta = ["graphdef", "tx"]
    data = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in meta and f.metadata.get("pytree_node", True)
    ]
    meta += [f.name for f in dataclasses.fields(cls) if f.name not in (*meta, *data)]
    jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)


_register(TrainState)
