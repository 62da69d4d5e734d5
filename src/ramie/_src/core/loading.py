"""The loading policy: one check shared by every route that loads values.

``update``, ``merge``, ``replace_by_pure_dict``, ``Optimizer.update``,
checkpoint restore and the Linen/Haiku weight loaders all load values into a
model whose Variables already have a shape and a dtype. They follow one policy,
documented in ``docs/guides/state_safety.md`` ("Loading policy"):

1. Values are first *canonicalised* as JAX does: Python lists and scalars become
   arrays, a float64 NumPy array becomes float32 and int64 becomes int32 when
   ``jax_enable_x64`` is off, so ``np.random.randn`` weights just load.
2. A shape that differs from the target's is an error.
3. A dtype that differs is cast to the target's dtype when the cast is lossless
   (every value of the source dtype exists in the target: ``int8 -> int32``,
   ``bfloat16 -> float32``), or when the caller passes ``allow_cast=True``;
   otherwise it is an error.
4. Every problem (missing, unexpected, shape, dtype) is collected first and
   reported in one :class:`~ramie.errors.StateLoadError` listing every path;
   when it is raised nothing has been changed.

:func:`check_load` applies steps 1-4 to ``(path, target, value)`` triples and
returns the converted values; the caller writes them. :func:`canonicalize` is
step 1 alone.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Final, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ramie._src.core.paths import format_path, format_paths
from ramie._src.core.variables import Variable
from ramie.errors import StateLoadError, docs_url

PathParts = tuple[Hashable, ...]

POLICY_URL: Final = docs_url("guides/state_safety.md", "loading-policy")
"""Where the loading policy is documented; every loading error links here."""

_LIMIT = 10
_SCALARS = (bool, int, float, complex)


class LoadReport(NamedTuple):
    """What :func:`check_load` found with ``strict=False``.

    Attributes:
        values: One entry per ``(path, target, value)`` pair, in order: the
            converted value, or :data:`SKIPPED` where it does not fit.
        missing: Paths the target has and the values lack (as given).
        unexpected: Paths the values have and the target lacks (as given).
        mismatched: ``(path, expected, found)`` for each pair that does not
            fit, e.g. ``(("head", "kernel"), "shape (4, 2)", "shape (4, 13)")``.
    """

    values: list[Any]
    missing: list[PathParts]
    unexpected: list[PathParts]
    mismatched: list[tuple[PathParts, str, str]]


class _Skipped:
    __slots__ = ()

    def __repr__(self) -> str:
        return "SKIPPED"


SKIPPED: Final = _Skipped()
"""Placeholder in :attr:`LoadReport.values` for a value that does not fit."""


def _where(path: Sequence[Hashable] | None, api: str | None) -> str:
    at = f" at {format_path(path)}" if path is not None else ""
    return f"{api}: the value{at}" if api else f"The value{at}"


def canonicalize(
    value: Any, *, path: Sequence[Hashable] | None = None, api: str | None = None
) -> Any:
    """Turn ``value`` into a JAX-compatible array, as JAX would.

    JAX arrays, tracers and abstract values (``jax.ShapeDtypeStruct``) are
    returned as they are. NumPy arrays and scalars get JAX's canonical dtype
    (``float64 -> float32`` and ``int64 -> int32`` unless ``jax_enable_x64``
    is on) and become JAX arrays. Python scalars and (nested) lists or tuples
    of numbers are converted once; scalars stay weakly typed, as in JAX. A
    :class:`~ramie.Variable` gives its value.

    Args:
        value: The value to convert.
        path: Where the value goes, for the error message.
        api: The API that was called, for the error message.

    Returns:
        The converted value.

    Raises:
        StateLoadError: ``value`` cannot be made an array (a string, a ragged
            list, an object array).

    Example:
        >>> import numpy as np
        >>> canonicalize(np.zeros(3)).dtype      # float64 NumPy, x64 off
        dtype('float32')
        >>> canonicalize([[1, 2], [3, 4]]).shape
        (2, 2)
        >>> canonicalize(["a"], path=("head", "kernel"), api="ramie.update()")
        Traceback (most recent call last):
        ...
        ramie.errors.StateLoadError: ramie.update(): the value at head.kernel ...
    """
    if isinstance(value, Variable):
        value = value._raw
    if isinstance(value, (jax.Array, jax.ShapeDtypeStruct)):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        dtype = value.dtype
        if dtype.kind not in "biufc" and not _is_ml_dtype(dtype):
            raise _conversion_error(value, path, api, f"NumPy dtype {dtype}")
        return jnp.asarray(value, dtype=jax.dtypes.canonicalize_dtype(dtype))
    if isinstance(value, _SCALARS):
        try:
            return jnp.asarray(value)  # weakly typed, as in JAX
        except (TypeError, ValueError, OverflowError) as e:
            raise _conversion_error(value, path, api, str(e).split("\n")[0]) from None
    if isinstance(value, (list, tuple)):
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError, OverflowError) as e:
            try:  # e.g. a list of tracers
                return jnp.asarray(value)
            except (TypeError, ValueError, OverflowError):
                why = str(e).split("\n")[0]
                raise _conversion_error(value, path, api, why) from None
        if arr.dtype.kind not in "biufc" and not _is_ml_dtype(arr.dtype):
            raise _conversion_error(value, path, api, f"elements of dtype {arr.dtype}")
        return jnp.asarray(arr, dtype=jax.dtypes.canonicalize_dtype(arr.dtype))
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return value  # array-like of another library; JAX converts it on use
    raise _conversion_error(value, path, api, type(value).__name__)


def _is_ml_dtype(dtype: np.dtype) -> bool:
    return dtype.kind == "V" and dtype.itemsize <= 2  # bfloat16, float8_*, int4


def _conversion_error(
    value: Any, path: Sequence[Hashable] | None, api: str | None, why: str
) -> StateLoadError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    p = tuple(path) if path is not None else ()
    return StateLoadError(
        f"{_where(path, api)} cannot be converted to an array: {shown} ({why}).\n"
        "  Fix: give a number, a (rectangular) list of numbers or an array, e.g.\n"
        "      jnp.asarray(value, dtype=jnp.float32)\n"
        f"  Loading policy: {POLICY_URL}",
        mismatched=[(p, "an array", type(value).__name__)],
    )


def is_lossless(src: Any, dst: Any) -> bool:
    """Whether every value of dtype ``src`` is exactly representable in ``dst``.

    Example:
        >>> import jax.numpy as jnp
        >>> is_lossless(jnp.int8, jnp.int32), is_lossless(jnp.bfloat16, jnp.float32)
        (True, True)
        >>> is_lossless(jnp.float32, jnp.bfloat16), is_lossless(jnp.float32, jnp.int32)
        (False, False)
    """
    try:
        return bool(np.can_cast(src, dst, casting="safe"))
    except TypeError:  # extended dtypes (PRNG keys) cast to nothing else
        return False


def _weak_fits(src: np.dtype, dst: np.dtype) -> bool:
    # A weakly typed value (a Python scalar) takes the target's dtype, as in
    # ``x + 1``, when it is of the same kind or a narrower one.
    order = "biufc"
    try:
        s, d = np.dtype(src).kind, np.dtype(dst).kind
    except TypeError:
        return False
    if d == "V":  # bfloat16 and friends
        d = "f"
    return (
        s in order
        and d in order
        and order.index(s.replace("u", "i"))
        <= max(order.index(d), order.index("i") if d == "u" else -1)
    )


def _shape_dtype(x: Any) -> tuple[tuple | None, Any]:
    if isinstance(x, Variable):
        x = x._raw
    shape = getattr(x, "shape", None)
    if shape is None:
        return None, None
    dtype = getattr(x, "dtype", None)
    if dtype is not None and not isinstance(x, jax.Array):
        try:  # a NumPy or abstract float64 target means float32 without x64
            dtype = jax.dtypes.canonicalize_dtype(dtype)
        except (TypeError, ValueError):  # extended dtypes (PRNG keys) raise either
            pass
    return tuple(shape), dtype


def _dtype_name(dtype: Any) -> str:
    return getattr(dtype, "name", None) or str(dtype)


def check_load(
    pairs: Sequence[tuple[PathParts, Any, Any]],
    *,
    api: str,
    allow_cast: bool = False,
    missing: Sequence[PathParts] = (),
    unexpected: Sequence[PathParts] = (),
    strict: bool = True,
    fix: str | None = None,
) -> Any:
    """Check values against their targets and convert them, all or nothing.

    Args:
        pairs: ``(path, target, value)`` triples. ``target`` is a Variable, an
            array or anything with ``.shape`` and ``.dtype`` (such as
            ``jax.ShapeDtypeStruct``); a target without a shape (a Python
            object held by a Variable) accepts any value unchanged. ``value``
            may be a Variable (its value is used), an array, a NumPy array,
            a Python scalar or list.
        api: The API the user called, e.g. ``"ramie.update()"``; it starts
            the error message.
        allow_cast: Cast a value of another dtype to the target's dtype even
            when the cast loses information (``float32 -> bfloat16``).
        missing: Paths the target has and the values lack, found by the caller
            (reported in the same error).
        unexpected: Paths the values have and the target lacks.
        strict: With ``False``, nothing is raised: a :class:`LoadReport`
            is returned with the values that fit and the lists of problems.
        fix: A fix, written as code, to add to the error instead of the
            default one for missing/unexpected paths.

    Returns:
        With ``strict=True``, the list of converted values, one per pair (a
        Variable's value is returned as the raw array). With ``strict=False``,
        a :class:`LoadReport`.

    Raises:
        StateLoadError: (``strict=True``) any path is missing, unexpected, of
            another shape, of another dtype that cannot be cast, or not
            convertible to an array. The error lists every such path; its
            ``missing``, ``unexpected`` and ``mismatched`` attributes hold them.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> target = jax.ShapeDtypeStruct((4, 2), jnp.float32)
        >>> [v.dtype for v in check_load([(("w",), target, np.ones((4, 2)))],
        ...                               api="load()")]
        [dtype('float32')]
        >>> check_load([(("head", "kernel"), target, jnp.ones((4, 13)))],
        ...            api="load()")
        Traceback (most recent call last):
        ...
        ramie.errors.StateLoadError: load(): the values do not fit the target; ...
        >>> r = check_load([(("w",), target, jnp.ones((4, 2), jnp.int32))],
        ...                api="load()", strict=False)
        >>> r.mismatched
        [(('w',), 'dtype float32', 'dtype int32')]
    """
    out: list[Any] = []
    mismatched: list[tuple[PathParts, str, str]] = []
    needs_cast = False
    for path, target, value in pairs:
        if isinstance(value, Variable):
            value = value._raw
        t_shape, t_dtype = _shape_dtype(target)
        if t_shape is None:
            out.append(value)
            continue
        # Python numbers and lists declare no dtype: like JAX's weakly typed
        # scalars they take the target's dtype when of the same or a lower kind.
        weak = isinstance(value, (*_SCALARS, list, tuple))
        try:
            value = canonicalize(value, path=path, api=api)
        except StateLoadError:
            mismatched.append((tuple(path), "an array", type(value).__name__))
            out.append(SKIPPED)
            continue
        shape = tuple(value.shape)
        if shape != t_shape:
            mismatched.append((tuple(path), f"shape {t_shape}", f"shape {shape}"))
            out.append(SKIPPED)
            continue
        dtype = value.dtype
        if t_dtype is not None and dtype != t_dtype:
            weak = weak or getattr(value, "weak_type", False)
            if (
                allow_cast
                or is_lossless(dtype, t_dtype)
                or (weak and _weak_fits(dtype, t_dtype))
            ):
                value = _cast(value, t_dtype)
            else:
                mismatched.append(
                    (
                        tuple(path),
                        f"dtype {_dtype_name(t_dtype)}",
                        f"dtype {_dtype_name(dtype)}",
                    )
                )
                needs_cast = True
                out.append(SKIPPED)
                continue
        elif weak and getattr(value, "weak_type", False):
            value = _cast(value, dtype)  # a loaded value is strongly typed
        out.append(value)
    missing = [tuple(p) for p in missing]
    unexpected = [tuple(p) for p in unexpected]
    if not strict:
        return LoadReport(out, missing, unexpected, mismatched)
    if missing or unexpected or mismatched:
        raise load_error(
            api, missing, unexpected, mismatched, fix=fix, needs_cast=needs_cast
        )
    return out


def _cast(value: Any, dtype: Any) -> Any:
    if isinstance(value, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(value.shape, dtype, sharding=value.sharding)
    return jax.lax.convert_element_type(value, dtype)  # never weakly typed


def load_error(
    api: str,
    missing: Sequence[PathParts],
    unexpected: Sequence[PathParts],
    mismatched: Sequence[tuple[PathParts, str, str]],
    *,
    fix: str | None = None,
    needs_cast: bool | None = None,
) -> StateLoadError:
    """The one aggregated report of a failed load (PyTorch-style).

    Example:
        >>> err = load_error("load()", [("a",)], [], [(("w",), "shape (2,)",
        ...                  "shape (3,)")])
        >>> print(str(err).splitlines()[4])
            w: shape (2,) vs (3,)
    """
    if needs_cast is None:
        needs_cast = any(exp.startswith("dtype ") for _, exp, _ in mismatched)
    lines = [f"{api}: the values do not fit the target; nothing was changed."]
    if missing:
        lines.append(f"  Missing ({len(missing)}): in the target, not in the values:")
        lines.append(format_paths(missing, _LIMIT))
    if unexpected:
        lines.append(
            f"  Unexpected ({len(unexpected)}): in the values, not in the target:"
        )
        lines.append(format_paths(unexpected, _LIMIT))
    if mismatched:
        lines.append(f"  Mismatched ({len(mismatched)}), expected vs found:")
        for path, exp, found in mismatched[:_LIMIT]:
            lines.append(f"    {format_path(path)}: {_versus(exp, found)}")
        if len(mismatched) > _LIMIT:
            lines.append(f"    ... and {len(mismatched) - _LIMIT} more")
    if fix:
        lines.append(fix)
    elif missing or unexpected or any(e.startswith("shape ") for _, e, _ in mismatched):
        lines.append(
            "  Fix: build the model with the configuration the values came from, "
            "or rename keys first; the expected layout is\n"
            "      ramie.to_pure_dict(ramie.state(model))"
        )
    if needs_cast:
        name = api[:-2] if api.endswith("()") else api
        lines.append(
            "  A dtype differs and the cast would lose information; cast on "
            f"purpose with\n      {name}(..., allow_cast=True)"
        )
    lines.append(f"  Loading policy: {POLICY_URL}")
    return StateLoadError("\n".join(lines), missing, unexpected, mismatched)


def _versus(exp: str, found: str) -> str:
    """``shape (4, 2) vs (4, 13)`` when both sides name the same property."""
    e_kind, _, e_rest = exp.partition(" ")
    f_kind, _, f_rest = found.partition(" ")
    if e_kind == f_kind and e_kind in ("shape", "dtype"):
        return f"{e_kind} {e_rest} vs {f_rest}"
    return f"{exp} vs {found}"
