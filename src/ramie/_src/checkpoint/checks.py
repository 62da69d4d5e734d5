"""The one strictness check every checkpoint route runs before changing anything.

A load compares what the target expects (paths, shapes, dtypes) with what the
source holds, and reports every missing, unexpected, shape-mismatched and
dtype-mismatched entry in one :class:`~ramie.errors.StateLoadError`. Nothing is
read or written before the check passes, so a failed load changes nothing.

``check_load`` follows the interface of ``ramie._src.core.loading`` (shared by
``update``, ``replace_by_pure_dict`` and the checkpoint loaders): the shared
implementation is used when present.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import jax
import numpy as np

from ramie._src.core.paths import format_path
from ramie.errors import StateLoadError

PathParts = tuple[Hashable, ...]


@dataclasses.dataclass
class LoadReport:
    """What a non-strict load skipped.

    Attributes:
        missing: dotted paths the target has and the source lacks (left as they were).
        unexpected: dotted paths the source has and the target lacks (ignored).
        mismatched: ``(path, expected, found)`` for entries whose shape or dtype
            does not fit (left as they were).
    """

    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was skipped."""
        return not (self.missing or self.unexpected or self.mismatched)


def describe(value: Any) -> str:
    """``float32[3,4]``: the dtype and shape of an array or ShapeDtypeStruct."""
    dtype = getattr(value, "dtype", None)
    shape = getattr(value, "shape", None)
    if dtype is None or shape is None:
        return type(value).__name__
    return f"{dtype_name(dtype)}[{','.join(str(d) for d in shape)}]"


def dtype_name(dtype: Any) -> str:
    """The name of a dtype, ``key<fry>`` for typed PRNG keys."""
    if isinstance(dtype, str):
        return dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return str(dtype)
    return np.dtype(dtype).name


def _castable(expected: Any, found: Any) -> bool:
    if isinstance(expected, str) or isinstance(found, str):
        return False
    e_key = jax.dtypes.issubdtype(expected, jax.dtypes.prng_key)
    f_key = jax.dtypes.issubdtype(found, jax.dtypes.prng_key)
    return not (e_key or f_key)


def check_load(
    pairs: Iterable[tuple[PathParts, Any, Any]],
    *,
    api: str,
    allow_cast: bool = False,
    missing: Sequence[PathParts] = (),
    unexpected: Sequence[PathParts] = (),
    strict: bool = True,
) -> LoadReport:
    """Check that each value fits its target; raise one error listing every problem.

    Args:
        pairs: ``(path, target, value)`` where target and value have ``.shape``
            and ``.dtype`` (arrays or ``jax.ShapeDtypeStruct``).
        api: the public call, e.g. ``"ramie.checkpoint.restore()"``.
        allow_cast: accept a dtype mismatch (the value is cast on load).
        missing: paths the target has and the source lacks.
        unexpected: paths the source has and the target lacks.
        strict: raise on any problem; when False return the report instead.

    Returns:
        A :class:`LoadReport` of what does not fit (empty when everything fits).

    Raises:
        StateLoadError: when ``strict`` and anything does not fit.

    Example:
        >>> import jax, numpy as np
        >>> t = jax.ShapeDtypeStruct((2,), np.float32)
        >>> check_load([(("a",), t, np.zeros(3, np.float32))], api="f()", strict=False)
        LoadReport(missing=[], unexpected=[], mismatched=[('a', 'float32[2]', 'float32[3]')])
    """
    report = LoadReport(
        missing=[format_path(p) for p in missing],
        unexpected=[format_path(p) for p in unexpected],
    )
    for path, target, value in pairs:
        t_shape, v_shape = tuple(target.shape), tuple(value.shape)
        t_dtype, v_dtype = target.dtype, value.dtype
        bad_shape = t_shape != v_shape
        bad_dtype = dtype_name(t_dtype) != dtype_name(v_dtype) and not (
            allow_cast and _castable(t_dtype, v_dtype)
        )
        if bad_shape or bad_dtype:
            report.mismatched.append(
                (format_path(path), describe(target), describe(value))
            )
    if strict and not report.ok:
        raise load_error(api, report)
    return report


def _lines(paths: Sequence[str], limit: int = 10) -> list[str]:
    out = [f"    {p}" for p in paths[:limit]]
    if len(paths) > limit:
        out.append(f"    ... and {len(paths) - limit} more")
    return out


def load_error(api: str, report: LoadReport) -> StateLoadError:
    """Build the one StateLoadError that lists everything in ``report``."""
    lines = [f"{api}: the checkpoint does not fit the target; nothing was changed."]
    if report.missing:
        lines.append(f"  Missing from the checkpoint ({len(report.missing)}):")
        lines += _lines(report.missing)
    if report.unexpected:
        lines.append(f"  Unexpected in the checkpoint ({len(report.unexpected)}):")
        lines += _lines(report.unexpected)
    if report.mismatched:
        lines.append(
            f"  Shape or dtype mismatch ({len(report.mismatched)}), "
            "expected (target) vs found (checkpoint):"
        )
        lines += _lines([f"{p}: expected {e}, found {f}" for p, e, f in report.mismatched])
    lines.append(
        "  To load what fits and get these lists back, pass strict=False; to cast "
        "dtypes on load, pass allow_cast=True:\n"
        "      model, report = ramie.checkpoint.restore(path, model, strict=False)"
    )
    return StateLoadError(
        "\n".join(lines),
        missing=report.missing,
        unexpected=report.unexpected,
        mismatched=report.mismatched,
    )
