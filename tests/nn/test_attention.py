"""Tests for the attention functions, the mask helpers and MultiHeadAttention.

Numbers are compared with Flax NNX (same seeds, same dropout keys); the decode
cache is checked against a full causal pass, eagerly and under ``ramie.jit``;
dropout must be on after ``train()`` and off after ``eval()``; errors are
checked for the text that tells the user what to do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import ramie
from ramie.testing import assert_trees_close


def randn(*shape: int, seed: int = 0) -> jax.Array:
    """Standard-normal test data from NumPy: jax.random compiles a kernel per
    shape, which costs seconds for arrays of rank 3 and more on CPU."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


Q = randn(2, 3, 4, 8, seed=0)  # [batch, q_length, heads, depth]
KV = randn(2, 5, 4, 8, seed=1)
KV2 = randn(2, 5, 2, 8, seed=2)  # two kv heads: grouped-query
PAD = jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
MASK = ramie.make_attention_mask(jnp.ones((2, 3)), PAD)  # (2, 1, 3, 5)
BIAS = randn(2, 4, 3, 5, seed=3)


# ------------------------------------------------------------ functional API
@pytest.mark.parametrize("module", [False, True], ids=["fused", "weights-path"])
@pytest.mark.parametrize(
    "kv, kwargs",
    [
        (KV, {}),
        (KV, {"mask": MASK}),
        (KV, {"bias": BIAS, "is_causal": True}),
        (KV2, {"mask": MASK, "is_causal": True}),
        (KV2, {"bias": BIAS}),
    ],
    ids=["plain", "mask", "bias-causal", "gqa-mask-causal", "gqa-bias"],
)
def test_dot_product_attention_matches_flax(kv, kwargs, module):
    # with a module Flax takes the explicit-weights path, otherwise jax.nn's
    ours_mod = ramie.Module() if module else None
    theirs_mod = nnx.Module() if module else None
    got = ramie.dot_product_attention(Q, kv, kv, module=ours_mod, **kwargs)
    want = nnx.dot_product_attention(Q, kv, kv, module=theirs_mod, **kwargs)
    assert got.shape == (2, 3, 4, 8)
    assert_trees_close(got, want, rtol=1e-5, atol=1e-6)
    if module:
        sown = ours_mod.attention_weights.value
        assert len(sown) == 1 and sown[0].shape == (2, 4, 3, 5)
        assert_trees_close(
            sown[0], theirs_mod.attention_weights.get_value()[0], rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize(
    "shape", [(3, 4, 8), (2, 2, 3, 4, 8)], ids=["unbatched", "two-batch-axes"]
)
def test_dot_product_attention_batch_axes(shape):
    q = randn(*shape, seed=0)
    kv = randn(*shape[:-3], 5, 4, 8, seed=1)
    mask = jnp.ones(shape[:-3] + (1, 3, 5), bool).at[..., -1].set(False)
    got = ramie.dot_product_attention(q, kv, kv, mask=mask)
    assert got.shape == shape
    assert_trees_close(
        got, nnx.dot_product_attention(q, kv, kv, mask=mask), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("broadcast", [True, False])
@pytest.mark.parametrize("kv", [KV, KV2], ids=["mha", "gqa"])
def test_dropout_matches_flax_for_the_same_key(broadcast, kv):
    kwargs = dict(
        dropout_rate=0.4, dropout_rng=jax.random.key(7), broadcast_dropout=broadcast
    )
    got = ramie.dot_product_attention_weights(Q, kv, mask=MASK, **kwargs)
    want = nnx.nn.attention.dot_product_attention_weights(Q, kv, mask=MASK, **kwargs)
    assert_trees_close(got, want, rtol=1e-6, atol=1e-6)
    if broadcast:  # one dropout mask for every batch entry and head
        zeros = np.asarray(ramie.dot_product_attention_weights(Q, kv, **kwargs)) == 0
        assert zeros.any() and (zeros == zeros[:1, :1]).all()
    out = ramie.dot_product_attention(Q, kv, kv, **kwargs)
    assert_trees_close(
        out, nnx.dot_product_attention(Q, kv, kv, **kwargs), rtol=1e-5, atol=1e-6
    )
    # deterministic turns dropout off: the fused result again
    off = ramie.dot_product_attention(Q, kv, kv, deterministic=True, **kwargs)
    assert_trees_close(
        off, ramie.dot_product_attention(Q, kv, kv), rtol=1e-5, atol=1e-6
    )


def test_weights_are_a_distribution_over_unmasked_keys():
    w = np.asarray(ramie.dot_product_attention_weights(Q, KV, mask=MASK))
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    assert (w[0, :, :, 4] == 0).all() and (w[1, :, :, 3:] == 0).all()


def test_dtype_argument_sets_the_computation_dtype():
    w = ramie.dot_product_attention_weights(Q, KV, dtype=jnp.bfloat16)
    assert w.dtype == jnp.bfloat16
    out = ramie.dot_product_attention(Q.astype(jnp.bfloat16), KV, KV)
    assert out.dtype == jnp.float32  # promoted to the widest input


def test_float16_fused_attention_matches_flax():
    # jax.nn picks an f16 dot algorithm that CPU refuses only at compile time.
    q, kv = Q.astype(jnp.float16), KV.astype(jnp.float16)
    ours = ramie.dot_product_attention(q, kv, kv)
    ref = nnx.dot_product_attention(q, kv, kv)
    assert ours.dtype == jnp.float16
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: ramie.dot_product_attention(Q, KV[0], KV[0]),
            r"(?s)same rank.*key\[None\]",
        ),
        (lambda: ramie.dot_product_attention(Q, KV[:1], KV[:1]), r"same batch dims"),
        (
            lambda: ramie.dot_product_attention_weights(Q, KV[..., :4]),
            r"depths must match, found 8 and 4",
        ),
        (
            lambda: ramie.dot_product_attention(Q, KV, KV[:, :4]),
            r"lengths must match, found 5 and 4",
        ),
        (
            lambda: ramie.dot_product_attention(Q, KV[:, :, :3], KV[:, :, :3]),
            r"(?s)must be a multiple of the key heads.*3 must divide 4",
        ),
        (
            lambda: ramie.dot_product_attention_weights(Q, KV, dropout_rate=0.1),
            r"no dropout_rng was given",
        ),
    ],
    ids=["rank", "batch", "depth", "length", "heads", "dropout-rng"],
)
def test_attention_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- mask helpers
def test_mask_helpers_match_flax():
    q = jnp.array([[1, 1, 0]])
    k = jnp.array([[1, 0, 1, 1]])
    for ours, theirs in [
        (ramie.make_attention_mask(q, k), nnx.make_attention_mask(q, k)),
        (
            ramie.make_attention_mask(
                q, k, jnp.greater_equal, extra_batch_dims=2, dtype=jnp.int32
            ),
            nnx.make_attention_mask(
                q, k, jnp.greater_equal, extra_batch_dims=2, dtype=jnp.int32
            ),
        ),
        (
            ramie.make_causal_mask(k, extra_batch_dims=1),
            nnx.make_causal_mask(k, extra_batch_dims=1),
        ),
    ]:
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)
    causal = ramie.make_causal_mask(k)
    pad = ramie.make_attention_mask(jnp.ones((1, 4)), k)
    both = ramie.combine_masks(causal, None, pad, dtype=jnp.bool_)
    assert both.dtype == jnp.bool_
    np.testing.assert_array_equal(
        both, nnx.combine_masks(causal, None, pad, dtype=jnp.bool_)
    )


