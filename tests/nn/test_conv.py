"""Conv and ConvTranspose: shapes per padding mode, semantics, errors.

Numerical equality with Flax NNX for each configuration lives in the common
suite (``cases_linear_conv.py``); here: initial weights, output shapes,
properties that define the padding modes, dtypes, and error messages.
"""

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


def _out_shape(layer, shape):
    """The output shape of ``layer`` on float32 inputs of ``shape``, without
    compiling.
    """
    return jax.eval_shape(
        lambda x: layer(x), jax.ShapeDtypeStruct(shape, jnp.float32)
    ).shape


def test_conv_initialises_like_flax():
    ours = ramie.Conv(4, 6, (3, 2), feature_group_count=2, rngs=ramie.Rngs(4))
    theirs = nnx.Conv(4, 6, (3, 2), feature_group_count=2, rngs=nnx.Rngs(4))
    assert ours.kernel.shape == (3, 2, 2, 6)
    assert_trees_close(
        ramie.to_pure_dict(ramie.state(ours)),
        nnx.to_pure_dict(nnx.state(theirs)),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({"padding": "SAME"}, (2, 8, 4)),
        ({"padding": "same"}, (2, 8, 4)),
        ({"padding": "VALID"}, (2, 6, 4)),
        ({"padding": "CIRCULAR", "strides": 2}, (2, 4, 4)),
        ({"padding": "REFLECT"}, (2, 8, 4)),
        ({"padding": "CAUSAL", "kernel_dilation": 3}, (2, 8, 4)),
        ({"padding": 2}, (2, 10, 4)),
        ({"padding": [(0, 4)]}, (2, 10, 4)),
        ({"padding": 1, "input_dilation": 2}, (2, 15, 4)),
    ],
)
def test_conv_1d_output_shapes(kwargs, shape):
    layer = ramie.Conv(3, 4, 3, kernel_init=wave, rngs=ramie.Rngs(0), **kwargs)
    assert _out_shape(layer, (2, 8, 3)) == shape


def test_conv_batch_axes_are_flattened_and_restored():
    layer = ramie.Conv(3, 4, (3, 3), kernel_init=wave, rngs=ramie.Rngs(0))
    x = randn(2, 3, 5, 5, 3, seed=0)
    y = layer(x)
    assert y.shape == (2, 3, 5, 5, 4)
    assert_trees_close(y[1], layer(x[1]), rtol=1e-5, atol=1e-5)
    assert_trees_close(y[1, 2], layer(x[1, 2]), rtol=1e-5, atol=1e-5)  # no batch axis


def test_conv_causal_output_ignores_the_future():
    layer = ramie.Conv(1, 1, 3, padding="CAUSAL", kernel_init=wave, rngs=ramie.Rngs(0))
    x = randn(1, 10, 1, seed=0)
    changed = x.at[:, 6:].set(100.0)
    np.testing.assert_allclose(layer(x)[:, :6], layer(changed)[:, :6], rtol=1e-6)
    assert not np.allclose(layer(x)[:, 6:], layer(changed)[:, 6:])


def test_conv_circular_padding_is_periodic():
    layer = ramie.Conv(
        2, 3, (3,), padding="CIRCULAR", kernel_init=wave, rngs=ramie.Rngs(0)
    )
    x = randn(1, 7, 2, seed=0)
    # shifting a periodic signal shifts the output the same way
    assert_trees_close(
        layer(jnp.roll(x, 2, axis=1)),
        jnp.roll(layer(x), 2, axis=1),
        rtol=1e-5,
        atol=1e-5,
    )


def test_conv_reflect_padding_equals_manual_reflection():
    layer = ramie.Conv(
        2, 3, (3, 3), padding="REFLECT", kernel_init=wave, rngs=ramie.Rngs(0)
    )
    valid = ramie.clone(layer)
    valid.padding = "VALID"
    x = randn(1, 5, 6, 2, seed=0)
    padded = jnp.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    assert_trees_close(layer(x), valid(padded), rtol=1e-5, atol=1e-5)


