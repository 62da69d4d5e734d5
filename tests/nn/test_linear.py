"""LinearGeneral and Einsum: shapes, Flax-identical initialisation, errors.

The common suite (``cases_linear_conv.py``) already compares outputs with Flax
NNX; these tests cover what it does not: parameter values right after
construction, dtype handling, metadata, and the error messages.
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


def _same_init(ours, theirs):
    assert_trees_close(
        ramie.to_pure_dict(ramie.state(ours)),
        nnx.to_pure_dict(nnx.state(theirs)),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize(
    "args, kwargs",
    [
        (((2, 3), (4, 5)), {"axis": (-2, -1)}),
        ((3, (4, 5)), {"batch_axis": {0: 2}}),
        (((2, 3), 4), {"axis": (0, 2), "bias_init": jax.nn.initializers.normal()}),
    ],
)
def test_linear_general_initialises_like_flax(args, kwargs):
    ours = ramie.LinearGeneral(*args, rngs=ramie.Rngs(3), **kwargs)
    theirs = nnx.LinearGeneral(*args, rngs=nnx.Rngs(3), **kwargs)
    _same_init(ours, theirs)


def test_linear_general_equals_linear_for_one_axis():
    x = randn(2, 3, 4)
    general = ramie.LinearGeneral(4, 5, rngs=ramie.Rngs(0))
    linear = ramie.Linear(4, 5, rngs=ramie.Rngs(0))
    assert_trees_close(general(x), linear(x), rtol=1e-6, atol=1e-6)


def test_linear_general_kernel_init_sees_the_flattened_matrix():
    seen = []

    def init(key, shape, dtype):
        seen.append(shape)
        return jnp.zeros(shape, dtype)

    layer = ramie.LinearGeneral(
        (2, 3), (4, 5), axis=(-2, -1), kernel_init=init, rngs=ramie.Rngs(0)
    )
    assert seen == [(6, 20)]
    assert layer.kernel.shape == (2, 3, 4, 5)


def test_linear_general_keeps_initializer_metadata():
    init = ramie.with_metadata(wave, tag="wrapped")
    layer = ramie.LinearGeneral(4, (2, 3), kernel_init=init, rngs=ramie.Rngs(0))
    assert layer.kernel.shape == (4, 2, 3)
    assert layer.kernel.get_metadata("tag") == "wrapped"


def test_linear_general_batch_axis_gives_each_index_its_own_weights():
    layer = ramie.LinearGeneral(
        3, 2, batch_axis={0: 4}, kernel_init=wave, bias_init=wave, rngs=ramie.Rngs(0)
    )
    x = randn(4, 5, 3)
    expected = jnp.stack(
        [x[i] @ layer.kernel.value[i] + layer.bias.value[i] for i in range(4)]
    )
    assert_trees_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_linear_general_dtype_and_metadata():
    layer = ramie.LinearGeneral(
        4,
        3,
        dtype=jnp.bfloat16,
        param_dtype=jnp.float16,
        kernel_metadata={"tag": "k"},
        kernel_init=wave,
        rngs=ramie.Rngs(0),
    )
    assert layer.kernel.dtype == jnp.float16 and layer.kernel.tag == "k"
    assert layer(jnp.ones((2, 4))).dtype == jnp.bfloat16


def test_linear_general_use_bias_false_has_no_bias_param():
    layer = ramie.LinearGeneral(
        4, 3, use_bias=False, kernel_init=wave, rngs=ramie.Rngs(0)
    )
    assert layer.bias is None
    assert set(ramie.to_pure_dict(ramie.state(layer))) == {"kernel"}


def test_linear_general_errors_name_the_api_and_the_fix():
    with pytest.raises(
        ValueError, match=r"(?s)LinearGeneral.*same length.*axis=\(-2, -1\)"
    ):
        ramie.LinearGeneral((2, 3), 4, axis=-1, rngs=ramie.Rngs(0))
    with pytest.raises(ValueError, match=r"batch_axis keys \(1,\).*leading axes"):
        ramie.LinearGeneral(3, 4, batch_axis={1: 2}, rngs=ramie.Rngs(0))
    layer = ramie.LinearGeneral(
        (2, 3), 4, axis=(-2, -1), kernel_init=wave, rngs=ramie.Rngs(0)
    )
    with pytest.raises(
        ValueError, match=r"sizes \(3, 2\).*expected in_features \(2, 3\)"
    ):
        layer(jnp.ones((5, 3, 2)))
    with pytest.raises(ValueError, match=r"no axes"):
        layer(jnp.ones(3))


# --------------------------------------------------------------------- Einsum
def test_einsum_initialises_like_flax():
    ours = ramie.Einsum("nta,hab->nthb", (8, 2, 4), (8, 4), rngs=ramie.Rngs(5))
    theirs = nnx.Einsum("nta,hab->nthb", (8, 2, 4), (8, 4), rngs=nnx.Rngs(5))
    _same_init(ours, theirs)


def test_einsum_matches_jnp_einsum_and_broadcasts_bias():
    layer = ramie.Einsum(
        "nta,hab->nthb",
        (3, 2, 4),
        (3, 4),
        kernel_init=wave,
        bias_init=wave,
        rngs=ramie.Rngs(0),
    )
    x = randn(5, 6, 2)
    expected = jnp.einsum("nta,hab->nthb", x, layer.kernel.value) + layer.bias.value
    assert_trees_close(layer(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "eq, kernel_shape, bias_shape, x_shape",
    [
        ("...a,ab->...b", (3, 4), (4,), (2, 5, 3)),
        ("nta,n...a->nt...", (2, 5, 6, 3), (2, 5, 6), (2, 4, 3)),
        ("...ta,...ab->...tb", (5, 1, 3, 4), (5, 1, 4), (2, 6, 3)),
        ("bi,bio->bo", (2, 3, 4), (2, 4), (2, 3)),
        ("ik,kj->ij", (5, 4), 4, (3, 5)),  # an int bias shape
    ],
)
def test_einsum_bias_broadcast_matches_flax(eq, kernel_shape, bias_shape, x_shape):
    init = {"kernel_init": wave, "bias_init": wave}
    ours = ramie.Einsum(eq, kernel_shape, bias_shape, rngs=ramie.Rngs(0), **init)
    theirs = nnx.Einsum(eq, kernel_shape, bias_shape, rngs=nnx.Rngs(0), **init)
    x = randn(*x_shape)
    assert_trees_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_einsum_str_given_per_call():
    layer = ramie.Einsum(None, (3, 4), kernel_init=wave, rngs=ramie.Rngs(0))
    x = jnp.ones((2, 3))
    assert layer(x, "bi,io->bo").shape == (2, 4)
    assert layer(x, "b i , i o -> o b").shape == (4, 2)  # spaces are ignored
    with pytest.raises(
        ValueError, match=r"(?s)no einsum_str was given.*layer\(x, 'bi,io->bo'\)"
    ):
        layer(x)


def test_einsum_errors():
    with pytest.raises(ValueError, match=r"must be explicit and contain '->'"):
        ramie.Einsum("ab,bc", (3, 4), rngs=ramie.Rngs(0))
    with pytest.raises(ValueError, match=r"exactly two operands.*found 2"):
        ramie.Einsum("ab,bc,cd->ad", (3, 4), rngs=ramie.Rngs(0))
    with pytest.raises(ValueError, match=r"kernel term 'bc'.*names 2 axes.*has 3"):
        ramie.Einsum("ab,bc->ac", (3, 4, 5), rngs=ramie.Rngs(0))
    layer = ramie.Einsum(
        "ab,bc->ac", (3, 4), (5,), kernel_init=wave, rngs=ramie.Rngs(0)
    )
    with pytest.raises(ValueError, match=r"bias of shape \(5,\) does not fit"):
        layer(jnp.ones((2, 3)))


def test_einsum_param_dtype_and_custom_op():
    calls = []

    def my_einsum(eq, *ops, **kw):
        calls.append(eq)
        return jnp.einsum(eq, *ops, **kw)

    layer = ramie.Einsum(
        "ab,bc->ac",
        (3, 4),
        (4,),
        param_dtype=jnp.bfloat16,
        einsum_op=my_einsum,
        kernel_init=wave,
        rngs=ramie.Rngs(0),
    )
    assert layer.kernel.dtype == jnp.bfloat16 and layer.bias.dtype == jnp.bfloat16
    y = layer(jnp.ones((2, 3), jnp.bfloat16))
    assert y.dtype == jnp.bfloat16 and calls == ["ab,bc->ac"]
    np.testing.assert_array_equal(layer.bias.value, np.zeros(4))
