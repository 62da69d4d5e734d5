"""The strictness check of every checkpoint route, on ramie's shared loading policy.

A load compares what the target expects (paths, shapes, dtypes) with what the
source holds, before any array is read: :func:`check` hands the abstract
source values (shapes and dtypes from a manifest or file header) to
``ramie._src.core.loading.check_load``, which applies the loading policy
(lossless casts allowed, lossy ones only with ``allow_cast=True``) and raises
one :class:`~ramie.errors.StateLoadError` listing every missing, unexpected,
shape- and dtype-mismatched path. Nothing is read or written before it passes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from typing import Any

import jax

from ramie._src.core import loading

PathParts = tuple[Hashable, ...]
SKIPPED = loading.SKIPPED

_FIX = (
    "  Fix: restore into a model built with the configuration the checkpoint was "
    "saved from, or load what fits and get these lists back:\n"
    "      model, report = {api}(..., strict=False)"
)


@dataclasses.dataclass
class LoadReport:
    """What a non-strict checkpoint load skipped.

    Attributes:
        missing: paths the target has and the source lacks (left as they were).
        unexpected: paths the source has and the target lacks (ignored).
        mismatched: ``(path, expected, found)`` for entries whose shape or
            dtype does not fit (left as they were).
    """

    missing: list[PathParts] = dataclasses.field(default_factory=list)
    unexpected: list[PathParts] = dataclasses.field(default_factory=list)
    mismatched: list[tuple[PathParts, str, str]] = dataclasses.field(
        default_factory=list
    )

    @property
    def ok(self) -> bool:
        """True when nothing was skipped.

        Example:
            >>> LoadReport().ok, LoadReport(missing=[("a",)]).ok
            (True, False)
        """
        return not (self.missing or self.unexpected or self.mismatched)


@dataclasses.dataclass
class _Key:
    value: Any


def _is_key(dtype: Any) -> bool:
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def check(
    pairs: Sequence[tuple[PathParts, Any, Any]],
    *,
    api: str,
    allow_cast: bool,
    missing: Sequence[PathParts],
    unexpected: Sequence[PathParts],
    strict: bool,
) -> tuple[list[Any], LoadReport]:
    """Check abstract source values against targets, all at once.

    Args:
        pairs: ``(path, target, value)``; targets and values have ``.shape``
            and ``.dtype`` (values are usually ``jax.ShapeDtypeStruct``).

    Returns:
        ``(values, report)``: per pair the value as it will be loaded (its dtype
        is the one to cast to) or :data:`SKIPPED`, and what does not fit.

    Raises:
        StateLoadError: (``strict``) anything does not fit; nothing changed.
    """
    # Typed PRNG keys cast to nothing else and nothing casts to them; they are
    # compared here (the shared policy canonicalises dtypes, which keys lack).
    keyed: list[tuple[PathParts, str, str]] = []
    fine: list[Any] = []
    for path, target, value in pairs:
        t_key = _is_key(getattr(target, "dtype", None))
        v_key = _is_key(getattr(value, "dtype", None))
        if not (t_key or v_key):
            fine.append((path, target, value))
            continue
        if t_key != v_key or target.dtype != value.dtype:
            keyed.append((tuple(path), f"dtype {target.dtype}", f"dtype {value.dtype}"))
        elif tuple(target.shape) != tuple(value.shape):
            keyed.append(
                (
                    tuple(path),
                    f"shape {tuple(target.shape)}",
                    f"shape {tuple(value.shape)}",
                )
            )
        else:
            fine.append(_Key(value))
            continue
        fine.append(None)
    result = loading.check_load(
        [p for p in fine if isinstance(p, tuple)],
        api=api,
        allow_cast=allow_cast,
        missing=missing,
        unexpected=unexpected,
        strict=False,
    )
    it = iter(result.values)
    values = [
        SKIPPED if p is None else p.value if isinstance(p, _Key) else next(it)
        for p in fine
    ]
    mismatched = keyed + list(result.mismatched)
    if strict and (result.missing or result.unexpected or mismatched):
        raise loading.load_error(
            api,
            result.missing,
            result.unexpected,
            mismatched,
            fix=_FIX.format(api=api.removesuffix("()")),
        )
    report = LoadReport(list(result.missing), list(result.unexpected), mismatched)
    return values, report
