"""State dicts and safetensors files: flat maps of named arrays.

``state_dict(model)`` is ``{"blocks.0.kernel": array, ...}``;
``load_state_dict(model, d)`` loads one back, strictly. ``save_safetensors`` and
``load_safetensors`` do the same with a ``.safetensors`` file, reading each
tensor lazily (only the ones that are loaded, after the whole file was
checked). ``convention="torch"`` uses PyTorch's names and layouts (see
:mod:`.conventions`), and ``key_map`` renames the file's keys on load.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ramie._src.checkpoint import conventions, durable, flat, stformat
from ramie._src.checkpoint.checks import LoadReport
from ramie.errors import CheckpointError

KeyMap = Mapping[str, str] | Callable[[str], "str | None"] | None


def state_dict(model: Any, *, convention: str | None = None) -> dict[str, Any]:
    """Every Variable of ``model`` as a flat dict of arrays keyed by dotted path.

    Args:
        model: a Module or graph of Modules.
        convention: ``None`` for ramie names, ``"torch"`` for PyTorch names and
            layouts (see ``ramie.checkpoint`` docs).

    Returns:
        ``{"blocks.0.kernel": jax.Array, ...}``, in path order.

    Example:
        >>> import ramie
        >>> model = ramie.nn.Linear(2, 3, rngs=ramie.Rngs(0))
        >>> {k: v.shape for k, v in ramie.checkpoint.state_dict(model).items()}
        {'bias': (3,), 'kernel': (2, 3)}
        >>> sd = ramie.checkpoint.state_dict(model, convention="torch")
        >>> {k: v.shape for k, v in sd.items()}
        {'bias': (3,), 'weight': (3, 2)}
    """
    api = "ramie.checkpoint.state_dict()"
    return {
        s.name: s.to_ext(s.variable.get_value())
        for s in conventions.slots(model, convention, api=api)
    }


def _key_map(key_map: KeyMap) -> Callable[[str], str | None]:
    if key_map is None:
        return lambda k: k
    if callable(key_map):
        return key_map
    mapping = dict(key_map)
    return lambda k: mapping.get(k, k)


def load_state_dict(
    model: Any,
    state: Mapping[str, Any],
    *,
    strict: bool = True,
    allow_cast: bool = False,
    convention: str | None = None,
) -> LoadReport:
    """Load a flat dict of arrays (as from :func:`state_dict`) into ``model``.

    Args:
        model: the model to update in place.
        state: ``{"dotted.name": array}`` (NumPy or JAX arrays).
        strict: raise on any missing, unexpected or mismatched key (default).
        allow_cast: accept dtype mismatches and cast.
        convention: ``None`` or ``"torch"``, as for :func:`state_dict`.

    Returns:
        A :class:`LoadReport` of what was skipped (empty when strict).

    Raises:
        StateLoadError: every problem listed by name; nothing was changed.

    Example:
        >>> import ramie
        >>> a = ramie.nn.Linear(2, 3, rngs=ramie.Rngs(0))
        >>> b = ramie.nn.Linear(2, 3, rngs=ramie.Rngs(1))
        >>> ramie.checkpoint.load_state_dict(b, ramie.checkpoint.state_dict(a)).ok
        True
    """
    api = "ramie.checkpoint.load_state_dict()"
    slots = conventions.slots(model, convention, api=api)
    source = {}
    for name, value in state.items():
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            value = np.asarray(value)
        source[name] = flat.Source(tuple(value.shape), value.dtype, (lambda v=value: v))
    return flat.load(
        slots,
        source,
        api=api,
        strict=strict,
        allow_cast=allow_cast,
        ignore=conventions.ignored(convention),
    )


def save_safetensors(
    path: str | os.PathLike,
    model: Any,
    *,
    convention: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write the weights of ``model`` to one ``.safetensors`` file, durably.

    RNG state is left out (safetensors holds no typed PRNG keys); use
    :func:`save` for a full training checkpoint. The file is written under a
    temporary name, fsynced and renamed into place.

    Example:
        >>> import tempfile, os, ramie
        >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
        >>> model = ramie.nn.Linear(2, 3, rngs=ramie.Rngs(0))
        >>> ramie.checkpoint.save_safetensors(path, model)
        >>> os.path.getsize(path) > 24
        True
    """
    from ramie._src.core.rngs import RngState

    api = "ramie.checkpoint.save_safetensors()"
    path = os.path.abspath(os.fspath(path))
    tensors = []
    for s in conventions.slots(model, convention, api=api):
        if isinstance(s.variable, RngState):
            continue
        value = s.variable.get_value()
        if not hasattr(value, "dtype") or stformat.st_dtype(value.dtype) is None:
            raise CheckpointError(
                f"{api}: {s.name} ({type(value).__name__}) cannot be stored in "
                "safetensors; it holds arrays of standard dtypes only."
            )
        tensors.append((s.name, np.asarray(s.to_ext(value))))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = durable.tmp_path(path)
    try:
        stformat.write_file(tmp, tensors, metadata=dict(metadata or {}) or None)
        os.replace(tmp, path)
        stformat.fsync_dir(parent)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_safetensors(
    model: Any,
    path: str | os.PathLike,
    *,
    key_map: KeyMap = None,
    convention: str | None = None,
    strict: bool = True,
    allow_cast: bool = False,
) -> LoadReport:
    """Load a ``.safetensors`` file into ``model``, reading tensors lazily.

    The whole file is checked against the model from its header first; then
    only the tensors that are loaded are read (with ``safetensors.safe_open``).

    Args:
        model: the model to update in place.
        path: a ``.safetensors`` file.
        key_map: renames file keys before matching: a dict ``{file_key:
            model_key}`` or a function returning the model key (or None to
            drop the tensor).
        convention: ``None`` (ramie names) or ``"torch"`` (PyTorch names and
            layouts, e.g. a ``Linear`` ``weight (out, in)`` becomes ``kernel
            (in, out)``).
        strict: raise on any missing, unexpected or mismatched key (default).
        allow_cast: accept dtype mismatches and cast.

    Returns:
        A :class:`LoadReport` of what was skipped (empty when strict).

    Raises:
        StateLoadError: every problem listed by name; nothing was changed.

    Example:
        >>> import tempfile, os, ramie
        >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
        >>> model = ramie.nn.Linear(2, 3, rngs=ramie.Rngs(0))
        >>> ramie.checkpoint.save_safetensors(path, model)
        >>> other = ramie.nn.Linear(2, 3, rngs=ramie.Rngs(1))
        >>> ramie.checkpoint.load_safetensors(other, path).ok
        True
    """
    try:
        from safetensors import safe_open
    except ImportError:
        raise ImportError(
            "ramie.checkpoint.load_safetensors() needs safetensors: "
            "pip install ramie[checkpoint]"
        ) from None
    api = "ramie.checkpoint.load_safetensors()"
    path = os.fspath(path)
    rename = _key_map(key_map)
    slots = conventions.slots(model, convention, api=api)
    from ramie._src.core.rngs import RngState

    slots = [s for s in slots if not isinstance(s.variable, RngState)]
    with safe_open(path, framework="numpy") as f:
        source = {}
        for key in f.keys():
            name = rename(key)
            if name is None:
                continue
            sl = f.get_slice(key)
            dtype = stformat.np_dtype(sl.get_dtype())
            source[name] = flat.Source(
                tuple(sl.get_shape()), dtype, (lambda k=key: f.get_tensor(k))
            )
        return flat.load(
            slots,
            source,
            api=api,
            strict=strict,
            allow_cast=allow_cast,
            ignore=conventions.ignored(convention),
        )
