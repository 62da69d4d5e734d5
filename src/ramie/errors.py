"""Exceptions and warnings that ramie raises on purpose.

Every error about a model names the API that was called, the full path of the
offending module or Variable (``decoder.blocks[3].mlp.bias``), what was
expected and what was found, and a fix written as code. Each class subclasses
the builtin exception users would naturally catch (``ValueError``,
``TypeError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import sys

_TWINS: dict[type, type] = {}


def flax_compatible(cls: type[Exception]) -> type[Exception]:
    """``cls``, or a subclass of it that is also Flax's error of the same name.

    Code migrated from Flax catches ``flax.errors.TraceContextError``; when Flax
    is already imported, ramie raises a class that is both. Flax is never
    imported for this.

    Example:
        >>> issubclass(flax_compatible(TraceContextError), TraceContextError)
        True
    """
    if cls in _TWINS:
        return _TWINS[cls]
    flax_errors = sys.modules.get("flax.errors")
    twin = getattr(flax_errors, cls.__name__, None)
    if not (isinstance(twin, type) and issubclass(twin, Exception)):
        return cls
    both = type(cls.__name__, (cls, twin), {"__module__": cls.__module__})
    both.__qualname__ = cls.__qualname__
    _TWINS[cls] = both
    return both


DOCS_ROOT = "https://github.com/ramie-nn/ramie/blob/main/docs"
"""Where the documentation lives; error messages link into it.

A full URL, so that the link works from an installed package too. Each page is
also in the source distribution under ``docs/`` with the same relative path.
"""


def docs_url(page: str, anchor: str = "") -> str:
    """The URL of a documentation page (and section) that errors link to.

    Example:
        >>> docs_url("errors.md", "stateloaderror")
        'https://github.com/ramie-nn/ramie/blob/main/docs/errors.md#stateloaderror'
    """
    return f"{DOCS_ROOT}/{page}" + (f"#{anchor}" if anchor else "")


class RamieError(Exception):
    """Base class for every error ramie raises on purpose.

    Its message ends with a link to the class's section of ``docs/errors.md``.
    """

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg}\nSee {docs_url('errors.md', type(self).__name__.lower())}"


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


class CheckpointError(RamieError, ValueError):
    """A checkpoint cannot be read or written.

    Raised when a checkpoint is missing, incomplete, truncated or corrupted (its
    checksum does not match the manifest), with the file and the entry named.
    Restore an older checkpoint; a damaged one cannot be repaired.
    """


class TraceContextError(RamieError, ValueError):
    """A Variable was changed inside a JAX transform it does not belong to.

    JAX transforms trace pure functions: a Variable created outside
    ``jax.jit``/``jax.grad``/``jax.vmap`` cannot be mutated inside one, because
    the new value would be a tracer that escapes the transform. Use the ramie
    transform (``ramie.jit``, ``ramie.grad``, ...) which carries the update out,
    or pass the state in and return it (``ramie.split``/``ramie.merge``).
    """


class CarryStructureError(RamieError, ValueError):
    """A ``scan``/loop body returned a carry of another structure than it got.

    The message lists the carry paths that appeared or disappeared (e.g. a
    dict key that was renamed), instead of relabelling the values silently.
    """


class StaticArgumentError(RamieError, ValueError):
    """An array was passed where ``ramie.jit`` expects a static argument.

    Static arguments (``static_argnums``/``static_argnames``) are compile-time
    constants and must be hashable; arrays are not. Raised up front, as JAX
    does, naming the argument.
    """


class AbstractValueError(RamieError, TypeError):
    """A model was used whose Variables hold abstract values, not arrays.

    ``ramie.eval_shape`` builds a model whose Variables hold
    ``jax.ShapeDtypeStruct`` (shapes only), to restore a checkpoint into. It
    must get its values (``ramie.update``, checkpoint restore) before it is
    called; the message names the first abstract Variable.
    """


class DeletedArrayError(RamieError, RuntimeError):
    """A Variable holds an array that was deleted (usually donated).

    An array donated to a jitted call (``donate_argnums``) is deleted once the
    call has run; a Variable still holding it cannot be used. The message
    names the Variable's path.
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


class VariableTypeError(RamieError, TypeError):
    """Something that is not a Variable type was given where one is needed.

    For example ``self.sow("hidden", x)`` (the Variable type comes first:
    ``self.sow(ramie.Intermediate, "hidden", x)``).
    """


class ModuleAttributeError(RamieError, AttributeError, ValueError):
    """A module attribute named in a call does not exist or cannot be used.

    Raised by ``set_attributes``/``with_attributes``/``view`` for names no
    sub-module has, and by ``sow``/``perturb`` when the name already holds
    something else. Also a ``ValueError``, as Flax raises for these cases.
    """


class AttributeStatusError(RamieError, ValueError):
    """An attribute's data/static status does not fit the value assigned.

    Attributes marked static (``ramie.static(...)``, a static field) are part
    of the pytree structure and cannot hold arrays, Variables or graph objects;
    ``ramie.data(...)``/``ramie.static(...)`` markers must be assigned to an
    attribute directly, not nested inside lists or dicts.
    """


class ShardingError(RamieError, ValueError):
    """A sharding annotation does not fit the array or the mesh.

    Raised for a logical axis name without a rule, a mesh axis name the mesh
    does not have, a dimension not divisible by the size of its mesh axis, or
    an annotation on a mesh that mixes Auto and Explicit axes. The message
    names the Variable, its shape, the annotation and the mesh.
    """


class MissingExtraError(RamieError, ImportError):
    """A feature needs an optional dependency that is not installed.

    The message names the extra to install, e.g. ``pip install ramie[linen]``
    for the Linen bridge or ``pip install ramie[haiku]`` for the Haiku bridge.
    """


class BridgeError(RamieError, ValueError):
    """A value crossing a Linen or Haiku bridge does not fit the other side.

    For example a Linen variable collection that maps two Variables to the
    same attribute path, or a bridge Module used outside ``init``/``apply``.
    """


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


class UnevenShardingWarning(RamieWarning):
    """An annotation shards a dimension that its mesh axis does not divide.

    Under a trace (a Variable created inside ``ramie.jit``), JAX accepts such a
    sharding constraint and XLA pads the dimension, so ramie applies it as Flax
    does and warns, naming the Variable, its shape and the mesh; arrays that
    leave the compiled function are then replicated. Eagerly it is a
    :class:`ShardingError`, since a device cannot hold part of a dimension.
    """


class InputShapeError(RamieError, ValueError):
    """A layer was called on inputs of the wrong size.

    The message names the layer's path in the model (``block.linear``), the
    size it was built for and the size it got, e.g. a ``Linear(4, 8)`` called
    on inputs with 13 features. Shapes are static in JAX, so the check runs
    once per trace inside ``jit``/``vmap``/``scan`` and costs nothing on the
    cached path.
    """
