"""Durable directory commits: a checkpoint is either complete or invisible.

A save writes into ``.<name>.ramie-tmp-<token>`` next to the target, fsyncs
every file and the directory, and renames it into place. An existing
checkpoint at the target is first renamed to ``.<name>.ramie-old-<token>``
and removed only after the new one is in place. A kill at any moment
therefore leaves either the new checkpoint or the previous one under a name
:func:`resolve` finds; partial directories are never read and are removed by
the next save (:func:`clean_stale`). ``manifest.json`` is written last, so a
directory without one is incomplete.
"""

from __future__ import annotations

import os
import shutil
import signal
import uuid

from ramie._src.checkpoint.stformat import fsync_dir

MANIFEST = "manifest.json"
_TMP = ".ramie-tmp-"
_OLD = ".ramie-old-"


def fault_point(name: str) -> None:
    """Kill this process at the named point of a save (fault-injection tests)."""
    if os.environ.get("_RAMIE_CHECKPOINT_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _siblings(path: str, marker: str) -> list[str]:
    parent, name = os.path.split(path)
    prefix = f".{name}{marker}"
    try:
        names = os.listdir(parent or ".")
    except FileNotFoundError:
        return []
    return sorted(os.path.join(parent, n) for n in names if n.startswith(prefix))


def is_complete(path: str) -> bool:
    """True when ``path`` is a checkpoint directory whose manifest was written."""
    return os.path.isfile(os.path.join(path, MANIFEST))


def tmp_path(path: str, token: str | None = None) -> str:
    """A fresh temporary directory name next to ``path``."""
    parent, name = os.path.split(path)
    return os.path.join(parent, f".{name}{_TMP}{token or uuid.uuid4().hex[:12]}")


def resolve(path: str) -> str:
    """Where the checkpoint saved at ``path`` is: ``path``, or the previous one
    left aside by a save that was killed between its two renames."""
    if is_complete(path):
        return path
    for old in _siblings(path, _OLD):
        if is_complete(old):
            return old
    return path


def clean_stale(path: str) -> None:
    """Put back a checkpoint left aside by a killed save; remove partial ones."""
    if not os.path.exists(path):
        olds = [o for o in _siblings(path, _OLD) if is_complete(o)]
        if olds:
            os.rename(olds[-1], path)
    for stale in _siblings(path, _TMP) + _siblings(path, _OLD):
        shutil.rmtree(stale, ignore_errors=True)


def commit(tmp: str, path: str, *, tmp_synced: bool = False) -> None:
    """Atomically make the complete directory ``tmp`` visible as ``path``.

    ``tmp_synced``: the caller already fsynced ``tmp`` itself (after creating
    every file in it), so that is not repeated.
    """
    parent = os.path.dirname(path) or "."
    if not tmp_synced:
        fsync_dir(tmp)
    old = None
    if os.path.lexists(path):
        old = os.path.join(
            parent, f".{os.path.basename(path)}{_OLD}{uuid.uuid4().hex[:12]}"
        )
        os.rename(path, old)
        fault_point("after_old_rename")
    os.rename(tmp, path)
    fault_point("after_commit_rename")
    fsync_dir(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
