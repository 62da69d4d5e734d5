"""The entries of a checkpoint: every Variable of a model (and optimizer) by path.

A checkpoint stores one entry per Variable. Its key is ``group/dotted.path``
(``model/blocks.0.kernel``, ``optimizer/opt_state.0.mu.l.kernel``); its logical
dtype is the Variable's dtype, with typed PRNG keys (``key<fry>``) stored as
their ``uint32`` key data. Values that are not arrays (Python numbers, strings,
``None``) are stored in the manifest itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from typing import Any

import jax
import numpy as np

from ramie._src.core.graph import api as graph_api
from ramie._src.core.paths import format_path
from ramie._src.core.state import to_flat_state
from ramie._src.core.variables import Variable

PathParts = tuple[Hashable, ...]
JSON_SCALARS = (bool, int, float, str, type(None))


@dataclasses.dataclass
class Entry:
    """One Variable of the target (or source) of a checkpoint."""

    group: str
    path: PathParts
    variable: Variable

    @property
    def key(self) -> str:
        return entry_key(self.group, self.path)

    @property
    def full_path(self) -> PathParts:
        return (self.group, *self.path) if self.group != "model" else self.path


def entry_key(group: str, path: PathParts) -> str:
    """``model/blocks.0.kernel``: the stable string key of an entry."""
    return group + "/" + ".".join(str(p) for p in path)


def display_path(group: str, path: PathParts) -> str:
    """How an entry is printed in errors: ``blocks[0].kernel``, ``optimizer.step``."""
    return format_path(path if group == "model" else (group, *path))


def collect(model: Any, optimizer: Any = None) -> list[Entry]:
    """Every Variable of ``model`` and ``optimizer`` as entries, in path order."""
    out: list[Entry] = []
    for group, node in (("model", model), ("optimizer", optimizer)):
        if node is None:
            continue
        for path, var in to_flat_state(graph_api.state(node)):
            out.append(Entry(group, tuple(path), var))
    return out


def is_key_dtype(dtype: Any) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def is_array_like(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def abstract(value: Any) -> jax.ShapeDtypeStruct | None:
    """The shape/dtype (and sharding) of an array value, None for other values."""
    if not is_array_like(value):
        return None
    sharding = getattr(value, "sharding", None)
    if not isinstance(sharding, jax.sharding.Sharding):
        sharding = None
    return jax.ShapeDtypeStruct(tuple(value.shape), value.dtype, sharding=sharding)


def describe_sharding(value: Any) -> dict | None:
    """A JSON description of a value's sharding (for the manifest), or None."""
    sharding = getattr(value, "sharding", None)
    if isinstance(sharding, jax.sharding.NamedSharding):
        spec = [list(s) if isinstance(s, tuple) else s for s in sharding.spec]
        return {
            "kind": "named",
            "mesh": {str(k): int(v) for k, v in sharding.mesh.shape.items()},
            "spec": spec,
        }
    if isinstance(sharding, jax.sharding.SingleDeviceSharding):
        return None
    if isinstance(sharding, jax.sharding.Sharding):
        return {"kind": type(sharding).__name__, "repr": str(sharding)}
    return None


def key_impl_name(dtype: Any) -> str:
    """The PRNG implementation name of a typed-key dtype (``threefry2x32``)."""
    return str(dtype._impl.name)  # pyright: ignore[reportAttributeAccessIssue]  # jax has no public accessor on the dtype


def storage_view(value: Any) -> np.ndarray:
    """The host bytes to store for an array value (key data for typed keys)."""
    if is_key_dtype(value.dtype):
        value = jax.random.key_data(value)
    return np.asarray(value)
