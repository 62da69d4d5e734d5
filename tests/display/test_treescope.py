"""Tests for treescope rendering of Modules, Variables and States, and ``display``."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import ramie

treescope = pytest.importorskip("treescope")


def test_module_renders_with_sizes_and_attributes_in_order():
    text = treescope.render_to_text(ramie.Linear(4, 3, rngs=ramie.Rngs(0)))
    lines = text.splitlines()
    assert lines[0] == "Linear(  # Param: 15 (60 B)"
    assert lines[1].startswith("  kernel=Param(  # 12 (48 B)")
    assert any(ln.startswith("  bias=Param(value=") for ln in lines)
    assert text.index("kernel=") < text.index("bias=") < text.index("in_features=4")


def test_variable_renders_value_and_metadata():
    text = treescope.render_to_text(ramie.Param(jnp.ones(3), out_sharding=("model",)))
    assert text.splitlines()[0] == "Param(  # 3 (12 B)"
    assert "value=" in text and "out_sharding=('model',)" in text


def test_state_renders_as_a_dict():
    text = treescope.render_to_text(ramie.state(ramie.BatchNorm(2, rngs=ramie.Rngs(0))))
    assert text.startswith("State({")
    for key in ("'bias'", "'mean'", "'scale'", "'var'"):
        assert key in text
    assert "BatchStat(" in text


def test_containers_shared_references_and_cycles():
    linear = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
    model = ramie.Sequential(linear, ramie.Dropout(0.1, rngs=ramie.Rngs(1)))
    model.tied = linear
    model.self_ref = model
    text = treescope.render_to_text(model)
    assert text.startswith("Sequential(  # Param: 6 (24 B), RngState: 2 (12 B)")
    assert "layers=List([" in text
    assert "cyclic reference" in text
    d = treescope.render_to_text(ramie.Dict(a=ramie.Linear(1, 1, rngs=ramie.Rngs(0))))
    assert d.startswith("Dict({") and "'a': Linear(" in d


def test_display_prints_outside_notebooks(capsys):
    ramie.display(ramie.Linear(2, 3, rngs=ramie.Rngs(0)), "done")
    assert capsys.readouterr().out.splitlines() == [
        "Linear(2 -> 3, kernel=f32[2,3], bias=f32[3])",
        "done",
    ]
