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

# The attribute ramie.capture installs on every module while it runs: a tuple
# of Variables (one per collected type), each holding a {name: value} dict.
CAPTURES = "__captures__"


def _sow_conflict(
    module: Any, api_name: str, variable_type: type, name: str, existing: Any
) -> ModuleAttributeError:
    from ramie._src.core.links import path_of
    from ramie._src.core.paths import format_path

    where = format_path((*(path_of(module) or ()), name))
    want = variable_type.__name__
    if isinstance(existing, Variable):
        found = (
            f"Expected {name!r} to be of type {want!r}, got "
            f"{type(existing).__name__!r}: {where} already holds a "
            f"{type(existing).__name__}, not a {want}"
        )
    else:
        kind = "method" if callable(existing) else type(existing).__name__
        found = (
            f"Expected {name!r} to be a Variable, got {kind}: {where} is a "
            f"{kind}, and sowing would hide it"
        )
    return ModuleAttributeError(
        f"{type(module).__name__}.{api_name}({want}, {name!r}, ...): {found}.\n"
        f"  Use another name, e.g.\n"
        f"      self.{api_name}({want}, {name + '_' + want.lower()!r}, value)\n"
        f"  or collect it with ramie.capture(model, {want})(...), which "
        "stores sown values apart from the module's attributes."
    )


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
        captures = self.__dict__.get(CAPTURES)
        if captures is not None:  # inside ramie.capture: write to its buffers
            for buf in captures:
                if type(buf) is variable_type:
                    values = dict(buf._raw)
                    prev = values[name] if name in values else init_fn()
                    values[name] = reduce_fn(prev, value)
                    buf.set_value(values)
                    return True
            return False  # a type this capture does not collect
        existing = self.__dict__.get(name)
        if existing is None and hasattr(type(self), name):
            existing = getattr(self, name)
        if existing is not None:
            if not isinstance(existing, variable_type):
                raise _sow_conflict(self, "sow", variable_type, name, existing)
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
        Inside :func:`capture` the perturbation lives in the capture's buffer
        instead (zeros, or the value given by ``capture(..., init=...)``).
        """
        import jax
        import jax.numpy as jnp

        if isinstance(variable_type, str):
            variable_type = variable_type_from_name(variable_type, allow_register=True)
        captures = self.__dict__.get(CAPTURES)
        if captures is not None:  # inside ramie.capture: use (or start) its buffer
            for buf in captures:
                if type(buf) is variable_type:
                    values = buf._raw
                    if name not in values:
                        values = {**values, name: jax.tree.map(jnp.zeros_like, value)}
                        buf.set_value(values)
                    return values[name] + value
            return value
        existing = self.__dict__.get(name)
        if existing is None and hasattr(type(self), name):
            existing = getattr(self, name)
        if existing is None:
            setattr(self, name, variable_type(jax.tree.map(jnp.zeros_like, value)))
        elif not isinstance(existing, variable_type):
            raise _sow_conflict(self, "perturb", variable_type, name, existing)
        return self.__dict__[name]._raw + value

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
                f"attribute(s) {', '.join(hints)} (Could not find at least one "
                f"instance of the following attributes: {names}).\n"
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
        if pred(path, module):
            used |= _apply_view(module, kwargs)
    missing = sorted(set(kwargs) - used)
    if missing and raise_if_not_found:
        raise ModuleAttributeError(
            f"ramie.view(): no sub-module of {type(node).__name__} uses the "
            f"option(s) {', '.join(map(repr, missing))} (Unused keys found in "
            f"nnx.view: {missing}).\n"
            "  ramie.view_info(model) lists the options each layer has; pass "
            "raise_if_not_found=False to ignore them:\n"
            "      ramie.view(model, ..., raise_if_not_found=False)"
        )
    return new


def _apply_view(module: Module, kwargs: dict[str, Any]) -> set[str]:
    """Call ``module.set_view`` with the options it takes; return those it used.

    A ``set_view`` with ``**kwargs`` gets every option and returns the ones it
    did not use (or None: all used); one without gets only its named options.
    """
    params = _set_view_params(type(module))
    if params is None:
        rest = module.set_view(**kwargs)
        return set(kwargs) - set(rest or ())
    mine = {k: v for k, v in kwargs.items() if k in params}
    module.set_view(**mine)
    return set(mine)


def _set_view_params(cls: type) -> frozenset[str] | None:
    """Named parameters of ``cls.set_view``; None when it takes ``**kwargs``."""
    import inspect

    sig = inspect.signature(cls.set_view)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return frozenset(
        n for n, p in sig.parameters.items() if p.kind in (p.KEYWORD_ONLY,
                                                            p.POSITIONAL_OR_KEYWORD)
    )  # fmt: skip


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
    """The options :func:`view` accepts, per layer type, with their docs.

    Lists each class in the graph (matching ``only``) that defines its own
    ``set_view``, sorted by name: its parameters with annotation and default,
    each followed by its description from the ``Args:`` section of the
    ``set_view`` docstring (or the signature, without a docstring).

    Example:
        >>> import ramie
        >>> model = ramie.Sequential(ramie.Linear(2, 2, rngs=ramie.Rngs(0)),
        ...                          ramie.Dropout(0.5, rngs=ramie.Rngs(0)))
        >>> print(ramie.view_info(model))
        Dropout:
          deterministic: bool | None = None
            If True, disables dropout masking.
    """
    import inspect

    pred = to_predicate(only)
    classes = {
        type(m)
        for path, m in api.iter_modules(node)
        if type(m).set_view is not Module.set_view and pred(path, m)
    }
    lines: list[str] = []
    for cls in sorted(classes, key=lambda c: c.__qualname__):
        lines.append(f"{cls.__qualname__}:")
        sig = inspect.signature(cls.set_view)
        doc = inspect.getdoc(cls.set_view)
        if not doc:
            lines.append(f"  set_view{sig}")
            continue
        described = _docstring_args(doc)
        for name, p in sig.parameters.items():
            if name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            ann = p.annotation
            ann = ann if isinstance(ann, str) else inspect.formatannotation(ann)
            default = "" if p.default is p.empty else f" = {p.default}"
            lines.append(f"  {name}: {ann}{default}")
            lines.extend(f"    {line}" for line in described.get(name, []))
    return "\n".join(lines)


def _docstring_args(doc: str) -> dict[str, list[str]]:
    """``{name: description lines}`` from a Google-style ``Args:`` section."""
    out: dict[str, list[str]] = {}
    lines = doc.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == "Args:") + 1
    except StopIteration:
        return out
    indent = None
    current: list[str] | None = None
    for line in lines[start:]:
        if not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        if width == 0:
            break  # the next section (Returns:, Raises:...)
        if indent is None:
            indent = width
        if width == indent and ":" in line:
            name, _, text = line.strip().partition(":")
            current = out.setdefault(name.strip().lstrip("*"), [])
            if text.strip():
                current.append(text.strip())
        elif current is not None:
            current.append(line.strip())
    return out


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
    ``ramie.Intermediate``; default ``Intermediate``) a State of the values
    sown during the call. While it runs, every module of the graph has a
    ``__captures__`` attribute: a tuple with one Variable per collected type,
    holding a ``{name: value}`` dict that ``sow``/``perturb`` write to (a
    ``sow`` of a type not collected is skipped and returns False). The module
    passed (or bound, or the Module arguments of a function) is the root.

    ``init`` (a State, e.g. the Perturbations of an earlier capture) fills the
    buffers first: ``perturb`` then returns ``value + init_value``, so
    ``grad`` with respect to ``init`` gives the gradient of the intermediate.
    Given ``init`` and no Variable types, the wrapper returns the result alone
    (a scalar loss stays a scalar for ``grad``).
    With ``method_outputs=T`` the output of every public method and
    ``__call__`` of every module is recorded too, under the method's name.
    Values assigned as Variables of the collected types (``self.h =
    ramie.Intermediate(h)``) are moved into the result as well.

    ``ramie.capture(T, ...)`` with Variable types only returns a decorator.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> class M(ramie.Module):
        ...     def __call__(self, x):
        ...         self.sow(ramie.Intermediate, "y", x * 3)
        ...         return x
        >>> out, inter = ramie.capture(M(), ramie.Intermediate)(jnp.ones(2))
        >>> inter.y.value[0]
        Array([3., 3.], dtype=float32)
        >>> @ramie.capture(ramie.Intermediate)
        ... def run(model, x):
        ...     return model(x)
        >>> list(run(M(), jnp.ones(2))[1])
        ['y']
    """
    if isinstance(fn, type) and issubclass(fn, Variable):
        types = (fn, *var_types)
        return lambda actual: capture(
            actual, *types, init=init, method_outputs=method_outputs
        )
    # With only ``init`` (perturbations for gradient extraction) and no types,
    # the wrapper returns the result alone, as in Flax.
    result_only = not var_types and init is not None and method_outputs is None
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
        roots.extend(a for a in args if isinstance(a, Module) and a not in roots)
        for r in roots:  # start clean: stale sown attributes are not reported
            api.pop(r, *var_types)
        module_paths: dict[int, tuple] = {}
        for r in roots:
            for path, m in api.iter_modules(r):
                module_paths.setdefault(id(m), path)
        installed = _install_captures(roots, var_types, init)
        records: dict[int, list[tuple[str, Any]]] = {}
        patched: list[tuple[type, str, Any]] = []
        if method_outputs is not None:
            classes = dict.fromkeys(type(m) for m in installed)
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
            captured = _remove_captures(installed, module_paths, var_types)
        if result_only:
            return result
        return (result, *_collect(roots, var_types, captured, records, method_outputs,
                                  module_paths))  # fmt: skip

    return wrapper


