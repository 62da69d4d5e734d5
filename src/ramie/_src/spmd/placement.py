"""Placing Variable values on a mesh from their ``out_sharding`` annotation.

An annotation may be a tuple of mesh axis names or logical names (mapped by
:func:`ramie.logical_axis_rules` and the Variable's own ``sharding_rules``), a
``PartitionSpec``, a ``NamedSharding`` or a ``jax.experimental.layout.Format``.
It resolves against the Variable's ``mesh`` metadata, the mesh of a
``NamedSharding`` annotation, or the mesh made current by ``jax.set_mesh``.

Values are placed the way JAX places them:

- eagerly, with ``jax.device_put`` (or a compiled initializer whose
  ``out_shardings`` is the target, see :func:`sharded_initialize`, so no
  device ever holds the full array);
- under a trace (``ramie.jit``/``jax.jit`` of a model constructor), with
  ``jax.lax.with_sharding_constraint`` on an Auto mesh and
  ``jax.sharding.reshard`` on an Explicit one, so the compiled constructor
  produces sharded outputs.

Bad annotations raise :class:`ramie.errors.ShardingError` naming the Variable,
its shape, the annotation and the mesh.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from ramie.errors import ShardingError, UnevenShardingWarning


def _format_type() -> Any:
    try:
        from jax.experimental.layout import Format
    except ImportError:  # pragma: no cover - older jax
        return None
    return Format


def current_mesh() -> Any:
    """The mesh set by ``jax.set_mesh`` (concrete if there is one), or None."""
    try:
        mesh = jax.sharding.get_mesh()
        if mesh is not None and not mesh.empty:
            return mesh
    except Exception:  # pragma: no cover - no concrete mesh API
        pass
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is not None and not mesh.empty:
        return mesh
    return None


def logical_rules(meta: Mapping[str, Any]) -> dict[Any, Any]:
    """Context rules combined with the Variable's own ``sharding_rules``."""
    from ramie._src.spmd.sharding import current_rules

    context = tuple(current_rules())
    local = tuple(meta.get("sharding_rules") or ())
    rules: dict[Any, Any] = {}
    for name, target in context:
        rules.setdefault(name, target)
    for name, target in local:
        if name in rules and rules[name] != target:
            raise ShardingError(
                f"Inconsistent logical axis annotations for {name!r}: "
                f"{rules[name]!r} (from ramie.logical_axis_rules) vs {target!r} "
                "(from the Variable's sharding_rules). Give each logical name one "
                "mesh axis."
            )
        rules[name] = target
    return rules


def _map_spec(spec: Any, rules: dict[Any, Any]) -> PartitionSpec:
    def one(a: Any) -> Any:
        if isinstance(a, str):
            return rules.get(a, a)
        if isinstance(a, tuple):
            return tuple(rules.get(x, x) if isinstance(x, str) else x for x in a)
        return a

    return PartitionSpec(*[one(a) for a in spec])


def resolve_spec(annotation: Any, meta: Mapping[str, Any]) -> Any:
    """The annotation with logical names mapped (PartitionSpec/NamedSharding/Format)."""
    rules = logical_rules(meta)
    if isinstance(annotation, NamedSharding):
        return NamedSharding(annotation.mesh, _map_spec(annotation.spec, rules))
    fmt = _format_type()
    if fmt is not None and isinstance(annotation, fmt):
        inner = resolve_spec(annotation.sharding, meta)
        return fmt(annotation.layout, inner)
    return _map_spec(annotation, rules)


def _mesh_of(annotation: Any) -> Any:
    if isinstance(annotation, NamedSharding):
        return annotation.mesh
    fmt = _format_type()
    if fmt is not None and isinstance(annotation, fmt):
        return _mesh_of(annotation.sharding)
    return None


def _describe(what: str, shape: tuple, spec: Any, mesh: Any) -> str:
    axes = None if mesh is None else dict(zip(mesh.axis_names, mesh.axis_sizes))
    return (
        f"{what} of shape {tuple(shape)} annotated out_sharding={spec!r} on mesh {axes}"
    )


def creator_name() -> str:
    """The modules being built by the caller, outermost first.

    ``"MLP.__init__ > Linear.__init__"`` for a Linear created in an MLP's
    constructor; empty outside any module.
    """
    from ramie._src.core.pytree import Pytree

    names: list[str] = []
    frame = sys._getframe(2)
    for _ in range(40):
        if frame is None:
            break
        obj = frame.f_locals.get("self")
        if isinstance(obj, Pytree):
            name = f"{type(obj).__name__}.{frame.f_code.co_name}"
            if not names or names[-1] != name:
                names.append(name)
        frame = frame.f_back
    return " > ".join(reversed(names))


