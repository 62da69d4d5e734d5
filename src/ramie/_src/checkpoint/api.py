"""``save`` and ``restore``: a model (and optimizer) to a directory and back.

Two lines save and resume training::

    ramie.checkpoint.save("ckpt/step_100", model, optimizer=optimizer, step=100)
    ramie.checkpoint.restore("ckpt/step_100", model, optimizer=optimizer)

``restore`` fills a live model in place, or an abstract one made by
``nnx.eval_shape(lambda: Model(...))``. Every Variable is restored (parameters,
BatchNorm statistics, RNG keys and counts, optimizer moments and step), so
training continues bit-exactly. It is strict: before anything is read, every
missing, unexpected and mis-shaped entry is listed in one ``StateLoadError``
and nothing changes. The format is a directory of safetensors files and a JSON
manifest (see ``docs/guides/checkpointing.md``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, TypeVar

import jax

from ramie._src.checkpoint import async_save as async_lib
from ramie._src.checkpoint import bulk, checks, entries, reader, writer

M = TypeVar("M")


def save(
    path: str | os.PathLike,
    model: Any,
    *,
    optimizer: Any = None,
    step: int | None = None,
    metadata: dict | None = None,
    async_save: bool = False,
) -> async_lib.AsyncSave | None:
    """Save every Variable of ``model`` (and ``optimizer``) to the directory ``path``.

    The save is durable: it is written under a temporary name, fsynced and
    renamed into place, and an existing checkpoint at ``path`` is replaced only
    once the new one is complete. A kill at any moment leaves the previous
    checkpoint restorable.

    Args:
        path: directory to create or replace (relative paths are resolved now).
        model: a Module (or any graph of Modules and Variables).
        optimizer: an ``Optimizer`` whose state is saved alongside.
        step: training step recorded in the manifest (``info(path).step``).
        metadata: JSON-serialisable dict recorded in the manifest.
        async_save: return as soon as the values are copied to host memory and
            write on a background thread. The write is finished before the next
            save, at :func:`wait_until_finished`, or at interpreter exit; an
            error is raised there (never lost silently).

    Returns:
        None, or with ``async_save=True`` an :class:`AsyncSave` handle whose
        ``wait()`` blocks until the checkpoint is committed.

    Raises:
        CheckpointError: a value cannot be stored (abstract, or an exotic dtype).

    Example:
        >>> import tempfile, os, ramie
        >>> model = ramie.nn.Linear(2, 3, rngs=ramie.Rngs(0))
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
        >>> ramie.checkpoint.save(path, model, step=1)
        >>> ramie.checkpoint.info(path).step
        1
    """
    path = os.path.abspath(os.fspath(path))
    async_lib.wait_until_finished()
    snap = writer.snapshot(path, model, optimizer, step, metadata, copy=async_save)
    if async_save:
        return async_lib.start(snap)
    writer.write(snap)
    return None


def _target_sharding(var: Any, value: Any) -> Any:
    """Where a restored value goes: the target's own sharding, else the one
    its Variable's sharding metadata (``out_sharding`` + ``mesh`` or the
    active mesh) names, else None (the default device)."""
    sharding = getattr(value, "sharding", None)
    if isinstance(sharding, jax.sharding.Sharding):
        return sharding
    meta = var.get_metadata()
    if meta.get("out_sharding") is None:
        return None
    from ramie._src.spmd import sharding as spmd

    mesh = meta.get("mesh") or spmd._current_mesh()
    if mesh is None:
        return None
    return jax.sharding.NamedSharding(mesh, spmd.get_var_pspec(var))


def restore(
    path: str | os.PathLike,
    model: M,
    *,
    optimizer: Any = None,
    strict: bool = True,
    allow_cast: bool = False,
) -> Any:
    """Restore the checkpoint at ``path`` into ``model`` (and ``optimizer``) in place.

    ``model`` may be live, or abstract (from ``nnx.eval_shape``); abstract values
    that carry a sharding (``jax.ShapeDtypeStruct(..., sharding=NamedSharding)``)
    are restored shard by shard directly onto their devices. Live arrays keep
    their sharding.

    Args:
        path: a directory written by :func:`save`.
        model: the model to fill; it is returned for convenience.
        optimizer: an ``Optimizer`` (live or abstract) to fill as well. The
            checkpoint's optimizer entries are ignored when this is None.
        strict: when True (default) any missing, unexpected or mismatched entry
            raises before anything changes. When False, what fits is loaded.
        allow_cast: accept entries whose dtype differs and cast them.

    Returns:
        ``model``; with ``strict=False`` the pair ``(model, report)`` where
        ``report`` (:class:`LoadReport`) lists what was skipped.

    Raises:
        StateLoadError: (``strict=True``) listing every missing, unexpected,
            shape- and dtype-mismatched entry by path; nothing was changed.
        CheckpointError: the checkpoint is missing, truncated or corrupted (the
            file and entry are named); nothing was changed.

    Example:
        >>> import tempfile, os, ramie
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
        >>> ramie.checkpoint.save(path, ramie.nn.Linear(2, 3, rngs=ramie.Rngs(0)))
        >>> make = lambda: ramie.nn.Linear(2, 3, rngs=ramie.Rngs(1))
        >>> abstract = ramie.eval_shape(make)
        >>> ramie.checkpoint.restore(path, abstract).kernel.shape
        (2, 3)
    """
    api = "ramie.checkpoint.restore()"
    path = os.path.abspath(os.fspath(path))
    async_lib.wait_for(path)
    root, manifest = reader.load_manifest(path, api)
    groups = {"model"} | ({"optimizer"} if optimizer is not None else set())
    source = {r["key"]: r for r in manifest["entries"] if r["group"] in groups}
    targets = entries.collect(model, optimizer)
    pairs, plan, missing = [], [], []
    for entry in targets:
        rec = source.get(entry.key)
        if rec is None:
            missing.append(entry.full_path)
            continue
        value = entry.variable.get_value()
        found = rec["value"] if "value" in rec else reader.logical_struct(rec)
        pairs.append((entry.full_path, value, found))
        plan.append((entry, rec))
    target_keys = {e.key for e in targets}
    unexpected = [
        (r["group"], *r["path"]) if r["group"] != "model" else tuple(r["path"])
        for k, r in source.items()
        if k not in target_keys
    ]
    loaded, report = checks.check(
        pairs,
        api=api,
        allow_cast=allow_cast,
        missing=missing,
        unexpected=unexpected,
        strict=strict,
    )
    new_values, jobs, job_vars = [], [], []
    for (entry, rec), (_, target, _), want in zip(plan, pairs, loaded):
        if want is checks.SKIPPED:
            continue
        if "value" in rec:
            new_values.append((entry.variable, want))
            continue
        jobs.append((rec, want, _target_sharding(entry.variable, target)))
        job_vars.append(entry.variable)
    files = reader.Files(
        root, manifest.get("checksum", "crc32"), manifest.get("chunk_bytes")
    )
    try:
        arrays = bulk.read_entries(files, jobs)
    finally:
        files.close()
    new_values.extend(zip(job_vars, arrays))
    for var, arr in new_values:
        var.set_value(arr)
    return (model, report) if not strict else model


@dataclasses.dataclass(frozen=True)
class EntryInfo:
    """One entry of a checkpoint as recorded in its manifest."""

    key: str
    path: str
    type: str
    dtype: str | None
    shape: tuple[int, ...] | None
    sharding: dict | None
    nbytes: int


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`info` reads from a manifest (no arrays are loaded).

    Attributes:
        path: the checkpoint directory.
        step: the ``step`` given to ``save`` (or None).
        metadata: the ``metadata`` given to ``save``.
        format_version, ramie_version, jax_version, created: provenance.
        entries: one :class:`EntryInfo` per Variable.
    """

    path: str
    step: int | None
    metadata: dict
    format_version: int
    ramie_version: str
    jax_version: str
    created: str
    checksum: str
    entries: tuple[EntryInfo, ...]

    @property
    def nbytes(self) -> int:
        """Total bytes of array data."""
        return sum(e.nbytes for e in self.entries)