def _install_captures(roots: list, var_types: tuple, init: Any) -> list:
    """Set ``__captures__`` on every module under ``roots``; return the modules."""
    by_path: dict[tuple, list[Variable]] = {}
    if init is not None:
        from ramie._src.core.state import State

        def walk(node: Any, path: tuple) -> None:
            for k, v in node.items():
                if isinstance(v, Variable):
                    by_path.setdefault(path, []).append((k, v))  # type: ignore[arg-type]
                elif isinstance(v, (State, dict)):
                    walk(v, (*path, k))

        walk(init, ())
    installed: list = []
    seen: set[int] = set()
    for r in roots:
        for path, m in api.iter_modules(r):
            if id(m) in seen:
                continue
            seen.add(id(m))
            buffers: dict[type, dict] = {vt: {} for vt in var_types}
            for name, var in by_path.get(path, ()):  # type: ignore[misc]
                buffers.setdefault(type(var), {})[name] = var.get_value()
            setattr(m, CAPTURES, tuple(vt(d) for vt, d in buffers.items()))
            installed.append(m)
    return installed


def _remove_captures(installed: list, module_paths: dict, var_types: tuple) -> tuple:
    """Delete ``__captures__``; return ``(paths, leaves)`` of the collected types."""
    paths, leaves = [], []
    wanted = set(var_types)
    for m in installed:
        buffers = m.__dict__.get(CAPTURES, ())
        if CAPTURES in m.__dict__:
            delattr(m, CAPTURES)
        for buf in buffers:
            if type(buf) in wanted:
                for name, value in buf.get_value().items():
                    paths.append((*module_paths[id(m)], name))
                    leaves.append(type(buf)(value))
    return paths, leaves


def _collect(
    roots: list,
    var_types: tuple,
    captured: tuple,
    records: dict,
    method_outputs: Any,
    module_paths: dict,
) -> list:
    from ramie._src.core.graph.flatten import to_state
    from ramie._src.core.state import State, merge_state

    paths, leaves = captured
    for mid, items in records.items():
        by_name: dict[str, list] = {}
        for name, out in items:
            by_name.setdefault(name, []).append(out)
        for name, outs in by_name.items():
            paths.append((*module_paths[mid], name))
            leaves.append(method_outputs(tuple(outs)))
    states = []
    for vt in var_types:
        merged: dict = {}
        for r in roots:  # Variables assigned as attributes during the call
            merged.update(api.pop(r, vt))
        state = State(merged)
        mine = [(p, v) for p, v in zip(paths, leaves) if type(v) is vt]
        if mine:
            state = merge_state(state, to_state(*map(list, zip(*mine))))
        states.append(state)
    return states


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
