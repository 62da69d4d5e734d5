"""Wrappers between Linen modules and ramie modules, in both directions.

* :class:`ToNNX` holds a Linen module and its variables as a ramie Module:
  ``lazy_init`` runs Linen's ``init`` on sample inputs and stores each
  collection as Variables of the matching type on the wrapper; calls run
  Linen's ``apply`` on them and write mutated collections (``batch_stats``,
  ``cache``, sown ``intermediates``) back into the same Variables, so
  ``ramie.jit``/``ramie.grad``/``Optimizer`` treat it like a native layer.
* ``ToLinen`` (built by :func:`to_linen`) is a Linen module that creates a
  ramie module inside ``init``/``apply`` and keeps its Variables in Linen
  collections, so it works with ``jax.jit``, ``nn.scan``, ``nn.vmap`` and a
  Linen ``TrainState``. It subclasses ``flax.linen.Module``, so it is created
  on first use (:func:`to_linen_class_base`), keeping Flax optional.
* :func:`functional` gives a ramie module class Linen's ``init``/``apply``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from functools import cache, partial
from typing import Any, Generic, TypeVar

import jax

from ramie._src.bridge import deps
from ramie._src.bridge import variables as bv
from ramie._src.core.graph import api
from ramie._src.core.module import Module
from ramie._src.core.rngs import Rngs
from ramie._src.core.state import iter_flat
from ramie._src.core.variables import Variable
from ramie.errors import BridgeError, RamieWarning

M = TypeVar("M", bound=Module)
INIT_FLAG = "to_nnx__initializing"


# ------------------------------------------------------------- functional
@dataclasses.dataclass
class Functional(Generic[M]):
    """A ramie module class with Linen's ``init``/``apply`` calling convention.

    Made by :func:`functional`. ``init(rngs=...)`` builds the module and
    returns its State (keeping the GraphDef); ``apply(*states)`` returns
    ``graphdef.apply(*states)``, a callable giving ``(out, (graphdef, state))``.
    """

    module_type: type[M]
    graphdef: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def init(self, *, rngs: Rngs | None = None) -> Any:
        kwargs = dict(self.kwargs)
        if rngs is not None:
            kwargs["rngs"] = rngs
        self.graphdef, state = api.split(self.module_type(*self.args, **kwargs))
        return state

    def apply(self, *states: Any) -> Any:
        if self.graphdef is None:
            raise BridgeError(
                f"Functional({self.module_type.__name__}).apply(): no GraphDef yet; "
                "call init first:\n      state = f.init(rngs=ramie.Rngs(0))"
            )
        return self.graphdef.apply(*states)


def functional(cls: type[M]) -> Callable[..., Functional[M]]:
    """Give a ramie module class Linen's functional ``init``/``apply`` API.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> f = ramie.bridge.functional(ramie.Linear)(2, 3)
        >>> state = f.init(rngs=ramie.Rngs(0))
        >>> y, (graphdef, new_state) = f.apply(state)(jnp.ones((1, 2)))
        >>> y.shape
        (1, 3)
    """

    def make(*args: Any, **kwargs: Any) -> Functional[M]:
        return Functional(cls, None, args, kwargs)

    return make


# -------------------------------------------------------------- lazy_init
def _set_initializing(node: Any, value: bool) -> None:
    for _, obj in api.iter_graph(node):
        if getattr(type(obj), "_uses_init_flag", False):
            setattr(obj, INIT_FLAG, value)


def is_initializing(module: Module) -> bool:
    """True while :func:`lazy_init` (or a bridge ``init``) runs on ``module``."""
    return bool(module.__dict__.get(INIT_FLAG, False))


def lazy_init(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a module (or one of its methods) once to create its Linen variables.

    Every :class:`ToNNX` inside runs Linen's ``init`` on the inputs it sees,
    instead of ``apply``, and keeps the variables. Returns ``fn``.

    Args:
        fn: A ramie Module, or a bound method of one.
        *args: Sample inputs.
        **kwargs: Keyword inputs.

    Raises:
        BridgeError: ``fn`` is neither a Module nor a method of one.

    Example:
        >>> import flax.linen as nn, jax.numpy as jnp, ramie
        >>> model = ramie.bridge.ToNNX(nn.Dense(3), rngs=ramie.Rngs(0))
        >>> model = ramie.bridge.lazy_init(model, jnp.ones((1, 2)))
        >>> model.kernel.shape
        (2, 3)
    """
    if isinstance(fn, Module):
        module = fn
    else:
        module = getattr(fn, "__self__", None)
        if not isinstance(module, Module):
            raise BridgeError(
                f"ramie.bridge.lazy_init({fn!r}): expected a ramie Module or a bound "
                "method of one.\n  Pass the model or its method:\n"
                "      ramie.bridge.lazy_init(model, x)\n"
                "      ramie.bridge.lazy_init(model.encode, x)"
            )
    _set_initializing(module, True)
    try:
        fn(*args, **kwargs)
    finally:
        _set_initializing(module, False)
    return fn


