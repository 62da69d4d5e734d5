"""RNG state in safetensors files: stored as key data, restored exactly, never lost."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from safetensors import safe_open

import ramie as nnx
from ramie.errors import CheckpointError, StateLoadError


class Net(nnx.Module):
    def __init__(self, seed):
        rngs = nnx.Rngs(params=seed, dropout=seed + 100)
        self.l1 = nnx.Linear(8, 32, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.l2 = nnx.Linear(32, 1, rngs=rngs)

    def __call__(self, x):
        return self.l2(self.drop(nnx.relu(self.l1(x))))


X = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
Y = np.random.default_rng(1).normal(size=(16, 1)).astype(np.float32)


@nnx.jit
def _step(model, opt):
    def loss_fn(m):
        return jnp.mean((m(X) - Y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)
    return loss


def _train(model, n):
    opt = nnx.Optimizer(model, optax.sgd(0.05), wrt=nnx.Param)
    return [float(_step(model, opt)) for _ in range(n)]


def test_training_continues_bit_exactly_after_safetensors_round_trip(tmp_path):
    path = tmp_path / "net.safetensors"
    model = Net(0)
    _train(model, 3)
    nnx.checkpoint.save_safetensors(path, model)
    expected = _train(model, 4)

    resumed = Net(7)  # other parameters and another dropout key
    assert nnx.checkpoint.load_safetensors(resumed, path).ok
    assert _train(resumed, 4) == expected

    # the dropout masks matter: the same weights with the RNG state left as it
    # was give other losses (so the test above can fail)
    weights_only = Net(7)
    report = nnx.checkpoint.load_safetensors(
        weights_only, path, key_map=_drop_rng, strict=False
    )
    assert sorted(report.missing) == [
        ("drop", "rngs", "count"),
        ("drop", "rngs", "key"),
    ]
    assert _train(weights_only, 4) != expected


def _drop_rng(key):
    return None if ".rngs." in key else key


def test_file_records_key_data_and_implementation(tmp_path):
    path = tmp_path / "net.safetensors"
    model = Net(0)
    nnx.checkpoint.save_safetensors(path, model)
    key = model.drop.rngs.key.get_value()
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata()
        stored = f.get_tensor("drop.rngs.key")
        count = f.get_tensor("drop.rngs.count")
    assert meta["ramie.rng"] == "included"
    assert json.loads(meta["ramie.prng_keys"]) == {"drop.rngs.key": "threefry2x32"}
    np.testing.assert_array_equal(stored, np.asarray(jax.random.key_data(key)))
    assert stored.dtype == np.uint32
    assert count.dtype == np.uint32 and int(count) == int(
        model.drop.rngs.count.get_value()
    )


class Keyed(nnx.Module):
    def __init__(self, seed, impl):
        self.keys = nnx.Variable(jax.random.split(jax.random.key(seed, impl=impl), 3))
        self.w = nnx.Param(jnp.full((2,), float(seed)))


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_typed_keys_of_any_implementation_round_trip(tmp_path, impl):
    path = tmp_path / "k.safetensors"
    src = Keyed(1, impl)
    nnx.checkpoint.save_safetensors(path, src)
    dst = Keyed(2, impl)
    nnx.checkpoint.load_safetensors(dst, path)
    got, want = dst.keys.get_value(), src.keys.get_value()
    assert got.dtype == want.dtype and got.shape == (3,)
    np.testing.assert_array_equal(jax.random.key_data(got), jax.random.key_data(want))
    np.testing.assert_array_equal(
        jax.random.uniform(got[1], (4,)), jax.random.uniform(want[1], (4,))
    )


def test_key_implementation_mismatch_is_listed_and_changes_nothing(tmp_path):
    path = tmp_path / "k.safetensors"
    nnx.checkpoint.save_safetensors(path, Keyed(1, "rbg"))
    dst = Keyed(2, "threefry2x32")
    before = np.asarray(jax.random.key_data(dst.keys.get_value()))
    w_before = np.asarray(dst.w.get_value())
    with pytest.raises(StateLoadError, match=r"keys: dtype key<fry> vs key<rbg>"):
        nnx.checkpoint.load_safetensors(dst, path)
    np.testing.assert_array_equal(jax.random.key_data(dst.keys.get_value()), before)
    np.testing.assert_array_equal(dst.w.get_value(), w_before)


def test_rng_state_dropped_from_a_full_file_is_reported_missing(tmp_path):
    path = tmp_path / "net.safetensors"
    nnx.checkpoint.save_safetensors(path, Net(0))
    with pytest.raises(StateLoadError, match=r"drop\.rngs\.key") as e:
        nnx.checkpoint.load_safetensors(Net(1), path, key_map=_drop_rng)
    assert "drop.rngs.count" in str(e.value)


def test_weights_only_file_says_so_and_leaves_rng_state(tmp_path):
    path = tmp_path / "w.safetensors"
    nnx.checkpoint.save_safetensors(path, Net(0), include_rng=False)
    with safe_open(path, framework="numpy") as f:
        assert f.metadata()["ramie.rng"] == "excluded"
        assert not [k for k in f.keys() if ".rngs." in k]
    dst = Net(1)
    key_before = np.asarray(jax.random.key_data(dst.drop.rngs.key.get_value()))
    assert nnx.checkpoint.load_safetensors(dst, path).ok
    np.testing.assert_array_equal(
        jax.random.key_data(dst.drop.rngs.key.get_value()), key_before
    )
    np.testing.assert_array_equal(
        dst.l1.kernel.get_value(), Net(0).l1.kernel.get_value()
    )


def test_torch_convention_leaves_rng_out_unless_asked(tmp_path):
    plain, with_rng = tmp_path / "t.safetensors", tmp_path / "tr.safetensors"
    nnx.checkpoint.save_safetensors(plain, Net(0), convention="torch")
    nnx.checkpoint.save_safetensors(
        with_rng, Net(0), convention="torch", include_rng=True
    )
    with safe_open(plain, framework="numpy") as f:
        assert sorted(f.keys()) == ["l1.bias", "l1.weight", "l2.bias", "l2.weight"]
        assert f.metadata()["ramie.rng"] == "excluded"
    dst = Net(1)
    nnx.checkpoint.load_safetensors(dst, with_rng, convention="torch")
    np.testing.assert_array_equal(
        jax.random.key_data(dst.drop.rngs.key.get_value()),
        jax.random.key_data(Net(0).drop.rngs.key.get_value()),
    )


def test_reserved_metadata_names_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="reserved"):
        nnx.checkpoint.save_safetensors(
            tmp_path / "x.safetensors", Net(0), metadata={"ramie.rng": "x"}
        )
    assert not (tmp_path / "x.safetensors").exists()


class WithScalar(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.ones((2,)))
        self.tag = nnx.Variable("epoch-3")


def test_non_array_variable_is_a_clear_error_and_nothing_is_written(tmp_path):
    path = tmp_path / "s.safetensors"
    with pytest.raises(
        CheckpointError,
        match=r"(?s)tag is a str, not an array.*checkpoint\.save\(path, model\)",
    ):
        nnx.checkpoint.save_safetensors(path, WithScalar())
    assert list(tmp_path.iterdir()) == []
    # the full checkpoint format keeps it
    nnx.checkpoint.save(tmp_path / "c", WithScalar())
    target = WithScalar()
    target.tag.set_value("other")
    nnx.checkpoint.restore(tmp_path / "c", target)
    assert target.tag.get_value() == "epoch-3"
