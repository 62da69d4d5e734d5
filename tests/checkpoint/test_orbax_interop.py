"""orbax's NNX recipe with ramie State; Flax NNX orbax checkpoints into ramie."""

import jax
import numpy as np
import pytest

import ramie as nnx

ocp = pytest.importorskip("orbax.checkpoint")
fnnx = pytest.importorskip("flax.nnx")


class Net(nnx.Module):
    def __init__(self, rngs):
        self.l = nnx.Linear(3, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.do = nnx.Dropout(0.5, rngs=rngs)


class FlaxNet(fnnx.Module):
    def __init__(self, rngs):
        self.l = fnnx.Linear(3, 4, rngs=rngs)
        self.bn = fnnx.BatchNorm(4, rngs=rngs)


def _leaves(model):
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model)):
        v = var.get_value()
        if jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key):
            v = jax.random.key_data(v)
        out[path] = np.asarray(v)
    return out


def test_orbax_recipe_round_trips_ramie_state(tmp_path):
    model = Net(nnx.Rngs(0, dropout=1))
    model.bn.mean.set_value(model.bn.mean.get_value() + 3.0)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "state", nnx.state(model))
    checkpointer.wait_until_finished()

    abstract = nnx.eval_shape(lambda: Net(nnx.Rngs(5, dropout=6)))
    graphdef, abstract_state = nnx.split(abstract)
    restored = checkpointer.restore(tmp_path / "state", abstract_state)
    merged = nnx.merge(graphdef, restored)
    nnx.update(abstract, restored)
    expected = _leaves(model)
    for target in (merged, abstract):
        got = _leaves(target)
        assert got.keys() == expected.keys()
        for k in expected:
            np.testing.assert_array_equal(got[k], expected[k], err_msg=str(k))


def test_flax_nnx_checkpoint_restores_into_ramie_model(tmp_path):
    flax_model = FlaxNet(fnnx.Rngs(0))
    flax_model.bn.var.set_value(flax_model.bn.var.get_value() * 2.0)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "flax", fnnx.state(flax_model))
    checkpointer.wait_until_finished()

    class Twin(nnx.Module):
        def __init__(self, rngs):
            self.l = nnx.Linear(3, 4, rngs=rngs)
            self.bn = nnx.BatchNorm(4, rngs=rngs)

    abstract = nnx.eval_shape(lambda: Twin(nnx.Rngs(7)))
    restored = checkpointer.restore(tmp_path / "flax", nnx.state(abstract))
    nnx.update(abstract, restored)
    np.testing.assert_array_equal(
        abstract.l.kernel.get_value(), flax_model.l.kernel.get_value()
    )
    np.testing.assert_array_equal(
        abstract.bn.var.get_value(), flax_model.bn.var.get_value()
    )
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(abstract.l(x), flax_model.l(x), rtol=1e-6)