def test_combine_masks_edge_cases():
    assert ramie.combine_masks(None, None) is None
    with pytest.raises(
        ValueError, match=r"(?s)same rank, found ranks \(4, 2\).*mask\[None, None\]"
    ):
        ramie.combine_masks(MASK, jnp.ones((3, 5)))


# ------------------------------------------------------------ MultiHeadAttention
X = randn(2, 6, 8, seed=4)


def _mha(lib, rngs, *args, **kwargs):
    return lib.MultiHeadAttention(*args, rngs=rngs, **kwargs)


def test_parameters_match_flax_names_shapes_and_values():
    kwargs = dict(
        qkv_features=12,
        out_features=5,
        num_kv_heads=1,
        in_kv_features=6,
        normalize_qk=True,
    )
    kwargs.update(
        kernel_init=nnx.initializers.normal(1.0), out_bias_init=nnx.initializers.ones
    )
    ours = _mha(ramie, ramie.Rngs(0), 2, 8, **kwargs)
    theirs = _mha(nnx, nnx.Rngs(0), 2, 8, **kwargs)
    pure = ramie.to_pure_dict(ramie.state(ours))
    assert jax.tree.map(jnp.shape, pure) == {
        "key": {"bias": (1, 6), "kernel": (6, 1, 6)},
        "key_ln": {"scale": (6,)},
        "out": {"bias": (5,), "kernel": (2, 6, 5)},
        "query": {"bias": (2, 6), "kernel": (8, 2, 6)},
        "query_ln": {"scale": (6,)},
        "value": {"bias": (1, 6), "kernel": (6, 1, 6)},
    }
    assert_trees_close(pure, nnx.to_pure_dict(nnx.state(theirs)), rtol=0, atol=0)
    y = randn(2, 4, 6, seed=5)
    assert_trees_close(
        ours(X, y, decode=False), theirs(X, y, decode=False), rtol=1e-5, atol=1e-6
    )