_LIBRARY_DIRS = (
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    os.path.dirname(os.path.abspath(jax.__file__)),
)


def _user_stacklevel() -> int:
    """``warnings.warn``'s stacklevel, from its caller, of the first frame
    outside ramie and jax: the user's line that created the Variable."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    return level


def check_spec(
    spec: PartitionSpec,
    shape: tuple,
    mesh: Any,
    what: str,
    *,
    api: str,
    traced: str | None = None,
) -> bool:
    """Raise ShardingError if ``spec`` cannot shard ``shape`` on ``mesh``.

    ``traced`` (``"warn"`` or ``"quiet"``): the value is a tracer, where JAX
    pads a dimension its mesh axis does not divide (``with_sharding_constraint``
    on an Auto mesh). Such a dimension then warns (UnevenShardingWarning) or
    passes silently instead of raising, and the result is False.
    """
    even = True
    where = _describe(what, shape, spec, mesh)
    if len(spec) > len(shape):
        raise ShardingError(
            f"{api}: {where}: the annotation names {len(spec)} axes but the value "
            f"has {len(shape)}. Give one entry per array axis, e.g. "
            f"out_sharding={tuple([None] * len(shape))!r}."
        )
    sizes = dict(zip(mesh.axis_names, tuple(mesh.axis_sizes)))
    for dim, entry in zip(shape, spec):
        if entry is None or entry is PartitionSpec.UNCONSTRAINED:
            continue
        names = entry if isinstance(entry, tuple) else (entry,)
        for n in names:
            if n not in sizes:
                hint = (
                    "it looks like a logical name: map it with "
                    f"`with ramie.logical_axis_rules([({n!r}, 'model')]):`"
                    if isinstance(n, str)
                    else "use a mesh axis name"
                )
                raise ShardingError(
                    f"{api}: {where}: axis name {n!r} is not in the mesh (axes "
                    f"{list(mesh.axis_names)}); {hint}, or use one of the mesh's "
                    "axis names."
                )
        parts = 1
        for n in names:
            parts *= sizes[n]
        if dim % parts and traced and not is_explicit(mesh):
            even = False
            if traced == "quiet":
                continue
            warnings.warn(
                f"{api}: {where}: dimension {dim} is not divisible by {parts} (the "
                f"size of mesh axis {entry!r}); under a trace XLA pads it, and the "
                "array leaves the compiled function replicated. Shard only "
                f"dimensions divisible by {parts}, or leave this one unsharded "
                "with None.",
                UnevenShardingWarning,
                stacklevel=_user_stacklevel(),
            )
        elif dim % parts:
            raise ShardingError(
                f"{api}: {where}: dimension {dim} is not divisible by {parts} (the "
                f"size of mesh axis {entry!r}). Pick a size divisible by {parts}, or "
                "leave that axis unsharded with None."
            )
    return even


def target_sharding(
    meta: Mapping[str, Any],
    shape: tuple,
    what: str,
    *,
    api: str,
    traced: str | None = None,
) -> Any:
    """The NamedSharding (or Format) a value with ``meta`` should get, or None.

    None when there is no annotation, no mesh, or a mesh without devices
    (``jax.sharding.use_abstract_mesh``) where only tracing applies, and with
    ``traced="quiet"`` when a dimension is not divisible (see
    :func:`check_spec`).
    """
    annotation = meta.get("out_sharding")
    if annotation is None or (isinstance(annotation, tuple) and not annotation):
        return None
    resolved = resolve_spec(annotation, meta)
    mesh = _mesh_of(resolved) or meta.get("mesh") or current_mesh()
    if mesh is None:
        return None
    if isinstance(resolved, PartitionSpec):
        if not check_spec(resolved, shape, mesh, what, api=api, traced=traced):
            if traced == "quiet":
                return None
        if not isinstance(mesh, Mesh):
            return NamedSharding(mesh, resolved)
        resolved = NamedSharding(mesh, resolved)
    elif isinstance(resolved, NamedSharding):
        if not check_spec(
            resolved.spec, shape, resolved.mesh, what, api=api, traced=traced
        ):
            if traced == "quiet":
                return None
    types = set(mesh.axis_types)
    if len(types) > 1:
        raise ShardingError(
            f"{api}: {_describe(what, shape, annotation, mesh)}: the mesh mixes "
            f"axis types {tuple(str(t) for t in mesh.axis_types)}; annotated "
            "Variables need a mesh whose axes are all Explicit or all Auto, e.g. "
            "jax.make_mesh(shape, names, axis_types=(AxisType.Explicit,) * n)."
        )
    return resolved


def is_explicit(mesh: Any) -> bool:
    return bool(mesh.axis_types) and all(
        t == AxisType.Explicit for t in mesh.axis_types
    )


def place(value: Any, target: Any) -> Any:
    """Give ``value`` the sharding ``target``: eagerly or under a trace."""
    fmt = _format_type()
    if fmt is not None and isinstance(target, fmt):
        if isinstance(value, jax.core.Tracer):
            return jax.lax.with_sharding_constraint(value, target)
        return jax.device_put(value, target)
    mesh = target.mesh
    if isinstance(value, jax.core.Tracer):
        if is_explicit(mesh):
            if getattr(jax.typeof(value), "sharding", None) == target:
                return value
            return jax.sharding.reshard(value, target)
        return jax.lax.with_sharding_constraint(value, target)
    if isinstance(value, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=target)
    if not isinstance(mesh, Mesh):
        return value
    if getattr(value, "sharding", None) == target:
        return value
    return jax.device_put(value, target)


def shard_on_create(var: Any) -> None:
    """Place a new Variable's value from its annotation (``eager_sharding``)."""
    from ramie._src.spmd.sharding import using_eager_sharding

    meta = var._meta
    if not meta.get("eager_sharding", using_eager_sharding()):
        return
    raw = var._raw
    shape = getattr(raw, "shape", None)
    if shape is None:
        return
    where = creator_name()
    what = f"{type(var).__name__}" + (f" created in {where}" if where else "")
    target = target_sharding(
        meta,
        shape,
        what,
        api=f"{type(var).__name__}(...)",
        traced="warn" if isinstance(raw, jax.core.Tracer) else None,
    )
    if target is None:
        return
    placed = place(raw, target)
    from ramie._src.core.variable_modes import is_ref_value
    from ramie._src.core.variables import _get_raw, _set_raw

    if is_ref_value(_get_raw(var)) and not isinstance(placed, jax.core.Tracer):
        # a hijax/ref Variable: a new cell holding the placed value (writing
        # into the old cell would keep the old cell's placement)
        _set_raw(var, jax.new_ref(placed))
    else:
        var._raw = placed  # noqa: SLF001


