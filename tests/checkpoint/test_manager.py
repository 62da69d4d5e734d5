"""CheckpointManager: retention by recency and metric, save_every, async."""

import os

import numpy as np
import pytest

import ramie as nnx
from ramie.errors import CheckpointError


def _model(seed):
    return nnx.Linear(3, 2, rngs=nnx.Rngs(seed))


def test_keeps_newest_and_restores_latest(tmp_path):
    mgr = nnx.checkpoint.CheckpointManager(tmp_path, max_to_keep=2)
    models = {s: _model(s) for s in range(1, 5)}
    for step, m in models.items():
        assert mgr.save(step, m)
    assert mgr.all_steps() == [3, 4] and mgr.latest_step() == 4
    target = _model(0)
    mgr.restore(model=target)
    np.testing.assert_array_equal(
        target.kernel.get_value(), models[4].kernel.get_value()
    )
    mgr.restore(3, model=target)
    np.testing.assert_array_equal(
        target.kernel.get_value(), models[3].kernel.get_value()
    )
    with pytest.raises(
        CheckpointError, match=r"no checkpoint of step 1 .* available: \[3, 4\]"
    ):
        mgr.restore(1, model=target)


def test_keep_best_by_metric_keeps_newest_too(tmp_path):
    mgr = nnx.checkpoint.CheckpointManager(
        tmp_path, max_to_keep=2, keep_best=("loss", "min")
    )
    losses = {1: 0.5, 2: 0.1, 3: 0.9, 4: 0.2, 5: 0.7}
    for step, loss in losses.items():
        mgr.save(step, _model(step), metrics={"loss": loss})
    assert mgr.all_steps() == [2, 4, 5]
    assert mgr.metrics(2) == {"loss": 0.1}
    with pytest.raises(CheckpointError, match="lacks it"):
        mgr.save(6, _model(6), metrics={"acc": 1.0})
    with pytest.raises(ValueError, match="keep_best"):
        nnx.checkpoint.CheckpointManager(tmp_path, keep_best=("loss", "lowest"))


def test_save_every_and_restart_sees_steps(tmp_path):
    mgr = nnx.checkpoint.CheckpointManager(tmp_path, save_every=5)
    saved = [s for s in range(1, 12) if mgr.save(s, _model(s))]
    assert saved == [5, 10]
    assert mgr.save(11, _model(11), force=True)
    os.mkdir(tmp_path / "step_00000099")  # an incomplete directory is invisible
    again = nnx.checkpoint.CheckpointManager(tmp_path)
    assert again.all_steps() == [5, 10, 11]


def test_async_manager(tmp_path):
    mgr = nnx.checkpoint.CheckpointManager(tmp_path, max_to_keep=1, async_save=True)
    for step in (1, 2, 3):
        mgr.save(step, _model(step))
    mgr.wait_until_finished()
    assert mgr.all_steps() == [3]
    target = _model(0)
    mgr.restore(model=target)
    np.testing.assert_array_equal(
        target.kernel.get_value(), _model(3).kernel.get_value()
    )
