"""Durability: kills during a save, async saves at exit, damaged files."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import jax.numpy as jnp
import numpy as np
import pytest

import ramie as nnx
from ramie.errors import CheckpointError

SAVE = textwrap.dedent(
    """
    import sys
    import ramie as nnx
    path, seed = sys.argv[1], int(sys.argv[2])
    loops = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    layers = [nnx.Linear(256, 256, rngs=nnx.Rngs(seed)) for _ in range(4)]
    model = nnx.Sequential(*layers)
    print("ready", flush=True)
    for i in range(loops):
        nnx.checkpoint.save(path, model, step=seed * 1000 + i)
    print("saved", flush=True)
    """
)


def _env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
    env.pop("XLA_FLAGS", None)
    return env


def _model(seed):
    return nnx.Sequential(
        *[nnx.Linear(256, 256, rngs=nnx.Rngs(seed)) for _ in range(4)]
    )


def _kernel(model):
    return np.asarray(model.layers[0].kernel.get_value())


def _restored_step(path):
    target = _model(99)
    nnx.checkpoint.restore(path, target)
    step = nnx.checkpoint.info(path).step
    # the arrays are those of the seed the manifest names: nothing mixed
    np.testing.assert_array_equal(_kernel(target), _kernel(_model(step // 1000)))
    return step


@pytest.mark.parametrize(
    "point, survivor",
    [
        pytest.param("before_data", 1000, marks=pytest.mark.slow),
        ("after_data", 1000),
        pytest.param("after_manifest", 1000, marks=pytest.mark.slow),
        ("after_old_rename", 1000),
        pytest.param("after_commit_rename", 2000, marks=pytest.mark.slow),
    ],
)
def test_kill_at_each_point_of_a_save(tmp_path, point, survivor):
    path = str(tmp_path / "c")
    nnx.checkpoint.save(path, _model(1), step=1000)
    out = subprocess.run(
        [sys.executable, "-c", SAVE, path, "2"],
        env=_env(_RAMIE_CHECKPOINT_KILL_AT=point),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert _restored_step(path) == survivor
    # the next save cleans the partial/previous directories away
    nnx.checkpoint.save(path, _model(3), step=3000)
    assert os.listdir(tmp_path) == ["c"]
    assert _restored_step(path) == 3000


@pytest.mark.slow
def test_random_kills_during_repeated_saves(tmp_path):
    path = str(tmp_path / "c")
    nnx.checkpoint.save(path, _model(1), step=1000)
    rng = np.random.default_rng(0)
    for i in range(15):
        proc = subprocess.Popen(
            [sys.executable, "-c", SAVE, path, str(2 + i % 3), "1000"],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.0, 1.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        assert _restored_step(path) // 1000 in (1, 2, 3, 4)
    nnx.checkpoint.save(path, _model(5), step=5000)
    assert os.listdir(tmp_path) == ["c"]


EXIT_AFTER_ASYNC = textwrap.dedent(
    """
    import sys
    import ramie as nnx
    model = nnx.Sequential(*[nnx.Linear(256, 256, rngs=nnx.Rngs(7)) for _ in range(4)])
    nnx.checkpoint.save(sys.argv[1], model, step=7000, async_save=True)
    """
)


def test_exit_right_after_async_save_still_writes(tmp_path):
    path = str(tmp_path / "c")
    out = subprocess.run(
        [sys.executable, "-c", EXIT_AFTER_ASYNC, path],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert _restored_step(path) == 7000


def test_failed_async_save_is_reported_at_exit(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = subprocess.run(
        [sys.executable, "-c", EXIT_AFTER_ASYNC, str(blocker / "c")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "async save failed" in out.stderr and "NOT written" in out.stderr


def test_failed_async_save_raises_at_wait(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    handle = nnx.checkpoint.save(blocker / "c", _model(1), async_save=True)
    with pytest.raises(OSError):
        handle.wait()
    nnx.checkpoint.wait_until_finished()  # reported once, not again


def test_async_save_then_restore_sees_it(tmp_path):
    m = _model(4)
    handle = nnx.checkpoint.save(tmp_path / "c", m, step=4000, async_save=True)
    # mutate the model right away: the checkpoint holds the values at save time
    m.layers[0].kernel.set_value(jnp.zeros((256, 256)))
    assert _restored_step(str(tmp_path / "c")) == 4000
    handle.wait()
    assert handle.done()


def _saved(tmp_path):
    path = str(tmp_path / "c")
    nnx.checkpoint.save(path, _model(1), step=1000)
    return path, os.path.join(path, "data-00000.safetensors")


def _assert_unchanged_after(exc_match, path):
    target = _model(2)
    before = _kernel(target)
    with pytest.raises(CheckpointError, match=exc_match):
        nnx.checkpoint.restore(path, target)
    np.testing.assert_array_equal(_kernel(target), before)


def test_truncated_data_file_names_file_and_entry(tmp_path):
    path, data = _saved(tmp_path)
    os.truncate(data, os.path.getsize(data) - 100)
    _assert_unchanged_after(
        r"data-00000\.safetensors: file is truncated: entry model/layers\.3\.kernel",
        path,
    )


def test_corrupted_byte_names_file_and_entry(tmp_path):
    path, data = _saved(tmp_path)
    info = nnx.checkpoint.info(path)
    with open(data, "r+b") as f:
        f.seek(os.path.getsize(data) - info.entries[-1].nbytes + 10)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    _assert_unchanged_after(
        rf"data-00000\.safetensors: entry {info.entries[-1].key} is corrupted: its "
        rf"{info.checksum} checksum",
        path,
    )


def test_missing_manifest_or_data_file(tmp_path):
    path, data = _saved(tmp_path)
    os.remove(data)
    _assert_unchanged_after(r"data-00000\.safetensors: data file is missing", path)
    os.remove(os.path.join(path, "manifest.json"))
    _assert_unchanged_after("is not a complete checkpoint", path)


def test_corrupted_manifest(tmp_path):
    path, _ = _saved(tmp_path)
    with open(os.path.join(path, "manifest.json"), "r+b") as f:
        f.truncate(50)
    _assert_unchanged_after(r"manifest\.json is corrupted", path)
