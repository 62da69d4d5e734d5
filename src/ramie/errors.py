"""Exceptions and warnings that ramie raises on purpose.

Every error about a model names the API that was called, the full path of the
offending module or Variable (``decoder.blocks[3].mlp.bias``), what was
expected and what was found, and a fix written as code. Each class subclasses
the builtin exception users would naturally catch (``ValueError``,
``TypeError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

_DOCS = "docs/errors.md"


class RamieError(Exception):
    """Base class for every error ramie raises on purpose."""

    def __str__(self) -> str:
        msg = super().__str__()
        anchor = type(self).__name__.lower()
        return f"{msg}\nSee {_DOCS}#{anchor}"


class GraphStructureError(RamieError, ValueError):
    """A State does not fit the graph it is merged into or updated from.

    Usually the model definition changed after the state was split or saved, or
    not every State returned by ``split`` was passed back to ``merge``.
    """


class SharedReferenceError(GraphStructureError):
    """Tree mode (``graph=False``) or ``graph_updates=False`` met a shared reference.

    A Variable, module or ``jax.Ref`` is reachable by two paths (both are named),
    there is a cycle, or a transform returned an input Variable. Give each path
    its own object (``ramie.clone``) or use graph mode (``graph=True``).
    """


class PrefixModeError(GraphStructureError):
    """A ``StateAxes``/``StateSharding``/``DiffState`` prefix outside graph mode.

    These prefixes need ``graph=True, graph_updates=True``; in tree mode split
    the module into groups and give each group a plain prefix.
    """


class FilterError(RamieError, ValueError):
    """Filters given to ``split`` do not account for every Variable.

    ``split`` partitions the state: every Variable must match one of the
    filters. Add ``...`` as the last filter to collect the rest.
    """


class StateLoadError(RamieError, ValueError):
    """Values loaded into a State or model do not fit it.

    Raised by strict loaders (``replace_by_pure_dict``, ``update``, checkpoint
    restore) with every missing, unexpected and mis-shaped path listed. When it
    is raised nothing has been changed.

    Attributes:
        missing: paths the target has and the source lacks.
        unexpected: paths the source has and the target lacks.
        mismatched: ``(path, expected, found)`` for shape or dtype mismatches.
    """

    def __init__(
        self,
        message: str,
        missing: list | None = None,
        unexpected: list | None = None,
        mismatched: list | None = None,
    ):
        super().__init__(message)
        self.missing = list(missing or [])
        self.unexpected = list(unexpected or [])
        self.mismatched = list(mismatched or [])


class TraceContextError(RamieError, ValueError):
    """A Variable was changed inside a JAX transform it does not belong to.

    JAX transforms trace pure functions: a Variable created outside
    ``jax.jit``/``jax.grad``/``jax.vmap`` cannot be mutated inside one, because
    the new value would be a tracer that escapes the transform. Use the ramie
    transform (``ramie.jit``, ``ramie.grad``, ...) which carries the update out,
    or pass the state in and return it (``ramie.split``/``ramie.merge``).
    """


class TransformError(RamieError, ValueError):
    """A ramie transform was given a function or arguments it cannot lift.

    For example a bound method of a Module (the module would be captured as a
    constant), an axis specification that does not fit the arguments, or a
    scan carry that changes between iterations.
    """


class RngError(RamieError, ValueError):
    """An RNG stream was asked for that does not exist or cannot be used."""


class RngStreamNotFoundError(RngError, AttributeError):
    """``rngs.<name>`` for a stream that does not exist (and no ``default``).

    Also an ``AttributeError``, so ``hasattr(rngs, "params")`` is False and
    ``getattr(rngs, "params", None)`` is None.
    """


class ModuleAttributeError(RamieError, AttributeError):
    """A module attribute named in a call does not exist."""


class RamieInternalError(RamieError, RuntimeError):
    """An internal invariant of ramie does not hold: please report it."""

    def __init__(self, message: str):
        super().__init__(
            f"{message}\nThis is a bug in ramie; please report it with the code that "
            "triggered it at https://github.com/ramie-nn/ramie/issues"
        )


class RamieWarning(UserWarning):
    """Base class for warnings ramie emits."""


class LostStateWarning(RamieWarning):
    """A Variable was updated inside a JAX transform and the update was dropped.

    Emitted when a module passed through a raw ``jax.jit``/``jax.grad`` as a
    pytree has Variables changed inside, and the function does not return the
    module, so JAX discards the new values. Return the module, or use
    ``ramie.jit``/``ramie.grad``, which carry updates out automatically.
    """
