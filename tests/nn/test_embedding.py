"""Embed: lookup semantics, attend, dtypes, Flax-identical init and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases_linear_conv import wave  # cheap weights: JAX's random ops compile per shape
from flax import nnx

import ramie
from ramie.testing import assert_trees_close


def randn(*shape, seed=0):
    """Standard-normal float32 inputs drawn by NumPy (no compilation)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def test_embed_initialises_like_flax():
    ours = ramie.Embed(7, 3, rngs=ramie.Rngs(2))
    theirs = nnx.Embed(7, 3, rngs=nnx.Rngs(2))
    assert_trees_close(ours.embedding.value, theirs.embedding[...], rtol=0, atol=0)


def test_embed_gathers_rows_and_negative_ids_count_from_the_end():
    embed = ramie.Embed(5, 3, embedding_init=wave, rngs=ramie.Rngs(0))
    table = np.asarray(embed.embedding.value)
    ids = jnp.array([[0, 4], [-1, 2]])
    np.testing.assert_array_equal(embed(ids), table[np.asarray(ids)])


def test_embed_out_of_range_ids_give_nan():
    embed = ramie.Embed(5, 3, embedding_init=wave, rngs=ramie.Rngs(0))
    assert bool(jnp.isnan(embed(jnp.array([5]))).all())


def test_embed_single_row_broadcasts():
    embed = ramie.Embed(1, 3, embedding_init=wave, rngs=ramie.Rngs(0))
    y = embed(jnp.zeros((2, 4), jnp.int32))
    assert y.shape == (2, 4, 3)
    np.testing.assert_array_equal(y[1, 3], embed.embedding.value[0])


def test_embed_accepts_unsigned_and_scalar_ids():
    embed = ramie.Embed(5, 3, embedding_init=wave, rngs=ramie.Rngs(0))
    assert embed(jnp.array([1, 2], jnp.uint8)).shape == (2, 3)
    assert embed(jnp.array(3)).shape == (3,)


def test_embed_attend_is_dot_with_the_table():
    embed = ramie.Embed(6, 4, embedding_init=wave, rngs=ramie.Rngs(0))
    q = randn(2, 3, 4, seed=1)
    assert_trees_close(
        embed.attend(q), q @ embed.embedding.value.T, rtol=1e-5, atol=1e-5
    )


def test_embed_dtypes():
    embed = ramie.Embed(
        6, 4, param_dtype=jnp.bfloat16, embedding_init=wave, rngs=ramie.Rngs(0)
    )
    assert embed.dtype == jnp.bfloat16  # defaults to the table's dtype
    assert embed(jnp.array([1])).dtype == jnp.bfloat16
    embed = ramie.Embed(
        6, 4, dtype=jnp.float16, embedding_init=wave, rngs=ramie.Rngs(0)
    )
    assert embed(jnp.array([1])).dtype == jnp.float16
    assert embed.attend(jnp.ones((2, 4))).dtype == jnp.float16


def test_embed_metadata_and_custom_init():
    embed = ramie.Embed(
        4,
        2,
        embedding_init=jax.nn.initializers.ones,
        embedding_metadata={"tag": "vocab"},
        rngs=ramie.Rngs(0),
    )
    assert embed.embedding.tag == "vocab"
    np.testing.assert_array_equal(embed.embedding.value, np.ones((4, 2)))


def test_embed_errors():
    embed = ramie.Embed(5, 3, embedding_init=wave, rngs=ramie.Rngs(0))
    with pytest.raises(
        ValueError, match=r"(?s)integer ids, got dtype float32.*astype\(jnp.int32\)"
    ):
        embed(jnp.ones((2,)))
    with pytest.raises(
        ValueError, match=r"(?s)attend: query of shape \(2, 4\) must end in features=3"
    ):
        embed.attend(jnp.ones((2, 4)))


def test_embed_ids_under_jit_and_grad():
    embed = ramie.Embed(5, 3, embedding_init=wave, rngs=ramie.Rngs(0))
    ids = jnp.array([0, 0, 2])

    def loss(m):
        return m(ids).sum()

    grads = ramie.grad(loss)(embed)
    # row 0 is used twice, row 2 once, the rest not at all
    np.testing.assert_array_equal(
        grads["embedding"].value[:, 0], [2.0, 0.0, 1.0, 0.0, 0.0]
    )
