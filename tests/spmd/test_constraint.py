"""ramie.with_sharding_constraint places Variable values like jax.lax does."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import ramie


def mesh_2x4():
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices")
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((2, 4), ("in", "out"), axis_types=auto)


def test_state_values_get_their_partition_specs_inside_jit():
    init = ramie.with_partitioning(ramie.initializers.lecun_normal(), ("in", "out"))

    @ramie.jit
    def create():
        model = ramie.Linear(8, 16, kernel_init=init, rngs=ramie.Rngs(0))
        state = ramie.state(model)
        ramie.update(
            model,
            ramie.with_sharding_constraint(state, ramie.get_partition_spec(state)),
        )
        return model

    mesh = mesh_2x4()
    with jax.set_mesh(mesh):
        model = create()
    want = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("in", "out"))
    assert model.kernel.value.sharding.is_equivalent_to(want, ndim=2)
    assert isinstance(model.kernel, ramie.Param)


def test_plain_arrays_and_mismatched_specs():
    mesh = mesh_2x4()
    x = np.ones((8, 8), np.float32)
    spec = jax.sharding.PartitionSpec("in", None)
    out = jax.jit(lambda a: ramie.with_sharding_constraint(a, spec, mesh=mesh))(x)
    ref = jax.jit(
        lambda a: jax.lax.with_sharding_constraint(
            a, jax.sharding.NamedSharding(mesh, spec)
        )
    )(x)
    assert out.sharding.is_equivalent_to(ref.sharding, ndim=2)
    with pytest.raises(ValueError, match="get_partition_spec"):
        ramie.with_sharding_constraint({"a": x, "b": x}, [spec])
