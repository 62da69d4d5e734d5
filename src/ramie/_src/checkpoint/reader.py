"""Reading a checkpoint directory: manifest, checks, then one read per entry.

:func:`load_manifest` reads only ``manifest.json``. :func:`read_entry` builds
the array of one entry for a target shape, dtype and sharding (``restore``
reads whole entries through :mod:`ramie._src.checkpoint.bulk`, which overlaps
verification with reading and places all arrays with one call):

* unsharded (or single-device) targets read the stored bytes with one
  ``readinto`` into a fresh buffer, verify its checksums and ``device_put`` it;
* sharded targets use ``jax.make_array_from_callback``: each addressable shard
  reads only the byte ranges it overlaps (through a read-only memory map), so
  no process ever holds the whole array.

Every read is verified, partial ones included. A format-2 checkpoint has one
checksum per ``chunk_bytes`` chunk of each stored shard; a partial read
verifies exactly the chunks its byte ranges touch (each chunk at most once per
restore, :class:`Files` remembers), so corruption anywhere in what a process
loads is detected without reading the rest. A format-1 checkpoint has one
checksum per stored shard, which a partial read verifies once, over the whole
shard.

Typed PRNG keys are read as their key data and wrapped again.
"""

from __future__ import annotations

import functools
import json
import os
import threading
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
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > MAX_FORMAT_VERSION:
        raise CheckpointError(
            f"{api}: {mpath} has format version {version!r}; this ramie reads "
            f"versions 1 to {MAX_FORMAT_VERSION}. Upgrade ramie: "
            "pip install -U ramie"
        )
    return where, manifest


MAX_FORMAT_VERSION = 2


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
    """Open data files of one checkpoint, closed together, and what was verified.

    Args:
        root: the checkpoint directory.
        algorithm: the manifest's checksum algorithm.
        chunk_bytes: the manifest's checksum chunk size (None: format 1).
    """

    def __init__(
        self, root: str, algorithm: str = "crc32", chunk_bytes: int | None = None
    ):
        self.root = root
        self.algorithm = algorithm
        self.chunk_bytes = chunk_bytes
        self._open: dict[str, Any] = {}
        self._verified: set[tuple[str, str, int]] = set()
        self._lock = threading.Lock()

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

    def verify(self, rec: dict, sh: dict, data: Any, chunks: Any = None) -> None:
        """Check stored shard ``sh`` of entry ``rec`` against the manifest.

        Args:
            data: the shard's bytes, or a read-only memory map of them; only
                the chunks verified are read from it.
            chunks: indices of the chunks to verify (all when None). Chunks
                already verified during this restore are skipped.

        Raises:
            CheckpointError: a chunk's checksum differs; the file, the entry
                and the byte range are named.
        """
        view = memoryview(data).cast("B")
        path = os.path.join(self.root, sh["file"])
        digests = sh.get("chunks")
        if digests is not None and self.chunk_bytes:
            expected = checksum_lib.split_digests(self.algorithm, digests)
            size = self.chunk_bytes
        elif sh.get("checksum") is not None:
            expected, size, chunks = [sh["checksum"]], max(len(view), 1), None
        else:
            return
        fn = checksum_lib.function(self.algorithm)
        for i in range(len(expected)) if chunks is None else chunks:
            key = (sh["file"], sh["name"], int(i))
            with self._lock:
                if key in self._verified:
                    continue
            begin = int(i) * size
            got = fn(view[begin : begin + size])
            if got != expected[i]:
                a = sh["offsets"][0] + begin
                b = min(a + size, sh["offsets"][1])
                where = (
                    f"bytes {a}..{b} (checksum chunk {i} of {len(expected)})"
                    if len(expected) > 1
                    else f"bytes {a}..{b}"
                )
                raise CheckpointError(
                    f"{path}: entry {rec['key']} is corrupted: its {self.algorithm} "
                    f"checksum over {where} is {got}, the manifest says "
                    f"{expected[i]}. The file was damaged after it was written; "
                    "restore an older checkpoint."
                )
            with self._lock:
                self._verified.add(key)


