"""Tests for the SpectralNorm and WeightNorm wrappers.

Both rewrite the wrapped layer's weights in place on every call; the tests
compare outputs and the whole state after several calls with Flax NNX, check
the mathematical claims (unit spectral norm, unit column norms times scale),
the train/eval switch of SpectralNorm's statistics, and the errors.
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


X = randn(3, 4, seed=1)


def _pure(model):
    if isinstance(model, ramie.Module):
        return ramie.to_pure_dict(ramie.state(model))
    return nnx.to_pure_dict(nnx.state(model))


def _spectral(lib, rngs, **kwargs):
    return lib.SpectralNorm(lib.Linear(4, 5, rngs=rngs), rngs=rngs, **kwargs)


@pytest.mark.parametrize("n_steps", [1, 3])
def test_spectral_norm_matches_flax_over_several_calls(n_steps):
    ours = _spectral(ramie, ramie.Rngs(0), n_steps=n_steps)
    theirs = _spectral(nnx, nnx.Rngs(0), n_steps=n_steps)
    assert_trees_close(_pure(ours), _pure(theirs), rtol=0, atol=0)
    for _ in range(3):
        assert_trees_close(ours(X), theirs(X), rtol=1e-6, atol=1e-6)
    assert_trees_close(_pure(ours), _pure(theirs), rtol=1e-6, atol=1e-6)


def test_spectral_norm_finds_the_largest_singular_value():
    layer = _spectral(ramie, ramie.Rngs(0), n_steps=30)
    kernel = np.asarray(layer.layer_instance.kernel.value)
    bias = np.asarray(layer.layer_instance.bias.value)
    layer(X)
    top = np.linalg.svd(kernel, compute_uv=False)[0]
    np.testing.assert_allclose(
        layer.batch_stats[("kernel", "sigma")].value, top, rtol=1e-4
    )
    normalized = np.asarray(layer.layer_instance.kernel.value)
    np.testing.assert_allclose(
        np.linalg.svd(normalized, compute_uv=False)[0], 1.0, rtol=1e-4
    )
    np.testing.assert_allclose(normalized, kernel / top, rtol=1e-4, atol=1e-6)
    # vectors (the bias) are left alone
    np.testing.assert_array_equal(layer.layer_instance.bias.value, bias)


def test_spectral_norm_statistics_follow_train_and_eval():
    layer = _spectral(ramie, ramie.Rngs(0))
    assert layer.use_running_average is False  # update_stats=True by default
    stats = ramie.clone(ramie.state(layer, ramie.BatchStat))
    layer.eval()
    layer(X)
    assert_trees_close(ramie.state(layer, ramie.BatchStat), stats, rtol=0, atol=0)
    layer(X, update_stats=True)  # the call argument wins over eval()
    u_before = stats["batch_stats"][("kernel", "u")].value
    assert not np.allclose(layer.batch_stats[("kernel", "u")].value, u_before)
    frozen = _spectral(ramie, ramie.Rngs(0), update_stats=False)
    assert frozen.use_running_average is True
    frozen.train()
    assert frozen.use_running_average is False


def test_spectral_norm_flattens_or_rejects_higher_rank_weights():
    rngs = ramie.Rngs(0)
    inner = ramie.LinearGeneral((2, 3), 4, axis=(-2, -1), rngs=rngs)
    layer = ramie.SpectralNorm(inner, rngs=rngs)
    assert layer.batch_stats[("kernel", "u")].shape == (1, 4)
    assert layer(jnp.ones((5, 2, 3))).shape == (5, 4)
    with pytest.raises(
        ValueError,
        match=r"(?s)layer_instance\.kernel has shape \(2, 3, 4\)"
        r".*error_on_non_matrix=False",
    ):
        ramie.SpectralNorm(inner, error_on_non_matrix=True, rngs=rngs)


def test_spectral_norm_zero_steps_is_the_plain_layer():
    rngs = ramie.Rngs(0)
    inner = ramie.Linear(4, 5, rngs=rngs)
    expected = inner(X)
    layer = ramie.SpectralNorm(inner, n_steps=0, rngs=rngs)
    assert dict(layer.batch_stats) == {}
    assert_trees_close(layer(X), expected, rtol=0, atol=0)


def test_spectral_norm_reports_parameters_added_after_wrapping():
    rngs = ramie.Rngs(0)
    inner = ramie.Linear(4, 5, rngs=rngs)
    layer = ramie.SpectralNorm(inner, rngs=rngs)
    inner.extra = ramie.Param(jnp.ones((2, 2)))
    with pytest.raises(
        RuntimeError,
        match=r"(?s)no batch_stats\[\('extra', 'u'\)\].*layer_instance\.extra",
    ):
        layer(X)


def test_spectral_norm_gradients_reach_the_stored_kernel():
    layer = _spectral(ramie, ramie.Rngs(0))
    grads = ramie.grad(lambda m: jnp.sum(m(X) ** 2))(layer)
    assert set(grads.to_pure_dict()) == {"layer_instance"}
    assert float(jnp.abs(grads["layer_instance"]["kernel"].value).sum()) > 0


def _weight_norm(lib, rngs, **kwargs):
    return lib.WeightNorm(lib.Linear(4, 5, rngs=rngs), rngs=rngs, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"feature_axes": None},
        {"feature_axes": 0},
        {"use_scale": False, "epsilon": 1e-3},
    ],
)
def test_weight_norm_matches_flax_over_several_calls(kwargs):
    ours = _weight_norm(ramie, ramie.Rngs(0), **kwargs)
    theirs = _weight_norm(nnx, nnx.Rngs(0), **kwargs)
    assert_trees_close(_pure(ours), _pure(theirs), rtol=0, atol=0)
    for _ in range(2):
        assert_trees_close(ours(X), theirs(X), rtol=1e-6, atol=1e-6)
    assert_trees_close(_pure(ours), _pure(theirs), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs", [{"feature_axes": (-2, -1)}, {"use_scale": False, "feature_axes": 1}]
)
def test_weight_norm_of_a_3d_kernel_matches_flax(kwargs):
    def make(lib, rngs):
        return lib.WeightNorm(
            lib.LinearGeneral(3, (2, 4), rngs=rngs), rngs=rngs, **kwargs
        )

    ours, theirs = make(ramie, ramie.Rngs(0)), make(nnx, nnx.Rngs(0))
    x = randn(5, 3, seed=2)
    assert_trees_close(ours(x), theirs(x), rtol=1e-6, atol=1e-6)
    assert_trees_close(_pure(ours), _pure(theirs), rtol=1e-6, atol=1e-6)


def test_weight_norm_columns_have_the_norm_of_their_scale():
    layer = _weight_norm(ramie, ramie.Rngs(0))
    scale = layer.scales[("kernel",)]
    assert isinstance(scale, ramie.Param)
    scale.value = jnp.arange(1.0, 6.0)
    layer(X)
    norms = np.linalg.norm(np.asarray(layer.layer_instance.kernel.value), axis=0)
    np.testing.assert_allclose(norms, np.arange(1.0, 6.0), rtol=1e-5)


def test_weight_norm_scales_are_trained():
    layer = _weight_norm(ramie, ramie.Rngs(0))
    grads = ramie.grad(lambda m: jnp.sum(m(X) ** 2))(layer)
    assert grads["scales"][("kernel",)].value.shape == (5,)
    assert float(jnp.abs(grads["scales"][("kernel",)].value).sum()) > 0


def test_weight_norm_variable_filter_and_call_arguments():
    rngs = ramie.Rngs(0)
    inner = ramie.Linear(4, 5, rngs=rngs)
    layer = ramie.WeightNorm(
        inner, variable_filter=ramie.PathContains("bias"), rngs=rngs
    )
    assert list(layer.scales) == [("bias",)]
    kernel = np.asarray(inner.kernel.value)
    layer(X)
    np.testing.assert_array_equal(inner.kernel.value, kernel)  # not selected
    ref = nnx.WeightNorm(
        nnx.Linear(4, 5, rngs=nnx.Rngs(0)),
        variable_filter=nnx.PathContains("bias"),
        rngs=nnx.Rngs(0),
    )
    ref(X)
    assert_trees_close(_pure(layer), _pure(ref))
    # extra arguments go to the wrapped layer
    drop = ramie.WeightNorm(ramie.Dropout(0.5, rngs=rngs), rngs=rngs)
    assert_trees_close(drop(X, deterministic=True), X)


def test_weight_norm_rngs_use_matches_flax():
    # ones (the default) needs no key: the stream is not advanced, as in Flax,
    # so a layer built next gets the same weights as with Flax
    ours, theirs = ramie.Rngs(0), nnx.Rngs(0)
    _weight_norm(ramie, ours)
    _weight_norm(nnx, theirs)
    assert_trees_close(
        ramie.Linear(2, 2, rngs=ours).kernel.value,
        nnx.Linear(2, 2, rngs=theirs).kernel[...],
    )
    # a random scale_init works (it draws a key from `params`)
    layer = _weight_norm(
        ramie, ramie.Rngs(0), scale_init=ramie.initializers.normal(1.0)
    )
    assert not np.allclose(layer.scales[("kernel",)].value, 1.0)


def test_weight_norm_reports_parameters_added_after_wrapping():
    rngs = ramie.Rngs(0)
    inner = ramie.Linear(4, 5, rngs=rngs)
    layer = ramie.WeightNorm(inner, rngs=rngs)
    inner.sub = ramie.Linear(2, 2, rngs=rngs)
    with pytest.raises(
        RuntimeError,
        match=r"(?s)WeightNorm.__call__: there is no scales\[\('sub', 'kernel'\)\].*"
        r"layer_instance\.sub\.kernel",
    ):
        layer(X)


def test_wrappers_under_jit_update_the_wrapped_layer():
    layer = _spectral(ramie, ramie.Rngs(0))
    eager = ramie.clone(layer)
    y = ramie.jit(lambda m, x: m(x))(layer, X)
    assert_trees_close(y, eager(X), rtol=1e-6, atol=1e-6)
    assert_trees_close(ramie.state(layer), ramie.state(eager), rtol=1e-6, atol=1e-6)
