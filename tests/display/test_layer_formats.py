"""Tests for the registry of per-layer repr summaries."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import ramie
from ramie._src.display import layer_formats as lf


def test_ramie_layers_are_found_by_class_name_only_under_ramie():
    assert (
        lf.formatter_for(ramie.Linear(1, 1, rngs=ramie.Rngs(0)))
        is lf._BY_NAME["Linear"]
    )

    class Linear(ramie.Module):  # a user class with the same name
        pass

    assert lf.formatter_for(Linear()) is None


def test_flags_treat_scalar_and_tuple_defaults_alike():
    class Conv(ramie.Module):
        def __init__(self, strides):
            self.strides = strides

    assert lf.flags(Conv(1), strides=(1,)) == []
    assert lf.flags(Conv((1, 1)), strides=(1,)) == []
    assert lf.flags(Conv((2, 1)), strides=(1,)) == ["strides=(2, 1)"]


def test_short_static():
    assert lf.short_static(jnp.float32) == "f32"
    assert lf.short_static(np.dtype("int8")) == "i8"
    assert lf.short_static(ramie.Param) == "Param"
    assert lf.short_static(jax.nn.relu) == "relu"
    assert lf.short_static("x" * 100) is None


def test_data_parts_order_and_generic_parts():
    class M(ramie.Module):
        def __init__(self):
            self.b = ramie.Param(np.zeros(1, np.float32))
            self.a = ramie.Param(np.zeros(2, np.float32))
            self.size = 3
            self.nothing = None

    assert [k for k, _ in lf.data_parts(M(), "a")] == ["a", "b"]
    parts = lf.generic_parts(M())
    assert [p if isinstance(p, str) else p[0] for p in parts] == ["b", "a", "size=3"]