# ----------------------------------------------------- sharded initializers
_compiled: dict[tuple, Any] = {}
_MAX = 512


def auto_mesh(mesh: Mesh) -> Mesh:
    return Mesh(
        mesh.devices,
        mesh.axis_names,
        axis_types=(AxisType.Auto,) * len(mesh.axis_names),
    )


def sharded_initialize(
    init: Any, key: Any, shape: tuple, dtype: Any, target: NamedSharding
) -> Any:
    """``init(key, shape, dtype)`` computed directly into ``target``'s shards.

    Eagerly the initializer is compiled once per (initializer, shape, dtype,
    sharding) with ``out_shardings=target``, so each device computes and holds
    only its own shard. On an Explicit mesh it runs inside
    ``jax.sharding.auto_axes`` (an Auto view of the mesh, where XLA partitions
    the random number generation), eagerly or under a trace; under a trace on
    an Auto mesh a sharding constraint does it.
    """
    mesh = target.mesh
    if isinstance(key, jax.core.Tracer) or not isinstance(mesh, Mesh):
        if is_explicit(mesh):
            return jax.sharding.auto_axes(
                lambda k: init(k, shape, dtype), out_sharding=target.spec
            )(key)
        value = init(key, shape, dtype)
        return jax.lax.with_sharding_constraint(value, target)
    entry = (init, tuple(shape), jax.numpy.dtype(dtype), target)
    try:
        fn = _compiled.get(entry)
    except TypeError:  # unhashable initializer
        fn, entry = None, None
    if fn is None:
        shape_t, dtype_t = tuple(shape), jax.numpy.dtype(dtype)
        if is_explicit(mesh):
            # random bits computed on an Auto view so XLA partitions them
            fn = jax.jit(
                lambda k: jax.sharding.auto_axes(
                    lambda k: init(k, shape_t, dtype_t), out_sharding=target.spec
                )(k)
            )
        else:
            fn = jax.jit(lambda k: init(k, shape_t, dtype_t), out_shardings=target)
        out = fn(key)  # raises for initializers that cannot be traced
        if entry is not None:
            if len(_compiled) >= _MAX:
                _compiled.pop(next(iter(_compiled)))
            _compiled[entry] = fn
        return out
    return fn(key)
