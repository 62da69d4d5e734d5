"""Tests for element and byte counts of model state."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import ramie
from ramie._src.display import sizes


def test_size_and_bytes_of_mixed_dtypes_and_keys():
    assert sizes.size_and_bytes(
        {"a": jnp.zeros((2, 3)), "b": jnp.zeros(4, jnp.int8)}
    ) == (10, 28)
    assert sizes.size_and_bytes(jax.random.key(0)) == (1, 8)
    assert sizes.size_and_bytes(jax.ShapeDtypeStruct((3,), jnp.bfloat16)) == (3, 6)
    assert sizes.size_and_bytes(("not", "arrays")) == (0, 0)


def test_variable_stats_groups_rng_state_and_counts_shared_once():
    model = ramie.Sequential(
        ramie.Linear(2, 2, rngs=ramie.Rngs(0)), ramie.Dropout(0.5, rngs=ramie.Rngs(0))
    )
    model.tied = model.layers[0]
    stats = {t.__name__: v for t, v in sizes.variable_stats(model).items()}
    assert stats == {"Param": (6, 24), "RngState": (2, 12)}
    assert list(stats)[0] == "Param"


def test_format_bytes():
    assert [sizes.format_bytes(n) for n in (999, 1001, 2_500_000, 3_000_000_001)] == [
        "999 B",
        "1.0 KB",
        "2.5 MB",
        "3.0 GB",
    ]
