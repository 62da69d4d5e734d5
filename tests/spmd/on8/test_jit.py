"""ramie.jit and ramie.shard_map with sharded modules on 8 devices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import ramie as nnx


def auto_mesh():
    return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))


def fsdp_linear(rngs):
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("data", None))
    return nnx.Linear(16, 8, kernel_init=init, rngs=rngs)


def test_jit_in_shardings_from_get_named_sharding_and_donation():
    mesh = auto_mesh()
    with jax.set_mesh(mesh):
        model = fsdp_linear(nnx.Rngs(0))
        opt = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
        state_sharding = nnx.get_named_sharding(nnx.state(model), mesh)
        data = NamedSharding(mesh, P("data"))

        def step(model, opt, x):
            loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
            opt.update(model, grads)
            return loss

        fast = nnx.jit(
            step,
            in_shardings=(state_sharding, None, data),
            out_shardings=NamedSharding(mesh, P()),
            donate_argnums=(0,),
        )
        x = jax.device_put(jnp.ones((32, 16)), data)
        losses = [float(fast(model, opt, x)) for _ in range(3)]
    reference = fsdp_linear(nnx.Rngs(0))  # not a clone: donation frees buffers
    ref_opt = nnx.Optimizer(reference, optax.sgd(0.1), wrt=nnx.Param)
    ref_losses = [float(step(reference, ref_opt, jnp.ones((32, 16)))) for _ in range(3)]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
    assert model.kernel.sharding.is_equivalent_to(
        NamedSharding(mesh, P("data", None)), 2
    )


def test_shard_map_over_a_module():
    mesh = auto_mesh()
    layer = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    x = jax.device_put(jnp.arange(32.0).reshape(8, 4), NamedSharding(mesh, P("data")))
    f = nnx.shard_map(
        lambda m, x: m(x), mesh=mesh, in_specs=(P(), P("data")), out_specs=P("data")
    )
    y = f(layer, x)
    np.testing.assert_allclose(
        np.asarray(y), np.asarray(layer(jnp.arange(32.0).reshape(8, 4))), rtol=1e-6
    )
    assert y.sharding.spec == P("data")
