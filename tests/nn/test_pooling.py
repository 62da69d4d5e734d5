"""Pooling functions against Flax Linen's (which Flax NNX re-exports)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.linen import pooling as linen_pooling
from jax import lax

import ramie
from ramie.testing import assert_trees_close


def randn(*shape, seed=0):
    """Standard-normal float32 inputs drawn by NumPy (no compilation)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


X2D = randn(2, 7, 6, 3, seed=0)

CONFIGS = [
    {"window_shape": (2, 2)},
    {"window_shape": (3, 3), "strides": (2, 2)},
    {"window_shape": (3, 2), "strides": (2, 1), "padding": "SAME"},
    {"window_shape": (3, 3), "strides": (1, 2), "padding": ((1, 2), (0, 1))},
]


@pytest.mark.parametrize("name", ["avg_pool", "max_pool", "min_pool"])
@pytest.mark.parametrize("config", CONFIGS)
def test_pooling_matches_linen(name, config):
    ours = getattr(ramie, name)(X2D, **config)
    theirs = getattr(linen_pooling, name)(X2D, **config)
    assert_trees_close(ours, theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("padding", ["SAME", ((1, 1), (2, 0))])
def test_avg_pool_count_exclude_pad_matches_linen(padding):
    kwargs = {
        "window_shape": (3, 3),
        "strides": (2, 1),
        "padding": padding,
        "count_include_pad": False,
    }
    assert_trees_close(
        ramie.avg_pool(X2D, **kwargs),
        linen_pooling.avg_pool(X2D, **kwargs),
        rtol=1e-6,
        atol=1e-6,
    )


def test_pooling_without_batch_axis_matches_linen():
    x = X2D[0]
    for name in ("avg_pool", "max_pool", "min_pool"):
        ours = getattr(ramie, name)(x, (2, 3), strides=(1, 2), padding="SAME")
        theirs = getattr(linen_pooling, name)(x, (2, 3), strides=(1, 2), padding="SAME")
        assert_trees_close(ours, theirs, rtol=1e-6, atol=1e-6)
    kwargs = {"padding": "SAME", "count_include_pad": False}
    assert_trees_close(
        ramie.avg_pool(x, (3, 3), **kwargs),
        linen_pooling.avg_pool(x, (3, 3), **kwargs),
        rtol=1e-6,
        atol=1e-6,
    )


def test_pooling_with_several_batch_axes_pools_each_example():
    x = randn(2, 3, 8, 2, seed=1)  # two batch axes, 1-D windows
    y = ramie.max_pool(x, (2,), strides=(2,), padding=((1, 1),))
    assert y.shape == (2, 3, 5, 2)
    assert_trees_close(
        y[1, 2], ramie.max_pool(x[1, 2], (2,), strides=(2,), padding=((1, 1),))
    )


def test_pool_generic_reduction_matches_linen():
    ours = ramie.pool(X2D, 1.0, lax.mul, (2, 2), (2, 2), "VALID")
    theirs = linen_pooling.pool(X2D, 1.0, lax.mul, (2, 2), (2, 2), "VALID")
    assert_trees_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_integer_max_and_min_pool():
    x = jnp.arange(12, dtype=jnp.int32).reshape(1, 12, 1) - 6
    assert ramie.max_pool(x, (3,), strides=(3,), padding="SAME").tolist() == [
        [[-4], [-1], [2], [5]]
    ]
    assert ramie.min_pool(x, (4,), strides=(4,)).dtype == jnp.int32


def test_max_pool_gradient_flows_to_the_maximum():
    x = jnp.array([[1.0, 3.0, 2.0, 0.0]])[..., None]
    g = jax.grad(lambda x: ramie.max_pool(x, (2,), strides=(2,)).sum())(x)
    np.testing.assert_array_equal(g[0, :, 0], [0.0, 1.0, 1.0, 0.0])


def test_pooling_errors():
    with pytest.raises(
        ValueError, match=r"(?s)strides=\(2,\) must have one entry per window.*\(2, 2\)"
    ):
        ramie.avg_pool(X2D, (2, 2), strides=(2,))
    with pytest.raises(ValueError, match=r"(?s)too small for window_shape=\(2, 2, 2\)"):
        ramie.max_pool(jnp.ones((4, 4, 3)), (2, 2, 2))
    with pytest.raises(ValueError, match=r"padding='FULL'.*'SAME', 'VALID' or 2"):
        ramie.min_pool(X2D, (2, 2), padding="FULL")
    with pytest.raises(
        ValueError, match=r"expected 'SAME', 'VALID' or 2 \(low, high\) pairs"
    ):
        ramie.pool(X2D, 0.0, lax.add, (2, 2), None, ((1, 1),))
    with pytest.raises(TypeError, match=r"window_shape=2.*sequence of ints"):
        ramie.avg_pool(X2D, 2)


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_dtype_matches_linen(count_include_pad):
    x = X2D.astype(jnp.bfloat16)
    kwargs = {"padding": "SAME", "count_include_pad": count_include_pad}
    ours = ramie.avg_pool(x, (2, 2), **kwargs)
    theirs = linen_pooling.avg_pool(x, (2, 2), **kwargs)
    assert ours.dtype == theirs.dtype
    assert_trees_close(ours, theirs, rtol=0, atol=0)
