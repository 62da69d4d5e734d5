"""Two JAX processes (CPU, gloo): each writes and reads only its own shards."""

import os
import socket
import subprocess
import sys
import textwrap

import pytest

WORKER = textwrap.dedent(
    """
    import os, sys
    pid, port, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    import ramie as nnx

    mesh = jax.make_mesh((4, 2), ("a", "b"))
    full = np.arange(16 * 32, dtype=np.float32).reshape(16, 32)
    sharding = NamedSharding(mesh, P("a", "b"))
    model = nnx.eval_shape(lambda: nnx.Linear(16, 32, rngs=nnx.Rngs(0)))
    model.kernel.set_value(
        jax.make_array_from_callback(full.shape, sharding, lambda idx: full[idx])
    )
    model.bias.set_value(jax.numpy.ones(32))
    nnx.checkpoint.save(path, model, step=3)

    target = nnx.eval_shape(lambda: nnx.Linear(16, 32, rngs=nnx.Rngs(1)))
    target.kernel.set_value(
        jax.ShapeDtypeStruct(
            (16, 32), np.float32, sharding=NamedSharding(mesh, P("b", "a"))
        )
    )
    nnx.checkpoint.restore(path, target)
    kernel = target.kernel.get_value()
    assert len(kernel.addressable_shards) == 4
    for shard in kernel.addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), full[shard.index])
    np.testing.assert_array_equal(np.asarray(target.bias.get_value()), np.ones(32))
    print("ok", pid, flush=True)
    """
)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_save_and_restore_their_own_shards(tmp_path):
    path = str(tmp_path / "c")
    port = str(_free_port())
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(i), port, path],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert out.strip().splitlines()[-1].startswith("ok")
    names = sorted(os.listdir(path))
    assert names == [
        "data-00000.safetensors",
        "data-00001.safetensors",
        "manifest.json",
        "shards-00000.json",
        "shards-00001.json",
    ]
    import ramie as nnx

    info = {e.path: e for e in nnx.checkpoint.info(path).entries}
    assert info["kernel"].nbytes == 16 * 32 * 4  # every shard once, across both files
