"""The FSDP example as 2 processes x 4 CPU devices (jax.distributed, gloo)."""

from __future__ import annotations

import pathlib
import runpy

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.slow
def test_two_processes_match_one_device_and_checkpoint(tmp_path):
    steps = 4
    launcher = runpy.run_path(str(EXAMPLES / "multi_process.py"), run_name="mp")
    results = launcher["launch"](steps, checkpoint=str(tmp_path / "ckpt"))
    assert sorted(r["process"] for r in results) == [0, 1]
    assert all(r["devices"] == 8 and r["local_devices"] == 4 for r in results)
    single = runpy.run_path(str(EXAMPLES / "train_single_device.py"), run_name="sd")
    reference = single["main"](["--steps", str(steps)])["losses"]
    for r in results:
        np.testing.assert_allclose(r["losses"], reference, rtol=1e-6)
        assert r["restored_equal"]  # each process restored its own shards
