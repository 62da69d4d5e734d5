"""A global counter of structural changes to object graphs.

Every change that alters the *structure* of any graph (an attribute set to a
different object, a container of sub-modules mutated, Variable metadata
changed, ``train()``/``eval()`` flipping a flag) increments ``EPOCH.value``.
Value updates of Variables do not. Metadata changes of Variables increment
``EPOCH.meta``; any in-place change of a State's entries (``state[k] = v``,
``del``, ``update``, ``pop``, ...) increments ``EPOCH.states``, so a cache
holding States (an Optimizer's ``opt_state``) re-checks them only after some
State was changed. Caches that depend on graph structure, such
as the cached call path of ``ramie.jit``, compare the epoch they were built at
with the current one and revalidate only when it moved.
"""

from __future__ import annotations


class _Epoch:
    __slots__ = ("value", "meta", "states")

    def __init__(self) -> None:
        self.value = 0  # structural changes
        self.meta = 0  # Variable metadata changes
        self.states = 0  # in-place changes of State entries

    def bump(self) -> None:
        self.value += 1


EPOCH = _Epoch()