def test_conv_depthwise_groups_convolve_channels_separately():
    layer = ramie.Conv(
        3,
        3,
        (3,),
        feature_group_count=3,
        use_bias=False,
        kernel_init=wave,
        rngs=ramie.Rngs(0),
    )
    assert layer.kernel.shape == (3, 1, 3)
    x = randn(1, 6, 3, seed=0)
    y = layer(x)
    x2 = x.at[..., 0].set(0.0)  # only output channel 0 may change
    np.testing.assert_allclose(layer(x2)[..., 1:], y[..., 1:], rtol=1e-6)


def test_conv_mask_zeroes_kernel_entries():
    mask = jnp.zeros((3, 3, 4)).at[0].set(1.0)
    layer = ramie.Conv(
        3,
        4,
        3,
        mask=mask,
        padding="VALID",
        use_bias=False,
        kernel_init=wave,
        rngs=ramie.Rngs(0),
    )
    plain = ramie.Conv(
        3, 4, 1, padding="VALID", use_bias=False, kernel_init=wave, rngs=ramie.Rngs(0)
    )
    plain.kernel.value = layer.kernel.value[:1]
    x = randn(1, 6, 3, seed=0)
    assert_trees_close(layer(x), plain(x[:, :4]), rtol=1e-5, atol=1e-5)


def test_conv_dtypes_and_metadata():
    layer = ramie.Conv(
        3,
        4,
        3,
        dtype=jnp.bfloat16,
        param_dtype=jnp.float16,
        kernel_metadata={"tag": "k"},
        kernel_init=wave,
        rngs=ramie.Rngs(0),
    )
    assert layer.kernel.dtype == jnp.float16 and layer.kernel.tag == "k"
    assert layer(jnp.ones((1, 5, 3))).dtype == jnp.bfloat16


def test_conv_configuration_errors():
    rngs = ramie.Rngs(0)
    with pytest.raises(ValueError, match=r"(?s)ramie.Conv\(padding='CAUSAL'\).*1-D"):
        ramie.Conv(3, 4, (3, 3), padding="CAUSAL", rngs=rngs)
    with pytest.raises(
        ValueError, match=r"(?s)padding='FULL'.*'SAME', 'SAME_LOWER', 'VALID'"
    ):
        ramie.Conv(3, 4, 3, padding="FULL", rngs=rngs)
    with pytest.raises(
        ValueError, match=r"(?s)invalid padding for 2 spatial.*\(1, 1\), \(1, 1\)"
    ):
        ramie.Conv(3, 4, (3, 3), padding=[(1, 1)], rngs=rngs)
    with pytest.raises(ValueError, match=r"strides=\(1, 2, 3\).*2 ints"):
        ramie.Conv(3, 4, (3, 3), strides=(1, 2, 3), rngs=rngs)
    with pytest.raises(
        ValueError, match=r"(?s)feature_group_count=2.*in_features=3.*divisible"
    ):
        ramie.Conv(3, 4, 3, feature_group_count=2, rngs=rngs)
    with pytest.raises(
        ValueError,
        match=r"mask of shape \(3, 3\) must have the kernel's shape \(3, 3, 4\)",
    ):
        ramie.Conv(3, 4, 3, mask=jnp.ones((3, 3)), rngs=rngs)
    with pytest.raises(
        ValueError, match=r"(?s)input dilation only with explicit padding.*\(1, 1\)"
    ):
        ramie.Conv(3, 4, 3, input_dilation=2, rngs=rngs)
    with pytest.raises(TypeError, match=r"kernel_size='3'"):
        ramie.Conv(3, 4, "3", rngs=rngs)


def test_conv_input_errors():
    layer = ramie.Conv(3, 4, (3, 3), kernel_init=wave, rngs=ramie.Rngs(0))
    with pytest.raises(
        ValueError, match=r"(?s)1 features.*in_features=3.*jnp.moveaxis"
    ):
        layer(jnp.ones((2, 5, 5, 1)))
    with pytest.raises(
        ValueError, match=r"(?s)\(5, 3\) have 2 dimension\(s\).*at least 3"
    ):
        layer(jnp.ones((5, 3)))


