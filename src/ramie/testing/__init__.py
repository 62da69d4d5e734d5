"""Testing helpers for ramie and its users.

``assert_trees_close`` compares two pytrees (States, modules, dicts of arrays)
leaf by leaf with tolerances and reports the paths that differ.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from ramie._src.core.paths import format_path
from ramie._src.core.variables import Variable


def _leaves_with_paths(tree: Any) -> list[tuple[tuple, Any]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: isinstance(x, Variable)
    )
    out = []
    for keypath, leaf in flat:
        parts = []
        for k in keypath:
            for attr in ("key", "name", "idx"):
                if hasattr(k, attr):
                    parts.append(getattr(k, attr))
                    break
        if isinstance(leaf, Variable):
            leaf = leaf.value
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out.append((tuple(parts), leaf))
    return out


def assert_trees_close(
    actual: Any, expected: Any, *, rtol: float = 1e-6, atol: float = 1e-6
) -> None:
    """Assert two pytrees have the same structure and close leaves.

    Variables are compared by value. The error lists every differing path.

    Example:
        >>> import jax.numpy as jnp
        >>> assert_trees_close({"a": jnp.ones(2)}, {"a": jnp.ones(2) + 1e-8})
    """
    a = _leaves_with_paths(actual)
    e = _leaves_with_paths(expected)
    a_paths = [p for p, _ in a]
    e_paths = [p for p, _ in e]
    if a_paths != e_paths:
        missing = sorted(set(map(str, e_paths)) - set(map(str, a_paths)))
        extra = sorted(set(map(str, a_paths)) - set(map(str, e_paths)))
        raise AssertionError(
            f"tree structures differ: missing {missing[:10]}, unexpected {extra[:10]}"
        )
    problems = []
    for (path, x), (_, y) in zip(a, e):
        x = (
            np.asarray(x, dtype=np.float64)
            if np.asarray(x).dtype.kind in "fc"
            else np.asarray(x)
        )
        y = (
            np.asarray(y, dtype=np.float64)
            if np.asarray(y).dtype.kind in "fc"
            else np.asarray(y)
        )
        if x.shape != y.shape:
            problems.append(f"{format_path(path)}: shape {x.shape} != {y.shape}")
            continue
        if not np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
            err = np.max(np.abs(x - y)) if x.size else 0.0
            problems.append(f"{format_path(path)}: max abs diff {err:.3g}")
    if problems:
        raise AssertionError("trees differ at:\n  " + "\n  ".join(problems[:20]))
