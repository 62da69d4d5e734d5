"""Tests for LayerNorm, RMSNorm, GroupNorm, InstanceNorm (and BatchNorm's dtypes).

Every numerical check compares with Flax NNX built from the same seed; the
rest checks the errors (their text), the relations between the layers
(GroupNorm with one group is a LayerNorm, ...) and GroupNorm configurations
Flax itself cannot run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import ramie
from ramie.testing import assert_trees_close


def randn(*shape: int, seed: int = 0) -> jax.Array:
    """Standard-normal test data from NumPy: jax.random compiles a kernel per
    shape, which costs seconds for arrays of rank 3 and more on CPU."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


X4 = randn(2, 3, 4, 6, seed=1)


def _both(cls: str, *args, **kwargs):
    ours = getattr(ramie, cls)(*args, **kwargs, rngs=ramie.Rngs(0))
    theirs = getattr(nnx, cls)(*args, **kwargs, rngs=nnx.Rngs(0))
    return ours, theirs


def _same_params(ours, theirs):
    assert_trees_close(
        ramie.to_pure_dict(ramie.state(ours)),
        nnx.to_pure_dict(nnx.state(theirs)),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize(
    "cls, args, kwargs",
    [
        ("LayerNorm", (4,), {"reduction_axes": (1, 2), "feature_axes": 2}),
        (
            "LayerNorm",
            (3,),
            {
                "reduction_axes": (1, 2, 3),
                "feature_axes": 1,
                "use_fast_variance": False,
            },
        ),
        ("LayerNorm", (6,), {"use_scale": False, "use_bias": False, "epsilon": 0.1}),
        ("RMSNorm", (6,), {"use_scale": False}),
        ("RMSNorm", (4,), {"reduction_axes": 2, "feature_axes": 2}),
        ("GroupNorm", (6,), {"num_groups": 1}),
        ("GroupNorm", (6,), {"num_groups": 6, "use_scale": False}),
        ("GroupNorm", (6,), {"num_groups": 2, "reduction_axes": (1, 2, 3)}),
        ("InstanceNorm", (3,), {"feature_axes": 1, "use_bias": False}),
        ("InstanceNorm", (24,), {"feature_axes": (2, 3), "use_fast_variance": False}),
    ],
)
def test_matches_flax(cls, args, kwargs):
    ours, theirs = _both(cls, *args, **kwargs)
    _same_params(ours, theirs)
    # (InstanceNorm over feature axes (2, 3) has flat params of 4 * 6 entries.)
    assert_trees_close(ours(X4), theirs(X4), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls", ["LayerNorm", "RMSNorm", "GroupNorm", "InstanceNorm"])
def test_custom_initializers_draw_keys_in_flax_order(cls):
    kwargs = {"scale_init": nnx.initializers.normal(1.0)}
    if cls != "RMSNorm":
        kwargs["bias_init"] = nnx.initializers.uniform(1.0)
    if cls == "GroupNorm":
        kwargs["num_groups"] = 3
    ours, theirs = _both(cls, 6, **kwargs)
    _same_params(ours, theirs)
    assert not np.allclose(ours.scale.value, 1.0)


@pytest.mark.parametrize("cls", ["LayerNorm", "GroupNorm", "InstanceNorm", "BatchNorm"])
def test_bfloat16_computation_matches_flax(cls):
    extra = {"num_groups": 2} if cls == "GroupNorm" else {}
    ours, theirs = _both(cls, 6, dtype=jnp.bfloat16, **extra)
    x = X4.astype(jnp.bfloat16)
    y = ours(x)
    assert y.dtype == jnp.bfloat16
    assert_trees_close(y, theirs(x), rtol=0, atol=0)


def test_param_dtype_and_metadata():
    layer = ramie.LayerNorm(
        4,
        param_dtype=jnp.bfloat16,
        scale_metadata={"sharding": ("model",)},
        rngs=ramie.Rngs(0),
    )
    assert layer.scale.dtype == jnp.bfloat16 and layer.bias.dtype == jnp.bfloat16
    assert layer.scale.get_metadata("sharding_names") == ("model",)
    assert not layer.bias.has_metadata("sharding_names")
    # params of float32 inputs are promoted: the output is float32
    assert layer(jnp.ones((2, 4))).dtype == jnp.float32


def test_layer_norm_statistics_and_absent_params_are_none():
    layer = ramie.LayerNorm(6, use_scale=False, use_bias=False, rngs=ramie.Rngs(0))
    assert layer.scale is None and layer.bias is None
    assert ramie.state(layer, ramie.Param).to_pure_dict() == {}
    y = np.asarray(layer(X4))
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(-1), 1.0, rtol=1e-3)


def test_layer_norm_mask_ignores_masked_entries():
    layer = ramie.LayerNorm(6, rngs=ramie.Rngs(0))
    mask = jnp.array([[True] * 4 + [False] * 2] * 3)
    x = randn(3, 6, seed=2)
    poisoned = x.at[:, 4:].set(1e6)
    np.testing.assert_allclose(
        layer(x, mask=mask)[:, :4], layer(poisoned, mask=mask)[:, :4], rtol=1e-6
    )
    ref = nnx.LayerNorm(6, rngs=nnx.Rngs(0))
    assert_trees_close(layer(x, mask=mask), ref(x, mask=mask))


def test_rms_norm_has_unit_root_mean_square_and_no_bias():
    layer = ramie.RMSNorm(6, rngs=ramie.Rngs(0))
    assert not hasattr(layer, "bias")
    y = np.asarray(layer(X4 * 5 + 3))
    np.testing.assert_allclose(np.sqrt((y**2).mean(-1)), 1.0, rtol=1e-4)


def test_group_norm_equals_layer_norm_and_instance_norm():
    one_group = ramie.GroupNorm(6, num_groups=1, rngs=ramie.Rngs(0))
    layer_norm = ramie.LayerNorm(6, reduction_axes=(1, 2, 3), rngs=ramie.Rngs(0))
    assert_trees_close(one_group(X4), layer_norm(X4), rtol=1e-5, atol=1e-5)
    per_channel = ramie.GroupNorm(6, num_groups=6, rngs=ramie.Rngs(0))
    instance = ramie.InstanceNorm(6, rngs=ramie.Rngs(0))
    assert_trees_close(per_channel(X4), instance(X4), rtol=1e-5, atol=1e-5)


def test_group_norm_group_size_is_num_groups_in_disguise():
    by_size = ramie.GroupNorm(6, num_groups=None, group_size=2, rngs=ramie.Rngs(0))
    by_count = ramie.GroupNorm(6, num_groups=3, rngs=ramie.Rngs(0))
    assert (by_size.num_groups, by_size.group_size) == (3, 2)
    assert_trees_close(by_size(X4), by_count(X4))


def test_group_norm_unbatched_with_explicit_axes():
    # Flax's GroupNorm cannot run this configuration (its statistics assume a
    # batch axis); ours must equal the batched result of the same example.
    unbatched = ramie.GroupNorm(
        6, num_groups=3, reduction_axes=(0, 1, 2), rngs=ramie.Rngs(0)
    )
    batched = ramie.GroupNorm(6, num_groups=3, rngs=ramie.Rngs(0))
    assert_trees_close(unbatched(X4[0]), batched(X4)[0], rtol=1e-5, atol=1e-5)
    # reducing the channel axis and one spatial axis keeps the other apart
    partial = ramie.GroupNorm(
        6, num_groups=3, reduction_axes=(1, 3), rngs=ramie.Rngs(0)
    )
    x = X4[:, :, 0]  # (2, 3, 6): only axis 1 plus channels are reduced
    assert_trees_close(partial(X4)[:, :, 0], batched(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (
            (6,),
            {"num_groups": 2, "group_size": 3},
            r"exactly one of num_groups and group_size",
        ),
        ((6,), {"num_groups": None}, r"num_groups=None, group_size=\.\.\."),
        (
            (6,),
            {"num_groups": 4},
            r"num_groups must be a positive int dividing num_features \(6\); found 4",
        ),
        (
            (6,),
            {"num_groups": None, "group_size": 4},
            r"group_size must divide num_features; 6 % 4 != 0",
        ),
    ],
)
def test_group_norm_constructor_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ramie.GroupNorm(*args, **kwargs, rngs=ramie.Rngs(0))


def test_group_norm_call_errors():
    layer = ramie.GroupNorm(6, num_groups=3, reduction_axes=(1, 2), rngs=ramie.Rngs(0))
    with pytest.raises(
        ValueError,
        match=r"(?s)must include the channel axis -1.*reduction_axes=\(1, 2, -1\)",
    ):
        layer(X4)
    with pytest.raises(
        ValueError,
        match=r"5 features on its last axis \(shape \(2, 5\)\), expected "
        r"num_features=6",
    ):
        ramie.GroupNorm(6, num_groups=3, rngs=ramie.Rngs(0))(jnp.ones((2, 5)))


def test_instance_norm_rejects_batch_axis_as_feature():
    layer = ramie.InstanceNorm(2, feature_axes=0, rngs=ramie.Rngs(0))
    with pytest.raises(
        ValueError,
        match=r"(?s)feature_axes=0\): axis 0 is the batch axis.*"
        r"layer\(x\[None\]\)\[0\]",
    ):
        layer(X4)


def test_instance_norm_equals_layer_norm_over_spatial_axes():
    instance = ramie.InstanceNorm(6, rngs=ramie.Rngs(0))
    layer_norm = ramie.LayerNorm(
        6, reduction_axes=(1, 2), feature_axes=-1, rngs=ramie.Rngs(0)
    )
    assert_trees_close(instance(X4), layer_norm(X4), rtol=1e-5, atol=1e-5)


def test_axis_name_averages_statistics_across_vmap():
    ours, theirs = _both("LayerNorm", 6, axis_name="batch")
    x = randn(4, 6, seed=3)
    got = jax.vmap(lambda r: ours(r), axis_name="batch")(x)
    want = jax.vmap(lambda r: theirs(r), axis_name="batch")(x)
    assert_trees_close(got, want, rtol=1e-6, atol=1e-6)
    # statistics over the whole batch, not per row: equals a LayerNorm of all of x
    whole = ramie.LayerNorm(6, reduction_axes=(0, 1), rngs=ramie.Rngs(0))
    assert_trees_close(got, whole(x), rtol=1e-5, atol=1e-5)


def test_norms_switch_nothing_in_train_and_eval():
    layer = ramie.LayerNorm(6, rngs=ramie.Rngs(0))
    y = layer(X4)
    layer.eval()
    assert_trees_close(layer(X4), y)
    layer.train()
    assert_trees_close(layer(X4), y)


def test_batch_norm_running_average_uses_promoted_dtype():
    ours, theirs = _both("BatchNorm", 6, dtype=jnp.bfloat16, momentum=0.5)
    x = X4.reshape(-1, 6)
    ours(x)
    theirs(x)
    ours.eval()
    theirs.eval()
    assert_trees_close(ours(x), theirs(x), rtol=0, atol=0)
    assert ours.mean.dtype == jnp.float32
