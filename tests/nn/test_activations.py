"""Activation re-exports and PReLU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import ramie
import ramie.nn
from ramie._src.nn import activations
from ramie.testing import assert_trees_close

NAMES = [
    "celu", "elu", "gelu", "glu", "hard_sigmoid", "hard_silu", "hard_swish",
    "hard_tanh", "identity", "leaky_relu", "log_sigmoid", "log_softmax", "logsumexp",
    "one_hot", "relu", "relu6", "selu", "sigmoid", "silu", "soft_sign", "softmax",
    "softplus", "standardize", "swish", "tanh",
]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_activation_is_the_same_function_as_flax_nnx(name):
    ours = getattr(ramie, name)
    assert ours is getattr(nnx, name)
    assert getattr(ramie.nn, name) is ours
    assert ours is (jnp.tanh if name == "tanh" else getattr(jax.nn, name))


def test_activations_all_lists_exactly_the_public_names():
    assert sorted(activations.__all__) == sorted([*NAMES, "PReLU"])


def test_prelu_param_matches_flax():
    ours = ramie.PReLU(0.25)
    theirs = nnx.PReLU(0.25)
    assert (
        ramie.to_pure_dict(ramie.state(ours)).keys()
        == nnx.to_pure_dict(nnx.state(theirs)).keys()
    )
    assert ours.negative_slope.shape == () and float(ours.negative_slope.value) == 0.25


@pytest.mark.parametrize(
    "kwargs, in_dtype, out_dtype",
    [
        ({}, jnp.float32, jnp.float32),
        ({}, jnp.bfloat16, jnp.bfloat16),  # no dtype: compute in the inputs' dtype
        ({"dtype": jnp.float32}, jnp.bfloat16, jnp.float32),
        ({"param_dtype": jnp.bfloat16}, jnp.float32, jnp.float32),
    ],
)
def test_prelu_dtypes_match_flax(kwargs, in_dtype, out_dtype):
    x = jnp.linspace(-2, 2, 9, dtype=in_dtype)
    ours = ramie.PReLU(0.3, **kwargs)(x)
    theirs = nnx.PReLU(0.3, **kwargs)(x)
    assert ours.dtype == theirs.dtype == out_dtype
    assert_trees_close(ours, theirs, rtol=0, atol=0)


def test_prelu_equals_leaky_relu_and_learns_its_slope():
    act = ramie.PReLU(0.1, negative_slope_metadata={"tag": "slope"})
    assert act.negative_slope.tag == "slope"
    x = jnp.array([-3.0, -1.0, 0.0, 2.0])
    np.testing.assert_allclose(act(x), ramie.leaky_relu(x, 0.1), rtol=1e-6)
    grads = ramie.grad(lambda m: m(x).sum())(act)
    np.testing.assert_allclose(
        grads["negative_slope"].value, -4.0
    )  # sum of negative inputs
