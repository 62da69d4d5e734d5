"""Haiku inside ramie (:class:`HaikuToNNX`) and ramie inside Haiku (:class:`ToHaiku`).

:class:`HaikuToNNX` wraps the result of ``hk.transform``,
``hk.transform_with_state`` or ``hk.multi_transform`` as a ramie Module. It
initialises Haiku's parameters once (eagerly, from the module's ``Rngs``) and
keeps them as :class:`~ramie.Param` Variables, and Haiku's state as
:class:`~ramie.BatchStat` Variables, so ``ramie.grad`` differentiates the
parameters only and ``ramie.jit``/``ramie.Optimizer`` train it like any
native layer. Haiku's module names become paths: ``mlp/~/linear_0`` with
parameter ``w`` lives at ``model.params["mlp"]["linear_0"]["w"]`` (printed
``params.mlp.linear_0.w``); Haiku's ``~`` separators are dropped, each ``/``
opens a level. :meth:`HaikuToNNX.to_haiku` gives the dicts back under the
original names.

:class:`ToHaiku` goes the other way: ``ToHaiku(ramie.Linear, 3, 4)(x)``
inside a Haiku function builds the ramie module on ``init`` from
``hk.next_rng_key()`` and stores its Variables with ``hk.get_parameter``
(Params) and ``hk.get_state``/``hk.set_state`` (everything else, RNG state
excluded), so Haiku training code can adopt ramie modules one at a time.

Haiku is imported on first use only (``pip install ramie[haiku]``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ramie._src.core.containers import Dict
from ramie._src.core.graph.api import merge, split
from ramie._src.core.module import Module
from ramie._src.core.rngs import Rngs, RngState
from ramie._src.core.variables import BatchStat, Param, Variable
from ramie.errors import MissingExtraError


def import_haiku() -> Any:
    """Import Haiku, or say which extra to install."""
    try:
        import haiku as hk
    except ImportError as e:
        raise MissingExtraError(
            "ramie.bridge's Haiku support needs Haiku, which is not installed.\n"
            "  Install it with:\n      pip install ramie[haiku]"
        ) from e
    return hk


def _nest(names: Sequence[str]) -> list[tuple[str, ...]]:
    """Ramie paths for Haiku module names: ``~`` dropped, ``/`` opens a level.

    Names that would collide once ``~`` is dropped keep Haiku's full name as
    one key.
    """
    paths = [tuple(p for p in n.split("/") if p != "~") or ("~",) for n in names]
    if len(set(paths)) != len(paths):
        return [(n,) for n in names]
    return paths


def _to_dicts(tree: Mapping[str, Mapping[str, Any]], var_type: type) -> tuple:
    """(ramie Dict of Variables, static name table) for a Haiku params/state."""
    names = list(tree)
    root = Dict()
    table = []
    for name, path in zip(names, _nest(names)):
        node = root
        for part in path:
            if part not in node:
                node[part] = Dict()
            node = node[part]
        for k, v in tree[name].items():
            node[k] = var_type(v)
            table.append((name, k, path))
    return root, tuple(table)


def _from_dicts(root: Dict, table: tuple) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, k, path in table:
        node = root
        for part in path:
            node = node[part]
        out.setdefault(name, {})[k] = node[k].value
    return out


def _write(root: Dict, table: tuple, new: Mapping[str, Mapping[str, Any]]) -> None:
    for name, k, path in table:
        node = root
        for part in path:
            node = node[part]
        node[k].value = new[name][k]


class HaikuToNNX(Module):
    """A Haiku transformed function as a ramie Module.

    Args:
        transformed: The result of ``hk.transform``, ``hk.transform_with_state``
            or ``hk.multi_transform(_with_state)``.
        *sample_inputs: Inputs for Haiku's ``init`` (shapes are inferred from
            them, as in Haiku).
        rngs: ``ramie.Rngs``: ``params`` initialises, the ``dropout`` stream
            (or the default one) gives the key of every call.
        methods: For ``multi_transform``: names of the functions in its
            ``apply`` tuple; each becomes a method (``model.encode(x)``).
        **sample_kwargs: Keyword inputs for ``init``.

    Attributes:
        params: Haiku's parameters as ``Param`` Variables, nested by module
            name (``params.mlp.linear_0.w`` for ``mlp/~/linear_0``'s ``w``).
        state: Haiku's state as ``BatchStat`` Variables, nested the same way
            (empty for ``hk.transform``).

    Example:
        >>> import haiku as hk, jax.numpy as jnp, ramie
        >>> f = hk.transform(lambda x: hk.nets.MLP([4, 2])(x))
        >>> model = ramie.bridge.HaikuToNNX(f, jnp.ones((1, 3)), rngs=ramie.Rngs(0))
        >>> model.params["mlp"]["linear_0"]["w"].shape
        (3, 4)
        >>> model(jnp.ones((5, 3))).shape
        (5, 2)
        >>> sorted(model.to_haiku())
        ['mlp/~/linear_0', 'mlp/~/linear_1']
    """

    def __init__(
        self,
        transformed: Any,
        *sample_inputs: Any,
        rngs: Rngs,
        methods: Sequence[str] | None = None,
        **sample_kwargs: Any,
    ):
        hk = import_haiku()
        with_state = isinstance(
            transformed, (hk.TransformedWithState, hk.MultiTransformedWithState)
        )
        multi = isinstance(
            transformed, (hk.MultiTransformed, hk.MultiTransformedWithState)
        )
        if not isinstance(
            transformed,
            (
                hk.Transformed,
                hk.TransformedWithState,
                hk.MultiTransformed,
                hk.MultiTransformedWithState,
            ),
        ):
            raise TypeError(
                "HaikuToNNX(transformed, ...): expected the result of hk.transform, "
                "hk.transform_with_state or hk.multi_transform, got "
                f"{type(transformed).__name__}.\n  Wrap the function first:\n"
                "      model = ramie.bridge.HaikuToNNX(hk.transform(forward), x, "
                "rngs=ramie.Rngs(0))"
            )
        self.transformed = transformed
        self.with_state = with_state
        self.multi = multi
        init = transformed.init(rngs.params(), *sample_inputs, **sample_kwargs)
        params, state = init if with_state else (init, {})
        self.params, self._params_table = _to_dicts(params, Param)
        self.state, self._state_table = _to_dicts(state, BatchStat)
        self.rngs = rngs["dropout"].fork(tag="dropout")
        self._methods: tuple[str, ...] = ()
        if multi:
            n = len(transformed.apply)
            names = tuple(methods) if methods is not None else ()
            if names and len(names) != n:
                raise ValueError(
                    f"HaikuToNNX(methods={list(names)}): the multi_transform has "
                    f"{n} apply functions; give one name for each."
                )
            self._methods = names

    def _run(self, apply: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        params = _from_dicts(self.params, self._params_table)
        key = self.rngs()
        if self.with_state:
            state = _from_dicts(self.state, self._state_table)
            out, new_state = apply(params, state, key, *args, **kwargs)
            _write(self.state, self._state_table, new_state)
            return out
        return apply(params, key, *args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run Haiku's ``apply`` (the first function of a multi_transform)."""
        apply = self.transformed.apply
        return self._run(apply[0] if self.multi else apply, args, kwargs)

    def call_method(self, method: int | str, *args: Any, **kwargs: Any) -> Any:
        """Run one function of a multi_transform, by index or name."""
        if not self.multi:
            raise TypeError(
                "HaikuToNNX.call_method(): only a multi_transform has several "
                "functions; call the module itself: model(x)"
            )
        index = self._methods.index(method) if isinstance(method, str) else method
        return self._run(self.transformed.apply[index], args, kwargs)

    def __getattr__(self, name: str) -> Any:
        methods = self.__dict__.get("_methods", ())
        if name in methods:
            return lambda *a, **k: self.call_method(name, *a, **k)
        raise AttributeError(
            f"{type(self).__name__!r} object has no attribute {name!r}"
        )

    def set_haiku(
        self,
        params: Mapping[str, Mapping[str, Any]],
        state: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Write Haiku ``params`` (and ``state``) into the Variables, all or nothing.

        The dicts must have exactly the names, shapes and dtypes ``init``
        produced (a trained Haiku checkpoint of the same function).

        Raises:
            StateLoadError: listing every missing, unexpected and mis-shaped
                entry; nothing is written then.
        """
        from ramie._src.core.loading import check_load

        pairs, missing, unexpected = [], [], []
        groups = [(params, self.params, self._params_table, "params")]
        if self.with_state or state is not None:
            groups.append((state or {}, self.state, self._state_table, "state"))
        for tree, root, table, kind in groups:
            known = {(n, k) for n, k, _ in table}
            for name, entries in tree.items():
                for k in entries:
                    if (name, k) not in known:
                        unexpected.append((kind, name, k))
            for name, k, path in table:
                node = root
                for part in path:
                    node = node[part]
                if name in tree and k in tree[name]:
                    pairs.append(((kind, name, k), node[k], tree[name][k]))
                else:
                    missing.append((kind, name, k))
        values = check_load(
            pairs,
            api="HaikuToNNX.set_haiku()",
            missing=missing,
            unexpected=unexpected,
        )
        for (_, var, _), value in zip(pairs, values):
            var.value = value

    def to_haiku(self) -> Any:
        """Haiku's ``params`` (and ``state``, with state) under Haiku's names."""
        params = _from_dicts(self.params, self._params_table)
        if self.with_state:
            return params, _from_dicts(self.state, self._state_table)
        return params


def ToHaiku(
    module_cls: Callable[..., Module],
    *args: Any,
    name: str | None = None,
    **kwargs: Any,
) -> Callable[..., Any]:
    """A ramie Module usable inside ``hk.transform`` / ``transform_with_state``.

    The module is built during Haiku's ``init`` with ``rngs=ramie.Rngs(
    hk.next_rng_key())`` when ``module_cls`` takes ``rngs``; its Params
    become Haiku parameters and its other Variables (RNG state excluded)
    Haiku state, under ``name`` (default: the class name in snake case).
    Each call rebuilds the module from Haiku's values, runs it, and writes
    changed state back with ``hk.set_state``. Modules that draw random numbers
    at call time (Dropout) get ``hk.next_rng_key()`` (pass an rng to
    ``apply``).

    Args:
        module_cls: The ramie Module class (or any factory taking ``rngs``).
        *args: Positional arguments for it.
        name: The Haiku module name.
        **kwargs: Keyword arguments for it.

    Returns:
        A function ``f(*inputs, **kwargs)`` to call inside a Haiku transform.

    Example:
        >>> import haiku as hk, jax, jax.numpy as jnp, ramie
        >>> f = hk.transform(lambda x: ramie.bridge.ToHaiku(ramie.Linear, 3, 4)(x))
        >>> params = f.init(jax.random.key(0), jnp.ones((1, 3)))
        >>> jax.tree.map(jnp.shape, params)
        {'linear': {'bias': (4,), 'kernel': (3, 4)}}
        >>> f.apply(params, None, jnp.ones((2, 3))).shape
        (2, 4)
    """
    hk = import_haiku()
    import inspect
    import re

    cls_name = getattr(module_cls, "__name__", "ramie_module")
    name = name or re.sub(r"(?<!^)(?=[A-Z])", "_", cls_name).lower()
    try:
        takes_rngs = "rngs" in inspect.signature(module_cls).parameters
    except (TypeError, ValueError):
        takes_rngs = True

    def build(key: Any) -> Module:
        if takes_rngs:
            return module_cls(*args, rngs=Rngs(key), **kwargs)
        return module_cls(*args, **kwargs)

    def call(*inputs: Any, **call_kwargs: Any) -> Any:
        with hk.experimental.name_scope(name):
            # The structure is built abstractly (no compute) to learn shapes.
            shapes = jax.eval_shape(lambda: split(build(jax.random.key(0))))
            graphdef, abstract = shapes
            flat = _variables(abstract)
            init_cache: dict[str, Any] = {}

            def initial() -> Any:
                if "state" not in init_cache:
                    model = build(hk.next_rng_key())
                    init_cache["state"] = split(model)[1]
                return init_cache["state"]

            values = {}
            for path, var in flat:
                key = "/".join(str(p) for p in path)
                if isinstance(var, RngState):
                    continue
                init = _initializer(initial, path)
                shape, dtype = var.value.shape, var.value.dtype
                if isinstance(var, Param):
                    values[path] = hk.get_parameter(key, shape, dtype, init=init)
                else:
                    values[path] = hk.get_state(key, shape, dtype, init=init)
            state = _replace(abstract, values, hk)
            model = merge(graphdef, state)
            out = model(*inputs, **call_kwargs)
            for path, var in _variables(split(model)[1]):
                if not isinstance(var, (Param, RngState)):
                    hk.set_state("/".join(str(p) for p in path), var.value)
            return out

    return call


def _variables(state: Any) -> list[tuple[tuple, Variable]]:
    leaves = jax.tree_util.tree_flatten_with_path(
        state, is_leaf=lambda x: isinstance(x, Variable)
    )[0]
    return [(tuple(_key(k) for k in path), v) for path, v in leaves]


def _key(k: Any) -> Any:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return getattr(k, attr)
    return k


def _initializer(initial: Callable[[], Any], path: tuple) -> Callable[..., Any]:
    def init(shape: Any, dtype: Any) -> Any:
        for var_path, var in _variables(initial()):
            if var_path == path:
                return var.value
        raise KeyError(path)  # pragma: no cover - same structure by construction

    return init


def _replace(abstract: Any, values: dict, hk: Any) -> Any:
    """The abstract State with Haiku's values, fresh RNG state elsewhere."""

    def fill(path: Any, var: Any) -> Any:
        p = tuple(_key(k) for k in path)
        if p in values:
            return var.replace(values[p])
        if isinstance(var, RngState):
            dtype = var.value.dtype
            typed = jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
            if typed or len(var.value.shape) and dtype == jnp.uint32:
                key = hk.maybe_next_rng_key()
                key = jax.random.key(0) if key is None else key
                key_is_typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
                if typed and not key_is_typed:
                    key = jax.random.wrap_key_data(key)
                elif not typed and key_is_typed:
                    key = jax.random.key_data(key)
                return var.replace(key)
            return var.replace(jnp.zeros(var.value.shape, dtype))
        return var  # pragma: no cover

    return jax.tree_util.tree_map_with_path(
        fill, abstract, is_leaf=lambda x: isinstance(x, Variable)
    )
