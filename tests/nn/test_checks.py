"""Layers called on inputs of the wrong size name themselves by their path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie as nnx
from ramie.errors import InputShapeError

R = nnx.Rngs(0)

# (layer factory, good input shape, bad input shape, expected, found)
CASES = {
    "Linear": (lambda: nnx.Linear(4, 8, rngs=R), (2, 4), (2, 13), "4", "13"),
    "LinearGeneral": (
        lambda: nnx.LinearGeneral((2, 3), 5, axis=(-2, -1), rngs=R),
        (1, 2, 3),
        (1, 2, 4),
        "(2, 3)",
        "(2, 4)",
    ),
    "Einsum": (
        lambda: nnx.Einsum("bi,io->bo", (4, 3), rngs=R),
        (2, 4),
        (2, 5),
        "4",
        "5",
    ),
    "LayerNorm": (lambda: nnx.LayerNorm(4, rngs=R), (2, 4), (2, 6), "4", "6"),
    "RMSNorm": (lambda: nnx.RMSNorm(4, rngs=R), (2, 4), (2, 6), "4", "6"),
    "GroupNorm": (
        lambda: nnx.GroupNorm(4, num_groups=2, rngs=R),
        (2, 3, 4),
        (2, 3, 6),
        "4",
        "6",
    ),
    "BatchNorm": (
        lambda: nnx.BatchNorm(4, use_running_average=False, rngs=R),
        (2, 4),
        (2, 6),
        "4",
        "6",
    ),
    "Conv": (
        lambda: nnx.Conv(3, 5, kernel_size=(2, 2), rngs=R),
        (1, 4, 4, 3),
        (1, 4, 4, 1),
        "3",
        "1",
    ),
    "MultiHeadAttention": (
        lambda: nnx.MultiHeadAttention(2, 4, decode=False, rngs=R),
        (1, 3, 4),
        (1, 3, 6),
        "4",
        "6",
    ),
}


class Block(nnx.Module):
    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x):
        return self.layer(x)


class Model(nnx.Module):
    def __init__(self, layer):
        self.block = Block(layer)

    def __call__(self, x):
        return self.block(x)


def _values(model):
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))


def _same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("name", list(CASES))
def test_wrong_input_size_names_layer_path_sizes_and_fix(name):
    make, good, bad, expected, found = CASES[name]
    model = Model(make())
    model(jnp.ones(good))  # the right size works
    before = _values(model)
    with pytest.raises(InputShapeError) as e:
        model(jnp.ones(bad))
    msg = str(e.value)
    assert msg.startswith(f"ramie.{name} at block.layer: ")
    assert expected.replace(" ", "") in msg.replace(" ", "")
    assert found.replace(" ", "") in msg.replace(" ", "")
    assert "Fix:" in msg and "docs/errors.md#inputshapeerror" in msg
    _same(_values(model), before)


@pytest.mark.parametrize("name", ["Linear", "LayerNorm", "BatchNorm", "Conv"])
def test_checked_at_trace_time_inside_jit_vmap_and_scan(name):
    make, good, bad, _, _ = CASES[name]
    model = Model(make())
    with pytest.raises(InputShapeError, match=rf"ramie\.{name} at block\.layer"):
        nnx.jit(lambda m, x: m(x))(model, jnp.ones(bad))
    with pytest.raises(InputShapeError, match=rf"ramie\.{name} at block\.layer"):
        nnx.vmap(lambda m, x: m(x), in_axes=(None, 0))(model, jnp.ones((2, *bad)))

    def body(m, x):
        return m, m(x)

    with pytest.raises(InputShapeError, match=rf"ramie\.{name} at block\.layer"):
        nnx.scan(body, in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))(
            model, jnp.ones((2, *bad))
        )


def test_attention_key_value_features_are_checked_separately():
    mha = nnx.MultiHeadAttention(2, 4, in_kv_features=6, decode=False, rngs=R)
    model = Model(mha)
    q, kv = jnp.ones((1, 3, 4)), jnp.ones((1, 5, 6))
    assert model.block.layer(q, kv).shape == (1, 3, 4)
    with pytest.raises(InputShapeError, match=r"inputs_k has 4 features.*6"):
        model.block.layer(q, jnp.ones((1, 5, 4)))
    with pytest.raises(InputShapeError, match=r"inputs_q has 6 features.*4"):
        model.block.layer(kv, kv)


def test_a_layer_on_its_own_is_named_by_its_class():
    with pytest.raises(InputShapeError, match=r"^ramie\.Linear: the input has 3"):
        nnx.Linear(4, 2, rngs=R)(jnp.ones(3))


def test_calling_an_abstract_model_names_the_first_abstract_variable():
    from ramie.errors import AbstractValueError

    abstract = nnx.eval_shape(lambda: Model(nnx.Linear(2, 3, rngs=nnx.Rngs(0))))
    graphdef, state = nnx.split(abstract)
    for model in (abstract, nnx.merge(graphdef, state)):
        with pytest.raises(AbstractValueError) as e:
            model(jnp.ones((1, 2)))
        msg = str(e.value)
        assert "ramie.Linear at block.layer: the Param at block.layer.kernel" in msg
        assert "ShapeDtypeStruct(shape=(2, 3), dtype=float32)" in msg
        assert "ramie.update(abstract_model, restored_state)" in msg
        assert isinstance(model.block.layer.kernel.value, jax.ShapeDtypeStruct)
    # restoring the values makes it callable
    concrete = Model(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    nnx.update(abstract, nnx.state(concrete))
    np.testing.assert_array_equal(
        abstract(jnp.ones((1, 2))), concrete(jnp.ones((1, 2)))
    )


def test_a_donated_array_is_named_by_its_variable_path():
    from ramie.errors import DeletedArrayError

    model = Model(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    step = nnx.jit(lambda m, x: m(x))
    step(model, jnp.ones((1, 2)))  # cached
    donate = jax.jit(lambda w: w * 2, donate_argnums=0)
    donate(model.block.layer.bias.value)  # result not stored back
    with pytest.raises(DeletedArrayError, match=r"the Param at block\.layer\.bias"):
        step(model, jnp.ones((1, 2)))