def test_metadata_reaches_the_projections():
    mha = _mha(
        ramie,
        ramie.Rngs(0),
        2,
        8,
        kernel_metadata={"sharding": ("embed", "heads", None)},
        out_kernel_metadata={"sharding": ("heads", None, "embed")},
        normalize_qk=True,
        query_ln_scale_metadata={"sharding": ("qk",)},
    )
    assert mha.query.kernel.get_metadata("sharding_names") == ("embed", "heads", None)
    assert mha.value.kernel.get_metadata("sharding_names") == ("embed", "heads", None)
    assert mha.out.kernel.get_metadata("sharding_names") == ("heads", None, "embed")
    assert mha.query_ln.scale.get_metadata("sharding_names") == ("qk",)
    assert not mha.key_ln.scale.has_metadata("sharding_names")


def test_inputs_default_to_self_attention():
    mha = _mha(ramie, ramie.Rngs(0), 2, 8)
    assert_trees_close(mha(X), mha(X, X))
    assert_trees_close(mha(X, X), mha(X, X, X))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"num_kv_heads": 1, "normalize_qk": True}],
    ids=["mha", "mqa-normalize-qk"],
)
def test_decode_one_token_at_a_time_equals_a_causal_pass(kwargs):
    mha = _mha(ramie, ramie.Rngs(0), 2, 8, **kwargs)
    full = mha(X, mask=ramie.make_causal_mask(X[..., 0]))
    assert_trees_close(mha(X, is_causal=True), full, rtol=1e-6, atol=1e-6)
    mha.init_cache(X.shape)
    steps = [mha(X[:, i : i + 1], decode=True) for i in range(X.shape[1])]
    assert_trees_close(jnp.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-5)
    assert int(mha.cache_index.value) == X.shape[1]
    # the cache holds exactly the (normalised) keys of the full sequence
    keys = mha.key(X) if mha.key_ln is None else mha.key_ln(mha.key(X))
    assert_trees_close(mha.cached_key.value, keys, rtol=1e-6, atol=1e-6)


def test_decode_under_jit_with_a_shorter_prompt_and_flax_equality():
    ours = _mha(ramie, ramie.Rngs(0), 2, 8, decode=True)
    theirs = _mha(nnx, nnx.Rngs(0), 2, 8, decode=True)
    ours.init_cache((2, 10, 8))  # room for more tokens than we feed
    theirs.init_cache((2, 10, 8))
    step = ramie.jit(lambda m, t: m(t))
    got = jnp.concatenate([step(ours, X[:, i : i + 1]) for i in range(6)], axis=1)
    want = jnp.concatenate([theirs(X[:, i : i + 1]) for i in range(6)], axis=1)
    assert_trees_close(got, want, rtol=1e-5, atol=1e-6)
    assert_trees_close(
        ramie.to_pure_dict(ramie.state(ours, ramie.Cache)),
        nnx.to_pure_dict(nnx.state(theirs, nnx.Cache)),
        rtol=1e-6,
        atol=1e-6,
    )
    full = _mha(ramie, ramie.Rngs(0), 2, 8)(X, is_causal=True)
    assert_trees_close(got, full, rtol=1e-5, atol=1e-5)


def test_decode_with_a_padding_mask_matches_flax():
    mask = ramie.make_attention_mask(
        jnp.ones((2, 1)), jnp.ones((2, 6)).at[1, :2].set(0)
    )
    ours = _mha(ramie, ramie.Rngs(0), 2, 8, decode=True)
    theirs = _mha(nnx, nnx.Rngs(0), 2, 8, decode=True)
    ours.init_cache(X.shape)
    theirs.init_cache(X.shape)
    for i in range(3):
        t = X[:, i : i + 1]
        assert_trees_close(
            ours(t, mask=mask), theirs(t, mask=mask), rtol=1e-5, atol=1e-6
        )


def test_decode_errors():
    mha = _mha(ramie, ramie.Rngs(0), 2, 8)
    with pytest.raises(
        ValueError, match=r"(?s)cache is not initialized.*mha\.init_cache\("
    ):
        mha(X[:, :1], decode=True)
    mha.init_cache(X.shape)
    with pytest.raises(
        ValueError,
        match=r"(?s)expects keys of shape \(2, 1, 2, 4\), found \(2, 3, 2, 4\)",
    ):
        mha(X[:, :3], decode=True)


