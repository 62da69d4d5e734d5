"""The loading policy as a law, on random graphs (see ``strategies.py``).

Take a random model, the pure dict of its State with every value changed, and
perturb some paths: another shape, another dtype (a cast that loses
information), a missing entry, an extra entry. Then every loading route either
loads exactly (no perturbation it must refuse) or raises one StateLoadError
listing exactly the perturbed paths, and the model is bit-identical afterwards.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ramie as nnx
from properties.strategies import describe, flat_items, module_graphs
from ramie.errors import StateLoadError

KINDS = ("keep", "keep", "keep", "shape", "dtype", "missing")


def _set(tree: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        tree = tree[k]
    tree[path[-1]] = value


def _delete(tree: dict, path: tuple) -> None:
    for k in path[:-1]:
        tree = tree[k]
    del tree[path[-1]]


def _other_dtype(x):
    # float32 -> int32 and int32 -> float32 both lose information
    return x.astype(jnp.int32 if x.dtype == jnp.float32 else jnp.float32)


@st.composite
def perturbed_loads(draw):
    model = draw(module_graphs(max_depth=2, arrays=False))
    pure = nnx.to_pure_dict(nnx.state(model))
    items = flat_items(pure)
    for path, v in items:  # every value changes, so loading is observable
        _set(pure, path, v + 1)
    kinds = {p: draw(st.sampled_from(KINDS)) for p, _ in items}
    for path, kind in kinds.items():
        if kind == "shape":
            _set(pure, path, jnp.zeros((*np.shape(v := _get(pure, path)), 2), v.dtype))
        elif kind == "dtype":
            _set(pure, path, _other_dtype(_get(pure, path)))
        elif kind == "missing":
            _delete(pure, path)
    extra = ()
    if draw(st.booleans()):
        parents = [()] + sorted({p[:-1] for p, _ in items if len(p) > 1}, key=str)
        parent = draw(st.sampled_from(parents))
        node = pure
        for k in parent:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict):
            extra = (*parent, "zz_extra")
            node["zz_extra"] = jnp.ones(2)
    return model, pure, kinds, extra


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _paths(kinds, *wanted):
    return sorted((p for p, k in kinds.items() if k in wanted), key=str)


def _check(route, model, pure, kinds, extra, missing_is_error):
    before = describe(model)
    expected_mismatch = _paths(kinds, "shape", "dtype")
    expected_missing = _paths(kinds, "missing") if missing_is_error else []
    expected_unexpected = [extra] if extra else []
    fails = expected_mismatch or expected_missing or expected_unexpected
    if fails:
        with pytest.raises(StateLoadError) as e:
            route(model, pure)
        err = e.value
        assert sorted((m[0] for m in err.mismatched), key=str) == expected_mismatch
        assert sorted(err.missing, key=str) == expected_missing
        assert err.unexpected == expected_unexpected
        assert describe(model) == before  # bit-identical: nothing was changed
        return
    route(model, pure)
    state = nnx.to_pure_dict(nnx.state(model))
    for path, new in flat_items(pure):
        got = _get(state, path)
        assert got.dtype == new.dtype and got.shape == new.shape
        np.testing.assert_array_equal(got, new)


@given(perturbed_loads())
def test_update_loads_exactly_or_names_exactly_the_perturbed_paths(case):
    model, pure, kinds, extra = case
    _check(nnx.update, model, pure, kinds, extra, missing_is_error=False)


@given(perturbed_loads())
def test_replace_by_pure_dict_loads_exactly_or_names_the_perturbed_paths(case):
    model, pure, kinds, extra = case

    def route(m, p):
        nnx.replace_by_pure_dict(nnx.state(m), p)

    _check(route, model, pure, kinds, extra, missing_is_error=True)
