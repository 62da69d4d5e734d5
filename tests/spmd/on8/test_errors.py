"""Sharding mistakes raise ShardingError naming the Variable, shape and mesh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AxisType

import ramie as nnx
from ramie.errors import ShardingError


class Model(nnx.Module):
    def __init__(self, spec, dim=16):
        init = nnx.with_partitioning(nnx.initializers.lecun_normal(), spec)
        self.linear = nnx.Linear(dim, dim, kernel_init=init, rngs=nnx.Rngs(0))


def mesh():
    return jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)


def test_logical_name_without_a_rule():
    with jax.set_mesh(mesh()), pytest.raises(ShardingError) as info:
        Model(("embed", "model"))
    msg = str(info.value)
    assert "'embed' is not in the mesh" in msg
    assert "logical_axis_rules" in msg
    assert "(16, 16)" in msg and "{'data': 2, 'model': 4}" in msg
    assert "Linear.__init__" in msg


def test_rules_fix_the_logical_name():
    with jax.set_mesh(mesh()), nnx.logical_axis_rules([("embed", "data")]):
        m = Model(("embed", "model"))
    assert m.linear.kernel.sharding.spec == jax.P("data", "model")


def test_dimension_not_divisible():
    with jax.set_mesh(mesh()), pytest.raises(ShardingError) as info:
        Model((None, "model"), dim=6)
    msg = str(info.value)
    assert "dimension 6 is not divisible by 4" in msg and "(6, 6)" in msg


def test_too_many_axes():
    with jax.set_mesh(mesh()), pytest.raises(ShardingError, match="names 3 axes"):
        nnx.Param(jnp.ones((4, 4)), out_sharding=("data", None, None))


def test_mixed_axis_types():
    mixed = jax.make_mesh(
        (2, 4), ("data", "model"), axis_types=(AxisType.Auto, AxisType.Explicit)
    )
    with pytest.raises(ShardingError, match="mixes axis types") as info:
        nnx.Param(jnp.ones((4, 4)), out_sharding=("data", "model"), mesh=mixed)
    assert isinstance(info.value, ValueError)


def test_get_named_sharding_names_the_path():
    m = Model((None, "model"), dim=6)  # no mesh: annotations are inert
    with pytest.raises(ShardingError) as info:
        nnx.get_named_sharding(nnx.state(m), mesh())
    assert "Variable linear.kernel" in str(info.value)


def test_uneven_dimension_inside_jit_warns_and_pads_as_jax_does():
    """Under a trace JAX accepts a constraint its mesh axis does not divide
    (XLA pads): ramie applies it, warns with the Variable, shape and mesh, and
    the value comes out replicated, as with Flax."""
    from ramie.errors import UnevenShardingWarning

    class Head(nnx.Module):
        def __init__(self, rngs):
            init = nnx.initializers.lecun_normal()
            spec = (None, "model")
            self.w = nnx.Param(init(rngs.params(), (32, 1)), out_sharding=spec)
            kernel_init = nnx.with_partitioning(init, spec)
            self.k = nnx.Linear(32, 1, rngs=rngs, kernel_init=kernel_init)

    eager = Head(nnx.Rngs(0))  # no mesh: no sharding, the reference values
    with jax.set_mesh(mesh()):
        with pytest.warns(UnevenShardingWarning) as record:
            head = nnx.jit(lambda: Head(nnx.Rngs(0)))()
        with pytest.raises(ShardingError, match="dimension 1 is not divisible by 4"):
            Head(nnx.Rngs(0))  # eagerly a device cannot hold part of a dimension
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    # each warning points at the user's line that created the Variable
    assert all(w.filename == __file__ for w in record), [w.filename for w in record]
    assert all("(32, 1)" in m and "{'data': 2, 'model': 4}" in m for m in messages)
    assert any("Param created in Head.__init__" in m for m in messages)
    assert any("Linear.__init__" in m for m in messages)
    for v, ref in ((head.w, eager.w), (head.k.kernel, eager.k.kernel)):
        assert v.value.sharding.is_fully_replicated
        assert jnp.array_equal(v.value, ref.value)
