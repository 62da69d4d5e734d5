"""Restoring many entries at once: read, verify while reading, then place together.

:func:`read_entries` is what ``restore`` uses. Entries that are read whole (an
unsharded or single-device target, a stored shard covering the whole array)
take the fast path:

* each entry's bytes go with ``readinto`` straight into the 64-byte aligned
  buffer that ``jax.device_put`` then adopts (on CPU without a copy), so the
  data is held once;
* when the entries add up to :data:`OVERLAP_MIN_BYTES` or more, the bytes are
  read in :data:`SEGMENT_BYTES` pieces and every piece's checksum chunks are
  verified on one worker thread while the next piece is read (``readinto``
  and xxhash both release the GIL on large buffers); smaller restores verify
  inline, where a thread would cost more than it saves; a second thread
  asks the kernel to back the buffers still to be read with pages
  (``MADV_POPULATE_WRITE``, Linux) while the first ones are read, so the
  reads mostly copy instead of stopping at page faults;
* every verification has finished, and the first failure (in file order) has
  been raised, before any value is cast or placed;
* the verified buffers are placed with one batched ``jax.device_put`` call
  instead of one call per entry.

Each checksum chunk is hashed once per restore (:class:`reader.Files` keeps
the set). Sharded targets and entries stored as several shards go through
:func:`reader.read_entry`, which reads only what each device needs.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import jax
import numpy as np

from ramie._src.checkpoint import reader, stformat
from ramie.errors import CheckpointError

OVERLAP_MIN_BYTES = 16 << 20
"""Restores reading at least this many bytes verify on a worker thread."""

SEGMENT_BYTES = 4 << 20
"""Bytes per ``readinto`` when verification overlaps reading (rounded to whole
checksum chunks)."""


_MADV_POPULATE_WRITE = 23
_PAGE = 4096


@functools.cache
def _madvise() -> Any:
    """libc's ``madvise`` through ctypes, or None where that is unavailable."""
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (ImportError, OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def _prefault(buf: np.ndarray) -> None:
    """Ask the kernel to back ``buf`` with zeroed pages now (Linux 5.14+;
    elsewhere a no-op), so that the ``readinto`` filling it later only copies."""
    fn = _madvise()
    start = buf.ctypes.data
    skip = -start % _PAGE
    length = (buf.nbytes - skip) // _PAGE * _PAGE
    if fn is not None and length > 0:
        fn(start + skip, length, _MADV_POPULATE_WRITE)  # failure: faults later


def _whole_shard(rec: dict, sharding: Any) -> dict | None:
    """The stored shard holding all of ``rec`` when one device reads it whole."""
    if (
        sharding is not None
        and "key_impl" not in rec
        and len(sharding.device_set) > 1
        and not sharding.is_fully_replicated
    ):
        return None
    full = [[0, d] for d in reader._storage(rec)[0]]
    return next((sh for sh in rec["shards"] if sh["index"] == full), None)


def _check_sizes(files: reader.Files, items: list[tuple[dict, dict]]) -> None:
    """Raise the truncation error for the first entry whose bytes a file lacks."""
    sizes: dict[str, int] = {}
    for rec, sh in items:
        name = sh["file"]
        if name not in sizes:
            sizes[name] = os.fstat(files.get(name).fileno()).st_size
        begin, end = sh["offsets"]
        if sizes[name] < end:
            path = os.path.join(files.root, name)
            raise CheckpointError(
                f"{path}: file is truncated: entry {rec['key']} needs bytes "
                f"{begin}..{end} but the file ends at byte {sizes[name]}. The "
                "checkpoint is incomplete or was damaged after it was written; "
                "restore an older one."
            )


def _read_overlapped(
    files: reader.Files, items: list[tuple[dict, dict]]
) -> list[np.ndarray]:
    """Read ``items`` in order, verifying each piece on a worker thread."""
    hosts = []
    futures: list[Future] = []
    pool = ThreadPoolExecutor(1, thread_name_prefix="ramie-checkpoint-verify")
    pages = ThreadPoolExecutor(1, thread_name_prefix="ramie-checkpoint-prefault")
    try:
        buffers = [reader.aligned_empty(*reader._storage(rec)) for rec, _ in items]
        for buf in buffers[1:]:  # the first is faulted in by its own read
            pages.submit(_prefault, buf)
        for k, (rec, sh) in enumerate(items):
            out = buffers[k]
            flat = out.reshape(-1).view(np.uint8)
            f = files.get(sh["file"])
            path = os.path.join(files.root, sh["file"])
            begin, end = sh["offsets"]
            if len(flat) != end - begin:  # the size message of stformat.read_into
                stformat.read_into(f, path, rec["key"], sh["offsets"], out)
            cb = files.chunk_bytes if sh.get("chunks") is not None else None
            seg = max(SEGMENT_BYTES // cb, 1) * cb if cb else len(flat)
            for pos in range(0, len(flat), max(seg, 1)):
                stop = min(pos + seg, len(flat))
                piece = flat[pos:stop]
                stformat.read_into(
                    f, path, rec["key"], (begin + pos, begin + stop), piece
                )
                if cb:
                    chunks = range(pos // cb, -(-stop // cb))
                    futures.append(pool.submit(files.verify, rec, sh, flat, chunks))
            if not cb:
                futures.append(pool.submit(files.verify, rec, sh, flat))
            hosts.append(out)
        for fut in futures:
            fut.result()  # the first corrupted chunk, in file order, raises
    finally:
        pages.shutdown(wait=True, cancel_futures=True)
        pool.shutdown(wait=True, cancel_futures=True)
    return hosts


def read_entries(
    files: reader.Files, jobs: list[tuple[dict, Any, Any]]
) -> list[jax.Array]:
    """The arrays of ``jobs`` (``(record, want, sharding)`` each), all verified.

    Raises:
        CheckpointError: a file is missing, truncated or corrupted (file, entry
            and byte range named); no array has been placed then.
    """
    whole = [_whole_shard(rec, sharding) for rec, _, sharding in jobs]
    fast = [(rec, sh) for (rec, _, _), sh in zip(jobs, whole) if sh is not None]
    _check_sizes(files, fast)
    nbytes = sum(sh["offsets"][1] - sh["offsets"][0] for _, sh in fast)
    if nbytes >= OVERLAP_MIN_BYTES:
        hosts = iter(_read_overlapped(files, fast))
    else:
        hosts = iter([reader._read_full_shard(files, rec, sh) for rec, sh in fast])
    out: list[Any] = [None] * len(jobs)
    batch: dict[bool, list[int]] = {False: [], True: []}
    for i, ((rec, want, sharding), sh) in enumerate(zip(jobs, whole)):
        if sh is None:
            out[i] = reader.read_entry(files, rec, want, sharding)
            continue
        host = reader._finish(next(hosts), rec, want)
        if "key_impl" in rec:
            out[i] = reader._place(host, rec, sharding)
        else:
            out[i] = host
            batch[sharding is not None].append(i)
    if batch[False]:
        placed = jax.device_put([out[i] for i in batch[False]])
        for i, arr in zip(batch[False], placed):
            out[i] = arr
    if batch[True]:
        idx = batch[True]
        placed = jax.device_put([out[i] for i in idx], [jobs[i][2] for i in idx])
        for i, arr in zip(idx, placed):
            out[i] = arr
    return out
