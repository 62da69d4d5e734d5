"""Tests for ``ramie/_src/core/rng_ops.py``: split_rngs, fork_rngs, backups,
reseed and with_rngs over every stream of a graph."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie as nnx
from ramie._src.core.rng_ops import RngBackup, find_streams
from ramie.errors import RngError


def _data(key):
    return np.asarray(jax.random.key_data(key))


class Model(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(2, 3, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.blocks = [nnx.Dropout(0.5, rngs=rngs)]
        self.rngs = rngs

    def __call__(self, x):
        return self.blocks[0](self.drop(self.linear(x)))


def test_find_streams_paths_and_sharing():
    rngs = nnx.Rngs(params=0, dropout=1)
    m = Model(rngs)
    found = {path: s.tag for path, s in find_streams(m)}
    assert found == {
        (0, "blocks", 0, "rngs"): "dropout",
        (0, "drop", "rngs"): "dropout",
        (0, "rngs", "dropout"): "dropout",
        (0, "rngs", "params"): "params",
    }
    assert len(find_streams(m, rngs)) == 4  # shared streams once


# ---------------------------------------------------------------- split_rngs
def test_split_rngs_context_manager_restores():
    rngs = nnx.Rngs(params=0, dropout=1)
    with nnx.split_rngs(rngs, splits=3) as backup:
        assert isinstance(backup, RngBackup) and len(backup) == 2
        assert rngs.params.key.shape == (3,) and rngs.dropout.key.shape == (3,)
        assert rngs.params.count.value.shape == (3,)
    assert rngs.params.key.shape == () and rngs.dropout.key.shape == ()
    # the parent stream advanced, so a second split gives other keys
    assert int(rngs.params.count.value) == 1
    with nnx.split_rngs(rngs, splits=3):
        second = _data(rngs.params.key.value)
    with nnx.split_rngs(nnx.Rngs(params=0, dropout=1), splits=3) as b:
        first = _data(b.saved[0][0].key.value)
    assert not np.array_equal(first, second)


def test_split_rngs_only_and_shapes():
    rngs = nnx.Rngs(params=0, dropout=1)
    with nnx.split_rngs(rngs, splits=(2, 3), only="dropout"):
        assert rngs.dropout.key.shape == (2, 3) and rngs.params.key.shape == ()
    with nnx.split_rngs(rngs, splits=1, squeeze=True):
        assert rngs.params.key.shape == ()
    with pytest.raises(ValueError, match="squeeze=True"):
        nnx.split_rngs(rngs, splits=2, squeeze=True)


def test_split_rngs_direct_and_restore_rngs():
    rngs = nnx.Rngs(0)
    backup = nnx.split_rngs(rngs, splits=4)
    assert rngs.default.key.shape == (4,)
    nnx.restore_rngs(backup)
    assert rngs.default.key.shape == ()
    backup = nnx.split_rngs(rngs, splits=4)
    nnx.restore_rngs(list(backup))  # a plain list of backups works too
    assert rngs.default.key.shape == ()


def test_split_rngs_decorator_splits_argument_streams_for_the_call():
    rngs = nnx.Rngs(0, params=1)

    @nnx.split_rngs(splits=5, only="params")
    def create(rngs):
        return rngs.params.key.shape, rngs.default.key.shape

    assert create(rngs) == ((5,), ())
    assert rngs.params.key.shape == ()
    assert create(rngs=rngs) == ((5,), ())  # keyword arguments too


def test_split_rngs_leaves_already_split_streams_alone():
    rngs = nnx.Rngs(0)
    with nnx.split_rngs(rngs, splits=5):
        keys = rngs.default.key.value
        with nnx.split_rngs(rngs, splits=5):
            assert rngs.default.key.value is keys
        assert rngs.default.key.value is keys
    assert rngs.default.key.shape == ()


# misuse: splitting a stream that is already split along another axis size
def test_split_rngs_mismatched_shape_names_stream():
    rngs = nnx.Rngs(0)
    with nnx.split_rngs(rngs, splits=5):
        with pytest.raises(
            RngError, match=r"'default' stream already has keys of shape \(5,\)"
        ):
            nnx.split_rngs(rngs, splits=3)


def test_split_rngs_failure_changes_nothing():
    rngs = nnx.Rngs(a=0, b=1)
    rngs.b.key.value = jax.random.split(jax.random.key(0), 5)
    rngs.b.count.value = jnp.zeros(5, jnp.uint32)
    with pytest.raises(RngError):
        nnx.split_rngs(rngs, splits=3)
    assert rngs.a.key.shape == ()


def test_split_rngs_with_vmap_creates_stacked_layers():
    @nnx.split_rngs(splits=4)
    def create(rngs):
        return jax.vmap(lambda k: jax.random.normal(jax.random.wrap_key_data(k), (2,)))(
            jax.random.key_data(rngs.params.key.value)
        )

    out = create(nnx.Rngs(params=0))
    assert out.shape == (4, 2)
    assert not np.array_equal(out[0], out[1])


# ----------------------------------------------------------------- fork_rngs
def test_fork_rngs_context_decorator_and_direct():
    rngs = nnx.Rngs(0)
    k0 = _data(rngs.default.key.value)
    with nnx.fork_rngs(rngs):
        assert not np.array_equal(_data(rngs.default.key.value), k0)
        assert rngs.default.key.shape == ()
    assert np.array_equal(_data(rngs.default.key.value), k0)

    @nnx.fork_rngs(split=2)
    def f(rngs):
        return rngs.default.key.shape

    assert f(rngs) == (2,)
    assert rngs.default.key.shape == ()
    backup = nnx.fork_rngs(rngs, split=3)
    assert rngs.default.key.shape == (3,)
    backup.restore()
    assert rngs.default.key.shape == ()


def test_backup_keys_restores_keys_and_counts():
    m = Model(nnx.Rngs(0))
    count = int(m.rngs.default.count.value)
    backup = nnx.backup_keys(m)
    m(jnp.ones((1, 2)))
    m.rngs.params()
    assert int(m.drop.rngs.count.value) == 1
    assert int(m.rngs.default.count.value) == count + 1
    backup.restore()
    assert int(m.drop.rngs.count.value) == 0
    assert int(m.rngs.default.count.value) == count


# ------------------------------------------------------------------ reseed
def test_reseed_makes_dropout_repeatable():
    m = Model(nnx.Rngs(0))
    x = jnp.ones((4, 2))
    nnx.reseed(m, dropout=3)
    y1 = m(x)
    nnx.reseed(m, dropout=3)
    y2 = m(x)
    np.testing.assert_array_equal(y1, y2)
    assert int(m.drop.rngs.count.value) == 1
    nnx.reseed(m, dropout=jax.random.key(3))  # keys work as well as ints
    np.testing.assert_array_equal(m(x), y1)


def test_reseed_resets_every_stream_with_the_tag():
    m = Model(nnx.Rngs(0, dropout=1))
    m(jnp.ones((1, 2)))
    nnx.reseed(m, dropout=5)
    assert (
        _data(m.drop.rngs.key.value).tolist()
        == _data(m.blocks[0].rngs.key.value).tolist()
    )
    assert (
        int(m.blocks[0].rngs.count.value) == 0 and int(m.rngs.dropout.count.value) == 0
    )


def test_reseed_to_construction_seed_repeats_first_call():
    # The example in flax.nnx.reseed's docstring.
    class M(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(2, 3, rngs=rngs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x):
            return self.dropout(self.linear(x))

    model = M(nnx.Rngs(params=0, dropout=42))
    x = jnp.ones((1, 2))
    y1 = model(x)
    nnx.reseed(model, dropout=42)
    np.testing.assert_array_equal(model(x), y1)


def test_reseed_matches_flax():
    fnnx = pytest.importorskip("flax.nnx")
    # a `dropout` stream, so Flax's stream has the same tag as ours
    ours = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
    theirs = fnnx.Dropout(0.5, rngs=fnnx.Rngs(dropout=0))
    x = jnp.ones(32)
    np.testing.assert_array_equal(ours(x), theirs(x))
    nnx.reseed(ours, dropout=7)
    fnnx.reseed(theirs, dropout=7)
    np.testing.assert_array_equal(ours(x), theirs(x))


# misuse: reseeding a stream the model does not have
def test_reseed_unknown_stream_names_it():
    m = Model(nnx.Rngs(params=0, dropout=1))
    key_before = _data(m.drop.rngs.key.value)
    with pytest.raises(
        RngError,
        match=r"no RNG stream named 'dropuot'; its streams are \['dropout', 'params'\]",
    ):
        nnx.reseed(m, dropout=1, dropuot=1)
    assert np.array_equal(_data(m.drop.rngs.key.value), key_before)  # nothing reseeded
    with pytest.raises(RngError, match="streams are none"):
        nnx.reseed(nnx.Linear(1, 1, rngs=nnx.Rngs(0)), dropout=0)


def test_reseed_default_policy_matches_shape():
    m = Model(nnx.Rngs(0))
    m.drop.rngs.key.value = jax.random.split(jax.random.key(0), 4)
    m.drop.rngs.count.value = jnp.zeros(4, jnp.uint32)
    nnx.reseed(m, dropout=3)
    assert m.drop.rngs.key.shape == (4,) and m.drop.rngs.count.value.shape == (4,)
    np.testing.assert_array_equal(
        _data(m.drop.rngs.key.value),
        _data(jax.random.split(jax.random.fold_in(jax.random.key(3), 0), 4)),
    )


# misuse: policy 'scalars_only' on a split stream
def test_reseed_scalars_only_names_path():
    m = Model(nnx.Rngs(0))
    m.blocks[0].rngs.key.value = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(
        RngError, match=r"'dropout' stream at blocks.0.rngs has keys of shape \(2,\)"
    ):
        nnx.reseed(m, dropout=1, policy="scalars_only")


def test_reseed_callable_policy_and_bad_policy():
    m = Model(nnx.Rngs(0))
    calls = []

    def policy(path, key, shape):
        calls.append((path, shape))
        return key

    nnx.reseed(m, dropout=1, policy=policy)
    assert sorted(calls) == [(("blocks", 0, "rngs"), ()), (("drop", "rngs"), ())]
    m.drop.rngs.key.value = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        nnx.reseed(m, dropout=1, policy="nope")


# --------------------------------------------------------------- with_rngs
def test_with_rngs_returns_a_modified_copy():
    rngs = nnx.Rngs(params=0, dropout=1)
    split = nnx.with_rngs(rngs, split=3, only="params")
    assert split.params.key.shape == (3,) and split.dropout.key.shape == ()
    assert rngs.params.key.shape == ()  # original untouched
    forked = nnx.with_rngs(rngs, fork=True)
    assert not np.array_equal(
        _data(forked.params.key.value), _data(rngs.params.key.value)
    )
    bcast = nnx.with_rngs(rngs, broadcast=2)
    keys = _data(bcast.dropout.key.value)
    assert keys.shape[0] == 2 and np.array_equal(keys[0], keys[1])
    same = nnx.with_rngs(rngs)
    assert same is not rngs and same.params.key.shape == ()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"split": {"params": 4}, "fork": "dropout"},
        {"split": {"params": 4, ...: (2, 3)}},
        {"broadcast": {"dropout": 3}, "split": {"params": 2}},
        {"split": 2, "only": "noise"},
    ],
)
def test_with_rngs_rules_give_flax_key_shapes(kwargs):
    from flax import nnx as fnnx

    def shapes(lib):
        rngs = lib.Rngs(params=0, dropout=1, noise=2)
        extra = {"graph": False} if lib is fnnx else {}
        new = lib.with_rngs(rngs, **kwargs, **extra)
        return {n: tuple(new[n].key.shape) for n in ("params", "dropout", "noise")}

    assert shapes(nnx) == shapes(fnnx)


def test_with_rngs_as_a_decorator_splits_the_arguments_streams():
    class M(nnx.Module):
        def __init__(self):
            self.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=1))
            self.rngs = nnx.Rngs(params=0)

    seen = []

    @nnx.with_rngs(split=5, only="dropout")
    def run(model, scale):
        seen.append((model.drop.rngs.key.shape, model.rngs.params.key.shape, scale))
        return model

    m = M()
    out = run(m, scale=2)
    assert seen == [((5,), (), 2)]
    assert out is not m and m.drop.rngs.key.shape == ()
