"""Shared helpers of the bridge and loader tests: tolerances and test data."""

from __future__ import annotations

import contextlib

import jax
import numpy as np
import pytest

import ramie
from ramie.errors import StateLoadError

TOL = dict(rtol=1e-5, atol=1e-5)
KEY = jax.random.key(0)


def close(a, b):
    """Equal to float32 precision (the loaders' numerical contract)."""
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


def normal(*shape, seed=0):
    """Deterministic float32 normal data of ``shape``."""
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape, np.float32)


def randomize(tree, seed=7):
    """Replace every array of ``tree`` by normal data of its shape and dtype
    (trained-looking weights instead of an initializer's zeros and ones)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(a.dtype), tree)


@contextlib.contextmanager
def refused_unchanged(model, match: str):
    """The block raises a StateLoadError matching ``match`` and leaves every
    value of ``model`` as it was (loading is all or nothing)."""
    before = [np.array(x) for x in jax.tree.leaves(ramie.state(model))]
    with pytest.raises(StateLoadError, match=match) as info:
        yield info
    after = [np.array(x) for x in jax.tree.leaves(ramie.state(model))]
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)
