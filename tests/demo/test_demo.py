"""Tests of ``python -m ramie.demo``, run in-process through ``ramie.demo.main``.

The runs are shortened (one epoch of the CNN, a few transformer steps) so the
file stays fast on a 2-core CI machine; the full-length run and its >= 97% test
accuracy claim are checked by a ``slow`` test (``make test-all``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

import ramie  # noqa: E402
from ramie.demo import cli, data, main, transformer  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    """One epoch of the CNN demo, with its printed output (shared by two tests)."""
    import contextlib
    import io

    out_dir = tmp_path_factory.mktemp("cnn")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        result = main(["--epochs", "1", "--out", str(out_dir)])
    return result, stdout.getvalue(), str(out_dir)


def test_cnn_demo_learns_in_one_epoch(cnn_run):
    result, out, out_dir = cnn_run
    history = result.history

    # One full pass: 1437 training images in batches of 64.
    assert history.steps_per_epoch == 22
    assert len(history.step_losses) == 22
    losses = np.asarray(history.step_losses)
    assert np.isfinite(losses).all()
    assert losses[-5:].mean() < 0.6 * losses[:5].mean(), losses  # the loss falls
    assert history.test_accuracy[-1] > 0.6  # chance is 0.1
    assert history.num_params > 100_000

    assert result.plot_path == os.path.join(out_dir, "demo_cnn.png")
    assert _is_png(result.plot_path)

    assert "device: " in out
    assert "DigitsCNN" in out and "trainable params" in out  # model size
    assert "epoch 1/1" in out and "test loss" in out
    assert "final test accuracy:" in out
    assert f"plot saved to {result.plot_path}" in out
    assert "wall time:" in out


def test_cnn_demo_is_deterministic_for_a_seed(cnn_run, tmp_path):
    # The same flags (the default seed 0) in the same process: identical
    # numbers. The compiled steps are reused, so the rerun is cheap.
    first = cnn_run[0]
    second = main(["--epochs", "1", "--quiet", "--out", str(tmp_path)])
    assert second.history.step_losses == first.history.step_losses
    assert second.history.test_accuracy == first.history.test_accuracy


def test_transformer_demo_trains_and_samples(tmp_path, capsys):
    flags = "--model transformer --epochs 1 --steps 3 --layers 1 --sample-len 40"
    argv = [*flags.split(), "--quiet", "--out", str(tmp_path)]
    result = main(argv)

    assert len(result.history.step_losses) == 3
    assert np.isfinite(result.history.val_loss).all()
    assert len(result.samples) == len(transformer.PROMPTS)
    for prompt, sample in zip(transformer.PROMPTS, result.samples):
        assert sample.startswith(prompt)
        assert len(sample) == 40
        assert set(sample) <= set(data.VOCAB)
    assert _is_png(result.plot_path)

    out = capsys.readouterr().out
    assert "CharTransformer" in out and "blocks/0" in out and "blocks/1" not in out
    assert "held-out loss" in out
    for sample in result.samples:
        assert sample.splitlines()[-1] in out  # the samples are printed


def test_decode_cache_matches_full_forward():
    # What generate() relies on: feeding tokens one by one through the
    # attention caches gives the logits of one causal pass over the sequence.
    # (The demo's model size, so its compiled pieces are shared with the
    # transformer demo test; the calls are jitted to compile once.)
    model = transformer.CharTransformer(
        len(data.VOCAB), num_layers=1, rngs=ramie.Rngs(0)
    )
    model.eval()
    tokens = jnp.asarray(data.encode("if x:\n")[None])
    full = ramie.jit(lambda m, t: m(t))(model, tokens)
    model.init_cache(batch_size=1)
    step = ramie.jit(lambda m, t, p: m(t, p, decode=True))
    steps = [step(model, tokens[:, i : i + 1], jnp.full((1, 1), i)) for i in range(6)]
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5)
    assert int(model.blocks[0].attn.cache_index.value) == 6


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    flags = (
        "--epochs",
        "--seed",
        "--out",
        "--model",
        "--quiet",
        "--steps",
        "--layers",
        "--sample-len",
    )
    for flag in flags:
        assert flag in out


def test_bad_arguments_exit_with_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["--epochs", "0"])
    assert exc.value.code == 2
    assert "positive integer" in capsys.readouterr().err


@pytest.mark.slow
def test_full_cnn_demo_reaches_97_percent(tmp_path):
    """The claim of the README and ``make demo``: >= 97% test accuracy."""
    result = main(["--quiet", "--out", str(tmp_path)])
    assert result.history.test_accuracy[-1] >= 0.97
    assert result.history.train_loss[-1] < result.history.train_loss[0]


@pytest.mark.parametrize("blocked", ["tqdm", "sklearn", "matplotlib"])
def test_without_the_demo_extra_it_says_which_extra_to_install(blocked):
    # `python -m ramie.demo` in a fresh process where one package of the extra
    # cannot be imported (sys.modules[name] = None makes `import name` fail)
    code = (
        f"import sys; sys.modules[{blocked!r}] = None; sys.argv = ['ramie.demo']; "
        "import runpy; runpy.run_module('ramie.demo', run_name='__main__')"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 1
    assert "pip install 'ramie[demo]'" in proc.stderr
    assert cli.DEMO_PACKAGES[blocked] in proc.stderr
    assert "Traceback" not in proc.stderr and "ModuleNotFoundError" not in proc.stderr
