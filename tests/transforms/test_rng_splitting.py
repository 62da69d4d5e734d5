"""``split_rngs``/``fork_rngs`` used with the transforms: one key per vmap
instance or scan step, restored afterwards, reproducible from the seed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie


def _kd(k):
    return np.asarray(jax.random.key_data(k))


def _split_reference(seed: int, n: int, name: str = "dropout") -> list:
    """Keys each instance draws: split(one draw of the parent stream, n)."""
    parent = ramie.Rngs(**{name: seed})
    keys = jax.random.split(getattr(parent, name)(), n)
    return [_kd(getattr(ramie.Rngs(**{name: k}), name)()) for k in keys]


def test_split_rngs_vmap_gives_one_distinct_key_per_instance():
    rngs = ramie.Rngs(dropout=3)

    @ramie.split_rngs(splits=4)
    @ramie.vmap(in_axes=(0,))
    def draw(rngs):
        return rngs.dropout()

    keys = draw(rngs)
    kd = _kd(keys)
    assert kd.shape[0] == 4
    assert len({tuple(k.ravel()) for k in kd}) == 4
    np.testing.assert_array_equal(kd, np.stack(_split_reference(3, 4)))
    # restored afterwards: scalar key, the parent advanced by one draw
    assert rngs.dropout.key.value.shape == ()
    assert int(rngs.dropout.count.value) == 1
    # the next split differs, the same seed reproduces
    assert not np.array_equal(_kd(draw(rngs)), kd)
    np.testing.assert_array_equal(_kd(draw(ramie.Rngs(dropout=3))), kd)


def test_split_rngs_only_selected_streams():
    rngs = ramie.Rngs(params=0, dropout=1)

    @ramie.split_rngs(splits=3, only="dropout")
    @ramie.vmap(
        in_axes=(ramie.StateAxes({"dropout": 0, ...: None}),), out_axes=(0, None)
    )
    def draw(rngs):
        return rngs.dropout(), rngs.params.key.value

    d, p = draw(rngs)
    assert _kd(d).shape[0] == 3
    assert p.shape == ()  # params stream was broadcast, not split
    assert int(rngs.params.count.value) == 0


def test_split_rngs_context_manager_and_direct_form():
    rngs = ramie.Rngs(params=0, dropout=1)
    with ramie.split_rngs(rngs, splits=5, only="dropout"):
        assert rngs.dropout.key.value.shape == (5,)
        assert rngs.params.key.value.shape == ()
        keys = ramie.vmap(
            lambda r: r.dropout(), in_axes=(ramie.StateAxes({"dropout": 0, ...: None}),)
        )(rngs)
    assert rngs.dropout.key.value.shape == ()
    np.testing.assert_array_equal(_kd(keys), np.stack(_split_reference(1, 5)))

    backup = ramie.split_rngs(rngs, splits=(2, 3))
    assert rngs.params.key.value.shape == (2, 3)
    assert rngs.dropout.key.value.shape == (2, 3)
    ramie.restore_rngs(backup)
    assert rngs.params.key.value.shape == () and rngs.dropout.key.value.shape == ()


def test_split_rngs_squeeze():
    rngs = ramie.Rngs(0)
    with ramie.split_rngs(rngs, splits=1, squeeze=True):
        assert rngs.default.key.value.shape == ()
    with pytest.raises(ValueError, match=r"squeeze"):
        ramie.split_rngs(rngs, splits=2, squeeze=True)


def test_split_rngs_scan_gives_one_key_per_step():
    rngs = ramie.Rngs(dropout=7)

    @ramie.split_rngs(splits=5)
    @ramie.scan(in_axes=(ramie.Carry, 0), out_axes=(ramie.Carry, 0))
    def steps(c, rngs):
        return c + 1, rngs.dropout()

    c, keys = steps(0, rngs)
    assert int(c) == 5
    np.testing.assert_array_equal(_kd(keys), np.stack(_split_reference(7, 5)))
    assert rngs.dropout.key.value.shape == ()


def test_split_rngs_leaves_already_split_streams_alone():
    @ramie.split_rngs(splits=3)
    @ramie.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
        return ramie.Dropout(0.5, rngs=rngs)

    layers = create(ramie.Rngs(dropout=0))
    key_before = _kd(layers.rngs.key.value)

    @ramie.split_rngs(splits=3)
    @ramie.vmap(in_axes=(0,))
    def masks(d):
        return d(jnp.ones(8))

    m = masks(layers)
    assert m.shape == (3, 8)
    np.testing.assert_array_equal(_kd(layers.rngs.key.value), key_before)
    np.testing.assert_array_equal(layers.rngs.count.value, [1, 1, 1])


def test_split_rngs_mismatched_existing_split_is_an_error():
    rngs = ramie.Rngs(0)
    with ramie.split_rngs(rngs, splits=3):
        with pytest.raises(ramie.errors.RngError, match=r"splits=4"):
            ramie.split_rngs(rngs, splits=4)


def test_split_key_cannot_be_drawn_outside_the_transform():
    rngs = ramie.Rngs(0)
    with ramie.split_rngs(rngs, splits=3):
        with pytest.raises(ramie.errors.RngError, match=r"shape \(3,\)"):
            rngs()


def test_fork_rngs_gives_new_keys_and_restores():
    rngs = ramie.Rngs(0)
    ref = ramie.Rngs(0)

    @ramie.fork_rngs()
    def draw(rngs):
        return rngs()

    k = draw(rngs)
    # fork took one draw and started a new stream from it
    expected = ramie.Rngs(ref())()
    np.testing.assert_array_equal(_kd(k), _kd(expected))
    assert int(rngs.default.count.value) == 1
    assert rngs.default.key.value.shape == ()

    @ramie.fork_rngs(split=4)
    @ramie.vmap(in_axes=(0,))
    def draw4(rngs):
        return rngs()

    ks = draw4(rngs)
    assert len({tuple(x.ravel()) for x in _kd(ks)}) == 4


def test_split_rngs_vmap_inside_jit_matches_eager():
    class Layer(ramie.Module):
        def __init__(self, rngs):
            self.linear = ramie.Linear(2, 2, rngs=rngs)

    def make(rngs):
        @ramie.split_rngs(splits=3)
        @ramie.vmap(in_axes=(0,), out_axes=0)
        def create(rngs):
            return Layer(rngs)

        return create(rngs)

    rngs_j, rngs_e = ramie.Rngs(0), ramie.Rngs(0)
    lj = ramie.jit(make)(rngs_j)
    le = make(rngs_e)
    np.testing.assert_allclose(
        lj.linear.kernel.value, le.linear.kernel.value, rtol=1e-6
    )
    assert int(rngs_j.default.count.value) == int(rngs_e.default.count.value) == 1
    assert rngs_j.default.key.value.shape == ()


def test_reseed_stacked_streams_and_reproduce():
    @ramie.split_rngs(splits=3)
    @ramie.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
        return ramie.Dropout(0.5, rngs=rngs)

    layers = create(ramie.Rngs(dropout=0))
    run = ramie.vmap(lambda d: d(jnp.ones(8)), in_axes=(0,))
    ramie.reseed(layers, dropout=11)
    a = run(layers)
    ramie.reseed(layers, dropout=11)
    b = run(layers)
    np.testing.assert_array_equal(a, b)
    assert len({tuple(np.asarray(r)) for r in a}) == 3
    with pytest.raises(ramie.errors.RngError, match=r"scalars_only"):
        ramie.reseed(layers, dropout=1, policy="scalars_only")
