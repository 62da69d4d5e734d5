"""Sharded save/restore on 8 virtual CPU devices: each shard read on its own."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import ramie as nnx
from ramie._src.checkpoint import reader

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")


def _mesh():
    return jax.make_mesh((4, 2), ("a", "b"))


def _model(seed):
    return nnx.Linear(16, 32, rngs=nnx.Rngs(seed))


def _shard(model, spec):
    sharding = NamedSharding(_mesh(), spec)
    model.kernel.set_value(jax.device_put(model.kernel.get_value(), sharding))


def _abstract(spec):
    abstract = nnx.eval_shape(lambda: _model(9))
    sds = abstract.kernel.get_value()
    abstract.kernel.set_value(
        jax.ShapeDtypeStruct(
            sds.shape, sds.dtype, sharding=NamedSharding(_mesh(), spec)
        )
    )
    return abstract


@pytest.fixture
def regions(monkeypatch):
    """Record the size of every region the reader reads (calls through)."""
    seen = []
    original = reader._read_region

    def spy(files, rec, region):
        seen.append((rec["key"], int(np.prod([b - a for a, b in region]))))
        return original(files, rec, region)

    monkeypatch.setattr(reader, "_read_region", spy)
    return seen


@pytest.mark.parametrize("saved_spec", [None, P("a", "b"), P(None, ("a", "b"))])
def test_restore_into_sharded_abstract_reads_only_each_shard(
    tmp_path, regions, saved_spec
):
    src = _model(0)
    if saved_spec is not None:
        _shard(src, saved_spec)
    nnx.checkpoint.save(tmp_path / "c", src)
    target = _abstract(P("b", "a"))
    nnx.checkpoint.restore(tmp_path / "c", target)
    kernel = target.kernel.get_value()
    assert kernel.sharding == NamedSharding(_mesh(), P("b", "a"))
    np.testing.assert_array_equal(
        np.asarray(kernel), np.asarray(src.kernel.get_value())
    )
    shard_elems = 16 * 32 // 8
    kernel_reads = [n for k, n in regions if k == "model/kernel"]
    assert len(kernel_reads) == 8 and max(kernel_reads) == shard_elems
    for shard in kernel.addressable_shards:
        assert shard.data.size == shard_elems


def test_sharded_checkpoint_restores_unsharded_and_records_sharding(tmp_path):
    src = _model(0)
    _shard(src, P("a", "b"))
    nnx.checkpoint.save(tmp_path / "c", src)
    info = {e.path: e for e in nnx.checkpoint.info(tmp_path / "c").entries}
    assert info["kernel"].sharding == {
        "kind": "named",
        "mesh": {"a": 4, "b": 2},
        "spec": ["a", "b"],
    }
    assert info["kernel"].nbytes == 16 * 32 * 4  # each shard stored once
    target = _model(1)
    nnx.checkpoint.restore(tmp_path / "c", target)
    np.testing.assert_array_equal(target.kernel.get_value(), src.kernel.get_value())


def test_live_sharded_target_keeps_its_sharding(tmp_path):
    src = _model(0)
    nnx.checkpoint.save(tmp_path / "c", src)
    target = _model(1)
    _shard(target, P(None, "b"))
    nnx.checkpoint.restore(tmp_path / "c", target)
    kernel = target.kernel.get_value()
    assert kernel.sharding.spec == P(None, "b")
    np.testing.assert_array_equal(
        np.asarray(kernel), np.asarray(src.kernel.get_value())
    )


def test_sharding_metadata_places_shards(tmp_path, regions):
    src = _model(0)
    nnx.checkpoint.save(tmp_path / "c", src)
    init = nnx.with_partitioning(
        nnx.initializers.lecun_normal(), ("b", "a"), mesh=_mesh()
    )
    target = nnx.eval_shape(
        lambda: nnx.Linear(16, 32, kernel_init=init, rngs=nnx.Rngs(1))
    )
    # eval_shape places the abstract value on the Variable's own (concrete) mesh
    assert target.kernel.get_value().sharding == NamedSharding(_mesh(), P("b", "a"))
    nnx.checkpoint.restore(tmp_path / "c", target)
    kernel = target.kernel.get_value()
    assert kernel.sharding == NamedSharding(_mesh(), P("b", "a"))
    np.testing.assert_array_equal(
        np.asarray(kernel), np.asarray(src.kernel.get_value())
    )
    assert len([k for k, _ in regions if k == "model/kernel"]) == 8
