"""Writing a checkpoint directory: host snapshot, data files, manifest, commit.

A save happens in two phases. :func:`snapshot` copies every Variable value of
the model (and optimizer) to host memory, shard by shard: only shards with
``replica_id == 0`` that this process can address, so with several processes
each writes only its own part. :func:`write` then writes one safetensors file
per process (``data-00000.safetensors``), the manifest, and commits the
directory atomically (:mod:`.durable`). An async save runs :func:`write` on a
background thread after :func:`snapshot` returned.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import threading
from typing import Any

import jax
import numpy as np

from ramie._src.checkpoint import checksum as checksum_lib
from ramie._src.checkpoint import durable, entries, stformat
from ramie.errors import CheckpointError

FORMAT = "ramie.checkpoint"
FORMAT_VERSION = 2
"""2: one checksum per ``chunk_bytes`` chunk of every stored shard (``chunks``);
1: one checksum per stored shard (``checksum``). Both are read."""


@dataclasses.dataclass
class Snapshot:
    """Host copies of everything a save writes, ready for a background thread."""

    path: str
    records: list[dict]
    tensors: list[tuple[str, np.ndarray]]
    header: dict
    process_index: int
    process_count: int


def _index(index: tuple, shape: tuple) -> list[list[int]]:
    out = []
    for sl, dim in zip(index, shape):
        start, stop, _ = sl.indices(dim)
        out.append([start, stop])
    return out


def _host(arr: Any, copy: bool) -> np.ndarray:
    return np.array(arr, copy=True) if copy else np.asarray(arr)


def snapshot(
    path: str,
    model: Any,
    optimizer: Any,
    step: int | None,
    metadata: dict | None,
    *,
    copy: bool = False,
) -> Snapshot:
    """Host copies of every entry and the manifest records describing them.

    ``copy=True`` (async saves) copies even when NumPy could view the device
    buffer, so that donating or deleting the arrays later cannot change what
    is written.
    """
    pidx, pcount = jax.process_index(), jax.process_count()
    records: list[dict] = []
    tensors: list[tuple[str, np.ndarray]] = []
    fname = f"data-{pidx:05d}.safetensors"
    for entry in entries.collect(model, optimizer):
        var = entry.variable
        value = var.get_value()
        rec: dict[str, Any] = {
            "key": entry.key,
            "group": entry.group,
            "path": list(entry.path),
            "type": type(var).__name__,
        }
        if not entries.is_array_like(value):
            if not isinstance(value, entries.JSON_SCALARS):
                raise CheckpointError(
                    f"ramie.checkpoint.save(): cannot store "
                    f"{entries.display_path(entry.group, entry.path)} of type "
                    f"{type(value).__name__}; checkpoints hold arrays and plain "
                    "Python numbers, strings or None."
                )
            rec["value"] = value
            records.append(rec)
            continue
        if isinstance(value, jax.ShapeDtypeStruct):
            raise CheckpointError(
                "ramie.checkpoint.save(): "
                f"{entries.display_path(entry.group, entry.path)} is abstract "
                f"({value}); save a model with real values, not one from "
                "nnx.eval_shape."
            )
        is_key = entries.is_key_dtype(value.dtype)
        stored = jax.random.key_data(value) if is_key else value
        rec.update(
            dtype=str(value.dtype) if is_key else np.dtype(value.dtype).name,
            shape=list(value.shape),
            sharding=entries.describe_sharding(value),
            shards=[],
        )
        if is_key:
            rec["key_impl"] = entries.key_impl_name(value.dtype)
            rec["storage_shape"] = list(stored.shape)
        if stformat.st_dtype(stored.dtype) is None:
            raise CheckpointError(
                f"ramie.checkpoint.save(): "
                f"{entries.display_path(entry.group, entry.path)} has dtype "
                f"{stored.dtype}, which the checkpoint format cannot store. Cast it "
                "first, e.g. x.astype(jnp.float32)."
            )
        sharded = isinstance(stored, jax.Array) and len(stored.sharding.device_set) > 1
        if not sharded:
            if pidx == 0:
                host = _host(stored, copy)
                name = entry.key
                tensors.append((name, host))
                rec["shards"].append(
                    {
                        "file": fname,
                        "name": name,
                        "index": [[0, d] for d in host.shape],
                    }
                )
        else:
            for i, shard in enumerate(stored.addressable_shards):
                if shard.replica_id != 0:
                    continue
                host = _host(shard.data, copy)
                idx = _index(shard.index, stored.shape)
                name = f"{entry.key}@{i}:{pidx}"
                tensors.append((name, host))
                rec["shards"].append({"file": fname, "name": name, "index": idx})
        records.append(rec)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ramie_version": _ramie_version(),
        "jax_version": jax.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "step": step,
        "metadata": metadata or {},
        "checksum": checksum_lib.default_algorithm(),
        "chunk_bytes": checksum_lib.CHUNK_BYTES,
        "process_count": pcount,
    }
    try:
        json.dumps(header["metadata"])
    except TypeError as e:
        raise CheckpointError(
            f"ramie.checkpoint.save(): metadata must be JSON-serialisable ({e})."
        ) from None
    return Snapshot(path, records, tensors, header, pidx, pcount)


def _ramie_version() -> str:
    import ramie

    return ramie.__version__


def _write_json(path: str, obj: Any, fsync: bool = True) -> None:
    data = json.dumps(obj, indent=1).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        stformat._write_all(fd, memoryview(data))
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_files(paths: list[str]) -> None:
    """fsync several files (or directories) at once: the kernel can merge their
    journal commits, so this costs about one fsync rather than several."""
    errors: list[BaseException] = []

    def one(p: str) -> None:
        try:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException as e:  # re-raised below, on the calling thread
            errors.append(e)

    threads = []
    for p in paths[1:]:
        t = threading.Thread(target=one, args=(p,), daemon=True)
        try:
            t.start()
            threads.append(t)
        except RuntimeError:  # no new threads at interpreter shutdown
            one(p)
    one(paths[0])
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _sync(name: str) -> None:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def _shared_token() -> str:
    from jax.experimental import multihost_utils

    token = np.random.randint(0, 2**31 - 1, dtype=np.int64)
    token = multihost_utils.broadcast_one_to_all(np.asarray(token, np.int32))
    return format(int(token), "08x")


def write(snap: Snapshot) -> None:
    """Write the data files and manifest of ``snap`` and commit the directory."""
    path, pidx, multi = snap.path, snap.process_index, snap.process_count > 1
    parent = os.path.dirname(path) or "."
    if pidx == 0:
        os.makedirs(parent, exist_ok=True)
        durable.clean_stale(path)
    tmp = durable.tmp_path(path, _shared_token() if multi else None)
    if multi:
        _sync(f"ramie-ckpt-clean-{tmp}")
    if pidx == 0:
        os.mkdir(tmp)
    if multi:
        _sync(f"ramie-ckpt-mkdir-{tmp}")
    fname = f"data-{pidx:05d}.safetensors"
    algorithm = snap.header["checksum"]
    durable.fault_point("before_data")
    data_path = os.path.join(tmp, fname)
    # One process: the data file and the manifest are fsynced together below.
    where = stformat.write_file(
        data_path,
        snap.tensors,
        metadata={"format": FORMAT},
        algorithm=algorithm,
        chunk_bytes=snap.header["chunk_bytes"],
        fsync=multi,
    )
    durable.fault_point("after_data")
    shard_recs = []
    for rec in snap.records:
        for sh in rec.get("shards", ()):
            if sh["file"] == fname:
                sh.update(
                    offsets=where[sh["name"]]["offsets"],
                    chunks=where[sh["name"]]["chunks"],
                )
                shard_recs.append(sh)
    if multi:
        _write_json(os.path.join(tmp, f"shards-{pidx:05d}.json"), shard_recs)
        _sync(f"ramie-ckpt-written-{tmp}")
    if pidx == 0:
        if multi:
            _merge_shards(tmp, snap)
        manifest = dict(snap.header, entries=snap.records)
        manifest_path = os.path.join(tmp, durable.MANIFEST)
        _write_json(manifest_path, manifest, fsync=multi)
        if not multi:
            # every name in tmp exists now: the directory is synced alongside
            _fsync_files([data_path, manifest_path, tmp])
        durable.fault_point("after_manifest")
        durable.commit(tmp, path, tmp_synced=not multi)
    if multi:
        _sync(f"ramie-ckpt-committed-{tmp}")


def _merge_shards(tmp: str, snap: Snapshot) -> None:
    by_key = {r["key"]: r for r in snap.records}
    for i in range(1, snap.process_count):
        with open(os.path.join(tmp, f"shards-{i:05d}.json")) as f:
            for sh in json.load(f):
                key = sh["name"].rsplit("@", 1)[0]
                by_key[key]["shards"].append(sh)
