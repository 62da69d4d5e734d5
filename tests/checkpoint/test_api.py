"""save/restore/info: round trips, abstract targets, strictness on every mismatch."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ramie as nnx
from ramie.errors import CheckpointError, StateLoadError


class Net(nnx.Module):
    def __init__(self, rngs, width=4):
        self.l1 = nnx.Linear(3, width, rngs=rngs)
        self.bn = nnx.BatchNorm(width, rngs=rngs)
        self.do = nnx.Dropout(0.5, rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(width, width, rngs=rngs)])

    def __call__(self, x):
        x = self.do(self.bn(self.l1(x)))
        return self.blocks[0](x)


def values(node):
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(node)):
        v = var.get_value()
        if jnp.issubdtype(v.dtype, jax.dtypes.prng_key):
            v = jax.random.key_data(v)
        out[path] = np.asarray(v)
    return out


def assert_same(a, b):
    va, vb = values(a), values(b)
    assert va.keys() == vb.keys()
    for k in va:
        assert va[k].dtype == vb[k].dtype, k
        np.testing.assert_array_equal(va[k], vb[k], err_msg=str(k))


def make(seed=0, width=4):
    m = Net(nnx.Rngs(seed, dropout=seed + 1), width)
    return m, nnx.Optimizer(m, optax.adam(1e-2), wrt=nnx.Param)


def test_round_trip_into_live_and_abstract(tmp_path):
    m, opt = make(0)
    m(jnp.ones((2, 3)))  # advance BatchNorm stats and the dropout RNG count
    nnx.checkpoint.save(tmp_path / "c", m, optimizer=opt, step=7, metadata={"a": 1})
    live, live_opt = make(5)
    out = nnx.checkpoint.restore(tmp_path / "c", live, optimizer=live_opt)
    assert out is live
    assert_same(live, m)
    assert_same(live_opt, opt)
    am, aopt = nnx.eval_shape(lambda: make(9))
    nnx.checkpoint.restore(tmp_path / "c", am, optimizer=aopt)
    assert_same(am, m)
    assert_same(aopt, opt)
    info = nnx.checkpoint.info(tmp_path / "c")
    assert (info.step, info.metadata) == (7, {"a": 1})
    assert info.jax_version == jax.__version__
    types = {e.path: e.type for e in info.entries}
    assert types["bn.mean"] == "BatchStat" and types["do.rngs.key"] == "RngKey"
    assert types["optimizer.step"] == "OptState"
    assert {e.path: e.dtype for e in info.entries}["do.rngs.key"] == "key<fry>"


def test_restore_without_optimizer_ignores_optimizer_entries(tmp_path):
    m, opt = make(0)
    nnx.checkpoint.save(tmp_path / "c", m, optimizer=opt)
    other, _ = make(3)
    nnx.checkpoint.restore(tmp_path / "c", other)
    assert_same(other, m)


def test_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m, _ = make(0)
    nnx.checkpoint.save("runs/c", m)
    assert os.path.isfile(tmp_path / "runs" / "c" / "manifest.json")
    other, _ = make(1)
    nnx.checkpoint.restore("runs/c", other)
    assert_same(other, m)


def test_overwrite_replaces_and_leaves_no_temporaries(tmp_path):
    m, _ = make(0)
    nnx.checkpoint.save(tmp_path / "c", m, step=1)
    m2, _ = make(1)
    nnx.checkpoint.save(tmp_path / "c", m2, step=2)
    assert os.listdir(tmp_path) == ["c"]
    assert nnx.checkpoint.info(tmp_path / "c").step == 2
    target, _ = make(4)
    nnx.checkpoint.restore(tmp_path / "c", target)
    assert_same(target, m2)


def test_data_file_is_plain_safetensors(tmp_path):
    from safetensors.numpy import load_file

    m, _ = make(0)
    nnx.checkpoint.save(tmp_path / "c", m)
    loaded = load_file(str(tmp_path / "c" / "data-00000.safetensors"))
    np.testing.assert_array_equal(loaded["model/l1.kernel"], m.l1.kernel.get_value())


def _changed_net():
    """Net with every kind of mismatch against Net(width=4)."""
    m, _ = make(3)
    m.l1 = nnx.Linear(3, 5, rngs=nnx.Rngs(0))  # shape mismatch (kernel, bias)
    m.bn.mean = nnx.BatchStat(jnp.zeros(4, jnp.bfloat16))  # dtype mismatch
    m.extra = nnx.Param(jnp.zeros(2))  # missing from the checkpoint
    del m.blocks  # unexpected in the checkpoint
    return m


def test_strict_lists_every_problem_and_changes_nothing(tmp_path):
    src, _ = make(0)
    nnx.checkpoint.save(tmp_path / "c", src)
    target = _changed_net()
    before = values(target)
    with pytest.raises(StateLoadError) as err:
        nnx.checkpoint.restore(tmp_path / "c", target)
    msg = str(err.value)
    for p in [
        "extra",
        "blocks[0].kernel",
        "blocks[0].bias",
        "l1.kernel",
        "l1.bias",
        "bn.mean",
    ]:
        assert p in msg, p
    assert "l1.kernel: shape (3, 5) vs (3, 4)" in msg
    assert "bn.mean: dtype bfloat16 vs float32" in msg
    assert err.value.missing == [("extra",)]
    assert sorted(err.value.unexpected) == [
        ("blocks", 0, "bias"),
        ("blocks", 0, "kernel"),
    ]
    assert {p for p, _, _ in err.value.mismatched} == {
        ("l1", "kernel"),
        ("l1", "bias"),
        ("bn", "mean"),
    }
    after = values(target)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_non_strict_loads_what_fits_and_reports(tmp_path):
    src, _ = make(0)
    nnx.checkpoint.save(tmp_path / "c", src)
    target = _changed_net()
    old_kernel = np.asarray(target.l1.kernel.get_value())
    out, report = nnx.checkpoint.restore(tmp_path / "c", target, strict=False)
    assert out is target
    assert report.missing == [("extra",)]
    assert len(report.unexpected) == 2 and len(report.mismatched) == 3
    np.testing.assert_array_equal(target.l1.kernel.get_value(), old_kernel)
    np.testing.assert_array_equal(target.bn.var.get_value(), src.bn.var.get_value())


def test_allow_cast(tmp_path):
    src, _ = make(0)
    nnx.checkpoint.save(tmp_path / "c", src)
    target, _ = make(1)
    target.bn.mean = nnx.BatchStat(jnp.ones(4, jnp.bfloat16))
    with pytest.raises(StateLoadError, match=r"bn\.mean: dtype bfloat16 vs float32"):
        nnx.checkpoint.restore(tmp_path / "c", target)
    nnx.checkpoint.restore(tmp_path / "c", target, allow_cast=True)
    assert target.bn.mean.get_value().dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        target.bn.mean.get_value(), src.bn.mean.get_value().astype(jnp.bfloat16)
    )


def test_missing_checkpoint_and_abstract_save(tmp_path):
    m, _ = make(0)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        nnx.checkpoint.restore(tmp_path / "nope", m)
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is a file, not a checkpoint directory"):
        nnx.checkpoint.restore(tmp_path / "w.safetensors", m)
    (tmp_path / "w.safetensors").unlink()
    am = nnx.eval_shape(lambda: Net(nnx.Rngs(0)))
    with pytest.raises(CheckpointError, match=r"blocks\[0\]\.bias is abstract"):
        nnx.checkpoint.save(tmp_path / "c", am)
    assert not os.listdir(tmp_path)


def test_python_scalar_variables_round_trip(tmp_path):
    class Counter(nnx.Module):
        def __init__(self):
            self.n = nnx.Variable(3)
            self.w = nnx.Param(jnp.arange(3.0))

    c = Counter()
    nnx.checkpoint.save(tmp_path / "c", c)
    d = Counter()
    d.n.set_value(0)
    nnx.checkpoint.restore(tmp_path / "c", d)
    assert d.n.get_value() == 3


def test_lossless_dtype_loads_without_allow_cast(tmp_path):
    src, _ = make(0)
    src.bn.mean = nnx.BatchStat(jnp.arange(4, dtype=jnp.bfloat16))
    nnx.checkpoint.save(tmp_path / "c", src)
    target, _ = make(1)
    nnx.checkpoint.restore(tmp_path / "c", target)  # bfloat16 -> float32 is exact
    assert target.bn.mean.get_value().dtype == jnp.float32
    np.testing.assert_array_equal(target.bn.mean.get_value(), np.arange(4))
