"""DP, FSDP and TP examples: a few lines over single-device, same loss curve."""

from __future__ import annotations

import difflib
import pathlib
import runpy

import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

EXAMPLES = pathlib.Path(__file__).resolve().parents[3] / "examples"
SCALED = {
    "data_parallel.py": P(),
    "fsdp.py": P("data", None),
    "tensor_parallel.py": P(None, "model"),
}


def run(name, steps=4):
    ns = runpy.run_path(str(EXAMPLES / name), run_name=f"example_{name[:-3]}")
    return ns["main"](["--steps", str(steps)])


@pytest.fixture(scope="module")
def single():
    return run("train_single_device.py")


def added_lines(name):
    base = (EXAMPLES / "train_single_device.py").read_text().splitlines()
    body = (EXAMPLES / name).read_text().splitlines()
    # compare code only: the module docstrings differ by design
    strip = lambda lines: lines[lines.index('"""', 1) + 1 :]  # noqa: E731
    diff = difflib.unified_diff(strip(base), strip(body), lineterm="", n=0)
    return [d for d in diff if d.startswith("+") and not d.startswith("+++")]


@pytest.mark.parametrize("name", sorted(SCALED))
def test_scaled_example_matches_single_device(name, single):
    assert len(added_lines(name)) <= 3, added_lines(name)
    result = run(name)
    np.testing.assert_allclose(result["losses"], single["losses"], rtol=1e-6)
    sharding = result["kernel_sharding"]
    assert sharding.is_equivalent_to(NamedSharding(sharding.mesh, SCALED[name]), 2)
    assert len(sharding.device_set) == 8
