"""Reading a checkpoint directory: manifest, checks, then one read per entry.

:func:`load_manifest` reads only ``manifest.json``. :func:`read_entry` builds
the array of one entry for a target shape, dtype and sharding:

* unsharded (or single-device) targets read the stored bytes with one
  ``readinto`` into a fresh buffer, verify its checksum and ``device_put`` it;
* sharded targets use ``jax.make_array_from_callback``: each addressable shard
  reads only the byte ranges it overlaps (through a read-only memory map), so
  no process ever holds the whole array.

Typed PRNG keys are read as their key data and wrapped again.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import jax
import numpy as np

from ramie._src.checkpoint import checksum as checksum_lib
from ramie._src.checkpoint import durable, stformat
from ramie.errors import CheckpointError


def load_manifest(path: str, api: str) -> tuple[str, dict]:
    """The directory a checkpoint lives in and its parsed manifest."""
    where = durable.resolve(path)
    mpath = os.path.join(where, durable.MANIFEST)
    try:
        with open(mpath, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, NotADirectoryError):
        if os.path.isdir(path):
            raise CheckpointError(
                f"{api}: {path} is not a complete checkpoint (no {durable.MANIFEST}); "
                "it was not written by ramie.checkpoint.save or the save did not "
                "finish. Restore an older checkpoint."
            ) from None
        if os.path.isfile(path):
            raise CheckpointError(
                f"{api}: {path} is a file, not a checkpoint directory. For a "
                "safetensors file use\n"
                "      ramie.checkpoint.load_safetensors(model, path)"
            ) from None
        raise CheckpointError(
            f"{api}: no checkpoint at {path}. Check the path (relative paths are "
            f"resolved against the working directory {os.getcwd()})."
        ) from None
    try:
        manifest = json.loads(raw)
    except ValueError as e:
        raise CheckpointError(f"{api}: {mpath} is corrupted ({e}).") from None
    if manifest.get("format") != "ramie.checkpoint":
        raise CheckpointError(f"{api}: {mpath} is not a ramie checkpoint manifest.")
    return where, manifest


def logical_struct(rec: dict) -> jax.ShapeDtypeStruct:
    """The shape and dtype an entry restores to (typed keys included)."""
    shape = tuple(rec["shape"])
    if "key_impl" in rec:
        dtype = _key_dtype(rec["key_impl"])
    else:
        dtype = np.dtype(_np_dtype_name(rec["dtype"]))
    return jax.ShapeDtypeStruct(shape, dtype)


@functools.cache
def _key_dtype(impl: str) -> Any:
    return jax.eval_shape(lambda: jax.random.key(0, impl=impl)).dtype


def _np_dtype_name(name: str) -> Any:
    if name in ("bfloat16", "float8_e4m3fn", "float8_e5m2", "int4", "uint4"):
        import ml_dtypes

        return getattr(ml_dtypes, name)
    return name


class Files:
    """Open data files of one checkpoint, closed together."""

    def __init__(self, root: str):
        self.root = root
        self._open: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        f = self._open.get(name)
        if f is None:
            path = os.path.join(self.root, name)
            try:
                f = open(path, "rb", buffering=0)
            except FileNotFoundError:
                raise CheckpointError(
                    f"{path}: data file is missing; the checkpoint is incomplete."
                ) from None
            self._open[name] = f
        return f

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()


_ALIGN = 64


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised C-contiguous array whose data is 64-byte aligned.

    ``jax.device_put`` on CPU adopts such a buffer without copying it, so a
    restore holds each array once (peak extra memory ~1x the data).
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    start = (-raw.ctypes.data) % _ALIGN
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def _storage(rec: dict) -> tuple[tuple[int, ...], np.dtype]:
    if "key_impl" in rec:
        return tuple(rec["storage_shape"]), np.dtype(np.uint32)
    return tuple(rec["shape"]), np.dtype(_np_dtype_name(rec["dtype"]))


def _read_full_shard(files: Files, rec: dict, sh: dict, algorithm: str) -> np.ndarray:
    shape, dtype = _storage(rec)
    shape = tuple(b - a for a, b in sh["index"])
    out = aligned_empty(shape, dtype)
    path = os.path.join(files.root, sh["file"])
    stformat.read_into(files.get(sh["file"]), path, rec["key"], sh["offsets"], out)
    expected = sh.get("checksum")
    if expected is not None:
        got = checksum_lib.function(algorithm)(
            memoryview(out.reshape(-1).view(np.uint8))
        )
        if got != expected:
            raise CheckpointError(
                f"{path}: entry {rec['key']} is corrupted: its {algorithm} checksum "
                f"is {got}, the manifest says {expected}. The file was damaged after "
                "it was written; restore an older checkpoint."
            )
    return out


def _read_region(files: Files, rec: dict, region: list[tuple[int, int]]) -> np.ndarray:
    """The part ``region`` of an entry's stored array, reading only what overlaps."""
    shape, dtype = _storage(rec)
    out = aligned_empty(tuple(b - a for a, b in region), dtype)
    covered = 0
    for sh in rec["shards"]:
        inter = [
            (max(a, sa), min(b, sb)) for (a, b), (sa, sb) in zip(region, sh["index"])
        ]
        if any(a >= b for a, b in inter) and out.size:
            continue
        sshape = tuple(sb - sa for sa, sb in sh["index"])
        path = os.path.join(files.root, sh["file"])
        begin, end = sh["offsets"]
        if os.path.getsize(path) < end:
            raise CheckpointError(
                f"{path}: file is truncated: entry {rec['key']} needs bytes "
                f"{begin}..{end}. Restore an older checkpoint."
            )
        mm = np.memmap(path, dtype=dtype, mode="r", offset=begin, shape=sshape)
        src = tuple(
            slice(a - sa, b - sa) for (a, b), (sa, _) in zip(inter, sh["index"])
        )
        dst = tuple(slice(a - ra, b - ra) for (a, b), (ra, _) in zip(inter, region))
        out[dst] = mm[src]
        covered += int(np.prod([b - a for a, b in inter]))
        del mm
    if covered < out.size:
        raise CheckpointError(
            f"{files.root}: entry {rec['key']} is incomplete: its shards cover "
            f"{covered} of {out.size} elements of the requested region."
        )
    return out


