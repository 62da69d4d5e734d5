"""Collections <-> Variable types and partitioning metadata, both directions."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie
from ramie._src.bridge import variables as bv

nn = pytest.importorskip("flax.linen")
bridge = ramie.bridge
P = jax.sharding.PartitionSpec
X = jnp.ones((2, 4))


@pytest.mark.parametrize(
    "collection, var_type",
    [
        ("params", ramie.Param),
        ("batch_stats", ramie.BatchStat),
        ("intermediates", ramie.Intermediate),
        ("cache", ramie.Cache),
    ],
)
def test_collections_map_to_variable_types_both_ways(collection, var_type):
    var = bv.to_nnx_var(collection, jnp.ones(2))
    assert type(var) is var_type
    back = bv.nnx_attrs_to_linen_vars([(("a", "b"), var)])
    assert list(back) == [collection]
    np.testing.assert_array_equal(back[collection]["a"]["b"], jnp.ones(2))


def test_custom_collection_gets_a_variable_type_of_that_name():
    var = bv.to_nnx_var("my_stats_xyz", jnp.zeros(1))
    assert type(var).__name__ == "my_stats_xyz"
    assert bv.collection_of(type(var)) == "my_stats_xyz"


def test_duplicate_path_across_collections_is_a_bridge_error():
    with pytest.raises(ramie.errors.BridgeError, match="both hold a/w"):
        bv.linen_vars_to_nnx_attrs(
            {"params": {"a": {"w": 1.0}}, "batch_stats": {"a": {"w": 2.0}}}
        )


def test_linen_partitioned_to_ramie_sharding_and_back():
    dense = nn.Dense(
        4,
        kernel_init=nn.with_partitioning(nn.initializers.ones_init(), ("in", "out")),
        bias_init=nn.with_logical_partitioning(
            nn.initializers.zeros_init(), ("feat",), rules=(("feat", "out"),)
        ),
    )
    ref = dense.init(jax.random.key(0), X)
    model = bridge.ToNNX(dense, rngs=ramie.Rngs(0)).lazy_init(X)
    assert model.kernel.out_sharding == ("in", "out")
    assert model.bias.out_sharding == ("feat",)
    assert model.bias.sharding_rules == (("feat", "out"),)
    specs = ramie.get_partition_spec(ramie.state(model))
    assert specs["kernel"] == P("in", "out") or specs["kernel"].value == P("in", "out")
    # back to Linen: the same box types with the same names
    back = model._linen_variables()
    assert isinstance(back["params"]["kernel"], nn.Partitioned)
    assert isinstance(back["params"]["bias"], nn.LogicallyPartitioned)
    assert back["params"]["kernel"].names == ref["params"]["kernel"].names
    assert back["params"]["bias"].rules == ref["params"]["bias"].rules
    np.testing.assert_array_equal(model(X), dense.apply(ref, X))


def test_ramie_sharding_metadata_to_linen_nnxmeta_and_back():
    init = ramie.with_partitioning(ramie.initializers.ones, ("in", "out"))
    lin = bridge.to_linen(ramie.Linear, 4, 3, kernel_init=init)
    variables = lin.init(jax.random.key(0), X)
    box = variables["params"]["kernel"]
    assert isinstance(box, bridge.NNXMeta)
    assert box.metadata["out_sharding"] == ("in", "out")
    assert box.metadata["sharding"] == ("in", "out")  # older spelling
    assert nn.get_partition_spec(variables)["params"]["kernel"] == P("in", "out")
    var = bv.to_nnx_var("params", box)
    assert type(var) is ramie.Param and var.out_sharding == ("in", "out")
    np.testing.assert_array_equal(lin.apply(variables, X), X @ jnp.ones((4, 3)))


def test_nnxmeta_names_the_new_axis_under_nn_vmap():
    init = ramie.with_partitioning(ramie.initializers.ones, ("in", "out"))

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.vmap(
                bridge.ToLinen,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=None,
                axis_size=2,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(ramie.Linear, args=(4, 3), kwargs={"kernel_init": init})(x)

    v = jax.eval_shape(Stack().init, jax.random.key(0), X)
    box = v["params"]["VmapToLinen_0"]["kernel"]
    assert box.value.shape == (2, 4, 3)
    assert box.metadata["out_sharding"] == ("layers", "in", "out")


def test_import_ramie_bridge_does_not_import_flax():
    code = (
        "import ramie, ramie.bridge, sys; "
        "print([m for m in sys.modules if m.split('.')[0] in ('flax', 'haiku')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_flax_submodule_layout_imports():
    import ramie.bridge.wrappers as wrappers
    from ramie.bridge.module import MODULE_CONTEXT

    assert wrappers.ToNNX is bridge.ToNNX and wrappers.ToLinen is bridge.ToLinen
    assert MODULE_CONTEXT.module_stack == [None]
    assert ramie.wrappers is wrappers


def test_without_flax_to_linen_names_the_extra_and_bridge_module_still_works():
    code = (
        "import sys; sys.modules['flax'] = None\n"
        "import jax, jax.numpy as jnp, ramie\n"
        "class D(ramie.bridge.Module):\n"
        "    @ramie.bridge.compact\n"
        "    def __call__(self, x):\n"
        "        return x @ self.param('w', ramie.initializers.ones, (2, 3))\n"
        "v = D().init(jax.random.key(0), jnp.ones((1, 2)))\n"
        "print(v['params']['w'].shape)\n"
        "for use in (lambda: ramie.bridge.to_linen(ramie.Linear, 2, 3),\n"
        "            lambda: ramie.bridge.ToLinen):\n"
        "    try:\n"
        "        use()\n"
        "    except ramie.errors.MissingExtraError as e:\n"
        "        print('extra:', 'pip install ramie[linen]' in str(e))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    lines = out.stdout.split("\n")[:3]
    assert lines == ["(2, 3)", "extra: True", "extra: True"], out.stderr
