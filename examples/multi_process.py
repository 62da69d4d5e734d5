"""The FSDP example as 2 processes: ``jax.distributed`` and a global mesh.

Each process owns 4 CPU devices; ``jax.distributed.initialize`` joins them
(the coordinator listens on 127.0.0.1, collectives go through gloo), and
``jax.make_mesh`` then builds one 8-device mesh over both processes. The
training code is ``fsdp.py``'s, unchanged: every process runs the same
program, constructs only the parameter shards its devices hold, and feeds its
part of each batch. The loss curve equals the single-process run's.

Run ``python examples/multi_process.py [--steps N]``: it starts the two
worker processes on this machine (``--process-id`` / ``--coordinator`` are
what each worker gets; on a real cluster run one worker per host instead).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import runpy
import socket
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )
    fsdp = runpy.run_path(str(HERE / "fsdp.py"), run_name="fsdp_worker")
    result = fsdp["main"](["--steps", str(args.steps)])
    out = {
        "process": jax.process_index(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "losses": result["losses"],
    }
    if args.checkpoint:
        out.update(save_and_restore(fsdp, result["model"], args.checkpoint))
    print("RESULT " + json.dumps(out), flush=True)
    jax.distributed.shutdown()
    return out


def save_and_restore(fsdp: dict, model: Any, path: str) -> dict[str, Any]:
    """Save the sharded model, restore it into an abstract one, compare shards.

    Each process writes and reads only the shards its devices hold.
    """
    import jax
    import numpy as np

    import ramie as nnx

    nnx.checkpoint.save(path, model)
    mesh = model.up.kernel.sharding.mesh
    with jax.set_mesh(mesh), nnx.logical_axis_rules(fsdp["RULES"]["fsdp"]):
        abstract = nnx.eval_shape(lambda: fsdp["Block"](64, 8, rngs=nnx.Rngs(1)))
    restored = nnx.checkpoint.restore(path, abstract)
    restored_flat = dict(nnx.state(restored).flat_state())
    differ = []
    for path, var in nnx.state(model).flat_state():
        a, b = var.value, restored_flat[path].value
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        if not a.sharding.is_equivalent_to(b.sharding, a.ndim):
            differ.append(f"{path}: sharding {a.sharding} vs {b.sharding}")
        for sa, sb in zip(a.addressable_shards, b.addressable_shards):
            if not np.array_equal(np.asarray(sa.data), np.asarray(sb.data)):
                differ.append(f"{path}: values")
                break
    return {"restored_equal": not differ, "differ": differ}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    steps: int, num_processes: int = 2, checkpoint: str = "", timeout: float = 600
) -> list[dict]:
    """Start the workers on this machine and collect what each reports."""
    coordinator = f"127.0.0.1:{free_port()}"
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--steps", str(steps),
             "--process-id", str(i), "--num-processes", str(num_processes),
             "--coordinator", coordinator, "--checkpoint", checkpoint],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(num_processes)
    ]  # fmt: skip
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
        if p.returncode or not lines:
            raise RuntimeError(f"worker failed (exit {p.returncode}):\n{out[-3000:]}")
        results.append(json.loads(lines[-1][len("RESULT ") :]))
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--coordinator")
    parser.add_argument("--checkpoint", default="", help="save+restore here")
    args = parser.parse_args(argv)
    if args.process_id is not None:
        return worker(args)
    results = launch(args.steps, args.num_processes, args.checkpoint)
    for r in results:
        curve = " ".join(f"{v:.6f}" for v in r["losses"])
        print(
            f"process {r['process']} ({r['local_devices']} of {r['devices']} devices)"
        )
        print(f"  losses: {curve}")
    return {"processes": results}


if __name__ == "__main__":
    main()
