"""Flat, named views of a model's Variables, and the one loader they share.

``state_dict``, ``load_state_dict`` and the safetensors functions see a model as
a flat map ``name -> array``. A :class:`Slot` is one such name: the Variable it
refers to and, under a naming convention (``convention="torch"``), how the
array is laid out in the file (``Linear.kernel`` ``(in, out)`` is stored as
``weight`` ``(out, in)``). :func:`load` runs the shared strict check on the
whole source before reading any value, then reads, converts and assigns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ramie._src.checkpoint import checks
from ramie._src.checkpoint.checks import LoadReport
from ramie._src.core.paths import parse_key
from ramie._src.core.variables import Variable


def _identity(x: Any) -> Any:
    return x


@dataclasses.dataclass
class Slot:
    """One named array of a model as seen from a flat file or dict."""

    name: str
    variable: Variable
    to_ext: Callable[[Any], Any] = _identity
    from_ext: Callable[[Any], Any] = _identity
    ext_shape: Callable[[tuple], tuple] = _identity

    @property
    def parts(self) -> tuple[Hashable, ...]:
        return name_parts(self.name)


def name_parts(name: str) -> tuple[Hashable, ...]:
    """``"blocks.0.kernel"`` -> ``("blocks", 0, "kernel")`` (for messages)."""
    return tuple(parse_key(p) for p in name.split("."))


def dotted(path: tuple) -> str:
    """``("blocks", 0, "kernel")`` -> ``"blocks.0.kernel"``."""
    return ".".join(str(p) for p in path)


def _target_struct(slot: Slot) -> jax.ShapeDtypeStruct:
    value = slot.variable.get_value()
    return jax.ShapeDtypeStruct(slot.ext_shape(tuple(value.shape)), value.dtype)


@dataclasses.dataclass
class Source:
    """A value available in the source: its shape and dtype, and how to read it."""

    shape: tuple
    dtype: Any
    read: Callable[[], Any]


def load(
    slots: list[Slot],
    source: Mapping[str, Source],
    *,
    api: str,
    strict: bool,
    allow_cast: bool,
    ignore: Callable[[str], bool] = lambda name: False,
) -> LoadReport:
    """Check ``source`` against ``slots``, then assign every value that fits.

    Nothing is read or assigned before the check has passed (``strict``), and
    nothing is assigned before every read has succeeded. Source dtypes are
    canonicalised as JAX does (``float64`` files load into ``float32`` models
    when x64 is off), as for NumPy values everywhere in ramie.
    """
    by_name = {s.name: s for s in slots}
    missing = [s.parts for s in slots if s.name not in source]
    unexpected = [name_parts(n) for n in source if n not in by_name and not ignore(n)]
    present = [s for s in slots if s.name in source]
    pairs = []
    for s in present:
        src = source[s.name]
        dtype = src.dtype
        if not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            dtype = jax.dtypes.canonicalize_dtype(dtype)
        pairs.append(
            (s.parts, _target_struct(s), jax.ShapeDtypeStruct(src.shape, dtype))
        )
    wanted, report = checks.check(
        pairs,
        api=api,
        allow_cast=allow_cast,
        missing=missing,
        unexpected=unexpected,
        strict=strict,
    )
    updates = []
    for slot, want in zip(present, wanted):
        if want is checks.SKIPPED:
            continue
        value = slot.from_ext(source[slot.name].read())
        if value.dtype != want.dtype:
            value = value.astype(want.dtype)
        current = slot.variable.get_value()
        sharding = getattr(current, "sharding", None)
        if isinstance(sharding, jax.sharding.Sharding):
            value = jax.device_put(value, sharding)
        elif isinstance(value, np.ndarray):
            value = jnp.asarray(value)
        updates.append((slot.variable, value))
    for var, value in updates:
        var.set_value(value)
    return report
