"""Sharded construction on 8 CPU devices: placement, memory, values, abstract models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import ramie as nnx
from ramie._src.spmd import placement

MODES = {"auto": AxisType.Auto, "explicit": AxisType.Explicit}


def mesh_of(mode, shape=(8,), names=("data",)):
    return jax.make_mesh(shape, names, axis_types=(MODES[mode],) * len(shape))


class Stack(nnx.Module):
    """FSDP-style: every kernel split by rows over `data`."""

    def __init__(self, dim, depth, rngs):
        init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("data", None))
        self.layers = nnx.List(
            [
                nnx.Linear(dim, dim, kernel_init=init, use_bias=False, rngs=rngs)
                for _ in range(depth)
            ]
        )


def per_device_bytes(arrays):
    out: dict = {}
    for a in arrays:
        for shard in a.addressable_shards:
            out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
    return out


def kernels(model):
    return [layer.kernel for layer in model.layers]


@pytest.mark.parametrize("mode", ["auto", "explicit"])
def test_construction_under_a_mesh_places_every_shard(mode):
    reference = Stack(64, 3, rngs=nnx.Rngs(0))  # no mesh: one device
    mesh = mesh_of(mode)
    with jax.set_mesh(mesh):
        model = Stack(64, 3, rngs=nnx.Rngs(0))
    for k, ref in zip(kernels(model), kernels(reference)):
        assert k.sharding.is_equivalent_to(NamedSharding(mesh, P("data", None)), 2)
        assert k.sharding.shard_shape(k.shape) == (8, 64)
        np.testing.assert_array_equal(np.asarray(k.value), np.asarray(ref.value))
    sizes = per_device_bytes([k.value for k in kernels(model)])
    assert len(sizes) == 8
    assert set(sizes.values()) == {3 * 64 * 64 * 4 // 8}


@pytest.mark.parametrize("mode", ["auto", "explicit"])
def test_sharded_initializer_never_builds_the_full_array(mode):
    mesh = mesh_of(mode)
    with jax.set_mesh(mesh):
        Stack(128, 1, rngs=nnx.Rngs(0))
    target = NamedSharding(mesh, P("data", None))
    fns = [
        fn
        for (init, shape, _, sharding), fn in placement._compiled.items()
        if shape == (128, 128) and sharding == target
    ]
    assert len(fns) == 1  # the initializer was compiled with out_shardings
    auto = placement.auto_mesh(mesh)
    init = nnx.initializers.lecun_normal()
    compiled = (
        jax.jit(
            lambda k: init(k, (128, 128), jnp.float32),
            out_shardings=NamedSharding(auto, P("data", None)),
        )
        .lower(jax.random.key(0))
        .compile()
    )
    stats = compiled.memory_analysis()
    shard = 128 * 128 * 4 // 8
    assert stats.output_size_in_bytes == shard
    assert stats.temp_size_in_bytes < 128 * 128 * 4  # never a full copy


@pytest.mark.parametrize("mode", ["auto", "explicit"])
def test_documented_jit_recipe(mode):
    """Flax's `create_sharded_model` recipe, on both mesh types."""

    @nnx.jit
    def create_sharded_model():
        model = Stack(64, 2, rngs=nnx.Rngs(0))
        state = nnx.state(model)
        pspecs = nnx.get_partition_spec(state)
        sharded_state = jax.lax.with_sharding_constraint(state, pspecs)
        nnx.update(model, sharded_state)
        return model

    mesh = mesh_of(mode)
    with jax.set_mesh(mesh):
        model = create_sharded_model()
    reference = Stack(64, 2, rngs=nnx.Rngs(0))
    spec = NamedSharding(mesh, P("data", None))
    for k, ref in zip(kernels(model), kernels(reference)):
        assert k.sharding.is_equivalent_to(spec, 2)
        np.testing.assert_allclose(np.asarray(k.value), np.asarray(ref.value))


@pytest.mark.parametrize("mode", ["auto", "explicit"])
def test_jit_constructor_memory_matches_raw_jax(mode):
    """A jitted constructor's per-device output is a shard; its peak is JAX's."""
    mesh = mesh_of(mode)
    dim, depth = 256, 6
    init = nnx.initializers.lecun_normal()
    auto = placement.auto_mesh(mesh)
    target = NamedSharding(auto, P("data", None))

    def raw(key):
        return [init(k, (dim, dim), jnp.float32) for k in jax.random.split(key, depth)]

    with jax.set_mesh(mesh):
        ours = (
            jax.jit(lambda: nnx.state(Stack(dim, depth, rngs=nnx.Rngs(0))))
            .lower()
            .compile()
            .memory_analysis()
        )
    with jax.set_mesh(auto):
        floor = (
            jax.jit(raw, out_shardings=[target] * depth)
            .lower(jax.random.key(0))
            .compile()
            .memory_analysis()
        )
    shard = depth * dim * dim * 4 // 8
    assert shard <= ours.output_size_in_bytes <= shard + 64  # + the RNG state
    peak = ours.output_size_in_bytes + ours.temp_size_in_bytes
    floor_peak = floor.output_size_in_bytes + floor.temp_size_in_bytes
    assert peak <= 1.15 * floor_peak, (peak, floor_peak)
    assert peak < depth * dim * dim * 4  # never the full model on a device


