"""``bridge.Module``: ramie modules written in Linen's style.

A ``bridge.Module`` subclass is a dataclass (fields are its hyperparameters,
as in Linen) and a ramie Module. Inside ``init``/``apply`` it has a
:class:`Scope` (Rngs and the mutable collections) and creates state the Linen
way: ``self.param(name, init_fn, *shape)``, ``self.variable(col, name, ...)``
and ``self.make_rng(name)``, in ``setup()`` or in a method decorated with
:func:`compact`, where submodules get Linen's automatic names (``Dense_0``).
``init`` returns Linen-style ``{collection: {...}}`` variables and ``apply``
takes them, so a Linen training loop runs unchanged while the model becomes a
ramie model one class at a time (outside ``apply`` it is an ordinary ramie
module: ``ramie.split``, ``ramie.jit`` and the rest apply).

Variables from ``apply``'s input whose submodule does not exist yet (created
later by ``compact``) wait under ``bridge__pending__<name>`` and move into the
submodule when it is attached, also inside ramie transforms.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import threading
import types
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import jax

from ramie._src.bridge import variables as bv
from ramie._src.bridge.wrappers import INIT_FLAG
from ramie._src.core.graph import api
from ramie._src.core.module import Module as _RamieModule
from ramie._src.core.pytree import Pytree
from ramie._src.core.rngs import Rngs, RngState
from ramie._src.core.state import (
    State,
    _make_unflatten,
    _state_flatten,
    _state_flatten_with_keys,
)
from ramie._src.core.variables import Param, Variable, variable_type_from_name
from ramie.errors import BridgeError

A = TypeVar("A")
F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound="Module")
PENDING = "bridge__pending__"
_SETUP_FLAG = "bridge__is_setup"


@dataclasses.dataclass
class ModuleStackEntry:
    """One frame of the bridge module stack: the module and how it was entered."""

    module: Module
    in_compact: bool
    type_counter: defaultdict[type, int] = dataclasses.field(
        default_factory=lambda: defaultdict(int)
    )


@dataclasses.dataclass
class ModuleContext(threading.local):
    """The per-thread stack of bridge modules being set up or called."""

    module_stack: list[ModuleStackEntry | None] = dataclasses.field(
        default_factory=lambda: [None]
    )


MODULE_CONTEXT = ModuleContext()


class Scope(Pytree):
    """What a bridge Module can use inside ``init``/``apply``: Rngs and mutability.

    Args:
        rngs: The ``Rngs`` that ``make_rng``/``param`` draw keys from.
        mutable: Linen's collection filter (``True``, ``False``, a name, a list).
    """

    def __init__(self, rngs: Rngs, mutable: Any):
        self.rngs = rngs
        self.mutable = mutable

    def copy(self) -> Scope:
        """A new Scope sharing the same Rngs."""
        return Scope(self.rngs, self.mutable)


class AttrPriority(enum.IntEnum):
    """Order in which attributes are visited: the lowest value names a shared node.

    A submodule reachable under two attribute names appears in the state
    (and in Linen's variables) under the name with the higher priority.
    Submodules named in ``compact`` or with ``name=`` get ``INIT_PARENT``;
    change one with ``self.set_attr_priority(name, AttrPriority.HIGH)``.

    Example:
        >>> import ramie
        >>> ramie.bridge.AttrPriority.HIGH < ramie.bridge.AttrPriority.DEFAULT
        True
    """

    HIGH = 0
    INIT_PARENT = 20
    DEFAULT = 50
    LOW = 100


def current_context() -> ModuleStackEntry | None:
    """The innermost bridge module frame (``None`` outside ``init``/``apply``).

    Its ``module`` is the running bridge Module and ``in_compact`` tells
    whether a ``@compact`` method (rather than ``setup``) is running.

    Example:
        >>> import ramie
        >>> ramie.bridge.current_context() is None
        True
    """
    return MODULE_CONTEXT.module_stack[-1]


def current_module() -> Module | None:
    """The bridge module whose ``setup`` or method is running, or ``None``.

    Example:
        >>> import ramie
        >>> ramie.bridge.current_module() is None
        True
    """
    ctx = current_context()
    return None if ctx is None else ctx.module


def _auto_name(ctx: ModuleStackEntry, cls: type) -> str:
    i = ctx.type_counter[cls]
    ctx.type_counter[cls] += 1
    return f"{cls.__name__}_{i}"


class ModuleState(State):
    """Variables waiting for a submodule that ``compact`` has not created yet.

    ``apply(variables, ...)`` receives the state of every submodule up front,
    but a ``compact`` method creates its submodules only when it runs. Until
    then their Variables are kept in a ``ModuleState`` on the parent (it is a
    :class:`~ramie.State`, so transforms and ``ramie.split`` carry it), and
    they move into the submodule as soon as it is assigned.
    """


# flattened exactly as ramie's State
jax.tree_util.register_pytree_with_keys(
    ModuleState,
    _state_flatten_with_keys,
    _make_unflatten(ModuleState),
    _state_flatten,
)


def has_setup(x: Any) -> bool:
    """Whether ``x`` defines ``setup`` (which a bridge Module runs once, lazily).

    Example:
        >>> import ramie
        >>> class WithSetup(ramie.bridge.Module):
        ...     def setup(self):
        ...         self.dense = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
        >>> ramie.bridge.module.has_setup(WithSetup()), has_setup(object())
        (True, False)
    """
    return hasattr(x, "setup")


def _maybe_call_setup(module: Any) -> None:
    if (
        isinstance(module, Module)
        and has_setup(module)
        and not module.__dict__.get(_SETUP_FLAG, False)
    ):
        MODULE_CONTEXT.module_stack.append(ModuleStackEntry(module, in_compact=False))
        try:
            module.setup()
            module.__dict__[_SETUP_FLAG] = True
        finally:
            MODULE_CONTEXT.module_stack.pop()


def _bind(parent: Module, node: Any) -> None:
    for _, value in reversed(list(api.iter_graph(node))):
        if isinstance(value, Module):
            if value.__dict__.get("scope") is None:
                value.scope = parent.scope.copy()  # type: ignore[union-attr]
            _maybe_call_setup(value)


class ModuleMeta(type):
    """Metaclass of :class:`Module`: Linen's naming and parenting at construction.

    Inside a parent's ``setup`` or ``compact`` method, constructing a bridge
    Module attaches it to the parent, under ``name=`` or, in ``compact``, an
    automatic name (``Dense_0``); ``parent=None`` opts out (outside
    ``compact``). The instance starts without a :class:`Scope`.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        ctx = MODULE_CONTEXT.module_stack[-1]
        parent = name = None
        if ctx is not None:
            if "parent" in kwargs:
                parent = kwargs.pop("parent")
                if ctx.in_compact and parent is not None:
                    raise ValueError(
                        f"'parent' can only be set to None, got {type(parent).__name__}"
                    )
            else:
                parent = ctx.module
            if "name" in kwargs:
                name = kwargs["name"]
                if "name" not in {f.name for f in dataclasses.fields(cls)}:
                    kwargs.pop("name")
                if not isinstance(name, str):
                    raise ValueError(
                        f"'name' must be a 'str', got {type(name).__name__}"
                    )
            elif ctx.in_compact:
                name = _auto_name(ctx, cls)
        module = super().__call__(*args, **kwargs)
        d = module.__dict__
        d.setdefault("scope", None)
        d.setdefault("attr_priorities", {})
        d.setdefault(INIT_FLAG, False)
        if parent is not None and name is not None:
            setattr(parent, name, module)
            parent.set_attr_priority(name, AttrPriority.INIT_PARENT)
        return module


class ModuleBase:
    """The attributes every bridge Module has besides its dataclass fields.

    Attributes:
        scope: The :class:`Scope` (Rngs, mutable collections) while inside
            ``init``/``apply``, else None.
        attr_priorities: ``{attribute: AttrPriority}``, the order in which
            ``ramie.split`` and ``variables`` list attributes.
    """

    scope: Scope | None
    attr_priorities: dict[str, AttrPriority]


class Module(_RamieModule, ModuleBase, pytree=False, metaclass=ModuleMeta):
    """A ramie Module with Linen's API: dataclass fields, ``setup``/``compact``,
    ``param``/``variable``/``make_rng``, ``init``/``apply``.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> class Dense(ramie.bridge.Module):
        ...     features: int
        ...     @ramie.bridge.compact
        ...     def __call__(self, x):
        ...         w = self.param("w", ramie.initializers.lecun_normal(),
        ...                        (x.shape[-1], self.features))
        ...         return x @ w
        >>> variables = Dense(3).init(jax.random.key(0), jnp.ones((1, 2)))
        >>> variables["params"]["w"].shape
        (2, 3)
        >>> Dense(3).apply(variables, jnp.ones((1, 2))).shape
        (1, 3)
    """

    _uses_init_flag = True
    # Its Variables are created on first use, so ``ramie.update`` may bring
    # entries it has not created yet (restoring before the first call): they
    # are added instead of being refused as unknown paths.
    _graph_update_adds = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        kwargs.setdefault("pytree", False)
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(repr=False, eq=False)(cls)

    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        if d.get("scope") is not None and name != "scope":
            pending = d.get(PENDING + name)
            if pending is not None:
                del self.__dict__[PENDING + name]
                _install(value, pending)
            flag = d.get(INIT_FLAG, False)
            for leaf in jax.tree.leaves(value, is_leaf=_is_node):
                if getattr(type(leaf), "_uses_init_flag", False):
                    leaf.__dict__[INIT_FLAG] = flag
                if isinstance(leaf, _RamieModule):
                    _bind(self, leaf)
        super().__setattr__(name, value)

    def _graph_children(self) -> list[tuple[Any, Any]]:
        prio = self.__dict__.get("attr_priorities") or {}
        return sorted(
            self.__dict__.items(),
            key=lambda kv: (prio.get(kv[0], AttrPriority.DEFAULT), str(kv[0])),
        )

    def set_attr_priority(self, name: str, value: AttrPriority) -> None:
        """Visit attribute ``name`` with priority ``value`` (see AttrPriority)."""
        self.attr_priorities[name] = value

    def is_initializing(self) -> bool:
        """True inside ``init``/``init_with_output``."""
        return bool(self.__dict__.get(INIT_FLAG, False))

    def _scope(self, api_name: str) -> Scope:
        scope = self.__dict__.get("scope")
        if scope is None:
            raise BridgeError(
                f"{type(self).__name__}.{api_name}(): the module is not bound; "
                "parameters must be initialized in `setup()` or in a method wrapped "
                "in `@compact`, and used through init/apply:\n"
                "      variables = model.init(jax.random.key(0), x)\n"
                "      y = model.apply(variables, x)"
            )
        return scope

    def make_rng(self, name: str = "default") -> jax.Array:
        """A fresh key from the stream ``name`` (falling back to ``default``)."""
        return self._scope("make_rng").rngs[name]()

    def param(
        self,
        name: str,
        init_fn: Callable[..., A],
        *init_args: Any,
        unbox: bool = True,
        **init_kwargs: Any,
    ) -> Param[A]:
        """The Param ``name``: loaded by ``apply``, or made by ``init_fn(key, ...)``."""
        self._scope("param")
        existing = self.__dict__.get(name)
        if isinstance(existing, Variable):
            if not isinstance(existing, Param):
                raise BridgeError(
                    f"{type(self).__name__}.param({name!r}): expected '{name}' to be "
                    f"a Param, got {type(existing).__name__}"
                )
            return existing
        var = Param(init_fn(self.make_rng("params"), *init_args, **init_kwargs))
        setattr(self, name, var)
        return var

    def variable(
        self,
        col: str,
        name: str,
        init_fn: Callable[..., A] | None = None,
        *init_args: Any,
        unbox: bool = True,
        **init_kwargs: Any,
    ) -> Variable[A]:
        """The Variable ``name`` of collection ``col`` (typed by the collection)."""
        var_type = variable_type_from_name(col, allow_register=True)
        self._scope("variable")
        existing = self.__dict__.get(name)
        if isinstance(existing, Variable):
            return existing
        if init_fn is None:
            raise ValueError("Expected 'init_fn' to be a callable, got None")
        var = var_type(init_fn(*init_args, **init_kwargs))
        setattr(self, name, var)
        return var

    # ------------------------------------------------------ Linen's view
    def _get_variables(self) -> dict[str, dict]:
        flat = []
        for path, var in api.iter_graph(self):
            if isinstance(var, Variable) and not isinstance(var, RngState):
                path = tuple(path)
                if isinstance(path[0], str) and path[0].startswith(PENDING):
                    path = (path[0][len(PENDING) :], *path[1:])
                flat.append((path, var))
        return bv.nnx_attrs_to_linen_vars(flat)

    @property
    def variables(self) -> Any:
        """The module's state as Linen variables (a ``FrozenDict`` with Flax)."""
        try:
            from flax.core import FrozenDict
        except ImportError:  # bridge.Module itself does not need Flax
            return types.MappingProxyType(self._get_variables())
        return FrozenDict(self._get_variables())

    def apply(
        self,
        variables: Mapping[str, Mapping],
        *args: Any,
        rngs: Any = None,
        method: Callable[..., Any] | str = "__call__",
        mutable: Any = False,
        _initialize: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Run ``method`` on a copy of the module holding ``variables`` (as Linen).

        Returns the output, or ``(output, variables)`` when ``mutable`` is not
        False. The module itself is not changed.
        """
        module = api.clone(self)
        _install(module, bv.linen_vars_to_nnx_attrs(variables))
        if rngs is None:
            rngs = Rngs()
        elif isinstance(rngs, (int, jax.Array)):
            rngs = Rngs(rngs)
        elif isinstance(rngs, Mapping):
            rngs = Rngs(**rngs)
        fn = _unbound(module, method)
        modules = [m for _, m in api.iter_graph(module) if isinstance(m, Pytree)]
        for m in modules:
            if getattr(type(m), "_uses_init_flag", False):
                m.__dict__[INIT_FLAG] = _initialize
        for m in modules:
            if isinstance(m, Module):
                m.scope = Scope(rngs, mutable)
                _maybe_call_setup(m)
        MODULE_CONTEXT.module_stack.append(ModuleStackEntry(module, in_compact=False))
        try:
            out = fn(module, *args, **kwargs)
        finally:
            MODULE_CONTEXT.module_stack.pop()
            for _, m in list(api.iter_graph(module)):
                if getattr(type(m), "_uses_init_flag", False):
                    m.__dict__[INIT_FLAG] = False
                if isinstance(m, Module):
                    m.__dict__.pop(_SETUP_FLAG, None)
                    m.scope = None
        if mutable is False:
            return out
        return out, module._get_variables()

    def init(
        self,
        rngs: Any = None,
        *args: Any,
        method: Callable[..., Any] | str = "__call__",
        **kwargs: Any,
    ) -> dict[str, dict]:
        """Create the variables by running ``method`` once (as Linen's ``init``)."""
        _, variables = self.apply(
            {}, *args, _initialize=True, mutable=True, rngs=rngs, method=method,
            **kwargs,
        )  # fmt: skip
        return variables

    def init_with_output(
        self,
        rngs: Any = None,
        *args: Any,
        method: Callable[..., Any] | str = "__call__",
        mutable: Any = False,
        **kwargs: Any,
    ) -> tuple[Any, dict[str, dict]]:
        """``(output, variables)`` of a first run (as Linen's ``init_with_output``)."""
        return self.apply(
            {}, *args, rngs=rngs, method=method, mutable=True, _initialize=True,
            **kwargs,
        )  # fmt: skip


def _is_node(x: Any) -> bool:
    return isinstance(x, Pytree)


def _install(node: Any, tree: Mapping) -> None:
    """Put ``{name: Variable | subtree}`` into ``node``; unknown subtrees wait."""
    for key, value in tree.items():
        if isinstance(node, Mapping) or isinstance(node, list):
            cur = node.get(key) if isinstance(node, Mapping) else _item(node, key)
        else:
            cur = node.__dict__.get(key)
        if isinstance(value, Mapping):
            if cur is not None and not isinstance(cur, Variable):
                _install(cur, value)
            elif isinstance(node, Module):
                node.__dict__[PENDING + key] = ModuleState(value)
            elif isinstance(node, Pytree):
                setattr(node, key, dict(value))
            else:
                node[key] = dict(value)
        elif isinstance(cur, Variable):
            cur.copy_from(value)
        elif isinstance(node, Pytree):
            Pytree.__setattr__(node, key, value)
        else:
            node[key] = value


def _item(seq: list, key: Any) -> Any:
    try:
        return seq[int(key)]
    except (ValueError, IndexError):
        return None


def _unbound(module: Module, method: Callable[..., Any] | str) -> Callable[..., Any]:
    if isinstance(method, str):
        attr = getattr(module, method)
        if not callable(attr):
            raise TypeError(
                f"'{type(module).__name__}.{method}' must be a callable, got "
                f"{type(attr)}."
            )
        if isinstance(attr, _RamieModule):
            return lambda m, *a, **k: getattr(m, method)(*a, **k)
        method = attr
    if inspect.ismethod(method) and isinstance(method.__self__, Module):
        method = method.__func__
    if not callable(method) or len(inspect.signature(method).parameters) < 1:
        raise BridgeError(
            f"bridge.Module.apply(method={method!r}): expected a method of the "
            "module or a function taking the module first."
        )
    return method


def compact(f: F) -> F:
    """Mark a bridge Module method that creates submodules and params inline.

    Submodules constructed inside get Linen's automatic names
    (``ClassName_<i>``) and become attributes of the module.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> class Scale(ramie.bridge.Module):
        ...     @ramie.bridge.compact
        ...     def __call__(self, x):
        ...         return x * self.param("s", ramie.initializers.ones, (x.shape[-1],))
        >>> class Twice(ramie.bridge.Module):
        ...     @ramie.bridge.compact
        ...     def __call__(self, x):
        ...         return Scale()(Scale()(x))
        >>> sorted(Twice().init(jax.random.key(0), jnp.ones(2))["params"])
        ['Scale_0', 'Scale_1']
    """

    @functools.wraps(f)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(self, Module):
            raise ValueError(
                f"Expected 'self' to be a nnx.bridge.Module, got {type(self).__name__}"
            )
        MODULE_CONTEXT.module_stack.append(ModuleStackEntry(self, in_compact=True))
        try:
            return f(self, *args, **kwargs)
        finally:
            MODULE_CONTEXT.module_stack.pop()

    return wrapper  # type: ignore[return-value]
