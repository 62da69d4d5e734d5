"""Async saves that are never lost silently.

``save(..., async_save=True)`` copies the values to host memory, then writes
and commits on a background (non-daemon) thread. Before the next save, before
a restore or ``info`` of the same path, at :func:`wait_until_finished` and at
interpreter exit the pending write is waited for. A failed write is raised at
the next of these points; at interpreter exit it is printed to stderr and the
process exit status is set to 1.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import traceback

from ramie._src.checkpoint import writer


class AsyncSave:
    """Handle of one background save: ``wait()`` blocks until it is committed."""

    def __init__(self, snap: writer.Snapshot):
        self.path = snap.path
        self._snap: writer.Snapshot | None = snap
        self._error: BaseException | None = None
        self._reported = False
        self._thread = threading.Thread(
            target=self._run, name="ramie-checkpoint-save", daemon=False
        )

    def _run(self) -> None:
        try:
            assert self._snap is not None
            writer.write(self._snap)
        except BaseException as e:  # noqa: BLE001  # re-raised by wait()
            self._error = e
        finally:
            self._snap = None

    def done(self) -> bool:
        """True when the write has finished (successfully or not)."""
        return not self._thread.is_alive()

    def wait(self) -> None:
        """Block until the checkpoint is committed; raise the write's error."""
        self._thread.join()
        if self._error is not None and not self._reported:
            self._reported = True
            raise self._error

    def __repr__(self) -> str:
        state = "done" if self.done() else "writing"
        return f"AsyncSave({self.path!r}, {state})"


_PENDING: list[AsyncSave] = []
_LOCK = threading.Lock()


def start(snap: writer.Snapshot) -> AsyncSave:
    handle = AsyncSave(snap)
    with _LOCK:
        _PENDING.append(handle)
    handle._thread.start()
    return handle


def wait_until_finished() -> None:
    """Wait for every pending async save; raise the first error among them.

    Example:
        >>> import ramie
        >>> ramie.checkpoint.wait_until_finished()
    """
    with _LOCK:
        pending = list(_PENDING)
        _PENDING.clear()
    first = None
    for h in pending:
        try:
            h.wait()
        except BaseException as e:  # noqa: BLE001  # the first one is raised below
            first = first or e
    if first is not None:
        raise first


def wait_for(path: str) -> None:
    """Wait for pending async saves to ``path`` (before reading it)."""
    with _LOCK:
        mine = [h for h in _PENDING if h.path == path]
    for h in mine:
        h.wait()


def _at_exit() -> None:
    try:
        wait_until_finished()
    except BaseException:  # noqa: BLE001  # reported, and the exit status set
        sys.stderr.write(
            "ramie.checkpoint: an async save failed and the checkpoint was NOT "
            "written:\n"
        )
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)


atexit.register(_at_exit)
