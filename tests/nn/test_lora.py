"""LoRA, LoRALinear and LoRAParam: structure, init order, filtering, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import ramie
from ramie.testing import assert_trees_close


def randn(*shape, seed=0):
    """Standard-normal float32 inputs drawn by NumPy (no compilation)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _pure(module):
    return ramie.to_pure_dict(ramie.state(module))


def test_lora_initialises_like_flax():
    ours = ramie.LoRA(4, 2, 3, rngs=ramie.Rngs(1))
    theirs = nnx.LoRA(4, 2, 3, rngs=nnx.Rngs(1))
    assert_trees_close(_pure(ours), nnx.to_pure_dict(nnx.state(theirs)), rtol=0, atol=0)
    np.testing.assert_array_equal(
        ours.lora_b.value, np.zeros((2, 3))
    )  # starts as a no-op


def test_lora_linear_initialises_like_flax_and_like_linear():
    ours = ramie.LoRALinear(4, 3, lora_rank=2, rngs=ramie.Rngs(1))
    theirs = nnx.LoRALinear(4, 3, lora_rank=2, rngs=nnx.Rngs(1))
    assert_trees_close(_pure(ours), nnx.to_pure_dict(nnx.state(theirs)), rtol=0, atol=0)
    linear = ramie.Linear(4, 3, rngs=ramie.Rngs(1))
    np.testing.assert_array_equal(ours.kernel.value, linear.kernel.value)
    x = randn(2, 4, seed=0)
    assert_trees_close(ours(x), linear(x))  # lora_b == 0


def test_lora_params_are_params_and_filterable():
    model = ramie.LoRALinear(4, 3, lora_rank=2, rngs=ramie.Rngs(0))
    assert isinstance(model.lora.lora_a, ramie.Param)
    assert issubclass(ramie.LoRAParam, ramie.Param)
    lora_state = ramie.state(model, ramie.LoRAParam)
    assert set(ramie.to_pure_dict(lora_state)) == {"lora"}
    _, lora_params, rest = ramie.split(model, ramie.LoRAParam, ...)
    assert set(ramie.to_pure_dict(rest)) == {"kernel", "bias"}
    assert set(ramie.to_pure_dict(lora_params)["lora"]) == {"lora_a", "lora_b"}


def test_optimizer_on_lora_params_leaves_the_base_frozen():
    model = ramie.LoRALinear(4, 3, lora_rank=2, rngs=ramie.Rngs(0))
    kernel = np.asarray(model.kernel.value)
    optimizer = ramie.Optimizer(model, optax.sgd(0.1), wrt=ramie.LoRAParam)
    x = randn(5, 4, seed=0)

    def loss(m):
        return jnp.mean((m(x) - 1.0) ** 2)

    grads = ramie.grad(loss, argnums=ramie.DiffState(0, ramie.LoRAParam))(model)
    optimizer.update(model, grads)
    np.testing.assert_array_equal(model.kernel.value, kernel)
    assert bool(jnp.any(model.lora.lora_b.value != 0))


def test_lora_with_base_module_adds_its_output():
    base = ramie.Linear(4, 3, rngs=ramie.Rngs(0))
    lora = ramie.LoRA(
        4,
        2,
        3,
        base_module=base,
        b_initializer=jax.nn.initializers.ones,
        rngs=ramie.Rngs(1),
    )
    x = randn(2, 4, seed=0)
    expected = base(x) + x @ lora.lora_a.value @ lora.lora_b.value
    assert_trees_close(lora(x), expected, rtol=1e-5, atol=1e-5)


def test_lora_custom_param_type_and_dtypes():
    class Adapter(ramie.Param):
        pass

    lora = ramie.LoRA(
        4,
        2,
        3,
        lora_param_type=Adapter,
        param_dtype=jnp.bfloat16,
        a_metadata={"tag": "a"},
        rngs=ramie.Rngs(0),
    )
    assert type(lora.lora_a) is Adapter and lora.lora_a.tag == "a"
    assert lora.lora_a.dtype == jnp.bfloat16
    assert lora(jnp.ones((2, 4), jnp.bfloat16)).dtype == jnp.bfloat16
    layer = ramie.LoRALinear(
        4,
        3,
        lora_rank=2,
        use_bias=False,
        lora_param_dtype=jnp.bfloat16,
        rngs=ramie.Rngs(0),
    )
    assert layer.bias is None and layer.lora.lora_b.dtype == jnp.bfloat16


def test_lora_errors():
    lora = ramie.LoRA(4, 2, 3, rngs=ramie.Rngs(0))
    with pytest.raises(
        ValueError, match=r"inputs of shape \(2, 5\) must end in in_features=4"
    ):
        lora(jnp.ones((2, 5)))
    lora.base_module = "not a module"
    with pytest.raises(
        ValueError,
        match=r"(?s)base_module must be callable, got str.*base_module=ramie.Linear",
    ):
        lora(jnp.ones((2, 4)))