def info(path: str | os.PathLike) -> CheckpointInfo:
    """Describe the checkpoint at ``path`` from its manifest, loading no arrays.

    Example:
        >>> import tempfile, os, ramie
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
        >>> ramie.checkpoint.save(path, ramie.nn.Linear(2, 3, rngs=ramie.Rngs(0)))
        >>> info = ramie.checkpoint.info(path)
        >>> [(e.path, e.type, e.dtype, e.shape) for e in info.entries]
        [('bias', 'Param', 'float32', (3,)), ('kernel', 'Param', 'float32', (2, 3))]
    """
    path = os.path.abspath(os.fspath(path))
    async_lib.wait_for(path)
    root, m = reader.load_manifest(path, "ramie.checkpoint.info()")
    out = []
    for r in m["entries"]:
        nbytes = 0
        for sh in r.get("shards", ()):
            nbytes += sh["offsets"][1] - sh["offsets"][0] if "offsets" in sh else 0
        out.append(
            EntryInfo(
                key=r["key"],
                path=entries.display_path(r["group"], tuple(r["path"])),
                type=r["type"],
                dtype=r.get("dtype"),
                shape=tuple(r["shape"]) if "shape" in r else None,
                sharding=r.get("sharding"),
                nbytes=nbytes,
            )
        )
    return CheckpointInfo(
        path=root,
        step=m.get("step"),
        metadata=m.get("metadata", {}),
        format_version=m["format_version"],
        ramie_version=m["ramie_version"],
        jax_version=m["jax_version"],
        created=m["created"],
        checksum=m.get("checksum", "crc32"),
        entries=tuple(out),
    )
