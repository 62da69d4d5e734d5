"""Run every script in ``examples/`` in-process and check what it reports.

Each example defines ``main(argv) -> dict`` and prints its results; the tests
load the script with ``runpy`` (so nothing runs on import), call ``main`` with
few steps and assert on the returned numbers and the printed text. A new
script in ``examples/`` must get a test here: ``test_every_example_is_tested``
fails otherwise.
"""

from __future__ import annotations

import ast
import pathlib
import runpy
from typing import Any

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
TESTED = {
    "linen_style_model.py",
    "haiku_style_model.py",
    "scan_over_layers.py",
    "rnn.py",
}
# run on 8 devices (and as 2 processes) by tests/spmd
SPMD = {
    "train_single_device.py",
    "data_parallel.py",
    "fsdp.py",
    "tensor_parallel.py",
    "multi_process.py",
}


def run_example(name: str, *argv: str) -> dict[str, Any]:
    """Load ``examples/<name>`` without running it, then call its ``main(argv)``."""
    namespace = runpy.run_path(str(EXAMPLES / name), run_name=f"example_{name[:-3]}")
    return namespace["main"](list(argv))


def test_every_example_is_tested():
    assert {p.name for p in EXAMPLES.glob("*.py")} == TESTED | SPMD


@pytest.mark.parametrize("name", sorted(TESTED | SPMD))
def test_example_has_docstring_and_main(name):
    tree = ast.parse((EXAMPLES / name).read_text())
    docstring = ast.get_docstring(tree)
    assert docstring and len(docstring.splitlines()) >= 3
    assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    text = (EXAMPLES / name).read_text()
    assert "import ramie as nnx" in text or "fsdp.py" in text


def test_linen_style_model(capsys):
    result = run_example("linen_style_model.py", "--steps", "8")
    assert result["final_loss"] < 0.5 * result["initial_loss"]
    assert result["accuracy"] > 0.5  # 10 classes
    assert result["deterministic_eval"]
    assert result["count"] == 3  # the Counter saw three calls
    assert result["latent_shape"] == (1, 256)
    out = capsys.readouterr().out
    assert "block.linear.kernel (784, 256)" in out
    assert (
        "params ['batchnorm', 'linear'], batch_stats ['batchnorm'], count ['count']"
        in out
    )


def test_haiku_style_model(capsys):
    result = run_example("haiku_style_model.py", "--steps", "8")
    assert result["dropout_loss"] < 0.5 * result["dropout_initial_loss"]
    assert result["dropout_accuracy"] > 0.5
    assert result["batch_stats_moved"] > 0  # BatchStat updated in place by training
    assert result["batchnorm_accuracy"] > 0.5
    assert result["adam_accuracy"] > 0.5
    assert result["foo_outputs"] == [2.0, 3.0, 4.0]  # x + 1 * counter, counter 1, 2, 3
    assert result["foo_counter"] == 4
    out = capsys.readouterr().out
    assert "block.batchnorm.mean is a BatchStat" in out
    assert "params ['multiplier'], counter ['counter']" in out


def test_scan_over_layers(capsys):
    result = run_example("scan_over_layers.py", "--steps", "30")
    assert result["param_shapes"] == {
        "blocks": {"linear": {"bias": (5, 64), "kernel": (5, 64, 64)}}
    }
    assert result["train_differs"]  # dropout active inside the scan
    assert result["eval_deterministic"]
    assert result["matches_loop"]  # scan == applying the stacked layers one by one
    assert result["last_loss"] < result["first_loss"]
    assert result["accuracy"] > 0.4  # 4 classes
    assert "kernel': (5, 64, 64)" in capsys.readouterr().out


def test_rnn(capsys):
    result = run_example("rnn.py", "--steps", "60", "--delay", "1")
    assert result["output_shape"] == (3, 12, 64)
    for name in ("scan_rnn", "lstm"):
        assert result[name] < 0.5 * result[f"{name}_before"], name
    out = capsys.readouterr().out
    assert "RNNCell + nnx.scan" in out and "nnx.RNN(nnx.LSTMCell)" in out