def _finish(host: np.ndarray, rec: dict, want: Any) -> np.ndarray:
    """Cast to the dtype the loading policy chose (``want.dtype``)."""
    if "key_impl" in rec:
        return host
    if np.dtype(host.dtype) != np.dtype(want.dtype):
        host = host.astype(want.dtype)
    return host


def _place(host: np.ndarray, rec: dict, sharding: Any) -> jax.Array:
    if "key_impl" in rec:
        arr = jax.random.wrap_key_data(host, impl=rec["key_impl"])
        return jax.device_put(arr, sharding) if sharding is not None else arr
    return jax.device_put(host, sharding)


def read_entry(
    files: Files, rec: dict, want: Any, sharding: Any, algorithm: str
) -> jax.Array:
    """The array of entry ``rec`` with ``want``'s dtype, placed by ``sharding``."""
    full = [[0, d] for d in _storage(rec)[0]]
    whole = [sh for sh in rec["shards"] if sh["index"] == full]
    distributed = (
        sharding is not None
        and "key_impl" not in rec
        and len(sharding.device_set) > 1
        and not sharding.is_fully_replicated
    )
    if not distributed:
        if whole:
            host = _read_full_shard(files, rec, whole[0], algorithm)
        else:
            host = _read_region(files, rec, [tuple(r) for r in full])
        return _place(_finish(host, rec, want), rec, sharding)
    shape = tuple(rec["shape"])

    def callback(index: tuple) -> np.ndarray:
        region = [tuple(sl.indices(d)[:2]) for sl, d in zip(index, shape)]
        return _finish(_read_region(files, rec, region), rec, want)

    return jax.make_array_from_callback(shape, sharding, callback)