def current_linen_module() -> Any:
    """The Linen module whose method is running (None outside Linen).

    Does not import Flax: without ``flax.linen`` loaded there is none.

    Example:
        >>> import flax.linen as nn, jax, jax.numpy as jnp
        >>> from ramie.bridge.wrappers import current_linen_module
        >>> class Probe(nn.Module):
        ...     @nn.compact
        ...     def __call__(self, x):
        ...         return type(current_linen_module()).__name__
        >>> Probe().apply({}, jnp.ones(1)), current_linen_module()
        ('Probe', None)
    """
    nn_module = sys.modules.get("flax.linen.module")
    if nn_module is None:
        return None
    stack = nn_module._context.module_stack  # noqa: SLF001  (Linen's own stack)
    return stack[-1] if stack else None


_current_linen_module = current_linen_module


def linen_rngs_dict(linen_module: Any, add_default: bool = False) -> dict[str, Any]:
    """One fresh key from each RNG stream a bound Linen module has.

    Args:
        linen_module: A Linen module inside ``init``/``apply``.
        add_default: Add a ``default`` entry (the integer seed 0) when the
            module has no ``default`` stream, so ``ramie.Rngs(**result)``
            always has one.

    Returns:
        ``{stream_name: key}``, ready for ``ramie.Rngs(**result)``.

    Raises:
        BridgeError: when the module is not bound (called outside Linen's
            ``init``/``apply``).

    Example:
        >>> import flax.linen as nn, jax, jax.numpy as jnp
        >>> from ramie.bridge.wrappers import linen_rngs_dict
        >>> class Keys(nn.Module):
        ...     @nn.compact
        ...     def __call__(self, x):
        ...         return sorted(linen_rngs_dict(self, add_default=True))
        >>> Keys().apply({}, jnp.ones(1), rngs={"dropout": jax.random.key(0)})
        ['default', 'dropout']
    """
    scope = getattr(linen_module, "scope", None)
    if scope is None:
        raise BridgeError(
            f"ramie.bridge.wrappers.linen_rngs_dict({type(linen_module).__name__}"
            "): the Linen module is not bound, so it has no RNG streams.\n  Call "
            "it inside the module's methods, under init/apply:\n"
            "      rngs = linen_rngs_dict(self)  # in a @nn.compact method"
        )
    out = {name: linen_module.make_rng(name) for name in scope.rngs}
    if add_default and "default" not in out:
        out["default"] = 0
    return out


def _rngs_dict(rngs: Any) -> dict[str, Any]:
    if isinstance(rngs, Rngs):
        out = {name: stream() for name, stream in rngs.items()}
    elif isinstance(rngs, jax.Array):
        out = {"params": rngs}
    elif isinstance(rngs, Mapping):
        out = dict(rngs)
    else:
        out = {}
    if "params" not in out and "default" in out:
        out["params"] = out.pop("default")
    return out


_NOT_INITIALIZED = (
    "ramie.bridge.ToNNX({cls}) at {path}: the Linen module has no variables yet; "
    "Linen creates them from a sample input.\n"
    "  Run it once through lazy_init before calling it:\n"
    "      model = ramie.bridge.lazy_init(model, x)   # or wrapper.lazy_init(x)"
)


def _where(module: Module) -> str:
    from ramie._src.core.links import path_of
    from ramie._src.core.paths import format_path

    path = path_of(module)
    return format_path(path) if path else "the root"