def test_init_cache_and_set_view():
    mha = _mha(ramie, ramie.Rngs(0), 4, 8, num_kv_heads=2)
    mha.init_cache((3, 7, 8), dtype=jnp.bfloat16)
    assert mha.cached_key.shape == mha.cached_value.shape == (3, 7, 2, 2)
    assert mha.cached_key.dtype == jnp.bfloat16 and mha.cache_index.dtype == jnp.int32
    assert isinstance(mha.cached_key, ramie.Cache)
    fresh = _mha(ramie, ramie.Rngs(0), 4, 8, num_kv_heads=2)
    assert fresh.set_view(
        deterministic=True, decode=True, batch_size=(2, 3), max_length=5, other=1
    ) == {"other": 1}
    assert fresh.deterministic is True and fresh.decode is True
    assert fresh.cached_value.shape == (2, 3, 5, 2, 2)
    with pytest.raises(TypeError, match=r"'max_length' is needed"):
        _mha(ramie, ramie.Rngs(0), 2, 8).set_view(decode=True, batch_size=2)
    # decode without cache sizes only sets the flag
    plain = _mha(ramie, ramie.Rngs(0), 2, 8)
    plain.set_view(decode=True)
    assert plain.decode is True and plain.cached_key is None


def test_decode_none_means_no_cache():
    # Flax raises when decode is None everywhere; ramie treats it as False.
    mha = _mha(ramie, ramie.Rngs(0), 2, 8)
    assert mha.decode is None
    assert_trees_close(mha(X), mha(X, decode=False))


def test_dropout_is_on_in_train_and_off_in_eval():
    mha = _mha(ramie, ramie.Rngs(0, dropout=1), 2, 8, dropout_rate=0.5)
    reference = _mha(ramie, ramie.Rngs(0, dropout=1), 2, 8)  # same weights, no dropout
    assert mha.deterministic is None
    mha.train()
    assert mha.deterministic is False
    a, b = mha(X), mha(X)
    assert not np.allclose(a, b)  # a fresh mask per call
    assert not np.allclose(a, reference(X))
    mha.eval()
    assert mha.deterministic is True
    assert_trees_close(mha(X), reference(X), rtol=1e-6, atol=1e-6)
    # the call argument wins over the attribute
    assert not np.allclose(mha(X, deterministic=False), reference(X))


def test_dropout_matches_flax_with_kept_and_passed_rngs():
    ours = _mha(ramie, ramie.Rngs(0), 2, 8, dropout_rate=0.3, deterministic=False)
    theirs = _mha(nnx, nnx.Rngs(0), 2, 8, dropout_rate=0.3, deterministic=False)
    assert_trees_close(
        ours(X, decode=False), theirs(X, decode=False), rtol=1e-5, atol=1e-6
    )
    got = ours(X, decode=False, rngs=ramie.Rngs(dropout=3))
    want = theirs(X, decode=False, rngs=nnx.Rngs(dropout=3))
    assert_trees_close(got, want, rtol=1e-5, atol=1e-6)
    assert_trees_close(
        ramie.to_pure_dict(ramie.state(ours)), nnx.to_pure_dict(nnx.state(theirs))
    )


def test_dropout_errors():
    undecided = _mha(ramie, ramie.Rngs(0), 2, 8, dropout_rate=0.1)
    with pytest.raises(
        ValueError, match=r"(?s)deterministic is None.*model\.train\(\)"
    ):
        undecided(X)
    no_rngs = _mha(
        ramie,
        ramie.Rngs(0),
        2,
        8,
        dropout_rate=0.1,
        keep_rngs=False,
        deterministic=False,
    )
    assert no_rngs.rngs is None
    with pytest.raises(ValueError, match=r"(?s)keep_rngs=False.*mha\(x, rngs=rngs\)"):
        no_rngs(X)
    assert no_rngs(X, rngs=ramie.Rngs(dropout=0)).shape == X.shape
    assert no_rngs(X, rngs=jax.random.key(0)).shape == X.shape


def test_sow_weights_stores_attention_weights():
    mha = _mha(ramie, ramie.Rngs(0), 2, 8)
    mha(X, sow_weights=True, is_causal=True)
    (weights,) = mha.attention_weights.value
    assert isinstance(mha.attention_weights, ramie.Intermediate)
    assert weights.shape == (2, 2, 6, 6)
    assert float(jnp.triu(weights, 1).max()) == 0.0
    mha(X)  # without sow_weights nothing is added
    assert len(mha.attention_weights.value) == 1


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((3, 8), {}, r"num_heads must divide qkv_features.*qkv_features=6"),
        ((4, 8), {"num_kv_heads": 3}, r"num_kv_heads must divide num_heads"),
    ],
)
def test_constructor_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=f"(?s){match}"):
        _mha(ramie, ramie.Rngs(0), *args, **kwargs)


def test_call_errors():
    mha = _mha(ramie, ramie.Rngs(0), 2, 8)
    with pytest.raises(
        ValueError,
        match=r"(?s)inputs_v was given without inputs_k.*mha\(inputs_q, inputs_kv\)",
    ):
        mha(X, inputs_v=X)
    with pytest.raises(ValueError, match=r"inputs_q has 6 features.*in_features=8"):
        mha(X[..., :6])
