"""State dicts and safetensors files: flat maps of named arrays.

``state_dict(model)`` is ``{"blocks.0.kernel": array, ...}``;
``load_state_dict(model, d)`` loads one back, strictly. ``save_safetensors`` and
``load_safetensors`` do the same with a ``.safetensors`` file, reading each
tensor lazily (only the ones that are loaded, after the whole file was
checked). ``convention="torch"`` uses PyTorch's names and layouts (see
:mod:`.conventions`), and ``key_map`` renames the file's keys on load.

RNG state is never dropped silently. With ramie names a file holds it:
``RngCount`` as ``uint32`` tensors and typed PRNG keys as their key data
(``uint32``, the key's shape plus the implementation's key shape), the
implementation named in the header metadata (``ramie.prng_keys``, a JSON map
``{tensor name: "threefry2x32"}``), and ``ramie.rng`` says whether RNG state
was included. Loading such a file restores keys exactly; a file without RNG
state (PyTorch's, or ``include_rng=False``) leaves the model's RNG state as it
is, and says so in its metadata.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
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


RNG_META = "ramie.rng"
KEYS_META = "ramie.prng_keys"


def save_safetensors(
    path: str | os.PathLike,
    model: Any,
    *,
    convention: str | None = None,
    metadata: Mapping[str, str] | None = None,
    include_rng: bool | None = None,
) -> None:
    """Write the Variables of ``model`` to one ``.safetensors`` file, durably.

    With ramie names the file holds every Variable, RNG state included, so a
    model loaded from it continues training bit-exactly: typed PRNG keys are
    stored as their key data (``uint32``) with the key implementation recorded
    in the header metadata, and are wrapped again on load. The torch
    convention leaves RNG state out by default (PyTorch has none, and would
    reject the extra names); the metadata then records ``ramie.rng:
    excluded``. The file is written under a temporary name, fsynced and
    renamed into place.

    Args:
        path: the file to create or replace.
        model: a Module (or graph of Modules).
        convention: ``None`` (ramie names) or ``"torch"`` (PyTorch names and
            layouts).
        metadata: extra string entries for the header's ``__metadata__``
            (names starting with ``ramie.`` are reserved).
        include_rng: store RNG state (keys and counts). None: yes with ramie
            names, no with ``convention="torch"``.

    Raises:
        CheckpointError: a value has a dtype safetensors cannot hold, or the
            metadata uses a reserved name.

    Example:
        >>> import tempfile, os, ramie
        >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
        >>> model = ramie.nn.Linear(2, 3, rngs=ramie.Rngs(0))
        >>> ramie.checkpoint.save_safetensors(path, model)
        >>> os.path.getsize(path) > 24
        True
    """
    from ramie._src.checkpoint import entries

    api = "ramie.checkpoint.save_safetensors()"
    path = os.path.abspath(os.fspath(path))
    reserved = [k for k in metadata or {} if str(k).startswith("ramie.")]
    if reserved:
        raise CheckpointError(
            f"{api}: metadata names starting with 'ramie.' are reserved "
            f"(got {reserved}); rename them, e.g. metadata={{'my.{reserved[0]}': ...}}."
        )
    if include_rng is None:
        include_rng = convention is None
    tensors = []
    keys: dict[str, str] = {}
    for s in conventions.slots(model, convention, api=api, rng=include_rng):
        value = s.variable.get_value()
        if hasattr(value, "dtype") and entries.is_key_dtype(value.dtype):
            keys[s.name] = entries.key_impl_name(value.dtype)
            tensors.append((s.name, np.asarray(jax.random.key_data(value))))
            continue
        if not hasattr(value, "dtype") or stformat.st_dtype(value.dtype) is None:
            what = (
                f"dtype {value.dtype}"
                if hasattr(value, "dtype")
                else f"a {type(value).__name__}, not an array"
            )
            raise CheckpointError(
                f"{api}: {s.name} is {what}; safetensors files hold arrays of "
                "standard dtypes only, and nothing was written. Store it as an "
                "array (e.g. nnx.Variable(jnp.asarray(value))), or save a full "
                "checkpoint, which keeps any value:\n"
                "      ramie.checkpoint.save(path, model)"
            )
        tensors.append((s.name, np.asarray(s.to_ext(value))))
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta[RNG_META] = "included" if include_rng else "excluded"
    if keys:
        meta[KEYS_META] = json.dumps(keys, separators=(",", ":"))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = durable.tmp_path(path)
    try:
        stformat.write_file(tmp, tensors, metadata=meta)
        os.replace(tmp, path)
        stformat.fsync_dir(parent)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _key_source(api: str, path: str, key: str, impl: str, sl: Any, f: Any) -> Any:
    """A source value for the key data stored under ``key``: typed keys."""
    from ramie._src.checkpoint import reader

    try:
        dtype = reader._key_dtype(impl)
        tail = jax.eval_shape(
            lambda: jax.random.key_data(jax.random.key(0, impl=impl))
        ).shape
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{api}: {path}: tensor {key} holds PRNG key data of implementation "
            f"{impl!r}, which this JAX does not know ({e})."
        ) from None
    shape = tuple(sl.get_shape())
    if shape[len(shape) - len(tail) :] != tuple(tail):
        raise CheckpointError(
            f"{api}: {path}: tensor {key} has shape {shape}, which is not "
            f"{impl} key data (its last dimensions must be {tuple(tail)})."
        )
    logical = shape[: len(shape) - len(tail)]

    def read() -> Any:
        return jax.random.wrap_key_data(f.get_tensor(key), impl=impl)

    return flat.Source(logical, dtype, read)


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
    RNG state in the file (written by :func:`save_safetensors`) is restored
    exactly, typed PRNG keys included. When the file has no RNG state (its
    metadata lacks ``ramie.rng: included``, as in PyTorch's files), the
    model's RNG state is left as it is rather than reported missing.

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
    from ramie._src.core.rngs import RngState

    slots = conventions.slots(model, convention, api=api, rng=True)
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
        try:
            keys = json.loads(meta.get(KEYS_META, "{}"))
        except ValueError as e:
            raise CheckpointError(
                f"{api}: {path}: metadata {KEYS_META} is corrupted ({e})."
            ) from None
        source = {}
        for key in f.keys():
            name = rename(key)
            if name is None:
                continue
            sl = f.get_slice(key)
            if key in keys:
                source[name] = _key_source(api, path, key, keys[key], sl, f)
                continue
            dtype = stformat.np_dtype(sl.get_dtype())
            source[name] = flat.Source(
                tuple(sl.get_shape()), dtype, (lambda k=key: f.get_tensor(k))
            )
        if meta.get(RNG_META) != "included":
            # a weights-only file: RNG state it lacks is left as it is
            slots = [
                s
                for s in slots
                if not (isinstance(s.variable, RngState) and s.name not in source)
            ]
        return flat.load(
            slots,
            source,
            api=api,
            strict=strict,
            allow_cast=allow_cast,
            ignore=conventions.ignored(convention),
        )