class ToNNX(Module):
    """A Linen module as a ramie Module.

    Create it with the Linen module and the ``Rngs`` to draw keys from, then
    call :meth:`lazy_init` with sample inputs (Linen needs them to create its
    variables). The variables become attributes: ``params`` as ``Param``,
    ``batch_stats`` as ``BatchStat``, any other collection as the Variable
    type registered under its name, with Linen's nesting (``model.Dense_0``
    is a dict of Variables). Calls run Linen's ``apply`` with keys from the
    Rngs (``dropout`` keys for ``nn.Dropout``) and write updated collections
    back in place. By default every collection but ``params`` is mutable
    during a call, so ``nn.BatchNorm(use_running_average=False)`` updates its
    statistics as ramie's own BatchNorm does; pass ``mutable=`` to choose.

    Other methods of the Linen module are available too: ``model.encode(x)``
    runs Linen's ``apply(..., method=Cls.encode)``.

    Args:
        module: The Linen module instance.
        rngs: ``Rngs`` (forked, so the wrapper has its own streams), a key
            (used for ``params``), or None.

    Example:
        >>> import flax.linen as nn, jax.numpy as jnp, ramie
        >>> model = ramie.bridge.ToNNX(nn.Dense(4), rngs=ramie.Rngs(0))
        >>> model = model.lazy_init(jnp.ones((1, 2)))
        >>> model(jnp.ones((1, 2))).shape, type(model.kernel).__name__
        ((1, 4), 'Param')
    """

    _uses_init_flag = True

    def __init__(self, module: Any, rngs: Rngs | jax.Array | None = None):
        self.to_nnx__module = module
        if isinstance(rngs, jax.Array):
            rngs = Rngs(params=rngs)
        elif isinstance(rngs, Rngs):
            rngs = rngs.fork()
        self.to_nnx__rngs = rngs
        self.to_nnx__initializing = False

    @property
    def module(self) -> Any:
        """The wrapped Linen module (also ``to_nnx__module``)."""
        return self.__dict__["to_nnx__module"]

    @property
    def rngs(self) -> Rngs | None:
        """The wrapper's own Rngs (also ``to_nnx__rngs``)."""
        return self.__dict__["to_nnx__rngs"]

    def lazy_init(self, *args: Any, **kwargs: Any) -> ToNNX:
        """``ramie.bridge.lazy_init(self, *args, **kwargs)``: create the variables."""
        return lazy_init(self, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        if name.startswith("__") or "to_nnx__module" not in d:
            raise AttributeError(name)
        method = getattr(type(d["to_nnx__module"]), name, None)
        if callable(method):
            bound = partial(self.__call__, method=method)
            bound.__self__ = self  # type: ignore[attr-defined]  # lazy_init(model.m)
            return bound
        raise AttributeError(
            f"{type(self).__name__} (wrapping {type(d['to_nnx__module']).__name__}) "
            f"has no attribute {name!r}; its variables are "
            f"{sorted(k for k in d if not k.startswith('to_nnx__'))}"
        )

    def _linen_variables(self) -> dict[str, dict]:
        flat = []
        for k, v in self.__dict__.items():
            if k.startswith("to_nnx__"):
                continue
            if isinstance(v, Variable):
                flat.append(((k,), v))
            elif isinstance(v, Mapping):
                flat.extend(((k, *p), x) for p, x in iter_flat(v))
        return bv.nnx_attrs_to_linen_vars(
            [(p, v) for p, v in flat if isinstance(v, Variable)]
        )

    def __call__(
        self,
        *args: Any,
        rngs: Rngs | jax.Array | None = None,
        method: Callable[..., Any] | str | None = None,
        mutable: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Run the Linen module (``init`` during ``lazy_init``, else ``apply``)."""
        deps.linen("ramie.bridge.ToNNX")
        linen_module = self.to_nnx__module
        linen_rngs = _rngs_dict(self.to_nnx__rngs if rngs is None else rngs)
        if is_initializing(self):
            out, updates = linen_module.init_with_output(
                linen_rngs, *args, method=method, **kwargs
            )
        else:
            variables = self._linen_variables()
            if mutable is None:
                mutable = self._default_mutable(variables)
            try:
                out = linen_module.apply(
                    variables, *args, rngs=linen_rngs, method=method,
                    mutable=mutable, **kwargs,
                )  # fmt: skip
            except Exception as e:
                if variables or not type(e).__name__.startswith("Scope"):
                    raise
                raise BridgeError(_NOT_INITIALIZED.format(
                    cls=type(linen_module).__name__, path=_where(self)
                )) from e  # fmt: skip
            out, updates = out if mutable is not False else (out, None)
        if updates:
            self._write_back(bv.linen_vars_to_nnx_attrs(updates))
        return out

    @staticmethod
    def _default_mutable(variables: Mapping[str, Any]) -> Any:
        from ramie._src.bridge.module import current_module

        parent = current_module()
        if parent is not None and parent.scope is not None:
            return parent.scope.mutable
        linen_parent = _current_linen_module()
        if linen_parent is not None and linen_parent.scope is not None:
            return linen_parent.scope.mutable
        # As for native layers: state collections update during the call.
        return [c for c in variables if c != "params"] or False

    def _write_back(self, attrs: Mapping[str, Any]) -> None:
        for name, new in attrs.items():
            old = self.__dict__.get(name)
            if isinstance(new, Mapping) and isinstance(old, Mapping):
                _merge_into(old, new)
            elif isinstance(new, Variable) and isinstance(old, Variable):
                _copy_var(old, new)
            else:
                setattr(self, name, new)


def _copy_var(old: Variable, new: Variable) -> None:
    if type(old) is type(new):
        old.copy_from(new)
    else:
        raise BridgeError(
            f"ramie.bridge.ToNNX: a Linen update turned a {type(old).__name__} "
            f"into a {type(new).__name__}; keep each variable in one collection."
        )


def _merge_into(old: Any, new: Mapping) -> None:
    for k, v in new.items():
        cur = old.get(k) if isinstance(old, Mapping) else None
        if isinstance(v, Mapping) and isinstance(cur, Mapping):
            _merge_into(cur, v)
        elif isinstance(v, Variable) and isinstance(cur, Variable):
            _copy_var(cur, v)
        else:
            old[k] = v


# ----------------------------------------------------------------- ToLinen
def _module_method(module: Any, method: Callable[..., Any] | str | None) -> Any:
    if method is None:
        method = "__call__"
    if isinstance(method, str):
        fn = getattr(type(module), method, None)
        if not callable(fn):
            raise TypeError(
                f"'{type(module).__name__}.{method}' must be a callable, got "
                f"{type(fn)}."
            )
        return fn
    if not callable(method):
        raise TypeError(f"'{method}' must be a callable, got {type(method)}.")
    return method


class UnknownStateWarning(RamieWarning):
    """Linen variables given to a ``ToLinen`` module match no Variable of it."""


@cache
def to_linen_class_base() -> type:
    """Build the ``ToLinen`` Linen module class (imports Flax on first use)."""
    nn = deps.linen("ramie.bridge.ToLinen")
    from flax.core import FrozenDict, unfreeze

    from ramie._src.bridge.linen_module import make_to_linen

    return make_to_linen(nn, FrozenDict, unfreeze)


def to_linen(
    nnx_class: Callable[..., Module],
    *args: Any,
    metadata_fn: Callable[[Variable], Any] | None = bv.to_linen_var,
    name: str | None = None,
    skip_rng: bool = False,
    abstract_init: bool = True,
    **kwargs: Any,
) -> Any:
    """A ramie module class and its arguments as a Linen module (``ToLinen``).

    Args:
        nnx_class: The ramie Module class (or any callable returning a Module).
        *args: Positional arguments for ``nnx_class``.
        metadata_fn: Turns each Variable into its Linen leaf; the default keeps
            bare arrays bare and boxes Variables with metadata.
        name: The Linen submodule name.
        skip_rng: Do not pass ``rngs=`` to ``nnx_class``.
        abstract_init: Accepted for Flax compatibility.
        **kwargs: Keyword arguments for ``nnx_class``.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> layer = ramie.bridge.to_linen(ramie.Linear, 2, 3)
        >>> variables = layer.init(jax.random.key(0), jnp.ones((1, 2)))
        >>> variables["params"]["kernel"].shape
        (2, 3)
    """
    cls = to_linen_class_base()  # raises MissingExtraError without Flax
    from flax.core import FrozenDict

    return cls(
        nnx_class,
        args=args,
        kwargs=FrozenDict(kwargs),
        metadata_fn=metadata_fn,
        skip_rng=skip_rng,
        name=name,
    )


def to_linen_class(
    base_nnx_class: type[M],
    base_metadata_fn: Callable[[Variable], Any] | None = bv.to_linen_var,
    base_skip_rng: bool = False,
    **partial_kwargs: Any,
) -> type:
    """A Linen module class wrapping ``base_nnx_class`` with default arguments.

    Instances take the ramie class's keyword arguments directly:
    ``LinenLinear = to_linen_class(ramie.Linear); LinenLinear(in_features=2,
    out_features=3)``.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> LinenLinear = ramie.bridge.to_linen_class(ramie.Linear, in_features=2)
        >>> v = LinenLinear(out_features=3).init(jax.random.key(0), jnp.ones((1, 2)))
        >>> v["params"]["kernel"].shape
        (2, 3)
    """
    base = to_linen_class_base()  # raises MissingExtraError without Flax
    from flax.core import FrozenDict

    missing = object()

    def __init__(
        self: Any,
        args: Any = None,
        kwargs: Any = None,
        nnx_class: Any = None,
        skip_rng: Any = None,
        metadata_fn: Any = None,
        name: Any = missing,
        parent: Any = missing,
        **other_kwargs: Any,
    ) -> None:
        linen_kwargs = {}
        if parent is not missing:
            linen_kwargs["parent"] = parent
        if name is not missing:
            linen_kwargs["name"] = name
        base.__init__(
            self,
            nnx_class=nnx_class or base_nnx_class,
            args=args or (),
            metadata_fn=metadata_fn or base_metadata_fn,
            skip_rng=skip_rng or base_skip_rng,
            kwargs=FrozenDict({**partial_kwargs, **(kwargs or {}), **other_kwargs}),
            **linen_kwargs,
        )

    cls = type(f"ToLinen_{getattr(base_nnx_class, '__name__', 'Module')}", (base,), {})
    cls.__init__ = __init__  # type: ignore[misc]
    return cls


def __getattr__(name: str) -> Any:
    if name == "ToLinen":
        return to_linen_class_base()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
