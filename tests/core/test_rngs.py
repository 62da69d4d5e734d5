"""Tests for ``ramie/_src/core/rngs.py``: Rngs and RngStream."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie as nnx
from ramie.errors import RngError


def _data(key):
    return np.asarray(jax.random.key_data(key))


def _same(k1, k2) -> bool:
    return bool(np.array_equal(_data(k1), _data(k2)))


def test_named_streams_give_fresh_keys():
    rngs = nnx.Rngs(params=0, dropout=1)
    k1, k2 = rngs.params(), rngs.params()
    assert k1.shape == () and jax.dtypes.issubdtype(k1.dtype, jax.dtypes.prng_key)
    assert not _same(k1, k2)
    assert int(rngs.params.count.value) == 2
    assert int(rngs.dropout.count.value) == 0
    assert _same(rngs["dropout"](), nnx.Rngs(dropout=1).dropout())


def test_keys_match_flax():
    fnnx = pytest.importorskip("flax.nnx")
    ours, theirs = nnx.Rngs(0, params=1), fnnx.Rngs(0, params=1)
    for _ in range(2):
        assert _same(ours.params(), theirs.params())
        assert _same(ours(), theirs())
    assert _same(ours.fork().default(), theirs.fork().default())


def test_unknown_stream_falls_back_to_default():
    rngs = nnx.Rngs(0)
    rngs.params()
    rngs["dropout"]()
    assert int(rngs.default.count.value) == 2
    assert "params" not in rngs and "default" in rngs


# misuse: a stream that does not exist and no default to fall back to
def test_missing_stream_without_default_names_stream():
    rngs = nnx.Rngs(params=0)
    with pytest.raises(
        AttributeError,
        match=r"No RngStream named 'dropout'.*no 'default'.*streams: \['params'\]",
    ):
        rngs.dropout()
    with pytest.raises(RngError, match="'dropout'"):
        rngs["dropout"]
    with pytest.raises(RngError, match="'default'"):
        rngs()
    assert isinstance(RngError("x"), ValueError)


def test_hasattr_on_missing_stream_is_false():
    rngs = nnx.Rngs(dropout=0)
    assert not hasattr(rngs, "params")
    assert getattr(rngs, "params", None) is None


def test_hasattr_on_missing_stream_matches_flax():
    fnnx = pytest.importorskip("flax.nnx")
    rngs = fnnx.Rngs(dropout=0)
    assert not hasattr(rngs, "params")  # what ramie should do too


def test_private_names_are_plain_attribute_errors():
    with pytest.raises(AttributeError):
        _ = nnx.Rngs(0)._private


def test_container_protocol():
    rngs = nnx.Rngs(params=0, dropout=1)
    assert len(rngs) == 2
    assert sorted(rngs) == ["dropout", "params"]
    assert sorted(name for name, _ in rngs.items()) == ["dropout", "params"]
    assert all(isinstance(s, nnx.RngStream) for _, s in rngs.items())


@pytest.mark.parametrize(
    "seed",
    [
        3,
        jax.random.key(3),
        jax.random.key_data(jax.random.key(3)),
        jnp.array(3),
        nnx.Variable(jax.random.key(3)),
    ],
    ids=["int", "typed-key", "raw-key-data", "int-array", "variable"],
)
def test_seed_forms(seed):
    assert _same(nnx.Rngs(seed)(), nnx.Rngs(3)())


def test_bad_seed():
    with pytest.raises(TypeError, match="int seed or a PRNG key"):
        nnx.Rngs("zero")


def test_rngs_from_rngs_shares_streams_and_accepts_streams():
    a = nnx.Rngs(0)
    b = nnx.Rngs(a)
    assert b.default is a.default
    s = nnx.RngStream(5, tag="noise")
    c = nnx.Rngs(noise=s)
    assert c.noise is s


def test_stream_variables_are_tagged():
    rngs = nnx.Rngs(dropout=1)
    assert isinstance(rngs.dropout.key, nnx.RngKey) and isinstance(
        rngs.dropout.count, nnx.RngCount
    )
    assert issubclass(nnx.RngKey, nnx.RngState) and issubclass(
        nnx.RngCount, nnx.RngState
    )
    assert rngs.dropout.key.tag == "dropout" and rngs.dropout.count.tag == "dropout"
    assert rngs.dropout.count.value.dtype == jnp.uint32


def test_fork_is_independent_and_advances_parent():
    rngs = nnx.Rngs(0, dropout=1)
    child = rngs.fork()
    assert sorted(child) == ["default", "dropout"]
    assert int(rngs.default.count.value) == 1
    assert not _same(child.default(), nnx.Rngs(0).default())
    split = nnx.Rngs(0).split(3)
    assert split.default.key.shape == (3,)
    assert nnx.Rngs(0).fork(split=(2, 2)).default.key.shape == (2, 2)


def test_stream_fork_split_and_broadcast():
    s = nnx.RngStream(0, tag="t")
    f = s.fork(tag="other")
    assert f.tag == "other" and f.key.shape == ()
    assert s.split(4).key.shape == (4,) and s.split(4).tag == "t"
    b = s.broadcast(3)
    assert b.key.shape == (3,)
    assert _same(b.key.value[0], b.key.value[2])
    assert nnx.Rngs(0).broadcast(2).default.key.shape == (2,)


def test_split_stream_cannot_produce_a_single_key():
    rngs = nnx.Rngs(0).split(3)
    with pytest.raises(RngError, match=r"'default'.*shape \(3,\)"):
        rngs()


def test_split_stream_works_under_vmap():
    rngs = nnx.Rngs(0).split(3)

    def draw(key_data):
        s = nnx.RngStream(jax.random.wrap_key_data(key_data), tag="x")
        return jax.random.key_data(s())

    out = jax.vmap(draw)(jax.random.key_data(rngs.default.key.value))
    assert out.shape[0] == 3
    assert not np.array_equal(out[0], out[1])


def test_samplers_on_rngs_and_streams():
    rngs = nnx.Rngs(0, params=1)
    assert rngs.normal((2, 3)).shape == (2, 3)
    assert rngs.uniform((4,), minval=1.0, maxval=2.0).min() >= 1.0
    assert rngs.bernoulli(0.5, (5,)).dtype == jnp.bool_
    assert int(rngs.default.count.value) == 3
    assert rngs.params.normal((2,)).shape == (2,)
    assert int(rngs.params.count.value) == 1
    np.testing.assert_array_equal(
        nnx.Rngs(0).normal((3,)), jax.random.normal(nnx.Rngs(0)(), (3,))
    )


@pytest.mark.parametrize("name", ["lecun_normal", "glorot_uniform", "he_normal"])
def test_initializer_methods_match_flax(name):
    from flax import nnx as fnnx

    def draw(lib):
        rngs = lib.Rngs(0, params=1)
        rngs.normal((1,))  # advance the default stream first
        a = getattr(rngs, name)()((3, 4))
        b = getattr(rngs.params, name)()((2, 5), jnp.float32)
        return a, b, int(rngs.default.count.get_value())

    (a, b, n), (fa, fb, fn) = draw(nnx), draw(fnnx)
    np.testing.assert_array_equal(a, fa)
    np.testing.assert_array_equal(b, fb)
    assert n == fn == 2


@pytest.mark.parametrize(
    "shape", [5, (2, 3), {"params": 4, ...: None}, {"dropout": None, ...: 3}]
)
def test_broadcast_and_split_per_stream_match_flax(shape):
    from flax import nnx as fnnx

    def shapes(lib, method):
        out = getattr(lib.Rngs(params=1, dropout=2), method)(shape)
        return {n: out[n].key.shape for n in ("params", "dropout")}

    for method in ("broadcast", "split"):
        assert shapes(nnx, method) == shapes(fnnx, method)
    b = nnx.Rngs(params=1).broadcast(3)
    assert bool((b.params.key[0] == b.params.key[2]).all())


def test_mutating_a_stream_under_another_trace_names_the_trace_level():
    rngs = nnx.Rngs(0)

    @jax.jit
    def f():
        with pytest.raises(
            nnx.errors.TraceContextError,
            match=r"(?s)Cannot mutate RngCount from a different trace level: "
            r"RngCount at default\.count.*ramie\.jit",
        ):
            rngs.params()

    f()


def test_rngs_created_inside_a_trace_cannot_be_used_outside():
    made = []

    @jax.jit
    def h():
        made.append(nnx.Rngs(1))

    h()
    with pytest.raises(
        nnx.errors.TraceContextError,
        match=r"Cannot mutate RngCount from a different trace level: .*created "
        r"under jax\.jit",
    ):
        made[0].params()


def test_rng_state_is_state():
    rngs = nnx.Rngs(params=0)
    graphdef, state = nnx.split(rngs)
    assert sorted(nnx.to_flat_state(state).paths) == [
        ("params", "count"),
        ("params", "key"),
    ]
    rngs.params()
    back = nnx.merge(graphdef, state)
    assert int(back.params.count.value) == 1  # live Variables, no copy
    assert sorted(nnx.state(rngs, nnx.RngKey).keys()) == ["params"]
    leaves = jax.tree.leaves(rngs)
    assert len(leaves) == 2


def test_rngs_work_inside_jit():
    rngs = nnx.Rngs(0)

    @jax.jit
    def f(state):
        r = nnx.merge(graphdef, state)
        key = r()
        return jax.random.normal(key, (2,)), nnx.state(r)

    graphdef, state = nnx.split(rngs)
    out, new_state = f(state)
    assert out.shape == (2,)
    assert int(new_state.default.count.value) == 1
    nnx.update(rngs, new_state)
    assert int(rngs.default.count.value) == 1


def test_dropout_keeps_its_own_forked_stream():
    rngs = nnx.Rngs(0, dropout=1)
    drop = nnx.Dropout(0.5, rngs=rngs)
    assert isinstance(drop.rngs, nnx.RngStream) and drop.rngs is not rngs.dropout
    assert drop.rngs.tag == "dropout" and drop.rngs.key.tag == "dropout"
    assert int(rngs.dropout.count.value) == 1  # the fork advanced the parent
    drop(jnp.ones(8))
    assert int(drop.rngs.count.value) == 1 and int(rngs.dropout.count.value) == 1
    noise = nnx.Dropout(0.5, rng_collection="noise", rngs=rngs)  # falls back to default
    assert noise.rngs.tag == "noise" and int(rngs.default.count.value) == 1