def touched_chunks(
    shape: tuple[int, ...],
    inter: list[tuple[int, int]],
    itemsize: int,
    chunk_bytes: int,
) -> np.ndarray:
    """Indices of the ``chunk_bytes`` chunks of a C-ordered array of ``shape``
    that the box ``inter`` (``[start, stop)`` per dimension) overlaps.

    The box is a set of contiguous runs of elements; the work is proportional
    to the number of runs and of chunks, never to the number of elements.

    Example:
        >>> touched_chunks((4, 8), [(1, 3), (0, 8)], 4, 32).tolist()
        [1, 2]
        >>> touched_chunks((4, 8), [(0, 4), (2, 3)], 4, 64).tolist()
        [0, 1]
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * itemsize
    nchunks = -(-nbytes // chunk_bytes)
    if nbytes == 0 or any(b <= a for a, b in inter):
        return np.zeros(0, np.int64)
    if not shape:
        return np.zeros(1, np.int64)
    strides = np.ones(len(shape), np.int64)
    for d in range(len(shape) - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]
    # the dims after k are whole, so each run spans dim k's range contiguously
    k = len(shape) - 1
    while k > 0 and tuple(inter[k]) == (0, shape[k]):
        k -= 1
    run = (inter[k][1] - inter[k][0]) * int(strides[k])
    starts = np.asarray(inter[k][0] * strides[k], np.int64)
    for d in range(k - 1, -1, -1):
        idx = np.arange(inter[d][0], inter[d][1], dtype=np.int64) * strides[d]
        starts = (idx[:, None] + starts.reshape(1, -1)).reshape(-1)
    starts = starts.reshape(-1) * itemsize
    first = starts // chunk_bytes
    last = (starts + run * itemsize - 1) // chunk_bytes
    marks = np.zeros(nchunks + 1, np.int64)
    np.add.at(marks, first, 1)
    np.add.at(marks, last + 1, -1)
    return np.flatnonzero(np.cumsum(marks[:-1]) > 0)


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


def _read_full_shard(files: Files, rec: dict, sh: dict) -> np.ndarray:
    shape, dtype = _storage(rec)
    shape = tuple(b - a for a, b in sh["index"])
    out = aligned_empty(shape, dtype)
    path = os.path.join(files.root, sh["file"])
    stformat.read_into(files.get(sh["file"]), path, rec["key"], sh["offsets"], out)
    files.verify(rec, sh, out.reshape(-1).view(np.uint8))
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
        if end == begin:  # an empty shard: nothing to read or verify
            continue
        raw = np.memmap(path, np.uint8, mode="r", offset=begin, shape=end - begin)
        local = [(a - sa, b - sa) for (a, b), (sa, _) in zip(inter, sh["index"])]
        if files.chunk_bytes and sh.get("chunks") is not None:
            chunks = touched_chunks(sshape, local, dtype.itemsize, files.chunk_bytes)
            files.verify(rec, sh, raw, chunks)
        elif out.size:
            files.verify(rec, sh, raw)
        mm = raw.view(dtype).reshape(sshape)
        src = tuple(slice(a, b) for a, b in local)
        dst = tuple(slice(a - ra, b - ra) for (a, b), (ra, _) in zip(inter, region))
        out[dst] = mm[src]
        covered += int(np.prod([b - a for a, b in inter]))
        del mm, raw
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


def read_entry(files: Files, rec: dict, want: Any, sharding: Any) -> jax.Array:
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
            host = _read_full_shard(files, rec, whole[0])
        else:
            host = _read_region(files, rec, [tuple(r) for r in full])
        return _place(_finish(host, rec, want), rec, sharding)
    shape = tuple(rec["shape"])

    def callback(index: tuple) -> np.ndarray:
        region = [tuple(sl.indices(d)[:2]) for sl, d in zip(index, shape)]
        return _finish(_read_region(files, rec, region), rec, want)

    return jax.make_array_from_callback(shape, sharding, callback)