def test_eval_shape_and_abstract_model_use_the_concrete_mesh():
    mesh = mesh_of("auto", (2, 4), ("data", "model"))
    with jax.set_mesh(mesh):
        abstract = nnx.eval_shape(lambda: Stack(64, 2, rngs=nnx.Rngs(0)))
    s = abstract.layers[0].kernel.value.sharding
    assert isinstance(s.mesh, jax.sharding.Mesh) and s.mesh == mesh
    graphdef, abs_state = nnx.get_abstract_model(
        lambda: Stack(64, 2, rngs=nnx.Rngs(0)), mesh
    )
    shardings = nnx.get_named_sharding(abs_state, mesh)
    # same structure as the state: usable side by side in jax.tree.map
    both = jax.tree.map(lambda a, s: (a.shape, s.spec), abs_state, shardings)
    flat = jax.tree.leaves(both, is_leaf=lambda x: isinstance(x, tuple))
    assert ((64, 64), P("data", None)) in flat


def test_sharded_checkpoint_restore_with_orbax(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    mesh = mesh_of("auto")
    with jax.set_mesh(mesh):
        model = Stack(64, 2, rngs=nnx.Rngs(0))
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "ckpt", nnx.state(model))
    ckpt.wait_until_finished()
    graphdef, abs_state = nnx.get_abstract_model(
        lambda: Stack(64, 2, rngs=nnx.Rngs(1)), mesh
    )
    restored = ckpt.restore(tmp_path / "ckpt", target=abs_state)
    new = nnx.merge(graphdef, restored)
    for k, ref in zip(kernels(new), kernels(model)):
        assert k.sharding.spec == P("data", None)
        np.testing.assert_array_equal(np.asarray(k.value), np.asarray(ref.value))


def test_vmap_stacking_adds_the_layer_axis_and_shards_it():
    mesh = mesh_of("auto", (2, 4), ("layers", "m"))

    class Block(nnx.Module):
        @nnx.split_rngs(splits=4)
        @nnx.vmap(in_axes=(0, 0), transform_metadata={nnx.PARTITION_NAME: "layers"})
        def __init__(self, rngs):
            init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "m"))
            self.linear = nnx.Linear(8, 16, kernel_init=init, rngs=rngs)

    with jax.set_mesh(mesh):
        block = Block(nnx.Rngs(0))
    kernel = block.linear.kernel
    assert kernel.shape == (4, 8, 16)
    assert kernel.out_sharding == ("layers", None, "m")
    assert kernel.sharding.spec == P("layers", None, "m")
    specs = nnx.get_partition_spec(nnx.state(block))
    assert specs["linear"]["kernel"].value == P("layers", None, "m")


def test_optimizer_step_keeps_shardings():
    mesh = mesh_of("auto")
    with jax.set_mesh(mesh):
        model = Stack(64, 2, rngs=nnx.Rngs(0))
        opt = nnx.Optimizer(model, __import__("optax").adam(1e-2), wrt=nnx.Param)

        @nnx.jit
        def step(model, opt, x):
            grads = nnx.grad(lambda m: jnp.sum(m.layers[1](m.layers[0](x)) ** 2))(model)
            opt.update(model, grads)

        step(model, opt, jnp.ones((16, 64)))
    spec = NamedSharding(mesh, P("data", None))
    for i, k in enumerate(kernels(model)):
        assert k.sharding.is_equivalent_to(spec, 2)
        mu = opt.opt_state[0].mu["layers"][i]["kernel"]
        assert mu.sharding.is_equivalent_to(spec, 2)


@pytest.mark.parametrize("hijax", [False, True])
def test_hijax_variables_are_placed_on_creation_like_plain_ones(hijax):
    mesh = mesh_of("auto", (2, 4), ("row", "col"))
    with jax.set_mesh(mesh), nnx.var_defaults(hijax=hijax):
        w = nnx.Param(jnp.ones((8, 4)), out_sharding=("row", "col"))
    assert w.hijax == hijax
    want = NamedSharding(mesh, P("row", "col"))
    assert w.value.sharding.is_equivalent_to(want, 2)
    np.testing.assert_array_equal(w.value, np.ones((8, 4)))
