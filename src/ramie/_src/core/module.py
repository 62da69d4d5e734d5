"""Module: the base class of layers and models.

A Module creates its Variables eagerly in ``__init__`` (shapes must be known;
there is no shape inference) and computes in ``__call__`` or any other method,
which is called directly: ``model.encode(x)``. Sub-modules are plain
attributes, and so are lists, dicts and tuples of them.

Behaviour flags such as Dropout's ``deterministic`` and BatchNorm's
``use_running_average`` are plain attributes too; ``train()``/``eval()`` set
them on every sub-module at once, and ``set_attributes`` generalises that.
``sow`` stores intermediate values as Variables on the module.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ramie._src.core.filters import to_predicate
from ramie._src.core.graph import api
from ramie._src.core.pytree import Pytree
from ramie._src.core.variables import (
    Intermediate,
    Perturbation,
    Variable,
    variable_type_from_name,
)
from ramie.errors import ModuleAttributeError

M = TypeVar("M", bound="Module")


def _append(prev: tuple, value: Any) -> tuple:
    return (*prev, value)


class Module(Pytree):
    """Base class for all neural-network layers and models.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> class MLP(ramie.Module):
        ...     def __init__(self, din, dmid, dout, *, rngs):
        ...         self.layers = [ramie.Linear(din, dmid, rngs=rngs),
        ...                        ramie.Linear(dmid, dout, rngs=rngs)]
        ...         self.dropout = ramie.Dropout(0.5, rngs=rngs)
        ...     def __call__(self, x):
        ...         x = jax.nn.relu(self.layers[0](x))
        ...         return self.layers[1](self.dropout(x))
        >>> model = MLP(4, 8, 2, rngs=ramie.Rngs(0))
        >>> model(jnp.ones((3, 4))).shape
        (3, 2)
        >>> model.eval()
        >>> model.dropout.deterministic
        True
    """

    # ------------------------------------------------------------ sow
    def sow(
        self,
        variable_type: type[Variable] | str,
        name: str,
        value: Any,
        reduce_fn: Callable[[Any, Any], Any] = _append,
        init_fn: Callable[[], Any] = tuple,
    ) -> bool:
        """Store an intermediate value as ``self.<name>``.

        The first call creates ``variable_type(reduce_fn(init_fn(), value))``;
        later calls fold new values in with ``reduce_fn`` (by default values
        are collected in a tuple). Read them with ``ramie.state(model,
        ramie.Intermediate)`` or remove them with ``ramie.pop``.

        Example:
            >>> import jax.numpy as jnp, ramie
            >>> class Block(ramie.Module):
            ...     def __call__(self, x):
            ...         self.sow(ramie.Intermediate, "hidden", x + 1)
            ...         return x
            >>> b = Block()
            >>> _ = b(jnp.zeros(2)); _ = b(jnp.ones(2))
            >>> len(b.hidden.value)
            2
        """
        if not isinstance(name, str):  # e.g. self.sow("hidden", x)
            raise _sow_type_error(self, variable_type, name)
        if isinstance(variable_type, str):
            variable_type = variable_type_from_name(variable_type, allow_register=True)
        if not (
            isinstance(variable_type, type) and issubclass(variable_type, Variable)
        ):
            raise _sow_type_error(self, variable_type, name)
        existing = self.__dict__.get(name)
        if existing is not None:
            if not isinstance(existing, variable_type):
                from ramie._src.core.links import path_of
                from ramie._src.core.paths import format_path

                where = format_path((*(path_of(self) or ()), name))
                raise ModuleAttributeError(
                    f"{type(self).__name__}.sow({variable_type.__name__}, {name!r}, "
                    f"...): {where} already holds a {type(existing).__name__}, not a "
                    f"{variable_type.__name__}; sow under another name, e.g.\n"
                    f"      self.sow({variable_type.__name__}, "
                    f"{name + '_' + variable_type.__name__.lower()!r}, value)"
                )
            existing.set_value(reduce_fn(existing._raw, value))
        else:
            setattr(self, name, variable_type(reduce_fn(init_fn(), value)))
        return True

    def perturb(
        self,
        name: str,
        value: Any,
        variable_type: type[Variable] | str = Perturbation,
    ) -> Any:
        """Add a zero Perturbation to ``value`` so ``grad`` can return dL/d(value).

        The first call creates ``self.<name>`` as zeros shaped like ``value``;
        differentiate w.r.t. ``Perturbation`` to read the intermediate gradient.
        """
        import jax.numpy as jnp

        if isinstance(variable_type, str):
            variable_type = variable_type_from_name(variable_type, allow_register=True)
        if name not in self.__dict__:
            setattr(self, name, variable_type(jnp.zeros_like(value)))
        return value + self.__dict__[name]._raw

    # ----------------------------------------------------- attributes
    def set_attributes(
        self,
        *filters: Any,
        raise_if_not_found: bool = True,
        graph: bool | None = None,
        **attributes: Any,
    ) -> None:
        """Set attributes on every sub-module that has them (in place).

        Args:
            *filters: Only modules matching these filters (by type or path)
                are changed; default all.
            raise_if_not_found: Raise if an attribute exists on no module.
            **attributes: Attribute names and values.

        Returns:
            None (as in Flax; the module is changed in place).

        Raises:
            ModuleAttributeError: an attribute was found on no matching module.

        Example:
            >>> import ramie
            >>> m = ramie.Sequential(ramie.Linear(2, 2, rngs=ramie.Rngs(0)),
            ...                      ramie.Dropout(0.1, rngs=ramie.Rngs(0)))
            >>> m.set_attributes(deterministic=True)
            >>> m.layers[1].deterministic
            True
        """
        preds = [to_predicate(f) for f in filters]
        found = set()
        writes = []  # checked before any write: an error changes nothing
        for path, module in api.iter_modules(self):
            if preds and not any(p(path, module) for p in preds):
                continue
            for name, value in attributes.items():
                if name in module.__dict__:
                    writes.append((module, name, value))
                    found.add(name)
        missing = set(attributes) - found
        if not (missing and raise_if_not_found):
            for module, name, value in writes:
                setattr(module, name, value)
            return
        if missing and raise_if_not_found:
            names = sorted(missing)
            known = sorted({k for _, m in api.iter_modules(self) for k in m.__dict__})
            hints = []
            for n in names:
                close = difflib.get_close_matches(n, known, n=1)
                if close:
                    hints.append(f"{n!r} (did you mean {close[0]!r}?)")
                else:
                    hints.append(repr(n))
            raise ModuleAttributeError(
                f"{type(self).__name__}.set_attributes(): no sub-module has the "
                f"attribute(s) {', '.join(hints)}.\n"
                "  Pass raise_if_not_found=False to ignore attributes that do not "
                "exist:\n"
                "      model.set_attributes(..., raise_if_not_found=False)"
            )

    def train(self, **attributes: Any) -> None:
        """Training mode: Dropout active, BatchNorm uses batch statistics.

        Sets ``deterministic=False`` and ``use_running_average=False`` (plus
        any ``attributes``) on every sub-module that has them. Returns None,
        as in Flax.

        Raises:
            ModuleAttributeError: one of ``attributes`` exists on no
                sub-module (nothing is changed).
        """
        self._set_mode(False, attributes, "train")

    def eval(self, **attributes: Any) -> None:
        """Evaluation mode: no Dropout, BatchNorm on running averages (returns None)."""
        self._set_mode(True, attributes, "eval")

    def _set_mode(self, on: bool, attributes: dict[str, Any], api: str) -> None:
        # The mode flags may be missing (a model without Dropout), but a
        # keyword the caller adds must exist somewhere (a typo is an error).
        if attributes:
            try:
                self.set_attributes(**attributes, raise_if_not_found=True)
            except ModuleAttributeError as e:
                msg = (
                    str(e)
                    .split("\nSee ")[0]
                    .replace(
                        f"{type(self).__name__}.set_attributes()",
                        f"{type(self).__name__}.{api}()",
                    )
                )
                raise ModuleAttributeError(msg) from None
        self.set_attributes(
            deterministic=on,
            use_running_average=on,
            **attributes,
            raise_if_not_found=False,
        )

    def set_view(self, **kwargs: Any) -> dict[str, Any]:
        """Set view options this module knows; return those it did not use."""
        rest = {}
        for k, v in kwargs.items():
            if k in self.__dict__:
                setattr(self, k, v)
            else:
                rest[k] = v
        return rest

    # ------------------------------------------------------ iteration
    def iter_modules(self) -> Iterator[tuple[tuple, Module]]:
        """Yield ``(path, module)`` for this module and all sub-modules."""
        return api.iter_modules(self)

    def iter_children(self) -> Iterator[tuple[Any, Module]]:
        """Yield ``(name, module)`` for the immediate sub-modules."""
        return api.iter_module_children(self)


# ---------------------------------------------------------------- helpers
def view(
    node: Any,
    /,
    *,
    only: Any = ...,
    raise_if_not_found: bool = True,
    graph: Any = None,
    **kwargs: Any,
) -> Any:
    """A copy of ``node`` sharing its Variables, with view options applied.

    A non-mutating ``eval()``.

    Each matching sub-module's ``set_view(**kwargs)`` is called; layers use the
    options they know (Dropout ``deterministic``, BatchNorm
    ``use_running_average``, MultiHeadAttention ``decode``/``batch_size``/
    ``max_length``...) and a plain Module sets attributes it already has.

    Raises:
        ModuleAttributeError: an option no sub-module used (unless
            ``raise_if_not_found=False``).

    Example:
        >>> import ramie
        >>> model = ramie.Dropout(0.5, rngs=ramie.Rngs(0))
        >>> ramie.view(model, deterministic=True).deterministic, model.deterministic
        (True, False)
    """
    new = api.clone(node, variables=False)
    pred = to_predicate(only)
    used: set[str] = set()
    for path, module in api.iter_modules(new):
        if not pred(path, module):
            continue
        rest = module.set_view(**kwargs) or {}
        used |= set(kwargs) - set(rest)
    missing = sorted(set(kwargs) - used)
    if missing and raise_if_not_found:
        raise ModuleAttributeError(
            f"ramie.view(): no sub-module of {type(node).__name__} uses the option(s) "
            f"{', '.join(map(repr, missing))}. Pass raise_if_not_found=False to ignore "
            "them; ramie.view_info(model) lists the options each layer has."
        )
    return new


def with_attributes(
    node: Any,
    /,
    *,
    only: Any = ...,
    raise_if_not_found: bool = True,
    graph: Any = None,
    **attributes: Any,
) -> Any:
    """A new node sharing its Variables, with attributes set on matching sub-modules."""
    new = api.clone(node, variables=False)
    if isinstance(new, Module):
        new.set_attributes(only, raise_if_not_found=raise_if_not_found, **attributes)
    return new


def view_info(node: Any, /, *, only: Any = ..., graph: Any = None) -> str:
    """The behaviour flags (``deterministic``, ...) of every sub-module, as text."""
    from ramie._src.core.paths import format_path

    flags = ("deterministic", "use_running_average", "decode")
    lines = []
    for path, m in api.iter_modules(node):
        opts = {f: m.__dict__[f] for f in flags if f in m.__dict__}
        if opts:
            lines.append(f"{format_path(path)} ({type(m).__name__}): {opts}")
    return "\n".join(lines)


_MODULE_API = frozenset(dir(Pytree)) | {
    "sow", "perturb", "set_attributes", "train", "eval", "set_view", "iter_modules",
    "iter_children",
}  # fmt: skip


def _recordable_methods(cls: type) -> list[tuple[type, str, Any]]:
    """(defining class, name, function) of the public methods and ``__call__``."""
    out = []
    seen: set[str] = set()
    for klass in cls.__mro__:
        if klass is Module or klass is Pytree or klass is object:
            break
        for name, fn in vars(klass).items():
            if (
                name in seen
                or not callable(fn)
                or isinstance(fn, (staticmethod, classmethod, type))
            ):
                continue
            if (name.startswith("_") and name != "__call__") or name in _MODULE_API:
                continue
            seen.add(name)
            out.append((klass, name, fn))
    return out


def capture(
    fn: Any, *var_types: Any, init: Any = None, method_outputs: Any = None
) -> Callable[..., Any]:
    """Wrap a Module, bound method or function to also return sown values.

    The wrapper returns ``(result, *states)``: for each of ``var_types`` (e.g.
    ``ramie.Intermediate``) a State of the values sown during the call, removed
    from the module(s) afterwards. With ``method_outputs=T`` (a Variable type)
    the output of every public method and ``__call__`` of every module is
    recorded too, under the method's name (``{'__call__': ..., 'lin':
    {'__call__': ...}}``), in the State of type ``T``.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> class M(ramie.Module):
        ...     def __call__(self, x):
        ...         self.sow(ramie.Intermediate, "y", x * 3)
        ...         return x
        >>> out, inter = ramie.capture(M(), ramie.Intermediate)(jnp.ones(2))
        >>> inter.y.value[0]
        Array([3., 3.], dtype=float32)
    """
    from ramie._src.core.state import State, merge_state

    if not var_types:
        var_types = (Intermediate,)
    if method_outputs is not None and method_outputs not in var_types:
        var_types = (*var_types, method_outputs)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        roots = []
        target = getattr(fn, "__self__", None)
        if isinstance(fn, Module):
            roots.append(fn)
        elif isinstance(target, Module):
            roots.append(target)
        roots.extend(a for a in args if isinstance(a, Module))
        for r in roots:  # start clean
            api.pop(r, *var_types)
        records: dict[int, list[tuple[str, Any]]] = {}
        patched: list[tuple[type, str, Any]] = []
        module_paths: dict[int, tuple] = {}
        if method_outputs is not None:
            classes: dict[type, None] = {}
            for r in roots:
                for path, m in api.iter_modules(r):
                    module_paths.setdefault(id(m), path)
                    classes[type(m)] = None
            done: set[tuple[type, str]] = set()
            for cls in classes:
                for klass, name, func in _recordable_methods(cls):
                    if (klass, name) in done:
                        continue
                    done.add((klass, name))
                    patched.append((klass, name, func))
                    setattr(klass, name, _recording(func, name, records, module_paths))
        try:
            result = fn(*args, **kwargs)
        finally:
            for klass, name, func in patched:
                setattr(klass, name, func)
        states = []
        for vt in var_types:
            merged: dict = {}
            for r in roots:
                s = api.pop(r, vt)
                merged.update(s)
            state = State(merged)
            if vt is method_outputs and records:
                from ramie._src.core.graph.flatten import to_state

                paths, leaves = [], []
                for mid, items in records.items():
                    by_name: dict[str, list] = {}
                    for name, out in items:
                        by_name.setdefault(name, []).append(out)
                    for name, outs in by_name.items():
                        paths.append((*module_paths[mid], name))
                        leaves.append(vt(tuple(outs)))
                state = merge_state(state, to_state(paths, leaves))
            states.append(state)
        return (result, *states)

    return wrapper


def _recording(func: Any, name: str, records: dict, module_paths: dict) -> Any:
    import functools

    @functools.wraps(func)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = func(self, *args, **kwargs)
        if id(self) in module_paths:
            records.setdefault(id(self), []).append((name, out))
        return out

    return method


def _sow_type_error(module: Any, variable_type: Any, name: Any) -> Exception:
    from ramie._src.core.links import path_of
    from ramie._src.core.paths import format_path
    from ramie.errors import VariableTypeError

    if not isinstance(name, str):  # the Variable type was left out
        name, variable_type = variable_type, name
    where = format_path((*(path_of(module) or ()), name))
    shown = getattr(variable_type, "__name__", None) or repr(variable_type)[:40]
    return VariableTypeError(
        f"{type(module).__name__}.sow({shown}, {name!r}, ...): the first argument "
        f"must be a Variable type such as ramie.Intermediate, got {shown} (a "
        f"{type(variable_type).__name__}); the value would go to {where}.\n"
        "  Fix: name the Variable type first, then the attribute name:\n"
        f"      self.sow(ramie.Intermediate, {name!r}, value)"
    )
