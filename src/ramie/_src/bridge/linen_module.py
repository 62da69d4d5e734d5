"""``ToLinen``: a ramie module inside Linen, as a real ``flax.linen.Module``.

The class is built by :func:`make_to_linen` on first use (Flax stays
optional). In ``init`` it creates the ramie module with keys from Linen's
RNG streams and stores its Variables in Linen collections by type (RNG state
stays out: Linen hands out fresh keys every call). In ``apply`` it creates the
module again, loads the collections into its Variables, calls the method and
stores the Variables of mutable collections back, so mutations (BatchNorm
statistics, counters) come out of Linen's ``apply(..., mutable=...)``.
Because everything lives in Linen collections, ``jax.jit``, ``nn.scan``,
``nn.vmap`` and ``TrainState`` work as for any Linen module.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from ramie._src.bridge import variables as bv
from ramie._src.core.graph import api
from ramie._src.core.rngs import Rngs, RngState
from ramie._src.core.variables import Variable


def _live_variables(module: Any) -> list[tuple[tuple, Variable]]:
    return [
        (tuple(path), v)
        for path, v in api.iter_graph(module)
        if isinstance(v, Variable) and not isinstance(v, RngState)
    ]


def make_to_linen(nn: Any, frozen_dict: type, unfreeze: Callable) -> type:
    """Create the ``ToLinen`` class for the given ``flax.linen``."""
    from ramie._src.bridge.wrappers import UnknownStateWarning, _module_method

    class ToLinen(nn.Module):
        """A ramie module (class and arguments) as a Linen module.

        Linen sees the module's Variables as collections by type: ``Param``
        in ``params``, ``BatchStat`` in ``batch_stats``, and any other type in
        the collection registered for it (or named after it). Variables with
        metadata are boxed (``nn.Partitioned`` for sharding names from
        :func:`ramie.bridge.with_partitioning`, else :class:`NNXMeta`).

        Attributes:
            nnx_class: The ramie Module class (not an instance).
            args: Positional arguments for it.
            kwargs: Keyword arguments for it.
            skip_rng: Do not pass ``rngs=`` (for modules that take none).
            metadata_fn: Variable -> Linen leaf.

        Example:
            >>> import jax, jax.numpy as jnp, ramie
            >>> model = ramie.bridge.ToLinen(ramie.Linear, args=(2, 3))
            >>> y, variables = model.init_with_output(
            ...     jax.random.key(0), jnp.ones((1, 2)))
            >>> y.shape, list(variables)
            ((1, 3), ['params'])
        """

        nnx_class: Callable[..., Any]
        args: Sequence = ()
        kwargs: Mapping[str, Any] = frozen_dict({})
        skip_rng: bool = False
        metadata_fn: Callable[[Variable], Any] | None = bv.to_linen_var

        @nn.compact
        def __call__(
            self,
            *args: Any,
            nnx_method: Callable[..., Any] | str | None = None,
            **kwargs: Any,
        ) -> Any:
            initializing = self.is_initializing()
            module = self.nnx_class(*self.args, **self._module_kwargs(initializing))
            if initializing:
                # Linen's init returns the state as created, before any call.
                self._store(module)
                return _module_method(module, nnx_method)(module, *args, **kwargs)
            self._load(module)
            out = _module_method(module, nnx_method)(module, *args, **kwargs)
            self._store(module)
            return out

        def _module_kwargs(self, initializing: bool) -> dict[str, Any]:
            kwargs = dict(self.kwargs)
            if not self.skip_rng:
                keys = {name: self.make_rng(name) for name in self.scope.rngs}
                if "default" not in keys:
                    # Linen falls back to the params stream; in apply, the key
                    # only feeds initializers whose values are then replaced.
                    fallback = initializing and "params" in keys
                    keys["default"] = self.make_rng("params") if fallback else 0
                kwargs["rngs"] = Rngs(**keys)
            return kwargs

        def _load(self, module: Any) -> None:
            live = dict(_live_variables(module))
            unknown = []
            for collection in self.variables.values():
                for path, leaf in bv.iter_flat(unfreeze(collection)):
                    var = live.get(path)
                    if var is None:
                        unknown.append(path)
                    else:
                        var.set_value(bv.unbox(leaf))
            if unknown:
                paths = "".join(f"\n  - {'/'.join(map(str, p))}" for p in unknown)
                warnings.warn(
                    f"ramie.bridge.ToLinen({getattr(self.nnx_class, '__name__', '')}):"
                    f" Found unknown module paths in incoming state:{paths}\n"
                    "  They match no Variable of the ramie module and were ignored.",
                    UnknownStateWarning,
                    stacklevel=3,
                )

        def _store(self, module: Any) -> None:
            linen_vars = bv.nnx_attrs_to_linen_vars(
                _live_variables(module), self.metadata_fn
            )
            for collection, tree in linen_vars.items():
                if self.is_mutable_collection(collection):
                    for name, value in tree.items():
                        self.put_variable(collection, name, value)

        def __getattr__(self, name: str) -> Any:
            try:
                return super().__getattr__(name)
            except AttributeError:
                d = self.__dict__
                kwargs = d.get("kwargs")
                if kwargs is not None and name in kwargs:
                    return kwargs[name]
                method = getattr(d.get("nnx_class"), name, None)
                if name.startswith("_") or not callable(method):
                    raise
                bound = partial(self.__call__, nnx_method=method)
                bound.__self__ = self  # type: ignore[attr-defined]
                return bound

    ToLinen.__module__ = "ramie.bridge"
    ToLinen.__qualname__ = "ToLinen"
    return ToLinen