# -------------------------------------------------------------- ConvTranspose
def test_conv_transpose_initialises_like_flax():
    ours = ramie.ConvTranspose(3, 5, (2, 3), transpose_kernel=True, rngs=ramie.Rngs(1))
    theirs = nnx.ConvTranspose(3, 5, (2, 3), transpose_kernel=True, rngs=nnx.Rngs(1))
    assert ours.kernel.shape == (2, 3, 5, 3)
    assert_trees_close(
        ramie.to_pure_dict(ramie.state(ours)),
        nnx.to_pure_dict(nnx.state(theirs)),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({}, (2, 8, 4)),
        ({"strides": 2}, (2, 16, 4)),
        ({"strides": 2, "padding": "VALID"}, (2, 17, 4)),
        ({"strides": 3, "padding": "CIRCULAR"}, (2, 24, 4)),
        ({"padding": 0}, (2, 6, 4)),
        ({"kernel_dilation": 2, "padding": "VALID"}, (2, 12, 4)),
    ],
)
def test_conv_transpose_output_shapes(kwargs, shape):
    layer = ramie.ConvTranspose(3, 4, 3, kernel_init=wave, rngs=ramie.Rngs(0), **kwargs)
    assert _out_shape(layer, (2, 8, 3)) == shape


def test_conv_transpose_kernel_is_the_adjoint_of_conv():
    # <conv(x), y> == <conv_transpose(y), x> for the same kernel (transpose_kernel=True)
    conv = ramie.Conv(
        3,
        4,
        (3,),
        strides=2,
        padding="VALID",
        use_bias=False,
        kernel_init=wave,
        rngs=ramie.Rngs(0),
    )
    tconv = ramie.ConvTranspose(
        4,
        3,
        (3,),
        strides=2,
        padding="VALID",
        transpose_kernel=True,
        use_bias=False,
        kernel_init=wave,
        rngs=ramie.Rngs(1),
    )
    tconv.kernel.value = conv.kernel.value
    x = randn(1, 9, 3, seed=0)
    y = randn(*conv(x).shape, seed=1)
    np.testing.assert_allclose(jnp.vdot(conv(x), y), jnp.vdot(tconv(y), x), rtol=1e-4)


def test_conv_transpose_circular_is_periodic():
    layer = ramie.ConvTranspose(
        2, 2, (4,), strides=2, padding="CIRCULAR", kernel_init=wave, rngs=ramie.Rngs(0)
    )
    x = randn(1, 5, 2, seed=0)
    # shifting the input by one step shifts the output by one stride
    assert_trees_close(
        layer(jnp.roll(x, 1, axis=1)),
        jnp.roll(layer(x), 2, axis=1),
        rtol=1e-5,
        atol=1e-5,
    )


def test_conv_transpose_batch_axes_and_dtype():
    layer = ramie.ConvTranspose(
        3,
        4,
        (2, 2),
        strides=2,
        dtype=jnp.bfloat16,
        kernel_init=wave,
        rngs=ramie.Rngs(0),
    )
    x = jnp.ones((2, 3, 4, 4, 3))
    y = layer(x)
    assert y.shape == (2, 3, 8, 8, 4) and y.dtype == jnp.bfloat16
    assert layer(x[0, 0]).shape == (8, 8, 4)


def test_conv_transpose_errors():
    rngs = ramie.Rngs(0)
    for padding in ("CAUSAL", "REFLECT"):
        with pytest.raises(
            ValueError, match=rf"(?s)padding='{padding}'.*not supported by transposed"
        ):
            ramie.ConvTranspose(3, 4, 3, padding=padding, rngs=rngs)
    with pytest.raises(ValueError, match=r"kernel_dilation=\(1, 2\).*1 ints"):
        ramie.ConvTranspose(3, 4, 3, kernel_dilation=(1, 2), rngs=rngs)
    with pytest.raises(ValueError, match=r"mask of shape \(3, 3, 4\).*\(3, 4, 3\)"):
        ramie.ConvTranspose(
            3, 4, 3, mask=jnp.ones((3, 3, 4)), transpose_kernel=True, rngs=rngs
        )
    layer = ramie.ConvTranspose(
        3, 4, 3, transpose_kernel=True, kernel_init=wave, rngs=rngs
    )
    with pytest.raises(
        ValueError, match=r"(?s)ConvTranspose.*4 features.*in_features=3"
    ):
        layer(jnp.ones((2, 5, 4)))
